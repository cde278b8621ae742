"""Interactive browsers for the workbook (ipywidgets), with a static fallback.

Three widgets:

- :class:`SampleBrowser` — split dropdown, index slider and semseg-overlay toggle over a
  miniscapes-format data set, optionally with a model's predictions;
- :class:`TaskWeightExplorer` — a slider over the finished task-weight runs ``w`` showing their
  metrics and predictions;
- :class:`BinsInspector` — pick a pixel (click on the image with ipympl, or x/y sliders) and
  see the adaptive-bins probability distribution over the bin depths there.

Every widget has ``.widget`` (the ipywidgets container) and ``render()``, which returns a
matplotlib Figure of the current state; ``update()`` re-renders (and refreshes the live
output). The callbacks are ordinary methods, so tests drive a widget by setting its controls'
``value`` and calling ``render()`` — no kernel is needed.

Display: ``show(w)``, ``w.display()`` or ``w`` as the last expression of a cell. In a live
Jupyter frontend the interactive controls appear; otherwise a static figure of the current
state is shown, so executed notebooks (papermill, ``python -m cvaia workbook``, nbconvert)
keep a meaningful image instead of a dead widget. How :func:`static_mode` decides:

1. ``CVAIA_STATIC_WIDGETS=1`` (also ``true``/``yes``) → static; ``=0`` (``false``/``no``) →
   interactive (cvaia's workbook runner sets ``=1`` for the kernels it starts);
2. any ``PAPERMILL_*`` environment variable → static (for set-ups that export one);
3. no IPython, or an IPython without a kernel (plain ``python``, terminal IPython) → static;
4. a kernel with a *known* live frontend → interactive (:func:`live_frontend`): a Jupyter
   widget manager has opened ipywidgets' control comm, the kernel was started by a running
   Jupyter server (JupyterLab, Notebook 7, JupyterHub: its ``jpserver-<pid>.json`` is in the
   Jupyter runtime folder), VS Code or Google Colab;
5. otherwise static: plain ``papermill``, ``jupyter nbconvert --execute``, ``jupyter
   execute`` and nbval start kernels that no frontend will ever show.

A widget built in static mode sends no comm messages at all (its ipywidgets controls live in
the kernel only, on comm's no-op ``DummyComm``): executing a cell that opens widget comms can
block a headless client forever (jupyter/nbclient#312), so batch runs never open any. Should
the same widget later be displayed live, its comms are opened then.
"""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from . import plots
from .plots import base as plot_base
from .plots import depth as plot_depth

__all__ = ["STATIC_ENV", "static_mode", "live_frontend", "show", "overlay", "SampleBrowser",
           "TaskWeightExplorer", "BinsInspector"]

#: Environment variable forcing static (``1``) or interactive (``0``) widget display.
STATIC_ENV = "CVAIA_STATIC_WIDGETS"
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _kernel_shell():
    """The running IPython shell when it has a kernel (a notebook-like session), else None."""
    try:
        from IPython import get_ipython
    except ImportError:  # pragma: no cover - IPython is a dependency
        return None
    ip = get_ipython()
    return ip if ip is not None and getattr(ip, "kernel", None) is not None else None


def _jupyter_server_pid(pid: int) -> bool:
    """Whether process ``pid`` is a running Jupyter server (it wrote its runtime file)."""
    from jupyter_core.paths import jupyter_runtime_dir

    runtime = Path(jupyter_runtime_dir())
    return any((runtime / f"{kind}-{pid}.json").is_file() for kind in ("jpserver", "nbserver"))


def live_frontend() -> str | None:
    """The live frontend this kernel is known to be shown in, or None when none is known.

    Checked, in order: ipywidgets' control comm (opened by the widget manager of a Jupyter
    page), the kernel's launcher being a running Jupyter server (``JPY_PARENT_PID`` names a
    process with a ``jpserver-<pid>.json`` runtime file), VS Code, Google Colab. A kernel
    started by papermill, nbconvert, nbclient or nbval has none of these.
    """
    ip = _kernel_shell()
    if ip is None:
        return None
    widget_cls = getattr(sys.modules.get("ipywidgets"), "Widget", None)
    if getattr(widget_cls, "_control_comm", None) is not None:
        return "a Jupyter widget manager"
    parent = os.environ.get("JPY_PARENT_PID", "").strip()
    if parent.isdigit() and _jupyter_server_pid(int(parent)):
        return "a Jupyter server"
    if "__vsc_ipynb_file__" in getattr(ip, "user_ns", {}):
        return "VS Code"
    if "google.colab" in sys.modules:
        return "Google Colab"
    return None


