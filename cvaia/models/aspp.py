"""Atrous Spatial Pyramid Pooling (DeepLabV3), layer-exact to the course report."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .ops import resize_bilinear


def _conv_bn_relu(in_ch: int, out_ch: int, kernel: int = 1, dilation: int = 1) -> nn.Sequential:
    padding = dilation if kernel == 3 else 0
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, padding=padding, dilation=dilation, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU(inplace=True),
    )


class ASPPPooling(nn.Module):
    """Image pooling branch: global average → 1x1 conv (no bias) + BN + ReLU → upsample."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.project = _conv_bn_relu(in_ch, out_ch, 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.training and x.shape[0] == 1 and not isinstance(self.project[1], nn.SyncBatchNorm):
            # BatchNorm's own message ("Expected more than 1 value per channel") names no cause.
            raise ValueError("ASPP image pooling: training needs at least 2 images per batch (its BatchNorm "
                             "sees one pooled value per channel and image), got a batch of 1; use "
                             "--batch_size >= 2 per process, or model.eval() for inference")
        y = self.project(self.pool(x))
        return resize_bilinear(y, x.shape[-2:])  # in y's dtype: the concat stays bf16 under autocast


class ASPP(nn.Module):
    """ASPP(in_ch, out_ch=256, rates=(3, 6, 9)).

    Branches, each ``out_ch`` channels:

    - 1x1 conv (no bias) + BN + ReLU;
    - per rate r: 3x3 conv (no bias, ``padding = dilation = r``) + BN + ReLU;
    - image pooling: AdaptiveAvgPool(1) → 1x1 conv (no bias) + BN + ReLU → bilinear upsample;

    concatenated (``(2 + len(rates)) * out_ch``) and fused by a 1x1 conv *with* bias, no BN.
    Parameters (R rates): ``in·out`` (1x1) + ``R·9·in·out`` (atrous) + ``in·out`` (pooling)
    + ``(2+R)·out·out + out`` (fuse) + ``2·out`` per BN, ``(2+R)`` BNs.

    ``rates=()`` is the ablation "ASPP without atrous branches": only the 1x1 branch and image
    pooling, fused by the 1x1 conv — the local view and the global context, nothing in between.

    Note: the pooling branch's BN sees one value per channel and image, so training needs a
    batch of at least 2 (as in torchvision); evaluation works with batch 1.
    """

    def __init__(self, in_ch: int, out_ch: int = 256, rates=(3, 6, 9)) -> None:
        super().__init__()
        rates = tuple(int(r) for r in rates)
        if any(r <= 0 for r in rates):
            raise ValueError(f"ASPP rates: expected positive integers (or none), got {rates}")
        self.rates = rates
        branches = [_conv_bn_relu(in_ch, out_ch, 1)]
        branches += [_conv_bn_relu(in_ch, out_ch, 3, dilation=r) for r in rates]
        branches.append(ASPPPooling(in_ch, out_ch))
        self.branches = nn.ModuleList(branches)
        self.fuse = nn.Conv2d((2 + len(rates)) * out_ch, out_ch, 1, bias=True)

    def forward(self, x: Tensor) -> Tensor:
        """B×in×h×w → B×out×h×w."""
        return self.fuse(torch.cat([branch(x) for branch in self.branches], dim=1))
