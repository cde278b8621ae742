"""Batched data augmentation that runs on any device (CPU or GPU).

The course template augments one sample at a time on the CPU (see :mod:`cvaia.data.reference`).
Here a whole batch is augmented at once, on the device the batch lives on:

1. for each sample, draw a random scale, crop position, rotation ("tilt"), perspective
   corner displacement ("wiggle") and horizontal flip ("reflect");
2. compose them into one 3x3 homography per sample that maps crop pixels to image pixels;
3. turn the homographies into sampling grids in one batched op and resample with
   :func:`torch.nn.functional.grid_sample` — bilinear for rgb, nearest for the labels, so
   no in-between class ids or depths are invented.

Pixels that fall outside the image get ``255`` (ignore) in semseg, ``0`` (invalid) in depth
and the ImageNet mean colour in rgb (``0`` after normalisation, what a pretrained encoder
sees as "neutral"). With every geometric option off, the augmentation is a plain random
crop (plus optional flip) done by indexing, exactly and quickly.

Validation uses the full image cropped top-left to multiples of 32 (:func:`val_crop`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .classes import IGNORE_INDEX
from .encoding import depth_lut_tensor, normalize_rgb

#: Validation images are cropped to multiples of this (the encoder's output stride).
EVAL_MULTIPLE = 32


# ---- evaluation helpers -----------------------------------------------------------------------
def eval_size(height: int, width: int, multiple: int = EVAL_MULTIPLE) -> tuple[int, int]:
    """The evaluated size of a ``height``×``width`` image: both rounded down to multiples of
    ``multiple`` (32): 360x720 → 352x704."""
    hc, wc = height // multiple * multiple, width // multiple * multiple
    if hc == 0 or wc == 0:
        raise ValueError(f"image of {height}x{width} (HxW) is smaller than {multiple} pixels; "
                         f"evaluation needs at least {multiple}x{multiple}")
    return hc, wc


def val_crop(t: torch.Tensor, multiple: int = EVAL_MULTIPLE) -> torch.Tensor:
    """Crop the last two dims top-left to multiples of ``multiple`` (32): 360x720 → 352x704."""
    hc, wc = eval_size(*t.shape[-2:], multiple)
    return t[..., :hc, :wc]


def depth_from_codes(codes: torch.Tensor, lut: torch.Tensor | None = None) -> torch.Tensor:
    """uint8 disparity codes → float32 metres (0 = invalid) with a 256-entry table.

    ``lut`` defaults to :func:`cvaia.data.encoding.depth_lut` on the codes' device (made once
    per device and cached).
    """
    if lut is None:
        lut = depth_lut_tensor(codes.device)
    return lut[codes.long()]  # .long(): a uint8 index would be read as a boolean mask


def prepare_eval_batch(rgb_u8: torch.Tensor, semseg_u8: torch.Tensor | None = None,
                       depth_codes: torch.Tensor | None = None, lut: torch.Tensor | None = None):
    """A batch for evaluation: :func:`val_crop` and decode, no augmentation.

    Takes uint8 ``rgb`` B×3×H×W, ``semseg`` B×H×W and depth codes B×H×W (either label may be
    None) and returns ``(rgb float32 normalised B×3×h×w, semseg int64 B×h×w or None,
    depth float32 metres B×1×h×w or None)`` with h, w the multiples of 32.
    """
    rgb = normalize_rgb(val_crop(rgb_u8))
    semseg = val_crop(semseg_u8).long() if semseg_u8 is not None else None
    depth = depth_from_codes(val_crop(depth_codes), lut).unsqueeze(1) if depth_codes is not None else None
    return rgb, semseg, depth


# ---- homographies ------------------------------------------------------------------------------
def homography_from_points(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """The 3x3 homographies (B×3×3) mapping 4 points ``src`` (B×4×2) onto ``dst`` (B×4×2)."""
    x, y = src[..., 0], src[..., 1]
    u, v = dst[..., 0], dst[..., 1]
    one, zero = torch.ones_like(x), torch.zeros_like(x)
    # Two equations per point for the 8 unknowns h11..h32 (h33 = 1).
    rows_u = torch.stack([x, y, one, zero, zero, zero, -x * u, -y * u], dim=-1)
    rows_v = torch.stack([zero, zero, zero, x, y, one, -x * v, -y * v], dim=-1)
    a = torch.cat([rows_u, rows_v], dim=1)  # B×8×8
    b = torch.cat([u, v], dim=1)  # B×8
    # solve_ex, not solve: solve checks for singular systems by reading a flag back to the
    # host, a sync on CUDA. Four distinct corners of a square never give a singular system.
    h = torch.linalg.solve_ex(a, b).result
    return torch.cat([h, torch.ones_like(h[:, :1])], dim=1).view(-1, 3, 3)


def _affine(a11, a12, a13, a21, a22, a23) -> torch.Tensor:
    """B×3×3 matrices [[a11 a12 a13], [a21 a22 a23], [0 0 1]] from B-vectors."""
    zero, one = torch.zeros_like(a11), torch.ones_like(a11)
    return torch.stack([a11, a12, a13, a21, a22, a23, zero, zero, one], dim=-1).view(-1, 3, 3)


# ---- the augmentation ----------------------------------------------------------------------------
class BatchAugment:
    """Random geometric augmentation of a whole batch, on the batch's device.

    Arguments (the course template's options):

    - ``crop_size``: side of the square output crop;
    - ``scale_min``, ``scale_max``: zoom factor drawn uniformly per sample (2 = objects twice
      as large: the crop covers ``crop_size / 2`` image pixels);
    - ``tilt_max_deg``: rotation about the crop centre, uniform in ±tilt degrees;
    - ``wiggle_max_ratio``: each crop corner moves by up to ±ratio·crop_size in x and y
      (a random perspective distortion);
    - ``reflect``: horizontal flip with probability 1/2.

    Call with uint8 rgb B×3×H×W, uint8 semseg B×H×W (or None) and float depth metres B×H×W
    (or None); returns ``(rgb float32 normalised B×3×c×c, semseg int64 B×c×c or None,
    depth float32 B×1×c×c or None)``. Random numbers come from ``generator`` (default: the
    global CPU generator), so a seeded generator gives the same crops on any device.
    """

    def __init__(self, crop_size: int, scale_min: float = 1.0, scale_max: float = 1.0,
                 tilt_max_deg: float = 0.0, wiggle_max_ratio: float = 0.0, reflect: bool = False):
        if int(crop_size) != crop_size or crop_size <= 0:
            raise ValueError(f"--aug_input_crop_size: expected a positive integer, got {crop_size}")
        if not 0 < scale_min <= scale_max:
            raise ValueError(f"--aug_geom_scale_min/--aug_geom_scale_max: expected 0 < min <= max, "
                             f"got {scale_min}, {scale_max}")
        if not 0 <= tilt_max_deg <= 180:
            raise ValueError(f"--aug_geom_tilt_max_deg: expected 0..180 degrees, got {tilt_max_deg}")
        if not 0 <= wiggle_max_ratio < 0.5:
            raise ValueError(f"--aug_geom_wiggle_max_ratio: expected 0 <= ratio < 0.5, got {wiggle_max_ratio}")
        self.crop_size = int(crop_size)
        self.scale_min = float(scale_min)
        self.scale_max = float(scale_max)
        self.tilt_max_deg = float(tilt_max_deg)
        self.wiggle_max_ratio = float(wiggle_max_ratio)
        self.reflect = bool(reflect)

    @classmethod
    def from_config(cls, cfg) -> "BatchAugment":
        """The augmentation a :class:`cvaia.config.Config` asks for (``aug_*`` flags)."""
        return cls(cfg.aug_input_crop_size, cfg.aug_geom_scale_min, cfg.aug_geom_scale_max,
                   cfg.aug_geom_tilt_max_deg, cfg.aug_geom_wiggle_max_ratio, cfg.aug_geom_reflect)

    @property
    def geometric(self) -> bool:
        """Whether any option needs resampling (scale, tilt, wiggle); else it is a plain crop."""
        return (self.scale_min != 1.0 or self.scale_max != 1.0 or self.tilt_max_deg > 0
                or self.wiggle_max_ratio > 0)

    def __repr__(self) -> str:
        return (f"BatchAugment(crop_size={self.crop_size}, scale_min={self.scale_min}, "
                f"scale_max={self.scale_max}, tilt_max_deg={self.tilt_max_deg}, "
                f"wiggle_max_ratio={self.wiggle_max_ratio}, reflect={self.reflect})")

    # -- random parameters --
    def _flips(self, batch: int, generator, device) -> torch.Tensor:
        flip = torch.rand(batch, generator=generator, device=device) < 0.5
        return flip if self.reflect else torch.zeros_like(flip)

    def sample_crops(self, batch: int, height: int, width: int, generator: torch.Generator | None = None):
        """Random top-left corners and flips of plain crops: ``(y0, x0, flip)``, each of length B.

        A crop larger than the image is placed so that the image lies inside it.
        """
        device = generator.device if generator is not None else torch.device("cpu")
        c = self.crop_size
        y0 = torch.randint(min(0, height - c), max(0, height - c) + 1, (batch,), generator=generator, device=device)
        x0 = torch.randint(min(0, width - c), max(0, width - c) + 1, (batch,), generator=generator, device=device)
        return y0, x0, self._flips(batch, generator, device)

    def sample_homographies(self, batch: int, height: int, width: int,
                            generator: torch.Generator | None = None) -> torch.Tensor:
        """One random homography per sample (B×3×3, float64): crop pixel → image pixel.

        Coordinates are continuous pixel coordinates (pixel ``i`` spans ``i .. i+1``).
        Composition, applied to a crop point: flip → corner wiggle → move the crop centre to
        the origin → rotate by the tilt and shrink by the scale → move to a random centre in
        the image.
        """
        device = generator.device if generator is not None else torch.device("cpu")
        c = float(self.crop_size)
        opts = dict(generator=generator, device=device, dtype=torch.float64)
        scale = self.scale_min + (self.scale_max - self.scale_min) * torch.rand(batch, **opts)
        angle = math.radians(self.tilt_max_deg) * (2 * torch.rand(batch, **opts) - 1)
        shift = self.wiggle_max_ratio * c * (2 * torch.rand(batch, 4, 2, **opts) - 1)
        place = torch.rand(batch, 2, **opts)
        flip = self._flips(batch, generator, device)

        # Centre of the crop in the image: the (unrotated) region of side c/scale stays inside
        # the image when it fits, else the image stays inside it.
        half = c / (2 * scale)
        centres = []
        for k, size in enumerate((width, height)):
            lo, hi = torch.minimum(half, size - half), torch.maximum(half, size - half)
            centres.append(lo + place[:, k] * (hi - lo))
        cx, cy = centres

        one, zero = torch.ones_like(scale), torch.zeros_like(scale)
        flip_m = _affine(torch.where(flip, -one, one), zero, torch.where(flip, c * one, zero), zero, one, zero)
        # The crop's corners (0,0) (c,0) (c,c) (0,c), built on the device from arange: a tensor
        # made from a Python list would be a blocking host→device copy on every batch.
        corner = torch.arange(4, device=device)
        square = c * torch.stack([(corner == 1) | (corner == 2), corner >= 2], dim=-1).to(torch.float64)
        square = square.expand(batch, 4, 2)
        wiggle_m = homography_from_points(square, square + shift)
        to_origin = _affine(one, zero, -c / 2 * one, zero, one, -c / 2 * one)
        cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
        rotate_scale = _affine(cos, -sin, zero, sin, cos, zero)
        to_image = _affine(one, zero, cx, zero, one, cy)
        return to_image @ rotate_scale @ to_origin @ wiggle_m @ flip_m

    # -- resampling --
    def crop(self, rgb, semseg, depth, y0, x0, flip):
        """Plain crops (and flips) by indexing: exact copies of the image pixels."""
        b, _, h, w = rgb.shape
        c = self.crop_size
        dev = rgb.device
        y0, x0, flip = y0.to(dev), x0.to(dev), flip.to(dev)
        ar = torch.arange(c, device=dev)
        ys = y0[:, None] + ar  # B×c
        xs = x0[:, None] + ar
        xs = torch.where(flip[:, None], xs.flip(1), xs)
        index = (ys.clamp(0, h - 1) * w)[:, :, None] + xs.clamp(0, w - 1)[:, None, :]  # B×c×c
        index = index.flatten(1)[:, None]
        needs_fill = h < c or w < c
        inside = (((ys >= 0) & (ys < h))[:, :, None] & ((xs >= 0) & (xs < w))[:, None, :])[:, None]

        def take(t: torch.Tensor) -> torch.Tensor:  # B×C×H×W → B×C×c×c
            return t.flatten(2).gather(2, index.expand(-1, t.shape[1], -1)).view(b, t.shape[1], c, c)

        rgb_out = normalize_rgb(take(rgb))
        if needs_fill:
            rgb_out = torch.where(inside, rgb_out, 0.0)
        sem_out = dep_out = None
        if semseg is not None:
            sem_out = take(semseg[:, None]).long()
            if needs_fill:
                sem_out = torch.where(inside, sem_out, IGNORE_INDEX)
            sem_out = sem_out[:, 0]
        if depth is not None:
            dep_out = take(depth[:, None]).float()
            if needs_fill:
                dep_out = torch.where(inside, dep_out, 0.0)
        return rgb_out, sem_out, dep_out

    def warp(self, rgb, semseg, depth, homographies: torch.Tensor):
        """Resample the batch through per-sample homographies (B×3×3, crop pixel → image pixel)."""
        b, _, h, w = rgb.shape
        c = self.crop_size
        dev = rgb.device
        # Pixel centres of the crop, in homogeneous coordinates: c²×3.
        centres = torch.arange(c, device=dev, dtype=torch.float32) + 0.5
        gy, gx = torch.meshgrid(centres, centres, indexing="ij")
        points = torch.stack([gx, gy, torch.ones_like(gx)], dim=-1).view(1, c * c, 3)
        src = points @ homographies.to(dev, torch.float32).transpose(1, 2)  # B×c²×3
        xy = src[..., :2] / src[..., 2:]
        # grid_sample's coordinates (align_corners=False): -1 and 1 are the image's outer edges.
        # (Python scalars, not a tensor made from a list: that would be a host→device copy.)
        grid = torch.stack([2 * xy[..., 0] / w - 1, 2 * xy[..., 1] / h - 1], dim=-1).view(b, c, c, 2)

        # Normalising first makes the zero padding the mean colour.
        rgb_out = F.grid_sample(normalize_rgb(rgb), grid, mode="bilinear", padding_mode="zeros",
                                align_corners=False)
        labels = []
        if semseg is not None:
            labels.append(semseg.float() + 1)  # shift so that the zero padding means "outside"
        if depth is not None:
            labels.append(depth.float())  # zero padding is already "invalid"
        sem_out = dep_out = None
        if labels:
            out = F.grid_sample(torch.stack(labels, dim=1), grid, mode="nearest", padding_mode="zeros",
                                align_corners=False)
            if semseg is not None:
                sem = out[:, 0].long() - 1
                sem_out = torch.where(sem < 0, IGNORE_INDEX, sem)
            if depth is not None:
                dep_out = out[:, -1:]
        return rgb_out, sem_out, dep_out

    def __call__(self, rgb_u8: torch.Tensor, semseg_u8: torch.Tensor | None = None,
                 depth_m: torch.Tensor | None = None, generator: torch.Generator | None = None):
        if not isinstance(rgb_u8, torch.Tensor) or rgb_u8.ndim != 4 or rgb_u8.shape[1] != 3:
            got = tuple(rgb_u8.shape) if isinstance(rgb_u8, torch.Tensor) else type(rgb_u8).__name__
            raise ValueError(f"BatchAugment: rgb must be a B×3×H×W tensor, got {got}")
        b, _, h, w = rgb_u8.shape
        for name, t in (("semseg", semseg_u8), ("depth", depth_m)):
            if t is not None and (not isinstance(t, torch.Tensor) or tuple(t.shape) != (b, h, w)):
                got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
                raise ValueError(f"BatchAugment: {name} must be a B×H×W tensor matching rgb "
                                 f"{(b, h, w)}, got {got}")
            if t is not None and t.device != rgb_u8.device:
                raise ValueError(f"BatchAugment: {name} is on {t.device} but rgb on {rgb_u8.device}; "
                                 f"expected all inputs on one device")
        if rgb_u8.dtype != torch.uint8:
            raise ValueError(f"BatchAugment: rgb must be uint8 0..255 (not yet normalised), got {rgb_u8.dtype}")
        if semseg_u8 is not None and (semseg_u8.is_floating_point() or semseg_u8.dtype == torch.bool):
            raise ValueError(f"BatchAugment: semseg must hold integer class ids (255 = ignore), "
                             f"got {semseg_u8.dtype}")
        if depth_m is not None and not depth_m.is_floating_point():
            raise ValueError(f"BatchAugment: depth must be float metres (0 = invalid), got {depth_m.dtype}; "
                             f"decode uint8 disparity codes first with depth_from_codes()")
        if self.geometric:
            return self.warp(rgb_u8, semseg_u8, depth_m, self.sample_homographies(b, h, w, generator))
        return self.crop(rgb_u8, semseg_u8, depth_m, *self.sample_crops(b, h, w, generator))
