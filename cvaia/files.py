"""The run store's file I/O: a file is either whole or absent, a Ctrl-C never cuts a write.

- :func:`atomic_write_text`, :func:`atomic_write_json`, :func:`atomic_torch_save`,
  :func:`atomic_save_npy`, :func:`atomic_write_bytes`, :func:`atomic_open`,
  :func:`atomic_link_or_copy`: write to a temporary file next to the target, then ``os.replace``,
  so a reader (or a killed writer) never sees half a file. A temporary file is named after
  its writer (``.<name>.<pid>@<host>.<random>.tmp``): the next write of the same target
  removes those of writers that are gone (``kill -9``), so none stays forever
  (:func:`remove_stale_temps`).
- :func:`sigint_deferred`: a Ctrl-C waits until the block (a checkpoint write) is done.
- :func:`read_json`: read a JSON file, naming the file when it is not valid JSON.
- :class:`FileLock`: an exclusive ``fcntl.flock`` lock on a file (``<run>/.lock``); who holds
  it is written into the file, and a waiting process is told (``on_wait``).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import socket
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch


# ---- atomic writes ------------------------------------------------------------------------------
def _file_mode() -> int:
    """Permissions of a newly created file under the current umask (mkstemp makes 0600)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask



def _host() -> str:
    """This machine's name, reduced to characters safe in a file name."""
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"



def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True



#: A temporary file of an untagged (older) writer is stale after this many seconds.
UNTAGGED_TEMP_MAX_AGE_S = 3600.0



def _temp_prefix(target: Path) -> str:
    return f".{target.name}."



def remove_stale_temps(target: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of ``target`` left by writers that died (``kill -9``, power
    loss): those tagged with a process of this machine that no longer exists, and untagged
    ones older than :data:`UNTAGGED_TEMP_MAX_AGE_S`. Returns what was removed."""
    target = Path(target)
    prefix, host, removed = _temp_prefix(target), _host(), []
    try:
        entries = list(os.scandir(target.parent))
    except OSError:
        return removed
    for e in entries:
        if not (e.name.startswith(prefix) and e.name.endswith(".tmp")):
            continue
        middle = e.name[len(prefix):-len(".tmp")]
        tag = middle.rpartition(".")[0]
        pid, _, where = tag.partition("@")
        if pid.isdigit() and where:
            stale = where == host and not pid_alive(int(pid))
        else:
            try:
                stale = time.time() - e.stat().st_mtime > UNTAGGED_TEMP_MAX_AGE_S
            except OSError:
                stale = False
        if stale:
            with contextlib.suppress(OSError):
                os.unlink(e.path)
                removed.append(Path(e.path))
    return removed



def _mkstemp_for(target: Path) -> tuple[int, str]:
    """A temporary file next to ``target``, named after this writer (see :func:`remove_stale_temps`)."""
    remove_stale_temps(target)
    return tempfile.mkstemp(prefix=f"{_temp_prefix(target)}{os.getpid()}@{_host()}.", suffix=".tmp",
                            dir=target.parent)



@contextlib.contextmanager
def _atomic_target(path: str | os.PathLike, mode: str = "wb"):
    """Open a temporary file next to ``path``; on success fsync and ``os.replace`` it.

    An ``OSError`` that names no file (a failed write: "No space left on device") is raised
    again naming ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = _mkstemp_for(path)
    try:
        os.chmod(tmp, _file_mode())
        with os.fdopen(fd, mode) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from exc
        raise



def atomic_open(path: str | os.PathLike, mode: str = "wb"):
    """A context manager giving a file object that writes ``path`` atomically: the file appears
    (complete) only when the block ends without an error."""
    return _atomic_target(path, mode)



def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with _atomic_target(path, "wb") as fh:
        fh.write(data)



def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))



def _json_default(obj):
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")



def _clean_floats(obj):
    """NaN/inf → None so that the JSON stays standard."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean_floats(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean_floats(v) for v in obj]
    return obj



def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON atomically (NaN/inf become ``null``)."""
    text = json.dumps(_clean_floats(obj), indent=2, sort_keys=False, default=_json_default)
    atomic_write_text(path, text + "\n")



@contextlib.contextmanager
def sigint_deferred():
    """Hold a Ctrl-C (SIGINT) back until the block is done, then raise its ``KeyboardInterrupt``.

    A checkpoint write is never cut in the middle: torch's zip writer turns an interrupt in
    its write callback into a misleading "unexpected pos" error, and the run folder's files
    of one epoch are written together. A no-op outside the main thread, inside another
    deferred block, or where SIGINT is not Python's default handler (ignored, or the caller's).
    """
    import signal

    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught:
        raise KeyboardInterrupt



