"""Training batches: the split preloaded as uint8 tensors (augmented on the device) or a DataLoader.

:func:`choose_data_path` picks one for a config (``--data_path auto``: preload when the decoded
split takes less than half of the available memory). Both yield ``(rgb, {task: target})``
batches of one epoch from ``batches(epoch)``, reproducibly from the seed and the epoch, and
split the epoch over ``world_size`` processes (this process is ``rank``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import torch

from ..config import Config, ConfigError
from ..utils import worker_init_fn


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


class PreloadedTrainData:
    """The training split decoded once into uint8 tensors; batches augmented on the device."""

    def __init__(self, cfg: Config, root: Path, device: torch.device, rank: int = 0, world_size: int = 1,
                 show_progress: bool = False):
        from .augment import BatchAugment
        from .encoding import depth_lut
        from .miniscapes import DatasetError, load_split_tensors

        tensors = load_split_tensors(root, "train", max_images=cfg.max_train_images, progress=show_progress)
        self.tasks = cfg.tasks
        if "semseg" in cfg.tasks and tensors.semseg is None:
            raise DatasetError(f"{root / 'train'}: no semseg/ labels, but --tasks includes semseg")
        if "depth" in cfg.tasks and tensors.depth_codes is None:
            raise DatasetError(f"{root / 'train'}: no depth/ labels, but --tasks includes depth")
        self.rgb = tensors.rgb
        self.semseg = tensors.semseg if "semseg" in cfg.tasks else None
        self.depth = tensors.depth_codes if "depth" in cfg.tasks else None
        self.n = len(tensors)
        self.device = device
        self.placement = "cpu"
        nbytes = sum(t.numel() for t in (self.rgb, self.semseg, self.depth) if t is not None)
        if device.type == "cuda":
            free, _ = torch.cuda.mem_get_info(device)
            if nbytes < 0.25 * free:  # plenty of room left for the model: keep the data on the GPU
                self.rgb, self.semseg, self.depth = (t.to(device) if t is not None else None
                                                     for t in (self.rgb, self.semseg, self.depth))
                self.placement = "gpu"
            else:
                self.rgb, self.semseg, self.depth = (t.pin_memory() if t is not None else None
                                                     for t in (self.rgb, self.semseg, self.depth))
                self.placement = "pinned"
        elif device.type != "cpu":
            self.rgb, self.semseg, self.depth = (t.to(device) if t is not None else None
                                                 for t in (self.rgb, self.semseg, self.depth))
            self.placement = str(device.type)
        self.lut = torch.from_numpy(depth_lut()).to(device)
        self.augment = BatchAugment.from_config(cfg)
        self.batch_size = cfg.batch_size
        self.seed = cfg.seed
        self.rank, self.world_size = rank, world_size
        self.steps_per_epoch = (self.n // world_size) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"--batch_size: {cfg.batch_size} x {world_size} process(es) is more than "
                              f"the {self.n} training images (--max_train_images {cfg.max_train_images}); "
                              f"no full batch per epoch")

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """This rank's batches of ``epoch`` (drop_last), augmented on the device."""
        g = torch.Generator().manual_seed(epoch_seed(self.seed, epoch))
        perm = torch.randperm(self.n, generator=g)  # the same on every rank
        mine = perm[self.rank::self.world_size]
        aug_gen = torch.Generator(device=self.device if self.device.type == "cuda" else "cpu")
        aug_gen.manual_seed(epoch_seed(self.seed + 1, epoch, self.rank))
        if self.placement == "gpu":
            mine = mine.to(self.device)
        b = self.batch_size
        for s in range(self.steps_per_epoch):
            idx = mine[s * b:(s + 1) * b]
            rgb = self.rgb[idx].to(self.device, non_blocking=True)
            sem = self.semseg[idx].to(self.device, non_blocking=True) if self.semseg is not None else None
            dep = self.lut[self.depth[idx].to(self.device, non_blocking=True).long()] if self.depth is not None else None
            rgb, sem, dep = self.augment(rgb, sem, dep, generator=aug_gen)
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
