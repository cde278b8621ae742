"""The latents extractor and a learned positional embedding, written to be read (problem 4).

The adaptive-bins head attends over a few tokens, not over every pixel: the feature map is
resized bilinearly to √N×√N and each of the N grid cells becomes one token (row by row). The
tokens then no longer know *where* they came from — attention treats its input as a set — so a
learned embedding, one vector per position, can be added. :class:`cvaia.models.LatentsExtractor`
is the same extractor; cvaia's ``SelfAttention(pos_embed="input")`` adds the embedding to its
normalised input (``"query"``: to the queries only).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class LatentsExtractor(nn.Module):
    """B×C×h×w → B×N×C tokens: bilinear resize to √N×√N, then one token per grid cell."""

    def __init__(self, num_latents: int) -> None:
        super().__init__()
        self.side = math.isqrt(num_latents)
        if num_latents <= 0 or self.side * self.side != num_latents:
            raise ValueError(f"LatentsExtractor: num_latents must be a perfect square (64, 100, ...), got {num_latents}")

    def forward(self, x: Tensor) -> Tensor:
        grid = F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False)  # B×C×√N×√N
        return grid.flatten(2).transpose(1, 2)  # B×C×N → B×N×C: the channels become each token's vector


class PositionalEmbedding(nn.Module):
    """A learned vector per token position, added to the tokens: B×N×C → B×N×C."""

    def __init__(self, num_tokens: int, dim: int) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.zeros(1, num_tokens, dim))  # 1×N×C: broadcast over the batch
        nn.init.trunc_normal_(self.pos, std=0.02)                 # small: the features dominate at first

    def forward(self, tokens: Tensor) -> Tensor:
        return tokens + self.pos
