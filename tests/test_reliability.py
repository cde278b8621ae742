"""Every bad input or broken environment ends in a clear message, and nothing poisoned is kept.

The cases of the reliability probe (issue 11): temporary files of killed writers, a process
waiting on a run lock, out of memory, the run store unusable (a file in the way, disk full,
read-only), diverged runs, data that changed under a cached run, images too small, stub folders
of failed attempts, Ctrl-C.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import types
from functools import partial

import pytest
import torch
from helpers import tiny_config

from cvaia import devices, files
from cvaia.__main__ import main


# ---- temporary files of killed writers --------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "last.pt"
    dead = tmp_path / f".last.pt.{_dead_pid()}@{files._host()}.abc123.tmp"
    dead.write_bytes(b"x" * 1000)  # what `kill -9` during torch.save leaves behind
    alive = tmp_path / f".last.pt.{os.getpid()}@{files._host()}.def456.tmp"
    alive.write_bytes(b"y")  # a writer that is still running: never touched
    other_host = tmp_path / f".last.pt.{_dead_pid()}@some-other-node.ghi789.tmp"
    other_host.write_bytes(b"z")  # a writer on another machine sharing the store: unknown, kept
    old_untagged = tmp_path / ".last.pt.qwerty.tmp"
    old_untagged.write_bytes(b"w")  # left by an older cvaia
    past = time.time() - 2 * files.UNTAGGED_TEMP_MAX_AGE_S
    os.utime(old_untagged, (past, past))
    files.atomic_torch_save({"w": torch.zeros(2)}, target)
    assert torch.load(target)["w"].shape == (2,)
    assert not dead.exists() and not old_untagged.exists()
    assert alive.exists() and other_host.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert sorted(leftovers) == sorted([alive.name, other_host.name])  # the write left no temp of its own


def test_a_killed_writer_leaves_a_temp_that_the_next_start_cleans(tmp_path):
    target = tmp_path / "big.pt"
    code = ("import sys, os, torch\nfrom cvaia import files\n"
            "class Stop:\n"
            "    def __reduce__(self):\n"
            "        os.kill(os.getpid(), 9)\n"
            f"files.atomic_torch_save({{'a': torch.zeros(100000), 'b': Stop()}}, {str(target)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and not target.exists()  # killed mid-write: only the temp is there
    files.atomic_torch_save({"a": torch.ones(1)}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["big.pt"]


def test_failed_write_names_the_file(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="No space left") as err:
        files.atomic_torch_save({}, tmp_path / "c.pt")
    assert err.value.filename == str(tmp_path / "c.pt") and err.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


def test_torch_short_write_on_a_full_disk_is_no_space_left(tmp_path, monkeypatch):
    """What a full disk gives inside torch.save: its zip writer's "unexpected pos"."""
    import errno
    import shutil

    def cut_short(obj, f, *args, **kwargs):
        f.write(b"x" * 100)
        raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 704 vs 598")

    monkeypatch.setattr(torch, "save", cut_short)
    monkeypatch.setattr(shutil, "disk_usage", lambda p: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(OSError, match="No space left on device") as err:
        files.atomic_torch_save({}, tmp_path / "last.pt")
    assert err.value.errno == errno.ENOSPC and err.value.filename == str(tmp_path / "last.pt")
    assert list(tmp_path.iterdir()) == []


# ---- a process waiting on a run lock says so -----------------------------------------------------------
def test_waiting_for_a_lock_says_for_whom(tmp_path):
    path = tmp_path / ".lock"
    first = files.FileLock(path).acquire()
    waits = []
    second = files.FileLock(path, on_wait=waits.append)
    t = threading.Thread(target=second.acquire)
    t.start()
    time.sleep(0.3)
    assert t.is_alive() and waits == [f"pid {os.getpid()} on {__import__('socket').gethostname()}"]
    first.release()
    t.join(5)
    assert second.locked
    second.release()
    third = files.FileLock(path, on_wait=waits.append).acquire()  # free: no wait, no message
    assert len(waits) == 1
    third.release()


# ---- out of memory ---------------------------------------------------------------------------------
def test_out_of_memory_is_recognised():
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 123456789 bytes. Error code 12 (Cannot allocate memory)")
    assert devices.out_of_memory(cpu) == "CPU memory"
    assert devices.out_of_memory(MemoryError()) == "CPU memory"
    assert devices.out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) == "GPU memory"
    assert devices.out_of_memory(RuntimeError("shape mismatch")) is None


@pytest.mark.parametrize("error,where", [
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 9 bytes"), "CPU memory"),
    (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), "GPU memory"),
])
def test_cli_says_out_of_memory_and_what_to_shrink(error, where, monkeypatch, capsys, isolated_dirs):
    import cvaia.commands.train as train_cmd

    def boom(args):
        raise error

    monkeypatch.setattr(train_cmd, "run", boom)
    assert main(["train", "--batch_size", "16"]) == 1
    err = capsys.readouterr().err
    assert f"out of {where}" in err and "--batch_size (now 16)" in err
    assert "--aug_input_crop_size (now 256)" in err and "Traceback" not in err


# ---- training-level cases (tiny runs: 8 images, 64x64 crops, a few seconds each) -------------------
tiny_cfg = partial(tiny_config, log_every=1)


def _poison_after(monkeypatch, step):
    """Make the optimizer's ``step``-th update leave NaN weights (the loss of every step stays
    finite): what a huge learning rate does on its last update of an epoch."""
    import cvaia.train as train_mod

    real = train_mod.build_optimizer

    def build(*args, **kwargs):
        opt = real(*args, **kwargs)
        count = {"n": 0}
        inner = opt.step

        def poisoned(self, *a, **k):
            out = inner(*a, **k)
            count["n"] += 1
            if count["n"] == step:
                with torch.no_grad():
                    next(p for g in self.param_groups for p in g["params"]).fill_(float("nan"))
            return out

        opt.step = types.MethodType(poisoned, opt)  # a bound method, as LambdaLR expects
        return opt

    monkeypatch.setattr(train_mod, "build_optimizer", build)


