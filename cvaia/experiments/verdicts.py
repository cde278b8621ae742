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
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

REPRODUCED = "reproduced"
CONTRADICTED = "contradicted"
INCONCLUSIVE = "inconclusive at this scale"
OUTCOMES = (REPRODUCED, CONTRADICTED, INCONCLUSIVE)

#: How many standard deviations of the difference a finding has to clear.
K_SIGMA = 2.0


@dataclass(frozen=True)
class Noise:
    """Seed spread of one metric of one configuration (sample standard deviation, ddof=1)."""

    metric: str
    values: tuple[float, ...]
    #: lower bound on σ: a measured spread of (almost) zero from a few seeds is luck, not
    #: precision, so σ is never taken below this (in the metric's units).
    floor: float = 0.0

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values)) if self.values else math.nan

    @property
    def std(self) -> float:
        """The seed standard deviation used for verdicts (at least :attr:`floor`)."""
        raw = float(np.std(self.values, ddof=1)) if self.n >= 2 else math.nan
        return max(raw, self.floor) if not math.isnan(raw) else math.nan

    def sigma_diff(self, n_a: int = 1, n_b: int = 1) -> float:
        """Standard deviation of the difference of a mean over ``n_a`` runs and one over ``n_b``."""
        return self.std * math.sqrt(1.0 / n_a + 1.0 / n_b)

    def threshold(self, n_a: int = 1, n_b: int = 1, k: float = K_SIGMA) -> float:
        """The smallest |Δ| that counts as a finding."""
        return k * self.sigma_diff(n_a, n_b)

    def describe(self, digits: int = 2) -> str:
        """``"41.20 ± 0.85 (3 seeds)"``."""
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f} ({self.n} seeds)"


def seed_noise(metric: str, values: Iterable[float], floor: float = 0.0) -> Noise:
    """The :class:`Noise` of ``values`` (one per seed; NaNs are refused: a diverged seed is a
    result to report, not noise to average)."""
    vals = tuple(float(v) for v in values)
    if len(vals) < 2:
        raise ValueError(f"seed noise of {metric}: need at least 2 seeds, got {len(vals)}")
    if any(math.isnan(v) for v in vals):
        raise ValueError(f"seed noise of {metric}: a seed has no value (NaN) in {vals}")
    return Noise(metric, vals, floor)


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

    def __post_init__(self):
        if self.outcome not in OUTCOMES:
            raise ValueError(f"verdict outcome {self.outcome!r}: expected one of {OUTCOMES}")

    @property
    def reproduced(self) -> bool:
        return self.outcome == REPRODUCED

    def evidence(self, digits: int = 2) -> str:
        """The numbers it was decided on, e.g. ``"Δ = +3.10, noise threshold 1.20"``."""
        parts = []
        if not math.isnan(self.delta):
            parts.append(f"Δ = {self.delta:+.{digits}f}")
        if not math.isnan(self.threshold):
            parts.append(f"tie tolerance ±{self.threshold:.{digits}g}" if self.threshold_kind == "tie" else
                         f"noise threshold ±{self.threshold:.{digits}f} (2σ of the difference)")
        if self.detail:
            parts.append(self.detail)
        return "; ".join(parts)

    def sentence(self, digits: int = 2) -> str:
        """Markdown: ``"<claim>: **reproduced** (Δ = …)"``."""
        ev = self.evidence(digits)
        return f"{self.claim}: **{self.outcome}**" + (f" ({ev})" if ev else "")


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
    return Verdict(claim, outcome, delta, thr, "", numbers)


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
        return Verdict(claim, INCONCLUSIVE, detail="nothing to compare with", numbers=numbers)
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
    return Verdict(claim, outcome, margin, tol, detail, numbers, threshold_kind="tie")


def exact(claim: str, measured: float, reported: float, rel_tol: float = 0.01) -> Verdict:
    """A deterministic quantity (e.g. a parameter count): reproduced within ``rel_tol``."""
    ok = math.isclose(float(measured), float(reported), rel_tol=rel_tol)
    return Verdict(claim, REPRODUCED if ok else CONTRADICTED, float(measured) - float(reported), math.nan,
                   f"measured {measured:,.4g} vs report {reported:,.4g} (tolerance {rel_tol:.0%})",
                   {"measured": float(measured), "reported": float(reported)})


def learned_clearly(value: float, baseline: float, direction: str = "higher", factor: float = 1.0,
                    margin: float = 0.0) -> bool:
    """Whether a run is clearly above its trivial baseline: ``value`` beats ``baseline·factor``
    by more than ``margin`` in ``direction`` (e.g. mIoU ≥ 2× the majority-class mIoU,
    SI-logRMSE ≤ 0.6× the constant map: ``learned_clearly(si, const, "lower", 0.6)``)."""
    if value is None or math.isnan(float(value)):
        return False
    target = float(baseline) * factor
    return float(value) > target + margin if direction == "higher" else float(value) < target - margin


def tally(verdicts: Iterable[Verdict]) -> dict[str, int]:
    """Headline counts: ``verdicts_reproduced``, ``verdicts_contradicted``, ``verdicts_inconclusive``."""
    vs = list(verdicts)
    return {"verdicts_reproduced": sum(v.outcome == REPRODUCED for v in vs),
            "verdicts_contradicted": sum(v.outcome == CONTRADICTED for v in vs),
            "verdicts_inconclusive": sum(v.outcome == INCONCLUSIVE for v in vs)}


def verdict_table(verdicts: Iterable[Verdict]):
    """A DataFrame: claim, verdict, Δ, threshold, detail (for display in a notebook)."""
    import pandas as pd

    return pd.DataFrame([{"claim": v.claim, "verdict": v.outcome, "Δ": v.delta, "noise threshold": v.threshold,
                          "numbers": v.detail} for v in verdicts])
