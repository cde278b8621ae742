"""The compute device: which one, how much memory, how much power, how long a call takes.

- :func:`select_device`: ``"auto"`` → CUDA if present, else MPS, else CPU (:func:`mps_available`).
- :func:`out_of_memory`, :func:`peak_rss_mb`, :func:`cuda_peak_memory_mb`, :func:`cuda_free_bytes`:
  memory probes.
- :func:`nvml_handle`, :class:`PowerMeter`: GPU board power through NVML (torch's device
  numbering mapped onto NVML's under ``CUDA_VISIBLE_DEVICES`` and MIG).
- :func:`synchronize`, :func:`best_time_s`, :func:`format_duration`: timing.
"""

from __future__ import annotations

import os
import sys
import threading
import time

import numpy as np
import torch

from .errors import ConfigError


# ---- devices ------------------------------------------------------------------------------------
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



# ---- memory probes ------------------------------------------------------------------------------
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



# ---- power (NVML) -------------------------------------------------------------------------------
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



# ---- timing -------------------------------------------------------------------------------------
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
