"""The class table equals torchvision's Cityscapes train-id table; palette and colorize."""

from __future__ import annotations

import numpy as np

from cvaia.data.classes import (
    IGNORE_INDEX,
    NUM_CLASSES,
    class_colors,
    class_names,
    colorize,
    palette,
)


def test_table_matches_torchvision_cityscapes():
    from torchvision.datasets import Cityscapes

    rows = sorted((c for c in Cityscapes.classes if 0 <= c.train_id < NUM_CLASSES), key=lambda c: c.train_id)
    assert [c.train_id for c in rows] == list(range(NUM_CLASSES))
    assert class_names() == tuple(c.name for c in rows)
    assert class_colors().tolist() == [list(c.color) for c in rows]


def test_palette_and_colorize():
    pal = np.array(palette(), dtype=np.uint8).reshape(256, 3)
    assert len(palette()) == 768
    assert (pal[:NUM_CLASSES] == class_colors()).all() and (pal[IGNORE_INDEX] == 0).all()
    ids = np.array([[0, 13], [255, 18]])
    rgb = colorize(ids)
    assert rgb.shape == (2, 2, 3) and rgb.dtype == np.uint8
    assert rgb[0, 1].tolist() == [0, 0, 142] and rgb[1, 0].tolist() == [0, 0, 0]
