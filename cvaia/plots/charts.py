"""Bars and verdict charts: a metric against a swept parameter, sweep heat maps, bar charts
with reference lines, the verdicts' measured deltas against their thresholds and noise
bands, and the parameters-per-module table.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from .base import _check_columns, _fmt_value, _NotebookFigure, _single_ax, _styled


# ---- sweeps --------------------------------------------------------------------------------------
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



# ---- parameter table -----------------------------------------------------------------------------
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
