"""Sweeps as cluster jobs: one submitit job per configuration (a SLURM array, or local processes).

This module is the one owner of `submitit <https://github.com/facebookincubator/submitit>`_.
Build an executor here and hand it to :func:`cvaia.runs.sweep`; :mod:`cvaia.runs` never imports
this module (it only calls ``executor.run_configs``)::

    from cvaia import cluster, runs

    ex = cluster.executor_from_name("slurm", partition="gpu", gpus_per_node=2, timeout_min=120,
                                    mem_gb=32, cpus_per_task=8, array_parallelism=4,
                                    account="my_lab", qos="normal")
    finished = runs.sweep(cfg, {"optimizer_lr": [1e-3, 1e-4]}, executor=ex)  # waits: list[Run]
    runs.results_table(finished)

    ex = cluster.executor_from_name("slurm", wait=False, ...)
    submitted = runs.sweep(cfg, grid, executor=ex)  # SweepJobs: .jobs, .run_dirs, .done()
    submitted.wait(); submitted.results_table()

What a sweep through an executor does:

- Distinct configurations (by :meth:`~cvaia.config.Config.config_hash`) become one job each, in
  one SLURM array (``--array=0-N%array_parallelism``). Grid points with the same hash share one
  job and one :class:`~cvaia.runs.Run`; finished runs are not submitted again (unless ``force``).
- Each job calls :func:`cvaia.runs.get_run` for its configuration — the run store's lock and
  resume make re-submitting a sweep, duplicate submissions and pre-emption safe: a second job
  of a run that is training waits for it and loads it; an unfinished (killed) run resumes from
  ``checkpoints/last.pt``.
- A job is :class:`submitit.helpers.Checkpointable`: when SLURM pre-empts it or its time limit
  comes (``USR2``, ``signal_delay_s`` before the end), submitit requeues the same call, which
  resumes from the last finished epoch (recorded in ``config.json``'s ``"resumed"``).
- ``gpus_per_node=N`` runs N tasks per node, each one DDP rank (like ``torchrun
  --nproc_per_node N``): :func:`torch_distributed_env` maps submitit's
  :class:`~submitit.JobEnvironment` to the ``RANK WORLD_SIZE LOCAL_RANK MASTER_ADDR
  MASTER_PORT`` that :func:`cvaia.distributed.setup_distributed` reads.
- Job logs, pickles and sbatch scripts go to ``<store>/_submitit/%j`` (``<store>``: the first
  config's ``log_dir`` or ``$CVAIA_RUNS_DIR``); the store root and data folder of the submitting
  process are pinned in the job, so it trains into the same run folder the sweep returns.

A diverged run (NaN loss) raises :class:`~cvaia.runs.TrainingDiverged` like the in-process
sweep; ``executor.run_configs(configs, diverged="none")`` makes it None in the list instead
(what the notebooks' grids do with ``cvaia.experiments.common.run_configs``).

Executors (``name`` of :func:`executor_from_name`): ``"slurm"`` (sbatch; needs ``srun`` on the
machine), ``"local"`` (one subprocess per job on this machine), ``"debug"`` (submitit's debug
executor: in this process, when the results are asked for), ``"inprocess"`` (None: the plain
in-process sweep).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import submitit
from submitit.helpers import Checkpointable, DelayedSubmission

from . import paths, runs
from .config import Config, ConfigError, make_config
from .environ import temporary_environ

#: Names accepted by :func:`executor_from_name` (``inprocess`` gives None).
EXECUTOR_NAMES = ("inprocess", "local", "slurm", "debug")

#: Default job time limit in minutes. SLURM: jobs that reach it are requeued and resume (at most
#: ``max_num_timeout`` times); local: effectively no limit (submitit's own default is 2 min).
DEFAULT_TIMEOUT_MIN = {"slurm": 240, "local": 7 * 24 * 60, "debug": 7 * 24 * 60}

#: Test hook (fault injection): ``"<epoch>:<signal>"``, e.g. ``"1:KILL"`` or ``"1:USR2"`` — a job
#: sends itself that signal right after that epoch's checkpoint (KILL: a crash; USR2: the
#: pre-emption signal SLURM sends, which makes submitit checkpoint and requeue the job).
FAULT_ENV = "CVAIA_SWEEP_TEST_SIGNAL"

#: Folder below the run store holding submitit's job files.
JOBS_FOLDER = "_submitit"


class SweepError(RuntimeError):
    """Jobs of a sweep failed. ``failures``: one (run folder, message) per failed job;
    ``runs``: the finished runs of the sweep (one per grid point, None where it failed)."""

    def __init__(self, message: str, failures: list[tuple[Path, str]], runs: list):
        super().__init__(message)
        self.failures = failures
        self.runs = runs


# ---- inside a job ---------------------------------------------------------------------------------
def torch_distributed_env() -> dict[str, str]:
    """``torchrun``'s variables for this task of a running submitit job.

    One task is one DDP rank: ``RANK`` is submitit's global rank, ``WORLD_SIZE`` its number of
    tasks, ``LOCAL_RANK`` the rank on the node (the GPU ``cuda:LOCAL_RANK``). ``MASTER_ADDR`` is
    the job's first node (``127.0.0.1`` for a one-node job) and ``MASTER_PORT`` a port derived
    from the job id (or ``$MASTER_PORT``), both via :class:`submitit.helpers.TorchDistributedEnvironment`.
    """
    dist = submitit.helpers.TorchDistributedEnvironment()
    nodes = submitit.JobEnvironment().num_nodes
    return {
        "MASTER_ADDR": dist.master_addr if nodes > 1 else "127.0.0.1",
        "MASTER_PORT": str(dist.master_port),
        "RANK": str(dist.rank),
        "WORLD_SIZE": str(dist.world_size),
        "LOCAL_RANK": str(dist.local_rank),
        "LOCAL_WORLD_SIZE": str(dist.local_world_size),
    }


def _fault_hook():
    """The :data:`FAULT_ENV` test hook as a progress callback, or None when it is not set."""
    spec = os.environ.get(FAULT_ENV, "").strip()
    if not spec:
        return None
    try:
        epoch_s, name = spec.split(":", 1)
        epoch, signum = int(epoch_s), getattr(signal, "SIG" + name.strip().upper())
    except (ValueError, AttributeError):
        raise ConfigError(f"environment variable {FAULT_ENV}: expected '<epoch>:<signal>' "
                          f"(e.g. 1:KILL or 1:USR2), got {spec!r}") from None

    def on_epoch(row: dict) -> None:
        if int(row.get("epoch", -1)) == epoch:
            os.kill(os.getpid(), signum)

    return on_epoch


class TrainJob(Checkpointable):
    """The job of one configuration: :func:`cvaia.runs.get_run` (train, resume or load) in the
    store the sweep was submitted for. Returns the run folder (as a string).

    ``environ``: variables to set in the job (the submitting process's ``CVAIA_RUNS_DIR`` and
    ``CVAIA_DATA_DIR``). When SLURM pre-empts the job or its time is up, submitit calls
    :meth:`checkpoint` and requeues the returned call, which resumes the run (never ``force``).
    """

    def __init__(self, cfg: Config, force: bool = False, environ: Mapping[str, str] | None = None):
        if not isinstance(cfg, Config):
            raise TypeError(f"TrainJob: expected a cvaia.config.Config, got {type(cfg).__name__}")
        self.cfg = cfg
        self.force = bool(force)
        self.environ = dict(environ or {})

    def __call__(self) -> str:
        with temporary_environ(self.environ):
            with temporary_environ(torch_distributed_env()):
                run = runs.get_run(self.cfg, train=True, force=self.force, progress=_fault_hook() or False)
        return str(run.path)

    def checkpoint(self, *args: Any, **kwargs: Any) -> DelayedSubmission:
        """The call to requeue: the same configuration, resumed (``force`` would start it afresh)."""
        return DelayedSubmission(TrainJob(self.cfg, force=False, environ=self.environ))

    def __repr__(self) -> str:
        return f"TrainJob({runs.run_name(self.cfg)}{', force' if self.force else ''})"


# ---- submitting ---------------------------------------------------------------------------------
def _store_environ() -> dict[str, str]:
    return paths.absolute_environ()


def jobs_folder(cfg: Config | None = None) -> Path:
    """Where submitit writes job files for runs of ``cfg``'s store: ``<store>/_submitit/%j``."""
    return runs.store_dir(cfg) / JOBS_FOLDER / "%j"


