"""Unit tests of cvaia.experiments with a small fake Run: table builders, verdict logic,
best_lr, the pretrained-encoder choices, profile configs. Nothing trains; milliseconds each."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from cvaia import experiments
from cvaia.config import make_config
from cvaia.experiments import common, p01, p02, p03, p05


class FakeRun:
    """What the experiments read from a :class:`cvaia.runs.Run`: final, history, epochs, name,
    config, checkpoint_path, predict."""

    def __init__(self, name="run-0", final=None, losses=(1.0, 0.5), silog=(80.0, 60.0), cfg=None):
        self.name = name
        self.final = dict(final or {})
        self.history = pd.DataFrame({"step": range(1, len(losses) + 1), "loss": list(losses)})
        self.epochs = pd.DataFrame({"epoch": range(1, len(silog) + 1), "si_log_rmse": list(silog)})
        self.config = cfg or make_config(num_epochs=2)

    def checkpoint_path(self, which="best"):
        return Path(f"/runs/{self.name}/checkpoints/{which}.pt")

    def predict(self, rgb):
        return {"semseg": np.zeros(rgb.shape[:3], dtype=np.int64)}


def params(problem, **given):
    return experiments.resolve(problem, {"PROFILE": "smoke", "DATASET_ROOT": "/data/x", "DEVICE": "cpu", **given})


# ---- common ------------------------------------------------------------------------------------
def test_profile_config_maps_the_shared_parameters():
    P = params("01")
    cfg = common.profile_config(P, optimizer="adam", batch_size=8)
    assert (cfg.dataset_root, cfg.device, cfg.seed) == ("/data/x", "cpu", 0)
    assert (cfg.max_train_images, cfg.max_val_images, cfg.aug_input_crop_size) == (8, 4, 64)
    assert cfg.num_epochs == P.EPOCHS and cfg.log_every == P.LOG_EVERY and cfg.quiet
    assert cfg.batch_size == 8  # overrides win
    assert cfg.optimizer_lr == make_config().optimizer_lr  # LR is None in notebook 01's profiles: not set
    assert common.profile_config(params("04"), model_name="adaptive_depth", tasks="depth").optimizer_lr == \
        experiments.problem_module("04").PROFILES["smoke"]["LR"]
    assert common.profile_config(params("03")).num_epochs == make_config().num_epochs  # 03 has no EPOCHS


def test_run_row_and_run_configs(monkeypatch):
    cfg = make_config()
    row = common.run_row(None, cfg, lr=0.1)
    assert row["status"] == "diverged" and math.isnan(row["miou"]) and row["lr"] == 0.1
    run = FakeRun(final={"miou": 12.5, "train_time_s": 3.0, "steps": 4}, losses=(1.0, 2.0, 3.0))
    assert common.run_row(run, cfg, lr=1e-3) == {"lr": 1e-3, "miou": 12.5, "mean_loss": 2.0,
                                                  "train_time_s": 3.0, "steps": 4, "status": "ok"}

    from cvaia import runs

    def fake_get_run(c):
        if c.optimizer_lr > 1:
            raise runs.TrainingDiverged("nan", step=1)
        return FakeRun(name=f"lr{c.optimizer_lr:g}")

    monkeypatch.setattr(runs, "get_run", fake_get_run)
    lines = []
    got = common.run_configs([cfg.replace(optimizer_lr=1e-3), cfg.replace(optimizer_lr=10.0)], log=lines.append)
    assert got[0].name == "lr0.001" and got[1] is None
    # one line per trained run, so a long cell is not silent; the diverged one says so
    assert len(lines) == 2 and lines[0].startswith("[1/2] lr0.001: ") and "trained in" in lines[0]
    assert lines[1].startswith("[2/2] ") and "diverged" in lines[1]
    done = FakeRun(name="r", final={"miou": 31.204, "si_log_rmse": 40.151})
    assert common.run_line(done, 72.0, 2, 5) == "[2/5] r: mIoU 31.20, SI-logRMSE 40.15 (trained in 1 min 12 s)"
    # runs the store already holds are served silently
    from cvaia import run_folder
    monkeypatch.setattr(run_folder, "is_finished", lambda path: True)
    lines.clear()
    common.run_configs([cfg.replace(optimizer_lr=1e-3)], log=lines.append)
    assert lines == []


def test_val_samples_and_predictions(tiny_root):
    s = common.val_samples(tiny_root, 2)
    assert s["rgb"].shape == (2, 64, 128, 3) and s["semseg"].shape == (2, 64, 128) and s["depth"].dtype == np.float32
    preds = common.predictions({"a": FakeRun(), "diverged": None}, s["rgb"])
    assert list(preds) == ["a"] and preds["a"].shape == (2, 64, 128)


def test_within_and_verdict():
    assert common.within(16.55e6, 16.6e6) and not common.within(17e6, 16.6e6)
    assert common.verdict(True) == "reproduced" and common.verdict(False) == "not reproduced"


# ---- p01 ----------------------------------------------------------------------------------------
def lr_table():
    cfgs = {p01.option_label(o, lr): make_config(optimizer=o, optimizer_lr=lr)
            for o in ("sgd", "adam") for lr in (1e-2, 1e-3, 1e-4)}
    mious = {("sgd", 1e-2): 5.0, ("sgd", 1e-3): 4.0, ("sgd", 1e-4): 1.0,
             ("adam", 1e-3): 9.0, ("adam", 1e-4): 9.0}  # adam 1e-2 diverged; a tie at 1e-3 / 1e-4
    runs = {k: [FakeRun(final={"miou": mious[(c.optimizer, c.optimizer_lr)]}) if (c.optimizer, c.optimizer_lr) in mious
                else None] for k, c in cfgs.items()}
    return cfgs, runs


def test_optimizer_lr_table_and_best_lr():
    cfgs, runs = lr_table()
    table = p01.optimizer_lr_table(cfgs, runs)
    assert list(table.columns[:3]) == ["optimizer", "lr", "miou"] and len(table) == 6
    assert table["status"].tolist().count("diverged") == 1
    assert p01.best_lr(table, "sgd") == 1e-2
    assert p01.best_lr(table, "adam") == 1e-4  # tie: the smaller lr
    with pytest.raises(ValueError, match="no finished rmsprop run"):
        p01.best_lr(table, "rmsprop")
    hist, lrs = p01.histories(cfgs, runs, "adam")
    assert list(hist) == ["adam lr=0.001 (seed 0)", "adam lr=0.0001 (seed 0)"] and lrs["adam lr=0.001 (seed 0)"] == 1e-3


def test_ablation_configs_add_one_ingredient_each():
    cfgs = p01.ablation_configs(params("01"), lr=1e-3, skip_channels=64)
    assert [p01.ablation_label(c) for c in cfgs.values()] == [
        "(F,F,F) · ASPP 1×1+pool · no skip", "(F,F,T) · ASPP 1×1+pool · no skip",
        "(F,F,T) · ASPP rates 3,6,9 · skip 64"]


# ---- p02, p03, p05 ------------------------------------------------------------------------------
def test_weighting_table_joins_the_report():
    runs = {0.5: FakeRun(final={"miou": 30.0, "si_log_rmse": 40.0, "score": 0.0}),
            0.123: FakeRun(final={"miou": 10.0})}
    t = p02.weighting_table(runs)
    assert t.loc[0, "w_semseg"] == 0.5 and math.isfinite(t.loc[0, "report_miou"])
    assert math.isnan(t.loc[1, "report_miou"]) and math.isnan(t.loc[1, "si_log_rmse"])
    cfg = p02.joint_config(params("02"), w=0.25)
    assert (cfg.loss_weight_semseg, cfg.loss_weight_depth, cfg.model_name) == (0.75, 0.25, "deeplabv3p")


def test_cost_row_and_configs_of_p03():
    run = FakeRun(final={"train_time_s": 90.0, "images_per_s": 2.0, "peak_mem_mb": 100.0, "device": "cpu"},
                  cfg=make_config(num_epochs=3))
    row = p03.cost_row(run)
    assert row["train time"] == "1 min 30 s" and row["train time / epoch [s]"] == 30.0
    assert row["mean power [W]"] is None and row["device"] == "cpu"
    P = params("03")
    assert p03.joint_config(P).num_epochs == P.JOINT_EPOCHS and p03.branched_config(P).name == "p3_branched"


def test_single_class_blocks():
    ids = np.zeros((1, 8, 8), dtype=np.int64)
    assert p05.single_class_blocks(ids) == 1.0
    ids[0, 0, 0] = 1  # one of the four 4x4 blocks is mixed
    assert p05.single_class_blocks(ids) == 0.75
    assert p05.single_class_blocks(np.arange(64).reshape(1, 8, 8) % 2) == 0.0


def test_p05_configs():
    P = params("05")
    assert p05.base_config(P).model_name == "transformer_multitask"
    assert set(p05.weighting_configs(P)) == {"fixed", "uncertainty", "dwa"}
    assert p05.cross_config(P).transformer_dim == P.CROSS_DIM
