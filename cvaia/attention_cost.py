"""What self-attention costs: FLOPs, activation memory and measured time vs N, D, H and B.

For ``B`` sequences of ``N`` tokens of width ``D`` split into ``H`` heads of ``D/H`` channels,
one multi-head self-attention layer (:class:`cvaia.models.SelfAttention`) does

- four projections (Q, K, V and the output), each ``N×D @ D×D``: ``4·B·N·D²`` multiply-adds;
- the scores ``Q·Kᵀ``: per head ``N×(D/H) @ (D/H)×N``, i.e. ``B·H·N²·D/H = B·N²·D``;
- the weighted sum ``softmax(·)·V``: again ``B·N²·D``.

So the cost is ``O(B·N²·D + B·N·D²)`` and **the number of heads does not change it**: more
heads means more, but thinner, matrix products. (Only the softmax, ``O(B·H·N²)`` exponentials,
grows with ``H``; it is not a matrix product and is left out of :func:`attention_flops`.)
Over a finite range the FLOPs are *not* ``∝ N²``: their local exponent is
``d log F / d log N = (2N + 2D) / (N + 2D)`` (:func:`flops_exponent`), 4/3 at ``N = D`` and
only approaching 2 once ``N ≫ 2D``.

Memory is where ``H`` shows up: the explicit path ``softmax(QKᵀ/√d)·V`` materialises a
``B×H×N×N`` attention matrix and keeps it for the backward pass (``B·H·N²·4`` bytes in fp32,
:func:`attention_matrix_bytes`). Fused kernels such as
:func:`torch.nn.functional.scaled_dot_product_attention` (flash / memory-efficient attention)
compute the same result block by block and keep only ``O(B·H·N)`` softmax statistics.

Measurements:

- time with :mod:`torch.utils.benchmark` (``Timer`` with a fixed thread count, the first
  round's ``blocked_autorange`` doubles as warm-up); the median and the inter-quartile range
  of the block times are reported. :func:`cost_table` measures every distinct configuration
  **once per round**, all configurations interleaved round after round, so a sweep's shared
  base point is one measurement (it cannot differ between sweeps) and a slow spell of a shared
  machine spreads over all points instead of biasing one sweep;
- memory with saved-tensor hooks (:func:`saved_tensor_bytes`): the bytes autograd keeps for
  the backward pass, on any device; on CUDA also ``torch.cuda.max_memory_allocated``.

Points that would not fit are not run: on CUDA, :func:`cost_table` skips every grid point whose
estimated peak (:func:`estimated_peak_bytes`: three ``B×H×N×N`` matrices in the explicit path's
backward — 24 GiB at B = 8, H = 4, N = 8192 — plus the token-sized tensors) exceeds 90 % of the
memory this process can still allocate (:func:`memory_budget`), and says so in the table's
``attrs["skipped"]`` and :func:`skipped_note` (before: an out-of-memory error on 16–24 GB cards).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from .devices import synchronize

BYTES_FP32 = 4
MIB = 2.0 ** 20
SIZES = ("B", "N", "D", "H")

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

    The ``N²`` term (scores and weighted sum) is the larger one once ``N > 2·D``.
    """
    return attention_flops_breakdown(B, N, D)["total"]


def flops_exponent(N: float, D: float) -> float:
    """The local exponent ``d log F / d log N = (2N + 2D) / (N + 2D)`` of the FLOPs in N at
    width ``D``: 1 for ``N ≪ D``, 4/3 at ``N = D``, 3/2 at ``N = 2D``, → 2 for ``N ≫ 2D``."""
    return (2.0 * N + 2.0 * D) / (N + 2.0 * D)


def attention_matrix_bytes(B: int, N: int, H: int, bytes_per_element: int = BYTES_FP32) -> int:
    """Size of one ``B×H×N×N`` attention matrix (``B·H·N²·4`` bytes in fp32)."""
    _check_sizes(B=B, N=N, H=H)
    return int(B) * int(H) * int(N) ** 2 * bytes_per_element


def estimated_peak_bytes(B: int, N: int, D: int, H: int, impl: str, mode: str) -> int:
    """A (slightly generous) estimate of the peak memory one step of ``impl`` in ``mode`` needs:
    the explicit path holds two ``B×H×N×N`` matrices in the forward (scores, weights) and three
    in the backward (the saved weights, their gradient and the scores' gradient); both paths hold
    about 16 token-sized ``B×N×D`` fp32 tensors (input, Q/K/V, outputs and their gradients). The
    fused path's softmax statistics (``B·H·N`` values) are left out."""
    tokens = 16 * int(B) * int(N) * int(D) * BYTES_FP32
    if impl != "explicit":
        return tokens
    return (3 if mode == "forward+backward" else 2) * attention_matrix_bytes(B, N, H) + tokens


