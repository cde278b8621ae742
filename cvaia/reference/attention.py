"""Multi-head self-attention, written to be read (problem 4).

:class:`cvaia.models.SelfAttention` computes the same function and adds what the workbook
needs around it: dropout, an optional positional embedding and a fused fast path
(``F.scaled_dot_product_attention``). The parameters have the same names here and there, so
one's ``state_dict`` loads into the other; notebook 04 does that and checks the outputs agree.
"""

from __future__ import annotations

import math

from torch import Tensor, nn


class MultiHeadSelfAttention(nn.Module):
    """Pre-LayerNorm multi-head self-attention over ``N`` tokens of ``dim`` channels."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads  # d_k = C / H
        self.norm = nn.LayerNorm(dim)
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x`` B×N×C → (output B×N×C, attention weights B×H×N×N)."""
        B, N, C = x.shape
        h = self.norm(x)
        # project, then give every head its own d_k channels: B×N×C → B×H×N×d_k
        q, k, v = (proj(h).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)
                   for proj in (self.to_q, self.to_k, self.to_v))
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)  # B×H×N×N: query i · key j
        weights = scores.softmax(dim=-1)  # each query's weights over the keys sum to 1
        y = weights @ v  # B×H×N×d_k: a weighted mean of the values
        y = y.transpose(1, 2).reshape(B, N, C)  # the heads side by side again
        return self.out(y), weights
