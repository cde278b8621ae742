"""Two small ops that keep mixed precision (CUDA autocast) cheap and exact where it matters.

- :func:`resize_bilinear`: bilinear resizing *in the input's dtype*. CUDA autocast runs
  ``upsample_bilinear2d`` in fp32, so under bf16/fp16 every upsampled feature map would come
  out fp32 and the ``torch.cat`` that follows (ASPP branches, decoder bottleneck + skip) would
  promote all its inputs to fp32 too: at batch 32 and 256² crops that is 40 MiB (ASPP) +
  152 MiB (decoder) of fp32 activations per branch, and fp32 convolutions after them. The
  resize is computed with fp32 accumulation by the kernel anyway; only the output is stored
  in the input's dtype. Without autocast nothing changes.
- :func:`full_precision`: run a (small) module with autocast off, in its weights' dtype
  (fp32 during mixed-precision training). The depth heads use it for the log-depth and the
  bin depths, so ``exp`` never sees a value rounded to bf16 (bf16 keeps 8 significant bits:
  a log-depth of 3.0 would be off by up to 0.008, i.e. up to 0.5 SI-logRMSE points on a
  perfect prediction).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def resize_bilinear(x: Tensor, size) -> Tensor:
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)`` in ``x``'s dtype
    (autocast off for this op); a no-op when ``x`` already has that size."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    with torch.autocast(x.device.type, enabled=False):
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def full_precision(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` with autocast off and ``x`` cast to the dtype of ``module``'s weights."""
    dtype = next(module.parameters()).dtype
    with torch.autocast(x.device.type, enabled=False):
        return module(x.to(dtype))
