"""The training engine: one configuration in, one finished run folder out.

:func:`train` trains ``cfg`` into its run folder (layout: :mod:`cvaia.run_folder`), evaluating
on the validation split after every epoch. A killed run resumes from ``checkpoints/last.pt`` at
the saved step with the same data order, augmentation and RNG streams (each rank's state is
saved); on a CPU it ends exactly like an uninterrupted run, on CUDA not bitwise (cuDNN autotuning
and atomics in backward kernels; README "Resuming"); a finished run is returned at once (``force=True`` retrains it, the old
folder moved aside); ``<run>/.lock`` makes two processes asking for one run train it once; a
NaN/inf loss or NaN/inf weights stop with :class:`~cvaia.run_folder.TrainingDiverged` naming
the step, keeping the last good checkpoint (a non-finite one is never written); under fp16 with a
gradient scaler a non-finite loss is a skipped step, and only more than
:data:`MAX_SKIPPED_STEPS` in a row diverge. A finished run
is read without its lock (a read-only store serves it); one trained on data that changed since
is retrained; an unwritable store raises :class:`~cvaia.run_folder.RunStoreError`; an attempt
that fails before its first checkpoint leaves no folder. Course options: gradient accumulation
(the step counter counts optimizer steps), TensorBoard image grids (:mod:`cvaia.visualize`),
``prepare_submission`` and ``resume_from`` (``--resume PATH``).

An epoch reads like torchvision's reference script: :meth:`_Trainer.train_one_epoch`, an
evaluate call, one results row, the folder write. Batches come from
:mod:`cvaia.data.train_batches`, optimizer and schedule from :mod:`cvaia.optim`, process
groups from :mod:`cvaia.distributed` (``torchrun --nproc_per_node N -m cvaia train ...``: every
process holds its shard of the training split and shuffles it each epoch, evaluation is sharded
likewise, rank 0 writes the run; ``--sync_batchnorm``). Losses stay on the device between
``log_every`` read-backs. On CUDA, by default: ``--precision auto`` (bf16 autocast where the GPU
has it, else fp16 with a gradient scaler), channels_last, ``cudnn.benchmark`` and fused Adam;
``torch.compile`` on request. The run records the precision and memory format it used; peak
memory is that of each epoch's training steps, less the training data preloaded on the GPU;
power is summed over the job's GPUs.
"""

from __future__ import annotations

import contextlib
import math
import os
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn as nn

from . import paths
from . import run_folder as rf
from .config import MIN_IMAGE_SIZE, Config, ConfigError, make_config
from .data.miniscapes import MiniscapesSplit, check_image_size
from .data.train_batches import choose_data_path, training_data
from .devices import PowerMeter, cuda_peak_memory_mb, peak_rss_mb, select_device
from .distributed import (
    DistInfo,
    all_reduce_max,
    all_reduce_mean_,
    all_reduce_sum,
    barrier,
    broadcast,
    broadcast_buffers_,
    gather_objects,
    main_ready,
    seed_rank,
    setup_distributed,
    sync_batchnorm,
    teardown_distributed,
    wait_for_main,
)
from .errors import ConfigNotice
from .files import sigint_deferred
from .optim import build_optimizer, build_scheduler, load_optimizer_state
from .params import count_parameters
from .rng import get_rng_state, seed_everything, set_rng_state
from .run_folder import TrainingDiverged
from .visualize import Observer, TensorBoardLog

__all__ = ["TrainResult", "TrainingDiverged", "autocast_dtype", "best_key", "selection_value", "train"]


