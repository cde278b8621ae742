"""Training batches: the split preloaded as uint8 tensors (augmented on the device) or a DataLoader.

:func:`choose_data_path` picks one for a config (``--data_path auto``: preload when the decoded
split takes less than half of the available memory). Both yield ``(rgb, {task: target})``
batches of one epoch from ``batches(epoch)``, reproducibly from the seed and the epoch, and
split the epoch over ``world_size`` processes (this process is ``rank``).

Preloaded data on CUDA stays on the GPU when it takes less than a quarter of the memory this
process can still allocate (:func:`cvaia.devices.cuda_free_bytes`: PyTorch's own cache counts as
free); otherwise it stays in ordinary host memory and each batch travels through a pinned
staging buffer (:class:`PinnedStaging`). Under DDP each process decodes and holds only its
shard of the split (images ``rank, rank + world_size, ...``) and shuffles it every epoch.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..devices import cuda_free_bytes
from ..rng import worker_init_fn


def epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A distinct, reproducible seed per (seed, epoch, rank)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63 - 1)


def available_ram() -> int:
    """Memory available to new allocations (``MemAvailable`` on Linux), in bytes."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


class PinnedStaging:
    """Batches of a split held in host memory, copied to a GPU through reusable pinned buffers.

    Indexing a pinned tensor (``t[idx]``) returns ordinary pageable memory, from which a
    ``non_blocking`` copy is synchronous, and pinning a whole split needs a second copy of it.
    Here each batch is gathered (``index_select(out=...)``) into one of ``depth`` pinned buffers
    and copied asynchronously; a buffer is refilled only once the copy out of it has finished
    (a CUDA event recorded after the copy, ``depth - 1`` batches earlier).
    """

    def __init__(self, sources: dict[str, torch.Tensor], batch_size: int, device: torch.device, depth: int = 2):
        self.sources = sources
        self.device = device
        self.buffers = [{k: torch.empty((batch_size, *t.shape[1:]), dtype=t.dtype).pin_memory()
                         for k, t in sources.items()} for _ in range(depth)]
        self.events: list = [None] * depth
        self._slot = 0

    def __call__(self, idx: torch.Tensor) -> dict[str, torch.Tensor]:
        """The rows ``idx`` (CPU int64) of every source, on the device."""
        slot, self._slot = self._slot, (self._slot + 1) % len(self.buffers)
        if self.events[slot] is not None:
            self.events[slot].synchronize()  # the copy out of this buffer is done
        out = {}
        for k, src in self.sources.items():
            buf = self.buffers[slot][k][: len(idx)]
            torch.index_select(src, 0, idx, out=buf)
            out[k] = buf.to(self.device, non_blocking=True)
        event = torch.cuda.Event()
        event.record(torch.cuda.current_stream(self.device))
        self.events[slot] = event
        return out


def gpu_placement(nbytes: int, device: torch.device) -> str:
    """``gpu`` when ``nbytes`` of preloaded data take under a quarter of what this process can
    still allocate on ``device`` (plenty left for the model), else ``pinned`` (host + staging)."""
    return "gpu" if nbytes < 0.25 * cuda_free_bytes(device) else "pinned"


