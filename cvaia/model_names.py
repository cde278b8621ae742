"""The course models' names, the tasks each predicts and one line about each — without torch.

:class:`cvaia.config.Config` validates ``--model_name`` and ``--tasks`` against this table, so
reading a config (``python -m cvaia --help``, a bad flag's error) does not import PyTorch.
:mod:`cvaia.models.registry` pairs every name here with its builder (and checks that the two
lists agree); add a model in both places.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

ALL_TASKS = ("semseg", "depth")


@dataclass(frozen=True)
class ModelSpec:
    """What a model predicts: its ``tasks`` (None: any non-empty subset of semseg, depth, chosen
    by ``--tasks``) and a one-line ``summary``."""

    tasks: tuple[str, ...] | None
    summary: str

    def task_error(self, name: str, tasks: Sequence[str]) -> str | None:
        """Why ``tasks`` do not fit this model (a message naming ``--tasks``), or None."""
        if self.tasks is None or set(tasks) == set(self.tasks):
            return None
        want = ",".join(self.tasks)
        only = " only" if len(self.tasks) == 1 else ""
        return f"--tasks: model {name} predicts {want}{only}; use --tasks {want} (got {','.join(tasks)})"


MODEL_SPECS: dict[str, ModelSpec] = {
    "deeplabv3p": ModelSpec(None, "joint DeepLabV3+ (one decoder, 19+1 channels)"),
    "deeplabv3p_multitask": ModelSpec(None, "branched DeepLabV3+ (per-task ASPP + decoder)"),
    "adaptive_depth": ModelSpec(("depth",), "adaptive depth bins (depth only)"),
    "transformer_multitask": ModelSpec(ALL_TASKS, "adaptive depth + transformer segmentation branch"),
    "cross_attention_multitask": ModelSpec(ALL_TASKS, "adaptive depth + class-token cross-attention segmentation"),
}
MODEL_NAMES = tuple(MODEL_SPECS)


def task_error(model_name: str, tasks: Sequence[str]) -> str | None:
    """Why model ``model_name`` cannot predict ``tasks`` (a message naming the flag), or None."""
    if model_name not in MODEL_SPECS:
        return f"--model_name: {model_name!r} is not one of {', '.join(MODEL_NAMES)}"
    return MODEL_SPECS[model_name].task_error(model_name, tasks)