class LossSums:
    """Sums of the loss and its task parts over micro-batches, kept on the device (adding
    them synchronises nothing; :meth:`means` reads them back once). A micro-batch with a
    non-finite loss is not summed (under fp16 with a gradient scaler its step is skipped)."""

    def __init__(self, tasks, device: torch.device) -> None:
        self.sums = torch.zeros(2 + len(tasks), device=device)  # finite micro-batches, total, one per task
        self.tasks, self.n = tuple(tasks), 0  # n: micro-batches added, finite or not

    def add(self, total: torch.Tensor, parts: dict[str, torch.Tensor]) -> None:
        values = torch.stack([total.new_ones(()), total, *(parts[t].detach() for t in self.tasks)])
        self.sums += torch.where(torch.isfinite(values).all(), values, torch.zeros_like(values))
        self.n += 1

    def reset(self) -> None:
        self.sums.zero_()
        self.n = 0

    def means(self, info: DistInfo) -> list[float]:
        """``[mean total, mean per task...]`` over the finite micro-batches added (and the ranks);
        NaN when there was none."""
        sums = self.sums.clone()
        if info.enabled:
            import torch.distributed as dist

            dist.all_reduce(sums, op=dist.ReduceOp.SUM)
        count, *values = sums.tolist()
        return [v / count if count else math.nan for v in values]


#: Under fp16 with a gradient scaler a non-finite loss skips its optimizer step (the scaler
#: lowers its scale and the run goes on); this many skipped steps in a row — the halvings that
#: take the scaler from its initial 2**16 to 1 — make the run diverged: lowering the scale no
#: longer helps.
MAX_SKIPPED_STEPS = 16


def grad_scaler(amp_dtype: torch.dtype | None) -> torch.amp.GradScaler:
    """The trainer's gradient scaler: enabled for fp16 autocast (CUDA) only."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)


class TrainResult(NamedTuple):
    """What :func:`train` returns: the run folder, and whether this call trained it (False: the
    run was already finished, e.g. by another process that held the lock)."""

    run_dir: Path
    trained: bool


def autocast_dtype(cfg: Config, device: torch.device) -> torch.dtype | None:
    """bf16/fp16 on CUDA per :meth:`Config.precision_on` (``auto``: bf16 where the GPU has it,
    else fp16); None (fp32) elsewhere."""
    if device.type != "cuda":
        return None
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(cfg.precision_on(device))


def rank_rng_state(ckpt: dict, rank: int, world_size: int) -> dict:
    """The RNG state this rank saved (``rng_ranks``, when the job had as many ranks), else
    rank 0's (checkpoints of older versions, or a resume with another number of processes)."""
    states = ckpt.get("rng_ranks")
    if states and len(states) == world_size:
        return states[rank]
    return ckpt["rng"]


def crop_fill_share(crop: int, scale_max: float, height: int, width: int) -> float:
    """The share of every training crop that lies outside ``height``×``width`` images (filled,
    ignored by the losses): a ``crop``-pixel crop covers ``crop / scale`` image pixels a side, so
    at least this share at the largest scale ``scale_max``; 0 when the crop fits."""
    side = crop / scale_max
    return max(0.0, 1.0 - min(side, height) * min(side, width) / side**2)


def crop_notice(cfg: Config, root: Path) -> tuple[str, float] | None:
    """``(message, fill share)`` when ``cfg``'s crops exceed the training images of ``root``
    (e.g. 256² crops of the 128×256 synthetic set: half of every crop is fill), else None."""
    height, width = MiniscapesSplit(root, "train").image_size
    share = crop_fill_share(cfg.aug_input_crop_size, cfg.aug_geom_scale_max, height, width)
    if share <= 0:
        return None
    return (f"--aug_input_crop_size {cfg.aug_input_crop_size} exceeds the training images of {root} "
            f"({height}x{width}): {share:.0%} of every crop is fill that no loss sees, so each step learns from "
            f"less than its batch suggests; use crops of at most {min(height, width)} or a data set of larger "
            f"images (--dataset_root)", share)


def job_data_path(cfg: Config, root: Path, info: DistInfo) -> str:
    """The data path of the whole job: rank 0's :func:`~cvaia.data.train_batches.choose_data_path`
    on every rank (each rank judging its own free memory could pick another path, e.g. on
    another node, and the ranks would then draw different batches)."""
    return broadcast(choose_data_path(cfg, root) if info.is_main else None, info)


def training_peak_mb(device: torch.device, data_bytes: int, info: DistInfo) -> float | None:
    """Peak memory of the training steps since the last reset (MiB), less the ``data_bytes`` of
    the training data preloaded on the GPU; the largest over the ranks. None off CUDA."""
    peak = cuda_peak_memory_mb(device)
    if peak is None:
        return None
    mine = peak - data_bytes / 2**20
    return float(all_reduce_max(int(round(mine)), info, device)) if info.enabled else mine


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


