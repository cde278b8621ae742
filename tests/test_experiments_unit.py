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
from cvaia.experiments import common, p01, p02, p03, p04, p05


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
    assert common.profile_config(params("04"), model_name="adaptive_depth", tasks="depth").optimizer_lr == 2e-4
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
    got = common.run_configs([cfg.replace(optimizer_lr=1e-3), cfg.replace(optimizer_lr=10.0)])
    assert got[0].name == "lr0.001" and got[1] is None


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
    cfgs = [make_config(optimizer=o, optimizer_lr=lr) for o in ("sgd", "adam") for lr in (1e-2, 1e-3, 1e-4)]
    mious = {("sgd", 1e-2): 5.0, ("sgd", 1e-3): 4.0, ("sgd", 1e-4): 1.0,
             ("adam", 1e-3): 9.0, ("adam", 1e-4): 9.0}  # adam 1e-2 diverged; a tie at 1e-3 / 1e-4
    runs = [FakeRun(final={"miou": mious[(c.optimizer, c.optimizer_lr)]}) if (c.optimizer, c.optimizer_lr) in mious
            else None for c in cfgs]
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
    assert list(hist) == ["adam lr=0.001", "adam lr=0.0001"] and lrs["adam lr=0.001"] == 1e-3


def test_ablation_configs_add_one_ingredient_each():
    cfgs = p01.ablation_configs(params("01"), lr=1e-3, skip_channels=64)
    assert [p01.ablation_label(c) for c in cfgs.values()] == [
        "(F,F,F) · ASPP 1×1+pool · no skip", "(F,F,T) · ASPP 1×1+pool · no skip",
        "(F,F,T) · ASPP rates 3,6,9 · skip 64"]


# ---- p04 ----------------------------------------------------------------------------------------
def test_pretrained_encoder_of_notebook_04_branches(monkeypatch, tmp_path):
    from cvaia import run_folder, runs

    P = params("04")
    assert p04.pretrained_encoder({**P, "ENCODER": "random"})[0] == "random"
    with pytest.raises(ValueError, match="ENCODER"):
        p04.pretrained_encoder({**P, "ENCODER": "imagenet"})
    monkeypatch.setattr(p01, "imagenet_available", lambda encoder="resnet18": True)
    assert p04.pretrained_encoder(P)[0] == "imagenet"
    monkeypatch.setattr(p01, "imagenet_available", lambda encoder="resnet18": False)

    # nothing in the store: notebook 01's pretraining run is trained at 1e-3
    monkeypatch.setattr(p01, "pretrain_root", lambda P: tmp_path / "no_such_set")
    monkeypatch.setattr(run_folder, "is_finished", lambda path: False)
    monkeypatch.setattr(run_folder, "has_diverged", lambda path: False)
    monkeypatch.setattr(p01, "ensure_pretrain_set", lambda P, root: tmp_path / "pre_set")
    trained = []
    monkeypatch.setattr(p01, "pretraining_run", lambda P, root, lr: trained.append((root.name, lr)) or
                        FakeRun(name="pre1e-3", cfg=make_config(optimizer_lr=lr)))
    weights, text = p04.pretrained_encoder(P)
    assert trained == [("pre_set", 1e-3)] and weights.endswith("pre1e-3/checkpoints/last.pt")
    assert "Adam lr 0.001" in text

    # notebook 01's sweep is in the store: the pretraining run at its best Adam lr is a cache hit
    (tmp_path / "set").mkdir()
    monkeypatch.setattr(p01, "pretrain_root", lambda P: tmp_path / "set")
    best = 1e-4  # the smoke profile's Adam lrs are 1e-3 and 1e-4; 1e-4 scores higher
    finished = {("adam", 1e-3, 1): 3.0, ("adam", 1e-4, 1): 7.0}

    def key(cfg):
        return (cfg.optimizer, cfg.optimizer_lr, cfg.num_epochs)

    pre_cfg = p01.pretrain_config(experiments.resolve("01", {k: P[k] for k in experiments.COMMON}),
                                  tmp_path / "set", best)
    monkeypatch.setattr(run_folder, "is_finished",
                        lambda path: path == run_folder.run_dir_for(pre_cfg) or any(
                            path == run_folder.run_dir_for(c) for c in p01.optimizer_lr_configs(
                                experiments.resolve("01", {k: P[k] for k in experiments.COMMON}))))
    monkeypatch.setattr(runs, "get_run", lambda cfg: FakeRun(name="hit" if cfg == pre_cfg else "sweep",
                                                             final={"miou": finished.get(key(cfg), 0.0)}, cfg=cfg))
    trained.clear()
    weights, text = p04.pretrained_encoder(P)
    assert trained == [] and weights.endswith("hit/checkpoints/last.pt") and "Adam lr 0.0001" in text


