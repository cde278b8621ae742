"""The run folder: where a run lives, its file names, columns, and every read and write of them.

A run lives in ``<store>/<label>-<hash>`` where ``<store>`` is ``cfg.log_dir`` or
:func:`cvaia.paths.runs_dir` (env ``CVAIA_RUNS_DIR``, default ``<repo>/runs``), ``<label>`` is
:meth:`Config.run_label` and ``<hash>`` is :meth:`Config.config_hash` (only the fields that
change results).

Contents of a run folder (every file written atomically)::

    config.json         {"config": cfg.to_dict(), "config_hash", "run_label", "dataset_root",
                         "dataset_meta" (the root's meta.json or null), "dataset_identity"
                         (:func:`cvaia.data.miniscapes.data_identity`), "encoder_weights" (the
                         starting weights actually used), "effective_batch_size", "versions",
                         "device", "world_size", "created", "resumed"}
    steps.csv           step, epoch, loss, loss_<task>..., lr, weight_<task>...  (every log_every steps)
    epochs.csv          one row per epoch: metrics, lr, train loss, times, images/s, memory, power
    metrics.json        {"epochs": [row + per_class_iou, ...], "best_epoch", "best_key"}
    confusion.npy       19×19 confusion matrix of the best epoch (rows = ground truth)
    checkpoints/last.pt {"model", "optimizer", "scheduler", "loss", "scaler", "epoch", "step",
    checkpoints/best.pt  "rng", "config", "best_value", "best_epoch"}; once the run is finished
                        the resume-only entries (optimizer, scheduler, scaler, rng, rng_ranks) are
                        dropped. Tensors and plain values only (the RNG states too): every
                        checkpoint is read by :func:`cvaia.checkpoints.load_checkpoint_file`
                        (``weights_only``), which refuses anything else
    tb/                 TensorBoard event files
    done.json           {"final": {...}, "best": {...}, "summary": {...}} — the run is finished
    diverged.json       {"message", "step"} — training stopped on a NaN/inf loss (asking for the
                        run again raises TrainingDiverged at once; force=True retrains)
    .lock               fcntl lock held while a process trains the run (reading a finished
                        run never takes it: a read-only store can be read)
    submission.zip      with ``prepare_submission``: the test split's predictions (best.pt) in
                        the course grader's archive layout (``semseg/<i>.png``, ``depth/<i>.png``)

A folder set aside by ``force`` is renamed ``<dir>.old-<timestamp>`` (never deleted).

:mod:`cvaia.train` writes these files through this module and :mod:`cvaia.runs` reads them
through it; nothing else spells a file name.
"""

from __future__ import annotations

import csv
import io
import os
import platform
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from . import __version__, paths
from .checkpoints import (
    CheckpointError,
    CorruptCheckpointError,
    load_checkpoint_file,
)
from .config import Config, ConfigError
from .files import (
    FileLock,
    atomic_link_or_copy,
    atomic_save_npy,
    atomic_torch_save,
    atomic_write_json,
    atomic_write_text,
    read_json,
)

CONFIG_FILE = "config.json"
STEPS_FILE = "steps.csv"
EPOCHS_FILE = "epochs.csv"
METRICS_FILE = "metrics.json"
CONFUSION_FILE = "confusion.npy"
CHECKPOINT_DIR = "checkpoints"
CHECKPOINTS = ("best", "last")
TB_DIR = "tb"
DONE_FILE = "done.json"
#: Marker file of a run that diverged: asking for the run again raises at once (no retraining).
DIVERGED_FILE = "diverged.json"
LOCK_FILE = ".lock"
SUBMISSION_DIR = "submission"
SUBMISSION_FILE = "submission.zip"
#: Infix of a folder set aside by ``force``: ``<dir>.old-<timestamp>``.
OLD_INFIX = ".old-"

#: Checkpoint entries only a resume needs; a finished run's checkpoints drop them.
SLIM_DROPPED = ("optimizer", "scheduler", "scaler", "rng", "rng_ranks")

#: Columns of epochs.csv.
EPOCH_COLUMNS = [
    "epoch", "step", "miou", "pixel_acc", "si_log_rmse", "abs_rel", "rmse", "delta1", "delta2",
    "delta3", "score", "lr", "train_loss", "train_loss_semseg", "train_loss_depth",
    "train_time_s", "eval_time_s", "epoch_time_s", "images_per_s", "peak_mem_mb", "peak_rss_mb",
    "power_w",
]
#: Metric keys of done.json's ``final`` and ``best``.
FINAL_KEYS = ("epoch", "step", "miou", "pixel_acc", "si_log_rmse", "abs_rel", "rmse", "delta1", "delta2",
              "delta3", "score", "train_loss")