def served_precision_note(cfg: Config, run_dir: Path) -> str:
    """``"; it trained in fp32 on cpu, here it would train in bf16 on cuda"`` when a finished
    run of ``cfg`` used another precision than this machine would (the run hash holds the
    precision asked for, :attr:`Config.precision_request`, not the machine's), else ``""``."""
    try:
        meta = rf.read_json(Path(run_dir) / rf.CONFIG_FILE)
    except (OSError, ValueError):
        return ""
    used, here = meta.get("precision"), cfg.effective_precision
    if used is None or used == here:
        return ""
    try:
        target = select_device(cfg.device).type
    except ConfigError:  # e.g. --device cuda where there is none: nothing trains here anyway
        target = cfg.device
    device = str(meta.get("device", "?")).split(":")[0]
    return f"; it trained in {used} on {device}, here it would train in {here} on {target}"


def train(cfg: Config, run_dir: str | os.PathLike | None = None, *, resume: bool = True, force: bool = False,
          progress: bool | Callable[[dict], None] | None = None,
          resume_from: str | os.PathLike | None = None, verify_data: bool = False) -> TrainResult:
    """Train ``cfg`` into its run folder (see the module docstring).

    ``run_dir`` defaults to :func:`cvaia.run_folder.run_dir_for` (``<store>/<label>-<hash>``).
    ``resume=False`` starts an unfinished run afresh (the old folder is moved aside);
    ``force=True`` retrains a finished or diverged run (likewise). ``resume_from``: a checkpoint
    (``.pt``) or run folder of this same configuration to continue from
    (:func:`cvaia.run_folder.adopt_checkpoint`). ``progress``: None → tqdm bars unless
    ``cfg.quiet``; True/False → bars on/off; a callable gets each epoch's results dict once
    that epoch's checkpoint is written (an exception it raises stops the run there,
    resumable like a killed job). ``verify_data``: a finished run is served only when the data's
    contents (not only names, sizes and times) are those it was trained on (reads the whole set).
    """
    if not isinstance(cfg, Config):
        raise TypeError(f"train: expected a cvaia.config.Config, got {type(cfg).__name__}")
    cfg = make_config(cfg)  # a validated copy
    info = setup_distributed(cfg)
    try:
        run_dir = Path(run_dir).expanduser().absolute() if run_dir is not None else rf.run_dir_for(cfg)
        root = paths.resolve_dataset_root(cfg.dataset_root)
        callback = progress if callable(progress) else None
        show_bars = (not cfg.quiet) if progress is None or callable(progress) else bool(progress)
        show_bars = show_bars and info.is_main

        def log(msg: str) -> None:
            if info.is_main and not cfg.quiet:
                print(f"[cvaia] {msg}", flush=True)

        # A finished run is read, never locked: a read-only store still serves it. Rank 0's
        # view decides for every rank (a rank that looked a moment earlier would wait forever).
        finished = info.is_main and not force and rf.is_finished(run_dir) and rf.data_mismatch(run_dir, root, verify_data) is None
        if broadcast(finished, info):
            log(f"run already finished: {run_dir} (force=True / --force retrains it)"
                + served_precision_note(cfg, run_dir))
            _submission(cfg, run_dir, info, log)
            return TrainResult(run_dir, False)
        try:
            return _train_locked(cfg, run_dir, root, info, resume, force, resume_from, show_bars, callback, log,
                                 verify_data)
        except OSError as exc:
            if isinstance(exc, rf.RunStoreError) or not rf.in_store(exc, run_dir.parent):
                raise
            raise rf.store_error(exc, run_dir) from exc
    finally:
        teardown_distributed(info)


