"""Run store: naming, cache hits, force, sweeps and tables, two processes, atomic files, locks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from helpers import tiny_config

from cvaia.config import ConfigError, make_config
from cvaia.files import FileLock, atomic_write_json, atomic_write_text
from cvaia.runs import (
    Run,
    RunNotFoundError,
    get_run,
    list_runs,
    load_run,
    results_table,
    run_dir_for,
    sweep,
)

REPO = Path(__file__).resolve().parent.parent


tiny_cfg = partial(tiny_config, max_val_images=2)


def test_run_dir_name_and_store(isolated_dirs, tmp_path):
    cfg = make_config(optimizer="adam", optimizer_lr=1e-4)
    path = run_dir_for(cfg)
    assert path.parent == isolated_dirs["runs"].resolve()
    assert path.name == f"{cfg.run_label()}-{cfg.config_hash()}"
    # non-hashed fields change neither name nor folder; hashed ones do
    assert run_dir_for(cfg.replace(quiet=True, workers=0)) == path
    assert run_dir_for(cfg.replace(seed=1)) != path
    assert run_dir_for(cfg.replace(log_dir=str(tmp_path / "elsewhere"))).parent == (tmp_path / "elsewhere").resolve()
    with pytest.raises(RunNotFoundError):
        get_run(cfg, train=False)
    assert list_runs() == []


def test_cache_hit_returns_without_training(tiny_root, isolated_dirs, monkeypatch):
    cfg = tiny_cfg(tiny_root)
    first = get_run(cfg)
    assert first.trained_now and first.is_done
    files = {p: p.stat().st_mtime_ns for p in first.path.rglob("*") if p.is_file()}

    import cvaia.train

    def boom(*a, **k):  # any training attempt fails the test
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(cvaia.train._Trainer, "run", boom)
    again = get_run(cfg.replace(quiet=False, workers=0))  # unhashed fields: same run
    assert again == first and not again.trained_now
    assert {p: p.stat().st_mtime_ns for p in first.path.rglob("*") if p.is_file()} == files
    # train() on a finished run returns at once as well
    assert cvaia.train.train(cfg) == (first.path, False)
    assert load_run(first.path).final == first.final
    assert [r.name for r in list_runs()] == [first.name]


def test_force_moves_old_run_aside(tiny_root, isolated_dirs):
    cfg = tiny_cfg(tiny_root)
    first = get_run(cfg)
    old_done = json.loads((first.path / "done.json").read_text())
    again = get_run(cfg, force=True)
    assert again.trained_now and again.path == first.path
    aside = [p for p in isolated_dirs["runs"].iterdir() if ".old-" in p.name]
    assert len(aside) == 1 and aside[0].name.startswith(first.name + ".old-")
    assert json.loads((aside[0] / "done.json").read_text()) == old_done  # nothing lost
    assert (aside[0] / "checkpoints" / "best.pt").is_file()
    assert [r.name for r in list_runs()] == [first.name]
    assert len(list_runs(include_old=True)) == 2
    # deterministic on the CPU: retraining reproduces the metrics exactly
    assert again.final["miou"] == old_done["final"]["miou"]
    assert again.final["si_log_rmse"] == old_done["final"]["si_log_rmse"]


def test_sweep_results_table_and_run_api(tiny_root, isolated_dirs):
    base = tiny_cfg(tiny_root)
    runs = sweep(base, {"optimizer_lr": [1e-3, 1e-4], "loss_weight_depth": [0.5]})
    assert len(runs) == 2 and all(r.is_done for r in runs)
    assert [r.config.optimizer_lr for r in runs] == [1e-3, 1e-4]
    table = results_table(runs)
    assert list(table.columns) == ["run", "optimizer_lr", "miou", "si_log_rmse", "score", "train_time_s",
                                   "images_per_s", "peak_mem_mb", "params"]
    assert list(table.optimizer_lr) == [1e-3, 1e-4]
    assert np.isfinite(table[["miou", "si_log_rmse", "score", "params"]].to_numpy(float)).all()
    assert list(results_table(runs, columns=["miou", "batch_size"]).columns) == \
        ["run", "optimizer_lr", "miou", "batch_size"]
    with pytest.raises(ConfigError, match="optimizer_lrr"):
        sweep(base, {"optimizer_lrr": [1.0]})

    run = runs[0]
    assert run.config == base.replace(optimizer_lr=1e-3)
    model = run.load_model("best")
    assert not model.training
    rgb = np.random.default_rng(0).integers(0, 255, (2, 64, 100, 3), dtype=np.uint8)
    pred = run.predict(rgb)
    assert pred["semseg"].shape == (2, 64, 96) and pred["semseg"].max() < 19
    assert pred["depth"].shape == (2, 64, 96) and (pred["depth"] > 0).all()
    from cvaia.data.miniscapes import load_split_tensors

    gt = load_split_tensors(tiny_root, "val", max_images=2).semseg
    cm = run.confusion
    assert cm.shape == (19, 19) and cm.sum() == int((gt != 255).sum())  # all valid val pixels


_CHILD = textwrap.dedent("""
    import json, sys, torch
    torch.set_num_threads(1)
    from cvaia.config import make_config
    from cvaia.runs import get_run
    cfg = make_config(**json.loads(sys.argv[1]))
    run = get_run(cfg)
    print(json.dumps({"trained": run.trained_now, "done": run.is_done, "path": str(run.path)}))
