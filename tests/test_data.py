"""Tests of the miniscapes reader, preloading, batched augmentation and the reference data path.

The data sets are written here with the course writers of :mod:`cvaia.data.encoding`, so the
tests know exactly what the files hold.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cvaia.config import make_config
from cvaia.data.augment import BatchAugment, depth_from_codes, prepare_eval_batch, val_crop
from cvaia.data.encoding import (
    DEPTH_MAX,
    DEPTH_MIN,
    IMAGENET_MEAN,
    IMAGENET_STD,
    depth_lut,
    encode_depth,
    normalize_rgb,
    write_depth_png,
    write_rgb_jpg,
    write_semseg_png,
)
from cvaia.data.miniscapes import DatasetError, MiniscapesSplit, SplitTensors, load_split_tensors
from cvaia.data.reference import ReferenceDataset

H, W = 48, 80
_INV_STEP = (1 / DEPTH_MIN - 1 / DEPTH_MAX) / 254  # one depth code in 1/metres


def make_sample(rng, h=H, w=W):
    """A smooth rgb image, labels 0..18 with some 255, depth in metres with invalid pixels."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // w, y * 255 // h, (x + y) % 256], axis=-1).astype(np.uint8)
    semseg = rng.integers(0, 19, size=(h, w))
    semseg[rng.random((h, w)) < 0.1] = 255
    depth = np.exp(rng.uniform(np.log(3.0), np.log(400.0), size=(h, w)))  # some outside 4..300
    depth[:2] = np.nan  # a band of "sky"
    return rgb, semseg, depth


def write_split(root, split, n, labels=True, seed=0, h=H, w=W):
    """Write ``n`` samples of one split; return the arrays written."""
    rng = np.random.default_rng(seed)
    folders = ("rgb", "semseg", "depth") if labels else ("rgb",)
    for name in folders:
        (root / split / name).mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(n):
        rgb, semseg, depth = make_sample(rng, h, w)
        write_rgb_jpg(root / split / "rgb" / f"{i}.jpg", rgb)
        if labels:
            write_semseg_png(root / split / "semseg" / f"{i}.png", semseg)
            write_depth_png(root / split / "depth" / f"{i}.png", depth)
        written.append((rgb, semseg, depth))
    return written


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("miniscapes")
    written = {"train": write_split(root, "train", 6, seed=1),
               "val": write_split(root, "val", 3, seed=2),
               "test": write_split(root, "test", 2, labels=False, seed=3)}
    return root, written


# ---- reader ------------------------------------------------------------------------------------
def test_reader_round_trips_the_encodings(data_root):
    root, written = data_root
    split = MiniscapesSplit(root, "train")
    for i, (rgb, semseg, depth) in enumerate(written["train"]):
        sample = split.read(i)
        assert set(sample) == {"rgb", "semseg", "depth"}
        assert sample["rgb"].dtype == np.uint8 and sample["rgb"].shape == (H, W, 3)
        with Image.open(root / "train" / "rgb" / f"{i}.jpg") as img:
            np.testing.assert_array_equal(sample["rgb"], np.asarray(img.convert("RGB")))
        assert np.abs(sample["rgb"].astype(int) - rgb).mean() < 3  # JPEG is lossy, but close

        assert sample["semseg"].dtype == np.int64
        np.testing.assert_array_equal(sample["semseg"], semseg)
        assert (sample["semseg"] == 255).any()

        d = sample["depth"]
        assert d.dtype == np.float32
        with np.errstate(invalid="ignore"):
            valid = np.isfinite(depth) & (depth >= DEPTH_MIN) & (depth <= DEPTH_MAX)
        np.testing.assert_array_equal(d > 0, valid)
        # Truncation: the decoded disparity is at most one code below the true one.
        gap = 1 / depth[valid] - 1 / d[valid].astype(np.float64)
        assert gap.min() > -2e-3 * _INV_STEP and gap.max() < _INV_STEP * 1.001  # encoder epsilon: 1e-3 code

    raw = split.read_raw(0)
    assert set(raw) == {"rgb", "semseg", "depth_codes"}
    assert all(a.dtype == np.uint8 for a in raw.values())
    np.testing.assert_array_equal(raw["depth_codes"], encode_depth(written["train"][0][2]))


