"""The shipped encoder: pretraining on a disjoint synthetic set (the offline ImageNet stand-in).

No ImageNet weights can be downloaded here, yet the course's "pretrained encoder" finding (and
every CPU-scale run of the workbook) needs an encoder that already sees edges, textures and
objects. ``python -m cvaia pretrain`` makes one:

1. generate a synthetic set with :data:`DATA_SEED` (the default set uses seed 0, so no image is
   shared with the sets the notebooks train and validate on);
2. train the joint model ``deeplabv3p_multitask`` on it, **segmentation and depth together**
   (:func:`pretrain_config`): the notebooks fine-tune the encoder for segmentation alone (01),
   depth alone (02, 04) and both (03, 05), and a multi-task encoder is shaped by both losses —
   class boundaries from cross-entropy and geometry (ground plane, vertical surfaces, distance
   cues) from SILog — so it transfers to each of them;
3. keep only the encoder, in torchvision's key layout, as fp16 (``cvaia/weights/<encoder>_synthetic.pt``)
   with a sidecar JSON recording the exact command, data seed and size, steps, device, wall time
   and the validation metrics it reached, and the file's SHA-256.

``--pretrained synthetic`` loads that file (:mod:`cvaia.weights`, :mod:`cvaia.models.encoder`).
``python -m cvaia pretrain --dry-run`` prints the configuration it would train, which the tests
compare with the sidecar (so the shipped file can always be rebuilt).
"""

from __future__ import annotations

import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from . import paths
from .config import Config, make_config
from .weights import file_sha256, sidecar_path, synthetic_weights_path

#: Seed of the pretraining set (the default data set uses seed 0).
DATA_SEED = 1000
#: Size of the pretraining set: the default set's image size, twice its training images.
DATA_SIZE = {"height": 128, "width": 256, "n_train": 4000, "n_val": 200, "n_test": 0}

#: The pretraining recipe (everything else is the Config default).
RECIPE: dict[str, Any] = {
    "name": "pretrain_synthetic",
    "model_name": "deeplabv3p_multitask",
    "tasks": ("semseg", "depth"),
    "pretrained": "random",
    # no dilation, like the ImageNet weights it stands in for: dilation is a fine-tuning choice of
    # every arm that starts from it (issue 16: an (F,F,T)-pretrained stand-in biased every (F,F,F) arm)
    "encoder_dilation": (False, False, False),
    "optimizer": "adam",
    "optimizer_lr": 1e-3,
    "optimizer_weight_decay": 1e-4,
    "lr_scheduler": "poly",
    "batch_size": 16,
    "num_epochs": 12,
    "aug_input_crop_size": 96,
    "aug_geom_scale_min": 0.75,
    "aug_geom_scale_max": 1.5,
    "aug_geom_reflect": True,
    "loss_weight_semseg": 0.5,
    "loss_weight_depth": 0.5,
    "max_val_images": 200,
    "seed": 0,
}


def data_root() -> Path:
    """Where the pretraining set lives (below the data directory)."""
    return paths.data_dir() / f"synthetic_pretrain_seed{DATA_SEED}"


def pretrain_config(root: str | os.PathLike | None = None, encoder: str = "resnet18", **overrides) -> Config:
    """The configuration of the pretraining run (:data:`RECIPE` on the pretraining set)."""
    root = Path(root) if root is not None else data_root()
    return make_config(**{**RECIPE, "model_encoder_name": encoder, "dataset_root": str(root), **overrides})


#: Config fields besides :data:`RECIPE` that shape the weights (architecture and loss).
RECIPE_EXTRA = ("model_encoder_name", "encoder_dilation", "aspp_rates", "decoder_skip_channels",
                "decoder_num_convs", "loss_weighting", "silog_lambda", "optimizer_momentum",
                "lr_scheduler_power", "grad_clip", "aug_geom_tilt_max_deg", "aug_geom_wiggle_max_ratio",
                "max_train_images")


def recipe_dict(cfg: Config) -> dict[str, Any]:
    """The fields of ``cfg`` that define the weights: the recipe and the architecture (not the
    data path, which differs between machines: the data are identified by seed and size)."""
    d = cfg.to_dict()
    return {k: d[k] for k in sorted(set(RECIPE) - {"name"} | set(RECIPE_EXTRA))}


def command_line(encoder: str = "resnet18", epochs: int | None = None, until_epoch: int | None = None) -> str:
    """The command that rebuilds the shipped file."""
    extra = f" --encoder {encoder}" if encoder != "resnet18" else ""
    extra += f" --epochs {epochs}" if epochs is not None and epochs != RECIPE["num_epochs"] else ""
    extra += f" --until_epoch {until_epoch}" if until_epoch is not None else ""
    return "python -m cvaia pretrain" + extra


class _StopPretraining(Exception):
    """Raised from the progress callback to stop after ``until_epoch`` (the run stays resumable)."""


def encoder_state_fp16(model_state: dict) -> dict:
    """The encoder's tensors of a model state dict, torchvision keys, floats as fp16."""
    import torch

    from .models.encoder import extract_encoder_state

    state = extract_encoder_state(model_state)
    return {k: (v.to(torch.float16) if v.is_floating_point() else v).contiguous() for k, v in state.items()}


