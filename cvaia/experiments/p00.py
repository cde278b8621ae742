"""Notebook 00 — the data set and the set-up (``00_data_and_setup``).

What miniscapes is, its folder layout, the 19 classes and their colours, the depth encoding,
class pixel frequencies, the ImageNet normalisation, the augmentation options and the course
metrics (the grader's mIoU with a worked example, SI-logRMSE, the grader score, the trivial
baselines). The helpers here compute tables, figures and the sentences that describe them;
the notebook only calls them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from .. import plots
from ..data.classes import IGNORE_INDEX, NUM_CLASSES, class_colors, class_names
from ..data.encoding import DEPTH_MAX, DEPTH_MIN, decode_depth, depth_lut, encode_depth

PROFILES = {
    # plumbing only
    "smoke": {"SAMPLES": 2, "FREQ_IMAGES": 8, "AUG_CROP": 64, "VAL_IMAGES": 4},
    # a real look at the synthetic set
    "quick": {"SAMPLES": 4, "FREQ_IMAGES": 200, "AUG_CROP": 128, "VAL_IMAGES": 100},
    # course scale
    "full": {"SAMPLES": 6, "FREQ_IMAGES": 0, "AUG_CROP": 256, "VAL_IMAGES": 0},
}

MODALITIES = {"rgb": "jpg", "semseg": "png", "depth": "png"}


# ---- layout ---------------------------------------------------------------------------------------
def layout_table(root: str | os.PathLike) -> pd.DataFrame:
    """Files per split and modality of a miniscapes-format root (0 where a folder is missing)."""
    root = Path(root)
    rows = []
    for split in ("train", "val", "test"):
        row = {"split": split}
        for modality, ext in MODALITIES.items():
            folder = root / split / modality
            row[f"{modality} (*.{ext})"] = len(list(folder.glob(f"*.{ext}"))) if folder.is_dir() else 0
        rows.append(row)
    return pd.DataFrame(rows).set_index("split")


def layout_tree(root: str | os.PathLike, examples: int = 2) -> str:
    """A short ``tree``-like listing of the root: each folder with its first files and count."""
    root = Path(root)
    lines = [f"{root}/"]
    for split in ("train", "val", "test"):
        if not (root / split).is_dir():
            continue
        lines.append(f"├── {split}/")
        for modality, ext in MODALITIES.items():
            folder = root / split / modality
            if not folder.is_dir():
                continue
            files = sorted(folder.glob(f"*.{ext}"), key=lambda p: int(p.stem) if p.stem.isdigit() else 0)
            shown = ", ".join(p.name for p in files[:examples])
            lines.append(f"│   ├── {modality}/  {len(files)} files ({shown}{', …' if len(files) > examples else ''})")
    meta = root / "meta.json"
    if meta.is_file():
        lines.append("└── meta.json")
    return "\n".join(lines)


def read_meta(root: str | os.PathLike) -> dict:
    """The root's ``meta.json`` (the synthetic generator writes one), or ``{}``."""
    path = Path(root) / "meta.json"
    if not path.is_file():
        return {}
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


# ---- classes ----------------------------------------------------------------------------------------
def class_table() -> pd.DataFrame:
    """The 19 train-id classes: id, name, colour (hex and RGB)."""
    colors = class_colors()
    return pd.DataFrame({
        "id": np.arange(NUM_CLASSES),
        "name": list(class_names()),
        "colour": ["#{:02x}{:02x}{:02x}".format(*map(int, c)) for c in colors],
        "rgb": [tuple(int(v) for v in c) for c in colors],
    }).set_index("id")


