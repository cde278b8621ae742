"""Every bad input or broken environment ends in a clear message, and nothing poisoned is kept.

The cases of the reliability probe (issue 11): temporary files of killed writers, a process
waiting on a run lock, out of memory, the run store unusable (a file in the way, disk full,
read-only), diverged runs, data that changed under a cached run, images too small, stub folders
of failed attempts, Ctrl-C.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
import torch

from cvaia import utils
from cvaia.__main__ import main


# ---- temporary files of killed writers --------------------------------------------------------------
def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_temp_file_of_a_killed_writer_is_removed_by_the_next_write(tmp_path):
    target = tmp_path / "last.pt"
    dead = tmp_path / f".last.pt.{_dead_pid()}@{utils._host()}.abc123.tmp"
    dead.write_bytes(b"x" * 1000)  # what `kill -9` during torch.save leaves behind
    alive = tmp_path / f".last.pt.{os.getpid()}@{utils._host()}.def456.tmp"
    alive.write_bytes(b"y")  # a writer that is still running: never touched
    other_host = tmp_path / f".last.pt.{_dead_pid()}@some-other-node.ghi789.tmp"
    other_host.write_bytes(b"z")  # a writer on another machine sharing the store: unknown, kept
    old_untagged = tmp_path / ".last.pt.qwerty.tmp"
    old_untagged.write_bytes(b"w")  # left by an older cvaia
    past = time.time() - 2 * utils.UNTAGGED_TEMP_MAX_AGE_S
    os.utime(old_untagged, (past, past))
    utils.atomic_torch_save({"w": torch.zeros(2)}, target)
    assert torch.load(target)["w"].shape == (2,)
    assert not dead.exists() and not old_untagged.exists()
    assert alive.exists() and other_host.exists()
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert sorted(leftovers) == sorted([alive.name, other_host.name])  # the write left no temp of its own


def test_a_killed_writer_leaves_a_temp_that_the_next_start_cleans(tmp_path):
    target = tmp_path / "big.pt"
    code = ("import sys, os, torch\nfrom cvaia import utils\n"
            "class Stop:\n"
            "    def __reduce__(self):\n"
            "        os.kill(os.getpid(), 9)\n"
            f"utils.atomic_torch_save({{'a': torch.zeros(100000), 'b': Stop()}}, {str(target)!r})\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert proc.returncode == -9
    temps = [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and not target.exists()  # killed mid-write: only the temp is there
    utils.atomic_torch_save({"a": torch.ones(1)}, target)
    assert [p.name for p in tmp_path.iterdir()] == ["big.pt"]


def test_failed_write_names_the_file(tmp_path, monkeypatch):
    import errno

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match="No space left") as err:
        utils.atomic_torch_save({}, tmp_path / "c.pt")
    assert err.value.filename == str(tmp_path / "c.pt") and err.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []


# ---- a process waiting on a run lock says so -----------------------------------------------------------
def test_waiting_for_a_lock_says_for_whom(tmp_path):
    path = tmp_path / ".lock"
    first = utils.FileLock(path).acquire()
    waits = []
    second = utils.FileLock(path, on_wait=waits.append)
    t = threading.Thread(target=second.acquire)
    t.start()
    time.sleep(0.3)
    assert t.is_alive() and waits == [f"pid {os.getpid()} on {__import__('socket').gethostname()}"]
    first.release()
    t.join(5)
    assert second.locked
    second.release()
    third = utils.FileLock(path, on_wait=waits.append).acquire()  # free: no wait, no message
    assert len(waits) == 1
    third.release()


# ---- out of memory ---------------------------------------------------------------------------------
def test_out_of_memory_is_recognised():
    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:117] data. DefaultCPUAllocator: can't allocate memory: "
                       "you tried to allocate 123456789 bytes. Error code 12 (Cannot allocate memory)")
    assert utils.out_of_memory(cpu) == "CPU memory"
    assert utils.out_of_memory(MemoryError()) == "CPU memory"
    assert utils.out_of_memory(torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")) == "GPU memory"
    assert utils.out_of_memory(RuntimeError("shape mismatch")) is None


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
