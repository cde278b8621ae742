"""Optimizer and learning-rate schedule of a training run.

:func:`build_optimizer`: Adam or SGD over the model's parameters and the loss's learned task
weights; :func:`build_scheduler`: a per-step poly decay or a constant rate.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .config import Config


def build_optimizer(cfg: Config, model: nn.Module, loss_fn: nn.Module, device: torch.device):
    """Adam or SGD over the model's parameters and the loss's learned weights (no weight decay)."""
    groups = [{"params": [p for p in model.parameters() if p.requires_grad]}]
    extra = [p for p in loss_fn.parameters() if p.requires_grad]
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    # Fused kernels on CUDA; elsewhere the multi-tensor ("foreach") implementation, which
    # PyTorch picks by default only for CUDA tensors: on the CPU it halves the Adam step time
    # of the 16.6M-parameter joint model compared with the per-tensor loop.
    kw = {"fused": True} if device.type == "cuda" else {"foreach": True}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(groups, lr=cfg.optimizer_lr, weight_decay=cfg.optimizer_weight_decay, **kw)
    return torch.optim.SGD(groups, lr=cfg.optimizer_lr, momentum=cfg.optimizer_momentum,
                           weight_decay=cfg.optimizer_weight_decay, **kw)


class PolyLR:
    """``lr · (1 − step/total)^power`` (picklable factor for LambdaLR)."""

    def __init__(self, total_steps: int, power: float):
        self.total = max(1, int(total_steps))
        self.power = float(power)

    def __call__(self, step: int) -> float:
        return max(0.0, 1.0 - step / self.total) ** self.power


class ConstantLR:
    """Factor 1 (picklable)."""

    def __call__(self, step: int) -> float:
        return 1.0


def build_scheduler(cfg: Config, optimizer, total_steps: int):
    """Per-step LambdaLR: poly decay (``lr_scheduler_power``) or constant."""
    factor = PolyLR(total_steps, cfg.lr_scheduler_power) if cfg.lr_scheduler == "poly" else ConstantLR()
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)

