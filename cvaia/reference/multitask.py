"""The branched multi-task DeepLabV3+, written to be read (problem 3).

One shared encoder; each task gets its *own* ASPP and decoder on the same encoder features.
:class:`cvaia.models.DeepLabV3pMultiTask` is the same model (plus argument checks and
mixed-precision care); built from the same parts, the two give the same outputs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class BranchedDeepLab(nn.Module):
    """``encoder`` → for each task: ``aspp[task]`` → ``decoder[task]`` (with the stride-4 skip) → upsample.

    ``aspp`` and ``decoder`` map task names (``"semseg"``, ``"depth"``) to modules; the decoders
    return ``(prediction at stride 4, features)``. Semseg gives logits; depth gives
    ``exp(x).clamp(0.1, 300)`` metres (the network predicts log-depth).
    """

    def __init__(self, encoder: nn.Module, aspp: dict, decoder: dict) -> None:
        super().__init__()
        self.encoder = encoder
        self.aspp = nn.ModuleDict(aspp)        # ModuleDict: the parameters are registered (and trained)
        self.decoder = nn.ModuleDict(decoder)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        features = self.encoder(x)             # {stride: map}; the deepest one is the bottleneck
        bottleneck, skip = features[max(features)], features[4]
        out = {}
        for task in self.decoder:
            pred, _ = self.decoder[task](self.aspp[task](bottleneck), skip)
            pred = F.interpolate(pred, size=x.shape[-2:], mode="bilinear", align_corners=False)
            out[task] = torch.exp(pred).clamp(0.1, 300.0) if task == "depth" else pred
        return out
