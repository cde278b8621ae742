"""The workbook's statistics: pure functions of numbers, one home for every test a verdict uses.

A verdict (:mod:`cvaia.experiments.verdicts`) asks one of a few questions of a handful of
training runs, and each question has its test:

- **How noisy is a metric?** :func:`pooled_sd` pools the seed variance of *every* multi-seed
  configuration (``s_p² = Σ (n_i − 1) s_i² / Σ (n_i − 1)``), with its degrees of freedom
  ``Σ (n_i − 1)``. Three seeds of one configuration give 2 degrees of freedom, and a standard
  deviation from 2 df is itself so uncertain that a threshold built on it moves by 2× between
  seed sets; pooling ten configurations gives 20 df.
- **Does A beat B?** :func:`paired_difference`: both arms trained under the same seeds, the
  per-seed differences ``d_s = A_s − B_s`` (same initialisation of the new layers, same data
  order and augmentation, so much of the seed-to-seed spread cancels), their mean and a
  t-interval. :func:`two_sample` is the unpaired interval (means over ``n_a`` and ``n_b`` runs
  with a pooled σ), for arms that do not share seeds. :func:`sign_flip_p` is the exact
  randomisation test of the paired differences, which needs no normality (useful for small n).
- **How noisy is a paired difference?** :func:`blocked_sd`: the residual σ of an additive
  arm + seed model over every arm trained under the same seeds (what pairing leaves).
- **No gain?** :func:`equivalent` (two one-sided tests, TOST): the ``1 − 2α`` interval of the
  difference lies inside ``±margin``, a margin stated before the run.
- **A trend over a grid?** :func:`slope`: least-squares slope over all points with its interval,
  instead of asking every consecutive step to clear the noise.
- **What could this profile have seen?** :func:`detectable_effect`: the smallest true
  difference a two-sided test at level α finds with the given power, at this n and σ.

Every interval is a :class:`Interval` (estimate, bounds, standard error, df, n per arm, the name
of the test), which the verdicts carry into ``headlines/NN.json``. scipy's t-distribution gives
the quantiles; ``tests/test_stats.py`` checks every function against ``scipy.stats`` on fixed
numbers.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats as _st

#: Confidence level of every interval the verdicts print (two-sided).
LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """An estimate with its two-sided interval."""

    estimate: float
    low: float
    high: float
    se: float
    df: float
    #: runs on each side (one number for a paired test: the number of pairs)
    n: tuple[int, ...]
    test: str
    level: float = LEVEL

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2.0

    def excludes_zero(self) -> bool:
        return self.low > 0.0 or self.high < 0.0

    def as_dict(self) -> dict:
        d = asdict(self)
        d["n"] = list(self.n)
        return d


def _floats(values: Iterable[float], what: str) -> np.ndarray:
    arr = np.asarray([float(v) for v in values], dtype=float)
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"{what}: every value must be finite, got {arr.tolist()}")
    return arr


def mean_sd(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof 1) of ``values``; the std is NaN for one value."""
    arr = _floats(values, "mean_sd")
    if arr.size == 0:
        raise ValueError("mean_sd: need at least one value")
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else math.nan


