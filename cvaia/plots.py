"""Figures for the workbook: every function returns a :class:`matplotlib.figure.Figure`.

Figures are built with the object-oriented API (``matplotlib.figure.Figure``), never through
pyplot's global state, so a notebook shows each figure exactly once — through the Figure's
own display representation — and nothing is left open behind the caller's back. The pattern
in a notebook cell is::

    fig = plots.confusion_matrix(cm, normalize="row")
    plots.save(fig, "p2_confusion_joint")     # figures/p2_confusion_joint.png and .pdf
    fig                                       # last expression: displayed once

Functions that draw a single panel also take ``ax=`` to draw into an existing Axes (they then
return ``ax.figure``). Images may be numpy arrays or torch tensors (any device); rgb may be
uint8 H×W×3 or ImageNet-normalised float 3×H×W, batched or not (see :func:`rgb_to_uint8`).
Invalid depth (ground truth 0) is masked and drawn grey.

Figure export: :func:`save` writes ``<figures_dir>/<name>.png`` and ``.pdf`` (white
background, 150 dpi, tight bounding box), atomically, overwriting the previous export of the
same name (figures are regenerated outputs). The folder is :func:`cvaia.paths.figures_dir`
(environment variable ``CVAIA_FIGURES_DIR``).
"""

from __future__ import annotations

import functools
import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib
import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = [
    "STYLE", "BAD_COLOR", "FIGURE_DPI",
    "save", "rgb_to_uint8", "ema", "smooth_values", "normalize_confusion", "class_changes",
    "pixel_distribution", "parameter_dataframe", "optimize_2d", "SURFACES",
    "loss_curves", "metric_vs_param", "heatmap", "bars", "confusion_matrix",
    "confusion_difference", "depth_difference", "prediction_grid", "prediction_comparison",
    "attention_heatmaps", "bin_probabilities", "parameter_table", "trajectories_2d",
    "cost_curves",
]

#: The house style: readable sizes on screen and in the exported PNG/PDF.
STYLE = {
    "font.size": 10,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "xtick.labelsize": 9,
    "ytick.labelsize": 9,
    "legend.fontsize": 9,
    "figure.titlesize": 12,
    "axes.grid": False,
    "image.interpolation": "nearest",
    "savefig.facecolor": "white",
    "figure.facecolor": "white",
}
#: Colour of masked pixels (invalid depth).
BAD_COLOR = "0.6"
#: Resolution of exported PNGs.
FIGURE_DPI = 150
#: Default colour map of depth images (near = bright).
DEPTH_CMAP = "magma_r"

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")


def _styled(func):
    """Run ``func`` under the house style (rc parameters are read when artists are created)."""

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with matplotlib.rc_context(STYLE):
            return func(*args, **kwargs)

    return wrapper