def test_split_size_and_properties(data_root):
    root, _ = data_root
    train, val = MiniscapesSplit(root, "train"), MiniscapesSplit(root, "val")
    assert (len(train), len(val)) == (6, 3)
    assert train.image_size == (H, W)
    assert train.has_semseg and train.has_depth
    np.testing.assert_array_equal(train[5]["semseg"], train.read(-1)["semseg"])
    with pytest.raises(IndexError):
        train.read(6)
    assert sum(1 for _ in val) == 3  # iteration stops at IndexError
    assert train.preload_nbytes() == 6 * H * W * 5
    assert train.preload_nbytes(max_images=2) == 2 * H * W * 5


def test_test_split_without_labels(data_root):
    root, _ = data_root
    test = MiniscapesSplit(root, "test")
    assert len(test) == 2 and not test.has_semseg and not test.has_depth
    assert set(test.read(1)) == {"rgb"} and set(test.read_raw(1)) == {"rgb"}
    tensors = load_split_tensors(root, "test")
    assert tensors.semseg is None and tensors.depth_codes is None and tensors.rgb.shape == (2, 3, H, W)


# ---- bad inputs: each gives a DatasetError naming the file or folder ------------------------
def _small_root(tmp_path, n=4):
    write_split(tmp_path, "train", n, seed=5, h=16, w=24)
    return tmp_path


def _write_png(path, array, mode):
    Image.fromarray(np.asarray(array, dtype=np.uint8)).convert(mode).save(path)


def _gap_in_rgb(root):
    (root / "train" / "rgb" / "2.jpg").unlink()
    return root / "train" / "rgb", "2.jpg"


def _label_without_rgb(root):
    (root / "train" / "rgb" / "3.jpg").unlink()  # last index: only the labels still have it
    return root / "train" / "rgb", "3.jpg"


def _incomplete_semseg(root):
    (root / "train" / "semseg" / "1.png").unlink()
    return root / "train" / "semseg", "1.png"


def _bad_file_name(root):
    (root / "train" / "rgb" / "extra.jpg").write_bytes(b"")
    return root / "train" / "rgb" / "extra.jpg", "<index>.jpg"


def _duplicate_index_with_leading_zero(root):
    # Regression: "01.jpg" next to "1.jpg" crashed with an IndexError instead of a DatasetError.
    (root / "train" / "rgb" / "01.jpg").write_bytes((root / "train" / "rgb" / "1.jpg").read_bytes())
    return root / "train" / "rgb" / "01.jpg", "no leading zeros"


def _zero_padded_name(root):
    # "00.jpg" would be accepted as index 0, then "0.jpg" is never found when reading.
    (root / "train" / "rgb" / "0.jpg").rename(root / "train" / "rgb" / "00.jpg")
    return root / "train" / "rgb" / "00.jpg", "no leading zeros"


def _non_ascii_digit_name(root):
    # Regression: "².jpg" passed str.isdigit() and then crashed int() with a ValueError.
    (root / "train" / "rgb" / "\u00b2.jpg").write_bytes(b"")
    return root / "train" / "rgb" / "\u00b2.jpg", "<index>.jpg"


def _no_rgb_folder(root):
    for f in (root / "train" / "rgb").iterdir():
        f.unlink()
    (root / "train" / "rgb").rmdir()
    return root / "train" / "rgb", "rgb folder not found"


def _empty_rgb_folder(root):
    for f in (root / "train" / "rgb").iterdir():
        f.rename(f.with_suffix(".png"))
    return root / "train" / "rgb", "no <index>.jpg files"


@pytest.mark.parametrize("damage", [_gap_in_rgb, _label_without_rgb, _incomplete_semseg, _bad_file_name,
                                    _duplicate_index_with_leading_zero, _zero_padded_name,
                                    _non_ascii_digit_name, _no_rgb_folder, _empty_rgb_folder])
