"""Problem 2 — depth as a second task (notebook ``02_depth_estimation``).

One DeepLabV3+ decoder with 19 + 1 output channels (semseg logits + log-depth, depth =
``exp(x).clamp(0.1, 300)``), trained with ``L = (1 − w)·CE + w·SILog``. The notebook derives
SILog, checks its scale invariance numerically, compares the template's variants, sweeps the
task weight ``w`` and looks at the errors (confusion matrix, depth difference, worst classes).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from ..config import Config
from .common import profile_config

PROFILES = {
    # plumbing only
    "smoke": {"TRAIN_IMAGES": 8, "VAL_IMAGES": 4, "CROP_SIZE": 64, "EPOCHS": 1, "BATCH_SIZE": 4,
              "LR": 1e-3, "WEIGHTS": [0.25, 0.5, 0.75], "SAMPLES": 2, "LOG_EVERY": 1},
    # real learning on the synthetic set, ~3-4 min on 2 CPU cores
    "quick": {"TRAIN_IMAGES": 64, "VAL_IMAGES": 8, "CROP_SIZE": 64, "EPOCHS": 2, "BATCH_SIZE": 4,
              "LR": 1e-3, "WEIGHTS": [0.25, 0.5, 0.75], "SAMPLES": 3, "LOG_EVERY": 1},
    # course scale (GPU)
    "full": {"TRAIN_IMAGES": 0, "VAL_IMAGES": 0, "CROP_SIZE": 256, "EPOCHS": 16, "BATCH_SIZE": 8,
             "LR": 1e-4, "WEIGHTS": [0.25, 0.5, 0.75], "SAMPLES": 4, "LOG_EVERY": 10},
}

#: The report's task-weighting table: (w_semseg, w_depth) → mIoU, SI-logRMSE. It chose 0.5/0.5.
REPORT_WEIGHTING = pd.DataFrame([
    {"w_semseg": 0.25, "w_depth": 0.75, "miou": 83.1, "si_log_rmse": 16.3},
    {"w_semseg": 0.50, "w_depth": 0.50, "miou": 84.7, "si_log_rmse": 16.6},
    {"w_semseg": 0.75, "w_depth": 0.25, "miou": 85.1, "si_log_rmse": 17.6},
])
REPORT_CHOSEN_W = 0.5
#: The report's worst classes ("trees, buildings, posts, pedestrians") as Cityscapes names.
REPORT_WORST = ("vegetation", "building", "pole", "person")


# ---- configurations ---------------------------------------------------------------------------------------
def joint_config(P: Mapping, w: float = 0.5, **overrides) -> Config:
    """The joint model (one decoder, 19+1 channels) with SILog weight ``w`` (CE weight 1 − w)."""
    return profile_config(P, **{**dict(tasks=("semseg", "depth"), model_name="deeplabv3p", optimizer="adam",
                                       encoder_dilation=(False, False, True), decoder_skip_channels=48,
                                       decoder_num_convs=2, loss_weight_semseg=1.0 - float(w),
                                       loss_weight_depth=float(w), silog_lambda=0.15), **overrides})


def weighting_table(runs: Mapping[float, Any]) -> pd.DataFrame:
    """Per SILog weight ``w``: CE/SILog weights, mIoU, SI-logRMSE, grader score, and the report's numbers."""
    rows = []
    for w, run in runs.items():
        final = run.final
        rep = REPORT_WEIGHTING[np.isclose(REPORT_WEIGHTING["w_depth"], w)]
        rows.append({"w": w, "w_semseg": 1.0 - w, "w_depth": w,
                     "miou": float(final.get("miou", math.nan)),
                     "si_log_rmse": float(final.get("si_log_rmse", math.nan)),
                     "score": float(final.get("score", math.nan)),
                     "report_miou": float(rep["miou"].iloc[0]) if len(rep) else math.nan,
                     "report_si_log_rmse": float(rep["si_log_rmse"].iloc[0]) if len(rep) else math.nan})
    return pd.DataFrame(rows)