def test_nan_weights_are_never_checkpointed_and_the_run_is_refused(tiny_root, isolated_dirs, monkeypatch, capsys):
    from cvaia import run_folder as rf
    from cvaia.run_folder import TrainingDiverged
    from cvaia.runs import Run, get_run
    from cvaia.train import train

    cfg = tiny_cfg(tiny_root, num_epochs=2)
    _poison_after(monkeypatch, 4)  # 2 steps per epoch: the last update of epoch 2 (the loss stays finite)
    with pytest.raises(TrainingDiverged, match="weight tensor"):
        train(cfg)
    run_dir = rf.run_dir_for(cfg)
    last = torch.load(rf.checkpoint_path(run_dir, "last"), weights_only=False)
    assert last["epoch"] == 1 and rf.non_finite_tensors(last["model"]) == []  # epoch 1's, intact
    assert rf.has_diverged(run_dir) and len(Run(run_dir).epochs) == 1  # no NaN evaluation row either
    with pytest.raises(TrainingDiverged, match="diverged"):
        Run(run_dir).load_model()
    with pytest.raises(TrainingDiverged):
        get_run(cfg)  # recorded: not retrained, not served
    out = isolated_dirs["runs"].parent / "preds"
    assert main(["predict", "--run", str(run_dir), "--out", str(out)]) == 2
    assert "diverged" in capsys.readouterr().err and not out.exists()


def test_a_non_finite_checkpoint_is_never_written(tmp_path):
    from cvaia import run_folder as rf
    from cvaia.run_folder import TrainingDiverged

    good = {"model": {"w": torch.ones(2)}, "step": 1}
    rf.save_checkpoint(tmp_path, good, is_best=True)
    bad = {"model": {"w": torch.tensor([1.0, float("inf")]), "n": torch.tensor(3)}, "step": 2}
    with pytest.raises(TrainingDiverged, match="not written"):
        rf.save_checkpoint(tmp_path, bad, is_best=False)
    assert torch.load(rf.checkpoint_path(tmp_path, "last"))["step"] == 1


def test_an_old_poisoned_checkpoint_is_refused(tiny_root, isolated_dirs):
    from cvaia import run_folder as rf
    from cvaia.run_folder import TrainingDiverged
    from cvaia.runs import get_run

    run = get_run(tiny_cfg(tiny_root, seed=5), progress=False)
    path = rf.checkpoint_path(run.path, "best")
    ckpt = torch.load(path, weights_only=False)
    ckpt["model"][next(iter(ckpt["model"]))] = torch.full_like(next(iter(ckpt["model"].values())), float("nan"))
    torch.save(ckpt, path)  # what versions before the weight check could leave
    with pytest.raises(TrainingDiverged, match="NaN/inf"):
        run.load_model("best")


def test_data_changed_under_a_finished_run_is_retrained(tmp_path, isolated_dirs, capsys):
    from cvaia import run_folder as rf
    from cvaia.data.synth import generate
    from cvaia.runs import RunNotFoundError, get_run

    root = tmp_path / "d"
    generate(root, height=64, width=128, n_train=8, n_val=4, n_test=4, seed=0, workers=1)
    cfg = tiny_cfg(root)
    first = get_run(cfg, progress=False)
    before = first.meta["dataset_identity"]
    assert get_run(cfg).trained_now is False  # same data: a cache hit
    generate(root, height=64, width=128, n_train=8, n_val=4, n_test=4, seed=7, workers=1, force=True)
    with pytest.raises(RunNotFoundError, match="changed since the run was trained"):
        get_run(cfg, train=False)
    assert main(["train", "--dataset_root", str(root), "--aug_input_crop_size", "64", "--batch_size", "4",
                 "--batch_size_validation", "4", "--num_epochs", "1", "--max_train_images", "8",
                 "--optimizer", "adam", "--optimizer_lr", "1e-3", "--log_every", "1", "--device", "cpu",
                 "--quiet"]) == 0  # the CLI retrains too
    second = get_run(cfg)
    assert second.path == first.path and second.meta["dataset_identity"] != before
    aside = [p for p in first.path.parent.iterdir() if rf.is_set_aside(p)]
    assert len(aside) == 1 and rf.is_finished(aside[0])  # the old run is kept, not overwritten
    assert rf.data_mismatch(second.path, root) is None


def test_real_data_fingerprint(tmp_path, tiny_root):
    import shutil

    from cvaia.data.miniscapes import data_identity, identity_difference

    root = tmp_path / "course"
    shutil.copytree(tiny_root, root)  # copy2: sizes and modification times kept, like `tar -x`
    (root / "meta.json").unlink()  # the course data has no meta.json
    before = data_identity(root)
    assert before["kind"] == "scan" and before["files"]["train/rgb"] == 12
    again = tmp_path / "again"
    shutil.copytree(root, again)
    assert identity_difference(before, data_identity(again)) is None  # re-extracted: the same data
    (root / "val" / "semseg" / "1.png").write_bytes((root / "val" / "semseg" / "2.png").read_bytes())
    assert "replaced" in identity_difference(before, data_identity(root))
    (root / "train" / "rgb" / "11.jpg").unlink()
    assert "train/rgb: 12 -> 11 files" in identity_difference(before, data_identity(root))


# ---- the run store unusable --------------------------------------------------------------------------
TRAIN_ARGS = ["--aug_input_crop_size", "64", "--batch_size", "4", "--batch_size_validation", "4",
              "--num_epochs", "2", "--max_train_images", "8", "--optimizer", "adam", "--optimizer_lr", "1e-3",
              "--device", "cpu", "--quiet"]


def test_run_store_under_a_regular_file(tiny_root, tmp_path, monkeypatch, capsys):
    blocker = tmp_path / "runs"
    blocker.write_text("not a folder")
    monkeypatch.setenv("CVAIA_RUNS_DIR", str(blocker))
    assert main(["train", "--dataset_root", str(tiny_root), *TRAIN_ARGS]) == 1
    err = capsys.readouterr().err
    assert "regular file in the way" in err and str(blocker) in err and "CVAIA_RUNS_DIR / --log_dir" in err
    assert "Traceback" not in err and blocker.read_text() == "not a folder"


