"""The run store: one folder per configuration, trained once, loaded instantly afterwards.

A run lives in ``<store>/<label>-<hash>`` where ``<store>`` is ``cfg.log_dir`` or
:func:`cvaia.paths.runs_dir` (env ``CVAIA_RUNS_DIR``, default ``<repo>/runs``), ``<label>`` is
:meth:`Config.run_label` and ``<hash>`` is :meth:`Config.config_hash` (only the fields that
change results). Asking for the same configuration again returns the finished run without
training — this is what makes re-executing the notebooks cheap.

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

Notebook API::

    run = get_run(cfg)                     # trains if missing or unfinished, else loads
    runs = sweep(cfg, {"optimizer_lr": [1e-3, 1e-4]})
    results_table(runs)                    # varied fields + final metrics
    run.history, run.epochs, run.final, run.confusion, run.load_model("best")
"""

from __future__ import annotations

import itertools
import json
import math
import os
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from . import paths
from .config import Config, ConfigError, config_from_dict, make_config

#: Metric columns of :func:`results_table` by default.
DEFAULT_RESULT_COLUMNS = ("miou", "si_log_rmse", "score", "train_time_s", "images_per_s",
                          "peak_mem_mb", "params")


class RunNotFoundError(LookupError):
    """There is no (finished) run for a configuration or path."""


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


def is_finished(path: str | os.PathLike) -> bool:
    """Whether the run folder ``path`` holds a finished run (``done.json``)."""
    return (Path(path) / "done.json").is_file()