def export_encoder(run, out: str | os.PathLike, command: str, data_meta: dict | None = None,
                   which: str = "best") -> dict[str, Any]:
    """Write the encoder of finished run ``run`` to ``out`` (+ sidecar JSON); return the sidecar.

    Refuses to replace an existing file (move it away first): shipped weights are never
    silently overwritten.
    """
    import torch

    from .files import atomic_torch_save, atomic_write_json

    out = Path(out)
    side = sidecar_path(out)
    for path in (out, side):
        if path.exists():
            raise FileExistsError(f"{path}: exists; move it away first (pretrained weights are never "
                                  f"overwritten)")
    ckpt = run.load_checkpoint(which)
    state = encoder_state_fp16(ckpt["model"])
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, out)
    cfg = run.config
    epochs = run.epochs
    rows = {int(r["epoch"]): r for r in epochs.to_dict("records")} if len(epochs) else {}
    last_epoch = max(rows) if rows else 0
    keys = ("epoch", "miou", "pixel_acc", "si_log_rmse", "abs_rel", "rmse", "delta1")
    pick = lambda r: {k: r.get(k) for k in keys}  # noqa: E731
    summary = run.done.get("summary", {})
    if not summary:  # stopped before the end of the schedule (--until_epoch)
        summary = {"steps": int(rows[last_epoch]["step"]) if rows else 0, "epochs": last_epoch,
                   "device": run.meta.get("device"),
                   "train_time_s": float(epochs["train_time_s"].sum()) if len(epochs) else None,
                   "total_time_s": float(epochs["epoch_time_s"].sum()) if len(epochs) else None}
        summary["images_per_s"] = (summary["steps"] * cfg.batch_size / summary["train_time_s"]
                                   if summary["train_time_s"] else None)
    final, best = pick(rows.get(last_epoch, {})), pick(rows.get(int(ckpt.get("epoch", last_epoch)), {}))
    sidecar = {
        "file": out.name,
        "sha256": file_sha256(out),
        "format": "encoder-only state dict, torchvision ResNet keys, float tensors fp16",
        "encoder": cfg.model_encoder_name,
        "tensors": len(state),
        "parameters": int(sum(v.numel() for k, v in state.items() if not k.endswith("num_batches_tracked"))),
        "command": command,
        "task": "joint semseg + depth (deeplabv3p_multitask); only the encoder is kept",
        "checkpoint": which,
        "data": {"generator": "cvaia.data.synth", "seed": DATA_SEED, **DATA_SIZE,
                 "meta": {k: (data_meta or {}).get(k) for k in ("generator", "version", "seed", "counts")}},
        "recipe": recipe_dict(cfg),
        "config": {k: v for k, v in cfg.to_dict().items() if k != "dataset_root"},
        "steps": summary.get("steps"),
        "checkpoint_epoch": int(ckpt.get("epoch", last_epoch)),
        "epochs": summary.get("epochs"),
        "device": summary.get("device"),
        "torch_threads": torch.get_num_threads(),
        "train_time_s": summary.get("train_time_s"),
        "total_time_s": summary.get("total_time_s"),
        "images_per_s": summary.get("images_per_s"),
        "schedule_epochs": cfg.num_epochs,
        "metrics_val": {"best": best, "final": final, "val_images": cfg.max_val_images,
                        "per_epoch": [pick(rows[e]) for e in sorted(rows)]},
        "machine": {"python": platform.python_version(), "torch": torch.__version__,
                    "cpu": platform.processor() or platform.machine()},
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": run.path.name,
    }
    atomic_write_json(side, sidecar)
    return sidecar


def read_sidecar(encoder: str = "resnet18") -> dict[str, Any]:
    """The sidecar JSON of the shipped encoder."""
    return json.loads(sidecar_path(synthetic_weights_path(encoder)).read_text())


def pretrain(encoder: str = "resnet18", out: str | os.PathLike | None = None, epochs: int | None = None,
             root: str | os.PathLike | None = None, workers: int | None = None,
             until_epoch: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Generate the pretraining set, train (resumably, through the run store), export the encoder.

    Returns the sidecar dict. ``out`` defaults to the shipped location. An interrupted call
    resumes where it stopped (the run store's checkpoint); a finished run is re-exported at once.
    ``until_epoch``: train the schedule's first N epochs only (the learning-rate schedule is
    still the whole run's, so a later call without it continues the same run to the end), then
    export the best checkpoint so far.
    """
    from .data.synth import generate
    from .runs import get_run, load_run, run_dir_for

    root = Path(root) if root is not None else data_root()
    t0 = time.perf_counter()
    generate(root, seed=DATA_SEED, workers=workers, **DATA_SIZE)
    log(f"pretraining set ready: {root} ({time.perf_counter() - t0:.0f} s)")
    overrides = {"num_epochs": epochs} if epochs is not None else {}
    cfg = pretrain_config(root, encoder, **overrides)
    if until_epoch is not None and not 1 <= until_epoch <= cfg.num_epochs:
        raise ValueError(f"--until_epoch: expected 1..{cfg.num_epochs}, got {until_epoch}")
    path = run_dir_for(cfg)
    done_epochs = len(load_run(path).epochs) if (path / "epochs.csv").is_file() else 0
    if until_epoch is None or done_epochs < until_epoch:
        def stop(row: dict) -> None:
            if until_epoch is not None and int(row["epoch"]) >= until_epoch:
                raise _StopPretraining

        try:
            get_run(cfg, train=True, progress=stop)
        except _StopPretraining:
            log(f"stopped after epoch {until_epoch} of {cfg.num_epochs} (resumable: run again to continue)")
    run = load_run(path)
    meta_path = root / "meta.json"
    data_meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    out = Path(out) if out is not None else synthetic_weights_path(encoder)
    sidecar = export_encoder(run, out, command_line(encoder, epochs, until_epoch), data_meta)
    log(f"wrote {out} ({out.stat().st_size / 2**20:.1f} MiB) and {sidecar_path(out).name}: "
        f"val mIoU {sidecar['metrics_val']['best']['miou']}, "
        f"SI-logRMSE {sidecar['metrics_val']['best']['si_log_rmse']}")
    return sidecar
