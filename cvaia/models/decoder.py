"""DeepLabV3+ decoder, layer-exact to the course report."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .ops import full_precision, resize_bilinear


class DecoderDeepLabV3p(nn.Module):
    """DecoderDeepLabV3p(bottleneck_ch, skip_ch=64, out_ch, skip_channels, num_convs).

    - skip projection: 1x1 conv *with* bias, no BN, ``skip_ch → skip_channels`` on the
      stride-4 encoder features;
    - the bottleneck features are upsampled bilinearly to the skip's size and concatenated
      (bottleneck first, then skip);
    - ``skip_channels=0`` is the ablation "no skip connection": there is no projection module,
      and the convs see the upsampled bottleneck alone (``skip`` only gives the stride-4 size);
    - ``num_convs`` × [3x3 conv → ``mid_ch`` (with bias) + BN + ReLU];
    - final 1x1 conv (with bias) ``mid_ch → out_ch``; with ``fp32_head=True`` it runs in
      fp32 under autocast (for a log-depth output that ``exp`` turns into metres).

    Under autocast the upsampled bottleneck keeps its dtype (bf16/fp16), so the concat does
    not promote the skip features to fp32.

    ``forward(bottleneck, skip)`` returns ``(predictions_4x, features_4x)``: the
    ``out_ch``-channel output and the ``mid_ch``-channel features before the final conv,
    both at stride 4.
    """

    def __init__(self, bottleneck_ch: int, skip_ch: int = 64, out_ch: int = 256,
                 skip_channels: int = 48, num_convs: int = 2, mid_ch: int = 256,
                 fp32_head: bool = False) -> None:
        super().__init__()
        if not 1 <= num_convs <= 3:
            raise ValueError(f"DecoderDeepLabV3p num_convs: expected 1, 2 or 3, got {num_convs}")
        if skip_channels < 0:
            raise ValueError(f"DecoderDeepLabV3p skip_channels: expected >= 0 (0 = no skip), got {skip_channels}")
        self.skip_channels = skip_channels
        self.out_channels = out_ch
        self.skip_proj = nn.Conv2d(skip_ch, skip_channels, 1, bias=True) if skip_channels else None
        convs = []
        in_ch = bottleneck_ch + skip_channels
        for _ in range(num_convs):
            convs += [nn.Conv2d(in_ch, mid_ch, 3, padding=1, bias=True), nn.BatchNorm2d(mid_ch),
                      nn.ReLU(inplace=True)]
            in_ch = mid_ch
        self.convs = nn.Sequential(*convs)
        self.head = nn.Conv2d(mid_ch, out_ch, 1, bias=True)
        self.fp32_head = bool(fp32_head)

    def forward(self, bottleneck: Tensor, skip: Tensor) -> tuple[Tensor, Tensor]:
        """``bottleneck`` B×Cb×h×w, ``skip`` B×Cs×H/4×W/4 → (B×out×H/4×W/4, B×mid×H/4×W/4).

        Without a skip projection (``skip_channels=0``) only ``skip``'s spatial size is used.
        """
        up = resize_bilinear(bottleneck, skip.shape[-2:])
        x = up if self.skip_proj is None else torch.cat([up, self.skip_proj(skip)], dim=1)
        features = self.convs(x)
        out = full_precision(self.head, features) if self.fp32_head else self.head(features)
        return out, features
