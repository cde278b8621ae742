"""DeepLabV3+'s head, written to be read: ASPP, the decoder and how the model chains them.

The library versions (:class:`cvaia.models.ASPP`, :class:`cvaia.models.DecoderDeepLabV3p`,
:class:`cvaia.models.DeepLabV3p`) compute the same thing, plus argument checks, the ablation
switches and mixed-precision care. Notebook 01 shows this source and checks, with the library's
weights copied in, that both give the same outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_ch: int, out_ch: int, kernel: int, rate: int = 1) -> nn.Sequential:
    """conv (no bias: the BN adds one) → BatchNorm → ReLU; a 3×3 conv pads by its dilation rate."""
    pad = rate if kernel == 3 else 0
    return nn.Sequential(nn.Conv2d(in_ch, out_ch, kernel, padding=pad, dilation=rate, bias=False),
                         nn.BatchNorm2d(out_ch), nn.ReLU())


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: the same features seen at several scales at once."""

    def __init__(self, in_ch: int, out_ch: int = 256, rates=(3, 6, 9)):
        super().__init__()
        self.local = conv_bn_relu(in_ch, out_ch, 1)                                # each position alone
        self.atrous = nn.ModuleList(conv_bn_relu(in_ch, out_ch, 3, r) for r in rates)  # 3×3 taps r apart
        self.image = conv_bn_relu(in_ch, out_ch, 1)                                # on the image's mean
        self.fuse = nn.Conv2d((2 + len(rates)) * out_ch, out_ch, 1)                # with bias, no BN

    def forward(self, x):
        context = self.image(x.mean(dim=(2, 3), keepdim=True))                     # B×out×1×1
        context = F.interpolate(context, size=x.shape[-2:], mode="bilinear", align_corners=False)
        branches = [self.local(x), *(a(x) for a in self.atrous), context]
        return self.fuse(torch.cat(branches, dim=1))


class DecoderDeepLabV3p(nn.Module):
    """Upsample the ASPP output to stride 4, add the projected stride-4 encoder features, refine."""

    def __init__(self, bottleneck_ch: int, skip_ch: int = 64, out_ch: int = 19, skip_channels: int = 48,
                 num_convs: int = 2, mid_ch: int = 256):
        super().__init__()
        self.skip_proj = nn.Conv2d(skip_ch, skip_channels, 1)                      # 1×1, bias, no BN
        layers, ch = [], bottleneck_ch + skip_channels
        for _ in range(num_convs):
            layers += [nn.Conv2d(ch, mid_ch, 3, padding=1), nn.BatchNorm2d(mid_ch), nn.ReLU()]
            ch = mid_ch
        self.convs = nn.Sequential(*layers)
        self.head = nn.Conv2d(mid_ch, out_ch, 1)                                   # per-pixel classifier

    def forward(self, bottleneck, skip):
        up = F.interpolate(bottleneck, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        features = self.convs(torch.cat([up, self.skip_proj(skip)], dim=1))
        return self.head(features), features                                       # both at stride 4


def deeplabv3p_logits(features: dict, aspp: nn.Module, decoder: nn.Module, size) -> torch.Tensor:
    """The DeepLabV3+ head on the encoder's ``{stride: features}``: ASPP on the deepest features,
    the decoder with the stride-4 skip, then bilinear upsampling to the input ``size``."""
    bottleneck = features[max(features)]
    logits, _ = decoder(aspp(bottleneck), features[4])
    return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
