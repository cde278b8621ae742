"""The course encodings: disparity-quantised depth PNGs, palette semseg PNGs, JPEG rgb.

Depth PNGs (mode ``L``) hold quantised *disparity*: a value ``v`` in 1..255 stands for

    d = 1 / ((1/4 - 1/300) * (v - 1) / 254 + 1/300)    metres,

so ``v = 1`` is 300 m and ``v = 255`` is 4 m; ``v = 0`` is invalid and decodes to 0.
Encoding is ``v = 1 + 254 * (1/d - 1/300) / (1/4 - 1/300)`` truncated to uint8. Ground
truth outside 4..300 m becomes 0 ("invalidate"); predictions are clamped to 1..255 ("clamp").
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

DEPTH_MIN = 4.0
DEPTH_MAX = 300.0
_INV_MIN = 1.0 / DEPTH_MAX
_INV_RANGE = 1.0 / DEPTH_MIN - 1.0 / DEPTH_MAX

#: Training-split statistics of the course data (metres).
DEPTH_MEAN = 27.0727
DEPTH_STD = 29.1264

#: ImageNet statistics on the 0..255 scale, as pretrained encoders expect.
IMAGENET_MEAN = (0.485 * 255, 0.456 * 255, 0.406 * 255)
IMAGENET_STD = (0.229 * 255, 0.224 * 255, 0.225 * 255)

DEPTH_POLICIES = ("invalidate", "clamp")


def depth_lut() -> np.ndarray:
    """Metres for each of the 256 codes (index 0 → 0.0, invalid), float32."""
    v = np.arange(256, dtype=np.float64)
    d = 1.0 / (_INV_RANGE * (v - 1.0) / 254.0 + _INV_MIN)
    d[0] = 0.0
    return d.astype(np.float32)


def decode_depth(codes: np.ndarray) -> np.ndarray:
    """uint8 disparity codes → float32 metres (0 = invalid)."""
    codes = np.asarray(codes)
    if codes.dtype != np.uint8:
        raise ValueError(f"depth codes must be uint8, got {codes.dtype}")
    return depth_lut()[codes]


def encode_depth(metres: np.ndarray, policy: str = "invalidate") -> np.ndarray:
    """float metres → uint8 disparity codes.

    ``policy="invalidate"`` (ground truth): values outside 4..300 m, non-finite or ≤ 0 give 0.
    ``policy="clamp"`` (predictions): every pixel is clamped to 4..300 m, codes 1..255.
    """
    if policy not in DEPTH_POLICIES:
        raise ValueError(f"depth policy must be one of {DEPTH_POLICIES}, got {policy!r}")
    d = np.asarray(metres, dtype=np.float64)
    finite = np.isfinite(d) & (d > 0)
    if policy == "clamp":
        d = np.where(finite, d, DEPTH_MAX)
        d = np.clip(d, DEPTH_MIN, DEPTH_MAX)
        valid = np.ones(d.shape, dtype=bool)
    else:
        valid = finite & (d >= DEPTH_MIN) & (d <= DEPTH_MAX)
        d = np.where(valid, d, DEPTH_MAX)
    v = 1.0 + 254.0 * (1.0 / d - _INV_MIN) / _INV_RANGE
    # Truncation as the course does; the small epsilon (1e-3 of a code) keeps decoded float32
    # values on their own code, so decode → encode is the identity.
    v = np.floor(v + 1e-3)
    v = np.clip(v, 1, 255)
    return np.where(valid, v, 0).astype(np.uint8)


def write_semseg_png(path: str | Path, ids: np.ndarray) -> None:
    """Write a label map (ids 0..18, 255 ignore) as a palette PNG in Cityscapes colours."""
    from PIL import Image

    from .classes import IGNORE_INDEX, NUM_CLASSES, palette

    ids = np.asarray(ids)
    bad = (ids != IGNORE_INDEX) & ((ids < 0) | (ids >= NUM_CLASSES))
    if bad.any():
        raise ValueError(f"{path}: semseg ids must be 0..18 or 255, found {np.unique(ids[bad])[:5]}")
    img = Image.fromarray(ids.astype(np.uint8), mode="P")
    img.putpalette(palette())
    img.save(path, optimize=False)


def write_depth_png(path: str | Path, metres: np.ndarray, policy: str = "invalidate") -> None:
    """Write depth in metres as a mode-L disparity PNG (see :func:`encode_depth`)."""
    from PIL import Image

    Image.fromarray(encode_depth(metres, policy), mode="L").save(path, optimize=False)


def write_rgb_jpg(path: str | Path, rgb: np.ndarray, quality: int = 90) -> None:
    """Write an (H, W, 3) uint8 image as JPEG."""
    from PIL import Image

    rgb = np.asarray(rgb)
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{path}: rgb must be uint8 (H, W, 3), got {rgb.dtype} {rgb.shape}")
    Image.fromarray(rgb, mode="RGB").save(path, quality=quality, subsampling=0)


@lru_cache(maxsize=32)
def _normalization_constants(device, mean: tuple[float, ...], std: tuple[float, ...]):
    """``mean`` and ``std`` as float32 3×1×1 tensors on ``device``, made once per device.

    Building them per call would copy them host→device on every batch, and on CUDA such a
    copy from ordinary (pageable) memory waits for the GPU queue: a hidden sync per step.
    """
    import torch

    with torch.inference_mode(False):  # usable outside inference mode even if first made inside
        m = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1).to(device)
        s = torch.tensor(std, dtype=torch.float32).view(3, 1, 1).to(device)
    return m, s


@lru_cache(maxsize=32)
def depth_lut_tensor(device="cpu"):
    """:func:`depth_lut` as a float32 torch tensor on ``device``, made once per device.

    Decode codes with ``depth_lut_tensor(codes.device)[codes.long()]``. Do not modify it in
    place: it is shared.
    """
    import torch

    with torch.inference_mode(False):
        return torch.from_numpy(depth_lut()).to(torch.device(device))


def normalize_rgb(rgb, mean=IMAGENET_MEAN, std=IMAGENET_STD):
    """ImageNet-normalise rgb on the 0..255 scale.

    Accepts a numpy array (H, W, 3) or a torch tensor (..., 3, H, W) of any dtype;
    returns float32 of the same layout.
    """
    try:
        import torch
    except ImportError:  # pragma: no cover
        torch = None
    if torch is not None and isinstance(rgb, torch.Tensor):
        m, s = _normalization_constants(rgb.device, tuple(map(float, mean)), tuple(map(float, std)))
        return (rgb.float() - m) / s
    a = np.asarray(rgb, dtype=np.float32)
    return (a - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)


def write_sample(root, split: str, index: int, rgb: np.ndarray, semseg: np.ndarray, depth_m: np.ndarray,
                 scratch) -> None:
    """Write one sample's ``rgb`` JPEG, ``semseg`` PNG and ``depth`` PNG (policy "invalidate")
    into ``root/<split>/{rgb,semseg,depth}/<index>.{jpg,png}``: each is written in ``scratch``
    first, then all three are renamed into place (a killed writer leaves no partial sample)."""
    import os
    from pathlib import Path

    root, scratch = Path(root), Path(scratch)
    parts = []
    for kind, ext, write in (("rgb", ".jpg", lambda f: write_rgb_jpg(f, rgb)),
                             ("semseg", ".png", lambda f: write_semseg_png(f, semseg)),
                             ("depth", ".png", lambda f: write_depth_png(f, depth_m, policy="invalidate"))):
        part = scratch / f"{split}-{kind}-{index}{ext}"
        write(part)
        parts.append((part, root / split / kind / f"{index}{ext}"))
    for part, final in parts:
        os.replace(part, final)
