"""Verdicts that know their noise: is a finding of the report reproduced by *this* run?

A difference between two runs is a finding only when it clears the run-to-run noise. Every
comparison with the report gets one of three outcomes:

- **reproduced**: the measured difference points the report's way and clears the noise (for a
  "no gain" claim: the difference lies inside a margin stated before the run, :func:`equivalence`);
- **contradicted**: it points the other way and clears the noise;
- **inconclusive at this scale**: it does not clear the noise (or a run did not learn); the
  verdict then states the smallest effect this profile could have detected.

The design the notebooks use is **paired**: the arms of a comparison are trained under the same
seeds (same initialisation of new layers, same data order and augmentation), and a comparison is
judged on the per-seed differences. Their noise, :class:`PairedNoise`, is pooled over every arm of
the notebook (:func:`paired_noise`, the residual of an additive arm + seed model); the interval
of a mean difference over ``n`` shared seeds is ``t_df · σ_Δ / √n``, with the t quantile at the
pooled degrees of freedom. Tests per kind of claim: :func:`paired` (A beats B),
:func:`best_of_paired` (A is the best of k: every pairwise difference), :func:`chain_paired`
(each ingredient adds), :func:`slope_trend` (a trend over a grid), :func:`equivalence` (no
gain, TOST), :func:`long_schedule` (a long-schedule claim below a stated number of steps).

:func:`compare` / :func:`trend` / :func:`best_of` are the unpaired forms (single runs against a
seed mean): their threshold is the t-interval's half-width ``t_df·σ·√(1/n_a + 1/n_b)`` with σ's
degrees of freedom (:meth:`Noise.t_threshold`). Each :class:`Verdict` carries the numbers it
decided on, so the notebooks can print them next to the word.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from . import stats

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive at this scale"
OUTCOMES = (REPRODUCED, CONTRADICTED, INCONCLUSIVE)

#: Legacy fixed multiple of σ for :meth:`Noise.threshold` when ``k`` is given; the verdicts use
#: the t quantile at σ's degrees of freedom instead (``k=None``).
K_SIGMA = 2.0

#: What a verdict rests on: trained runs (with noise) or counted arithmetic (no noise).
MEASURED = "measured"
COUNTED = "counted"
KINDS = (MEASURED, COUNTED)

#: Wording of a counted verdict (a count is consistent with a claim, it does not reproduce a run).
COUNTED_WORDS = {REPRODUCED: "consistent with the report's claim (arithmetic)",
                 CONTRADICTED: "not consistent with the report's claim (arithmetic)",
                 INCONCLUSIVE: "the counts tie (arithmetic)"}


def claim_id(claim: str) -> str:
    """A stable identifier from a claim's text: its words before any parenthesis, lower case,
    joined by ``_`` (``"Dilation helps (F,F,T vs F,F,F)"`` → ``"dilation_helps"``)."""
    head = claim.split("(")[0]
    slug = re.sub(r"[^0-9a-z]+", "_", head.lower()).strip("_")
    return slug[:60] or "claim"


@dataclass(frozen=True)
class Noise:
    """Seed spread of one metric of one configuration (sample standard deviation, ddof=1)."""

    metric: str
    values: tuple[float, ...]
    #: lower bound on σ: a measured spread of (almost) zero from a few seeds is luck, not
    #: precision, so σ is never taken below this (in the metric's units).
    floor: float = 0.0
    #: (σ, degrees of freedom) pooled over several configurations (:func:`pooled_noise`);
    #: ``None``: σ of :attr:`values` alone, with ``n − 1`` degrees of freedom
    pooled: tuple[float, int] | None = None
    #: how many configurations the pooled σ comes from
    configs: int = 1

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """The seed standard deviation used for verdicts (at least :attr:`floor`)."""
        if self.pooled is not None:
            raw = float(self.pooled[0])
        else:
            raw = float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan
        return max(raw, self.floor) if not math.isnan(raw) else math.nan

    @property
    def df(self) -> int:
        """Degrees of freedom of :attr:`std`."""
        return int(self.pooled[1]) if self.pooled is not None else max(self.n - 1, 0)

    def t_threshold(self, n_a: int = 1, n_b: int = 1, level: float = stats.LEVEL) -> float:
        """Half-width of the t-interval of an unpaired difference of means over ``n_a`` and
        ``n_b`` runs: ``t_{df}·σ·√(1/n_a + 1/n_b)``, with this σ's degrees of freedom."""
        return stats.t_quantile(self.df, level) * self.sigma_diff(n_a, n_b)

    def sigma_diff(self, n_a: int = 1, n_b: int = 1) -> float:
        """Standard deviation of the difference of a mean over ``n_a`` runs and one over ``n_b``."""
        return self.std * math.sqrt(1.0 / n_a + 1.0 / n_b)

    def threshold(self, n_a: int = 1, n_b: int = 1, k: float | None = None) -> float:
        """The smallest |Δ| that counts as a finding: the 95 % t-interval's half-width
        (:meth:`t_threshold`), or ``k·σ_Δ`` when ``k`` is given."""
        if k is None:
            return self.t_threshold(n_a, n_b) if self.df > 0 else math.nan
        return k * self.sigma_diff(n_a, n_b)

    def describe(self, digits: int = 2) -> str:
        """``"41.20 ± 0.85 (3 seeds)"`` (``"…, σ pooled over 4 configurations, 8 df"``)."""
        text = f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n} seeds"
        if self.pooled is not None:
            text += f"; σ pooled over {self.configs} configurations, {self.df} df"
        return text + ")"


