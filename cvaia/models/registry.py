"""The model registry: each course model's name, the tasks it predicts, and how a config builds it.

:data:`MODELS` is the one list of models: :class:`cvaia.config.Config` takes its
``model_name`` choices and task rules from here, and :func:`build_model` builds the model a
config names. Add a model by writing its builder (:mod:`cvaia.models.builder`) and one entry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from torch import nn

from ..errors import ConfigError
from .builder import (
    AttentionOptions,
    adaptive_depth,
    cross_attention_multitask,
    deeplabv3p,
    deeplabv3p_multitask,
    transformer_multitask,
)
from .encoder import PretrainedWeightsError

ALL_TASKS = ("semseg", "depth")


@dataclass(frozen=True)
class ModelInfo:
    """One registered model: ``builder``, the ``tasks`` it predicts (None: any non-empty subset
    of semseg, depth, chosen by ``--tasks``) and the config fields its builder reads."""

    builder: Callable[..., nn.Module]
    tasks: tuple[str, ...] | None
    options: Callable[[Any], dict[str, Any]]
    summary: str

    def task_error(self, name: str, tasks: Sequence[str]) -> str | None:
        """Why ``tasks`` do not fit this model (a message naming ``--tasks``), or None."""
        if self.tasks is None or set(tasks) == set(self.tasks):
            return None
        want = ",".join(self.tasks)
        only = " only" if len(self.tasks) == 1 else ""
        return f"--tasks: model {name} predicts {want}{only}; use --tasks {want} (got {','.join(tasks)})"


def _encoder_options(cfg) -> dict[str, Any]:
    return dict(encoder=cfg.model_encoder_name, weights=cfg.pretrained,
                encoder_dilation=tuple(cfg.encoder_dilation), aspp_rates=tuple(cfg.aspp_rates),
                skip_channels=cfg.decoder_skip_channels, num_convs=cfg.decoder_num_convs)


def _deeplab_options(cfg) -> dict[str, Any]:
    return dict(_encoder_options(cfg), tasks=tuple(cfg.tasks))


def _attention_options(cfg) -> dict[str, Any]:
    return dict(_encoder_options(cfg), latents_source=cfg.latents_source,
                attention=AttentionOptions.from_config(cfg))


def _cross_options(cfg) -> dict[str, Any]:
    return dict(_attention_options(cfg), chunk=cfg.cross_attention_chunk)


MODELS: dict[str, ModelInfo] = {
    "deeplabv3p": ModelInfo(deeplabv3p, None, _deeplab_options,
                            "joint DeepLabV3+ (one decoder, 19+1 channels)"),
    "deeplabv3p_multitask": ModelInfo(deeplabv3p_multitask, None, _deeplab_options,
                                      "branched DeepLabV3+ (per-task ASPP + decoder)"),
    "adaptive_depth": ModelInfo(adaptive_depth, ("depth",), _attention_options,
                                "adaptive depth bins (depth only)"),
    "transformer_multitask": ModelInfo(transformer_multitask, ALL_TASKS, _attention_options,
                                       "adaptive depth + transformer segmentation branch"),
    "cross_attention_multitask": ModelInfo(cross_attention_multitask, ALL_TASKS, _cross_options,
                                           "adaptive depth + class-token cross-attention segmentation"),
}
MODEL_NAMES = tuple(MODELS)
#: ``{name: builder}`` (the registry's builders, by name).
BUILDERS = {name: info.builder for name, info in MODELS.items()}


def task_error(model_name: str, tasks: Sequence[str]) -> str | None:
    """Why model ``model_name`` cannot predict ``tasks`` (a message naming the flag), or None."""
    if model_name not in MODELS:
        return f"--model_name: {model_name!r} is not one of {', '.join(MODEL_NAMES)}"
    return MODELS[model_name].task_error(model_name, tasks)


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