def test_bad_layout_is_reported_on_open(tmp_path, damage):
    root = _small_root(tmp_path)
    where, what = damage(root)
    with pytest.raises(DatasetError) as e:
        MiniscapesSplit(root, "train")
    assert str(where) in str(e.value) and what in str(e.value)


def test_missing_root_split_and_unknown_split(tmp_path):
    with pytest.raises(DatasetError, match="data set root not found") as e:
        MiniscapesSplit(tmp_path / "nowhere", "train")
    assert str(tmp_path / "nowhere") in str(e.value)
    root = _small_root(tmp_path)
    with pytest.raises(DatasetError, match="split folder not found") as e:
        MiniscapesSplit(root, "val")
    assert str(root / "val") in str(e.value)
    with pytest.raises(DatasetError, match="unknown split"):
        MiniscapesSplit(root, "training")


def _corrupt_rgb(root):
    path = root / "train" / "rgb" / "1.jpg"
    path.write_bytes(b"this is not a JPEG")
    return path, "cannot read the rgb image"


def _truncated_rgb(root):
    path = root / "train" / "rgb" / "1.jpg"
    path.write_bytes(path.read_bytes()[:200])
    return path, "cannot read the rgb image"


def _grey_rgb(root):
    path = root / "train" / "rgb" / "1.jpg"
    Image.new("L", (24, 16)).save(path)
    return path, "mode RGB"


def _semseg_rgb_mode(root):
    path = root / "train" / "semseg" / "1.png"
    _write_png(path, np.zeros((16, 24)), "RGB")
    return path, "mode P or L"


def _semseg_bad_ids(root):
    path = root / "train" / "semseg" / "1.png"
    ids = np.zeros((16, 24))
    ids[3, 4] = 19
    ids[5, 6] = 40
    _write_png(path, ids, "L")
    return path, "found [19, 40]"


def _depth_wrong_mode(root):
    path = root / "train" / "depth" / "1.png"
    _write_png(path, np.full((16, 24), 100), "P")
    return path, "mode L"


def _depth_16_bit(root):
    path = root / "train" / "depth" / "1.png"
    Image.fromarray(np.full((16, 24), 1000, dtype=np.uint16)).save(path)
    return path, "mode L"


def _semseg_size_mismatch(root):
    path = root / "train" / "semseg" / "1.png"
    write_semseg_png(path, np.zeros((16, 20)))
    return path, "does not match its rgb image"


def _depth_size_mismatch(root):
    path = root / "train" / "depth" / "1.png"
    write_depth_png(path, np.full((12, 24), 10.0))
    return path, "does not match its rgb image"


@pytest.mark.parametrize("damage", [_corrupt_rgb, _truncated_rgb, _grey_rgb, _semseg_rgb_mode,
                                    _semseg_bad_ids, _depth_wrong_mode, _depth_16_bit,
                                    _semseg_size_mismatch, _depth_size_mismatch])
def test_bad_file_is_reported_on_read(tmp_path, damage):
    root = _small_root(tmp_path)
    path, what = damage(root)
    split = MiniscapesSplit(root, "train")
    split.read(0)  # the other samples are fine
    for read in (split.read, split.read_raw):
        with pytest.raises(DatasetError) as e:
            read(1)
        assert str(path) in str(e.value) and what in str(e.value)
    with pytest.raises(DatasetError) as e:
        load_split_tensors(root, "train", workers=2)
    assert str(path) in str(e.value)


def test_file_removed_after_opening(tmp_path):
    root = _small_root(tmp_path)
    split = MiniscapesSplit(root, "train")
    (root / "train" / "depth" / "2.png").unlink()
    with pytest.raises(DatasetError, match="file not found") as e:
        split.read(2)
    assert str(root / "train" / "depth" / "2.png") in str(e.value)


