"""cvaia.plots: every figure function on tiny inputs, checked for real properties."""

from __future__ import annotations

import matplotlib.colors as mcolors
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from cvaia import plots
from cvaia.data.classes import class_names, colorize
from cvaia.data.encoding import normalize_rgb
from cvaia.metrics import per_class_iou


def _images(ax):
    return ax.get_images()


def _main_axes(fig):
    """Axes that are not colour bars."""
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


def _colorbars(fig):
    return [a for a in fig.axes if a.get_label() == "<colorbar>"]


# ---- save ---------------------------------------------------------------------------------------
def test_save_writes_png_and_pdf_atomically(isolated_dirs):
    from PIL import Image

    fig = plots.bars({"a": 1.0, "b": 2.0}, "time [s]")
    paths = plots.save(fig, "p1_unit-test")
    figs = isolated_dirs["figures"]
    assert paths == [figs / "p1_unit-test.png", figs / "p1_unit-test.pdf"]
    assert paths[0].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths[1].read_bytes()[:5] == b"%PDF-"
    with Image.open(paths[0]) as im:
        assert im.info["dpi"][0] == pytest.approx(plots.FIGURE_DPI, abs=0.5)
        assert im.getpixel((0, 0))[:3] == (255, 255, 255)  # white background
    # regenerating the same name overwrites it and leaves no temporary files behind
    first = paths[1].read_bytes()
    plots.save(fig, "p1_unit-test")
    assert paths[1].read_bytes() == first  # deterministic PDF (no creation date)
    assert sorted(p.name for p in figs.iterdir()) == ["p1_unit-test.pdf", "p1_unit-test.png"]