def test_disk_full_says_so_and_which_checkpoint_is_intact(tiny_root, isolated_dirs, monkeypatch, capsys):
    import errno

    from cvaia import run_folder as rf

    real, calls = torch.save, {"n": 0}

    def fill_up(obj, f, *a, **k):  # the second checkpoint write finds the disk full
        calls["n"] += 1
        if calls["n"] == 2:
            f.write(b"x" * 10)
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, f, *a, **k)

    monkeypatch.setattr(torch, "save", fill_up)
    assert main(["train", "--dataset_root", str(tiny_root), *TRAIN_ARGS]) == 1
    err = capsys.readouterr().err
    run_dir = next(p for p in isolated_dirs["runs"].iterdir())
    last = rf.checkpoint_path(run_dir, "last")
    assert "no space left" in err and f"the checkpoint {last} is intact" in err and "CVAIA_RUNS_DIR" in err
    assert torch.load(last, weights_only=False)["epoch"] == 1  # epoch 1's checkpoint, loadable
    assert not [p for p in last.parent.iterdir() if p.name.endswith(".tmp")]
    monkeypatch.setattr(torch, "save", real)
    assert main(["train", "--dataset_root", str(tiny_root), *TRAIN_ARGS]) == 0  # space again: resumes
    assert rf.is_finished(run_dir)


def test_read_only_store_serves_a_finished_run_without_a_lock(tiny_root, isolated_dirs, monkeypatch, capsys):
    import errno

    from cvaia import run_folder as rf
    from cvaia.runs import get_run
    from cvaia.train import train

    cfg = tiny_cfg(tiny_root, seed=11)
    run_dir = train(cfg).run_dir
    (run_dir / rf.LOCK_FILE).unlink()

    def read_only(self):
        raise OSError(errno.EROFS, "Read-only file system", str(self.path))

    monkeypatch.setattr(files.FileLock, "acquire", read_only)
    assert train(cfg) == (run_dir, False)  # reading a finished run needs no lock file
    assert get_run(cfg).is_done and not (run_dir / rf.LOCK_FILE).exists()
    with pytest.raises(rf.RunStoreError, match="is not writable.*CVAIA_RUNS_DIR"):
        train(tiny_cfg(tiny_root, seed=12))  # a run that has to be written: the store is named


# ---- small ones ---------------------------------------------------------------------------------------
def test_predict_out_at_a_regular_file(tiny_root, isolated_dirs, tmp_path, capsys):
    from cvaia.runs import get_run

    run = get_run(tiny_cfg(tiny_root, seed=13), progress=False)
    target = tmp_path / "preds.txt"
    target.write_text("mine")
    assert main(["predict", "--run", str(run.path), "--out", str(target), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert "is a file, not a folder" in err and target.read_text() == "mine"


def test_images_smaller_than_32_px_fail_at_start_without_a_stub(tmp_path, isolated_dirs, capsys):
    from cvaia.data.synth import generate

    root = tmp_path / "small"
    generate(root, height=24, width=48, n_train=8, n_val=4, n_test=4, seed=0, workers=1)
    t0 = time.perf_counter()
    rc = main(["train", "--dataset_root", str(root), *TRAIN_ARGS[:2], "--batch_size", "4", "--num_epochs", "1",
               "--device", "cpu", "--quiet"])
    assert rc == 1 and time.perf_counter() - t0 < 30
    err = capsys.readouterr().err
    assert "24x48" in err and "at least 32" in err
    assert not isolated_dirs["runs"].exists() or not any(isolated_dirs["runs"].iterdir())  # no stub folder


def test_batch_of_one_is_a_config_error_without_a_stub(tiny_root, isolated_dirs, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--dataset_root", str(tiny_root), "--batch_size", "1", "--device", "cpu"])
    assert exit_.value.code == 2 and "--batch_size" in capsys.readouterr().err
    assert not isolated_dirs["runs"].exists()


def test_waiting_for_a_run_another_process_trains(tiny_root, isolated_dirs, capsys):
    from cvaia import run_folder as rf
    from cvaia.train import train

    cfg = tiny_cfg(tiny_root, seed=17, quiet=False)
    run_dir = rf.run_dir_for(cfg)
    run_dir.mkdir(parents=True)
    holder = files.FileLock(run_dir / rf.LOCK_FILE).acquire()
    result = {}
    t = threading.Thread(target=lambda: result.update(r=train(cfg, progress=False)))
    t.start()
    time.sleep(1.0)
    holder.release()
    t.join(120)
    out = capsys.readouterr().out
    assert "waiting for the run" in out and f"pid {os.getpid()}" in out
    assert result["r"].trained


def test_ctrl_c_says_how_to_resume(tiny_root, isolated_dirs, monkeypatch, capsys):
    import cvaia.train as train_mod

    real, calls = train_mod._Trainer.train_one_epoch, {"n": 0}

    def interrupted(self, epoch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, epoch)

    monkeypatch.setattr(train_mod._Trainer, "train_one_epoch", interrupted)
    args = ["train", "--dataset_root", str(tiny_root), *TRAIN_ARGS]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "keeps its checkpoint" in err and "after epoch 1" in err and "run the same command again" in err
    monkeypatch.setattr(train_mod._Trainer, "train_one_epoch", real)
    assert main([a for a in args if a != "--quiet"]) == 0
    assert "resuming" in capsys.readouterr().out


def test_ctrl_c_in_the_first_epoch_leaves_nothing(tiny_root, isolated_dirs, monkeypatch, capsys):
    import cvaia.train as train_mod

    def interrupted(self, epoch):
        raise KeyboardInterrupt

    monkeypatch.setattr(train_mod._Trainer, "train_one_epoch", interrupted)
    assert main(["train", "--dataset_root", str(tiny_root), *TRAIN_ARGS]) == 130
    assert "nothing to resume" in capsys.readouterr().err
    assert not any(isolated_dirs["runs"].iterdir())  # no stub run folder


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="address-space limit (RLIMIT_AS) as on Linux")
def test_real_cpu_out_of_memory_is_a_message(tiny_root, tmp_path):
    """A training step that cannot get its memory (a 5 GB address-space limit, 8 crops of 512 px)."""
    import resource

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (5 * 2**30, 5 * 2**30))

    env = dict(os.environ, CVAIA_RUNS_DIR=str(tmp_path / "runs"), OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-m", "cvaia", "train", "--dataset_root", str(tiny_root),
                           "--aug_input_crop_size", "512", "--batch_size", "8", "--num_epochs", "1",
                           "--max_train_images", "8", "--device", "cpu", "--quiet"],
                          env=env, capture_output=True, text=True, timeout=300, preexec_fn=limit)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "out of CPU memory" in proc.stderr and "--batch_size (now 8)" in proc.stderr
    assert "--aug_input_crop_size (now 512)" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())  # no stub folder


