"""Problem 1 — semantic segmentation (notebook ``01_semantic_segmentation``).

DeepLabV3+ on semseg only (``--tasks semseg``):

- 1.1a optimizer × learning rate (SGD and Adam), 1.1b batch size × epochs;
- 1.2a pretrained vs random encoder, 1.2b dilation of the last stage;
- 1.3 the ASPP + DeepLabV3+ decoder: skip-projection channels and number of 3×3 convs, and the
  ablation grid "no dilation vs dilation vs ASPP + skip" (:func:`ablation_configs`).

Every experiment is a :class:`~cvaia.config.Config` for the run store, so re-running the
notebook re-uses finished runs. Runs leave ``name`` empty, so that the same configuration
asked for by two experiments (e.g. the best Adam run of 1.1a is the random-encoder run of
1.2a) is one run folder, trained once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from .. import paths
from ..config import Config
from ..data.augment import eval_size
from .common import profile_config, run_row

PROFILES = {
    # plumbing only: every experiment present, tiny
    "smoke": {"TRAIN_IMAGES": 8, "VAL_IMAGES": 4, "CROP_SIZE": 64, "EPOCHS": 1, "BATCH_SIZE": 4,
              "LR": None, "LRS": [1e-3, 1e-4], "BATCH_GRID": [4, 8], "EPOCH_GRID": [1, 2],
              "SKIP_GRID": [16, 48], "CONV_GRID": [1, 2], "PRETRAIN_IMAGES": 8, "PRETRAIN_EPOCHS": 1,
              "SAMPLES": 2, "LOG_EVERY": 1},
    # real (if short) learning on the synthetic set, ~4 min on 2 CPU cores
    "quick": {"TRAIN_IMAGES": 48, "VAL_IMAGES": 8, "CROP_SIZE": 64, "EPOCHS": 1, "BATCH_SIZE": 4,
              "LR": None, "LRS": [1e-2, 1e-3, 1e-4], "BATCH_GRID": [4, 8], "EPOCH_GRID": [1, 2],
              "SKIP_GRID": [16, 32, 48, 64], "CONV_GRID": [1, 2, 3], "PRETRAIN_IMAGES": 96,
              "PRETRAIN_EPOCHS": 2, "SAMPLES": 3, "LOG_EVERY": 1},
    # the course: 1 epoch of the whole training split per run, the full grids (GPU)
    "full": {"TRAIN_IMAGES": 0, "VAL_IMAGES": 0, "CROP_SIZE": 256, "EPOCHS": 1, "BATCH_SIZE": 4,
             "LR": None, "LRS": [1e-1, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6], "BATCH_GRID": [2, 4, 8, 16],
             "EPOCH_GRID": [1, 2, 4], "SKIP_GRID": [16, 32, 48, 64], "CONV_GRID": [1, 2, 3],
             "PRETRAIN_IMAGES": 0, "PRETRAIN_EPOCHS": 4, "SAMPLES": 4, "LOG_EVERY": 10},
}

#: The course report's numbers for problem 1.
REPORT = {
    "best_optimizer": "adam", "best_lr": 1e-4, "best_miou_one_epoch": 40.89,
    "best_skip_channels": 64, "chosen_num_convs": 2,
}

OPTIMIZERS = ("sgd", "adam")


# ---- configurations ---------------------------------------------------------------------------------
def base_config(P: Mapping, **overrides) -> Config:
    """Semseg-only DeepLabV3+ with the profile's data amounts (Adam 1e-4, skip 48, 2 convs, (F,F,T))."""
    return profile_config(P, **{**dict(tasks=("semseg",), model_name="deeplabv3p", optimizer="adam",
                                       optimizer_lr=1e-4, encoder_dilation=(False, False, True),
                                       decoder_skip_channels=48, decoder_num_convs=2), **overrides})


# ---- 1.1a optimizer × learning rate -----------------------------------------------------------------
def optimizer_lr_configs(P: Mapping) -> list[Config]:
    """One config per (optimizer, lr) of the profile's ``LRS``."""
    return [base_config(P, optimizer=opt, optimizer_lr=lr) for opt in OPTIMIZERS for lr in P["LRS"]]


def optimizer_lr_table(configs: Sequence[Config], runs: Sequence) -> pd.DataFrame:
    """optimizer, lr, mIoU, mean loss, time per run."""
    return pd.DataFrame([run_row(r, c, optimizer=c.optimizer, lr=c.optimizer_lr) for c, r in zip(configs, runs, strict=True)])


