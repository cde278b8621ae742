"""Noise-aware verdicts (cvaia.experiments.verdicts): pure logic, checked against hand arithmetic."""

import math

import numpy as np
import pytest

from cvaia.experiments import stats
from cvaia.experiments import verdicts as V


def noise(values=(40.0, 41.0, 42.0), floor=0.0):
    return V.seed_noise("miou", values, floor)


def test_noise_uses_sample_std_and_floor():
    n = noise()
    assert n.n == 3 and n.mean == pytest.approx(41.0)
    assert n.std == pytest.approx(np.std([40, 41, 42], ddof=1)) == pytest.approx(1.0)
    # difference of two single runs: sigma * sqrt(2); threshold = t(2 df, 97.5 %) * sigma_diff
    t2 = stats.t_quantile(2)
    assert t2 == pytest.approx(4.3027, abs=1e-4)
    assert n.threshold() == pytest.approx(t2 * math.sqrt(2)) == n.t_threshold()
    assert n.threshold(3, 3) == pytest.approx(t2 * math.sqrt(2 / 3))
    assert n.threshold(k=2) == pytest.approx(2 * math.sqrt(2))  # the legacy fixed multiple, on request
    assert V.seed_noise("miou", (5.0, 5.0, 5.0), floor=0.5).std == 0.5
    assert "41.00 ± 1.00 (3 seeds)" == n.describe()


@pytest.mark.parametrize("values", [(1.0,), (1.0, float("nan"), 2.0)])
def test_noise_refuses_too_few_or_nan(values):
    with pytest.raises(ValueError, match="seed"):
        V.seed_noise("miou", values)


def test_compare_three_outcomes():
    n = noise()  # threshold t(2)·√2 ≈ 6.08
    assert V.compare("a > b", 48.0, 41.0, n).outcome == V.REPRODUCED
    assert V.compare("a > b", 41.0, 48.0, n).outcome == V.CONTRADICTED
    v = V.compare("a > b", 45.0, 41.0, n)  # 2σ√2 = 2.83 would call this a finding: t with 2 df does not
    assert v.outcome == V.INCONCLUSIVE and v.delta == pytest.approx(4.0)
    # lower is better (e.g. SI-logRMSE)
    assert V.compare("a < b", 20.0, 30.0, noise((25, 26, 27)), "lower").outcome == V.REPRODUCED
    # a run that did not learn never gets a verdict
    assert V.compare("a > b", 90.0, 10.0, n, learned=False).outcome == V.INCONCLUSIVE
    assert V.compare("a > b", float("nan"), 10.0, n).outcome == V.INCONCLUSIVE


def test_compare_sentence_shows_its_numbers():
    s = V.compare("pretrained beats random", 48.0, 41.0, noise()).sentence()
    assert "**reproduced**" in s and "Δ = +7.00" in s and "±6.08" in s and "t-interval" in s


def test_trend_needs_every_step_to_clear_the_noise():
    n = noise()  # threshold 6.08
    assert V.trend("up", [10, 17, 24], n).outcome == V.REPRODUCED
    assert V.trend("up", [10, 17, 18], n).outcome == V.INCONCLUSIVE     # last step is noise
    assert V.trend("up", [10, 17, 9], n).outcome == V.CONTRADICTED      # a clear step the other way
    assert V.trend("down", [24, 17, 10], n, "lower").outcome == V.REPRODUCED
    # the example: 9.50 / 9.19 / 9.13 is not a trend when noise is ~1 point
    assert V.trend("down", [9.50, 9.19, 9.13], n, "lower").outcome == V.INCONCLUSIVE


def test_best_of_ties_missing_and_rivals():
    n = noise()
    assert V.best_of("64 best", {"16": 40, "32": 41, "64": 48}, "64", n).outcome == V.REPRODUCED
    assert V.best_of("64 best", {"16": 40, "32": 48, "64": 41}, "64", n).outcome == V.CONTRADICTED
    v = V.best_of("64 best", {"16": 40, "32": 45, "64": 46}, "64", n)
    assert v.outcome == V.INCONCLUSIVE and "32" in v.detail
    # a diverged option (NaN) is beaten, not a rival
    assert V.best_of("adam best", {"adam": 40, "sgd": float("nan")}, "adam", n).outcome == V.REPRODUCED
    assert V.best_of("x", {"a": float("nan"), "b": 3}, "a", n).outcome == V.INCONCLUSIVE
    with pytest.raises(KeyError):
        V.best_of("x", {"a": 1}, "z", n)