class _NotebookFigure(Figure):
    """A plain :class:`~matplotlib.figure.Figure` that also knows how to show itself in Jupyter.

    Figures made without pyplot get no display formatter from the inline backend unless pyplot
    has drawn something before, so they would show as ``<Figure size ...>`` text. ``_repr_png_``
    makes a returned figure display (once) as an image in any kernel, under papermill too.
    When the inline backend's Figure formatter is active, IPython uses that one instead.
    The figure gets an Agg canvas, so text measurements (tight layout, seaborn's tick-label
    checks) use one renderer instead of printing the figure for each measurement.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from matplotlib.backends.backend_agg import FigureCanvasAgg

        FigureCanvasAgg(self)

    def _repr_png_(self):
        import io

        buf = io.BytesIO()
        self.savefig(buf, format="png", bbox_inches="tight", facecolor="white")
        return buf.getvalue()


def _figure(nrows=1, ncols=1, figsize=(6.0, 4.0), squeeze=True, **subplot_kw):
    """A new pyplot-free Figure with constrained layout and its axes."""
    fig = _NotebookFigure(figsize=figsize, layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=squeeze, **subplot_kw)
    return fig, axes


def new_figure(nrows: int = 1, ncols: int = 1, figsize=(6.0, 4.0), squeeze: bool = True, **subplot_kw):
    """``(fig, axes)`` for figure helpers outside this module (e.g. ``cvaia.experiments``):
    constrained layout, no pyplot, and the figure displays itself as an image when a notebook
    cell returns it (a plain ``matplotlib.figure.Figure`` shows as ``<Figure size …>`` text there)."""
    return _figure(nrows, ncols, figsize=figsize, squeeze=squeeze, **subplot_kw)


def _single_ax(ax, figsize):
    """``(fig, ax)``: the given Axes and its figure, or a new one-panel figure."""
    if ax is not None:
        return ax.figure, ax
    return _figure(figsize=figsize)


# ---- export -------------------------------------------------------------------------------------
def save(fig: Figure, name: str, directory: str | os.PathLike | None = None) -> list[Path]:
    """Write ``fig`` as ``<directory>/<name>.png`` and ``<name>.pdf``; returns both paths.

    ``directory`` defaults to :func:`cvaia.paths.figures_dir` (``CVAIA_FIGURES_DIR``).
    ``name`` must be a stable identifier such as ``p1_optimizer_lr_miou``: letters, digits,
    ``_`` and ``-`` (no extension, no folders). An existing export of the same name is
    replaced; each file is written to a temporary file first and moved into place, so a
    crash never leaves a half-written figure.
    """
    if not isinstance(fig, Figure):
        raise TypeError(f"plots.save: expected a matplotlib Figure, got {type(fig).__name__}")
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"plots.save: figure name {name!r} is not a safe identifier; use letters, "
                         f"digits, '_' and '-' only, starting with a letter or digit, without an "
                         f"extension (e.g. 'p1_optimizer_lr_miou')")
    if directory is None:
        from .paths import figures_dir

        directory = figures_dir()
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"plots.save: figure directory {directory} is a file")
    directory.mkdir(parents=True, exist_ok=True)

    written = []
    for fmt in ("png", "pdf"):
        target = directory / f"{name}.{fmt}"
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=f".{fmt}.tmp", dir=directory)
        try:
            with os.fdopen(fd, "wb") as fh:
                # Fixed metadata keeps repeated exports of the same figure byte-identical.
                metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
                fig.savefig(fh, format=fmt, dpi=FIGURE_DPI, bbox_inches="tight",
                            facecolor="white", metadata=metadata)
            os.replace(tmp, target)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
        written.append(target)
    return written


# ---- input conversion ---------------------------------------------------------------------------
def _to_numpy(x, name: str) -> np.ndarray:
    """numpy view of a numpy array, torch tensor (any device/dtype) or nested sequence."""
    if x is None:
        raise ValueError(f"{name}: got None")
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor without importing torch
        t = x.detach().cpu()
        if t.is_floating_point() and t.dtype.itemsize < 4:  # float16 / bfloat16
            t = t.float()
        return t.numpy()
    return np.asarray(x)


def rgb_to_uint8(rgb, normalized: bool | None = None) -> np.ndarray:
    """Images for display: uint8 array (N, H, W, 3).

    Accepts numpy arrays or torch tensors, one image or a batch, channels-last (H×W×3) or
    channels-first (3×H×W). uint8 input is used as is. Float input is by default taken to be
    the model input, i.e. ImageNet-normalised on the 0..255 scale
    (:func:`cvaia.data.encoding.normalize_rgb`) and is un-normalised; with
    ``normalized=False`` floats are plain intensities (0..1 if their maximum is ≤ 1, else 0..255).
    """
    a = _to_numpy(rgb, "rgb")
    if a.ndim == 3:
        a = a[None]
    if a.ndim != 4:
        raise ValueError(f"rgb: expected (H, W, 3), (3, H, W) or a batch of them, got shape {a.shape}")
    if a.shape[-1] != 3 and a.shape[1] == 3:
        a = a.transpose(0, 2, 3, 1)
    if a.shape[-1] != 3:
        raise ValueError(f"rgb: expected 3 colour channels (first or last), got shape {a.shape}")
    if a.dtype == np.uint8:
        return np.ascontiguousarray(a)
    if a.dtype == bool or not np.issubdtype(a.dtype, np.number):
        raise ValueError(f"rgb: expected uint8 or float values, got {a.dtype}")
    integer = np.issubdtype(a.dtype, np.integer)  # e.g. int64 0..255: plain intensities
    a = a.astype(np.float32)
    if integer:
        pass
    elif normalized is None or normalized:
        from .data.encoding import IMAGENET_MEAN, IMAGENET_STD

        a = a * np.asarray(IMAGENET_STD, np.float32) + np.asarray(IMAGENET_MEAN, np.float32)
    elif np.nanmax(a) <= 1.0:
        a = a * 255.0
    return np.clip(np.nan_to_num(a), 0, 255).round().astype(np.uint8)


def _as_ids(x, name: str) -> np.ndarray:
    """Label maps (N, H, W) int64 from ids (H×W or N×H×W) or logits (N×C×H×W, argmax over C)."""
    a = _to_numpy(x, name)
    if a.ndim == 4:
        if not np.issubdtype(a.dtype, np.floating):
            raise ValueError(f"{name}: a 4-D input must be float logits (N, C, H, W), got {a.dtype}")
        return a.argmax(axis=1).astype(np.int64)
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name}: expected label ids (H, W) or (N, H, W), or logits (N, C, H, W); "
                         f"got shape {a.shape}")
    if np.issubdtype(a.dtype, np.floating):
        if not np.all(np.isfinite(a)) or not np.all(a == np.round(a)):
            raise ValueError(f"{name}: float label map holds non-integer values; pass ids or "
                             f"4-D logits (N, C, H, W)")
    return a.astype(np.int64)


def _as_maps(x, name: str) -> np.ndarray:
    """Float maps (N, H, W) from H×W, N×H×W or N×1×H×W."""
    a = _to_numpy(x, name)
    if a.ndim == 4 and a.shape[1] == 1:
        a = a[:, 0]
    if a.ndim == 2:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"{name}: expected a map (H, W), (N, H, W) or (N, 1, H, W), got shape {a.shape}")
    return a.astype(np.float32)


def _valid_depth(d: np.ndarray) -> np.ndarray:
    return np.isfinite(d) & (d > 0)


def _masked_depth(d: np.ndarray) -> np.ma.MaskedArray:
    return np.ma.masked_where(~_valid_depth(d), d)


def _cmap(name, bad=BAD_COLOR):
    cmap = matplotlib.colormaps[name] if isinstance(name, str) else name
    return cmap.with_extremes(bad=bad)


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


def _class_names(class_names, n: int, name: str) -> list[str]:
    if class_names is None:
        if n == 19:
            from .data.classes import class_names as default_names

            return list(default_names())
        return [str(i) for i in range(n)]
    class_names = [str(c) for c in class_names]
    if len(class_names) != n:
        raise ValueError(f"{name}: {len(class_names)} class names for a {n}×{n} matrix")
    return class_names


def _fmt_value(v) -> str:
    """Compact tick label: 1e-04 for learning rates, 64 for ints, 0.25 for fractions."""
    if isinstance(v, (bool, np.bool_)):
        return str(v)
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        if v == int(v) and abs(v) < 1e6:
            return str(int(v))
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e5):
            return f"{v:.0e}"
        return f"{v:g}"
    return str(v)


# ---- training curves ----------------------------------------------------------------------------
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


# ---- sweeps -------------------------------------------------------------------------------------
def _check_columns(df, cols, func):
    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    missing = [c for c in cols if c is not None and c not in df.columns]
    if missing:
        raise ValueError(f"{func}: columns {missing} not in the table (columns: {list(df.columns)})")
    return df


def _reference_lines(ax, reference, label="report"):
    """Dashed horizontal reference line(s): a number or {label: number}."""
    if reference is None:
        return
    items = reference.items() if isinstance(reference, Mapping) else [(label, reference)]
    for i, (lab, val) in enumerate(items):
        ax.axhline(float(val), color=f"C{i}" if isinstance(reference, Mapping) else "0.3",
                   linestyle="--", linewidth=1.0, label=f"{lab}: {float(val):g}")


@_styled
def metric_vs_param(df, x: str, y: str, hue: str | None = None, kind: str = "bar",
                    logx: bool | None = None, reference=None, annotate: bool = True,
                    title: str | None = None, xlabel: str | None = None,
                    ylabel: str | None = None, ax=None) -> Figure:
    """A metric against a swept parameter: grouped bars (``kind="bar"``) or lines with markers.

    ``df`` is a results table (e.g. :func:`cvaia.runs.results_table`), one row per run; several
    rows with the same ``x``/``hue`` are averaged. Numeric ``x`` values are sorted and labelled
    compactly (``1e-04``). ``reference`` draws dashed lines for the report's numbers (a number
    or a dict ``{label: number}``). For lines, ``logx`` defaults to a log axis when the
    positive ``x`` values span two decades or more.
    """
    if kind not in ("bar", "line"):
        raise ValueError(f"metric_vs_param: kind must be 'bar' or 'line', got {kind!r}")
    df = _check_columns(df, [x, y, hue], "metric_vs_param")
    if df.empty:
        raise ValueError("metric_vs_param: the table is empty")
    fig, ax = _single_ax(ax, (7.0, 4.2))
    import seaborn as sns

    data = df[[c for c in (x, y, hue) if c is not None]].copy()
    if kind == "bar":
        order = sorted(data[x].unique(), key=_sort_key)
        labels = {v: _fmt_value(v) for v in order}
        data["_x"] = data[x].map(labels)
        hue_order = None
        if hue is not None:
            hue_order = [_fmt_value(v) for v in sorted(data[hue].unique(), key=_sort_key)]
            data[hue] = data[hue].map(_fmt_value)
        sns.barplot(data=data, x="_x", y=y, hue=hue, order=[labels[v] for v in order],
                    hue_order=hue_order, errorbar=None, ax=ax)
        if annotate:
            for cont in ax.containers:
                ax.bar_label(cont, fmt="%.1f", fontsize=7, padding=1)
    else:
        if hue is not None:
            data[hue] = data[hue].map(_fmt_value)
        sns.lineplot(data=data, x=x, y=y, hue=hue, marker="o", errorbar=None, ax=ax)
        xs = pd.to_numeric(data[x], errors="coerce")
        if logx is None:
            logx = bool(xs.notna().all() and (xs > 0).all() and xs.max() / xs.min() >= 100)
        if logx:
            ax.set_xscale("log")
    _reference_lines(ax, reference)
    ax.set(title=title or f"{y} vs {x}", xlabel=xlabel or x, ylabel=ylabel or y)
    if hue is not None or reference is not None:
        ax.legend(title=hue, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0)
    return fig


def _sort_key(v):
    try:
        return (0, float(v), "")
    except (TypeError, ValueError):
        return (1, 0.0, str(v))


@_styled
def heatmap(df, index: str, columns: str, values: str, fmt: str = ".1f", cmap: str = "viridis",
            aggfunc: str = "mean", title: str | None = None, cbar_label: str | None = None,
            xlabel: str | None = None, ylabel: str | None = None, ax=None) -> Figure:
    """Annotated heatmap of ``values`` over two parameters (e.g. mIoU for batch × epochs).

    Rows of ``df`` with the same (``index``, ``columns``) are combined with ``aggfunc``;
    missing combinations stay blank.
    """
    import seaborn as sns

    df = _check_columns(df, [index, columns, values], "heatmap")
    if df.empty:
        raise ValueError("heatmap: the table is empty")
    table = df.pivot_table(index=index, columns=columns, values=values, aggfunc=aggfunc)
    fig, ax = _single_ax(ax, (1.0 + 0.9 * table.shape[1] + 1.5, 1.0 + 0.6 * table.shape[0]))
    sns.heatmap(table, annot=True, fmt=fmt, cmap=cmap, ax=ax,
                cbar_kws={"label": cbar_label or values}, linewidths=0.5, linecolor="white")
    ax.set_xticklabels([_fmt_value(v) for v in table.columns])
    ax.set_yticklabels([_fmt_value(v) for v in table.index], rotation=0)
    ax.set(title=title or f"{values} by {index} × {columns}", xlabel=xlabel or columns,
           ylabel=ylabel or index)
    return fig


@_styled
def bars(values, ylabel: str, title: str | None = None, fmt: str = "{:.1f}",
         horizontal: bool = False, reference=None, xlabel: str | None = None,
         logy: bool = False, colors: Sequence | None = None, ax=None) -> Figure:
    """Bars for a few measured quantities (training time, GPU memory, power, …).

    ``values`` is a dict or Series ``{label: number}`` (one bar each), or a DataFrame whose
    index gives the groups and whose columns give the bars within a group. Each bar is labelled
    with its value (``fmt``); ``reference`` adds dashed lines (number or ``{label: number}``).
    ``colors``: one matplotlib colour per bar of a single series (e.g. the class palette,
    RGB in 0..1), instead of the default cycle.
    """
    if isinstance(values, Mapping):
        values = pd.Series({str(k): float(v) for k, v in values.items()})
    if isinstance(values, pd.Series):
        values = values.to_frame(name=ylabel)
        single = True
    elif isinstance(values, pd.DataFrame):
        single = values.shape[1] == 1
    else:
        raise ValueError(f"bars: expected a dict, Series or DataFrame, got {type(values).__name__}")
    if values.empty:
        raise ValueError("bars: nothing to plot")
    fig, ax = _single_ax(ax, (max(4.0, 1.0 + 0.9 * values.size), 4.0) if not horizontal
                         else (6.0, max(2.5, 0.8 + 0.4 * values.size)))
    n_groups, n_series = values.shape
    width = 0.8 / n_series
    pos = np.arange(n_groups)
    if colors is not None and (not single or len(colors) != n_groups):
        raise ValueError(f"bars: colors needs one colour per bar of a single series ({n_groups}), "
                         f"got {len(colors)}" + ("" if single else f" for {values.shape[1]} series"))
    for j, col in enumerate(values.columns):
        offs = pos - 0.4 + width * (j + 0.5)
        vals = values[col].to_numpy(float)
        default = [f"C{i % 10}" for i in range(n_groups)] if single else f"C{j % 10}"
        kw = dict(color=default, label=None if single else str(col))
        if colors is not None:  # palette colours (some are pale): a thin outline
            kw.update(color=list(colors), edgecolor="0.3", linewidth=0.5)
        cont = (ax.barh(offs, vals, height=width, **kw) if horizontal
                else ax.bar(offs, vals, width=width, **kw))
        ax.bar_label(cont, labels=["" if not np.isfinite(v) else fmt.format(v) for v in vals],
                     fontsize=8, padding=2)
    labels = [str(i) for i in values.index]
    if horizontal:
        ax.set_yticks(pos, labels)
        ax.invert_yaxis()
        ax.set(xlabel=ylabel, ylabel=xlabel or "")
        if logy:
            ax.set_xscale("log")
        ax.margins(x=0.15)
    else:
        ax.set_xticks(pos, labels, rotation=0 if max(len(s) for s in labels) <= 10 else 30,
                      ha="center" if max(len(s) for s in labels) <= 10 else "right")
        ax.set(ylabel=ylabel, xlabel=xlabel or "")
        if logy:
            ax.set_yscale("log")
        ax.margins(y=0.12)
    _reference_lines(ax, reference)
    if not single or reference is not None:
        ax.legend(loc="best")
    ax.set_title(title or ylabel)
    return fig


# ---- confusion matrices -------------------------------------------------------------------------
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
    from .metrics import per_class_iou

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
    from .metrics import per_class_iou

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
    sub = ("IoU better: " + ", ".join(improved[:6]) + (" …" if len(improved) > 6 else "")) if improved \
        else "no class with a better IoU"
    ax.set(xlabel="predicted class", ylabel=f"true class  (IoU change {labels[1]} − {labels[0]}, points)",
           title=(title or f"confusion difference {labels[1]} − {labels[0]}") + f"\n{sub}")
    return fig


# ---- depth --------------------------------------------------------------------------------------
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


# ---- prediction grids ---------------------------------------------------------------------------
def _check_batch(n, arr, name):
    if arr is not None and arr.shape[0] != n:
        raise ValueError(f"{name}: {arr.shape[0]} samples, but rgb has {n}")


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
    from .data.classes import colorize

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
    from .data.classes import colorize

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


# ---- verdicts ------------------------------------------------------------------------------------
#: Marker colour per verdict outcome (see :mod:`cvaia.experiments.verdicts`).
OUTCOME_COLORS = {"reproduced": "#1a9641", "contradicted": "#d7191c", "inconclusive at this scale": "0.45"}


@_styled
def verdict_deltas(claims: Sequence[str], deltas, thresholds, outcomes: Sequence[str] | None = None,
                   title: str = "each finding of the report against the run-to-run noise", ax=None) -> Figure:
    """One row per claim: the measured difference in units of its noise threshold.

    ``deltas`` are signed so that > 0 points the report's way; each is divided by its
    ``thresholds`` entry (the |Δ| a difference must exceed to count), so claims measured in
    different units (mIoU points, milliseconds) share one axis. The grey band is ±1: a dot
    outside it is a finding (right: reproduced, left: contradicted), a dot inside it cannot be
    told from noise. Each dot is labelled with its raw Δ and threshold. ``outcomes`` colour the
    dots (:data:`OUTCOME_COLORS`); a missing Δ or threshold is drawn as "n/a". The axis is
    symmetric around 0 and always shows the whole band.
    """
    claims = [str(c) for c in claims]
    d = np.asarray(deltas, dtype=float)
    t = np.asarray(thresholds, dtype=float)
    if not (len(claims) == d.size == t.size) or not claims:
        raise ValueError(f"verdict_deltas: need one delta and threshold per claim, got {len(claims)} claims, "
                         f"{d.size} deltas, {t.size} thresholds")
    outcomes = list(outcomes) if outcomes is not None else [None] * len(claims)
    ok = np.isfinite(d) & np.isfinite(t) & (t > 0)
    ratio = np.full(d.shape, np.nan)
    ratio[ok] = d[ok] / t[ok]
    fig, ax = _single_ax(ax, (10.0, 1.6 + 0.45 * len(claims)))
    y = np.arange(len(claims))
    ax.axvspan(-1.0, 1.0, color="0.9", zorder=0, label="noise band (|Δ| ≤ threshold)")
    ax.axvline(0, color="0.3", linewidth=0.8)
    for i, (ri, oi) in enumerate(zip(ratio, outcomes, strict=True)):
        if np.isfinite(ri):
            ax.plot(ri, i, "o", color=OUTCOME_COLORS.get(oi, "C0"), markersize=7, markeredgecolor="k",
                    markeredgewidth=0.5, zorder=3)
            ax.annotate(f"Δ {d[i]:+.2f} / ±{t[i]:.2f}", (ri, i), xytext=(0, 7), textcoords="offset points",
                        ha="center", fontsize=7)
        else:
            ax.annotate("n/a", (0, i), ha="center", va="center", fontsize=7, color="0.3")
    span = max(1.0, float(np.nanmax(np.abs(ratio))) if np.isfinite(ratio).any() else 1.0)
    ax.set_xlim(-1.25 * span, 1.25 * span)
    ax.set_ylim(len(claims) - 0.5, -0.7)
    ax.set_yticks(y, claims)
    for name, color in OUTCOME_COLORS.items():
        if name in outcomes:
            ax.plot([], [], "o", color=color, markeredgecolor="k", markeredgewidth=0.5, label=name)
    ax.set(xlabel="measured difference / noise threshold (> 0: the report's direction)", title=title)
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncols=4, fontsize=8, frameon=False)
    return fig


def noise_band(fig: Figure, center: float, half_width: float, label: str = "baseline", ax=None) -> Figure:
    """Shade the noise band ``center ± half_width`` (e.g. a baseline's seed mean ± 2σ√2) behind the
    bars or lines of ``fig`` (its first Axes unless ``ax`` is given), with a dashed line at
    ``center``, and add both to the legend. A bar whose top lies inside the band differs from the
    baseline by less than the noise. Returns ``fig``."""
    ax = ax if ax is not None else fig.axes[0]
    c, hw = float(center), float(half_width)
    if np.isfinite(c) and np.isfinite(hw):
        ax.axhspan(c - hw, c + hw, color="0.6", alpha=0.25, zorder=0, linewidth=0,
                   label=f"noise band: {c:.2f} ± {hw:.2f}")
    if np.isfinite(c):
        ax.axhline(c, color="0.2", linestyle="--", linewidth=1.0, zorder=1, label=f"{label}: {c:.2f}")
    old = ax.get_legend()
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8,
              title=old.get_title().get_text() or None if old is not None else None)
    return fig


# ---- attention / adaptive bins ------------------------------------------------------------------
@_styled
def attention_heatmaps(maps, titles: Sequence[str] | None = None, rgb=None, ncols: int = 4,
                       alpha: float = 0.6, cmap: str = "viridis", shared_scale: bool = False,
                       cbar_label: str = "weight", title: str | None = None,
                       panel_width: float = 3.2) -> Figure:
    """A grid of attention / similarity / probability maps, one panel each.

    ``maps``: K×h×w (numpy or torch) or a dict ``{title: h×w}``. With ``rgb`` (one image) each
    map is stretched over the image and blended (``alpha``). Each panel has its own colour bar,
    or one shared bar with ``shared_scale=True``.
    """
    if isinstance(maps, Mapping):
        titles = list(maps.keys()) if titles is None else titles
        maps = np.stack([_to_numpy(m, "maps").astype(np.float32) for m in maps.values()])
    a = _as_maps(maps, "maps")
    k, h, w = a.shape
    if titles is not None and len(titles) != k:
        raise ValueError(f"attention_heatmaps: {len(titles)} titles for {k} maps")
    background = rgb_to_uint8(rgb)[0] if rgb is not None else None
    H, W = background.shape[:2] if background is not None else (h, w)
    ncols = max(1, min(ncols, k))
    nrows = -(-k // ncols)
    fig, axes = _figure(nrows, ncols, figsize=(panel_width * ncols + (0.8 if shared_scale else 0.6 * ncols),
                                               panel_width * H / W * nrows + 0.5), squeeze=False)
    norm = mcolors.Normalize(float(np.nanmin(a)), float(np.nanmax(a))) if shared_scale else None
    im = None
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= k:
            ax.set_visible(False)
            continue
        if background is not None:
            ax.imshow(background, extent=(0, W, H, 0))
        im = ax.imshow(a[i], cmap=cmap, norm=norm, alpha=alpha if background is not None else 1.0,
                       extent=(0, W, H, 0), interpolation="nearest")
        ax.set_title(str(titles[i]) if titles is not None else f"map {i}")
        if not shared_scale:
            fig.colorbar(im, ax=ax, shrink=0.8)
    if shared_scale and im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), label=cbar_label, shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig


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


# ---- parameter table ----------------------------------------------------------------------------
def parameter_dataframe(table, total: bool = True) -> pd.DataFrame:
    """Parameter counts as a DataFrame (rows = modules, columns = models), with a total row.

    ``table`` is one ``{module: count}`` dict (as :func:`cvaia.params.parameter_table`
    returns), several of them ``{model: {module: count}}``, or a DataFrame. A module a model
    does not have gets 0. Counts are integers.
    """
    if isinstance(table, pd.DataFrame):
        df = table.copy()
    elif isinstance(table, Mapping) and table:
        if all(isinstance(v, Mapping) for v in table.values()):
            modules = list(dict.fromkeys(str(m) for v in table.values() for m in v))  # first-seen order
            df = pd.DataFrame({str(k): pd.Series({str(m): c for m, c in v.items()}, dtype="float64")
                               for k, v in table.items()}).reindex(modules)
        elif all(isinstance(v, (int, np.integer)) or (hasattr(v, "__int__") and not isinstance(v, Mapping))
                 for v in table.values()):
            df = pd.DataFrame({"parameters": pd.Series({str(k): int(v) for k, v in table.items()})})
        else:
            raise ValueError("parameter_table: values must all be counts or all be {module: count} dicts")
    else:
        raise ValueError(f"parameter_table: expected a non-empty dict or DataFrame, got {type(table).__name__}")
    df = df.fillna(0)
    if (df < 0).any().any():
        raise ValueError("parameter_table: negative parameter counts")
    df = df.astype("int64")
    df.index = df.index.map(str)
    df.index.name = "module"
    if total and "total" not in df.index:
        df.loc["total"] = df.sum(axis=0)
    return df


@_styled
def parameter_table(table, title: str = "parameters per module", total: bool = True,
                    millions: bool = True) -> Figure:
    """The parameter counts rendered as a table figure (see :func:`parameter_dataframe`).

    Counts are written with thousands separators and, with ``millions``, also in millions
    (``16,603,476 (16.60 M)``); a module a model lacks shows ``—``; the total row is bold.
    """
    df = parameter_dataframe(table, total=total)

    def fmt(v):
        if v == 0:
            return "—"
        return f"{v:,d}" + (f" ({v / 1e6:.2f} M)" if millions else "")

    cells = [[fmt(int(v)) for v in row] for row in df.to_numpy()]
    fig = _NotebookFigure(figsize=(2.2 + 2.3 * df.shape[1], 0.6 + 0.32 * (df.shape[0] + 1)), layout="constrained")
    ax = fig.add_subplot()
    ax.set_axis_off()
    tab = ax.table(cellText=cells, rowLabels=list(df.index), colLabels=list(df.columns),
                   cellLoc="right", rowLoc="left", bbox=[0.0, 0.0, 1.0, 1.0])
    tab.auto_set_font_size(False)
    tab.set_fontsize(9)
    tab.scale(1.0, 1.3)
    if total and "total" in df.index:
        r = list(df.index).index("total") + 1
        for (row, _col), cell in tab.get_celld().items():
            if row == r:
                cell.set_text_props(fontweight="bold")
    for (row, _col), cell in tab.get_celld().items():
        if row == 0:
            cell.set_text_props(fontweight="bold")
            cell.set_facecolor("0.92")
    ax.set_title(title)
    return fig


# ---- optimiser trajectories ---------------------------------------------------------------------
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


# ---- attention cost -----------------------------------------------------------------------------
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
