"""The run store: one folder per configuration, trained once, loaded instantly afterwards.

A run lives in ``<store>/<label>-<hash>`` (:func:`cvaia.run_folder.run_dir_for`: the store
is ``cfg.log_dir`` or ``$CVAIA_RUNS_DIR``, the hash covers only the fields that change
results). Asking for the same configuration again returns the finished run without
training — this is what makes re-executing the notebooks cheap.

The folder's files and their format: :mod:`cvaia.run_folder`.

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
from . import run_folder as rf
from .config import Config, ConfigError, make_config
from .run_folder import TrainingDiverged, is_finished, run_dir_for, run_name, store_dir

__all__ = ["DEFAULT_RESULT_COLUMNS", "Run", "RunNotFoundError", "TrainingDiverged", "get_run", "is_finished",
           "list_runs", "load_run", "results_table", "run_dir_for", "run_name", "store_dir", "sweep"]

#: Metric columns of :func:`results_table` by default.
DEFAULT_RESULT_COLUMNS = ("miou", "si_log_rmse", "score", "train_time_s", "images_per_s",
                          "peak_mem_mb", "params")


class RunNotFoundError(LookupError):
    """There is no (finished) run for a configuration or path."""


class Run:
    """A run folder of the store (finished or not). See the module docstring for its files.

    Attributes read the files on each access, so a run that is still training shows its
    progress. ``trained_now`` tells whether the call that returned this object trained it.
    """

    def __init__(self, path: str | os.PathLike, trained_now: bool = False):
        self.path = Path(path).expanduser().resolve()
        if not rf.is_run_folder(self.path):
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
            self._meta = rf.read_run_meta(self.path)
        return self._meta

    @property
    def config(self) -> Config:
        """The run's :class:`~cvaia.config.Config`."""
        if self._config is None:
            self._config = rf.read_run_config(self.path, self.meta)
        return self._config

    @property
    def dataset_root(self) -> Path:
        """The resolved data set root the run was trained on."""
        return Path(self.meta["dataset_root"])

    @property
    def diverged(self) -> dict[str, Any] | None:
        """``diverged.json`` (message, step) when training stopped on a NaN/inf loss, else None."""
        return rf.read_divergence(self.path)

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
        return self._csv(rf.STEPS_FILE)

    @property
    def epochs(self):
        """Per-epoch results (``epochs.csv``) as a DataFrame."""
        return self._csv(rf.EPOCHS_FILE)

    @property
    def metrics(self) -> dict[str, Any]:
        """``metrics.json``: every epoch's metrics including per-class IoU."""
        return rf.read_optional_json(self.path / rf.METRICS_FILE, {"epochs": []})

    @property
    def done(self) -> dict[str, Any]:
        """``done.json`` (``final``, ``best``, ``summary``); empty while unfinished."""
        return rf.read_optional_json(self.path / rf.DONE_FILE, {})

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
        path = self.path / rf.CONFUSION_FILE
        return np.load(path) if path.is_file() else None

    # ---- models ---------------------------------------------------------------------------
    def checkpoint_path(self, which: str = "best") -> Path:
        """``checkpoints/best.pt`` or ``checkpoints/last.pt``."""
        return rf.checkpoint_path(self.path, which)

    def load_checkpoint(self, which: str = "best", device="cpu") -> dict[str, Any]:
        """The raw checkpoint dict (see the module docstring)."""
        path = self.checkpoint_path(which)
        if not path.is_file():
            raise RunNotFoundError(f"{path}: checkpoint not found (has the run finished an epoch?)")
        return rf.load_checkpoint_file(path, map_location=device)

    def load_model(self, which: str = "best", device="cpu"):
        """The trained model from checkpoint ``which`` ("best" or "last"), in eval mode.

        A run whose training diverged, or a checkpoint holding NaN/inf weights (written by an
        older version), is refused with :class:`~cvaia.run_folder.TrainingDiverged`
        (:func:`cvaia.run_folder.load_model`).
        """
        if not self.checkpoint_path(which).is_file() and self.diverged is None:
            raise RunNotFoundError(f"{self.checkpoint_path(which)}: checkpoint not found (has the run finished an epoch?)")
        return rf.load_model(self.path, which, device)

    def predict(self, rgb, which: str = "best", device=None, tta_flip: bool = False) -> dict[str, np.ndarray]:
        """Predict a batch of images with the run's model (cached per checkpoint and device).

        ``rgb``: uint8 images, numpy (H, W, 3) / (B, H, W, 3) or a torch tensor B×3×H×W. Images
        are cropped top-left to multiples of 32 like validation. Returns numpy arrays
        ``semseg`` (B, h, w) int64 class ids and/or ``depth`` (B, h, w) float32 metres.
        ``device``: default :meth:`device`, the run's own ``--device`` here (a notebook's
        ``DEVICE``).
        """
        import torch

        from .evaluate import predict_batch, rgb_to_batch

        device = self.device() if device is None else device
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

    def device(self):
        """The device the run's ``--device`` names on this machine (``auto``: the GPU when there
        is one); a device this machine lacks (``cuda:1`` on a one-GPU node) falls back to ``auto``."""
        from .config import ConfigError
        from .devices import select_device

        try:
            return select_device(self.config.device)
        except ConfigError:
            return select_device("auto")

    def prepare_submission(self, device="cpu", batch_size: int | None = None, split: str = "test",
                           progress: bool = False) -> Path:
        """The course grader's archive ``<run>/submission.zip`` (:func:`cvaia.run_folder.prepare_submission`)."""
        return rf.prepare_submission(self.path, device, batch_size, split, progress)

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
    now = paths.resolve_dataset_root(cfg.dataset_root)
    then = run.meta.get("dataset_root")
    if then and Path(then) != now:
        warnings.warn(f"run {run.name} was trained on {then}, but the config now resolves to {now} "
                      f"(set --dataset_root explicitly, or force=True to retrain)", stacklevel=3)