def t_quantile(df: float, level: float = LEVEL) -> float:
    """The two-sided critical value ``t_{(1+level)/2, df}``."""
    if not df > 0:
        raise ValueError(f"t_quantile: degrees of freedom must be positive, got {df}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"t_quantile: level must be in (0, 1), got {level}")
    return float(_st.t.ppf(0.5 + level / 2.0, df))


def pooled_sd(groups: Iterable[Sequence[float]]) -> tuple[float, int]:
    """Pooled standard deviation of several groups (one per multi-seed configuration) and its
    degrees of freedom. Groups of one value carry no information on the spread and are skipped."""
    ss = 0.0
    df = 0
    for g in groups:
        arr = _floats(g, "pooled_sd")
        if arr.size < 2:
            continue
        ss += float(np.sum((arr - arr.mean()) ** 2))
        df += arr.size - 1
    if df == 0:
        raise ValueError("pooled_sd: need at least one group with two or more values")
    return math.sqrt(ss / df), df


def blocked_sd(table: Sequence[Sequence[float]]) -> tuple[float, int]:
    """σ of one run once its seed's shared part is removed, from a complete arms × seeds table
    (``table[i][j]``: arm ``i`` trained under seed ``j``; every arm under the same seeds).

    The residual standard deviation of the additive model ``y = arm + seed + ε`` and its degrees
    of freedom ``(k − 1)(n − 1)``. A paired difference of two arms has variance ``2σ²`` (for two
    arms this is exactly the variance of the per-seed differences divided by 2); the seed's own
    effect (its initialisation, data order and augmentation, shared by every arm) cancels."""
    y = np.asarray([_floats(row, "blocked_sd") for row in table], dtype=float)
    if y.ndim != 2:
        raise ValueError("blocked_sd: every arm needs one value per shared seed")
    k, n = y.shape
    if k < 2 or n < 2:
        raise ValueError(f"blocked_sd: need at least 2 arms under at least 2 shared seeds, got {k} × {n}")
    resid = y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()
    df = (k - 1) * (n - 1)
    return math.sqrt(float(np.sum(resid ** 2)) / df), df


def _interval(estimate: float, se: float, df: float, n: tuple[int, ...], test: str,
              level: float) -> Interval:
    h = t_quantile(df, level) * se
    return Interval(float(estimate), float(estimate - h), float(estimate + h), float(se), float(df), n, test,
                    level)


def mean_interval(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean of ``values`` with its one-sample t-interval."""
    arr = _floats(values, "mean_interval")
    if arr.size < 2:
        raise ValueError(f"mean_interval: need at least 2 values, got {arr.size}")
    se = float(arr.std(ddof=1)) / math.sqrt(arr.size)
    return _interval(arr.mean(), se, arr.size - 1, (int(arr.size),), "one-sample t", level)


def paired_difference(a: Sequence[float], b: Sequence[float], level: float = LEVEL,
                      sd: float | None = None, df: float | None = None) -> Interval:
    """Mean of the per-seed differences ``a_s − b_s`` with its t-interval.

    ``a[i]`` and ``b[i]`` must come from the same seed. The standard error is that of the
    differences (``s_d / √n``, df ``n − 1``); ``sd``/``df`` replace it by a pooled standard
    deviation *of differences* measured over more pairs (then ``se = sd / √n`` with that df).
    """
    x, y = _floats(a, "paired_difference a"), _floats(b, "paired_difference b")
    if x.size != y.size:
        raise ValueError(f"paired_difference: arms must have one value per shared seed, got {x.size} and {y.size}")
    d = x - y
    n = int(d.size)
    if sd is None:
        if n < 2:
            raise ValueError("paired_difference: need at least 2 pairs (or a pooled sd of differences)")
        sd, df = float(d.std(ddof=1)), n - 1
    elif df is None:
        raise ValueError("paired_difference: a pooled sd needs its degrees of freedom")
    if n < 1:
        raise ValueError("paired_difference: no pairs")
    return _interval(d.mean(), sd / math.sqrt(n), df, (n,), "paired t", level)


def two_sample(mean_a: float, n_a: int, mean_b: float, n_b: int, sd: float, df: float,
               level: float = LEVEL) -> Interval:
    """Unpaired difference of two means (over ``n_a`` and ``n_b`` runs) with a pooled σ of
    ``df`` degrees of freedom: ``se = σ·√(1/n_a + 1/n_b)``."""
    if n_a < 1 or n_b < 1:
        raise ValueError(f"two_sample: need at least one run on each side, got {n_a} and {n_b}")
    se = float(sd) * math.sqrt(1.0 / n_a + 1.0 / n_b)
    return _interval(float(mean_a) - float(mean_b), se, df, (int(n_a), int(n_b)), "two-sample t (pooled σ)",
                     level)


def sign_flip_p(differences: Sequence[float]) -> float:
    """Exact two-sided p-value of the sign-flip (randomisation) test of paired differences:
    the share of the ``2^n`` sign assignments whose mean is at least as far from 0 as the
    observed one. Needs no normality; with n pairs the smallest possible p is ``2 / 2^n``."""
    d = _floats(differences, "sign_flip_p")
    n = d.size
    if n < 1:
        raise ValueError("sign_flip_p: no differences")
    if n > 20:
        raise ValueError(f"sign_flip_p: exact enumeration is for small n (≤ 20), got {n}")
    observed = abs(d.mean())
    signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
    means = np.abs(signs @ d) / n
    return float(np.mean(means >= observed - 1e-12 * max(1.0, observed)))


def equivalent(interval: Interval, margin: float) -> bool:
    """TOST: equivalence within ``±margin`` when the interval lies inside it. Pass the
    ``1 − 2α`` interval (a 90 % interval for α = 5 %): that is the two one-sided tests."""
    if not margin > 0:
        raise ValueError(f"equivalent: the margin must be positive, got {margin}")
    return -margin < interval.low and interval.high < margin


def tost_level(alpha: float = 0.05) -> float:
    """The interval level of a TOST at ``alpha``: ``1 − 2α``."""
    return 1.0 - 2.0 * alpha


def slope(x: Sequence[float], y: Sequence[float], level: float = LEVEL, sd: float | None = None,
          df: float | None = None) -> Interval:
    """Least-squares slope of ``y`` on ``x`` over all points, with its t-interval.

    The standard error comes from the fit's residuals (df ``n − 2``) unless ``sd``/``df`` give
    the noise of one point measured elsewhere (the pooled seed σ): then
    ``se = sd / √Σ(x − x̄)²`` with that df.
    """
    xs, ys = _floats(x, "slope x"), _floats(y, "slope y")
    if xs.size != ys.size:
        raise ValueError(f"slope: x and y differ in length ({xs.size} vs {ys.size})")
    sxx = float(np.sum((xs - xs.mean()) ** 2))
    if xs.size < 2 or sxx == 0.0:
        raise ValueError("slope: need at least two distinct x values")
    b = float(np.sum((xs - xs.mean()) * (ys - ys.mean())) / sxx)
    if sd is None:
        if xs.size < 3:
            raise ValueError("slope: need at least 3 points (or the noise of one point) for an interval")
        resid = ys - (ys.mean() + b * (xs - xs.mean()))
        sd, df = math.sqrt(float(np.sum(resid ** 2)) / (xs.size - 2)), xs.size - 2
    elif df is None:
        raise ValueError("slope: a given sd needs its degrees of freedom")
    return _interval(b, sd / math.sqrt(sxx), df, (int(xs.size),), "least-squares slope", level)


def detectable_effect(se: float, df: float, level: float = LEVEL, power: float = 0.8) -> float:
    """The smallest true effect a two-sided t-test at ``level`` detects with ``power``:
    ``(t_{(1+level)/2, df} + t_{power, df}) · se``."""
    if not 0.0 < power < 1.0:
        raise ValueError(f"detectable_effect: power must be in (0, 1), got {power}")
    return (t_quantile(df, level) + float(_st.t.ppf(power, df))) * float(se)
