"""The course grader's two metrics in a few readable lines (numpy).

Checked for equality against :mod:`cvaia.metrics` (streaming, on any device, float64 sums).
"""

import numpy as np


def confusion_matrix(pred: np.ndarray, gt: np.ndarray, num_classes: int = 19, ignore: int = 255) -> np.ndarray:
    """Pixel counts ``cm[true, predicted]`` over every labelled pixel of all images together."""
    keep = gt != ignore
    index = gt[keep].astype(np.int64) * num_classes + pred[keep].astype(np.int64)
    return np.bincount(index, minlength=num_classes ** 2).reshape(num_classes, num_classes)


def miou(cm: np.ndarray) -> float:
    """Mean over ALL classes of 100·TP/(TP+FP+FN); a class absent from both gt and prediction counts 0."""
    tp = np.diag(cm)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp       # TP + FP + FN
    iou = np.where(union > 0, 100.0 * tp / np.maximum(union, 1), 0.0)
    return float(iou.mean())


def si_log_rmse(pred_m: np.ndarray, gt_m: np.ndarray) -> float:
    """One image: 100·std(log gt − log pred) over pixels with gt > 0 (both clamped ≥ 0.01 m)."""
    valid = gt_m > 0
    e = np.log(np.maximum(gt_m[valid], 0.01)) - np.log(np.maximum(pred_m[valid], 0.01))
    return float(100.0 * np.sqrt(max(np.mean(e * e) - np.mean(e) ** 2, 0.0)))


def mean_si_log_rmse(preds_m, gts_m) -> float:
    """The split's SI-logRMSE: the mean of the per-image values, over images with a valid pixel."""
    return float(np.mean([si_log_rmse(p, g) for p, g in zip(preds_m, gts_m, strict=True) if (g > 0).any()]))


def grader_score(miou_pct: float, si_log_rmse_value: float) -> float:
    """Points above 50 mIoU plus points below 50 SI-logRMSE (each task gives 0 on the wrong side)."""
    return max(miou_pct - 50.0, 0.0) + max(50.0 - si_log_rmse_value, 0.0)
