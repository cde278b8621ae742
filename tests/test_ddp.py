"""DDP on the CPU: ``torchrun --nproc_per_node 2 -m cvaia train`` with the gloo backend."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_two_process_gloo_training(tiny_root, isolated_dirs):
    """2 processes x batch 2 on 8 images: 2 steps per epoch; rank 0 writes one complete run."""
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "cvaia", "train", "--dataset_root", str(tiny_root), "--aug_input_crop_size", "64",
           "--batch_size", "2", "--num_epochs", "2", "--max_train_images", "8", "--optimizer", "adam",
           "--optimizer_lr", "1e-3", "--log_every", "1", "--device", "cpu", "--quiet"]
    proc = subprocess.run(cmd, env=env, cwd=REPO, capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = [p for p in isolated_dirs["runs"].iterdir()]
    assert len(runs) == 1
    run = runs[0]
    meta = json.loads((run / "config.json").read_text())
    assert meta["world_size"] == 2
    done = json.loads((run / "done.json").read_text())
    assert done["summary"]["world_size"] == 2 and done["summary"]["steps"] == 4
    from cvaia.runs import Run

    r = Run(run)
    assert list(r.epochs.epoch) == [1, 2] and list(r.epochs.step) == [2, 4]
    assert list(r.history.step) == [1, 2, 3, 4]
    for key in ("miou", "si_log_rmse", "pixel_acc", "train_loss"):
        assert math.isfinite(r.final[key]), key
    # evaluation was sharded over the ranks and summed: every valid val pixel counted once
    from cvaia.data.miniscapes import load_split_tensors

    gt = load_split_tensors(tiny_root, "val").semseg
    assert int(r.confusion.sum()) == int((gt != 255).sum())
    assert (run / "checkpoints" / "best.pt").is_file()


def _torchrun(root, *extra, nproc=2):
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    env.pop("WORLD_SIZE", None)
    flags = ["--dataset_root", str(root), "--aug_input_crop_size", "32", "--batch_size", "2",
             "--num_epochs", "1", "--max_train_images", "4", "--max_val_images", "2", "--optimizer", "adam",
             "--optimizer_lr", "1e-3", "--device", "cpu", "--quiet", *extra]
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "-m", "cvaia", "train", *flags]
    return cmd, env


@pytest.mark.slow
def test_ranks_wait_for_a_held_run_lock_longer_than_the_process_group_timeout(tiny_root, isolated_dirs):
    """Issue 18, item 2: another job holds the run's lock (here: this test) for longer than the
    process group's timeout (--dist_timeout 8 s). Rank 0 waits for the lock and the other rank
    waits outside any collective, so the job neither dies on the timeout (before: rank 1 sat in
    a broadcast that timed out) nor trains before the lock is released; then it trains the run."""
    import time

    from cvaia import run_folder as rf
    from cvaia.config import make_config

    cfg = make_config(dataset_root=str(tiny_root), aug_input_crop_size=32, batch_size=2, num_epochs=1,
                      max_train_images=4, max_val_images=2, optimizer="adam", optimizer_lr=1e-3, device="cpu")
    run_dir = rf.run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    held = rf.lock(run_dir)
    cmd, env = _torchrun(tiny_root, "--dist_timeout", "8")
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        time.sleep(24)  # 3 x the timeout
        assert proc.poll() is None, proc.communicate()[0][-3000:]  # still waiting, not dead
        assert not (run_dir / "config.json").exists()  # and nothing trained while the lock was held
    finally:
        held.release()
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == 0, out[-3000:]
    done = json.loads((run_dir / "done.json").read_text())
    assert done["summary"]["world_size"] == 2 and done["summary"]["steps"] == 1


def test_launch_environment_errors_name_the_variable(monkeypatch):
    """Issue 17's case: RANK=abc, or WORLD_SIZE=2 without MASTER_ADDR: one line naming the
    variable (before: torch's ValueError / a hang in the rendezvous)."""
    from cvaia.config import ConfigError, make_config
    from cvaia.distributed import setup_distributed

    cfg = make_config(device="cpu")
    base = {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29511"}
    cases = [({"RANK": "abc"}, "environment variable RANK: expected an integer, got 'abc'"),
             ({"RANK": None}, "environment variable RANK: not set, but WORLD_SIZE=2"),
             ({"RANK": "2"}, "environment variable RANK: expected 0..1 (WORLD_SIZE=2), got 2"),
             ({"MASTER_ADDR": None}, "environment variable MASTER_ADDR: not set, but WORLD_SIZE=2"),
             ({"MASTER_PORT": "x"}, "environment variable MASTER_PORT: expected an integer, got 'x'"),
             ({"WORLD_SIZE": "two"}, "environment variable WORLD_SIZE: expected an integer, got 'two'"),
             ({"LOCAL_RANK": "0.5"}, "environment variable LOCAL_RANK: expected an integer, got '0.5'")]
    for change, message in cases:
        for k, v in {**base, **change}.items():
            if v is None:
                monkeypatch.delenv(k, raising=False)
            else:
                monkeypatch.setenv(k, v)
        with pytest.raises(ConfigError) as exc:
            setup_distributed(cfg)
        assert str(exc.value).startswith(message) and "\n" not in str(exc.value), (change, str(exc.value))


def test_cli_reports_a_bad_launch_variable_in_one_line(monkeypatch, capsys, tiny_root):
    from cvaia.__main__ import main

    for k, v in {"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_PORT": "29511"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    with pytest.raises(SystemExit) as exc:
        main(["train", "--dataset_root", str(tiny_root), "--device", "cpu", "--quiet"])
    err = capsys.readouterr().err
    assert exc.value.code == 2
    assert [ln for ln in err.splitlines() if ln.startswith("python -m cvaia train: error:")] == [
        ln for ln in err.splitlines() if "MASTER_ADDR" in ln]


def test_each_task_uses_the_gpu_it_sees(monkeypatch):
    """Issue 18, item 14: under SLURM's per-task GPU binding each task sees one GPU, and
    LOCAL_RANK 1 must use cuda:0 (before: set_device(1) failed); with every GPU visible,
    LOCAL_RANK picks it; more processes than GPUs is a clear error."""
    import torch

    from cvaia.config import ConfigError
    from cvaia.distributed import cuda_index

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert [cuda_index(r) for r in range(4)] == [0, 0, 0, 0]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert [cuda_index(r) for r in range(4)] == [0, 1, 2, 3]
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ConfigError, match="LOCAL_RANK: 2, but this process sees 2 GPU"):
        cuda_index(2)


def test_setup_uses_the_visible_gpu_and_an_explicit_timeout(monkeypatch):
    """set_device gets the visible index and init_process_group an explicit timeout (--dist_timeout)."""
    from datetime import timedelta

    import torch
    import torch.distributed as dist

    from cvaia.config import make_config
    from cvaia.distributed import setup_distributed

    calls = {}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "set_device", lambda i: calls.setdefault("set_device", i))
    monkeypatch.setattr(dist, "is_initialized", lambda: False)
    monkeypatch.setattr(dist, "init_process_group", lambda **kw: calls.setdefault("init", kw))
    monkeypatch.setattr(dist, "get_rank", lambda: 3)
    monkeypatch.setattr(dist, "get_world_size", lambda: 4)
    for k, v in {"WORLD_SIZE": "4", "RANK": "3", "LOCAL_RANK": "1", "MASTER_ADDR": "n1", "MASTER_PORT": "29500"}.items():
        monkeypatch.setenv(k, v)
    info = setup_distributed(make_config(dist_timeout=90))
    assert calls["set_device"] == 0 and info.cuda_index == 0 and info.local_rank == 1
    assert calls["init"] == {"backend": "nccl", "timeout": timedelta(seconds=90)}