def _data_changed(path: Path, cfg: Config, verify_data: bool = False) -> str | None:
    """Why the finished run in ``path`` does not fit the data ``cfg`` names now (None: it does)."""
    return rf.data_mismatch(path, paths.resolve_dataset_root(cfg.dataset_root), verify_data)


def get_run(cfg: Config, train: bool = True, force: bool = False,
            progress: bool | Callable[[dict], None] | None = None, verify_data: bool = False) -> Run:
    """The run of ``cfg``: loaded when finished, otherwise trained (or resumed) first.

    - ``train=False``: never train; return the run folder if it exists (finished or not),
      else raise :class:`RunNotFoundError`.
    - ``force=True``: retrain a finished (or diverged) run; the old folder is moved aside to
      ``<dir>.old-<timestamp>`` (never deleted).
    - A run trained on other data than the data set now holds (its recorded identity,
      :func:`cvaia.data.miniscapes.data_identity`, differs) is not served: it is retrained (the
      old folder moved aside); with ``train=False`` :class:`RunNotFoundError` says why. The
      identity sees every file's name, size and modification time; ``verify_data=True`` also
      compares the files' contents with the hash recorded at training (reads the whole set).
    - A run whose loss became NaN/inf raised :class:`~cvaia.run_folder.TrainingDiverged`; that is
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
    changed = _data_changed(path, cfg, verify_data) if rf.is_run_folder(path) else None
    if not force and is_finished(path) and changed is None:
        run = Run(path)
        _check_dataset(run, cfg)
        return run
    if not force and rf.has_diverged(path) and changed is None:
        raise rf.stored_divergence(path)
    if not train:
        if changed:
            raise RunNotFoundError(f"{path}: not served: {changed} (call with train=True to retrain it; the "
                                   f"old run is kept as <dir>.old-<timestamp>)")
        if rf.is_run_folder(path) and not force:
            return Run(path)
        raise RunNotFoundError(f"no finished run for this configuration at {path} (call with train=True)")
    from . import train as training  # torch and the trainer load only when something trains

    result = training.train(cfg, run_dir=path, resume=True, force=force, progress=progress,
                            verify_data=verify_data)
    return Run(result.run_dir, trained_now=result.trained)


def grid_configs(base_cfg: Config, grid: Mapping[str, Sequence[Any]] | None) -> list[Config]:
    """One config per point of the cartesian product of ``grid`` (field → values), the last
    field varying fastest; every value validated (:func:`~cvaia.config.make_config`)."""
    names = list(grid or {})  # no axes: one config, the base
    for name in names:
        values = grid[name]
        if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
            raise ConfigError(f"sweep: grid[{name!r}] must be a list of values, got {values!r}")
    return [base_cfg.replace(**dict(zip(names, combo, strict=True)))
            for combo in itertools.product(*(list(grid[n]) for n in names))]


def sweep(base_cfg: Config, grid: Mapping[str, Sequence[Any]], train: bool = True, force: bool = False,
          progress: bool | Callable[[dict], None] | None = None, executor: Any = None,
          diverged: str = "raise") -> list[Run]:
    """One run per point of the cartesian product of ``grid`` (field → values), via :func:`get_run`.

    Fields vary in the order given, the last one fastest. Every value is validated (with
    :func:`~cvaia.config.make_config`) before anything trains (:func:`grid_configs`).

    ``diverged``: ``"raise"`` — a config whose training diverges (or diverged before) raises
    :class:`TrainingDiverged`; ``"none"`` — it is None in the list and the others go on.

    ``executor``: None trains here, one config after another. An executor built by
    :mod:`cvaia.cluster` (``cluster.executor_from_name("slurm" | "local", ...)``) runs each
    distinct config as its own submitit job instead (``progress`` is then unused) and returns
    the Runs once they finished, or a ``cluster.SweepJobs`` when it was built with ``wait=False``.
    """
    if diverged not in ("raise", "none"):
        raise ValueError(f"sweep: diverged must be 'raise' or 'none', got {diverged!r}")
    configs = grid_configs(base_cfg, grid)
    if executor is not None:
        if not callable(getattr(executor, "run_configs", None)):
            raise TypeError(f"sweep: executor must come from cvaia.cluster.executor_from_name(...) "
                            f"(an object with run_configs), got {type(executor).__name__}")
        if diverged == "raise":
            return executor.run_configs(configs, train=train, force=force)
        return executor.run_configs(configs, train=train, force=force, diverged=diverged)
    out: list[Run | None] = []
    for c in configs:
        try:
            out.append(get_run(c, train=train, force=force, progress=progress))
        except TrainingDiverged:
            if diverged == "raise":
                raise
            out.append(None)
    return out


def _hashable(v):
    return tuple(v) if isinstance(v, list) else v


def _shown_identity(run: "Run") -> dict:
    """The run's :meth:`Config.hash_dict` as a table shows it: ``precision`` is the one the run
    used (``config.json``; the hash holds the one asked for, where ``auto`` reads ``fp32``)."""
    d = run.config.hash_dict()
    used = run.meta.get("precision")
    if used is not None:
        d.pop("autocast", None)
        d["precision"] = used
    return d


def results_table(runs: Sequence[Run], columns: Sequence[str] | None = None):
    """A DataFrame with one row per run: ``run`` (folder name), the config fields that differ
    between the runs, then ``columns`` (default: miou, si_log_rmse, score, train_time_s,
    images_per_s, peak_mem_mb, params) taken from :attr:`Run.final` or the config. When some
    run is not finished, a ``status`` column says which (``done``, ``diverged at step N``,
    ``unfinished``) and its metrics are NaN.

    A run whose folder cannot be read (a hand-edited ``config.json``, broken JSON) is left out
    with a warning naming it and why; the table lists the others.
    """
    import pandas as pd

    readable, bad = [], []
    for r in runs:
        try:
            r.config.hash_dict()
            r.final  # noqa: B018 - done.json must be readable too
        except (rf.RunConfigError, ValueError, OSError) as exc:
            bad.append(f"{r.path}: {exc}")
        else:
            readable.append(r)
    if bad:
        warnings.warn(f"results_table: left out {len(bad)} unreadable run folder(s): " + " | ".join(bad),
                      stacklevel=2)
    runs = readable
    cfgs = [_shown_identity(r) for r in runs]
    varied = []
    # the union of the keys: some appear only in some configs (e.g. pretrained_weights, which
    # a random-init config has not)
    names = list(dict.fromkeys(k for c in cfgs for k in c))
    if cfgs:
        for name in names:
            values = {json.dumps(c.get(name), sort_keys=True) for c in cfgs}
            if len(values) > 1:
                varied.append(name)
    wanted = list(DEFAULT_RESULT_COLUMNS if columns is None else columns)
    statuses = [_status(r) for r in runs]
    with_status = any(s != "done" for s in statuses)
    rows = []
    for run, hd in zip(runs, cfgs, strict=True):
        final = run.final
        cfg_all = run.config.to_dict()
        row: dict[str, Any] = {"run": run.name}
        if with_status:
            row["status"] = statuses[len(rows)]
        for name in varied:
            v = hd.get(name)
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
    return pd.DataFrame(rows, columns=["run"] + (["status"] if with_status else []) + varied
                        + [c for c in wanted if c not in varied])


def _status(run: Run) -> str:
    """``done``, ``diverged at step N`` or ``unfinished``."""
    if run.is_done:
        return "done"
    info = run.diverged
    if info is not None:
        return f"diverged at step {info.get('step')}" if info.get("step") is not None else "diverged"
    return "unfinished"


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
        if not d.is_dir() or not rf.is_run_folder(d):
            continue
        if rf.is_set_aside(d) and not include_old:
            continue
        if finished_only and not is_finished(d):
            continue
        out.append(Run(d))
    return out