def test_mixed_image_sizes_rejected_by_preload(tmp_path):
    root = _small_root(tmp_path)
    rng = np.random.default_rng(0)
    rgb, semseg, depth = make_sample(rng, 16, 32)
    write_rgb_jpg(root / "train" / "rgb" / "2.jpg", rgb)
    write_semseg_png(root / "train" / "semseg" / "2.png", semseg)
    write_depth_png(root / "train" / "depth" / "2.png", depth)
    MiniscapesSplit(root, "train").read(2)  # consistent on its own
    with pytest.raises(DatasetError, match="one size") as e:
        load_split_tensors(root, "train")
    assert str(root / "train" / "rgb" / "2.jpg") in str(e.value)


# ---- preloading ----------------------------------------------------------------------------------
def test_load_split_tensors_matches_read_raw(data_root):
    root, _ = data_root
    split = MiniscapesSplit(root, "train")
    t = load_split_tensors(root, "train", workers=2)
    assert isinstance(t, SplitTensors) and len(t) == 6 and t.split == "train"
    assert t.rgb.shape == (6, 3, H, W) and t.rgb.dtype == torch.uint8
    assert t.semseg.shape == (6, H, W) and t.semseg.dtype == torch.uint8
    assert t.depth_codes.shape == (6, H, W) and t.depth_codes.dtype == torch.uint8
    assert t.nbytes == split.preload_nbytes()
    for i in range(6):
        raw = split.read_raw(i)
        np.testing.assert_array_equal(t.rgb[i].permute(1, 2, 0).numpy(), raw["rgb"])
        np.testing.assert_array_equal(t.semseg[i].numpy(), raw["semseg"])
        np.testing.assert_array_equal(t.depth_codes[i].numpy(), raw["depth_codes"])
    # Decoding on the device with the table gives the reader's metres.
    np.testing.assert_array_equal(depth_from_codes(t.depth_codes[2]).numpy(), split.read(2)["depth"])

    first = load_split_tensors(root, "train", max_images=4, workers=1, progress=False)
    assert len(first) == 4 and torch.equal(first.rgb, t.rgb[:4])
    with pytest.raises(DatasetError, match="max_images"):
        load_split_tensors(root, "train", max_images=-1)


def test_load_split_tensors_cache_is_never_stale(tmp_path):
    root = _small_root(tmp_path)
    first = load_split_tensors(root, "train", cache=True)
    assert (root / ".cache" / "train-4.pt").is_file()
    again = load_split_tensors(root, "train", cache=True)
    assert torch.equal(first.semseg, again.semseg) and torch.equal(first.rgb, again.rgb)
    # Change a label file: the cache must not be used.
    write_semseg_png(root / "train" / "semseg" / "0.png", np.full((16, 24), 7))
    changed = load_split_tensors(root, "train", cache=True)
    assert (changed.semseg[0] == 7).all()
    assert torch.equal(changed.semseg[1:], first.semseg[1:])


