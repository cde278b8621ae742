"""``python -m cvaia doctor``: run every CUDA code path once and report PASS/FAIL/SKIP per check.

    python -m cvaia doctor                  # on a GPU: about 3-5 minutes
    python -m cvaia doctor --device cpu     # the CPU subset; lists the GPU checks it skipped

The report is printed and written as JSON (``--out``, default
``<run store>/doctor/<timestamp>.json``). Exit status 1 when a check failed. See
:mod:`cvaia.doctor` for the checks.
"""

from __future__ import annotations

import argparse


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: auto)")
    parser.add_argument("--out", default="", metavar="FILE",
                        help="JSON report (default: <run store>/doctor/<timestamp>.json)")
    parser.add_argument("--json", action="store_true", help="print the JSON report instead of the table")
    parser.add_argument("--models", default="", help="comma-separated models to train (default: all five)")
    parser.add_argument("--size", type=int, default=0, help="training crop (default: 64 CPU, 128 GPU)")
    parser.add_argument("--batch_size", type=int, default=0, help="batch (default: 4 CPU, 8 GPU)")
    parser.add_argument("--steps", type=int, default=0, help="training steps per epoch of each run")
    parser.add_argument("--workdir", default="", metavar="DIR",
                        help="work folder for data and runs (default: a temporary one, removed afterwards)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary work folder")


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..config import ConfigError
    from ..doctor import DOCTOR_MODELS, DoctorSettings, default_report_path, json_dumps, run_doctor

    s = DoctorSettings.for_device(args.device)
    for name in ("size", "batch_size", "steps"):
        value = getattr(args, name)
        if value < 0:
            raise ConfigError(f"--{name}: expected a positive integer, got {value}")
        if value:
            setattr(s, name, value)
    if s.batch_size < 2:
        raise ConfigError(f"--batch_size: expected at least 2 (BatchNorm in training), got {s.batch_size}")
    if args.models:
        models = tuple(m.strip() for m in args.models.split(",") if m.strip())
        bad = [m for m in models if m not in DOCTOR_MODELS]
        if bad:
            raise ConfigError(f"--models: unknown {', '.join(bad)}; choose from {', '.join(DOCTOR_MODELS)}")
        s.models = models
    s.workdir, s.keep = args.workdir, args.keep
    log = (lambda msg: None) if args.json else (lambda msg: print(msg, flush=True))
    log(f"cvaia doctor on {args.device}: {len(s.models)} models, {s.size}² crops, batch {s.batch_size}, "
        f"{s.steps} steps per epoch")
    report = run_doctor(s, log=log)
    out = Path(args.out) if args.out else default_report_path()
    report.write_json(out)
    if args.json:
        print(json_dumps(report))
    else:
        print()
        print(report.format())
        print(f"report: {out}")
    return 0 if report.ok else 1
