"""Evaluation on a labelled split, shared by training (every epoch) and the notebooks.

Validation uses the full images cropped top-left to multiples of 32
(:func:`cvaia.data.augment.prepare_eval_batch`); the metrics follow the course grader
(:mod:`cvaia.metrics`): one confusion matrix over the split, per-image SI-logRMSE averaged
over images. Under ``torch.distributed`` each process evaluates every ``world_size``-th
image and the metric state tensors are summed across processes before the metrics are
computed, so every process gets the same numbers.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.augment import prepare_eval_batch, val_crop
from .data.encoding import depth_lut, normalize_rgb
from .data.miniscapes import MiniscapesSplit, SplitTensors, load_split_tensors
from .metrics import ConfusionMatrix, DepthMetrics, grader_score

#: Keys of the metrics dict that :func:`evaluate` returns (besides ``per_class_iou``).
METRIC_KEYS = ("miou", "pixel_acc", "si_log_rmse", "abs_rel", "rmse", "delta1", "delta2", "delta3", "score")


@dataclass
class EvalResult:
    """Metrics of one evaluation and the confusion matrix (None without semseg)."""

    metrics: dict
    confusion: np.ndarray | None = None
    per_image_si: np.ndarray | None = field(default=None, repr=False)


def rgb_to_batch(rgb, device: torch.device) -> torch.Tensor:
    """uint8 images (numpy H×W×3 / B×H×W×3, or a tensor 3×H×W / B×3×H×W) → normalised
    float B×3×h×w on ``device``, cropped top-left to multiples of 32."""
    if isinstance(rgb, np.ndarray):
        if rgb.dtype != np.uint8 or rgb.shape[-1] != 3 or rgb.ndim not in (3, 4):
            raise ValueError(f"rgb: expected uint8 numpy (H, W, 3) or (B, H, W, 3), got {rgb.dtype} {rgb.shape}")
        t = torch.from_numpy(np.ascontiguousarray(rgb))
        t = t[None] if t.ndim == 3 else t
        t = t.permute(0, 3, 1, 2)
    elif isinstance(rgb, torch.Tensor):
        if rgb.dtype != torch.uint8 or rgb.ndim not in (3, 4) or rgb.shape[-3] != 3:
            raise ValueError(f"rgb: expected a uint8 tensor 3×H×W or B×3×H×W, got {rgb.dtype} {tuple(rgb.shape)}")
        t = rgb[None] if rgb.ndim == 3 else rgb
    else:
        raise TypeError(f"rgb: expected a numpy array or torch tensor, got {type(rgb).__name__}")
    return normalize_rgb(val_crop(t.to(device)))


def predict_batch(model: torch.nn.Module, rgb: torch.Tensor, tta_flip: bool = False,
                  autocast_dtype: torch.dtype | None = None,
                  channels_last: bool = False) -> dict[str, torch.Tensor]:
    """Forward a normalised batch (no gradients) and return float32 outputs.

    ``tta_flip`` averages with the horizontally mirrored input: semseg as softmax
    probabilities (returned as their log, so ``argmax`` still gives the class), depth in metres.
    """
    if channels_last:
        rgb = rgb.contiguous(memory_format=torch.channels_last)

    def forward(x):
        with torch.autocast(x.device.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
            out = model(x)
        return {k: v.float() for k, v in out.items()}

    with torch.inference_mode():
        out = forward(rgb)
        if tta_flip:
            flipped = forward(rgb.flip(-1))
            if "semseg" in out:
                prob = (F.softmax(out["semseg"], 1) + F.softmax(flipped["semseg"], 1).flip(-1)) / 2
                out["semseg"] = prob.clamp_min(1e-12).log()
            if "depth" in out:
                out["depth"] = (out["depth"] + flipped["depth"].flip(-1)) / 2
    return out


def _batches(n: int, batch_size: int, rank: int, world_size: int) -> list[list[int]]:
    mine = list(range(rank, n, world_size))
    return [mine[s:s + batch_size] for s in range(0, len(mine), batch_size)]


def _read_batch(source, idx: Sequence[int], pool: ThreadPoolExecutor | None = None):
    """uint8 tensors (rgb B×3×H×W, semseg B×H×W or None, depth codes B×H×W or None); a
    per-sample source is decoded by ``pool``'s threads when given (PIL releases the GIL)."""
    if isinstance(source, SplitTensors):
        ix = torch.as_tensor(idx)
        return tuple(t[ix] if t is not None else None for t in (source.rgb, source.semseg, source.depth_codes))
    raws = list(pool.map(source.read_raw, idx)) if pool is not None else [source.read_raw(i) for i in idx]
    rgb = torch.from_numpy(np.stack([r["rgb"] for r in raws])).permute(0, 3, 1, 2)
    sem = torch.from_numpy(np.stack([r["semseg"] for r in raws])) if "semseg" in raws[0] else None
    dep = torch.from_numpy(np.stack([r["depth_codes"] for r in raws])) if "depth_codes" in raws[0] else None
    return rgb, sem, dep


