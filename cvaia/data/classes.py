"""The 19 Cityscapes train-id classes used by miniscapes, their colours and the ignore label."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

#: Label value for pixels that carry no class (void, out of image after augmentation).
IGNORE_INDEX = 255
#: Number of semantic classes (Cityscapes train ids 0..18).
NUM_CLASSES = 19


@lru_cache(maxsize=1)
def _train_classes():
    from torchvision.datasets import Cityscapes

    rows = [c for c in Cityscapes.classes if 0 <= c.train_id < NUM_CLASSES]
    rows.sort(key=lambda c: c.train_id)
    if [c.train_id for c in rows] != list(range(NUM_CLASSES)):  # pragma: no cover - torchvision guard
        raise RuntimeError("torchvision's Cityscapes class table does not hold train ids 0..18")
    return rows


def class_names() -> tuple[str, ...]:
    """Names of the 19 classes in train-id order (``road`` … ``bicycle``)."""
    return tuple(c.name for c in _train_classes())


def class_colors() -> np.ndarray:
    """Cityscapes colours, uint8 array of shape (19, 3), in train-id order."""
    return np.array([c.color for c in _train_classes()], dtype=np.uint8)


def palette() -> list[int]:
    """A 768-entry PIL palette: train ids 0..18 get their Cityscapes colour, 255 is black."""
    pal = np.zeros((256, 3), dtype=np.uint8)
    pal[:NUM_CLASSES] = class_colors()
    return pal.reshape(-1).tolist()


def colorize(ids: np.ndarray) -> np.ndarray:
    """Map an integer label map (H, W) to an RGB image (H, W, 3); ignore → black."""
    pal = np.array(palette(), dtype=np.uint8).reshape(256, 3)
    ids = np.asarray(ids)
    safe = np.where((ids >= 0) & (ids < 256), ids, IGNORE_INDEX).astype(np.int64)
    return pal[safe]




def __getattr__(name):  # PEP 562: lazy constants
    if name == "CLASS_NAMES":
        return class_names()
    if name == "CLASS_COLORS":
        return class_colors()
    raise AttributeError(name)
