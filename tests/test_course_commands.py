"""The course's own command lines, run as the course runs them: a ``shell_train.sh``-like script
and a SLURM script (``python -m source.scripts.train`` replaced by ``python -m cvaia train``),
on the tiny set. Sizes are shrunk to it (epochs, batch, crop); every flag is the template's."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from cvaia import paths

SHELL_TRAIN = """#!/bin/bash
# shell_train.sh of the course template, for an interactive job
python -m cvaia train \\
  --log_dir ${SAVEDIR} \\
  --dataset_root ${TMPDIR}/miniscapes \\
  --name sbatch_multi \\
  --model_name deeplabv3p \\
  --optimizer adam \\
  --tasks semseg \\
  --optimizer_lr 0.0001 \\
  --batch_size 4 \\
  --num_epochs 1 \\
  --aug_input_crop_size 64 \\
  --workers ${SLURM_CPUS_PER_TASK} \\
  --workers_validation ${SLURM_CPUS_PER_TASK} \\
  --batch_size_validation 4 \\
  --optimizer_float_16 no
"""

SLURM = """#!/bin/bash
#SBATCH --ntasks=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=4
#SBATCH --time=00-24:00:00

# BEGIN YOUR CHANGES HERE
export TEAM_ID=7
echo "Start training"
python -m cvaia train \\
  --log_dir ${SAVEDIR} \\
  --dataset_root ${TMPDIR}/miniscapes \\
  --name task5_baseline_resnet18_32bs_200epochs \\
  \\
  --tasks semseg depth \\
  --loss_weight_semseg 0.5 \\
  --loss_weight_depth 0.5 \\
  \\
  --aug_geom_tilt_max_deg 0.0 \\
  --aug_geom_reflect False \\
  --aug_geom_wiggle_max_ratio 0.0 \\
  --aug_geom_scale_max 1.0 \\
  --aug_geom_scale_min 1.0 \\
  --aug_input_crop_size 64 \\
  \\
  --model_name deeplabv3p_multitask \\
  --model_encoder_name resnet18 \\
  --pretrained true \\
  \\
  --optimizer adam \\
  --optimizer_lr 0.0001 \\
  --optimizer_weight_decay 0.001 \\
  --lr_scheduler poly \\
  --lr_scheduler_power 0.9 \\
  \\
  --accumulate_grad_batches 2 \\
  \\
  --batch_size 2 \\
  --num_epochs 1 \\
  \\
  --workers ${SLURM_CPUS_PER_TASK} \\
  --workers_validation ${SLURM_CPUS_PER_TASK} \\
  --batch_size_validation 4 \\
  --prepare_submission true \\
  --num_steps_visualization_first 1 \\
  --num_steps_visualization_interval 2 \\
  --visualize_num_samples_in_batch 2 \\
  --visualize_img_grid_width 2 \\
  --observe_train_ids [0,1] \\
  --observe_valid_ids [0] \\
  --tensorboard_daemon_start False \\
  --optimizer_float_16 no
  # ... you can pass further arguments as specified in utils/config.py