def experiment_rows():
    """An experiment table: the 'lowest' latents and dim-256 width win; one dropout run is dead."""
    runs = {
        "latents": {"lowest": FakeRun("a", {"si_log_rmse": 50.0}), "decoder": FakeRun("b", {"si_log_rmse": 55.0})},
        "width": {"dim 256, 4 heads (d_k=64)": FakeRun("a", {"si_log_rmse": 50.0}, silog=(70.0, 50.0)),
                  "dim 512, 8 heads (d_k=64)": FakeRun("c", {"si_log_rmse": 52.0}, silog=(75.0, 52.0))},
        "pos_embed": {"none": FakeRun("a", {"si_log_rmse": 50.0}), "input": FakeRun("d", {"si_log_rmse": 50.02})},
        "dropout": {"dropout 0.1": FakeRun("a", {"si_log_rmse": 50.0}), "dropout 0": FakeRun("e", {"si_log_rmse": 90.0})},
        "aspp": {"aspp, 4 heads, 1 layers": FakeRun("f", {"si_log_rmse": 60.0}),
                 "aspp, 8 heads, 2 layers": FakeRun("g", {"si_log_rmse": 60.01})},
    }
    table = p04.experiment_table(runs)
    table["learned"] = p04.learned(table, constant_silog=90.0)
    return runs, table


def test_experiment_table_learned_and_best_of():
    runs, table = experiment_rows()
    assert len(table) == 10 and table["run"].nunique() == 7
    assert table.loc[table["variant"] == "dim 512, 8 heads (d_k=64)", "silog_epoch1"].item() == 75.0
    assert table["learned"].sum() == 9  # dropout 0 sits at the constant-map score
    assert p04.best_of(table, "latents") == ("lowest", 50.0)
    with pytest.raises(ValueError, match="no rows"):
        p04.best_of(table, "nope")
    assert p04.silog(table, "width", "dim 512, 8 heads (d_k=64)", "silog_epoch1") == 75.0
    with pytest.raises(ValueError, match="no row"):
        p04.silog(table, "width", "dim 1024")
    assert list(p04.silog_curves(runs["latents"])) == ["lowest", "decoder"]


def test_findings_verdicts():
    runs, table = experiment_rows()
    found = p04.findings(table, runs).set_index("report")["this run"]
    assert found[p04.REPORT_FINDINGS["width"]] == "reproduced"  # 70 < 75 at epoch 1
    assert found[p04.REPORT_FINDINGS["pos_embed"]] == "reproduced"  # 50.02 within the tie of 50
    assert found[p04.REPORT_FINDINGS["dropout"]] == p04.INCONCLUSIVE  # a variant did not learn
    assert found[p04.REPORT_FINDINGS["latents"]] == "reproduced"
    assert found[p04.REPORT_FINDINGS["aspp"]] == "tie (inconclusive)"  # 0.01 apart
    assert p04.finding_verdict(table, False, 50.0, 55.0, "latents") == "not reproduced"
    assert p04.all_learned(table, "dropout", ["dropout 0.1"]) and not p04.all_learned(table, "dropout")


def test_variants_and_configs_share_runs():
    P = params("04")
    cfgs = p04.configs(P)
    assert set(cfgs) == {"latents", "width", "pos_embed", "dropout", "heads_expansion", "aspp"}
    assert cfgs["latents"]["lowest"] == cfgs["dropout"]["dropout 0.1"]  # the baseline, one run
    assert cfgs["aspp"]["aspp, 8 heads, 2 layers"].num_transformer_layers == 2


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