class SweepExecutor:
    """How the configs of a sweep run as jobs: a submitit executor kind and its parameters.

    - ``cluster``: ``"slurm"``, ``"local"`` or ``"debug"`` (see the module docstring).
    - ``parameters``: submitit's :class:`~submitit.AutoExecutor` parameters — generic ones
      (``timeout_min gpus_per_node tasks_per_node nodes cpus_per_task mem_gb name``) and
      ``slurm_*`` ones (``slurm_partition slurm_array_parallelism slurm_account slurm_qos
      slurm_constraint slurm_setup slurm_additional_parameters slurm_signal_delay_s ...``);
      ``slurm_*`` parameters are ignored by the local executors.
    - ``folder``: job files (default :func:`jobs_folder` of the sweep's store).
    - ``wait``: :meth:`run_configs` waits and returns the Runs (default); False returns a
      :class:`SweepJobs` at once.
    - ``max_parallel``: at most this many local jobs at once while waiting (None: all at once;
      not waiting, local jobs all start at once). On SLURM use ``slurm_array_parallelism``.
    - ``poll_s``: how often waiting checks the jobs.
    """

    def __init__(self, cluster: str, parameters: Mapping[str, Any] | None = None, *,
                 folder: str | os.PathLike | None = None, wait: bool = True,
                 max_parallel: int | None = None, max_num_timeout: int = 3, poll_s: float = 1.0):
        if cluster not in ("slurm", "local", "debug"):
            raise ConfigError(f"executor: expected slurm, local or debug, got {cluster!r}")
        if max_parallel is not None and max_parallel < 1:
            raise ConfigError(f"executor: max_parallel must be >= 1, got {max_parallel}")
        self.cluster = cluster
        self.parameters = {k: v for k, v in dict(parameters or {}).items() if v is not None}
        self.parameters.setdefault("timeout_min", DEFAULT_TIMEOUT_MIN[cluster])
        self.folder = Path(folder).expanduser() if folder is not None else None
        self.wait = bool(wait)
        self.max_parallel = max_parallel
        self.max_num_timeout = int(max_num_timeout)
        self.poll_s = float(poll_s)

    @property
    def tasks_per_job(self) -> int:
        """Processes (DDP ranks) per job: ``nodes x tasks_per_node``."""
        return int(self.parameters.get("nodes", 1)) * int(self.parameters.get("tasks_per_node", 1))

    def build(self, folder: str | os.PathLike) -> submitit.AutoExecutor:
        """The configured :class:`submitit.AutoExecutor` writing job files to ``folder``."""
        kwargs = ({f"{self.cluster}_max_num_timeout": self.max_num_timeout}
                  if self.cluster in ("slurm", "local") else {})
        try:
            ex = submitit.AutoExecutor(folder=folder, cluster=self.cluster, **kwargs)
        except RuntimeError as exc:  # SlurmExecutor: no srun on this machine
            raise ConfigError(f"--executor {self.cluster}: {exc} (use --executor local or "
                              f"inprocess off the cluster)") from None
        try:
            ex.update_parameters(**self.parameters)
        except (ValueError, NameError, AssertionError) as exc:
            raise ConfigError(f"executor {self.cluster}: invalid submitit parameters: {exc}") from None
        return ex

    def __repr__(self) -> str:
        return f"SweepExecutor({self.cluster!r}, {self.parameters!r}, wait={self.wait})"

    # -- the protocol cvaia.runs.sweep calls --
    def run_configs(self, configs: Sequence[Config], train: bool = True, force: bool = False,
                    diverged: str = "raise"):
        """Run each distinct config of ``configs`` as a job; see the module docstring.

        Returns one :class:`~cvaia.runs.Run` per config (duplicates share one) when ``wait``,
        else a :class:`SweepJobs`. ``train=False`` submits nothing and loads the runs (like
        :func:`cvaia.runs.get_run` with ``train=False``). ``diverged``: ``"raise"`` — a run
        recorded as diverged raises :class:`~cvaia.runs.TrainingDiverged` before anything is
        submitted, and a job that diverges is a failure (:class:`SweepError`); ``"none"`` — such
        runs are results, None in the returned list (like the notebooks' grids).
        """
        if diverged not in ("raise", "none"):
            raise ValueError(f"run_configs: diverged must be 'raise' or 'none', got {diverged!r}")
        configs = [make_config(c) for c in configs]
        if not train:
            return [runs.get_run(c, train=False) for c in configs]
        self._check_devices(configs)
        distinct: dict[str, Config] = {}
        for c in configs:
            distinct.setdefault(c.config_hash(), c)
        todo: list[tuple[str, TrainJob]] = []
        ended: dict[str, Path | None] = {}  # finished run folders; None: diverged
        environ = _store_environ()
        for key, c in distinct.items():
            if not force:
                # Finished runs load at once; a diverged one is known before anything is submitted.
                try:
                    existing = runs.get_run(c, train=False)
                except runs.RunNotFoundError:
                    existing = None
                except runs.TrainingDiverged:
                    if diverged == "raise":
                        raise
                    ended[key] = None
                    continue
                if existing is not None and existing.is_done:
                    ended[key] = existing.path
                    continue
            todo.append((key, TrainJob(c, force=force, environ=environ)))
        folder = self.folder if self.folder is not None else jobs_folder(configs[0] if configs else None)
        sweep_jobs = SweepJobs(self, configs, ended, folder=folder, diverged=diverged)
        sweep_jobs._queue = todo
        sweep_jobs._submit(self.max_parallel if (self.wait and self.cluster == "local") else None)
        return sweep_jobs.wait() if self.wait else sweep_jobs

    def _check_devices(self, configs: Sequence[Config]) -> None:
        """Clear errors for devices the jobs cannot have (before anything is submitted)."""
        gpus = int(self.parameters.get("gpus_per_node") or 0)
        for c in configs:
            if self.tasks_per_job > 1 and c.device.startswith("cuda:"):
                raise ConfigError(f"--device: {c.device} with {self.tasks_per_job} tasks per job; use "
                                  f"auto or cuda (each task takes cuda:LOCAL_RANK)")
            if c.device.startswith("cuda") and gpus == 0 and self.cluster != "debug":
                raise ConfigError(f"--device: {c.device}, but the jobs get no GPU (--gpus_per_node 0); "
                                  f"ask for GPUs or use --device auto/cpu")


