"""Reproducibility: seeding and the global random states a checkpoint carries.

- :func:`seed_everything`: seed Python's ``random``, NumPy and torch.
- :func:`get_rng_state`, :func:`set_rng_state`: the states (python, numpy, torch CPU, CUDA)
  saved with a checkpoint and restored on resume, wherever ``torch.load`` mapped them.
- :func:`worker_init_fn`: DataLoader worker seeding.
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import torch


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)



def get_rng_state() -> dict[str, Any]:
    """The global random states (python, numpy, torch CPU, torch CUDA) for a checkpoint."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    state = {
        "python": random.getstate(),  # a tuple of ints
        # plain values only (no ndarray): a checkpoint loads with torch.load(weights_only=True)
        "numpy": (str(kind), torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached)),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state



def _byte_state(t) -> torch.Tensor:
    """A generator state as the CPU ``uint8`` tensor torch's setters insist on (a checkpoint
    loaded with ``map_location=<GPU>`` holds its states on the GPU)."""
    t = t if isinstance(t, torch.Tensor) else torch.as_tensor(t)
    return t.detach().to(device="cpu", dtype=torch.uint8)



def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`get_rng_state` returned, wherever ``torch.load`` mapped its tensors.

    CUDA states are restored for the devices this process has (a checkpoint from a machine
    with more GPUs sets the first ones; devices without a saved state keep theirs).
    """
    if "python" in state:
        random.setstate(state["python"])
    if "numpy" in state:  # (kind, keys, pos, has_gauss, cached); keys a tensor, or an ndarray (older checkpoints)
        kind, keys, *rest = state["numpy"]
        keys = keys.cpu().numpy() if isinstance(keys, torch.Tensor) else np.asarray(keys)
        np.random.set_state((kind, keys.astype(np.uint32), *rest))
    if "torch" in state:
        torch.set_rng_state(_byte_state(state["torch"]))
    saved = list(state.get("cuda") or ())
    for index, s in enumerate(saved[:torch.cuda.device_count() if saved else 0]):
        torch.cuda.set_rng_state(_byte_state(s), index)



def worker_init_fn(worker_id: int) -> None:
    """DataLoader worker seeding: NumPy and ``random`` follow torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
