"""Trivial baselines: what a model scores without looking at the image.

Every comparison in the workbook starts from these, so that "the model learned" means "the
model beats a map that ignores its input":

- **majority class**: every pixel gets the most frequent training class (road or building on
  street scenes). Its mIoU is that class's IoU divided by 19;
- **position prior**: every pixel gets the class most frequent *at that pixel position* in the
  training set (road at the bottom, sky at the top): what the camera geometry alone gives;
- **constant depth**: one depth for every pixel (the training mean). Its SI-logRMSE is the
  per-image spread of log depth, whatever the constant (a constant map is scale-invariantly
  as wrong as it can be without structure): the depth counterpart of "majority class";
- **position depth prior**: each pixel gets the mean training log-depth of its position (the
  ground plane gets nearer towards the bottom of the image).

The baselines are small ``nn.Module`` s evaluated by :func:`cvaia.evaluate.evaluate`, so their
numbers use exactly the grader's metrics.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from ..data.augment import val_crop
from ..data.classes import IGNORE_INDEX, NUM_CLASSES
from ..data.encoding import depth_lut_tensor
from ..data.miniscapes import load_split_tensors


class FixedPrediction(nn.Module):
    """A "model" that outputs the same maps for every image: class scores ``logits``
    (C×H×W, or C for one class everywhere) and ``depth`` in metres (H×W, or a scalar)."""

    def __init__(self, logits: torch.Tensor | None, depth: torch.Tensor | float | None, tasks: Sequence[str]):
        super().__init__()
        self.tasks = tuple(tasks)
        self.register_buffer("logits", None if logits is None else torch.as_tensor(logits, dtype=torch.float32))
        self.register_buffer("depth_map", None if depth is None else torch.as_tensor(depth, dtype=torch.float32))

    def _spatial(self, t: torch.Tensor, b: int, h: int, w: int) -> torch.Tensor:
        if t.dim() <= 1:  # one value (per channel) everywhere
            t = t.reshape(-1, 1, 1)
        if t.shape[-2:] != (h, w):
            t = F.interpolate(t[None], size=(h, w), mode="nearest")[0]
        return t.expand(b, -1, h, w)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        b, _, h, w = x.shape
        out = {}
        if "semseg" in self.tasks:
            out["semseg"] = self._spatial(self.logits, b, h, w)
        if "depth" in self.tasks:
            d = self.depth_map if self.depth_map.dim() else self.depth_map.reshape(1)
            out["depth"] = self._spatial(d[None] if d.dim() == 2 else d, b, h, w)
        return out


def training_statistics(root: str | os.PathLike, max_images: int = 0, chunk: int = 64) -> dict:
    """Per-class pixel counts (overall and per position) and the log-depth statistics of the
    training split, at the evaluation crop (top-left, multiples of 32)."""
    data = load_split_tensors(root, "train", max_images=max_images)
    counts = pos = dep_sum = dep_n = None
    depth_sum, depth_n = 0.0, 0
    lut = depth_lut_tensor("cpu")
    for i in range(0, len(data), chunk):
        if data.semseg is not None:
            sem = val_crop(data.semseg[i:i + chunk]).long()
            sem = torch.where(sem == IGNORE_INDEX, torch.full_like(sem, NUM_CLASSES), sem)
            onehot = F.one_hot(sem, NUM_CLASSES + 1)[..., :NUM_CLASSES]  # N×H×W×C, ignore dropped
            p = onehot.sum(0).permute(2, 0, 1).to(torch.int64)
            pos = p if pos is None else pos + p
        if data.depth_codes is not None:
            d = lut[val_crop(data.depth_codes[i:i + chunk]).long()]
            valid = d > 0
            logd = torch.where(valid, torch.log(d.clamp_min(0.01)), torch.zeros_like(d))
            s, n = logd.sum(0, dtype=torch.float64), valid.sum(0)
            dep_sum = s if dep_sum is None else dep_sum + s
            dep_n = n if dep_n is None else dep_n + n
            depth_sum += float(d[valid].sum())
            depth_n += int(valid.sum())
    if pos is not None:
        counts = pos.sum((1, 2))
    return {"class_counts": counts, "position_counts": pos,
            "position_log_depth": None if dep_sum is None else (dep_sum / dep_n.clamp_min(1)).float(),
            "position_depth_valid": None if dep_n is None else dep_n > 0,
            "mean_depth_m": depth_sum / depth_n if depth_n else float("nan")}


def baseline_models(stats: dict, tasks: Sequence[str] = ("semseg", "depth")) -> dict[str, FixedPrediction]:
    """The four baselines as models (those the data allow)."""
    models = {}
    counts, pos = stats["class_counts"], stats["position_counts"]
    mean_depth = stats["mean_depth_m"]
    want_sem, want_dep = "semseg" in tasks and counts is not None, "depth" in tasks and stats["position_log_depth"] is not None
    sem_tasks = ("semseg",) if want_sem else ()
    dep_tasks = ("depth",) if want_dep else ()
    if want_sem:
        majority = F.one_hot(counts.argmax(), NUM_CLASSES).float()
        prior = F.one_hot(pos.argmax(0), NUM_CLASSES).permute(2, 0, 1).float()
    if want_dep:
        pos_depth = torch.where(stats["position_depth_valid"], stats["position_log_depth"].exp(),
                                torch.full_like(stats["position_log_depth"], mean_depth))
    if want_sem or want_dep:
        models["majority class / constant depth"] = FixedPrediction(
            majority if want_sem else None, mean_depth if want_dep else None, sem_tasks + dep_tasks)
        models["position prior"] = FixedPrediction(
            prior if want_sem else None, pos_depth if want_dep else None, sem_tasks + dep_tasks)
    return models


def trivial_baselines(root: str | os.PathLike, split: str = "val", max_images: int = 0,
                      train_images: int = 0, tasks: Sequence[str] = ("semseg", "depth")) -> pd.DataFrame:
    """mIoU, pixel accuracy, SI-logRMSE, abs-rel and δ1 of the baselines on ``split``
    (statistics from the first ``train_images`` training images, 0 = all)."""
    from ..evaluate import evaluate

    stats = training_statistics(root, train_images)
    source = load_split_tensors(root, split, max_images=max_images)
    rows = []
    for name, model in baseline_models(stats, tasks).items():
        m = evaluate(model, source, tasks=model.tasks, batch_size=16).metrics
        rows.append({"baseline": name, **{k: m[k] for k in ("miou", "pixel_acc", "si_log_rmse", "abs_rel", "delta1")}})
    table = pd.DataFrame(rows)
    table.attrs["mean_depth_m"] = stats["mean_depth_m"]
    table.attrs["majority_class"] = int(stats["class_counts"].argmax()) if stats["class_counts"] is not None else None
    return table


def baseline_values(table: pd.DataFrame) -> dict[str, float]:
    """The numbers verdicts compare against: majority-class mIoU and constant-map SI-logRMSE
    (and the position-prior ones)."""
    t = table.set_index("baseline")
    first, prior = "majority class / constant depth", "position prior"
    out = {"miou_majority": float(t.loc[first, "miou"]), "miou_position": float(t.loc[prior, "miou"]),
           "silog_constant": float(t.loc[first, "si_log_rmse"]), "silog_position": float(t.loc[prior, "si_log_rmse"])}
    for col, key in (("abs_rel", "absrel"), ("delta1", "delta1")):
        if col in t.columns:
            out[f"{key}_constant"], out[f"{key}_position"] = float(t.loc[first, col]), float(t.loc[prior, col])
    return out


#: The *learned* rule: mIoU at least this many times the majority class's ...
LEARNED_MIOU_FACTOR = 2.0
#: ... and SI-logRMSE at most this fraction of the constant map's.
LEARNED_SILOG_FACTOR = 0.6


def learned(metrics: Mapping[str, float], base: Mapping[str, float], miou_factor: float = LEARNED_MIOU_FACTOR,
            silog_factor: float = LEARNED_SILOG_FACTOR) -> dict[str, bool]:
    """Whether a run clearly beats the trivial baselines, per task — the one *learned* rule of
    every notebook (:func:`learned_reasons` says why not):

    - segmentation: mIoU at least ``miou_factor``× the majority class **and** above the
      position prior (``miou_position``);
    - depth: SI-logRMSE at most ``silog_factor``× the constant map **and** below the position
      prior, and — since SI-logRMSE ignores a wrong global scale — abs-rel below and δ1 above
      the position prior's (``absrel_position``, ``delta1_position``). A depth run without
      abs-rel or δ1 has not shown its scale and does not pass.

    A bound whose baseline value is not in ``base`` is not applied (e.g. a ``base`` without
    the position prior)."""
    return {task: not why for task, why in learned_reasons(metrics, base, miou_factor, silog_factor).items()}


def learned_reasons(metrics: Mapping[str, float], base: Mapping[str, float], miou_factor: float = LEARNED_MIOU_FACTOR,
                    silog_factor: float = LEARNED_SILOG_FACTOR) -> dict[str, list[str]]:
    """Per task the run has a metric for: the bounds of :func:`learned` it misses, as short
    phrases (``"δ1 0.03 ≤ position prior 0.47"``); an empty list when it learned."""
    def value(key):
        v = metrics.get(key)
        return None if v is None or np.isnan(float(v)) else float(v)

    def bound(key):
        v = base.get(key)
        return None if v is None or np.isnan(float(v)) else float(v)

    out: dict[str, list[str]] = {}
    miou = value("miou")
    if miou is not None:
        why = []
        if miou < miou_factor * base["miou_majority"]:
            why.append(f"mIoU {miou:.2f} < {miou_factor:g}× majority class {base['miou_majority']:.2f}")
        if bound("miou_position") is not None and miou <= bound("miou_position"):
            why.append(f"mIoU {miou:.2f} ≤ position prior {bound('miou_position'):.2f}")
        out["semseg"] = why
    si = value("si_log_rmse")
    if si is not None:
        why = []
        if si > silog_factor * base["silog_constant"]:
            why.append(f"SI-logRMSE {si:.2f} > {silog_factor:g}× constant map {base['silog_constant']:.2f}")
        if bound("silog_position") is not None and si >= bound("silog_position"):
            why.append(f"SI-logRMSE {si:.2f} ≥ position prior {bound('silog_position'):.2f}")
        for key, label, worse in (("abs_rel", "abs-rel", lambda v, b: v >= b), ("delta1", "δ1", lambda v, b: v <= b)):
            b = bound(f"{key.replace('_', '')}_position")
            if b is None:
                continue
            v = value(key)
            if v is None:
                why.append(f"no {label} (the depth scale is not shown)")
            elif worse(v, b):
                why.append(f"{label} {v:.3f} {'≥' if key == 'abs_rel' else '≤'} position prior {b:.3f}")
        out["depth"] = why
    return out