def test_exact_and_tally():
    assert V.exact("params", 16_608_132, 16.6e6).outcome == V.REPRODUCED
    assert V.exact("params", 20e6, 16.6e6).outcome == V.CONTRADICTED
    vs = [V.compare("a", 48, 41, noise()), V.compare("b", 41, 48, noise()), V.compare("c", 41, 41.5, noise())]
    assert V.tally(vs) == {"verdicts_reproduced": 1, "verdicts_contradicted": 1, "verdicts_inconclusive": 1,
                           "verdicts_measured_conclusive": 2, "verdicts_measured_total": 3, "verdicts_counted": 0}
    table = V.verdict_table(vs)
    assert list(table.verdict) == [V.REPRODUCED, V.CONTRADICTED, V.INCONCLUSIVE]
    with pytest.raises(ValueError):
        V.Verdict("x", "maybe")


def test_counted_costs_decide_without_noise():
    flops = {"16": 0.63, "48": 0.66, "64": 0.68}
    assert V.counted("16 fastest", flops, "16", "lower").outcome == V.REPRODUCED
    v = V.counted("64 fastest", flops, "64", "lower", timed={"16": 12.0, "48": 12.5, "64": 9.0})
    assert v.outcome == V.CONTRADICTED and v.delta == pytest.approx(0.63 - 0.68)
    assert v.threshold == pytest.approx(0.01 * 0.68) and v.threshold_kind == "tie"
    assert "tie tolerance" in v.sentence() and "noise threshold" not in v.sentence()
    assert "64 9" in v.detail and "not judged" in v.detail  # the times are shown, never decide
    assert V.counted("64 most", flops, "64", "higher").outcome == V.REPRODUCED
    assert V.counted("tie", {"a": 1.0, "b": 1.005}, "a", "lower").outcome == V.INCONCLUSIVE  # within 1 %
    assert V.counted("alone", {"a": 1.0}, "a").outcome == V.INCONCLUSIVE
    with pytest.raises(KeyError, match="'c'"):
        V.counted("x", flops, "c")
    with pytest.raises(ValueError, match="direction"):
        V.counted("x", flops, "16", "faster")


# ---- verdicts that fit their claims (paired, equivalence, slope, long schedules), as records ----
def test_paired_verdict_uses_the_per_seed_differences():
    a, b = [30.0, 32.0, 31.0, 33.5], [29.0, 31.2, 30.1, 32.4]  # B trails A by ~1 under every seed
    v = V.paired("A beats B (mIoU)", a, b, "higher")
    assert v.outcome == V.REPRODUCED and v.kind == V.MEASURED and v.test == "paired t" and v.n == (4,)
    # unpaired, the same numbers are lost in the seed spread
    u = V.unpaired("A beats B (mIoU)", a, b, V.pooled_noise("miou", {"A": a, "B": b}), "higher")
    assert u.outcome == V.INCONCLUSIVE and u.n == (4, 4) and "detects a true effect" in u.detail
    # "lower" claims flip the sign: the estimate is always in the report's direction
    w = V.paired("A has lower error", a, b, "lower")
    assert w.outcome == V.CONTRADICTED and w.interval.high < 0


def test_pooled_noise_pools_every_multi_seed_configuration():
    nz = V.pooled_noise("miou", {"base": [20.0, 22.0, 21.0], "other": [30.0, 30.5], "single": [25.0]})
    assert nz.df == 3 and nz.configs == 2 and nz.mean == 21.0
    assert nz.std == pytest.approx(((1.0 + 1.0 + 0.0 + 0.125) / 3) ** 0.5)
    assert "pooled over 2 configurations, 3 df" in nz.describe()
    with pytest.raises(ValueError, match="at least 2 seeds"):
        V.pooled_noise("miou", {"single": [25.0]})


def test_equivalence_reproduces_a_no_gain_claim_inside_its_margin():
    a, b = [30.0, 31.0, 29.5, 30.2], [30.1, 30.9, 29.6, 30.1]
    v = V.equivalence("positional embedding brings no gain", a, b, margin=1.0)
    assert v.outcome == V.REPRODUCED and v.threshold_kind == "margin" and "TOST" in v.test
    assert V.equivalence("no gain", a, b, margin=0.05).outcome == V.INCONCLUSIVE
    far = V.equivalence("no gain", [35.0, 36.0, 35.5], [30.0, 31.0, 30.4], margin=1.0)
    assert far.outcome == V.CONTRADICTED


