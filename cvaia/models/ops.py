"""Two small ops that keep mixed precision (CUDA autocast) cheap and exact where it matters.

- :func:`resize_bilinear`: bilinear resizing that *returns the input's dtype*. CUDA autocast
  runs ``upsample_bilinear2d`` in fp32 and returns fp32, so under bf16/fp16 every upsampled
  feature map would come out fp32 and the ``torch.cat`` that follows (ASPP branches, decoder
  bottleneck + skip) would promote all its inputs to fp32 too: at batch 32 and 256² crops that
  is 40 MiB (ASPP) + 152 MiB (decoder) of fp32 activations per branch, and fp32 convolutions
  after them. The resize itself is computed in fp32 (the input cast up, the output cast back):
  its backward then accumulates the gradient in fp32 too — run in bf16/fp16, CUDA's backward
  kernel adds the contributions to each input pixel with atomics in that dtype (≈1 % error in
  bf16). The fp32 copies are transient: the resize saves nothing for its backward. Without
  autocast (an fp32 input) nothing changes.
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
    """``F.interpolate(x, size, mode="bilinear", align_corners=False)``, computed in fp32 (also
    its backward) and returned in ``x``'s dtype (autocast off for this op); a no-op when ``x``
    already has that size."""
    size = tuple(size)
    if tuple(x.shape[-2:]) == size:
        return x
    with torch.autocast(x.device.type, enabled=False):
        wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
        return F.interpolate(wide, size=size, mode="bilinear", align_corners=False).to(x.dtype)


def full_precision(module: nn.Module, x: Tensor) -> Tensor:
    """``module(x)`` with autocast off and ``x`` cast to the dtype of ``module``'s weights."""
    dtype = next(module.parameters()).dtype
    with torch.autocast(x.device.type, enabled=False):
        return module(x.to(dtype))
