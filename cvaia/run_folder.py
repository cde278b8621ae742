"""The run folder: where a run lives, its file names, columns, and every read and write of them.

A run lives in ``<store>/<label>-<hash>`` where ``<store>`` is ``cfg.log_dir`` or
:func:`cvaia.paths.runs_dir` (env ``CVAIA_RUNS_DIR``, default ``<repo>/runs``), ``<label>`` is
:meth:`Config.run_label` and ``<hash>`` is :meth:`Config.config_hash` (only the fields that
change results).

Contents of a run folder (every file written atomically)::

    config.json         {"config": cfg.to_dict(), "config_hash", "run_label", "dataset_root",
                         "dataset_meta" (the root's meta.json or null), "versions", "device",
                         "world_size", "created", "resumed"}
    steps.csv           step, epoch, loss, loss_<task>..., lr, weight_<task>...  (every log_every steps)
    epochs.csv          one row per epoch: metrics, lr, train loss, times, images/s, memory, power
    metrics.json        {"epochs": [row + per_class_iou, ...], "best_epoch", "best_key"}
    confusion.npy       19×19 confusion matrix of the best epoch (rows = ground truth)
    checkpoints/last.pt {"model", "optimizer", "scheduler", "loss", "scaler", "epoch", "step",
    checkpoints/best.pt  "rng", "config", "best_value", "best_epoch"}; once the run is finished
                        the resume-only entries (optimizer, scheduler, scaler, rng) are dropped
    tb/                 TensorBoard event files
    done.json           {"final": {...}, "best": {...}, "summary": {...}} — the run is finished
    diverged.json       {"message", "step"} — training stopped on a NaN/inf loss (asking for the
                        run again raises TrainingDiverged at once; force=True retrains)
    .lock               fcntl lock held while a process trains the run

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
from .config import Config, ConfigError
from .utils import (
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
#: Infix of a folder set aside by ``force``: ``<dir>.old-<timestamp>``.
OLD_INFIX = ".old-"

#: Checkpoint entries only a resume needs; a finished run's checkpoints drop them.
SLIM_DROPPED = ("optimizer", "scheduler", "scaler", "rng")

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
    """The training loss became NaN or infinite; the last good checkpoint is kept."""

    def __init__(self, message: str, step: int | None = None):
        super().__init__(message)
        self.step = step


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---- where a run lives -------------------------------------------------------------------------
def store_dir(cfg: Config | None = None) -> Path:
    """The run store folder for ``cfg`` (``cfg.log_dir`` if set, else :func:`cvaia.paths.runs_dir`)."""
    if cfg is not None and cfg.log_dir:
        return Path(cfg.log_dir).expanduser().resolve()
    return paths.runs_dir()


def run_name(cfg: Config) -> str:
    """Folder name of the run of ``cfg``: ``<run_label>-<config_hash>``."""
    return f"{cfg.run_label()}-{cfg.config_hash()}"


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


# ---- writing ---------------------------------------------------------------------------------
def write_csv(path: Path, rows: list[dict], columns: list[str]) -> None:
    """``rows`` as CSV with ``columns`` (None as an empty cell), atomically."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if v is None else v) for k, v in row.items()})
    atomic_write_text(path, buf.getvalue())


def dataset_identity(root: Path) -> dict | None:
    """The data set's ``meta.json`` (its generator settings), or None."""
    meta = root / "meta.json"
    if meta.is_file():
        try:
            return read_json(meta)
        except ValueError:
            return None
    return None


def run_metadata(cfg: Config, root: Path, device, world_size: int, data_path: str) -> dict:
    """The content of a new run's ``config.json``."""
    import torch
    import torchvision

    return {
        "config": cfg.to_dict(),
        "config_hash": cfg.config_hash(),
        "run_label": cfg.run_label(),
        "dataset_root": str(root),
        "dataset_meta": dataset_identity(root),
        "versions": {"cvaia": __version__, "torch": torch.__version__,
                     "torchvision": torchvision.__version__, "python": platform.python_version()},
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
        "world_size": world_size,
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


def save_checkpoint(run_dir: Path, checkpoint: dict, is_best: bool, confusion=None) -> None:
    """``last.pt`` and, for a best epoch, ``best.pt`` (+ ``confusion.npy``) first: if killed in
    between, the resumed run repeats this epoch. A best ``last.pt`` is a link to ``best.pt``."""
    best, last = checkpoint_path(run_dir, "best"), checkpoint_path(run_dir, "last")
    if is_best:
        if confusion is not None:
            atomic_save_npy(run_dir / CONFUSION_FILE, confusion)
        atomic_torch_save(checkpoint, best)
        atomic_link_or_copy(best, last)
    else:
        atomic_torch_save(checkpoint, last)


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
    import torch

    best, last = checkpoint_path(run_dir, "best"), checkpoint_path(run_dir, "last")
    linked = best.is_file() and last.is_file() and os.path.samefile(best, last)
    for path in ([best] if linked else [best, last]):
        if path.is_file():
            ckpt = torch.load(path, map_location="cpu", weights_only=False)
            slim = {k: v for k, v in ckpt.items() if k not in SLIM_DROPPED}
            atomic_torch_save({**slim, "slim": True}, path)
    if linked:
        atomic_link_or_copy(best, last)


# ---- claiming a folder -------------------------------------------------------------------------
def lock(run_dir: Path) -> FileLock:
    """The run's lock, acquired (blocks while another process trains the run)."""
    return FileLock(run_dir / LOCK_FILE).acquire()


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
            log: Callable[[str], None]) -> tuple[str, FileLock]:
    """Decide (under the lock ``held``) what to do: ``done``, ``diverged``, ``resume`` or ``fresh``.

    Moves an old folder aside when ``force`` (finished or diverged run) or when ``resume`` is
    False (unfinished run). Returns the decision and the lock now held (a new one after a move).
    """
    cfg_file = run_dir / CONFIG_FILE
    if cfg_file.is_file():
        stored = read_json(cfg_file).get("config_hash")
        if stored is not None and stored != config_hash:
            raise ConfigError(f"{run_dir}: holds a run of another configuration (hash {stored}, "
                              f"this one {config_hash}); choose another folder")
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