def static_mode() -> bool:
    """Whether widgets should display a static figure instead of interactive controls.

    See the module docstring for the rules (``CVAIA_STATIC_WIDGETS``, ``PAPERMILL_*``, kernel,
    :func:`live_frontend`).
    """
    value = os.environ.get(STATIC_ENV, "").strip().lower()
    if value in _TRUE:
        return True
    if value in _FALSE:
        return False
    if value:
        raise ValueError(f"{STATIC_ENV}={value!r}: expected 1/true/yes or 0/false/no")
    if any(k.startswith("PAPERMILL") for k in os.environ):
        return True
    return live_frontend() is None


@contextlib.contextmanager
def _kernel_only_comms(enabled: bool = True) -> Iterator[None]:
    """While active (and ``enabled``), new ipywidgets get comm's no-op ``DummyComm``: they work
    in the kernel (values, observers) but send no message to any frontend."""
    if not enabled:
        yield
        return
    import comm

    real = comm.create_comm
    comm.create_comm = comm.DummyComm
    try:
        yield
    finally:
        comm.create_comm = real


def _widget_tree(root) -> list:
    """``root`` and every widget it references (children, layouts, styles), children first."""
    from ipywidgets import Widget

    order: list = []
    seen: set[int] = set()

    def visit(w) -> None:
        seen.add(id(w))
        for name in w.keys:
            value = getattr(w, name, None)
            for v in value if isinstance(value, (list, tuple)) else (value,):
                if isinstance(v, Widget) and id(v) not in seen:
                    visit(v)
        order.append(w)

    visit(root)
    return order


def _open_frontend_comms(root) -> None:
    """Give widgets built by :func:`_kernel_only_comms` real comms (children before parents)."""
    import comm

    for w in _widget_tree(root):
        if isinstance(w.comm, comm.DummyComm):
            w.close()
            w.open()


def _display(obj) -> None:
    """IPython's ``display`` (kept as a module function so tests can capture what is shown)."""
    from IPython.display import display

    display(obj)


def show(obj) -> None:
    """Display a widget (interactive or static, see :func:`static_mode`) or a Figure."""
    if isinstance(obj, Figure):
        _display(obj)
    elif hasattr(obj, "display"):
        obj.display()
    else:
        raise TypeError(f"show: expected a cvaia widget or a Figure, got {type(obj).__name__}")


def overlay(rgb, ids, alpha: float = 0.5) -> np.ndarray:
    """Blend the Cityscapes colours of label map ``ids`` (H×W) over ``rgb`` (uint8 H×W×3).

    Ignored pixels (255) keep the plain image. Returns uint8 H×W×3.
    """
    from .data.classes import IGNORE_INDEX, colorize

    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay: alpha must be in [0, 1], got {alpha}")
    img = plots.rgb_to_uint8(rgb)[0]
    lab = plot_base._as_ids(ids, "ids")[0]
    if lab.shape != img.shape[:2]:
        raise ValueError(f"overlay: label map {lab.shape} and image {img.shape[:2]} differ in size")
    colors = colorize(lab).astype(np.float32)
    blend = (1 - alpha) * img.astype(np.float32) + alpha * colors
    out = np.where((lab != IGNORE_INDEX)[..., None], blend, img.astype(np.float32))
    return np.clip(out.round(), 0, 255).astype(np.uint8)


