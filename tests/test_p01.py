"""Notebook 01's experiment logic (cvaia.experiments.p01): shared configurations, the verdicts
and the sentences computed from them, the training budget, the reference-code equality check.
Nothing trains; each test takes milliseconds (the reference check about a second)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cvaia import experiments
from cvaia.experiments import p01, verdicts
from cvaia.experiments.verdicts import CONTRADICTED, INCONCLUSIVE, REPRODUCED


def params(profile="smoke", **given):
    return experiments.resolve("01", {"PROFILE": profile, "DATASET_ROOT": "/data/x", "DEVICE": "cpu", **given})


BASE = {"miou_majority": 2.0, "miou_position": 10.0}  # learned from mIoU > 10 (and >= 4)


def noise(values=(30.0, 31.0, 29.0)):
    return verdicts.seed_noise("miou", values)


# ---- one baseline shared by every experiment -----------------------------------------------------------
@pytest.mark.parametrize("profile", ["smoke", "quick"])
def test_the_baseline_is_a_point_of_every_experiment(profile):
    P = params(profile)
    lr = P.ADAM_LRS[0]
    base = p01.base_config(P, "synthetic", optimizer_lr=lr)
    h = base.config_hash()
    assert base.pretrained == "synthetic" and base.tasks == ("semseg",) and base.aug_geom_reflect
    groups = p01.all_configs(P, "synthetic", lr)
    for name, cfgs in groups.items():
        assert h in [c.config_hash() for c in cfgs], f"{name} does not re-use the baseline run"
    assert groups["seeds"][0] is not None and [c.seed for c in groups["seeds"]] == list(P.SEEDS)
    init = p01.init_configs(P, "synthetic", lr)
    assert init["random"].pretrained == "random" and init["pretrained"].config_hash() == h


def test_training_budget_counts_each_configuration_once():
    P = params("quick")
    plan = p01.training_budget(p01.all_configs(P, "synthetic", P.ADAM_LRS[0]), n_train=2000).set_index("experiment")
    # the baseline under 3 seeds, every other arm under the first 2 (paired)
    assert plan.loc["seeds", "new runs"] == 3 and plan.loc["1.2a", "new runs"] == 2  # only the random encoder
    assert plan.loc["1.1a", "new runs"] == 4  # sgd 1e-2 and adam 1e-4; adam 1e-3 is the baseline here
    assert plan.loc["1.1b", "new runs"] == 6  # the baseline cell is already trained
    assert plan.loc["total", "new runs"] == plan.drop(index="total")["new runs"].sum() == 27
    # 600 images × 1 epoch per run; 1.1b's 2-epoch cells count twice
    assert plan.loc["seeds", "crops"] == 3 * 600 and plan.loc["1.1b", "crops"] == 2 * (600 + 2 * 1200)
    assert plan.loc["total", "evaluations"] == 31


def test_every_arm_trains_under_the_paired_seeds():
    P = params("quick", SEED=10, SEEDS=[10, 11, 12])
    lr = P.ADAM_LRS[0]
    groups = p01.all_configs(P, "synthetic", lr)
    assert [c.seed for c in groups["seeds"]] == [10, 11, 12]
    assert sorted(c.seed for c in groups["1.2a"] if c.pretrained == "random") == [10, 11]
    with pytest.raises(ValueError, match="PAIRED_SEEDS"):
        p01.all_configs(params("quick", PAIRED_SEEDS=4), "synthetic", lr)
    # fewer images than TRAIN_IMAGES, and whole batches only
    small = p01.training_budget({"x": [p01.base_config(P)]}, n_train=20).set_index("experiment")
    assert small.loc["x", "crops"] == 16


def test_grid_note_names_what_the_profile_drops():
    P = params("quick")
    assert p01.grid_note(P, "SKIP_GRID") == "16, 48, 64 (the full profile: 16, 32, 48, 64 — this profile drops 32)"
    assert p01.grid_note(P, "SEEDS") == "0, 1, 2 (the full profile: 0, 1; adds 2)"
    assert p01.grid_note(params("full"), "CONV_GRID") == "1, 2, 3 (the course grid)"
    assert "drops 1e-01" in p01.grid_note(P, "ADAM_LRS", p01.fmt_lr)


# ---- verdicts -------------------------------------------------------------------------------------------------
def test_learned_needs_twice_the_majority_and_the_position_prior():
    assert p01.learned_miou(10.5, BASE) and not p01.learned_miou(9.9, BASE)
    assert not p01.learned_miou(3.9, {"miou_majority": 2.0, "miou_position": math.nan})
    assert p01.learned_miou(4.1, {"miou_majority": 2.0, "miou_position": math.nan})
    assert not p01.learned_miou(math.nan, BASE)


class FakeRun:
    def __init__(self, seed, miou, history=None):
        self.config = type("C", (), {"seed": seed})()
        self.final = {"miou": miou}
        self.history = history if history is not None else pd.DataFrame()


def arm(*values, seed0=0):
    return [FakeRun(seed0 + i, v) for i, v in enumerate(values)]


def paired(arms):
    """PairedNoise of a dict of arms (label → runs)."""
    return p01.paired_noise({"x": arms})


def test_best_key():
    assert p01.best_key({16: 29.0, 48: 30.0, 64: math.nan}) == 48  # NaN ignored
    assert p01.best_key({"a": 1.0, "b": 1.0}) == "a"  # ties: the first in order
    assert p01.best_key({"a": math.nan}) is None


# seed effects +0, +3, -2 shared by every arm; small arm × seed residuals
SEED_EFFECT = (0.0, 3.0, -2.0)


def shifted(mean, resid=(0.1, -0.1, 0.0)):
    return arm(*(mean + e + r for e, r in zip(SEED_EFFECT, resid, strict=True)))


def test_paired_noise_removes_the_seed_effect():
    arms = {"a": shifted(30.0), "b": shifted(25.0, (-0.1, 0.1, 0.0)), "c": shifted(20.0, (0.0, 0.0, 0.0))}
    n = paired(arms)
    # unpaired σ sees the seed effects (≈ 2.5 points), paired only the small residuals
    assert n.unpaired_sd > 2.0 and n.sd < 0.2 and n.df == 4 and n.seeds == (0, 1, 2)
    assert n.sd_diff == pytest.approx(math.sqrt(2) * max(n.sd, p01.MIOU_NOISE_FLOOR))


def test_best_option_verdict_is_paired_and_refuses_unlearned_runs():
    arms = {16: shifted(30.0), 48: shifted(30.5, (-0.1, 0.1, 0.0)), 64: shifted(34.0, (0.0, 0.1, -0.1))}
    n = paired(arms)
    assert p01.best_option_verdict("64 best", arms, 64, n, BASE).outcome == REPRODUCED
    # an unpaired comparison of these means could not tell 34 from 30.5 (seed σ ≈ 2.5)
    close = {16: shifted(30.0), 64: shifted(30.1, (-0.1, 0.1, 0.0))}
    assert p01.best_option_verdict("64 best", close, 64, paired(close), BASE).outcome == INCONCLUSIVE
    assert p01.best_option_verdict("16 best", arms, 16, n, BASE).outcome == CONTRADICTED
    # the expected option did not learn: no verdict, even though the rival is far ahead
    low = {16: shifted(35.0), 64: shifted(5.0)}
    refused = p01.best_option_verdict("64 best", low, 64, paired(low), BASE)
    assert refused.outcome == INCONCLUSIVE and "did not clearly beat" in refused.detail
    # a diverged option (no seed) counts as beaten and does not block the verdict
    arms2 = {**arms, 32: [None, None]}
    assert p01.best_option_verdict("64 best", arms2, 64, n, BASE).outcome == REPRODUCED


def test_pair_and_chain_verdicts():
    arms = {"bare": shifted(15.0), "dil": shifted(20.0, (-0.1, 0.1, 0.0)), "full": shifted(25.0, (0.0, 0.1, -0.1))}
    n = paired(arms)
    v = p01.pair_verdict("full beats dil", arms["full"], arms["dil"], n, BASE)
    assert v.outcome == REPRODUCED and v.delta == pytest.approx(5.0, abs=0.2) and v.n == (3,)
    assert p01.pair_verdict("x", arms["dil"], arms["full"], n, BASE).outcome == CONTRADICTED
    # pairs only over the shared seeds: an arm with 2 seeds against one with 3
    v2 = p01.pair_verdict("x", arms["full"][:2], arms["dil"], n, BASE)
    assert v2.n == (2,) and v2.outcome == REPRODUCED
    assert p01.pair_verdict("x", arm(30.0, 30.0, 30.0), arm(8.0, 8.0, 8.0), n, BASE).outcome == INCONCLUSIVE  # < prior
    assert p01.chain_verdict("up", arms, n, BASE).outcome == REPRODUCED
    flat = {"bare": arms["bare"], "dil": shifted(15.05, (-0.1, 0.1, 0.0)), "full": arms["full"]}
    assert p01.chain_verdict("up", flat, paired(flat), BASE).outcome == INCONCLUSIVE  # the first step is noise
    down = {"bare": arms["bare"], "dil": arms["full"], "full": arms["dil"]}
    assert p01.chain_verdict("up", down, n, BASE).outcome == CONTRADICTED


def test_jitter_verdict_pairs_sgd_with_adam_at_the_chosen_lr():
    P = params("quick")
    arms = p01.optimizer_lr_arms(P, "synthetic")
    noisy = pd.DataFrame({"step": range(8), "loss": [3, 2, 1, 1, 2, 1, 2, 1.0]})
    calm = pd.DataFrame({"step": range(8), "loss": [3, 2, 1, 1, 1.1, 1, 1.1, 1.0]})
    calmer = pd.DataFrame({"step": range(8), "loss": [3, 2, 1, 1, 1.05, 1, 1.05, 1.0]})
    runs = {"sgd 1e-02": [FakeRun(0, 20.0, noisy), FakeRun(1, 21.0, noisy.assign(loss=noisy.loss * 1.1))],
            "adam 1e-03": [FakeRun(0, 25.0, calm), FakeRun(1, 26.0, calm.assign(loss=calm.loss * 1.1))],
            "adam 1e-04": [FakeRun(0, 24.0, calmer), FakeRun(1, 25.0, calmer.assign(loss=calmer.loss * 0.9))]}
    v = p01.jitter_verdict(arms, runs, 1e-3)
    assert v is not None and v.id == "sgd_noisier" and v.outcome == REPRODUCED and v.delta > 0
    assert p01.jitter_verdict({k: arms[k] for k in ("adam 1e-03", "adam 1e-04")}, runs, 1e-3) is None


def cost_table(times, iqrs, blocks=10):
    return pd.DataFrame({"skip_channels": [16, 48, 64], "time_ms": times, "iqr_ms": iqrs, "blocks": blocks,
                         "decoder_gflops_per_crop": [0.63, 0.66, 0.68]})


def test_speed_verdict_judges_the_counted_flops_not_the_times():
    # 64 channels need the most FLOPs: contradicted, however the (load-dependent) times came out
    for times in ([10.0, 10.5, 12.0], [12.0, 12.5, 10.0], [10.0, 10.5, 10.2]):
        v = p01.speed_verdict("64 fastest", cost_table(times, [0.2] * 3), 64)
        assert v.outcome == CONTRADICTED and v.delta == pytest.approx(0.63 - 0.68)
        assert "skip_channels=16 0.63" in v.detail and "not judged" in v.detail
        assert f"skip_channels=64 {times[2]:.3g}" in v.detail
    assert p01.speed_verdict("16 fastest", cost_table([1.0, 2.0, 3.0], [0.1] * 3), 16).outcome == REPRODUCED
    with pytest.raises(KeyError, match="skip_channels=32"):
        p01.speed_verdict("32 fastest", cost_table([1.0, 2.0, 3.0], [0.1] * 3), 32)


def test_verdict_frame_signs_deltas_and_hides_refused_verdicts():
    arms = {"a": shifted(30.0), "b": shifted(20.0, (-0.1, 0.1, 0.0)), "low": shifted(5.0, (0.0, 0.1, -0.1))}
    n = paired(arms)
    vs = [p01.pair_verdict("a", arms["a"], arms["b"], n, BASE), p01.pair_verdict("refused", arms["a"], arms["low"], n, BASE),
          p01.best_option_verdict("b", {"x": arms["a"], "y": arms["b"]}, "y", n, BASE)]
    f = p01.verdict_frame(vs).set_index("claim")
    assert f.loc["a", "delta"] == pytest.approx(10.0, abs=0.2) and f.loc["a", "judged"]
    assert not f.loc["refused", "judged"] and math.isnan(f.loc["refused", "delta"])
    assert f.loc["b", "delta"] == pytest.approx(-10.0, abs=0.2)  # y is 10 points behind its rival


def test_noise_band_and_text():
    arms = {"a": shifted(30.0), "b": shifted(20.0, (-0.1, 0.1, 0.0))}
    n = paired(arms)
    center, half, label = p01.noise_band(n, 30.0, 2)
    assert center == 30.0 and half == pytest.approx(n.half_width(2)) and "2 seeds" in label
    text = p01.noise_text(n, arms["a"], 2)
    assert "paired difference" in text and f"{n.unpaired_sd_diff:.2f}" in text and "t with" in text


# ---- descriptive numbers -------------------------------------------------------------------------------------
def test_loss_jitter_and_early_loss():
    h = pd.DataFrame({"step": range(1, 9), "loss": [4.0, 3.0, 2.0, 1.0, 1.0, 1.5, 1.0, 1.5]})
    assert p01.loss_jitter(h) == pytest.approx(0.5)  # second half: 1.0 1.5 1.0 1.5
    assert math.isnan(p01.loss_jitter(h.iloc[:3]))
    assert p01.early_loss(h) == pytest.approx(3.5) and math.isnan(p01.early_loss(h.iloc[:0]))


def test_boundary_accuracy():
    gt = np.zeros((1, 8, 8), dtype=np.int64)
    gt[:, :, 4:] = 1
    gt[0, 0, 0] = 255
    shifted = np.zeros_like(gt)
    shifted[:, :, 5:] = 1  # one column wrong, right at the edge
    t = p01.boundary_accuracy({"perfect": gt, "shifted": shifted}, gt, width=1).set_index("model")
    assert t.loc["perfect", "boundary_acc_%"] == 100 and t.loc["perfect", "interior_acc_%"] == 100
    assert t.loc["shifted", "boundary_acc_%"] == 50 and t.loc["shifted", "interior_acc_%"] == 100
    assert t.loc["shifted", "boundary_pixels_%"] == pytest.approx(100 * 16 / 63)


def test_trajectory_text_describes_the_measured_paths():
    stats = p01.trajectory_stats(steps=60)
    s = stats.set_index("optimizer")
    assert s.loc["SGD lr=0.038", "theta2_sign_changes"] == 60 and s.loc["SGD lr=0.038", "theta1_overshoot"] == 0
    assert s.loc["SGD+momentum 0.9 lr=0.01", "theta1_overshoot"] > 0.5
    text = p01.trajectory_text(stats)
    assert "at every step" in text and "overshoots to +0.61" in text and "fewer than plain SGD's 60" in text
    calm = stats.copy()
    calm.loc[1, ["theta1_overshoot", "theta2_sign_changes"]] = [0.0, 70]
    text = p01.trajectory_text(calm)
    assert "without overshooting" in text and "no fewer than plain SGD's 60" in text


# ---- reference code ---------------------------------------------------------------------------------------------
def test_reference_code_equals_the_library():
    checks = p01.reference_checks()
    assert len(checks) == 5 and checks["equal"].all(), checks
    assert (checks["max_abs_diff"] < 1e-5).all()


def test_copy_weights_refuses_a_different_module():
    from cvaia.models import ASPP
    from cvaia.reference import deeplab as ref

    with pytest.raises(ValueError, match="tensors"):
        p01.copy_weights(ASPP(8, 4, (1, 2)), ref.ASPP(8, 4, (1,)))
    with pytest.raises(ValueError, match="does not fit"):
        p01.copy_weights(ASPP(8, 4, (1,)), ref.ASPP(16, 4, (1,)))
    torch.manual_seed(0)
    lib = ASPP(8, 4, (1,)).eval()
    r = p01.copy_weights(lib, ref.ASPP(8, 4, (1,))).eval()
    x = torch.randn(2, 8, 5, 5)
    assert torch.equal(lib(x), r(x))


def test_skip_width_cost_counts_flops_and_times(monkeypatch):
    from cvaia.experiments import measure

    monkeypatch.setattr(measure, "benchmark_ms", lambda fn, **kw: fn() or {"median_ms": 1.0, "iqr_ms": 0.1,
                                                                         "runs": 5, "threads": 1})
    cost = p01.skip_width_cost([16, 64], crop=32, batch=2, seconds=0.01)
    assert list(cost.skip_channels) == [16, 64]
    # each extra skip channel adds a 3×3 input channel of the first decoder conv: 64 costs more than 16
    extra = 2 * (64 - 16) * (9 * 256 + 64) * (32 // 4) ** 2  # 2 FLOPs per multiply-add; + the 1×1 projection
    got = (cost.decoder_gflops_per_crop[1] - cost.decoder_gflops_per_crop[0]) * 1e9
    assert got == pytest.approx(extra, rel=1e-6)
    assert (cost["decoder_share_%"] > 0).all() and (cost["decoder_share_%"] < 100).all()


# ---- notebook 01's figures -------------------------------------------------------------------------------------
def test_noise_band_and_verdict_chart():
    from cvaia import plots

    fig = plots.bars({"a": 10.0, "b": 12.0}, ylabel="mIoU")
    plots.noise_band(fig, 11.0, 1.5, "baseline")
    ax = fig.axes[0]
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "noise band: 11.00 ± 1.50" in labels and "baseline: 11.00" in labels
    assert ax.get_ylim()[0] == 0  # bars keep their zero baseline
    fig = plots.verdict_deltas(["found", "noise", "refused"], [3.0, 0.5, float("nan")], [1.5, 1.0, 2.0],
                               [REPRODUCED, INCONCLUSIVE, INCONCLUSIVE])
    ax = fig.axes[0]
    xs = sorted(line.get_xdata()[0] for line in ax.lines if len(line.get_xdata()) == 1)
    assert xs == [0.5, 2.0]  # Δ / threshold: one dot per judged claim
    lo, hi = ax.get_xlim()
    assert lo == -hi and hi >= 2.0  # symmetric, shows every dot and the ±1 band
    assert "n/a" in [t.get_text() for t in ax.texts]
    with pytest.raises(ValueError, match="one delta and threshold per claim"):
        plots.verdict_deltas(["a"], [1.0, 2.0], [1.0])


@pytest.mark.parametrize("boundary, interior, words", [
    (6.0, 1.0, "the edges gain more than the interiors, as the report saw"),
    (1.0, -5.9, "the edges barely change; the interiors lose: no sign"),  # 01's quick run
    (4.0, 3.0, "the edges gain, but not more than the interiors"),
    (-3.0, 0.0, "the edges lose"),
    (0.5, 0.0, "the edges barely change: no sign"),
])
def test_edge_gain_phrase_needs_a_real_edge_gain(boundary, interior, words):
    assert p01.edge_gain_phrase(boundary, interior).startswith(words)
