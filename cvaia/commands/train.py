"""``python -m cvaia train``: train a configuration into the run store.

    python -m cvaia train --model_name deeplabv3p_multitask --optimizer adam --optimizer_lr 1e-4 \
        --num_epochs 4 [--resume [PATH]] [--force]

The course template's command lines run unchanged (``--tasks semseg depth``, ``--pretrained
true``, ``--workers_validation``, ``--accumulate_grad_batches``, ``--prepare_submission true``,
the visualization flags; the template's daemon flags are accepted with a notice).

Every ``--flag`` is a field of :class:`cvaia.config.Config` (the course's flag names). The
run goes to ``<store>/<label>-<hash>`` (store: ``--log_dir``, ``$CVAIA_RUNS_DIR`` or
``runs/``). A finished run is reported, not retrained, unless ``--force`` (the old folder is
moved aside to ``<dir>.old-<timestamp>``). An unfinished run (a killed job) is resumed from
its last checkpoint; that is the default, ``--resume`` only says so explicitly.
``--resume PATH`` continues from the checkpoint ``PATH`` (a ``.pt`` file or a run folder) of
this same configuration, e.g. one copied from another machine. Ctrl-C stops the run; the
message says how to resume it.

Under ``torchrun --nproc_per_node N -m cvaia train ...`` the same command trains with DDP.
"""

from __future__ import annotations

import argparse
import math
import os
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    from ..config import add_config_arguments

    store = parser.add_argument_group("run store")
    store.add_argument("--resume", nargs="?", const=True, default=False, metavar="PATH",
                       help="continue an unfinished (killed) run from its last checkpoint (the default "
                            "when the run folder exists unfinished); with PATH: from that checkpoint "
                            "(.pt file or run folder) of this same configuration")
    store.add_argument("--force", action="store_true",
                       help="retrain even if the run is finished; the old run folder is moved aside "
                            "to <dir>.old-<timestamp>, never deleted")
    store.add_argument("--restart", action="store_true",
                       help="start an unfinished run afresh instead of resuming it (the old folder "
                            "is moved aside)")
    store.add_argument("--verify_data", action="store_true",
                       help="serve a finished run only when the data set's file contents are those it was "
                            "trained on (reads every file; by default names, sizes and modification times "
                            "of every file are compared)")
    add_config_arguments(parser)


def _resume_hint(path) -> str:
    """What a Ctrl-C leaves and how to go on from it."""
    from ..run_folder import checkpoint_path

    last = checkpoint_path(path, "last")
    if not last.is_file():
        return "no epoch was finished, so there is nothing to resume; run the same command to start again"
    epochs = sum(1 for _ in open(path / "epochs.csv")) - 1 if (path / "epochs.csv").is_file() else None
    done = f" (after epoch {epochs})" if epochs else ""
    return (f"the run {path.name} keeps its checkpoint {last}{done}; run the same command again to resume "
            f"from it (--restart starts over, the old folder kept)")


def _fmt(v) -> str:
    if isinstance(v, float):
        return "-" if not math.isfinite(v) else f"{v:.3f}"
    return "-" if v is None else str(v)


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import CheckpointError
    from ..config import ConfigError, config_from_args
    from ..data.miniscapes import DatasetError
    from ..grader import GraderError
    from ..run_folder import (
        RunStoreError,
        TrainingDiverged,
        checkpoint_path,
        is_finished,
        run_dir_for,
    )
    from ..runs import Run
    from ..train import train

    cfg = config_from_args(args)
    if args.resume and (args.force or args.restart):
        raise ConfigError("--resume: cannot be combined with --force or --restart")
    resume_from = args.resume if isinstance(args.resume, str) else None
    main = int(os.environ.get("RANK", "0") or 0) == 0
    path = run_dir_for(cfg)
    if args.resume is True and main and not checkpoint_path(path, "last").is_file() and not is_finished(path):
        print(f"[cvaia] --resume: no unfinished run at {path}; starting it", flush=True)
    try:
        path, trained = train(cfg, resume=not args.restart, force=args.force, resume_from=resume_from,
                              verify_data=args.verify_data)
    except (TrainingDiverged, DatasetError, RunStoreError, GraderError, CheckpointError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"interrupted: {_resume_hint(path)}", file=sys.stderr)
        return 130
    if not main:
        return 0
    run = Run(path)
    if not trained:
        print(f"run already finished: {path}\n(use --force to retrain it; the old folder is kept)")
    final = run.final
    keys = ("epoch", "miou", "si_log_rmse", "score", "train_time_s", "images_per_s", "peak_mem_mb", "params")
    print(f"run: {path}")
    print("  " + "  ".join(f"{k}={_fmt(final.get(k))}" for k in keys if k in final))
    return 0
