"""Problem 4 — adaptive depth bins with attention (notebook ``04_adaptive_depth``).

The adaptive-depth model (``adaptive_depth``): latent tokens from a feature map pass through
transformer blocks and become depth bins; every pixel mixes the bins with softmax weights.
The experiments of the report — latent source, width/heads (the √d_k comparison), positional
embedding, dropout, heads × expansion, ASPP latents with 8 heads and 6 layers — are the
named variants of :func:`variants`; :func:`cost_grid` gives the sizes of the attention-cost
measurements (:mod:`cvaia.attention_cost`).
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from ..config import Config
from ..data.augment import eval_size
from .common import profile_config

PROFILES = {
    # plumbing only: every experiment present (2 variants where the syllabus has 3), tiny widths.
    # ENCODER: "pretrained" (ImageNet when cached, else notebook 01's offline encoder) or "random"
    "smoke": {"EPOCHS": 1, "TRAIN_IMAGES": 4, "VAL_IMAGES": 2, "CROP_SIZE": 64, "BATCH_SIZE": 4,
              "LR": 2e-4, "ENCODER": "pretrained", "NUM_BINS": 16, "NUM_LAYERS": 1,
              "LATENT_SOURCES": ["lowest", "decoder", "aspp"],
              "DIM_HEADS": [[32, 4], [64, 8]],
              "POS_EMBEDS": ["none", "query"], "DROPOUTS": [0.1, 0.0],
              "HEADS_GRID": [4], "EXPANSION_GRID": [2, 4], "ASPP_HEADS": 8, "ASPP_LAYERS": 2,
              "DEPTH_GRIDS": ["latents"], "GRID_IMAGES": 1,
              "COST_BASE": {"B": 2, "N": 64, "D": 32, "H": 4},
              "COST_GRID": {"N": [16, 32, 64], "D": [16, 32, 64], "H": [1, 2, 4], "B": [1, 2, 4]},
              "COST_REPEATS": 1},
    # real (short) learning on the synthetic set, ~3-4 min on 2 CPU cores: the report's widths,
    # every experiment with a reduced grid (8 distinct runs of 24 steps). Adam at 1e-3 drives the
    # bin depths past the 300 m clamp within a few steps (exp(Linear) of unnormalised tokens), where
    # their gradient is zero for good: a constant map (3e-4 still does so with 6 layers). 2e-4 from
    # the pretrained encoder learns in every variant; from a random encoder 24 steps barely move.
    "quick": {"EPOCHS": 3, "TRAIN_IMAGES": 32, "VAL_IMAGES": 4, "CROP_SIZE": 64, "BATCH_SIZE": 4,
              "LR": 2e-4, "ENCODER": "pretrained", "NUM_BINS": 64, "NUM_LAYERS": 2,
              "LATENT_SOURCES": ["lowest", "decoder", "aspp"],
              "DIM_HEADS": [[256, 4], [512, 8]],
              "POS_EMBEDS": ["none", "input"], "DROPOUTS": [0.1, 0.0],
              "HEADS_GRID": [4, 8], "EXPANSION_GRID": [4], "ASPP_HEADS": 8, "ASPP_LAYERS": 6,
              "DEPTH_GRIDS": ["latents", "width", "pos_embed", "dropout", "heads_expansion", "aspp"],
              "GRID_IMAGES": 2,
              "COST_BASE": {"B": 4, "N": 256, "D": 256, "H": 4},
              "COST_GRID": {"N": [64, 128, 256, 512, 1024], "D": [64, 128, 256, 512, 1024],
                            "H": [1, 2, 4, 8, 16], "B": [1, 2, 4, 8, 16]},
              "COST_REPEATS": 3},
    # course scale (GPU)
    "full": {"EPOCHS": 8, "TRAIN_IMAGES": 0, "VAL_IMAGES": 0, "CROP_SIZE": 256, "BATCH_SIZE": 8,
             "LR": 1e-4, "ENCODER": "pretrained", "NUM_BINS": 64, "NUM_LAYERS": 2,
             "LATENT_SOURCES": ["lowest", "decoder", "aspp"],
             "DIM_HEADS": [[256, 4], [512, 4], [512, 8]],
             "POS_EMBEDS": ["none", "query", "input"], "DROPOUTS": [0.1, 0.0],
             "HEADS_GRID": [2, 4, 8], "EXPANSION_GRID": [2, 4, 8], "ASPP_HEADS": 8, "ASPP_LAYERS": 6,
             "DEPTH_GRIDS": ["latents", "width", "pos_embed", "dropout", "heads_expansion", "aspp"],
             "GRID_IMAGES": 3,
             "COST_BASE": {"B": 8, "N": 1024, "D": 256, "H": 4},
             "COST_GRID": {"N": [256, 512, 1024, 2048, 4096, 8192], "D": [64, 128, 256, 512, 1024],
                           "H": [1, 2, 4, 8, 16], "B": [1, 2, 4, 8, 16, 32]},
             "COST_REPEATS": 10},
}

#: The report's findings, as the notebook states them before checking them.
REPORT_FINDINGS = {
    "width": "dim 256 (4 heads) better early than 512",
    "pos_embed": "positional embedding gives no gain",
    "dropout": "dropout helps",
    "latents": "latents from the lowest encoder features best overall",
    "aspp": "ASPP latents best with 8 heads and 6 layers",
}


def base_config(P: Mapping, **overrides) -> Config:
    """The baseline adaptive-depth run: lowest latents, ``DIM_HEADS[0]``, no positional
    embedding, dropout ``DROPOUTS[0]``, expansion 4, ``NUM_LAYERS`` blocks, ``NUM_BINS`` bins."""
    dim, heads = P["DIM_HEADS"][0]
    return profile_config(P, **{**dict(model_name="adaptive_depth", tasks=("depth",), optimizer="adam",
                                       latents_source="lowest", transformer_dim=dim, num_heads=heads, expansion=4,
                                       num_transformer_layers=P["NUM_LAYERS"], dropout=P["DROPOUTS"][0],
                                       pos_embed="none", num_bins=P["NUM_BINS"]), **overrides})


def pretrained_encoder(P: Mapping) -> tuple[str, str]:
    """The encoder weights every adaptive-depth run starts from: ``(weights, description)``.

    ``ENCODER`` of the profile: ``"random"``, or ``"pretrained"`` = torchvision's ImageNet
    weights when they are in the local torch cache, else notebook 01's offline "pretrained"
    encoder (semseg on a differently-seeded synthetic set, :func:`cvaia.experiments.p01.pretrain_config`).
    That run is looked up with notebook 01's own parameters for the same profile, data set and
    seed, at the Adam learning rate notebook 01 chose when its sweep is in the run store (then it
    is a cache hit), else at any of 01's learning rates already trained, else at 1e-3 (trained
    once here). Only the encoder's weights are taken from its checkpoint.
    """
    from ..run_folder import has_diverged, is_finished, run_dir_for
    from ..runs import get_run
    from . import p01, resolve

    choice = P.get("ENCODER", "random")
    if choice == "random":
        return "random", "a randomly initialised encoder"
    if choice != "pretrained":
        raise ValueError(f"ENCODER: expected 'random' or 'pretrained', got {choice!r}")
    if p01.imagenet_available():
        return "imagenet", "the ImageNet encoder from the local torch cache"
    P01 = resolve("01", {"PROFILE": P["PROFILE"], "DATASET_ROOT": str(P["DATASET_ROOT"]),
                         "DEVICE": P["DEVICE"], "SEED": P["SEED"]})
    root = p01.pretrain_root(P01)
    adam = [c for c in p01.optimizer_lr_configs(P01) if c.optimizer == "adam"]
    lrs: list[float] = []
    diverged = [has_diverged(run_dir_for(c)) for c in adam]
    if all(d or is_finished(run_dir_for(c)) for c, d in zip(adam, diverged, strict=True)) and not all(diverged):
        # notebook 01's sweep is in the store: the lr it chose (a diverged run is a row without mIoU)
        table = p01.optimizer_lr_table(adam, [None if d else get_run(c) for c, d in zip(adam, diverged, strict=True)])
        lrs.append(p01.best_lr(table, "adam"))
    lrs += [float(lr) for lr in P01["LRS"]]
    if root.is_dir():
        for lr in lrs:
            cfg = p01.pretrain_config(P01, root, lr)
            if is_finished(run_dir_for(cfg)):
                run = get_run(cfg)
                break
        else:
            run = None
    else:
        run = None
    if run is None:
        root = p01.ensure_pretrain_set(P01, P["DATASET_ROOT"])
        run = p01.pretraining_run(P01, root, 1e-3)
    return (str(run.checkpoint_path("last")),
            f"notebook 01's offline pretrained encoder (semseg, {run.config.num_epochs} epoch(s) on "
            f"`{root.name}`, Adam lr {run.config.optimizer_lr:g}; ImageNet weights are not cached here)")


def variants(P: Mapping) -> dict[str, dict[str, dict]]:
    """The experiments: ``{experiment: {variant label: config overrides of the baseline}}``.

    Variants with the same overrides are the same run (the run store trains it once).
    """
    d0, h0 = P["DIM_HEADS"][0]
    exps: dict[str, dict[str, dict]] = {}
    exps["latents"] = {src: {"latents_source": src} for src in P["LATENT_SOURCES"]}
    exps["width"] = {f"dim {d}, {h} heads (d_k={d // h})": {"transformer_dim": d, "num_heads": h}
                     for d, h in P["DIM_HEADS"]}
    exps["pos_embed"] = {pe: {"pos_embed": pe} for pe in P["POS_EMBEDS"]}
    exps["dropout"] = {f"dropout {p:g}": {"dropout": p} for p in P["DROPOUTS"]}
    exps["heads_expansion"] = {f"{h} heads, expansion {e}": {"num_heads": h, "expansion": e}
                               for h in P["HEADS_GRID"] for e in P["EXPANSION_GRID"] if d0 % h == 0}
    exps["aspp"] = {
        f"aspp, {h0} heads, {P['NUM_LAYERS']} layers": {"latents_source": "aspp"},
        f"aspp, {P['ASPP_HEADS']} heads, {P['ASPP_LAYERS']} layers": {
            "latents_source": "aspp", "num_heads": P["ASPP_HEADS"], "num_transformer_layers": P["ASPP_LAYERS"]},
    }
    return exps


def configs(P: Mapping, pretrained: str = "random") -> dict[str, dict[str, Config]]:
    """:func:`variants` as validated configs, every encoder starting from ``pretrained``
    (the weights of :func:`pretrained_encoder`)."""
    return {exp: {label: base_config(P, pretrained=pretrained, **ov) for label, ov in vs.items()}
            for exp, vs in variants(P).items()}


def experiment_table(runs: Mapping[str, Mapping[str, object]]) -> pd.DataFrame:
    """One row per (experiment, variant): final and best SILog, best epoch, time, parameters."""
    rows = []
    for exp, by_label in runs.items():
        for label, run in by_label.items():
            ep = run.epochs
            final = run.final
            rows.append({"experiment": exp, "variant": label,
                         "silog_final": final.get("si_log_rmse"),
                         "silog_best": float(ep["si_log_rmse"].min()) if len(ep) else float("nan"),
                         "silog_epoch1": float(ep["si_log_rmse"].iloc[0]) if len(ep) else float("nan"),
                         "abs_rel": final.get("abs_rel"), "delta1": final.get("delta1"),
                         "train_time_s": final.get("train_time_s"), "params": final.get("params"),
                         "run": run.name})
    return pd.DataFrame(rows)


def constant_map_silog(dataset_root, max_images: int = 0) -> float:
    """The validation SI-logRMSE of a depth map that is constant within each image (any value).

    SI-logRMSE ignores a global scale per image, so every constant prediction scores the same:
    ``100·std(log gt)`` averaged over the first ``max_images`` validation images (0 = all),
    cropped like the evaluation. A run ending here has not learned anything spatial.
    """
    import numpy as np
    import torch

    from ..data.miniscapes import MiniscapesSplit
    from ..metrics import si_log_rmse_per_image

    split = MiniscapesSplit(dataset_root, "val")
    n = len(split) if max_images <= 0 else min(max_images, len(split))
    values = []
    for i in range(n):
        gt = split.read(i)["depth"]
        h, w = eval_size(*gt.shape)
        gt_t = torch.from_numpy(np.ascontiguousarray(gt[:h, :w]))
        values.append(float(si_log_rmse_per_image(torch.ones_like(gt_t), gt_t)))
    return float(np.nanmean(values))


def learned(table: pd.DataFrame, constant_silog: float, key: str = "silog_final", tol: float = 0.05) -> pd.Series:
    """Per row of :func:`experiment_table`: True when ``key`` differs from the constant-map
    SI-logRMSE by more than ``tol`` points (the run learned a spatially varying depth)."""
    return (table[key] - constant_silog).abs() > tol


def clamped_bins(run, x, which: str = "last") -> float:
    """Fraction of ``run``'s bin depths on the images ``x`` (normalised B×3×H×W) that sit at a
    bound of the 0.1…300 m clamp — where ``exp(Linear)`` gets no gradient any more."""
    import torch

    from ..models import DEPTH_RANGE

    model = run.load_model(which).eval()
    with torch.no_grad():
        bins = model(x, return_aux=True)["bin_depths"]
    lo, hi = DEPTH_RANGE
    return float(((bins <= lo * 1.0001) | (bins >= hi * 0.9999)).float().mean())


def best_of(table: pd.DataFrame, experiment: str, key: str = "silog_final") -> tuple[str, float]:
    """The variant of ``experiment`` with the lowest ``key`` (SILog: lower is better)."""
    part = table[table["experiment"] == experiment]
    if part.empty:
        raise ValueError(f"best_of: no rows for experiment {experiment!r}")
    row = part.loc[part[key].idxmin()]
    return str(row["variant"]), float(row[key])


def silog_curves(runs: Mapping[str, object]) -> dict[str, pd.DataFrame]:
    """``{label: DataFrame(epoch, si_log_rmse)}`` for :func:`cvaia.plots.loss_curves`."""
    return {label: run.epochs[["epoch", "si_log_rmse"]] for label, run in runs.items()}


# ---- the report's findings, checked ------------------------------------------------------------
#: SILog points: closer than this is a tie, not a finding.
TIE = 0.05
INCONCLUSIVE = "inconclusive (a variant did not learn)"


def silog(table: pd.DataFrame, experiment: str, variant: str, key: str = "silog_final") -> float:
    """``key`` of one row of :func:`experiment_table` (with its ``learned`` column)."""
    row = table[(table["experiment"] == experiment) & (table["variant"] == variant)]
    if row.empty:
        raise ValueError(f"silog: no row for experiment {experiment!r}, variant {variant!r}")
    return float(row[key].iloc[0])


def all_learned(table: pd.DataFrame, experiment: str, variants=None) -> bool:
    """Whether every run of ``experiment`` (or of its ``variants``) learned (``learned`` column)."""
    part = table[table["experiment"] == experiment]
    return bool(part[part["variant"].isin(variants or part["variant"])]["learned"].all())


def finding_verdict(table: pd.DataFrame, ok: bool, a: float, b: float, experiment: str, variants=None,
                    tie: float = TIE) -> str:
    """``reproduced`` / ``not reproduced`` for a comparison of ``a`` and ``b``; a tie when they
    are closer than ``tie``; inconclusive when a variant of ``experiment`` did not learn."""
    from .common import verdict

    if not all_learned(table, experiment, variants):
        return INCONCLUSIVE
    return "tie (inconclusive)" if abs(a - b) < tie else verdict(ok)


def findings(table: pd.DataFrame, labels: Mapping[str, object], tie: float = TIE) -> pd.DataFrame:
    """The report's five findings (:data:`REPORT_FINDINGS`) against this run's
    :func:`experiment_table`: what was measured and the verdict. ``labels``: ``{experiment:
    its variant labels in order}`` (e.g. the dict of :func:`configs`)."""
    width, pos, drop, aspp = (list(labels[k]) for k in ("width", "pos_embed", "dropout", "aspp"))
    best_latent, best_latent_value = best_of(table, "latents")
    w_small = silog(table, "width", width[0], "silog_epoch1")
    w_large = min(silog(table, "width", v, "silog_epoch1") for v in width[1:])
    pe_none = silog(table, "pos_embed", "none")
    pe_best = min(silog(table, "pos_embed", v) for v in pos if v != "none")
    drop_on, drop_off = silog(table, "dropout", drop[0]), silog(table, "dropout", drop[1])
    aspp_base, aspp_big = silog(table, "aspp", aspp[0]), silog(table, "aspp", aspp[1])
    latents = table[table["experiment"] == "latents"].set_index("variant")["silog_final"]
    runner_up = latents.drop(best_latent).min() if len(latents) > 1 else 0.0
    from .common import verdict

    return pd.DataFrame([
        {"report": REPORT_FINDINGS["width"],
         "measured": f"epoch 1: {width[0]} {w_small:.2f} vs best wider {w_large:.2f}",
         "this run": finding_verdict(table, w_small < w_large, w_small, w_large, "width", tie=tie)},
        {"report": REPORT_FINDINGS["pos_embed"], "measured": f"none {pe_none:.2f} vs best embedding {pe_best:.2f}",
         "this run": verdict(pe_best >= pe_none - tie) if all_learned(table, "pos_embed") else INCONCLUSIVE},
        {"report": REPORT_FINDINGS["dropout"], "measured": f"{drop[0]} {drop_on:.2f} vs {drop[1]} {drop_off:.2f}",
         "this run": finding_verdict(table, drop_on < drop_off, drop_on, drop_off, "dropout", tie=tie)},
        {"report": REPORT_FINDINGS["latents"],
         "measured": f"best: {best_latent} ({best_latent_value:.2f}); lowest {latents['lowest']:.2f}",
         "this run": finding_verdict(table, best_latent == "lowest", runner_up, best_latent_value, "latents",
                                     tie=tie)},
        {"report": REPORT_FINDINGS["aspp"], "measured": f"{aspp[1]} {aspp_big:.2f} vs {aspp[0]} {aspp_base:.2f}",
         "this run": finding_verdict(table, aspp_big < aspp_base, aspp_big, aspp_base, "aspp", tie=tie)},
    ])