def _train_locked(cfg: Config, run_dir: Path, root: Path, info: DistInfo, resume: bool, force: bool,
                  resume_from, show_bars: bool, callback, log, verify_data: bool = False) -> TrainResult:
    """:func:`train` under the run's lock (rank 0 decides, every rank trains)."""
    def waiting(holder: str) -> None:
        log(f"waiting for the run {run_dir.name}: {holder} holds its lock (it is training this run); "
            f"this process goes on once it is released")

    lock = None
    decision, adopted = None, None
    if info.is_main:
        try:
            run_dir.mkdir(parents=True, exist_ok=True)
            lock = rf.lock(run_dir, on_wait=waiting)
            decision, lock = rf.prepare(run_dir, cfg.config_hash(), resume, force, lock, log, data_root=root,
                                        verify_data=verify_data)
            if resume_from is not None and decision in ("fresh", "resume"):
                decision, adopted = rf.adopt_checkpoint(resume_from, run_dir, cfg, decision, log)
        except BaseException as exc:
            if lock is not None:
                lock.release()
            main_ready(info)
            broadcast(f"error:{exc}", info)
            raise
        main_ready(info)
    else:  # rank 0 may wait for the lock for hours: not inside a collective, which would time out
        wait_for_main(info)
    decision = broadcast(decision, info)
    if decision.startswith("error:"):
        raise RuntimeError(f"rank 0 failed to prepare the run folder: {decision[6:]}")
    try:
        if decision == "done":
            log(f"run already finished: {run_dir} (force=True / --force retrains it)"
                + served_precision_note(cfg, run_dir))
            _submission(cfg, run_dir, info, log)
            return TrainResult(run_dir, False)
        if decision == "diverged":
            raise rf.stored_divergence(run_dir)
        try:
            _Trainer(cfg, run_dir, info, decision == "resume", show_bars, callback, log, adopted).run()
        except BaseException as exc:
            if info.is_main and not isinstance(exc, TrainingDiverged) and rf.remove_stub(run_dir):
                log(f"removed {run_dir} (the attempt failed before its first checkpoint)")
            raise
        _submission(cfg, run_dir, info, log)
        return TrainResult(run_dir, True)
    finally:
        if lock is not None:
            lock.release()


def _submission(cfg: Config, run_dir: Path, info: DistInfo, log) -> None:
    """``prepare_submission``: pack the test predictions of the best checkpoint (rank 0)."""
    if not (cfg.prepare_submission and info.is_main):
        return
    archive = rf.prepare_submission(run_dir, device=select_device(cfg.device))
    log(f"submission (best checkpoint, test split) packed for the grader: {archive}")


