"""``python -m cvaia params [model flags] [--json]``: per-module parameter table of a model.

Examples::

    python -m cvaia params --model_name deeplabv3p
    python -m cvaia params --model_name deeplabv3p_multitask --json
    python -m cvaia params --model_name adaptive_depth --tasks depth --transformer_dim 512 --num_heads 8
"""

from __future__ import annotations

import argparse
import json


def configure(parser: argparse.ArgumentParser) -> None:
    from cvaia.config import add_config_arguments

    parser.add_argument("--json", action="store_true",
                        help='print {"modules": {name: count}, "total": count} as JSON')
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    from cvaia.config import config_from_args
    from cvaia.models import build_model
    from cvaia.params import format_parameter_table, parameter_table

    cfg = config_from_args(args)  # ConfigError → the dispatcher prints it as a usage error
    table = parameter_table(build_model(cfg))
    if args.json:
        print(json.dumps({"modules": table, "total": sum(table.values())}, indent=2))
    else:
        print(f"{cfg.model_name} ({cfg.model_encoder_name}, tasks {','.join(cfg.tasks)})")
        print(format_parameter_table(table))
    return 0
