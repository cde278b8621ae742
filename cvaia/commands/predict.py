"""``python -m cvaia predict``: submission-format predictions of a finished run.

    python -m cvaia predict --run runs/<name> --split test --out preds/ [--checkpoint best|last]
    python -m cvaia score --split val --predictions preds/     # grade a labelled split

Writes ``<out>/semseg/<i>.png`` and/or ``<out>/depth/<i>.png`` for every image of the split
with :func:`cvaia.grader.export_predictions` (full images; the course's encodings).
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--run", required=True, metavar="DIR", help="run folder (runs/<label>-<hash>)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="split to predict (default: test)")
    parser.add_argument("--out", required=True, metavar="DIR", help="output folder for the predictions")
    parser.add_argument("--checkpoint", default="best", choices=("best", "last"),
                        help="which checkpoint of the run (default: best)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps (default: auto)")
    parser.add_argument("--dataset_root", default="",
                        help="data set root (default: the one the run was trained on)")
    parser.add_argument("--batch_size", type=int, default=0,
                        help="images per forward pass (default: the run's batch_size_validation)")
    parser.add_argument("--tta_flip", action="store_true", help="average with horizontally flipped images")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace predictions already in --out (otherwise refused)")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")


def run(args: argparse.Namespace) -> int:
    from ..checkpoints import CheckpointError, UnsafeCheckpointError
    from ..config import ConfigError
    from ..data.miniscapes import DatasetError
    from ..devices import select_device
    from ..grader import GraderError, export_predictions
    from ..paths import resolve_dataset_root
    from ..run_folder import RunConfigError, TrainingDiverged
    from ..runs import Run, RunNotFoundError

    if args.batch_size < 0:
        raise ConfigError(f"--batch_size: expected a positive integer, got {args.batch_size}")
    device = select_device(args.device)
    try:
        run = Run(args.run)
        model = run.load_model(args.checkpoint, device=device)
        root = resolve_dataset_root(args.dataset_root) if args.dataset_root else run.dataset_root
        batch = args.batch_size or run.config.batch_size_validation
        out = export_predictions(model, root, args.split, args.out, device=device, batch_size=batch,
                                 tta_flip=args.tta_flip, progress=args.progress, overwrite=args.overwrite)
    except CheckpointError as exc:
        remedy = ("" if isinstance(exc, UnsafeCheckpointError) else
                  "; retrain the run with `python -m cvaia train ... --force` (the old folder is kept), or "
                  "--checkpoint last/best for the other one")
        print(f"error: {exc}{remedy}", file=sys.stderr)
        return 2
    except (RunNotFoundError, RunConfigError, GraderError, DatasetError, TrainingDiverged) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.split} predictions of {run.name} ({args.checkpoint} checkpoint, data {root}) to {out}")
    return 0