def seed_noise(metric: str, values: Iterable[float], floor: float = 0.0) -> Noise:
    """The :class:`Noise` of ``values`` (one per seed; NaNs are refused: a diverged seed is a
    result to report, not noise to average)."""
    vals = tuple(float(v) for v in values)
    if len(vals) < 2:
        raise ValueError(f"seed noise of {metric}: need at least 2 seeds, got {len(vals)}")
    if any(math.isnan(v) for v in vals):
        raise ValueError(f"seed noise of {metric}: a seed has no value (NaN) in {vals}")
    return Noise(metric, vals, floor)


def pooled_noise(metric: str, groups: Mapping[str, Sequence[float]], floor: float = 0.0,
                 reference: str | None = None) -> Noise:
    """The seed noise of ``metric`` pooled over every multi-seed configuration in ``groups``
    (configuration → one value per seed): σ from :func:`~cvaia.experiments.stats.pooled_sd`
    with its degrees of freedom. :attr:`Noise.values` (and so its mean) are those of
    ``reference`` (default: the first configuration)."""
    multi = {k: [float(v) for v in vals] for k, vals in groups.items() if len(vals) >= 2}
    if not multi:
        raise ValueError(f"pooled noise of {metric}: need a configuration with at least 2 seeds")
    for k, vals in multi.items():
        if any(math.isnan(v) for v in vals):
            raise ValueError(f"pooled noise of {metric}: a seed of {k!r} has no value (NaN) in {vals}")
    sd, df = stats.pooled_sd(multi.values())
    ref = reference if reference is not None else next(iter(groups))
    return Noise(metric, tuple(float(v) for v in groups[ref]), floor, pooled=(sd, df), configs=len(multi))


@dataclass(frozen=True)
class Verdict:
    """One comparison with the report: the outcome and the numbers behind it."""

    claim: str
    outcome: str
    delta: float = math.nan
    threshold: float = math.nan
    detail: str = ""
    numbers: Mapping[str, float] = field(default_factory=dict)
    #: what ``threshold`` is: "noise" (k·σ of the difference) or "tie" (a counted cost's tolerance)
    threshold_kind: str = "noise"
    #: stable identifier (default: :func:`claim_id` of the claim)
    id: str = ""
    #: :data:`MEASURED` (trained runs) or :data:`COUNTED` (parameter / FLOP arithmetic)
    kind: str = MEASURED
    #: the estimate and its 95 % interval, when the test gives one (:class:`~.stats.Interval`)
    interval: stats.Interval | None = None
    #: the test the outcome comes from ("paired t", "TOST ±0.5", "least-squares slope", ...)
    test: str = ""
    #: runs on each side of the comparison
    n: tuple[int, ...] = ()

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"verdict outcome {self.outcome!r}: expected one of {OUTCOMES}")
        if self.kind not in KINDS:
            raise ValueError(f"verdict kind {self.kind!r}: expected one of {KINDS}")
        if not self.id:
            object.__setattr__(self, "id", claim_id(self.claim))
        if not self.test:
            object.__setattr__(self, "test", self.interval.test if self.interval is not None else
                               ("count with a tie tolerance" if self.threshold_kind == "tie" else
                                "|Δ| beyond the noise of the difference"))
        if not self.n and self.interval is not None:
            object.__setattr__(self, "n", tuple(self.interval.n))

    @property
    def conclusive(self) -> bool:
        return self.outcome != INCONCLUSIVE

    def word(self) -> str:
        """The outcome in words that fit the kind (a count is "consistent with" a claim)."""
        return COUNTED_WORDS[self.outcome] if self.kind == COUNTED else self.outcome

    def record(self) -> dict:
        """A JSON-ready record: id, kind, claim, outcome, estimate with its 95 % interval,
        threshold, the test, n per arm and the detail (for ``headlines/NN.json["verdicts"]``)."""
        def num(x):
            return float(x) if x is not None and math.isfinite(float(x)) else None

        iv = self.interval
        estimate = iv.estimate if iv is not None else self.delta
        return {"id": self.id, "kind": self.kind, "claim": self.claim, "outcome": self.outcome,
                "estimate": num(estimate),
                "ci": [num(iv.low), num(iv.high)] if iv is not None else None,
                "ci_level": iv.level if iv is not None else None,
                "threshold": num(self.threshold), "threshold_kind": self.threshold_kind,
                "test": self.test, "n": list(self.n), "detail": self.detail,
                "numbers": {k: num(v) for k, v in self.numbers.items()}}

    @property
    def reproduced(self) -> bool:
        return self.outcome == REPRODUCED

    def evidence(self, digits: int = 2) -> str:
        """The numbers it was decided on, e.g. ``"Δ = +3.10, noise threshold 1.20"``."""
        parts = []
        iv = self.interval
        if iv is not None:
            parts.append(f"estimate {iv.estimate:+.{digits}f}, {iv.level:.0%} interval "
                         f"[{iv.low:+.{digits}f}, {iv.high:+.{digits}f}], {iv.test}, n = "
                         + " vs ".join(str(k) for k in iv.n))
        elif not math.isnan(self.delta):
            parts.append(f"Δ = {self.delta:+.{digits}f}" + (" (report direction)" if self.kind == MEASURED else ""))
        if (not math.isnan(self.threshold) and self.threshold_kind != "rule"
                and not (iv is not None and self.threshold_kind == "noise")):
            parts.append(f"margin ±{self.threshold:.{digits}g}" if self.threshold_kind == "margin" else
                         f"tie tolerance ±{self.threshold:.{digits}g}" if self.threshold_kind == "tie" else
                         f"noise threshold ±{self.threshold:.{digits}f} (95 % t-interval of the difference)")
        if self.detail:
            parts.append(self.detail)
        return "; ".join(parts)

    def sentence(self, digits: int = 2) -> str:
        """Markdown: ``"<claim>: **reproduced** (Δ = …)"``."""
        ev = self.evidence(digits)
        return f"{self.claim}: **{self.word()}**" + (f" ({ev})" if ev else "")


