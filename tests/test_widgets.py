"""cvaia.widgets: callbacks change the rendered state; static fallback without a kernel."""

from __future__ import annotations

from types import SimpleNamespace

import ipywidgets
import numpy as np
import pandas as pd
import pytest
from matplotlib.backend_bases import MouseButton
from matplotlib.figure import Figure

from cvaia import plots, widgets
from cvaia.data.classes import colorize


class FakeSplit:
    """A reader with MiniscapesSplit's interface: ``len`` and ``read(i)``."""

    def __init__(self, n, labels=True, seed=0, size=(8, 12)):
        rng = np.random.default_rng(seed)
        h, w = size
        self.samples = []
        for _ in range(n):
            s = {"rgb": rng.integers(0, 256, (h, w, 3), dtype=np.uint8)}
            if labels:
                s["semseg"] = rng.integers(0, 19, (h, w)).astype(np.int64)
                s["semseg"][0, 0] = 255
                d = rng.uniform(5, 80, (h, w)).astype(np.float32)
                d[:2] = 0.0
                s["depth"] = d
            self.samples.append(s)
        self.reads = []

    def __len__(self):
        return len(self.samples)

    def read(self, i):
        self.reads.append(i)
        return self.samples[i]


@pytest.fixture()
def fake_splits():
    return {"train": FakeSplit(5, seed=1), "val": FakeSplit(3, seed=2), "test": FakeSplit(2, labels=False, seed=3)}


def _browser(fake_splits, **kw):
    return widgets.SampleBrowser("fake-root", open_split=lambda root, split: fake_splits[split], **kw)


def _main_axes(fig):
    return [a for a in fig.axes if a.get_label() != "<colorbar>"]


def _rgb_shown(fig):
    return _main_axes(fig)[0].get_images()[0].get_array()


@pytest.fixture()
def captured(monkeypatch):
    """Record what the widgets hand to IPython's display."""
    shown = []
    monkeypatch.setattr(widgets, "_display", shown.append)
    return shown


# ---- sample browser -----------------------------------------------------------------------------
def test_sample_browser_slider_selects_index(fake_splits):
    b = _browser(fake_splits)
    assert isinstance(b.widget, ipywidgets.VBox)
    assert list(b.split_dropdown.options) == ["train", "val", "test"] and b.split == "val"
    assert b.index_slider.max == 2
    fig = b.render()
    assert np.array_equal(_rgb_shown(fig), fake_splits["val"].samples[0]["rgb"])
    assert [a.get_title() for a in _main_axes(fig)] == ["RGB", "semseg GT", "depth GT"]
    b.index_slider.value = 2  # the observer re-renders
    assert b.index == 2 and isinstance(b.figure, Figure)
    assert np.array_equal(_rgb_shown(b.figure), fake_splits["val"].samples[2]["rgb"])
    assert "val sample 2 of 3" in b.figure._suptitle.get_text()


def test_sample_browser_overlay_toggle_changes_image(fake_splits):
    b = _browser(fake_splits, alpha=0.5)
    plain = _rgb_shown(b.render()).copy()
    b.overlay_toggle.value = True
    blended = _rgb_shown(b.figure)
    sample = fake_splits["val"].samples[0]
    assert not np.array_equal(plain, blended)
    expected = np.round(0.5 * sample["rgb"].astype(np.float32) + 0.5 * colorize(sample["semseg"])).astype(np.uint8)
    expected[0, 0] = sample["rgb"][0, 0]  # ignore pixel keeps the image
    np.testing.assert_array_equal(blended, expected)


def test_sample_browser_split_change_clamps_index_and_handles_missing_labels(fake_splits):
    b = _browser(fake_splits, split="train", index=4)
    b.split_dropdown.value = "test"
    assert b.index_slider.max == 1 and b.index == 1
    fig = b.figure
    assert [a.get_title() for a in _main_axes(fig)] == ["RGB"]  # the test split has no labels
    assert fake_splits["test"].reads == [1]
    with pytest.raises(ValueError, match="split 'nope' not available"):
        _browser(fake_splits, split="nope", splits=["val"])