def _has_diverged(run_dir: Path) -> bool:
    try:
        return runs.Run(run_dir).diverged is not None
    except runs.RunNotFoundError:
        return False


def _on_resubmission(run_dir: Path) -> str:
    """What submitting the sweep again does with the run in ``run_dir`` (for failure messages)."""
    from . import run_folder as rf

    if rf.has_diverged(run_dir):
        return "diverged: recorded, not retrained when submitted again; --force retrains it"
    if rf.checkpoint_path(run_dir, "last").is_file():
        return "resumes from its last checkpoint when the sweep is submitted again"
    return "no checkpoint yet: starts afresh when the sweep is submitted again"


class SweepJobs:
    """A submitted sweep. ``configs``: one per grid point; ``jobs``: config hash → submitit job
    (one per distinct unfinished config); ``finished``: config hash → run folder of the runs
    that were finished before (None: diverged, with ``diverged="none"``); ``run_dirs``: the
    run folder of each grid point.

    :meth:`wait` blocks until every job ended and returns the Runs (raising :class:`SweepError`
    naming the failed runs and their logs); :meth:`results_table` is
    :func:`cvaia.runs.results_table` of them.
    """

    def __init__(self, executor: SweepExecutor, configs: Sequence[Config], finished: Mapping[str, Path | None],
                 folder: Path | None = None, diverged: str = "raise"):
        self.executor = executor
        self.configs = list(configs)
        self.finished = dict(finished)
        self.jobs: dict[str, Any] = {}
        self.folder = folder
        self.diverged = diverged
        self._queue: list[tuple[str, TrainJob]] = []
        self._submitit = None

    @property
    def run_dirs(self) -> list[Path]:
        return [runs.run_dir_for(c) for c in self.configs]

    @property
    def job_ids(self) -> list[str]:
        return [j.job_id for j in self.jobs.values()]

    def _running(self) -> int:
        return sum(not j.done() for j in self.jobs.values())

    def _submit(self, limit: int | None) -> None:
        """Submit queued jobs: all (one array) when ``limit`` is None, else up to ``limit`` running."""
        if not self._queue:
            return
        if self._submitit is None:
            self._submitit = self.executor.build(self.folder)
        n = len(self._queue) if limit is None else max(0, limit - self._running())
        batch, self._queue = self._queue[:n], self._queue[n:]
        if not batch:
            return
        # Submitting from inside a job (a notebook on a compute node) must not pass on its
        # SLURM_* / RANK / MASTER_* variables.
        with submitit.helpers.clean_env():
            jobs = self._submitit.submit_array([fn for _, fn in batch])
        self.jobs.update({key: job for (key, _), job in zip(batch, jobs, strict=True)})

    def done(self) -> bool:
        """Whether every job has ended (and none is waiting to be submitted)."""
        return not self._queue and all(j.done() for j in self.jobs.values())

    def cancel(self) -> None:
        """Cancel the jobs that are still running (their runs stay resumable)."""
        self._queue = []
        for job in self.jobs.values():
            if not job.done():
                job.cancel(check=False)

    def wait(self) -> list:
        """Wait for every job; one :class:`~cvaia.runs.Run` per grid point (None: diverged,
        with ``diverged="none"``)."""
        limit = self.executor.max_parallel if self.executor.cluster == "local" else None
        while self._queue:
            time.sleep(self.executor.poll_s)
            self._submit(limit)
        by_key = dict(self.finished)
        failures: list[tuple[Path, str]] = []
        for key, job in self.jobs.items():
            cfg = next(c for c in self.configs if c.config_hash() == key)
            try:
                by_key[key] = Path(job.results()[0])
            except Exception as exc:  # a failed or killed job: report them all, not the first
                run_dir = runs.run_dir_for(cfg)
                if self.diverged == "none" and _has_diverged(run_dir):
                    by_key[key] = None
                    continue
                failures.append((run_dir, f"job {job.job_id}: {str(exc).strip()}"))
        out = [runs.Run(by_key[k]) if by_key.get(k) is not None else None
               for k in (c.config_hash() for c in self.configs)]
        if failures:
            lines = [f"{len(failures)} of {len(self.jobs)} sweep job(s) failed:"]
            for run_dir, msg in failures:
                lines.append(f"- {run_dir.name} ({_on_resubmission(run_dir)}): "
                             f"{msg if len(msg) < 2000 else '...' + msg[-2000:]}")
            raise SweepError("\n".join(lines), failures, out)
        return out

    def results_table(self, columns: Sequence[str] | None = None):
        """:func:`cvaia.runs.results_table` of the finished runs (waits for them; diverged ones are left out)."""
        return runs.results_table([r for r in self.wait() if r is not None], columns)

    def __repr__(self) -> str:
        return (f"SweepJobs({len(self.configs)} configs, {len(self.jobs)} job(s), "
                f"{len(self.finished)} already ended, folder={self.folder})")