def _signed(direction: str) -> float:
    if direction not in ("higher", "lower"):
        raise ValueError(f"direction: expected 'higher' or 'lower', got {direction!r}")
    return 1.0 if direction == "higher" else -1.0


def compare(claim: str, a: float, b: float, noise: Noise, direction: str = "higher",
            n_a: int = 1, n_b: int = 1, k: float | None = None, learned: bool = True) -> Verdict:
    """The report claims ``a`` is ``direction`` ("higher"/"lower") than ``b``.

    ``a``/``b`` may be means over ``n_a``/``n_b`` seeds. The verdict's ``delta`` is signed so that
    a positive value points the report's way (``a − b`` for "higher", ``b − a`` for "lower"), the
    one sign convention of every verdict. ``learned=False`` (a run not clearly
    above its trivial baseline) makes the verdict inconclusive whatever the numbers say.
    """
    sign = _signed(direction)
    delta = sign * (float(a) - float(b))  # > 0: the report's direction, for "higher" and "lower" claims
    thr = noise.threshold(n_a, n_b, k)
    numbers = {"a": float(a), "b": float(b)}
    if not learned:
        return Verdict(claim, INCONCLUSIVE, delta, thr, "a run did not clearly beat its trivial baseline", numbers)
    if any(math.isnan(x) for x in (delta, thr)):
        return Verdict(claim, INCONCLUSIVE, delta, thr, "a value is missing", numbers)
    detail = ""
    if abs(delta) <= thr:
        outcome = INCONCLUSIVE
        if noise.df > 0:
            detail = detectable_text(stats.two_sample(sign * float(a), n_a, sign * float(b), n_b, noise.std, noise.df))
    else:
        outcome = REPRODUCED if delta > 0 else CONTRADICTED
    return Verdict(claim, outcome, delta, thr, detail, numbers, n=(int(n_a), int(n_b)),
                   test=_unpaired_test(noise, k))


def trend(claim: str, values: Sequence[float], noise: Noise, direction: str = "higher",
          n: int = 1, k: float | None = None, learned: bool = True) -> Verdict:
    """The report claims ``values`` (ordered along the swept setting) keep getting ``direction``.

    Reproduced when every consecutive step moves that way by more than the noise threshold;
    contradicted when some step moves the other way by more than it; otherwise inconclusive.
    """
    vals = [float(v) for v in values]
    if len(vals) < 2:
        raise ValueError(f"trend {claim!r}: need at least 2 values, got {len(vals)}")
    sign = _signed(direction)
    thr = noise.threshold(n, n, k)
    steps = np.diff(vals)
    numbers = {f"v{i}": v for i, v in enumerate(vals)}
    detail = "steps " + ", ".join(f"{s:+.2f}" for s in steps)
    if not learned:
        return Verdict(claim, INCONCLUSIVE, math.nan, thr, "a run did not clearly beat its trivial baseline", numbers)
    if any(math.isnan(v) for v in vals) or math.isnan(thr):
        return Verdict(claim, INCONCLUSIVE, math.nan, thr, "a value is missing", numbers)
    if all(sign * s > thr for s in steps):
        outcome = REPRODUCED
    elif any(sign * s < -thr for s in steps):
        outcome = CONTRADICTED
    else:
        outcome = INCONCLUSIVE
    return Verdict(claim, outcome, math.nan, thr, detail, numbers, test=_unpaired_test(noise, k))


def best_of(claim: str, scores: Mapping[str, float], expected: str, noise: Noise,
            direction: str = "higher", k: float | None = None, learned: bool = True) -> Verdict:
    """The report claims option ``expected`` is the best of ``scores`` (option → metric).

    Reproduced when ``expected`` beats every other option by more than the threshold;
    contradicted when some other option beats it by more than the threshold; else inconclusive.
    Options without a value (NaN: diverged or missing) count as beaten.
    """
    if expected not in scores:
        raise KeyError(f"best_of {claim!r}: expected option {expected!r} is not among {list(scores)}")
    sign = _signed(direction)
    thr = noise.threshold(1, 1, k)
    mine = float(scores[expected])
    others = {o: float(v) for o, v in scores.items() if o != expected and not math.isnan(float(v))}
    numbers = {str(o): float(v) for o, v in scores.items()}
    if not learned:
        return Verdict(claim, INCONCLUSIVE, math.nan, thr, "a run did not clearly beat its trivial baseline", numbers)
    if math.isnan(mine) or math.isnan(thr):
        return Verdict(claim, INCONCLUSIVE, math.nan, thr, f"{expected} has no value", numbers)
    if not others:
        return Verdict(claim, REPRODUCED, math.nan, thr, "the only option with a value", numbers)
    rival, rival_v = max(others.items(), key=lambda kv: sign * kv[1])
    margin = sign * (mine - rival_v)  # > 0: expected is ahead of its best rival
    detail = f"{expected} vs best other ({rival}): {mine:.2f} vs {rival_v:.2f}"
    if margin > thr:
        outcome = REPRODUCED
    elif margin < -thr:
        outcome = CONTRADICTED
    else:
        outcome = INCONCLUSIVE
    return Verdict(claim, outcome, sign * margin, thr, detail, numbers, test=_unpaired_test(noise, k))