# ---- real signals: kill -9 and Ctrl-C (SIGINT) of a training process ------------------------------
def _cli_train(root, store, *extra):
    env = dict(os.environ, CVAIA_RUNS_DIR=str(store), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1",
               PYTHONFAULTHANDLER="1")  # a SIGABRT then dumps every thread's stack (see _communicate)
    args = [sys.executable, "-m", "cvaia", "train", "--dataset_root", str(root), "--aug_input_crop_size", "64",
            "--batch_size", "4", "--batch_size_validation", "4", "--num_epochs", "3", "--max_train_images", "8",
            "--optimizer", "adam", "--optimizer_lr", "1e-3", "--log_every", "1", "--device", "cpu", "--quiet",
            *extra]
    # pytest-xdist workers ignore SIGINT and children inherit ignored signals: give the CLI the
    # default handler a user's terminal gives it
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.default_int_handler))


def _communicate(proc, timeout):
    """``proc.communicate``; a process still running after ``timeout`` s is aborted and the
    assertion shows where each of its threads was (faulthandler)."""
    try:
        return proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        out, err = proc.communicate(timeout=60)
        raise AssertionError(f"the training process did not end within {timeout} s; its stacks:\n{err[-8000:]}") from None


def _wait_for_checkpoint(store, proc, timeout=240):
    """The run folder once its first checkpoint (epoch 1's last.pt) is there."""
    t0 = time.time()
    while time.time() - t0 < timeout:
        found = list(store.glob("*/checkpoints/last.pt"))
        if found:
            return found[0].parent.parent
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError("no checkpoint written in time")


@pytest.mark.slow
@pytest.mark.parametrize("sig", ["SIGKILL", "SIGINT"])
def test_killed_or_interrupted_cli_run_resumes_to_the_same_result(sig, tiny_root, tmp_path):
    import signal

    from cvaia import run_folder as rf
    from cvaia.train import train

    store = tmp_path / "runs"
    proc = _cli_train(tiny_root, store)
    run_dir = _wait_for_checkpoint(store, proc)
    proc.send_signal(getattr(signal, sig))  # somewhere in epoch 2 (or writing its files)
    out, err = _communicate(proc, 120)
    if sig == "SIGINT":
        assert proc.returncode == 130 and "run the same command again to resume" in err and "Traceback" not in err
    else:
        assert proc.returncode == -9
    again = _cli_train(tiny_root, store)
    out, err = _communicate(again, 300)
    assert again.returncode == 0, err[-2000:]
    assert rf.is_finished(run_dir) and not list(run_dir.rglob("*.tmp"))  # no temp file of the killed writer
    whole = train(tiny_cfg(tiny_root, num_epochs=3), tmp_path / "whole").run_dir
    a = torch.load(rf.checkpoint_path(whole, "last"), weights_only=False)["model"]
    b = torch.load(rf.checkpoint_path(run_dir, "last"), weights_only=False)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())  # bit-identical to never stopping


def test_a_ctrl_c_waits_until_the_checkpoint_is_written(tmp_path):
    """SIGINT during a checkpoint write: the file is completed, then KeyboardInterrupt (torch
    would otherwise report the interrupted write as a short write, i.e. a disk problem)."""
    from cvaia.files import atomic_torch_save, sigint_deferred

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # xdist workers ignore SIGINT
    try:
        with pytest.raises(KeyboardInterrupt):
            with sigint_deferred():
                os.kill(os.getpid(), signal.SIGINT)
                time.sleep(0.05)  # the handler runs here: only recorded
                atomic_torch_save({"w": torch.arange(10)}, tmp_path / "a.pt")
                done = True
        assert done and torch.equal(torch.load(tmp_path / "a.pt")["w"], torch.arange(10))
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # restored
        with sigint_deferred():  # nothing caught: nothing raised
            atomic_torch_save({"w": 1}, tmp_path / "b.pt")
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        with sigint_deferred():  # SIGINT ignored (as in an xdist worker): a no-op
            assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)


# ---- files a user received (issue 17): checkpoints never run code ------------------------------------
class _Payload:
    """What a malicious ``.pt`` holds: unpickling it calls ``os.system`` (touching a marker)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Stop(RuntimeError):
    pass


def _stop_after_first(row):
    if row["epoch"] >= 1:
        raise _Stop


@pytest.fixture(scope="module")
def received(tiny_root, tmp_path_factory):
    """A run of the CLI config ``TRAIN_ARGS`` (2 epochs) stopped after epoch 1 (``unfinished``:
    resumable last.pt) and the same run finished (``finished``: slim checkpoints)."""
    import shutil

    from cvaia.train import train

    base = tmp_path_factory.mktemp("received")
    cfg = tiny_config(tiny_root, num_epochs=2)
    unfinished = base / "unfinished"
    with pytest.raises(_Stop):
        train(cfg, unfinished, progress=_stop_after_first)
    finished = base / "finished"
    shutil.copytree(unfinished, finished)
    train(cfg, finished, progress=False)
    return {"cfg": cfg, "unfinished": unfinished, "finished": finished}


def _copy_run(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def _plant(path, payload):
    """Replace ``path`` (a new file: a hard-linked twin keeps its content) with ``payload``'s bytes."""
    path.unlink(missing_ok=True)
    torch.save(payload, path)


