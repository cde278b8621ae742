"""The class-token cross-attention segmentation head, written to be read (problem 5).

19 learnable *class tokens* ask the image questions: in each block they attend to the
decoder features (keys/values, average-pooled ``kv_pool``× per side so that there are few of
them), then pass an MLP. The logit of class k at pixel p is ``<token_k, feature_p> / √C``.
:class:`cvaia.models.ClassTokenSegHead` computes the same, in chunks of pixels and with
dropout and a fused path; its parameter names are the same except the MLP's dropout layers.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .transformer import MLP


class CrossAttention(nn.Module):
    """Pre-LayerNorm multi-head attention of queries ``x`` (B×N×C) on a ``context`` (B×M×C)."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads, self.head_dim = num_heads, dim // num_heads
        self.norm_q, self.norm_kv = nn.LayerNorm(dim), nn.LayerNorm(dim)  # queries and context apart
        self.to_q, self.to_k, self.to_v = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        B, N, C = x.shape
        c = self.norm_kv(context)
        q = self.to_q(self.norm_q(x)).view(B, N, self.num_heads, self.head_dim).transpose(1, 2)  # B×H×N×d
        k, v = (proj(c).view(B, -1, self.num_heads, self.head_dim).transpose(1, 2) for proj in (self.to_k, self.to_v))
        weights = (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).softmax(dim=-1)  # B×H×N×M
        return self.out((weights @ v).transpose(1, 2).reshape(B, N, C))


class CrossBlock(nn.Module):
    """``x ← x + CrossAttention(x, context)``, ``x ← x + MLP(x)``."""

    def __init__(self, dim: int, num_heads: int, expansion: int = 4) -> None:
        super().__init__()
        self.attn = CrossAttention(dim, num_heads)
        self.mlp = MLP(dim, expansion)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        x = x + self.attn(x, context)
        return x + self.mlp(x)


class ClassTokenSegHead(nn.Module):
    """Features B×C×h×w → class logits B×K×h×w via K learned class tokens."""

    def __init__(self, dim: int, num_classes: int = 19, num_layers: int = 2, num_heads: int = 4,
                 expansion: int = 4, kv_pool: int = 4) -> None:
        super().__init__()
        self.kv_pool = kv_pool
        self.class_tokens = nn.Parameter(torch.zeros(1, num_classes, dim))  # one learned query per class
        nn.init.trunc_normal_(self.class_tokens, std=0.02)
        self.blocks = nn.ModuleList(CrossBlock(dim, num_heads, expansion) for _ in range(num_layers))

    def forward(self, features: Tensor) -> Tensor:
        B, C, h, w = features.shape
        pooled = F.adaptive_avg_pool2d(features, (max(1, h // self.kv_pool), max(1, w // self.kv_pool)))
        context = pooled.flatten(2).transpose(1, 2)                 # B×M×C keys/values, M = hw / kv_pool²
        tokens = self.class_tokens.expand(B, -1, -1)                # the same K tokens for every image
        for block in self.blocks:
            tokens = block(tokens, context)
        return torch.einsum("bkc,bchw->bkhw", tokens, features) / math.sqrt(C)  # similarity per pixel
