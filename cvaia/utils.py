"""Small helpers shared by training, the run store and the commands.

- :func:`select_device`: ``"auto"`` → CUDA if present, else MPS, else CPU.
- :func:`seed_everything`, :func:`get_rng_state`, :func:`set_rng_state`: reproducibility.
- :func:`atomic_write_text`, :func:`atomic_write_json`, :func:`atomic_torch_save`,
  :func:`atomic_save_npy`: write to a temporary file next to the target, then ``os.replace``,
  so a reader (or a killed writer) never sees half a file. A temporary file is named after
  its writer (``.<name>.<pid>@<host>.<random>.tmp``): the next write of the same target
  removes those of writers that are gone (``kill -9``), so none stays forever.
- :class:`FileLock`: an exclusive ``fcntl.flock`` lock on a file (``<run>/.lock``); who holds
  it is written into the file, and a waiting process is told (``on_wait``).
- :func:`peak_rss_mb`, :func:`cuda_peak_memory_mb`, :class:`PowerMeter`: resource probes.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import re
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ConfigError


@contextlib.contextmanager
def temporary_environ(values):
    """Set the environment variables ``values`` (a mapping) for the block, then restore the
    old values (removing the ones that were unset)."""
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


# ---- devices ---------------------------------------------------------------------------------
def mps_available() -> bool:
    """Whether Apple's Metal backend can be used."""
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def select_device(spec: str = "auto", local_rank: int | None = None) -> torch.device:
    """The :class:`torch.device` for ``--device`` (``auto | cpu | cuda | cuda:N | mps``).

    ``auto`` picks CUDA when present (``cuda:<local_rank>`` under ``torchrun``), else MPS when
    available, else the CPU. Asking for a device that is not there raises :class:`ConfigError`.
    """
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank or 0)
        if mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "mps":
        if not mps_available():
            raise ConfigError("--device: mps was requested but the MPS backend is not available")
        return torch.device("mps")
    if spec == "cuda" or spec.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device: {spec} was requested but CUDA is not available")
        if spec == "cuda":
            return torch.device("cuda", local_rank or 0)
        try:
            index = int(spec.split(":", 1)[1])
        except ValueError:
            raise ConfigError(f"--device: expected cuda:N with an integer N, got {spec!r}") from None
        if not 0 <= index < torch.cuda.device_count():
            raise ConfigError(f"--device: {spec} does not exist ({torch.cuda.device_count()} CUDA device(s))")
        return torch.device("cuda", index)
    raise ConfigError(f"--device: expected auto, cpu, cuda, cuda:N or mps, got {spec!r}")


# ---- seeding ---------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def get_rng_state() -> dict[str, Any]:
    """The global random states (python, numpy, torch CPU, torch CUDA) for a checkpoint."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _byte_state(t) -> torch.Tensor:
    """A generator state as the CPU ``uint8`` tensor torch's setters insist on (a checkpoint
    loaded with ``map_location=<GPU>`` holds its states on the GPU)."""
    t = t if isinstance(t, torch.Tensor) else torch.as_tensor(t)
    return t.detach().to(device="cpu", dtype=torch.uint8)


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned, wherever ``torch.load`` mapped its tensors.

    CUDA states are restored for the devices this process has (a checkpoint from a machine
    with more GPUs sets the first ones; devices without a saved state keep theirs).
    """
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:
        np.random.set_state(state["numpy"])
    if "torch" in state:
        torch.set_rng_state(_byte_state(state["torch"]))
    saved = list(state.get("cuda") or ())
    for index, s in enumerate(saved[:torch.cuda.device_count() if saved else 0]):
        torch.cuda.set_rng_state(_byte_state(s), index)


def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker seeding: NumPy and ``random`` follow torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)


# ---- atomic writes ---------------------------------------------------------------------------
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


# ---- locks -----------------------------------------------------------------------------------
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