def _unpaired_test(noise: Noise, k: float | None) -> str:
    if k is not None:
        return f"|Δ| > {k:g}σ of the difference"
    return f"|Δ| beyond the 95 % t-interval of an unpaired difference (σ with {noise.df} df)"


def _outcome_of(iv: stats.Interval) -> str:
    """An interval of the report-direction difference: above 0 reproduces, below 0 contradicts."""
    return REPRODUCED if iv.low > 0 else CONTRADICTED if iv.high < 0 else INCONCLUSIVE


def detectable_text(iv: stats.Interval, digits: int = 2) -> str:
    """``"at this n and σ the test detects a true effect of ≥ 1.9 with 80 % power (se 0.61, 12 df);
    an effect the size of this estimate (0.8) needs about 18 seeds per arm"``: what this profile
    could have seen, and how many seeds per arm would decide an effect as large as the one measured
    (the standard error shrinks as 1/√n; the t quantiles are kept at this df, so it is a rough guide)."""
    d = stats.detectable_effect(iv.se, iv.df, iv.level)
    text = (f"at this n and σ the test detects a true effect of ≥ {d:.{digits}f} with 80 % power "
            f"(se {iv.se:.{digits}f}, {iv.df:g} df)")
    n_now = max(iv.n) if iv.n else 1
    est = abs(float(iv.estimate))
    if est > 0 and math.isfinite(est) and d > est:
        need = math.ceil(n_now * (d / est) ** 2)
        text += f"; an effect the size of this estimate ({est:.{digits}f}) needs about {need} seeds per arm"
    return text


def _measured(claim, iv, numbers, learned, id, test=None, detail="") -> Verdict:
    if not learned:
        return Verdict(claim, INCONCLUSIVE, iv.estimate, iv.half_width, "a run did not clearly beat its "
                       "trivial baseline", numbers, id=id or "", interval=iv, test=test or iv.test)
    outcome = _outcome_of(iv)
    if outcome == INCONCLUSIVE:
        detail = "; ".join(x for x in (detail, detectable_text(iv)) if x)
    return Verdict(claim, outcome, iv.estimate, iv.half_width, detail, numbers, id=id or "", interval=iv,
                   test=test or iv.test)


def paired(claim: str, a: Sequence[float], b: Sequence[float], direction: str = "higher", *,
           sd: float | None = None, df: float | None = None, learned: bool = True, id: str | None = None,
           level: float = stats.LEVEL) -> Verdict:
    """The report claims arm ``a`` is ``direction`` than arm ``b``; ``a[i]``, ``b[i]`` were trained
    under the same seed. Judged on the paired differences, signed so that a positive estimate is
    the report's direction: reproduced when their t-interval lies above 0, contradicted when it
    lies below, else inconclusive (with the smallest effect this n could have detected).
    ``sd``/``df``: a pooled σ of paired differences measured over more configurations."""
    sign = _signed(direction)
    iv = stats.paired_difference([sign * float(x) for x in a], [sign * float(x) for x in b], level, sd, df)
    numbers = {"a_mean": float(np.mean(a)), "b_mean": float(np.mean(b))}
    return _measured(claim, iv, numbers, learned, id, detail="estimate in the report's direction")


#: One arm of a paired design: seed → value of one metric (a diverged seed is left out).
Arm = Mapping[int, float]


@dataclass(frozen=True)
class PairedNoise:
    """The noise of a notebook's paired design for one metric.

    ``sd`` is σ of one run once the seed's shared part is removed (:func:`~.stats.blocked_sd`
    over every arm under the shared seeds), with ``df`` degrees of freedom; a paired difference
    of two single runs has σ ``√2·sd``. ``unpaired_sd`` is the seed spread of one configuration
    pooled over every multi-seed arm (``unpaired_df``): what an unpaired comparison would use."""

    metric: str
    sd: float
    df: int
    unpaired_sd: float
    unpaired_df: int
    arms: int
    seeds: tuple[int, ...]
    #: lower bound on ``sd``: a spread of (almost) zero from few seeds is luck, not precision
    floor: float = 0.0

    @property
    def sd_diff(self) -> float:
        """σ of the difference of two single runs under the same seed."""
        return math.sqrt(2.0) * max(self.sd, self.floor)

    @property
    def unpaired_sd_diff(self) -> float:
        """σ of the difference of two single runs under different seeds."""
        return math.sqrt(2.0) * max(self.unpaired_sd, self.floor)

    def half_width(self, n: int = 1, level: float = stats.LEVEL) -> float:
        """Half-width of the t-interval of a mean paired difference over ``n`` shared seeds."""
        return stats.t_quantile(self.df, level) * self.sd_diff / math.sqrt(n)

    def describe(self, digits: int = 2) -> str:
        """``"σ of a paired difference 0.80 (13 df, 9 arms under seeds 0, 1); unpaired 1.22 (16 df)"``."""
        return (f"σ of a paired difference {self.sd_diff:.{digits}f} ({self.df} df, {self.arms} arms under seeds "
                f"{', '.join(map(str, self.seeds))}); unpaired it would be {self.unpaired_sd_diff:.{digits}f} "
                f"({self.unpaired_df} df)")

    def record(self) -> dict:
        return {"metric": self.metric, "sd_paired_diff": self.sd_diff, "df_paired": self.df,
                "sd_unpaired_diff": self.unpaired_sd_diff, "df_unpaired": self.unpaired_df, "arms": self.arms,
                "seeds": list(self.seeds)}