#: the share of the allocatable GPU memory a cost-grid point may need (the rest: the allocator's
#: rounding and fragmentation, cuBLAS workspaces)
MEMORY_SHARE = 0.9


def memory_budget(device: torch.device) -> int | None:
    """Bytes a grid point may use on ``device``: :data:`MEMORY_SHARE` of what this process can
    still allocate on a CUDA device (:func:`cvaia.devices.cuda_free_bytes`); None (no limit) elsewhere."""
    if device.type != "cuda":
        return None
    from .devices import cuda_free_bytes

    return int(MEMORY_SHARE * cuda_free_bytes(device))


def skipped_note(df: pd.DataFrame) -> str:
    """One sentence naming the grid points :func:`cost_table` did not run (they would not fit
    the free memory), ``""`` when it ran them all."""
    skipped = df.attrs.get("skipped") or []
    if not skipped:
        return ""
    points = "; ".join(f"B = {p['B']}, N = {p['N']}, D = {p['D']}, H = {p['H']} (≈ {p['estimated_gib']:.1f} GiB)"
                       for p in skipped)
    return (f"Not measured, since they would not fit the {df.attrs['memory_budget_gib']:.1f} GiB this GPU had "
            f"free: {points}.")


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


def saved_tensor_bytes(fn, exclude: Iterable[torch.Tensor] = ()) -> int:
    """Bytes of the distinct tensors autograd saves for the backward pass while running ``fn()``.

    Measured with :func:`torch.autograd.graph.saved_tensors_hooks` (any device): tensors that
    share a storage (views, the same tensor saved twice) count once, and storages of
    ``exclude`` (pass the parameters: weights are kept anyway) are not counted.
    """
    skip = {(t.untyped_storage().data_ptr(), str(t.device)) for t in exclude}
    storages: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        s = t.untyped_storage()
        key = (s.data_ptr(), str(t.device))
        if key not in skip:
            storages[key] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return int(sum(storages.values()))


def _check_choices(impls: Sequence[str], modes: Sequence[str]) -> None:
    for impl in impls:
        if impl not in IMPLS:
            raise ValueError(f"attention cost: impl must be one of {', '.join(IMPLS)}, got {impl!r}")
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"attention cost: mode must be one of {', '.join(MODES)}, got {mode!r}")


class _Case:
    """One configuration (sizes, impl, mode) ready to time: the layer, its input, the step."""

    def __init__(self, sizes: Mapping[str, int], impl: str, mode: str, device: torch.device, seed: int) -> None:
        B, N, D, H = (int(sizes[k]) for k in SIZES)
        gen = torch.Generator().manual_seed(seed)
        torch.manual_seed(seed)
        self.layer = build_attention(D, H, impl).to(device).eval()
        self.x = torch.randn(B, N, D, generator=gen).to(device)
        self.backward = mode == "forward+backward"
        self.device = device
        if self.backward:
            self.x.requires_grad_(True)

    def step(self) -> None:
        if self.backward:
            self.layer(self.x).sum().backward()
            self.x.grad = None
            self.layer.zero_grad(set_to_none=True)
        else:
            with torch.no_grad():
                self.layer(self.x)
        synchronize(self.device)

    def saved_bytes(self) -> int:
        """What one forward (with autograd on) keeps for the backward pass, weights excluded."""
        x = self.x.detach().requires_grad_(True)
        return saved_tensor_bytes(lambda: self.layer(x), exclude=list(self.layer.parameters()))


def _timer(case: _Case, threads: int):
    from torch.utils import benchmark

    return benchmark.Timer(stmt="step()", globals={"step": case.step}, num_threads=threads)


def _block_times(timer, number: int, min_run_time: float) -> list[float]:
    """Per-call seconds of blocks of ``number`` calls until ``min_run_time`` is spent (≥ 1 block)."""
    times: list[float] = []
    spent = 0.0
    while spent < min_run_time or not times:
        per_call = timer.timeit(number).median
        times.append(per_call)
        spent += per_call * number
    return times


