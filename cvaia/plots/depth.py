"""Depth maps and bins: masked depth images (invalid ground truth grey), their shared colour
scale, prediction-minus-truth maps, and the adaptive-bins head's per-pixel bin distributions.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.colors as mcolors
import numpy as np
from matplotlib.figure import Figure

from .base import (
    DEPTH_CMAP,
    _as_maps,
    _cmap,
    _NotebookFigure,
    _single_ax,
    _styled,
    _to_numpy,
    rgb_to_uint8,
)


# ---- depth maps ----------------------------------------------------------------------------------
def _valid_depth(d: np.ndarray) -> np.ndarray:
    return np.isfinite(d) & (d > 0)



def _masked_depth(d: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.masked_where(~_valid_depth(d), d)



def _depth_norm(maps, vmin=None, vmax=None, log=True):
    """One colour scale for all ``maps`` (robust 1..99 % range of their valid values)."""
    vals = [m[_valid_depth(m)] for m in maps if m is not None]
    vals = np.concatenate(vals) if vals else np.zeros(0)
    if vmin is None:
        vmin = float(np.percentile(vals, 1)) if vals.size else 1.0
    if vmax is None:
        vmax = float(np.percentile(vals, 99)) if vals.size else 100.0
    if log:
        vmin = max(vmin, 1e-3)
    if vmax <= vmin:
        vmax = vmin * 1.01 + 1e-6
    return mcolors.LogNorm(vmin, vmax) if log else mcolors.Normalize(vmin, vmax)



def _show_depth(ax, d, norm, cmap):
    return ax.imshow(_masked_depth(d), cmap=_cmap(cmap), norm=norm)



def _depth_colorbar(fig, im, ax, **kw):
    """Colour bar labelled ``depth [m]``; on a log scale with plain ticks (5, 10, 20, 50, …)."""
    cb = fig.colorbar(im, ax=ax, label="depth [m]", **kw)
    norm = im.norm
    if isinstance(norm, mcolors.LogNorm):
        import matplotlib.ticker as mticker

        decades = 10.0 ** np.arange(np.floor(np.log10(norm.vmin)), np.ceil(np.log10(norm.vmax)) + 1)
        ticks = [t for t in np.outer(decades, [1, 2, 5]).ravel() if norm.vmin <= t <= norm.vmax]
        cb.ax.yaxis.set_major_locator(mticker.FixedLocator(ticks))
        cb.ax.yaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        cb.ax.yaxis.set_minor_formatter(mticker.NullFormatter())
    return cb



@_styled
def depth_difference(pred_m, gt_m, mode: str = "metres", vmax: float | None = None,
                     cmap: str = "RdBu_r", title: str | None = None, ax=None) -> Figure:
    """Signed depth error map: ``pred − gt`` (metres) or ``log(pred / gt)`` (``mode="log_ratio"``).

    Pixels with invalid ground truth (0, e.g. sky) are masked and drawn grey. Diverging colour
    map centred at 0 with symmetric limits (default: the 99th percentile of |error|); red =
    predicted too far, blue = too near. Inputs: H×W, 1×H×W or 1×1×H×W (numpy or torch).
    """
    if mode not in ("metres", "log_ratio"):
        raise ValueError(f"depth_difference: mode must be 'metres' or 'log_ratio', got {mode!r}")
    pred = _as_maps(pred_m, "pred_m")
    gt = _as_maps(gt_m, "gt_m")
    if pred.shape != gt.shape or pred.shape[0] != 1:
        raise ValueError(f"depth_difference: expected one prediction and ground truth of the same "
                         f"size, got {tuple(pred.shape)} and {tuple(gt.shape)}")
    pred, gt = pred[0].astype(np.float64), gt[0].astype(np.float64)
    valid = _valid_depth(gt) & np.isfinite(pred)
    if mode == "log_ratio":
        valid &= pred > 0
        diff = np.log(np.where(valid, pred, 1.0) / np.where(valid, gt, 1.0))
        label = "log(prediction / ground truth)"
    else:
        diff = pred - gt
        label = "prediction − ground truth [m]"
    diff = np.ma.masked_where(~valid, np.where(valid, diff, 0.0))
    if vmax is None:
        vmax = float(np.percentile(np.abs(diff.compressed()), 99)) if valid.any() else 1.0
    vmax = vmax if vmax > 0 else 1e-3
    h, w = gt.shape
    fig, ax = _single_ax(ax, (7.0, 7.0 * h / w + 0.8))
    im = ax.imshow(diff, cmap=_cmap(cmap), norm=mcolors.Normalize(-vmax, vmax))
    fig.colorbar(im, ax=ax, label=label, shrink=0.85)
    ax.set_axis_off()
    if valid.any():
        stat = (f"mean |error| {np.abs(diff.compressed()).mean():.2f}"
                + (" m" if mode == "metres" else ""))
    else:
        stat = "no valid ground truth"
    ax.set_title((title or "depth error") + f"  ({stat}; grey = no ground truth)")
    return fig



# ---- adaptive bins -------------------------------------------------------------------------------
def _bins_inputs(probs, bin_depths):
    p = _to_numpy(probs, "bin_probs").astype(np.float64)
    if p.ndim == 4 and p.shape[0] == 1:
        p = p[0]
    if p.ndim != 3:
        raise ValueError(f"bin_probs: expected (N, h, w) (or (1, N, h, w)), got shape {p.shape}")
    d = _to_numpy(bin_depths, "bin_depths").astype(np.float64).reshape(-1)
    if d.shape[0] != p.shape[0]:
        raise ValueError(f"bin_depths: {d.shape[0]} bin depths for {p.shape[0]} probability maps")
    return p, d



def pixel_distribution(probs, bin_depths, pixel: tuple[int, int],
                       image_size: tuple[int, int] | None = None) -> dict:
    """The bin distribution at one pixel.

    ``probs``: N×h×w bin probabilities, ``bin_depths``: N bin centres (metres), ``pixel``:
    ``(y, x)`` in the probability grid, or in an image of ``image_size`` (H, W) that the grid
    covers (mapped to grid cell ``(y·h // H, x·w // W)``). Returns a dict with ``grid_pixel``,
    ``depths`` (sorted), ``probs`` (in the same order), ``order`` (bin indices) and ``expected``
    (Σ p·d, the adaptive-bins depth at that cell).
    """
    p, d = _bins_inputs(probs, bin_depths)
    n, h, w = p.shape
    y, x = (int(v) for v in pixel)
    H, W = image_size if image_size is not None else (h, w)
    if not (0 <= y < H and 0 <= x < W):
        raise ValueError(f"pixel (y={y}, x={x}) outside the {'image' if image_size else 'grid'} of size {H}×{W}")
    gy, gx = y * h // H, x * w // W
    order = np.argsort(d, kind="stable")
    pix = p[:, gy, gx]
    return {"grid_pixel": (gy, gx), "depths": d[order], "probs": pix[order], "order": order,
            "expected": float((pix * d).sum())}



@_styled
def bin_probabilities(probs, bin_depths, pixel: tuple[int, int] | None = None, rgb=None, depth=None,
                      bins: Sequence[int] | None = None, n_bins_shown: int = 3,
                      cmap: str = "viridis", title: str | None = None, gt=None) -> Figure:
    """Adaptive-bins inspection: probability maps of a few bins and the distribution at a pixel.

    Top row: the image (``rgb``, else the most likely bin per cell) with the pixel marked, then
    the probability maps of ``bins`` (default: the ``n_bins_shown`` most likely bins at the
    pixel), ordered near → far and titled with their rank by depth. Bottom: the pixel's
    probabilities over the bins sorted by depth (stems at each bin centre, depth ticks
    labelled in metres) with the expected depth Σ p·d, the model's depth at that pixel when
    ``depth`` (H×W metres) is given, and the ground truth there when ``gt`` (H×W metres, 0 =
    invalid) is given. ``pixel`` is ``(y, x)`` in the image when ``rgb``/``depth`` is given,
    else in the probability grid (default: the centre).
    """
    p, d = _bins_inputs(probs, bin_depths)
    n, h, w = p.shape
    background = rgb_to_uint8(rgb)[0] if rgb is not None else None
    depth_map = _as_maps(depth, "depth")[0] if depth is not None else None
    if background is not None:
        H, W = background.shape[:2]
        if depth_map is not None and depth_map.shape != (H, W):
            raise ValueError(f"depth: size {depth_map.shape} differs from rgb {(H, W)}")
    elif depth_map is not None:
        H, W = depth_map.shape
    else:
        H, W = h, w
    if pixel is None:
        pixel = (H // 2, W // 2)
    dist = pixel_distribution(p, d, pixel, image_size=(H, W))
    y, x = (int(v) for v in pixel)
    gy, gx = dist["grid_pixel"]
    if bins is None:
        bins = list(np.argsort(-p[:, gy, gx], kind="stable")[:n_bins_shown])
    bins = [int(b) for b in bins]
    for b in bins:
        if not 0 <= b < n:
            raise ValueError(f"bin_probabilities: bin {b} out of range 0..{n - 1}")
    rank = {int(b): r + 1 for r, b in enumerate(dist["order"])}  # 1 = nearest bin
    bins = sorted(bins, key=lambda b: rank[b])
    gt_map = _as_maps(gt, "gt")[0] if gt is not None else None
    if gt_map is not None and gt_map.shape != (H, W):
        raise ValueError(f"gt: size {gt_map.shape} differs from the image {(H, W)}")

    ncols = 1 + len(bins)
    fig = _NotebookFigure(figsize=(3.2 * ncols, 3.2 * H / W + 3.2), layout="constrained")
    gs = fig.add_gridspec(2, ncols, height_ratios=[max(H / W, 0.3), 0.9])
    ax0 = fig.add_subplot(gs[0, 0])
    if background is not None:
        ax0.imshow(background)
        ax0.set_title("image")
    else:
        ax0.imshow(d[p.argmax(0)], cmap=_cmap(DEPTH_CMAP), extent=(0, W, H, 0))
        ax0.set_title("most likely bin depth")
    ax0.plot([x], [y], marker="+", color="cyan", markersize=14, markeredgewidth=2)
    for j, b in enumerate(bins):
        ax = fig.add_subplot(gs[0, 1 + j])
        im = ax.imshow(p[b], cmap=cmap, vmin=0, vmax=max(float(p[b].max()), 1e-6), extent=(0, W, H, 0))
        ax.plot([x], [y], marker="+", color="red", markersize=12, markeredgewidth=2)
        ax.set_title(f"bin {b} ({rank[b]}/{n} by depth): {d[b]:.1f} m")
        fig.colorbar(im, ax=ax, shrink=0.8, label="probability")
    for ax in fig.axes:
        ax.set_xticks([])
        ax.set_yticks([])
    axd = fig.add_subplot(gs[1, :])
    axd.vlines(dist["depths"], 0, dist["probs"], color="C0", linewidth=2)
    axd.plot(dist["depths"], dist["probs"], "o", color="C0", markersize=4, label="bin probability")
    axd.axvline(dist["expected"], color="C3", linestyle="--", label=f"Σ p·d = {dist['expected']:.2f} m")
    if depth_map is not None:
        dv = float(depth_map[y, x])
        axd.axvline(dv, color="C2", linestyle=":", label=f"predicted depth {dv:.2f} m")
    if gt_map is not None:
        gv = float(gt_map[y, x])
        if np.isfinite(gv) and gv > 0:
            axd.axvline(gv, color="k", linestyle="-", linewidth=1.5, label=f"ground truth {gv:.2f} m")
        else:
            axd.plot([], [], " ", label="ground truth: none at this pixel")
    pos = dist["depths"][dist["depths"] > 0]
    if pos.size and pos.max() / pos.min() > 20:
        import matplotlib.ticker as mticker

        axd.set_xscale("log")
        lo, hi = float(pos.min()), float(pos.max())
        decades = 10.0 ** np.arange(np.floor(np.log10(lo)), np.ceil(np.log10(hi)) + 1)
        ticks = [t for t in np.outer(decades, [1, 2, 5]).ravel() if lo / 1.5 <= t <= hi * 1.5]
        axd.xaxis.set_major_locator(mticker.FixedLocator(ticks))
        axd.xaxis.set_major_formatter(mticker.FormatStrFormatter("%g"))
        axd.xaxis.set_minor_formatter(mticker.NullFormatter())
    axd.set(xlabel="bin depth [m] (bins sorted by depth)", ylabel="probability",
            ylim=(0, max(1e-6, dist["probs"].max()) * 1.15), title=f"bin distribution at pixel (y={y}, x={x})")
    axd.legend(loc="best")
    if title:
        fig.suptitle(title)
    return fig
