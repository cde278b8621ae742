"""Helpers every notebook uses: the data set, the device report, headline numbers, wording.

- :func:`ensure_dataset`: the data root a notebook (or the workbook runner) works on; the
  default synthetic set (or a named synthetic set below ``data/``) is generated when missing.
- :func:`profile_config`: a run's config from the profile's data amounts and schedule.
- :func:`run_configs`, :func:`run_row`, :func:`val_samples`, :func:`predictions`: train or
  load a list of configs, one table row per run, validation images, predictions per run.
- :func:`configure_threads`: torch's CPU threads for a notebook kernel (1 on a busy machine).
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
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Mapping

from .. import paths

#: Environment variable naming the folder for the headline JSON files.
HEADLINES_ENV = "CVAIA_HEADLINES_DIR"
#: Environment variable fixing the number of CPU threads torch uses in a notebook.
THREADS_ENV = "CVAIA_NUM_THREADS"


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


def run_configs(configs: Sequence) -> list:
    """Train (or load) each configuration; a diverged run gives ``None`` instead of a Run.

    Divergence (NaN loss, e.g. SGD or Adam at lr 0.1) is a result here, not an error.
    """
    from ..runs import TrainingDiverged, get_run

    runs = []
    for cfg in configs:
        try:
            runs.append(get_run(cfg))
        except TrainingDiverged:
            runs.append(None)
    return runs


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


def predictions(runs: Mapping[str, Any], rgb, task: str = "semseg") -> dict[str, Any]:
    """``{label: prediction}`` of each finished run on the uint8 images ``rgb`` (B×H×W×3)."""
    return {label: run.predict(rgb)[task] for label, run in runs.items() if run is not None}


# ---- device ---------------------------------------------------------------------------------
def device_report(device: str = "auto") -> dict[str, Any]:
    """torch/torchvision versions, the device ``device`` resolves to, CPU threads, GPU name."""
    import torch
    import torchvision

    from ..utils import select_device

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


def busy_cores(interval: float = 0.25) -> float | None:
    """How many CPU cores other processes keep busy right now (``/proc/stat`` sampled over
    ``interval`` seconds), or None where that file does not exist (not Linux)."""
    import time

    def sample() -> tuple[int, int]:
        with open("/proc/stat", encoding="ascii") as fh:
            values = [int(v) for v in fh.readline().split()[1:]]
        idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
        return sum(values), idle

    try:
        total0, idle0 = sample()
        time.sleep(interval)
        total1, idle1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    if total1 <= total0:
        return None
    return (os.cpu_count() or 1) * (1.0 - (idle1 - idle0) / (total1 - total0))


def configure_threads(device: str = "auto", threads: int | None = None) -> int:
    """Set the number of CPU threads torch uses in this process and return it.

    Order: ``threads`` when given; ``$CVAIA_NUM_THREADS``; on a GPU, torch's default. On the
    CPU, torch's default (one thread per core) is a trap on a small shared machine: every op
    splits its work over all cores and waits for the slowest part, so one other busy process
    (or a second notebook run in parallel by the tests) makes each training step several
    times *slower* than with a single thread (measured: 0.6 s vs 4.4 s per step on 2 cores
    with another job running). So on the CPU: 1 thread under pytest-xdist, else as many
    threads as there are cores not busy right now (at least 1).
    """
    import torch

    from ..utils import select_device

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
            busy = busy_cores()
            cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
            threads = cores if busy is None else int(max(1, min(cores, round((os.cpu_count() or 1) - busy))))
    if threads < 1:
        raise ValueError(f"configure_threads: expected a positive number of threads, got {threads}")
    torch.set_num_threads(int(threads))
    return torch.get_num_threads()


def format_report(info: Mapping[str, Any]) -> str:
    """``key: value`` lines of :func:`device_report`."""
    width = max(len(k) for k in info)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in info.items())


# ---- headline numbers -----------------------------------------------------------------------
def record_headline(notebook: str, values: Mapping[str, float], *, display: bool = True) -> dict[str, float]:
    """Record a notebook's headline numbers.

    ``notebook`` is the two-digit number ("01"); ``values`` maps short names to numbers (each
    must convert to a float). Writes ``{"notebook": .., "values": {..}}`` to
    ``$CVAIA_HEADLINES_DIR/<notebook>.json`` when that variable is set, displays a small
    table (in Jupyter) and returns the values as floats.
    """
    notebook = str(notebook)
    if not (len(notebook) == 2 and notebook.isdigit()):
        raise ValueError(f"record_headline: notebook must be two digits like '01', got {notebook!r}")
    clean: dict[str, float] = {}
    for key, value in values.items():
        try:
            clean[str(key)] = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"record_headline: value {key!r} must be a number, got {value!r}") from None
    folder = os.environ.get(HEADLINES_ENV, "").strip()
    if folder:
        out = Path(folder).expanduser()
        out.mkdir(parents=True, exist_ok=True)
        payload = {"notebook": notebook,
                   "values": {k: (v if math.isfinite(v) else str(v)) for k, v in clean.items()}}
        tmp = out / f".{notebook}.json.tmp"
        tmp.write_text(json.dumps(payload, indent=2), encoding="utf-8")
        os.replace(tmp, out / f"{notebook}.json")
    if display:
        _show_headlines(notebook, clean)
    return clean


def _show_headlines(notebook: str, values: Mapping[str, float]) -> None:
    rows = "\n".join(f"| {k} | {v:.4g} |" for k, v in values.items())
    text = f"**Headline numbers of notebook {notebook}**\n\n| number | value |\n|---|---|\n{rows}"
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
