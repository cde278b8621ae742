"""Distributed set-up for ``torchrun``: this process's rank, and the few collectives training needs.

Started by ``torchrun --nproc_per_node N -m cvaia train ...``, :func:`setup_distributed` joins
the process group (nccl on CUDA, gloo on CPU). In a single process every helper is a no-op.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import torch

from .config import Config, ConfigError


@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    try:
        return int(value) if value else default
    except ValueError:
        raise ConfigError(f"environment variable {name}: expected an integer, got {value!r}") from None


def setup_distributed(cfg: Config) -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1 (nccl on CUDA, gloo else)."""
    import torch.distributed as dist

    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    local_rank = _env_int("LOCAL_RANK", 0)
    if cfg.device.startswith("cuda:"):
        raise ConfigError(f"--device: {cfg.device} under torchrun; use auto or cuda (each process "
                          f"takes cuda:LOCAL_RANK)")
    initialised_here = False
    if not dist.is_initialized():
        use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        initialised_here = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, initialised_here)


def sync_batchnorm(model: torch.nn.Module, info: DistInfo, device: torch.device, enabled: bool) -> torch.nn.Module:
    """``model`` with every BatchNorm replaced by :class:`torch.nn.SyncBatchNorm` when ``enabled``
    and this is a multi-process job (the same parameters and buffers, the same state-dict keys;
    batch statistics over the global batch); else ``model`` itself. SyncBatchNorm needs CUDA."""
    if not (enabled and info.enabled):
        return model
    if device.type != "cuda":
        raise ConfigError(f"--sync_batchnorm: SyncBatchNorm needs CUDA devices (nccl); this job runs on "
                          f"{device.type}. Drop --sync_batchnorm or train on GPUs")
    return torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)


def teardown_distributed(info: DistInfo) -> None:
    """Leave the process group if :func:`setup_distributed` joined it."""
    if info.initialised_here:
        import torch.distributed as dist

        dist.destroy_process_group()


def broadcast(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather_objects(obj: Any, info: DistInfo) -> list[Any]:
    """Every process's ``obj``, in rank order, on every process (``[obj]`` in one process)."""
    if not info.enabled:
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_sum(values: list[float], info: DistInfo, device: torch.device) -> list[float]:
    """``values`` summed element-wise over the processes (as floats)."""
    if not info.enabled:
        return [float(v) for v in values]
    import torch.distributed as dist

    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_mean_(tensors: list[torch.Tensor], info: DistInfo) -> None:
    """Average each tensor over the processes, in place."""
    if not info.enabled:
        return
    import torch.distributed as dist

    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size


def all_reduce_max(value: int, info: DistInfo, device: torch.device) -> int:
    """The largest ``value`` over the processes."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], device=device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def barrier(info: DistInfo) -> None:
    """Wait for every process."""
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()
