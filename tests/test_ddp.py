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
