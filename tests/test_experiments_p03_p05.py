"""The generated-text logic of notebooks 03 and 05: verdicts against the seed noise (half the
epochs, step time, per-class IoU), the variants' "helped / best" sentences, the leaderboard's
ranking with ties and missing scores, and the measurement helpers. Milliseconds each, except
the one real training-step breakdown (about a second)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from cvaia.config import make_config
from cvaia.experiments import measure, p03, p05
from cvaia.experiments import verdicts as V

# ---- p03: branched in half the epochs ---------------------------------------------------------
JOINT_HALF = [20.0, 21.0, 22.0]   # joint mIoU after E/2 epochs (3 seeds), σ = 1
JOINT_FULL = [30.0, 31.0, 32.0]   # after E epochs, σ = 1: threshold t(2 df)·1·√(1 + 1/3) ≈ 4.97


def test_half_epochs_reproduced_when_ahead_at_the_same_epoch_and_not_behind_twice_the_epochs():
    v = p03.half_epochs_verdict("mIoU", 30.0, JOINT_HALF, JOINT_FULL)
    assert v.outcome == V.REPRODUCED
    assert v.threshold == pytest.approx(V.stats.t_quantile(2) * math.sqrt(1 + 1 / 3))
    assert "after twice the epochs" in v.detail and "3 seeds" in v.detail


def test_half_epochs_contradicted_when_clearly_behind_the_joint_model():
    assert p03.half_epochs_verdict("mIoU", 26.0, JOINT_HALF, JOINT_FULL).outcome == V.CONTRADICTED
    # behind the joint model even at the same epoch
    assert p03.half_epochs_verdict("mIoU", 15.0, JOINT_HALF, [17.0, 18.0, 19.0]).outcome == V.CONTRADICTED


def test_half_epochs_inconclusive_inside_the_noise_or_without_learning():
    # within the noise of the joint model at the same epoch: it did not get there faster
    assert p03.half_epochs_verdict("mIoU", 22.5, JOINT_HALF, [22.0, 23.0, 24.0]).outcome == V.INCONCLUSIVE
    v = p03.half_epochs_verdict("mIoU", 30.0, JOINT_HALF, JOINT_FULL, learned=False)
    assert v.outcome == V.INCONCLUSIVE and "did not clearly beat" in v.detail


def test_half_epochs_lower_is_better_for_silog():
    v = p03.half_epochs_verdict("SI-logRMSE", 40.0, [50.0, 51.0, 52.0], [40.0, 41.0, 42.0], direction="lower")
    assert v.outcome == V.REPRODUCED
    assert p03.half_epochs_verdict("SI-logRMSE", 46.0, [50.0, 51.0, 52.0], [40.0, 41.0, 42.0],
                                   direction="lower").outcome == V.CONTRADICTED
    with pytest.raises(ValueError, match="direction"):
        p03.half_epochs_verdict("x", 1.0, JOINT_HALF, JOINT_FULL, direction="more")


class _Heads(nn.Module):
    """A stand-in model: ``n`` conv heads, outputs as a dict like the real models'."""

    def __init__(self, n: int):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.heads = nn.ModuleList(nn.Conv2d(8, 8, 3, padding=1) for _ in range(n))

    def forward(self, x):
        f = self.stem(x)
        return {f"t{i}": h(f) for i, h in enumerate(self.heads)}