class _InteractiveFigure:
    """Shared plumbing: controls → ``update()`` → figure in an Output widget when live.

    Every subclass constructor runs under :func:`_kernel_only_comms` when :func:`static_mode`
    holds, so building a widget in a batch run sends no comm message.
    """

    widget = None  # the ipywidgets container, built by subclasses
    _kernel_only = False  # built without frontend comms (static mode at construction)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        init = cls.__dict__.get("__init__")
        if init is None:
            return

        @functools.wraps(init)
        def __init__(self, *args, **kw):
            if getattr(self, "_constructing", False):  # a subclass's super().__init__()
                return init(self, *args, **kw)
            self._constructing = True
            try:
                self._kernel_only = static_mode()
                with _kernel_only_comms(self._kernel_only):
                    init(self, *args, **kw)
            finally:
                self._constructing = False

        cls.__init__ = __init__

    def _build(self, controls: Sequence) -> None:
        import ipywidgets as W

        self._live = False
        self._hold = False
        self.figure: Figure | None = None
        self._output = W.Output()
        self.widget = W.VBox([W.HBox(list(controls)), self._output])
        for c in controls:
            c.observe(self._on_change, names="value")

    def _on_change(self, change=None) -> None:
        if not self._hold:
            self.update()

    def render(self) -> Figure:  # pragma: no cover - abstract
        raise NotImplementedError

    def update(self) -> Figure:
        """Render the current state; in a live notebook also replace the shown figure."""
        fig = self.render()
        self.figure = fig
        if self._live:
            from IPython.display import clear_output

            with self._output:
                clear_output(wait=True)
                _display(fig)
        return fig

    def display(self) -> None:
        """Show the interactive widget in a live frontend, else a static figure of the current state."""
        if static_mode():
            self._live = False
            self.figure = self.render()
            _display(self.figure)
            return
        if self._kernel_only:  # built in static mode, now shown live: open the comms first
            _open_frontend_comms(self.widget)
            self._kernel_only = False
        self._live = True
        _display(self.widget)
        self.update()

    def _ipython_display_(self) -> None:
        self.display()


# ---- sample browser -----------------------------------------------------------------------------
def _open_miniscapes(root, split):
    from .data.miniscapes import MiniscapesSplit

    return MiniscapesSplit(root, split)


