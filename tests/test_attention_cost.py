"""Attention cost model and measurements (tiny sizes only)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

from cvaia import attention_cost as ac


def _count_matmul_flops(B: int, N: int, D: int, H: int) -> int:
    """Independent count: walk the matrix products of multi-head attention one by one."""
    dh = D // H
    flops = 0
    for _ in range(4):  # Q, K, V, out projections: (B·N)×D @ D×D
        flops += 2 * (B * N) * D * D
    for _ in range(B * H):  # per batch element and head
        flops += 2 * N * dh * N  # Q_h @ K_hᵀ
        flops += 2 * N * N * dh  # A_h @ V_h
    return flops


@pytest.mark.parametrize("B,N,D,H", [(1, 16, 8, 1), (2, 64, 32, 4), (3, 100, 48, 8), (4, 256, 256, 16)])
def test_flops_formula_matches_independent_count(B, N, D, H):
    assert ac.attention_flops(B, N, D) == _count_matmul_flops(B, N, D, H)
    parts = ac.attention_flops_breakdown(B, N, D)
    assert parts["total"] == parts["projections"] + parts["scores"] + parts["weighted_sum"]
    assert parts["scores"] == parts["weighted_sum"] == 2 * B * N * N * D


def test_heads_do_not_change_flops_but_change_attention_matrix():
    counts = {H: _count_matmul_flops(2, 64, 64, H) for H in (1, 2, 4, 8, 16)}
    assert len(set(counts.values())) == 1
    assert set(counts.values()) == {ac.attention_flops(2, 64, 64)}
    assert ac.attention_matrix_bytes(2, 64, 8) == 8 * ac.attention_matrix_bytes(2, 64, 1) == 2 * 8 * 64 * 64 * 4


def test_flops_scale_quadratically_in_n_for_large_n():
    # N >> D: doubling N multiplies the cost by almost 4
    ratio = ac.attention_flops(1, 8192, 16) / ac.attention_flops(1, 4096, 16)
    assert 3.95 < ratio <= 4.0
    # linear in B
    assert ac.attention_flops(6, 64, 32) == 6 * ac.attention_flops(1, 64, 32)


def test_flops_exponent_is_the_local_slope_of_the_flop_count():
    # the numbers: over N = D .. 4D the FLOP exponent runs from 4/3 to 5/3, not 2
    assert ac.flops_exponent(256, 256) == pytest.approx(4 / 3)
    assert ac.flops_exponent(1024, 256) == pytest.approx(5 / 3)
    D = 64
    for N in (64, 256, 1024, 4096):  # a finite-difference slope of the counted FLOPs
        slope = math.log(ac.attention_flops(1, N + 1, D) / ac.attention_flops(1, N - 1, D)) / math.log((N + 1) / (N - 1))
        assert ac.flops_exponent(N, D) == pytest.approx(slope, abs=1e-3)
    assert ac.flops_exponent(1e9, 1) == pytest.approx(2.0, abs=1e-6)


def test_saved_tensor_bytes_see_the_attention_matrix_of_the_explicit_path_only():
    B, N, D, H = 2, 64, 16, 4
    torch.manual_seed(0)
    layer = ac.build_attention(D, H, "explicit").eval()
    x = torch.randn(B, N, D, requires_grad=True)
    explicit = ac.saved_tensor_bytes(lambda: layer(x), exclude=list(layer.parameters()))
    layer.impl = "fast"
    fast = ac.saved_tensor_bytes(lambda: layer(x), exclude=list(layer.parameters()))
    matrix = ac.attention_matrix_bytes(B, N, H)
    # the softmax weights (saved once: softmax backward and A·V share them) are the difference,
    # up to the fused kernel's O(B·H·N) statistics and small token-sized buffers
    assert matrix <= explicit - fast + 4 * B * H * N * 2
    assert explicit - fast < 1.5 * matrix
    # doubling H doubles the matrix, not the token-sized part
    layer16 = ac.build_attention(D, 2 * H, "explicit").eval()
    explicit2 = ac.saved_tensor_bytes(lambda: layer16(x), exclude=list(layer16.parameters()))
    assert explicit2 - explicit == pytest.approx(matrix, rel=0.05)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_bad_sizes_are_named(bad):
    with pytest.raises(ValueError, match="N must be a positive integer"):
        ac.attention_flops(1, bad, 8)


def test_fit_exponent_recovers_known_power():
    x = np.array([16, 32, 64, 128, 256])
    df = pd.DataFrame({"N": x, "time_ms": 0.3 * x ** 2.0 + 0.0})
    assert ac.fit_exponent(df, "N", "time_ms") == pytest.approx(2.0, abs=1e-9)
    df2 = pd.DataFrame({"N": x, "time_ms": 5 + 1e-3 * x ** 2})
    # constant overhead flattens the small-N end; the last points are close to quadratic
    assert ac.fit_exponent(df2, "N", "time_ms", last=2) > ac.fit_exponent(df2, "N", "time_ms")
    with pytest.raises(ValueError, match="two distinct"):
        ac.fit_exponent(df.iloc[:1], "N", "time_ms")


def test_softmax_weights_are_full_rank():
    r = ac.softmax_rank_demo(N=48, d=4)
    assert r["rank_scores"] == 4
    assert r["rank_softmax"] == 48


def test_sweep_table_shape_and_columns():
    torch.manual_seed(0)
    df = ac.sweep("N", [8, 16], base={"B": 1, "N": 8, "D": 16, "H": 2}, rounds=1, min_run_time=0.001,
                  threads=1, device="cpu")
    assert len(df) == 2 * 2 * 2  # values × impls × modes
    for col in ("vary", "B", "N", "D", "H", "impl", "mode", "time_ms", "time_iqr_ms", "threads", "flops",
                "attn_matrix_mib", "saved_mib", "peak_mib_cuda"):
        assert col in df.columns
    assert set(df["impl"]) == {"explicit", "fast"}
    assert set(df["mode"]) == {"forward", "forward+backward"}
    assert (df["time_ms"] > 0).all() and (df["time_iqr_ms"] >= 0).all() and set(df["threads"]) == {1}
    assert (df["time_q25_ms"] <= df["time_ms"]).all() and (df["time_ms"] <= df["time_q75_ms"]).all()
    assert df["peak_mib_cuda"].isna().all()  # CPU: saved-tensor hooks only
    fwd = df[(df["mode"] == "forward") & (df["N"] == 16)]
    assert set(fwd["flops"]) == {ac.attention_flops(1, 16, 16)}
    assert math.isclose(fwd["attn_matrix_mib"].iloc[0], 1 * 2 * 16 * 16 * 4 / 2 ** 20)
    ex = df[df["impl"] == "explicit"].groupby("N")["saved_mib"].first()
    assert ex[16] > ex[8]


def test_cost_table_covers_every_sweep_and_measures_the_base_point_once():
    base = {"B": 1, "N": 8, "D": 8, "H": 1}
    df = ac.cost_table(grid={"N": (8, 16), "D": (8, 16), "H": (1, 2), "B": (1, 2)}, base=base,
                       modes=("forward",), rounds=2, min_run_time=0.001, threads=1, device="cpu")
    assert set(df["vary"]) == {"N", "D", "H", "B"}
    assert len(df) == 4 * 2 * 2
    agree = ac.base_point_agreement(df, base)
    assert len(agree) == 2 and set(agree.columns) >= {"N", "D", "H", "B"}
    for _, row in agree.iterrows():  # the same measurement in every sweep
        assert row["N"] == row["D"] == row["H"] == row["B"]
    assert (df["blocks"] >= 2).all()  # at least one block per round
    ex = ac.exponents(df, last=None)
    assert set(ex["vary"]) == {"N", "D", "H", "B"}
    # heads: FLOPs exponent exactly 0
    assert ex.loc[ex["vary"] == "H", "k_flops"].abs().max() < 1e-9
    sp = ac.explicit_vs_fast(df)
    assert (sp["speedup"] > 0).all() and len(sp) == 8
    assert {"explicit_iqr", "fast_iqr"} <= set(sp.columns)


def test_sweep_rejects_bad_arguments():
    with pytest.raises(ValueError, match="vary must be one of"):
        ac.sweep("X", [1])
    with pytest.raises(ValueError, match="not divisible"):
        ac.sweep("H", [3], base={"B": 1, "N": 8, "D": 8, "H": 1}, rounds=1, device="cpu")
    with pytest.raises(ValueError, match="impl must be one of"):
        ac.sweep("N", [8], impls=("flash",), rounds=1, device="cpu")
    with pytest.raises(ValueError, match="base lacks"):
        ac.cost_table({"N": [8]}, base={"N": 8})


# ---- the cost measurements of notebooks 03 and 05 -------------------------------------------------
def test_saved_tensor_bytes_counts_activations_not_weights():
    from cvaia.experiments.p05 import saved_tensor_bytes

    lin = torch.nn.Linear(16, 8)
    x = torch.randn(4, 16, requires_grad=True)
    # Linear keeps its input (4·16 floats) for the weight gradient; the weight itself is excluded
    assert saved_tensor_bytes(lambda: lin(x), exclude=list(lin.parameters())) == 4 * 16 * 4
    # exp keeps its output y; sin of a view of y keeps that view: the same storage, counted once
    assert saved_tensor_bytes(lambda: x.exp().view(-1).sin()) == 4 * 16 * 4
    # two exps of x: two outputs, two storages
    assert saved_tensor_bytes(lambda: (x.exp(), x.exp())) == 2 * 4 * 16 * 4


def test_cross_attention_memory_rows():
    from cvaia.experiments.p05 import cross_attention_memory

    df = cross_attention_memory(batch=2, crop=64, dim=32, layers=3, heads=4, num_classes=19, kv_pool=4)
    P = 16 * 16
    assert df.loc[0, "per_layer_mib"] * 2 ** 20 == 2 * 4 * P * P * 4
    assert df.loc[0, "total_mib"] == 3 * df.loc[0, "per_layer_mib"]
    assert df.attrs["M"] == 4 * 4 and df.attrs["P"] == P
    assert df["total_mib"].iloc[2] < df["total_mib"].iloc[1] < df["total_mib"].iloc[0]


def test_module_timing_rows_add_up():
    from cvaia.experiments.p03 import module_timing, timing_comparison
    from cvaia.models import deeplabv3p_multitask

    torch.manual_seed(0)
    model = deeplabv3p_multitask()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    df = module_timing(model, torch.randn(2, 3, 32, 32), min_run_time=0.001, warmup=0)
    assert list(df["module"]) == ["encoder", "aspp.semseg", "aspp.depth", "decoder.semseg", "decoder.depth",
                                  "total (whole model)"]
    parts = df.iloc[:-1]
    assert parts["params"].sum() == df.iloc[-1]["params"] == sum(p.numel() for p in model.parameters())
    assert parts["gflops"].sum() == pytest.approx(df.iloc[-1]["gflops"], rel=0.02)  # glue: upsampling only
    assert (df["forward_ms"] > 0).all() and (df["forward_backward_ms"] > 0).all()
    assert (df["forward_backward_iqr_ms"] >= 0).all() and (df["threads"] == torch.get_num_threads()).all()
    assert not model.training  # mode restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # BN statistics restored
    comp = timing_comparison({"branched": df})
    assert set(comp["group"]) == {"encoder", "aspp", "decoder", "total (whole model)"}
    with pytest.raises(ValueError, match="unknown module"):
        module_timing(model, torch.randn(2, 3, 32, 32), modules=["head"])