def test_step_cost_verdict_counts_flops_and_ignores_the_times():
    joint, branched = _Heads(1).eval(), _Heads(2)
    x = torch.randn(2, 3, 16, 16)
    # the times point the other way: they are shown, not judged
    v = p03.step_cost_verdict("slower", {"joint": joint, "branched": branched}, x,
                              {"joint": [150.0, 151.0], "branched": [100.0, 101.0]})
    assert v.outcome == V.REPRODUCED and v.threshold_kind == "tie" and v.delta > v.threshold > 0
    assert "GFLOPs per training step" in v.detail and "branched 100" in v.detail and "not judged" in v.detail
    assert "tie tolerance" in v.sentence()
    swapped = p03.step_cost_verdict("slower", {"joint": branched, "branched": joint}, x)
    assert swapped.outcome == V.CONTRADICTED
    same = p03.step_cost_verdict("slower", {"joint": joint, "branched": _Heads(1)}, x)
    assert same.outcome == V.INCONCLUSIVE
    # counting leaves the models as they were: mode and (absent) gradients
    assert not joint.training and all(p.grad is None for p in joint.parameters())


def test_training_step_flops_counts_the_backward_too():
    model = _Heads(1)
    x = torch.randn(2, 3, 16, 16)
    fwd, step = measure.forward_flops(model, x), measure.training_step_flops(model, x)
    # stem: weight gradient only (x needs none); head: input and weight gradients
    stem, head = fwd * 3 / (3 + 8), fwd * 8 / (3 + 8)  # their forward FLOPs: 3 vs 8 input channels
    assert fwd > 0 and step == pytest.approx(fwd + stem + 2 * head, rel=1e-6)


def test_epoch_values_reads_the_epoch_rows():
    class R:
        epochs = pd.DataFrame({"epoch": [1, 2], "miou": [10.0, 20.0]})

    assert p03.epoch_values([R(), R(), None], 1, "miou")[:2] == [10.0, 10.0]
    assert math.isnan(p03.epoch_values([R()], 3, "miou")[0])
    assert math.isnan(p03.epoch_values([None], 1, "miou")[0])


# ---- p03: per-class IoU against the per-class seed noise --------------------------------------
def _cm(diag, off=1.0, n=4):
    cm = np.full((n, n), off)
    np.fill_diagonal(cm, diag)
    return cm


def test_class_iou_changes_uses_iou_and_the_seed_noise_per_class():
    names = ["road", "car", "sky", "train"]
    joint = [_cm([50, 20, 40, 0]), _cm([51, 21, 40, 0]), _cm([49, 19, 40, 0])]
    for cm in joint:
        cm[3] = 0  # train: no ground-truth pixel
    branched = _cm([50, 40, 20, 0])
    branched[3] = 0
    t = p03.class_iou_changes(branched, joint, names).set_index("class")
    assert t.loc["car", "outcome"] == "better" and t.loc["sky", "outcome"] == "worse"
    assert t.loc["road", "outcome"] == "within noise" and t.loc["train", "outcome"] == "absent"
    from cvaia.metrics import per_class_iou

    assert t.loc["car", "iou_branched"] == pytest.approx(per_class_iou(branched)[1])
    # sky: identical in all seeds, σ = 0 → the floor (0.5 points) sets the threshold
    assert t.loc["sky", "threshold"] == pytest.approx(2 * 0.5 * math.sqrt(1 + 1 / 3))
    marks = p03.class_marks(t.reset_index())
    assert marks == {"car": "better", "road": "", "sky": "worse", "train": "absent"}
    text = p03.iou_change_sentence(t.reset_index().sort_values("change", ascending=False), seeds=3)
    assert "**IoU**" in text and "**better** for 1 class: car (+" in text
    assert "**worse** for 1: sky (" in text and "1 within the noise" in text and "absent" in text and "train" in text


def test_class_iou_changes_refuses_no_seeds():
    with pytest.raises(ValueError, match="at least one joint seed"):
        p03.class_iou_changes(_cm([1, 1]), [], ["a", "b"])


# ---- p05: variants against the seed noise -------------------------------------------------------
NOISE = {"miou": V.seed_noise("miou", [20.0, 21.0, 22.0]), "si_log_rmse": V.seed_noise("si", [50.0, 51.0, 52.0])}
REF = {"miou": 21.0, "si_log_rmse": 51.0}