class SampleBrowser(_InteractiveFigure):
    """Browse a miniscapes-format data set: split, index, semseg overlay, optional predictions.

    ``dataset_root``: a data set root (``None`` → :func:`cvaia.paths.default_dataset_root`).
    ``predictor``: optional callable ``predictor(rgb_u8 H×W×3) -> {"semseg": ids H×W,
    "depth": metres H×W}`` (either key may be missing); predictions are cached per sample.
    ``open_split(root, split)`` returns an object with ``len()`` and ``read(i)`` (default:
    :class:`cvaia.data.miniscapes.MiniscapesSplit`); ``splits`` limits the dropdown.
    """

    def __init__(self, dataset_root=None, split: str = "val",
                 predictor: Callable | None = None, *, index: int = 0, overlay: bool = False,
                 alpha: float = 0.5, splits: Sequence[str] | None = None,
                 open_split: Callable | None = None):
        import ipywidgets as W

        from .data.miniscapes import SPLITS

        if open_split is None:
            from .paths import resolve_dataset_root

            dataset_root = resolve_dataset_root(dataset_root)
            open_split = _open_miniscapes
            if splits is None:
                splits = [s for s in SPLITS if (dataset_root / s / "rgb").is_dir()] or [split]
        if predictor is not None and not callable(predictor):
            raise TypeError(f"SampleBrowser: predictor must be callable, got {type(predictor).__name__}")
        self.root = dataset_root
        self.predictor = predictor
        self.alpha = float(alpha)
        self._open = open_split
        self._datasets: dict = {}
        self._cache: dict = {}
        self._pred_cache: dict = {}
        if splits is None:
            splits = [s for s in SPLITS if s == split or self._try_open(s)]
        splits = list(splits)
        if split not in splits:
            raise ValueError(f"SampleBrowser: split {split!r} not available under {self.root}; "
                             f"available: {splits}")
        n = len(self.dataset(split))
        if n == 0:
            raise ValueError(f"SampleBrowser: split {split!r} under {self.root} is empty")
        self.split_dropdown = W.Dropdown(options=splits, value=split, description="split")
        self.index_slider = W.IntSlider(value=min(max(int(index), 0), n - 1), min=0, max=n - 1,
                                        description="index", continuous_update=False)
        self.overlay_toggle = W.Checkbox(value=bool(overlay), description="semseg overlay")
        controls = [self.split_dropdown, self.index_slider, self.overlay_toggle]
        self.prediction_toggle = None
        if predictor is not None:
            self.prediction_toggle = W.Checkbox(value=True, description="predictions")
            controls.append(self.prediction_toggle)
        # Registered before _build's observers, so the slider range fits the new split before
        # the figure is re-rendered.
        self._hold = False
        self.split_dropdown.observe(self._on_split, names="value")
        self._build(controls)

    def _try_open(self, split) -> bool:
        try:
            self.dataset(split)
            return True
        except Exception:
            return False

    def dataset(self, split: str):
        """The (cached) reader of ``split``."""
        if split not in self._datasets:
            self._datasets[split] = self._open(self.root, split)
        return self._datasets[split]

    # -- state --
    @property
    def split(self) -> str:
        return self.split_dropdown.value

    @property
    def index(self) -> int:
        return int(self.index_slider.value)

    def _on_split(self, change) -> None:
        """New split: adapt the index slider's range (clamping the index) before re-rendering."""
        n = len(self.dataset(change["new"]))
        self._hold = True
        try:
            self.index_slider.max = max(n - 1, 0)
            self.index_slider.value = min(self.index_slider.value, n - 1)
        finally:
            self._hold = False

    def sample(self) -> dict:
        """The current sample (dict rgb / semseg / depth as the reader returns it)."""
        key = (self.split, self.index)
        if key not in self._cache:
            self._cache.clear()  # one sample is enough; images can be large
            self._cache[key] = self.dataset(self.split).read(self.index)
        return self._cache[key]

    def prediction(self) -> dict:
        """The predictor's output for the current sample (``{}`` without predictor)."""
        if self.predictor is None:
            return {}
        key = (self.split, self.index)
        if key not in self._pred_cache:
            rgb = self.sample()["rgb"]
            out = self.predictor(rgb)
            if not isinstance(out, Mapping):
                raise TypeError(f"SampleBrowser: predictor must return a dict with 'semseg' and/or "
                                f"'depth', got {type(out).__name__}")
            unknown = set(out) - {"semseg", "depth"}
            if unknown:
                raise ValueError(f"SampleBrowser: predictor returned unknown keys {sorted(unknown)}; "
                                 f"expected 'semseg' and/or 'depth'")
            pred = {}
            for k, v in out.items():
                a = plot_base._to_numpy(v, f"predictor {k}")
                a = a.reshape(a.shape[-2:]) if a.ndim > 2 and np.prod(a.shape[:-2]) == 1 else a
                if a.shape != rgb.shape[:2]:
                    raise ValueError(f"SampleBrowser: predictor {k!r} has shape {a.shape}, expected "
                                     f"{rgb.shape[:2]} (the image's H×W)")
                pred[k] = a
            self._pred_cache = {key: pred}
        return self._pred_cache[key]

    def render(self) -> Figure:
        """Figure of the current sample: rgb (with overlay), GT semseg/depth, predictions."""
        s = self.sample()
        show_pred = self.prediction_toggle is not None and self.prediction_toggle.value
        pred = self.prediction() if show_pred else {}
        rgb = s["rgb"]
        labels = s.get("semseg", pred.get("semseg"))
        note = ""
        if self.overlay_toggle.value and labels is not None:
            rgb = overlay(rgb, labels, self.alpha)
            note = " — semseg overlay" + ("" if "semseg" in s else " (prediction)")
        return plots.prediction_grid(
            rgb, semseg_gt=s.get("semseg"), semseg_pred=pred.get("semseg"),
            depth_gt=s.get("depth"), depth_pred=pred.get("depth"),
            title=f"{self.split} sample {self.index} of {len(self.dataset(self.split))}{note}")


