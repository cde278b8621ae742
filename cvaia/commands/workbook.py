"""``python -m cvaia workbook``: execute the notebooks with papermill and export every figure."""

from __future__ import annotations

import argparse
import sys


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--profile", default="quick", choices=("quick", "smoke", "full"),
                        help="experiment sizes: smoke (plumbing), quick (CPU, ~20 min), "
                             "full (course scale, GPU) (default: quick)")
    parser.add_argument("--only", default="", metavar="NN,NN",
                        help="run only these notebooks, e.g. 01,02 (numbers or file stems)")
    parser.add_argument("--out", default="", metavar="DIR",
                        help="folder of the executed notebooks (default: <runs>/executed/<profile>)")
    parser.add_argument("--dataset_root", default="", metavar="ROOT",
                        help="miniscapes-format data root (default: data/miniscapes if present, "
                             "else data/synthetic, generated when missing)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--timeout", type=float, default=None, metavar="S",
                        help="per-cell execution timeout in seconds, 0 = none (default: 600 for "
                             "smoke, 7200 for quick, 86400 for full)")
    parser.add_argument("--notebooks", default="", metavar="DIR",
                        help="folder of the notebooks (default: <repo>/notebooks)")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                        help="set a notebook parameter (repeatable), read like papermill's -p (True/False/"
                             "None, numbers, strings) and a [list] or {mapping} as YAML, e.g. -p SEED 10 "
                             "-p SEEDS '[10, 11, 12]'; each goes to the notebooks that have it, an unknown "
                             "name is an error; the executed copies go to <runs>/executed/<profile>+<params>")
    parser.add_argument("-y", "--parameters_yaml", action="append", default=[], metavar="YAML",
                        help="notebook parameters as a YAML mapping, e.g. -y 'SEEDS: [10, 11, 12]' "
                             "(repeatable; -p wins)")
    parser.add_argument("--no-probe", dest="probe", action="store_false",
                        help="skip the machine probe (a few timed training steps of the quick joint model, "
                             "<= ~10 s) that the budget in probe units and the cells' time estimates use")
    parser.add_argument("--list", action="store_true", help="list the notebooks and exit")
    parser.add_argument("--report-only", action="store_true",
                        help="execute nothing: (re)build the HTML report <out>/report/index.html "
                             "from the already executed notebooks and their summary.json")


def run(args: argparse.Namespace) -> int:
    from ..report import ReportError, build_report
    from ..workbook import (
        WorkbookError,
        cli_parameters,
        executed_dir,
        list_notebooks,
        run_workbook,
        select_notebooks,
        summary_table,
    )

    def budget_line(results):
        import json
        from pathlib import Path

        summary = Path(results[0].output).parent / "summary.json" if results else None
        if summary is None or not summary.is_file():
            return ""
        return json.loads(summary.read_text(encoding="utf-8")).get("budget", {}).get("text", "")

    try:
        overrides = cli_parameters(args.parameter, args.parameters_yaml)
        if args.report_only:
            print(f"report -> {build_report(args.out or executed_dir(args.profile, overrides))}")
            return 0
        if args.list:
            for path in select_notebooks(list_notebooks(args.notebooks or None), args.only):
                print(path.stem)
            return 0
        results = run_workbook(args.profile, args.only or None, out=args.out or None,
                               dataset_root=args.dataset_root, device=args.device,
                               notebooks_dir=args.notebooks or None,
                               execution_timeout=args.timeout, overrides=overrides, probe=args.probe)
    except (WorkbookError, ReportError) as exc:
        print(f"workbook: error: {exc}", file=sys.stderr)
        return 2
    print()
    print(summary_table(results))
    print(budget_line(results))
    return 0 if all(r.ok for r in results) else 1