def cost_table(grid: Mapping[str, Iterable[int]] | None = None, base: Mapping[str, int] | None = None,
               impls: Sequence[str] = IMPLS, modes: Sequence[str] = MODES, rounds: int = 2,
               min_run_time: float = 0.1, threads: int | None = None,
               device: str | torch.device | None = None, seed: int = 0,
               memory_limit: int | None | str = "auto") -> pd.DataFrame:
    """Time and memory of :class:`~cvaia.models.SelfAttention` while each of N, D, H, B varies
    around ``base`` (one sweep per key of ``grid``), in one long DataFrame.

    Every distinct (sizes, impl, mode) is measured once per round, the rounds interleave all of
    them, and each sweep's rows read the same measurements (so the base point is identical in
    every sweep). Per round: :mod:`torch.utils.benchmark` blocks for at least ``min_run_time``
    seconds (round 1: ``blocked_autorange``, which also warms up and picks the block size). The
    rows give the ``time_ms`` median, ``time_iqr_ms`` and the quartiles over all blocks of all
    rounds, ``threads``, the analytic ``flops`` and ``attn_matrix_mib``, the measured
    ``saved_mib`` (saved-tensor hooks: what one forward keeps for backward, weights excluded)
    and ``peak_mib_cuda`` (CUDA only, else NaN).

    ``memory_limit``: bytes a grid point may need (:func:`estimated_peak_bytes`, either path,
    either mode); points above it are skipped and listed in ``attrs["skipped"]``
    (:func:`skipped_note`). ``"auto"``: :func:`memory_budget` of ``device`` (no limit off CUDA).
    """
    grid = DEFAULT_GRID if grid is None else grid
    base = dict(DEFAULT_BASE if base is None else base)
    missing = [k for k in SIZES if k not in base]
    if missing:
        raise ValueError(f"attention cost: base lacks {', '.join(missing)} (expected keys B, N, D, H)")
    _check_choices(impls, modes)
    if int(rounds) < 1:
        raise ValueError(f"attention cost: rounds must be >= 1, got {rounds!r}")
    device = resolve_device(device)
    threads = int(threads or torch.get_num_threads())

    sweeps: list[tuple[str, int, tuple[int, ...]]] = []  # (vary, value, sizes)
    for vary, values in grid.items():
        if vary not in SIZES:
            raise ValueError(f"attention cost: vary must be one of N, D, H, B, got {vary!r}")
        for value in values:
            sizes = {**base, vary: int(value)}
            _check_sizes(**sizes)
            if sizes["D"] % sizes["H"]:
                raise ValueError(f"attention cost: sweep over {vary}: D={sizes['D']} is not divisible "
                                 f"by H={sizes['H']}")
            sweeps.append((vary, int(value), tuple(sizes[k] for k in SIZES)))
    points = list(dict.fromkeys(s for _, _, s in sweeps))  # distinct sizes, first-seen order
    limit = memory_budget(device) if memory_limit == "auto" else memory_limit
    skipped = []
    if limit is not None:
        def need(p):  # the saved-bytes measurement runs a forward with autograd on, in each impl
            return max(estimated_peak_bytes(*p, impl, mode) for impl in impls for mode in (*modes, "forward"))

        skipped = [p for p in points if need(p) > limit]
        points = [p for p in points if need(p) <= limit]
        sweeps = [sw for sw in sweeps if sw[2] in points]
        if not points:
            raise ValueError(f"attention cost: no grid point fits the memory available ({limit / 2**30:.1f} GiB); "
                             f"make the base point (COST_BASE) smaller")
    keys = [(p, impl, mode) for p in points for impl in impls for mode in modes]

    times: dict = {k: [] for k in keys}
    number: dict = {}
    saved: dict = {}
    peak: dict = {}
    for r in range(int(rounds)):
        for key in keys:
            sizes, impl, mode = key
            case = _Case(dict(zip(SIZES, sizes, strict=True)), impl, mode, device, seed)
            timer = _timer(case, threads)
            if r == 0:
                m = timer.blocked_autorange(min_run_time=min_run_time)
                number[key] = m.number_per_run
                times[key] += list(m.times)
                if (sizes, impl) not in saved:
                    saved[(sizes, impl)] = case.saved_bytes()
                if device.type == "cuda" and mode == "forward+backward":
                    torch.cuda.reset_peak_memory_stats(device)
                    before = torch.cuda.memory_allocated(device)
                    case.step()
                    peak[key] = (torch.cuda.max_memory_allocated(device) - before) / MIB
            else:
                times[key] += _block_times(timer, number[key], min_run_time)
            del case, timer

    rows = []
    for vary, _value, sizes in sweeps:
        B, N, D, H = sizes
        for impl in impls:
            for mode in modes:
                key = (sizes, impl, mode)
                t = np.asarray(times[key]) * 1000.0
                q25, med, q75 = (float(v) for v in np.percentile(t, [25, 50, 75]))
                flops = attention_flops(B, N, D) * (3 if mode == "forward+backward" else 1)  # backward ≈ 2× forward
                rows.append({
                    "vary": vary, "B": B, "N": N, "D": D, "H": H, "impl": impl, "mode": mode,
                    "device": str(device), "threads": threads,
                    "time_ms": med, "time_iqr_ms": q75 - q25, "time_q25_ms": q25, "time_q75_ms": q75,
                    "blocks": int(t.size), "calls_per_block": int(number[key]),
                    "flops": flops, "gflops_per_s": flops / (med / 1000.0) / 1e9 if med > 0 else math.nan,
                    "attn_matrix_mib": attention_matrix_bytes(B, N, H) / MIB,
                    "saved_mib": saved[(sizes, impl)] / MIB,
                    "peak_mib_cuda": peak.get(key, math.nan),
                })
    df = pd.DataFrame(rows)
    df.attrs["skipped"] = [dict(zip(SIZES, p, strict=True))
                           | {"estimated_gib": need(p) / 2**30} for p in skipped]
    df.attrs["memory_budget_gib"] = limit / 2**30 if limit is not None else None
    return df


