"""The procedural street-scene generator: ray casting, labels, depth, files, CLI."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from PIL import Image

from cvaia.data import synth
from cvaia.data.classes import IGNORE_INDEX, NUM_CLASSES
from cvaia.data.encoding import DEPTH_MAX, DEPTH_MIN, decode_depth, encode_depth

SMALL = dict(height=32, width=64, n_train=3, n_val=1, n_test=1, seed=5, workers=1)


def _files(root):
    return sorted(p.relative_to(root) for p in root.rglob("*") if p.suffix in (".jpg", ".png"))


# ---- ray caster against closed-form references -------------------------------------------


def _straight_camera(height=33, width=33, focal=20.0, origin=(0.0, 1.5, 0.0)):
    return synth._Camera(height, width, np.array(origin), np.eye(3), focal)


def _scene_arrays(*prims):
    s = synth._Scene()
    for add in prims:
        add(s)
    kind, lo, hi, *_ = s.arrays()
    return kind, lo, hi


def test_cast_box_front_face_depth_is_its_distance():
    cam = _straight_camera()
    kind, lo, hi = _scene_arrays(lambda s: s.box((-1, 0.5, 10), (1, 2.5, 12), 2, np.ones(3)))
    t, pid = synth._cast(cam, kind, lo, hi)
    assert pid[16, 16] == 1 and t[16, 16] == pytest.approx(10.0, abs=1e-4)
    # footprint: the face spans x in ±1 m at 10 m → ±2 px around the centre column
    row = pid[16]
    assert set(np.flatnonzero(row == 1)) == set(range(14, 19))
    # rays above the horizon that miss the box see nothing; rays below hit the ground
    assert np.isinf(t[0, 0]) and pid[0, 0] == 0
    ground = t[-1, 0]
    v = -(32 + 0.5 - 33 / 2) / 20.0  # direction y of the bottom row (z component 1)
    assert ground == pytest.approx(-1.5 / v, rel=1e-5)


def test_cast_sphere_and_cylinder_match_closed_form():
    cam = _straight_camera()
    kind, lo, hi = _scene_arrays(
        lambda s: s.ellipsoid((0.0, 1.5, 20.0), (2.0, 2.0, 2.0), 8, np.ones(3)),
        lambda s: s.pole(0.0, 5.0, 0.25, 0.0, 1.0, 5, np.ones(3)),  # below eye level: top cap
    )
    t, pid = synth._cast(cam, kind, lo, hi)
    assert pid[16, 16] == 1 and t[16, 16] == pytest.approx(18.0, abs=1e-4)
    # a pixel looking down at the pole's top: ray parameter where y = 1.0 (cap), z ≈ 5
    rows = np.flatnonzero(pid[:, 16] == 2)
    assert len(rows) > 0
    r = rows[0]
    v = -(r + 0.5 - 33 / 2) / 20.0
    assert t[r, 16] == pytest.approx((1.0 - 1.5) / v, rel=1e-4)  # top cap of the pole
    assert abs(t[r, 16] - 5.0) <= 0.25 + 1e-3


def test_hidden_primitive_is_not_drawn():
    cam = _straight_camera()
    kind, lo, hi = _scene_arrays(
        lambda s: s.box((-3, 0, 10), (3, 4, 11), 2, np.ones(3)),
        lambda s: s.box((-0.5, 1, 30), (0.5, 2, 31), 13, np.ones(3)),
    )
    t, pid = synth._cast(cam, kind, lo, hi)
    assert not (pid == 2).any()
    assert t[16, 16] == pytest.approx(10.0, abs=1e-4)


# ---- rendered scenes ---------------------------------------------------------------------


def test_render_scene_types_labels_and_depth():
    for i in range(6):
        rgb, sem, depth = synth.render_scene(48, 96, np.random.default_rng([1, 0, i]))
        assert rgb.shape == (48, 96, 3) and rgb.dtype == np.uint8
        assert sem.shape == (48, 96) and sem.dtype == np.uint8
        assert depth.shape == (48, 96) and depth.dtype == np.float32
        ids = set(np.unique(sem).tolist())
        assert ids <= set(range(NUM_CLASSES)) | {IGNORE_INDEX}
        assert (depth[sem == synth.SKY] == 0).all()
        valid = depth > 0
        assert valid.mean() > 0.3
        assert depth[valid].min() >= DEPTH_MIN and depth[valid].max() <= DEPTH_MAX
        assert rgb.std() > 10  # not a flat picture


def test_all_classes_appear_and_big_classes_dominate():
    hist = np.zeros(256, np.int64)
    for i in range(150):
        _, sem, _ = synth.render_scene(48, 96, np.random.default_rng([0, 0, i]))
        hist += np.bincount(sem.ravel(), minlength=256)
    assert (hist[:NUM_CLASSES] > 0).all(), f"missing classes {np.flatnonzero(hist[:19] == 0)}"
    freq = hist / hist.sum()
    big = freq[[synth.ROAD, synth.BUILDING, synth.VEGETATION, synth.SKY]]
    small = freq[[synth.POLE, synth.LIGHT, synth.SIGN, synth.PERSON, synth.RIDER]]
    assert big.sum() > 0.5 and (big > 0.03).all()
    assert small.max() < 0.02


def test_render_is_a_function_of_seed_split_and_index_only():
    a = synth.render_image(3, "val", 7, 32, 64)
    b = synth.render_image(3, "val", 7, 32, 64)
    c = synth.render_image(3, "test", 7, 32, 64)
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert not np.array_equal(a[0], c[0])


# ---- writing sets ------------------------------------------------------------------------


def test_tiny_set_layout_modes_and_meta(tiny_root):
    meta = json.loads((tiny_root / "meta.json").read_text())
    assert meta["generator"] == synth.GENERATOR_NAME and meta["version"] == synth.GENERATOR_VERSION
    assert meta["counts"] == {"train": 12, "val": 4, "test": 4} and meta["complete"]
    assert (meta["seed"], meta["height"], meta["width"]) == (7, 64, 128)
    freq = meta["class_pixel_frequency"]
    assert math.isclose(sum(freq.values()), 1.0, abs_tol=1e-4)
    for split, n in meta["counts"].items():
        for kind, ext, mode in (("rgb", "jpg", "RGB"), ("semseg", "png", "P"), ("depth", "png", "L")):
            folder = tiny_root / split / kind
            assert sorted(p.name for p in folder.iterdir()) == sorted(f"{i}.{ext}" for i in range(n))
            with Image.open(folder / f"0.{ext}") as img:
                assert img.mode == mode and img.size == (128, 64)
                assert img.format == ("JPEG" if ext == "jpg" else "PNG")
    assert not (tiny_root / ".partial").exists()
    # files hold exactly what the renderer produced (rgb up to JPEG loss)
    rgb, sem, depth = synth.render_image(7, "val", 2, 64, 128)
    np.testing.assert_array_equal(np.asarray(Image.open(tiny_root / "val/semseg/2.png")), sem)
    codes = np.asarray(Image.open(tiny_root / "val/depth/2.png"))
    np.testing.assert_array_equal(codes, encode_depth(depth, "invalidate"))
    assert ((decode_depth(codes) > 0) == (depth > 0)).all()
    jpg = np.asarray(Image.open(tiny_root / "val/rgb/2.jpg")).astype(int)
    assert np.abs(jpg - rgb).mean() < 6


def test_same_seed_gives_identical_files_and_extending_keeps_them(tmp_path):
    a = synth.generate(tmp_path / "a", **SMALL)
    b = synth.generate(tmp_path / "b", **dict(SMALL, n_train=5, workers=2))
    assert _files(a) == [p for p in _files(b) if not (p.parts[0] == "train" and
                                                       int(p.stem) >= 3)]
    for rel in _files(a):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    # extending a to the size of b renders only the missing images, identical to b's
    report: dict = {}
    synth.generate(tmp_path / "a", **dict(SMALL, n_train=5), report=report)
    assert report["rendered"] == 2
    for rel in _files(b):
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel
    assert json.loads((a / "meta.json").read_text()) == json.loads((b / "meta.json").read_text())


def test_rerun_is_idempotent_and_completes_missing(tmp_path):
    root = synth.generate(tmp_path / "s", **SMALL)
    stamp = (root / "train/rgb/0.jpg").stat().st_mtime_ns
    report: dict = {}
    synth.generate(root, **SMALL, report=report)
    assert report["rendered"] == 0
    assert (root / "train/rgb/0.jpg").stat().st_mtime_ns == stamp
    (root / "train/depth/1.png").unlink()
    synth.generate(root, **SMALL, report=report)
    assert report["rendered"] == 1 and (root / "train/depth/1.png").is_file()


def test_refuses_to_overwrite_other_sets(tmp_path):
    root = synth.generate(tmp_path / "s", **SMALL)
    with pytest.raises(synth.SynthError, match=str(root)):
        synth.generate(root, **dict(SMALL, seed=6))
    with pytest.raises(synth.SynthError, match="count"):
        synth.generate(root, **dict(SMALL, n_train=2))
    assert json.loads((root / "meta.json").read_text())["seed"] == 5  # untouched
    synth.generate(root, **dict(SMALL, seed=6, n_train=2), force=True)
    meta = json.loads((root / "meta.json").read_text())
    assert meta["seed"] == 6 and meta["counts"]["train"] == 2
    assert sorted(p.name for p in (root / "train/rgb").iterdir()) == ["0.jpg", "1.jpg"]
    assert (root / "train/rgb/0.jpg").read_bytes() == \
        (synth.generate(tmp_path / "t", **dict(SMALL, seed=6, n_train=2)) /
         "train/rgb/0.jpg").read_bytes()
    # a folder that is not a synthetic set is never touched, even with force
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    with pytest.raises(synth.SynthError, match="not a synthetic set"):
        synth.generate(foreign, **SMALL, force=True)
    assert (foreign / "notes.txt").read_text() == "keep me"
    with pytest.raises(ValueError, match="n_val"):
        synth.generate(tmp_path / "bad", **dict(SMALL, n_val=-1))


# ---- command line ------------------------------------------------------------------------


def test_cli_help_and_tiny_run(tmp_path, capsys):
    from cvaia.__main__ import main

    with pytest.raises(SystemExit) as exc:
        main(["synth", "--help"])
    assert exc.value.code == 0
    assert "--n_train" in capsys.readouterr().out
    out = tmp_path / "cli"
    args = ["synth", "--out", str(out), "--height", "32", "--width", "64", "--n_train", "2",
            "--n_val", "1", "--n_test", "1", "--workers", "1", "--quiet"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "images/s" in text and str(out) in text
    assert len(_files(out)) == 3 * 4
    assert main(args + ["--seed", "1"]) == 1
    assert "--force" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["synth", "--out", str(out), "--width", "3"])
    assert "--width" in capsys.readouterr().err
