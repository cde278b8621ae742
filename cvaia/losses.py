"""Training losses: cross-entropy with an ignore label, SILog for depth, task weighting.

SILog (scale-invariant log loss)
--------------------------------
With ``e = log y* - log ŷ`` over the valid pixels (ground truth ``y*``, prediction ``ŷ``)::

    L = sqrt( Var(e) + λ·E[e]² ) = sqrt( E[e²] - (1 - λ)·E[e]² ),      λ = 0.15.

``Var(e)`` does not change when the prediction is multiplied by a constant (``e`` only shifts),
so ``λ`` sets how much the global scale is still penalised: ``λ = 0`` is fully scale invariant
(the standard deviation of the log error), ``λ = 1`` is the plain log-RMSE. The form is the
Lagrangian of "minimise Var(e) subject to E[e]² ≤ μ". (BTS/AdaBins write the same loss as
``sqrt(E[e²] - 0.85·E[e]²)``, i.e. their ``λ`` is our ``1 - λ``.)

The course template computes the moments over **all valid pixels of the batch** (not per
image and then averaged); :func:`silog` does the same, so every valid pixel weighs the same
and images with few valid pixels (lots of sky) do not get a noisy, over-weighted term. Note
that the *grader's* SI-logRMSE (:mod:`cvaia.metrics`) is per image — the loss is only a
training surrogate.

Task weighting
--------------
:class:`MultiTaskLoss` combines the per-task losses with fixed weights (the course's
``(1 - w)·CE + w·SILog``), learned homoscedastic uncertainty (Kendall, Gal & Cipolla 2018) or
Dynamic Weight Averaging (Liu, Johns & Davison 2019).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data.classes import IGNORE_INDEX

TASKS = ("semseg", "depth")
WEIGHTINGS = ("fixed", "uncertainty", "dwa")

#: Predictions are clamped to at least this many metres before the log in :func:`silog`.
SILOG_MIN_PRED = 1e-3
#: The radicand of the sqrt is clamped to at least this value: the gradient of sqrt at 0 is
#: infinite, so a perfect prediction would otherwise give NaN gradients. (sqrt(1e-12) = 1e-6.)
SILOG_EPS = 1e-12


# ---- cross-entropy -------------------------------------------------------------------------
def cross_entropy(logits: torch.Tensor, target: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over the pixels whose target is not ``ignore_index`` (255).

    ``logits``: B×C×H×W; ``target``: B×H×W (or B×1×H×W) class ids of any integer dtype.
    A batch in which every pixel is ignored gives a loss of exactly 0 with zero (finite)
    gradients — :func:`torch.nn.functional.cross_entropy` would return NaN there.
    """
    if target.dim() == logits.dim() and target.shape[1] == 1:
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"cross_entropy: target shape {tuple(target.shape)} does not match logits "
                         f"{tuple(logits.shape)} (expected B×H×W for B×C×H×W logits)")
    target = target.long()
    total = F.cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum")
    count = (target != ignore_index).sum().clamp_min(1)
    return total / count