def best_lr(table: pd.DataFrame, optimizer: str = "adam") -> float:
    """The learning rate with the highest mIoU for ``optimizer`` (ties: the smaller lr)."""
    sub = table[(table["optimizer"] == optimizer) & table["miou"].notna()]
    if sub.empty:
        raise ValueError(f"no finished {optimizer} run in the table")
    sub = sub.sort_values(["miou", "lr"], ascending=[False, True])
    return float(sub.iloc[0]["lr"])


def histories(configs: Sequence[Config], runs: Sequence, optimizer: str) -> tuple[dict, dict]:
    """``({label: steps DataFrame}, {label: lr})`` of the finished runs of one optimizer."""
    hist, lrs = {}, {}
    for c, r in zip(configs, runs, strict=True):
        if r is not None and c.optimizer == optimizer and not r.history.empty:
            label = f"{optimizer} lr={c.optimizer_lr:g}"
            hist[label] = r.history
            lrs[label] = c.optimizer_lr
    return hist, lrs


# ---- 1.1b batch size × epochs --------------------------------------------------------------------------
def batch_epoch_configs(P: Mapping, lr: float) -> list[Config]:
    """One config per (batch size, epochs) of ``BATCH_GRID`` × ``EPOCH_GRID`` (Adam at ``lr``)."""
    return [base_config(P, optimizer_lr=lr, batch_size=b, num_epochs=e)
            for b in P["BATCH_GRID"] for e in P["EPOCH_GRID"]]


def batch_epoch_table(configs: Sequence[Config], runs: Sequence) -> pd.DataFrame:
    """batch, epochs, mIoU, time, global steps (∝ epochs / batch)."""
    return pd.DataFrame([run_row(r, c, batch_size=c.batch_size, epochs=c.num_epochs)
                         for c, r in zip(configs, runs, strict=True)])


# ---- 1.2a pretrained vs random encoder ---------------------------------------------------------------------
def pretrain_root(P: Mapping) -> Path:
    """Where the differently-seeded synthetic set for the offline "pretrained" encoder lives."""
    return paths.data_dir() / f"synthetic_pretrain_seed{int(P['SEED']) + 1000}"


def ensure_pretrain_set(P: Mapping, dataset_root: str | Path) -> Path:
    """Generate the pretraining set: same image size as ``dataset_root``, another seed.

    ``PRETRAIN_IMAGES`` training images (0 = as many as the main set has), a few val images.
    """
    from ..data.miniscapes import MiniscapesSplit
    from ..data.synth import generate

    main = MiniscapesSplit(dataset_root, "train")
    h, w = main.image_size
    n_train = int(P["PRETRAIN_IMAGES"]) or len(main)
    return generate(pretrain_root(P), height=h, width=w, n_train=n_train, n_val=4, n_test=0,
                    seed=int(P["SEED"]) + 1000, workers=None)


def imagenet_available(encoder: str = "resnet18") -> bool:
    """Whether torchvision's ImageNet weights are in the local torch hub cache (never downloaded)."""
    from ..models import imagenet_checkpoint_path

    return imagenet_checkpoint_path(encoder).is_file()


def pretrain_config(P: Mapping, root: str | Path, lr: float) -> Config:
    """The encoder-pretraining run: semseg on the other synthetic set, ``PRETRAIN_EPOCHS`` epochs."""
    return base_config(P, dataset_root=str(root), optimizer_lr=lr, num_epochs=P["PRETRAIN_EPOCHS"],
                       max_train_images=P["PRETRAIN_IMAGES"], max_val_images=4)


def pretraining_run(P: Mapping, root: str | Path, lr: float):
    """The encoder-pretraining run of :func:`pretrain_config` (trained once, then loaded)."""
    from ..runs import get_run

    return get_run(pretrain_config(P, root, lr))


def pretrained_encoder(P: Mapping, lr: float) -> tuple[str, str, Any]:
    """The encoder weights of experiment 1.2a: ``(weights, description, pretraining run or None)``.

    torchvision's ImageNet weights when they are in the local torch cache; else an encoder
    pretrained here (:func:`pretraining_run` at ``lr`` on :func:`ensure_pretrain_set`'s set).
    """
    if imagenet_available():
        return "imagenet", "ImageNet weights from the local torch cache", None
    root = ensure_pretrain_set(P, P["DATASET_ROOT"])
    run = pretraining_run(P, root, lr)
    return (str(run.checkpoint_path("last")),
            f"an encoder trained for {run.config.num_epochs} epoch(s) on a different synthetic set "
            f"(`{Path(root).name}`, {run.final.get('steps')} steps; ImageNet weights are not cached here)", run)


