"""Problem 5 — the open challenge (notebook ``05_open_challenge``).

- the transformer multi-task model (``transformer_multitask``) trained and graded with the
  local course grader (:func:`grade`: :func:`cvaia.grader.export_predictions` on the test
  split, then :func:`cvaia.grader.score_predictions`);
- the class-token cross-attention segmentation head (``cross_attention_multitask``) and what
  its memory costs (:func:`cross_attention_memory`, :func:`measured_head_memory`);
- beyond the report: learned task weighting (``uncertainty``, ``dwa``) and test-time flip
  averaging against the fixed-weight baseline;
- a leaderboard of every problem's best run in the store (:func:`leaderboard`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import pandas as pd
import torch

from .. import paths
from ..config import Config
from .common import profile_config

PROFILES = {
    "smoke": {"EPOCHS": 1, "TRAIN_IMAGES": 4, "VAL_IMAGES": 2, "TEST_IMAGES": 4, "CROP_SIZE": 64,
              "BATCH_SIZE": 4, "LR": 1e-3, "NUM_BINS": 16, "DIM": 32, "NUM_HEADS": 4, "NUM_LAYERS": 1,
              "CROSS_DIM": 32, "CROSS_LAYERS": 1, "WEIGHTINGS": ["fixed", "uncertainty", "dwa"],
              "MEMORY_BATCH": 1},
    "quick": {"EPOCHS": 3, "TRAIN_IMAGES": 32, "VAL_IMAGES": 4, "TEST_IMAGES": 16, "CROP_SIZE": 64,
              "BATCH_SIZE": 4, "LR": 1e-3, "NUM_BINS": 64, "DIM": 256, "NUM_HEADS": 4, "NUM_LAYERS": 2,
              "CROSS_DIM": 256, "CROSS_LAYERS": 2, "WEIGHTINGS": ["fixed", "uncertainty", "dwa"],
              "MEMORY_BATCH": 2},
    # the report's setting: 2 epochs; the cross-attention head at the width that ran out of memory
    "full": {"EPOCHS": 2, "TRAIN_IMAGES": 0, "VAL_IMAGES": 0, "TEST_IMAGES": 0, "CROP_SIZE": 256,
             "BATCH_SIZE": 8, "LR": 1e-4, "NUM_BINS": 64, "DIM": 256, "NUM_HEADS": 4, "NUM_LAYERS": 2,
             "CROSS_DIM": 512, "CROSS_LAYERS": 3, "WEIGHTINGS": ["fixed", "uncertainty", "dwa"],
             "MEMORY_BATCH": 32},
}

#: The course report's numbers for problem 5.
REPORT = {"val_miou": 70.96, "val_silog": 25.23, "graded_miou": 74.03, "graded_silog": 22.67,
          "graded_score": 51.36, "cross_miou": 43.0, "cross_epochs": 3,
          "oom_dim": 512, "oom_layers": 3, "oom_batch": 32, "oom_crop": 256}


def base_config(P: Mapping, **overrides) -> Config:
    """The transformer multi-task model with fixed 0.5/0.5 task weights."""
    return profile_config(P, **{**dict(model_name="transformer_multitask", tasks=("semseg", "depth"),
                                       optimizer="adam", transformer_dim=P["DIM"], num_heads=P["NUM_HEADS"],
                                       num_transformer_layers=P["NUM_LAYERS"], num_bins=P["NUM_BINS"],
                                       loss_weighting="fixed"), **overrides})


def cross_config(P: Mapping, **overrides) -> Config:
    """The cross-attention (class-token) segmentation head at ``CROSS_DIM`` × ``CROSS_LAYERS``."""
    heads = 8 if P["CROSS_DIM"] % 8 == 0 and P["CROSS_DIM"] >= 256 else P["NUM_HEADS"]
    return base_config(P, model_name="cross_attention_multitask", transformer_dim=P["CROSS_DIM"],
                       num_transformer_layers=P["CROSS_LAYERS"], num_heads=heads, **overrides)


def weighting_configs(P: Mapping) -> dict[str, Config]:
    """``{weighting: config}`` for each of ``WEIGHTINGS`` (``fixed`` is the baseline)."""
    return {w: base_config(P, loss_weighting=w) for w in P["WEIGHTINGS"]}


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


def grade(run, dataset_root: str | os.PathLike, split: str = "test", tta_flip: bool = False,
          device: str = "cpu", batch_size: int = 8) -> dict:
    """Export ``run``'s best model's predictions for ``split`` and score them with the grader.

    Predictions and the score are kept in ``<run>/grader/<split>[_tta]-<data root name>/``; a
    finished grading (``score.json``) is read back instead of redone.
    """
    from ..grader import export_predictions, score_predictions
    from ..utils import atomic_write_json, read_json

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


def grade_table(graded: Mapping[str, dict], reference: Mapping[str, float] | None = None) -> pd.DataFrame:
    """``{label: grader result}`` → a table of mIoU, SILog and score (and the change vs ``reference``)."""
    rows = [{"variant": label, "miou": r.get("miou"), "si_log_rmse": r.get("si_log_rmse"),
             "score": r.get("score"), "images": r.get("num_images")} for label, r in graded.items()]
    df = pd.DataFrame(rows)
    if reference is not None:
        for key in ("miou", "si_log_rmse", "score"):
            df[f"Δ{key}"] = df[key] - reference[key]
    return df


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


def saved_tensor_bytes(fn, exclude=()) -> int:
    """Bytes of the distinct tensors autograd saves for the backward pass while running ``fn()``.

    Measured with :func:`torch.autograd.graph.saved_tensors_hooks` (works on any device):
    tensors sharing a storage are counted once, and tensors sharing a storage with one of
    ``exclude`` (pass the module's parameters: weights are kept anyway) are not counted. This
    is the activation memory a training step must keep between forward and backward — the
    part that blows up with attention.
    """
    skip = {(t.untyped_storage().data_ptr(), str(t.device)) for t in exclude}
    storages: dict[tuple[int, str], int] = {}

    def pack(t: torch.Tensor):
        s = t.untyped_storage()
        key = (s.data_ptr(), str(t.device))
        if key not in skip:
            storages[key] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        fn()
    return int(sum(storages.values()))


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


def leaderboard(dataset_root: str | os.PathLike, runs: Sequence | None = None,
                key: str = "score") -> pd.DataFrame:
    """The best finished run of each problem trained on ``dataset_root``, from the run store.

    ``runs`` defaults to every finished run in the store; the best of a problem is the one
    with the highest validation ``key`` (the grader score; mIoU for semseg-only and lowest
    SILog for depth-only runs break no ties across problems). Columns from
    :func:`cvaia.runs.results_table` plus ``problem``.
    """
    from ..runs import list_runs, results_table

    root = Path(dataset_root).resolve()
    runs = list_runs(finished_only=True) if runs is None else list(runs)
    mine = [r for r in runs if Path(r.meta.get("dataset_root", "")).resolve() == root]
    if not mine:
        return pd.DataFrame(columns=["problem", "run", "miou", "si_log_rmse", "score"])
    table = results_table(mine, columns=["model_name", "num_epochs", "miou", "si_log_rmse", "score",
                                         "train_time_s", "params"])
    table["problem"] = [problem_of(r.config) for r in mine]
    table["_run"] = mine
    best = []
    for _, part in table.groupby("problem", sort=True):
        values = pd.to_numeric(part[key], errors="coerce")
        best.append(part.loc[values.fillna(-math.inf).idxmax()])
    out = pd.DataFrame(best).reset_index(drop=True)
    cols = ["problem", "run", "model_name", "num_epochs", "miou", "si_log_rmse", "score", "train_time_s",
            "params", "_run"]
    return out[[c for c in cols if c in out.columns]]


def single_class_blocks(ids, k: int = 4) -> float:
    """Fraction of the k×k blocks (stride-k cells) of the class maps ``ids`` (B×H×W) that hold a
    single class — how blocky a segmentation is (edges cropped to multiples of ``k``)."""
    import numpy as np

    b = ids[:, : ids.shape[1] // k * k, : ids.shape[2] // k * k]
    blocks = b.reshape(b.shape[0], b.shape[1] // k, k, b.shape[2] // k, k).transpose(0, 1, 3, 2, 4).reshape(-1, k * k)
    return float(np.mean((blocks == blocks[:, :1]).all(1)))
