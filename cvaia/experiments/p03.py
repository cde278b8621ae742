"""Problem 3 — branched multi-task learning (notebook ``03_multitask``).

The joint DeepLabV3+ (``deeplabv3p``: one ASPP, one decoder with 19+1 channels) against the
branched one (``deeplabv3p_multitask``: a shared encoder, then per task its own ASPP and
decoder). The notebook compares accuracy per epoch, training time, memory and parameters, and
explains the slowdown by timing every module (:func:`module_timing`) and counting its FLOPs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import pandas as pd
import torch
from torch import nn

from ..config import Config
from ..utils import best_time_s
from .common import profile_config

PROFILES = {
    # plumbing only: every experiment present, seconds each
    "smoke": {"JOINT_EPOCHS": 1, "BRANCHED_EPOCHS": 1, "TRAIN_IMAGES": 4, "VAL_IMAGES": 2,
              "CROP_SIZE": 64, "BATCH_SIZE": 4, "LR": 1e-3, "TIMING_SIZE": 32, "TIMING_BATCH": 2,
              "TIMING_REPEATS": 1},
    # real learning on the synthetic set within ~3-4 min on 2 CPU cores
    "quick": {"JOINT_EPOCHS": 6, "BRANCHED_EPOCHS": 3, "TRAIN_IMAGES": 48, "VAL_IMAGES": 8,
              "CROP_SIZE": 64, "BATCH_SIZE": 8, "LR": 1e-3, "TIMING_SIZE": 96, "TIMING_BATCH": 2,
              "TIMING_REPEATS": 3},
    # the report's schedule: joint 32 epochs, branched 16 (GPU)
    "full": {"JOINT_EPOCHS": 32, "BRANCHED_EPOCHS": 16, "TRAIN_IMAGES": 0, "VAL_IMAGES": 0,
             "CROP_SIZE": 256, "BATCH_SIZE": 8, "LR": 1e-4, "TIMING_SIZE": 256, "TIMING_BATCH": 8,
             "TIMING_REPEATS": 10},
}

#: The course report's numbers for problem 3.
REPORT = {
    "joint_params": 16.6e6, "branched_params": 22.0e6,
    "joint_time_s": 4 * 3600 + 46 * 60, "joint_epochs": 32,
    "branched_time_s": 8 * 3600 + 57 * 60, "branched_epochs": 16,
    "joint_power_w": 207.0, "branched_power_w": 130.0,
}


def base_config(P: Mapping, **overrides) -> Config:
    """The settings both models share (Adam, the report's decoder: skip 48, 2 convs)."""
    return profile_config(P, **{**dict(tasks=("semseg", "depth"), optimizer="adam", decoder_skip_channels=48,
                                       decoder_num_convs=2, loss_weight_semseg=0.5, loss_weight_depth=0.5),
                                **overrides})


def joint_config(P: Mapping, **overrides) -> Config:
    """Problem 2's joint model (one decoder, 19+1 channels) for ``JOINT_EPOCHS``."""
    return base_config(P, model_name="deeplabv3p", num_epochs=P["JOINT_EPOCHS"], name="p3_joint", **overrides)


def branched_config(P: Mapping, **overrides) -> Config:
    """The branched model (shared encoder, per-task ASPP + decoder) for ``BRANCHED_EPOCHS``."""
    return base_config(P, model_name="deeplabv3p_multitask", num_epochs=P["BRANCHED_EPOCHS"],
                       name="p3_branched", **overrides)


# ---- model summary ------------------------------------------------------------------------------
def module_tree(model: nn.Module, depth: int = 2) -> str:
    """The module tree down to ``depth`` levels: name, class and parameter count per line.

    ModuleDicts count as a level, so a branched model shows ``aspp`` → ``semseg``/``depth``.
    """
    lines = []

    def walk(module: nn.Module, name: str, level: int) -> None:
        n = sum(p.numel() for p in module.parameters())
        label = name or type(model).__name__
        lines.append(f"{'    ' * level}{label:<{max(1, 28 - 4 * level)}} {type(module).__name__:<22} {n:>12,}")
        if level < depth:
            for child_name, child in module.named_children():
                walk(child, child_name, level + 1)

    walk(model, "", 0)
    return "\n".join(lines)


# ---- module timing ------------------------------------------------------------------------------
def default_modules(model: nn.Module) -> list[str]:
    """The model's top-level children, with :class:`~torch.nn.ModuleDict` s expanded one level
    (so a branched model lists ``aspp.semseg``, ``aspp.depth``, ``decoder.semseg``, ...)."""
    names = []
    for name, child in model.named_children():
        if isinstance(child, (nn.ModuleDict, nn.ModuleList)):
            names.extend(f"{name}.{sub}" for sub, _ in child.named_children())
        else:
            names.append(name)
    return names


def _tensors(obj) -> list[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in _tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in _tensors(v)]
    return []


def _detach_like(obj):
    """A detached copy of the captured inputs; tensors that needed a gradient still do."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone().requires_grad_(obj.requires_grad and obj.is_floating_point())
    if isinstance(obj, tuple):
        return tuple(_detach_like(v) for v in obj)
    if isinstance(obj, list):
        return [_detach_like(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: _detach_like(v) for k, v in obj.items()}
    return obj


def _best_ms(fn, repeats: int, warmup: int, device: torch.device) -> float:
    return 1000.0 * best_time_s(fn, repeats, device, warmup=warmup)


def _forward_flops(module: nn.Module, args, kwargs) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*args, **kwargs)
    return float(counter.get_total_flops())


def module_timing(model: nn.Module, x: torch.Tensor, modules: Sequence[str] | None = None,
                  repeats: int = 3, warmup: int = 1) -> pd.DataFrame:
    """Forward and forward+backward time, FLOPs and parameters of each module of ``model``.

    One forward pass of ``model(x)`` (in training mode, as during training) records every
    listed module's inputs with forward pre-hooks; each module is then timed *on its own* on
    those inputs: ``forward_ms`` (no autograd), ``forward_backward_ms`` (forward, then
    backward of the sum of its outputs; inputs that needed a gradient in the real graph get
    one here too), the fastest of ``repeats`` calls after ``warmup`` (the minimum is the least
    disturbed by other processes sharing the CPU). ``gflops`` are the forward FLOPs
    from :class:`torch.utils.flop_counter.FlopCounterMode`. A last row ``total (whole model)``
    times ``model(x)`` itself; the parts add up to about the total (the gap is the glue in
    ``forward``: upsampling to the input size, the depth activation).

    ``modules``: dotted names (default :func:`default_modules`). BatchNorm running statistics
    are saved and restored, and the model's training mode is restored afterwards.
    """
    named = dict(model.named_modules())
    modules = list(default_modules(model) if modules is None else modules)
    unknown = [m for m in modules if m not in named]
    if unknown:
        raise ValueError(f"module_timing: unknown module(s) {', '.join(unknown)}; "
                         f"the model has {', '.join(default_modules(model))}")
    device = x.device
    was_training = model.training
    saved = {k: v.clone() for k, v in model.state_dict().items()}  # BN buffers change in train mode
    captured: dict[str, tuple] = {}

    def make_hook(name):
        def hook(_module, args, kwargs):
            captured.setdefault(name, (_detach_like(args), _detach_like(kwargs)))
        return hook

    handles = [named[m].register_forward_pre_hook(make_hook(m), with_kwargs=True) for m in modules]
    try:
        model.train()
        with torch.enable_grad():
            model(x)
    finally:
        for h in handles:
            h.remove()

    rows = []
    try:
        for name in modules:
            if name not in captured:
                raise RuntimeError(f"module_timing: module {name} was not called by model.forward")
            module = named[name]
            args, kwargs = captured[name]

            def fwd(module=module, args=args, kwargs=kwargs):
                with torch.no_grad():
                    module(*args, **kwargs)

            def fwd_bwd(module=module, args=args, kwargs=kwargs):
                outs = _tensors(module(*args, **kwargs))
                sum(o.float().sum() for o in outs if o.requires_grad).backward()
                module.zero_grad(set_to_none=True)
                for t in _tensors((args, kwargs)):
                    t.grad = None

            rows.append({
                "module": name,
                "params": sum(p.numel() for p in module.parameters()),
                "gflops": _forward_flops(module, args, kwargs) / 1e9,
                "forward_ms": _best_ms(fwd, repeats, warmup, device),
                "forward_backward_ms": _best_ms(fwd_bwd, repeats, warmup, device),
            })

        def whole_fwd():
            with torch.no_grad():
                model(x)

        def whole_fwd_bwd():
            sum(o.float().sum() for o in _tensors(model(x))).backward()
            model.zero_grad(set_to_none=True)

        rows.append({
            "module": "total (whole model)",
            "params": sum(p.numel() for p in model.parameters()),
            "gflops": _forward_flops(model, (x,), {}) / 1e9,
            "forward_ms": _best_ms(whole_fwd, repeats, warmup, device),
            "forward_backward_ms": _best_ms(whole_fwd_bwd, repeats, warmup, device),
        })
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    df = pd.DataFrame(rows)
    parts = df[df["module"] != "total (whole model)"]
    total_fb = parts["forward_backward_ms"].sum()
    df["share_of_time_%"] = 100.0 * df["forward_backward_ms"] / total_fb if total_fb > 0 else math.nan
    total_flops = parts["gflops"].sum()
    df["share_of_flops_%"] = 100.0 * df["gflops"] / total_flops if total_flops > 0 else math.nan
    return df


def module_group(name: str) -> str:
    """``aspp.semseg`` → ``aspp``: the kind of module a timing row belongs to."""
    return name.split(".")[0]


def timing_comparison(timings: Mapping[str, pd.DataFrame]) -> pd.DataFrame:
    """Forward+backward ms, GFLOPs and parameters per module kind (encoder / aspp / decoder)
    for each model of ``timings`` (model label → :func:`module_timing` table)."""
    rows = []
    for label, df in timings.items():
        parts = df[df["module"] != "total (whole model)"].copy()
        parts["group"] = parts["module"].map(module_group)
        agg = parts.groupby("group", sort=False)[["forward_ms", "forward_backward_ms", "gflops", "params"]].sum()
        for group, r in agg.iterrows():
            rows.append({"model": label, "group": group, **r.to_dict()})
        total = df[df["module"] == "total (whole model)"].iloc[0]
        rows.append({"model": label, "group": "total (whole model)", "forward_ms": total["forward_ms"],
                     "forward_backward_ms": total["forward_backward_ms"], "gflops": total["gflops"],
                     "params": total["params"]})
    return pd.DataFrame(rows)


def iou_changes(cm_new, cm_old, names: Sequence[str]) -> pd.DataFrame:
    """Per-class IoU of two confusion matrices and the change (new − old), sorted by the change."""
    from ..metrics import per_class_iou

    new, old = per_class_iou(cm_new), per_class_iou(cm_old)
    df = pd.DataFrame({"class": list(names), "iou_joint": old, "iou_branched": new})
    df["change"] = df["iou_branched"] - df["iou_joint"]
    return df.sort_values("change", ascending=False, ignore_index=True)


def epoch_time_s(run) -> float:
    """Mean training time per epoch (s) of a finished run."""
    final = run.final
    epochs = max(int(run.config.num_epochs), 1)
    return float(final.get("train_time_s", math.nan)) / epochs


def cost_row(run) -> dict:
    """A run's training cost: epochs, time (total, per epoch), images/s, peak memory, power, device."""
    from .common import fmt_seconds

    f = run.final
    return {"epochs": run.config.num_epochs, "train time": fmt_seconds(f["train_time_s"]),
            "train time / epoch [s]": f["train_time_s"] / run.config.num_epochs,
            "images / s": f["images_per_s"], "peak memory [MiB]": f["peak_mem_mb"],
            "mean power [W]": f.get("mean_power_w"), "device": f.get("device")}
