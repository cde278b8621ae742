"""What self-attention costs: FLOPs, activation memory and measured time vs N, D, H and B.

For ``B`` sequences of ``N`` tokens of width ``D`` split into ``H`` heads of ``D/H`` channels,
one multi-head self-attention layer (:class:`cvaia.models.SelfAttention`) does

- four projections (Q, K, V and the output), each ``N×D @ D×D``: ``4·B·N·D²`` multiply-adds;
- the scores ``Q·Kᵀ``: per head ``N×(D/H) @ (D/H)×N``, i.e. ``B·H·N²·D/H = B·N²·D``;
- the weighted sum ``softmax(·)·V``: again ``B·N²·D``.

So the cost is ``O(B·N²·D + B·N·D²)`` and **the number of heads does not change it**: more
heads means more, but thinner, matrix products. (Only the softmax, ``O(B·H·N²)`` exponentials,
grows with ``H``; it is not a matrix product and is left out of :func:`attention_flops`.)

Memory is where ``H`` shows up: the explicit path ``softmax(QKᵀ/√d)·V`` materialises a
``B×H×N×N`` attention matrix (and keeps it, plus the dropout mask, for the backward pass),
i.e. ``B·H·N²·4`` bytes per copy in fp32. Fused kernels such as
:func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient attention)
compute the same result block by block and never store the full matrix.

:func:`measure` times one configuration; :func:`sweep` varies one of ``N, D, H, B`` around a
base point; :func:`cost_table` runs the four sweeps; :func:`fit_exponent` fits
``time ∝ x^k`` on a log-log scale. Peak memory is *measured* on CUDA
(``torch.cuda.max_memory_allocated``); on the CPU there is no reliable per-call peak
(allocator caching, tracemalloc does not see torch's allocations), so the tables give the
**analytic** activation memory in its own, clearly named columns and leave the measured
column empty.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .utils import best_time_s, synchronize

BYTES_FP32 = 4
MIB = 2.0 ** 20

#: The base point of :func:`cost_table`'s sweeps (the adaptive-depth head's 64 bins, dim 256).
DEFAULT_BASE = {"B": 4, "N": 256, "D": 256, "H": 4}
#: The values each sweep takes by default (cheap enough for a 2-core CPU).
DEFAULT_GRID = {
    "N": (64, 128, 256, 512, 1024),
    "D": (64, 128, 256, 512),
    "H": (1, 2, 4, 8, 16),
    "B": (1, 2, 4, 8),
}
IMPLS = ("explicit", "fast")
MODES = ("forward", "forward+backward")


# ---- analytic model ------------------------------------------------------------------------
def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
            raise ValueError(f"attention cost: {name} must be a positive integer, got {value!r}")


def attention_flops_breakdown(B: int, N: int, D: int) -> dict[str, int]:
    """Floating-point operations (2 per multiply-add) of one self-attention forward pass.

    Returns ``projections`` (Q, K, V, out: ``8·B·N·D²``), ``scores`` (``QKᵀ``: ``2·B·N²·D``),
    ``weighted_sum`` (``AV``: ``2·B·N²·D``) and their ``total``. Independent of the number of
    heads; softmax, LayerNorm and biases are left out (lower order).
    """
    _check_sizes(B=B, N=N, D=D)
    B, N, D = int(B), int(N), int(D)
    projections = 2 * 4 * B * N * D * D
    scores = 2 * B * N * N * D
    weighted_sum = 2 * B * N * N * D
    return {"projections": projections, "scores": scores, "weighted_sum": weighted_sum,
            "total": projections + scores + weighted_sum}


def attention_flops(B: int, N: int, D: int) -> int:
    """Total forward FLOPs of one self-attention layer: ``4·B·N²·D + 8·B·N·D²``.

    The ``N²`` term (scores and weighted sum) dominates once ``N > 2·D``.
    """
    return attention_flops_breakdown(B, N, D)["total"]


def attention_matrix_bytes(B: int, N: int, H: int, bytes_per_element: int = BYTES_FP32) -> int:
    """Size of one ``B×H×N×N`` attention matrix (``B·H·N²·4`` bytes in fp32)."""
    _check_sizes(B=B, N=N, H=H)
    return int(B) * int(H) * int(N) ** 2 * bytes_per_element


def activation_bytes(B: int, N: int, D: int, H: int, impl: str = "explicit", backward: bool = True,
                     bytes_per_element: int = BYTES_FP32) -> int:
    """Analytic activation memory of one self-attention layer (what autograd keeps).

    Token-sized tensors: the normalised input, Q, K, V, the attention output and the
    projection output — ``6·B·N·D`` elements. The explicit path adds the ``B×H×N×N`` scores
    and softmax weights (two copies; a third, the dropout mask, is ignored), and with
    ``backward`` the same again for their gradients at the peak. The fused path
    (``impl="fast"``) stores no ``N×N`` matrix: only ``O(B·H·N)`` softmax statistics.
    """
    _check_sizes(B=B, N=N, D=D, H=H)
    if impl not in IMPLS:
        raise ValueError(f"attention cost: impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    tokens = 6 * B * N * D
    if impl == "explicit":
        square = 2 * B * H * N * N * (2 if backward else 1)
    else:
        square = B * H * N
    return (tokens + square) * bytes_per_element


# ---- measurement ---------------------------------------------------------------------------
def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """``None``/"auto" → CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_attention(D: int, H: int, impl: str, dropout: float = 0.0) -> torch.nn.Module:
    """The project's :class:`cvaia.models.SelfAttention` with ``D`` channels and ``H`` heads."""
    from .models import SelfAttention

    if D % H:
        raise ValueError(f"attention cost: dim D={D} is not divisible by heads H={H}")
    return SelfAttention(D, num_heads=H, dropout=dropout, impl=impl)


