"""The course template's options with their real semantics: gradient accumulation, --resume PATH,
TensorBoard image grids of observed samples, --prepare_submission, --workers_validation."""

from __future__ import annotations

import shutil
import zipfile
from functools import partial

import numpy as np
import pytest
import torch
from helpers import tiny_config

from cvaia import run_folder as rf
from cvaia.__main__ import main
from cvaia.config import ConfigError, make_config
from cvaia.runs import Run
from cvaia.train import train


class Killed(RuntimeError):
    """Raised by a progress callback: stops training like a kill after an epoch's checkpoint."""


def _kill_after(n):
    def callback(row):
        if row["epoch"] >= n:
            raise Killed(row["epoch"])
    return callback


tiny_cfg = partial(tiny_config, batch_size=2, num_epochs=2, log_every=1)


def _weights(run_dir):
    return torch.load(rf.checkpoint_path(run_dir, "last"), weights_only=False)["model"]


def test_accumulation_steps_once_per_group_and_resumes_exactly(tiny_root, tmp_path):
    cfg = tiny_cfg(tiny_root, accumulate_grad_batches=3)  # 4 batches per epoch: groups of 3 and 1
    whole = train(cfg, tmp_path / "whole").run_dir
    steps = Run(whole).history
    assert list(steps["step"]) == [1, 2, 3, 4]  # optimizer steps, 2 per epoch
    assert Run(whole).final["steps"] == 4 and Run(whole).meta["effective_batch_size"] == 6
    lrs = list(steps["lr"])
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] < lrs[0]  # the poly schedule runs over 4 steps

    with pytest.raises(Killed):
        train(cfg, tmp_path / "killed", progress=_kill_after(1))
    resumed = train(cfg, tmp_path / "killed").run_dir
    for k, v in _weights(whole).items():
        assert torch.equal(v, _weights(resumed)[k]), k


def test_one_batch_per_step_is_unchanged_by_accumulation_code(tiny_root, tmp_path):
    """accumulate_grad_batches=1 keeps the hash and the exact results of plain training."""
    a = train(tiny_cfg(tiny_root, num_epochs=1), tmp_path / "a").run_dir
    b = train(tiny_cfg(tiny_root, num_epochs=1, accumulate_grad_batches=1), tmp_path / "b").run_dir
    assert tiny_cfg(tiny_root).config_hash() == tiny_cfg(tiny_root, accumulate_grad_batches=1).config_hash()
    for k, v in _weights(a).items():
        assert torch.equal(v, _weights(b)[k]), k