# ---- batched augmentation ------------------------------------------------------------------------
def _batch(b=4, h=40, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    rgb = torch.randint(0, 256, (b, 3, h, w), dtype=torch.uint8, generator=g)
    semseg = torch.randint(0, 19, (b, h, w), dtype=torch.uint8, generator=g)
    semseg[:, :3] = 255
    depth = 4 + 100 * torch.rand(b, h, w, generator=g)
    return rgb, semseg, depth


def test_plain_crop_is_exact():
    rgb, semseg, depth = _batch()
    aug = BatchAugment(24)
    assert not aug.geometric
    y0, x0, flip = aug.sample_crops(4, 40, 56, torch.Generator().manual_seed(3))
    assert not flip.any()
    out = aug(rgb, semseg, depth, generator=torch.Generator().manual_seed(3))
    for b in range(4):
        ys, xs = slice(int(y0[b]), int(y0[b]) + 24), slice(int(x0[b]), int(x0[b]) + 24)
        assert torch.equal(out[0][b], normalize_rgb(rgb[b, :, ys, xs]))
        assert torch.equal(out[1][b], semseg[b, ys, xs].long())
        assert torch.equal(out[2][b, 0], depth[b, ys, xs])
    assert out[0].dtype == torch.float32 and out[1].dtype == torch.int64 and out[2].dtype == torch.float32
    assert len({(int(a), int(b)) for a, b in zip(y0, x0, strict=True)}) > 1  # positions differ per sample


def test_labels_optional():
    rgb, _, _ = _batch()
    for aug in (BatchAugment(16), BatchAugment(16, tilt_max_deg=5)):
        x, s, d = aug(rgb, None, None, torch.Generator().manual_seed(0))
        assert x.shape == (4, 3, 16, 16) and s is None and d is None


def test_warp_with_a_translation_equals_the_crop():
    """The homography convention: an integer shift samples exact pixel centres."""
    rgb, semseg, depth = _batch()
    homog = torch.eye(3, dtype=torch.float64).repeat(4, 1, 1)
    homog[:, 0, 2], homog[:, 1, 2] = 5, 9
    x, s, d = BatchAugment(24).warp(rgb, semseg, depth, homog)
    torch.testing.assert_close(x, normalize_rgb(rgb[:, :, 9:33, 5:29]), atol=1e-4, rtol=0)
    assert torch.equal(s, semseg[:, 9:33, 5:29].long())
    assert torch.equal(d[:, 0], depth[:, 9:33, 5:29])


@pytest.mark.parametrize("geometric", [False, True])
def test_reflect_flips(geometric):
    # Image as large as the crop: the only randomness left is the flip.
    rgb, semseg, depth = _batch(b=16, h=32, w=32)
    opts = dict(scale_min=1.0, scale_max=1.0 + 1e-9) if geometric else {}
    aug = BatchAugment(32, reflect=True, **opts)
    assert aug.geometric == geometric
    x, s, d = aug(rgb, semseg, depth, torch.Generator().manual_seed(0))
    ref = normalize_rgb(rgb)
    flipped = []
    for b in range(16):
        if torch.equal(s[b], semseg[b].long()):
            flipped.append(False)
            torch.testing.assert_close(x[b], ref[b], atol=1e-4, rtol=0)
            assert torch.equal(d[b, 0], depth[b])
        else:
            flipped.append(True)
            assert torch.equal(s[b], semseg[b].long().flip(-1))
            torch.testing.assert_close(x[b], ref[b].flip(-1), atol=1e-4, rtol=0)
            assert torch.equal(d[b, 0], depth[b].flip(-1))
    assert any(flipped) and not all(flipped)


FULL = dict(scale_min=0.7, scale_max=1.6, tilt_max_deg=25, wiggle_max_ratio=0.15, reflect=True)


def test_labels_stay_legal_and_outside_is_filled():
    rgb, semseg, depth = _batch(b=8)
    # A crop larger than the image and strong tilt: much of the output is outside the image.
    x, s, d = BatchAugment(64, **FULL)(rgb, semseg, depth, torch.Generator().manual_seed(1))
    assert x.shape == (8, 3, 64, 64) and s.shape == (8, 64, 64) and d.shape == (8, 1, 64, 64)
    values = set(s.unique().tolist())
    assert values <= set(range(19)) | {255} and len(values) == 20
    # Depth only takes values of the input (nearest), or 0 outside.
    outside = d[:, 0] == 0
    assert outside.float().mean() > 0.1
    assert torch.isin(d[:, 0][~outside], depth).all()
    # Outside the image: semseg ignore and rgb = mean colour (0 after normalisation; pixels
    # within half a pixel of the border still blend with the image, bilinearly).
    assert (s[outside] == 255).all()
    assert (x.permute(0, 2, 3, 1)[outside] == 0).all(-1).float().mean() > 0.8


def test_plain_crop_larger_than_image_is_filled():
    rgb, semseg, depth = _batch(h=20, w=30)
    x, s, d = BatchAugment(32)(rgb, semseg, depth, torch.Generator().manual_seed(0))
    outside = d[:, 0] == 0
    assert outside.sum(dim=(1, 2)).tolist() == [32 * 32 - 20 * 30] * 4
    assert (s[outside] == 255).all() and (x.permute(0, 2, 3, 1)[outside] == 0).all()


def test_determinism_with_seeded_generator():
    rgb, semseg, depth = _batch()
    aug = BatchAugment(24, **FULL)
    a = aug(rgb, semseg, depth, torch.Generator().manual_seed(42))
    b = aug(rgb, semseg, depth, torch.Generator().manual_seed(42))
    c = aug(rgb, semseg, depth, torch.Generator().manual_seed(43))
    assert all(torch.equal(u, v) for u, v in zip(a, b, strict=True))
    assert not torch.equal(a[1], c[1])


def test_rotation_keeps_rgb_and_labels_aligned():
    """rgb encodes each pixel's position; labels and depth are functions of the position.

    Bilinear interpolation reproduces the linear rgb ramps exactly, so the sampled rgb tells
    where each output pixel came from; the nearest-neighbour labels must be those of that
    position rounded.
    """
    h, w = 96, 128
    y, x = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    rgb = torch.stack([x, y, torch.zeros_like(x)]).to(torch.uint8).expand(4, 3, h, w).contiguous()
    semseg = ((x // 8 + y // 8) % 19).to(torch.uint8).expand(4, h, w).contiguous()
    depth = (1000 * y + x + 1).float().expand(4, h, w).contiguous()

    aug = BatchAugment(48, **FULL)
    xo, so, do = aug(rgb, semseg, depth, torch.Generator().manual_seed(7))
    mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
    pos = xo * std + mean  # back to 0..255: channel 0 = source x, channel 1 = source y
    px, py = pos[:, 0], pos[:, 1]
    # Away from the image border (where bilinear blends with the fill) and from rounding ties.
    inner = (px > 1) & (px < w - 2) & (py > 1) & (py < h - 2)
    clear = ((px - px.floor() - 0.5).abs() > 0.02) & ((py - py.floor() - 0.5).abs() > 0.02)
    keep = inner & clear
    assert keep.float().mean() > 0.5
    rx, ry = px.round().long(), py.round().long()
    assert torch.equal(so[keep], ((rx // 8 + ry // 8) % 19)[keep])
    assert torch.equal(do[:, 0][keep], (1000 * ry + rx + 1).float()[keep])
    # The augmentation really rotated: the source row changes along an output row.
    assert (py[:, :, 1:] - py[:, :, :-1]).abs().amax() > 0.1


def test_from_config_and_argument_checks():
    cfg = make_config(aug_input_crop_size=96, aug_geom_scale_min=0.5, aug_geom_scale_max=2,
                      aug_geom_tilt_max_deg=10, aug_geom_wiggle_max_ratio=0.1, aug_geom_reflect=True)
    aug = BatchAugment.from_config(cfg)
    assert (aug.crop_size, aug.scale_min, aug.scale_max, aug.tilt_max_deg, aug.wiggle_max_ratio,
            aug.reflect) == (96, 0.5, 2.0, 10.0, 0.1, True)
    assert not BatchAugment.from_config(make_config()).geometric
    with pytest.raises(ValueError, match="aug_geom_wiggle_max_ratio"):
        BatchAugment(32, wiggle_max_ratio=0.7)
    with pytest.raises(ValueError, match="aug_input_crop_size"):
        BatchAugment(0)
    rgb, semseg, _ = _batch()
    with pytest.raises(ValueError, match="semseg must be a B×H×W tensor"):
        BatchAugment(16)(rgb, semseg[:, :10])
    with pytest.raises(ValueError, match="rgb must be"):
        BatchAugment(16)(rgb[:, 0])


def test_val_crop_and_eval_batch():
    assert val_crop(torch.zeros(2, 3, 360, 720)).shape == (2, 3, 352, 704)
    assert val_crop(torch.zeros(64, 128)).shape == (64, 128)
    assert val_crop(torch.zeros(5, 70, 33)).shape == (5, 64, 32)
    with pytest.raises(ValueError, match="smaller than 32"):
        val_crop(torch.zeros(1, 20, 64))

    rgb, semseg, _ = _batch(h=40, w=70)
    codes = torch.randint(0, 256, (4, 40, 70), dtype=torch.uint8)
    x, s, d = prepare_eval_batch(rgb, semseg, codes)
    assert x.shape == (4, 3, 32, 64) and s.shape == (4, 32, 64) and d.shape == (4, 1, 32, 64)
    assert s.dtype == torch.int64 and d.dtype == torch.float32
    assert torch.equal(x, normalize_rgb(rgb[:, :, :32, :64]))
    assert torch.equal(d[:, 0], torch.from_numpy(depth_lut()[codes[:, :32, :64].numpy()]))
    x2, s2, d2 = prepare_eval_batch(rgb, lut=torch.from_numpy(depth_lut()))
    assert torch.equal(x2, x) and s2 is None and d2 is None


# ---- reference (per-sample) path ---------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, {"aug_geom_scale_min": 0.8, "aug_geom_scale_max": 1.5,
                                          "aug_geom_tilt_max_deg": 20, "aug_geom_wiggle_max_ratio": 0.1,
                                          "aug_geom_reflect": True}])
def test_reference_dataset_training_samples(data_root, options):
    root, _ = data_root
    cfg = make_config(aug_input_crop_size=32, **options)
    torch.manual_seed(0)
    data = ReferenceDataset(root, "train", cfg)
    assert len(data) == 6
    semseg_in = torch.from_numpy(MiniscapesSplit(root, "train").read(0)["semseg"])
    for i in range(len(data)):
        rgb, semseg, depth = data[i]
        assert rgb.shape == (3, 32, 32) and rgb.dtype == torch.float32 and type(rgb) is torch.Tensor
        assert semseg.shape == (32, 32) and semseg.dtype == torch.int64
        assert depth.shape == (1, 32, 32) and depth.dtype == torch.float32
        assert set(semseg.unique().tolist()) <= set(range(19)) | {255}
        assert depth.min() >= 0 and torch.isin(depth[depth > 0], torch.from_numpy(depth_lut())).all()
    if not options:  # a plain crop: every label window occurs in the image
        _, semseg, _ = data[0]
        windows = semseg_in.unfold(0, 32, 1).unfold(1, 32, 1)
        assert (windows == semseg).all(-1).all(-1).any()


def test_reference_dataset_eval_and_limits(data_root):
    root, _ = data_root
    data = ReferenceDataset(root, "val", make_config(max_val_images=2), train=False)
    assert len(data) == 2
    rgb, semseg, depth = data[1]
    sample = MiniscapesSplit(root, "val").read(1)
    assert rgb.shape == (3, 32, 64) and semseg.shape == (32, 64) and depth.shape == (1, 32, 64)
    assert torch.equal(semseg, torch.from_numpy(sample["semseg"][:32, :64]))
    assert torch.equal(depth[0], torch.from_numpy(sample["depth"][:32, :64]))
    torch.testing.assert_close(rgb, normalize_rgb(torch.from_numpy(sample["rgb"]).permute(2, 0, 1)[:, :32, :64]))
    with pytest.raises(IndexError):
        data[2]
    with pytest.raises(DatasetError, match="needs semseg/ and depth/"):
        ReferenceDataset(root, "test", make_config(), train=False)


# ---- the shared synthetic set (written by cvaia.data.synth) ------------------------------------
def test_reads_the_synthetic_set(request):
    synth = pytest.importorskip("cvaia.data.synth")
    if not hasattr(synth, "generate"):
        pytest.skip("cvaia.data.synth.generate is not written yet")
    root = request.getfixturevalue("tiny_root")
    lengths = {s: len(MiniscapesSplit(root, s)) for s in ("train", "val", "test")}
    assert lengths == {"train": 12, "val": 4, "test": 4}
    t = load_split_tensors(root, "train", max_images=3, workers=1)
    assert t.rgb.shape == (3, 3, 64, 128)
    raw = MiniscapesSplit(root, "train").read_raw(2)
    np.testing.assert_array_equal(t.semseg[2].numpy(), raw["semseg"])
    x, s, d = BatchAugment(32, **FULL)(t.rgb, t.semseg, depth_from_codes(t.depth_codes),
                                       torch.Generator().manual_seed(0))
    assert x.shape == (3, 3, 32, 32) and s.shape == (3, 32, 32) and d.shape == (3, 1, 32, 32)


def test_augment_makes_no_tensors_from_python_data(monkeypatch):
    """Regression: normalisation constants, the crop's corners and the grid scale used to be
    built with ``torch.tensor(...)`` on every call. On CUDA each such tensor is a blocking
    host→device copy (a sync per training step), so the per-step path must build none: the
    constants are cached per device, the rest is made on the device."""
    from cvaia.data import augment as augment_module
    from cvaia.data import encoding

    rgb, semseg, depth = _batch()
    codes = torch.randint(0, 256, (4, 40, 56), dtype=torch.uint8)
    aug_plain, aug_geom = BatchAugment(24, reflect=True), BatchAugment(24, **FULL)
    outputs = []

    def step():
        outputs.append([aug(rgb, semseg, depth, generator=torch.Generator().manual_seed(1))
                        for aug in (aug_plain, aug_geom)])
        outputs[-1].append(prepare_eval_batch(rgb, semseg, codes))
        outputs[-1].append(depth_from_codes(codes))

    step()  # fills the per-device caches

    def forbidden(*args, **kwargs):
        raise AssertionError("a tensor was built from Python data in the per-step path")

    monkeypatch.setattr(torch, "tensor", forbidden)
    monkeypatch.setattr(torch, "from_numpy", forbidden)
    monkeypatch.setattr(torch, "as_tensor", forbidden)
    monkeypatch.setattr(torch.linalg, "solve", forbidden)  # syncs on CUDA; solve_ex does not
    step()
    monkeypatch.undo()
    # ... and the cached constants give the same numbers as building them afresh.
    for a, b in zip(outputs[0], outputs[1], strict=True):
        for u, v in zip(a if isinstance(a, tuple) else (a,), b if isinstance(b, tuple) else (b,), strict=True):
            assert torch.equal(u, v)
    m = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    s = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    assert torch.equal(normalize_rgb(rgb), (rgb.float() - m) / s)
    assert torch.equal(depth_from_codes(codes), torch.from_numpy(depth_lut())[codes.long()])
    assert encoding.depth_lut_tensor("cpu") is encoding.depth_lut_tensor("cpu")
    assert augment_module.depth_lut_tensor is encoding.depth_lut_tensor


def test_cached_constants_work_with_autograd_after_inference_mode():
    """The cached constants may first be made under inference_mode (evaluation); they must
    still be usable when the input needs gradients (e.g. saliency maps) afterwards."""
    from cvaia.data import encoding

    encoding._normalization_constants.cache_clear()
    with torch.inference_mode():
        normalize_rgb(torch.zeros(1, 3, 2, 2))  # fills the cache inside inference mode
    x = torch.full((1, 3, 2, 2), 100.0, requires_grad=True)
    normalize_rgb(x).sum().backward()
    torch.testing.assert_close(x.grad[0, :, 0, 0], 1 / torch.tensor(IMAGENET_STD))


def test_augment_input_checks_name_what_was_expected():
    rgb, semseg, depth = _batch()
    aug = BatchAugment(24)
    with pytest.raises(ValueError, match="rgb must be uint8"):
        aug(normalize_rgb(rgb), semseg, depth)
    with pytest.raises(ValueError, match="depth must be float metres.*depth_from_codes"):
        aug(rgb, semseg, depth.to(torch.uint8))
    with pytest.raises(ValueError, match="semseg must hold integer class ids"):
        aug(rgb, semseg.float(), depth)
    with pytest.raises(ValueError, match="semseg must be a B×H×W tensor"):
        aug(rgb, semseg[:, :-1], depth)
