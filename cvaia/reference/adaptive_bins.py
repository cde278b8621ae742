"""The adaptive-bins depth head, written to be read (problem 4).

What :class:`cvaia.models.AdaptiveDepthHead` does once its transformer has produced the bin
tokens: one depth per token, one probability per (pixel, bin), and their expected value.
The library version adds the token extraction in front, fp32 under autocast, and a clamp whose
gradient passes the bounds (the forward values are the ones below); notebook 04 feeds both the
same tokens and query map and checks the outputs agree.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


def adaptive_bins(tokens: Tensor, query: Tensor, bin_depth: nn.Linear,
                  min_depth: float = 0.1, max_depth: float = 300.0) -> tuple[Tensor, Tensor, Tensor]:
    """``tokens`` B×N×C (one per bin, after the transformer), ``query`` B×C×h×w (the query map),
    ``bin_depth`` a ``Linear(C, 1)`` → (depth B×1×h×w, bin probabilities B×N×h×w, bin depths B×N).
    """
    # 1. every token becomes one bin depth: exp keeps it positive, the clamp keeps it in range
    bins = torch.exp(bin_depth(tokens).squeeze(-1)).clamp(min_depth, max_depth)  # B×N metres
    # 2. every pixel scores every bin: the dot product of its query vector with the bin's token
    similarity = torch.einsum("bnc,bchw->bnhw", tokens, query) / math.sqrt(tokens.shape[-1])
    probs = similarity.softmax(dim=1)  # over the N bins, per pixel: sums to 1
    # 3. the depth of a pixel is the expected bin depth under its distribution: Σ_i p_i · d_i
    depth = (probs * bins[:, :, None, None]).sum(dim=1, keepdim=True)
    return depth, probs, bins