def class_swatches(ncols: int = 4) -> Figure:
    """A figure of the 19 class colours with their ids and names."""
    colors = class_colors() / 255.0
    names = class_names()
    nrows = -(-NUM_CLASSES // ncols)
    fig, ax = plots.new_figure(figsize=(2.6 * ncols, 0.45 * nrows + 0.6))
    for i in range(NUM_CLASSES):
        r, c = divmod(i, ncols)
        ax.add_patch(Rectangle((c, nrows - 1 - r), 0.3, 0.8, facecolor=colors[i], edgecolor="0.3"))
        ax.text(c + 0.36, nrows - 1 - r + 0.4, f"{i:2d} {names[i]}", va="center", fontsize=9)
    ax.set_xlim(0, ncols)
    ax.set_ylim(-0.1, nrows)
    ax.set_axis_off()
    ax.set_title(f"the {NUM_CLASSES} Cityscapes train-id classes ({IGNORE_INDEX} = ignore, drawn black)")
    return fig


def class_colours(names) -> list[tuple[float, float, float]]:
    """The Cityscapes colour (RGB in 0..1) of each class name, in the given order — for bar charts
    that should use the same palette as the label maps."""
    lookup = dict(zip(class_names(), class_colors() / 255.0, strict=True))
    unknown = [n for n in names if n not in lookup]
    if unknown:
        raise KeyError(f"class_colours: unknown class name(s) {unknown}; expected some of {list(lookup)}")
    return [tuple(float(v) for v in lookup[n]) for n in names]


def class_frequencies(root: str | os.PathLike, split: str = "train", max_images: int = 0) -> pd.DataFrame:
    """Share of labelled pixels per class, counted over the first ``max_images`` (0 = all).

    Columns ``name``, ``pixels``, ``fraction`` (of labelled pixels) and ``present_in`` (number of
    images containing the class); the ignore label is counted separately in ``attrs``.
    """
    from ..data.miniscapes import MiniscapesSplit

    data = MiniscapesSplit(root, split)
    n = len(data) if max_images <= 0 else min(max_images, len(data))
    counts = np.zeros(NUM_CLASSES + 1, dtype=np.int64)
    present = np.zeros(NUM_CLASSES, dtype=np.int64)
    for i in range(n):
        ids = data.read_raw(i)["semseg"].astype(np.int64)
        ids = np.where(ids == IGNORE_INDEX, NUM_CLASSES, ids)
        c = np.bincount(ids.ravel(), minlength=NUM_CLASSES + 1)[: NUM_CLASSES + 1]
        counts += c
        present += c[:NUM_CLASSES] > 0
    labelled = counts[:NUM_CLASSES].sum()
    df = pd.DataFrame({"name": list(class_names()), "pixels": counts[:NUM_CLASSES],
                       "fraction": counts[:NUM_CLASSES] / max(labelled, 1), "present_in": present})
    df.index.name = "id"
    df.attrs.update(images=n, ignored_pixels=int(counts[NUM_CLASSES]), split=split)
    return df


def depth_statistics(root: str | os.PathLike, split: str = "train", max_images: int = 0) -> dict[str, float]:
    """Mean and std (metres) of the valid depth pixels and the share of invalid (0) pixels."""
    from ..data.miniscapes import MiniscapesSplit

    data = MiniscapesSplit(root, split)
    n = len(data) if max_images <= 0 else min(max_images, len(data))
    total = valid = 0
    s = s2 = 0.0
    for i in range(n):
        d = data.read(i)["depth"].astype(np.float64)
        m = d > 0
        total += d.size
        valid += int(m.sum())
        s += float(d[m].sum())
        s2 += float((d[m] ** 2).sum())
    mean = s / max(valid, 1)
    return {"images": n, "mean_m": mean, "std_m": float(np.sqrt(max(s2 / max(valid, 1) - mean ** 2, 0.0))),
            "invalid_fraction": 1.0 - valid / max(total, 1)}


# ---- depth encoding -----------------------------------------------------------------------------------
def depth_code_table(codes=(0, 1, 2, 64, 128, 192, 254, 255)) -> pd.DataFrame:
    """Metres of a few codes and the size of one quantisation step there."""
    lut = depth_lut().astype(np.float64)
    rows = []
    for v in codes:
        step = abs(lut[v] - lut[v + 1]) if 1 <= v < 255 else (abs(lut[v] - lut[v - 1]) if v == 255 else np.nan)
        rows.append({"code": v, "metres": lut[v], "step to next code [m]": step})
    return pd.DataFrame(rows).set_index("code")


def depth_encoding_figure() -> Figure:
    """Left: code → metres (log scale). Right: the metres one code step spans, against distance."""
    lut = depth_lut().astype(np.float64)
    v = np.arange(1, 256)
    d = lut[1:]
    step = np.abs(np.diff(lut[1:]))
    fig, (ax1, ax2) = plots.new_figure(1, 2, figsize=(10.0, 3.8))
    ax1.plot(v, d, color="C0")
    ax1.set_yscale("log")
    ax1.axhline(DEPTH_MAX, color="0.5", ls="--", lw=0.8)
    ax1.axhline(DEPTH_MIN, color="0.5", ls="--", lw=0.8)
    ax1.annotate(f"v = 1 → {lut[1]:.0f} m", (1, lut[1]), xytext=(40, lut[1] * 0.8), fontsize=8)
    ax1.annotate(f"v = 255 → {lut[255]:.0f} m", (255, lut[255]), xytext=(150, lut[255] * 1.6), fontsize=8)
    ax1.set(xlabel="code v (PNG value; 0 = invalid)", ylabel="depth d [m] (log)",
            title="d = 1 / ((1/4 − 1/300)·(v−1)/254 + 1/300)")
    ax2.plot(d[:-1], step, color="C1")
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set(xlabel="depth d [m]", ylabel="one code step [m]",
            title="quantisation: fine near, coarse far (∝ d²)")
    return fig


def depth_roundtrip_error(n: int = 10000, seed: int = 0) -> dict[str, float]:
    """Encode random depths in 4..300 m and decode them: the worst relative error and step."""
    rng = np.random.default_rng(seed)
    d = np.exp(rng.uniform(np.log(DEPTH_MIN), np.log(DEPTH_MAX), n))
    back = decode_depth(encode_depth(d)).astype(np.float64)
    rel = np.abs(back - d) / d
    return {"max_rel_error": float(rel.max()), "mean_rel_error": float(rel.mean()),
            "max_abs_error_m": float(np.abs(back - d).max())}


# ---- normalisation and augmentation -----------------------------------------------------------------------
def normalisation_over_images(root: str | os.PathLike, split: str = "train", max_images: int = 64) -> pd.DataFrame:
    """Per-channel mean/std of the first ``max_images`` images (0 = all) pooled over their pixels,
    before (0..255) and after the ImageNet normalisation; ``attrs["images"]`` is the count."""
    from ..data.encoding import IMAGENET_MEAN, IMAGENET_STD
    from ..data.miniscapes import MiniscapesSplit

    data = MiniscapesSplit(root, split)
    n = len(data) if max_images <= 0 else min(max_images, len(data))
    s = np.zeros(3)
    s2 = np.zeros(3)
    count = 0
    for i in range(n):
        x = data.read_raw(i)["rgb"].reshape(-1, 3).astype(np.float64)
        s += x.sum(0)
        s2 += (x * x).sum(0)
        count += x.shape[0]
    mean = s / max(count, 1)
    std = np.sqrt(np.maximum(s2 / max(count, 1) - mean ** 2, 0.0))
    mu, sd = np.asarray(IMAGENET_MEAN), np.asarray(IMAGENET_STD)
    table = pd.DataFrame({"channel": list("RGB"), "ImageNet mean": mu, "ImageNet std": sd,
                          "data mean (0..255)": mean, "data std (0..255)": std,
                          "normalised mean": (mean - mu) / sd, "normalised std": std / sd}).set_index("channel")
    table.attrs["images"] = n
    return table


def normalisation_text(table: pd.DataFrame, mean_tol: float = 0.25, std_range=(0.75, 1.33)) -> str:
    """What the normalised statistics of :func:`normalisation_over_images` say, from its numbers.

    A channel counts as centred when ``|normalised mean| ≤ mean_tol`` and as unit-scaled when its
    normalised std lies in ``std_range``.
    """
    m, sd = table["normalised mean"], table["normalised std"]
    fmt = "/".join
    means = fmt(f"{v:+.2f}" for v in m)
    stds = fmt(f"{v:.2f}" for v in sd)
    centred = bool((m.abs() <= mean_tol).all())
    unit = bool(((sd >= std_range[0]) & (sd <= std_range[1])).all())
    n = table.attrs.get("images", "the")
    text = (f"Over {n} images the normalised channel means are {means} (R/G/B) and the standard deviations "
            f"{stds}. ")
    if centred and unit:
        return text + ("These images have statistics close to ImageNet's, so the normalisation does centre them "
                       "and bring them to unit spread, as it would for ImageNet photos.")
    darker = [c for c, v in m.items() if v < -mean_tol]
    brighter = [c for c, v in m.items() if v > mean_tol]
    parts = []
    if darker:
        parts.append(f"darker than ImageNet's average photo in {', '.join(darker)}")
    if brighter:
        parts.append(f"brighter in {', '.join(brighter)}")
    if not unit:
        parts.append("less contrasted" if (sd < std_range[0]).any() and not (sd > std_range[1]).any()
                     else "differently contrasted")
    text += ("So the normalisation does **not** centre these inputs: it subtracts ImageNet's mean and divides by "
             "ImageNet's spread, which centres ImageNet-like photos only, and these images are "
             + ", ".join(parts) + ". ")
    text += ("What it means: an ImageNet encoder would see inputs shifted away from what it was trained on (its "
             "batch-norm layers re-estimate their statistics during fine-tuning and absorb much of the shift); "
             "the shipped synthetic-pretrained encoder was trained on normalised images of the same synthetic "
             "generator (a disjoint set of scenes, its own data seed), so for it this is the familiar input distribution. Normalising with the data set's own mean and std "
             "would centre the inputs, at the price of feeding ImageNet weights a distribution they never saw — the "
             "course keeps ImageNet's constants.")
    return text


#: Augmentation settings shown in notebook 00 (name → BatchAugment keyword arguments).
AUGMENTATIONS = {
    "crop only": {},
    "scale 1..2": {"scale_min": 1.0, "scale_max": 2.0},
    "tilt ±10°": {"tilt_max_deg": 10.0},
    "wiggle 0.1": {"wiggle_max_ratio": 0.1},
    "reflect": {"reflect": True},
    "all of them": {"scale_min": 1.0, "scale_max": 2.0, "tilt_max_deg": 10.0,
                    "wiggle_max_ratio": 0.1, "reflect": True},
}


def augmentation_examples(root: str | os.PathLike, crop: int, index: int = 0, seed: int = 0,
                          settings: Mapping[str, dict] | None = None) -> dict:
    """One training sample through each augmentation setting (:class:`BatchAugment`).

    Returns ``{"names": [...], "rgb": N×3×c×c normalised, "semseg": N×c×c, "depth": N×1×c×c}``
    ready for :func:`cvaia.plots.prediction_grid` (``row_labels=names``). The crop size is
    capped by the image size.
    """
    from ..data.augment import BatchAugment
    from ..data.miniscapes import MiniscapesSplit

    settings = AUGMENTATIONS if settings is None else settings
    data = MiniscapesSplit(root, "train")
    raw = data.read_raw(index)
    h, w = raw["rgb"].shape[:2]
    crop = int(min(crop, h, w))
    rgb = torch.as_tensor(raw["rgb"]).permute(2, 0, 1)[None].contiguous()
    sem = torch.as_tensor(raw["semseg"])[None]
    dep = torch.as_tensor(decode_depth(raw["depth_codes"]))[None]
    out_rgb, out_sem, out_dep = [], [], []
    for i, kwargs in enumerate(settings.values()):
        aug = BatchAugment(crop, **kwargs)
        gen = torch.Generator().manual_seed(seed + i)
        r, s, d = aug(rgb, sem, dep, generator=gen)
        out_rgb.append(r)
        out_sem.append(s)
        out_dep.append(d)
    return {"names": list(settings), "rgb": torch.cat(out_rgb), "semseg": torch.cat(out_sem),
            "depth": torch.cat(out_dep), "crop": crop}


def sample_batch(root: str | os.PathLike, split: str = "val", n: int = 4) -> dict[str, np.ndarray]:
    """The first ``n`` samples of a split as stacked arrays: rgb uint8, semseg int64, depth metres."""
    from ..data.miniscapes import MiniscapesSplit

    data = MiniscapesSplit(root, split)
    n = min(n, len(data))
    items = [data.read(i) for i in range(n)]
    out = {"rgb": np.stack([it["rgb"] for it in items])}
    for key in ("semseg", "depth"):
        if key in items[0] and items[0][key] is not None:
            out[key] = np.stack([it[key] for it in items])
    return out


# ---- the course metrics ---------------------------------------------------------------------------------
#: A 4×6 worked example in Cityscapes train ids: road (0), sky (10), car (13).
_R, _S, _C = 0, 10, 13
WORKED_GT = np.array([[_S, _S, _S, _S, _S, _S],
                      [_S, _S, _S, _S, _C, _C],
                      [_R, _R, _C, _C, _C, _C],
                      [_R, _R, _R, _R, _R, _R]])
WORKED_PRED = np.array([[_S, _S, _S, _S, _S, _S],
                        [_S, _S, _S, _C, _C, _S],
                        [_R, _R, _R, _C, _C, _C],
                        [_R, _R, _R, _R, _R, _C]])
WORKED_CLASSES = (_R, _C, _S)


def worked_miou_example(gt: np.ndarray = WORKED_GT, pred: np.ndarray = WORKED_PRED,
                        classes: tuple[int, ...] = WORKED_CLASSES) -> dict:
    """The grader's mIoU by hand on a tiny example, with :mod:`cvaia.reference.metrics`.

    Returns ``cm3`` (the 3×3 block of the present classes, rows = truth), ``table`` (TP, FP, FN,
    IoU per present class), ``miou_present`` (mean over those classes), ``miou`` (the grader's:
    mean over all 19, absent classes counting 0) and ``miou_library`` (:func:`cvaia.metrics.miou`).
    """
    from ..metrics import miou as library_miou
    from ..reference import metrics as ref

    cm = ref.confusion_matrix(pred, gt)
    idx = list(classes)
    cm3 = cm[np.ix_(idx, idx)]
    names = [class_names()[c] for c in idx]
    tp = np.diag(cm)[idx]
    fp = cm.sum(0)[idx] - tp
    fn = cm.sum(1)[idx] - tp
    iou = 100.0 * tp / (tp + fp + fn)
    table = pd.DataFrame({"class": names, "GT pixels": cm.sum(1)[idx], "TP": tp, "FP": fp, "FN": fn,
                          "IoU = TP/(TP+FP+FN) [%]": iou}).set_index("class")
    return {"gt": gt, "pred": pred, "names": names, "cm": cm,
            "cm3": pd.DataFrame(cm3, index=[f"true {n}" for n in names], columns=[f"pred {n}" for n in names]),
            "table": table, "miou_present": float(iou.mean()), "miou": ref.miou(cm),
            "miou_library": library_miou(cm), "absent": NUM_CLASSES - len(idx)}


def worked_example_figure(example: Mapping) -> Figure:
    """Ground truth and prediction of the worked example in the class colours, the errors crossed."""
    from ..data.classes import colorize

    gt, pred = example["gt"], example["pred"]
    fig, axes = plots.new_figure(1, 2, figsize=(7.5, 2.6))
    for ax, ids, title in ((axes[0], gt, "ground truth"), (axes[1], pred, "prediction")):
        ax.imshow(colorize(ids))
        for (r, c), wrong in np.ndenumerate(gt != pred):
            if wrong and ids is pred:
                ax.text(c, r, "×", ha="center", va="center", color="white", fontsize=14, fontweight="bold")
        ax.set_xticks(np.arange(-0.5, gt.shape[1], 1), minor=True)
        ax.set_yticks(np.arange(-0.5, gt.shape[0], 1), minor=True)
        ax.grid(which="minor", color="white", lw=1)
        ax.tick_params(which="both", length=0, labelbottom=False, labelleft=False)
        ax.set_title(title)
    handles = [Rectangle((0, 0), 1, 1, facecolor=class_colors()[c] / 255.0) for c in WORKED_CLASSES]
    fig.legend(handles, example["names"], loc="outside right center", frameon=False)
    fig.suptitle("worked example: 24 pixels, 3 classes (× = wrong pixel)")
    return fig


def reference_metric_check(root: str | os.PathLike, n: int = 4, seed: int = 0) -> pd.DataFrame:
    """The reference metrics (:mod:`cvaia.reference.metrics`) against :mod:`cvaia.metrics` on the
    first ``n`` validation images with corrupted ground truth as the "prediction" (a share of the
    labels replaced at random; depth scaled per image and multiplied by log-normal noise)."""
    from .. import metrics as lib
    from ..reference import metrics as ref

    batch = sample_batch(root, "val", n)
    rng = np.random.default_rng(seed)
    rows = []
    if "semseg" in batch:
        gt = batch["semseg"]
        pred = np.where(rng.random(gt.shape) < 0.3, rng.integers(0, NUM_CLASSES, gt.shape),
                        np.where(gt == IGNORE_INDEX, 0, gt))
        cm_lib = lib.ConfusionMatrix().update(torch.as_tensor(pred), torch.as_tensor(gt))
        cm_ref = ref.confusion_matrix(pred, gt)
        rows.append({"metric": "confusion matrix (pixels; Δ = largest cell)", "reference": float(cm_ref.sum()),
                     "cvaia.metrics": float(cm_lib.numpy().sum()),
                     "|difference|": float(np.abs(cm_ref - cm_lib.numpy()).max())})
        a, b = ref.miou(cm_ref), lib.miou(cm_lib)
        rows.append({"metric": "mIoU [%]", "reference": a, "cvaia.metrics": b, "|difference|": abs(a - b)})
    if "depth" in batch:
        gt = batch["depth"].astype(np.float64)
        scale = np.exp(rng.normal(0.0, 0.3, (len(gt), 1, 1)))
        pred = np.where(gt > 0, gt, 20.0) * scale * np.exp(rng.normal(0.0, 0.2, gt.shape))
        a = ref.mean_si_log_rmse(pred, gt)
        b = lib.DepthMetrics().update(torch.as_tensor(pred), torch.as_tensor(gt)).compute()["si_log_rmse"]
        rows.append({"metric": "SI-logRMSE", "reference": a, "cvaia.metrics": b, "|difference|": abs(a - b)})
    return pd.DataFrame(rows).set_index("metric")


#: Points shown on the grader-score map: the report's joint model and its graded open challenge.
REPORT_POINTS = {"report, joint model (w = 0.5)": (84.7, 16.6), "report, graded challenge": (74.03, 22.67)}


def grader_score_figure(points: Mapping[str, tuple[float, float]] | None = None) -> Figure:
    """The grader score ``max(mIoU − 50, 0) + max(50 − SI-logRMSE, 0)`` over the (mIoU, SI-logRMSE)
    plane: zero in the lower-left quadrant (both tasks on the wrong side of 50), with ``points``
    (label → (mIoU, SI-logRMSE)) marked."""
    from ..metrics import grader_score

    points = REPORT_POINTS if points is None else points
    m = np.linspace(0, 100, 201)
    si = np.linspace(0, 100, 201)
    mm, ss = np.meshgrid(m, si)
    score = np.maximum(mm - 50, 0) + np.maximum(50 - ss, 0)
    fig, ax = plots.new_figure(figsize=(6.6, 5.0))
    ax.set_facecolor("0.88")  # the zero region: the masked part of the map
    im = ax.contourf(mm, ss, np.ma.masked_where(score <= 0, score), levels=np.arange(0, 101, 10), cmap="viridis")
    fig.colorbar(im, ax=ax, label="grader score (grey: 0)")
    ax.axvline(50, color="0.3", ls="--", lw=0.8)
    ax.axhline(50, color="0.3", ls="--", lw=0.8)
    ax.text(25, 75, "score 0:\nmIoU ≤ 50 and\nSI-logRMSE ≥ 50", ha="center", va="center", color="0.2", fontsize=9)
    for i, (label, (x, y)) in enumerate(points.items()):
        s = grader_score(x, y)
        right = x > 60
        ax.plot([x], [y], "o", color="white", mec="black", ms=7)
        ax.annotate(f"{label}\n{x:.1f} / {y:.1f} → {s:.1f}", (x, y), xytext=(-8 if right else 8, 10 - 26 * (i % 2)),
                    textcoords="offset points", ha="right" if right else "left", fontsize=7.5,
                    color="white" if s > 5 else "0.1")
    ax.set(xlabel="mIoU [%] (higher is better)", ylabel="SI-logRMSE (lower is better)", xlim=(0, 100), ylim=(100, 0),
           title="grader score = max(mIoU − 50, 0) + max(50 − SI-logRMSE, 0)")
    return fig


def baselines_text(table: pd.DataFrame) -> str:
    """What the trivial baselines score and what a model must beat (the issue 9 rule), from ``table``
    (:func:`cvaia.experiments.baselines.trivial_baselines`)."""
    from .baselines import LEARNED_MIOU_FACTOR, LEARNED_SILOG_FACTOR, baseline_values

    b = baseline_values(table)
    mf, sf = LEARNED_MIOU_FACTOR, LEARNED_SILOG_FACTOR
    majority = table.attrs.get("majority_class")
    name = class_names()[majority] if majority is not None else "the most frequent class"
    return (f"Predicting **{name}** everywhere scores mIoU {b['miou_majority']:.2f} (one class's IoU divided by 19); "
            f"predicting each pixel's most frequent training class (the position prior: road at the bottom, sky at "
            f"the top) scores {b['miou_position']:.2f}. A constant depth map scores SI-logRMSE "
            f"{b['silog_constant']:.1f} whatever the constant (per image, a constant has exactly the spread of log "
            f"depth as its error); the mean log-depth of each pixel position scores {b['silog_position']:.1f}. "
            f"Every notebook calls a run *learned* only when it clears both: mIoU ≥ {mf:g} × {b['miou_majority']:.2f} "
            f"= {mf * b['miou_majority']:.2f} and above the position prior's {b['miou_position']:.2f}; SI-logRMSE ≤ "
            f"{sf:g} × {b['silog_constant']:.1f} = {sf * b['silog_constant']:.1f} and below the position prior's "
            f"{b['silog_position']:.1f}, with abs-rel and δ1 better than the position prior's too — SI-logRMSE ignores "
            f"a wrong global scale, so a depth run must also get the metres right. A run that does not gets no "
            f"verdict (each notebook measures the baselines on its own validation images). "
            + _baseline_scores_text(table))


def _baseline_scores_text(table: pd.DataFrame) -> str:
    """The grader score of each baseline, in words (most are 0: both tasks on the wrong side of 50)."""
    from ..metrics import grader_score

    scores = {r["baseline"]: grader_score(r["miou"], r["si_log_rmse"]) for _, r in table.iterrows()}
    if all(v == 0 for v in scores.values()):
        return "All of them score 0 with the grader (mIoU below 50 and SI-logRMSE above 50)."
    parts = [f"{name} {v:.2f}" for name, v in scores.items()]
    return ("Grader scores: " + ", ".join(parts) + " — a baseline scores above 0 only where one of its numbers "
            "crosses a threshold of 50 (here the depth one), which is why a score alone says little early on.")