def test_variant_verdict_direction_words_and_outcomes():
    vs = p05.variant_verdicts("flip TTA", {"miou": 27.0, "si_log_rmse": 51.2}, REF, NOISE, n_reference=3)
    assert [v.claim for v in vs] == ["flip TTA raises mIoU over fixed weights",
                                     "flip TTA lowers SI-logRMSE over fixed weights"]
    assert [v.outcome for v in vs] == [V.REPRODUCED, V.INCONCLUSIVE]
    assert p05.variant_outcome(vs) == "better"
    worse = p05.variant_verdicts("u", {"miou": 21.0, "si_log_rmse": 58.0}, REF, NOISE, n_reference=3)
    assert worse[1].outcome == V.CONTRADICTED and p05.variant_outcome(worse) == "worse"
    mixed = p05.variant_verdicts("u", {"miou": 27.0, "si_log_rmse": 58.0}, REF, NOISE, n_reference=3)
    assert p05.variant_outcome(mixed) == "mixed"
    flat = p05.variant_verdicts("u", {"miou": 21.5, "si_log_rmse": 50.5}, REF, NOISE, n_reference=3)
    assert p05.variant_outcome(flat) == "within noise"
    # a paired comparison (same model with and without TTA) uses n_reference = 1: a wider threshold
    assert flat[0].threshold < p05.variant_verdicts("u", REF, REF, NOISE, n_reference=1)[0].threshold
    unlearned = p05.variant_verdicts("u", {"miou": 33.0, "si_log_rmse": 40.0}, REF, NOISE, 3, learned=False)
    assert all(v.outcome == V.INCONCLUSIVE for v in unlearned)


def test_best_variant_and_the_helped_sentence_come_from_the_same_verdicts():
    def vs(miou, si):
        return p05.variant_verdicts("x", {"miou": miou, "si_log_rmse": si}, REF, NOISE, n_reference=3)

    within = {"uncertainty weights": vs(21.5, 50.5), "fixed weights + flip TTA": vs(21.2, 51.0)}
    assert p05.best_variant(within) == "fixed weights"
    assert "made no difference beyond the seed noise" in p05.variant_sentence("flip TTA", within["fixed weights + flip TTA"])
    # the example of issue 13 (05 c21): a best "fixed + flip TTA" must come with "flip TTA helped"
    one = {"uncertainty weights": vs(21.5, 50.5), "fixed weights + flip TTA": vs(28.0, 51.0)}
    assert p05.best_variant(one) == "fixed weights + flip TTA"
    assert p05.variant_sentence("flip TTA", one["fixed weights + flip TTA"]).startswith("**flip TTA** helped")
    # two better variants: more clearly-better metrics first, then the larger margin, then the first listed
    two = {"a": vs(27.0, 51.0), "b": vs(27.0, 43.0), "c": vs(33.0, 51.0)}
    assert p05.best_variant(two) == "b"
    assert p05.best_variant({"a": vs(27.0, 51.0), "c": vs(33.0, 51.0)}) == "c"
    assert p05.best_variant({"a": vs(27.0, 51.0), "c": vs(27.0, 51.0)}) == "a"
    assert p05.best_variant({"m": vs(33.0, 62.0)}) == "fixed weights"  # mixed is not "best"
    assert "traded one task for the other" in p05.variant_sentence("m", vs(33.0, 62.0))


# ---- p05: the leaderboard's ranking -------------------------------------------------------------
def test_ranking_per_task_set():
    assert p05.ranking(("semseg",)) == [("miou", "higher")]
    assert p05.ranking(("depth",)) == [("si_log_rmse", "lower")]
    assert [m for m, _ in p05.ranking(("semseg", "depth"))] == ["score", "miou", "si_log_rmse"]


