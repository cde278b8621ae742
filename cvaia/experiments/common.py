"""Helpers every notebook uses: the data set, the device report, headline numbers, wording.

- :func:`ensure_dataset`: the data root a notebook (or the workbook runner) works on; the
  default synthetic set (or a named synthetic set below ``data/``) is generated when missing.
- :func:`profile_config`: a run's config from the profile's data amounts and schedule.
- :func:`run_configs`, :func:`run_row`, :func:`val_samples`, :func:`predictions`: train or
  load a list of configs, one table row per run, validation images, predictions per run.
- :func:`configure_threads`: torch's CPU threads for a notebook kernel (from the hardware, not the load).
- :func:`seed_configs`, :func:`seed_noise`, :func:`noise_table`: the run-to-run noise verdicts are judged against.
- :func:`pretrained_weights`: ImageNet when cached, else the shipped synthetic-pretrained encoder.
- :func:`executor`: the ``EXECUTOR`` parameter (in-process, local jobs or a SLURM array).
- :func:`device_report`: torch version, device, threads — the first cell of every notebook.
- :func:`record_headline`: a notebook's headline numbers, written to
  ``$CVAIA_HEADLINES_DIR/NN.json`` (when that variable is set, as the workbook runner and the
  tests do) and displayed.
- :func:`verdict`, :func:`fmt_minutes`: small wording helpers so that the narrative states
  only what the numbers say.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Mapping

from .. import paths

#: Environment variable naming the folder for the headline JSON files.
HEADLINES_ENV = "CVAIA_HEADLINES_DIR"
#: Environment variable fixing the number of CPU threads torch uses in a notebook.
THREADS_ENV = "CVAIA_NUM_THREADS"
#: Environment variables through which the workbook runner hands its machine probe
#: (:func:`cvaia.bench.machine_probe`: seconds per training step of the quick joint model, and
#: the step's pixels = batch × crop²) to the notebooks, for :func:`announce`.
PROBE_ENV = "CVAIA_PROBE_S"
PROBE_PIXELS_ENV = "CVAIA_PROBE_PIXELS"


# ---- data -----------------------------------------------------------------------------------
def dataset_exists(root: str | os.PathLike) -> bool:
    """Whether ``root`` looks like a miniscapes-format data set (``train/rgb`` is there)."""
    return (Path(root) / "train" / "rgb").is_dir()


def ensure_dataset(dataset_root: str | os.PathLike | None = "", log: Callable[[str], None] | None = None,
                   flag: str = "DATASET_ROOT", **synth: Any) -> Path:
    """The data root for a notebook, generating the synthetic set when it is missing.

    - ``dataset_root`` empty: the real miniscapes set when present, else ``data/synthetic``
      (generated with the generator's defaults, or with ``synth`` keyword arguments
      for :func:`cvaia.data.synth.generate`, the first time).
    - ``dataset_root`` given: it must be a miniscapes-format folder — unless it lies below the
      data directory and does not exist yet, in which case it is generated (this is how the
      notebooks build extra synthetic sets, e.g. ``data/synthetic_pretrain``).

    ``log`` (e.g. ``print``) is told when a set is being generated. Raises
    :class:`FileNotFoundError` naming ``flag`` and the folder when an explicit root is unusable.
    """
    explicit = dataset_root is not None and str(dataset_root).strip() != ""
    root = paths.resolve_dataset_root(dataset_root)
    if dataset_exists(root):
        return root
    data = paths.data_dir().resolve()
    generated_here = root == paths.synthetic_root() or data in root.parents
    if explicit and not generated_here:
        raise FileNotFoundError(
            f"{flag}: {root} is not a miniscapes-format data set (expected "
            f"{root}/{{train,val,test}}/{{rgb,semseg,depth}}/<index>.jpg|png); leave {flag} "
            f"empty to use the synthetic set")
    if root.exists() and any(root.iterdir()):
        raise FileNotFoundError(f"{flag}: {root} exists but holds no train/rgb folder; "
                                f"move it away to let the synthetic generator build it")
    import time

    from ..data.synth import generate

    if log is not None:
        log(f"building the synthetic data set in {root} (first run only) ...")
    t0 = time.perf_counter()
    generate(root, **synth)
    if log is not None:
        log(f"  done in {time.perf_counter() - t0:.0f} s")
    return root


# ---- configurations and runs -----------------------------------------------------------------
#: Notebook parameter → config field, for the parameters every problem's profiles share.
PROFILE_FIELDS = {
    "DATASET_ROOT": "dataset_root", "SEED": "seed", "DEVICE": "device",
    "TRAIN_IMAGES": "max_train_images", "VAL_IMAGES": "max_val_images", "CROP_SIZE": "aug_input_crop_size",
    "BATCH_SIZE": "batch_size", "EPOCHS": "num_epochs", "LR": "optimizer_lr", "LOG_EVERY": "log_every",
}


def profile_config(P: Mapping[str, Any], **overrides):
    """A validated :class:`~cvaia.config.Config` from the notebook parameters ``P``: each
    parameter of :data:`PROFILE_FIELDS` that ``P`` has (and is not None) sets its field, runs
    are quiet (no progress bars), and ``overrides`` (config fields) come last."""
    from ..config import make_config

    kw: dict[str, Any] = {field: P[key] for key, field in PROFILE_FIELDS.items() if P.get(key) is not None}
    if "dataset_root" in kw:
        kw["dataset_root"] = str(kw["dataset_root"])
    kw["quiet"] = True
    kw.update(overrides)
    return make_config(**kw)


def run_configs(configs: Sequence, executor=None, log: Callable[[str], None] | None = print) -> list:
    """Train (or load) each configuration; a diverged run gives ``None`` instead of a Run.

    Divergence (NaN loss, e.g. SGD or Adam at lr 0.1) is a result here, not an error.
    ``executor`` (from :func:`executor` / :func:`cvaia.cluster.executor_from_name`) runs each
    config as its own job (SLURM array, local processes); None trains them here, one by one,
    and ``log`` gets one line per run that had to be trained (:func:`run_line`), so a cell
    that trains for minutes shows where it is; runs served from the store stay silent.
    """
    from ..run_folder import is_finished, run_dir_for
    from ..runs import TrainingDiverged, get_run

    configs = list(configs)
    announce_configs(configs)
    if executor is not None:
        return executor.run_configs(configs, diverged="none")
    runs = []
    for i, cfg in enumerate(configs, 1):
        served = is_finished(run_dir_for(cfg))
        start = time.perf_counter()
        try:
            run = get_run(cfg)
        except TrainingDiverged as exc:
            run = None
            if log is not None and not served:
                log(f"[{i}/{len(configs)}] {run_dir_for(cfg).name}: diverged ({exc})")
        runs.append(run)
        if run is not None and log is not None and not served:
            log(run_line(run, time.perf_counter() - start, i, len(configs)))
    return runs


def run_line(run, seconds: float, i: int, total: int) -> str:
    """``[2/5] <run folder>: mIoU 31.20, SI-logRMSE 40.15 (trained in 1 min 12 s)`` — the
    metrics the run has."""
    final = run.final
    shown = [f"{label} {float(final[key]):.2f}" for key, label in (("miou", "mIoU"), ("si_log_rmse", "SI-logRMSE"))
             if final.get(key) is not None and math.isfinite(float(final[key]))]
    return f"[{i}/{total}] {run.name}: {', '.join(shown) or 'no metric'} (trained in {fmt_seconds(seconds)})"


def probe_seconds() -> tuple[float, float] | None:
    """``(seconds per probe step, pixels per probe step)`` from :data:`PROBE_ENV` /
    :data:`PROBE_PIXELS_ENV` (set by ``python -m cvaia workbook``); None when not set."""
    text = os.environ.get(PROBE_ENV, "").strip()
    if not text:
        return None
    try:
        value, pixels = float(text), float(os.environ.get(PROBE_PIXELS_ENV, "") or 8 * 64 * 64)
    except ValueError:
        raise ValueError(f"${PROBE_ENV} / ${PROBE_PIXELS_ENV}: expected numbers, got "
                         f"{text!r} / {os.environ.get(PROBE_PIXELS_ENV)!r}") from None
    if not (value > 0 and pixels > 0 and math.isfinite(value)):
        raise ValueError(f"${PROBE_ENV}: expected a positive number of seconds, got {text!r}")
    return value, pixels


def estimate_seconds(est_steps: float, cost: float = 1.0, probe: tuple[float, float] | None = None) -> float | None:
    """Estimated training time of ``est_steps`` steps that each cost ``cost`` probe steps:
    ``est_steps × cost × probe seconds`` (None without a probe)."""
    probe = probe if probe is not None else probe_seconds()
    if probe is None:
        return None
    return float(est_steps) * float(cost) * probe[0]


def announce(runs: int, est_steps: float, *, cost: float = 1.0, what: str = "",
             probe: tuple[float, float] | None = None, log: Callable[[str], None] = print) -> float | None:
    """Say what a cell is about to train and how long it should take; return the estimate (s).

    ``runs`` runs of ``est_steps`` training steps in all, each step ``cost`` probe steps (the
    probe is one step of the quick joint model; :func:`announce_configs` scales by pixels per
    step). The estimate counts training steps only (validation and other models' extra work are
    not in it) and uses the workbook's probe of this machine (:func:`probe_seconds`); without
    one only the amounts are printed."""
    probe = probe if probe is not None else probe_seconds()
    est = estimate_seconds(est_steps, cost, probe)
    head = f"training {runs} run(s){f' ({what})' if what else ''}: {est_steps:.0f} steps"
    if est is None:
        log(f"{head} (no machine probe: run through `python -m cvaia workbook` for a time estimate)")
    else:
        log(f"{head} ≈ {est_steps * cost:.0f} probe steps × {probe[0]:.2f} s ≈ {fmt_seconds(est)} "
            f"(training steps only, from this machine's probe)")
    return est


def planned_steps(cfg) -> int:
    """Training steps of ``cfg``: epochs × (training images // batch size)."""
    n = int(cfg.max_train_images or 0)
    if n <= 0:
        rgb = Path(paths.resolve_dataset_root(cfg.dataset_root)) / "train" / "rgb"
        n = len(os.listdir(rgb)) if rgb.is_dir() else 0
    return int(cfg.num_epochs) * (n // max(int(cfg.batch_size), 1))


def announce_configs(configs: Sequence, min_s: float = 60.0, log: Callable[[str], None] = print) -> float | None:
    """:func:`announce` for the configs of ``configs`` not trained yet (finished runs load):
    their steps, each costing (batch × crop²) / the probe's pixels. Quiet when nothing trains or
    the estimate is under ``min_s``; without a probe the amounts are printed when anything trains."""
    from ..config import Config
    from ..runs import is_finished, run_dir_for

    if not all(isinstance(c, Config) for c in configs):
        return None  # get_run names the bad item
    todo = [c for c in configs if not is_finished(run_dir_for(c))]
    if not todo:
        return None
    probe = probe_seconds()
    steps = [planned_steps(c) for c in todo]
    pixels = probe[1] if probe is not None else 8 * 64 * 64
    cost_steps = sum(s * c.batch_size * c.aug_input_crop_size ** 2 / pixels for s, c in zip(steps, todo, strict=True))
    total = sum(steps)
    est = estimate_seconds(cost_steps, 1.0, probe)
    if est is not None and est < min_s:
        return est
    names = sorted({c.name or c.model_name for c in todo})
    return announce(len(todo), total, cost=cost_steps / max(total, 1), what=", ".join(names)[:80],
                    probe=probe, log=log)


def executor(name: str = "inprocess", options: Mapping[str, Any] | None = None):
    """The notebooks' ``EXECUTOR`` parameter: ``"inprocess"`` (None: train in this kernel),
    ``"local"`` (submitit subprocesses) or ``"slurm"`` (a SLURM array; ``options`` are
    :func:`cvaia.cluster.executor_from_name`'s, e.g. ``dict(partition="gpu", gpus_per_node=1)``)."""
    if name in ("inprocess", "", None):
        return None
    from .. import cluster

    return cluster.executor_from_name(name, **dict(options or {}))


def seed_configs(cfg, seeds: Sequence[int]) -> list:
    """``cfg`` once per seed (the first seed's config is ``cfg`` itself when its seed is in ``seeds``)."""
    return [cfg if int(s) == cfg.seed else cfg.replace(seed=int(s)) for s in seeds]


def arm_seeds(P: Mapping[str, Any]) -> list[int]:
    """The seeds every compared arm trains under: the first ``PAIRED_SEEDS`` of ``SEEDS`` (the
    baseline trains under all of ``SEEDS``), so that each comparison is paired seed by seed."""
    seeds = [int(s) for s in (P.get("SEEDS") or [P.get("SEED", 0)])]
    k = int(P.get("PAIRED_SEEDS") or len(seeds))
    if not 1 <= k <= len(seeds):
        raise ValueError(f"PAIRED_SEEDS: expected 1..{len(seeds)} (the number of SEEDS), got {k}")
    return seeds[:k]


def run_arms(arms: Mapping[str, Any], seeds: Sequence[int], executor=None,
             log: Callable[[str], None] | None = print) -> dict[str, list]:
    """Train (or load) every arm (label → config) under every seed of ``seeds``, in one batch
    (an executor gets every job at once): ``{label: [run or None per seed]}``. Arms that are the
    same configuration share their runs (the run store keys runs by configuration)."""
    keys, cfgs = [], []
    for label, cfg in arms.items():
        for c in seed_configs(cfg, seeds):
            keys.append(label)
            cfgs.append(c)
    runs = run_configs(cfgs, executor, log)
    out: dict[str, list] = {label: [] for label in arms}
    for label, run in zip(keys, runs, strict=True):
        out[label].append(run)
    return out


def arm_row(runs: Sequence, cfg, **extra) -> dict[str, Any]:
    """:func:`run_row` of an arm trained under several seeds: metrics averaged over the finished
    seeds (``seeds``: how many; ``status`` "diverged" only when none finished), ``miou_sd`` their
    spread (NaN for one seed)."""
    import numpy as np

    rows = [run_row(r, cfg) for r in runs if r is not None]
    row = dict(extra)
    if not rows:
        row.update(run_row(None, cfg), seeds=0, miou_sd=math.nan)
        return row
    for key in ("miou", "mean_loss", "train_time_s", "steps"):
        row[key] = float(np.mean([r[key] for r in rows]))
    row["miou_sd"] = float(np.std([r["miou"] for r in rows], ddof=1)) if len(rows) > 1 else math.nan
    row["seeds"] = len(rows)
    row["status"] = "ok" if len(rows) == len(runs) else f"{len(runs) - len(rows)} seed(s) diverged"
    return row


def seed_noise(runs: Sequence, metric: str, floor: float = 0.0):
    """:class:`~cvaia.experiments.verdicts.Noise` of ``metric`` over the finished seed runs
    (a diverged seed, None, is left out and must be reported by the caller)."""
    from .verdicts import seed_noise as _noise

    values = [float(r.final[metric]) for r in runs if r is not None and metric in r.final]
    return _noise(metric, values, floor)


#: Headline key → run metric of :func:`seed_mean_std` (the short names the summaries use).
HEADLINE_METRICS = {"miou": "miou", "silog": "si_log_rmse", "abs_rel": "abs_rel", "delta1": "delta1"}


def seed_mean_std(runs: Sequence) -> dict[str, tuple[float, float]]:
    """Per headline key of :data:`HEADLINE_METRICS`: the mean and the seed std (ddof 1; NaN for a
    single run) of that metric over the finished runs (a diverged seed, None, is left out)."""
    from .stats import mean_sd

    done = [r for r in runs if r is not None]
    return {key: mean_sd([float(r.final[metric]) for r in done]) for key, metric in HEADLINE_METRICS.items()}


def noise_table(runs: Sequence, metrics: Sequence[str] = ("miou", "si_log_rmse")):
    """One row per seed run (seed, each metric) plus mean and std rows, for display."""
    import numpy as np
    import pandas as pd

    rows = [{"seed": r.config.seed, **{m: float(r.final.get(m, math.nan)) for m in metrics}}
            for r in runs if r is not None]
    table = pd.DataFrame(rows)
    stats = pd.DataFrame([{"seed": "mean", **{m: float(np.nanmean(table[m])) for m in metrics}},
                          {"seed": "std (ddof=1)", **{m: float(np.nanstd(table[m], ddof=1)) for m in metrics}}])
    return pd.concat([table, stats], ignore_index=True)


def pretrained_weights(encoder: str = "resnet18") -> tuple[str, str]:
    """The "pretrained" encoder of the notebooks: ``(pretrained value, what it is)``.

    torchvision's ImageNet weights when they are in the local torch cache (never downloaded),
    else the encoder shipped in ``cvaia/weights/`` (``python -m cvaia pretrain``: joint
    segmentation + depth on a synthetic set generated with another seed than the default set).
    """
    from .. import weights

    if weights.imagenet_available(encoder):
        return "imagenet", f"torchvision's ImageNet {encoder} from the local torch cache"
    path = weights.synthetic_weights_path(encoder)
    if not path.is_file():
        raise FileNotFoundError(f"no pretrained {encoder}: neither ImageNet weights at "
                                f"{weights.imagenet_weights_path(encoder)} nor the shipped {path}; run "
                                f"`python -m cvaia pretrain`")
    desc = f"the shipped synthetic-pretrained {encoder} ({path.name}"
    side = weights.sidecar_path(path)
    if side.is_file():
        meta = json.loads(side.read_text())
        best = meta.get("metrics_val", {}).get("best", {})
        desc += (f": {meta.get('steps')} steps of joint segmentation + depth on {meta['data']['n_train']} "
                 f"synthetic images of seed {meta['data']['seed']}, val mIoU {best.get('miou', math.nan):.1f}, "
                 f"SI-logRMSE {best.get('si_log_rmse', math.nan):.1f}")
    return "synthetic", desc + "; no ImageNet weights are cached here)"


def run_row(run, cfg, **extra) -> dict[str, Any]:
    """One table row: ``extra`` columns, then mIoU, mean training loss, time and steps
    (NaN and ``status="diverged"`` when ``run`` is None)."""
    row = dict(extra)
    if run is None:
        row.update(miou=math.nan, mean_loss=math.nan, train_time_s=math.nan, steps=math.nan, status="diverged")
        return row
    final = run.final
    hist = run.history
    row.update(miou=float(final.get("miou", math.nan)),
               mean_loss=float(hist["loss"].mean()) if "loss" in hist else math.nan,
               train_time_s=float(final.get("train_time_s", math.nan)),
               steps=int(final.get("steps", 0)), status="ok")
    return row


def val_samples(root: str | os.PathLike, n: int) -> dict[str, Any]:
    """The first ``n`` validation images and labels, cropped top-left to multiples of 32 (as evaluated)."""
    import numpy as np

    from ..data.augment import eval_size
    from ..data.miniscapes import MiniscapesSplit

    data = MiniscapesSplit(root, "val")
    items = [data.read(i) for i in range(min(n, len(data)))]
    h, w = eval_size(*items[0]["rgb"].shape[:2])
    out = {"rgb": np.stack([it["rgb"][:h, :w] for it in items])}
    if "semseg" in items[0]:
        out["semseg"] = np.stack([it["semseg"][:h, :w] for it in items])
    if "depth" in items[0]:
        out["depth"] = np.stack([it["depth"][:h, :w] for it in items])
    return out


def depth_range(*maps, lo: float = 1.0, hi: float = 99.0) -> tuple[float, float]:
    """One colour range in metres (the ``lo``..``hi`` percentiles of the valid, > 0, values of all
    ``maps``) for a set of depth figures, so that a colour means the same depth in each of them
    (pass it as ``depth_vmin``/``depth_vmax`` to :func:`cvaia.plots.prediction_grid`)."""
    import numpy as np

    vals = [np.asarray(m, dtype=np.float64) for m in maps if m is not None]
    vals = np.concatenate([v[v > 0].ravel() for v in vals]) if vals else np.zeros(0)
    if vals.size == 0:
        return 1.0, 100.0
    return float(np.percentile(vals, lo)), float(np.percentile(vals, hi))


def predictions(runs: Mapping[str, Any], rgb, task: str = "semseg") -> dict[str, Any]:
    """``{label: prediction}`` of each finished run on the uint8 images ``rgb`` (B×H×W×3)."""
    return {label: run.predict(rgb)[task] for label, run in runs.items() if run is not None}


# ---- device ---------------------------------------------------------------------------------
def device_report(device: str = "auto") -> dict[str, Any]:
    """torch/torchvision versions, the device ``device`` resolves to, CPU threads, GPU name."""
    import torch
    import torchvision

    from ..devices import select_device

    dev = select_device(device)
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "device": str(dev),
        "cpu threads": torch.get_num_threads(),
        "cpu cores": os.cpu_count(),
    }
    if dev.type == "cuda":
        props = torch.cuda.get_device_properties(dev)
        info["gpu"] = props.name
        info["gpu memory (GiB)"] = round(props.total_memory / 2**30, 1)
    return info


def configure_threads(device: str = "auto", threads: int | None = None) -> int:
    """Set the number of CPU threads torch uses in this process and return it.

    Order: ``threads`` when given; ``$CVAIA_NUM_THREADS``; on a GPU, torch's default; on the
    CPU, one thread under pytest-xdist (two test workers share the cores) and otherwise one
    per core this process may run on (the affinity mask). The count comes from the hardware,
    never from the current load, so two executions of a notebook train with the same threads
    and give the same numbers; each run records the count it trained with (``config.json``).
    On a shared machine set ``CVAIA_NUM_THREADS=1``: torch's ops split work over all threads
    and wait for the slowest, so a busy core slows every step (measured: 0.6 s vs 4.4 s per
    step on 2 cores with another job running).
    """
    import torch

    from ..devices import select_device

    if threads is None and os.environ.get(THREADS_ENV, "").strip():
        value = os.environ[THREADS_ENV].strip()
        try:
            threads = int(value)
        except ValueError:
            raise ValueError(f"${THREADS_ENV}: expected a positive integer, got {value!r}") from None
    if threads is None:
        if select_device(device).type != "cpu":
            return torch.get_num_threads()
        if os.environ.get("PYTEST_XDIST_WORKER"):
            threads = 1
        else:
            threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    if threads < 1:
        raise ValueError(f"configure_threads: expected a positive number of threads, got {threads}")
    torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def format_report(info: Mapping[str, Any]) -> str:
    """``key: value`` lines of :func:`device_report`."""
    width = max(len(k) for k in info)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in info.items())


