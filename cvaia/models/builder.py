"""Builder functions (explicit keyword arguments, torchvision style).

Each builder makes the encoder and composes the model from its parts, the way torchvision's
``_deeplabv3_resnet`` composes ``DeepLabHead``: the adaptive-depth branch
(:func:`depth_branch`) and the segmentation heads are built here and handed to the model
classes. The transformer settings every attention model shares travel as one
:class:`AttentionOptions`. :func:`cvaia.models.build_model` (the registry) calls these.
"""

from __future__ import annotations

from dataclasses import dataclass

from .adaptive import LATENT_SOURCES, AdaptiveDepth, AdaptiveDepthHead, DepthBranch
from .aspp import ASPP
from .decoder import DecoderDeepLabV3p
from .deeplab import DeepLabV3p, DeepLabV3pMultiTask, joint_channels, ordered_tasks, task_channels
from .encoder import ResNetEncoder, resnet_encoder
from .multitask import (
    ClassTokenSegHead,
    CrossAttentionMultiTask,
    TransformerMultiTask,
    TransformerSegHead,
)

NUM_CLASSES = 19
#: Channels of the ASPP output and of the depth decoder (the report's width).
WIDTH = 256


@dataclass(frozen=True)
class AttentionOptions:
    """The transformer settings shared by the adaptive-depth head and the attention seg heads."""

    dim: int = 256
    num_bins: int = 64
    num_layers: int = 2
    num_heads: int = 4
    expansion: int = 4
    dropout: float = 0.1
    pos_embed: str = "none"
    reducer: str = "linear"
    attention_impl: str = "fast"

    @classmethod
    def from_config(cls, cfg) -> "AttentionOptions":
        return cls(dim=cfg.transformer_dim, num_bins=cfg.num_bins, num_layers=cfg.num_transformer_layers,
                   num_heads=cfg.num_heads, expansion=cfg.expansion, dropout=cfg.dropout, pos_embed=cfg.pos_embed,
                   reducer=cfg.transformer_reducer, attention_impl=cfg.attention_impl)


def deeplabv3p(*, tasks=("semseg", "depth"), encoder: str = "resnet18", weights: str = "random", frozen_bn: bool = False,
               encoder_dilation=(False, False, True), aspp_rates=(3, 6, 9), skip_channels: int = 48,
               num_convs: int = 2, num_classes: int = NUM_CLASSES) -> DeepLabV3p:
    """Joint DeepLabV3+ (one ASPP, one decoder with 19+1 channels for both tasks).

    ``aspp_rates=()`` builds the ASPP without atrous branches and ``skip_channels=0`` the
    decoder without skip connection (the ablations of problem 1.3).
    """
    enc = resnet_encoder(encoder, encoder_dilation, weights, frozen_bn)
    tasks = ordered_tasks(tasks)
    aspp = ASPP(enc.out_channels, WIDTH, aspp_rates)
    decoder = DecoderDeepLabV3p(WIDTH, enc.channels[4], joint_channels(tasks, num_classes), skip_channels, num_convs,
                                fp32_head="depth" in tasks)
    return DeepLabV3p(enc, aspp, decoder, tasks, num_classes)


def deeplabv3p_multitask(*, tasks=("semseg", "depth"), encoder: str = "resnet18", weights: str = "random", frozen_bn: bool = False,
                         encoder_dilation=(False, False, True), aspp_rates=(3, 6, 9), skip_channels: int = 48,
                         num_convs: int = 2, num_classes: int = NUM_CLASSES) -> DeepLabV3pMultiTask:
    """Branched DeepLabV3+ (shared encoder, per-task ASPP + decoder)."""
    enc = resnet_encoder(encoder, encoder_dilation, weights, frozen_bn)
    tasks = ordered_tasks(tasks)
    aspp = {t: ASPP(enc.out_channels, WIDTH, aspp_rates) for t in tasks}
    decoder = {t: DecoderDeepLabV3p(WIDTH, enc.channels[4], task_channels(t, num_classes), skip_channels, num_convs,
                                    fp32_head=t == "depth") for t in tasks}
    return DeepLabV3pMultiTask(enc, aspp, decoder)