def _train_cli(root, *extra):
    return ["train", "--dataset_root", str(root), *TRAIN_ARGS, *extra]


def _case_predict(env):
    _plant(env["run"] / "checkpoints" / "best.pt", env["payload"])
    assert main(["predict", "--run", str(env["run"]), "--out", str(env["tmp"] / "preds"), "--device", "cpu"]) == 2
    return env["capsys"].readouterr().err


def _case_load_model(env):
    from cvaia.runs import Run

    _plant(env["run"] / "checkpoints" / "best.pt", env["payload"])
    with pytest.raises(Exception) as err:
        Run(env["run"]).load_model("best")
    return str(err.value)


def _case_load_checkpoint(env):
    from cvaia.runs import Run

    _plant(env["run"] / "checkpoints" / "last.pt", env["payload"])
    with pytest.raises(Exception) as err:
        Run(env["run"]).load_checkpoint("last")
    return str(err.value)


def _case_slim(env):
    from cvaia import run_folder as rf

    _plant(env["run"] / "checkpoints" / "last.pt", env["payload"])
    with pytest.raises(Exception) as err:
        rf.slim_checkpoints(env["run"])
    return str(err.value)


def _case_resume(env):
    from cvaia import run_folder as rf

    run = _copy_run(env["unfinished"], rf.run_dir_for(env["cfg"]))  # a killed run of the store, as received
    _plant(run / "checkpoints" / "last.pt", env["payload"])
    assert main(_train_cli(env["root"])) == 1
    return env["capsys"].readouterr().err


def _case_resume_path(env):
    path = env["tmp"] / "classmate.pt"
    _plant(path, env["payload"])
    with pytest.raises(SystemExit) as exit_:
        main(_train_cli(env["root"], "--resume", str(path)))  # refused before any other check
    assert exit_.value.code == 2
    return env["capsys"].readouterr().err


def _case_pretrained(env):
    path = env["tmp"] / "encoder.pt"
    _plant(path, env["payload"])
    with pytest.raises(BaseException) as err:
        main(_train_cli(env["root"], "--pretrained", str(path)))
    return str(err.value) + env["capsys"].readouterr().err


PAYLOAD_CASES = {"predict": _case_predict, "load_model": _case_load_model, "load_checkpoint": _case_load_checkpoint,
                 "slim_checkpoints": _case_slim, "resume": _case_resume, "resume_path": _case_resume_path,
                 "pretrained": _case_pretrained}


@pytest.mark.parametrize("case", list(PAYLOAD_CASES))
def test_a_checkpoint_with_a_pickled_payload_runs_nothing(case, received, tiny_root, isolated_dirs, tmp_path,
                                                         capsys):
    from cvaia.models import build_model

    marker = tmp_path / "payload-ran"
    model = build_model(received["cfg"].replace(pretrained="random")).state_dict()
    payload = {"model": model, "config": received["cfg"].to_dict(), "epoch": 1, "step": 2, "extra": _Payload(marker)}
    run = _copy_run(received["finished"], tmp_path / "their-run")
    env = {"payload": payload, "run": run, "tmp": tmp_path, "root": tiny_root, "cfg": received["cfg"],
           "unfinished": received["unfinished"], "capsys": capsys}
    try:
        message = PAYLOAD_CASES[case](env)
    finally:  # checked first: a run payload is the failure, whatever happened next
        assert not marker.exists(), f"{case}: loading the file ran its payload"
    if case != "pretrained":  # (--pretrained has its own message: "could not be read as a torch checkpoint")
        assert "holds a pickled object of type posix.system" in message and "tensors only" in message, message
    assert "Traceback" not in message


def test_new_checkpoints_hold_only_what_weights_only_accepts(received):
    from cvaia import run_folder as rf

    for run, which in ((received["unfinished"], "last"), (received["finished"], "best")):
        ckpt = torch.load(rf.checkpoint_path(run, which), weights_only=True)  # no safe globals registered
        assert ckpt["model"]
    rng = torch.load(rf.checkpoint_path(received["unfinished"], "last"), weights_only=True)["rng"]
    assert isinstance(rng["numpy"][1], torch.Tensor) and isinstance(rng["python"], tuple)


def test_a_checkpoint_of_an_earlier_version_still_resumes(received, tiny_root, isolated_dirs):
    """Earlier versions saved the NumPy RNG state as a pickled ndarray: read safely, resumed exactly."""
    import numpy as np

    from cvaia import run_folder as rf
    from cvaia.train import train

    run = _copy_run(received["unfinished"], rf.run_dir_for(received["cfg"]))
    last = rf.checkpoint_path(run, "last")
    ckpt = torch.load(last, weights_only=True)
    for state in [ckpt["rng"], *ckpt["rng_ranks"]]:
        kind, keys, *rest = state["numpy"]
        if isinstance(keys, torch.Tensor):  # (rng and rng_ranks[0] are one object)
            state["numpy"] = (kind, keys.numpy().astype(np.uint32), *rest)  # np.random.get_state() as it was
    _plant(last, ckpt)
    with pytest.raises(__import__("pickle").UnpicklingError):
        torch.load(last, weights_only=True)  # the old form: an ndarray inside
    assert train(received["cfg"]).trained
    a = torch.load(rf.checkpoint_path(received["finished"], "last"), weights_only=True)["model"]
    b = torch.load(rf.checkpoint_path(run, "last"), weights_only=True)["model"]
    assert all(torch.equal(v, b[k]) for k, v in a.items())  # the same RNG streams: bit-identical


