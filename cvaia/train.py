"""The training engine: one configuration in, one finished run folder out.

:func:`train` trains ``cfg`` into its run folder (see :mod:`cvaia.runs` for the layout),
evaluating on the validation split after every epoch, and returns the folder. It

- resumes a killed run from ``checkpoints/last.pt`` (saved at every epoch end) and reaches
  exactly the results an uninterrupted run would have (all random state is restored or
  re-derived per epoch from the seed);
- returns a finished run at once, and retrains it only with ``force=True`` (the old folder is
  moved aside to ``<dir>.old-<timestamp>``, never deleted);
- holds an exclusive lock on ``<run>/.lock`` while it works, so that two processes asking
  for the same run train it once (the second waits, then finds it finished);
- stops with :class:`TrainingDiverged` (naming the step) when the loss becomes NaN/inf,
  keeping the last good checkpoint.

Fast path: the split is decoded once into uint8 tensors (pinned, or on the GPU when it
fits), each epoch draws a seeded permutation, and crops/flips/normalisation run batched on
the device (:class:`cvaia.data.augment.BatchAugment`). Losses are accumulated on the device
and read back only every ``log_every`` steps (no host synchronisation in between). On CUDA:
bf16/fp16 autocast (fp16 with a gradient scaler), channels_last, ``torch.compile``,
``cudnn.benchmark`` and fused Adam are available.

Multi-GPU: started by ``torchrun --nproc_per_node N -m cvaia train ...`` the same code uses
DistributedDataParallel (nccl on CUDA, gloo on CPU): every process draws the same
permutation and takes every N-th sample of it, evaluation is sharded the same way with the
metric state summed across processes, and only rank 0 writes the run.
"""

from __future__ import annotations

import csv
import io
import math
import os
import platform
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from . import __version__, paths
from .config import Config, ConfigError, make_config
from .runs import is_finished, run_dir_for
from .utils import (
    FileLock,
    PowerMeter,
    atomic_link_or_copy,
    atomic_save_npy,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    count_parameters,
    cuda_peak_memory_mb,
    get_rng_state,
    peak_rss_mb,
    read_json,
    seed_everything,
    select_device,
    set_rng_state,
    worker_init_fn,
)

#: Checkpoint entries only a resume needs; a finished run's checkpoints drop them.
SLIM_DROPPED = ("optimizer", "scheduler", "scaler", "rng")


class TrainingDiverged(RuntimeError):
    """The training loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


#: Marker file of a run that diverged: asking for the run again raises at once (no retraining).
DIVERGED_FILE = "diverged.json"


def stored_divergence(run_dir: Path) -> TrainingDiverged:
    """The :class:`TrainingDiverged` recorded in ``<run_dir>/diverged.json``."""
    info = read_json(Path(run_dir) / DIVERGED_FILE)
    return TrainingDiverged(f"{info['message']} (recorded earlier in {Path(run_dir) / DIVERGED_FILE}; "
                            f"force=True / --force retrains the run)", step=info.get("step"))


class SimulatedKill(RuntimeError):
    """Raised by the ``_stop_after_epoch`` test hook after an epoch's checkpoint is written."""


#: Columns of steps.csv (the task columns follow the config's tasks).
def _step_columns(tasks) -> list[str]:
    return (["step", "epoch", "loss"] + [f"loss_{t}" for t in tasks] + ["lr"]
            + [f"weight_{t}" for t in tasks])


EPOCH_COLUMNS = [
    "epoch", "step", "miou", "pixel_acc", "si_log_rmse", "abs_rel", "rmse", "delta1", "delta2",
    "delta3", "score", "lr", "train_loss", "train_loss_semseg", "train_loss_depth",
    "train_time_s", "eval_time_s", "epoch_time_s", "images_per_s", "peak_mem_mb", "peak_rss_mb",
    "power_w",
]


# ---- distributed ------------------------------------------------------------------------------
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


