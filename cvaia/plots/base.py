"""What every figure of :mod:`cvaia.plots` shares: the house style, pyplot-free figures that
display themselves in a notebook, :func:`save` (the one export of a figure), and the
conversion of inputs (numpy arrays or torch tensors on any device) to what matplotlib draws.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ..files import atomic_open

# ---- style ---------------------------------------------------------------------------------------
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



# ---- export --------------------------------------------------------------------------------------
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
        from ..paths import figures_dir

        directory = figures_dir()
    directory = Path(directory).expanduser()
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"plots.save: figure directory {directory} is a file")
    directory.mkdir(parents=True, exist_ok=True)

    written = []
    for fmt in ("png", "pdf"):
        target = directory / f"{name}.{fmt}"
        # atomically, with the permissions the umask gives (a bare mkstemp made them 0600)
        with atomic_open(target, "wb") as fh:
            # Fixed metadata keeps repeated exports of the same figure byte-identical.
            metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
            fig.savefig(fh, format=fmt, dpi=FIGURE_DPI, bbox_inches="tight",
                        facecolor="white", metadata=metadata)
        written.append(target)
    return written



# ---- input conversion ----------------------------------------------------------------------------
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
        from ..data.encoding import IMAGENET_MEAN, IMAGENET_STD

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



def _cmap(name, bad=BAD_COLOR):
    cmap = matplotlib.colormaps[name] if isinstance(name, str) else name
    return cmap.with_extremes(bad=bad)



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



def _check_columns(df, cols, func):
    if not isinstance(df, pd.DataFrame):
        df = pd.DataFrame(df)
    missing = [c for c in cols if c is not None and c not in df.columns]
    if missing:
        raise ValueError(f"{func}: columns {missing} not in the table (columns: {list(df.columns)})")
    return df