# END YOUR CHANGES HERE
"""


@pytest.fixture()
def course_env(tiny_root, tmp_path):
    """A job's environment: SAVEDIR, TMPDIR/miniscapes (the extracted data), SLURM_CPUS_PER_TASK,
    ``python`` on PATH, a torch cache holding (stand-in) ImageNet weights for ``--pretrained true``."""
    import torch
    import torchvision

    scratch = tmp_path / "scratch"
    shutil.copytree(tiny_root, scratch / "miniscapes")
    torch_home = tmp_path / "torch"
    ckpt = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    ckpt.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), ckpt)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CVAIA_")}
    env.update(SAVEDIR=str(tmp_path / "savedir"), TMPDIR=str(scratch), SLURM_CPUS_PER_TASK="2",
               TORCH_HOME=str(torch_home), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
               PYTHONPATH=str(paths.REPO_ROOT), CVAIA_FIGURES_DIR=str(tmp_path / "figures"))
    return {"env": env, "savedir": tmp_path / "savedir", "tmp": tmp_path}


def _run_script(text: str, course_env) -> subprocess.CompletedProcess:
    script = course_env["tmp"] / "job.sh"
    script.write_text(text)
    return subprocess.run(["bash", str(script)], env=course_env["env"], capture_output=True, text=True,
                          timeout=600, cwd=course_env["tmp"])


def _only_run(savedir: Path, prefix: str) -> Path:
    runs = [p for p in savedir.iterdir() if p.name.startswith(prefix)]
    assert len(runs) == 1, runs
    return runs[0]


@pytest.mark.slow
def test_shell_train_script(course_env):
    proc = _run_script(SHELL_TRAIN, course_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = _only_run(course_env["savedir"], "sbatch_multi-")
    meta = json.loads((run / "config.json").read_text())
    assert meta["config"]["tasks"] == ["semseg"] and meta["config"]["workers_validation"] == 2
    assert (run / "done.json").is_file()


@pytest.mark.slow
def test_slurm_script(course_env):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    proc = _run_script(SLURM, course_env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "--tensorboard_daemon_start: ignored" in proc.stderr
    run = _only_run(course_env["savedir"], "task5_baseline_resnet18_32bs_200epochs-")
    meta = json.loads((run / "config.json").read_text())
    cfg = meta["config"]
    assert cfg["tasks"] == ["semseg", "depth"] and cfg["accumulate_grad_batches"] == 2
    assert cfg["pretrained"] == "imagenet" and meta["encoder_weights"]["identity"].startswith("sha256:")
    assert meta["effective_batch_size"] == 4
    done = json.loads((run / "done.json").read_text())
    assert done["summary"]["steps"] == 3 and done["summary"]["effective_batch_size"] == 4  # 6 batches / 2
    names = zipfile.ZipFile(run / "submission.zip").namelist()
    assert sorted(names) == sorted([f"{t}/{i}.png" for t in ("semseg", "depth") for i in range(4)])
    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert {"imgs_train/batch_crops", "imgs_train/observed", "imgs_val/observed"} <= set(events.Tags()["images"])
    assert [e.step for e in events.Images("imgs_val/observed")] == [1, 3]


def test_params_takes_the_slurm_flags_verbatim(course_env, capsys, monkeypatch):
    """The SLURM script's flags with its real sizes (200 epochs, batch 8) parse and validate."""
    from cvaia.__main__ import main

    monkeypatch.setenv("TORCH_HOME", course_env["env"]["TORCH_HOME"])
    argv = ["--name", "task5", "--tasks", "semseg", "depth", "--loss_weight_semseg", "0.5", "--loss_weight_depth",
            "0.5", "--aug_geom_tilt_max_deg", "0.0", "--aug_geom_reflect", "False", "--aug_geom_wiggle_max_ratio",
            "0.0", "--aug_geom_scale_max", "1.0", "--aug_geom_scale_min", "1.0", "--model_name",
            "deeplabv3p_multitask", "--model_encoder_name", "resnet18", "--pretrained", "true", "--optimizer",
            "adam", "--optimizer_lr", "0.0001", "--optimizer_weight_decay", "0.001", "--lr_scheduler", "poly",
            "--lr_scheduler_power", "0.9", "--accumulate_grad_batches", "2", "--batch_size", "8", "--num_epochs",
            "200", "--workers", "4", "--workers_validation", "4", "--batch_size_validation", "8",
            "--optimizer_float_16", "no"]
    assert main(["params", *argv]) == 0
    assert "deeplabv3p_multitask (resnet18, tasks semseg,depth)" in capsys.readouterr().out
    adaptive = ["--tasks", "depth", "--num_bins", "400", "--num_heads", "8", "--expansion", "4", "--model_name",
                "adaptive_depth", "--pretrained", "true", "--accumulate_grad_batches", "1", "--batch_size", "4"]
    assert main(["params", *adaptive]) == 0