# ---- SILog ---------------------------------------------------------------------------------
def _depth_pair(pred: torch.Tensor, target: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring B×1×H×W / B×H×W depth tensors to the same shape (B×H×W)."""
    if pred.dim() == 4 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if target.dim() == 4 and target.shape[1] == 1:
        target = target[:, 0]
    if pred.shape != target.shape:
        raise ValueError(f"{name}: prediction shape {tuple(pred.shape)} does not match target "
                         f"{tuple(target.shape)} (expected B×1×H×W or B×H×W for both)")
    return pred, target


def log_error_moments(pred_m: torch.Tensor, target_m: torch.Tensor,
                      min_pred: float = SILOG_MIN_PRED) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(E[e], E[e²], n)`` of ``e = log target - log pred`` over the batch's valid pixels.

    Valid pixels have a finite target > 0 (0 marks invalid depth; NaN targets are ignored too).
    The prediction is clamped to ``min_pred`` before the log. With no valid pixel, both
    moments are 0 (and so is every SILog variant), with finite gradients.
    """
    pred_m, target_m = _depth_pair(pred_m, target_m, "silog")
    # at least float32: logs of fp16/bf16 depths (autocast) lose the precision SILog needs
    dtype = torch.promote_types(torch.promote_types(pred_m.dtype, target_m.dtype), torch.float32)
    pred_m, target_m = pred_m.to(dtype), target_m.to(dtype)
    valid = torch.isfinite(target_m) & (target_m > 0)
    safe_target = torch.where(valid, target_m, torch.ones_like(target_m))
    e = torch.log(safe_target) - torch.log(pred_m.clamp_min(min_pred))
    e = torch.where(valid, e, torch.zeros_like(e))
    n = valid.sum()
    denom = n.clamp_min(1).to(e.dtype)
    return e.sum() / denom, (e * e).sum() / denom, n


def _safe_sqrt(x: torch.Tensor, n: torch.Tensor) -> torch.Tensor:
    # clamp before sqrt (finite gradient at 0), and an exact 0 when nothing was valid.
    return torch.sqrt(x.clamp_min(SILOG_EPS)) * (n > 0).to(x.dtype)


def silog(pred_m: torch.Tensor, target_m: torch.Tensor, lam: float = 0.15) -> torch.Tensor:
    """SILog loss ``sqrt(Var(e) + λ·E[e]²) = sqrt(E[e²] - (1-λ)·E[e]²)`` (course form).

    ``pred_m``/``target_m``: depth in metres, B×1×H×W or B×H×W. Computed over all valid pixels
    of the batch (target finite and > 0), like the course template. An all-invalid batch
    gives exactly 0 with finite gradients; a perfect prediction gives ≈1e-6 (the radicand is
    clamped to 1e-12 so that the gradient of the square root stays finite).
    """
    mean, mean_sq, n = log_error_moments(pred_m, target_m)
    return _safe_sqrt(mean_sq - (1.0 - lam) * mean * mean, n)


def silog_no_sqrt(pred_m: torch.Tensor, target_m: torch.Tensor, lam: float = 0.15) -> torch.Tensor:
    """The radicand of :func:`silog`: ``Var(e) + λ·E[e]²`` (no square root)."""
    mean, mean_sq, n = log_error_moments(pred_m, target_m)
    return (mean_sq - (1.0 - lam) * mean * mean).clamp_min(0.0)


def silog_eigen(pred_m: torch.Tensor, target_m: torch.Tensor) -> torch.Tensor:
    """Eigen, Puhrsch & Fergus (2014): ``E[e²] - ½·E[e]²`` (no sqrt), i.e. λ = 0.5 here."""
    return silog_no_sqrt(pred_m, target_m, lam=0.5)


def silog_scaled(pred_m: torch.Tensor, target_m: torch.Tensor, lam: float = 0.15) -> torch.Tensor:
    """BTS/AdaBins scaling: ``10·sqrt(E[e²] - 0.85·E[e]²)`` = 10 × :func:`silog` with λ = 0.15."""
    return 10.0 * silog(pred_m, target_m, lam=lam)


def silog_variance(pred_m: torch.Tensor, target_m: torch.Tensor) -> torch.Tensor:
    """The scale-invariant part alone, ``Var(e) = E[e²] - E[e]²`` (λ = 0, no sqrt)."""
    return silog_no_sqrt(pred_m, target_m, lam=0.0)


#: The template's alternatives, for comparison in tests and notebooks: name → f(pred, target).
silog_variants: dict[str, Callable[[torch.Tensor, torch.Tensor], torch.Tensor]] = {
    "sqrt": silog,                  # course: sqrt(Var + 0.15·E²)
    "no_sqrt": silog_no_sqrt,       # Var + 0.15·E²
    "eigen": silog_eigen,           # Eigen et al. 2014, Var + 0.5·E²
    "scaled_sqrt": silog_scaled,    # BTS / AdaBins: 10·sqrt(Var + 0.15·E²)
    "variance": silog_variance,     # the scale-invariant part only
}


# ---- task weighting ------------------------------------------------------------------------
def _check_tasks(tasks: Sequence[str]) -> tuple[str, ...]:
    if isinstance(tasks, str):
        tasks = tuple(t.strip() for t in tasks.split(",") if t.strip())
    tasks = tuple(tasks)
    if not tasks:
        raise ValueError("MultiTaskLoss: tasks: expected at least one of semseg,depth")
    for t in tasks:
        if t not in TASKS:
            raise ValueError(f"MultiTaskLoss: tasks: {t!r} is not one of {', '.join(TASKS)}")
    if len(set(tasks)) != len(tasks):
        raise ValueError(f"MultiTaskLoss: tasks: repeated task in {','.join(tasks)}")
    return tasks


class MultiTaskLoss(nn.Module):
    """Per-task losses (CE for ``semseg``, SILog for ``depth``) and their weighted total.

    ``weighting``:

    - ``"fixed"``: ``total = w_semseg·CE + w_depth·SILog`` — the course's
      ``(1 - w)·CE + w·SILog`` with ``w = w_depth``. With a single task its weight is 1
      (there is nothing to trade off, and the loss scale stays that of the task's loss).
    - ``"uncertainty"`` (Kendall, Gal & Cipolla 2018): one learned log-variance ``s_t`` per task
      (an ``nn.Parameter``, initialised to 0), ``total = Σ_t exp(-s_t)·L_t + s_t``. This is the
      common simplified form: the paper's derivation gives ``½·exp(-s)·L + ½·s`` for a Gaussian
      regression loss and ``exp(-s)·L + ½·s`` for a softmax classifier; the ½ factors only
      rescale ``s`` and the loss, and SILog is not a Gaussian likelihood anyway, so both tasks
      use the same form. The optimum is ``s_t = log L_t``: each task's gradient is divided by
      its own loss scale. **The parameters live in this module**: give ``loss.parameters()``
      to the optimiser (with the model's).
    - ``"dwa"`` (Liu, Johns & Davison 2019, Dynamic Weight Averaging): weights
      ``λ_t = K·softmax_t(r_t / T)`` with ``r_t = L_t(k-1) / L_t(k-2)`` the ratio of the task's
      mean loss in the last two epochs, ``T = dwa_temperature`` (2) and ``K`` the number of tasks
      (so the weights sum to K). The first two epochs use equal weights 1. Call
      :meth:`end_epoch` with each epoch's mean per-task losses. The loss history is part of
      ``state_dict()`` (extra state), so a resumed run continues with the right weights.

    Only ``"uncertainty"`` has parameters. :meth:`forward` returns ``(total, {task: loss})`` with
    the per-task losses detached (for logging).
    """

    def __init__(self, tasks: Sequence[str] = TASKS, weighting: str = "fixed", w_semseg: float = 0.5,
                 w_depth: float = 0.5, lam: float = 0.15, dwa_temperature: float = 2.0):
        super().__init__()
        self.tasks = _check_tasks(tasks)
        if weighting not in WEIGHTINGS:
            raise ValueError(f"MultiTaskLoss: weighting: {weighting!r} is not one of {', '.join(WEIGHTINGS)}")
        for name, w in (("w_semseg", w_semseg), ("w_depth", w_depth)):
            if not (w >= 0 and math.isfinite(w)):
                raise ValueError(f"MultiTaskLoss: {name}: expected a finite weight >= 0, got {w}")
        if dwa_temperature <= 0:
            raise ValueError(f"MultiTaskLoss: dwa_temperature: expected > 0, got {dwa_temperature}")
        self.weighting = weighting
        self.lam = float(lam)
        self.dwa_temperature = float(dwa_temperature)
        if len(self.tasks) == 1:
            self.fixed_weights = {self.tasks[0]: 1.0}
        else:
            self.fixed_weights = {"semseg": float(w_semseg), "depth": float(w_depth)}
        if weighting == "uncertainty":
            self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in self.tasks})
        self.history: list[dict[str, float]] = []  # DWA: mean loss per task of each finished epoch

    @classmethod
    def from_config(cls, cfg) -> "MultiTaskLoss":
        """Build from a :class:`cvaia.config.Config` (tasks, loss_weighting, loss_weight_*, silog_lambda)."""
        return cls(cfg.tasks, weighting=cfg.loss_weighting, w_semseg=cfg.loss_weight_semseg,
                   w_depth=cfg.loss_weight_depth, lam=cfg.silog_lambda)

    # -- per-task losses --
    def task_losses(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Unweighted loss of every task (CE for semseg, SILog for depth)."""
        losses = {}
        for t in self.tasks:
            if t not in outputs:
                raise KeyError(f"MultiTaskLoss: model outputs have no {t!r} entry (got {sorted(outputs)})")
            if t not in targets:
                raise KeyError(f"MultiTaskLoss: targets have no {t!r} entry (got {sorted(targets)})")
            if t == "semseg":
                losses[t] = cross_entropy(outputs[t], targets[t])
            else:
                losses[t] = silog(outputs[t], targets[t], lam=self.lam)
        return losses

    def forward(self, outputs: Mapping[str, torch.Tensor], targets: Mapping[str, torch.Tensor]):
        """``(total, {task: loss.detach()})`` for model ``outputs`` and ``targets`` dicts."""
        losses = self.task_losses(outputs, targets)
        fixed = None if self.weighting == "uncertainty" else self._current_weights()
        total = None
        for t, loss in losses.items():
            if fixed is None:
                s = self.log_vars[t]
                term = torch.exp(-s) * loss + s
            else:
                term = fixed[t] * loss
            total = term if total is None else total + term
        return total, {t: loss.detach() for t, loss in losses.items()}

    # -- weights --
    def _current_weights(self) -> dict[str, float]:
        if self.weighting == "fixed":
            return dict(self.fixed_weights)
        if self.weighting == "dwa":
            return self._dwa_weights()
        return {t: float(torch.exp(-self.log_vars[t].detach())) for t in self.tasks}

    def _dwa_weights(self) -> dict[str, float]:
        k = len(self.tasks)
        if len(self.history) < 2:
            return {t: 1.0 for t in self.tasks}
        prev, prev2 = self.history[-1], self.history[-2]
        ratios = [prev[t] / max(prev2[t], 1e-12) for t in self.tasks]
        m = max(r / self.dwa_temperature for r in ratios)
        exps = [math.exp(r / self.dwa_temperature - m) for r in ratios]
        z = sum(exps)
        return {t: k * e / z for t, e in zip(self.tasks, exps, strict=True)}

    def weights(self) -> dict[str, float]:
        """The current weight of each task's loss, for logging (uncertainty: ``exp(-s_t)``)."""
        return self._current_weights()

    def end_epoch(self, mean_losses: Mapping[str, float]) -> dict[str, float]:
        """Record an epoch's mean per-task losses (used by DWA; harmless otherwise).

        Returns the weights for the next epoch.
        """
        missing = [t for t in self.tasks if t not in mean_losses]
        if missing:
            raise KeyError(f"MultiTaskLoss.end_epoch: mean_losses lacks {missing} (got {sorted(mean_losses)})")
        record = {}
        for t in self.tasks:
            v = float(mean_losses[t])
            if not math.isfinite(v):
                raise ValueError(f"MultiTaskLoss.end_epoch: mean loss of {t!r} is not finite: {v}")
            record[t] = v
        self.history.append(record)
        return self.weights()

    # DWA's history travels with state_dict() so that resumed runs keep their weights.
    def get_extra_state(self):
        return {"history": [dict(h) for h in self.history]}

    def set_extra_state(self, state) -> None:
        self.history = [dict(h) for h in (state or {}).get("history", [])]

    def extra_repr(self) -> str:
        return f"tasks={self.tasks}, weighting={self.weighting!r}, lam={self.lam}"
