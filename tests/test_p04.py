"""Notebook 04's experiment helpers with fake runs: configs and grids, the encoder choice, the
verdicts against seed noise, the 'learned' rule, metric ranks and the median-scaling check,
and the generated sentences of the attention-cost section (direction words, exponents,
labelled memory ratios). Nothing trains; milliseconds each."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from cvaia import experiments
from cvaia.config import make_config
from cvaia.experiments import common, p04, stats, verdicts


class FakeRun:
    def __init__(self, name, si, epoch1=None, seed=0, **metrics):
        self.name = name
        self.final = {"si_log_rmse": si, "abs_rel": 0.5, "rmse": 20.0, "delta1": 0.4, **metrics}
        self.epochs = pd.DataFrame({"epoch": [1], "si_log_rmse": [epoch1 if epoch1 is not None else si]})
        self.config = make_config(seed=seed)


def params(profile="smoke", **given):
    return experiments.resolve("04", {"PROFILE": profile, "DATASET_ROOT": "/data/x", "DEVICE": "cpu", **given})


BASE = {"silog_constant": 100.0, "silog_position": 65.0, "miou_majority": 5.0, "miou_position": 9.0,
        "absrel_position": 0.6, "delta1_position": 0.3}


# ---- configurations --------------------------------------------------------------------------
def test_variants_configs_seeds_and_dropped_points():
    P = params("quick")
    cfgs = p04.configs(P, "synthetic")
    assert set(cfgs) == {"latents", "width", "pos_embed", "dropout", "aspp"}  # quick: no heads × expansion grid
    assert cfgs["latents"]["lowest"] == cfgs["dropout"]["dropout 0.1"] == cfgs["pos_embed"]["none"]  # one run
    assert cfgs["aspp"]["aspp, 8 heads, 6 layers"].num_transformer_layers == 6
    seeds = p04.seed_configs(P, "synthetic")
    assert [c.seed for c in seeds] == [0, 1, 2] and seeds[0] == cfgs["latents"]["lowest"]
    assert all(c.pretrained == "synthetic" for c in seeds)
    distinct = {c.config_hash() for vs in cfgs.values() for c in vs.values()} | {c.config_hash() for c in seeds}
    assert len(distinct) == 8  # 3 seeds + 512/8, input embedding, no dropout, 2 ASPP runs
    dropped = p04.dropped_points(P)
    assert dropped == {"LATENT_SOURCES": ["decoder"], "DIM_HEADS": [[512, 4]], "POS_EMBEDS": ["query"],
                       "HEADS_GRID": [2, 4, 8], "EXPANSION_GRID": [2, 4, 8]}
    assert p04.dropped_points(params("full")) == {}
    assert set(p04.configs(params("full"))) == {"latents", "width", "pos_embed", "dropout", "heads_expansion", "aspp"}


def test_encoder_weights(monkeypatch):
    monkeypatch.setattr(common, "pretrained_weights", lambda encoder="resnet18": ("synthetic", "the shipped one"))
    assert p04.encoder_weights(params()) == ("synthetic", "the shipped one")
    assert p04.encoder_weights({**params(), "ENCODER": "random"})[0] == "random"
    with pytest.raises(ValueError, match="ENCODER"):
        p04.encoder_weights({**params(), "ENCODER": "imagenet"})


def test_train_trains_each_distinct_config_once(monkeypatch):
    P = params()
    seen = []

    def fake_run_configs(cfgs, executor=None):
        seen.extend(cfgs)
        return [FakeRun(f"r{i}", 50.0 + i, seed=c.seed) for i, c in enumerate(cfgs)]

    monkeypatch.setattr(common, "run_configs", fake_run_configs)
    runs, seed_runs = p04.train(P, "random")
    assert len(seen) == len({c.config_hash() for c in seen}) == 7  # 2 seeds + 5 variants
    assert runs["latents"]["lowest"] is seed_runs[0] is runs["dropout"]["dropout 0.1"]
    assert [r.config.seed for r in seed_runs] == [0, 1]


# ---- results and verdicts ----------------------------------------------------------------------
def labelled_runs(aspp_big=45.0, dropout_off=60.0, embed=49.0, wide_epoch1=80.0, latent_aspp=52.0):
    base, aspp = FakeRun("base", 50.0, epoch1=70.0), FakeRun("a", latent_aspp)
    runs = {
        "latents": {"lowest": base, "aspp": aspp},
        "width": {"dim 256, 4 heads (d_k=64)": base, "dim 512, 8 heads (d_k=64)": FakeRun("w", 51.0, epoch1=wide_epoch1)},
        "pos_embed": {"none": base, "input": FakeRun("p", embed)},
        "dropout": {"dropout 0.1": base, "dropout 0": FakeRun("d", dropout_off)},
        "aspp": {"aspp, 4 heads, 2 layers": aspp, "aspp, 8 heads, 6 layers": FakeRun("g", aspp_big)},
    }
    seeds = [base, FakeRun("s1", 51.0, epoch1=71.0, seed=1), FakeRun("s2", 49.0, epoch1=69.0, seed=2)]
    return runs, seeds


def test_experiment_table_and_learned_rule():
    runs, seeds = labelled_runs(dropout_off=61.0)
    runs["latents"]["decoder"] = None  # diverged
    t = p04.experiment_table(runs, BASE)
    row = t[t["variant"] == "dropout 0"].iloc[0]
    assert not row["learned"]  # 61 > 0.6 × 100
    assert t[t["variant"] == "lowest"].iloc[0]["learned"]
    dec = t[t["variant"] == "decoder"].iloc[0]
    assert pd.isna(dec["run"]) and not dec["learned"] and math.isnan(dec["si_log_rmse"])
    text = p04.learned_sentence(t, BASE, [True, True, False])
    assert "at most 0.6× the constant map's 100.00 and below the position prior's 65.00" in text
    assert "δ1 above 0.300" in text
    assert "**1 of 6** distinct runs did not: dropout 0 (SI-logRMSE 61.00 > 0.6× constant map 100.00)" in text
    assert "1 of 3 baseline seeds did not" in text and "diverged: decoder" in text and "inconclusive" in text
    # the scale counts too: a run with the right shape but worse δ1 than the image-blind prior did not learn
    scale = {**labelled_runs()[0], "pos_embed": {"none": labelled_runs()[0]["pos_embed"]["none"],
                                                 "input": FakeRun("p", 49.0, delta1=0.03)}}
    ts = p04.experiment_table(scale, BASE)
    assert not ts[ts["variant"] == "input"].iloc[0]["learned"]
    assert "input (δ1 0.030 ≤ position prior 0.300)" in p04.learned_sentence(ts, BASE, [True] * 3)
    ok = p04.learned_sentence(p04.experiment_table(labelled_runs()[0], BASE), BASE, [True] * 3)
    assert "**All 6 distinct runs learned** (SI-logRMSE 45.00…60.00)" in ok and "every seed" in ok
    # 6 variant runs (dropout 0 did not learn) + 2 more seeds (one did not) + 1 diverged
    assert p04.runs_learned(t, seeds, [True, True, False]) == (6, 9)
    st = p04.seed_table(seeds, BASE)
    assert list(st["seed"]) == [0, 1, 2, "mean", "std (ddof=1)"]
    assert st.iloc[3]["si_log_rmse"] == pytest.approx(50.0) and st.iloc[4]["si_log_rmse"] == pytest.approx(1.0)


def test_findings_use_the_seed_mean_and_noise():
    runs, seeds = labelled_runs()
    t = p04.experiment_table(runs, BASE)
    noise = p04.seed_noise(seeds)  # 50 ± 1 over 3 seeds
    noise1 = p04.seed_noise(seeds, "silog_epoch1")  # 70 ± 1
    assert (noise.mean, noise.std, noise.n) == (50.0, 1.0, 3) and noise1.mean == 70.0
    labels = {exp: list(vs) for exp, vs in runs.items()}
    found = p04.findings(t, labels, noise, noise1, baseline_run="base")
    out = {key: v for v in found for key in p04.REPORT_FINDINGS.values() if v.claim.startswith(key)}
    assert len(out) == 5
    thr_3_1 = stats.t_quantile(2) * 1.0 * math.sqrt(1 / 3 + 1)  # baseline mean of 3 vs one run, t with 2 df
    w = out[p04.REPORT_FINDINGS["width"]]
    assert w.outcome == verdicts.REPRODUCED and w.delta == pytest.approx(80 - 70) and w.threshold == pytest.approx(thr_3_1)
    # "no gain": a 1-point gain with this noise cannot be bounded below the 1-point margin → inconclusive
    pe = out[p04.REPORT_FINDINGS["pos_embed"]]
    assert pe.outcome == verdicts.INCONCLUSIVE and pe.threshold_kind == "margin" and "margin" in pe.test
    assert out[p04.REPORT_FINDINGS["dropout"]].outcome == verdicts.REPRODUCED  # 50 vs 60
    lat = out[p04.REPORT_FINDINGS["latents"]]
    assert lat.outcome == verdicts.INCONCLUSIVE and "lowest vs best other (aspp): 50.00 vs 52.00" in lat.detail
    assert out[p04.REPORT_FINDINGS["aspp"]].outcome == verdicts.REPRODUCED  # 45 vs 52, single runs: thr 6.08
    assert "Δ = +7.00 (report direction)" in out[p04.REPORT_FINDINGS["aspp"]].sentence()  # lower SI-logRMSE: + is better
    # a clearly better embedding contradicts "no gain"; a clearly worse one reproduces it
    for embed, outcome in ((40.0, verdicts.CONTRADICTED), (56.0, verdicts.REPRODUCED)):
        runs2, _ = labelled_runs(embed=embed)
        t2 = p04.experiment_table(runs2, BASE)
        v = [v for v in p04.findings(t2, labels, noise, noise1, "base") if "positional" in v.claim][0]
        assert v.outcome == outcome
    # a run that did not learn: no verdict on what it is in
    runs3, _ = labelled_runs(dropout_off=75.0)
    t3 = p04.experiment_table(runs3, BASE)
    v = [v for v in p04.findings(t3, labels, noise, noise1, "base") if "dropout" in v.claim][0]
    assert v.outcome == verdicts.INCONCLUSIVE and "did not clearly beat" in v.detail
    # seeds that did not learn make every comparison with the baseline inconclusive
    vs = p04.findings(t, labels, noise, noise1, "base", seeds_learned=False)
    assert [v.outcome for v in vs if "ASPP" not in v.claim] == [verdicts.INCONCLUSIVE] * 4
    assert verdicts.tally(vs)["verdicts_inconclusive"] == 4
    # labels may be the {experiment: {label: config}} dict of p04.configs
    assert [v.outcome for v in p04.findings(t, runs, noise, noise1, "base")] == [v.outcome for v in found]
    # a profile without an experiment: no verdict for it
    assert len(p04.findings(t, {k: labels[k] for k in ("dropout", "aspp")}, noise, noise1, "base")) == 2


def test_metric_ranks_and_the_disagreement_sentence():
    t = pd.DataFrame([
        {"experiment": "e", "variant": "a", "run": "a", "si_log_rmse": 40.0, "abs_rel": 2.54, "rmse": 60.0, "delta1": 0.11},
        {"experiment": "e", "variant": "b", "run": "b", "si_log_rmse": 45.0, "abs_rel": 0.5, "rmse": 20.0, "delta1": 0.40},
        {"experiment": "f", "variant": "b again", "run": "b", "si_log_rmse": 45.0, "abs_rel": 0.5, "rmse": 20.0, "delta1": 0.40},
        {"experiment": "e", "variant": "c", "run": "c", "si_log_rmse": 47.0, "abs_rel": 0.6, "rmse": 20.0, "delta1": 0.30},
    ])
    r = p04.metric_ranks(t)
    assert list(r.index) == ["a", "b", "c"]  # distinct runs, by SI-logRMSE
    assert list(r["abs_rel rank"]) == [3, 1, 2] and list(r["rmse rank"]) == [3, 1, 1]  # ties share the rank
    text = p04.metric_disagreement(r)
    assert "The lowest SI-logRMSE, 40.00, is **a**'s" in text
    assert "abs-rel 2.54 (worst)" in text and "δ1 0.11 (worst)" in text and "not the ranking by abs-rel, RMSE, δ1" in text
    agree = p04.metric_disagreement(r.loc[["b", "c"]])
    assert "abs-rel 0.5 (best)" in agree and "every metric agrees" in agree
    assert p04.metric_disagreement(r.iloc[:0]) == "No finished run to rank."


def test_scale_check_median_scaling_removes_a_global_scale():
    rng = np.random.default_rng(0)
    gt = rng.uniform(4, 80, (2, 8, 16)).astype(np.float32)
    gt[:, 0, :3] = 0  # invalid pixels
    pred = gt * np.array([0.25, 3.0], np.float32)[:, None, None]  # right shape, wrong scale per image
    pred[:, 0, :3] = 7.0
    t = p04.scale_check(pred, gt)
    assert t.loc["as predicted", "si_log_rmse"] == pytest.approx(0.0, abs=1e-3)  # scale-invariant: perfect
    assert t.loc["as predicted", "abs_rel"] == pytest.approx((0.75 + 2.0) / 2, rel=1e-4)
    assert t.loc["as predicted", "delta1"] == pytest.approx(0.0)
    assert t.loc["median-scaled", "abs_rel"] == pytest.approx(0.0, abs=1e-5)
    assert t.loc["median-scaled", "delta1"] == pytest.approx(1.0)
    assert t.loc["median-scaled", "scale"] == pytest.approx((4.0 + 1 / 3) / 2, rel=1e-4)
    _, factors = p04.median_scaled(pred, gt)
    assert factors == pytest.approx([4.0, 1 / 3], rel=1e-5)


# ---- attention cost, in words -----------------------------------------------------------------
def test_change_phrase_direction_words():
    assert p04.change_phrase(2.5) == "grows 2.50×"
    assert p04.change_phrase(0.32) == "falls to 0.32× (3.1× less)"  # a 3× decrease is not an increase
    assert p04.change_phrase(1.04, rel_noise=0.1).startswith("shows no clear change (×1.04")
    assert p04.change_phrase(0.5, rel_noise=0.1).startswith("falls")
    assert p04.change_phrase(float("nan")).startswith("cannot be compared")


def test_exponent_sentence_is_honest_about_the_range():
    s = p04.exponent_sentence(1.45, 1.50, 256, 1024, 256)
    assert "time ∝ N^**1.45**, FLOPs ∝ N^1.50" in s and "follows the FLOP count" in s
    assert "from 1.33 to 1.67" in s and "between linear and quadratic" in s and "close to quadratic" not in s
    assert "faster than the FLOP count" in p04.exponent_sentence(1.9, 1.5, 256, 1024, 256)
    assert "close to quadratic" in p04.exponent_sentence(1.9, 1.5, 256, 1024, 256)
    assert "slower than the FLOP count" in p04.exponent_sentence(1.0, 1.5, 256, 1024, 256)
    assert "close to linear" in p04.exponent_sentence(1.0, 1.5, 256, 1024, 256)


def _cost_rows():
    from cvaia import attention_cost as ac

    rows = []
    base = {"B": 4, "N": 256, "D": 256, "H": 4}
    for vary, values in {"N": [64, 256, 1024], "H": [1, 4, 16]}.items():
        for v in values:
            s = {**base, vary: v}
            for impl in ("explicit", "fast"):
                t = 1e-6 * ac.attention_flops(s["B"], s["N"], s["D"]) * (1.0 if impl == "fast" else 2.0)
                if vary == "H":
                    t *= {1: 1.0, 4: 0.6, 16: 0.32}[v] if impl == "explicit" else 1.0
                matrix = ac.attention_matrix_bytes(s["B"], s["N"], s["H"]) / 2 ** 20
                tokens = 6 * s["B"] * s["N"] * s["D"] * 4 / 2 ** 20
                rows.append({"vary": vary, **s, "impl": impl, "mode": "forward+backward", "time_ms": t,
                             "time_iqr_ms": 0.01 * t, "flops": 3 * ac.attention_flops(s["B"], s["N"], s["D"]),
                             "attn_matrix_mib": matrix,
                             "saved_mib": tokens + (matrix if impl == "explicit" else 0.0)})
    return pd.DataFrame(rows)


def test_cost_sentences_label_the_two_memory_ratios_and_the_direction():
    sentences = p04.cost_sentences(_cost_rows())
    assert len(sentences) == 3
    n_sentence, h_sentence, speed = sentences
    assert "Fitted over N = 64…1024 (D = 256)" in n_sentence
    assert "falls to 0.32× (3.1× less)" in h_sentence
    assert "The attention matrix B×H×N×N grows 16×" in h_sentence
    saved = (6 * 4 * 256 * 256 * 4 + 16 * 4 * 256 * 256 * 4) / (6 * 4 * 256 * 256 * 4 + 1 * 4 * 256 * 256 * 4)
    assert f"grows {saved:.1f}×" in h_sentence and "saved-tensor hooks" in h_sentence
    assert "At N = 1024" in speed and "the fused kernel is 2.00× faster" in speed
    # within the 5 % tolerance: no direction word at all, even with zero IQRs
    close = _cost_rows()
    close.loc[close["impl"] == "explicit", "time_ms"] = close.loc[close["impl"] == "fast", "time_ms"].to_numpy() * 1.03
    close["time_iqr_ms"] = 0.0
    h_close, speed_close = p04.cost_sentences(close)[1:]
    assert "shows no clear change" in h_close and "no clear difference at this size" in speed_close
