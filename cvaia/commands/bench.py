"""``python -m cvaia bench``: reference vs fast training throughput and memory."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, fields
from pathlib import Path


def configure(parser: argparse.ArgumentParser) -> None:
    from ..bench import BENCH_MODELS

    parser.add_argument("--models", default=",".join(BENCH_MODELS),
                        help=f"comma-separated models (default: {','.join(BENCH_MODELS)})")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--size", type=int, default=None, help="square crop (default: 128 CPU, 256 CUDA)")
    parser.add_argument("--batch_size", type=int, default=None, help="batch (default: 8 CPU, 32 CUDA)")
    parser.add_argument("--steps", type=int, default=None, help="timed steps per arm")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps before timing")
    parser.add_argument("--workers", type=int, default=None, help="reference DataLoader workers")
    parser.add_argument("--images", type=int, default=None, help="training images in the bench data set")
    parser.add_argument("--dataset_root", default="", help="read this data set instead of a synthetic one")
    parser.add_argument("--compile", action="store_true", help="torch.compile in the fast arm")
    parser.add_argument("--no_isolate", action="store_true",
                        help="run the arms in this process (peak memory is then shared)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--_arm", choices=("reference", "fast"), help=argparse.SUPPRESS)
    parser.add_argument("--_out", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    from ..bench import BENCH_MODELS, default_settings, format_table, run_arm, run_bench

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in BENCH_MODELS]
    if bad:
        raise SystemExit(f"--models: unknown {', '.join(bad)}; choose from {', '.join(BENCH_MODELS)}")
    s = default_settings(args.device)
    for f in fields(s):
        value = getattr(args, f.name, None)
        if value not in (None, ""):
            setattr(s, f.name, value)
    if args.compile:
        s.compile = True
    for name in ("size", "batch_size", "steps", "images"):
        if getattr(s, name) <= 0:
            raise SystemExit(f"--{name}: expected a positive integer, got {getattr(s, name)}")
    if args._arm:  # one arm, in a subprocess started by run_bench
        result = run_arm(models[0], args._arm, s)
        Path(args._out).write_text(json.dumps(result))
        return 0
    log = (lambda *a, **k: None) if args.json else print
    log(f"cvaia bench: {', '.join(models)}; settings {asdict(s)}")
    rows = run_bench(models, s, isolate=not args.no_isolate, log=log)
    if args.json:
        print(json.dumps({"settings": asdict(s), "results": rows}, indent=2))
    else:
        print()
        print(format_table(rows))
    return 0
