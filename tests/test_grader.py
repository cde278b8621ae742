"""The local grader, the score command and prediction export (on a tiny hand-made split)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cvaia.__main__ import main
from cvaia.data.encoding import decode_depth, write_rgb_jpg, write_semseg_png
from cvaia.grader import GraderError, export_predictions, score_predictions

H, W, N = 40, 72, 3  # deliberately not multiples of 32: export must pad and crop
PRESENT = 18  # classes 0..17 appear in the ground truth, class 18 never does


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A val split of 3 images; image 2 has no valid depth pixel."""
    root = tmp_path_factory.mktemp("grader") / "root"
    rng = np.random.default_rng(0)
    semseg, codes = [], []
    for d in ("rgb", "semseg", "depth"):
        (root / "val" / d).mkdir(parents=True)
    for i in range(N):
        ids = rng.integers(0, PRESENT, (H, W)).astype(np.uint8)
        ids[rng.random((H, W)) < 0.1] = 255
        c = rng.integers(1, 256, (H, W)).astype(np.uint8)
        c[rng.random((H, W)) < 0.2] = 0
        if i == 2:
            c[:] = 0
        write_rgb_jpg(root / "val" / "rgb" / f"{i}.jpg", rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
        write_semseg_png(root / "val" / "semseg" / f"{i}.png", ids)
        Image.fromarray(c, mode="L").save(root / "val" / "depth" / f"{i}.png")
        semseg.append(ids)
        codes.append(c)
    return {"root": root, "semseg": np.stack(semseg), "codes": np.stack(codes)}


def _write_perfect(data, out, tasks=("semseg", "depth")):
    """Ground truth as predictions (ignore pixels predicted as class 0)."""
    for t in tasks:
        (out / t).mkdir(parents=True, exist_ok=True)
    for i in range(N):
        if "semseg" in tasks:
            write_semseg_png(out / "semseg" / f"{i}.png", np.where(data["semseg"][i] == 255, 0, data["semseg"][i]))
        if "depth" in tasks:
            Image.fromarray(np.maximum(data["codes"][i], 1), mode="L").save(out / "depth" / f"{i}.png")
    return out


def test_perfect_predictions(data, tmp_path):
    r = score_predictions(data["root"], "val", _write_perfect(data, tmp_path / "pred"))
    assert r["per_class_iou"] == [100.0] * PRESENT + [0.0]  # the absent class counts 0
    assert r["miou"] == pytest.approx(100.0 * PRESENT / 19)
    assert r["pixel_accuracy"] == 100.0
    assert r["si_log_rmse"] == 0.0 and r["rmse"] == 0.0 and r["delta1"] == 1.0
    assert r["num_images"] == N and r["num_depth_images"] == N - 1  # image 2 leaves the average
    assert r["score"] == pytest.approx(r["miou"] - 50 + 50)
    assert r["notes"] == []


def test_imperfect_depth_vs_reference(data, tmp_path):
    out = _write_perfect(data, tmp_path / "pred", tasks=("depth",))
    # shift image 0's codes by a constant: a different SI per image, checked against numpy
    shifted = np.clip(np.maximum(data["codes"][0], 1).astype(int) + 7, 1, 255).astype(np.uint8)
    Image.fromarray(shifted, mode="L").save(out / "depth" / "0.png")
    r = score_predictions(data["root"], "val", out)
    gt, pred = decode_depth(data["codes"][0]).astype(np.float64), decode_depth(shifted).astype(np.float64)
    ok = gt > 0
    e = np.log(gt[ok]) - np.log(pred[ok])
    si0 = 100 * np.sqrt(np.mean(e ** 2) - np.mean(e) ** 2)
    assert r["si_log_rmse"] == pytest.approx((si0 + 0.0) / 2, rel=1e-9)  # images 0 and 1; 2 has no depth
    assert r["miou"] is None and r["tasks_missing"] == ["semseg"]
    assert r["score"] == pytest.approx(50 - r["si_log_rmse"])
    assert "semseg" in r["notes"][0]


def test_cli_json_and_table(data, tmp_path, capsys):
    pred = _write_perfect(data, tmp_path / "pred", tasks=("semseg",))
    assert main(["score", "--dataset_root", str(data["root"]), "--split", "val", "--predictions", str(pred), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    for key in ("miou", "si_log_rmse", "score", "per_class_iou", "pixel_accuracy", "abs_rel", "rmse",
                "delta1", "delta2", "delta3", "num_images", "notes"):
        assert key in r
    assert r["si_log_rmse"] is None and r["score"] == pytest.approx(100 * PRESENT / 19 - 50)
    assert main(["score", "--dataset_root", str(data["root"]), "--predictions", str(pred)]) == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "bicycle" in text and "depth/ predictions" in text


def test_missing_extra_and_missized_files(data, tmp_path, capsys):
    pred = _write_perfect(data, tmp_path / "pred")
    (pred / "depth" / "1.png").unlink()
    (pred / "depth" / "7.png").write_bytes(b"")
    (pred / "depth" / "notes.txt").write_text("x")
    with pytest.raises(GraderError, match=r"missing 1 file\(s\): 1.png.*unexpected 2 file\(s\): 7.png, notes.txt"):
        score_predictions(data["root"], "val", pred)
    # the command reports it and fails
    assert main(["score", "--dataset_root", str(data["root"]), "--predictions", str(pred)]) == 2
    assert "missing 1 file(s)" in capsys.readouterr().err
    shutil.rmtree(pred / "depth")
    write_semseg_png(pred / "semseg" / "2.png", np.zeros((H, W + 1), np.uint8))
    with pytest.raises(GraderError, match=r"mis-sized 1 file\(s\): 2.png \(73x40, expected 72x40\)"):
        score_predictions(data["root"], "val", pred)


def test_extra_files_with_odd_names_are_listed(data, tmp_path):
    """Regression: a name like "².png" passed str.isdigit() and crashed int() while sorting."""
    pred = _write_perfect(data, tmp_path / "pred", tasks=("semseg",))
    (pred / "semseg" / "\u00b2.png").write_bytes(b"")
    (pred / "semseg" / "01.png").write_bytes(b"")
    with pytest.raises(GraderError, match="unexpected 2 file\\(s\\): 01.png, \u00b2.png"):
        score_predictions(data["root"], "val", pred)


def test_many_missing_files_are_summarised(data, tmp_path):
    (tmp_path / "semseg").mkdir()
    with pytest.raises(GraderError, match=r"missing 3 file\(s\): 0.png, 1.png, 2.png"):
        score_predictions(data["root"], "val", tmp_path)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(GraderError, match="no semseg/ or depth/"):
        score_predictions(data["root"], "val", empty)


def test_bad_prediction_values(data, tmp_path):
    pred = _write_perfect(data, tmp_path / "pred", tasks=("semseg",))
    Image.fromarray(np.full((H, W), 19, np.uint8), mode="L").save(pred / "semseg" / "0.png")
    with pytest.raises(GraderError, match=r"0.png: semseg predictions must be class ids 0..18, found \[19\]"):
        score_predictions(data["root"], "val", pred)
    Image.fromarray(np.zeros((H, W, 3), np.uint8), mode="RGB").save(pred / "semseg" / "0.png")
    with pytest.raises(GraderError, match="mode P or L PNG, got mode RGB"):
        score_predictions(data["root"], "val", pred)


# ---- export ----------------------------------------------------------------------------------
class Oracle(nn.Module):
    """Returns the ground truth of the next images in order (checks the padded input size)."""

    def __init__(self, semseg, codes, tasks=("semseg", "depth")):
        super().__init__()
        self.tasks = tasks
        self.semseg = torch.from_numpy(np.where(semseg == 255, 0, semseg).astype(np.int64))
        depth = decode_depth(codes)
        self.depth = torch.from_numpy(np.where(depth > 0, depth, 50.0))
        self.pos = 0
        self.dummy = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        b, _, h, w = x.shape
        assert h % 32 == 0 and w % 32 == 0 and (h, w) == (64, 96)
        sl = slice(self.pos, self.pos + b)
        self.pos += b
        pad = (0, w - W, 0, h - H)
        ids = nn.functional.pad(self.semseg[sl], pad)
        return {"semseg": nn.functional.one_hot(ids, 19).permute(0, 3, 1, 2).float() * 10,
                "depth": nn.functional.pad(self.depth[sl], pad, value=1.0)[:, None]}


def test_export_round_trip_is_perfect(data, tmp_path):
    model = Oracle(data["semseg"], data["codes"])
    out = export_predictions(model, data["root"], "val", tmp_path / "sub", batch_size=2)
    assert model.pos == N and model.training  # training mode restored
    with Image.open(out / "semseg" / "0.png") as img:
        assert img.mode == "P" and img.size == (W, H)
    r = score_predictions(data["root"], "val", out)
    assert r["miou"] == pytest.approx(100.0 * PRESENT / 19)
    assert r["si_log_rmse"] == 0.0  # decode → encode is exact on the code grid
    # refuses to overwrite predictions; overwrite=True replaces them and drops stale tasks
    with pytest.raises(GraderError, match="already holds predictions"):
        export_predictions(model, data["root"], "val", out)
    semseg_only = Oracle(data["semseg"], data["codes"], tasks=("semseg",))
    export_predictions(semseg_only, data["root"], "val", out, overwrite=True)
    assert not list((out / "depth").glob("*.png"))
    assert score_predictions(data["root"], "val", out)["tasks_scored"] == ["semseg"]


class PixelModel(nn.Module):
    """A per-pixel model (1x1 convs): mirroring the input mirrors its output."""

    tasks = ("semseg", "depth")

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.seg = nn.Conv2d(3, 19, 1)
        self.dep = nn.Conv2d(3, 1, 1)

    def forward(self, x):
        return {"semseg": self.seg(x), "depth": torch.exp(self.dep(x)).clamp(0.1, 300) * 20}


def test_export_flip_tta_of_pixelwise_model_is_unchanged(data, tmp_path):
    model = PixelModel()
    a = export_predictions(model, data["root"], "val", tmp_path / "a", batch_size=8)
    b = export_predictions(model, data["root"], "val", tmp_path / "b", batch_size=1, tta_flip=True)
    for t in ("semseg", "depth"):
        for i in range(N):
            np.testing.assert_array_equal(np.asarray(Image.open(a / t / f"{i}.png")),
                                          np.asarray(Image.open(b / t / f"{i}.png")))
    r = score_predictions(data["root"], "val", a)
    assert 0 <= r["miou"] < 20 and r["si_log_rmse"] > 0
    with pytest.raises(GraderError, match="model.tasks"):
        export_predictions(nn.Identity(), data["root"], "val", tmp_path / "c")


def test_synthetic_ground_truth_scores_perfectly(tiny_root, tmp_path):
    """The shared synthetic split, its own labels as predictions: SI 0 and IoU 100 where present."""
    gt_dir = tiny_root / "val"
    out = tmp_path / "pred"
    (out / "depth").mkdir(parents=True)
    (out / "semseg").mkdir()
    present = np.zeros(19, bool)
    for png in sorted((gt_dir / "semseg").glob("*.png")):
        ids = np.array(Image.open(png))
        present[np.unique(ids[ids < 19])] = True
        write_semseg_png(out / "semseg" / png.name, np.where(ids == 255, 0, ids))
        codes = np.array(Image.open(gt_dir / "depth" / png.name))
        Image.fromarray(np.maximum(codes, 1), mode="L").save(out / "depth" / png.name)
    r = score_predictions(tiny_root, "val", out)
    assert r["per_class_iou"] == [100.0 if p else 0.0 for p in present]
    assert r["si_log_rmse"] == 0.0 and r["num_images"] == 4
