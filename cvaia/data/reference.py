"""The course template's data path: decode and augment one sample at a time on the CPU.

This is the *reference* that ``python -m cvaia bench`` compares the fast path against
(:func:`cvaia.data.miniscapes.load_split_tensors` + :class:`cvaia.data.augment.BatchAugment`).
Each ``__getitem__`` decodes the PNG/JPEG files with PIL and applies torchvision
``transforms.v2`` per sample; wrapped in a ``DataLoader`` with workers, this is how the
course template fed its models.

The options mean the same as in :class:`~cvaia.data.augment.BatchAugment`, but the results
are not identical pixel for pixel:

- scale: ``RandomResize`` of the image's shorter side by a factor in ``[scale_min, scale_max]``;
- tilt: ``RandomRotation`` of the (resized) image by up to ±``tilt_max_deg``;
- crop: ``RandomCrop`` of ``crop_size`` (padded when the image is smaller);
- wiggle: ``RandomPerspective`` with ``distortion_scale = 2 * wiggle_max_ratio``, i.e. corners
  move by up to ``wiggle_max_ratio * crop_size`` (torchvision moves them inwards only);
- reflect: ``RandomHorizontalFlip``.

Labels travel as a ``tv_tensors.Mask`` so torchvision resamples them with nearest
neighbours. The outside of the image becomes 255 in semseg, 0 (invalid) in depth and the
ImageNet mean colour in rgb, as in the batched path.
"""

from __future__ import annotations

import os

import torch
from torch.utils.data import Dataset

from .augment import val_crop
from .classes import IGNORE_INDEX
from .encoding import IMAGENET_MEAN, IMAGENET_STD, depth_lut
from .miniscapes import DatasetError, MiniscapesSplit


class ReferenceDataset(Dataset):
    """Per-sample PIL decoding and torchvision v2 augmentation (the course template's path).

    ``ReferenceDataset(root, split, cfg, train=True)[i]`` returns ``(rgb float32 normalised
    3×c×c, semseg int64 c×c, depth float32 metres 1×c×c)`` with ``c = cfg.aug_input_crop_size``
    when ``train``; with ``train=False`` the full image cropped top-left to multiples of 32 and
    no augmentation. The split needs both semseg and depth labels.
    """

    def __init__(self, root: str | os.PathLike, split: str, cfg, train: bool = True):
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        self.data = MiniscapesSplit(root, split)
        if not (self.data.has_semseg and self.data.has_depth):
            raise DatasetError(f"{self.data.dir}: ReferenceDataset needs semseg/ and depth/ labels")
        self.train = train
        self.lut = torch.from_numpy(depth_lut())
        n = cfg.max_train_images if train else cfg.max_val_images
        self._len = len(self.data) if n <= 0 else min(n, len(self.data))

        # Labels are packed in one Mask of two channels, (semseg + 1, depth code), so that one
        # fill value (0) means "outside the image" for both (decoded in __getitem__).
        mean_colour = tuple(round(m) for m in IMAGENET_MEAN)
        fill = {tv_tensors.Image: mean_colour, tv_tensors.Mask: 0}
        steps = []
        if train:
            c = cfg.aug_input_crop_size
            if cfg.aug_geom_scale_min != 1.0 or cfg.aug_geom_scale_max != 1.0:
                short = min(self.data.image_size)  # RandomResize sets the shorter side
                lo = max(1, round(short * cfg.aug_geom_scale_min))
                steps.append(v2.RandomResize(lo, max(lo + 1, round(short * cfg.aug_geom_scale_max) + 1)))
            if cfg.aug_geom_tilt_max_deg > 0:
                steps.append(v2.RandomRotation(cfg.aug_geom_tilt_max_deg, fill=fill))
            steps.append(v2.RandomCrop(c, pad_if_needed=True, fill=fill))
            if cfg.aug_geom_wiggle_max_ratio > 0:
                steps.append(v2.RandomPerspective(min(1.0, 2 * cfg.aug_geom_wiggle_max_ratio), p=1.0, fill=fill))
            if cfg.aug_geom_reflect:
                steps.append(v2.RandomHorizontalFlip(p=0.5))
        steps += [v2.ToDtype(torch.float32, scale=False), v2.Normalize(list(IMAGENET_MEAN), list(IMAGENET_STD))]
        self.transform = v2.Compose(steps)

    def __len__(self) -> int:
        return self._len

    def __getitem__(self, i: int):
        from torchvision import tv_tensors

        if not 0 <= i < self._len:
            raise IndexError(f"index {i} out of range for a ReferenceDataset of {self._len} images")
        raw = self.data.read_raw(i)  # PIL decoding
        rgb = torch.from_numpy(raw["rgb"]).permute(2, 0, 1)
        labels = torch.stack([torch.from_numpy(raw["semseg"]).long() + 1,
                              torch.from_numpy(raw["depth_codes"]).long()])
        if not self.train:
            rgb, labels = val_crop(rgb), val_crop(labels)
        rgb, labels = self.transform(tv_tensors.Image(rgb), tv_tensors.Mask(labels))
        labels = labels.as_subclass(torch.Tensor)
        semseg = labels[0] - 1
        semseg = torch.where(semseg < 0, IGNORE_INDEX, semseg)
        depth = self.lut[labels[1:]]
        return rgb.as_subclass(torch.Tensor), semseg, depth