# ---- 1.2b dilation -------------------------------------------------------------------------------------------
def feature_pyramid_shapes(encoder: torch.nn.Module, x: torch.Tensor) -> list[dict[str, Any]]:
    """Shape and stride of the stem and of each ResNet stage for input ``x`` (one forward pass)."""
    rows = []
    with torch.no_grad():
        y = encoder.relu(encoder.bn1(encoder.conv1(x)))
        rows.append({"stage": "stem (conv1)", "shape": tuple(y.shape), "stride": x.shape[-1] // y.shape[-1]})
        y = encoder.maxpool(y)
        for name in ("layer1", "layer2", "layer3", "layer4"):
            y = getattr(encoder, name)(y)
            rows.append({"stage": name, "shape": tuple(y.shape), "stride": x.shape[-1] // y.shape[-1]})
    return rows


def pyramid_table(configs: Mapping[str, Config], height: int, width: int) -> pd.DataFrame:
    """Feature-pyramid shapes (C×H×W) per stage for each labelled config's encoder."""
    from ..models import build_model

    h, w = eval_size(height, width)
    x = torch.zeros(1, 3, h, w)
    cols = {}
    for label, cfg in configs.items():
        model = build_model(cfg.replace(pretrained="random")).eval()
        rows = feature_pyramid_shapes(model.encoder, x)
        cols[label] = {r["stage"]: f"{r['shape'][1]}×{r['shape'][2]}×{r['shape'][3]} (stride {r['stride']})"
                       for r in rows}
    df = pd.DataFrame(cols)
    df.index.name = f"input 3×{h}×{w}"
    return df



# ---- 1.3 ablation: no dilation vs dilation vs ASPP + skip --------------------------------------------------
def ablation_configs(P: Mapping, lr: float, skip_channels: int = 48) -> dict[str, Config]:
    """The three models of the 1.3 prediction grid, each adding one ingredient to the previous.

    - ``baseline``: encoder (F,F,F) (bottleneck at stride 32), ASPP *without* atrous branches
      (``aspp_rates=()``: 1×1 branch + image pooling + 1×1 fuse), decoder *without* skip
      (``decoder_skip_channels=0``: it refines the upsampled bottleneck alone);
    - ``dilation``: the same with encoder (F,F,T) (bottleneck at stride 16);
    - ``aspp_skip``: the full DeepLabV3+: (F,F,T), atrous rates (3, 6, 9) and a
      ``skip_channels`` skip projection (the best width of the sweep is a cached run).
    """
    return {
        "baseline": base_config(P, optimizer_lr=lr, encoder_dilation=(False, False, False), aspp_rates=(),
                                decoder_skip_channels=0),
        "dilation": base_config(P, optimizer_lr=lr, encoder_dilation=(False, False, True), aspp_rates=(),
                                decoder_skip_channels=0),
        "aspp_skip": base_config(P, optimizer_lr=lr, encoder_dilation=(False, False, True), aspp_rates=(3, 6, 9),
                                 decoder_skip_channels=int(skip_channels)),
    }


def ablation_label(cfg: Config) -> str:
    """``"(F,F,T) · ASPP 1×1+pool · no skip"`` style description of an ablation config."""
    dil = "(" + ",".join("T" if d else "F" for d in cfg.encoder_dilation) + ")"
    aspp = f"ASPP rates {','.join(map(str, cfg.aspp_rates))}" if cfg.aspp_rates else "ASPP 1×1+pool"
    skip = f"skip {cfg.decoder_skip_channels}" if cfg.decoder_skip_channels else "no skip"
    return f"{dil} · {aspp} · {skip}"


def ablation_table(configs: Mapping[str, Config], runs: Mapping[str, Any]) -> pd.DataFrame:
    """One row per ablation model: what it has, its parameters, mIoU, loss and time."""
    from ..models import build_model

    rows = []
    for key, cfg in configs.items():
        n_params = sum(p.numel() for p in build_model(cfg.replace(pretrained="random")).parameters())
        rows.append(run_row(runs.get(key), cfg, model=key, description=ablation_label(cfg), params_m=n_params / 1e6))
    return pd.DataFrame(rows)


def fmt_lr(lr: float) -> str:
    """``1e-04`` style."""
    return f"{lr:.0e}"