def depth_branch(encoder: ResNetEncoder, *, skip_channels: int, num_convs: int, latents_source: str,
                 aspp_rates, attention: AttentionOptions) -> DepthBranch:
    """The adaptive-depth branch on ``encoder``: a DeepLabV3+ decoder (no ASPP) to 256 ch at
    stride 4, an ASPP when the latents come from it, and the :class:`AdaptiveDepthHead`."""
    if latents_source not in LATENT_SOURCES:
        raise ValueError(f"latents_source {latents_source!r}: expected one of {', '.join(LATENT_SOURCES)}")
    decoder = DecoderDeepLabV3p(encoder.out_channels, encoder.channels[4], WIDTH, skip_channels, num_convs)
    aspp = ASPP(encoder.out_channels, WIDTH, aspp_rates) if latents_source == "aspp" else None
    latent_ch = encoder.out_channels if latents_source == "lowest" else WIDTH
    a = attention
    head = AdaptiveDepthHead(latent_ch, WIDTH, a.dim, a.num_bins, a.num_layers, a.num_heads, a.expansion,
                             a.dropout, a.pos_embed, a.reducer, a.attention_impl)
    return DepthBranch(decoder, aspp, head, latents_source)


def adaptive_depth(*, encoder: str = "resnet18", weights: str = "random", frozen_bn: bool = False, encoder_dilation=(False, False, True),
                   skip_channels: int = 48, num_convs: int = 2, latents_source: str = "lowest",
                   aspp_rates=(3, 6, 9), attention: AttentionOptions | None = None) -> AdaptiveDepth:
    """Adaptive-bins depth model (depth only)."""
    enc = resnet_encoder(encoder, encoder_dilation, weights, frozen_bn)
    return AdaptiveDepth(enc, depth_branch(enc, skip_channels=skip_channels, num_convs=num_convs,
                                           latents_source=latents_source, aspp_rates=aspp_rates,
                                           attention=attention or AttentionOptions()))


def transformer_multitask(*, encoder: str = "resnet18", weights: str = "random", frozen_bn: bool = False,
                          encoder_dilation=(False, False, True), skip_channels: int = 48, num_convs: int = 2,
                          latents_source: str = "lowest", aspp_rates=(3, 6, 9),
                          attention: AttentionOptions | None = None,
                          num_classes: int = NUM_CLASSES) -> TransformerMultiTask:
    """Adaptive depth + transformer segmentation branch (both tasks):
    ``ASPP → TransformerSegHead (num_bins tokens) → DeepLabV3+ decoder → 19 classes``."""
    a = attention or AttentionOptions()
    enc = resnet_encoder(encoder, encoder_dilation, weights, frozen_bn)
    depth = depth_branch(enc, skip_channels=skip_channels, num_convs=num_convs, latents_source=latents_source,
                         aspp_rates=aspp_rates, attention=a)
    seg_aspp = ASPP(enc.out_channels, WIDTH, aspp_rates)
    seg_head = TransformerSegHead(WIDTH, a.dim, a.num_bins, a.num_layers, a.num_heads, a.expansion, a.dropout,
                                  a.pos_embed, a.reducer, a.attention_impl)
    seg_decoder = DecoderDeepLabV3p(a.dim, enc.channels[4], num_classes, skip_channels, num_convs)
    return TransformerMultiTask(enc, depth, seg_aspp, seg_head, seg_decoder)


def cross_attention_multitask(*, encoder: str = "resnet18", weights: str = "random", frozen_bn: bool = False,
                              encoder_dilation=(False, False, True), skip_channels: int = 48, num_convs: int = 2,
                              latents_source: str = "lowest", aspp_rates=(3, 6, 9),
                              attention: AttentionOptions | None = None, chunk: int = 4096, kv_pool: int = 4,
                              num_classes: int = NUM_CLASSES) -> CrossAttentionMultiTask:
    """Adaptive depth + class-token cross-attention segmentation head (both tasks):
    ``ASPP → DeepLabV3+ decoder (dim channels) → ClassTokenSegHead → 19 class maps``."""
    a = attention or AttentionOptions()
    enc = resnet_encoder(encoder, encoder_dilation, weights, frozen_bn)
    depth = depth_branch(enc, skip_channels=skip_channels, num_convs=num_convs, latents_source=latents_source,
                         aspp_rates=aspp_rates, attention=a)
    seg_aspp = ASPP(enc.out_channels, WIDTH, aspp_rates)
    seg_decoder = DecoderDeepLabV3p(WIDTH, enc.channels[4], a.dim, skip_channels, num_convs)
    seg_head = ClassTokenSegHead(a.dim, num_classes, a.num_layers, a.num_heads, a.expansion, a.dropout,
                                 a.attention_impl, chunk, kv_pool)
    return CrossAttentionMultiTask(enc, depth, seg_aspp, seg_head, seg_decoder)
