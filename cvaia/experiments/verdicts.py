"""Verdicts that know their noise: is a finding of the report reproduced by *this* run?

A difference between two runs is a finding only when it clears the run-to-run noise. Each
notebook trains its baseline configuration under several seeds (:func:`seed_noise`); every
comparison with the report then gets one of three verdicts:

- **reproduced**: the measured difference points the report's way and clears the noise;
- **contradicted**: it points the other way and clears the noise;
- **inconclusive at this scale**: it does not clear the noise (or a run did not learn).

"Clears the noise" means ``|Δ| > k·σ_Δ`` with ``k = 2`` and ``σ_Δ = σ·√(1/n_a + 1/n_b)``: σ is
the seed standard deviation of the metric measured on the baseline, and a difference of two
single runs has a standard deviation of σ·√2. A trend over several points needs *every* step
to clear it. Each :class:`Verdict` carries the numbers it decided on, so the notebooks can
print them next to the word.
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

#: How many standard deviations of the difference a finding has to clear.
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

    def threshold(self, n_a: int = 1, n_b: int = 1, k: float = K_SIGMA) -> float:
        """The smallest |Δ| that counts as a finding."""
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
                                f"|Δ| > {K_SIGMA:g}σ of the difference"))
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
            parts.append(f"Δ = {self.delta:+.{digits}f}")
        if (not math.isnan(self.threshold) and self.threshold_kind != "rule"
                and not (iv is not None and self.threshold_kind == "noise")):
            parts.append(f"margin ±{self.threshold:.{digits}g}" if self.threshold_kind == "margin" else
                         f"tie tolerance ±{self.threshold:.{digits}g}" if self.threshold_kind == "tie" else
                         f"noise threshold ±{self.threshold:.{digits}f} (2σ of the difference)")
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
            n_a: int = 1, n_b: int = 1, k: float = K_SIGMA, learned: bool = True) -> Verdict:
    """The report claims ``a`` is ``direction`` ("higher"/"lower") than ``b``.

    ``a``/``b`` may be means over ``n_a``/``n_b`` seeds. ``learned=False`` (a run not clearly
    above its trivial baseline) makes the verdict inconclusive whatever the numbers say.
    """
    sign = _signed(direction)
    delta = float(a) - float(b)
    thr = noise.threshold(n_a, n_b, k)
    numbers = {"a": float(a), "b": float(b)}
    if not learned:
        return Verdict(claim, INCONCLUSIVE, delta, thr, "a run did not clearly beat its trivial baseline", numbers)
    if any(math.isnan(x) for x in (delta, thr)):
        return Verdict(claim, INCONCLUSIVE, delta, thr, "a value is missing", numbers)
    if abs(delta) <= thr:
        outcome = INCONCLUSIVE
    else:
        outcome = REPRODUCED if sign * delta > 0 else CONTRADICTED
    return Verdict(claim, outcome, delta, thr, "", numbers, n=(int(n_a), int(n_b)))


def trend(claim: str, values: Sequence[float], noise: Noise, direction: str = "higher",
          n: int = 1, k: float = K_SIGMA, learned: bool = True) -> Verdict:
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
    return Verdict(claim, outcome, math.nan, thr, detail, numbers)


def best_of(claim: str, scores: Mapping[str, float], expected: str, noise: Noise,
            direction: str = "higher", k: float = K_SIGMA, learned: bool = True) -> Verdict:
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
    return Verdict(claim, outcome, sign * margin, thr, detail, numbers)


def _outcome_of(iv: stats.Interval) -> str:
    """An interval of the report-direction difference: above 0 reproduces, below 0 contradicts."""
    return REPRODUCED if iv.low > 0 else CONTRADICTED if iv.high < 0 else INCONCLUSIVE


def detectable_text(iv: stats.Interval, digits: int = 2) -> str:
    """``"this profile detects a true effect of ≥ 1.9 with 80 % power (se 0.61, 12 df)"``."""
    d = stats.detectable_effect(iv.se, iv.df, iv.level)
    return (f"at this n and σ the test detects a true effect of ≥ {d:.{digits}f} with 80 % power "
            f"(se {iv.se:.{digits}f}, {iv.df:g} df)")


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
