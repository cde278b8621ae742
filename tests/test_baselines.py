"""Trivial baselines (majority class, position prior, constant depth) against numpy references."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix

from cvaia.data.miniscapes import MiniscapesSplit
from cvaia.experiments import baselines


def _split_arrays(root, split):
    s = MiniscapesSplit(root, split)
    sem = np.stack([s.read(i)["semseg"] for i in range(len(s))])
    dep = np.stack([s.read(i)["depth"] for i in range(len(s))])
    h, w = sem.shape[1] // 32 * 32, sem.shape[2] // 32 * 32  # the grader's top-left crop
    return sem[:, :h, :w], dep[:, :h, :w]


def _miou(gt, pred):
    valid = gt != 255
    cm = confusion_matrix(gt[valid].ravel(), pred[valid].ravel(), labels=np.arange(19)).astype(np.float64)
    tp = np.diag(cm)
    denom = cm.sum(0) + cm.sum(1) - tp
    iou = np.where(denom > 0, tp / np.maximum(denom, 1), 0.0)
    return 100 * iou.mean()


def _silog(gt, pred):
    vals = []
    for g, p in zip(gt, pred, strict=True):
        m = g > 0
        if not m.any():
            continue
        e = np.log(np.maximum(g[m], 0.01)) - np.log(np.maximum(p[m], 0.01))
        vals.append(100 * np.sqrt(max(np.mean(e ** 2) - np.mean(e) ** 2, 0)))
    return float(np.mean(vals))


def test_baselines_match_numpy(tiny_root):
    table = baselines.trivial_baselines(tiny_root)
    tr_sem, tr_dep = _split_arrays(tiny_root, "train")
    va_sem, va_dep = _split_arrays(tiny_root, "val")
    # majority class
    labels = tr_sem[tr_sem != 255]
    majority = np.bincount(labels, minlength=19).argmax()
    row = table.set_index("baseline").loc["majority class / constant depth"]
    assert row.miou == pytest.approx(_miou(va_sem, np.full_like(va_sem, majority)), abs=1e-4)
    # a constant depth map: SI-logRMSE = per-image std of log gt, whatever the constant
    assert row.si_log_rmse == pytest.approx(_silog(va_dep, np.full_like(va_dep, 7.0)), rel=1e-4)
    assert table.attrs["mean_depth_m"] == pytest.approx(tr_dep[tr_dep > 0].mean(), rel=1e-4)
    # position prior: the most frequent class at each pixel position
    onehot = np.stack([(tr_sem == c).sum(0) for c in range(19)])
    prior = onehot.argmax(0)
    pos = table.set_index("baseline").loc["position prior"]
    assert pos.miou == pytest.approx(_miou(va_sem, np.broadcast_to(prior, va_sem.shape)), abs=1e-4)
    # position depth prior: exp of the mean training log-depth at each position
    valid = tr_dep > 0
    mean_log = np.where(valid, np.log(np.maximum(tr_dep, 0.01)), 0).sum(0) / np.maximum(valid.sum(0), 1)
    prior_depth = np.where(valid.any(0), np.exp(mean_log), tr_dep[valid].mean())
    assert pos.si_log_rmse == pytest.approx(_silog(va_dep, np.broadcast_to(prior_depth, va_dep.shape)), rel=1e-3)


def test_learned_rule():
    base = {"miou_majority": 5.0, "silog_constant": 50.0}
    assert baselines.learned({"miou": 11.0, "si_log_rmse": 29.0}, base) == {"semseg": True, "depth": True}
    assert baselines.learned({"miou": 9.0, "si_log_rmse": 31.0}, base) == {"semseg": False, "depth": False}
    assert baselines.learned({"miou": float("nan"), "si_log_rmse": 20.0}, base) == {"depth": True}
    # the one rule: the position prior bounds too, and for depth abs-rel and δ1 (the scale)
    full = {**base, "miou_position": 12.0, "silog_position": 35.0, "absrel_position": 0.4, "delta1_position": 0.45}
    good = {"miou": 13.0, "si_log_rmse": 29.0, "abs_rel": 0.3, "delta1": 0.6}
    assert baselines.learned(good, full) == {"semseg": True, "depth": True}
    assert baselines.learned({**good, "miou": 11.0}, full)["semseg"] is False  # above 2× majority, below the prior
    assert baselines.learned({**good, "delta1": 0.03}, full) == {"semseg": True, "depth": False}
    assert baselines.learned({**good, "abs_rel": 0.41}, full)["depth"] is False
    assert baselines.learned({"si_log_rmse": 29.0}, full) == {"depth": False}  # no scale shown
    why = baselines.learned_reasons({**good, "delta1": 0.03, "si_log_rmse": 36.0}, full)["depth"]
    assert why == ["SI-logRMSE 36.00 > 0.6× constant map 50.00", "SI-logRMSE 36.00 ≥ position prior 35.00",
                   "δ1 0.030 ≤ position prior 0.450"], why