def test_sample_browser_predictions(fake_splits):
    calls = []

    def predictor(rgb):
        calls.append(rgb.shape)
        h, w = rgb.shape[:2]
        return {"semseg": np.full((h, w), 13), "depth": np.full((1, h, w), 20.0, np.float32)}

    b = _browser(fake_splits, predictor=predictor)
    fig = b.render()
    axes = _main_axes(fig)
    assert [a.get_title() for a in axes] == ["RGB", "semseg GT", "semseg prediction", "depth GT", "depth prediction"]
    assert (axes[2].get_images()[0].get_array() == colorize(np.array([[13]]))[0, 0]).all()
    gt_im, pred_im = axes[3].get_images()[0], axes[4].get_images()[0]
    assert (gt_im.norm.vmin, gt_im.norm.vmax) == (pred_im.norm.vmin, pred_im.norm.vmax)
    b.render()
    assert calls == [(8, 12, 3)]  # cached per sample
    b.prediction_toggle.value = False
    assert len(_main_axes(b.figure)) == 3

    bad = _browser(fake_splits, predictor=lambda rgb: {"semseg": np.zeros((4, 4))})
    with pytest.raises(ValueError, match=r"shape \(4, 4\), expected \(8, 12\)"):
        bad.render()
    with pytest.raises(ValueError, match="unknown keys"):
        _browser(fake_splits, predictor=lambda rgb: {"seg": 1}).render()


def test_sample_browser_reads_a_miniscapes_root(tmp_path):
    """Default reader: cvaia.data.miniscapes on a tiny folder written with the course writers."""
    from cvaia.data.encoding import (
        decode_depth,
        encode_depth,
        write_depth_png,
        write_rgb_jpg,
        write_semseg_png,
    )

    rng = np.random.default_rng(0)
    for split in ("val", "test"):
        for sub in ("rgb",) + (("semseg", "depth") if split == "val" else ()):
            (tmp_path / split / sub).mkdir(parents=True)
        for i in range(2):
            write_rgb_jpg(tmp_path / split / "rgb" / f"{i}.jpg", rng.integers(0, 256, (16, 32, 3), dtype=np.uint8))
            if split == "val":
                write_semseg_png(tmp_path / split / "semseg" / f"{i}.png", rng.integers(0, 19, (16, 32)))
                write_depth_png(tmp_path / split / "depth" / f"{i}.png", rng.uniform(4, 200, (16, 32)))
    b = widgets.SampleBrowser(tmp_path, split="val")
    assert list(b.split_dropdown.options) == ["val", "test"]
    b.index_slider.value = 1
    s = b.sample()
    assert s["rgb"].shape == (16, 32, 3) and s["semseg"].dtype == np.int64
    depth_im = _main_axes(b.figure)[2].get_images()[0]
    np.testing.assert_allclose(depth_im.get_array(), decode_depth(encode_depth(s["depth"])))


# ---- task-weight explorer -----------------------------------------------------------------------
def _weight_results():
    results = [{"w": 0.75, "miou": 85.1, "si_log_rmse": 17.6},
               {"w": 0.25, "miou": 83.1, "si_log_rmse": 16.3},
               {"w": 0.5, "miou": 84.7, "si_log_rmse": 16.6}]
    rng = np.random.default_rng(6)
    preds = {w: {"rgb": rng.integers(0, 256, (8, 12, 3), dtype=np.uint8),
                 "semseg": np.full((8, 12), k), "depth": np.full((8, 12), 10.0 * (k + 1), np.float32)}
             for k, w in enumerate((0.25, 0.5, 0.75))}
    return results, preds


def test_task_weight_explorer_slider_selects_run():
    results, preds = _weight_results()
    ex = widgets.TaskWeightExplorer(results, predictions=preds)
    assert list(ex.slider.options) == [("0.25", 0.25), ("0.5", 0.5), ("0.75", 0.75)]
    assert ex.selected == 0.5  # the middle run by default
    fig = ex.render()
    assert fig._suptitle.get_text() == "w = 0.5: miou 84.70, si_log_rmse 16.60"
    axes = _main_axes(fig)
    assert [a.get_title() for a in axes] == ["miou = 84.70", "si_log_rmse = 16.60", "RGB",
                                             "semseg prediction", "depth prediction"]
    ex.slider.value = 0.75
    assert ex.row()["miou"] == 85.1
    axes = _main_axes(ex.figure)
    assert axes[0].get_title() == "miou = 85.10"
    marker = axes[0].get_lines()[1]
    assert (marker.get_xdata()[0], marker.get_ydata()[0]) == (0.75, 85.1)
    assert (axes[3].get_images()[0].get_array() == colorize(np.array([[2]]))[0, 0]).all()
    # one depth colour scale for all runs
    ex.select(0.25)
    norm = _main_axes(ex.figure)[4].get_images()[0].norm
    assert (norm.vmin, norm.vmax) == (ex._depth_norm.vmin, ex._depth_norm.vmax)
    assert norm.vmin <= 10.0 and norm.vmax >= 29.0