def test_resume_from_a_checkpoint_path(tiny_root, isolated_dirs, tmp_path, capsys):
    cfg = tiny_cfg(tiny_root, quiet=False)
    whole = train(cfg, tmp_path / "whole").run_dir
    with pytest.raises(Killed):
        train(cfg, progress=_kill_after(1))
    run_dir = rf.run_dir_for(cfg)
    copy = tmp_path / "elsewhere" / "epoch1.pt"  # e.g. fetched from another machine
    copy.parent.mkdir()
    shutil.copy(rf.checkpoint_path(run_dir, "last"), copy)
    shutil.rmtree(run_dir)
    args = ["train", "--dataset_root", str(tiny_root), "--aug_input_crop_size", "64", "--batch_size", "2",
            "--batch_size_validation", "4", "--num_epochs", "2", "--max_train_images", "8", "--optimizer", "adam",
            "--optimizer_lr", "1e-3", "--log_every", "1", "--device", "cpu"]
    capsys.readouterr()
    assert main([*args, "--resume", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "continuing" in out and "from epoch 1" in out and "resuming" in out
    assert rf.is_finished(run_dir)
    for k, v in _weights(whole).items():  # the same result as never stopping
        assert torch.equal(v, _weights(run_dir)[k]), k
    assert Run(run_dir).meta["resumed_from"][0]["checkpoint"] == str(copy.resolve())

    with pytest.raises(SystemExit):  # another configuration: what differs is named
        main([*args, "--seed", "1", "--resume", str(copy)])
    assert "seed 0 vs 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a finished run's slim checkpoint cannot be resumed from
        main([*args, "--seed", "2", "--resume", str(whole)])
    assert "--pretrained" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="no checkpoint there"):
        train(cfg.replace(seed=3), resume_from=tmp_path / "nothing.pt")


def test_image_grids_of_observed_samples(tiny_root, tmp_path, capsys):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = tiny_cfg(tiny_root, quiet=False, num_steps_visualization_first=2, num_steps_visualization_interval=3,
                   visualize_num_samples_in_batch=2, visualize_img_grid_width=1, observe_train_ids=[0, 3, 500],
                   observe_valid_ids=[1])
    run_dir = train(cfg, tmp_path / "run", progress=False).run_dir
    assert "--observe_train_ids: 500 beyond the train split; skipped" in capsys.readouterr().out
    events = EventAccumulator(str(run_dir / "tb"), size_guidance={"images": 0})
    events.Reload()
    for tag in ("imgs_train/batch_crops", "imgs_train/observed", "imgs_val/observed"):
        assert [e.step for e in events.Images(tag)] == [2, 5, 8], tag  # first 2, every 3 of 8 steps
    train_grid = events.Images("imgs_train/observed")[0]
    # two samples, one per row (width 1), each rgb + gt/pred semseg + gt/pred depth of the 64x128 image
    assert (train_grid.width, train_grid.height) == (128 + 4, 2 * 5 * 64 + 6)
    # the scalars: the epoch's results row (finite values only) and the steps.csv rows
    from cvaia.runs import Run

    run = Run(run_dir)
    miou = events.Scalars("epoch/miou")
    assert [e.step for e in miou] == run.epochs["epoch"].tolist()
    assert [e.value for e in miou] == pytest.approx(run.epochs["miou"].tolist())
    assert "epoch/si_log_rmse" in events.Tags()["scalars"]
    assert [e.step for e in events.Scalars("train/loss")] == run.history["step"].tolist()


def test_visualizing_changes_no_result(tiny_root, tmp_path):
    plain = train(tiny_cfg(tiny_root, num_epochs=1), tmp_path / "plain").run_dir
    seen = train(tiny_cfg(tiny_root, num_epochs=1, num_steps_visualization_first=1,
                          num_steps_visualization_interval=1), tmp_path / "seen").run_dir
    for k, v in _weights(plain).items():
        assert torch.equal(v, _weights(seen)[k]), k


def test_prepare_submission_packs_the_grader_archive(tiny_root, tmp_path):
    from cvaia.grader import score_predictions

    cfg = tiny_cfg(tiny_root, num_epochs=1, prepare_submission=True)
    run_dir = train(cfg, tmp_path / "run").run_dir
    archive = run_dir / rf.SUBMISSION_FILE
    unpacked = tmp_path / "unpacked"
    zipfile.ZipFile(archive).extractall(unpacked)
    scores = score_predictions(tiny_root, "test", unpacked)  # what the grader reads: complete and valid
    assert {"miou", "si_log_rmse"} <= set(scores)
    archive.unlink()
    assert train(cfg, tmp_path / "run") == (run_dir, False)  # finished: not retrained, archive made again
    assert archive.is_file()


def test_workers_validation_decodes_in_threads_with_the_same_metrics(tiny_root):
    from cvaia.data.miniscapes import MiniscapesSplit
    from cvaia.evaluate import evaluate
    from cvaia.models import build_model

    torch.manual_seed(0)
    model = build_model(make_config(aug_input_crop_size=64))
    one = evaluate(model, MiniscapesSplit(tiny_root, "val"), batch_size=2).metrics
    four = evaluate(model, MiniscapesSplit(tiny_root, "val"), batch_size=2, workers=4).metrics
    assert np.allclose([one[k] for k in ("miou", "si_log_rmse")], [four[k] for k in ("miou", "si_log_rmse")])
