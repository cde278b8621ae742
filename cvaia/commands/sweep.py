"""``python -m cvaia sweep``: train every configuration of a grid, each as its own job.

    python -m cvaia sweep --grid optimizer_lr=1e-3,1e-4 model_name=deeplabv3p,deeplabv3p_multitask \
        --num_epochs 16 --executor slurm --partition gpu --gpus_per_node 2 --timeout_min 240 \
        --mem_gb 32 --cpus_per_task 8 --array_parallelism 4 --account my_lab --qos normal

``--grid FIELD=V1,V2,...`` gives one axis per config field (values like the field's flag; for
list-valued fields — ``tasks``, ``aspp_rates``, ``encoder_dilation`` — separate the values with
``;``: ``"tasks=semseg;semseg,depth"``). ``--grid_file`` reads the axes from a JSON or YAML
mapping ``field: [values]``. Every other ``--flag`` of ``python -m cvaia train`` sets the base
configuration. The cartesian product runs through :func:`cvaia.runs.sweep`:

- ``--executor slurm``: one SLURM array of jobs through submitit (see :mod:`cvaia.cluster`);
  pre-empted or timed-out jobs are requeued and resume; ``--gpus_per_node N`` trains each
  configuration with N DDP processes.
- ``--executor local``: the same jobs as processes on this machine; ``debug``: in this process
  through submitit's debug executor; ``inprocess`` (default): one after another, no submitit.

Runs that are finished are not submitted again, and duplicate configurations run once. A
config whose training diverges (NaN/inf) does not stop the others: it is a row of the table
(status ``diverged at step N``), recorded in its run folder (running the sweep again reports
it and moves on; ``--force`` retrains it), and the exit status is the number of diverged
configs. The command waits and prints the results table; ``--no_wait`` prints the job ids and returns
(running the same command again later prints the table once the runs have finished).
"""

from __future__ import annotations

import argparse
import json
import sys
import typing
from pathlib import Path

#: The exit status counts the diverged configs up to this many.
MAX_EXIT_COUNT = 100
#: Separator of the values of list-valued fields in ``--grid``.
LIST_VALUE_SEPARATOR = ";"


def configure(parser: argparse.ArgumentParser) -> None:
    from ..cluster import EXECUTOR_NAMES
    from ..config import add_config_arguments

    grid = parser.add_argument_group("grid")
    grid.add_argument("--grid", nargs="+", action="extend", default=[], metavar="FIELD=V1,V2",
                      help="one grid axis per item: a config field and its comma-separated values "
                           f"(list-valued fields: values separated by '{LIST_VALUE_SEPARATOR}')")
    grid.add_argument("--grid_file", default=None, metavar="FILE",
                      help="JSON or YAML mapping field -> list of values (more axes)")
    grid.add_argument("--force", action="store_true",
                      help="retrain finished runs (old folders are moved aside, never deleted)")

    ex = parser.add_argument_group("executor (submitit)")
    ex.add_argument("--executor", choices=EXECUTOR_NAMES, default="inprocess",
                    help="slurm: a SLURM array; local: one process per job here; debug: submitit's "
                         "in-process debug executor; inprocess: no jobs (default)")
    ex.add_argument("--no_wait", action="store_true",
                    help="submit and return (print the job ids) instead of waiting for the results")
    ex.add_argument("--partition", default=None, help="SLURM partition")
    ex.add_argument("--gpus_per_node", type=int, default=0,
                    help="GPUs per job (per node); one DDP process per GPU (default 0: CPU)")
    ex.add_argument("--nodes", type=int, default=1, help="nodes per job (SLURM; default 1)")
    ex.add_argument("--tasks_per_node", type=int, default=None,
                    help="processes per node (default: --gpus_per_node, at least 1)")
    ex.add_argument("--timeout_min", type=int, default=None,
                    help="time limit per job in minutes (SLURM default 240; a job that reaches it "
                         "is requeued and resumes)")
    ex.add_argument("--mem_gb", type=float, default=None, help="memory per node in GB")
    ex.add_argument("--cpus_per_task", type=int, default=None, help="CPUs per process")
    ex.add_argument("--array_parallelism", type=int, default=None,
                    help="jobs running at once (SLURM: the array's %%N; local: processes at once)")
    ex.add_argument("--account", default=None, help="SLURM account")
    ex.add_argument("--qos", default=None, help="SLURM quality of service")
    ex.add_argument("--constraint", default=None, help="SLURM node constraint")
    ex.add_argument("--job_name", default="cvaia-sweep", help="SLURM job name (default cvaia-sweep)")
    ex.add_argument("--slurm_setup", action="append", default=[], metavar="LINE",
                    help="shell line run before each job, e.g. 'module load cuda' (repeatable)")
    ex.add_argument("--slurm_param", action="append", default=[], metavar="KEY=VALUE",
                    help="any other sbatch option, e.g. mail-type=END (repeatable)")
    add_config_arguments(parser)


