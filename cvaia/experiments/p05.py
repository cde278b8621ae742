"""Problem 5 — the open challenge (notebook ``05_open_challenge``).

- the transformer multi-task model (``transformer_multitask``) trained and graded with the
  local course grader (:func:`grade`: :func:`cvaia.grader.export_predictions` on the test
  split, then :func:`cvaia.grader.score_predictions`);
- the class-token cross-attention segmentation head (``cross_attention_multitask``) and what
  its memory costs (:func:`cross_attention_memory`, :func:`measured_head_memory`);
- beyond the report: learned task weighting (``uncertainty``, ``dwa``) and test-time flip
  averaging (:func:`evaluate_run`), each judged against the fixed-weight baseline's seed noise
  (:func:`variant_verdicts`); the "best" variant and each "helped / did not help" sentence
  come from the same verdicts (:func:`best_variant`, :func:`variant_sentence`);
- a leaderboard of every problem's best run in the store (:func:`leaderboard`), ranked by an
  explicit per-task rule with missing values last and a deterministic tie rule (:func:`ranking`,
  :func:`rank_key`, :func:`best_row`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .. import paths
from ..attention_cost import saved_tensor_bytes
from ..config import Config
from . import verdicts as V
from .common import pretrained_weights, profile_config, seed_configs, seed_mean_std

PROFILES = {
    "smoke": {"EPOCHS": 1, "TRAIN_IMAGES": 4, "VAL_IMAGES": 2, "TEST_IMAGES": 4, "SEEDS": [0, 1], "CROP_SIZE": 64,
              "BATCH_SIZE": 4, "LR": 1e-3, "NUM_BINS": 16, "DIM": 32, "NUM_HEADS": 4, "NUM_LAYERS": 1,
              "CROSS_DIM": 32, "CROSS_LAYERS": 1, "WEIGHTINGS": ["fixed", "uncertainty", "dwa"],
              "MEMORY_BATCH": 1},
    # learns within ~4 min on the idle 2-core machine: 3 seeds of the fixed-weight baseline, the
    # uncertainty-weighted and the cross-attention model, 1 epoch of 400 crops of 64² each
    # (5 × 400 crops, 5 + 1 (flip TTA) evaluations of 100 validation images, 25 graded test
    # images). lr 2e-4: in an 80-step A/B of the transformer model it gave mIoU 21.0 vs 18.4 at
    # lr 1e-3 with a similar SI-logRMSE (49.1 vs 46.9), and its bins never reach the 300 m clamp.
    # DWA is dropped: it weights by the loss ratio of the last two epochs, so before epoch 3 it
    # *is* the fixed weighting (1/1 instead of 0.5/0.5, which Adam does not see).
    "quick": {"EPOCHS": 1, "TRAIN_IMAGES": 400, "VAL_IMAGES": 100, "TEST_IMAGES": 25, "SEEDS": [0, 1, 2],
              "CROP_SIZE": 64, "BATCH_SIZE": 8, "LR": 2e-4, "NUM_BINS": 64, "DIM": 256, "NUM_HEADS": 4,
              "NUM_LAYERS": 2, "CROSS_DIM": 256, "CROSS_LAYERS": 2, "WEIGHTINGS": ["fixed", "uncertainty"],
              "MEMORY_BATCH": 1},
    # the report's setting: 2 epochs; the cross-attention head at the width that ran out of memory
    "full": {"EPOCHS": 2, "TRAIN_IMAGES": 0, "VAL_IMAGES": 0, "TEST_IMAGES": 0, "SEEDS": [0, 1], "CROP_SIZE": 256,
             "BATCH_SIZE": 8, "LR": 1e-4, "NUM_BINS": 64, "DIM": 256, "NUM_HEADS": 4, "NUM_LAYERS": 2,
             "CROSS_DIM": 512, "CROSS_LAYERS": 3, "WEIGHTINGS": ["fixed", "uncertainty", "dwa"],
             "MEMORY_BATCH": 32},
}

#: The course report's numbers for problem 5.
REPORT = {"val_miou": 70.96, "val_silog": 25.23, "graded_miou": 74.03, "graded_silog": 22.67,
          "graded_score": 51.36, "cross_miou": 43.0, "cross_epochs": 3,
          "oom_dim": 512, "oom_layers": 3, "oom_batch": 32, "oom_crop": 256}


def base_config(P: Mapping, **overrides) -> Config:
    """The transformer multi-task model with fixed 0.5/0.5 task weights, horizontal flips and the
    pretrained encoder of :func:`~cvaia.experiments.common.pretrained_weights` (ImageNet when
    cached, else the shipped synthetic-pretrained ResNet-18), at the first seed of ``SEEDS``."""
    return profile_config(P, **{**dict(model_name="transformer_multitask", tasks=("semseg", "depth"),
                                       optimizer="adam", transformer_dim=P["DIM"], num_heads=P["NUM_HEADS"],
                                       num_transformer_layers=P["NUM_LAYERS"], num_bins=P["NUM_BINS"],
                                       loss_weighting="fixed", aug_geom_reflect=True,
                                       pretrained=pretrained_weights()[0], seed=int(P["SEEDS"][0])),
                                **overrides})


def seed_runs_configs(P: Mapping) -> list[Config]:
    """The fixed-weight baseline once per seed of ``SEEDS`` (the notebook's run-to-run noise)."""
    return seed_configs(base_config(P), P["SEEDS"])


def cross_config(P: Mapping, **overrides) -> Config:
    """The cross-attention (class-token) segmentation head at ``CROSS_DIM`` × ``CROSS_LAYERS``."""
    heads = 8 if P["CROSS_DIM"] % 8 == 0 and P["CROSS_DIM"] >= 256 else P["NUM_HEADS"]
    return base_config(P, model_name="cross_attention_multitask", transformer_dim=P["CROSS_DIM"],
                       num_transformer_layers=P["CROSS_LAYERS"], num_heads=heads, **overrides)


def weighting_configs(P: Mapping) -> dict[str, Config]:
    """``{weighting: config}`` for each of ``WEIGHTINGS`` (``fixed`` is the baseline, its first seed)."""
    return {w: base_config(P, loss_weighting=w) for w in P["WEIGHTINGS"]}


# ---- variants against the seed noise -------------------------------------------------------------
#: The metrics a variant is judged on, and which way is better.
VARIANT_METRICS = {"miou": "higher", "si_log_rmse": "lower"}
METRIC_LABELS = {"miou": "mIoU", "si_log_rmse": "SI-logRMSE", "abs_rel": "abs-rel", "delta1": "δ1",
                 "score": "grader score"}


#: The task each judged metric belongs to (for the "learned" rule).
METRIC_TASKS = {"miou": "semseg", "si_log_rmse": "depth"}


def variant_verdicts(variant: str, values: Mapping[str, float], reference: Mapping[str, float],
                     noise: Mapping[str, V.Noise], n_reference: int, learned: bool | Mapping[str, bool] = True,
                     k: float | None = None) -> list[V.Verdict]:
    """One verdict per metric of :data:`VARIANT_METRICS`: does ``variant`` (one run, ``values``)
    improve on the fixed-weight baseline (``reference``: its mean over ``n_reference`` seeds, or
    the same model's value for a paired comparison with ``n_reference=1``)? Judged against the
    baseline's seed noise (``noise``: metric → :class:`~cvaia.experiments.verdicts.Noise`).
    ``learned``: one flag, or one per task (``{"semseg": ..., "depth": ...}``): a metric whose
    task did not clearly beat its trivial baseline gets no verdict."""
    out = []
    for metric, direction in VARIANT_METRICS.items():
        word = "raises" if direction == "higher" else "lowers"
        ok = learned if isinstance(learned, bool) else bool(learned.get(METRIC_TASKS[metric], False))
        out.append(V.compare(f"{variant} {word} {METRIC_LABELS[metric]} over fixed weights",
                             float(values[metric]), float(reference[metric]), noise[metric], direction,
                             n_a=1, n_b=n_reference, k=k, learned=ok))
    return out


def predicted_classes(confusion, min_share: float = 0.001) -> list[int]:
    """Train ids a model actually predicts: the columns of its confusion matrix (rows = ground
    truth, columns = prediction) holding at least ``min_share`` of the predicted pixels."""
    cm = np.asarray(confusion, dtype=float)
    total = cm.sum()
    if cm.ndim != 2 or total <= 0:
        return []
    return [int(k) for k in np.flatnonzero(cm.sum(axis=0) / total >= min_share)]


def cross_attention_text(miou: float, classes: Sequence[int], base: Mapping[str, float], names: Sequence[str]) -> str:
    """Markdown: how many classes the cross-attention head predicts and where its mIoU sits next to
    the image-blind position prior (both measured in this run)."""
    prior = float(base.get("miou_position", math.nan))
    shown = ", ".join(names[k] for k in classes) if classes else "none"
    where = ("below" if miou < prior else "at" if abs(miou - prior) < 1.0 else "above") if not math.isnan(prior) else "?"
    return (f"It predicts **{len(classes)} of {len(names)} classes** (each at least 0.1 % of its predicted pixels: "
            f"{shown}), and its mIoU {miou:.2f} is {where} the position prior's {prior:.2f} — the image-blind map "
            f"that gives each pixel the class most frequent at that position. At this length the class tokens have "
            f"found only the large classes.")


def variant_outcome(verdicts: Sequence[V.Verdict]) -> str:
    """A variant's overall standing from its per-metric verdicts: ``"better"`` (some metric
    clearly better, none clearly worse), ``"worse"`` (the reverse), ``"mixed"`` (one clearly
    better, another clearly worse) or ``"within noise"``."""
    up = any(v.outcome == V.REPRODUCED for v in verdicts)
    down = any(v.outcome == V.CONTRADICTED for v in verdicts)
    return "mixed" if up and down else "better" if up else "worse" if down else "within noise"


def best_variant(verdicts_by_variant: Mapping[str, Sequence[V.Verdict]], baseline: str = "fixed weights") -> str:
    """The variant to call best: among those whose :func:`variant_outcome` is ``"better"``, the one
    with the most clearly-better metrics, then the largest margin over its thresholds (in units
    of the threshold), then the first listed; ``baseline`` when no variant clears the noise.

    The notebook's "best" sentence and each variant's "helped / did not help" sentence both
    come from these verdicts, so they cannot disagree.
    """
    def margin(vs):
        return sum(abs(v.delta) / v.threshold for v in vs if v.outcome == V.REPRODUCED
                   and v.threshold > 0 and not math.isnan(v.delta))

    better = [(name, vs) for name, vs in verdicts_by_variant.items() if variant_outcome(vs) == "better"]
    if not better:
        return baseline
    order = sorted(enumerate(better), key=lambda t: (-sum(v.outcome == V.REPRODUCED for v in t[1][1]),
                                                     -margin(t[1][1]), t[0]))
    return order[0][1][0]


def variant_sentence(variant: str, verdicts: Sequence[V.Verdict]) -> str:
    """Markdown: whether ``variant`` helped, from its verdicts, with the numbers."""
    outcome = variant_outcome(verdicts)
    word = {"better": "helped", "worse": "hurt", "mixed": "traded one task for the other",
            "within noise": "made no difference beyond the seed noise"}[outcome]
    return f"**{variant}** {word}: " + "; ".join(v.sentence() for v in verdicts)


# ---- grading ------------------------------------------------------------------------------------
def test_subset(root: str | os.PathLike, n: int) -> Path:
    """A data root whose test split is the first ``n`` test images of ``root`` (0 = all: ``root``).

    Built once below the data directory as symbolic links (``<data>/<name>_test<n>``), so the
    grader can score a subset without copying images.
    """
    root = Path(root).resolve()
    if n <= 0:
        return root
    from ..data.miniscapes import MODALITIES, MiniscapesSplit

    split = MiniscapesSplit(root, "test")
    if n >= len(split):
        return root
    sub = paths.data_dir() / f"{root.name}_test{n}"
    for modality, ext in MODALITIES.items():
        src_dir = root / "test" / modality
        if not src_dir.is_dir():
            continue
        dst_dir = sub / "test" / modality
        dst_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            dst = dst_dir / f"{i}{ext}"
            if not dst.exists():
                dst.symlink_to(src_dir / f"{i}{ext}")
    return sub


def grade_device(P: Mapping) -> str:
    """The device 05 grades and evaluates on: the notebook's ``DEVICE`` as training resolves it
    (``auto``: the GPU when there is one; ``cuda:1`` stays ``cuda:1``; before, anything but
    ``auto``/``cuda`` graded on the CPU)."""
    from ..devices import select_device

    return str(select_device(P["DEVICE"]))


def grade(run, dataset_root: str | os.PathLike, split: str = "test", tta_flip: bool = False,
          device: str = "cpu", batch_size: int = 8) -> dict:
    """Export ``run``'s best model's predictions for ``split`` and score them with the grader.

    Predictions and the score are kept in ``<run>/grader/<split>[_tta]-<data root name>/``; a
    finished grading (``score.json``) is read back instead of redone.
    """
    from ..files import atomic_write_json, read_json
    from ..grader import export_predictions, score_predictions

    root = Path(dataset_root).resolve()
    out = run.path / "grader" / f"{split}{'_tta' if tta_flip else ''}-{root.name}"
    score_file = out / "score.json"
    if score_file.is_file():
        return read_json(score_file)
    model = run.load_model("best", device=device)
    export_predictions(model, root, split, out, device=device, batch_size=batch_size, tta_flip=tta_flip,
                       overwrite=True)  # our own folder below the run; a previous try did not finish
    result = score_predictions(root, split, out)
    atomic_write_json(score_file, result)
    return result


def evaluate_run(run, dataset_root: str | os.PathLike, max_images: int, tta_flip: bool = False,
                 device: str = "cpu") -> dict:
    """Validation metrics (the grader's) of ``run``'s best model on the first ``max_images``
    validation images, optionally with test-time flip averaging.

    Kept in ``<run>/eval/val[_tta]-<n>-<data root name>.json`` and read back on the next call
    (the same model and images always give the same numbers)."""
    from ..data.miniscapes import load_split_tensors
    from ..evaluate import evaluate
    from ..files import atomic_write_json, read_json

    root = Path(dataset_root).resolve()
    out = run.path / "eval" / f"val{'_tta' if tta_flip else ''}-{max_images}-{root.name}.json"
    if out.is_file():
        return read_json(out)
    model = run.load_model("best", device=device)
    source = load_split_tensors(root, "val", max_images=max_images)
    m = evaluate(model, source, device=device, tta_flip=tta_flip).metrics
    result = {k: float(m[k]) for k in ("miou", "pixel_acc", "si_log_rmse", "abs_rel", "rmse", "delta1", "score")}
    atomic_write_json(out, result)
    return result


def bin_depth_stats(run, rgb) -> dict:
    """What the adaptive-bins head predicts on the uint8 images ``rgb`` (B×H×W×3): the bin depths'
    min / median / max (m), the share of bins at the 300 m bound, and the median per-image
    spread of the predicted log depth (0 = a constant map)."""
    from ..evaluate import rgb_to_batch
    from ..models.deeplab import DEPTH_RANGE

    model = run.load_model("best")
    with torch.no_grad():
        out = model(rgb_to_batch(rgb, torch.device("cpu")), return_aux=True)
    bins, depth = out["bin_depths"], out["depth"].flatten(1)
    return {"bins_min_m": float(bins.min()), "bins_median_m": float(bins.median()), "bins_max_m": float(bins.max()),
            "bins_at_300m_%": float(100 * (bins >= DEPTH_RANGE[1] * (1 - 1e-6)).float().mean()),
            "log_depth_spread": float(depth.clamp_min(1e-6).log().std(1).median())}


# ---- memory of the cross-attention head ---------------------------------------------------------
def cross_attention_memory(batch: int = 32, crop: int = 256, dim: int = 512, layers: int = 3, heads: int = 8,
                           num_classes: int = 19, kv_pool: int = 4, chunk: int = 4096,
                           bytes_per_element: int = 4) -> pd.DataFrame:
    """Analytic memory (MiB) of the ways a class-token seg head can attend to stride-4 features.

    Rows: pixel self-attention (every stride-4 pixel a token: ``B·H·P²`` weights per layer),
    class tokens attending to all pixels (context, K, V of ``B·P·dim`` each, plus ``B·H·K·P``
    weights), this project's design (keys/values pooled ``kv_pool``× per side: ``M = P/kv_pool²``),
    and the class-map output (``B·K·P``) with the largest chunk temporary (``B·K·chunk``).
    """
    P = (crop // 4) ** 2
    M = max(1, (crop // 4 // kv_pool)) ** 2
    b = bytes_per_element
    mib = 2.0 ** 20
    rows = [
        {"design": "pixel self-attention (P tokens)", "per_layer_mib": batch * heads * P * P * b / mib,
         "what": f"B·H·P² attention weights, P={P}"},
        {"design": "class tokens → all pixels", "per_layer_mib": (3 * batch * P * dim + batch * heads * num_classes * P) * b / mib,
         "what": "normalised context, K, V (B·P·dim each) + B·H·K·P weights"},
        {"design": f"class tokens → pooled pixels (kv_pool {kv_pool}, fused attention)",
         "per_layer_mib": 3 * batch * M * dim * b / mib, "what": f"context, K, V of M={M} pooled tokens"},
        {"design": "class maps (output) + largest chunk temporary",
         "per_layer_mib": (batch * num_classes * P + batch * num_classes * min(chunk, P)) * b / mib,
         "what": "B·K·P logits, B·K·chunk similarity (once, not per layer)"},
    ]
    df = pd.DataFrame(rows)
    df["layers"] = [layers, layers, layers, 1]
    df["total_mib"] = df["per_layer_mib"] * df["layers"]
    df.attrs.update(batch=batch, crop=crop, dim=dim, heads=heads, P=P, M=M)
    return df


def measured_head_memory(dim: int = 512, layers: int = 3, heads: int = 8, batch: int = 2, crop: int = 256,
                         kv_pool: int = 4, chunk: int = 4096, impl: str = "fast", dropout: float = 0.1,
                         seed: int = 0) -> dict:
    """Measure the saved activations of one :class:`~cvaia.models.ClassTokenSegHead` forward on
    ``batch`` random stride-4 feature maps (``dim × crop/4 × crop/4``), on the CPU.

    The input feature map itself is counted (the head keeps it for the class-map gradient);
    the weights are not. Activations grow linearly in the batch, so the result also gives the
    per-image figure.
    """
    from ..models import ClassTokenSegHead

    torch.manual_seed(seed)
    head = ClassTokenSegHead(dim, 19, layers, heads, 4, dropout, impl, chunk, kv_pool).train()
    feats = torch.randn(batch, dim, crop // 4, crop // 4, requires_grad=True)
    nbytes = saved_tensor_bytes(lambda: head(feats), exclude=list(head.parameters()))
    return {"dim": dim, "layers": layers, "heads": heads, "batch": batch, "crop": crop, "kv_pool": kv_pool,
            "impl": impl, "dropout": dropout, "saved_mib": nbytes / 2**20, "saved_mib_per_image": nbytes / 2**20 / batch,
            "params": sum(p.numel() for p in head.parameters())}


# ---- leaderboard --------------------------------------------------------------------------------
def problem_of(cfg: Config) -> str:
    """Which course problem a config belongs to (by model and tasks)."""
    if cfg.model_name == "deeplabv3p":
        return "1 semseg" if tuple(cfg.tasks) == ("semseg",) else (
            "2 joint" if set(cfg.tasks) == {"semseg", "depth"} else "2 depth only")
    return {"deeplabv3p_multitask": "3 branched", "adaptive_depth": "4 adaptive depth",
            "transformer_multitask": "5 transformer", "cross_attention_multitask": "5 cross-attention"}.get(
        cfg.model_name, cfg.model_name)


def ranking(tasks: Sequence[str]) -> list[tuple[str, str]]:
    """The metrics a problem's runs are ranked by, in order, with their better direction:
    both tasks → grader score, then mIoU, then SI-logRMSE (the score is 0 for every run until
    mIoU > 50 or SI-logRMSE < 50, so it ties a lot at small scale); segmentation only → mIoU;
    depth only → SI-logRMSE."""
    tasks = set(tasks)
    if tasks == {"semseg"}:
        return [("miou", "higher")]
    if tasks == {"depth"}:
        return [("si_log_rmse", "lower")]
    return [("score", "higher"), ("miou", "higher"), ("si_log_rmse", "lower")]


def rank_key(row: Mapping, keys: Sequence[tuple[str, str]]) -> tuple:
    """Sort key of one result row: per metric of ``keys`` a missing value (None/NaN) ranks after
    every real one, larger is better for "higher" and smaller for "lower"; ties on every metric
    go to the run with the smaller name (deterministic)."""
    out: list = []
    for metric, direction in keys:
        try:
            v = float(row.get(metric))
        except (TypeError, ValueError):
            v = math.nan
        missing = math.isnan(v)
        out.append((1 if missing else 0, 0.0 if missing else (-v if direction == "higher" else v)))
    return (*out, str(row.get("run", "")))


def best_row(rows: Sequence[Mapping], tasks: Sequence[str]) -> Mapping | None:
    """The best of ``rows`` (one problem's results) by :func:`ranking` / :func:`rank_key`; None
    when no row has a value for any ranking metric (nothing to rank)."""
    keys = ranking(tasks)
    scored = [r for r in rows if any(not math.isnan(_num(r.get(m))) for m, _ in keys)]
    return min(scored, key=lambda r: rank_key(r, keys)) if scored else None


def _num(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


def leaderboard(dataset_root: str | os.PathLike, runs: Sequence | None = None) -> pd.DataFrame:
    """The best finished run of each problem trained on ``dataset_root``, from the run store.

    ``runs`` defaults to every finished run in the store. Within a problem the runs are ranked
    by :func:`ranking` (grader score, then mIoU, then SI-logRMSE for multi-task runs; mIoU for
    segmentation-only, SI-logRMSE for depth-only runs), missing values last, exact ties to the
    smaller run name (:func:`best_row`). Columns from :func:`cvaia.runs.results_table` plus
    ``problem``, ``ranked_by`` and ``_run`` (the Run).
    """
    from ..runs import list_runs, results_table

    root = Path(dataset_root).resolve()
    runs = list_runs(finished_only=True) if runs is None else list(runs)
    mine = [r for r in runs if Path(r.meta.get("dataset_root", "")).resolve() == root]
    cols = ["problem", "run", "model_name", "num_epochs", "miou", "si_log_rmse", "score", "train_time_s",
            "params", "ranked_by", "_run"]
    if not mine:
        return pd.DataFrame(columns=cols)
    table = results_table(mine, columns=["model_name", "num_epochs", "miou", "si_log_rmse", "score",
                                         "train_time_s", "params"])
    table["problem"] = [problem_of(r.config) for r in mine]
    table["_run"] = mine
    table["_tasks"] = [tuple(r.config.tasks) for r in mine]
    best = []
    for problem in sorted(table["problem"].unique()):
        part = table[table["problem"] == problem]
        tasks = part["_tasks"].iloc[0]
        row = best_row(part.to_dict("records"), tasks)
        if row is not None:
            best.append({**row, "ranked_by": ", ".join(m for m, _ in ranking(tasks))})
    out = pd.DataFrame(best)
    return out[[c for c in cols if c in out.columns]].reset_index(drop=True)


def single_class_blocks(ids, k: int = 4) -> float:
    """Fraction of the k×k blocks (stride-k cells) of the class maps ``ids`` (B×H×W) that hold a
    single class — how blocky a segmentation is (edges cropped to multiples of ``k``)."""
    import numpy as np

    b = ids[:, : ids.shape[1] // k * k, : ids.shape[2] // k * k]
    blocks = b.reshape(b.shape[0], b.shape[1] // k, k, b.shape[2] // k, k).transpose(0, 1, 3, 2, 4).reshape(-1, k * k)
    return float(np.mean((blocks == blocks[:, :1]).all(1)))


# ---- notebook text, tables and figures -----------------------------------------------------------
def crop_budget(P: Mapping) -> dict:
    """What the profile trains, in 64²-crop equivalents (cost ∝ crop area), and how many
    evaluations of the validation images it makes (one per epoch and run, plus flip TTA)."""
    n = int(P["TRAIN_IMAGES"]) or math.nan
    area = (int(P["CROP_SIZE"]) / 64) ** 2
    runs = len(P["SEEDS"]) + len([w for w in P["WEIGHTINGS"] if w != "fixed"]) + 1  # + the cross-attention run
    return {"runs": runs, "crops_64_total": runs * int(P["EPOCHS"]) * n * area,
            "evaluations": runs * int(P["EPOCHS"]) + 1, "val_images": int(P["VAL_IMAGES"]),
            "test_images": int(P["TEST_IMAGES"])}


def scope_text(P: Mapping) -> str:
    """Markdown: what this profile trains, evaluates and grades, and what it leaves out."""
    b = crop_budget(P)
    images = "all training images" if not int(P["TRAIN_IMAGES"]) else f"{int(P['TRAIN_IMAGES'])} training images"
    dropped = [w for w in ("uncertainty", "dwa") if w not in P["WEIGHTINGS"]]
    return (f"This profile (**{P['PROFILE']}**) trains {b['runs']} runs for {P['EPOCHS']} epoch"
            f"{'s' if int(P['EPOCHS']) != 1 else ''} each on {images} (one random {P['CROP_SIZE']}² crop each, batch "
            f"{P['BATCH_SIZE']}, Adam lr {P['LR']:g}): the fixed-weight transformer model under seeds "
            f"{', '.join(map(str, P['SEEDS']))}, " + ", ".join(f"{w} weighting" for w in P["WEIGHTINGS"] if w != "fixed")
            + (" and " if len(P["WEIGHTINGS"]) > 1 else "") + f"the cross-attention model — "
            f"{b['crops_64_total']:,.0f} crops in 64² equivalents, {b['evaluations']} evaluations of "
            f"{b['val_images'] or 'all'} validation images; grading uses {b['test_images'] or 'all'} test images."
            + (f" Dropped here: {', '.join(dropped)} weighting" + (" (DWA weights by the loss ratio of the last two "
               "epochs, so before epoch 3 it *is* the fixed weighting: 1/1 instead of 0.5/0.5, which Adam does not "
               "see); the full profile runs it." if "dwa" in dropped else "; the full profile runs it.")
               if dropped else "")
            + (" DWA changes the weights only from epoch 3 on: with fewer epochs its run equals the fixed weighting."
               if "dwa" in P["WEIGHTINGS"] and int(P["EPOCHS"]) < 3 else ""))


def learning_table(runs: Mapping[str, object], base: Mapping[str, float]) -> pd.DataFrame:
    """One row per finished run (label → Run): the grader's metrics, abs-rel and δ1, and whether it
    clearly beat the trivial baselines per task (:func:`cvaia.experiments.baselines.learned`)."""
    from .baselines import learned

    rows = []
    for label, r in runs.items():
        if r is None:
            rows.append({"run": label, "status": "diverged"})
            continue
        f = r.final
        ok = learned(f, base)
        rows.append({"run": label, **{m: float(f.get(m, math.nan)) for m in ("miou", "si_log_rmse", "abs_rel",
                                                                            "delta1", "score")},
                     "learned_semseg": ok.get("semseg", False), "learned_depth": ok.get("depth", False),
                     "status": "ok"})
    return pd.DataFrame(rows)


def variant_table(fixed_runs: Sequence, variants: Mapping[str, Mapping[str, float]],
                  metrics: Sequence[str] = ("miou", "si_log_rmse", "abs_rel", "delta1")) -> pd.DataFrame:
    """Validation metrics of the fixed-weight baseline (mean and std over its seeds) and of each
    variant (label → metrics), with each variant's change against the baseline mean."""
    fixed = [r for r in fixed_runs if r is not None]
    rows = [{"variant": f"fixed weights (mean of {len(fixed)} seeds)",
             **{m: float(np.mean([r.final[m] for r in fixed])) for m in metrics},
             **{f"{m}_std": float(np.std([r.final[m] for r in fixed], ddof=1)) if len(fixed) > 1 else math.nan
                for m in ("miou", "si_log_rmse")}}]
    for label, vals in variants.items():
        rows.append({"variant": label, **{m: float(vals[m]) for m in metrics}})
    df = pd.DataFrame(rows)
    for m in ("miou", "si_log_rmse"):
        df[f"Δ{m}"] = df[m] - df[m].iloc[0]
    return df


def verdict_figure(verdicts: Sequence[V.Verdict], title: str):
    """:func:`cvaia.plots.verdict_deltas` of ``verdicts``: each difference as the verdict holds it,
    positive = the claim's direction (the one sign convention of every verdict), with its noise band."""
    from .. import plots

    return plots.verdict_deltas([v.claim for v in verdicts], [v.delta for v in verdicts],
                                [v.threshold for v in verdicts], [v.outcome for v in verdicts], title=title)


def headline(seed_runs: Sequence) -> dict:
    """The fixed-weight baseline's mean and seed std of mIoU / SI-logRMSE / abs-rel / δ1."""
    out = {}
    for key, (mean, std) in seed_mean_std(seed_runs).items():
        out[f"transformer_val_{key}"], out[f"transformer_val_{key}_std"] = mean, std
    return out


def bins_text(bins: pd.DataFrame, constant: float = 1e-3) -> str:
    """Markdown from the :func:`bin_depth_stats` rows (one per run): the bins' range, the share at
    the 300 m bound, and which runs (if any) predict a constant map (log-depth spread < ``constant``)."""
    flat = [str(i) for i, r in bins.iterrows() if r["log_depth_spread"] < constant]
    at_bound = float(bins["bins_at_300m_%"].max())
    text = (f"Bin depths of the trained models span {bins['bins_min_m'].min():.1f} … {bins['bins_max_m'].max():.1f} m; "
            + ("no bin sits at the 300 m bound. " if at_bound == 0 else
               f"at most {at_bound:.0f} % of the bins sit at the 300 m bound. "))
    if flat:
        return text + f"**{', '.join(flat)} predict{'s' if len(flat) == 1 else ''} a constant depth map** (log-depth spread below {constant:g})."
    return text + (f"The predicted log depth varies within every image (median spread ≥ "
                   f"{bins['log_depth_spread'].min():.2f}; a constant map has 0).")


def blockiness_text(blocky: Mapping[str, float], n_images: int, margin: float = 0.02) -> str:
    """Markdown from :func:`single_class_blocks` shares (``"transformer seg"``, ``"cross-attention
    seg"``, ``"ground truth"``): which map is blockier, "about as blocky" within ``margin``."""
    d = blocky["cross-attention seg"] - blocky["transformer seg"]
    word = ("about as blocky as" if abs(d) <= margin else "blockier than" if d > 0 else "less blocky than")
    return ("Share of 4×4 blocks holding a single predicted class: "
            + ", ".join(f"{k} {100 * v:.1f} %" for k, v in blocky.items())
            + f". The cross-attention head's maps are {word} the transformer branch's on these {n_images} images "
              f"({100 * d:+.1f} points; a description, not a verdict: no noise measured for it).")


def weights_text(runs: Mapping[str, object]) -> str:
    """Markdown: how the task weights of each run (label → Run with ``weight_semseg`` /
    ``weight_depth`` in its step history) moved during training, and whether their *ratio* — the
    only thing Adam sees, it normalises the overall scale — left the fixed 1 : 1."""
    parts = []
    for label, run in runs.items():
        h = getattr(run, "history", None)
        if h is None or not {"weight_semseg", "weight_depth"} <= set(h.columns) or h.empty:
            continue
        first, last = h.iloc[0], h.iloc[-1]
        ratio0 = first["weight_depth"] / first["weight_semseg"]
        ratio1 = last["weight_depth"] / last["weight_semseg"]
        parts.append(f"{label}: depth weight {first['weight_depth']:.3f} → {last['weight_depth']:.3f}, semseg weight "
                     f"{first['weight_semseg']:.3f} → {last['weight_semseg']:.3f}, ratio depth : semseg "
                     f"{ratio0:.3f} → {ratio1:.3f}"
                     + (" (within 1 % of 1 : 1 — this run trained like the fixed weighting)"
                        if abs(ratio1 - 1.0) < 0.01 and abs(ratio0 - 1.0) < 0.01 else ""))
    return ("Task weights over the training steps — " + "; ".join(parts) + ".") if parts else ""