def sweep(vary: str, values: Iterable[int], base: Mapping[str, int] | None = None, **kwargs) -> pd.DataFrame:
    """One sweep of :func:`cost_table`: ``vary`` (one of "N", "D", "H", "B") takes ``values``."""
    if vary not in SIZES:
        raise ValueError(f"attention cost: vary must be one of N, D, H, B, got {vary!r}")
    return cost_table({vary: list(values)}, base, **kwargs)


def base_point_agreement(df: pd.DataFrame, base: Mapping[str, int]) -> pd.DataFrame:
    """The base point's ``time_ms`` in every sweep (one row per sweep, impl and mode): identical
    by construction in :func:`cost_table`; the table shows it."""
    mask = np.logical_and.reduce([df[k] == int(base[k]) for k in SIZES])
    part = df[mask]
    return part.pivot_table(index=["impl", "mode"], columns="vary", values="time_ms").reset_index()


def fit_exponent(df: pd.DataFrame, x: str = "N", y: str = "time_ms", last: int | None = None) -> float:
    """Slope ``k`` of ``log y = k·log x + c`` (least squares), i.e. ``y ∝ x^k``.

    ``df`` holds one curve (filter impl/mode first); ``last`` keeps only the ``last`` largest
    ``x`` values.
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
    """Fitted exponents of time, FLOPs and saved memory for every (vary, impl, mode) curve of
    :func:`cost_table`, over the ``last`` largest values (``x_from``..``x_to``)."""
    rows = []
    for (vary, impl, mode), part in df.groupby(["vary", "impl", "mode"], sort=True):
        xs = np.sort(part[vary].unique())
        if xs.size < 2:
            continue
        used = xs if last is None else xs[-int(last):]
        rows.append({"vary": vary, "impl": impl, "mode": mode, "x_from": int(used[0]), "x_to": int(used[-1]),
                     "k_time": fit_exponent(part, vary, "time_ms", last),
                     "k_flops": fit_exponent(part, vary, "flops", last),
                     "k_saved_memory": fit_exponent(part, vary, "saved_mib", last)})
    return pd.DataFrame(rows)


def explicit_vs_fast(df: pd.DataFrame) -> pd.DataFrame:
    """Speed-up of the fused path over the explicit one for each measured point (with both IQRs)."""
    keys = ["vary", "B", "N", "D", "H", "mode"]
    wide = df.pivot_table(index=keys, columns="impl", values=["time_ms", "time_iqr_ms"]).reset_index()
    if not set(IMPLS) <= set(wide["time_ms"].columns):
        raise ValueError("explicit_vs_fast: the table needs both impl='explicit' and impl='fast' rows")
    out = wide[keys].copy()
    out.columns = keys
    for impl in IMPLS:
        out[impl] = wide["time_ms"][impl].to_numpy()
        out[f"{impl}_iqr"] = wide["time_iqr_ms"][impl].to_numpy()
    out["speedup"] = out["explicit"] / out["fast"]
    return out


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
