"""DeepLabV3+ models: the joint model (one decoder, 19+1 channels) and the branched one."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from .aspp import ASPP
from .decoder import DecoderDeepLabV3p
from .encoder import ResNetEncoder
from .ops import resize_bilinear

#: the range (metres) every depth prediction is clamped to
DEPTH_RANGE = (0.1, 300.0)
TASK_ORDER = ("semseg", "depth")


def depth_from_log(x: Tensor) -> Tensor:
    """The depth head's activation: ``exp(x).clamp(0.1, 300)`` metres."""
    return torch.exp(x).clamp(*DEPTH_RANGE)


def upsample_to(x: Tensor, size) -> Tensor:
    """Bilinear resize of B×C×h×w to ``size`` (H, W) in ``x``'s dtype (also under autocast);
    a no-op when already that size."""
    return resize_bilinear(x, size)


def ordered_tasks(tasks) -> tuple[str, ...]:
    """``tasks`` in canonical order (semseg, depth); unknown or no tasks raise ValueError."""
    tasks = tuple(tasks)
    unknown = [t for t in tasks if t not in TASK_ORDER]
    if unknown or not tasks:
        raise ValueError(f"tasks: expected a non-empty subset of {', '.join(TASK_ORDER)}, got {tasks}")
    return tuple(t for t in TASK_ORDER if t in tasks)


def task_channels(task: str, num_classes: int) -> int:
    return num_classes if task == "semseg" else 1


class DeepLabV3p(nn.Module):
    """Joint DeepLabV3+: encoder → ASPP(512→256) → one decoder with 19+1 output channels.

    The decoder predicts ``num_classes`` logits (semseg) followed by one log-depth channel
    (depth), or only those of the requested tasks. Outputs are upsampled bilinearly to the
    input size; depth is ``exp(x).clamp(0.1, 300)`` metres. With depth among the tasks the
    decoder's final 1x1 conv runs in fp32 under autocast (the log-depth is never rounded to
    bf16/fp16).

    Ablations of problem 1.3: ``aspp_rates=()`` keeps only the ASPP's 1x1 and image-pooling
    branches (no atrous convs); ``skip_channels=0`` drops the decoder's skip connection.

    ``forward(x)`` → ``{"semseg": B×19×H×W logits, "depth": B×1×H×W metres}`` (its tasks).
    """

    def __init__(self, encoder: ResNetEncoder, tasks=TASK_ORDER, num_classes: int = 19,
                 aspp_rates=(3, 6, 9), skip_channels: int = 48, num_convs: int = 2) -> None:
        super().__init__()
        self.tasks = ordered_tasks(tasks)
        self.num_classes = num_classes
        self.encoder = encoder
        self.aspp = ASPP(encoder.out_channels, 256, aspp_rates)
        out_ch = sum(task_channels(t, num_classes) for t in self.tasks)
        self.decoder = DecoderDeepLabV3p(256, encoder.channels[4], out_ch, skip_channels, num_convs,
                                         fp32_head="depth" in self.tasks)

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats = self.encoder(x)
        pred, _ = self.decoder(self.aspp(feats[self.encoder.output_stride]), feats[4])
        pred = upsample_to(pred, x.shape[-2:])
        out, start = {}, 0
        for task in self.tasks:
            n = task_channels(task, self.num_classes)
            y = pred[:, start:start + n]
            out[task] = depth_from_log(y) if task == "depth" else y
            start += n
        return out


class DeepLabV3pMultiTask(nn.Module):
    """Branched DeepLabV3+: a shared encoder, then per task its own ASPP(512→256) and decoder.

    ``aspp`` and ``decoder`` are :class:`~torch.nn.ModuleDict` keyed by task; the semseg
    decoder has 19 output channels, the depth decoder 1 (``exp(x).clamp(0.1, 300)`` metres;
    its final 1x1 conv runs in fp32 under autocast).
    """

    def __init__(self, encoder: ResNetEncoder, tasks=TASK_ORDER, num_classes: int = 19,
                 aspp_rates=(3, 6, 9), skip_channels: int = 48, num_convs: int = 2) -> None:
        super().__init__()
        self.tasks = ordered_tasks(tasks)
        self.num_classes = num_classes
        self.encoder = encoder
        self.aspp = nn.ModuleDict({t: ASPP(encoder.out_channels, 256, aspp_rates) for t in self.tasks})
        self.decoder = nn.ModuleDict({
            t: DecoderDeepLabV3p(256, encoder.channels[4], task_channels(t, num_classes), skip_channels, num_convs,
                                 fp32_head=t == "depth")
            for t in self.tasks})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats = self.encoder(x)
        bottleneck, skip = feats[self.encoder.output_stride], feats[4]
        out = {}
        for task in self.tasks:
            pred, _ = self.decoder[task](self.aspp[task](bottleneck), skip)
            pred = upsample_to(pred, x.shape[-2:])
            out[task] = depth_from_log(pred) if task == "depth" else pred
        return out
