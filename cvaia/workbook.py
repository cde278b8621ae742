"""Execute the workbook's notebooks with papermill and collect their results.

``python -m cvaia workbook`` (or :func:`run_workbook`) is the project's main job:

1. make sure a data set exists (the synthetic set is generated when nothing else is there);
2. execute every notebook of ``notebooks/`` in order with papermill (kernel ``python3``,
   parameters ``PROFILE``, ``DATASET_ROOT``, ``DEVICE``; working directory ``notebooks/``)
   into ``runs/executed/<profile>/NN_name.ipynb``. A previous executed copy is never
   overwritten: it is renamed to ``NN_name.prev-<its time>.ipynb`` first. ``-p NAME VALUE``
   overrides (:func:`cli_parameters`, :func:`notebook_overrides`) go to the notebooks that have
   the parameter and are recorded in ``summary.json``; a machine probe measured first
   (:func:`measure_probe`) reaches them as ``$CVAIA_PROBE_S`` and gives the budget in probe
   units (:func:`budget`);
3. the notebooks save their figures through :func:`cvaia.plots.save` into
   :func:`cvaia.paths.figures_dir`, and their headline numbers through
   :func:`cvaia.experiments.record_headline` into ``$CVAIA_HEADLINES_DIR`` (set here to
   ``<executed dir>/headlines``);
4. print a summary table: each notebook's status, time, figures and headline numbers. A
   failing notebook is reported with its failing cell and error, and the others still run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

from . import paths
from .environ import temporary_environ

#: Folder of the course notebooks.
NOTEBOOKS_DIR = paths.REPO_ROOT / "notebooks"
#: Jupyter kernel the notebooks run on.
KERNEL_NAME = "python3"
PROFILES = ("smoke", "quick", "full")
#: Environment variable through which notebooks learn where to write their headline JSON.
HEADLINES_ENV = "CVAIA_HEADLINES_DIR"


#: Default per-cell execution timeout (seconds) of each profile: a cell that takes longer (a
#: hung kernel, an endless loop) fails with a message instead of blocking the run forever.
#: ``--timeout S`` / ``execution_timeout=S`` sets another, ``0`` none.
CELL_TIMEOUT_S = {"smoke": 600.0, "quick": 2 * 3600.0, "full": 24 * 3600.0}


class WorkbookError(ValueError):
    """Bad runner input: unknown notebook, bad profile, missing folder."""


@dataclass
class NotebookResult:
    """What happened to one notebook."""

    name: str                     #: file stem, e.g. "01_semantic_segmentation"
    source: Path                  #: the notebook that was executed
    output: Path                  #: the executed copy (with outputs)
    ok: bool = False
    seconds: float = 0.0
    headlines: dict[str, float] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)  #: timed numbers (load-dependent)
    verdicts: list[dict] = field(default_factory=list)  #: machine-readable verdict records
    figures: list[Path] = field(default_factory=list)
    failed_cell: int | None = None    #: execution count of the failing cell (as shown in Jupyter)
    failed_cell_index: int | None = None  #: index of the failing cell in the notebook
    error: str | None = None          #: "ename: evalue"
    previous: Path | None = None      #: where an earlier executed copy was moved to
    overrides: dict = field(default_factory=dict)  #: the -p/-y parameters this notebook was given

    @property
    def number(self) -> str:
        """The two-digit prefix ("01")."""
        return self.name.split("_", 1)[0]

    def to_dict(self) -> dict:
        d = asdict(self)
        for key in ("source", "output", "previous"):
            d[key] = str(d[key]) if d[key] is not None else None
        d["figures"] = [str(p) for p in self.figures]
        return d


# ---- selecting notebooks --------------------------------------------------------------------
def list_notebooks(notebooks_dir: str | os.PathLike | None = None) -> list[Path]:
    """The notebooks ``NN_name.ipynb`` of ``notebooks_dir`` in order (checkpoints excluded)."""
    folder = Path(notebooks_dir) if notebooks_dir is not None else NOTEBOOKS_DIR
    if not folder.is_dir():
        raise WorkbookError(f"notebooks folder {folder} does not exist")
    found = [p for p in sorted(folder.glob("*.ipynb"))
             if p.stem[:2].isdigit() and not p.stem.endswith(".prev")]
    return found


def select_notebooks(notebooks: Sequence[Path], only: str | Iterable[str] | None) -> list[Path]:
    """The notebooks named by ``only`` (``"01,02"``, numbers or full stems); all when empty.

    Unknown names raise :class:`WorkbookError` listing the available notebooks.
    """
    if only is None or only == "" or only == []:
        return list(notebooks)
    wanted = [s.strip() for s in only.split(",")] if isinstance(only, str) else [str(s).strip() for s in only]
    wanted = [w for w in wanted if w]
    chosen: list[Path] = []
    for w in wanted:
        key = w.removesuffix(".ipynb")
        matches = [p for p in notebooks if p.stem == key or p.stem.split("_", 1)[0] == key.zfill(2)]
        if not matches:
            names = ", ".join(p.stem for p in notebooks) or "(none)"
            raise WorkbookError(f"--only: no notebook {w!r}; available: {names}")
        for p in matches:
            if p not in chosen:
                chosen.append(p)
    return sorted(chosen, key=lambda p: notebooks.index(p))


# ---- data -----------------------------------------------------------------------------------
def ensure_dataset(dataset_root: str | os.PathLike | None = "",
                   log: Callable[[str], None] = print) -> Path:
    """:func:`cvaia.experiments.common.ensure_dataset` (the one implementation) for the runner:
    an unusable root raises :class:`WorkbookError` naming ``--dataset_root``."""
    from .experiments.common import ensure_dataset as ensure

    try:
        return ensure(dataset_root, log=log, flag="--dataset_root")
    except FileNotFoundError as exc:
        raise WorkbookError(str(exc)) from None


# ---- parameters from the command line (-p NAME VALUE, -y YAML) -------------------------------
#: Parameters the runner sets from its own flags; ``-p`` may not set them.
RUNNER_PARAMETERS = {"PROFILE": "--profile", "DATASET_ROOT": "--dataset_root", "DEVICE": "--device"}


def parse_parameter_value(text: str):
    """A ``-p`` value, read as papermill's ``-p`` reads it (``True``/``False``/``None``, an
    integer, a float, else the string itself) — and, unlike papermill, a value that starts
    with ``[`` or ``{`` is read as a YAML flow list/mapping, so ``-p SEEDS '[10, 11, 12]'``
    gives the list ``[10, 11, 12]``. Raises :class:`WorkbookError` on malformed YAML."""
    import yaml
    from papermill.cli import _resolve_type

    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            raise WorkbookError(f"-p: cannot read {text!r} as a YAML list/mapping: {exc}") from None
    return _resolve_type(text)


def cli_parameters(pairs: Sequence[Sequence[str]] = (), yamls: Sequence[str] = ()) -> dict:
    """``{NAME: value}`` from ``-y YAML`` documents (each a mapping; in order) and then
    ``-p NAME VALUE`` pairs (later ones win)."""
    import yaml

    values: dict = {}
    for text in yamls:
        try:
            doc = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise WorkbookError(f"-y: cannot read {text!r} as YAML: {exc}") from None
        if doc is None:
            continue
        if not isinstance(doc, dict):
            raise WorkbookError(f"-y: expected a YAML mapping like 'SEED: 10', got {text!r}")
        values.update({str(k): v for k, v in doc.items()})
    for name, text in pairs:
        values[str(name)] = parse_parameter_value(str(text))
    return values


def _notebook_parameter_defaults(source: Path, profile: str) -> dict | None:
    """The parameters notebook ``source`` accepts under ``profile``, with their defaults, from
    their one definition (:data:`cvaia.experiments.COMMON` and ``pNN.PROFILES``); None when
    no problem module ``pNN`` belongs to the notebook's number."""
    from . import experiments

    try:
        module = experiments.problem_module(source.stem.split("_", 1)[0])
    except experiments.ParameterError:
        return None
    values = dict(experiments.COMMON)
    values.update(module.PROFILES[profile])
    return values


def notebook_overrides(notebooks: Sequence[Path], overrides: dict, profile: str) -> dict[Path, dict]:
    """``{notebook: the overrides it takes}``: each name goes to the notebooks that have that
    parameter (a notebook without a problem module takes them all, unchecked).

    Raises :class:`WorkbookError` for a name no selected notebook has (listing the valid
    names), for a runner parameter (``PROFILE``… have their own flags) and for a value whose
    kind differs from the parameter's default (naming the parameter and notebook)."""
    from . import experiments

    for name in overrides:
        if name in RUNNER_PARAMETERS:
            raise WorkbookError(f"-p {name}: set by the runner; use {RUNNER_PARAMETERS[name]} instead")
    defaults = {nb: _notebook_parameter_defaults(nb, profile) for nb in notebooks}
    known = sorted(set().union(*[set(d) for d in defaults.values() if d is not None]) - set(RUNNER_PARAMETERS))
    unchecked = any(d is None for d in defaults.values())
    unknown = [n for n in overrides
               if not unchecked and not any(d is not None and n in d for d in defaults.values())]
    if unknown:
        raise WorkbookError(f"-p: no selected notebook has parameter(s) {', '.join(unknown)}; "
                            f"valid names: {', '.join(known)}")
    chosen: dict[Path, dict] = {}
    for nb, d in defaults.items():
        mine = {n: v for n, v in overrides.items() if d is None or n in d}
        if d is not None:
            for n, v in mine.items():
                if v is None:  # None: the profile's value, as in the parameters cell
                    continue
                try:
                    experiments._check_type(nb.stem.split("_", 1)[0], n, v, d[n])
                except experiments.ParameterError as exc:
                    raise WorkbookError(f"-p {n}: {exc}") from None
        chosen[nb] = mine
    return chosen


# ---- execution ------------------------------------------------------------------------------
def _keep_previous(output: Path) -> Path | None:
    """Rename an existing executed copy to ``<stem>.prev-<its mtime>.ipynb``; return the new path."""
    if not output.exists():
        return None
    stamp = datetime.fromtimestamp(output.stat().st_mtime).strftime("%Y%m%d-%H%M%S")
    target = output.with_name(f"{output.stem}.prev-{stamp}.ipynb")
    n = 1
    while target.exists():
        target = output.with_name(f"{output.stem}.prev-{stamp}-{n}.ipynb")
        n += 1
    output.rename(target)
    return target


def _read_headlines(path: Path) -> tuple[dict[str, float], dict[str, float]]:
    """The headline ``values`` and ``timings`` a notebook recorded (empty when it recorded none)."""
    if not path.is_file():
        return {}, {}
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    if not isinstance(data, dict):
        return {}, {}
    values = data.get("values", {k: v for k, v in data.items() if k not in ("notebook", "timings")})
    timings = data.get("timings") or {}
    return ({str(k): float(v) for k, v in values.items()}, {str(k): float(v) for k, v in timings.items()})


def _read_verdicts(path: Path) -> list[dict]:
    """The verdict records a notebook wrote (``headlines/NN.json["verdicts"]``; empty when none)."""
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as fh:
        data = json.load(fh)
    found = data.get("verdicts") if isinstance(data, dict) else None
    if found is None:
        return []
    if not isinstance(found, list) or not all(isinstance(v, dict) and "id" in v for v in found):
        raise ValueError(f'{path}: "verdicts" must be a list of records with an "id"')
    return found


def _new_figures(folder: Path, since: float) -> list[Path]:
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.png") if p.stat().st_mtime >= since - 1.0)


#: Longest Unix socket path that works everywhere (Linux allows 107 bytes, macOS 103).
_MAX_SOCKET_PATH = 100


@contextlib.contextmanager
def kernel_transport() -> Iterator[dict]:
    """papermill keyword arguments that connect to the kernel over local IPC sockets.

    The kernel's five ZeroMQ sockets become Unix domain sockets in a private temporary
    folder (removed afterwards) instead of TCP ports on localhost, so nothing listens on the
    network and ipykernel no longer prints "Kernel is running over TCP without encryption"
    for every notebook. Windows (no IPC transport) and a temporary folder whose path is too
    long for a socket keep jupyter_client's TCP default (``{}``).
    """
    if os.name == "nt":
        yield {}
        return
    folder = tempfile.mkdtemp(prefix="cvaia-kernel-")
    try:
        base = os.path.join(folder, "kernel")  # sockets are <base>-1 ... <base>-5
        if len(os.fsencode(base)) + 3 > _MAX_SOCKET_PATH:
            yield {}
        else:
            from traitlets.config import Config

            yield {"config": Config({"KernelManager": {"transport": "ipc", "ip": base}})}
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _last_started_cell(output: Path) -> tuple[int | None, int | None]:
    """``(execution count, index)`` of the last cell papermill started in ``output``."""
    try:
        import nbformat

        cells = nbformat.read(output, as_version=4).cells
    except Exception:  # no output written (the kernel never started)
        return None, None
    started = [i for i, c in enumerate(cells)
               if c.cell_type == "code" and c.metadata.get("papermill", {}).get("start_time")]
    if not started:
        return None, None
    return cells[started[-1]].get("execution_count"), started[-1]


def execute_notebook(source: Path, output: Path, parameters: dict, *, cwd: Path | None = None,
                     headlines_dir: Path, progress_bar: bool = False,
                     execution_timeout: float | None = None) -> NotebookResult:
    """Execute one notebook with papermill; failures are caught and described in the result."""
    import papermill as pm
    from nbclient.exceptions import CellTimeoutError
    from papermill.exceptions import PapermillExecutionError

    result = NotebookResult(name=source.stem, source=source, output=output)
    output.parent.mkdir(parents=True, exist_ok=True)
    headlines_dir.mkdir(parents=True, exist_ok=True)
    headline_file = headlines_dir / f"{result.number}.json"
    headline_file.unlink(missing_ok=True)  # a stale file would be mistaken for this run's numbers
    result.previous = _keep_previous(output)
    kwargs = {}
    if execution_timeout:
        kwargs["execution_timeout"] = execution_timeout
    start = time.time()
    t0 = time.perf_counter()
    try:
        # the kernel runs in notebooks/: it gets the store, data and figure folders absolute
        with temporary_environ({HEADLINES_ENV: str(headlines_dir), "MPLBACKEND": "Agg",
                                "CVAIA_STATIC_WIDGETS": "1", **paths.absolute_environ()}), \
                kernel_transport() as transport:
            kwargs.update(transport)
            pm.execute_notebook(str(source), str(output), parameters=parameters,
                                kernel_name=KERNEL_NAME, cwd=str(cwd or source.parent),
                                progress_bar=progress_bar, log_output=False, **kwargs)
        result.ok = True
    except PapermillExecutionError as exc:
        result.failed_cell = exc.exec_count
        result.failed_cell_index = exc.cell_index
        result.error = f"{exc.ename}: {exc.evalue}"
    except CellTimeoutError:
        result.failed_cell, result.failed_cell_index = _last_started_cell(output)
        result.error = (f"TimeoutError: the cell did not finish within {execution_timeout:g} s (the "
                        f"per-cell execution timeout; --timeout S sets another, 0 none); the kernel "
                        f"was interrupted and the notebook's remaining cells were not run")
    except Exception as exc:  # kernel died, timeout, unreadable notebook ...
        result.error = f"{type(exc).__name__}: {exc}"
    result.seconds = time.perf_counter() - t0
    result.figures = _new_figures(paths.figures_dir(), start)
    try:
        result.headlines, result.timings = _read_headlines(headline_file)
        result.verdicts = _read_verdicts(headline_file)
    except (ValueError, OSError) as exc:
        result.ok = False
        result.error = result.error or f"unreadable headline file {headline_file}: {exc}"
    return result


def overrides_tag(overrides: dict | None) -> str:
    """A folder-name tag of ``-p`` overrides: ``""`` for none, else e.g.
    ``SEED=10_SEEDS=10,11,12`` (a hash of them when that would be long or odd)."""
    if not overrides:
        return ""
    import hashlib
    import re

    def text(v):
        return ",".join(text(x) for x in v) if isinstance(v, (list, tuple)) else str(v)

    tag = "_".join(f"{k}={text(v)}" for k, v in sorted(overrides.items()))
    if len(tag) > 60 or not re.fullmatch(r"[A-Za-z0-9_=,.+-]+", tag):
        digest = hashlib.sha1(json.dumps(overrides, sort_keys=True, default=str).encode()).hexdigest()[:10]
        tag = f"params-{digest}"
    return tag


# ---- the machine probe and the budget in its units ------------------------------------------
#: The whole workbook's time budget per profile, minutes on an idle 2-CPU-core machine (the
#: README's target); a profile without one gets only its measured time in probe units.
BUDGET_MIN = {"quick": 30.0}


def measure_probe(device: str = "auto", log: Callable[[str], None] = print) -> dict:
    """:func:`cvaia.bench.machine_probe` with the threads a notebook kernel trains with
    (:func:`cvaia.experiments.common.configure_threads`); a failure is recorded, not raised."""
    from .bench import machine_probe
    from .experiments.common import configure_threads

    try:
        configure_threads(device)
        probe = machine_probe(device=device)
    except Exception as exc:  # the probe only informs: the workbook runs without it
        log(f"  machine probe failed ({type(exc).__name__}: {exc}); no time estimates")
        return {"probe_s": None, "probe_error": f"{type(exc).__name__}: {exc}"}
    log(f"  machine probe: {probe['probe_s']:.3f} s per training step of the quick joint model "
        f"({probe['probe_steps']} steps timed, {probe['torch_threads']} torch thread(s))")
    return probe


def probe_environ(probe: dict | None) -> dict:
    """The environment that hands ``probe`` to the notebooks (:func:`cvaia.experiments.common.announce`)."""
    from .experiments.common import PROBE_ENV, PROBE_PIXELS_ENV

    if not probe or not probe.get("probe_s"):
        return {}
    return {PROBE_ENV: repr(float(probe["probe_s"])),
            PROBE_PIXELS_ENV: str(int(probe["batch_size"]) * int(probe["crop"]) ** 2)}


def budget(profile: str, probe: dict | None, total_s: float) -> dict:
    """The budget and this execution's time, in minutes and in probe units (seconds / probe_s),
    with the sentence the summary and the report print."""
    minutes = BUDGET_MIN.get(profile)
    probe_s = (probe or {}).get("probe_s")
    out = {"budget_min": minutes, "total_min": total_s / 60.0, "probe_s": probe_s,
           "budget_probe_units": minutes * 60.0 / probe_s if minutes and probe_s else None,
           "total_probe_units": total_s / probe_s if probe_s else None}
    used = f"this execution took {total_s / 60:.1f} min"
    if probe_s:
        used += f" = {out['total_probe_units']:.0f} probe units"
    if minutes:
        head = f"budget of the {profile} workbook: {minutes:g} min"
        if probe_s:
            head += f" = {out['budget_probe_units']:.0f} probe units"
    else:
        head = f"no time budget for the {profile} profile"
    unit = (f"1 probe unit = {probe_s:.3f} s, one training step of the quick joint model on this machine"
            if probe_s else "no machine probe measured")
    out["text"] = f"{head}; {used} ({unit})"
    return out


def executed_dir(profile: str, overrides: dict | None = None) -> Path:
    """The default folder of a profile's executed notebooks: ``<runs>/executed/<profile>``, or
    ``<runs>/executed/<profile>+<overrides_tag>`` for an execution with ``-p`` overrides (so
    a replication with other seeds is kept beside the default one)."""
    tag = overrides_tag(overrides)
    return paths.runs_dir() / "executed" / (f"{profile}+{tag}" if tag else profile)


def run_workbook(profile: str = "quick", only: str | Iterable[str] | None = None, *,
                 out: str | os.PathLike | None = None, dataset_root: str | os.PathLike | None = "",
                 device: str = "auto", notebooks_dir: str | os.PathLike | None = None,
                 extra_parameters: dict | None = None, build_data: bool = True,
                 execution_timeout: float | None = None, report: bool = True,
                 overrides: dict | None = None, probe: bool | dict = True,
                 log: Callable[[str], None] = print) -> list[NotebookResult]:
    """Execute the notebooks (all, or those in ``only``) in order; return one result each.

    ``out`` defaults to ``<runs>/executed/<profile>``. Every notebook runs even when an
    earlier one failed. ``execution_timeout``: seconds a cell may take (None: the profile's
    :data:`CELL_TIMEOUT_S`, 0: no limit). ``overrides``: notebook parameters (``-p NAME VALUE``),
    checked by :func:`notebook_overrides` and given to the notebooks that have them; they are
    recorded in ``summary.json`` and name the default ``out`` (:func:`executed_dir`). ``probe``:
    True measures the machine probe first (:func:`measure_probe`), a dict is a probe already
    measured, False none; it goes to the notebooks (:func:`probe_environ`) and into
    ``summary.json`` with the budget in probe units (:func:`budget`). A ``summary.json`` is written next to the executed notebooks, and
    with ``report`` the HTML report (:func:`cvaia.report.build_report`) in ``<out>/report``.
    """
    if profile not in PROFILES:
        raise WorkbookError(f"--profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    if execution_timeout is None:
        execution_timeout = CELL_TIMEOUT_S[profile]
    if not (execution_timeout >= 0 and math.isfinite(execution_timeout)):
        raise WorkbookError(f"--timeout: expected seconds >= 0 (0 = no limit), got {execution_timeout}")
    notebooks = select_notebooks(list_notebooks(notebooks_dir), only)
    if not notebooks:
        raise WorkbookError(f"no notebooks found in {notebooks_dir or NOTEBOOKS_DIR}")
    per_notebook = notebook_overrides(notebooks, dict(overrides or {}), profile)
    out_dir = Path(out).expanduser().resolve() if out else executed_dir(profile, overrides)
    out_dir.mkdir(parents=True, exist_ok=True)
    headlines_dir = out_dir / "headlines"
    if build_data:
        root = ensure_dataset(dataset_root, log=log)
    else:
        root = paths.resolve_dataset_root(dataset_root)
    parameters = {"PROFILE": profile, "DATASET_ROOT": str(root), "DEVICE": device}
    parameters.update(extra_parameters or {})
    log(f"workbook: {len(notebooks)} notebook(s), profile {profile}, data {root}, device {device}")
    if overrides:
        log(f"  parameters: {', '.join(f'{k}={v!r}' for k, v in overrides.items())}")
    log(f"  executed copies -> {out_dir}; figures -> {paths.figures_dir()}")
    probe = measure_probe(device, log) if probe is True else (dict(probe) if probe else None)
    results = []
    for source in notebooks:
        log(f"[{source.stem}] running ...")
        with temporary_environ(probe_environ(probe)):
            result = execute_notebook(source, out_dir / source.name, {**parameters, **per_notebook[source]},
                                      cwd=source.parent, headlines_dir=headlines_dir,
                                      progress_bar=sys.stderr.isatty(),
                                      execution_timeout=execution_timeout or None)
        if result.previous is not None:
            log(f"  previous executed copy kept as {result.previous.name}")
        result.overrides = dict(per_notebook[source])
        if result.ok:
            log(f"  ok in {result.seconds:.1f} s, {len(result.figures)} figure(s)")
        else:
            where = f"cell [{result.failed_cell}]" if result.failed_cell is not None else "execution"
            log(f"  FAILED at {where} after {result.seconds:.1f} s: {result.error}")
        results.append(result)
    summary = {"profile": profile, "dataset_root": str(root), "device": device,
               "overrides": dict(overrides or {}), "probe": probe,
               "budget": budget(profile, probe, sum(r.seconds for r in results)),
               "finished": datetime.now().isoformat(timespec="seconds"),
               "figures_dir": str(paths.figures_dir()),
               "notebooks": [r.to_dict() for r in results]}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2), encoding="utf-8")
    if report:
        from .report import ReportError, build_report

        try:
            log(f"report -> {build_report(out_dir)}")
        except ReportError as exc:  # the run itself is saved; `--report-only` can retry
            log(f"report not written: {exc}")
    return results


# ---- reporting ------------------------------------------------------------------------------
def _fmt(value: float) -> str:
    if not math.isfinite(value):
        return str(value)
    if value != 0 and (abs(value) >= 1e5 or abs(value) < 1e-3):
        return f"{value:.3g}"
    return f"{value:.4g}" if abs(value) < 100 else f"{value:.1f}"


def summary_table(results: Sequence[NotebookResult], width: int = 100) -> str:
    """A plain-text table: notebook, status, time, figures, headline numbers (wrapped)."""
    name_w = max([len("notebook")] + [len(r.name) for r in results])
    head = f"{'notebook':<{name_w}}  {'status':<6}  {'time':>8}  {'figs':>4}  headline numbers"
    lines = [head, "-" * max(len(head), min(width, 120))]
    indent = " " * (name_w + 26)
    for r in results:
        status = "ok" if r.ok else "FAILED"
        prefix = f"{r.name:<{name_w}}  {status:<6}  {r.seconds:>7.1f}s  {len(r.figures):>4}  "
        items = [f"{k}={_fmt(v)}" for k, v in r.headlines.items()] or ["-"]
        row, rows = prefix, []
        for item in items:
            if len(row) + len(item) + 2 > width and row.strip() and row != prefix:
                rows.append(row.rstrip(", "))
                row = indent
            row += item + ", "
        rows.append(row.rstrip(", "))
        lines.extend(rows)
        if not r.ok:
            where = f"cell [{r.failed_cell}]" if r.failed_cell is not None else "execution"
            lines.append(f"{indent}error at {where}: {r.error}")
            lines.append(f"{indent}see {r.output}")
    total = sum(r.seconds for r in results)
    failed = sum(not r.ok for r in results)
    lines.append("-" * max(len(head), min(width, 120)))
    lines.append(f"{len(results)} notebook(s), {failed} failed, {total:.1f} s in total")
    return "\n".join(lines)
