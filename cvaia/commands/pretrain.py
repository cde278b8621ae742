"""``python -m cvaia pretrain``: build the shipped synthetic-pretrained encoder (see :mod:`cvaia.pretrain`)."""

from __future__ import annotations

import argparse
import json


def configure(parser: argparse.ArgumentParser) -> None:
    """Flags of ``python -m cvaia pretrain``."""
    parser.add_argument("--encoder", default="resnet18", choices=("resnet18", "resnet34"),
                        help="encoder to pretrain (default resnet18)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="training epochs (default: the recipe's; the shipped file used the default)")
    parser.add_argument("--until_epoch", type=int, default=None,
                        help="train only the schedule's first N epochs, then export (run again without it "
                             "to continue the same run to the end)")
    parser.add_argument("--out", default=None,
                        help="weights file to write (default: cvaia/weights/<encoder>_synthetic.pt; never overwritten)")
    parser.add_argument("--data_root", default=None,
                        help="where the pretraining set is (generated if missing; default "
                             "$CVAIA_DATA_DIR/synthetic_pretrain_seed1000)")
    parser.add_argument("--threads", type=int, default=None,
                        help="CPU threads for torch (default: torch's; use 1 on a shared machine)")
    parser.add_argument("--workers", type=int, default=None, help="processes rendering the data set")
    parser.add_argument("--dry-run", dest="dry_run", action="store_true",
                        help="print the configuration the command would train (and check it against "
                             "the shipped sidecar) without training")


def run(args: argparse.Namespace) -> int:
    from .. import pretrain
    from ..weights import sidecar_path, synthetic_weights_path

    if args.epochs is not None and args.epochs < 1:
        raise SystemExit(f"--epochs: expected a positive integer, got {args.epochs}")
    if args.threads is not None:
        if args.threads < 1:
            raise SystemExit(f"--threads: expected a positive integer, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    overrides = {"num_epochs": args.epochs} if args.epochs is not None else {}
    cfg = pretrain.pretrain_config(args.data_root, args.encoder, **overrides)
    if args.dry_run:
        recipe = pretrain.recipe_dict(cfg)
        shipped = sidecar_path(synthetic_weights_path(args.encoder))
        report = {"command": pretrain.command_line(args.encoder, args.epochs, args.until_epoch),
                  "data_seed": pretrain.DATA_SEED,
                  "data_size": pretrain.DATA_SIZE, "recipe": recipe}
        if shipped.is_file():
            stored = json.loads(shipped.read_text())
            report["matches_shipped"] = (stored.get("recipe") == recipe
                                         and stored.get("data", {}).get("seed") == pretrain.DATA_SEED
                                         and stored.get("command") == report["command"])
            report["shipped_command"] = stored.get("command")
        print(json.dumps(report, indent=2))
        return 0
    pretrain.pretrain(args.encoder, out=args.out, epochs=args.epochs, root=args.data_root,
                      workers=args.workers, until_epoch=args.until_epoch)
    return 0