def test_task_weight_explorer_validates_inputs():
    results, _ = _weight_results()
    ex = widgets.TaskWeightExplorer(pd.DataFrame(results))
    assert len(_main_axes(ex.render())) == 2  # metrics only
    with pytest.raises(ValueError, match="no column 'w'"):
        widgets.TaskWeightExplorer([{"weight": 0.5, "miou": 1.0}])
    with pytest.raises(ValueError, match="several results"):
        widgets.TaskWeightExplorer(results + [{"w": 0.5, "miou": 1.0, "si_log_rmse": 2.0}])
    with pytest.raises(ValueError, match="predictions for w=0.9"):
        widgets.TaskWeightExplorer(results, predictions={0.9: {}})


# ---- bins inspector -----------------------------------------------------------------------------
def test_bins_inspector_picks_the_right_pixel():
    rng = np.random.default_rng(7)
    n, h, w = 6, 4, 8  # probability grid at 1/4 of the 16×32 image
    probs = rng.random((n, h, w))
    probs /= probs.sum(0, keepdims=True)
    depths = np.array([3.0, 7.0, 12.0, 25.0, 50.0, 90.0])
    depth = (probs * depths[:, None, None]).sum(0).repeat(4, 0).repeat(4, 1).astype(np.float32)
    rgb = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)
    bi = widgets.BinsInspector(rgb, probs, depths, depth)
    assert bi.pixel == (8, 16) and bi.x_slider.max == 31 and bi.y_slider.max == 15

    bi.y_slider.value = 13
    bi.x_slider.value = 6
    d = bi.distribution()
    assert d["grid_pixel"] == (3, 1)
    np.testing.assert_allclose(d["probs"], probs[:, 3, 1])
    assert d["expected"] == pytest.approx(depth[13, 6], rel=1e-6)
    dist_ax = _main_axes(bi.figure)[-1]
    np.testing.assert_allclose([s[1][1] for s in dist_ax.collections[0].get_segments()], probs[:, 3, 1])
    assert dist_ax.get_title() == "bin distribution at pixel (y=13, x=6)"

    fig = bi.pick(0, 31)
    assert bi.pixel == (0, 31) and fig is bi.figure
    np.testing.assert_allclose(bi.distribution()["probs"], probs[:, 0, 7])
    with pytest.raises(ValueError, match="outside"):
        bi.pick(16, 0)


def _bins_inspector(**kw):
    """A 16×32 image with 6 bins on a 4×8 probability grid."""
    rng = np.random.default_rng(3)
    probs = rng.random((6, 4, 8))
    probs /= probs.sum(0, keepdims=True)
    rgb = rng.integers(0, 256, (16, 32, 3), dtype=np.uint8)
    return widgets.BinsInspector(rgb, probs, np.array([3.0, 7.0, 12.0, 25.0, 50.0, 90.0]), **kw)


def _click(ax, x, y, button=MouseButton.LEFT):
    """What matplotlib hands a ``button_press_event`` handler (data coordinates of ``ax``)."""
    return SimpleNamespace(inaxes=ax, xdata=x, ydata=y, button=button)


def test_bins_inspector_click_picks_the_pixel_under_the_mouse():
    bi = _bins_inspector()
    fig = bi.update()
    image_ax, map_ax = _main_axes(fig)[:2]
    dist_ax = _main_axes(fig)[-1]
    colorbar = next(a for a in fig.axes if a.get_label() == "<colorbar>")
    assert image_ax.get_title() == "image" and map_ax.get_title().startswith("bin ")

    bi._on_click(_click(image_ax, 6.4, 12.6))  # imshow: column 6 spans x ∈ [5.5, 6.5)
    assert bi.pixel == (13, 6) and bi.figure is not fig
    assert _main_axes(bi.figure)[-1].get_title() == "bin distribution at pixel (y=13, x=6)"
    np.testing.assert_allclose(bi.distribution()["probs"], bi.probs[:, 3, 1])
    # a bin's map spans the image (extent 0..W × 0..H) whatever the grid's resolution
    bi._on_click(_click(map_ax, 30.9, 0.2))
    assert bi.pixel == (0, 30)
    bi._on_click(_click(image_ax, 31.5, 15.5))  # the image's far edge: clamped inside
    assert bi.pixel == (15, 31)

    shown = bi.figure
    for ignored in (_click(None, None, None), _click(dist_ax, 20.0, 0.1), _click(colorbar, 0.5, 0.5),
                    _click(image_ax, 3.0, 3.0, button=MouseButton.RIGHT)):
        bi._on_click(ignored)
        assert bi.pixel == (15, 31) and bi.figure is shown