# ---- task-weight explorer -----------------------------------------------------------------------
class TaskWeightExplorer(_InteractiveFigure):
    """A slider over finished task-weight runs ``L = (1−w)·CE + w·SILog``.

    ``results``: a DataFrame or a list of dicts with a ``weight`` column (default ``"w"``) and
    metric columns (default: those of ``miou``, ``si_log_rmse``, ``score`` present, else all
    numeric columns). ``predictions``: optional ``{w: {"rgb": ..., "semseg": ..., "depth": ...}}``
    for one sample (any of the keys; the rgb as :func:`cvaia.plots.rgb_to_uint8` accepts).
    The figure shows each metric against ``w`` with the selected run marked, and the selected
    run's predictions (depth on one colour scale shared by all runs).
    """

    def __init__(self, results, predictions: Mapping | None = None, *, weight: str = "w",
                 metrics: Sequence[str] | None = None, value=None):
        import ipywidgets as W

        df = results if isinstance(results, pd.DataFrame) else pd.DataFrame(list(results))
        if weight not in df.columns:
            raise ValueError(f"TaskWeightExplorer: results have no column {weight!r} "
                             f"(columns: {list(df.columns)})")
        if df.empty:
            raise ValueError("TaskWeightExplorer: no results")
        if df[weight].duplicated().any():
            raise ValueError(f"TaskWeightExplorer: several results for the same {weight}: "
                             f"{sorted(df.loc[df[weight].duplicated(), weight].unique())}")
        if metrics is None:
            metrics = [m for m in ("miou", "si_log_rmse", "score") if m in df.columns] or \
                [c for c in df.columns if c != weight and pd.api.types.is_numeric_dtype(df[c])]
        missing = [m for m in metrics if m not in df.columns]
        if missing or not metrics:
            raise ValueError(f"TaskWeightExplorer: metric columns {missing or metrics} not in the "
                             f"results (columns: {list(df.columns)})")
        self.weight = weight
        self.metrics = list(metrics)
        self.results = df.sort_values(weight).reset_index(drop=True)
        self.predictions = dict(predictions or {})
        ws = list(self.results[weight])
        for w in self.predictions:
            if not any(np.isclose(float(w), float(x)) for x in ws):
                raise ValueError(f"TaskWeightExplorer: predictions for {weight}={w} but no such result")
        depths = [plot_base._as_maps(p["depth"], "depth")[0] for p in self.predictions.values() if "depth" in p]
        self._depth_norm = plot_depth._depth_norm(depths) if depths else None
        if value is None:
            value = ws[len(ws) // 2]
        self.slider = W.SelectionSlider(options=[(plot_base._fmt_value(w), w) for w in ws],
                                        value=self._match(value), description=weight,
                                        continuous_update=False)
        self._build([self.slider])

    def _match(self, w):
        for x in self.results[self.weight]:
            if np.isclose(float(x), float(w)):
                return x
        raise ValueError(f"TaskWeightExplorer: no run with {self.weight}={w} "
                         f"(have {list(self.results[self.weight])})")

    @property
    def selected(self):
        """The selected ``w``."""
        return self.slider.value

    def select(self, w) -> Figure:
        """Select the run with weight ``w`` (closest match) and re-render."""
        self.slider.value = self._match(w)  # triggers update() via the observer if it changed
        return self.figure if self.figure is not None else self.update()

    def row(self) -> pd.Series:
        """The selected run's results row."""
        return self.results.loc[self.results[self.weight] == self.selected].iloc[0]

    def _pred(self):
        for w, p in self.predictions.items():
            if np.isclose(float(w), float(self.selected)):
                return p
        return None

    def render(self) -> Figure:
        """Metrics against ``w`` with the selected run marked, and its predictions."""
        from .data.classes import colorize

        pred = self._pred()
        keys = [k for k in ("rgb", "semseg", "depth") if pred is not None and k in pred]
        ncols = max(len(self.metrics), len(keys), 1)
        with matplotlib.rc_context(plots.STYLE):
            fig = plot_base._NotebookFigure(figsize=(3.6 * ncols, 3.2 + (2.6 if keys else 0)),
                                            layout="constrained")
            gs = fig.add_gridspec(2 if keys else 1, ncols)
            w = self.results[self.weight].to_numpy(float)
            row = self.row()
            for j, m in enumerate(self.metrics):
                ax = fig.add_subplot(gs[0, j])
                ax.plot(w, self.results[m].to_numpy(float), "o-", color=f"C{j}")
                ax.plot([float(self.selected)], [float(row[m])], "o", markersize=12,
                        markerfacecolor="none", markeredgecolor="k", markeredgewidth=2)
                ax.axvline(float(self.selected), color="0.5", linestyle=":")
                ax.set(xlabel=f"task weight {self.weight}", ylabel=m,
                       title=f"{m} = {float(row[m]):.2f}")
            titles = {"rgb": "RGB", "semseg": "semseg prediction", "depth": "depth prediction"}
            for j, k in enumerate(keys):
                ax = fig.add_subplot(gs[1, j])
                if k == "rgb":
                    ax.imshow(plots.rgb_to_uint8(pred["rgb"])[0])
                elif k == "semseg":
                    ax.imshow(colorize(plot_base._as_ids(pred["semseg"], "semseg")[0]))
                else:
                    im = plot_depth._show_depth(ax, plot_base._as_maps(pred["depth"], "depth")[0],
                                                self._depth_norm, plots.DEPTH_CMAP)
                    plot_depth._depth_colorbar(fig, im, ax, shrink=0.85)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_title(titles[k])
            summary = ", ".join(f"{m} {float(row[m]):.2f}" for m in self.metrics)
            fig.suptitle(f"{self.weight} = {plot_base._fmt_value(self.selected)}: {summary}"
                         + ("" if keys or not self.predictions else "  (no predictions stored)"))
        return fig


# ---- adaptive-bins inspector --------------------------------------------------------------------
def _ipympl_available() -> bool:
    """Whether ipympl (the interactive matplotlib widget, package and JupyterLab extension) is installed."""
    from importlib.util import find_spec

    return find_spec("ipympl") is not None


def _click_canvas(fig: Figure, on_click: Callable):
    """Put ``fig`` on an ipympl canvas widget whose mouse clicks call ``on_click(event)``."""
    from ipympl.backend_nbagg import Canvas, FigureManager

    canvas = Canvas(fig)
    # The manager routes the frontend's mouse messages to matplotlib events on the figure.
    manager = FigureManager(canvas, 0)
    manager.set_window_title("click the image or a bin map to pick a pixel")
    canvas.toolbar_visible = False  # pan/zoom would fight with picking
    canvas.resizable = False
    canvas.mpl_connect("button_press_event", on_click)
    return canvas


class BinsInspector(_InteractiveFigure):
    """Pick a pixel and see its adaptive-bins distribution.

    ``rgb``: the image (uint8 H×W×3 or a normalised 3×H×W tensor); ``bin_probs``: N×h×w
    per-cell bin probabilities (h×w may be coarser than the image; the pixel is mapped to its
    cell); ``bin_depths``: the N bin centres in metres; ``depth``: optional H×W predicted depth;
    ``gt``: optional H×W ground-truth depth (0 = invalid), marked in the distribution.

    The x/y sliders work everywhere. ``click``: in a live frontend, also pick the pixel by
    clicking on the image (or on a bin's probability map), drawing the figure on an ipympl
    canvas; ``None`` (default) → when ipympl is installed (it ships its JupyterLab extension),
    ``False`` → sliders only (a PNG figure, e.g. for a frontend without the ipympl extension).
    """

    def __init__(self, rgb, bin_probs, bin_depths, depth=None, *, pixel: tuple[int, int] | None = None,
                 n_bins_shown: int = 3, click: bool | None = None, gt=None):
        import ipywidgets as W

        self.rgb = plots.rgb_to_uint8(rgb)[0]
        self.probs, self.bin_depths = plot_depth._bins_inputs(bin_probs, bin_depths)
        self.depth = plot_base._as_maps(depth, "depth")[0] if depth is not None else None
        H, W_ = self.rgb.shape[:2]
        if self.depth is not None and self.depth.shape != (H, W_):
            raise ValueError(f"BinsInspector: depth {self.depth.shape} and rgb {(H, W_)} differ in size")
        self.gt = plot_base._as_maps(gt, "gt")[0] if gt is not None else None
        if self.gt is not None and self.gt.shape != (H, W_):
            raise ValueError(f"BinsInspector: gt {self.gt.shape} and rgb {(H, W_)} differ in size")
        self.n_bins_shown = int(n_bins_shown)
        y, x = pixel if pixel is not None else (H // 2, W_ // 2)
        if not (0 <= y < H and 0 <= x < W_):
            raise ValueError(f"BinsInspector: pixel (y={y}, x={x}) outside the {H}×{W_} image")
        if click and not _ipympl_available():
            raise ImportError("BinsInspector(click=True) needs ipympl (pip install ipympl); "
                              "use click=False for the x/y sliders only")
        self.click = _ipympl_available() if click is None else bool(click)
        self.canvas = None  # the ipympl canvas shown in click mode
        self.x_slider = W.IntSlider(value=int(x), min=0, max=W_ - 1, description="x",
                                    continuous_update=False)
        self.y_slider = W.IntSlider(value=int(y), min=0, max=H - 1, description="y",
                                    continuous_update=False)
        self._build([self.x_slider, self.y_slider])

    @property
    def pixel(self) -> tuple[int, int]:
        """The selected pixel ``(y, x)`` in image coordinates."""
        return int(self.y_slider.value), int(self.x_slider.value)

    def pick(self, y: int, x: int) -> Figure:
        """Select pixel ``(y, x)`` (image coordinates) and re-render once."""
        H, W_ = self.rgb.shape[:2]
        if not (0 <= y < H and 0 <= x < W_):
            raise ValueError(f"BinsInspector.pick: pixel (y={y}, x={x}) outside the {H}×{W_} image")
        self._hold = True
        try:
            self.y_slider.value, self.x_slider.value = int(y), int(x)
        finally:
            self._hold = False
        return self.update()

    def event_pixel(self, event) -> tuple[int, int] | None:
        """The image pixel ``(y, x)`` under a matplotlib mouse event, or ``None``.

        Only left clicks on the image or on a bin's probability map count (both span the
        whole image, whatever the probability grid's resolution); anything else → ``None``.
        """
        from matplotlib.backend_bases import MouseButton

        ax = getattr(event, "inaxes", None)
        if ax is None or event.xdata is None or event.ydata is None or \
                getattr(event, "button", MouseButton.LEFT) != MouseButton.LEFT:
            return None
        H, W_ = self.rgb.shape[:2]
        for im in ax.get_images():
            left, right, bottom, top = im.get_extent()
            if not np.isclose(abs(right - left), W_) or not np.isclose(abs(bottom - top), H):
                continue  # not an image-sized map
            x = int(np.floor((event.xdata - left) / (right - left) * W_))
            y = int(np.floor((event.ydata - top) / (bottom - top) * H))
            return min(max(y, 0), H - 1), min(max(x, 0), W_ - 1)
        return None

    def _on_click(self, event) -> None:
        """``button_press_event`` handler of the click canvas: pick the pixel under the mouse."""
        pixel = self.event_pixel(event)
        if pixel is not None:
            self.pick(*pixel)

    def update(self) -> Figure:
        """Render the current state; live with ``click``: on a fresh clickable ipympl canvas."""
        if not (self._live and self.click):
            return super().update()
        from IPython.display import clear_output

        fig = self.render()
        self.figure = fig
        old, self.canvas = self.canvas, _click_canvas(fig, self._on_click)
        with self._output:
            clear_output(wait=True)
            _display(self.canvas)
        if old is not None:
            old.close()  # its figure is gone from the page; free the widget model
        return fig

    def distribution(self) -> dict:
        """The selected pixel's distribution (see :func:`cvaia.plots.pixel_distribution`)."""
        return plots.pixel_distribution(self.probs, self.bin_depths, self.pixel,
                                        image_size=self.rgb.shape[:2])

    def render(self) -> Figure:
        """Image with the pixel marked, top bins' probability maps and the pixel's distribution."""
        return plots.bin_probabilities(self.probs, self.bin_depths, self.pixel, rgb=self.rgb,
                                       depth=self.depth, n_bins_shown=self.n_bins_shown, gt=self.gt)
