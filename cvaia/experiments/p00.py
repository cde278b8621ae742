"""Notebook 00 — the data set and the set-up (``00_data_and_setup``).

What miniscapes is, its folder layout, the 19 classes and their colours, the depth encoding,
class pixel frequencies, the ImageNet normalisation and the augmentation options. The
helpers here compute tables and figures; the notebook only calls them.
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

from ..data.classes import IGNORE_INDEX, NUM_CLASSES, class_colors, class_names
from ..data.encoding import DEPTH_MAX, DEPTH_MIN, decode_depth, depth_lut, encode_depth

PROFILES = {
    # plumbing only
    "smoke": {"SAMPLES": 2, "FREQ_IMAGES": 8, "AUG_CROP": 64},
    # a real look at the synthetic set
    "quick": {"SAMPLES": 4, "FREQ_IMAGES": 64, "AUG_CROP": 128},
    # course scale
    "full": {"SAMPLES": 6, "FREQ_IMAGES": 0, "AUG_CROP": 256},
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
    fig = Figure(figsize=(2.6 * ncols, 0.45 * nrows + 0.6), layout="constrained")
    ax = fig.subplots()
    for i in range(NUM_CLASSES):
        r, c = divmod(i, ncols)
        ax.add_patch(Rectangle((c, nrows - 1 - r), 0.3, 0.8, facecolor=colors[i], edgecolor="0.3"))
        ax.text(c + 0.36, nrows - 1 - r + 0.4, f"{i:2d} {names[i]}", va="center", fontsize=9)
    ax.set_xlim(0, ncols)
    ax.set_ylim(-0.1, nrows)
    ax.set_axis_off()
    ax.set_title(f"the {NUM_CLASSES} Cityscapes train-id classes ({IGNORE_INDEX} = ignore, drawn black)")
    return fig


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
    fig = Figure(figsize=(10.0, 3.8), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
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
def normalisation_table(rgb_u8: np.ndarray) -> pd.DataFrame:
    """Per-channel mean/std of an image before and after the ImageNet normalisation."""
    from ..data.encoding import IMAGENET_MEAN, IMAGENET_STD, normalize_rgb

    x = torch.as_tensor(np.ascontiguousarray(rgb_u8)).permute(2, 0, 1)[None]
    y = normalize_rgb(x)
    rows = []
    for c, name in enumerate("RGB"):
        rows.append({"channel": name, "ImageNet mean": IMAGENET_MEAN[c], "ImageNet std": IMAGENET_STD[c],
                     "image mean (0..255)": float(x[0, c].float().mean()),
                     "image std (0..255)": float(x[0, c].float().std()),
                     "normalised mean": float(y[0, c].mean()), "normalised std": float(y[0, c].std())})
    return pd.DataFrame(rows).set_index("channel")


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
