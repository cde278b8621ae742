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

The figures live in modules by kind; every public name is available here as ``plots.<name>``:

- :mod:`~cvaia.plots.base`: the house style, :func:`new_figure`, :func:`save`, input conversion
  (:func:`rgb_to_uint8`).
- :mod:`~cvaia.plots.curves`: training curves, attention cost curves, optimiser trajectories.
- :mod:`~cvaia.plots.charts`: bars, sweep charts and heat maps, verdict charts, parameter tables.
- :mod:`~cvaia.plots.segmentation`: confusion matrices and prediction grids (segmentation and
  depth maps side by side).
- :mod:`~cvaia.plots.depth`: depth difference maps, adaptive-bin distributions.
- :mod:`~cvaia.plots.attention`: attention heat maps.
"""

from __future__ import annotations

from .attention import attention_heatmaps
from .base import BAD_COLOR, DEPTH_CMAP, FIGURE_DPI, STYLE, new_figure, rgb_to_uint8, save
from .charts import (
    OUTCOME_COLORS,
    bars,
    heatmap,
    metric_vs_param,
    noise_band,
    parameter_dataframe,
    parameter_table,
    verdict_deltas,
)
from .curves import (
    SURFACES,
    cost_curves,
    ema,
    loss_curves,
    optimize_2d,
    smooth_values,
    trajectories_2d,
)
from .depth import bin_probabilities, depth_difference, pixel_distribution
from .segmentation import (
    class_changes,
    confusion_difference,
    confusion_matrix,
    normalize_confusion,
    prediction_comparison,
    prediction_grid,
)

__all__ = [
    "STYLE", "BAD_COLOR", "FIGURE_DPI",
    "save", "rgb_to_uint8", "ema", "smooth_values", "normalize_confusion", "class_changes",
    "pixel_distribution", "parameter_dataframe", "optimize_2d", "SURFACES",
    "loss_curves", "metric_vs_param", "heatmap", "bars", "confusion_matrix",
    "confusion_difference", "depth_difference", "prediction_grid", "prediction_comparison",
    "attention_heatmaps", "bin_probabilities", "parameter_table", "trajectories_2d",
    "cost_curves", "new_figure", "DEPTH_CMAP", "OUTCOME_COLORS", "verdict_deltas", "noise_band",
]
