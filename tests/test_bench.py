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


def test_fast_arm_trains_like_cvaia_train():
    """The fast arm takes the trainer's precision and memory format (the config defaults, which
    resolve per device), not hard-coded bf16 + channels_last; the reference arm is fp32 NCHW."""
    import torch

    from cvaia.bench import arm_precision, bench_config
    from cvaia.config import Config
    from cvaia.train import autocast_dtype

    s = BenchSettings()
    fast, ref = bench_config("deeplabv3p", "fast", s, "cuda"), bench_config("deeplabv3p", "reference", s, "cuda")
    defaults = Config()
    assert (fast.precision, fast.channels_last) == (defaults.precision, defaults.channels_last)
    assert (ref.precision, ref.channels_last, ref.attention_impl) == ("fp32", False, "explicit")
    assert arm_precision(fast, "cuda") == (autocast_dtype(fast, torch.device("cuda")), defaults.channels_last)
    assert arm_precision(ref, "cuda") == (None, False)
    assert arm_precision(fast, "cpu") == (None, False)


def test_cuda_n_names_and_measures_gpu_n(monkeypatch):
    """``bench --device cuda:1`` reported GPU 0's name and memory (the current device's)."""
    import torch

    from cvaia.bench import cuda_device_name, cuda_step_memory

    names, peaks = {0: "GPU zero", 1: "GPU one"}, {0: 7 * 2**30, 1: 3 * 2**30}

    def index(device=None):
        return 0 if device is None or torch.device(device).index is None else torch.device(device).index

    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: names[index(device)])
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device=None: peaks[index(device)])
    assert cuda_device_name("cuda:1") == "GPU one"
    mem = cuda_step_memory("cuda:1", resident_bytes=2**30)  # 1 GiB of preloaded data
    assert mem["peak_memory_mb"] == 2048 and mem["data_memory_mb"] == 1024
    assert "less the data set" in mem["memory_kind"]