#: torch's messages when its zip writer lost bytes (a short write: a full disk or quota).
_SHORT_WRITE = ("unexpected pos", "PytorchStreamWriter failed")



def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically; a Ctrl-C waits until the file is written
    (:func:`sigint_deferred`).

    torch reports a write that a full disk cut short as ``RuntimeError: [enforce fail at
    inline_container.cc] unexpected pos``; that is raised as ``OSError(ENOSPC)`` naming
    ``path`` and the free space left (``EIO`` when the device still has room, e.g. a quota).
    """
    import errno
    import shutil

    with sigint_deferred(), _atomic_target(path, "wb") as fh:
        try:
            torch.save(obj, fh)
        except RuntimeError as exc:
            if not any(s in str(exc) for s in _SHORT_WRITE):
                raise
            free = shutil.disk_usage(Path(path).parent).free
            written = os.fstat(fh.fileno()).st_size
            if free < max(written, 64 * 2**20):
                raise OSError(errno.ENOSPC, f"No space left on device ({free / 2**20:.0f} MiB free after "
                                            f"{written / 2**20:.0f} MiB written)", str(path)) from exc
            raise OSError(errno.EIO, f"the write was cut short ({exc}; a disk quota?)", str(path)) from exc



def atomic_link_or_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Make ``dst`` an atomic duplicate of ``src``: a hard link when the file system allows
    it (no second write of a large checkpoint), else a copy. Replacing ``src`` later (always
    with ``os.replace``, i.e. a new file) leaves ``dst`` unchanged."""
    import shutil

    src, dst = Path(src), Path(dst)
    fd, tmp = _mkstemp_for(dst)
    os.close(fd)
    try:
        os.unlink(tmp)
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise



def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """``np.save`` to ``path`` atomically."""
    with _atomic_target(path, "wb") as fh:
        np.save(fh, np.asarray(array))



def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file, naming the file when it is not valid JSON."""
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from None



# ---- locks --------------------------------------------------------------------------------------
class FileLock:
    """Exclusive lock on ``path`` with ``fcntl.flock`` (a context manager).

    The lock file is created if needed and never deleted. If the file was moved away while
    we waited (a run folder set aside by ``--force``), the lock is taken again on the new
    file, so two holders can never think they own the same path. The holder writes
    ``pid <pid> on <host>`` into the file; ``on_wait(holder)`` is called once when the lock
    is taken by someone else, before waiting (so a waiting process can say why it waits).
    """

    def __init__(self, path: str | os.PathLike, timeout: float | None = None, poll: float = 0.05,
                 on_wait=None):
        self.path = Path(path)
        self.timeout = timeout
        self.poll = poll
        self.on_wait = on_wait
        self._fd: int | None = None

    def holder(self) -> str:
        """Who holds (or last held) the lock, as written in the file (``"unknown"`` if unreadable)."""
        try:
            text = self.path.read_text(encoding="utf-8", errors="replace").strip()
        except OSError:
            text = ""
        return text or "another process"

    @property
    def locked(self) -> bool:
        return self._fd is not None

    def acquire(self) -> "FileLock":
        import fcntl

        if self._fd is not None:
            raise RuntimeError(f"{self.path}: lock already held by this object")
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        while True:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    taken = True
                except BlockingIOError:
                    taken = False
                    if self.on_wait is not None:
                        self.on_wait(self.holder())
                if taken:
                    pass
                elif deadline is None:
                    fcntl.flock(fd, fcntl.LOCK_EX)
                else:
                    while True:
                        try:
                            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                            break
                        except BlockingIOError:
                            if time.monotonic() > deadline:
                                raise TimeoutError(f"{self.path}: could not take the lock within "
                                                   f"{self.timeout} s (another process holds it)") from None
                            time.sleep(self.poll)
                try:
                    same = os.stat(self.path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    same = False
            except BaseException:
                os.close(fd)
                raise
            if same:
                self._fd = fd
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, 0)
                    os.write(fd, f"pid {os.getpid()} on {socket.gethostname()}\n".encode())
                return self
            os.close(fd)  # the file was replaced or moved while we waited: lock the new one

    def release(self) -> None:
        import fcntl

        if self._fd is None:
            return
        try:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
        finally:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "FileLock":
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