class Run:
    """A run folder of the store (finished or not). See the module docstring for its files.

    Attributes read the files on each access, so a run that is still training shows its
    progress. ``trained_now`` tells whether the call that returned this object trained it.
    """

    def __init__(self, path: str | os.PathLike, trained_now: bool = False):
        self.path = Path(path).expanduser().resolve()
        if not (self.path / "config.json").is_file():
            raise RunNotFoundError(f"{self.path}: not a cvaia run folder (no config.json)")
        self.trained_now = trained_now
        self._meta: dict[str, Any] | None = None
        self._config: Config | None = None
        self._models: dict[tuple[str, str], Any] = {}

    # ---- identity -------------------------------------------------------------------------
    @property
    def name(self) -> str:
        """The folder name (``<label>-<hash>``)."""
        return self.path.name

    @property
    def meta(self) -> dict[str, Any]:
        """The whole ``config.json`` (config, dataset root and identity, versions, device)."""
        if self._meta is None:
            from .utils import read_json

            self._meta = read_json(self.path / "config.json")
        return self._meta

    @property
    def config(self) -> Config:
        """The run's :class:`~cvaia.config.Config`."""
        if self._config is None:
            try:
                self._config = config_from_dict(self.meta["config"])
            except (KeyError, ConfigError) as exc:
                raise RunNotFoundError(f"{self.path / 'config.json'}: cannot rebuild the config ({exc})") from None
        return self._config

    @property
    def dataset_root(self) -> Path:
        """The resolved data set root the run was trained on."""
        return Path(self.meta["dataset_root"])

    @property
    def diverged(self) -> dict[str, Any] | None:
        """``diverged.json`` (message, step) when training stopped on a NaN/inf loss, else None."""
        from .utils import read_json

        path = self.path / "diverged.json"
        return read_json(path) if path.is_file() else None

    @property
    def is_done(self) -> bool:
        """Whether training finished (``done.json`` exists)."""
        return is_finished(self.path)

    # ---- results --------------------------------------------------------------------------
    def _csv(self, name: str):
        import pandas as pd

        path = self.path / name
        if not path.is_file():
            return pd.DataFrame()
        return pd.read_csv(path)

    @property
    def history(self):
        """Per-step training log (``steps.csv``) as a DataFrame: step, epoch, loss, loss_<task>, lr, weight_<task>."""
        return self._csv("steps.csv")

    @property
    def epochs(self):
        """Per-epoch results (``epochs.csv``) as a DataFrame."""
        return self._csv("epochs.csv")

    @property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: every epoch's metrics including per-class IoU."""
        from .utils import read_json

        path = self.path / "metrics.json"
        return read_json(path) if path.is_file() else {"epochs": []}

    @property
    def done(self) -> dict[str, Any]:
        """``done.json`` (``final``, ``best``, ``summary``); empty while unfinished."""
        from .utils import read_json

        path = self.path / "done.json"
        return read_json(path) if path.is_file() else {}

    @property
    def final(self) -> dict[str, Any]:
        """Final results as one flat dict: the last epoch's metrics plus the run summary
        (train_time_s, images_per_s, peak_mem_mb, params, best_epoch, ...). Empty while unfinished."""
        done = self.done
        if not done:
            return {}
        out = dict(done.get("final", {}))
        out.update(done.get("summary", {}))
        return out

    @property
    def best(self) -> dict[str, Any]:
        """Metrics of the best epoch (the one saved as ``checkpoints/best.pt``)."""
        return dict(self.done.get("best", {}))

    @property
    def confusion(self) -> np.ndarray | None:
        """Confusion matrix (19×19, rows = ground truth) of the best epoch, or None."""
        path = self.path / "confusion.npy"
        return np.load(path) if path.is_file() else None

    # ---- models ---------------------------------------------------------------------------
    def checkpoint_path(self, which: str = "best") -> Path:
        """``checkpoints/best.pt`` or ``checkpoints/last.pt``."""
        if which not in ("best", "last"):
            raise ValueError(f"checkpoint: expected 'best' or 'last', got {which!r}")
        return self.path / "checkpoints" / f"{which}.pt"

    def load_checkpoint(self, which: str = "best", device="cpu") -> dict[str, Any]:
        """The raw checkpoint dict (see the module docstring)."""
        import torch

        path = self.checkpoint_path(which)
        if not path.is_file():
            raise RunNotFoundError(f"{path}: checkpoint not found (has the run finished an epoch?)")
        return torch.load(path, map_location=device, weights_only=False)

    def load_model(self, which: str = "best", device="cpu"):
        """The trained model from checkpoint ``which`` ("best" or "last"), in eval mode."""
        import torch

        from .models import build_model

        ckpt = self.load_checkpoint(which, device="cpu")
        # The weights come from the checkpoint: never fetch or read pretrained ones here.
        cfg = self.config.replace(pretrained="random")
        model = build_model(cfg)
        model.load_state_dict(ckpt["model"])
        return model.to(torch.device(device)).eval()

    def predict(self, rgb, which: str = "best", device="cpu", tta_flip: bool = False) -> dict[str, np.ndarray]:
        """Predict a batch of images with the run's model (cached per checkpoint and device).

        ``rgb``: uint8 images, numpy (H, W, 3) / (B, H, W, 3) or a torch tensor B×3×H×W. Images
        are cropped top-left to multiples of 32 like validation. Returns numpy arrays
        ``semseg`` (B, h, w) int64 class ids and/or ``depth`` (B, h, w) float32 metres.
        """
        import torch

        from .evaluate import predict_batch, rgb_to_batch

        key = (which, str(device))
        if key not in self._models:
            self._models[key] = self.load_model(which, device)
        model = self._models[key]
        x = rgb_to_batch(rgb, torch.device(device))
        out = predict_batch(model, x, tta_flip=tta_flip)
        result = {}
        if "semseg" in out:
            result["semseg"] = out["semseg"].argmax(1).cpu().numpy()
        if "depth" in out:
            result["depth"] = out["depth"][:, 0].float().cpu().numpy()
        return result

    def __repr__(self) -> str:
        state = "done" if self.is_done else "unfinished"
        return f"Run({str(self.path)!r}, {state})"

    def __eq__(self, other) -> bool:
        return isinstance(other, Run) and other.path == self.path

    def __hash__(self) -> int:
        return hash(self.path)


# ---- notebook API -------------------------------------------------------------------------------
def _check_dataset(run: Run, cfg: Config) -> None:
    """Warn when a cached run was trained on another data set root than ``cfg`` now resolves to."""
    try:
        now = paths.resolve_dataset_root(cfg.dataset_root)
        then = run.meta.get("dataset_root")
    except Exception:  # pragma: no cover - broken metadata is reported elsewhere
        return
    if then and Path(then) != now:
        warnings.warn(f"run {run.name} was trained on {then}, but the config now resolves to {now} "
                      f"(set --dataset_root explicitly, or force=True to retrain)", stacklevel=3)


