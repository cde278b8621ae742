"""Segmentation maps and confusion matrices: prediction grids (image, segmentation and depth
maps of several samples or models side by side), confusion matrices and the per-class
change between two of them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .base import (
    DEPTH_CMAP,
    _as_ids,
    _as_maps,
    _figure,
    _single_ax,
    _styled,
    _to_numpy,
    rgb_to_uint8,
)
from .depth import _depth_colorbar, _depth_norm, _show_depth


# ---- confusion matrices --------------------------------------------------------------------------
def _class_names(class_names, n: int, name: str) -> list[str]:
    if class_names is None:
        if n == 19:
            from ..data.classes import class_names as default_names

            return list(default_names())
        return [str(i) for i in range(n)]
    class_names = [str(c) for c in class_names]
    if len(class_names) != n:
        raise ValueError(f"{name}: {len(class_names)} class names for a {n}×{n} matrix")
    return class_names



def _square(cm, name):
    a = _to_numpy(cm, name).astype(np.float64)
    if a.ndim != 2 or a.shape[0] != a.shape[1]:
        raise ValueError(f"{name}: expected a square confusion matrix, got shape {a.shape}")
    if np.any(a < 0) or not np.all(np.isfinite(a)):
        raise ValueError(f"{name}: confusion counts must be finite and ≥ 0")
    return a



def normalize_confusion(cm) -> np.ndarray:
    """Row-normalised confusion matrix (rows = true class): each row sums to 1, and a row
    without pixels is all 0 (not NaN). The diagonal is the per-class recall."""
    a = _square(cm, "confusion matrix")
    s = a.sum(axis=1, keepdims=True)
    return np.divide(a, s, out=np.zeros_like(a), where=s > 0)



def _compact_count(v: float) -> str:
    if v == 0:
        return ""
    for div, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.3g}{suffix}"
    return f"{v:.0f}"



@_styled
def confusion_matrix(cm, class_names: Sequence[str] | None = None, normalize: str | None = None,
                     annot: bool = True, cmap: str = "Blues", title: str | None = None,
                     row_info: bool = False, ax=None) -> Figure:
    """Seaborn heatmap of a confusion matrix (rows = true class, columns = predicted).

    ``cm`` is a C×C count matrix (numpy or torch, e.g. :class:`cvaia.metrics.ConfusionMatrix`'s
    ``.matrix``). ``normalize="row"`` shows the fraction of each true class's pixels (rows sum
    to 1; rows without pixels are 0). Class names default to the 19 Cityscapes classes.
    Annotations are compact (``12.3k`` counts, ``0.87`` fractions); zeros are left blank.

    ``row_info=True`` labels each row with its ground-truth pixel count and the class's IoU
    (the grader's, :func:`cvaia.metrics.per_class_iou`), e.g. ``road  41.2k px  IoU 87.1``; a
    class without ground-truth pixels is labelled ``absent`` in grey (its IoU still counts
    0 in the mIoU when it is predicted, and 0 too when it is not: the grader averages all classes).
    """
    if normalize not in (None, "row"):
        raise ValueError(f"confusion_matrix: normalize must be None or 'row', got {normalize!r}")
    counts = _square(cm, "confusion_matrix")
    names = _class_names(class_names, counts.shape[0], "confusion_matrix")
    data = normalize_confusion(counts) if normalize == "row" else counts
    n = data.shape[0]
    fig, ax = _single_ax(ax, (max(5.0, 0.45 * n + 2.5), max(4.0, 0.42 * n + 1.5)))
    import seaborn as sns

    if annot:
        labels = np.vectorize((lambda v: "" if v < 0.005 else f"{v:.2f}") if normalize
                              else _compact_count)(data)
    sns.heatmap(data, annot=labels if annot else False, fmt="", cmap=cmap, square=True, ax=ax,
                vmin=0, vmax=1 if normalize else None, xticklabels=names, yticklabels=names,
                annot_kws={"fontsize": 6 if n > 10 else 8}, linewidths=0.3, linecolor="0.9",
                cbar_kws={"label": "fraction of true-class pixels" if normalize else "pixels",
                          "shrink": 0.8})
    ax.set_xticklabels(names, rotation=60, ha="right", rotation_mode="anchor")
    ax.set_yticklabels(_confusion_row_labels(counts, names) if row_info else names, rotation=0)
    if row_info:
        for tick, absent in zip(ax.get_yticklabels(), counts.sum(axis=1) == 0, strict=True):
            if absent:
                tick.set_color("0.55")
    ax.set(xlabel="predicted class", ylabel="true class" + ("  (GT pixels, IoU %)" if row_info else ""),
           title=title or ("confusion matrix (row-normalised)" if normalize else "confusion matrix (pixels)"))
    return fig



def _confusion_row_labels(counts: np.ndarray, names: Sequence[str]) -> list[str]:
    """``name  12.3k px  IoU 87.1`` per row; ``name  absent, IoU 0`` for a class without GT pixels."""
    from ..metrics import per_class_iou

    iou = per_class_iou(counts)
    rows = counts.sum(axis=1)
    return [f"{nm}  absent, IoU 0" if r == 0 else f"{nm}  {_compact_count(r)} px  IoU {v:.1f}"
            for nm, r, v in zip(names, rows, iou, strict=True)]



def class_changes(cm_a, cm_b, class_names: Sequence[str] | None = None) -> pd.DataFrame:
    """Per-class recall (diagonal of the row-normalised matrices) of A and B and the change B − A.

    Sorted by the change, largest improvement first.
    """
    a, b = normalize_confusion(cm_a), normalize_confusion(cm_b)
    if a.shape != b.shape:
        raise ValueError(f"class_changes: matrices differ in shape: {a.shape} vs {b.shape}")
    names = _class_names(class_names, a.shape[0], "class_changes")
    df = pd.DataFrame({"class": names, "recall_a": np.diag(a), "recall_b": np.diag(b)})
    df["change"] = df["recall_b"] - df["recall_a"]
    return df.sort_values("change", ascending=False, kind="stable").reset_index(drop=True)



@_styled
def confusion_difference(cm_a, cm_b, class_names: Sequence[str] | None = None,
                         labels: tuple[str, str] = ("A", "B"), marks: Mapping[str, str] | None = None,
                         threshold: float = 1.0, vmax: float | None = None, annot: bool = True,
                         cmap: str = "RdBu", title: str | None = None, ax=None) -> Figure:
    """How B's confusions differ from A's, signed so that the colour means *better* or *worse*.

    Cells: the difference of the row-normalised matrices (share of each true class's pixels,
    in percentage points), with the sign of the off-diagonal cells flipped. On the diagonal,
    +x means B labels x pp more of the class correctly (a gain); off the diagonal, −x means B
    confuses x pp more of the row's class with the column's class (a new confusion) and +x a
    confusion that went away. So blue is better for B and red worse, in every cell.

    Row labels: the class's **IoU** change B − A in points (the grader's metric; the diagonal
    cell is only its recall part, IoU also counts the false positives in the class's column),
    marked ``↑`` (green) / ``↓`` (red) from ``marks`` (``{class: "better" | "worse" | "absent" | ""}``,
    e.g. a noise-aware verdict per class, so the figure says what the text says) or, without
    ``marks``, when the change exceeds ``threshold`` points. A class with no ground-truth pixel
    in either matrix is labelled ``absent`` (grey). The title lists the improved classes.
    """
    from ..metrics import per_class_iou

    counts_a, counts_b = _square(cm_a, "confusion_difference"), _square(cm_b, "confusion_difference")
    if counts_a.shape != counts_b.shape:
        raise ValueError(f"confusion_difference: matrices differ in shape: {counts_a.shape} vs {counts_b.shape}")
    names = _class_names(class_names, counts_a.shape[0], "confusion_difference")
    diff = normalize_confusion(counts_b) - normalize_confusion(counts_a)
    n = diff.shape[0]
    benefit = -diff
    np.fill_diagonal(benefit, np.diag(diff))
    d_iou = per_class_iou(counts_b) - per_class_iou(counts_a)
    absent = (counts_a.sum(1) == 0) & (counts_b.sum(1) == 0)
    judged_by = "the noise" if marks is not None else f"{threshold:g} points"
    if marks is None:
        marks = {nm: "absent" if ab else ("better" if d > threshold else "worse" if d < -threshold else "")
                 for nm, d, ab in zip(names, d_iou, absent, strict=True)}
    unknown = sorted(set(marks) - set(names))
    if unknown:
        raise ValueError(f"confusion_difference: marks name unknown classes {unknown}")
    m = float(vmax) if vmax is not None else float(np.abs(benefit).max())
    m = m if m > 0 else 1e-3
    fig, ax = _single_ax(ax, (max(5.0, 0.45 * n + 3.5), max(4.0, 0.42 * n + 1.8)))
    import seaborn as sns

    annot_labels = np.vectorize(lambda v: "" if abs(v) < 0.005 else f"{100 * v:+.0f}")(benefit) if annot else False
    sns.heatmap(benefit, annot=annot_labels, fmt="", cmap=cmap, center=0.0, vmin=-m, vmax=m,
                square=True, ax=ax, xticklabels=names, yticklabels=names,
                annot_kws={"fontsize": 6 if n > 10 else 8}, linewidths=0.3, linecolor="0.9",
                cbar_kws={"label": f"better (+) / worse (−) for {labels[1]} than {labels[0]}\n"
                                   "share of true-class pixels (diagonal: gain; off: confusion gone)",
                          "shrink": 0.8})
    ylabels = []
    for name, d, ab in zip(names, d_iou, absent, strict=True):
        mark = marks.get(name, "")
        if ab or mark == "absent":
            ylabels.append(f"{name}  absent")
        else:
            arrow = {"better": " ↑", "worse": " ↓"}.get(mark, "")
            ylabels.append(f"{name}  {d:+.1f}{arrow}")
    ax.set_yticklabels(ylabels, rotation=0)
    for tick, name in zip(ax.get_yticklabels(), names, strict=True):
        tick.set_color({"better": "tab:green", "worse": "tab:red", "absent": "0.55"}.get(marks.get(name, ""), "black"))
    ax.set_xticklabels(names, rotation=60, ha="right", rotation_mode="anchor")
    order = np.argsort(-d_iou, kind="stable")
    improved = [names[i] for i in order if marks.get(names[i]) == "better"]
    top = next((i for i in order if not absent[i]), None)
    if improved:
        sub = "IoU better: " + ", ".join(improved[:6]) + (" …" if len(improved) > 6 else "")
    elif top is not None and d_iou[top] > 0:  # a gain that its verdict did not mark: say why it is not listed
        sub = f"no IoU gain beyond {judged_by} (largest: {names[top]} {d_iou[top]:+.1f})"
    else:
        sub = "no class with a better IoU"
    ax.set(xlabel="predicted class", ylabel=f"true class  (IoU change {labels[1]} − {labels[0]}, points)",
           title=(title or f"confusion difference {labels[1]} − {labels[0]}") + f"\n{sub}")
    return fig



# ---- prediction grids ----------------------------------------------------------------------------
def _check_batch(n, arr, name):
    if arr is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: {arr.shape[0]} samples, but rgb has {n}")



@_styled
def prediction_grid(rgb, semseg_gt=None, semseg_pred=None, depth_gt=None, depth_pred=None,
                    max_samples: int = 6, depth_log: bool = True, depth_vmin: float | None = None,
                    depth_vmax: float | None = None, depth_cmap: str = DEPTH_CMAP,
                    row_labels: Sequence[str] | None = None, title: str | None = None,
                    panel_width: float = 3.0) -> Figure:
    """Rows of samples; columns rgb / GT semseg / predicted semseg / GT depth / predicted depth.

    Only the columns that are given are drawn. Semseg (ids or N×C×H×W logits) uses the
    Cityscapes colours (ignore = black). Both depth columns share ONE colour scale (log by
    default, 1..99 % of the valid values unless ``depth_vmin``/``depth_vmax`` are given) with a
    single colour bar; invalid depth is grey. Inputs may be numpy or torch, one sample or a batch.
    """
    from ..data.classes import colorize

    images = rgb_to_uint8(rgb)[:max_samples]
    n = images.shape[0]
    cols = [("rgb", "RGB", images)]
    for key, label, arr, conv in (("semseg_gt", "semseg GT", semseg_gt, _as_ids),
                                  ("semseg_pred", "semseg prediction", semseg_pred, _as_ids),
                                  ("depth_gt", "depth GT", depth_gt, _as_maps),
                                  ("depth_pred", "depth prediction", depth_pred, _as_maps)):
        if arr is not None:
            a = conv(arr, key)[:max_samples]
            _check_batch(n, a, key)
            if a.shape[1:3] != images.shape[1:3]:
                raise ValueError(f"{key}: size {a.shape[1:3]} differs from rgb {images.shape[1:3]}")
            cols.append((key, label, a))
    depth_maps = [a for key, _, a in cols if key.startswith("depth")]
    norm = _depth_norm([m for a in depth_maps for m in a], depth_vmin, depth_vmax, depth_log) \
        if depth_maps else None

    h, w = images.shape[1:3]
    ncols = len(cols)
    fig, axes = _figure(n, ncols, figsize=(panel_width * ncols + (0.8 if norm else 0),
                                           panel_width * h / w * n + 0.6), squeeze=False)
    depth_im = None
    for r in range(n):
        for c, (key, label, arr) in enumerate(cols):
            ax = axes[r, c]
            if key == "rgb":
                ax.imshow(arr[r])
            elif key.startswith("semseg"):
                ax.imshow(colorize(arr[r]))
            else:
                depth_im = _show_depth(ax, arr[r], norm, depth_cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label)
        if row_labels is not None and r < len(row_labels):
            axes[r, 0].set_ylabel(str(row_labels[r]))
    if depth_im is not None:
        _depth_colorbar(fig, depth_im, axes[:, -1].tolist(), shrink=0.9)  # depth columns are last
    if title:
        fig.suptitle(title)
    return fig



@_styled
def prediction_comparison(rgb, preds: Mapping, gt=None, kind: str | None = None,
                          max_samples: int = 4, depth_log: bool = True,
                          depth_cmap: str = DEPTH_CMAP, title: str | None = None,
                          panel_width: float = 3.0, depth_vmin: float | None = None,
                          depth_vmax: float | None = None) -> Figure:
    """Several models' predictions side by side: columns rgb / GT / one per model, rows = samples.

    ``preds`` maps a model label to its semseg ids (or N×C×H×W logits) or its depth in metres;
    ``kind`` ("semseg" or "depth") is inferred from the first prediction when omitted (integer
    ids or 4-D logits with C > 1 → semseg). Depth columns share one colour scale (1..99 % of
    their valid values, or ``depth_vmin``/``depth_vmax``: pass the same to every figure of a set).
    """
    if not isinstance(preds, Mapping) or not preds:
        raise ValueError("prediction_comparison: preds must be a non-empty dict {model: prediction}")
    first = _to_numpy(next(iter(preds.values())), "preds")
    if kind is None:
        is_logits = first.ndim == 4 and first.shape[1] > 1
        kind = "semseg" if (is_logits or np.issubdtype(first.dtype, np.integer)) else "depth"
    if kind not in ("semseg", "depth"):
        raise ValueError(f"prediction_comparison: kind must be 'semseg' or 'depth', got {kind!r}")
    from ..data.classes import colorize

    images = rgb_to_uint8(rgb)[:max_samples]
    n, h, w = images.shape[:3]
    conv = _as_ids if kind == "semseg" else _as_maps
    cols = [("RGB", images)]
    if gt is not None:
        cols.append(("ground truth", conv(gt, "gt")[:max_samples]))
    for label, p in preds.items():
        cols.append((str(label), conv(p, f"preds[{label!r}]")[:max_samples]))
    for label, a in cols[1:]:
        _check_batch(n, a, label)
        if a.shape[1:3] != (h, w):
            raise ValueError(f"prediction_comparison: {label}: size {a.shape[1:3]} differs from rgb {(h, w)}")
    norm = _depth_norm([m for _, a in cols[1:] for m in a], depth_vmin, depth_vmax, depth_log) \
        if kind == "depth" else None
    fig, axes = _figure(n, len(cols), figsize=(panel_width * len(cols) + (0.8 if norm else 0),
                                               panel_width * h / w * n + 0.6), squeeze=False)
    im = None
    for r in range(n):
        for c, (label, a) in enumerate(cols):
            ax = axes[r, c]
            if c == 0:
                ax.imshow(a[r])
            elif kind == "semseg":
                ax.imshow(colorize(a[r]))
            else:
                im = _show_depth(ax, a[r], norm, depth_cmap)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(label)
    if im is not None:
        _depth_colorbar(fig, im, axes[:, -1].tolist(), shrink=0.9)
    fig.suptitle(title or f"{kind} predictions by model")
    return fig
