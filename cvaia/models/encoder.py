"""ResNet-18/34 encoder with a dilation-capable BasicBlock and a feature-pyramid output.

torchvision's :class:`~torchvision.models.resnet.BasicBlock` refuses ``dilation > 1``, so
``replace_stride_with_dilation`` only works for the Bottleneck ResNets (50+). Here
:class:`DilatedBasicBlock` subclasses it with the same sub-module names, and
:class:`ResNetEncoder` subclasses torchvision's :class:`~torchvision.models.ResNet` (without
``avgpool``/``fc``), so the encoder's ``state_dict`` has exactly torchvision's keys and the
ImageNet weights load unchanged.

Weights (:func:`load_encoder_weights`):

- ``"random"``: torchvision's initialisation with ``zero_init_residual=True``;
- ``"imagenet"``: torchvision's ImageNet weights, *only* from the local torch hub cache
  (``torch.hub.get_dir()/checkpoints/<file>``) — nothing is ever downloaded;
- ``"synthetic"``: the encoder shipped in ``cvaia/weights/`` (``python -m cvaia pretrain``
  made it on a differently-seeded synthetic set: the offline stand-in for ImageNet);
- a path to a checkpoint: a cvaia run checkpoint (a dict whose ``"model"`` is the model's
  ``state_dict``), a bare model ``state_dict`` (keys ``encoder.*``) or an encoder-only one.
"""

from __future__ import annotations

from pathlib import Path

from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, ResNet
from torchvision.ops.misc import FrozenBatchNorm2d

from ..weights import imagenet_weights_path, synthetic_weights_path

#: encoder name → (blocks per stage, torchvision weights enum name)
ENCODERS = {
    "resnet18": ((2, 2, 2, 2), "ResNet18_Weights.IMAGENET1K_V1"),
    "resnet34": ((3, 4, 6, 3), "ResNet34_Weights.IMAGENET1K_V1"),
}


class PretrainedWeightsError(RuntimeError):
    """Encoder weights could not be found or do not fit the encoder."""


class DilatedBasicBlock(BasicBlock):
    """torchvision's BasicBlock, but both 3x3 convs may be dilated (``padding = dilation``).

    Same sub-modules (``conv1 bn1 relu conv2 bn2 downsample``) and the same parameters as
    :class:`~torchvision.models.resnet.BasicBlock`, so state dicts are interchangeable.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1,
                 norm_layer=None) -> None:
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, 1, norm_layer)
        if dilation > 1:
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=dilation,
                                   dilation=dilation, bias=False)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=dilation,
                                   dilation=dilation, bias=False)


class ResNetEncoder(ResNet):
    """ResNet-18/34 trunk returning a feature pyramid ``{output stride: tensor}``.

    Keys are the *actual* output strides: the stem (2, 64 ch), ``layer1`` (4, 64 ch),
    ``layer2`` (8), ``layer3`` (16), ``layer4`` (32). A dilated stage keeps the stride of the
    stage before it and replaces it in the dict, so the deepest feature map is always
    ``features[encoder.output_stride]`` (512 ch for R18/R34). E.g. with
    ``replace_stride_with_dilation=(False, False, True)`` the keys are 2, 4, 8, 16 and
    ``features[16]`` is the 512-ch ``layer4`` output.

    Args:
        layers: blocks per stage, ``(2, 2, 2, 2)`` for ResNet-18, ``(3, 4, 6, 3)`` for -34.
        replace_stride_with_dilation: for ``layer2..layer4``, dilate instead of striding.
        zero_init_residual: zero the last BN of each block (torchvision's option).
        norm_layer: torchvision's ``norm_layer`` (None: ``nn.BatchNorm2d``; :func:`resnet_encoder`
            passes :class:`~torchvision.ops.misc.FrozenBatchNorm2d` for ``frozen_bn``).
    """

    def __init__(self, layers=(2, 2, 2, 2), replace_stride_with_dilation=(False, False, True),
                 zero_init_residual: bool = True, norm_layer=None) -> None:
        dilation = tuple(bool(d) for d in replace_stride_with_dilation)
        if len(dilation) != 3:
            raise ValueError(f"replace_stride_with_dilation: expected 3 booleans (layer2..4), got {dilation}")
        super().__init__(DilatedBasicBlock, list(layers), replace_stride_with_dilation=list(dilation),
                         zero_init_residual=zero_init_residual, norm_layer=norm_layer)
        del self.avgpool, self.fc  # classification head is not used
        self.replace_stride_with_dilation = dilation
        strides = [4]
        for dil in dilation:
            strides.append(strides[-1] if dil else strides[-1] * 2)
        #: output stride of layer1..layer4
        self.stage_strides = tuple(strides)
        #: stride of the bottleneck (the deepest feature map)
        self.output_stride = strides[-1]
        #: channels of each pyramid level ``{stride: channels}``
        self.channels = {2: 64}
        for s, ch in zip(strides, (64, 128, 256, 512), strict=True):
            self.channels[s] = ch
        self.out_channels = 512

    def forward(self, x: Tensor) -> dict[int, Tensor]:  # type: ignore[override]
        """``x`` B×3×H×W (normalised RGB) → ``{stride: B×C×H/stride×W/stride}``."""
        x = self.relu(self.bn1(self.conv1(x)))
        features = {2: x}
        x = self.maxpool(x)
        for stride, layer in zip(self.stage_strides, (self.layer1, self.layer2, self.layer3, self.layer4), strict=True):
            x = layer(x)
            features[stride] = x
        return features


def imagenet_checkpoint_path(name: str) -> Path:
    """Where torchvision's ImageNet weights of encoder ``name`` live in the local torch hub cache."""
    return imagenet_weights_path(name)