def epoch_row(epoch: int, step: int, metrics: dict, lr: float, train_loss: float, train_losses: dict,
              train_time_s: float, eval_time_s: float, **cost: float | None) -> dict[str, Any]:
    """One row of epochs.csv: the validation ``metrics``, lr, training losses, times and the
    ``cost`` columns (images_per_s, peak_mem_mb, peak_rss_mb, power_w)."""
    return {"epoch": epoch, "step": step,
            **{k: metrics[k] for k in ("miou", "pixel_acc", "si_log_rmse", "abs_rel", "rmse",
                                       "delta1", "delta2", "delta3", "score")},
            "lr": lr, "train_loss": train_loss, "train_loss_semseg": train_losses.get("semseg"),
            "train_loss_depth": train_losses.get("depth"), "train_time_s": train_time_s,
            "eval_time_s": eval_time_s, "epoch_time_s": train_time_s + eval_time_s, **cost}


def step_columns(tasks: Sequence[str]) -> list[str]:
    """Columns of steps.csv (the task columns follow the config's tasks)."""
    return (["step", "epoch", "loss"] + [f"loss_{t}" for t in tasks] + ["lr"]
            + [f"weight_{t}" for t in tasks])


class TrainingDiverged(RuntimeError):
    """The training loss or the weights became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


class RunStoreError(OSError):
    """The run store cannot be written (a file in the way, no space left, read-only); the
    message names the store, how to point elsewhere and which checkpoint is intact."""

    def __str__(self) -> str:
        return str(self.strerror)


#: The settings that choose the run store, for messages.
STORE_SETTING = "CVAIA_RUNS_DIR / --log_dir"


def store_error(exc: OSError, run_dir: Path, store: Path | None = None) -> RunStoreError:
    """``exc`` (raised while writing ``run_dir``) as a :class:`RunStoreError` saying what to do."""
    import errno

    run_dir = Path(run_dir)
    store = Path(store) if store is not None else run_dir.parent
    where = exc.filename or run_dir
    if exc.errno == errno.ENOSPC:
        what = f"no space left on the device of the run store {store} (writing {where})"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        what = f"the run store {store} is not writable ({exc.strerror}: {where})"
    elif exc.errno in (errno.ENOTDIR, errno.EEXIST) or isinstance(exc, (NotADirectoryError, FileExistsError)):
        blocker = next((p for p in [store, *store.parents] if p.exists() and not p.is_dir()), where)
        what = f"the run store {store} cannot be a folder: {blocker} is a regular file in the way"
    else:
        what = f"the run store {store} failed: {exc.strerror or exc} ({where})"
    last = checkpoint_path(run_dir, "last")
    if last.is_file():
        kept = (f"the checkpoint {last} is intact (written atomically, never replaced by a failed write): "
                f"rerun the same command to resume from it once the store works")
    else:
        kept = "no checkpoint of this run was written yet"
    return RunStoreError(exc.errno, f"{what}; {kept}. Free space / fix the folder, or point "
                                    f"{STORE_SETTING} elsewhere", str(where))


def in_store(exc: BaseException, store: Path) -> bool:
    """Whether the ``OSError`` ``exc`` concerns a path inside (or above) the run store."""
    name = getattr(exc, "filename", None)
    if not isinstance(exc, OSError) or name is None:
        return False
    path, store = Path(os.fsdecode(name)).absolute(), Path(store).absolute()
    return path == store or store in path.parents or path in store.parents


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- where a run lives -------------------------------------------------------------------------
def store_dir(cfg: Config | None = None) -> Path:
    """The run store folder for ``cfg`` (``cfg.log_dir`` if set, else :func:`cvaia.paths.runs_dir`)."""
    if cfg is not None and cfg.log_dir:
        return Path(cfg.log_dir).expanduser().resolve()
    return paths.runs_dir()


#: Bytes a folder name keeps free for the suffix of a folder set aside (``.old-<timestamp>-<k>``).
SET_ASIDE_ROOM = 32


def name_max(folder: str | os.PathLike) -> int:
    """The longest file name (bytes) the file system of ``folder`` (or its nearest existing
    parent) allows; 255 where it does not say."""
    for p in [Path(folder), *Path(folder).parents]:
        if p.is_dir():
            try:
                return int(os.pathconf(p, "PC_NAME_MAX"))
            except (OSError, ValueError, AttributeError):
                break
    return 255


def run_name(cfg: Config) -> str:
    """Folder name of the run of ``cfg``: ``<run_label>-<config_hash>``.

    A label too long for the store's file system (a long ``--name``; the limit is
    :func:`name_max`, less :data:`SET_ASIDE_ROOM`) is cut and marked with a digest of the whole
    label: ``<start of label>~<8 hex>-<config_hash>``; the config hash is always kept whole.
    """
    import hashlib

    label, tail = cfg.run_label(), f"-{cfg.config_hash()}"
    limit = name_max(store_dir(cfg)) - SET_ASIDE_ROOM
    if len((label + tail).encode()) <= limit:
        return label + tail
    mark = f"~{hashlib.sha256(label.encode()).hexdigest()[:8]}"
    keep = max(0, limit - len((mark + tail).encode()))
    return label.encode()[:keep].decode("utf-8", "ignore") + mark + tail


def run_dir_for(cfg: Config) -> Path:
    """Folder of the run of ``cfg`` (it may not exist yet)."""
    return store_dir(cfg) / run_name(cfg)


def checkpoint_path(run_dir: str | os.PathLike, which: str = "best") -> Path:
    """``<run_dir>/checkpoints/best.pt`` or ``last.pt``."""
    if which not in CHECKPOINTS:
        raise ValueError(f"checkpoint: expected 'best' or 'last', got {which!r}")
    return Path(run_dir) / CHECKPOINT_DIR / f"{which}.pt"


def is_run_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run folder (it has ``config.json``)."""
    return (Path(path) / CONFIG_FILE).is_file()


