"""Distributed set-up for ``torchrun``: this process's rank, and the few collectives training needs.

Started by ``torchrun --nproc_per_node N -m cvaia train ...``, :func:`setup_distributed` joins
the process group (nccl on CUDA, gloo on CPU) with an explicit timeout (``--dist_timeout``:
how long a collective may wait for the slowest process). In a single process every helper is a
no-op.

Waiting for rank 0 without a timeout: before training, rank 0 may wait for as long as another
job holds the run's lock (README "Running on a cluster": a duplicate job waits, then loads the
finished run). The other ranks must not sit in a collective meanwhile (the process group's
timeout, or NCCL's watchdog, would kill the job): :func:`wait_for_main` polls the process
group's key-value store until rank 0 says, with :func:`main_ready`, that its broadcast follows.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch

from .config import Config, ConfigError

#: seconds between two looks at the store while rank 0 prepares the run (see wait_for_main)
MAIN_POLL_S = 0.25


@dataclass
class DistInfo:
    """This process's place in a (possibly single-process) job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialised_here: bool = False
    cuda_index: int | None = None  # the visible GPU this process uses (None: no CUDA)

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


def _check_launch_env(world: int) -> None:
    """The variables ``torchrun`` (or ``srun`` with them exported) sets for ``init_process_group``:
    one clear line naming the first one that is missing or not an integer."""
    for name in ("RANK", "LOCAL_RANK"):
        _env_int(name, 0)
    rank = _env_int("RANK", -1)
    if not os.environ.get("RANK", "").strip():
        raise ConfigError(f"environment variable RANK: not set, but WORLD_SIZE={world} asks for a "
                          f"{world}-process job; start it with torchrun --nproc_per_node {world} -m cvaia ...")
    if not 0 <= rank < world:
        raise ConfigError(f"environment variable RANK: expected 0..{world - 1} (WORLD_SIZE={world}), got {rank}")
    for name in ("MASTER_ADDR", "MASTER_PORT"):
        if not os.environ.get(name, "").strip():
            raise ConfigError(f"environment variable {name}: not set, but WORLD_SIZE={world} asks for a "
                              f"{world}-process job; start it with torchrun --nproc_per_node {world} -m cvaia ... "
                              f"(which sets it), or export {name} in the job script")
    _env_int("MASTER_PORT", 0)


def cuda_index(local_rank: int) -> int:
    """The visible GPU of the process with ``local_rank``: ``local_rank`` when the node's GPUs
    are all visible to every process (torchrun on one node), 0 when each task sees one GPU
    (SLURM's per-task binding, ``--gpus-per-task 1``); an error when neither holds."""
    visible = torch.cuda.device_count()
    if visible == 1:
        return 0
    if 0 <= local_rank < visible:
        return local_rank
    raise ConfigError(f"environment variable LOCAL_RANK: {local_rank}, but this process sees {visible} GPU(s) "
                      f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); start one "
                      f"process per GPU")


def setup_distributed(cfg: Config) -> DistInfo:
    """Join the ``torchrun`` process group when ``WORLD_SIZE`` > 1 (nccl on CUDA, gloo else),
    with ``cfg.dist_timeout`` seconds for any collective."""
    import torch.distributed as dist

    world = _env_int("WORLD_SIZE", 1)
    if world <= 1:
        return DistInfo()
    local_rank = _env_int("LOCAL_RANK", 0)
    if cfg.device.startswith("cuda:"):
        raise ConfigError(f"--device: {cfg.device} under torchrun; use auto or cuda (each process "
                          f"takes cuda:LOCAL_RANK)")
    use_cuda = cfg.device == "cuda" or (cfg.device == "auto" and torch.cuda.is_available())
    index = cuda_index(local_rank) if use_cuda else None
    initialised_here = False
    if not dist.is_initialized():
        _check_launch_env(world)
        backend = "nccl" if use_cuda else "gloo"
        if use_cuda:
            torch.cuda.set_device(index)
        dist.init_process_group(backend=backend, timeout=timedelta(seconds=cfg.dist_timeout))
        initialised_here = True
    return DistInfo(dist.get_rank(), dist.get_world_size(), local_rank, initialised_here, index)


def _gate_key(info: DistInfo) -> str:
    """This rank's next gate key: every rank counts its own calls (the same sequence on every
    rank, since every rank takes the same gates in the same order)."""
    from torch.distributed import distributed_c10d

    n = distributed_c10d._get_default_store().add(f"cvaia/gates/{info.rank}", 1)
    return f"cvaia/gate/{n}"


def main_ready(info: DistInfo) -> None:
    """Rank 0: the other ranks may now enter the collective that follows (see :func:`wait_for_main`)."""
    if not info.enabled:
        return
    from torch.distributed import distributed_c10d

    distributed_c10d._get_default_store().set(_gate_key(info), b"1")


def wait_for_main(info: DistInfo, poll_s: float = MAIN_POLL_S) -> None:
    """Ranks other than 0: wait, without any timeout and outside every collective, until rank 0
    calls :func:`main_ready` (rank 0 may wait for a run's lock for hours)."""
    if not info.enabled or info.is_main:
        return
    from torch.distributed import distributed_c10d

    store = distributed_c10d._get_default_store()
    key = _gate_key(info)
    while not store.check([key]):
        time.sleep(poll_s)


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


def seed_rank(seed: int, info: DistInfo) -> None:
    """Give each rank its own dropout stream: ranks other than 0 reseed torch (CPU and CUDA)
    from ``seed`` and their rank (before: every rank drew the same dropout masks for different
    images). Rank 0, and a single process, keep the stream of ``seed`` (the same runs as before).
    Call after the model is built: its initialisation must be the same on every rank."""
    if info.enabled and not info.is_main:
        torch.manual_seed((seed * 1_000_003 + info.rank * 104_729 + 17) % (2**63 - 1))


def broadcast_buffers_(module: torch.nn.Module, info: DistInfo) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank, in place: DDP broadcasts
    them before each training forward, and each rank's forward then updates its own copy, so
    after an epoch they differ. Evaluating with rank 0's evaluates what is saved (rank 0 writes
    the checkpoint)."""
    if not info.enabled:
        return
    import torch.distributed as dist

    for b in module.buffers():
        dist.broadcast(b.data, src=0)


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
