"""``python -m cvaia student --out DIR``: the notebooks as students get them.

Every exercise cell keeps its stub (``raise NotImplementedError``) and loses the lines that fill
in cvaia's reference; ``SOLUTIONS = False`` in every parameters cell; the cells that display a
reference's source show a note instead. The check cells stay: they print ``TODO`` for a stub,
``PASS`` for a right module and say what to change otherwise. ``DIR`` must be new or empty.
"""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="new (or empty) folder for the student notebooks; never overwritten")
    parser.add_argument("--notebooks", default="", metavar="DIR",
                        help="folder of the workbook's notebooks (default: <repo>/notebooks)")


def run(args: argparse.Namespace) -> int:
    from ..exercises_notebooks import StudentBuildError, build_student, exercise_list
    from ..workbook import WorkbookError

    try:
        written = build_student(args.out, args.notebooks or None)
    except (StudentBuildError, WorkbookError) as exc:
        print(f"student: error: {exc}", file=sys.stderr)
        return 2
    rows = exercise_list(written)
    print(f"wrote {len(written)} notebooks to {args.out} with {len(rows)} exercise cells (SOLUTIONS = False):")
    for notebook, _, title in rows:
        print(f"  {notebook}: {title}")
    print("Run a notebook top to bottom: every check cell prints TODO until its exercise is written, then PASS.")
    return 0