@pytest.mark.parametrize("name", ["", "../escape", "a/b", "fig.png", "with space", ".hidden", "_x/", "é"])
def test_save_rejects_bad_names(tmp_path, name):
    fig = plots.bars({"a": 1.0}, "x")
    with pytest.raises(ValueError, match="safe identifier"):
        plots.save(fig, name, tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_save_rejects_non_figures(tmp_path):
    with pytest.raises(TypeError, match="Figure"):
        plots.save("not a figure", "x", tmp_path)


def test_figures_display_once_in_notebooks():
    """Returned figures are pyplot-free and carry their own PNG representation."""
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    fig = plots.bars({"a": 1.0}, "x")
    assert isinstance(fig, Figure)
    assert plt.get_fignums() == before  # nothing registered with pyplot → no second inline copy
    assert fig._repr_png_()[:4] == b"\x89PNG"


# ---- conversions --------------------------------------------------------------------------------
def test_rgb_to_uint8_layouts_and_unnormalisation():
    rng = np.random.default_rng(0)
    u8 = rng.integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    assert np.array_equal(plots.rgb_to_uint8(u8), u8)
    assert np.array_equal(plots.rgb_to_uint8(u8[0]), u8[:1])
    chw = torch.from_numpy(u8).permute(0, 3, 1, 2)
    assert np.array_equal(plots.rgb_to_uint8(chw), u8)
    normalised = normalize_rgb(chw)  # float32 model input
    assert np.array_equal(plots.rgb_to_uint8(normalised), u8)
    assert np.array_equal(plots.rgb_to_uint8(u8.astype(np.float32) / 255, normalized=False), u8)
    with pytest.raises(ValueError, match="rgb"):
        plots.rgb_to_uint8(np.zeros((4, 4)))


def test_ema_matches_pandas_and_rolling_mean():
    x = np.random.default_rng(1).normal(size=40)
    ref = pd.Series(x).ewm(alpha=1 - 0.8, adjust=True).mean().to_numpy()
    np.testing.assert_allclose(plots.ema(x, 0.8), ref, rtol=1e-12)
    np.testing.assert_allclose(plots.ema(x, 0.0), x)
    np.testing.assert_allclose(plots.smooth_values(x, window=5),
                               pd.Series(x).rolling(5, min_periods=1).mean().to_numpy())
    with pytest.raises(ValueError, match="EMA"):
        plots.ema(x, 1.0)


# ---- curves and sweeps --------------------------------------------------------------------------
def test_loss_curves_colour_scale_and_smoothing():
    rng = np.random.default_rng(2)
    hist = {
        "lr=1e-2": pd.DataFrame({"step": np.arange(20), "loss": rng.random(20)}),
        "lr=1e-3": (np.arange(15), rng.random(15)),
        "lr=1e-4": torch.from_numpy(rng.random(10)),
    }
    lrs = {"lr=1e-2": 1e-2, "lr=1e-3": 1e-3, "lr=1e-4": 1e-4}
    fig = plots.loss_curves(hist, smooth=0.6, color_by=lrs, log_color=True, color_label="learning rate",
                            title="SGD")
    ax = _main_axes(fig)[0]
    cbars = _colorbars(fig)
    assert len(cbars) == 1 and cbars[0].get_ylabel() == "learning rate"
    assert ax.get_title() == "SGD" and ax.get_xlabel() == "step"
    lines = ax.get_lines()
    assert len(lines) == 6  # raw + smoothed per run
    smoothed = {ln.get_label(): ln for ln in lines if not ln.get_label().startswith("_")}
    np.testing.assert_allclose(smoothed["lr=1e-2"].get_ydata(), plots.ema(hist["lr=1e-2"]["loss"], 0.6))
    # colours follow the log scale: the lowest lr gets the colour map's low end
    import matplotlib

    expected = matplotlib.colormaps["viridis"](0.0)
    assert mcolors.to_rgba(smoothed["lr=1e-4"].get_color()) == pytest.approx(expected)
    assert ax.get_yscale() == "linear"
    with pytest.raises(ValueError, match="no column 'acc'"):
        plots.loss_curves({"a": pd.DataFrame({"step": [0], "loss": [1.0]})}, y="acc")


def test_loss_curves_diverged_and_unfinished_runs():
    diverged = pd.DataFrame({"step": np.arange(6), "loss": [2.0, 5.0, 1e3, 1e5, np.nan, np.nan]})
    fig = plots.loss_curves({"lr=0.1": diverged, "lr=1e-4": (np.arange(6), np.full(6, 1.5)),
                             "running": pd.DataFrame()}, smooth=0.0)
    ax = fig.axes[0]
    assert ax.get_yscale() == "log"  # losses spanning decades
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["lr=0.1", "lr=1e-4", "running (no data)"]


def test_metric_vs_param_bars_and_lines():
    df = pd.DataFrame({"lr": [1e-1, 1e-4, 1e-6] * 2, "optimizer": ["sgd"] * 3 + ["adam"] * 3,
                       "miou": [10.0, 20.0, 5.0, 30.0, 40.9, 12.0]})
    fig = plots.metric_vs_param(df, "lr", "miou", hue="optimizer", reference=40.89, title="one epoch")
    ax = _main_axes(fig)[0]
    heights = sorted(p.get_height() for p in ax.patches if p.get_height() > 0)
    assert heights == sorted(df["miou"])
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1e-06", "1e-04", "0.1"]
    assert any(ln.get_linestyle() == "--" and ln.get_ydata()[0] == pytest.approx(40.89) for ln in ax.get_lines())
    assert ax.get_title() == "one epoch"

    fig = plots.metric_vs_param(df, "lr", "miou", hue="optimizer", kind="line")
    ax = _main_axes(fig)[0]
    assert ax.get_xscale() == "log"
    assert len([ln for ln in ax.get_lines() if len(ln.get_xdata()) == 3]) == 2
    with pytest.raises(ValueError, match="'acc'"):
        plots.metric_vs_param(df, "lr", "acc")
    with pytest.raises(ValueError, match="kind"):
        plots.metric_vs_param(df, "lr", "miou", kind="pie")


def test_heatmap_pivots_values():
    df = pd.DataFrame({"batch": [4, 4, 8, 8, 8], "epochs": [1, 2, 1, 2, 2],
                       "miou": [10.0, 20.0, 30.0, 40.0, 44.0]})
    fig = plots.heatmap(df, "batch", "epochs", "miou", fmt=".1f")
    ax = _main_axes(fig)[0]
    mesh = ax.collections[0]
    np.testing.assert_allclose(np.asarray(mesh.get_array()).reshape(2, 2), [[10, 20], [30, 42]])
    assert sorted(t.get_text() for t in ax.texts) == ["10.0", "20.0", "30.0", "42.0"]
    assert len(_colorbars(fig)) == 1
    assert ax.get_xlabel() == "epochs" and ax.get_ylabel() == "batch"


def test_bars_single_and_grouped():
    fig = plots.bars({"joint": 4.77, "branched": 8.95}, "training time [h]", fmt="{:.2f}")
    ax = fig.axes[0]
    assert [p.get_height() for p in ax.patches] == pytest.approx([4.77, 8.95])
    assert sorted(t.get_text() for t in ax.texts) == ["4.77", "8.95"]
    assert ax.get_ylabel() == "training time [h]"
    df = pd.DataFrame({"time [h]": [4.8, 9.0], "power [W]": [207.0, 130.0]}, index=["joint", "branched"])
    fig = plots.bars(df, "value")
    assert len(fig.axes[0].patches) == 4
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == ["joint", "branched"]


# ---- confusion matrices -------------------------------------------------------------------------
def _cm(seed=3):
    cm = np.random.default_rng(seed).integers(0, 50, (19, 19)).astype(np.int64)
    cm[4] = 0  # a class without ground-truth pixels
    return cm


def test_normalize_confusion_rows_sum_to_one_and_empty_rows_are_zero():
    cm = _cm()
    n = plots.normalize_confusion(torch.from_numpy(cm))
    assert not np.isnan(n).any()
    sums = n.sum(axis=1)
    np.testing.assert_allclose(np.delete(sums, 4), 1.0)
    assert sums[4] == 0.0


def test_confusion_matrix_row_normalised_heatmap():
    cm = _cm()
    fig = plots.confusion_matrix(cm, normalize="row")
    ax = _main_axes(fig)[0]
    data = np.asarray(ax.collections[0].get_array()).reshape(19, 19)
    np.testing.assert_allclose(data, plots.normalize_confusion(cm))
    assert [t.get_text() for t in ax.get_yticklabels()] == list(class_names())
    assert [t.get_text() for t in ax.get_xticklabels()] == list(class_names())
    assert ax.get_xlabel() == "predicted class" and ax.get_ylabel() == "true class"
    assert ax.collections[0].get_clim() == (0, 1)
    assert len(_colorbars(fig)) == 1

    fig = plots.confusion_matrix(cm[:3, :3], class_names=["a", "b", "c"])
    ax = _main_axes(fig)[0]
    np.testing.assert_allclose(np.asarray(ax.collections[0].get_array()).reshape(3, 3), cm[:3, :3])
    with pytest.raises(ValueError, match="2 class names"):
        plots.confusion_matrix(cm[:3, :3], class_names=["a", "b"])
    with pytest.raises(ValueError, match="square"):
        plots.confusion_matrix(np.zeros((3, 4)))


def test_confusion_difference_signs_gains_and_new_confusions_and_marks_iou():
    a = np.array([[8, 2, 0, 0], [5, 5, 0, 0], [0, 0, 10, 0], [0, 0, 0, 0]])
    b = np.array([[9, 1, 0, 0], [2, 8, 0, 0], [0, 1, 9, 0], [0, 0, 0, 0]])
    names = ["road", "car", "sky", "train"]
    fig = plots.confusion_difference(a, b, class_names=names, labels=("joint", "branched"))
    ax = _main_axes(fig)[0]
    mesh = ax.collections[0]
    shown = np.asarray(mesh.get_array()).reshape(4, 4)
    diff = plots.normalize_confusion(b) - plots.normalize_confusion(a)
    np.testing.assert_allclose(np.diag(shown), np.diag(diff))  # diagonal: + = gain
    off = ~np.eye(4, dtype=bool)
    np.testing.assert_allclose(shown[off], -diff[off])  # off-diagonal: − = a new confusion
    assert shown[2, 1] == pytest.approx(-0.1)  # sky → car is new: red
    assert shown[1, 0] == pytest.approx(0.3)  # car → road went away: blue
    lo, hi = mesh.get_clim()
    assert lo == pytest.approx(-hi) and hi == pytest.approx(np.abs(diff).max())
    # row labels: IoU change (the grader's metric), not recall
    iou_change = per_class_iou(b) - per_class_iou(a)
    labels = {t.get_text().split()[0]: t for t in ax.get_yticklabels()}
    assert labels["car"].get_text() == f"car  {iou_change[1]:+.1f} ↑" and labels["car"].get_color() == "tab:green"
    assert "↓" in labels["sky"].get_text() and labels["sky"].get_color() == "tab:red"
    assert labels["train"].get_text() == "train  absent" and labels["train"].get_color() == "0.55"
    assert "IoU better: car, road" in ax.get_title()
    # marks from the caller (e.g. a noise-aware verdict) decide the arrows and the title
    fig = plots.confusion_difference(a, b, class_names=names, marks={"car": "", "road": "better", "sky": ""})
    ax = _main_axes(fig)[0]
    assert "IoU better: road" in ax.get_title() and "car" not in ax.get_title().split("\n")[1]
    labels = {t.get_text().split()[0]: t for t in ax.get_yticklabels()}
    assert "↑" not in labels["car"].get_text() and labels["car"].get_color() == "black"
    # a gain the verdicts did not mark is named as within the noise, never "no class better"
    fig = plots.confusion_difference(a, b, class_names=names, marks={"car": "", "road": "", "sky": ""})
    sub = _main_axes(fig)[0].get_title().split("\n")[1]
    assert sub == f"no IoU gain beyond the noise (largest: car {iou_change[1]:+.1f})", sub
    with pytest.raises(ValueError, match="unknown classes"):
        plots.confusion_difference(a, b, class_names=names, marks={"bus": "better"})
    changes = plots.class_changes(a[:3, :3], b[:3, :3], names[:3])
    assert list(changes["class"]) == ["car", "road", "sky"]
    assert changes["change"].iloc[0] == pytest.approx(0.3)


# ---- depth --------------------------------------------------------------------------------------
def test_depth_difference_masks_invalid_and_is_centred():
    gt = np.full((6, 8), 10.0, dtype=np.float32)
    gt[:2] = 0.0  # sky: no ground truth
    pred = gt + np.linspace(-2, 2, 8, dtype=np.float32)[None]
    fig = plots.depth_difference(torch.from_numpy(pred)[None], gt)
    ax = _main_axes(fig)[0]
    arr = ax.get_images()[0].get_array()
    assert arr.mask[:2].all() and not arr.mask[2:].any()
    np.testing.assert_allclose(arr[2:].filled(np.nan), (pred - gt)[2:], rtol=1e-6)
    lo, hi = ax.get_images()[0].get_clim()
    assert lo == pytest.approx(-hi)
    assert _colorbars(fig)[0].get_ylabel() == "prediction − ground truth [m]"

    fig = plots.depth_difference(pred, gt, mode="log_ratio", vmax=0.5)
    img = _main_axes(fig)[0].get_images()[0]
    np.testing.assert_allclose(img.get_array()[3].filled(np.nan), np.log(pred[3] / gt[3]), rtol=1e-5)
    assert img.get_clim() == (-0.5, 0.5)
    assert "log" in _colorbars(fig)[0].get_ylabel()
    with pytest.raises(ValueError, match="mode"):
        plots.depth_difference(pred, gt, mode="ratio")


def test_prediction_grid_columns_shared_depth_scale_and_masks():
    rng = np.random.default_rng(4)
    u8 = torch.from_numpy(rng.integers(0, 256, (2, 3, 8, 16), dtype=np.uint8))
    rgb = normalize_rgb(u8)
    sem_gt = torch.from_numpy(rng.integers(0, 19, (2, 8, 16)))
    logits = torch.from_numpy(rng.normal(size=(2, 19, 8, 16)).astype(np.float32))
    depth_gt = rng.uniform(5, 80, (2, 8, 16)).astype(np.float32)
    depth_gt[:, :2] = 0.0
    depth_pred = torch.from_numpy(depth_gt * 2 + 5)[:, None]  # B×1×H×W like the model output
    fig = plots.prediction_grid(rgb, sem_gt, logits, depth_gt, depth_pred)
    axes = _main_axes(fig)
    assert len(axes) == 10 and len(_colorbars(fig)) == 1
    assert [a.get_title() for a in axes[:5]] == ["RGB", "semseg GT", "semseg prediction", "depth GT",
                                                 "depth prediction"]
    assert np.array_equal(axes[0].get_images()[0].get_array(), u8[0].permute(1, 2, 0).numpy())
    assert np.array_equal(axes[2].get_images()[0].get_array(), colorize(logits[0].argmax(0).numpy()))
    gt_im, pred_im = axes[3].get_images()[0], axes[4].get_images()[0]
    assert gt_im.norm.vmin == pred_im.norm.vmin and gt_im.norm.vmax == pred_im.norm.vmax
    assert gt_im.get_array().mask[:2].all() and not gt_im.get_array().mask[2:].any()
    assert _colorbars(fig)[0].get_ylabel() == "depth [m]"
    assert gt_im.cmap.get_bad()[:3] == pytest.approx(mcolors.to_rgb(plots.BAD_COLOR))

    fig = plots.prediction_grid(u8[0].permute(1, 2, 0).numpy(), semseg_pred=sem_gt[0])
    assert len(_main_axes(fig)) == 2
    with pytest.raises(ValueError, match="semseg_gt"):
        plots.prediction_grid(rgb, semseg_gt=sem_gt[:, :4])


def test_prediction_comparison_semseg_and_depth():
    rng = np.random.default_rng(5)
    rgb = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
    ids = {"no dilation": rng.integers(0, 19, (8, 16)), "ASPP + skip": rng.integers(0, 19, (8, 16))}
    fig = plots.prediction_comparison(rgb, ids, gt=rng.integers(0, 19, (8, 16)))
    axes = _main_axes(fig)
    assert [a.get_title() for a in axes] == ["RGB", "ground truth", "no dilation", "ASPP + skip"]
    assert np.array_equal(axes[3].get_images()[0].get_array(), colorize(ids["ASPP + skip"]))
    depths = {"a": rng.uniform(5, 50, (8, 16)).astype(np.float32),
              "b": rng.uniform(5, 90, (8, 16)).astype(np.float32)}
    fig = plots.prediction_comparison(rgb, depths)
    axes = _main_axes(fig)
    norms = {(a.get_images()[0].norm.vmin, a.get_images()[0].norm.vmax) for a in axes[1:]}
    assert len(norms) == 1 and len(_colorbars(fig)) == 1
    # one colour scale for a set of figures: the same limits passed to each
    for subset in ({"a": depths["a"]}, {"b": depths["b"]}):
        axes = _main_axes(plots.prediction_comparison(rgb, subset, depth_vmin=4.0, depth_vmax=80.0))
        assert (axes[1].get_images()[0].norm.vmin, axes[1].get_images()[0].norm.vmax) == (4.0, 80.0)


# ---- attention / bins ---------------------------------------------------------------------------
def test_attention_heatmaps_grid():
    maps = torch.rand(5, 4, 6, generator=torch.Generator().manual_seed(0))
    fig = plots.attention_heatmaps(maps, titles=[f"head {i}" for i in range(5)], ncols=3)
    visible = [a for a in _main_axes(fig) if a.get_visible()]
    assert [a.get_title() for a in visible] == [f"head {i}" for i in range(5)]
    assert len(_colorbars(fig)) == 5
    np.testing.assert_allclose(visible[2].get_images()[0].get_array(), maps[2].numpy())
    rgb = np.zeros((8, 12, 3), np.uint8)
    fig = plots.attention_heatmaps({"q": maps[0]}, rgb=rgb, shared_scale=True)
    ax = _main_axes(fig)[0]
    assert len(ax.get_images()) == 2 and ax.get_images()[1].get_extent() == [0, 12, 8, 0]


def _bins_example():
    n, h, w = 4, 3, 5
    probs = np.full((n, h, w), 0.25)
    probs[:, 1, 3] = [0.0, 0.1, 0.7, 0.2]  # the cell under image pixel (y=5, x=10) of 9×15
    depths = np.array([40.0, 5.0, 10.0, 20.0])
    return probs, depths


def test_pixel_distribution_maps_image_pixel_to_cell():
    probs, depths = _bins_example()
    d = plots.pixel_distribution(torch.from_numpy(probs), depths, (5, 10), image_size=(9, 15))
    assert d["grid_pixel"] == (1, 3)
    np.testing.assert_allclose(d["depths"], [5.0, 10.0, 20.0, 40.0])
    np.testing.assert_allclose(d["probs"], [0.1, 0.7, 0.2, 0.0])
    assert d["expected"] == pytest.approx(0.1 * 5 + 0.7 * 10 + 0.2 * 20)
    with pytest.raises(ValueError, match="outside"):
        plots.pixel_distribution(probs, depths, (9, 0), image_size=(9, 15))
    with pytest.raises(ValueError, match="bin_depths"):
        plots.pixel_distribution(probs, depths[:3], (0, 0))


def test_bin_probabilities_figure():
    probs, depths = _bins_example()
    rgb = np.zeros((9, 15, 3), np.uint8)
    depth = np.full((9, 15), 11.5, np.float32)
    gt = np.full((9, 15), 12.25, np.float32)
    # the two most likely bins at the pixel (bins 2 and 3), shown near → far with their depth rank
    fig = plots.bin_probabilities(probs, depths, (5, 10), rgb=rgb, depth=depth, n_bins_shown=2, gt=gt,
                                  bins=[3, 2])
    axes = _main_axes(fig)
    assert [a.get_title() for a in axes[1:3]] == ["bin 2 (2/4 by depth): 10.0 m", "bin 3 (3/4 by depth): 20.0 m"]
    dist_ax = axes[-1]
    assert dist_ax.get_xlabel() == "bin depth [m] (bins sorted by depth)" and dist_ax.get_ylabel() == "probability"
    stems = dist_ax.collections[0].get_segments()
    np.testing.assert_allclose([s[1] for s in stems], [[5, 0.1], [10, 0.7], [20, 0.2], [40, 0.0]])
    legend = [t.get_text() for t in dist_ax.get_legend().get_texts()]
    assert "Σ p·d = 11.50 m" in legend and "predicted depth 11.50 m" in legend and "ground truth 12.25 m" in legend
    # a 5..40 m spread is drawn linearly; a wide one on a log axis with plain metre ticks
    wide = plots.bin_probabilities(probs, np.array([400.0, 5.0, 10.0, 200.0]), (5, 10), rgb=rgb,
                                   gt=np.zeros((9, 15), np.float32))
    ax = _main_axes(wide)[-1]
    assert ax.get_xscale() == "log" and {5.0, 10.0, 100.0, 200.0} <= set(ax.get_xticks())
    assert "ground truth: none at this pixel" in [t.get_text() for t in ax.get_legend().get_texts()]


# ---- tables, trajectories, costs ----------------------------------------------------------------
def test_parameter_dataframe_and_table():
    table = {"joint": {"encoder": 11_176_512, "aspp": 1_000, "decoder": 500},
             "branched": {"encoder": 11_176_512, "aspp.semseg": 1_000, "aspp.depth": 1_000}}
    df = plots.parameter_dataframe(table)
    assert list(df.index) == ["encoder", "aspp", "decoder", "aspp.semseg", "aspp.depth", "total"]
    assert df.loc["total", "joint"] == 11_178_012 and df.loc["total", "branched"] == 11_178_512
    assert df.loc["aspp", "branched"] == 0 and df.dtypes.eq("int64").all()
    single = plots.parameter_dataframe({"encoder": 3, "head": 4}, total=False)
    assert list(single.columns) == ["parameters"] and single["parameters"].sum() == 7

    fig = plots.parameter_table(table)
    tab = fig.axes[0].tables[0]
    texts = {t.get_text().get_text() for t in tab.get_celld().values()}
    assert {"encoder", "total", "joint", "11,176,512 (11.18 M)", "11,178,012 (11.18 M)", "—"} <= texts
    with pytest.raises(ValueError, match="parameter_table"):
        plots.parameter_dataframe({"a": {"x": 1}, "b": 2})


def test_optimize_2d_matches_plain_gradient_descent_and_figure():
    fn = plots.SURFACES["elongated"][0]
    path = plots.optimize_2d(fn, "SGD", (-4.0, 1.5), steps=10, lr=0.03)
    ref = [np.array([-4.0, 1.5])]
    for _ in range(10):
        x, y = ref[-1]
        ref.append(ref[-1] - 0.03 * np.array([x, 50.0 * y]))  # ∇ ½(x² + 50y²)
    np.testing.assert_allclose(path, np.stack(ref), rtol=1e-12)

    fig = plots.trajectories_2d(steps=30)
    labels = [ln.get_label() for ln in fig.axes[0].get_lines()]
    assert any(lab.startswith("Adam") for lab in labels) and any(lab.startswith("SGD") for lab in labels)
    adam = next(ln for ln in fig.axes[0].get_lines() if ln.get_label().startswith("Adam"))
    assert len(adam.get_xdata()) == 31 and (adam.get_xdata()[0], adam.get_ydata()[0]) == (-4.0, 1.5)
    with pytest.raises(ValueError, match="surface"):
        plots.trajectories_2d("himmelblau")


def test_cost_curves_log_axes_and_reference_slope():
    df = pd.DataFrame({"N": [16, 64, 256, 1024] * 2, "heads": [4] * 4 + [8] * 4,
                       "time_ms": [1.0, 4.0, 16.0, 64.0, 1.1, 4.2, 17.0, 70.0]})
    fig = plots.cost_curves(df, "N", "time_ms", hue="heads", slope=2, ylabel="time [ms]")
    ax = fig.axes[0]
    assert ax.get_yscale() == "log" and ax.get_xscale() == "log" and ax.get_ylabel() == "time [ms]"
    ref = next(ln for ln in ax.get_lines() if ln.get_label().startswith("∝"))
    np.testing.assert_allclose(ref.get_ydata(), 1.05 * (np.array([16, 64, 256, 1024]) / 16) ** 2)
    # the quartile band around each line (one shaded area per hue, in the line's colour)
    df["lo"], df["hi"] = df["time_ms"] * 0.9, df["time_ms"] * 1.2
    ax = plots.cost_curves(df, "N", "time_ms", hue="heads", band=("lo", "hi")).axes[0]
    assert len(ax.collections) == 2
    np.testing.assert_allclose(ax.collections[0].get_paths()[0].vertices[:, 1].max(), 64.0 * 1.2)
    with pytest.raises(ValueError):
        plots.cost_curves(df, "N", "time_ms", band=("lo", "missing"))


# ---- the package's face ---------------------------------------------------------------------------
def _plots_names_called() -> dict[str, set[str]]:
    """``{name: files}`` for every ``plots.<name>`` (and ``from cvaia.plots import name``) in the
    notebooks' code cells and in ``cvaia/experiments``."""
    import json
    import re
    from pathlib import Path

    repo = Path(plots.__file__).resolve().parents[2]
    sources = {p: p.read_text(encoding="utf-8") for p in sorted((repo / "cvaia" / "experiments").glob("*.py"))}
    for nb in sorted((repo / "notebooks").glob("*.ipynb")):
        cells = json.loads(nb.read_text(encoding="utf-8"))["cells"]
        sources[nb] = "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
    names: dict[str, set[str]] = {}
    for path, text in sources.items():
        found = set(re.findall(r"\bplots\.([A-Za-z_]\w*)", text))
        for wrapped, line in re.findall(r"from (?:cvaia\.|\.\.)plots import (?:\(([^)]*)\)|([\w, \t]+))", text):
            found |= {n.strip() for n in (wrapped or line).split(",") if n.strip()}
        for name in found:
            names.setdefault(name, set()).add(path.name)
    return names


def test_every_name_the_notebooks_and_experiments_call_is_on_plots():
    names = _plots_names_called()
    assert {"save", "bars", "loss_curves", "prediction_grid", "SURFACES"} <= set(names)  # the scan sees them
    missing = {n: sorted(f) for n, f in names.items() if not hasattr(plots, n)}
    assert not missing, f"cvaia.plots lacks names that are called: {missing}"
    private = {n: sorted(f) for n, f in names.items() if n.startswith("_")}
    assert not private, f"private cvaia.plots names called from notebooks/experiments: {private}"
    assert set(plots.__all__) <= set(dir(plots))
