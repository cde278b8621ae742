"""DeepLabV3+ models: the joint model (one decoder, 19+1 channels) and the branched one."""

from __future__ import annotations

import torch
from torch import Tensor, nn

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


def joint_channels(tasks, num_classes: int) -> int:
    """Output channels of the joint decoder: ``num_classes`` logits and/or one log-depth channel."""
    return sum(task_channels(t, num_classes) for t in tasks)


class DeepLabV3p(nn.Module):
    """Joint DeepLabV3+: ``encoder`` → ``aspp`` → one ``decoder`` with 19+1 output channels.

    The decoder predicts ``num_classes`` logits (semseg) followed by one log-depth channel
    (depth), or only those of the requested tasks (:func:`task_channels` per task, in
    :data:`TASK_ORDER`). Outputs are upsampled bilinearly to the input size; depth is
    ``exp(x).clamp(0.1, 300)`` metres. :func:`cvaia.models.builder.deeplabv3p` composes the
    parts (the decoder's final 1x1 conv in fp32 when depth is predicted, so the log-depth is
    never rounded to bf16/fp16).

    ``forward(x)`` → ``{"semseg": B×19×H×W logits, "depth": B×1×H×W metres}`` (its tasks).
    """

    def __init__(self, encoder: ResNetEncoder, aspp: nn.Module, decoder: DecoderDeepLabV3p,
                 tasks=TASK_ORDER, num_classes: int = 19) -> None:
        super().__init__()
        self.tasks = ordered_tasks(tasks)
        self.num_classes = num_classes
        expected = joint_channels(self.tasks, num_classes)
        if decoder.out_channels != expected:
            raise ValueError(f"DeepLabV3p: the decoder has {decoder.out_channels} output channels, the tasks "
                             f"{'+'.join(self.tasks)} need {expected}")
        self.encoder = encoder
        self.aspp = aspp
        self.decoder = decoder

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
    """Branched DeepLabV3+: a shared encoder, then per task its own ASPP and decoder.

    ``aspp`` and ``decoder`` map each task to its module (kept as :class:`~torch.nn.ModuleDict`);
    :func:`cvaia.models.builder.deeplabv3p_multitask` builds the semseg decoder with 19 output
    channels, the depth decoder with 1 (``exp(x).clamp(0.1, 300)`` metres; its final 1x1 conv
    in fp32 under autocast).
    """

    def __init__(self, encoder: ResNetEncoder, aspp: dict[str, nn.Module],
                 decoder: dict[str, DecoderDeepLabV3p]) -> None:
        super().__init__()
        self.tasks = ordered_tasks(decoder)
        if set(aspp) != set(self.tasks):
            raise ValueError(f"DeepLabV3pMultiTask: one ASPP and one decoder per task expected, got ASPPs "
                             f"for {sorted(aspp)} and decoders for {sorted(decoder)}")
        self.encoder = encoder
        self.aspp = nn.ModuleDict({t: aspp[t] for t in self.tasks})
        self.decoder = nn.ModuleDict({t: decoder[t] for t in self.tasks})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        feats = self.encoder(x)
        bottleneck, skip = feats[self.encoder.output_stride], feats[4]
        out = {}
        for task in self.tasks:
            pred, _ = self.decoder[task](self.aspp[task](bottleneck), skip)
            pred = upsample_to(pred, x.shape[-2:])
            out[task] = depth_from_log(pred) if task == "depth" else pred
        return out
