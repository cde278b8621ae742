"""The dilated ResNet ``BasicBlock`` and how ``replace_stride_with_dilation`` plans the encoder,
written to be read (problem 1.2b).

:class:`cvaia.models.DilatedBasicBlock` computes the same block: torchvision's
``BasicBlock`` refuses ``dilation > 1``, so cvaia subclasses it and replaces both 3×3 convs.
The sub-modules have torchvision's names (``conv1 bn1 conv2 bn2 downsample``), so one's
``state_dict`` loads into the other.
"""

from __future__ import annotations

from torch import Tensor, nn


class BasicBlock(nn.Module):
    """Two 3×3 convs with BatchNorm and a residual: ``relu(bn2(conv2(relu(bn1(conv1 x)))) + identity)``.

    ``dilation`` spreads each conv's 9 taps ``dilation`` pixels apart; padding by the same
    amount keeps the size (a stride-1 3×3 conv of dilation d sees 2d+1 pixels per side and
    pads d on each side). ``downsample`` (a strided 1×1 conv + BN) reshapes the identity when
    the block changes stride or width.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample  # None: the identity already has the output's shape

    def forward(self, x: Tensor) -> Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)  # add first, then the ReLU


def stage_plan(replace_stride_with_dilation=(False, False, True)) -> list[dict]:
    """What torchvision's ``ResNet`` does with ``replace_stride_with_dilation`` for ``layer1..4``.

    A stage that would halve the resolution (stride 2) is *dilated* instead: its stride
    becomes 1 and the dilation of every later conv is multiplied by 2, so each conv still
    covers the same input pixels as with the stride (same receptive field, same weights),
    only at 2× the resolution. The first block of a stage keeps the dilation of the stage
    before it (it sits where the stride used to be); its other blocks use the new one.
    One row per stage: output stride, stride of its first block, dilation of its first block
    and of the others.
    """
    dilate = (False, *tuple(bool(d) for d in replace_stride_with_dilation))
    plan, output_stride, dilation = [], 4, 1  # the stem (conv stride 2 + max-pool) gives stride 4
    for i, (stride, dil) in enumerate(zip((1, 2, 2, 2), dilate, strict=True)):
        first_dilation = dilation
        if dil:
            dilation, stride = dilation * stride, 1
        output_stride *= stride
        plan.append({"stage": f"layer{i + 1}", "output_stride": output_stride, "first_block_stride": stride,
                     "first_block_dilation": first_dilation, "dilation": dilation})
    return plan
