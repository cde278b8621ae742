"""Multi-head attention, transformer blocks and the latents extractor (problem 4 and 5).

Every attention module has two paths over *one* set of weights, chosen by ``impl``:

- ``"explicit"``: ``softmax(Q Kᵀ / sqrt(C/H)) V`` written out — the one to read, and the
  only one that can return the attention maps (``return_attention=True`` always takes it);
- ``"fast"``: :func:`torch.nn.functional.scaled_dot_product_attention`, which picks a fused
  kernel (flash / memory-efficient attention on GPU) and never materialises the N×N weights.

Both scale by ``1/sqrt(C/H)`` (the head dimension) — the queries, before the product, as
SDPA does, so fp16 autocast (max 65504) does not overflow on scores the softmax would take —
and apply dropout to the attention weights in training only. ``impl`` is a plain attribute: switch a built model with
:func:`set_attention_impl`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .ops import resize_bilinear

ATTENTION_IMPLS = ("fast", "explicit")
POS_EMBED_MODES = ("none", "query", "input")


def _check_impl(impl: str) -> str:
    if impl not in ATTENTION_IMPLS:
        raise ValueError(f"attention impl {impl!r}: expected one of {', '.join(ATTENTION_IMPLS)}")
    return impl


class _MultiHeadAttention(nn.Module):
    """Shared machinery: Q/K/V/out projections, head split/merge and the two attention paths."""

    def __init__(self, dim: int, num_heads: int, dropout: float, impl: str) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention: dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.impl = _check_impl(impl)
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.attn_dropout = nn.Dropout(dropout)  # on the attention weights (explicit path)
        self.out_dropout = nn.Dropout(dropout)
        self.dropout = dropout

    def _split(self, t: Tensor) -> Tensor:  # B×N×C → B×H×N×C/H
        b, n, _ = t.shape
        return t.view(b, n, self.num_heads, self.head_dim).transpose(1, 2)

    def _attend(self, q: Tensor, k: Tensor, v: Tensor, return_attention: bool):
        """q B×N×C, k/v B×M×C → (B×N×C, attention B×H×N×M or None)."""
        q, k, v = self._split(q), self._split(k), self._split(v)
        if self.impl == "explicit" or return_attention:
            # q scaled before the product, as SDPA does: in fp16 (max 65504) the unscaled
            # Q·Kᵀ overflows sqrt(C/H) times sooner
            weights = torch.softmax((q * self.head_dim ** -0.5) @ k.transpose(-2, -1), dim=-1)
            y = self.attn_dropout(weights) @ v
        else:
            weights = None
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0.0)
        b, _, n, _ = y.shape
        y = self.out_dropout(self.out(y.transpose(1, 2).reshape(b, n, self.dim)))
        return y, weights


class SelfAttention(_MultiHeadAttention):
    """Pre-LayerNorm multi-head self-attention.

    ``LayerNorm → Q, K, V = Linear(dim, dim) each → softmax(QKᵀ/sqrt(C/H)) V → Linear(dim, dim)``
    with dropout on the attention weights and on the output. The residual is added by
    :class:`TransformerBlock`.

    Args:
        dim: token width C; num_heads: H (C must be divisible by H).
        dropout: attention-weight and output dropout.
        pos_embed: ``"none"``; ``"query"`` — a learned embedding added to the projected queries
            only; ``"input"`` — added to the normalised input, so queries, keys and values all
            see it. The ``nn.Parameter`` (1×N×C) exists only when used.
        num_tokens: N, needed for the positional embedding.
        impl: ``"fast"`` or ``"explicit"`` (see the module docstring).
    """

    def __init__(self, dim: int, num_heads: int = 4, dropout: float = 0.0, pos_embed: str = "none",
                 num_tokens: int | None = None, impl: str = "fast") -> None:
        super().__init__(dim, num_heads, dropout, impl)
        if pos_embed not in POS_EMBED_MODES:
            raise ValueError(f"pos_embed {pos_embed!r}: expected one of {', '.join(POS_EMBED_MODES)}")
        self.norm = nn.LayerNorm(dim)
        self.pos_mode = pos_embed
        if pos_embed != "none":
            if not num_tokens:
                raise ValueError("SelfAttention: a positional embedding needs num_tokens")
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            self.pos_embed = None

    def forward(self, x: Tensor, return_attention: bool = False):
        """``x`` B×N×C → B×N×C (and the attention maps B×H×N×N if ``return_attention``)."""
        h = self.norm(x)
        if self.pos_mode == "input":
            h = h + self.pos_embed
        q = self.to_q(h)
        if self.pos_mode == "query":
            q = q + self.pos_embed
        y, weights = self._attend(q, self.to_k(h), self.to_v(h), return_attention)
        return (y, weights) if return_attention else y


class CrossAttention(_MultiHeadAttention):
    """Pre-LayerNorm multi-head cross-attention: queries attend to a context (keys/values).

    Separate LayerNorms for the queries (``norm_q``) and the context (``norm_kv``); otherwise
    as :class:`SelfAttention` (Q/K/V/out ``Linear(dim, dim)``, scale ``1/sqrt(C/H)``).
    """

    def __init__(self, dim: int, num_heads: int = 4, dropout: float = 0.0, impl: str = "fast") -> None:
        super().__init__(dim, num_heads, dropout, impl)
        self.norm_q = nn.LayerNorm(dim)
        self.norm_kv = nn.LayerNorm(dim)

    def forward(self, x: Tensor, context: Tensor, return_attention: bool = False):
        """``x`` B×N×C queries, ``context`` B×M×C → B×N×C (and maps B×H×N×M)."""
        c = self.norm_kv(context)
        y, weights = self._attend(self.to_q(self.norm_q(x)), self.to_k(c), self.to_v(c), return_attention)
        return (y, weights) if return_attention else y


class MLP(nn.Module):
    """Pre-LayerNorm MLP: ``LayerNorm → Linear(dim, dim·expansion) → GELU → Linear back``.

    Dropout after the GELU and after the second Linear.
    """

    def __init__(self, dim: int, expansion: int = 4, dropout: float = 0.0) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim * expansion), nn.GELU(),
                                 nn.Dropout(dropout), nn.Linear(dim * expansion, dim), nn.Dropout(dropout))

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class TransformerBlock(nn.Module):
    """``x = x + SelfAttention(x); x = x + MLP(x)`` (pre-norm, residuals)."""

    def __init__(self, dim: int, num_heads: int = 4, expansion: int = 4, dropout: float = 0.0,
                 pos_embed: str = "none", num_tokens: int | None = None, impl: str = "fast") -> None:
        super().__init__()
        self.attn = SelfAttention(dim, num_heads, dropout, pos_embed, num_tokens, impl)
        self.mlp = MLP(dim, expansion, dropout)

    def forward(self, x: Tensor, return_attention: bool = False):
        """B×N×C → B×N×C (and the attention maps B×H×N×N if ``return_attention``)."""
        if return_attention:
            y, weights = self.attn(x, return_attention=True)
            x = x + y
            return x + self.mlp(x), weights
        x = x + self.attn(x)
        return x + self.mlp(x)


class CrossTransformerBlock(nn.Module):
    """``x = x + CrossAttention(x, context); x = x + MLP(x)`` (pre-norm, residuals)."""

    def __init__(self, dim: int, num_heads: int = 4, expansion: int = 4, dropout: float = 0.0,
                 impl: str = "fast") -> None:
        super().__init__()
        self.attn = CrossAttention(dim, num_heads, dropout, impl)
        self.mlp = MLP(dim, expansion, dropout)

    def forward(self, x: Tensor, context: Tensor, return_attention: bool = False):
        """``x`` B×N×C, ``context`` B×M×C → B×N×C (and the maps B×H×N×M)."""
        if return_attention:
            y, weights = self.attn(x, context, return_attention=True)
            x = x + y
            return x + self.mlp(x), weights
        x = x + self.attn(x, context)
        return x + self.mlp(x)


class LatentsExtractor(nn.Module):
    """Feature map → ``num_latents`` tokens: bilinear resize to √N×√N, then flatten.

    ``forward(x)`` B×C×h×w → B×N×C (row-major over the √N×√N grid). ``N`` must be a perfect
    square. No parameters.
    """

    def __init__(self, num_latents: int) -> None:
        super().__init__()
        side = math.isqrt(num_latents) if num_latents > 0 else 0
        if side * side != num_latents or side == 0:
            raise ValueError(f"LatentsExtractor: num_latents (num_bins) must be a perfect square such as "
                             f"64, 100 or 256, got {num_latents}")
        self.num_latents, self.side = num_latents, side

    def forward(self, x: Tensor) -> Tensor:
        grid = resize_bilinear(x, (self.side, self.side))  # in x's dtype, also under autocast
        return grid.flatten(2).transpose(1, 2)


def set_attention_impl(model: nn.Module, impl: str) -> nn.Module:
    """Switch every attention module in ``model`` to ``impl`` (``fast`` | ``explicit``) in place."""
    _check_impl(impl)
    for m in model.modules():
        if isinstance(m, _MultiHeadAttention):
            m.impl = impl
    return model