def test_best_row_semseg_only_ignores_the_missing_score():
    # issue 13, 05 c22: problem 1 showed the lr 1e-4 run (2.99) instead of the 10.88 one
    rows = [{"run": "a-lr1e-4", "miou": 2.99, "score": math.nan}, {"run": "b-lr1e-3", "miou": 10.88, "score": math.nan}]
    assert p05.best_row(rows, ("semseg",))["run"] == "b-lr1e-3"


def test_best_row_ties_and_missing_values():
    both = ("semseg", "depth")
    rows = [{"run": "c", "score": 0.0, "miou": 20.0, "si_log_rmse": 60.0},
            {"run": "a", "score": 0.0, "miou": 25.0, "si_log_rmse": 70.0},
            {"run": "b", "score": math.nan, "miou": 40.0, "si_log_rmse": 30.0}]
    assert p05.best_row(rows, both)["run"] == "a"  # score ties at 0 → mIoU; a missing score ranks last
    rows.append({"run": "d", "score": 1.5, "miou": 10.0, "si_log_rmse": 48.5})
    assert p05.best_row(rows, both)["run"] == "d"  # a real score wins
    tie = [{"run": "z", "score": 0.0, "miou": 20.0, "si_log_rmse": 60.0},
           {"run": "y", "score": 0.0, "miou": 20.0, "si_log_rmse": 60.0}]
    assert p05.best_row(tie, both)["run"] == "y"  # exact tie: the smaller run name
    depth = [{"run": "p", "si_log_rmse": None}, {"run": "q", "si_log_rmse": 45.0}, {"run": "r", "si_log_rmse": 40.0}]
    assert p05.best_row(depth, ("depth",))["run"] == "r"
    assert p05.best_row([{"run": "n", "miou": math.nan}], ("semseg",)) is None


def test_leaderboard_picks_per_problem(tmp_path, monkeypatch):
    from cvaia import runs as runs_mod

    class FakeRun:
        def __init__(self, name, cfg, final):
            self.name, self.config, self.final = name, cfg, final
            self.meta = {"dataset_root": str(tmp_path)}
            self.path, self.is_done, self.diverged = tmp_path / name, True, None

    semseg = make_config(tasks="semseg", model_name="deeplabv3p")
    joint = make_config(tasks="semseg,depth", model_name="deeplabv3p")
    runs = [FakeRun("s1", semseg.replace(optimizer_lr=1e-4), {"miou": 2.99}),
            FakeRun("s2", semseg.replace(optimizer_lr=1e-3), {"miou": 10.88}),
            FakeRun("j1", joint, {"miou": 20.0, "si_log_rmse": 60.0, "score": 0.0}),
            FakeRun("j2", joint.replace(seed=1), {"miou": 22.0, "si_log_rmse": 61.0, "score": 0.0})]
    board = p05.leaderboard(tmp_path, runs).set_index("problem")
    assert board.loc["1 semseg", "run"] == "s2" and board.loc["1 semseg", "ranked_by"] == "miou"
    assert board.loc["2 joint", "run"] == "j2" and board.loc["2 joint", "ranked_by"] == "score, miou, si_log_rmse"
    assert p05.leaderboard(tmp_path / "other", runs).empty
    assert runs_mod.results_table  # the real table builder was used


# ---- measurements -------------------------------------------------------------------------------
def test_benchmark_ms_reports_median_and_iqr():
    calls = []
    r = measure.benchmark_ms(lambda: calls.append(1), min_run_time=0.01, warmup=2)
    assert r["median_ms"] >= 0 and r["iqr_ms"] >= 0 and r["runs"] >= 1 and r["threads"] == torch.get_num_threads()
    assert len(calls) > 2
    import time

    slow = measure.benchmark_ms(lambda: time.sleep(0.01), min_run_time=0.001, warmup=1, min_runs=4)
    assert slow["runs"] == 4 and slow["median_ms"] >= 10.0 and slow["iqr_ms"] > 0  # a slow call still gets several timed blocks