def is_finished(path: str | os.PathLike) -> bool:
    """Whether the run folder ``path`` holds a finished run (``done.json``)."""
    return (Path(path) / DONE_FILE).is_file()


def has_diverged(path: str | os.PathLike) -> bool:
    """Whether training of the run in ``path`` stopped on a NaN/inf loss (``diverged.json``)."""
    return (Path(path) / DIVERGED_FILE).is_file()


def is_set_aside(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder moved aside by ``force`` (``<dir>.old-<timestamp>``)."""
    return OLD_INFIX in Path(path).name


# ---- reading ---------------------------------------------------------------------------------
def read_optional_json(path: Path, default: Any = None) -> Any:
    """``path``'s JSON, or ``default`` when the file does not exist."""
    return read_json(path) if path.is_file() else default


def read_divergence(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """``diverged.json`` (message, step), or None."""
    return read_optional_json(Path(run_dir) / DIVERGED_FILE)


def stored_divergence(run_dir: str | os.PathLike) -> TrainingDiverged:
    """The :class:`TrainingDiverged` recorded in ``<run_dir>/diverged.json``."""
    path = Path(run_dir) / DIVERGED_FILE
    info = read_json(path)
    return TrainingDiverged(f"{info['message']} (recorded earlier in {path}; "
                            f"force=True / --force retrains the run)", step=info.get("step"))


def read_csv(path: Path) -> list[dict]:
    """Rows of a CSV written by :func:`write_csv` (numbers parsed; ``step``/``epoch`` as ints)."""
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


def read_logs(run_dir: Path, step: int, epoch: int) -> tuple[list[dict], list[dict], list[dict]]:
    """``(step rows, epoch rows, epoch metrics)`` up to ``step`` / ``epoch``: rows written after
    the checkpoint a resume starts from (by a killed process) are dropped."""
    step_rows = [r for r in read_csv(run_dir / STEPS_FILE) if r["step"] <= step]
    epoch_rows = [r for r in read_csv(run_dir / EPOCHS_FILE) if r["epoch"] <= epoch]
    metrics = read_optional_json(run_dir / METRICS_FILE, {})
    epoch_metrics = [m for m in metrics.get("epochs", []) if m["epoch"] <= epoch]
    return step_rows, epoch_rows, epoch_metrics


class RunConfigError(ValueError):
    """A run folder's ``config.json`` is not valid JSON or does not describe a config (an edit
    by hand, a broken copy); the message names the file and the key."""


def read_run_meta(run_dir: str | os.PathLike) -> dict[str, Any]:
    """The run folder's ``config.json`` as a dict (:class:`RunConfigError` naming the file
    when it is not valid JSON or not an object with a ``config`` object)."""
    path = Path(run_dir) / CONFIG_FILE
    try:
        meta = read_json(path)
    except ValueError as exc:
        raise RunConfigError(f"{exc}; a run folder's {CONFIG_FILE} is written by cvaia: restore it from the "
                             f"run's source, or retrain the run") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise RunConfigError(f"{path}: expected a JSON object with a 'config' object (the run's config), got "
                             f"{'no key config' if isinstance(meta, dict) else type(meta).__name__}")
    return meta


def read_run_config(run_dir: str | os.PathLike, meta: dict[str, Any] | None = None) -> Config:
    """The :class:`Config` of the run in ``run_dir`` (from ``meta``, its ``config.json``, when given).

    Every problem names the file and the key: a key that is no config field, a value of the
    wrong type or out of range (:class:`RunConfigError`). Keys that are missing (a folder of an
    earlier version, or an edit) take their defaults, said once with a
    :class:`~cvaia.errors.ConfigNotice` naming them.
    """
    import dataclasses
    import warnings

    from .config import make_config
    from .errors import ConfigNotice

    path = Path(run_dir) / CONFIG_FILE
    values = (meta if meta is not None else read_run_meta(run_dir))["config"]
    fields = {f.name for f in dataclasses.fields(Config)}
    unknown = [k for k in values if k not in fields]
    if unknown:
        raise RunConfigError(f"{path}: key config.{unknown[0]} is not a config field"
                             + (f" (nor {', '.join(unknown[1:])})" if unknown[1:] else "")
                             + "; an edit by hand, or a run of another cvaia version: remove it")
    try:
        cfg = make_config(None, **values)
    except (ConfigError, TypeError, ValueError) as exc:
        culprit = None
        for key, value in values.items():  # which key: each one alone on the defaults
            try:
                make_config(None, **{key: value})
            except (ConfigError, TypeError, ValueError):
                culprit = key
                break
        where = f"key config.{culprit} = {values[culprit]!r}" if culprit else "its config"
        raise RunConfigError(f"{path}: {where} is not valid ({exc})") from None
    missing = sorted(fields - set(values))
    if missing:
        warnings.warn(f"{path}: config key(s) {', '.join(missing)} missing; taken as their defaults "
                      f"({', '.join(f'{k}={getattr(cfg, k)!r}' for k in missing[:4])}"
                      f"{', ...' if len(missing) > 4 else ''})", ConfigNotice, stacklevel=2)
    return cfg


# ---- writing ---------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """``rows`` as CSV with ``columns`` (None as an empty cell), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def dataset_meta(root: Path) -> dict | None:
    """The data set's ``meta.json`` (its generator settings), or None."""
    meta = root / "meta.json"
    if meta.is_file():
        try:
            return read_json(meta)
        except ValueError:
            return None
    return None


#: Older name of :func:`dataset_meta`.
dataset_identity = dataset_meta


def data_mismatch(run_dir: str | os.PathLike, root: Path, verify: bool = False) -> str | None:
    """Why the run in ``run_dir`` was trained on other data than ``root`` holds now (None: same).

    Compares the ``dataset_identity`` recorded in ``config.json`` (for runs of older versions:
    their ``dataset_meta``) with the data now: the names, sizes and modification times of every
    file; ``verify`` (``--verify_data``) also their contents (reads the whole set). A run that
    recorded neither is taken as is.
    """
    from .data.miniscapes import data_identity, identity_difference

    meta = read_optional_json(Path(run_dir) / CONFIG_FILE, {})
    then = meta.get("dataset_identity")
    if then is not None:
        content = verify and bool(then.get("content_sha256"))
        diff = identity_difference(then, data_identity(root, content=content))
    elif meta.get("dataset_meta") is not None:
        now = dataset_meta(root)
        diff = None if now == meta["dataset_meta"] else "its meta.json differs (the set was regenerated)"
    else:
        return None
    return None if diff is None else f"the data under {root} changed since the run was trained: {diff}"


def weights_record(cfg: Config) -> dict[str, Any]:
    """Which starting weights the encoder of ``cfg`` uses: name, file and content hash."""
    from .weights import weights_file, weights_identity

    path = weights_file(cfg.pretrained, cfg.model_encoder_name)
    record = {"pretrained": cfg.pretrained, "file": str(path) if path is not None else None,
              "identity": weights_identity(cfg.pretrained, cfg.model_encoder_name)}
    if cfg.pretrained == "synthetic":
        record["note"] = ("the shipped synthetic-pretrained encoder (cvaia pretrain), the offline stand-in "
                          "for ImageNet weights")
    return record


def run_metadata(cfg: Config, root: Path, device, world_size: int, data_path: str) -> dict:
    """The content of a new run's ``config.json``."""
    import torch
    import torchvision

    from .data.miniscapes import data_identity

    return {
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "run_label": cfg.run_label(),
        "dataset_root": str(root),
        "dataset_meta": dataset_meta(root),
        "dataset_identity": data_identity(root, content=True),  # content: what --verify_data checks later
        "encoder_weights": weights_record(cfg),
        "effective_batch_size": cfg.batch_size * cfg.accumulate_grad_batches * world_size,
        "versions": {"cvaia": __version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "python": platform.python_version()},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "precision": cfg.precision_on(device),  # what autocast used (fp32 off CUDA)
        "channels_last": cfg.channels_last_on(device),
        "world_size": world_size,
        "torch_threads": torch.get_num_threads(),  # CPU results depend on it (reduction order)
        "data_path": data_path,
        "created": _now(),
        "resumed": [],
    }


def write_metadata(run_dir: Path, meta: dict) -> None:
    atomic_write_json(run_dir / CONFIG_FILE, meta)


def record_resume(run_dir: Path, at_epoch: int, at_step: int, device) -> None:
    """Append a ``resumed`` entry to ``config.json``."""
    meta = read_json(run_dir / CONFIG_FILE)
    meta.setdefault("resumed", []).append(
        {"at_epoch": at_epoch, "at_step": at_step, "device": str(device), "time": _now()})
    atomic_write_json(run_dir / CONFIG_FILE, meta)


def write_logs(run_dir: Path, tasks: Sequence[str], step_rows: list[dict], epoch_rows: list[dict],
               epoch_metrics: list[dict], best_epoch: int, best_key: str) -> None:
    """steps.csv, epochs.csv and metrics.json (written before the checkpoints of the epoch: a
    kill in between is repaired on resume, which drops log rows newer than last.pt)."""
    write_csv(run_dir / STEPS_FILE, step_rows, step_columns(tasks))
    write_csv(run_dir / EPOCHS_FILE, epoch_rows, EPOCH_COLUMNS)
    atomic_write_json(run_dir / METRICS_FILE,
                      {"epochs": epoch_metrics, "best_epoch": best_epoch, "best_key": best_key})


def non_finite_tensors(state: dict) -> list[str]:
    """Names of the floating-point tensors of a state dict holding NaN or inf."""
    import torch

    names = [k for k, v in state.items() if isinstance(v, torch.Tensor) and v.is_floating_point()]
    if not names:
        return []
    finite = torch.stack([torch.isfinite(state[k]).all() for k in names]).cpu()  # one sync
    return [k for k, ok in zip(names, finite.tolist(), strict=True) if not ok]


def save_checkpoint(run_dir: Path, checkpoint: dict, is_best: bool, confusion=None) -> None:
    """``last.pt`` and, for a best epoch, ``best.pt`` (+ ``confusion.npy``) first: if killed in
    between, the resumed run repeats this epoch. A best ``last.pt`` is a link to ``best.pt``.

    A checkpoint whose model holds NaN/inf weights is never written: :class:`TrainingDiverged`
    (the checkpoints already there stay as they are).
    """
    bad = non_finite_tensors(checkpoint["model"])
    if bad:
        raise TrainingDiverged(
            f"training diverged: {len(bad)} weight tensor(s) of run {Path(run_dir).name} became NaN/inf "
            f"(e.g. {bad[0]}) by step {checkpoint.get('step')}; the checkpoint was not written, the last good "
            f"one is kept. Try a lower --optimizer_lr or --grad_clip", step=checkpoint.get("step"))
    best, last = checkpoint_path(run_dir, "best"), checkpoint_path(run_dir, "last")
    if is_best:
        if confusion is not None:
            atomic_save_npy(run_dir / CONFUSION_FILE, confusion)
        atomic_torch_save(checkpoint, best)
        atomic_link_or_copy(best, last)
    else:
        atomic_torch_save(checkpoint, last)


def divergence(run_dir: str | os.PathLike, cause: str, epoch: int, step: int) -> TrainingDiverged:
    """The :class:`TrainingDiverged` of a run in which ``cause`` (e.g. "the loss became NaN/inf
    at step 12") happened during ``epoch``; it names the last good checkpoint, which is kept."""
    last = checkpoint_path(run_dir, "last")
    kept = f"the last good checkpoint {last} is kept" if last.is_file() else "no checkpoint was written yet"
    return TrainingDiverged(f"training diverged: {cause} (epoch {epoch}) of run {Path(run_dir).name}; {kept}. "
                            f"Try a lower --optimizer_lr, --grad_clip, or fp32 precision.", step=step)


def record_divergence(run_dir: Path, exc: TrainingDiverged) -> None:
    """Write ``diverged.json``: the divergence is a result, the same config is not retrained."""
    atomic_write_json(run_dir / DIVERGED_FILE, {"message": str(exc), "step": exc.step, "time": _now()})


def done_record(epoch_rows: list[dict], epoch_metrics: list[dict], best_epoch: int,
                summary: dict[str, Any]) -> dict[str, Any]:
    """The content of ``done.json``: the last epoch's metrics (``final``), the best epoch's
    (``best``), and ``summary`` completed with times, memory and power over all epochs."""
    last = epoch_rows[-1]
    best = next((m for m in epoch_metrics if m["epoch"] == best_epoch), last)
    final = {k: last.get(k) for k in FINAL_KEYS}
    final["per_class_iou"] = epoch_metrics[-1].get("per_class_iou")
    train_time = sum(r["train_time_s"] for r in epoch_rows)
    powers = [r["power_w"] for r in epoch_rows if r.get("power_w") is not None]
    images = summary.pop("images")
    full = {
        "epochs": len(epoch_rows),
        "steps": summary.pop("steps"),
        "train_time_s": train_time,
        "eval_time_s": sum(r["eval_time_s"] for r in epoch_rows),
        "total_time_s": sum(r["epoch_time_s"] for r in epoch_rows),
        "images_per_s": images / train_time if train_time > 0 else None,
        "peak_mem_mb": max(r["peak_mem_mb"] for r in epoch_rows),
        "peak_rss_mb": max(r["peak_rss_mb"] for r in epoch_rows),
        "mean_power_w": sum(powers) / len(powers) if powers else None,
        **summary,
    }
    return {"final": final,
            "best": {k: best.get(k) for k in final if k in best} | {"per_class_iou": best.get("per_class_iou")},
            "summary": full, "finished": _now()}


def write_done(run_dir: Path, done: dict[str, Any]) -> None:
    """Mark the run finished (``done.json``) and slim its checkpoints."""
    atomic_write_json(run_dir / DONE_FILE, done)
    slim_checkpoints(run_dir)


def slim_checkpoints(run_dir: Path) -> None:
    """Drop what only resuming needs (optimizer, scheduler, RNG) from a finished run.

    The Adam moments are twice the model's size, so a finished run's checkpoints shrink to
    about a third (e.g. ~200 MB → ~66 MB for the joint model): sweeps of dozens of runs
    stay affordable on a laptop. Each file is replaced atomically; best.pt and last.pt stay
    one file when they were.
    """

    best, last = checkpoint_path(run_dir, "best"), checkpoint_path(run_dir, "last")
    linked = best.is_file() and last.is_file() and os.path.samefile(best, last)
    for path in ([best] if linked else [best, last]):
        if path.is_file():
            ckpt = load_checkpoint_file(path)
            slim = {k: v for k, v in ckpt.items() if k not in SLIM_DROPPED}
            atomic_torch_save({**slim, "slim": True}, path)
    if linked:
        atomic_link_or_copy(best, last)


# ---- claiming a folder -------------------------------------------------------------------------
def lock(run_dir: Path, on_wait: Callable[[str], None] | None = None) -> FileLock:
    """The run's lock, acquired (blocks while another process trains the run; ``on_wait`` is
    told who holds it before waiting)."""
    return FileLock(run_dir / LOCK_FILE, on_wait=on_wait).acquire()


def move_aside(path: Path) -> Path:
    """Rename ``path`` to ``<path>.old-<timestamp>`` (with a counter when taken); return the new name."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    target = path.with_name(f"{path.name}{OLD_INFIX}{stamp}")
    k = 1
    while target.exists():
        target = path.with_name(f"{path.name}{OLD_INFIX}{stamp}-{k}")
        k += 1
    os.replace(path, target)
    return target


def prepare(run_dir: Path, config_hash: str, resume: bool, force: bool, held: FileLock,
            log: Callable[[str], None], data_root: Path | None = None,
            verify_data: bool = False) -> tuple[str, FileLock]:
    """Decide (under the lock ``held``) what to do: ``done``, ``diverged``, ``resume`` or ``fresh``.

    Moves an old folder aside when ``force`` (finished or diverged run), when ``resume`` is
    False (unfinished run), or when the run was trained on other data than ``data_root``
    holds now (:func:`data_mismatch`: it is retrained). Returns the decision and the lock now
    held (a new one after a move).
    """
    cfg_file = run_dir / CONFIG_FILE
    if cfg_file.is_file():
        stored = read_json(cfg_file).get("config_hash")
        if stored is not None and stored != config_hash:
            raise ConfigError(f"{run_dir}: holds a run of another configuration (hash {stored}, "
                              f"this one {config_hash}); choose another folder")
        changed = data_mismatch(run_dir, data_root, verify_data) if data_root is not None else None
        if changed and not force:
            log(f"{run_dir.name}: {changed}; retraining it")
            force = True
    if is_finished(run_dir) and not force:
        return "done", held
    if has_diverged(run_dir) and not force and resume:
        return "diverged", held
    has_content = any(p.name != LOCK_FILE for p in run_dir.iterdir()) if run_dir.is_dir() else False
    if has_content and (force or not resume):
        aside = move_aside(run_dir)
        log(f"moved the old run folder aside to {aside}")
        run_dir.mkdir(parents=True)
        new_lock = lock(run_dir)
        held.release()
        return "fresh", new_lock
    if checkpoint_path(run_dir, "last").is_file():
        return "resume", held
    return "fresh", held


def remove_stub(run_dir: Path) -> bool:
    """Remove the folder of an attempt that failed before writing anything a rerun could use (no
    checkpoint file, not finished, no divergence record); True when it was removed."""
    import shutil

    run_dir = Path(run_dir)
    ckpts = run_dir / CHECKPOINT_DIR
    if (ckpts.is_dir() and any(ckpts.glob("*.pt"))) or is_finished(run_dir) or has_diverged(run_dir):
        return False
    try:
        shutil.rmtree(run_dir)
    except OSError:
        return False
    return True


#: What a checkpoint needs to be resumed from (a finished run's slim checkpoints lack most).
RESUME_KEYS = ("model", "optimizer", "scheduler", "loss", "rng", "epoch", "step", "config")


def adopt_checkpoint(source: str | os.PathLike, run_dir: Path, cfg: Config, decision: str,
                     log: Callable[[str], None]) -> tuple[str, dict | None]:
    """The course's ``--resume PATH``: continue the run of ``cfg`` from the checkpoint ``source``
    (a ``.pt`` file, or a run folder: its ``checkpoints/last.pt``).

    The checkpoint must be a resumable one (with optimizer state) of this same configuration —
    resuming continues that run; a :class:`ConfigError` says what differs otherwise (start a new
    run from its weights with ``--pretrained PATH``). When ``run_dir`` already holds a checkpoint
    at least as far, that one is kept. Otherwise the checkpoint (with the ``best.pt``, logs and
    ``config.json`` of its run folder, when it has them) is copied into ``run_dir``. Returns
    ``(decision, record)``: ``"resume"`` and what was adopted (None when nothing was), for
    :func:`record_adoption`.
    """

    from .config import make_config

    given = Path(source).expanduser()
    src = checkpoint_path(given, "last") if given.is_dir() else given
    if not src.is_file():
        raise ConfigError(f"--resume {source}: no checkpoint there (expected a .pt file, or a run folder with "
                          f"{CHECKPOINT_DIR}/last.pt)")
    try:
        ckpt = load_checkpoint_file(src)
    except CheckpointError as exc:
        raise ConfigError(f"--resume {source}: {exc}") from None
    missing = [k for k in RESUME_KEYS if k not in ckpt] if isinstance(ckpt, dict) else list(RESUME_KEYS)
    if missing:
        why = "a finished run keeps only its weights" if isinstance(ckpt, dict) and ckpt.get("slim") else \
            f"it lacks {', '.join(missing)}"
        raise ConfigError(f"--resume {source}: not a checkpoint to resume from ({why}); --pretrained {src} "
                          f"starts a new run from its weights")
    stored = make_config(None, **ckpt["config"])
    if stored.config_hash() != cfg.config_hash():
        a, b = stored.hash_dict(), cfg.hash_dict()
        diff = [f"{k} {a.get(k)!r} vs {b.get(k)!r}" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
        raise ConfigError(f"--resume {source}: a checkpoint of another configuration (it differs in "
                          f"{'; '.join(diff)}); resuming continues the same run, so give its flags — or "
                          f"--pretrained {src} to start a new run from its weights")
    bad = non_finite_tensors(ckpt["model"])
    if bad:
        raise ConfigError(f"--resume {source}: its weights hold NaN/inf ({bad[0]}, ...): nothing to resume from")
    own = checkpoint_path(run_dir, "last")
    if own.is_file() and os.path.samefile(own, src):
        return "resume", None
    if decision == "resume":
        try:
            own_step = load_checkpoint_file(own).get("step", -1)
        except CheckpointError as exc:  # the run's own last.pt is broken: the given one replaces it
            log(f"--resume {source}: the run's own checkpoint is unusable ({exc}); using the given one")
            own_step = -1
        if own_step >= int(ckpt["step"]):
            log(f"--resume {source}: the run's own checkpoint {own} is as far or further (step {own_step} >= "
                f"{ckpt['step']}); resuming from that one")
            return "resume", None
    src_run = src.parent.parent
    if is_run_folder(src_run) and src_run.resolve() != Path(run_dir).resolve():
        for name in (CONFIG_FILE, STEPS_FILE, EPOCHS_FILE, METRICS_FILE, CONFUSION_FILE):
            if (src_run / name).is_file():
                atomic_link_or_copy(src_run / name, Path(run_dir) / name)
        best = checkpoint_path(src_run, "best")
        if best.is_file() and src.name == "last.pt":
            checkpoint_path(run_dir, "best").parent.mkdir(parents=True, exist_ok=True)
            atomic_link_or_copy(best, checkpoint_path(run_dir, "best"))
    own.parent.mkdir(parents=True, exist_ok=True)
    atomic_link_or_copy(src, own)
    log(f"--resume {source}: continuing {Path(run_dir).name} from epoch {ckpt['epoch']} (step {ckpt['step']})")
    return "resume", {"checkpoint": str(src.resolve()), "epoch": int(ckpt["epoch"]), "step": int(ckpt["step"]),
                      "time": _now()}


#: What to do when no checkpoint of an unfinished run can be resumed from.
RESTART_HINT = "--restart (restart=True) starts the run afresh, the old folder kept as <dir>.old-<timestamp>"


def resume_checkpoint(run_dir: str | os.PathLike, log: Callable[[str], None]) -> tuple[Path, dict]:
    """``(path, checkpoint)`` to resume the unfinished run in ``run_dir`` from: ``last.pt``, or,
    when that one is truncated or corrupt (a killed copy, a full disk), the newest intact
    resumable checkpoint (``best.pt``, an earlier epoch) — said through ``log``; the broken
    ``last.pt`` is replaced by the next epoch's checkpoint.

    Raises :class:`CorruptCheckpointError` naming the file and the remedy (:data:`RESTART_HINT`)
    when there is none, and :class:`UnsafeCheckpointError` for a file that holds other objects
    than tensors (never loaded, never skipped silently).
    """
    last, best = checkpoint_path(run_dir, "last"), checkpoint_path(run_dir, "best")
    try:
        return last, load_checkpoint_file(last)
    except CorruptCheckpointError as exc:
        broken = exc
    candidates = [best] if best.is_file() and not (last.is_file() and os.path.samefile(best, last)) else []
    for path in candidates:
        try:
            ckpt = load_checkpoint_file(path)
        except CorruptCheckpointError:
            continue
        if isinstance(ckpt, dict) and all(k in ckpt for k in RESUME_KEYS):
            log(f"{broken}; resuming from the newest intact checkpoint {path} (epoch {ckpt['epoch']}, step "
                f"{ckpt['step']}) instead")
            return path, ckpt
    raise CorruptCheckpointError(last, f"{broken.reason}, and no other intact checkpoint of the run to resume "
                                       f"from; {RESTART_HINT}") from None


def record_adoption(run_dir: Path, record: dict) -> None:
    """Append a ``resumed_from`` entry (the checkpoint given to ``--resume PATH``) to ``config.json``."""
    meta = read_json(Path(run_dir) / CONFIG_FILE)
    meta.setdefault("resumed_from", []).append(record)
    atomic_write_json(Path(run_dir) / CONFIG_FILE, meta)


# ---- the trained model -------------------------------------------------------------------------
def load_model(run_dir: str | os.PathLike, which: str = "best", device="cpu"):
    """The trained model of the run in ``run_dir`` from checkpoint ``which``, in eval mode.

    Refused with :class:`TrainingDiverged` when the run diverged (``diverged.json``) or the
    checkpoint holds NaN/inf weights (written by an older version): such a run is no trained
    model to predict with.
    """
    import torch

    from .models import build_model

    run_dir = Path(run_dir)
    info = read_divergence(run_dir)
    if info is not None:
        raise TrainingDiverged(f"run {run_dir.name} diverged ({info.get('message', 'NaN/inf')}); it is no trained "
                               f"model to load or predict with: retrain it with force=True / --force (e.g. with a "
                               f"lower --optimizer_lr)", step=info.get("step"))
    path = checkpoint_path(run_dir, which)
    ckpt = load_checkpoint_file(path)
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("model"), dict):
        raise CorruptCheckpointError(path, "not a cvaia checkpoint (no 'model' state dict)")
    bad = non_finite_tensors(ckpt["model"])
    if bad:
        raise TrainingDiverged(f"{path}: {len(bad)} weight tensor(s) hold NaN/inf (e.g. {bad[0]}): the run "
                               f"diverged; retrain it with force=True / --force")
    cfg = read_run_config(run_dir)
    # The weights come from the checkpoint: never fetch or read pretrained ones here.
    model = build_model(cfg.replace(pretrained="random"))
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CorruptCheckpointError(path, f"its weights do not fit the model {cfg.model_name!r} that "
                                           f"{run_dir / CONFIG_FILE} describes ({first[:200]}); was config.json "
                                           f"edited, or the checkpoint copied from another run?") from None
    return model.to(torch.device(device)).eval()


def prepare_submission(run_dir: str | os.PathLike, device="cpu", batch_size: int | None = None,
                       split: str = "test", progress: bool = False) -> Path:
    """The course grader's archive ``<run>/submission.zip``: predictions of the best checkpoint
    for ``split`` of the run's data set, written to ``<run>/submission/`` (rewritten each time)
    and packed by :func:`cvaia.grader.pack_submission`."""
    from .grader import export_predictions, pack_submission

    run_dir = Path(run_dir)
    meta = read_run_meta(run_dir)
    cfg = read_run_config(run_dir, meta)
    out = run_dir / SUBMISSION_DIR
    export_predictions(load_model(run_dir, "best", device), meta["dataset_root"], split, out, device=device,
                       batch_size=batch_size or cfg.batch_size_validation, progress=progress, overwrite=True)
    return pack_submission(out, run_dir / SUBMISSION_FILE)