def _strip(prefix: str, state: dict) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def extract_encoder_state(obj, source: str = "checkpoint") -> dict[str, Tensor]:
    """The encoder part of a checkpoint object, with torchvision key names.

    Accepts a cvaia run checkpoint (``{"model": state_dict, ...}``), ``{"state_dict": ...}``,
    a whole-model state dict (keys ``encoder.*``, optionally behind ``module.`` / ``_orig_mod.``
    from DDP / ``torch.compile``) or an encoder-only (torchvision) state dict.
    """
    state = obj
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(k, str) for k in state):
        raise PretrainedWeightsError(f"{source}: expected a state dict (or a cvaia checkpoint with key "
                                     f"'model'), got {type(state).__name__}")
    state = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    for wrapper in ("module.", "_orig_mod."):
        if state and all(k.startswith(wrapper) for k in state):
            state = _strip(wrapper, state)
    if any(k.startswith("encoder.") for k in state):
        return _strip("encoder.", state)
    return {k: v for k, v in state.items() if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")}


def _load_checkpoint(path: Path):
    """The file read by :func:`cvaia.checkpoints.load_checkpoint_file` (no arbitrary code)."""
    from ..checkpoints import load_checkpoint_file

    return load_checkpoint_file(path)


def load_encoder_weights(encoder: ResNetEncoder, weights: str, name: str = "resnet18") -> ResNetEncoder:
    """Load ``weights`` (``random`` | ``imagenet`` | checkpoint path) into ``encoder`` in place.

    Raises :class:`PretrainedWeightsError` with the file path and what was expected when the
    weights are missing or do not fit.
    """
    if weights in ("random", "", None):
        return encoder
    if weights == "imagenet":
        path = imagenet_checkpoint_path(name)
        if not path.is_file():
            raise PretrainedWeightsError(
                f"ImageNet weights for {name} are not in the local torch hub cache: put torchvision's "
                f"file at {path} (cvaia never downloads; set TORCH_HOME to use another cache), "
                f"or use pretrained=random or a checkpoint path")
        source = str(path)
    elif weights == "synthetic":
        path = synthetic_weights_path(name)
        if not path.is_file():
            raise PretrainedWeightsError(
                f"the synthetic-pretrained {name} encoder is not shipped (expected {path}); build it "
                f"with `python -m cvaia pretrain --encoder {name}`, or use pretrained=random")
        source = str(path)
    else:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise PretrainedWeightsError(f"encoder weights {weights!r}: no such file (expected 'random', "
                                         f"'imagenet', 'synthetic' or the path of a cvaia checkpoint / state dict)")
        source = str(path)
    try:
        obj = _load_checkpoint(path)
    except Exception as exc:  # corrupt file, not a torch file, or unsafe pickle
        raise PretrainedWeightsError(f"{source}: could not be read as a torch checkpoint ({exc})") from exc
    state = extract_encoder_state(obj, source)
    if not state:
        raise PretrainedWeightsError(f"{source}: no encoder weights found (expected keys 'encoder.*' in a "
                                     f"model state dict, or torchvision ResNet keys such as 'conv1.weight')")
    expected = encoder.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith(".num_batches_tracked")]
    if missing:
        raise PretrainedWeightsError(f"{source}: encoder weights incomplete for {name}, "
                                     f"{len(missing)} missing keys (first: {missing[:3]})")
    # fc.*: torchvision's classifier; num_batches_tracked: a BatchNorm counter that frozen BN has not
    extra = [k for k in state if k not in expected and not k.startswith("fc.")
             and not k.endswith(".num_batches_tracked")]
    if extra:
        raise PretrainedWeightsError(f"{source}: encoder weights do not fit {name}: {len(extra)} keys the "
                                     f"encoder does not have (first: {extra[:3]}; a deeper ResNet?)")
    wrong = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
             if k in state and state[k].shape != v.shape]
    if wrong:
        raise PretrainedWeightsError(f"{source}: encoder weights do not fit {name} "
                                     f"(checkpoint vs model shapes: {wrong[:3]})")
    encoder.load_state_dict({k: state.get(k, v) for k, v in expected.items()})
    return encoder


def resnet_encoder(name: str = "resnet18", replace_stride_with_dilation=(False, False, True),
                   weights: str = "random", frozen_bn: bool = False) -> ResNetEncoder:
    """Build a ResNet-18/34 encoder (``zero_init_residual=True``) and load ``weights``.

    ``frozen_bn``: torchvision's :class:`~torchvision.ops.misc.FrozenBatchNorm2d` instead of
    BatchNorm: the pretrained statistics and affine parameters stay fixed (the usual way to
    fine-tune a pretrained encoder on small batches, whose own statistics are too noisy). It
    needs pretrained ``weights``: frozen at initialisation, the zero-initialised residual
    branches would never open.
    """
    if name not in ENCODERS:
        raise ValueError(f"encoder {name!r}: expected one of {', '.join(ENCODERS)}")
    if frozen_bn and weights in ("random", "", None):
        raise PretrainedWeightsError("frozen BatchNorm needs pretrained weights (got random): frozen at "
                                     "initialisation, the encoder could not learn")
    encoder = ResNetEncoder(ENCODERS[name][0], replace_stride_with_dilation, zero_init_residual=True,
                            norm_layer=FrozenBatchNorm2d if frozen_bn else None)
    return load_encoder_weights(encoder, weights, name)
