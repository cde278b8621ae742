"""``python -m cvaia <command>``: the command-line entry point.

Each command lives in ``cvaia/commands/<name>.py`` and defines ``configure(parser)`` and
``run(args) -> int``; they are imported only when used so that ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import warnings

#: command name → one-line help. The module is ``cvaia.commands.<name>``.
COMMANDS = {
    "synth": "generate a synthetic street-scene data set in the miniscapes layout",
    "convert": "convert another data set (Cityscapes) into the miniscapes layout",
    "train": "train a model (course flags), evaluating each epoch, into the run store",
    "sweep": "train every config of a grid, each as its own job (SLURM array or local, via submitit)",
    "predict": "write submission-format predictions of a finished run for a split",
    "score": "grade a predictions folder against a split's ground truth (course grader)",
    "pretrain": "pretrain the encoder on a disjoint synthetic set (the shipped offline ImageNet stand-in)",
    "params": "print the per-module parameter table of a model configuration",
    "bench": "training throughput and memory: reference path vs fast path",
    "doctor": "first time on a GPU: run every CUDA code path once, PASS/FAIL/SKIP per check",
    "workbook": "execute the notebooks with papermill and export every figure (the main job)",
    "student": "write the notebooks for students: exercise stubs, SOLUTIONS=False, no reference code",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cvaia",
        description="cvaia: multi-task driving perception workbook (segmentation + depth).",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        sub.add_parser(name, help=help_text, add_help=False)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    top = build_parser()
    if not argv or argv[0] in ("-h", "--help"):
        top.print_help()
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        top.error(f"unknown command {name!r}; choose from {', '.join(COMMANDS)}")
    module = importlib.import_module(f"cvaia.commands.{name}")
    parser = argparse.ArgumentParser(prog=f"python -m cvaia {name}", description=COMMANDS[name])
    module.configure(parser)
    args = parser.parse_args(rest)
    from .config import ConfigError
    from .devices import out_of_memory
    from .errors import ConfigNotice

    with warnings.catch_warnings():
        warnings.simplefilter("always", ConfigNotice)
        warnings.showwarning = _show_notice
        try:
            return int(module.run(args) or 0)
        except ConfigError as exc:
            parser.error(str(exc))
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            return 130
        except (MemoryError, RuntimeError) as exc:
            where = out_of_memory(exc)
            if where is None:
                raise
            print(f"error: {_oom_message(name, where, exc, args)}", file=sys.stderr)
            return 1


_show_warning = warnings.showwarning


def _show_notice(message, category, filename, lineno, file=None, line=None) -> None:
    """A :class:`~cvaia.errors.ConfigNotice` as one ``[cvaia]`` line; other warnings as usual."""
    from .errors import ConfigNotice

    if issubclass(category, ConfigNotice):
        print(f"[cvaia] {message}", file=sys.stderr, flush=True)
    else:
        _show_warning(message, category, filename, lineno, file, line)


def _oom_message(command: str, where: str, exc: BaseException, args: argparse.Namespace) -> str:
    """What to do when a command ran out of memory: the sizes that decide it, with their values."""
    from .config import Config

    defaults = Config()
    sizes = []
    for flag in ("batch_size", "aug_input_crop_size", "batch_size_validation"):
        if hasattr(args, flag):
            value = getattr(args, flag) or getattr(defaults, flag)
            sizes.append(f"--{flag} (now {value})")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    hint = (f"try a smaller {', '.join(sizes[:-1])} or {sizes[-1]}" if len(sizes) > 1 else
            f"try a smaller {sizes[0]}" if sizes else "try smaller inputs")
    if command == "train":
        hint += "; --accumulate_grad_batches N keeps the effective batch size"
    return f"out of {where} in `{command}` ({first}); {hint}"


if __name__ == "__main__":
    sys.exit(main())
