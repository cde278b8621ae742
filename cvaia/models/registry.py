"""The model registry: each course model's name, the tasks it predicts, and how a config builds it.

:data:`MODELS` is the one list of models. Names, tasks and summaries come from the torch-free
table :data:`cvaia.model_names.MODEL_SPECS` (which :class:`cvaia.config.Config` validates
against, so reading a config does not import PyTorch); this module pairs each name with its
builder and the config fields it reads, and :func:`build_model` builds the model a config
names. Add a model by writing its builder (:mod:`cvaia.models.builder`), one spec and one entry
here (an import-time check says when the two lists disagree).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError
from ..model_names import ALL_TASKS, MODEL_NAMES, MODEL_SPECS, task_error  # noqa: F401 (re-exported)
from .builder import (
    AttentionOptions,
    adaptive_depth,
    cross_attention_multitask,
    deeplabv3p,
    deeplabv3p_multitask,
    transformer_multitask,
)
from .encoder import PretrainedWeightsError


@dataclass(frozen=True)
class ModelInfo:
    """One registered model: ``builder``, the ``tasks`` it predicts (None: any non-empty subset
    of semseg, depth, chosen by ``--tasks``), the config fields its builder reads (``options``)
    and a one-line ``summary`` (tasks and summary come from :data:`cvaia.model_names.MODEL_SPECS`)."""

    builder: Callable[..., nn.Module]
    tasks: tuple[str, ...] | None
    options: Callable[[Any], dict[str, Any]]
    summary: str

    def task_error(self, name: str, tasks: Sequence[str]) -> str | None:
        """Why ``tasks`` do not fit this model (a message naming ``--tasks``), or None."""
        return MODEL_SPECS[name].task_error(name, tasks)


def _encoder_options(cfg) -> dict[str, Any]:
    return dict(encoder=cfg.model_encoder_name, weights=cfg.pretrained, frozen_bn=cfg.encoder_frozen_bn,
                encoder_dilation=tuple(cfg.encoder_dilation), aspp_rates=tuple(cfg.aspp_rates),
                skip_channels=cfg.decoder_skip_channels, num_convs=cfg.decoder_num_convs)


def _deeplab_options(cfg) -> dict[str, Any]:
    return dict(_encoder_options(cfg), tasks=tuple(cfg.tasks))


def _attention_options(cfg) -> dict[str, Any]:
    return dict(_encoder_options(cfg), latents_source=cfg.latents_source,
                attention=AttentionOptions.from_config(cfg))


def _cross_options(cfg) -> dict[str, Any]:
    return dict(_attention_options(cfg), chunk=cfg.cross_attention_chunk)


_BUILDERS: dict[str, tuple[Callable[..., nn.Module], Callable[[Any], dict[str, Any]]]] = {
    "deeplabv3p": (deeplabv3p, _deeplab_options),
    "deeplabv3p_multitask": (deeplabv3p_multitask, _deeplab_options),
    "adaptive_depth": (adaptive_depth, _attention_options),
    "transformer_multitask": (transformer_multitask, _attention_options),
    "cross_attention_multitask": (cross_attention_multitask, _cross_options),
}
if set(_BUILDERS) != set(MODEL_SPECS):  # pragma: no cover - a developer's mistake, caught at import
    raise ImportError(f"cvaia.models.registry: builders for {sorted(_BUILDERS)} but cvaia.model_names lists "
                      f"{sorted(MODEL_SPECS)}; add a model in both")
MODELS: dict[str, ModelInfo] = {
    name: ModelInfo(_BUILDERS[name][0], spec.tasks, _BUILDERS[name][1], spec.summary)
    for name, spec in MODEL_SPECS.items()
}
#: ``{name: builder}`` (the registry's builders, by name).
BUILDERS = {name: info.builder for name, info in MODELS.items()}


def build_model(cfg) -> nn.Module:
    """The model a :class:`cvaia.config.Config` describes (``cfg.model_name`` and its options).

    Raises :class:`cvaia.config.ConfigError` naming the flag for an unknown model, tasks the
    model cannot predict, or ``--pretrained`` weights that are missing or do not fit.
    """
    problem = task_error(cfg.model_name, tuple(cfg.tasks))
    if problem:
        raise ConfigError(problem)
    info = MODELS[cfg.model_name]
    try:
        return info.builder(**info.options(cfg))
    except PretrainedWeightsError as exc:
        raise ConfigError(f"--pretrained: {exc}") from exc
