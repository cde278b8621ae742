"""Noise-aware verdicts (cvaia.experiments.verdicts): pure logic, checked against hand arithmetic."""

import math

import numpy as np
import pytest

from cvaia.experiments import verdicts as V


def noise(values=(40.0, 41.0, 42.0), floor=0.0):
    return V.seed_noise("miou", values, floor)


def test_noise_uses_sample_std_and_floor():
    n = noise()
    assert n.n == 3 and n.mean == pytest.approx(41.0)
    assert n.std == pytest.approx(np.std([40, 41, 42], ddof=1)) == pytest.approx(1.0)
    # difference of two single runs: sigma * sqrt(2); threshold = 2 sigma_diff
    assert n.threshold() == pytest.approx(2 * math.sqrt(2))
    assert n.threshold(3, 3) == pytest.approx(2 * math.sqrt(2 / 3))
    assert V.seed_noise("miou", (5.0, 5.0, 5.0), floor=0.5).std == 0.5
    assert "41.00 ± 1.00 (3 seeds)" == n.describe()


@pytest.mark.parametrize("values", [(1.0,), (1.0, float("nan"), 2.0)])
def test_noise_refuses_too_few_or_nan(values):
    with pytest.raises(ValueError, match="seed"):
        V.seed_noise("miou", values)


def test_compare_three_outcomes():
    n = noise()  # threshold 2.83
    assert V.compare("a > b", 45.0, 41.0, n).outcome == V.REPRODUCED
    assert V.compare("a > b", 41.0, 45.0, n).outcome == V.CONTRADICTED
    v = V.compare("a > b", 42.0, 41.0, n)
    assert v.outcome == V.INCONCLUSIVE and v.delta == pytest.approx(1.0)
    # lower is better (e.g. SI-logRMSE)
    assert V.compare("a < b", 20.0, 30.0, noise((25, 26, 27)), "lower").outcome == V.REPRODUCED
    # a run that did not learn never gets a verdict
    assert V.compare("a > b", 90.0, 10.0, n, learned=False).outcome == V.INCONCLUSIVE
    assert V.compare("a > b", float("nan"), 10.0, n).outcome == V.INCONCLUSIVE


def test_compare_sentence_shows_its_numbers():
    s = V.compare("pretrained beats random", 45.0, 41.0, noise()).sentence()
    assert "**reproduced**" in s and "Δ = +4.00" in s and "±2.83" in s


def test_trend_needs_every_step_to_clear_the_noise():
    n = noise()  # threshold 2.83
    assert V.trend("up", [10, 14, 18], n).outcome == V.REPRODUCED
    assert V.trend("up", [10, 14, 15], n).outcome == V.INCONCLUSIVE     # last step is noise
    assert V.trend("up", [10, 14, 9], n).outcome == V.CONTRADICTED      # a clear step the other way
    assert V.trend("down", [18, 14, 10], n, "lower").outcome == V.REPRODUCED
    # the example: 9.50 / 9.19 / 9.13 is not a trend when noise is ~1 point
    assert V.trend("down", [9.50, 9.19, 9.13], n, "lower").outcome == V.INCONCLUSIVE


def test_best_of_ties_missing_and_rivals():
    n = noise()
    assert V.best_of("64 best", {"16": 40, "32": 41, "64": 46}, "64", n).outcome == V.REPRODUCED
    assert V.best_of("64 best", {"16": 40, "32": 47, "64": 41}, "64", n).outcome == V.CONTRADICTED
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
    vs = [V.compare("a", 45, 41, noise()), V.compare("b", 41, 45, noise()), V.compare("c", 41, 41.5, noise())]
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
    m = V.compare("a", 45, 41, noise())
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
