"""Curves: training curves of runs (smoothed as TensorBoard does), attention cost against
sequence length, and optimiser trajectories on 2-D test surfaces.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .base import _check_columns, _fmt_value, _single_ax, _styled, _to_numpy


# ---- training curves -----------------------------------------------------------------------------
def ema(values, weight: float = 0.9) -> np.ndarray:
    """Exponential moving average with bias correction (as TensorBoard's smoothing).

    ``weight`` in [0, 1): 0 returns the values unchanged. NaNs are skipped (they keep the
    previous average).
    """
    if not 0.0 <= weight < 1.0:
        raise ValueError(f"smooth: EMA weight must be in [0, 1), got {weight}")
    v = np.asarray(values, dtype=np.float64)
    out = np.empty_like(v)
    acc, norm = 0.0, 0.0
    for i, x in enumerate(v):
        if np.isfinite(x):
            acc = weight * acc + (1.0 - weight) * x
            norm = weight * norm + (1.0 - weight)
        out[i] = acc / norm if norm > 0 else np.nan
    return out



def smooth_values(values, smooth: float | None = 0.9, window: int | None = None) -> np.ndarray:
    """EMA (``smooth`` weight) or, when ``window`` is given, a centred-free trailing rolling mean."""
    if window is not None:
        if int(window) < 1:
            raise ValueError(f"window: rolling-mean window must be ≥ 1, got {window}")
        return pd.Series(np.asarray(values, float)).rolling(int(window), min_periods=1).mean().to_numpy()
    if not smooth:
        return np.asarray(values, dtype=np.float64)
    return ema(values, float(smooth))



def _curve(label, h, x, y):
    """(steps, values) of one history entry."""
    if isinstance(h, pd.DataFrame):
        ycol = y or next((c for c in ("loss", "train_loss", "total_loss") if c in h.columns), None)
        if ycol is None or ycol not in h.columns:
            raise ValueError(f"loss_curves: run {label!r} has no column {y or 'loss'!r} "
                             f"(columns: {list(h.columns)}); pass y=<column>")
        xcol = x or next((c for c in ("step", "global_step", "iteration", "epoch") if c in h.columns), None)
        if x is not None and x not in h.columns:
            raise ValueError(f"loss_curves: run {label!r} has no column {x!r} (columns: {list(h.columns)})")
        steps = h[xcol].to_numpy(float) if xcol else np.arange(len(h), dtype=float)
        return steps, h[ycol].to_numpy(float)
    if isinstance(h, pd.Series):
        return h.index.to_numpy(float), h.to_numpy(float)
    if isinstance(h, tuple) and len(h) == 2:
        steps, vals = (_to_numpy(h[0], f"{label} steps").astype(float),
                       _to_numpy(h[1], f"{label} losses").astype(float))
        if steps.shape != vals.shape or steps.ndim != 1:
            raise ValueError(f"loss_curves: run {label!r}: steps {steps.shape} and losses "
                             f"{vals.shape} must be 1-D of the same length")
        return steps, vals
    vals = _to_numpy(h, f"{label} losses").astype(float)
    if vals.ndim != 1:
        raise ValueError(f"loss_curves: run {label!r}: expected a DataFrame, (steps, losses) or 1-D "
                         f"losses, got shape {vals.shape}")
    return np.arange(len(vals), dtype=float), vals



@_styled
def loss_curves(histories: Mapping, smooth: float | None = 0.9, window: int | None = None,
                x: str | None = None, y: str | None = None,
                color_by: Mapping | None = None, log_color: bool = False,
                color_label: str | None = None, cmap: str = "viridis", raw: bool = True,
                logy: bool | None = None, title: str = "training loss",
                xlabel: str = "step", ylabel: str = "loss", ax=None) -> Figure:
    """Smoothed training curves, one per run.

    ``histories`` maps a run label to a DataFrame (columns ``x``/``y``; defaults: ``step`` and
    ``loss``), a ``(steps, losses)`` pair or a 1-D array of losses. The smoothed curve
    (EMA with weight ``smooth``, or a rolling mean over ``window`` steps) is drawn over the
    faint raw one. ``color_by`` maps each label to a number (e.g. the learning rate); runs are
    then coloured on a continuous scale with a colour bar (``log_color`` for a log scale).
    ``logy=None`` picks a log loss axis when the smoothed losses span more than two decades
    (e.g. a diverging run in a learning-rate sweep). Runs without data yet (an empty history)
    are listed in the legend as "no data" instead of failing the whole figure.
    """
    if not isinstance(histories, Mapping) or not histories:
        raise ValueError("loss_curves: histories must be a non-empty dict {label: history}")
    fig, ax = _single_ax(ax, (7.0, 4.2))
    norm = None
    if color_by is not None:
        missing = [k for k in histories if k not in color_by]
        if missing:
            raise ValueError(f"loss_curves: color_by has no value for runs {missing}")
        cvals = np.array([float(color_by[k]) for k in histories])
        if log_color:
            if np.any(cvals <= 0):
                raise ValueError("loss_curves: log_color needs positive color_by values")
            norm = mcolors.LogNorm(cvals.min(), cvals.max() if cvals.max() > cvals.min() else cvals.min() * 10)
        else:
            norm = mcolors.Normalize(cvals.min(), cvals.max() if cvals.max() > cvals.min() else cvals.min() + 1)
        cm = matplotlib.colormaps[cmap]
    smoothed_all = []
    for i, (label, h) in enumerate(histories.items()):
        color = cm(norm(float(color_by[label]))) if norm is not None else f"C{i % 10}"
        if h is None or len(h) == 0:
            ax.plot([], [], color=color, linestyle=":", label=f"{label} (no data)")
            continue
        steps, vals = _curve(label, h, x, y)
        smoothed = smooth_values(vals, smooth, window)
        smoothed_all.append(smoothed[np.isfinite(smoothed)])
        if raw and (smooth or window):
            ax.plot(steps, vals, color=color, alpha=0.2, linewidth=0.8)
        ax.plot(steps, smoothed, color=color, linewidth=1.6, label=str(label))
    if norm is not None:
        from matplotlib.cm import ScalarMappable

        fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, label=color_label or "value")
    if logy is None:
        finite = np.concatenate(smoothed_all) if smoothed_all else np.zeros(0)
        logy = bool(finite.size and finite.min() > 0 and finite.max() / finite.min() > 100)
    if logy:
        ax.set_yscale("log")
    ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
    if norm is None or len(histories) <= 12:
        ax.legend(loc="best", fontsize=8, ncols=2 if len(histories) > 6 else 1)
    return fig



# ---- attention cost ------------------------------------------------------------------------------
@_styled
def cost_curves(df, x: str, y: str, hue: str | None = None, logy: bool = True,
                logx: bool | None = None, slope: float | None = None,
                title: str | None = None, xlabel: str | None = None, ylabel: str | None = None,
                ax=None, band: tuple[str, str] | None = None) -> Figure:
    """Measured cost (time, memory) against a size (N, D, H, B) for the attention-cost analysis.

    Lines with markers per ``hue``; log axes by default (``logx`` when x spans a decade).
    ``slope`` adds a dashed reference power law ``∝ x^slope`` through the first point (e.g.
    ``slope=2`` for the O(N²) attention matrix): parallel lines on log–log axes mean the same
    growth rate. ``band=(low column, high column)`` shades that range around each line (e.g.
    the quartiles of the timings, so the inter-quartile range is visible).
    """
    import seaborn as sns

    df = _check_columns(df, [x, y, hue, *(band or ())], "cost_curves")
    if df.empty:
        raise ValueError("cost_curves: the table is empty")
    data = df.copy()
    if hue is not None:
        data[hue] = data[hue].map(_fmt_value)
    fig, ax = _single_ax(ax, (6.5, 4.2))
    sns.lineplot(data=data, x=x, y=y, hue=hue, marker="o", errorbar=None, ax=ax)
    if band is not None:
        groups = data.groupby(hue, sort=False) if hue is not None else [(None, data)]
        for i, (_, part) in enumerate(groups):  # seaborn's hue order: first appearance
            part = part.sort_values(x)
            ax.fill_between(part[x].to_numpy(float), part[band[0]].to_numpy(float),
                            part[band[1]].to_numpy(float), color=f"C{i % 10}", alpha=0.2, linewidth=0)
    xs = pd.to_numeric(data[x], errors="coerce")
    if logx is None:
        logx = bool(xs.notna().all() and (xs > 0).all() and xs.max() / xs.min() >= 10)
    if logx:
        ax.set_xscale("log", base=2)
    if logy:
        ax.set_yscale("log")
    if slope is not None:
        grouped = data.groupby(x)[y].mean().sort_index()
        x0, y0 = float(grouped.index[0]), float(grouped.iloc[0])
        xx = grouped.index.to_numpy(float)
        ax.plot(xx, y0 * (xx / x0) ** slope, "k--", linewidth=1.0,
                label=f"∝ {x}^{slope:g}")
    ax.set(title=title or f"{y} vs {x}", xlabel=xlabel or x, ylabel=ylabel or y)
    if hue is not None or slope is not None:
        ax.legend(title=hue, loc="best")
    return fig



# ---- optimiser trajectories ----------------------------------------------------------------------
def _elongated(x, y):
    return 0.5 * (x ** 2 + 50.0 * y ** 2)



def _rosenbrock(x, y):
    return (1.0 - x) ** 2 + 100.0 * (y - x ** 2) ** 2



#: 2-D test surfaces: name → (f(x, y) for numpy and torch, start, x range, y range, minimum).
SURFACES = {
    "elongated": (_elongated, (-4.0, 1.5), (-4.5, 1.5), (-2.0, 2.0), (0.0, 0.0)),
    "rosenbrock": (_rosenbrock, (-1.5, 2.0), (-2.0, 2.0), (-1.0, 3.0), (1.0, 1.0)),
}



_DEFAULT_OPTIMIZERS = {
    "elongated": {"SGD lr=0.038": ("SGD", {"lr": 0.038}),
                  "SGD+momentum lr=0.01": ("SGD", {"lr": 0.01, "momentum": 0.9}),
                  "Adam lr=0.1": ("Adam", {"lr": 0.1})},
    "rosenbrock": {"SGD lr=1e-3": ("SGD", {"lr": 1e-3}),
                   "SGD+momentum lr=3e-4": ("SGD", {"lr": 3e-4, "momentum": 0.9}),
                   "Adam lr=0.05": ("Adam", {"lr": 0.05})},
}



def optimize_2d(fn, optimizer, start: tuple[float, float], steps: int = 100, **kwargs) -> np.ndarray:
    """Run a torch optimiser on a 2-D function; returns the path, shape (steps + 1, 2).

    ``fn(x, y)`` must work on torch scalars; ``optimizer`` is a ``torch.optim`` class or its
    name (``"SGD"``, ``"Adam"``, …); ``kwargs`` go to its constructor. The path stops early
    if it diverges (non-finite values).
    """
    import torch

    if isinstance(optimizer, str):
        if not hasattr(torch.optim, optimizer):
            raise ValueError(f"optimize_2d: unknown torch.optim optimizer {optimizer!r}")
        optimizer = getattr(torch.optim, optimizer)
    theta = torch.tensor(start, dtype=torch.float64, requires_grad=True)
    opt = optimizer([theta], **kwargs)
    path = [theta.detach().numpy().copy()]
    for _ in range(int(steps)):
        opt.zero_grad()
        loss = fn(theta[0], theta[1])
        loss.backward()
        opt.step()
        p = theta.detach().numpy().copy()
        if not np.all(np.isfinite(p)) or np.abs(p).max() > 1e6:
            break
        path.append(p)
    return np.stack(path)



@_styled
def trajectories_2d(surface: str = "elongated", optimizers: Mapping | None = None,
                    start: tuple[float, float] | None = None, steps: int = 100,
                    title: str | None = None, ax=None) -> Figure:
    """SGD vs Adam (and friends) from the same start on a 2-D loss surface.

    ``surface``: ``"elongated"`` (the quadratic ½(x² + 50 y²), badly conditioned: SGD zig-zags
    across the steep direction, Adam's per-coordinate scaling moves both coordinates alike)
    or ``"rosenbrock"``. ``optimizers`` maps a label to ``(torch.optim class or name, kwargs)``.
    Draws log-spaced loss contours and each path with its final loss.
    """
    if surface not in SURFACES:
        raise ValueError(f"trajectories_2d: surface must be one of {list(SURFACES)}, got {surface!r}")
    fn, default_start, xr, yr, minimum = SURFACES[surface]
    optimizers = optimizers or _DEFAULT_OPTIMIZERS[surface]
    start = tuple(start) if start is not None else default_start
    fig, ax = _single_ax(ax, (7.0, 5.0))
    gx, gy = np.meshgrid(np.linspace(*xr, 300), np.linspace(*yr, 300))
    z = fn(gx, gy)
    zmin = max(float(z.min()), 1e-3)
    levels = np.geomspace(zmin, float(z.max()), 18)
    ax.contour(gx, gy, z, levels=levels, norm=mcolors.LogNorm(), cmap="Greys", linewidths=0.7)
    ax.plot(*minimum, marker="*", color="gold", markersize=14, markeredgecolor="k", linestyle="none",
            label="minimum")
    for i, (label, (opt, kwargs)) in enumerate(optimizers.items()):
        path = optimize_2d(fn, opt, start, steps, **kwargs)
        final = float(fn(*path[-1]))
        ax.plot(path[:, 0], path[:, 1], "-o", color=f"C{i}", markersize=2.0, linewidth=1.2,
                label=f"{label} (loss {final:.2g} after {len(path) - 1} steps)")
    ax.plot(*start, marker="o", color="k", markersize=6, linestyle="none", label="start")
    ax.set(xlim=xr, ylim=yr, xlabel="θ₁", ylabel="θ₂",
           title=title or f"optimizer trajectories on the {surface} surface ({steps} steps)")
    ax.legend(loc="lower right" if surface == "rosenbrock" else "upper right", fontsize=8)
    return fig
