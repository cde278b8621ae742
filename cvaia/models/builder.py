"""Builder functions (explicit keyword arguments, torchvision style) and :func:`build_model`."""

from __future__ import annotations

from torch import nn

from .adaptive import AdaptiveDepth
from .deeplab import DeepLabV3p, DeepLabV3pMultiTask
from .encoder import PretrainedWeightsError, resnet_encoder
from .multitask import CrossAttentionMultiTask, TransformerMultiTask

NUM_CLASSES = 19


def deeplabv3p(*, tasks=("semseg", "depth"), encoder: str = "resnet18", weights: str = "random",
               encoder_dilation=(False, False, True), aspp_rates=(3, 6, 9), skip_channels: int = 48,
               num_convs: int = 2, num_classes: int = NUM_CLASSES) -> DeepLabV3p:
    """Joint DeepLabV3+ (one decoder, 19+1 channels for both tasks).

    ``aspp_rates=()`` builds the ASPP without atrous branches and ``skip_channels=0`` the
    decoder without skip connection (the ablations of problem 1.3).
    """
    enc = resnet_encoder(encoder, encoder_dilation, weights)
    return DeepLabV3p(enc, tasks, num_classes, aspp_rates, skip_channels, num_convs)


def deeplabv3p_multitask(*, tasks=("semseg", "depth"), encoder: str = "resnet18", weights: str = "random",
                         encoder_dilation=(False, False, True), aspp_rates=(3, 6, 9), skip_channels: int = 48,
                         num_convs: int = 2, num_classes: int = NUM_CLASSES) -> DeepLabV3pMultiTask:
    """Branched DeepLabV3+ (shared encoder, per-task ASPP + decoder)."""
    enc = resnet_encoder(encoder, encoder_dilation, weights)
    return DeepLabV3pMultiTask(enc, tasks, num_classes, aspp_rates, skip_channels, num_convs)


def adaptive_depth(*, encoder: str = "resnet18", weights: str = "random", encoder_dilation=(False, False, True),
                   skip_channels: int = 48, num_convs: int = 2, latents_source: str = "lowest",
                   aspp_rates=(3, 6, 9), dim: int = 256, num_bins: int = 64, num_layers: int = 2,
                   num_heads: int = 4, expansion: int = 4, dropout: float = 0.1, pos_embed: str = "none",
                   reducer: str = "linear", attention_impl: str = "fast") -> AdaptiveDepth:
    """Adaptive-bins depth model (depth only)."""
    enc = resnet_encoder(encoder, encoder_dilation, weights)
    return AdaptiveDepth(enc, skip_channels=skip_channels, num_convs=num_convs, latents_source=latents_source,
                         aspp_rates=aspp_rates, dim=dim, num_bins=num_bins, num_layers=num_layers,
                         num_heads=num_heads, expansion=expansion, dropout=dropout, pos_embed=pos_embed,
                         reducer=reducer, attention_impl=attention_impl)


def transformer_multitask(*, encoder: str = "resnet18", weights: str = "random",
                          encoder_dilation=(False, False, True), skip_channels: int = 48, num_convs: int = 2,
                          latents_source: str = "lowest", aspp_rates=(3, 6, 9), dim: int = 256,
                          num_bins: int = 64, num_layers: int = 2, num_heads: int = 4, expansion: int = 4,
                          dropout: float = 0.1, pos_embed: str = "none", reducer: str = "linear",
                          attention_impl: str = "fast", num_classes: int = NUM_CLASSES) -> TransformerMultiTask:
    """Adaptive depth + transformer segmentation branch (both tasks)."""
    enc = resnet_encoder(encoder, encoder_dilation, weights)
    return TransformerMultiTask(enc, num_classes=num_classes, skip_channels=skip_channels, num_convs=num_convs,
                                latents_source=latents_source, aspp_rates=aspp_rates, dim=dim, num_bins=num_bins,
                                num_layers=num_layers, num_heads=num_heads, expansion=expansion, dropout=dropout,
                                pos_embed=pos_embed, reducer=reducer, attention_impl=attention_impl)


def cross_attention_multitask(*, encoder: str = "resnet18", weights: str = "random",
                              encoder_dilation=(False, False, True), skip_channels: int = 48, num_convs: int = 2,
                              latents_source: str = "lowest", aspp_rates=(3, 6, 9), dim: int = 256,
                              num_bins: int = 64, num_layers: int = 2, num_heads: int = 4, expansion: int = 4,
                              dropout: float = 0.1, pos_embed: str = "none", reducer: str = "linear",
                              attention_impl: str = "fast", chunk: int = 4096, kv_pool: int = 4,
                              num_classes: int = NUM_CLASSES) -> CrossAttentionMultiTask:
    """Adaptive depth + class-token cross-attention segmentation head (both tasks)."""
    enc = resnet_encoder(encoder, encoder_dilation, weights)
    return CrossAttentionMultiTask(enc, num_classes=num_classes, skip_channels=skip_channels, num_convs=num_convs,
                                   latents_source=latents_source, aspp_rates=aspp_rates, dim=dim,
                                   num_bins=num_bins, num_layers=num_layers, num_heads=num_heads,
                                   expansion=expansion, dropout=dropout, pos_embed=pos_embed, reducer=reducer,
                                   attention_impl=attention_impl, chunk=chunk, kv_pool=kv_pool)


BUILDERS = {
    "deeplabv3p": deeplabv3p,
    "deeplabv3p_multitask": deeplabv3p_multitask,
    "adaptive_depth": adaptive_depth,
    "transformer_multitask": transformer_multitask,
    "cross_attention_multitask": cross_attention_multitask,
}


def build_model(cfg) -> nn.Module:
    """The model a :class:`cvaia.config.Config` describes (``cfg.model_name`` and its options).

    Raises :class:`cvaia.config.ConfigError` naming the flag for an unknown model, tasks the
    model cannot predict, or ``--pretrained`` weights that are missing or do not fit.
    """
    from cvaia.config import ConfigError

    if cfg.model_name not in BUILDERS:
        raise ConfigError(f"--model_name: {cfg.model_name!r} is not one of {', '.join(BUILDERS)}")
    common = dict(encoder=cfg.model_encoder_name, weights=cfg.pretrained,
                  encoder_dilation=tuple(cfg.encoder_dilation), aspp_rates=tuple(cfg.aspp_rates),
                  skip_channels=cfg.decoder_skip_channels, num_convs=cfg.decoder_num_convs)
    tasks = tuple(cfg.tasks)
    if cfg.model_name in ("deeplabv3p", "deeplabv3p_multitask"):
        kwargs = dict(common, tasks=tasks)
    else:
        wanted = {"adaptive_depth": {"depth"}}.get(cfg.model_name, {"semseg", "depth"})
        if set(tasks) != wanted:
            raise ConfigError(f"--tasks: model {cfg.model_name} predicts {','.join(sorted(wanted))}, "
                              f"got {','.join(tasks)}")
        kwargs = dict(common, latents_source=cfg.latents_source, dim=cfg.transformer_dim, num_bins=cfg.num_bins,
                      num_layers=cfg.num_transformer_layers, num_heads=cfg.num_heads, expansion=cfg.expansion,
                      dropout=cfg.dropout, pos_embed=cfg.pos_embed, reducer=cfg.transformer_reducer,
                      attention_impl=cfg.attention_impl)
        if cfg.model_name == "cross_attention_multitask":
            kwargs["chunk"] = cfg.cross_attention_chunk
    try:
        return BUILDERS[cfg.model_name](**kwargs)
    except PretrainedWeightsError as exc:
        raise ConfigError(f"--pretrained: {exc}") from exc