# ---- headline numbers -----------------------------------------------------------------------
def record_headline(notebook: str, values: Mapping[str, float], *, timings: Mapping[str, float] | None = None,
                    verdicts: Sequence | None = None, display: bool = True) -> dict[str, float]:
    """Record a notebook's headline numbers.

    ``notebook`` is the two-digit number ("01"); ``values`` maps short names to numbers (each
    must convert to a float): results that two executions on the same machine reproduce.
    ``timings``: numbers timed on this machine (speed-ups, time ratios, data-wait shares), which
    depend on what else runs, kept apart so that comparing two executions' ``values`` means
    something. ``verdicts``: the notebook's :class:`~cvaia.experiments.verdicts.Verdict` list,
    written as machine-readable records (id, kind, outcome, estimate and interval, test, n per
    arm) and counted into ``values`` (:func:`~cvaia.experiments.verdicts.tally`) unless ``values``
    already holds the counts. Writes ``{"notebook": .., "values": {..}, "timings": {..},
    "verdicts": [..]}`` to
    ``$CVAIA_HEADLINES_DIR/<notebook>.json`` when that variable is set, displays small tables
    (in Jupyter) and returns the values as floats.
    """
    notebook = str(notebook)
    if not (len(notebook) == 2 and notebook.isdigit()):
        raise ValueError(f"record_headline: notebook must be two digits like '01', got {notebook!r}")
    records: list[dict] = []
    if verdicts is not None:
        from .verdicts import records as _records
        from .verdicts import tally as _tally

        verdicts = list(verdicts)
        records = _records(verdicts)
        values = {**_tally(verdicts), **values}
    clean = _as_floats(values, "value")
    timed = _as_floats(timings or {}, "timing")
    folder = os.environ.get(HEADLINES_ENV, "").strip()
    if folder:
        out = Path(folder).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        payload = {"notebook": notebook, "values": _json_numbers(clean), "timings": _json_numbers(timed),
                   "verdicts": records}
        tmp = out / f".{notebook}.json.tmp"
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        os.replace(tmp, out / f"{notebook}.json")
    if display:
        _show_headlines(notebook, clean, timed)
    return clean