def measure(B: int, N: int, D: int, H: int, impl: str = "fast", mode: str = "forward",
            repeats: int = 3, warmup: int = 1, device: str | torch.device | None = None,
            seed: int = 0) -> dict:
    """Time one self-attention configuration: the fastest of ``repeats`` calls after ``warmup``
    (the minimum is the least disturbed by other processes sharing the CPU).

    ``mode``: "forward" (under ``torch.no_grad``) or "forward+backward". Returns a dict with
    the sizes, ``time_ms``, the analytic ``flops``, ``gflops_per_s``, the analytic
    ``attn_matrix_mib`` and ``activation_mib_analytic``, ``peak_mib_measured`` (CUDA only,
    else NaN) and ``memory_source`` saying which of the two a plot should trust.
    """
    _check_sizes(B=B, N=N, D=D, H=H, repeats=repeats)
    if mode not in MODES:
        raise ValueError(f"attention cost: mode must be one of {', '.join(MODES)}, got {mode!r}")
    device = resolve_device(device)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    layer = build_attention(D, H, impl).to(device).eval()
    x = torch.randn(B, N, D, generator=gen).to(device)
    backward = mode == "forward+backward"
    if backward:
        x.requires_grad_(True)

    def step() -> None:
        if backward:
            layer(x).sum().backward()
            x.grad = None
            layer.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                layer(x)

    for _ in range(warmup):
        step()
    synchronize(device)
    peak = float("nan")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
    seconds = best_time_s(step, repeats, device)
    if device.type == "cuda":
        peak = (torch.cuda.max_memory_allocated(device) - base) / MIB
    flops = attention_flops(B, N, D) * (3 if backward else 1)  # backward ≈ 2× forward
    return {
        "B": int(B), "N": int(N), "D": int(D), "H": int(H), "impl": impl, "mode": mode,
        "device": str(device),
        "time_ms": 1000.0 * seconds,
        "flops": flops,
        "gflops_per_s": flops / seconds / 1e9 if seconds > 0 else float("nan"),
        "attn_matrix_mib": attention_matrix_bytes(B, N, H) / MIB,
        "activation_mib_analytic": activation_bytes(B, N, D, H, impl, backward) / MIB,
        "peak_mib_measured": peak,
        "memory_source": "cuda max_memory_allocated" if device.type == "cuda" else "analytic (CPU)",
    }


