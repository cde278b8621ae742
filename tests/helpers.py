"""Small helpers shared by test modules (pytest puts this folder on sys.path)."""

from __future__ import annotations

from cvaia.config import Config, make_config


def tiny_config(root, **overrides) -> Config:
    """A training config that runs in seconds on the tiny data set at ``root``: 8 training
    images, 64² crops, batches of 4, Adam 1e-3, one epoch, quiet, on the CPU; ``overrides``
    (config fields) last."""
    base = dict(dataset_root=str(root), aug_input_crop_size=64, batch_size=4, batch_size_validation=4,
                num_epochs=1, max_train_images=8, optimizer="adam", optimizer_lr=1e-3, quiet=True,
                device="cpu")
    base.update(overrides)
    return make_config(**base)
