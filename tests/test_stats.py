"""cvaia.experiments.stats against scipy.stats on fixed numbers."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as st

from cvaia.experiments import stats as S

A = [41.2, 43.0, 42.1, 44.3, 40.9]
B = [39.8, 42.1, 40.0, 43.5, 40.1]


def test_t_quantile_matches_scipy():
    for df in (1, 2, 4, 20, 57.5):
        assert S.t_quantile(df) == pytest.approx(st.t.ppf(0.975, df))
    assert S.t_quantile(10, 0.9) == pytest.approx(st.t.ppf(0.95, 10))
    with pytest.raises(ValueError, match="degrees of freedom"):
        S.t_quantile(0)


def test_pooled_sd_is_the_anova_within_group_sd():
    groups = [[1.0, 2.0, 4.0], [10.0, 10.5], [7.0], [3.0, 3.0, 3.3, 2.7]]
    sd, df = S.pooled_sd(groups)
    used = [g for g in groups if len(g) > 1]
    assert df == sum(len(g) - 1 for g in used) == 6
    # scipy's one-way ANOVA: F = MS_between / MS_within, so MS_within = SS_between / (k-1) / F
    f, _ = st.f_oneway(*used)
    allv = np.concatenate(used)
    ss_between = sum(len(g) * (np.mean(g) - allv.mean()) ** 2 for g in used)
    ms_within = ss_between / (len(used) - 1) / f
    assert sd == pytest.approx(math.sqrt(ms_within))
    with pytest.raises(ValueError, match="two or more"):
        S.pooled_sd([[1.0], [2.0]])


def test_paired_difference_matches_ttest_rel():
    iv = S.paired_difference(A, B)
    ref = st.ttest_rel(A, B).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high))
    assert iv.estimate == pytest.approx(np.mean(np.subtract(A, B)))
    assert iv.df == 4 and iv.n == (5,) and iv.test == "paired t"
    with pytest.raises(ValueError, match="one value per shared seed"):
        S.paired_difference(A, B[:3])


def test_paired_difference_with_a_pooled_sd_of_differences():
    iv = S.paired_difference(A[:2], B[:2], sd=0.8, df=24)
    d = np.mean(np.subtract(A[:2], B[:2]))
    h = st.t.ppf(0.975, 24) * 0.8 / math.sqrt(2)
    assert (iv.low, iv.high) == pytest.approx((d - h, d + h))
    with pytest.raises(ValueError, match="degrees of freedom"):
        S.paired_difference(A, B, sd=1.0)


def test_two_sample_matches_ttest_ind_pooled():
    sd, df = S.pooled_sd([A, B])
    iv = S.two_sample(np.mean(A), len(A), np.mean(B), len(B), sd, df)
    ref = st.ttest_ind(A, B, equal_var=True).confidence_interval(0.95)
    assert (iv.low, iv.high) == pytest.approx((ref.low, ref.high))
    assert iv.n == (5, 5)


def test_sign_flip_p_matches_scipy_permutation_test():
    d = np.subtract(A, B)
    ref = st.permutation_test((d,), np.mean, permutation_type="samples", n_resamples=np.inf,
                              alternative="two-sided")
    assert S.sign_flip_p(d) == pytest.approx(ref.pvalue)
    # all five differences positive: the smallest p with 5 pairs, 2 / 2^5
    assert S.sign_flip_p([1.0, 2.0, 0.5, 3.0, 1.5]) == pytest.approx(2 / 32)


def test_equivalence_is_two_one_sided_tests():
    a = [10.0, 10.2, 9.9, 10.1, 10.05, 9.95]
    b = [10.05, 10.1, 10.0, 10.0, 10.1, 10.0]
    iv = S.paired_difference(a, b, level=S.tost_level(0.05))
    d = np.subtract(a, b)
    for margin, expected in ((0.5, True), (0.05, False)):
        # TOST by hand with scipy: both one-sided tests reject at 5 %
        p_low = st.ttest_1samp(d, -margin, alternative="greater").pvalue
        p_high = st.ttest_1samp(d, margin, alternative="less").pvalue
        assert S.equivalent(iv, margin) is bool(max(p_low, p_high) < 0.05) is expected
    with pytest.raises(ValueError, match="positive"):
        S.equivalent(iv, 0.0)


def test_slope_matches_linregress():
    x = [0.25, 0.25, 0.5, 0.5, 0.75, 0.75]
    y = [36.1, 35.0, 34.2, 35.1, 32.0, 32.9]
    iv = S.slope(x, y)
    ref = st.linregress(x, y)
    h = st.t.ppf(0.975, len(x) - 2) * ref.stderr
    assert iv.estimate == pytest.approx(ref.slope)
    assert iv.se == pytest.approx(ref.stderr)
    assert (iv.low, iv.high) == pytest.approx((ref.slope - h, ref.slope + h))
    # with the noise of one point known from elsewhere
    iv2 = S.slope(x, y, sd=0.9, df=20)
    sxx = np.sum((np.array(x) - np.mean(x)) ** 2)
    assert iv2.se == pytest.approx(0.9 / math.sqrt(sxx)) and iv2.df == 20
    with pytest.raises(ValueError, match="distinct"):
        S.slope([1, 1, 1], [1, 2, 3])


def test_detectable_effect_matches_noncentral_t_power():
    se, df = 0.6, 12
    delta = S.detectable_effect(se, df)
    # power of the two-sided test at that true effect, from the noncentral t: about 0.8
    crit = st.t.ppf(0.975, df)
    nc = delta / se
    power = st.nct.sf(crit, df, nc) + st.nct.cdf(-crit, df, nc)
    assert power == pytest.approx(0.8, abs=0.02)


def test_non_finite_values_are_refused():
    with pytest.raises(ValueError, match="finite"):
        S.paired_difference([1.0, math.nan], [1.0, 2.0])


def test_mean_sd_matches_numpy_and_single_value_is_nan():
    vals = [41.2, 43.9, 40.1, 42.7]
    mean, sd = S.mean_sd(vals)
    assert mean == pytest.approx(np.mean(vals))
    assert sd == pytest.approx(np.std(vals, ddof=1))
    assert math.isnan(S.mean_sd([3.0])[1])
    with pytest.raises(ValueError, match="mean_sd"):
        S.mean_sd([])