# ---- building executors -------------------------------------------------------------------------
def executor_from_name(name: str, *, wait: bool = True, folder: str | os.PathLike | None = None,
                       partition: str | None = None, gpus_per_node: int = 0, nodes: int = 1,
                       tasks_per_node: int | None = None, timeout_min: int | None = None,
                       mem_gb: float | None = None, cpus_per_task: int | None = None,
                       array_parallelism: int | None = None, account: str | None = None,
                       qos: str | None = None, constraint: str | None = None,
                       setup: Sequence[str] | None = None,
                       additional_parameters: Mapping[str, Any] | None = None,
                       job_name: str = "cvaia-sweep", max_num_timeout: int = 3,
                       **submitit_parameters) -> SweepExecutor | None:
    """The executor for ``name`` (``inprocess`` → None: train in this process, one after another).

    ``name`` is what the notebooks' ``EXECUTOR`` parameter and ``--executor`` hold. The usual
    SLURM options: ``partition``, ``gpus_per_node`` (one DDP task per GPU, unless
    ``tasks_per_node``), ``nodes``, ``timeout_min`` (default :data:`DEFAULT_TIMEOUT_MIN`),
    ``mem_gb``, ``cpus_per_task``, ``array_parallelism`` (jobs of the array running at once;
    locally: at most this many local jobs while waiting), ``account``, ``qos``, ``constraint``,
    ``setup`` (shell lines run before the job, e.g. ``module load``), ``additional_parameters``
    (any other ``#SBATCH --key=value``). ``submitit_parameters`` go to submitit unchanged.
    """
    name = (name or "inprocess").strip().lower()
    if name not in EXECUTOR_NAMES:
        raise ConfigError(f"executor: expected one of {', '.join(EXECUTOR_NAMES)}, got {name!r}")
    if name == "inprocess":
        return None
    for flag, value in (("gpus_per_node", gpus_per_node), ("nodes", nodes)):
        if value is None or int(value) < (1 if flag == "nodes" else 0):
            raise ConfigError(f"--{flag}: expected a {'positive' if flag == 'nodes' else 'non-negative'} "
                              f"integer, got {value!r}")
    if nodes > 1 and name != "slurm":
        raise ConfigError(f"--nodes: {nodes} nodes need --executor slurm (the {name} executor has one node)")
    tasks = tasks_per_node if tasks_per_node is not None else max(1, int(gpus_per_node))
    parameters: dict[str, Any] = {
        "name": job_name,
        "nodes": int(nodes),
        "tasks_per_node": int(tasks),
        "gpus_per_node": int(gpus_per_node) or None,
        "timeout_min": timeout_min,
        "mem_gb": mem_gb,
        "cpus_per_task": cpus_per_task,
        "slurm_partition": partition,
        "slurm_array_parallelism": array_parallelism,
        "slurm_account": account,
        "slurm_qos": qos,
        "slurm_constraint": constraint,
        "slurm_setup": list(setup) if setup else None,
        "slurm_additional_parameters": dict(additional_parameters) if additional_parameters else None,
    }
    parameters.update(submitit_parameters)
    return SweepExecutor(name, parameters, folder=folder, wait=wait,
                         max_parallel=array_parallelism if name == "local" else None,
                         max_num_timeout=max_num_timeout)
