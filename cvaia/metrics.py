"""Evaluation metrics with the course grader's exact semantics.

Semantic segmentation
    One confusion matrix over all valid pixels (ground truth ≠ 255) of the whole split;
    per-class IoU = 100·TP/(TP+FP+FN); mIoU = mean over **all 19 classes**, a class absent
    from both ground truth and prediction counting 0. Pixel accuracy is in percent too.

Depth
    SI-logRMSE per image over the pixels with ground truth > 0 (prediction and ground truth
    both clamped to ≥ 0.01 m): ``e = log gt - log pred``,
    ``100·sqrt(mean(e²) - mean(e)²)``; the split's value is the average over images that have
    any valid pixel. abs-rel, RMSE (metres) and δ < 1.25^k (fractions in 0..1, as in the depth
    literature) are averaged over all valid *pixels* of the split (the usual convention, and
    what a streaming accumulator can do exactly).

Grader score: ``max(mIoU - 50, 0) + max(50 - SI-logRMSE, 0)``.

The streaming accumulators (:class:`ConfusionMatrix`, :class:`DepthMetrics`) keep their state
as tensors on the device of the data and never synchronise with the host in ``update``;
:meth:`state_tensors` lists them so that distributed training can ``all_reduce`` (sum) them,
and :meth:`reduce_` does exactly that.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from .data.classes import IGNORE_INDEX, NUM_CLASSES

#: Depths are clamped to at least this many metres before the log (grader semantics).
DEPTH_CLAMP_MIN = 0.01


def _all_reduce_(tensors, dist=None) -> None:
    if dist is None:
        import torch.distributed as dist
    if not (dist.is_available() and dist.is_initialized()):
        return
    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)


def _histogram(index: torch.Tensor, size: int, scatter: bool | None = None) -> torch.Tensor:
    """Counts of each value ``0..size-1`` in the int64 tensor ``index`` (all values < size).

    ``torch.bincount`` on the CPU; elsewhere a scatter-add into a fixed-size histogram, because
    CUDA's bincount reads the input's min/max back to the host (a sync). Integer atomics keep
    the scatter-add deterministic.
    """
    if scatter is None:
        scatter = index.device.type != "cpu"
    if not scatter:
        return torch.bincount(index, minlength=size)
    counts = torch.zeros(size, dtype=torch.int64, device=index.device)
    return counts.scatter_add_(0, index, torch.ones_like(index))


# ---- semantic segmentation -----------------------------------------------------------------
class ConfusionMatrix:
    """Streaming ``num_classes × num_classes`` confusion matrix (rows: ground truth, cols: prediction).

    ``matrix[i, j]`` counts pixels of true class ``i`` predicted as ``j`` (sklearn's convention),
    int64, on ``device``; with ``device=None`` it follows the device of the first update.
    Pixels whose target is ``ignore_index`` (or outside ``0..num_classes-1``) are skipped.
    Predictions must be class ids in ``0..num_classes-1`` (the output of ``argmax``); a
    prediction outside that range cannot be placed in the matrix and its pixel is skipped —
    the grader validates prediction files before scoring so this never happens there.
    """

    def __init__(self, num_classes: int = NUM_CLASSES, device=None, ignore_index: int = IGNORE_INDEX):
        if num_classes <= 0:
            raise ValueError(f"ConfusionMatrix: num_classes must be positive, got {num_classes}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self._follow_device = device is None
        self.matrix = torch.zeros(self.num_classes, self.num_classes, dtype=torch.int64,
                                  device=device if device is not None else "cpu")

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def reset(self) -> "ConfusionMatrix":
        """Zero the counts (keeps the device)."""
        self.matrix.zero_()
        return self

    @torch.no_grad()
    def update(self, pred: torch.Tensor, target: torch.Tensor) -> "ConfusionMatrix":
        """Add a batch: ``pred`` class ids (B×H×W) or logits (B×C×H×W, argmax taken); ``target`` ids."""
        pred = torch.as_tensor(pred)
        target = torch.as_tensor(target)
        if pred.dim() == target.dim() + 1 and pred.is_floating_point():
            pred = pred.argmax(1)
        if target.dim() == pred.dim() + 1 and target.shape[1] == 1:
            target = target[:, 0]
        if pred.shape != target.shape:
            raise ValueError(f"ConfusionMatrix.update: prediction shape {tuple(pred.shape)} does not "
                             f"match target shape {tuple(target.shape)}")
        if self._follow_device:
            self.matrix = self.matrix.to(pred.device)
            self._follow_device = False
        k = self.num_classes
        pred = pred.to(self.device).reshape(-1).long()
        target = target.to(self.device).reshape(-1).long()
        valid = (target >= 0) & (target < k) & (pred >= 0) & (pred < k)
        # Invalid pixels go to an extra bin (index k*k) that is dropped: no boolean indexing,
        # so no host synchronisation.
        index = torch.where(valid, target * k + pred, torch.full_like(target, k * k))
        self.matrix += _histogram(index, k * k + 1)[: k * k].view(k, k)
        return self

    def merge(self, other: "ConfusionMatrix") -> "ConfusionMatrix":
        """Add another matrix's counts (e.g. from another worker)."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"ConfusionMatrix.merge: {other.num_classes} classes vs {self.num_classes}")
        self.matrix += other.matrix.to(self.device)
        return self

    def state_tensors(self) -> list[torch.Tensor]:
        """The tensors to ``all_reduce`` (sum) across processes."""
        return [self.matrix]

    def reduce_(self, dist=None) -> "ConfusionMatrix":
        """Sum the state over all processes (no-op unless torch.distributed is initialised)."""
        _all_reduce_(self.state_tensors(), dist)
        return self

    def numpy(self) -> np.ndarray:
        return self.matrix.cpu().numpy()

    def compute(self) -> dict:
        """``miou``, ``per_class_iou`` (list), ``pixel_accuracy``."""
        return {"miou": miou(self), "per_class_iou": per_class_iou(self).tolist(),
                "pixel_accuracy": pixel_accuracy(self)}


def _cm_array(cm) -> np.ndarray:
    if isinstance(cm, ConfusionMatrix):
        cm = cm.matrix
    if isinstance(cm, torch.Tensor):
        cm = cm.detach().cpu().numpy()
    cm = np.asarray(cm)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion matrix must be square (K×K), got shape {cm.shape}")
    return cm.astype(np.float64)


def per_class_iou(cm) -> np.ndarray:
    """IoU of each class in percent, ``100·TP/(TP+FP+FN)``; a class with TP+FP+FN = 0 gets 0.

    ``cm``: a :class:`ConfusionMatrix`, a tensor or an array (rows: ground truth).
    """
    m = _cm_array(cm)
    tp = np.diag(m)
    denom = m.sum(0) + m.sum(1) - tp
    return np.where(denom > 0, 100.0 * tp / np.maximum(denom, 1.0), 0.0)


def miou(cm) -> float:
    """Mean IoU in percent over **all** classes (absent classes count 0), as the grader does."""
    return float(per_class_iou(cm).mean())


def pixel_accuracy(cm) -> float:
    """Correct pixels / valid pixels, in percent (0 when there is no valid pixel)."""
    m = _cm_array(cm)
    total = m.sum()
    return float(100.0 * np.trace(m) / total) if total > 0 else 0.0


# ---- depth ---------------------------------------------------------------------------------
def _depth_batch(pred, gt, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    pred = torch.as_tensor(pred)
    gt = torch.as_tensor(gt)
    if pred.dim() == 2:
        pred = pred[None]
    if gt.dim() == 2:
        gt = gt[None]
    if pred.dim() == 4 and pred.shape[1] == 1:
        pred = pred[:, 0]
    if gt.dim() == 4 and gt.shape[1] == 1:
        gt = gt[:, 0]
    if pred.dim() != 3 or pred.shape != gt.shape:
        raise ValueError(f"{name}: prediction {tuple(pred.shape)} and ground truth {tuple(gt.shape)} must "
                         "both be B×1×H×W, B×H×W or H×W depth maps of the same size")
    return pred, gt.to(pred.device)


def _float_dtype(device: torch.device) -> torch.dtype:
    """float64 for exact-enough sums; MPS has no float64, so float32 there."""
    return torch.float32 if device.type == "mps" else torch.float64


def _depth_terms(pred: torch.Tensor, gt: torch.Tensor):
    """Valid mask and clamped float64 (float32 on MPS) pred/gt (B×H×W)."""
    dtype = _float_dtype(pred.device)
    pred = pred.detach().to(dtype)
    gt = gt.detach().to(dtype)
    valid = torch.isfinite(gt) & (gt > 0)
    gt_c = torch.where(valid, gt, torch.ones_like(gt)).clamp_min(DEPTH_CLAMP_MIN)
    pred_c = pred.clamp_min(DEPTH_CLAMP_MIN)
    return valid, pred_c, gt_c


def _si_per_image(valid, pred_c, gt_c):
    e = torch.where(valid, torch.log(gt_c) - torch.log(pred_c), torch.zeros_like(gt_c))
    n = valid.sum((1, 2))
    nd = n.clamp_min(1).to(e.dtype)
    mean = e.sum((1, 2)) / nd
    mean_sq = (e * e).sum((1, 2)) / nd
    si = 100.0 * torch.sqrt((mean_sq - mean * mean).clamp_min(0.0))
    return torch.where(n > 0, si, torch.full_like(si, math.nan)), n


@torch.no_grad()
def si_log_rmse_per_image(pred_m, gt_m) -> torch.Tensor:
    """Grader SI-logRMSE of each image (float64 tensor of length B on the input's device —
    float32 on MPS —; NaN for an image without a valid pixel).

    Over pixels with ``gt > 0`` (both clamped ≥ 0.01 m), ``e = log gt - log pred``,
    ``100·sqrt(mean(e²) - mean(e)²)`` (a negative rounding residue is clamped to 0).
    Inputs: B×1×H×W, B×H×W or H×W tensors/arrays in metres.
    """
    pred, gt = _depth_batch(pred_m, gt_m, "si_log_rmse_per_image")
    si, _ = _si_per_image(*_depth_terms(pred, gt))
    return si


class DepthMetrics:
    """Streaming depth metrics: grader SI-logRMSE (per image, averaged) and pixel-averaged
    abs-rel, RMSE (m), δ1..δ3 (fractions).

    State: scalar tensors on ``device`` (``None``: the first update's device) — int64 counts
    and float64 sums (float32 on MPS, which has no float64).
    ``keep_per_image=True`` also keeps each image's SI-logRMSE (see :meth:`per_image`).
    """

    _SUMS = ("si_sum", "abs_rel_sum", "sq_err_sum")
    _COUNTS = ("si_images", "images", "pixels", "delta1", "delta2", "delta3")
    _NAMES = _SUMS + _COUNTS

    def __init__(self, device=None, keep_per_image: bool = False):
        self._follow_device = device is None
        self.keep_per_image = keep_per_image
        self._init_state(torch.device(device) if device is not None else torch.device("cpu"))

    def _init_state(self, device: torch.device) -> None:
        self.state = {n: torch.zeros((), dtype=_float_dtype(device) if n in self._SUMS else torch.int64,
                                     device=device) for n in self._NAMES}
        self._per_image: list[torch.Tensor] = []

    @property
    def device(self) -> torch.device:
        return self.state["si_sum"].device

    def reset(self) -> "DepthMetrics":
        self._init_state(self.device)
        return self

    @torch.no_grad()
    def update(self, pred, gt) -> "DepthMetrics":
        """Add a batch of predicted and ground-truth depth (metres; gt 0 = invalid)."""
        pred, gt = _depth_batch(pred, gt, "DepthMetrics.update")
        if self._follow_device:
            self._follow_device = False
            self._init_state(pred.device)
        pred, gt = pred.to(self.device), gt.to(self.device)
        valid, pred_c, gt_c = _depth_terms(pred, gt)
        si, n = _si_per_image(valid, pred_c, gt_c)
        has = n > 0
        s = self.state
        s["si_sum"] += torch.where(has, si, torch.zeros_like(si)).sum()
        s["si_images"] += has.sum()
        s["images"] += pred.shape[0]
        s["pixels"] += n.sum()
        v = valid.to(pred_c.dtype)
        s["abs_rel_sum"] += ((pred_c - gt_c).abs() / gt_c * v).sum()
        s["sq_err_sum"] += ((pred_c - gt_c) ** 2 * v).sum()
        ratio = torch.maximum(pred_c / gt_c, gt_c / pred_c)
        for k in (1, 2, 3):
            s[f"delta{k}"] += ((ratio < 1.25 ** k) & valid).sum()
        if self.keep_per_image:
            self._per_image.append(si)
        return self

    def merge(self, other: "DepthMetrics") -> "DepthMetrics":
        for k in self._NAMES:
            self.state[k] += other.state[k].to(self.device)
        self._per_image.extend(t.to(self.device) for t in other._per_image)
        return self

    def state_tensors(self) -> list[torch.Tensor]:
        """The tensors to ``all_reduce`` (sum) across processes (per-image lists are not reduced)."""
        return [self.state[k] for k in self._NAMES]

    def reduce_(self, dist=None) -> "DepthMetrics":
        """Sum the state over all processes (no-op unless torch.distributed is initialised)."""
        _all_reduce_(self.state_tensors(), dist)
        return self

    def per_image(self) -> torch.Tensor:
        """SI-logRMSE of every image seen, in order (needs ``keep_per_image=True``)."""
        if not self.keep_per_image:
            raise RuntimeError("DepthMetrics.per_image: construct with keep_per_image=True")
        if not self._per_image:
            return torch.zeros(0, dtype=torch.float64)
        return torch.cat(self._per_image).cpu()

    def compute(self) -> dict:
        """``si_log_rmse abs_rel rmse delta1 delta2 delta3`` (NaN when undefined) and counts."""
        s = {k: float(v) for k, v in self.state.items()}
        px = s["pixels"]
        nan = math.nan
        return {
            "si_log_rmse": s["si_sum"] / s["si_images"] if s["si_images"] > 0 else nan,
            "abs_rel": s["abs_rel_sum"] / px if px > 0 else nan,
            "rmse": math.sqrt(s["sq_err_sum"] / px) if px > 0 else nan,
            "delta1": s["delta1"] / px if px > 0 else nan,
            "delta2": s["delta2"] / px if px > 0 else nan,
            "delta3": s["delta3"] / px if px > 0 else nan,
            "num_images": int(s["images"]),
            "num_valid_images": int(s["si_images"]),
            "num_valid_pixels": int(px),
        }


# ---- grader --------------------------------------------------------------------------------
def _present(x) -> bool:
    return x is not None and not (isinstance(x, float) and math.isnan(x))


def grader_score(miou: float | None, si_log_rmse: float | None) -> float:
    """Course multitask score ``max(mIoU - 50, 0) + max(50 - SI-logRMSE, 0)``.

    A missing task (``None`` or NaN) contributes 0.
    """
    score = 0.0
    if _present(miou):
        score += max(float(miou) - 50.0, 0.0)
    if _present(si_log_rmse):
        score += max(50.0 - float(si_log_rmse), 0.0)
    return score
