"""The benchmark's plumbing (not its speed: speed is measured by `python -m cvaia bench`)."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest

from cvaia.bench import BenchSettings, format_table, run_bench


def test_both_arms_train_and_report(tiny_root):
    s = BenchSettings(size=32, batch_size=2, steps=1, warmup=1, device="cpu", workers=0,
                      dataset_root=str(tiny_root))
    rows = run_bench(["deeplabv3p"], s, isolate=False, log=lambda *a: None)
    (row,) = rows
    assert row["model"] == "deeplabv3p" and row["device"] == "cpu"
    for arm in ("reference", "fast"):
        r = row["arms"][arm]
        assert r["images_per_s"] > 0 and math.isfinite(r["final_loss"])
        assert r["peak_memory_mb"] > 0
        # Regression: the label said "process + workers" but the value is a max, not a sum.
        assert r["peak_memory_mb"] == max(r["peak_rss_process_mb"], r["peak_rss_largest_worker_mb"])
        assert "process + workers" not in r["memory_kind"] and "larger of" in r["memory_kind"]
    assert row["arms"]["reference"]["attention"] == "explicit"
    assert row["arms"]["fast"]["attention"] == "fast"
    assert row["speedup"] == pytest.approx(row["fast_img_s"] / row["reference_img_s"])
    table = format_table(rows)
    assert "| deeplabv3p | cpu | 32² | 2 |" in table and "fast/ref" in table


def test_cli_rejects_unknown_model():
    proc = subprocess.run([sys.executable, "-m", "cvaia", "bench", "--models", "unet"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "--models: unknown unet" in proc.stderr


def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "cvaia", "bench", "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and "--batch_size" in proc.stdout