def _broadcast(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` on every rank."""
    if not info.enabled:
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _all_reduce_mean_(tensors: list[torch.Tensor], info: DistInfo) -> None:
    if not info.enabled:
        return
    import torch.distributed as dist

    for t in tensors:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        t /= info.world_size


# ---- data -----------------------------------------------------------------------------------
def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    """A distinct, reproducible seed per (seed, epoch, rank)."""
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63 - 1)


def _available_ram() -> int:
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

    def __init__(self, cfg: Config, root: Path, device: torch.device, info: DistInfo, show_progress: bool = False):
        from .data.augment import BatchAugment
        from .data.encoding import depth_lut
        from .data.miniscapes import DatasetError, load_split_tensors

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
        self.info = info
        self.steps_per_epoch = (self.n // info.world_size) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"--batch_size: {cfg.batch_size} x {info.world_size} process(es) is more than "
                              f"the {self.n} training images (--max_train_images {cfg.max_train_images}); "
                              f"no full batch per epoch")

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, dict[str, torch.Tensor]]]:
        """This rank's batches of ``epoch`` (drop_last), augmented on the device."""
        g = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
        perm = torch.randperm(self.n, generator=g)  # the same on every rank
        mine = perm[self.info.rank::self.info.world_size]
        aug_gen = torch.Generator(device=self.device if self.device.type == "cuda" else "cpu")
        aug_gen.manual_seed(_epoch_seed(self.seed + 1, epoch, self.info.rank))
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

    def __init__(self, cfg: Config, root: Path, device: torch.device, info: DistInfo, show_progress: bool = False):
        from torch.utils.data import DataLoader, DistributedSampler, RandomSampler

        from .data.reference import ReferenceDataset

        self.dataset = ReferenceDataset(root, "train", cfg, train=True)
        self.tasks = cfg.tasks
        self.device = device
        self.seed = cfg.seed
        self.info = info
        n = len(self.dataset)
        self.steps_per_epoch = (n // info.world_size) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise ConfigError(f"--batch_size: {cfg.batch_size} x {info.world_size} process(es) is more than "
                              f"the {n} training images; no full batch per epoch")
        self.generator = torch.Generator()
        if info.enabled:
            self.sampler = DistributedSampler(self.dataset, num_replicas=info.world_size, rank=info.rank,
                                              shuffle=True, seed=cfg.seed, drop_last=True)
        else:
            self.sampler = RandomSampler(self.dataset, generator=self.generator)
        self.loader = DataLoader(self.dataset, batch_size=cfg.batch_size, sampler=self.sampler,
                                 num_workers=cfg.workers, drop_last=True, pin_memory=device.type == "cuda",
                                 worker_init_fn=worker_init_fn, generator=self.generator,
                                 persistent_workers=False)

    def batches(self, epoch: int):
        self.generator.manual_seed(_epoch_seed(self.seed, epoch, self.info.rank))
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
    from .data.miniscapes import MiniscapesSplit

    need = MiniscapesSplit(root, "train").preload_nbytes(cfg.max_train_images)
    return "preload" if need < 0.5 * _available_ram() else "loader"


# ---- model, optimiser, schedule ----------------------------------------------------------------
def build_optimizer(cfg: Config, model: nn.Module, loss_fn: nn.Module, device: torch.device):
    """Adam or SGD over the model's parameters and the loss's learned weights (no weight decay)."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    extra = [p for p in loss_fn.parameters() if p.requires_grad]
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    # Fused kernels on CUDA; elsewhere the multi-tensor ("foreach") implementation, which
    # PyTorch picks by default only for CUDA tensors: on the CPU it halves the Adam step time
    # of the 16.6M-parameter joint model compared with the per-tensor loop.
    kw = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.optimizer_lr, weight_decay=cfg.optimizer_weight_decay, **kw)
    return torch.optim.SGD(groups, lr=cfg.optimizer_lr, momentum=cfg.optimizer_momentum,
                           weight_decay=cfg.optimizer_weight_decay, **kw)


class PolyLR:
    """``lr · (1 − step/total)^power`` (picklable factor for LambdaLR)."""

    def __init__(self, total_steps: int, power: float):
        self.total = max(1, int(total_steps))
        self.power = float(power)

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - step / self.total) ** self.power


class ConstantLR:
    """Factor 1 (picklable)."""

    def __call__(self, step: int) -> float:
        return 1.0


def build_scheduler(cfg: Config, optimizer, total_steps: int):
    """Per-step LambdaLR: poly decay (``lr_scheduler_power``) or constant."""
    factor = PolyLR(total_steps, cfg.lr_scheduler_power) if cfg.lr_scheduler == "poly" else ConstantLR()
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """bf16/fp16 on CUDA per ``cfg.precision``; None (fp32) elsewhere."""
    if device.type != "cuda":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision)


def best_key(tasks) -> str:
    """Metric that picks the best checkpoint: the grader score (both tasks), mIoU or SI-logRMSE."""
    if "semseg" in tasks and "depth" in tasks:
        return "score"
    return "miou" if "semseg" in tasks else "si_log_rmse"


def selection_value(metrics: dict, tasks) -> tuple[float, float] | None:
    """``(primary, tie-break)``, larger is better, or None when not finite.

    Both tasks: the grader score, ties (e.g. both 0 early in training, where the score is
    clamped) broken by the unclamped ``mIoU − SI-logRMSE``. One task: mIoU, or −SI-logRMSE.
    """
    key = best_key(tasks)
    if key == "score":
        value = (metrics["score"], metrics["miou"] - metrics["si_log_rmse"])
    elif key == "miou":
        value = (metrics["miou"], 0.0)
    else:
        value = (-metrics["si_log_rmse"], 0.0)
    if any(v is None or not math.isfinite(v) for v in value):
        return None
    return value


# ---- run folder bookkeeping ----------------------------------------------------------------------
def _timestamp() -> str:
    return datetime.now().strftime("%Y%m%d-%H%M%S")


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<path>.old-<timestamp>`` (with a counter when taken); return the new name."""
    target = path.with_name(f"{path.name}.old-{_timestamp()}")
    k = 1
    while target.exists():
        target = path.with_name(f"{path.name}.old-{_timestamp()}-{k}")
        k += 1
    os.replace(path, target)
    return target


def _write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def _read_csv(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = []
    for row in rows:
        parsed = {}
        for k, v in row.items():
            if v == "" or v is None:
                parsed[k] = None
                continue
            try:
                f = float(v)
                parsed[k] = int(f) if k in ("step", "epoch") else f
            except ValueError:
                parsed[k] = v
        out.append(parsed)
    return out


def _dataset_identity(root: Path) -> dict | None:
    meta = root / "meta.json"
    if meta.is_file():
        try:
            return read_json(meta)
        except ValueError:
            return None
    return None


def _run_metadata(cfg: Config, root: Path, device: torch.device, info: DistInfo, data_path: str) -> dict:
    import torchvision

    return {
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "run_label": cfg.run_label(),
        "dataset_root": str(root),
        "dataset_meta": _dataset_identity(root),
        "versions": {"cvaia": __version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "python": platform.python_version()},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "world_size": info.world_size,
        "data_path": data_path,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "resumed": [],
    }


def _prepare_run_dir(run_dir: Path, cfg: Config, resume: bool, force: bool, lock: FileLock,
                     log: Callable[[str], None]) -> tuple[str, FileLock]:
    """Decide (under the lock) what to do: ``done``, ``diverged``, ``resume`` or ``fresh``.

    Moves an old folder aside when ``force`` (finished or diverged run) or when ``resume`` is
    False (unfinished run). Returns the decision and the lock now held (a new one after a move).
    """
    cfg_file = run_dir / "config.json"
    if cfg_file.is_file():
        stored = read_json(cfg_file).get("config_hash")
        if stored is not None and stored != cfg.config_hash():
            raise ConfigError(f"{run_dir}: holds a run of another configuration (hash {stored}, "
                              f"this one {cfg.config_hash()}); choose another folder")
    finished = is_finished(run_dir)
    if finished and not force:
        return "done", lock
    if (run_dir / DIVERGED_FILE).is_file() and not force and resume:
        return "diverged", lock
    has_content = any(p.name != ".lock" for p in run_dir.iterdir()) if run_dir.is_dir() else False
    if has_content and (force or not resume):
        aside = move_aside(run_dir)
        log(f"moved the old run folder aside to {aside}")
        run_dir.mkdir(parents=True)
        new_lock = FileLock(run_dir / ".lock").acquire()
        lock.release()
        return "fresh", new_lock
    if (run_dir / "checkpoints" / "last.pt").is_file():
        return "resume", lock
    return "fresh", lock


# ---- the training run ----------------------------------------------------------------------------
def train(cfg: Config, run_dir: str | os.PathLike | None = None, resume: bool = True,
          progress: bool | Callable[[dict], None] | None = None, *, force: bool = False,
          _stop_after_epoch: int | None = None) -> Path:
    """Train ``cfg`` into its run folder and return the folder (see the module docstring).

    ``run_dir`` defaults to :func:`cvaia.runs.run_dir_for` (``<store>/<label>-<hash>``).
    ``resume=False`` starts an unfinished run afresh (the old folder is moved aside);
    ``force=True`` retrains a finished run (likewise). ``progress``: None → tqdm bars unless
    ``cfg.quiet``; True/False → bars on/off; a callable gets each epoch's results dict.
    """
    path, _ = run_training(cfg, run_dir, resume=resume, force=force, progress=progress,
                           _stop_after_epoch=_stop_after_epoch)
    return path


def run_training(cfg: Config, run_dir: str | os.PathLike | None = None, resume: bool = True,
                 force: bool = False, progress: bool | Callable[[dict], None] | None = None,
                 _stop_after_epoch: int | None = None) -> tuple[Path, bool]:
    """:func:`train`, also telling whether this call trained (False: the run was already finished)."""
    if not isinstance(cfg, Config):
        raise TypeError(f"train: expected a cvaia.config.Config, got {type(cfg).__name__}")
    cfg = make_config(cfg)  # a validated copy
    info = setup_distributed(cfg)
    try:
        run_dir = Path(run_dir).expanduser().resolve() if run_dir is not None else run_dir_for(cfg)
        callback = progress if callable(progress) else None
        show_bars = (not cfg.quiet) if progress is None or callable(progress) else bool(progress)
        show_bars = show_bars and info.is_main

        def log(msg: str) -> None:
            if info.is_main and not cfg.quiet:
                print(f"[cvaia] {msg}", flush=True)

        lock = None
        decision = None
        if info.is_main:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = FileLock(run_dir / ".lock").acquire()
            try:
                decision, lock = _prepare_run_dir(run_dir, cfg, resume, force, lock, log)
            except BaseException as exc:
                lock.release()
                decision = f"error:{exc}"
                _broadcast(decision, info)
                raise
        decision = _broadcast(decision, info)
        if decision.startswith("error:"):
            raise RuntimeError(f"rank 0 failed to prepare the run folder: {decision[6:]}")
        try:
            if decision == "done":
                log(f"run already finished: {run_dir} (force=True / --force retrains it)")
                return run_dir, False
            if decision == "diverged":
                raise stored_divergence(run_dir)
            _Trainer(cfg, run_dir, info, decision == "resume", show_bars, callback, log,
                     _stop_after_epoch).run()
            return run_dir, True
        finally:
            if lock is not None:
                lock.release()
    finally:
        if info.initialised_here:
            import torch.distributed as dist

            dist.destroy_process_group()


class _Trainer:
    """One training job (the body of :func:`train`), split into readable steps."""

    def __init__(self, cfg: Config, run_dir: Path, info: DistInfo, resume: bool, show_bars: bool,
                 callback, log, stop_after_epoch):
        self.cfg = cfg
        self.run_dir = run_dir
        self.info = info
        self.resume = resume
        self.show_bars = show_bars
        self.callback = callback
        self.log = log
        self.stop_after_epoch = stop_after_epoch
        self.ckpt_dir = run_dir / "checkpoints"

    # -- set-up --
    def setup(self) -> None:
        from .evaluate import load_eval_source
        from .losses import MultiTaskLoss
        from .models import build_model

        cfg, info = self.cfg, self.info
        self.device = select_device(cfg.device, info.local_rank if info.enabled else None)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
            torch.cuda.reset_peak_memory_stats(self.device)
        self.root = paths.resolve_dataset_root(cfg.dataset_root)
        self.data_path = choose_data_path(cfg, self.root)

        seed_everything(cfg.seed)
        self.model = build_model(cfg).to(self.device)
        if cfg.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.tasks = tuple(getattr(self.model, "tasks", cfg.tasks))
        self.loss_fn = MultiTaskLoss.from_config(cfg).to(self.device)
        self.n_params = count_parameters(self.model)

        data_cls = PreloadedTrainData if self.data_path == "preload" else LoaderTrainData
        self.data = data_cls(cfg, self.root, self.device, info, show_progress=self.show_bars)
        self.val = load_eval_source(self.root, "val", cfg.max_val_images, preload=self.data_path == "preload")
        self.steps_per_epoch = self.data.steps_per_epoch
        self.total_steps = self.steps_per_epoch * cfg.num_epochs

        self.optimizer = build_optimizer(cfg, self.model, self.loss_fn, self.device)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.total_steps)
        self.amp_dtype = autocast_dtype(cfg, self.device)
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)

        net: nn.Module = self.model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DDP(self.model, device_ids=ids)
        if cfg.compile:
            net = torch.compile(net)
        self.net = net

        self.key = best_key(self.tasks)
        self.start_epoch, self.step = 0, 0
        self.best_value, self.best_epoch = None, 0
        self.step_rows: list[dict] = []
        self.epoch_rows: list[dict] = []
        self.epoch_metrics: list[dict] = []
        if self.resume:
            self._load_checkpoint()
        elif info.is_main:
            meta = _run_metadata(cfg, self.root, self.device, info, self.data_path)
            atomic_write_json(self.run_dir / "config.json", meta)

        self.writer = None
        if info.is_main:
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(self.run_dir / "tb"), purge_step=self.step if self.resume else None)
        self.power = PowerMeter(self.device).start() if info.is_main else None

    def _load_checkpoint(self) -> None:
        path = self.ckpt_dir / "last.pt"
        ckpt = torch.load(path, map_location=self.device, weights_only=False)
        stored = make_config(None, **ckpt["config"]).config_hash()
        if stored != self.cfg.config_hash():
            raise ConfigError(f"{path}: checkpoint of another configuration (hash {stored}, "
                              f"expected {self.cfg.config_hash()})")
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.loss_fn.load_state_dict(ckpt["loss"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        self.start_epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        best = ckpt["best_value"]
        self.best_value, self.best_epoch = (tuple(best) if best is not None else None), int(ckpt["best_epoch"])
        # Logs written after the checkpoint (by the killed process) are dropped.
        self.step_rows = [r for r in _read_csv(self.run_dir / "steps.csv") if r["step"] <= self.step]
        self.epoch_rows = [r for r in _read_csv(self.run_dir / "epochs.csv") if r["epoch"] <= self.start_epoch]
        metrics = self.run_dir / "metrics.json"
        if metrics.is_file():
            self.epoch_metrics = [m for m in read_json(metrics).get("epochs", []) if m["epoch"] <= self.start_epoch]
        if self.info.is_main:
            meta = read_json(self.run_dir / "config.json")
            meta.setdefault("resumed", []).append(
                {"at_epoch": self.start_epoch, "at_step": self.step, "device": str(self.device),
                 "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            atomic_write_json(self.run_dir / "config.json", meta)
        self.log(f"resuming {self.run_dir.name} after epoch {self.start_epoch} (step {self.step})")

    # -- checkpoints --
    def _checkpoint(self, epoch: int) -> dict:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": epoch,
            "step": self.step,
            "rng": get_rng_state(),
            "config": self.cfg.to_dict(),
            "best_value": list(self.best_value) if self.best_value is not None else None,
            "best_epoch": self.best_epoch,
            "tasks": list(self.tasks),
        }

    # -- the loop --
    def run(self) -> None:
        self.setup()
        cfg = self.cfg
        self.log(f"training {self.run_dir.name} on {self.device} ({self.data_path} data path, "
                 f"{self.steps_per_epoch} steps/epoch x {cfg.num_epochs} epochs"
                 + (f", {self.info.world_size} processes" if self.info.enabled else "") + ")")
        t_run = time.perf_counter()
        try:
            for epoch in range(self.start_epoch, cfg.num_epochs):
                self._epoch(epoch)
                if self.stop_after_epoch is not None and epoch + 1 >= self.stop_after_epoch:
                    raise SimulatedKill(f"stopped after epoch {epoch + 1} (test hook)")
            if self.info.is_main:
                self._finish(time.perf_counter() - t_run)
        except TrainingDiverged as exc:
            if self.info.is_main:  # a result, too: the same config is not retrained by default
                atomic_write_json(self.run_dir / DIVERGED_FILE, {
                    "message": str(exc), "step": exc.step,
                    "time": datetime.now(timezone.utc).isoformat(timespec="seconds")})
            raise
        finally:
            if self.power is not None:
                self.power.stop()
            if self.writer is not None:
                self.writer.close()

    def _epoch(self, epoch: int) -> None:
        from .evaluate import evaluate

        cfg, info, dev = self.cfg, self.info, self.device
        tasks = self.tasks
        self.model.train()
        self.loss_fn.train()
        power_mark = self.power.mark() if self.power is not None else 0
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        t0 = time.perf_counter()

        zero = torch.zeros((), device=dev)
        win_total, win_parts, win_n = zero.clone(), {t: zero.clone() for t in tasks}, 0
        ep_total, ep_parts = zero.clone(), {t: zero.clone() for t in tasks}
        first_bad = torch.full((), -1, dtype=torch.long, device=dev)

        bar = None
        batches = self.data.batches(epoch)
        if self.show_bars:
            from tqdm.auto import tqdm

            bar = tqdm(batches, total=self.steps_per_epoch, desc=f"epoch {epoch + 1}/{cfg.num_epochs}",
                       unit="step", leave=False)
            batches = bar
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        loss_params = [p for p in self.loss_fn.parameters() if p.requires_grad]
        lr = self.scheduler.get_last_lr()[0]
        for rgb, targets in batches:
            lr = self.scheduler.get_last_lr()[0]
            if cfg.channels_last:
                rgb = rgb.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                outputs = self.net(rgb)
            outputs = {k: v.float() for k, v in outputs.items()}
            total, parts = self.loss_fn(outputs, targets)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(total).backward()
            if info.enabled and loss_params:
                _all_reduce_mean_([p.grad for p in loss_params if p.grad is not None], info)
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.step += 1

            # Bookkeeping on the device: no host synchronisation here.
            total = total.detach()
            first_bad = torch.where((first_bad < 0) & ~torch.isfinite(total),
                                    torch.full_like(first_bad, self.step), first_bad)
            win_total += total
            ep_total += total
            for t in tasks:
                win_parts[t] += parts[t]
                ep_parts[t] += parts[t]
            win_n += 1
            if self.step % cfg.log_every == 0:
                self._log_window(epoch, win_total, win_parts, win_n, first_bad, lr, bar)
                win_total.zero_()
                for t in tasks:
                    win_parts[t].zero_()
                win_n = 0
        if win_n:
            self._log_window(epoch, win_total, win_parts, win_n, first_bad, lr, bar)
        if bar is not None:
            bar.close()
        self._check_finite(first_bad, epoch)

        n_steps = self.steps_per_epoch
        _all_reduce_mean_([ep_total, *ep_parts.values()], info)
        mean_total = ep_total.item() / n_steps
        mean_parts = {t: ep_parts[t].item() / n_steps for t in tasks}
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        train_time = time.perf_counter() - t0

        t1 = time.perf_counter()
        result = evaluate(self.model, self.val, tasks=tasks, device=dev, batch_size=cfg.batch_size_validation,
                          max_images=cfg.max_val_images, tta_flip=cfg.tta_flip, autocast_dtype=self.amp_dtype,
                          channels_last=cfg.channels_last, rank=info.rank, world_size=info.world_size)
        eval_time = time.perf_counter() - t1
        self.loss_fn.end_epoch(mean_parts)

        metrics = result.metrics
        images = n_steps * cfg.batch_size * info.world_size
        cuda_peak = cuda_peak_memory_mb(dev)
        row = {
            "epoch": epoch + 1, "step": self.step,
            **{k: metrics[k] for k in ("miou", "pixel_acc", "si_log_rmse", "abs_rel", "rmse",
                                       "delta1", "delta2", "delta3", "score")},
            "lr": lr, "train_loss": mean_total,
            "train_loss_semseg": mean_parts.get("semseg"), "train_loss_depth": mean_parts.get("depth"),
            "train_time_s": train_time, "eval_time_s": eval_time, "epoch_time_s": train_time + eval_time,
            "images_per_s": images / train_time if train_time > 0 else math.nan,
            "peak_mem_mb": cuda_peak if cuda_peak is not None else peak_rss_mb(),
            "peak_rss_mb": peak_rss_mb(),
            "power_w": self.power.mean_since(power_mark) if self.power is not None else None,
        }
        value = selection_value(metrics, tasks)
        is_best = ((value is not None and (self.best_value is None or value > self.best_value))
                   or self.best_epoch == 0)  # the first epoch always gives a best.pt
        if is_best:
            self.best_value, self.best_epoch = value, epoch + 1

        if info.is_main:
            self.epoch_rows.append(row)
            self.epoch_metrics.append({**row, "per_class_iou": metrics.get("per_class_iou")})
            # Logs first, then checkpoints: a kill in between is repaired on resume, which
            # drops log rows newer than last.pt.
            _write_csv(self.run_dir / "steps.csv", self.step_rows, _step_columns(tasks))
            _write_csv(self.run_dir / "epochs.csv", self.epoch_rows, EPOCH_COLUMNS)
            atomic_write_json(self.run_dir / "metrics.json",
                              {"epochs": self.epoch_metrics, "best_epoch": self.best_epoch, "best_key": self.key})
            # best.pt before last.pt: if killed in between, the resumed run repeats this epoch.
            ckpt = self._checkpoint(epoch + 1)
            if is_best:
                if result.confusion is not None:
                    atomic_save_npy(self.run_dir / "confusion.npy", result.confusion)
                atomic_torch_save(ckpt, self.ckpt_dir / "best.pt")
                atomic_link_or_copy(self.ckpt_dir / "best.pt", self.ckpt_dir / "last.pt")
            else:
                atomic_torch_save(ckpt, self.ckpt_dir / "last.pt")
            self._tensorboard_epoch(row)
            self.log(self._epoch_summary(row))
            if self.callback is not None:
                self.callback(dict(row))
        if info.enabled:
            import torch.distributed as dist

            dist.barrier()

    def _log_window(self, epoch, win_total, win_parts, win_n, first_bad, lr, bar) -> None:
        """Read the window's mean losses back (one sync every ``log_every`` steps) and log them."""
        self._check_finite(first_bad, epoch)
        weights = self.loss_fn.weights()  # the weights the next step will use
        vals = torch.stack([win_total, *win_parts.values()])
        _all_reduce_mean_([vals], self.info)
        vals = (vals / win_n).tolist()
        row = {"step": self.step, "epoch": epoch + 1, "loss": vals[0]}
        for t, v in zip(self.tasks, vals[1:], strict=True):
            row[f"loss_{t}"] = v
        row["lr"] = lr
        for t in self.tasks:
            row[f"weight_{t}"] = weights.get(t)
        if self.info.is_main:
            self.step_rows.append(row)
            if self.writer is not None:
                self.writer.add_scalar("train/loss", row["loss"], self.step)
                for t in self.tasks:
                    self.writer.add_scalar(f"train/loss_{t}", row[f"loss_{t}"], self.step)
                    if weights.get(t) is not None:
                        self.writer.add_scalar(f"train/weight_{t}", weights[t], self.step)
                self.writer.add_scalar("train/lr", lr, self.step)
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss']:.4f}")

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        bad = int(first_bad.item())
        if self.info.enabled:
            t = torch.tensor([bad], device=self.device)
            import torch.distributed as dist

            dist.all_reduce(t, op=dist.ReduceOp.MAX)
            bad = int(t.item())
        if bad >= 0:
            last = self.ckpt_dir / "last.pt"
            kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was written yet"
            raise TrainingDiverged(
                f"training diverged: the loss became NaN/inf at step {bad} (epoch {epoch + 1}) of run "
                f"{self.run_dir.name}; {kept}. Try a lower --optimizer_lr, --grad_clip, or fp32 "
                f"precision.", step=bad)

    def _tensorboard_epoch(self, row: dict) -> None:
        if self.writer is None:
            return
        for k in ("miou", "pixel_acc", "si_log_rmse", "abs_rel", "rmse", "delta1", "score",
                  "train_loss", "images_per_s", "epoch_time_s"):
            v = row.get(k)
            if v is not None and isinstance(v, float) and math.isfinite(v):
                self.writer.add_scalar(f"epoch/{k}", v, row["epoch"])
        self.writer.flush()

    @staticmethod
    def _epoch_summary(row: dict) -> str:
        parts = [f"epoch {row['epoch']}", f"loss {row['train_loss']:.4f}"]
        for k, label in (("miou", "mIoU"), ("si_log_rmse", "SI-logRMSE"), ("score", "score")):
            v = row.get(k)
            if v is not None and math.isfinite(v):
                parts.append(f"{label} {v:.2f}")
        parts.append(f"{row['images_per_s']:.1f} img/s")
        parts.append(f"{row['epoch_time_s']:.1f} s")
        return ", ".join(parts)

    def _finish(self, wall_time: float) -> None:
        last = self.epoch_rows[-1]
        best = next((m for m in self.epoch_metrics if m["epoch"] == self.best_epoch), last)
        final = {k: last.get(k) for k in ("epoch", "step", "miou", "pixel_acc", "si_log_rmse", "abs_rel",
                                           "rmse", "delta1", "delta2", "delta3", "score", "train_loss")}
        final["per_class_iou"] = self.epoch_metrics[-1].get("per_class_iou")
        train_time = sum(r["train_time_s"] for r in self.epoch_rows)
        images = self.steps_per_epoch * self.cfg.batch_size * self.info.world_size * len(self.epoch_rows)
        powers = [r["power_w"] for r in self.epoch_rows if r.get("power_w") is not None]
        summary = {
            "epochs": len(self.epoch_rows),
            "steps": self.step,
            "train_time_s": train_time,
            "eval_time_s": sum(r["eval_time_s"] for r in self.epoch_rows),
            "total_time_s": sum(r["epoch_time_s"] for r in self.epoch_rows),
            "images_per_s": images / train_time if train_time > 0 else None,
            "peak_mem_mb": max(r["peak_mem_mb"] for r in self.epoch_rows),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in self.epoch_rows),
            "mean_power_w": sum(powers) / len(powers) if powers else None,
            "params": self.n_params,
            "best_epoch": self.best_epoch,
            "best_key": self.key,
            "device": str(self.device),
            "world_size": self.info.world_size,
        }
        done = {"final": final, "best": {k: best.get(k) for k in final if k in best} | {"per_class_iou": best.get("per_class_iou")},
                "summary": summary,
                "finished": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        atomic_write_json(self.run_dir / "done.json", done)
        self._slim_checkpoints()
        self.log(f"finished {self.run_dir}")

    def _slim_checkpoints(self) -> None:
        """Drop what only resuming needs (optimizer, scheduler, RNG) from a finished run.

        The Adam moments are twice the model's size, so a finished run's checkpoints shrink to
        about a third (e.g. ~200 MB → ~66 MB for the joint model): sweeps of dozens of runs
        stay affordable on a laptop. Each file is replaced atomically; best.pt and last.pt stay
        one file when they were.
        """
        best, last = self.ckpt_dir / "best.pt", self.ckpt_dir / "last.pt"
        linked = best.is_file() and last.is_file() and os.path.samefile(best, last)
        for path in ([best] if linked else [best, last]):
            if path.is_file():
                ckpt = torch.load(path, map_location="cpu", weights_only=False)
                slim = {k: v for k, v in ckpt.items() if k not in SLIM_DROPPED}
                atomic_torch_save({**slim, "slim": True}, path)
        if linked:
            atomic_link_or_copy(best, last)