def test_training_memory_counts_activations_and_optimizer_state():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    x = torch.randn(8, 16)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    r = measure.training_memory(model, x, lambda out: out.square().mean())
    n_params = sum(p.numel() for p in model.parameters())
    assert r["weights_grads_adam_mib"] == pytest.approx(4 * 4 * n_params / 2**20)
    # saved: the input x (8×16, for the first weight's grad), the ReLU output (8×32, kept by
    # ReLU's backward and by the second Linear), the final output (for square) → 8·(16+32+4)·4 bytes
    assert r["activations_mib"] * 2**20 == pytest.approx(8 * (16 + 32 + 4) * 4)
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())


def test_model_memory_branched_keeps_more_than_joint():
    P = {"DATASET_ROOT": "", "SEED": 0, "DEVICE": "cpu", "TRAIN_IMAGES": 4, "VAL_IMAGES": 2, "CROP_SIZE": 64,
         "BATCH_SIZE": 2, "LR": 1e-3, "JOINT_EPOCHS": 1, "BRANCHED_EPOCHS": 1, "SEEDS": [0, 1]}
    from cvaia.models import build_model

    joint = build_model(p03.joint_config(P, pretrained="random"))
    branched = build_model(p03.branched_config(P, pretrained="random"))
    mj = p03.model_memory(joint, ("semseg", "depth"), batch=2, size=32)
    mb = p03.model_memory(branched, ("semseg", "depth"), batch=2, size=32)
    assert mb["activations_mib"] > mj["activations_mib"] > 0
    assert mb["weights_grads_adam_mib"] > mj["weights_grads_adam_mib"]


def test_step_breakdown_on_real_training_steps(tiny_root):
    cfg = make_config(model_name="deeplabv3p", tasks="semseg,depth", dataset_root=str(tiny_root), batch_size=2,
                      aug_input_crop_size=32, max_train_images=4, device="cpu", quiet=True)
    df = measure.step_breakdown(cfg, steps=3, warmup=1)
    assert list(df["step"]) == [2, 3, 4]  # crosses an epoch boundary (2 batches per epoch)
    assert (df["data_ms"] > 0).all() and (df["compute_ms"] > df["data_ms"]).all()
    assert ((df["data_share_%"] > 0) & (df["data_share_%"] < 100)).all()


def test_step_text_words_follow_the_verdict():
    breakdown = {"joint": pd.DataFrame({"data_ms": [1.0, 1.0, 1.0], "compute_ms": [100.0, 101.0, 99.0]}),
                 "branched": pd.DataFrame({"data_ms": [1.0, 1.0, 1.0], "compute_ms": [160.0, 161.0, 159.0]})}
    summary = p03.step_summary(breakdown)
    assert summary.loc["branched", "compute [ms]"] == 160.0 and summary.loc["joint", "data share [%]"] < 1.5
    slower = V.counted("slower", {"branched": 2.0, "joint": 1.0}, "branched", "higher")
    text = p03.step_text(summary, slower)
    assert "**compute**" in text and "**1.60×**" in text and "**consistent with the report's claim (arithmetic)**" in text and "under any load" in text
    breakdown["branched"]["data_ms"] = 100.0
    summary = p03.step_summary(breakdown)
    assert "waiting for data" in p03.step_text(summary, slower)


def test_crop_budget_counts_seeds_epochs_and_area():
    P = {"TRAIN_IMAGES": 500, "CROP_SIZE": 128, "SEEDS": [0, 1, 2], "JOINT_EPOCHS": 2, "BRANCHED_EPOCHS": 1,
         "VAL_IMAGES": 100, "PROFILE": "quick", "BATCH_SIZE": 8, "LR": 1e-3}
    b = p03.crop_budget(P)
    assert b["crops_64_total"] == (3 * 2 * 500 + 500) * 4 and b["evaluations"] == 7
    assert "3× (seeds 0, 1, 2)" in p03.scope_text(P)


