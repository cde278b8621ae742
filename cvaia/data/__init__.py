"""Data: the miniscapes format (reader, writers), synthetic street scenes, augmentation."""

from .classes import IGNORE_INDEX, NUM_CLASSES, class_colors, class_names, colorize, palette
from .encoding import (
    DEPTH_MAX,
    DEPTH_MEAN,
    DEPTH_MIN,
    DEPTH_STD,
    IMAGENET_MEAN,
    IMAGENET_STD,
    decode_depth,
    depth_lut,
    encode_depth,
    normalize_rgb,
    write_depth_png,
    write_rgb_jpg,
    write_semseg_png,
)

__all__ = [
    "IGNORE_INDEX", "NUM_CLASSES", "class_colors", "class_names", "colorize", "palette",
    "DEPTH_MAX", "DEPTH_MEAN", "DEPTH_MIN", "DEPTH_STD", "IMAGENET_MEAN", "IMAGENET_STD",
    "decode_depth", "depth_lut", "encode_depth", "normalize_rgb", "write_depth_png",
    "write_rgb_jpg", "write_semseg_png",
]