def paired_noise(metric: str, arms: Mapping[str, Arm], floor: float = 0.0) -> PairedNoise:
    """:class:`PairedNoise` of ``metric`` over every arm (label → seed → value) of a notebook.

    The blocked σ uses the seeds that every arm with at least two seeds shares (an arm missing
    one of them, e.g. a diverged seed, is left out of it); the unpaired σ pools each such arm's
    own seed spread. Pass each distinct arm once (:func:`distinct_arms` drops an arm whose runs are
    another's)."""
    cands = []
    for arm in arms.values():
        vals = {int(s): float(v) for s, v in arm.items() if not math.isnan(float(v))}
        if len(vals) >= 2:
            cands.append(vals)
    multi = cands
    if len(multi) < 2:
        raise ValueError(f"paired noise of {metric}: need at least 2 arms with 2 or more seeds, got {len(multi)}")
    counts: dict[int, int] = {}
    for vals in multi:
        for s in vals:
            counts[s] = counts.get(s, 0) + 1
    # the shared seed set that gives the most degrees of freedom (k − 1)(n − 1): the n seeds
    # most arms have (ties: the lower seed), and the k arms that have all of them
    best = None
    for n_seeds in range(max(len(v) for v in multi), 1, -1):
        seeds = tuple(sorted(sorted(counts, key=lambda s: (-counts[s], s))[:n_seeds]))
        table = [[vals[s] for s in seeds] for vals in multi if all(s in vals for s in seeds)]
        df = (len(table) - 1) * (len(seeds) - 1)
        if len(table) >= 2 and (best is None or df > best[1]):
            best = (seeds, df, table)
    if best is None:
        raise ValueError(f"paired noise of {metric}: no two arms share two seeds")
    seeds, _, table = best
    sd, df = stats.blocked_sd(table)
    usd, udf = stats.pooled_sd(list(vals.values()) for vals in multi)
    return PairedNoise(metric, sd, df, usd, udf, len(table), tuple(seeds), floor)


def distinct_arms(runs_by_arm: Mapping[str, Sequence]) -> dict[str, Sequence]:
    """``runs_by_arm`` without the arms whose finished runs are all runs of another arm (the
    baseline is a point of several experiments: its runs must enter the noise once)."""
    def ident(r):
        return getattr(r, "path", None) or id(r)

    sets = {k: frozenset(ident(r) for r in rs if r is not None) for k, rs in runs_by_arm.items()}
    out: dict[str, Sequence] = {}
    for k in sorted(sets, key=lambda k: -len(sets[k])):
        if sets[k] and not any(sets[k] <= sets[o] for o in out):
            out[k] = runs_by_arm[k]
    return {k: runs_by_arm[k] for k in runs_by_arm if k in out}


def shared(a: Arm, b: Arm) -> tuple[list[float], list[float], list[int]]:
    """The values of arms ``a`` and ``b`` under the seeds both have (sorted), and those seeds."""
    seeds = sorted(set(a) & set(b))
    seeds = [s for s in seeds if not (math.isnan(float(a[s])) or math.isnan(float(b[s])))]
    return [float(a[s]) for s in seeds], [float(b[s]) for s in seeds], seeds


def _paired_interval(a: Arm, b: Arm, noise: PairedNoise, sign: float, level: float = stats.LEVEL):
    xa, xb, seeds = shared(a, b)
    if not seeds:
        return None
    iv = stats.paired_difference([sign * v for v in xa], [sign * v for v in xb], level, noise.sd_diff, noise.df)
    return iv


def paired_arms(claim: str, a: Arm, b: Arm, noise: PairedNoise, direction: str = "higher", *,
                learned: bool = True, id: str | None = None) -> Verdict:
    """The report claims arm ``a`` is ``direction`` than arm ``b`` (both seed → value): the mean
    of their per-seed differences over the shared seeds, with the pooled paired σ of ``noise``
    and its degrees of freedom."""
    sign = _signed(direction)
    iv = _paired_interval(a, b, noise, sign)
    numbers = {"a_mean": float(np.mean(list(a.values()))) if a else math.nan,
               "b_mean": float(np.mean(list(b.values()))) if b else math.nan}
    if iv is None:
        return Verdict(claim, INCONCLUSIVE, detail="the arms share no finished seed", numbers=numbers, id=id or "",
                       test="paired t (pooled σ)")
    return _measured(claim, iv, numbers, learned, id, test="paired t (pooled σ)",
                     detail=f"mean over seeds {', '.join(map(str, shared(a, b)[2]))}, in the report's direction")