def test_bins_inspector_live_click_canvas(captured, monkeypatch):
    from ipympl.backend_nbagg import Canvas

    monkeypatch.setenv(widgets.STATIC_ENV, "0")  # pretend a live frontend
    bi = _bins_inspector()
    assert bi.click  # ipympl is installed
    bi.display()
    canvas = captured[1]
    assert captured[0] is bi.widget and isinstance(canvas, Canvas) and canvas is bi.canvas
    assert canvas.figure is bi.figure and not canvas.toolbar_visible
    canvas.draw()  # the first draw lays the figure out, as in the browser
    px, py = bi.figure.axes[0].transData.transform((20, 3))  # image pixel (y=3, x=20)
    # the message jupyter-matplotlib's frontend sends for a left click (y from the top)
    canvas.manager.handle_json({"type": "button_press", "x": px, "y": bi.figure.bbox.height - py,
                                "button": 0, "buttons": 1, "modifiers": []})
    assert bi.pixel == (3, 20) and (bi.x_slider.value, bi.y_slider.value) == (20, 3)
    assert isinstance(captured[2], Canvas) and captured[2] is bi.canvas is not canvas
    assert canvas.comm is None  # the replaced canvas is closed
    bi.x_slider.value = 7  # the sliders still work, on a new canvas too
    assert bi.pixel == (3, 7) and captured[3] is bi.canvas and captured[3].figure is bi.figure


def test_bins_inspector_slider_fallback(captured, monkeypatch):
    monkeypatch.setenv(widgets.STATIC_ENV, "0")
    bi = _bins_inspector(click=False)
    bi.display()
    assert captured[0] is bi.widget and isinstance(captured[1], Figure) and bi.canvas is None
    bi.y_slider.value = 2
    assert isinstance(captured[2], Figure) and bi.pixel == (2, 16)
    monkeypatch.setattr(widgets, "_ipympl_available", lambda: False)
    assert not _bins_inspector().click
    with pytest.raises(ImportError, match="needs ipympl"):
        _bins_inspector(click=True)


# ---- display: interactive vs static -------------------------------------------------------------
def test_static_mode_rules(monkeypatch):
    for var in [k for k in __import__("os").environ if k.startswith("PAPERMILL")]:
        monkeypatch.delenv(var)
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    assert widgets.static_mode()  # plain python: no IPython kernel
    monkeypatch.setenv(widgets.STATIC_ENV, "0")
    assert not widgets.static_mode()
    monkeypatch.setenv(widgets.STATIC_ENV, "yes")
    assert widgets.static_mode()
    monkeypatch.setenv(widgets.STATIC_ENV, "maybe")
    with pytest.raises(ValueError, match="CVAIA_STATIC_WIDGETS"):
        widgets.static_mode()
    monkeypatch.delenv(widgets.STATIC_ENV)
    monkeypatch.setenv("PAPERMILL_EXECUTION", "1")
    assert widgets.static_mode()


def test_static_fallback_displays_the_current_figure(fake_splits, captured, monkeypatch):
    monkeypatch.delenv(widgets.STATIC_ENV, raising=False)
    b = _browser(fake_splits, index=1)
    widgets.show(b)  # no kernel here → static
    assert len(captured) == 1 and isinstance(captured[0], Figure)
    assert np.array_equal(_rgb_shown(captured[0]), fake_splits["val"].samples[1]["rgb"])
    b._ipython_display_()  # `b` as the last expression of a cell
    assert isinstance(captured[1], Figure)

    monkeypatch.setenv(widgets.STATIC_ENV, "0")  # pretend a live frontend
    b.display()
    assert captured[2] is b.widget and isinstance(captured[3], Figure)  # widget, then its figure
    b.index_slider.value = 2  # live: the new figure goes to the output area
    assert isinstance(captured[4], Figure) and captured[4] is b.figure
    fig = plots.bars({"a": 1.0}, "x")
    widgets.show(fig)
    assert captured[-1] is fig
    with pytest.raises(TypeError, match="widget or a Figure"):
        widgets.show(42)