""")


def test_two_processes_train_once(tiny_root, isolated_dirs):
    """Two processes ask for the same run at once: one trains, the other waits and loads it."""
    cfg = tiny_cfg(tiny_root, num_epochs=2)
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(REPO))
    procs = [subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(cfg.to_dict())], env=env, cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert sorted(r["trained"] for r in results) == [False, True]
    assert all(r["done"] for r in results) and results[0]["path"] == results[1]["path"]
    run = Run(results[0]["path"])
    assert list(run.history.step) == [2, 4]  # trained once: 2 epochs x 2 steps, logged at epoch ends
    assert list(run.epochs.epoch) == [1, 2]
    assert len(list(run.path.parent.iterdir())) == 1  # nothing set aside, no stray files
    assert not [p for p in run.path.rglob("*.tmp")]


def test_atomic_writes_never_leave_half_files(tmp_path):
    target = tmp_path / "a" / "x.json"
    atomic_write_json(target, {"v": 1, "nan": float("nan")})
    assert json.loads(target.read_text()) == {"v": 1, "nan": None}

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(target, {"v": Boom()})  # fails while writing
    assert json.loads(target.read_text()) == {"v": 1, "nan": None}  # the old file is intact
    assert sorted(p.name for p in target.parent.iterdir()) == ["x.json"]  # no temp file left
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600


def test_file_lock_is_exclusive(tmp_path):
    path = tmp_path / "run" / ".lock"
    with FileLock(path):
        with pytest.raises(TimeoutError, match="lock"):
            FileLock(path, timeout=0.2).acquire()
    with FileLock(path, timeout=0.2) as lock:  # free again
        assert lock.locked
    assert not lock.locked


def test_file_lock_follows_a_moved_folder(tmp_path):
    """A waiter whose lock file was moved away (force) locks the new file instead."""
    import threading

    run = tmp_path / "run"
    first = FileLock(run / ".lock").acquire()
    got = []

    def waiter():
        with FileLock(run / ".lock") as lk:
            got.append(os.fstat(lk._fd).st_ino)

    t = threading.Thread(target=waiter)
    t.start()
    time.sleep(0.2)
    os.replace(run, tmp_path / "run.old")
    run.mkdir()
    second = FileLock(run / ".lock").acquire()  # the mover locks the new folder first
    first.release()
    time.sleep(0.2)
    assert not got  # the waiter is now blocked on the new lock
    new_ino = os.stat(run / ".lock").st_ino
    second.release()
    t.join(5)
    assert got == [new_ino]