@dataclass(eq=False)
class _Trainer:
    """One training job (the body of :func:`train`), split into readable steps."""

    cfg: Config
    run_dir: Path
    info: DistInfo
    resume: bool
    show_bars: bool
    callback: Callable[[dict], None] | None
    log: Callable[[str], None]
    adopted: dict | None = None  # the checkpoint given to --resume PATH, recorded in config.json

    # -- set-up --
    def setup(self) -> None:
        from .evaluate import load_eval_source
        from .losses import MultiTaskLoss
        from .models import build_model

        cfg, info = self.cfg, self.info
        self.device = select_device(cfg.device, info.cuda_index if info.enabled else None)
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
            torch.backends.cudnn.benchmark = True
            if cfg.precision == "bf16" and torch.cuda.get_device_capability(self.device) < (8, 0):
                raise ConfigError(f"--precision: bf16 needs a GPU of compute capability 8.0 or newer; "
                                  f"{torch.cuda.get_device_name(self.device)} has none: use --precision "
                                  f"auto (fp16 with a gradient scaler here) or fp16")
        self.precision = cfg.precision_on(self.device)
        self.channels_last = cfg.channels_last_on(self.device)
        self.root = paths.resolve_dataset_root(cfg.dataset_root)
        check_image_size(self.root, ("train", "val", "test") if cfg.prepare_submission else ("train", "val"),
                         MIN_IMAGE_SIZE)
        self.data_path = job_data_path(cfg, self.root, info)
        self.crop_fill = 0.0
        notice = crop_notice(cfg, self.root)
        if notice is not None:
            self.crop_fill = notice[1]
            if info.is_main:  # once per run (the CLI prints it as one [cvaia] line, a notebook shows it)
                warnings.warn(notice[0], ConfigNotice, stacklevel=2)

        seed_everything(cfg.seed)
        self.model = sync_batchnorm(build_model(cfg).to(self.device), info, self.device, cfg.sync_batchnorm)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.tasks = tuple(getattr(self.model, "tasks", cfg.tasks))
        self.loss_fn = MultiTaskLoss.from_config(cfg).to(self.device)
        self.n_params = count_parameters(self.model)

        self.data = training_data(cfg, self.root, self.data_path, self.device, info.rank, info.world_size,
                                  show_progress=self.show_bars)
        self.val = load_eval_source(self.root, "val", cfg.max_val_images, preload=self.data_path == "preload")
        self.steps_per_epoch = self.data.steps_per_epoch  # batches per epoch
        # optimizer steps per epoch: one per accumulate_grad_batches batches (the last group may be smaller)
        self.optim_steps_per_epoch = math.ceil(self.steps_per_epoch / cfg.accumulate_grad_batches)

        self.optimizer = build_optimizer(cfg, self.model, self.loss_fn, self.device)
        self.scheduler = build_scheduler(cfg, self.optimizer, self.optim_steps_per_epoch * cfg.num_epochs)
        self.amp_dtype = autocast_dtype(cfg, self.device)
        self.scaler = grad_scaler(self.amp_dtype)
        self.skip_streak = torch.zeros((), dtype=torch.long, device=self.device)  # skipped fp16 steps in a row

        net: nn.Module = self.model
        if info.enabled:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index] if self.device.type == "cuda" else None
            net = DDP(self.model, device_ids=ids)
        if cfg.compile:
            net = torch.compile(net)
        self.net = net
        seed_rank(cfg.seed, info)  # each rank its own dropout masks (the model is built: same on every rank)

        self.key = best_key(self.tasks)
        self.start_epoch, self.step = 0, 0
        self.best_value, self.best_epoch = None, 0
        self.step_rows: list[dict] = []
        self.epoch_rows: list[dict] = []
        self.epoch_metrics: list[dict] = []
        if self.resume:
            self._load_checkpoint()
        elif info.is_main:
            rf.write_metadata(self.run_dir, self._metadata())
        self.tb = None
        if info.is_main:
            observer = Observer.for_run(cfg, self.tasks, self.root)
            for note in observer.notes():
                self.log(note)
            self.tb = TensorBoardLog(self.run_dir / rf.TB_DIR, observer, purge_step=self.step if self.resume else None)
        self.power = PowerMeter(self.device).start()  # every rank reads its own GPU

    def _metadata(self) -> dict:
        """The new run's ``config.json``; ``crop_fill_share``: the share of each crop outside the images."""
        meta = rf.run_metadata(self.cfg, self.root, self.device, self.info.world_size, self.data_path)
        meta["crop_fill_share"] = self.crop_fill
        return meta

    def _load_checkpoint(self) -> None:
        path = rf.checkpoint_path(self.run_dir, "last")
        if self.info.is_main and not rf.is_run_folder(self.run_dir):  # adopted from --resume PATH alone
            rf.write_metadata(self.run_dir, self._metadata())
        # On the CPU: load_state_dict copies to the model's device, and RNG states must stay
        # CPU byte tensors (a GPU-mapped state crashed torch.cuda.set_rng_state). Read safely
        # (tensors only); a broken last.pt falls back to the newest intact checkpoint.
        path, ckpt = rf.resume_checkpoint(self.run_dir, self.log)
        stored = make_config(None, **ckpt["config"]).config_hash()
        if stored != self.cfg.config_hash():
            raise ConfigError(f"{path}: checkpoint of another configuration (hash {stored}, "
                              f"expected {self.cfg.config_hash()})")
        self.model.load_state_dict(ckpt["model"])
        load_optimizer_state(self.optimizer, ckpt["optimizer"])  # in the parameters' memory layout
        self.scheduler.load_state_dict(ckpt["scheduler"])
        self.loss_fn.load_state_dict(ckpt["loss"])
        if ckpt.get("scaler"):
            self.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(rank_rng_state(ckpt, self.info.rank, self.info.world_size))
        self.start_epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        best = ckpt["best_value"]
        self.best_value, self.best_epoch = (tuple(best) if best is not None else None), int(ckpt["best_epoch"])
        self.step_rows, self.epoch_rows, self.epoch_metrics = rf.read_logs(self.run_dir, self.step, self.start_epoch)
        if self.info.is_main:
            rf.record_resume(self.run_dir, self.start_epoch, self.step, self.device)
            if self.adopted is not None:
                rf.record_adoption(self.run_dir, self.adopted)
        self.log(f"resuming {self.run_dir.name} after epoch {self.start_epoch} (step {self.step})")

    def _checkpoint(self, epoch: int, rng_states: list | None = None) -> dict:
        """The checkpoint after ``epoch``; ``rng_states``: every rank's RNG state (rank order)."""
        rng_states = rng_states if rng_states is not None else [get_rng_state()]
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "loss": self.loss_fn.state_dict(),
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "epoch": epoch,
            "step": self.step,
            "rng": rng_states[0],
            "rng_ranks": rng_states,
            "config": self.cfg.to_dict(),
            "best_value": list(self.best_value) if self.best_value is not None else None,
            "best_epoch": self.best_epoch,
            "tasks": list(self.tasks),
        }

    # -- the loop --
    def run(self) -> None:
        self.setup()
        cfg = self.cfg
        accum = (f" in {self.optim_steps_per_epoch} optimizer steps" if cfg.accumulate_grad_batches > 1 else "")
        self.log(f"training {self.run_dir.name} on {self.device} ({self.data_path} data path, "
                 f"{self.steps_per_epoch} batches{accum}/epoch x {cfg.num_epochs} epochs"
                 + (f", {self.info.world_size} processes" if self.info.enabled else "") + ")")
        try:
            for epoch in range(self.start_epoch, cfg.num_epochs):
                self._epoch(epoch)
            if self.info.is_main:
                self._finish()
        except TrainingDiverged as exc:
            if self.info.is_main:  # a result, too: the same config is not retrained by default
                rf.record_divergence(self.run_dir, exc)
            raise
        finally:
            if self.power is not None:
                self.power.stop()
            if self.tb is not None:
                self.tb.close()

    def _epoch(self, epoch: int) -> None:
        """Train one epoch, evaluate, make the results row, write the run folder."""
        from .evaluate import evaluate

        cfg, info = self.cfg, self.info
        power_mark = self.power.mark() if self.power is not None else 0
        mean_total, mean_parts, lr, train_time = self.train_one_epoch(epoch)
        self._check_weights(epoch)

        broadcast_buffers_(self.model, info)  # evaluate what rank 0 saves
        t1 = time.perf_counter()
        result = evaluate(self.model, self.val, tasks=self.tasks, device=self.device,
                          batch_size=cfg.batch_size_validation, max_images=cfg.max_val_images,
                          tta_flip=cfg.tta_flip, autocast_dtype=self.amp_dtype, channels_last=self.channels_last,
                          rank=info.rank, world_size=info.world_size, workers=cfg.workers_validation)
        eval_time = time.perf_counter() - t1
        self.loss_fn.end_epoch(mean_parts)

        metrics = result.metrics
        images = self.steps_per_epoch * cfg.batch_size * info.world_size
        cuda_peak = self.train_peak_mb
        row = rf.epoch_row(epoch + 1, self.step, metrics, lr, mean_total, mean_parts, train_time, eval_time,
                           images_per_s=images / train_time if train_time > 0 else math.nan,
                           peak_mem_mb=cuda_peak if cuda_peak is not None else peak_rss_mb(),
                           peak_rss_mb=peak_rss_mb(),
                           power_w=self._job_power(power_mark))
        value = selection_value(metrics, self.tasks)
        is_best = ((value is not None and (self.best_value is None or value > self.best_value))
                   or self.best_epoch == 0)  # the first epoch always gives a best.pt
        if is_best:
            self.best_value, self.best_epoch = value, epoch + 1

        rng_states = gather_objects(get_rng_state(), info)  # every rank's, for its resume
        if info.is_main:
            self.epoch_rows.append(row)
            self.epoch_metrics.append({**row, "per_class_iou": metrics.get("per_class_iou")})
            with sigint_deferred():  # the epoch's files are written together, a Ctrl-C waits for them
                rf.write_logs(self.run_dir, self.tasks, self.step_rows, self.epoch_rows, self.epoch_metrics,
                              self.best_epoch, self.key)
                rf.save_checkpoint(self.run_dir, self._checkpoint(epoch + 1, rng_states), is_best,
                                   result.confusion)
            self.tb.epoch(row)
            self.log(self._epoch_summary(row))
            if self.callback is not None:
                self.callback(dict(row))
        barrier(info)

    def train_one_epoch(self, epoch: int) -> tuple[float, dict[str, float], float, float]:
        """One pass over this rank's batches: ``(mean loss, {task: mean loss}, last lr, seconds)``."""
        cfg, info, dev, tasks = self.cfg, self.info, self.device, self.tasks
        self.model.train()
        self.loss_fn.train()
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)  # this epoch's training steps, not set-up or evaluation
        t0 = time.perf_counter()

        window, whole = LossSums(tasks, dev), LossSums(tasks, dev)  # since the last log line; the epoch
        first_bad = torch.full((), -1, dtype=torch.long, device=dev)  # the step the run diverged at
        # fp16 + gradient scaler: non-finite steps are skipped; `streak` counts them in a row
        skipping = self.scaler.is_enabled()
        step_bad = torch.zeros((), dtype=torch.bool, device=dev)
        streak = self.skip_streak  # carried over from the previous epoch
        skipped = torch.zeros((), dtype=torch.long, device=dev)

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
        accum, n_batches = cfg.accumulate_grad_batches, self.steps_per_epoch
        for k, (rgb, targets) in enumerate(batches):
            start = k - k % accum  # first batch of this optimizer step's group
            group = min(accum, n_batches - start)
            last_of_group = k + 1 == start + group
            lr = self.scheduler.get_last_lr()[0]
            if self.channels_last:
                rgb = rgb.contiguous(memory_format=torch.channels_last)
            if k == start:
                self.optimizer.zero_grad(set_to_none=True)
            # DDP: gradients are all-reduced only with the group's last backward
            sync = contextlib.nullcontext() if last_of_group or not info.enabled else self.net.no_sync()
            with sync:
                with torch.autocast(dev.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
                    outputs = self.net(rgb)
                outputs = {k_: v.float() for k_, v in outputs.items()}
                total, parts = self.loss_fn(outputs, targets)
                self.scaler.scale(total if group == 1 else total / group).backward()
            # Bookkeeping on the device (no host synchronisation), for the optimizer step this
            # micro-batch belongs to.
            total = total.detach()
            step_bad |= ~torch.isfinite(total)
            window.add(total, parts)
            whole.add(total, parts)
            if not last_of_group:
                continue
            if skipping:  # GradScaler skips this step (its gradients are not finite either)
                streak = torch.where(step_bad, streak + 1, torch.zeros_like(streak))
                skipped += step_bad.long()
                diverged = streak > MAX_SKIPPED_STEPS
            else:
                diverged = step_bad
            first_bad = torch.where((first_bad < 0) & diverged, torch.full_like(first_bad, self.step + 1), first_bad)
            step_bad = torch.zeros_like(step_bad)
            if info.enabled and loss_params:
                all_reduce_mean_([p.grad for p in loss_params if p.grad is not None], info)
            if cfg.grad_clip > 0:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.scheduler.step()
            self.step += 1
            if self.step % cfg.log_every == 0:
                self._log_window(epoch, window, first_bad, lr, bar)
                window.reset()
            if self.tb is not None and self.tb.due(self.step):
                self._visualize(rgb, targets, outputs)
        if whole.n != n_batches:  # a data path that lost batches would otherwise leave steps undone
            raise RuntimeError(f"epoch {epoch + 1}: the training data ({self.data_path} path) gave {whole.n} of "
                               f"its {n_batches} batches")
        if window.n:
            self._log_window(epoch, window, first_bad, lr, bar)
        if bar is not None:
            bar.close()
        self.skip_streak = streak
        self._check_finite(first_bad, epoch)
        if skipping:
            n_skipped = all_reduce_max(int(skipped.item()), info, dev)
            if n_skipped:
                self.log(f"epoch {epoch + 1}: {n_skipped} optimizer step(s) skipped: the fp16 loss was not finite "
                         f"(the gradient scaler lowered its scale; more than {MAX_SKIPPED_STEPS} in a row "
                         f"would stop the run as diverged)")

        mean_total, *means = whole.means(info)
        if not math.isfinite(mean_total):  # every step of the epoch was skipped
            raise rf.divergence(self.run_dir, f"no optimizer step of epoch {epoch + 1} had a finite loss",
                                epoch + 1, self.step)
        mean_parts = dict(zip(tasks, means, strict=True))
        if dev.type == "cuda":
            torch.cuda.synchronize(dev)
        self.train_peak_mb = training_peak_mb(dev, self.data.device_bytes, info)
        return mean_total, mean_parts, lr, time.perf_counter() - t0

    def _job_power(self, mark: int) -> float | None:
        """Mean board power (W) since ``mark``, summed over the job's GPUs (each rank reads its own)."""
        watts = self.power.mean_since(mark) if self.power is not None else None
        total, readers = all_reduce_sum([watts or 0.0, watts is not None], self.info, self.device)
        return total if readers > 0 else None

    def _log_window(self, epoch, window: "LossSums", first_bad, lr, bar) -> None:
        """Read the window's mean losses back (one sync every ``log_every`` steps) and log them."""
        self._check_finite(first_bad, epoch)
        weights = self.loss_fn.weights()  # the weights the next step will use
        vals = window.means(self.info)
        row = {"step": self.step, "epoch": epoch + 1, "loss": vals[0]}
        for t, v in zip(self.tasks, vals[1:], strict=True):
            row[f"loss_{t}"] = v
        row["lr"] = lr
        for t in self.tasks:
            row[f"weight_{t}"] = weights.get(t)
        if self.info.is_main:
            self.step_rows.append(row)
            self.tb.scalars("train", {k: v for k, v in row.items() if k not in ("step", "epoch")}, self.step)
        if bar is not None:
            bar.set_postfix(loss=f"{row['loss']:.4f}")

    def _check_weights(self, epoch: int) -> None:
        """The loss is checked before each update; the last updates can still make the weights
        NaN/inf. Such weights are never evaluated or saved: :class:`TrainingDiverged`."""
        bad = rf.non_finite_tensors(self.model.state_dict())
        if bad:
            raise rf.divergence(self.run_dir, f"{len(bad)} weight tensor(s) (e.g. {bad[0]}) became NaN/inf by "
                                f"step {self.step}", epoch + 1, self.step)

    def _visualize(self, rgb, targets, outputs) -> None:
        """TensorBoard image grids at this step; the observed samples are predicted in eval mode
        (like validation; it changes no weights or statistics)."""
        from .evaluate import predict_batch

        self.model.eval()
        try:
            self.tb.images(self.step, rgb, targets, outputs,
                           lambda x: predict_batch(self.model, x, autocast_dtype=self.amp_dtype), self.device)
        finally:
            self.model.train()

    def _check_finite(self, first_bad: torch.Tensor, epoch: int) -> None:
        bad = all_reduce_max(int(first_bad.item()), self.info, self.device)
        if bad >= 0:
            raise rf.divergence(self.run_dir, f"the loss became NaN/inf at step {bad}", epoch + 1, bad)

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

    def _finish(self) -> None:
        images = self.steps_per_epoch * self.cfg.batch_size * self.info.world_size * len(self.epoch_rows)
        summary = {"images": images, "steps": self.step, "params": self.n_params, "best_epoch": self.best_epoch,
                   "best_key": self.key, "device": str(self.device), "world_size": self.info.world_size,
                   "effective_batch_size": self.cfg.batch_size * self.cfg.accumulate_grad_batches
                   * self.info.world_size,
                   "precision": self.precision, "channels_last": self.channels_last}
        rf.write_done(self.run_dir, rf.done_record(self.epoch_rows, self.epoch_metrics, self.best_epoch, summary))
        self.log(f"finished {self.run_dir}")
