"""``python -m cvaia synth``: write a synthetic street-scene set in the miniscapes layout."""

from __future__ import annotations

import argparse
import sys
import time


def configure(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m cvaia synth``."""
    from ..data.synth import DEFAULT_COUNTS

    parser.add_argument("--out", default="",
                        help="output folder (default: $CVAIA_DATA_DIR/synthetic or data/synthetic)")
    parser.add_argument("--height", type=int, default=128, help="image height in pixels (default 128)")
    parser.add_argument("--width", type=int, default=256, help="image width in pixels (default 256)")
    for split in ("train", "val", "test"):
        parser.add_argument(f"--n_{split}", type=int, default=DEFAULT_COUNTS[split],
                            help=f"number of {split} images (default {DEFAULT_COUNTS[split]})")
    parser.add_argument("--seed", type=int, default=0, help="random seed of the set (default 0)")
    parser.add_argument("--workers", type=int, default=None,
                        help="processes to render with (default: all cores; 1 = no pool)")
    parser.add_argument("--force", action="store_true",
                        help="replace a set in --out that was made with other settings")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Generate (or complete) the set and print a short summary."""
    from .. import paths
    from ..config import ConfigError
    from ..data.synth import SynthError, generate

    checks = [("--height", args.height, 8), ("--width", args.width, 8), ("--n_train", args.n_train, 0),
              ("--n_val", args.n_val, 0), ("--n_test", args.n_test, 0), ("--seed", args.seed, 0)]
    if args.workers is not None:
        checks.append(("--workers", args.workers, 1))
    for flag, value, low in checks:
        if value < low:
            raise ConfigError(f"{flag} must be ≥ {low}, got {value}")
    out = paths.resolve_dataset_root(args.out) if args.out.strip() else paths.synthetic_root()
    report: dict = {}
    start = time.perf_counter()
    try:
        root = generate(out, height=args.height, width=args.width, n_train=args.n_train,
                        n_val=args.n_val, n_test=args.n_test, seed=args.seed,
                        workers=args.workers, force=args.force, progress=not args.quiet,
                        report=report)
    except SynthError as exc:
        print(f"python -m cvaia synth: error: {exc}", file=sys.stderr)
        return 1
    elapsed = time.perf_counter() - start
    sizes = f"train {args.n_train}, val {args.n_val}, test {args.n_test}"
    if report["rendered"]:
        rate = report["rendered"] / max(report["seconds"], 1e-9)
        print(f"synth: rendered {report['rendered']} images in {elapsed:.1f} s "
              f"({rate:.1f} images/s with {report['workers']} workers) → {root}")
    else:
        print(f"synth: {root} is already complete, nothing to do")
    print(f"synth: {args.height}x{args.width}, seed {args.seed}: {sizes}")
    return 0
