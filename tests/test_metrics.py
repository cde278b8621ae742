"""Metrics against independent references (sklearn, numpy loops)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import confusion_matrix as sk_confusion_matrix

from cvaia.metrics import (
    ConfusionMatrix,
    DepthMetrics,
    grader_score,
    miou,
    per_class_iou,
    pixel_accuracy,
    si_log_rmse_per_image,
)


def _labels(seed, shape=(3, 8, 9), classes=19, ignore_frac=0.2):
    rng = np.random.default_rng(seed)
    target = rng.integers(0, classes, shape)
    target[rng.random(shape) < ignore_frac] = 255
    pred = np.where(rng.random(shape) < 0.6, np.where(target == 255, 0, target), rng.integers(0, classes, shape))
    return pred, target


# ---- confusion matrix and IoU ----------------------------------------------------------------
def test_confusion_matrix_matches_sklearn_with_ignore():
    cm = ConfusionMatrix(19)
    preds, targets = [], []
    for seed in range(3):
        pred, target = _labels(seed)
        cm.update(torch.from_numpy(pred), torch.from_numpy(target).to(torch.uint8))
        preds.append(pred.ravel())
        targets.append(target.ravel())
    p, t = np.concatenate(preds), np.concatenate(targets)
    keep = t != 255
    ref = sk_confusion_matrix(t[keep], p[keep], labels=list(range(19)))
    assert cm.matrix.dtype == torch.int64
    np.testing.assert_array_equal(cm.numpy(), ref)
    cm.reset()
    assert int(cm.matrix.sum()) == 0


def test_confusion_matrix_logits_merge_and_state():
    pred, target = _labels(5)
    logits = torch.nn.functional.one_hot(torch.from_numpy(pred), 19).permute(0, 3, 1, 2).float()
    a = ConfusionMatrix().update(logits[:2], torch.from_numpy(target[:2]))
    b = ConfusionMatrix().update(torch.from_numpy(pred[2:]), torch.from_numpy(target[2:])[:, None])
    whole = ConfusionMatrix().update(torch.from_numpy(pred), torch.from_numpy(target))
    assert torch.equal(a.merge(b).matrix, whole.matrix)
    assert a.state_tensors()[0] is a.matrix
    a.reduce_()  # no process group: a no-op
    assert torch.equal(a.matrix, whole.matrix)
    with pytest.raises(ValueError, match="shape"):
        whole.update(torch.zeros(1, 4, 4, dtype=torch.long), torch.zeros(1, 4, 5, dtype=torch.long))


def _iou_reference(cm):
    """Plain loops: IoU_c = 100·TP/(TP+FP+FN), 0 when the class appears nowhere."""
    k = len(cm)
    ious = []
    for c in range(k):
        tp = cm[c][c]
        fp = sum(cm[r][c] for r in range(k)) - tp
        fn = sum(cm[c][r] for r in range(k)) - tp
        ious.append(100.0 * tp / (tp + fp + fn) if tp + fp + fn else 0.0)
    return ious


def test_iou_and_accuracy_vs_reference_with_absent_classes():
    pred, target = _labels(7, classes=12)  # classes 12..18 absent from both
    pred[0, 0, 0], target[0, 0, 0] = 13, 4  # class 13: only a false positive → IoU 0 (not absent)
    cm = ConfusionMatrix().update(torch.from_numpy(pred), torch.from_numpy(target))
    m = cm.numpy().tolist()
    ref = _iou_reference(m)
    np.testing.assert_allclose(per_class_iou(cm), ref, rtol=1e-12)
    assert miou(cm) == pytest.approx(sum(ref) / 19)  # mean over all 19 classes
    assert miou(cm.matrix) == miou(cm.numpy()) == miou(cm)
    assert all(v == 0 for v in per_class_iou(cm)[12:])
    keep = target != 255
    assert pixel_accuracy(cm) == pytest.approx(100.0 * (pred[keep] == target[keep]).mean())
    # perfect prediction of 3 present classes → IoU 100 for those, mIoU 300/19
    perfect = ConfusionMatrix().update(torch.tensor([[0, 1, 2]]), torch.tensor([[0, 1, 2]]))
    assert miou(perfect) == pytest.approx(300 / 19)
    assert pixel_accuracy(ConfusionMatrix()) == 0.0


# ---- depth -----------------------------------------------------------------------------------
def _depth_batch(seed=0, shape=(4, 1, 7, 8)):
    rng = np.random.default_rng(seed)
    gt = rng.uniform(4, 80, shape)
    gt[rng.random(shape) < 0.3] = 0.0
    gt[1] = 0.0  # an image without any valid pixel
    pred = gt * np.exp(rng.normal(0, 0.2, shape)) + rng.uniform(0, 2, shape)
    pred[0, 0, 0, :3] = 0.0  # predictions below 0.01 m are clamped
    return pred, gt


def _si_reference(pred, gt):
    out = []
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    for p, g in zip(pred.reshape(len(pred), -1), gt.reshape(len(gt), -1), strict=True):
        ok = g > 0
        if not ok.any():
            out.append(math.nan)
            continue
        e = np.log(np.maximum(g[ok], 0.01)) - np.log(np.maximum(p[ok], 0.01))
        out.append(100.0 * math.sqrt(max(np.mean(e ** 2) - np.mean(e) ** 2, 0.0)))
    return np.array(out)


def test_si_log_rmse_per_image_vs_numpy():
    pred, gt = _depth_batch()
    ours = si_log_rmse_per_image(torch.from_numpy(pred).float(), torch.from_numpy(gt).float()).numpy()
    ref = _si_reference(pred.astype(np.float32), gt.astype(np.float32))
    assert np.isnan(ours[1]) and np.isnan(ref[1])
    np.testing.assert_allclose(ours, ref, rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(si_log_rmse_per_image(pred[:, 0], gt[:, 0]).numpy(), _si_reference(pred, gt),
                               rtol=1e-9, equal_nan=True)


def test_si_log_rmse_is_scale_invariant():
    pred, gt = _depth_batch(1)
    pred = np.maximum(pred, 1.0)
    base = si_log_rmse_per_image(pred, gt).numpy()
    for c in (0.05, 2.0, 9.0):
        np.testing.assert_allclose(si_log_rmse_per_image(pred * c, gt).numpy(), base, rtol=1e-7, atol=1e-9,
                                   equal_nan=True)
    perfect = si_log_rmse_per_image(gt, gt).numpy()
    assert np.nanmax(perfect) == 0.0


def test_depth_metrics_stream_vs_numpy():
    pred, gt = _depth_batch(2)
    dm = DepthMetrics(keep_per_image=True)
    dm.update(torch.from_numpy(pred[:3]), torch.from_numpy(gt[:3]))
    dm.update(torch.from_numpy(pred[3:, 0]), torch.from_numpy(gt[3:, 0]))  # B×H×W layout too
    r = dm.compute()
    si = _si_reference(pred, gt)
    assert r["si_log_rmse"] == pytest.approx(np.nanmean(si), rel=1e-12)  # all-invalid image left out
    assert r["num_images"] == 4 and r["num_valid_images"] == 3
    np.testing.assert_allclose(dm.per_image().numpy(), si, rtol=1e-12, equal_nan=True)
    ok = gt > 0
    p, g = np.maximum(pred[ok], 0.01), gt[ok]
    assert r["num_valid_pixels"] == ok.sum()
    assert r["abs_rel"] == pytest.approx(np.mean(np.abs(p - g) / g), rel=1e-12)
    assert r["rmse"] == pytest.approx(math.sqrt(np.mean((p - g) ** 2)), rel=1e-12)
    ratio = np.maximum(p / g, g / p)
    for k in (1, 2, 3):
        assert r[f"delta{k}"] == pytest.approx(np.mean(ratio < 1.25 ** k), rel=1e-12)
    # merging two halves equals one pass
    a = DepthMetrics().update(pred[:2], gt[:2])
    b = DepthMetrics().update(pred[2:], gt[2:])
    merged = a.merge(b).compute()
    assert merged["si_log_rmse"] == pytest.approx(r["si_log_rmse"], rel=1e-12)
    assert len(a.state_tensors()) == 9
    assert {t.dtype for t in a.state_tensors()} == {torch.float64, torch.int64}
    empty = DepthMetrics().compute()
    assert math.isnan(empty["si_log_rmse"]) and empty["num_images"] == 0
    with pytest.raises(ValueError, match="same size"):
        DepthMetrics().update(pred[:, :, :3], gt)


def test_grader_score():
    assert grader_score(74.03, 22.67) == pytest.approx(24.03 + 27.33)  # the report's 51.36
    assert grader_score(40.0, 60.0) == 0.0
    assert grader_score(80.0, None) == pytest.approx(30.0)
    assert grader_score(float("nan"), 10.0) == pytest.approx(40.0)
    assert grader_score(100.0, 0.0) == 100.0


def test_histogram_scatter_path_matches_bincount():
    """The accelerator path (scatter-add, no host sync) counts exactly like bincount."""
    from cvaia.metrics import _histogram

    index = torch.from_numpy(np.random.default_rng(3).integers(0, 362, 5000))
    ref = np.bincount(index.numpy(), minlength=362)
    np.testing.assert_array_equal(_histogram(index, 362, scatter=True).numpy(), ref)
    np.testing.assert_array_equal(_histogram(index, 362, scatter=False).numpy(), ref)
