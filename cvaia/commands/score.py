"""``python -m cvaia score``: grade a predictions folder like the course grader.

    python -m cvaia score --dataset_root data/synthetic --split val --predictions preds/ [--json]

The folder holds ``semseg/<i>.png`` and/or ``depth/<i>.png`` for every image of the split
(see :mod:`cvaia.grader`). Prints a per-class IoU table and the summary metrics, or with
``--json`` one JSON object (the dict of :func:`cvaia.grader.score_predictions`).
"""

from __future__ import annotations

import argparse
import json
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dataset_root", default="",
                        help="miniscapes-format data root (default: data/miniscapes if present, else data/synthetic)")
    parser.add_argument("--split", default="val", choices=("train", "val", "test"),
                        help="split whose ground truth is used (default: val)")
    parser.add_argument("--predictions", required=True, metavar="DIR",
                        help="folder with semseg/<i>.png and/or depth/<i>.png")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.add_argument("--progress", action="store_true", help="show a progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.miniscapes import DatasetError
    from ..grader import GraderError, format_scores, score_predictions
    from ..paths import resolve_dataset_root

    root = resolve_dataset_root(args.dataset_root)
    try:
        result = score_predictions(root, args.split, args.predictions, progress=args.progress)
    except (GraderError, DatasetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(result))
    else:
        print(f"dataset {root}")
        print(format_scores(result))
    return 0