def test_long_schedule_claims_are_inconclusive_by_rule_below_the_stated_steps():
    v = V.long_schedule("branched in half the epochs", steps=62, min_steps=2000)
    assert v.outcome == V.INCONCLUSIVE and "2000" in v.detail and "62" in v.detail
    assert V.long_schedule("branched in half the epochs", steps=2400, min_steps=2000) is None


def test_counted_verdicts_are_arithmetic_and_kept_apart():
    c = V.counted("skip 64 is the fastest", {"64": 0.684, "16": 0.626}, "64", "lower")
    e = V.exact("ASPP parameters", 4_131_584, 4_131_584)
    m = V.compare("a", 48, 41, noise())
    assert c.kind == e.kind == V.COUNTED and m.kind == V.MEASURED
    assert "not consistent with the report's claim (arithmetic)" in c.sentence()
    t = V.tally([c, e, m])
    assert (t["verdicts_counted"], t["verdicts_measured_total"], t["verdicts_measured_conclusive"]) == (2, 1, 1)


def test_records_are_json_ready_with_stable_unique_ids():
    import json

    vs = [V.paired("Dilation helps (F,F,T vs F,F,F)", [3.0, 4.0, 5.0], [1.0, 1.5, 2.5]),
          V.paired("Dilation helps (SI-logRMSE)", [3.0, 4.0, 5.0], [1.0, 1.5, 2.5]),
          V.exact("params", 10, 10)]
    recs = V.records(vs)
    assert [r["id"] for r in recs] == ["dilation_helps", "dilation_helps_2", "params"]
    r = recs[0]
    assert r["kind"] == "measured" and r["outcome"] == V.REPRODUCED and r["n"] == [3]
    assert r["ci"][0] > 0 and r["ci_level"] == 0.95 and r["test"] == "paired t"
    assert recs[2]["kind"] == "counted" and recs[2]["ci"] is None
    json.dumps(recs, allow_nan=False)


# ---- the paired design: pooled blocked noise, best of k, chains ----
SEEDS3 = (0.0, 3.0, -2.0)  # each seed's effect, shared by every arm


def arm(mean, resid=(0.0, 0.0, 0.0), seeds=(0, 1, 2)):
    return {s: mean + SEEDS3[s] + resid[i] for i, s in enumerate(seeds)}


def test_blocked_sd_of_two_arms_is_the_sd_of_their_differences_over_root_two():
    a, b = [1.0, 2.0, 4.0], [0.5, 2.2, 3.1]
    sd, df = stats.blocked_sd([a, b])
    assert df == 2 and 2 * sd ** 2 == pytest.approx(np.var(np.subtract(a, b), ddof=1))
    # a seed effect shared by every arm changes nothing
    shift = [5.0, -3.0, 1.0]
    assert stats.blocked_sd([np.add(a, shift), np.add(b, shift)])[0] == pytest.approx(sd)
    with pytest.raises(ValueError, match="2 arms"):
        stats.blocked_sd([a])


def test_paired_noise_pools_every_arm_on_the_shared_seeds():
    arms = {"base": arm(30.0, (0.2, -0.2, 0.0)), "x": arm(25.0, (-0.2, 0.1, 0.1), (0, 1, 2)),
            "y": arm(20.0, (0.1, -0.1), (0, 1)), "z": arm(21.0, (-0.1, 0.2), (0, 1))}
    nz = V.paired_noise("miou", arms)
    assert nz.arms == 4 and nz.seeds == (0, 1)  # 4 distinct arms × 2 shared seeds: more df than 2 arms × 3
    assert nz.df == 3 and nz.sd < 0.3 < 2.0 < nz.unpaired_sd  # the seed effects stay out of the paired σ
    assert nz.sd_diff == pytest.approx(math.sqrt(2) * nz.sd)
    assert nz.half_width(2) == pytest.approx(stats.t_quantile(nz.df) * nz.sd_diff / math.sqrt(2))
    assert "paired difference" in nz.describe() and "unpaired" in nz.describe()
    # an arm that holds some of another's runs is not counted again
    runs = [object(), object(), object()]
    kept = V.distinct_arms({"base": runs, "part": runs[:2], "again": list(runs), "x": [object(), None]})
    assert list(kept) == ["base", "x"]
    with pytest.raises(ValueError, match="2 arms"):
        V.paired_noise("miou", {"only": arm(1.0)})