def evaluate(model: torch.nn.Module, source: SplitTensors | MiniscapesSplit | str | os.PathLike,
             split: str = "val", *, tasks: Sequence[str] | None = None, device="cpu",
             batch_size: int = 8, max_images: int = 0, tta_flip: bool = False,
             autocast_dtype: torch.dtype | None = None, channels_last: bool = False,
             rank: int = 0, world_size: int = 1, keep_per_image: bool = False,
             progress: bool = False, workers: int = 0) -> EvalResult:
    """Evaluate ``model`` on a labelled split with the grader's metrics.

    ``source``: preloaded :class:`SplitTensors`, a :class:`MiniscapesSplit` (read per batch),
    or a data set root (then ``split`` and ``max_images`` choose the images). ``tasks``
    default to ``model.tasks``. Returns an :class:`EvalResult` whose ``metrics`` hold
    ``miou pixel_acc per_class_iou si_log_rmse abs_rel rmse delta1 delta2 delta3 score``
    (NaN for a task that is not evaluated; ``score`` is the grader's multitask score and is
    NaN unless both tasks are evaluated). ``workers`` > 1 threads decode a per-sample source's
    images (the course's ``--workers_validation``).
    """
    device = torch.device(device)
    if isinstance(source, (str, os.PathLike, Path)):
        source = MiniscapesSplit(source, split)
    tasks = tuple(tasks if tasks is not None else getattr(model, "tasks", ("semseg", "depth")))
    n = len(source)
    if max_images > 0:
        n = min(n, max_images)
    do_sem = "semseg" in tasks and (source.semseg is not None if isinstance(source, SplitTensors) else source.has_semseg)
    do_dep = "depth" in tasks and (source.depth_codes is not None if isinstance(source, SplitTensors) else source.has_depth)
    cm = ConfusionMatrix(device=device) if do_sem else None
    dm = DepthMetrics(device=device, keep_per_image=keep_per_image) if do_dep else None
    lut = torch.from_numpy(depth_lut()).to(device)

    was_training = model.training
    model.eval()
    batches = _batches(n, batch_size, rank, world_size)
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc="evaluating", unit="batch", leave=False)
    pool = ThreadPoolExecutor(workers) if workers > 1 and not isinstance(source, SplitTensors) else None
    try:
        for idx in batches:
            rgb_u8, sem_u8, dep_u8 = _read_batch(source, idx, pool)
            rgb_u8 = rgb_u8.to(device, non_blocking=True)
            sem_u8 = sem_u8.to(device, non_blocking=True) if (do_sem and sem_u8 is not None) else None
            dep_u8 = dep_u8.to(device, non_blocking=True) if (do_dep and dep_u8 is not None) else None
            rgb, sem, dep = prepare_eval_batch(rgb_u8, sem_u8, dep_u8, lut)
            out = predict_batch(model, rgb, tta_flip=tta_flip, autocast_dtype=autocast_dtype,
                                channels_last=channels_last)
            if cm is not None:
                cm.update(out["semseg"].argmax(1), sem)
            if dm is not None:
                dm.update(out["depth"], dep)
    finally:
        model.train(was_training)
        if pool is not None:
            pool.shutdown()

    # Sum the state over processes (no-op without torch.distributed).
    if cm is not None:
        cm.reduce_()
    if dm is not None:
        dm.reduce_()
    return _result(cm, dm, keep_per_image)


def _result(cm: ConfusionMatrix | None, dm: DepthMetrics | None, keep_per_image: bool) -> EvalResult:
    nan = math.nan
    metrics: dict = {k: nan for k in METRIC_KEYS}
    metrics["per_class_iou"] = None
    confusion = None
    if cm is not None:
        c = cm.compute()
        metrics.update(miou=c["miou"], pixel_acc=c["pixel_accuracy"], per_class_iou=c["per_class_iou"])
        confusion = cm.numpy()
    per_image = None
    if dm is not None:
        d = dm.compute()
        for k in ("si_log_rmse", "abs_rel", "rmse", "delta1", "delta2", "delta3"):
            metrics[k] = d[k]
        if keep_per_image:
            per_image = dm.per_image().numpy()
    if cm is not None and dm is not None:
        metrics["score"] = grader_score(metrics["miou"], metrics["si_log_rmse"])
    return EvalResult(metrics, confusion, per_image)


def load_eval_source(root, split: str, max_images: int = 0, preload: bool = True):
    """Preloaded :class:`SplitTensors` (``preload``) or a per-sample :class:`MiniscapesSplit`."""
    if preload:
        return load_split_tensors(root, split, max_images=max_images)
    return MiniscapesSplit(root, split)