# ---- resource probes -------------------------------------------------------------------------
def out_of_memory(exc: BaseException) -> str | None:
    """Which memory ran out when ``exc`` is an out-of-memory error (``"GPU memory"``, ``"CPU
    memory"``), else None: torch's ``OutOfMemoryError`` (CUDA, MPS), its CPU allocator's
    "can't allocate memory" ``RuntimeError`` and Python's ``MemoryError``."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    text = str(exc)
    if (oom_type is not None and isinstance(exc, oom_type)) or "CUDA out of memory" in text \
            or "MPS backend out of memory" in text:
        return "GPU memory"
    if isinstance(exc, MemoryError) or "DefaultCPUAllocator: can't allocate memory" in text \
            or "not enough memory" in text:
        return "CPU memory"
    return None


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (MiB), from ``resource.getrusage``."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows
        return float("nan")
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def cuda_peak_memory_mb(device: torch.device) -> float | None:
    """``torch.cuda.max_memory_allocated`` in MiB on a CUDA device, else None."""
    if device.type != "cuda":
        return None
    return torch.cuda.max_memory_allocated(device) / 2**20


def cuda_free_bytes(device: torch.device) -> int:
    """Bytes this process can still allocate on a CUDA ``device``.

    ``torch.cuda.mem_get_info`` reports what the *driver* has free; memory that PyTorch's
    caching allocator holds but no tensor uses (left by an earlier run in the same notebook
    kernel) counts there as used, although PyTorch hands it out again first. So: driver-free
    plus reserved-but-unallocated.
    """
    free, _ = torch.cuda.mem_get_info(device)
    cached = torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return int(free + max(0, cached))


def _torch_uuid(index: int) -> str | None:
    """The CUDA UUID of torch's device ``index`` (``"GPU-…"`` or, under MIG, the instance's), or None."""
    try:
        uuid = torch.cuda.get_device_properties(index).uuid
    except Exception:  # no GPU, or a torch without the property
        return None
    text = str(uuid)
    return text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}"


def nvml_handle(pynvml, index: int):
    """The NVML handle of torch's CUDA device ``index`` (NVML must be initialised).

    NVML numbers the *physical* GPUs in PCI order, torch the *visible* ones (those in
    ``CUDA_VISIBLE_DEVICES``, which SLURM sets, in CUDA's order). So: the device's UUID from
    torch when it has one; else the ``CUDA_VISIBLE_DEVICES`` entry for ``index`` — a physical
    index, or a GPU/MIG UUID (or the unique prefix of one, as CUDA accepts); else ``index``.
    """
    uuid = _torch_uuid(index)
    if uuid is not None:
        for candidate in (uuid, "MIG-" + uuid[4:]) if uuid.startswith("GPU-") else (uuid,):
            try:  # (under MIG, CUDA may report the instance's UUID without NVML's "MIG-" prefix)
                return pynvml.nvmlDeviceGetHandleByUUID(candidate)
            except Exception:
                pass
    visible = [v.strip() for v in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
    if not visible:
        return pynvml.nvmlDeviceGetHandleByIndex(index)
    if index >= len(visible):
        raise ValueError(f"cuda:{index} is not among CUDA_VISIBLE_DEVICES={','.join(visible)}")
    entry = visible[index]
    if entry.isdigit():
        return pynvml.nvmlDeviceGetHandleByIndex(int(entry))
    try:
        return pynvml.nvmlDeviceGetHandleByUUID(entry)
    except Exception:
        pass
    matches = []
    for i in range(pynvml.nvmlDeviceGetCount()):
        handle = pynvml.nvmlDeviceGetHandleByIndex(i)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        if uuid.startswith(entry) or uuid.startswith(f"GPU-{entry}"):
            matches.append(handle)
    if len(matches) != 1:
        raise ValueError(f"CUDA_VISIBLE_DEVICES entry {entry!r} names {len(matches)} NVML devices")
    return matches[0]


def _board_handle(pynvml, handle):
    """A MIG instance reports no power of its own: read its parent GPU (shared by all instances)."""
    try:
        if pynvml.nvmlDeviceIsMigDeviceHandle(handle):
            return pynvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
    except Exception:
        pass
    return handle


def _power_reader(device: torch.device):
    """A function returning the board power (W) of ``device``'s GPU, or None without NVML."""
    if device.type != "cuda":
        return None
    index = device.index if device.index is not None else torch.cuda.current_device()
    try:
        import pynvml  # type: ignore  # the nvidia-ml-py package

        pynvml.nvmlInit()
        handle = _board_handle(pynvml, nvml_handle(pynvml, index))
        pynvml.nvmlDeviceGetPowerUsage(handle)  # supported?
        return lambda: pynvml.nvmlDeviceGetPowerUsage(handle) / 1000.0
    except Exception:
        return None


class PowerMeter:
    """Mean GPU board power over a period, sampled by a background thread (NVML).

    Reads the GPU that torch calls ``device`` (see :func:`nvml_handle` for the mapping under
    ``CUDA_VISIBLE_DEVICES``; under MIG the whole board). ``mean_watts`` is None when no NVML
    reader is available (CPU, MPS, no pynvml).
    """

    def __init__(self, device: torch.device, interval: float = 0.5):
        self._read = _power_reader(device)
        self.interval = interval
        self._samples: list[float] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._read is not None

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._samples.append(float(self._read()))
            except Exception:
                return
            self._stop.wait(self.interval)

    def start(self) -> "PowerMeter":
        if self._read is not None and self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name="cvaia-power", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._stop.set()
            self._thread.join(timeout=2.0)
            self._thread = None

    def mark(self) -> int:
        """A position in the sample list, for :meth:`mean_since`."""
        return len(self._samples)

    def mean_since(self, mark: int = 0) -> float | None:
        """Mean power (W) of the samples taken after ``mark`` (None without samples)."""
        samples = self._samples[mark:]
        return float(np.mean(samples)) if samples else None

    @property
    def mean_watts(self) -> float | None:
        """Mean power (W) over everything sampled so far (None without samples)."""
        return self.mean_since(0)


def synchronize(device: torch.device | str) -> None:
    """Wait for queued CUDA work on ``device`` (no-op elsewhere), so wall-clock timings are real."""
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_time_s(fn, repeats: int, device: torch.device | str, warmup: int = 0) -> float:
    """Seconds of the fastest of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls.

    The minimum is the timing least disturbed by other processes sharing the CPU; each call is
    followed by :func:`synchronize` so GPU work is counted.
    """
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t0)
    return min(times)


def count_parameters(model: torch.nn.Module) -> int:
    """Number of parameters of ``model``."""
    return int(sum(p.numel() for p in model.parameters()))


def format_duration(seconds: float) -> str:
    """``3725.2`` → ``'1h 02m 05s'``."""
    seconds = int(round(seconds))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    if h:
        return f"{h}h {m:02d}m {s:02d}s"
    if m:
        return f"{m}m {s:02d}s"
    return f"{s}s"