def best_of_paired(claim: str, arms: Mapping[str, Arm], expected: str, noise: PairedNoise,
                   direction: str = "higher", *, learned: bool = True, id: str | None = None) -> Verdict:
    """The report claims option ``expected`` is the best of ``arms`` (option → seed → value).

    Every pairwise paired difference ``expected − other`` (report direction) gets its interval:
    reproduced when each lies above 0; contradicted when some other option's lies wholly below
    0 (it beats ``expected``); else inconclusive. The interval shown is the one against the
    closest rival (the decisive one). Options with no finished seed count as beaten."""
    if expected not in arms:
        raise KeyError(f"best_of_paired {claim!r}: expected option {expected!r} is not among {list(arms)}")
    sign = _signed(direction)
    mine = arms[expected]
    numbers = {str(o): float(np.mean(list(v.values()))) if v else math.nan for o, v in arms.items()}
    test = "paired t against every other option (pooled σ)"
    ivs = {o: _paired_interval(mine, v, noise, sign) for o, v in arms.items() if o != expected}
    ivs = {o: iv for o, iv in ivs.items() if iv is not None}
    if not mine:
        return Verdict(claim, INCONCLUSIVE, detail=f"{expected} has no finished seed", numbers=numbers, id=id or "",
                       test=test)
    if not ivs:
        return Verdict(claim, REPRODUCED, detail="the only option with a value", numbers=numbers, id=id or "",
                       test=test)
    rival = min(ivs, key=lambda o: ivs[o].low)  # the option closest to (or ahead of) expected
    iv = ivs[rival]
    each = "; ".join(f"vs {o}: {v.estimate:+.2f} [{v.low:+.2f}, {v.high:+.2f}]" for o, v in ivs.items())
    detail = f"{expected} minus each other option, report direction: {each}"
    if not learned:
        return Verdict(claim, INCONCLUSIVE, iv.estimate, iv.half_width, "a run did not clearly beat its trivial "
                       "baseline; " + detail, numbers, id=id or "", interval=iv, test=test)
    if all(v.low > 0 for v in ivs.values()):
        outcome = REPRODUCED
    elif any(v.high < 0 for v in ivs.values()):
        outcome = CONTRADICTED
        iv = min(ivs.values(), key=lambda v: v.high)
    else:
        outcome = INCONCLUSIVE
        detail += "; " + detectable_text(iv)
    return Verdict(claim, outcome, iv.estimate, iv.half_width, detail, numbers, id=id or "", interval=iv, test=test)


def chain_paired(claim: str, arms: Mapping[str, Arm], noise: PairedNoise, direction: str = "higher", *,
                 learned: bool = True, id: str | None = None) -> Verdict:
    """The report claims each step along ``arms`` (in order: "bare", "+ dilation", "+ ASPP + skip")
    adds in ``direction``. Each consecutive paired difference gets its interval: reproduced when
    every one lies above 0 (report direction), contradicted when one lies wholly below 0, else
    inconclusive. The interval shown is the weakest step's."""
    sign = _signed(direction)
    names = list(arms)
    if len(names) < 2:
        raise ValueError(f"chain_paired {claim!r}: need at least 2 arms, got {names}")
    numbers = {str(o): float(np.mean(list(v.values()))) if v else math.nan for o, v in arms.items()}
    test = "paired t of each step (pooled σ)"
    steps = {f"{a} → {b}": _paired_interval(arms[b], arms[a], noise, sign) for a, b in zip(names, names[1:], strict=False)}
    if any(iv is None for iv in steps.values()):
        return Verdict(claim, INCONCLUSIVE, detail="a step's arms share no finished seed", numbers=numbers,
                       id=id or "", test=test)
    weakest = min(steps.values(), key=lambda v: v.low)
    detail = "steps, report direction: " + "; ".join(f"{k} {v.estimate:+.2f} [{v.low:+.2f}, {v.high:+.2f}]"
                                                      for k, v in steps.items())
    if not learned:
        return Verdict(claim, INCONCLUSIVE, weakest.estimate, weakest.half_width, "a run did not clearly beat its "
                       "trivial baseline; " + detail, numbers, id=id or "", interval=weakest, test=test)
    if all(v.low > 0 for v in steps.values()):
        outcome, iv = REPRODUCED, weakest
    elif any(v.high < 0 for v in steps.values()):
        outcome, iv = CONTRADICTED, min(steps.values(), key=lambda v: v.high)
    else:
        outcome, iv = INCONCLUSIVE, weakest
        detail += "; " + detectable_text(iv)
    return Verdict(claim, outcome, iv.estimate, iv.half_width, detail, numbers, id=id or "", interval=iv, test=test)


def arm_values(runs_by_arm: Mapping[str, Sequence], metric: str) -> dict[str, dict[int, float]]:
    """``{arm: {seed: value}}`` of ``metric`` from ``{arm: [run, ...]}`` (diverged runs, None, and
    runs without the metric are left out)."""
    out = {}
    for arm, runs in runs_by_arm.items():
        out[arm] = {int(r.config.seed): float(r.final[metric]) for r in runs
                    if r is not None and metric in r.final and not math.isnan(float(r.final[metric]))}
    return out


def unpaired(claim: str, a: Sequence[float], b: Sequence[float], noise: Noise, direction: str = "higher", *,
             learned: bool = True, id: str | None = None, level: float = stats.LEVEL) -> Verdict:
    """Like :func:`paired` for arms that do not share seeds: the difference of the two means with
    the pooled σ of ``noise`` (its degrees of freedom) and the actual n on each side."""
    sign = _signed(direction)
    iv = stats.two_sample(sign * float(np.mean(a)), len(a), sign * float(np.mean(b)), len(b), noise.std,
                          noise.df, level)
    numbers = {"a_mean": float(np.mean(a)), "b_mean": float(np.mean(b))}
    return _measured(claim, iv, numbers, learned, id, detail="estimate in the report's direction")


