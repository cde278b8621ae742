"""``python -m cvaia convert cityscapes``: another data set into the course (miniscapes) layout."""

from __future__ import annotations

import argparse
import re
import sys
import time


def _size(text: str) -> tuple[int, int]:
    m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
    if m is None:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 720x360, got {text!r}")
    return int(m[1]), int(m[2])


def configure(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m cvaia convert <source>``."""
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)
    cs = sources.add_parser(
        "cityscapes", prog=f"{parser.prog} cityscapes",
        help="Cityscapes (leftImg8bit, gtFine, disparity, camera) → rgb, train-id semseg, "
             "metric depth",
        description="Convert Cityscapes' train and val splits into the miniscapes layout: "
                    "label ids → train ids, disparity + camera → metric depth, resized and "
                    "centre-cropped to --size; test = the --test_cities held out from val. "
                    "See data/README.md.")
    cs.add_argument("--root", required=True,
                    help="Cityscapes folder holding leftImg8bit/, gtFine/, disparity/, camera/")
    cs.add_argument("--out", required=True, help="output folder (miniscapes layout)")
    cs.add_argument("--size", type=_size, default="720x360", metavar="WxH",
                    help="output WIDTHxHEIGHT (default 720x360, the course's 2:1 crops)")
    cs.add_argument("--test_cities", default="",
                    help="comma-separated val cities that become the test split "
                         "(default: the last val city alphabetically, munster)")
    cs.add_argument("--workers", type=int, default=None, help="threads (default: up to 4)")
    cs.add_argument("--force", action="store_true",
                    help="replace a set in --out that was converted with other settings")
    cs.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    """Convert and print a short summary."""
    from ..config import ConfigError
    from ..data.cityscapes import ConvertError, convert
    from ..data.miniscapes import DatasetError

    width, height = args.size
    if width < 32 or height < 32:
        raise ConfigError(f"--size must be at least 32x32, got {width}x{height}")
    if args.workers is not None and args.workers < 1:
        raise ConfigError(f"--workers must be ≥ 1, got {args.workers}")
    cities = tuple(c.strip() for c in args.test_cities.split(",") if c.strip()) or None
    report: dict = {}
    start = time.perf_counter()
    try:
        out = convert(args.root, args.out, size=(width, height), test_cities=cities,
                      workers=args.workers, force=args.force, progress=not args.quiet,
                      report=report)
    except (ConvertError, DatasetError) as exc:
        print(f"python -m cvaia convert cityscapes: error: {exc}", file=sys.stderr)
        return 1
    counts = ", ".join(f"{s} {n}" for s, n in report["counts"].items())
    if report["converted"]:
        print(f"convert: {report['converted']} Cityscapes frames in "
              f"{time.perf_counter() - start:.1f} s → {out}")
    else:
        print(f"convert: {out} is already complete, nothing to do")
    print(f"convert: {width}x{height} (WxH): {counts}")
    return 0