def test_best_of_paired_needs_every_pairwise_difference():
    nz = V.paired_noise("miou", {"a": arm(30.0, (0.1, -0.1, 0)), "b": arm(31.0, (-0.1, 0.1, 0)), "c": arm(29.0)})
    arms = {"a": arm(30.0, (0.1, -0.1, 0)), "b": arm(31.0, (-0.1, 0.1, 0)), "c": arm(29.0)}
    v = V.best_of_paired("b best", arms, "b", nz)
    assert v.outcome == V.REPRODUCED and "vs a" in v.detail and "vs c" in v.detail
    assert v.interval.estimate == pytest.approx(1.0, abs=0.3)  # against the closest rival, a
    c = V.best_of_paired("c best", arms, "c", nz)
    assert c.outcome == V.CONTRADICTED and c.interval.high < 0
    # a rival within the noise: inconclusive, with the detectable effect
    close = {"a": arm(30.0, (0.1, -0.1, 0)), "b": arm(30.05, (-0.1, 0.1, 0))}
    w = V.best_of_paired("b best", close, "b", V.paired_noise("miou", close))
    assert w.outcome == V.INCONCLUSIVE and "detects a true effect" in w.detail
    assert V.best_of_paired("b best", arms, "b", nz, learned=False).outcome == V.INCONCLUSIVE
    assert V.best_of_paired("b best", {**arms, "dead": {}}, "b", nz).outcome == V.REPRODUCED
    with pytest.raises(KeyError):
        V.best_of_paired("z best", arms, "z", nz)


def test_chain_paired_judges_each_step():
    arms = {"bare": arm(20.0, (0.1, -0.1, 0)), "+d": arm(22.0, (-0.1, 0.1, 0)), "+a": arm(25.0)}
    nz = V.paired_noise("miou", arms)
    assert V.chain_paired("up", arms, nz).outcome == V.REPRODUCED
    assert V.chain_paired("down", arms, nz, "lower").outcome == V.CONTRADICTED
    flat = {"bare": arms["bare"], "+d": arm(20.02, (-0.1, 0.1, 0)), "+a": arms["+a"]}
    v = V.chain_paired("up", flat, V.paired_noise("miou", flat))
    assert v.outcome == V.INCONCLUSIVE and "bare → +d" in v.detail


def test_paired_arms_uses_the_shared_seeds_only():
    nz = V.paired_noise("miou", {"a": arm(30.0, (0.1, -0.1, 0)), "b": arm(28.0, (-0.1, 0.1, 0))})
    v = V.paired_arms("a beats b", arm(30.0, (0.1, -0.1, 0)), arm(28.0, (-0.1, 0.1), (0, 1)), nz)
    assert v.outcome == V.REPRODUCED and v.n == (2,) and "seeds 0, 1" in v.detail
    assert V.paired_arms("a beats b", {0: 1.0}, {1: 2.0}, nz).outcome == V.INCONCLUSIVE  # no shared seed


def test_no_gain_bounds_the_gain_against_a_margin_stated_before_the_run():
    nz = V.pooled_noise("si", {"base": [50.0, 50.5, 49.5], "other": [40.0, 40.4, 39.6]})  # σ ≈ 0.46, 4 df
    # lower is better: an embedding 0.1 worse → its gain (−0.1) is bounded below the 1-point margin
    v = V.no_gain_unpaired("no gain", 50.1, 3, 50.0, 3, nz, 1.0, "lower")
    assert v.outcome == V.REPRODUCED and v.threshold_kind == "margin" and "margin 1" in v.test
    assert v.interval.estimate == pytest.approx(-0.1)
    # clearly worse: no gain either
    assert V.no_gain_unpaired("no gain", 53.0, 1, 50.0, 3, nz, 1.0, "lower").outcome == V.REPRODUCED
    # a gain of 4 points, far beyond the margin: contradicted
    assert V.no_gain_unpaired("no gain", 46.0, 1, 50.0, 3, nz, 1.0, "lower").outcome == V.CONTRADICTED
    # a gain of about the margin: inconclusive, with what the test could detect
    w = V.no_gain_unpaired("no gain", 49.0, 3, 50.0, 3, nz, 1.0, "lower")
    assert w.outcome == V.INCONCLUSIVE and "detects a true effect" in w.detail
    assert V.no_gain_unpaired("no gain", 49.0, 1, 50.0, 3, nz, 1.0, "lower", learned=False).outcome == V.INCONCLUSIVE
    assert V.no_gain_unpaired("no gain", float("nan"), 1, 50.0, 3, nz, 1.0).outcome == V.INCONCLUSIVE