class PreloadedTrainData:
    """The training split decoded once into uint8 tensors; batches augmented on the device.

    ``placement``: ``cpu`` (CPU training), ``gpu`` (the tensors live on the GPU), ``pinned``
    (host memory, batches through :class:`PinnedStaging`) or another device type.
    ``device_bytes`` is what the data occupy on the training device (for memory readings).
    """

    def __init__(self, cfg: Config, root: Path, device: torch.device, rank: int = 0, world_size: int = 1,
                 show_progress: bool = False):
        from .augment import BatchAugment
        from .encoding import depth_lut
        from .miniscapes import DatasetError, MiniscapesSplit, load_split_tensors

        split = MiniscapesSplit(root, "train")
        self.n_total = len(split) if cfg.max_train_images <= 0 else min(cfg.max_train_images, len(split))
        shard = list(range(rank, self.n_total, world_size)) if world_size > 1 else None
        tensors = load_split_tensors(root, "train", max_images=cfg.max_train_images, progress=show_progress,
                                     indices=shard)
        self.tasks = cfg.tasks
        if "semseg" in cfg.tasks and tensors.semseg is None:
            raise DatasetError(f"{root / 'train'}: no semseg/ labels, but --tasks includes semseg")
        if "depth" in cfg.tasks and tensors.depth_codes is None:
            raise DatasetError(f"{root / 'train'}: no depth/ labels, but --tasks includes depth")
        sources = {"rgb": tensors.rgb}
        if "semseg" in cfg.tasks:
            sources["semseg"] = tensors.semseg
        if "depth" in cfg.tasks:
            sources["depth"] = tensors.depth_codes
        self.n = len(tensors)  # this process's images
        self.device = device
        self.batch_size = cfg.batch_size
        nbytes = sum(t.numel() * t.element_size() for t in sources.values())
        self.staging = None
        self.device_bytes = 0
        if device.type == "cpu":
            self.placement = "cpu"
        elif device.type == "cuda" and gpu_placement(nbytes, device) == "pinned":
            self.placement = "pinned"
            self.staging = PinnedStaging(sources, cfg.batch_size, device)
        else:
            self.placement = "gpu" if device.type == "cuda" else str(device.type)
            sources = {k: t.to(device) for k, t in sources.items()}
            self.device_bytes = nbytes
        self.sources = sources
        self.lut = torch.from_numpy(depth_lut()).to(device)
        self.augment = BatchAugment.from_config(cfg)
        self.seed = cfg.seed
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = (self.n_total // world_size) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"--batch_size: {cfg.batch_size} x {world_size} process(es) is more than "
                              f"the {self.n_total} training images (--max_train_images {cfg.max_train_images}); "
                              f"no full batch per epoch")

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """This rank's batches of ``epoch`` (drop_last), augmented on the device: its shard in a
        new order every epoch (one process: the whole split, as a seeded permutation)."""
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch, self.rank))
        mine = torch.randperm(self.n, generator=g)
        aug_gen = torch.Generator(device=self.device if self.device.type == "cuda" else "cpu")
        aug_gen.manual_seed(epoch_seed(self.seed + 1, epoch, self.rank))
        if self.placement not in ("cpu", "pinned"):
            mine = mine.to(self.device)
        b = self.batch_size
        for s in range(self.steps_per_epoch):
            idx = mine[s * b:(s + 1) * b]
            if self.staging is not None:
                got = self.staging(idx)
            else:
                got = {k: t[idx].to(self.device, non_blocking=True) for k, t in self.sources.items()}
            dep = self.lut[got["depth"].long()] if "depth" in got else None
            rgb, sem, dep = self.augment(got["rgb"], got.get("semseg"), dep, generator=aug_gen)
            targets = {}
            if sem is not None:
                targets["semseg"] = sem
            if dep is not None:
                targets["depth"] = dep
            yield rgb, targets


class LoaderTrainData:
    """Per-sample decoding and augmentation in DataLoader workers (data too big to preload)."""

    def __init__(self, cfg: Config, root: Path, device: torch.device, rank: int = 0, world_size: int = 1,
                 show_progress: bool = False):
        from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

        from .reference import ReferenceDataset

        self.dataset = ReferenceDataset(root, "train", cfg, train=True)
        self.tasks = cfg.tasks
        self.device = device
        self.device_bytes = 0  # nothing preloaded on the device
        self.seed = cfg.seed
        self.rank, self.world_size = rank, world_size
        n = len(self.dataset)
        self.steps_per_epoch = (n // world_size) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"--batch_size: {cfg.batch_size} x {world_size} process(es) is more than "
                              f"the {n} training images; no full batch per epoch")
        self.generator = torch.Generator()
        if world_size > 1:
            self.sampler = DistributedSampler(self.dataset, num_replicas=world_size, rank=rank,
                                              shuffle=True, seed=cfg.seed, drop_last=True)
        else:
            self.sampler = RandomSampler(self.dataset, generator=self.generator)
        self.loader = DataLoader(self.dataset, batch_size=cfg.batch_size, sampler=self.sampler,
                                 num_workers=cfg.workers, drop_last=True, pin_memory=device.type == "cuda",
                                 worker_init_fn=worker_init_fn, generator=self.generator,
                                 persistent_workers=False)

    def batches(self, epoch: int):
        self.generator.manual_seed(epoch_seed(self.seed, epoch, self.rank))
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        for s, (rgb, sem, dep) in enumerate(self.loader):
            if s >= self.steps_per_epoch:
                break
            targets = {}
            if "semseg" in self.tasks:
                targets["semseg"] = sem.to(self.device, non_blocking=True)
            if "depth" in self.tasks:
                targets["depth"] = dep.to(self.device, non_blocking=True)
            yield rgb.to(self.device, non_blocking=True), targets


def choose_data_path(cfg: Config, root: Path) -> str:
    """``preload`` or ``loader`` for ``cfg.data_path`` (``auto``: preload when the decoded split
    takes less than half of the available memory)."""
    if cfg.data_path != "auto":
        return cfg.data_path
    from .miniscapes import MiniscapesSplit

    need = MiniscapesSplit(root, "train").preload_nbytes(cfg.max_train_images)
    return "preload" if need < 0.5 * available_ram() else "loader"



def training_data(cfg: Config, root: Path, data_path: str, device: torch.device, rank: int = 0,
                  world_size: int = 1, show_progress: bool = False) -> PreloadedTrainData | LoaderTrainData:
    """The training batches of ``cfg`` for ``data_path`` (``preload`` or ``loader``)."""
    cls = PreloadedTrainData if data_path == "preload" else LoaderTrainData
    return cls(cfg, root, device, rank, world_size, show_progress=show_progress)