def test_variant_verdicts_per_task_learning():
    vs = p05.variant_verdicts("u", {"miou": 30.0, "si_log_rmse": 40.0}, REF, NOISE, 3,
                              learned={"semseg": True, "depth": False})
    assert [v.outcome for v in vs] == [V.REPRODUCED, V.INCONCLUSIVE]


def test_p05_scope_text_says_what_quick_drops():
    P = {"PROFILE": "quick", "EPOCHS": 1, "TRAIN_IMAGES": 400, "VAL_IMAGES": 100, "TEST_IMAGES": 40,
         "SEEDS": [0, 1, 2], "CROP_SIZE": 64, "BATCH_SIZE": 8, "LR": 1e-3, "WEIGHTINGS": ["fixed", "uncertainty"]}
    b = p05.crop_budget(P)
    assert b["runs"] == 5 and b["crops_64_total"] == 2000 and b["evaluations"] == 6
    text = p05.scope_text(P)
    assert "Dropped here: dwa weighting" in text and "seeds 0, 1, 2" in text
    full = p05.scope_text({**P, "WEIGHTINGS": ["fixed", "uncertainty", "dwa"], "EPOCHS": 2})
    assert "Dropped" not in full and "only from epoch 3 on" in full


def test_bins_text_names_constant_maps():
    bins = pd.DataFrame({"bins_min_m": [2.0, 300.0], "bins_median_m": [20.0, 300.0], "bins_max_m": [90.0, 300.0],
                         "bins_at_300m_%": [0.0, 100.0], "log_depth_spread": [0.4, 0.0]}, index=["seed 0", "seed 1"])
    text = p05.bins_text(bins)
    assert "**seed 1 predicts a constant depth map**" in text and "100 %" in text
    assert "varies within every image" in p05.bins_text(bins.iloc[:1])


def test_iou_change_figure_colours_present_classes_and_draws_the_band():
    from cvaia.data.classes import class_colors, class_names

    names = list(class_names())
    changes = pd.DataFrame({"class": ["car", "sky", "bus"], "change": [5.0, -1.0, 0.0], "threshold": [2.0, 1.5, 1.0],
                            "outcome": ["better", "within noise", "absent"]})
    fig = p03.iou_change_figure(changes, seeds=3)
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["car ↑", "sky"]  # absent classes left out
    bars = [p for p in ax.patches if p.get_zorder() > 0]
    assert np.allclose(bars[0].get_facecolor()[:3], class_colors()[names.index("car")] / 255.0)
    band = [p for p in ax.patches if p.get_zorder() == 0]
    assert band[0].get_x() == pytest.approx(-2.0) and band[0].get_width() == pytest.approx(4.0)


def test_blockiness_text_needs_a_margin_for_its_word():
    same = {"transformer seg": 0.901, "cross-attention seg": 0.907, "ground truth": 0.84}
    assert "about as blocky as" in p05.blockiness_text(same, 3)
    assert "blockier than" in p05.blockiness_text({**same, "cross-attention seg": 0.95}, 3)
    assert "less blocky than" in p05.blockiness_text({**same, "cross-attention seg": 0.80}, 3)


def test_weights_text_reports_the_ratio_adam_sees():
    class R:
        def __init__(self, wd, ws):
            self.history = pd.DataFrame({"step": [1, 2], "weight_depth": wd, "weight_semseg": ws})

    text = p05.weights_text({"uncertainty weights": R([1.0, 1.004], [1.0, 1.002]), "none": object()})
    assert "ratio depth : semseg 1.000 → 1.002" in text and "trained like the fixed weighting" in text
    moved = p05.weights_text({"dwa weights": R([1.0, 1.3], [1.0, 0.7])})
    assert "1.000 → 1.857" in moved and "fixed weighting" not in moved
    assert p05.weights_text({}) == ""