# ---- SILog ------------------------------------------------------------------------------------------------------
def depth_pair(seed: int = 0, shape=(2, 1, 32, 64), noise: float = 0.2, invalid: float = 0.2):
    """A synthetic ground truth (metres, some pixels invalid = 0) and a noisy prediction of it."""
    g = torch.Generator().manual_seed(seed)
    gt = torch.exp(torch.rand(shape, generator=g) * math.log(80.0 / 4.0)) * 4.0
    gt = torch.where(torch.rand(shape, generator=g) < invalid, torch.zeros_like(gt), gt)
    pred = gt.clamp_min(4.0) * torch.exp(noise * torch.randn(shape, generator=g))
    return pred, gt


def scale_invariance_table(scales: Sequence[float] = (0.1, 0.5, 1.0, 2.0, 10.0), lam: float = 0.15,
                           seed: int = 0) -> pd.DataFrame:
    """SILog when both prediction and ground truth are scaled by ``s`` and when only the prediction is.

    ``variance`` is the λ = 0 part, ``Var(e)``; ``silog`` is the course loss sqrt(Var + λ·E[e]²).
    """
    from ..losses import silog, silog_variance

    pred, gt = depth_pair(seed)
    rows = []
    for s in scales:
        rows.append({"scale": s,
                     "silog (both scaled)": float(silog(pred * s, gt * s, lam)),
                     "silog (prediction scaled)": float(silog(pred * s, gt, lam)),
                     "Var(e) (prediction scaled)": float(silog_variance(pred * s, gt)),
                     "λ·E[e]² (prediction scaled)": float(silog(pred * s, gt, lam) ** 2
                                                          - silog_variance(pred * s, gt))})
    return pd.DataFrame(rows).set_index("scale")


def scale_curves(scales=None, seed: int = 0) -> pd.DataFrame:
    """Long table (scale, variant, loss) of every SILog variant when only the prediction is scaled."""
    from ..losses import silog_variants

    scales = np.geomspace(0.1, 10.0, 25) if scales is None else scales
    pred, gt = depth_pair(seed)
    rows = [{"scale": float(s), "variant": name, "loss": float(fn(pred * float(s), gt))}
            for name, fn in silog_variants.items() for s in scales]
    return pd.DataFrame(rows)


def variants_table(seed: int = 0) -> pd.DataFrame:
    """Every SILog variant of the template on three cases, and the gradient norm it gives.

    Cases: a noisy prediction; the same prediction ×2 (a global scale error); a perfect
    prediction up to scale (pred = 2·gt). ``grad_norm`` is ‖∂L/∂log pred‖ for the noisy case.
    """
    from ..losses import silog_variants

    pred, gt = depth_pair(seed)
    rows = []
    for name, fn in silog_variants.items():
        logp = pred.log().clone().requires_grad_(True)
        loss = fn(logp.exp(), gt)
        loss.backward()
        rows.append({"variant": name, "noisy": float(loss.detach()), "noisy ×2": float(fn(pred * 2, gt)),
                     "2·gt (scale only)": float(fn(gt.clamp_min(1e-3) * 2, gt)),
                     "grad_norm": float(logp.grad.norm())})
    return pd.DataFrame(rows).set_index("variant")


# ---- errors -----------------------------------------------------------------------------------------------------
def worst_classes(cm: np.ndarray, k: int = 4) -> pd.DataFrame:
    """The ``k`` classes with the lowest IoU among those present in the ground truth.

    Ties (e.g. several classes at IoU 0 after a short run) go to the class with more
    ground-truth pixels: missing a larger class is the worse miss.
    """
    from ..data.classes import class_names
    from ..metrics import per_class_iou

    cm = np.asarray(cm)
    iou = np.asarray(per_class_iou(cm), dtype=float)
    present = cm.sum(axis=1) > 0
    df = pd.DataFrame({"class": list(class_names()), "iou": iou, "gt_pixels": cm.sum(axis=1)})
    df = df[present].sort_values(["iou", "gt_pixels"], ascending=[True, False], kind="stable")
    return df.head(k).reset_index(drop=True)


def predict_samples(run, samples: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The run's semseg ids and depth (metres) for ``samples["rgb"]`` (already cropped to ×32)."""
    return run.predict(samples["rgb"])
