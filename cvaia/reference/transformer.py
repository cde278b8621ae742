"""The transformer block, written to be read (problem 4).

``x ← x + MHSA(x)``, then ``x ← x + MLP(x)``: pre-LayerNorm (each branch normalises its own
input; the residual stream itself is never normalised), so at initialisation every block is
close to the identity and gradients reach the first block undamped.
:class:`cvaia.models.TransformerBlock` computes the same function and adds dropout, the
positional embedding and the fused attention path; the parameter names of the attention are
the same, the MLP's differ only by the library's dropout layers (notebook 04 checks them).
"""

from __future__ import annotations

from torch import Tensor, nn

from .attention import MultiHeadSelfAttention


class MLP(nn.Module):
    """``LayerNorm → Linear(C, e·C) → GELU → Linear(e·C, C)``: the same small network on every token."""

    def __init__(self, dim: int, expansion: int = 4) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * expansion), nn.GELU(),
                                 nn.Linear(dim * expansion, dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """Pre-norm transformer block over B×N×C tokens."""

    def __init__(self, dim: int, num_heads: int = 4, expansion: int = 4) -> None:
        super().__init__()
        self.attn = MultiHeadSelfAttention(dim, num_heads)  # LayerNorm inside, like the MLP
        self.mlp = MLP(dim, expansion)

    def forward(self, x: Tensor) -> Tensor:
        y, _ = self.attn(x)         # the attention weights are not needed here
        x = x + y                   # residual 1: tokens exchange information
        return x + self.mlp(x)      # residual 2: each token on its own