def equivalence(claim: str, a: Sequence[float], b: Sequence[float], margin: float, *,
                sd: float | None = None, df: float | None = None, learned: bool = True,
                id: str | None = None, alpha: float = 0.05) -> Verdict:
    """The report claims "no gain / no difference" between paired arms ``a`` and ``b``.

    Two one-sided tests with ``margin`` stated before the run: reproduced when the ``1 − 2α``
    interval of the paired difference lies inside ``±margin``; contradicted when the ``1 − α``
    interval lies wholly outside it (a difference larger than the margin); else inconclusive."""
    iv = stats.paired_difference(a, b, stats.tost_level(alpha), sd, df)
    wide = stats.paired_difference(a, b, 1.0 - alpha, sd, df)
    numbers = {"a_mean": float(np.mean(a)), "b_mean": float(np.mean(b)), "margin": float(margin)}
    test = f"TOST, margin ±{margin:g} stated before the run"
    if not learned:
        return Verdict(claim, INCONCLUSIVE, iv.estimate, margin, "a run did not clearly beat its trivial "
                       "baseline", numbers, id=id or "", interval=iv, test=test, threshold_kind="margin")
    if stats.equivalent(iv, margin):
        outcome, detail = REPRODUCED, f"the {iv.level:.0%} interval lies inside ±{margin:g}"
    elif wide.low > margin or wide.high < -margin:
        outcome, detail = CONTRADICTED, f"the {wide.level:.0%} interval lies outside ±{margin:g}"
    else:
        outcome = INCONCLUSIVE
        detail = (f"the {iv.level:.0%} interval [{iv.low:+.2f}, {iv.high:+.2f}] is not inside ±{margin:g}; "
                  + detectable_text(wide))
    return Verdict(claim, outcome, iv.estimate, margin, detail, numbers, id=id or "", interval=iv, test=test,
                   threshold_kind="margin")


def no_gain_unpaired(claim: str, a: float, n_a: int, b: float, n_b: int, noise: Noise, margin: float,
                     direction: str = "higher", *, learned: bool = True, id: str | None = None,
                     alpha: float = 0.05) -> Verdict:
    """The report claims variant ``a`` brings **no gain** over ``b`` (means over ``n_a`` / ``n_b``
    runs that do not share seeds; ``direction``: which way is better for the metric).

    The gain ``g = ±(a − b)`` (positive = ``a`` better) is bounded with the one-sided test of a
    TOST, with ``margin`` stated before the run: reproduced when the ``1 − 2α`` interval of ``g``
    lies below ``+margin`` (any gain is smaller than the margin, at level α; a clearly *worse*
    ``a`` reproduces "no gain" too); contradicted when the ``1 − α`` interval lies wholly above
    ``+margin`` (a gain larger than the margin); else inconclusive, with the detectable effect.
    σ: the pooled σ of ``noise`` and its degrees of freedom."""
    sign = _signed(direction)
    numbers = {"a_mean": float(a), "b_mean": float(b), "margin": float(margin)}
    test = f"one-sided equivalence (TOST bound on the gain), margin {margin:g} stated before the run"
    if any(math.isnan(float(x)) for x in (a, b)):
        return Verdict(claim, INCONCLUSIVE, detail="a value is missing", numbers=numbers, id=id or "", test=test,
                       threshold_kind="margin")
    iv = stats.two_sample(sign * float(a), n_a, sign * float(b), n_b, noise.std, noise.df, stats.tost_level(alpha))
    wide = stats.two_sample(sign * float(a), n_a, sign * float(b), n_b, noise.std, noise.df, 1.0 - alpha)
    if not learned:
        return Verdict(claim, INCONCLUSIVE, iv.estimate, margin, "a run did not clearly beat its trivial baseline",
                       numbers, id=id or "", interval=iv, test=test, threshold_kind="margin")
    if iv.high < margin:
        outcome = REPRODUCED
        detail = f"gain {iv.estimate:+.2f}: its {iv.level:.0%} interval lies below the margin {margin:g}"
    elif wide.low > margin:
        outcome = CONTRADICTED
        detail = f"gain {wide.estimate:+.2f}: its {wide.level:.0%} interval lies above the margin {margin:g}"
    else:
        outcome = INCONCLUSIVE
        detail = (f"gain {iv.estimate:+.2f}, {iv.level:.0%} interval [{iv.low:+.2f}, {iv.high:+.2f}] reaches past the "
                  f"margin {margin:g}; " + detectable_text(wide))
    return Verdict(claim, outcome, iv.estimate, margin, detail, numbers, id=id or "", interval=iv, test=test,
                   threshold_kind="margin")


def slope_trend(claim: str, x: Sequence[float], y: Sequence[float], direction: str = "higher", *,
                sd: float | None = None, df: float | None = None, learned: bool = True,
                id: str | None = None, level: float = stats.LEVEL, unit: str = "per unit") -> Verdict:
    """The report claims ``y`` keeps getting ``direction`` along the swept setting ``x`` (every
    run one point, seeds included). Judged on the least-squares slope and its t-interval
    (residual σ, or the pooled seed σ ``sd`` with its ``df``): reproduced when the interval of the
    report-direction slope lies above 0, contradicted when below, else inconclusive."""
    sign = _signed(direction)
    numbers = {f"x{i}": float(v) for i, v in enumerate(x)} | {f"y{i}": float(v) for i, v in enumerate(y)}
    if any(math.isnan(float(v)) for v in y) or (sd is not None and math.isnan(float(sd))):
        return Verdict(claim, INCONCLUSIVE, detail="a value is missing (a run diverged or did not finish)",
                       numbers=numbers, id=id or "", test="least-squares slope")
    iv = stats.slope(x, [sign * float(v) for v in y], level, sd, df)
    return _measured(claim, iv, numbers, learned, id, detail=f"slope in the report's direction, {unit}")