# ---- broken checkpoints: one line, and the way forward ----------------------------------------------
def _truncate(path):
    data = path.read_bytes()
    path.unlink()  # a new file: a hard-linked twin (best.pt) stays intact
    path.write_bytes(data[: len(data) // 2])


def test_predict_with_a_truncated_checkpoint_names_it_and_the_remedy(received, isolated_dirs, tmp_path, capsys):
    from cvaia import run_folder as rf

    run = _copy_run(received["finished"], tmp_path / "run")
    _truncate(rf.checkpoint_path(run, "best"))
    assert main(["predict", "--run", str(run), "--out", str(tmp_path / "p"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{rf.checkpoint_path(run, 'best')}: truncated or corrupt" in err and "--force" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_resume_with_a_truncated_last_falls_back_to_the_newest_intact(received, tiny_root, isolated_dirs, capsys):
    from cvaia import run_folder as rf

    run = _copy_run(received["unfinished"], rf.run_dir_for(received["cfg"]))
    _truncate(rf.checkpoint_path(run, "last"))  # best.pt (epoch 1) intact
    assert main([a for a in _train_cli(tiny_root) if a != "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "truncated or corrupt" in out and "resuming from the newest intact checkpoint" in out
    assert rf.is_finished(run)


def test_resume_with_no_intact_checkpoint_says_restart(received, tiny_root, isolated_dirs, capsys):
    from cvaia import run_folder as rf

    run = _copy_run(received["unfinished"], rf.run_dir_for(received["cfg"]))
    _truncate(rf.checkpoint_path(run, "last"))
    _truncate(rf.checkpoint_path(run, "best"))
    assert main(_train_cli(tiny_root)) == 1
    err = capsys.readouterr().err
    assert str(rf.checkpoint_path(run, "last")) in err and "--restart" in err and "Traceback" not in err
    assert main(_train_cli(tiny_root, "--restart")) == 0  # the remedy works; the broken folder is kept aside
    assert rf.is_finished(run) and any(rf.is_set_aside(p) for p in run.parent.iterdir())


# ---- predictions never replace a data set, never mix two writers ----------------------------------
def _tree_digest(folder):
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("where", ["val", "test", "root", "root/extra"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_predict_into_a_data_set_is_refused(where, overwrite, received, tiny_root, tmp_path, capsys):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_root, root)
    before = _tree_digest(root)
    out = root / where.removeprefix("root").lstrip("/") if where.startswith("root") else root / where
    args = ["predict", "--run", str(received["finished"]), "--dataset_root", str(root), "--split", "val",
            "--out", str(out), "--device", "cpu"] + (["--overwrite"] if overwrite else [])
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "ground truth" in err and "outside any data set" in err and str(root) in err
    assert "already holds predictions" not in err  # ground truth is never called "predictions"
    assert _tree_digest(root) == before  # not a byte of the set changed


def test_a_second_predict_into_the_same_folder_is_refused(received, tmp_path, capsys):
    from cvaia import grader

    out = tmp_path / "preds"
    out.mkdir()
    first = files.FileLock(out / grader.PREDICT_LOCK).acquire()  # another predict writing there now
    try:
        assert main(["predict", "--run", str(received["finished"]), "--split", "val", "--out", str(out),
                     "--device", "cpu", "--overwrite"]) == 2
    finally:
        first.release()
    err = capsys.readouterr().err
    assert "another predict" in err and f"pid {os.getpid()}" in err
    assert not (out / "semseg").exists() and not (out / "depth").exists()


def test_predictions_appear_only_complete(received, tmp_path, monkeypatch, capsys):
    """A predict that fails half-way (here: the 3rd depth file) leaves the old predictions as
    they were, not a mixture of two models, and no temporary folder."""
    from cvaia import grader

    out = tmp_path / "preds"
    base = ["predict", "--run", str(received["finished"]), "--split", "val", "--out", str(out), "--device", "cpu"]
    assert main(base) == 0
    before = _tree_digest(out)
    real, calls = grader.write_depth_png, {"n": 0}

    def fail_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(grader, "write_depth_png", fail_third)
    with pytest.raises(OSError):
        main([*base, "--overwrite", "--checkpoint", "last", "--tta_flip"])
    assert _tree_digest(out) == before
    assert not [p for p in out.iterdir() if p.name.startswith(grader.PARTIAL_PREFIX)]
    monkeypatch.setattr(grader, "write_depth_png", real)
    assert main([*base, "--overwrite", "--tta_flip"]) == 0 and sorted(_tree_digest(out)) == sorted(before)


def test_files_cvaia_writes_get_the_umask_permissions(received, tmp_path):
    import stat

    import matplotlib.pyplot as plt

    from cvaia import plots

    old = os.umask(0o022)
    try:
        fig, ax = plt.subplots()
        ax.plot([0, 1])
        written = plots.save(fig, "perm_check", tmp_path / "figs")
        plt.close(fig)
        files.atomic_write_json(tmp_path / "a.json", {"x": 1})
        files.atomic_torch_save({"w": torch.zeros(1)}, tmp_path / "w.pt")
        files.atomic_save_npy(tmp_path / "c.npy", torch.zeros(2).numpy())
        assert main(["predict", "--run", str(received["finished"]), "--split", "val", "--out",
                     str(tmp_path / "preds"), "--device", "cpu"]) == 0
    finally:
        os.umask(old)
    written_files = [*written, tmp_path / "a.json", tmp_path / "w.pt", tmp_path / "c.npy",
             *sorted((tmp_path / "preds").rglob("*.png"))]
    modes = {str(p.relative_to(tmp_path)): oct(stat.S_IMODE(p.stat().st_mode)) for p in written_files}
    assert set(modes.values()) == {"0o644"}, modes


# ---- a generated set edited by hand is another data set ----------------------------------------------
@pytest.fixture()
def edited(tmp_path, isolated_dirs):
    """A generated set (with meta.json) and its finished run."""
    from cvaia.data.synth import generate
    from cvaia.runs import get_run

    root = tmp_path / "gen"
    generate(root, height=64, width=128, n_train=8, n_val=4, n_test=4, seed=0, workers=1)
    cfg = tiny_cfg(root)
    run = get_run(cfg, progress=False)
    return root, cfg, run


@pytest.mark.parametrize("edit", ["replaced", "added", "removed"])
def test_a_hand_edited_generated_set_is_not_served(edit, edited):
    from cvaia.runs import RunNotFoundError, get_run

    root, cfg, run = edited
    assert get_run(cfg, train=False) == run  # unedited: served
    val = root / "val" / "semseg"
    if edit == "replaced":
        (val / "1.png").write_bytes((val / "2.png").read_bytes())  # meta.json stays as it was
    elif edit == "added":
        (root / "train" / "rgb" / "8.jpg").write_bytes((root / "train" / "rgb" / "0.jpg").read_bytes())
    else:
        (root / "test" / "depth" / "3.png").unlink()
    expected = {"replaced": "val/semseg: files replaced or edited", "added": "train/rgb: 8 -> 9 files",
                "removed": "test/depth: 4 -> 3 files"}[edit]
    with pytest.raises(RunNotFoundError, match=expected):
        get_run(cfg, train=False)


def test_verify_data_compares_contents(edited, capsys):
    from cvaia.runs import RunNotFoundError, get_run

    root, cfg, run = edited
    path = root / "val" / "rgb" / "1.jpg"
    st = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01  # same size, same modification time: invisible to the scan
    path.write_bytes(bytes(data))
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert get_run(cfg, train=False) == run
    with pytest.raises(RunNotFoundError, match="contents differ"):
        get_run(cfg, train=False, verify_data=True)
    args = ["train", "--dataset_root", str(root), "--aug_input_crop_size", "64", "--batch_size", "4",
            "--batch_size_validation", "4", "--num_epochs", "1", "--max_train_images", "8", "--optimizer", "adam",
            "--optimizer_lr", "1e-3", "--log_every", "1", "--device", "cpu"]
    assert main([*args, "--quiet"]) == 0 and "run already finished" in capsys.readouterr().out
    assert main([*args, "--verify_data"]) == 0
    assert "contents differ" in capsys.readouterr().out  # retrained, the old run kept aside


def test_runs_of_earlier_versions_keep_being_served(edited, tmp_path):
    """Identity records of earlier versions (meta.json alone; a sample of 16 files per folder)
    are compared as they were made: an upgrade retrains nothing."""
    import hashlib
    import json
    import shutil

    from cvaia import run_folder as rf
    from cvaia.data.miniscapes import MODALITIES, SPLITS
    from cvaia.runs import get_run

    root, cfg, run = edited
    meta_file = run.path / rf.CONFIG_FILE
    meta = json.loads(meta_file.read_text())
    meta["dataset_identity"] = {"kind": "meta", "sha256": hashlib.sha256((root / "meta.json").read_bytes()).hexdigest()}
    meta_file.write_text(json.dumps(meta))
    assert get_run(cfg, train=False).trained_now is False

    course = tmp_path / "course"  # no meta.json: the old sampled fingerprint, computed as it was
    shutil.copytree(root, course)
    (course / "meta.json").unlink()
    h, counts = hashlib.sha256(), {}
    for split in SPLITS:
        for modality in MODALITIES:
            names = sorted(e.name for e in os.scandir(course / split / modality) if not e.name.startswith("."))
            counts[f"{split}/{modality}"] = len(names)
            for name in names[::max(1, len(names) // 16)][:16]:
                st = (course / split / modality / name).stat()
                h.update(f"{split}/{modality}/{name}:{st.st_size}:{st.st_mtime_ns}\n".encode())
    h.update(repr(sorted(counts.items())).encode())
    old = {"kind": "files", "sha256": h.hexdigest(), "files": counts}
    meta["dataset_identity"] = old
    meta_file.write_text(json.dumps(meta))
    assert rf.data_mismatch(run.path, course) is None
    (course / "val" / "rgb" / "0.jpg").unlink()
    assert "val/rgb: 4 -> 3 files" in rf.data_mismatch(run.path, course)


# ---- score reads regular files only --------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="named pipes")
def test_score_refuses_a_fifo_among_the_predictions(received, tiny_root, tmp_path, capsys):
    out = tmp_path / "preds"
    assert main(["predict", "--run", str(received["finished"]), "--split", "val", "--out", str(out),
                 "--device", "cpu"]) == 0
    (out / "semseg" / "0.png").unlink()
    os.mkfifo(out / "semseg" / "0.png")  # today: score opens it and waits forever
    (out / "depth" / "2.png").unlink()
    (out / "depth" / "2.png").mkdir()
    proc = subprocess.run([sys.executable, "-m", "cvaia", "score", "--dataset_root", str(tiny_root), "--split", "val",
                           "--predictions", str(out)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "0.png (a named pipe (FIFO))" in proc.stderr and "regular files" in proc.stderr
    assert "Traceback" not in proc.stderr


# ---- a hand-edited config.json: the file and the key ------------------------------------------------
CONFIG_EDITS = {
    "extra key": (lambda m: m["config"].update(bogus_key=3), "key config.bogus_key is not a config field"),
    "wrong type": (lambda m: m["config"].update(batch_size="eight"), "key config.batch_size = 'eight' is not valid"),
    "out of range": (lambda m: m["config"].update(optimizer="sgdd"), "key config.optimizer = 'sgdd' is not valid"),
    "no config": (lambda m: m.pop("config"), "expected a JSON object with a 'config' object"),
    "bad JSON": (None, "not valid JSON"),
}


def _edit_config(run, edit):
    import json

    path = run / "config.json"
    if edit is None:
        path.write_text(path.read_text()[:-40])  # cut short
        return
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))


@pytest.mark.parametrize("case", list(CONFIG_EDITS))
def test_a_hand_edited_config_json_names_the_file_and_the_key(case, received, tmp_path, capsys):
    from cvaia.runs import Run, results_table

    edit, expected = CONFIG_EDITS[case]
    good = _copy_run(received["finished"], tmp_path / "good-run")
    bad = _copy_run(received["finished"], tmp_path / "bad-run")
    _edit_config(bad, edit)
    assert main(["predict", "--run", str(bad), "--out", str(tmp_path / "p"), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert f"{bad / 'config.json'}: " in err and expected in err and "Traceback" not in err and "usage:" not in err
    with pytest.warns(UserWarning, match=f"left out 1 unreadable run folder.*{bad.name}.*{expected}"):
        table = results_table([Run(good), Run(bad)])
    assert list(table["run"]) == ["good-run"]  # the others are listed


def test_a_config_json_missing_a_key_takes_the_default_and_says_so(received, tmp_path):
    from cvaia.errors import ConfigNotice
    from cvaia.runs import Run

    run = _copy_run(received["finished"], tmp_path / "old-run")
    _edit_config(run, lambda m: m["config"].pop("tta_flip", None) or m["config"].pop("grad_clip"))
    with pytest.warns(ConfigNotice, match=r"config.json: config key\(s\) .* missing; taken as their defaults"):
        assert Run(run).config == received["cfg"]


# ---- a sweep with one diverging config goes on ------------------------------------------------------
def test_a_sweep_with_a_diverging_config_goes_on(tiny_root, isolated_dirs, capsys):
    from cvaia import run_folder as rf

    args = ["sweep", "--dataset_root", str(tiny_root), "--aug_input_crop_size", "64", "--batch_size", "4",
            "--batch_size_validation", "4", "--num_epochs", "1", "--max_train_images", "8", "--max_val_images", "2",
            "--optimizer", "sgd", "--log_every", "1", "--device", "cpu", "--quiet",
            "--grid", "optimizer_lr=1e30,1e-2,1e-3"]
    assert main(args) == 1  # the exit status: one config diverged
    out, err = capsys.readouterr()
    lines = out.strip().splitlines()
    assert len(lines) == 4 and "status" in lines[0]  # header + one row per config
    assert "diverged at step" in lines[1] and "done" in lines[2] and "done" in lines[3]
    assert "1 of 3 config(s) diverged" in err and "Traceback" not in err
    dirs = sorted(p for p in isolated_dirs["runs"].iterdir())
    assert sum(rf.is_finished(p) for p in dirs) == 2 and sum(rf.has_diverged(p) for p in dirs) == 1
    assert main(args) == 1  # submitted again: the divergence is reported, nothing retrains
    out, err = capsys.readouterr()
    assert "diverged at step" in out and "1 of 3 config(s) diverged" in err
    assert sorted(p for p in isolated_dirs["runs"].iterdir()) == dirs  # no folder moved aside


def test_a_failed_sweep_job_says_what_resubmitting_does(tmp_path, monkeypatch):
    from cvaia import cluster
    from cvaia import run_folder as rf

    class Failed:
        job_id = "7"

        def results(self):
            raise RuntimeError("the job was killed")

    cfgs = [tiny_config(tmp_path, seed=s) for s in (1, 2, 3)]
    monkeypatch.setenv("CVAIA_RUNS_DIR", str(tmp_path / "runs"))
    killed, stub, bad = (rf.run_dir_for(c) for c in cfgs)
    rf.checkpoint_path(killed, "last").parent.mkdir(parents=True)
    rf.checkpoint_path(killed, "last").write_bytes(b"x")
    stub.mkdir(parents=True)
    bad.mkdir(parents=True)
    (bad / rf.DIVERGED_FILE).write_text('{"message": "nan", "step": 3}')
    jobs = cluster.SweepJobs(cluster.executor_from_name("local"), cfgs, {})
    jobs.jobs = {c.config_hash(): Failed() for c in cfgs}
    with pytest.raises(cluster.SweepError) as info:
        jobs.wait()
    text = str(info.value)
    assert f"{killed.name} (resumes from its last checkpoint when the sweep is submitted again)" in text
    assert f"{stub.name} (no checkpoint yet: starts afresh" in text
    assert f"{bad.name} (diverged: recorded, not retrained" in text


# ---- relative CVAIA_* folders mean one place for the workbook and its notebooks ----------------------
def test_relative_location_variables_reach_the_notebooks_absolute(tmp_path, monkeypatch):
    import papermill

    from cvaia import workbook

    monkeypatch.chdir(tmp_path)  # where the command was started
    for var, rel in (("CVAIA_RUNS_DIR", "my-runs"), ("CVAIA_FIGURES_DIR", "figs"), ("CVAIA_DATA_DIR", "data")):
        monkeypatch.setenv(var, rel)
    seen = {}

    def execute(source, output, **kwargs):
        seen.update({v: os.environ[v] for v in ("CVAIA_RUNS_DIR", "CVAIA_FIGURES_DIR", "CVAIA_DATA_DIR")},
                    cwd=kwargs["cwd"])

    monkeypatch.setattr(papermill, "execute_notebook", execute)
    source = tmp_path / "notebooks" / "00_x.ipynb"
    source.parent.mkdir()
    source.write_text("{}")
    workbook.execute_notebook(source, tmp_path / "out" / "00_x.ipynb", {}, headlines_dir=tmp_path / "h")
    assert seen == {"CVAIA_RUNS_DIR": str(tmp_path / "my-runs"), "CVAIA_FIGURES_DIR": str(tmp_path / "figs"),
                    "CVAIA_DATA_DIR": str(tmp_path / "data"), "cwd": str(source.parent)}
    assert os.environ["CVAIA_RUNS_DIR"] == "my-runs"  # this process's own setting is left as it was


# ---- a --name longer than the file system allows -----------------------------------------------------
def test_a_name_too_long_for_the_file_system_is_shortened_with_its_hash(tiny_root, isolated_dirs, capsys):
    from cvaia import run_folder as rf
    from cvaia.runs import get_run

    long = "ablation_" + "é" * 150 + "_end"  # 313 bytes in UTF-8
    assert main(["train", "--dataset_root", str(tiny_root), *TRAIN_ARGS, "--num_epochs", "1", "--name", long]) == 0
    (run_dir,) = [p for p in isolated_dirs["runs"].iterdir()]
    cfg = tiny_config(tiny_root, name=long)
    assert len(run_dir.name.encode()) <= rf.name_max(run_dir.parent) - rf.SET_ASIDE_ROOM
    assert run_dir.name.startswith("ablation_") and run_dir.name.endswith(f"-{cfg.config_hash()}")
    assert get_run(cfg).path == run_dir and get_run(cfg).trained_now is False  # found again
    other = rf.run_name(cfg.replace(name=long + "2"))
    assert other != run_dir.name  # two long names that start alike stay two folders
    assert rf.run_name(tiny_config(tiny_root, name="short")) == f"short-{tiny_config(tiny_root).config_hash()}"