class _ModelRun:
    """A finished run as p05 reads it: a folder and a model."""

    def __init__(self, path, model):
        self.path, self._model = path, model

    def load_model(self, which="best", device="cpu"):
        return self._model.eval()


def _tiny_transformer():
    from cvaia.models import build_model

    torch.manual_seed(0)
    return build_model(make_config(model_name="transformer_multitask", tasks="semseg,depth", transformer_dim=32,
                                   num_heads=4, num_transformer_layers=1, num_bins=16))


def test_bin_depth_stats_and_evaluate_run(tiny_root, tmp_path):
    run = _ModelRun(tmp_path / "run", _tiny_transformer())
    rgb = np.random.default_rng(0).integers(0, 255, (2, 64, 128, 3), dtype=np.uint8)
    stats = p05.bin_depth_stats(run, rgb)
    assert 0.1 <= stats["bins_min_m"] <= stats["bins_median_m"] <= stats["bins_max_m"] <= 300.0
    assert 0.0 <= stats["bins_at_300m_%"] <= 100.0 and stats["log_depth_spread"] >= 0.0
    plain = p05.evaluate_run(run, tiny_root, 2)
    flipped = p05.evaluate_run(run, tiny_root, 2, tta_flip=True)
    assert set(plain) >= {"miou", "si_log_rmse", "abs_rel", "delta1", "score"} and plain != flipped
    cached = sorted(p.name for p in (run.path / "eval").iterdir())
    assert cached == [f"val-2-{tiny_root.name}.json", f"val_tta-2-{tiny_root.name}.json"]
    assert p05.evaluate_run(run, tiny_root, 2) == plain  # read back


def test_headlines_average_the_finished_seeds():
    class R:
        def __init__(self, miou, si):
            self.final = {"miou": miou, "si_log_rmse": si, "abs_rel": 0.5, "delta1": 0.25}

    seeds = [R(20.0, 40.0), None, R(22.0, 44.0)]  # a diverged seed is left out
    h3 = p03.headline(seeds, R(25.0, 50.0))
    assert (h3["joint_miou"], h3["joint_silog"], h3["branched_silog"]) == (21.0, 42.0, 50.0)
    assert h3["joint_miou_std"] == pytest.approx(math.sqrt(2.0)) and h3["joint_abs_rel_std"] == 0.0
    h5 = p05.headline(seeds[:1])
    assert h5["transformer_val_delta1"] == 0.25 and math.isnan(h5["transformer_val_silog_std"])


def test_scale_failure_text_names_a_wrong_depth_scale_that_si_log_rmse_hides():
    class R:
        def __init__(self, d1, ar):
            self.final = {"delta1": d1, "abs_rel": ar}

    joint = [R(0.47, 0.30), R(0.49, 0.28)]
    text = p03.scale_failure_text({"delta1": 0.03, "abs_rel": 0.9}, joint)
    assert "wrong scale" in text and "δ1 0.030 against the joint model's 0.480" in text
    assert p03.scale_failure_text({"delta1": 0.45, "abs_rel": 0.31}, joint) == ""
    assert "abs-rel 0.700" in p03.scale_failure_text({"delta1": 0.45, "abs_rel": 0.70}, joint)


def test_predicted_classes_and_the_cross_attention_sentence():
    cm = np.zeros((4, 4))
    cm[0, 0], cm[1, 0], cm[2, 2], cm[3, 1] = 900.0, 50.0, 49.0, 0.5  # class 3 predicted nowhere, 1 almost never
    assert p05.predicted_classes(cm) == [0, 2] and p05.predicted_classes(np.zeros((2, 2))) == []
    text = p05.cross_attention_text(11.2, [0, 2], {"miou_position": 11.0}, ["road", "sidewalk", "building", "wall"])
    assert "**2 of 4 classes**" in text and "road, building" in text and "at the position prior's 11.00" in text
    assert "below" in p05.cross_attention_text(5.0, [0], {"miou_position": 11.0}, ["a", "b"])
