"""Measurements that hold: timings, activation memory, and where a training step's time goes.

- :func:`benchmark_ms`: one callable timed with :mod:`torch.utils.benchmark` (warm-up calls,
  then ``blocked_autorange``) → median and inter-quartile range in milliseconds, at a fixed
  thread count (the process's current one, recorded with the result).
- :func:`training_memory`: a model's training-step memory: the bytes of the tensors autograd
  keeps for the backward pass (:func:`cvaia.attention_cost.saved_tensor_bytes`, via
  :func:`torch.autograd.graph.saved_tensors_hooks`, each storage counted once; any device)
  plus weights, gradients and Adam's two moments (4 × the parameter bytes). Process peak RSS
  cannot give this: it only ever grows and counts everything the process held before.
- :func:`step_breakdown`: per training step, the time spent waiting for the batch (reading
  and augmenting it) vs the time of forward + loss + backward + optimizer step, measured on
  the run's own data path.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path

import pandas as pd
import torch
from torch import nn

from ..attention_cost import saved_tensor_bytes
from ..devices import synchronize


def benchmark_ms(fn: Callable[[], object], min_run_time: float = 0.2, warmup: int = 1,
                 device: torch.device | str = "cpu", label: str = "", min_runs: int = 5) -> dict:
    """Time ``fn()`` with :class:`torch.utils.benchmark.Timer`: ``warmup`` untimed calls, then
    :meth:`~torch.utils.benchmark.Timer.blocked_autorange` for at least ``min_run_time`` seconds;
    when that gives fewer than ``min_runs`` timed blocks (a slow call), more blocks of the same
    size are timed and merged (:meth:`torch.utils.benchmark.Measurement.merge`), so a slow module
    still gets a spread.

    Returns ``{"median_ms", "iqr_ms", "runs", "threads"}``: the median per call over the timed
    blocks (robust to the odd slow call on a shared machine) and their inter-quartile range (the
    spread a reader should compare differences with). CUDA work is synchronised inside the
    timed statement.
    """
    from torch.utils import benchmark

    device = torch.device(device)

    def call():
        fn()
        synchronize(device)

    for _ in range(warmup):
        call()
    threads = torch.get_num_threads()
    timer = benchmark.Timer(stmt="call()", globals={"call": call}, num_threads=threads, label=label)
    m = timer.blocked_autorange(min_run_time=min_run_time)
    if len(m.times) < min_runs:
        extra = [timer.timeit(m.number_per_run) for _ in range(min_runs - len(m.times))]
        m = benchmark.Measurement.merge([m, *extra])[0]
    return {"median_ms": 1000.0 * m.median, "iqr_ms": 1000.0 * m.iqr, "runs": len(m.times), "threads": threads}


def training_memory(model: nn.Module, x: torch.Tensor, loss: Callable[[dict], torch.Tensor] | None = None) -> dict:
    """Memory (MiB) of one training step of ``model`` on the batch ``x``.

    ``activations_mib``: what autograd saves during ``model(x)`` (and ``loss(outputs)`` when
    given), parameters excluded (:func:`cvaia.attention_cost.saved_tensor_bytes`); ``weights_grads_adam_mib``: the
    parameters, their gradients and Adam's two moment buffers (4 × the parameter bytes);
    ``total_mib`` the sum. The model's training mode and BatchNorm statistics are restored.
    """
    params = list(model.parameters())
    was_training = model.training
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    try:
        def step():
            out = model(x)
            return loss(out) if loss is not None else out

        act = saved_tensor_bytes(step, exclude=params)
    finally:
        model.load_state_dict(saved)
        model.train(was_training)
    param_bytes = sum(p.numel() * p.element_size() for p in params)
    mib = 2.0 ** 20
    return {"activations_mib": act / mib, "weights_grads_adam_mib": 4 * param_bytes / mib,
            "total_mib": (act + 4 * param_bytes) / mib, "batch": int(x.shape[0]), "size": int(x.shape[-1])}


def step_breakdown(cfg, steps: int = 6, warmup: int = 2, root: str | Path | None = None) -> pd.DataFrame:
    """Where the time of a training step goes, measured on ``cfg``'s own data path and model.

    Builds the model, loss, optimizer and training data of ``cfg`` (as :func:`cvaia.train.train`
    does, nothing is written) and runs ``warmup + steps`` steps; for each timed step it records
    ``data_ms`` (waiting for the next batch: reading and augmenting it) and ``compute_ms``
    (forward, loss, backward, optimizer step), each closed by a device synchronisation.
    """
    from ..data.train_batches import choose_data_path, training_data
    from ..devices import select_device
    from ..losses import MultiTaskLoss
    from ..models import build_model
    from ..optim import build_optimizer
    from ..rng import seed_everything

    device = select_device(cfg.device)
    root = Path(root or cfg.dataset_root)
    seed_everything(cfg.seed)
    model = build_model(cfg).to(device).train()
    loss_fn = MultiTaskLoss.from_config(cfg).to(device)
    opt = build_optimizer(cfg, model, loss_fn, device)
    data = training_data(cfg, root, choose_data_path(cfg, root), device)
    rows = []
    epoch = 0
    while len(rows) < warmup + steps:
        batches = iter(data.batches(epoch))
        while len(rows) < warmup + steps:
            synchronize(device)
            t0 = time.perf_counter()
            try:
                rgb, targets = next(batches)
            except StopIteration:
                break
            synchronize(device)
            t1 = time.perf_counter()
            total, _ = loss_fn(model(rgb), targets)
            opt.zero_grad(set_to_none=True)
            total.backward()
            opt.step()
            synchronize(device)
            t2 = time.perf_counter()
            rows.append({"step": len(rows) + 1, "data_ms": 1000 * (t1 - t0), "compute_ms": 1000 * (t2 - t1),
                         "batch": int(rgb.shape[0])})
        epoch += 1
        if epoch > warmup + steps:  # an empty data set would loop for ever
            raise RuntimeError(f"step_breakdown: the training data of {cfg.name or cfg.model_name} gives no batches")
    df = pd.DataFrame(rows[warmup:]).reset_index(drop=True)
    df["data_share_%"] = 100 * df["data_ms"] / (df["data_ms"] + df["compute_ms"])
    return df


# ---- counted costs ------------------------------------------------------------------------------
def forward_flops(module: nn.Module, *args, **kwargs) -> float:
    """Forward FLOPs of ``module(*args, **kwargs)`` (:class:`torch.utils.flop_counter.FlopCounterMode`:
    2 per multiply-add of the convolutions and matrix products), without autograd."""
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with torch.no_grad(), counter:
        module(*args, **kwargs)
    return float(counter.get_total_flops())


def output_tensors(obj) -> list[torch.Tensor]:
    """Every tensor in ``obj`` (a tensor, or mappings / lists / tuples of them, nested), in order."""
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, Mapping):
        return [t for v in obj.values() for t in output_tensors(v)]
    if isinstance(obj, (list, tuple)):
        return [t for v in obj for t in output_tensors(v)]
    return []


def training_step_flops(model: nn.Module, x: torch.Tensor) -> float:
    """FLOPs of one training step's forward + backward of ``model`` on the batch ``x`` (counted,
    so the same on every machine and under any load; the optimiser's element-wise update is not
    a matrix product and is not counted). The model's mode and gradients are left as they were."""
    from torch.utils.flop_counter import FlopCounterMode

    was_training = model.training
    grads = {p: p.grad for p in model.parameters()}
    counter = FlopCounterMode(display=False)
    try:
        model.train()
        with counter:
            out = output_tensors(model(x))
            sum(t.float().sum() for t in out if t.is_floating_point()).backward()
    finally:
        model.train(was_training)
        for p, g in grads.items():
            p.grad = g
    return float(counter.get_total_flops())