def _as_floats(values: Mapping[str, float], what: str) -> dict[str, float]:
    clean: dict[str, float] = {}
    for key, value in values.items():
        try:
            clean[str(key)] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"record_headline: {what} {key!r} must be a number, got {value!r}") from None
    return clean


def _json_numbers(values: Mapping[str, float]) -> dict[str, float | str]:
    return {k: (v if math.isfinite(v) else str(v)) for k, v in values.items()}


def _show_headlines(notebook: str, values: Mapping[str, float], timings: Mapping[str, float]) -> None:
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in values.items())
    text = f"**Headline numbers of notebook {notebook}**\n\n| number | value |\n|---|---|\n{rows}"
    if timings:
        rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in timings.items())
        text += ("\n\n**Timed on this machine** (these depend on its load, so two executions differ)"
                 f"\n\n| number | value |\n|---|---|\n{rows}")
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display

        if get_ipython() is not None:
            display(Markdown(text))
            return
    except ImportError:  # pragma: no cover
        pass
    print(text)


# ---- wording ----------------------------------------------------------------------------------
def verdict(ok: bool, yes: str = "reproduced", no: str = "not reproduced") -> str:
    """``yes`` when ``ok`` else ``no`` — for sentences computed from results."""
    return yes if ok else no


def within(measured: float, reported: float, rel_tol: float = 0.01) -> bool:
    """Whether ``measured`` is within ``rel_tol`` (relative) of the report's ``reported``."""
    return abs(measured - reported) / abs(reported) < rel_tol


def fmt_seconds(seconds: float) -> str:
    """``"42.0 s"`` / ``"3 min 05 s"`` / ``"2 h 03 min"``."""
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{int(seconds // 60)} min {int(seconds % 60):02d} s"
    return f"{int(seconds // 3600)} h {int(seconds % 3600 // 60):02d} min"
