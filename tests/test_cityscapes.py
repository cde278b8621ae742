"""Cityscapes → miniscapes conversion on a tiny fake Cityscapes tree written by the test.

The tree has the real folder and file-name patterns and camera-JSON fields: train cities
aachen (2 frames) and bochum (1), val cities frankfurt (2) and munster (1), frames of 256x128
(W x H). Converted to 128x64, nearest sampling picks source pixel (2i+1, 2j+1) for output
pixel (i, j), so the expected semseg and depth are computed here independently.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from PIL import Image

from cvaia.data import cityscapes
from cvaia.data.cityscapes import ConvertError, convert
from cvaia.data.encoding import decode_depth, encode_depth
from cvaia.data.miniscapes import DatasetError, MiniscapesSplit, load_split_tensors

W, H = 256, 128
FRAMES = {
    "train": {"aachen": ["aachen_000000_000019", "aachen_000001_000019"],
              "bochum": ["bochum_000000_000313"]},
    "val": {"frankfurt": ["frankfurt_000000_000294", "frankfurt_000001_000538"],
            "munster": ["munster_000000_000019"]},
}
CAMERAS = {"aachen": (0.209313, 2262.52), "bochum": (0.216, 2250.0),
           "frankfurt": (0.22, 2268.36), "munster": (0.2093, 2262.5)}
# label id → train id for the ids the fake labels use (Cityscapes' table, written out here).
TRAIN_ID = {23: 10, 11: 2, 26: 13, 0: 255, 9: 255, 33: 18, 17: 5, 7: 0}


def _p(depth_m, baseline, fx):
    """The disparity PNG value for a depth (rounded as a stored value is)."""
    return int(round(baseline * fx / depth_m * 256 + 1))


def depth_formula(p, baseline, fx):
    """depth = baseline·fx / ((p − 1)/256); p = 0 (and 1) invalid → 0."""
    p = p.astype(np.float64)
    with np.errstate(divide="ignore"):
        d = baseline * fx / ((p - 1) / 256)
    return np.where(p > 1, d, 0.0)


def fake_frame(city, k):
    """rgb (H, W, 3) uint8, label ids (H, W) uint8, disparity (H, W) uint16 of one frame."""
    b, fx = CAMERAS[city]
    ids = np.empty((H, W), np.uint8)
    p = np.zeros((H, W), np.uint16)
    ids[:32] = 23                                  # sky: no disparity
    ids[32:64, :128], p[32:64, :128] = 11, _p(40 + k, b, fx)   # building
    ids[32:64, 128:], p[32:64, 128:] = 26, _p(12.5, b, fx)     # car
    band = slice(64, 96)
    ids[band, :64] = 0                             # unlabeled; every other pair of columns valid
    p[band, :64] = np.where(np.arange(64) % 4 < 2, _p(8.0, b, fx), 0)
    ids[band, 64:128], p[band, 64:128] = 9, 1      # parking; zero disparity
    ids[band, 128:192], p[band, 128:192] = 33, _p(2.0, b, fx)  # bicycle; nearer than 4 m
    ids[band, 192:], p[band, 192:] = 17, _p(500.0, b, fx)      # pole; farther than 300 m
    ids[96:] = 7                                   # road: depth grows with the row
    p[96:] = np.array([_p(5.0 + r, b, fx) for r in range(32)], np.uint16)[:, None]
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([x, y * 2, (x + y + 40 * k) % 256], -1).astype(np.uint8)
    return rgb, ids, p


def write_fake_cityscapes(root):
    for split, cities in FRAMES.items():
        for city, names in cities.items():
            b, fx = CAMERAS[city]
            dirs = {f: root / f / split / city for f in ("leftImg8bit", "gtFine", "disparity", "camera")}
            for d in dirs.values():
                d.mkdir(parents=True, exist_ok=True)
            for k, name in enumerate(names):
                rgb, ids, p = fake_frame(city, k)
                Image.fromarray(rgb).save(dirs["leftImg8bit"] / f"{name}_leftImg8bit.png")
                Image.fromarray(ids).save(dirs["gtFine"] / f"{name}_gtFine_labelIds.png")
                Image.fromarray(p).save(dirs["disparity"] / f"{name}_disparity.png")
                # the other files of the gtFine package are ignored
                (dirs["gtFine"] / f"{name}_gtFine_polygons.json").write_text("{}")
                Image.fromarray(ids).save(dirs["gtFine"] / f"{name}_gtFine_color.png")
                cam = {"extrinsic": {"baseline": b, "pitch": 0.038, "roll": 0.0, "x": 1.7,
                                     "y": 0.1, "yaw": -0.0195, "z": 1.22},
                       "intrinsic": {"fx": fx, "fy": fx + 2.8, "u0": 1096.98, "v0": 513.137}}
                (dirs["camera"] / f"{name}_camera.json").write_text(json.dumps(cam))
    return root


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    return write_fake_cityscapes(tmp_path_factory.mktemp("cs") / "cityscapes")


@pytest.fixture(scope="module")
def converted(source, tmp_path_factory):
    report = {}
    out = convert(source, tmp_path_factory.mktemp("out") / "converted", size=(128, 64),
                  workers=2, report=report)
    return out, report


@pytest.fixture()
def copy(source, tmp_path):
    """A private copy of the fake tree that a test may break."""
    return shutil.copytree(source, tmp_path / "cs")


def test_splits_sources_and_meta(converted):
    out, report = converted
    assert report["converted"] == 6 and report["counts"] == {"train": 3, "val": 2, "test": 1}
    sources = json.loads((out / "sources.json").read_text())
    assert sources == {"train": FRAMES["train"]["aachen"] + FRAMES["train"]["bochum"],
                       "val": FRAMES["val"]["frankfurt"], "test": FRAMES["val"]["munster"]}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["converter"] == "cvaia.data.cityscapes" and meta["complete"] is True
    assert (meta["width"], meta["height"]) == (128, 64) and meta["test_cities"] == ["munster"]
    assert meta["splits"]["val"]["cities"] == ["frankfurt"]
    assert not (out / ".partial").exists()


def test_train_ids_and_depth_match_the_formula(converted):
    out, _ = converted
    for split, names in json.loads((out / "sources.json").read_text()).items():
        data = MiniscapesSplit(out, split)
        for i, name in enumerate(names):
            city = name.split("_")[0]
            k = [n for c in FRAMES.values() for n in c.get(city, [])].index(name)
            rgb, ids, p = fake_frame(city, k)
            raw = data.read_raw(i)
            # semseg: the label id of source pixel (2i+1, 2j+1) through the train-id table
            expected_ids = np.vectorize(TRAIN_ID.get)(ids[1::2, 1::2])
            np.testing.assert_array_equal(raw["semseg"], expected_ids)
            # depth: the formula at the same pixels, in the course encoding (4..300 m, else 0)
            expected_m = depth_formula(p[1::2, 1::2], *CAMERAS[city])
            np.testing.assert_array_equal(raw["depth_codes"], encode_depth(expected_m))
            # rgb: a bilinear resize of a smooth ramp, up to JPEG error
            assert np.abs(raw["rgb"].astype(int) - rgb[1::2, 1::2]).mean() < 4

    # chosen pixels of the first training frame (aachen, baseline 0.209313, fx 2262.52)
    raw = MiniscapesSplit(out, "train").read_raw(0)
    sem, depth = raw["semseg"], decode_depth(raw["depth_codes"])
    # road 7 → 0, sky 23 → 10, car 26 → 13, bicycle 33 → 18, pole 17 → 5, unlabeled 0 and
    # parking 9 (no train id) → 255
    assert sem[60, 10] == 0 and sem[5, 5] == 10 and sem[20, 100] == 13 and sem[40, 70] == 18
    assert sem[40, 10] == 255 and sem[40, 40] == 255 and sem[40, 110] == 5
    b, fx = CAMERAS["aachen"]
    p_road = _p(5.0 + (2 * 60 + 1 - 96), b, fx)    # output row 60 ↔ source row 121
    assert depth[60, 10] == pytest.approx(b * fx / ((p_road - 1) / 256), rel=0.03)
    assert depth[20, 30] == pytest.approx(40.0, rel=0.03) and depth[20, 100] == pytest.approx(12.5, rel=0.03)
    assert depth[5, 5] == 0                         # p = 0: invalid
    assert (depth[34:46, 32:64] == 0).all()         # p = 1: zero disparity, invalid
    assert (depth[34:46, 64:96] == 0).all()         # 2 m: nearer than 4 m, invalid
    assert (depth[34:46, 96:] == 0).all()           # 500 m: farther than 300 m, invalid
    # columns alternate valid / invalid: nearest keeps either value, never a blend of the two
    strip = raw["depth_codes"][34:46, :32]
    assert set(np.unique(strip)) == {0, int(encode_depth(np.array([depth_formula(
        np.array([_p(8.0, b, fx)]), b, fx)[0]]))[0])}
    assert (strip[:, 0::2] > 0).all() and (strip[:, 1::2] == 0).all()


def test_converted_root_passes_the_reader_and_trains(converted, isolated_dirs):
    out, _ = converted
    for split, n in (("train", 3), ("val", 2), ("test", 1)):
        data = MiniscapesSplit(out, split)
        assert len(data) == n and data.has_semseg and data.has_depth and data.image_size == (64, 128)
        t = load_split_tensors(out, split)
        assert t.rgb.shape == (n, 3, 64, 128) and t.semseg.shape == t.depth_codes.shape == (n, 64, 128)

    from cvaia.config import make_config
    from cvaia.runs import Run
    from cvaia.train import train

    cfg = make_config(dataset_root=str(out), aug_input_crop_size=64, batch_size=2,
                      batch_size_validation=2, num_epochs=1, max_train_images=2,
                      optimizer="adam", optimizer_lr=1e-3, log_every=1, quiet=True, device="cpu")
    run = Run(train(cfg, run_dir=isolated_dirs["runs"] / "cityscapes").run_dir)
    assert list(run.history.step) == [1]
    assert np.isfinite(run.final["miou"]) and run.final["si_log_rmse"] > 0


def test_crop_to_another_aspect(source, tmp_path):
    """64x64 from 256x128: scale 1/2, centre crop of source columns 64..191."""
    out = convert(source, tmp_path / "square", size=(64, 64), workers=1)
    raw = MiniscapesSplit(out, "train").read_raw(0)
    _, ids, p = fake_frame("aachen", 0)
    np.testing.assert_array_equal(raw["semseg"], np.vectorize(TRAIN_ID.get)(ids[1::2, 65:192:2]))
    np.testing.assert_array_equal(raw["depth_codes"],
                                  encode_depth(depth_formula(p[1::2, 65:192:2], *CAMERAS["aachen"])))


def test_test_cities(source, tmp_path):
    report = {}
    convert(source, tmp_path / "a", size=(64, 32), test_cities=("frankfurt",), report=report)
    assert report["counts"] == {"train": 3, "val": 1, "test": 2}
    with pytest.raises(DatasetError, match="'lindau' is not a Cityscapes val city"):
        convert(source, tmp_path / "b", size=(64, 32), test_cities=("lindau",))
    with pytest.raises(DatasetError, match="keep at least one for the val split"):
        convert(source, tmp_path / "c", size=(64, 32), test_cities=("frankfurt", "munster"))
    assert not (tmp_path / "b").exists() and not (tmp_path / "c").exists()


# ---- errors on the source ---------------------------------------------------------------------
def test_wrong_root(tmp_path, copy):
    with pytest.raises(DatasetError, match="Cityscapes root not found"):
        convert(tmp_path / "nowhere", tmp_path / "out")
    with pytest.raises(DatasetError, match="not a Cityscapes root: no leftImg8bit"):
        convert(copy / "gtFine", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_missing_camera_files(copy, tmp_path):
    (copy / "camera" / "val" / "munster" / "munster_000000_000019_camera.json").unlink()
    with pytest.raises(DatasetError, match=r"munster_000000_000019_camera\.json: missing"):
        convert(copy, tmp_path / "out")
    shutil.rmtree(copy / "camera")
    with pytest.raises(DatasetError, match=r"camera/train: folder not found.*camera_trainvaltest"):
        convert(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_bad_camera_field(copy, tmp_path):
    path = copy / "camera" / "train" / "bochum" / "bochum_000000_000313_camera.json"
    cam = json.loads(path.read_text())
    del cam["extrinsic"]["baseline"]
    path.write_text(json.dumps(cam))
    with pytest.raises(DatasetError, match=r"bochum_000000_000313_camera\.json: expected a positive "
                                           r"number at extrinsic\.baseline"):
        convert(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # checked before anything is written


@pytest.mark.parametrize("folder, suffix", [("gtFine", "_gtFine_labelIds.png"),
                                            ("disparity", "_disparity.png")])
def test_image_without_label_or_disparity(copy, tmp_path, folder, suffix):
    (copy / folder / "train" / "aachen" / f"aachen_000001_000019{suffix}").unlink()
    with pytest.raises(DatasetError, match=f"aachen_000001_000019{suffix}: missing; every image needs one"):
        convert(copy, tmp_path / "out")


def test_label_without_image(copy, tmp_path):
    (copy / "leftImg8bit" / "val" / "frankfurt" / "frankfurt_000000_000294_leftImg8bit.png").unlink()
    with pytest.raises(DatasetError, match=r"frankfurt_000000_000294_gtFine_labelIds\.png: has no image"):
        convert(copy, tmp_path / "out")


def test_misnamed_file(copy, tmp_path):
    (copy / "leftImg8bit" / "train" / "bochum" / "bochum_000000_000313_leftImg8bit.png").rename(
        copy / "leftImg8bit" / "train" / "bochum" / "aachen_000000_000313_leftImg8bit.png")
    with pytest.raises(DatasetError, match="unexpected file name; expected bochum_<seq>_<frame>"):
        convert(copy, tmp_path / "out")


def test_wrong_label_values_and_sizes(copy, tmp_path):
    label = copy / "gtFine" / "train" / "aachen" / "aachen_000000_000019_gtFine_labelIds.png"
    Image.fromarray(np.full((H, W), 250, np.uint8)).save(label)  # e.g. a train-id file
    with pytest.raises(DatasetError, match=r"values \[250\] are no Cityscapes label ids"):
        convert(copy, tmp_path / "out", size=(64, 32))
    disp = copy / "disparity" / "val" / "munster" / "munster_000000_000019_disparity.png"
    Image.fromarray(np.zeros((H, W + 2), np.uint16)).save(disp)
    Image.fromarray(fake_frame("aachen", 0)[1]).save(label)
    with pytest.raises(DatasetError, match=r"size 258x128 \(WxH\) does not match its image"):
        convert(copy, tmp_path / "out", size=(64, 32), force=True)


def test_missing_cityscapesscripts_is_a_clear_error(monkeypatch, source, tmp_path):
    import sys

    monkeypatch.setitem(sys.modules, "cityscapesscripts.helpers.labels", None)
    cityscapes.label_id_to_train_id.cache_clear()
    try:
        with pytest.raises(ConvertError, match=r"needs the cityscapesscripts package: pip install"):
            convert(source, tmp_path / "out")
    finally:
        monkeypatch.undo()
        cityscapes.label_id_to_train_id.cache_clear()


def test_disparity_formula_and_crop_box():
    b, fx = 0.2, 2000.0
    p = np.array([0, 1, 2, 257, 513, 65535], np.uint16)
    np.testing.assert_allclose(cityscapes.disparity_to_depth(p, b, fx),
                               [0, 0, b * fx * 256, b * fx, b * fx / 2, b * fx * 256 / 65534],
                               rtol=1e-6)
    # Cityscapes' 2048x1024 is 2:1 like the course's 720x360: scaled whole, nothing cut off
    assert cityscapes.crop_box((2048, 1024), (720, 360)) == (0, 0, 2048, 1024)
    assert cityscapes.crop_box((2048, 1024), (512, 512)) == (512, 0, 1536, 1024)


def test_label_table_is_cityscapesscripts(source):
    lut = cityscapes.label_id_to_train_id()
    for label_id, train_id in TRAIN_ID.items():
        assert lut[label_id] == train_id
    assert lut[34] == 255 and lut.dtype == np.uint8


# ---- the output folder ----------------------------------------------------------------------------
def test_output_is_never_silently_overwritten(source, tmp_path):
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep me")
    with pytest.raises(ConvertError, match="not empty and has no meta.json"):
        convert(source, mine, size=(64, 32), force=True)
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]

    out = tmp_path / "out"
    report = {}
    convert(source, out, size=(64, 32), report=report)
    first = (out / "val" / "depth" / "1.png").read_bytes()
    convert(source, out, size=(64, 32), report=report)
    assert report["converted"] == 0  # complete: nothing to do
    (out / "val" / "depth" / "1.png").unlink()  # an interrupted run: only the gap is filled
    convert(source, out, size=(64, 32), report=report)
    assert report["converted"] == 1 and (out / "val" / "depth" / "1.png").read_bytes() == first

    with pytest.raises(ConvertError, match=r"other settings \(width 64 → 96, height 32 → 48\).*--force"):
        convert(source, out, size=(96, 48))
    assert MiniscapesSplit(out, "train").image_size == (32, 64)
    convert(source, out, size=(96, 48), force=True, report=report)
    assert report["converted"] == 6 and MiniscapesSplit(out, "train").image_size == (48, 96)


def test_synthetic_set_is_not_replaced(tiny_root, source):
    before = (tiny_root / "meta.json").read_text()
    with pytest.raises(ConvertError, match="not written by cvaia.data.cityscapes"):
        convert(source, tiny_root, size=(64, 32), force=True)
    assert (tiny_root / "meta.json").read_text() == before


# ---- command line ---------------------------------------------------------------------------------
def test_cli(source, tmp_path, capsys):
    from cvaia.__main__ import main

    out = tmp_path / "cli"
    assert main(["convert", "cityscapes", "--root", str(source), "--out", str(out),
                 "--size", "64x32", "--quiet", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "6 Cityscapes frames" in printed and "train 3, val 2, test 1" in printed
    assert MiniscapesSplit(out, "test").image_size == (32, 64)
    assert main(["convert", "cityscapes", "--root", str(tmp_path / "nowhere"), "--out",
                 str(tmp_path / "x"), "--quiet"]) == 1
    assert "Cityscapes root not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main(["convert", "cityscapes", "--root", str(source), "--out", str(out), "--size", "64"])
    assert exc.value.code == 2 and "expected WIDTHxHEIGHT" in capsys.readouterr().err
