"""What a training run shows in TensorBoard: scalars and image grids.

:class:`TensorBoardLog` writes a run's events (``<run>/tb``): ``train/<key>`` (the step
rows of ``steps.csv``), ``epoch/<key>`` (:data:`EPOCH_KEYS` of each epoch's results row) and
the image grids of :class:`Observer` (the course template's visualization flags).

At step ``s`` with ``s >= num_steps_visualization_first`` and ``(s - first) %
num_steps_visualization_interval == 0`` the trainer logs

- ``imgs_train/batch_crops``: the first ``visualize_num_samples_in_batch`` crops of the
  current training batch (the augmented input, its labels and the model's predictions);
- ``imgs_train/observed`` and ``imgs_val/observed``: the images ``observe_train_ids`` /
  ``observe_valid_ids`` of the train and val splits, predicted in eval mode (full images
  cropped to multiples of 32, like validation).

Each sample is one tile: rgb, then per task its ground truth and prediction, stacked
vertically (semseg in the Cityscapes colours, depth on a log scale over the course's depth
range, invalid pixels black); the tiles are laid out ``visualize_img_grid_width`` per row
(:func:`torchvision.utils.make_grid`). Rendering uses no random numbers and changes no
weights, so visualizing never changes the results of a run.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from .data.classes import class_colors
from .data.encoding import DEPTH_MAX, DEPTH_MIN, IMAGENET_MEAN, IMAGENET_STD

__all__ = ["EPOCH_KEYS", "due", "sample_tiles", "grid", "Observer", "TensorBoardLog"]

#: Epoch results shown in TensorBoard (``epoch/<key>``).
EPOCH_KEYS = ("miou", "pixel_acc", "si_log_rmse", "abs_rel", "rmse", "delta1", "score", "train_loss",
              "images_per_s", "epoch_time_s")


def due(step: int, first: int, interval: int) -> bool:
    """Whether ``step`` gets image grids (the course template's rule)."""
    return step >= first and (step - first) % interval == 0


def _rgb_u8(rgb: torch.Tensor) -> torch.Tensor:
    """ImageNet-normalised B×3×H×W → uint8 B×3×H×W."""
    mean = torch.as_tensor(IMAGENET_MEAN, dtype=torch.float32, device=rgb.device).view(1, 3, 1, 1)
    std = torch.as_tensor(IMAGENET_STD, dtype=torch.float32, device=rgb.device).view(1, 3, 1, 1)
    return (rgb.float() * std + mean).clamp(0, 255).round().to(torch.uint8)


def _semseg_u8(ids: torch.Tensor) -> torch.Tensor:
    """Class ids B×H×W (255 = ignore) → Cityscapes colours uint8 B×3×H×W (ignore black)."""
    table = torch.zeros(256, 3, dtype=torch.uint8)
    table[:len(class_colors())] = torch.as_tensor(np.asarray(class_colors(), dtype=np.uint8))
    return table.to(ids.device)[ids.long().clamp(0, 255)].permute(0, 3, 1, 2)


def _depth_u8(depth: torch.Tensor) -> torch.Tensor:
    """Metres B×1×H×W or B×H×W (0 = invalid) → colour-mapped uint8 B×3×H×W, log scale."""
    import matplotlib

    d = depth.float().reshape(depth.shape[0], *depth.shape[-2:])
    valid = d > 0
    t = (torch.log(d.clamp(DEPTH_MIN, DEPTH_MAX)) - np.log(DEPTH_MIN)) / (np.log(DEPTH_MAX) - np.log(DEPTH_MIN))
    lut = torch.as_tensor(matplotlib.colormaps["magma_r"](np.linspace(0, 1, 256))[:, :3] * 255,
                          dtype=torch.float32).round().to(torch.uint8).to(d.device)
    img = lut[(t * 255).round().long().clamp(0, 255)]
    img[~valid] = 0
    return img.permute(0, 3, 1, 2)


def sample_tiles(rgb: torch.Tensor, targets: dict[str, torch.Tensor], outputs: dict[str, torch.Tensor],
                 tasks: Sequence[str]) -> torch.Tensor:
    """One tile per sample (uint8 B×3×(k·H)×W): rgb, then per task its ground truth (when
    given) and prediction, stacked vertically. ``rgb`` is ImageNet-normalised; ``outputs`` are
    the model's (semseg logits B×19×h×w, depth metres B×1×h×w), resized to the image if needed."""
    h, w = rgb.shape[-2:]
    rows = [_rgb_u8(rgb)]
    for task in tasks:
        pred = outputs[task].detach().float()
        if pred.shape[-2:] != (h, w):
            pred = F.interpolate(pred, size=(h, w), mode="bilinear", align_corners=False)
        show = _semseg_u8 if task == "semseg" else _depth_u8
        if targets.get(task) is not None:
            rows.append(show(targets[task]))
        rows.append(show(pred.argmax(1) if task == "semseg" else pred))
    return torch.cat([r.cpu() for r in rows], dim=2)


def grid(tiles: Sequence[torch.Tensor], width: int) -> torch.Tensor:
    """Tiles (uint8 3×H×W, sizes may differ: padded to the largest) in rows of ``width``."""
    from torchvision.utils import make_grid

    h = max(t.shape[-2] for t in tiles)
    w = max(t.shape[-1] for t in tiles)
    padded = [F.pad(t, (0, w - t.shape[-1], 0, h - t.shape[-2])) for t in tiles]
    return make_grid(torch.stack(padded), nrow=max(1, int(width)), padding=2, pad_value=255)


class Observer:
    """The image grids of a run: the observed samples, read once, and when to log.

    ``read(split, i)`` returns the sample's uint8 arrays (``MiniscapesSplit.read_raw``);
    ``sizes`` maps split → number of images (ids beyond are skipped, ``skipped`` says which).
    """

    def __init__(self, cfg, tasks: Sequence[str], read: Callable[[str, int], dict], sizes: dict[str, int]):
        self.first, self.interval = cfg.num_steps_visualization_first, cfg.num_steps_visualization_interval
        self.in_batch, self.width = cfg.visualize_num_samples_in_batch, cfg.visualize_img_grid_width
        self.tasks = tuple(tasks)
        self.samples: dict[str, list[dict]] = {}
        self.skipped: dict[str, list[int]] = {}
        for split, ids in (("train", cfg.observe_train_ids), ("val", cfg.observe_valid_ids)):
            self.skipped[split] = [i for i in ids if i >= sizes.get(split, 0)]
            self.samples[split] = [read(split, i) for i in ids if i < sizes.get(split, 0)]

    @classmethod
    def for_run(cls, cfg, tasks: Sequence[str], root) -> "Observer":
        """The observer of a run on the miniscapes-format data set ``root``."""
        from .data.miniscapes import MiniscapesSplit

        splits = {s: MiniscapesSplit(root, s) for s in ("train", "val")}
        return cls(cfg, tasks, lambda split, i: splits[split].read_raw(i), {s: len(d) for s, d in splits.items()})

    def notes(self) -> list[str]:
        """One line per observed id that is beyond its split (skipped)."""
        flags = {"train": "observe_train_ids", "val": "observe_valid_ids"}
        return [f"--{flags[split]}: {', '.join(map(str, ids))} beyond the {split} split; skipped"
                for split, ids in self.skipped.items() if ids]

    def due(self, step: int) -> bool:
        return due(step, self.first, self.interval)

    def batch_grid(self, rgb: torch.Tensor, targets: dict, outputs: dict) -> torch.Tensor | None:
        """The grid of the first crops of a training batch (None when none are shown)."""
        n = min(self.in_batch, rgb.shape[0])
        if n == 0:
            return None
        tiles = sample_tiles(rgb[:n], {k: v[:n] for k, v in targets.items()},
                             {k: v[:n] for k, v in outputs.items()}, self.tasks)
        return grid(list(tiles), self.width)

    @torch.no_grad()
    def observed_grid(self, split: str, predict: Callable[[torch.Tensor], dict], device) -> torch.Tensor | None:
        """The grid of the observed samples of ``split`` predicted with ``predict`` (eval mode)."""
        from .data.augment import prepare_eval_batch

        tiles = []
        for raw in self.samples[split]:
            rgb = torch.from_numpy(np.ascontiguousarray(raw["rgb"])).permute(2, 0, 1)[None].to(device)
            sem = torch.from_numpy(raw["semseg"])[None].to(device) if "semseg" in raw else None
            dep = torch.from_numpy(raw["depth_codes"])[None].to(device) if "depth_codes" in raw else None
            x, sem_t, dep_t = prepare_eval_batch(rgb, sem, dep)
            targets = {"semseg": sem_t, "depth": dep_t}
            tiles.append(sample_tiles(x, targets, predict(x), self.tasks)[0])
        return grid(tiles, self.width) if tiles else None


class TensorBoardLog:
    """A run's TensorBoard events in ``log_dir`` (written by rank 0 only).

    ``purge_step``: a resumed run's step (events of a killed attempt after it are dropped).
    ``predict(x)`` of :meth:`images` is the model in eval mode (the caller switches modes).
    """

    def __init__(self, log_dir, observer: Observer, purge_step: int | None = None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)
        self.observer = observer

    def scalars(self, prefix: str, values: dict, step: int, flush: bool = False) -> None:
        """``<prefix>/<key>`` scalars (finite floats only) at ``step``."""
        for k, v in values.items():
            if isinstance(v, float) and math.isfinite(v):
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
        if flush:
            self.writer.flush()

    def epoch(self, row: dict) -> None:
        """An epoch's results row (:data:`EPOCH_KEYS`), flushed."""
        self.scalars("epoch", {k: row[k] for k in EPOCH_KEYS}, row["epoch"], flush=True)

    def due(self, step: int) -> bool:
        return self.observer.due(step)

    def images(self, step: int, rgb: torch.Tensor, targets: dict, outputs: dict,
               predict: Callable[[torch.Tensor], dict], device) -> None:
        """The training batch's grid and the observed samples' grids at ``step``."""
        batch = self.observer.batch_grid(rgb, targets, outputs)
        if batch is not None:
            self.writer.add_image("imgs_train/batch_crops", batch, step)
        for split, tag in (("train", "imgs_train/observed"), ("val", "imgs_val/observed")):
            image = self.observer.observed_grid(split, predict, device)
            if image is not None:
                self.writer.add_image(tag, image, step)

    def close(self) -> None:
        self.writer.close()