def sweep(vary: str, values: Iterable[int], base: Mapping[str, int] | None = None,
          impls: Sequence[str] = IMPLS, modes: Sequence[str] = MODES, repeats: int = 3,
          device: str | torch.device | None = None) -> pd.DataFrame:
    """Measure while ``vary`` (one of "N", "D", "H", "B") takes ``values``, the rest at ``base``.

    One row per (value, impl, mode); column ``vary`` names the swept size.
    """
    base = dict(DEFAULT_BASE if base is None else base)
    if vary not in DEFAULT_BASE:
        raise ValueError(f"attention cost: vary must be one of N, D, H, B, got {vary!r}")
    missing = [k for k in DEFAULT_BASE if k not in base]
    if missing:
        raise ValueError(f"attention cost: base lacks {', '.join(missing)} (expected keys B, N, D, H)")
    for impl in impls:
        if impl not in IMPLS:
            raise ValueError(f"attention cost: impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    rows = []
    for value in values:
        sizes = {**base, vary: int(value)}
        if sizes["D"] % sizes["H"]:
            raise ValueError(f"attention cost: sweep over {vary}: D={sizes['D']} is not divisible "
                             f"by H={sizes['H']}")
        for impl in impls:
            for mode in modes:
                row = measure(sizes["B"], sizes["N"], sizes["D"], sizes["H"], impl=impl, mode=mode,
                              repeats=repeats, device=device)
                rows.append({"vary": vary, **row})
    return pd.DataFrame(rows)


def cost_table(grid: Mapping[str, Iterable[int]] | None = None, base: Mapping[str, int] | None = None,
               impls: Sequence[str] = IMPLS, modes: Sequence[str] = MODES, repeats: int = 3,
               device: str | torch.device | None = None) -> pd.DataFrame:
    """The four sweeps (N, D, H, B around ``base``) in one long DataFrame."""
    grid = DEFAULT_GRID if grid is None else grid
    frames = [sweep(vary, values, base, impls, modes, repeats, device) for vary, values in grid.items()]
    return pd.concat(frames, ignore_index=True)


def fit_exponent(df: pd.DataFrame, x: str = "N", y: str = "time_ms", last: int | None = None) -> float:
    """Slope ``k`` of ``log y = k·log x + c`` (least squares), i.e. ``y ∝ x^k``.

    ``df`` holds one curve (filter impl/mode first); ``last`` keeps only the ``last`` largest
    ``x`` values, where the leading term dominates (for attention vs N, k → 2).
    """
    if x not in df or y not in df:
        raise ValueError(f"fit_exponent: columns {x!r} and {y!r} expected, got {list(df.columns)}")
    curve = df.groupby(x)[y].median().sort_index()
    if last is not None:
        curve = curve.iloc[-int(last):]
    if len(curve) < 2:
        raise ValueError(f"fit_exponent: need at least two distinct {x} values, got {len(curve)}")
    if (curve <= 0).any():
        raise ValueError(f"fit_exponent: {y} must be positive for a log-log fit")
    slope, _ = np.polyfit(np.log(curve.index.to_numpy(float)), np.log(curve.to_numpy(float)), 1)
    return float(slope)


def exponents(df: pd.DataFrame, last: int | None = 3) -> pd.DataFrame:
    """Fitted time exponents of every (vary, impl, mode) curve of :func:`cost_table`."""
    rows = []
    for (vary, impl, mode), part in df.groupby(["vary", "impl", "mode"], sort=True):
        if part[vary].nunique() < 2:
            continue
        rows.append({"vary": vary, "impl": impl, "mode": mode,
                     "k_time": fit_exponent(part, vary, "time_ms", last),
                     "k_flops": fit_exponent(part, vary, "flops", last)})
    return pd.DataFrame(rows)


def explicit_vs_fast(df: pd.DataFrame) -> pd.DataFrame:
    """Speed-up of the fused path over the explicit one for each measured point."""
    keys = ["vary", "B", "N", "D", "H", "mode"]
    wide = df.pivot_table(index=keys, columns="impl", values="time_ms").reset_index()
    if not set(IMPLS) <= set(wide.columns):
        raise ValueError("explicit_vs_fast: the table needs both impl='explicit' and impl='fast' rows")
    wide["speedup"] = wide["explicit"] / wide["fast"]
    return wide


def softmax_rank_demo(N: int = 64, d: int = 8, seed: int = 0) -> dict[str, float]:
    """Numerical evidence that softmax(QKᵀ) cannot be factorised through the d-dim space.

    ``QKᵀ`` has rank ≤ d, so ``(QKᵀ)V = Q(KᵀV)`` could be evaluated in ``O(N·d²)``; the
    row-wise exponential breaks that: ``softmax(QKᵀ)`` is (numerically) full rank. Returns the
    ranks of both matrices for random ``Q, K`` of shape ``N×d``.
    """
    _check_sizes(N=N, d=d)
    gen = torch.Generator().manual_seed(seed)
    q = torch.randn(N, d, generator=gen, dtype=torch.float64)
    k = torch.randn(N, d, generator=gen, dtype=torch.float64)
    scores = q @ k.T / math.sqrt(d)
    weights = scores.softmax(dim=-1)
    return {"N": N, "d": d,
            "rank_scores": int(torch.linalg.matrix_rank(scores)),
            "rank_softmax": int(torch.linalg.matrix_rank(weights))}
