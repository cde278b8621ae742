"""The 19 Cityscapes train-id classes used by miniscapes, their colours and the ignore label."""

from __future__ import annotations

import numpy as np

#: Label value for pixels that carry no class (void, out of image after augmentation).
IGNORE_INDEX = 255
#: Number of semantic classes (Cityscapes train ids 0..18).
NUM_CLASSES = 19


#: (name, Cityscapes colour) per train id 0..18, as in torchvision.datasets.Cityscapes.classes.
#: Kept as a literal so that importing cvaia does not import torchvision's dataset module;
#: tests/test_classes.py checks it against torchvision's table.
_TRAIN_CLASSES = (
    ("road", (128, 64, 128)),
    ("sidewalk", (244, 35, 232)),
    ("building", (70, 70, 70)),
    ("wall", (102, 102, 156)),
    ("fence", (190, 153, 153)),
    ("pole", (153, 153, 153)),
    ("traffic light", (250, 170, 30)),
    ("traffic sign", (220, 220, 0)),
    ("vegetation", (107, 142, 35)),
    ("terrain", (152, 251, 152)),
    ("sky", (70, 130, 180)),
    ("person", (220, 20, 60)),
    ("rider", (255, 0, 0)),
    ("car", (0, 0, 142)),
    ("truck", (0, 0, 70)),
    ("bus", (0, 60, 100)),
    ("train", (0, 80, 100)),
    ("motorcycle", (0, 0, 230)),
    ("bicycle", (119, 11, 32)),
)


def class_names() -> tuple[str, ...]:
    """Names of the 19 classes in train-id order (``road`` … ``bicycle``)."""
    return tuple(name for name, _ in _TRAIN_CLASSES)


def class_colors() -> np.ndarray:
    """Cityscapes colours, uint8 array of shape (19, 3), in train-id order."""
    return np.array([color for _, color in _TRAIN_CLASSES], dtype=np.uint8)


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


#: The class names in train-id order (a tuple; ``class_names()`` returns the same).
CLASS_NAMES = class_names()
