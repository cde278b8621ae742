"""Reading a checkpoint file: tensors and plain containers only, never code.

Checkpoints and run folders are passed around (a classmate's ``best.pt``, a TA's reference
run, a shared cluster store). A ``.pt`` file is a pickle, and a pickle can name any Python
function to call while it is read (``os.system``…). :func:`load_checkpoint_file` is the one
place cvaia reads such a file: ``torch.load(weights_only=True)``, whose unpickler builds only
tensors, numbers, strings and lists/tuples/dicts of them, plus the few NumPy globals that
:data:`LEGACY_GLOBALS` lists, so that checkpoints of earlier cvaia versions (their NumPy RNG
state was a pickled ``ndarray``) still load. Any other object is refused before it is built:
:class:`UnsafeCheckpointError` names the file and the object's type. A truncated or corrupt
file gives :class:`CorruptCheckpointError`. Checkpoints cvaia writes now hold no NumPy object
at all (:func:`cvaia.rng.get_rng_state`).
"""

from __future__ import annotations

import os
import pickle
import re
from pathlib import Path
from typing import Any


class CheckpointError(ValueError):
    """A checkpoint file cannot be used; ``str()`` is one line naming the file and why."""

    def __init__(self, path: str | os.PathLike, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


class UnsafeCheckpointError(CheckpointError):
    """The file holds a pickled object other than tensors and plain containers (it could run code)."""


class CorruptCheckpointError(CheckpointError):
    """The file is truncated, corrupt, or not a torch checkpoint at all."""


def legacy_globals() -> list:
    """The NumPy globals an ``ndarray`` of plain numbers needs to be unpickled (the RNG state in
    checkpoints of earlier cvaia versions). Safe: ``_reconstruct`` only makes an empty array of
    an allowed class (``ndarray`` alone), and its contents go through the same restricted
    unpickler."""
    import numpy as np

    try:
        from numpy._core.multiarray import _reconstruct  # numpy >= 2
    except ImportError:  # pragma: no cover - numpy 1.x
        from numpy.core.multiarray import _reconstruct
    return [np.ndarray, np.dtype, _reconstruct, type(np.dtype(np.uint32))]


def _allowed_names() -> set[str]:
    return {f"{g.__module__}.{g.__qualname__}" for g in legacy_globals()}


def _unsafe_names(path: Path, exc: BaseException) -> list[str]:
    """The pickled globals of ``path`` that the safe unpickler refused (empty: none found, i.e.
    the file is no pickle of ours at all). Reading them runs nothing (a scan of the opcodes)."""
    import torch

    names: list[str] = []
    try:
        names = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint (a legacy or foreign pickle): the error names one
        pass
    allowed = _allowed_names()
    names = [n for n in names if n not in allowed and n.replace("numpy.core.", "numpy._core.") not in allowed]
    if not names:
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        names = [found.group(1)] if found else []
    return names


def load_checkpoint_file(path: str | os.PathLike, map_location: Any = "cpu") -> Any:
    """The contents of the checkpoint ``path``, read without running any code from it.

    Raises :class:`UnsafeCheckpointError` when it holds a pickled object of another type than
    tensors and plain containers ("holds a pickled object of type posix.system…"),
    :class:`CorruptCheckpointError` when it is truncated, corrupt or no torch file, and
    ``FileNotFoundError`` when it does not exist.
    """
    import torch

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(2, "no such checkpoint file", str(path))
    if not path.is_file():
        raise CorruptCheckpointError(path, "not a regular file (a folder, pipe or device)")
    try:
        with torch.serialization.safe_globals(legacy_globals()):
            return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        names = _unsafe_names(path, exc)
        if names:
            raise UnsafeCheckpointError(
                path, f"refused: it holds a pickled object of type {names[0]}; cvaia checkpoints hold tensors "
                      f"only (loading it could run code, so nothing of it was loaded)") from None
        raise CorruptCheckpointError(path, "truncated or corrupt checkpoint (not a complete torch file)") from None
    except (RuntimeError, EOFError, ValueError, KeyError, AttributeError, ImportError, IndexError, TypeError,
            OSError) as exc:
        if isinstance(exc, OSError) and not isinstance(exc, EOFError) and exc.errno is not None:
            raise
        if isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower():
            raise
        raise CorruptCheckpointError(path, f"truncated or corrupt checkpoint ({_first_line(exc)})") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else type(exc).__name__
    return line.split(". ")[0][:160]  # torch's zip reader goes on with generic advice