def _split_values(name: str, text: str) -> list[str]:
    """``V1,V2`` → values; list-valued fields split on ``;`` (an empty value stays: ``aspp_rates=3,6;``)."""
    from ..config import Config

    if typing.get_type_hints(Config).get(name) is tuple:
        return [v.strip() for v in text.split(LIST_VALUE_SEPARATOR)]
    return [v.strip() for v in text.split(",") if v.strip()]


def parse_grid(items: list[str], grid_file: str | None = None) -> dict[str, list]:
    """The grid of ``--grid FIELD=V1,V2 ...`` and ``--grid_file`` (file axes first)."""
    from ..config import FIELD_NAMES, ConfigError

    grid: dict[str, list] = {}
    if grid_file:
        path = Path(grid_file).expanduser()
        if not path.is_file():
            raise ConfigError(f"--grid_file: {path} does not exist")
        import yaml

        is_json = path.suffix.lower() == ".json"
        try:
            text = path.read_text()
            data = json.loads(text) if is_json else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError) as exc:  # JSONDecodeError is a ValueError
            raise ConfigError(f"--grid_file: cannot read {path} as {'JSON' if is_json else 'YAML'} ({exc})") from None
        if not isinstance(data, dict):
            raise ConfigError(f"--grid_file: {path}: expected a mapping field -> list of values, "
                              f"got {type(data).__name__}")
        for name, values in data.items():
            if name not in FIELD_NAMES:
                raise ConfigError(f"--grid_file: {path}: unknown config field {name!r}")
            grid[name] = list(values) if isinstance(values, list) else [values]
            if not grid[name]:
                raise ConfigError(f"--grid_file: {path}: {name} has no values")
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ConfigError(f"--grid: expected FIELD=V1,V2,..., got {item!r}")
        if name not in FIELD_NAMES:
            import difflib

            close = difflib.get_close_matches(name, FIELD_NAMES, n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ConfigError(f"--grid: unknown config field {name!r}{hint}")
        if name in grid:
            raise ConfigError(f"--grid: {name} is given twice (or also in --grid_file)")
        values = _split_values(name, text)
        if not values:
            raise ConfigError(f"--grid: {name} has no values ({item!r})")
        grid[name] = values
    return grid


def _slurm_params(items: list[str]) -> dict[str, str]:
    from ..config import ConfigError

    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--slurm_param: expected KEY=VALUE (an sbatch option), got {item!r}")
        out[key.strip().lstrip("-")] = value.strip()
    return out


def build_executor(args: argparse.Namespace):
    """The :class:`cvaia.cluster.SweepExecutor` of the flags (None for ``inprocess``); never waits."""
    from ..cluster import executor_from_name

    return executor_from_name(
        args.executor, wait=False, partition=args.partition, gpus_per_node=args.gpus_per_node,
        nodes=args.nodes, tasks_per_node=args.tasks_per_node, timeout_min=args.timeout_min,
        mem_gb=args.mem_gb, cpus_per_task=args.cpus_per_task, array_parallelism=args.array_parallelism,
        account=args.account, qos=args.qos, constraint=args.constraint, setup=args.slurm_setup or None,
        additional_parameters=_slurm_params(args.slurm_param) or None, job_name=args.job_name)


def run(args: argparse.Namespace) -> int:
    from ..cluster import SweepError
    from ..config import config_from_args
    from ..data.miniscapes import DatasetError
    from ..runs import Run, TrainingDiverged, grid_configs, results_table, run_dir_for, sweep

    base = config_from_args(args)
    grid = parse_grid(args.grid, args.grid_file)
    executor = build_executor(args)
    try:
        if executor is None:
            finished = sweep(base, grid, force=args.force, diverged="none")
        else:
            submitted = sweep(base, grid, force=args.force, executor=executor, diverged="none")
            print(f"[cvaia] {len(submitted.configs)} config(s): {len(submitted.finished)} already finished, "
                  f"{len(submitted.jobs)} job(s) submitted ({args.executor})"
                  + (f": {' '.join(submitted.job_ids)}" if submitted.jobs else ""), flush=True)
            if submitted.jobs:
                print(f"[cvaia] job logs: {str(submitted.folder).replace('%j', '<job id>')}/", flush=True)
            if args.no_wait:
                for path in dict.fromkeys(submitted.run_dirs):
                    print(f"  {path}")
                return 0
            finished = submitted.wait()
    except (SweepError, TrainingDiverged, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    import pandas as pd

    # a diverged config is a row too (status "diverged at step N"); grid points that are one config share a row
    dirs = [run_dir_for(c) for c in grid_configs(base, grid)]
    table_runs = list(dict.fromkeys(r if r is not None else Run(d) for r, d in zip(finished, dirs, strict=True)))
    with pd.option_context("display.width", 200, "display.max_columns", 50):
        print(results_table(table_runs).to_string(index=False))
    diverged = [r for r in table_runs if r.diverged is not None and not r.is_done]
    if diverged:
        print(f"[cvaia] {len(diverged)} of {len(table_runs)} config(s) diverged (recorded in their run folders, "
              f"not retrained when the sweep runs again; --force retrains them): "
              f"{', '.join(r.name for r in diverged)}; the exit status is the number diverged", file=sys.stderr)
    return min(len(diverged), MAX_EXIT_COUNT)