def long_schedule(claim: str, steps: int, min_steps: int, *, id: str | None = None,
                  numbers: Mapping[str, float] | None = None) -> Verdict | None:
    """A claim about long schedules ("reaches it in half the epochs"): inconclusive by rule when
    the runs took fewer than ``min_steps`` optimizer steps (returned), else ``None`` (judge it)."""
    if steps >= min_steps:
        return None
    return Verdict(claim, INCONCLUSIVE, detail=f"a long-schedule claim: judged only from {min_steps} optimizer "
                   f"steps, these runs took {steps}", numbers=dict(numbers or {}), id=id or "",
                   test=f"rule: at least {min_steps} steps", threshold_kind="rule")


def counted(claim: str, costs: Mapping[str, float], expected: str, direction: str = "lower",
            unit: str = "GFLOPs", rel_tol: float = 0.01, timed: Mapping[str, float] | None = None,
            timed_unit: str = "ms") -> Verdict:
    """A claim about speed judged on a *counted* cost (FLOPs, parameters, bytes) instead of a time.

    The report claims option ``expected`` of ``costs`` (option → cost) is the cheapest
    (``direction="lower"``, e.g. "the fastest") or the most expensive (``"higher"``, e.g. "the
    slower step"). Counted costs have no run-to-run noise, so the verdict does not depend on
    what else runs on the machine: reproduced when ``expected`` is ahead of every other option by
    more than ``rel_tol`` (relative), contradicted when some option is ahead of it by more than
    that, else inconclusive (the counts tie). ``timed``: the same options' measured times, shown
    in the detail next to the counts and never judged (they move with the machine's load).
    """
    if expected not in costs:
        raise KeyError(f"counted {claim!r}: expected option {expected!r} is not among {list(costs)}")
    sign = _signed(direction)  # +1 higher, -1 lower
    mine = float(costs[expected])
    others = {str(o): float(v) for o, v in costs.items() if o != expected}
    numbers = {str(o): float(v) for o, v in costs.items()}
    if not others:
        return Verdict(claim, INCONCLUSIVE, detail="nothing to compare with", numbers=numbers, kind=COUNTED)
    # the rival: the other option furthest in the claimed direction (the cheapest for "lower")
    rival, rival_v = max(others.items(), key=lambda kv: sign * kv[1])
    margin = sign * (mine - rival_v)  # > 0: expected is ahead of every other option
    tol = rel_tol * max(abs(mine), abs(rival_v))
    detail = (f"counted {unit}: {expected} {mine:.4g} vs {rival} {rival_v:.4g} (counts have no noise; "
              f"a difference under {rel_tol:.0%} is a tie)")
    if timed:
        shown = ", ".join(f"{o} {float(t):.3g}" for o, t in timed.items())
        detail += f"; timed on this machine, not judged (depends on its load): {shown} {timed_unit}"
    outcome = REPRODUCED if margin > tol else CONTRADICTED if margin < -tol else INCONCLUSIVE
    return Verdict(claim, outcome, margin, tol, detail, numbers, threshold_kind="tie", kind=COUNTED)


def exact(claim: str, measured: float, reported: float, rel_tol: float = 0.01) -> Verdict:
    """A deterministic quantity (e.g. a parameter count): reproduced within ``rel_tol``."""
    ok = math.isclose(float(measured), float(reported), rel_tol=rel_tol)
    return Verdict(claim, REPRODUCED if ok else CONTRADICTED, float(measured) - float(reported), math.nan,
                   f"measured {measured:,.4g} vs report {reported:,.4g} (tolerance {rel_tol:.0%})",
                   {"measured": float(measured), "reported": float(reported)}, kind=COUNTED,
                   test=f"count within {rel_tol:.0%} of the report")


def tally(verdicts: Iterable[Verdict]) -> dict[str, int]:
    """Headline counts: ``verdicts_reproduced``, ``verdicts_contradicted``, ``verdicts_inconclusive``
    (every verdict), and apart from them ``verdicts_measured_conclusive`` /
    ``verdicts_measured_total`` (verdicts from trained runs) and ``verdicts_counted``
    (arithmetic: parameter and FLOP counts, which never count as measured findings)."""
    vs = list(verdicts)
    measured = [v for v in vs if v.kind == MEASURED]
    return {"verdicts_reproduced": sum(v.outcome == REPRODUCED for v in vs),
            "verdicts_contradicted": sum(v.outcome == CONTRADICTED for v in vs),
            "verdicts_inconclusive": sum(v.outcome == INCONCLUSIVE for v in vs),
            "verdicts_measured_conclusive": sum(v.conclusive for v in measured),
            "verdicts_measured_total": len(measured),
            "verdicts_counted": len(vs) - len(measured)}


def verdict_table(verdicts: Iterable[Verdict]):
    """A DataFrame: claim, verdict, Δ, threshold, detail (for display in a notebook)."""
    import pandas as pd

    return pd.DataFrame([{"claim": v.claim, "kind": v.kind, "verdict": v.word(), "Δ": v.delta,
                          "noise threshold": v.threshold, "test": v.test, "numbers": v.detail} for v in verdicts])


def records(verdicts: Iterable[Verdict]) -> list[dict]:
    """:meth:`Verdict.record` of each verdict; identifiers must be unique within a notebook."""
    out = [v.record() for v in verdicts]
    seen: dict[str, int] = {}
    for r in out:  # two verdicts of one claim (e.g. two metrics): number the repeats
        k = seen.get(r["id"], 0)
        seen[r["id"]] = k + 1
        if k:
            r["id"] = f"{r['id']}_{k + 1}"
    return out