def get_run(cfg: Config, train: bool = True, force: bool = False,
            progress: bool | Callable[[dict], None] | None = None) -> Run:
    """The run of ``cfg``: loaded when finished, otherwise trained (or resumed) first.

    - ``train=False``: never train; return the run folder if it exists (finished or not),
      else raise :class:`RunNotFoundError`.
    - ``force=True``: retrain a finished (or diverged) run; the old folder is moved aside to
      ``<dir>.old-<timestamp>`` (never deleted).
    - A run whose loss became NaN/inf raised :class:`cvaia.train.TrainingDiverged`; that is
      recorded (``diverged.json``) and asking again raises it at once, without retraining.
    - ``progress``: None → progress bars unless ``cfg.quiet``; False/True → off/on; a callable
      is called with each epoch's results dict.

    Two processes asking for the same run train it once: the second waits for the first's
    lock and then loads the finished run.
    """
    if not isinstance(cfg, Config):
        raise TypeError(f"get_run: expected a cvaia.config.Config, got {type(cfg).__name__}")
    cfg = make_config(cfg)
    path = run_dir_for(cfg)
    if not force and is_finished(path):
        run = Run(path)
        _check_dataset(run, cfg)
        return run
    if not force and (path / "diverged.json").is_file():
        from .train import stored_divergence

        raise stored_divergence(path)
    if not train:
        if (path / "config.json").is_file() and not force:
            return Run(path)
        raise RunNotFoundError(f"no finished run for this configuration at {path} (call with train=True)")
    from .train import run_training

    path, trained = run_training(cfg, run_dir=path, resume=True, force=force, progress=progress)
    return Run(path, trained_now=trained)


def sweep(base_cfg: Config, grid: Mapping[str, Sequence[Any]], train: bool = True, force: bool = False,
          progress: bool | Callable[[dict], None] | None = None) -> list[Run]:
    """One run per point of the cartesian product of ``grid`` (field → values), via :func:`get_run`.

    Fields vary in the order given, the last one fastest. Every value is validated (with
    :func:`~cvaia.config.make_config`) before anything trains.
    """
    if not grid:
        return [get_run(base_cfg, train=train, force=force, progress=progress)]
    names = list(grid)
    for name in names:
        values = grid[name]
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ConfigError(f"sweep: grid[{name!r}] must be a list of values, got {values!r}")
    configs = [base_cfg.replace(**dict(zip(names, combo, strict=True)))
               for combo in itertools.product(*(list(grid[n]) for n in names))]
    return [get_run(c, train=train, force=force, progress=progress) for c in configs]


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def results_table(runs: Sequence[Run], columns: Sequence[str] | None = None):
    """A DataFrame with one row per run: ``run`` (folder name), the config fields that differ
    between the runs, then ``columns`` (default: miou, si_log_rmse, score, train_time_s,
    images_per_s, peak_mem_mb, params) taken from :attr:`Run.final` or the config.
    """
    import pandas as pd

    runs = list(runs)
    cfgs = [r.config.hash_dict() for r in runs]
    varied = []
    if cfgs:
        for name in cfgs[0]:
            values = {json.dumps(c.get(name), sort_keys=True) for c in cfgs}
            if len(values) > 1:
                varied.append(name)
    wanted = list(DEFAULT_RESULT_COLUMNS if columns is None else columns)
    rows = []
    for run, hd in zip(runs, cfgs, strict=True):
        final = run.final
        cfg_all = run.config.to_dict()
        row: dict[str, Any] = {"run": run.name}
        for name in varied:
            v = hd[name]
            row[name] = ",".join(map(str, v)) if isinstance(v, list) else v
        for col in wanted:
            if col in row:
                continue
            if col in final:
                v = final[col]
            elif col in cfg_all:
                v = cfg_all[col]
            else:
                v = None
            if v is None:
                v = math.nan
            row[col] = _hashable(v)
        rows.append(row)
    return pd.DataFrame(rows, columns=["run"] + varied + [c for c in wanted if c not in varied])


def load_run(path: str | os.PathLike) -> Run:
    """The run in folder ``path`` (finished or not)."""
    return Run(path)


def list_runs(root: str | os.PathLike | None = None, include_old: bool = False,
              finished_only: bool = False) -> list[Run]:
    """Runs in the store ``root`` (default :func:`cvaia.paths.runs_dir`), sorted by name.

    Folders set aside by ``force`` (``*.old-<timestamp>``) are skipped unless ``include_old``.
    """
    root = Path(root).expanduser() if root is not None else paths.runs_dir()
    if not root.is_dir():
        return []
    out = []
    for d in sorted(root.iterdir()):
        if not d.is_dir() or not (d / "config.json").is_file():
            continue
        if ".old-" in d.name and not include_old:
            continue
        if finished_only and not is_finished(d):
            continue
        out.append(Run(d))
    return out
