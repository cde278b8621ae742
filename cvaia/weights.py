"""Where encoder weights come from, and their identity for run hashes.

``pretrained`` (a :class:`cvaia.config.Config` field and the course's ``--pretrained`` flag)
names the encoder's starting weights:

- ``random``: a fresh initialisation;
- ``imagenet``: torchvision's ImageNet weights, from the local torch hub cache only
  (cvaia never downloads);
- ``synthetic``: the encoder shipped in ``cvaia/weights/`` — pretrained by
  ``python -m cvaia pretrain`` on a synthetic set generated with another seed than the default
  set (the offline stand-in for ImageNet; its sidecar JSON says how it was made);
- a path to a cvaia checkpoint or a (torchvision-layout) state dict.

This module only locates files and fingerprints them: loading lives in
:mod:`cvaia.models.encoder`, making the shipped file in :mod:`cvaia.pretrain`.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

#: Folder of the encoders shipped with the package.
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: Names of ``pretrained`` that are not file paths.
NAMED_WEIGHTS = ("random", "imagenet", "synthetic")

#: torchvision's ImageNet checkpoint file per encoder (``IMAGENET1K_V1``).
IMAGENET_FILES = {"resnet18": "resnet18-f37072fd.pth", "resnet34": "resnet34-b627a593.pth"}


def synthetic_weights_path(encoder: str = "resnet18") -> Path:
    """The shipped synthetic-pretrained encoder state dict of ``encoder`` (fp16, torchvision keys)."""
    return WEIGHTS_DIR / f"{encoder}_synthetic.pt"


def sidecar_path(weights: str | os.PathLike) -> Path:
    """The JSON describing how a weights file was made (same name, ``.json``)."""
    return Path(weights).with_suffix(".json")


def imagenet_weights_path(encoder: str = "resnet18") -> Path:
    """Where torchvision's ImageNet weights of ``encoder`` live in the local torch hub cache."""
    if encoder not in IMAGENET_FILES:
        raise ValueError(f"encoder {encoder!r}: expected one of {', '.join(IMAGENET_FILES)}")
    import torch.hub  # torch's own rule: $TORCH_HOME/hub, else $XDG_CACHE_HOME/torch/hub

    return Path(torch.hub.get_dir()) / "checkpoints" / IMAGENET_FILES[encoder]


def imagenet_available(encoder: str = "resnet18") -> bool:
    """Whether torchvision's ImageNet weights are in the local torch hub cache (never downloaded)."""
    return imagenet_weights_path(encoder).is_file()


def weights_file(pretrained: str, encoder: str = "resnet18") -> Path | None:
    """The file ``pretrained`` refers to (None for ``random``); the file may not exist."""
    if pretrained in ("random", "", None):
        return None
    if pretrained == "imagenet":
        return imagenet_weights_path(encoder)
    if pretrained == "synthetic":
        return synthetic_weights_path(encoder)
    return Path(pretrained).expanduser().resolve()


_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's content (cached per path, size and modification time)."""
    path = Path(path)
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def weights_identity(pretrained: str, encoder: str = "resnet18") -> str:
    """What a run hash records of the starting weights: ``random``, or ``sha256:<hex>`` of the
    file ``pretrained`` names (so new weights behind the same name never serve old runs), or
    ``missing:<path>`` when the file is absent (training then stops with the path message)."""
    path = weights_file(pretrained, encoder)
    if path is None:
        return "random"
    if not path.is_file():
        return f"missing:{path}"
    return "sha256:" + file_sha256(path)


def course_pretrained(encoder: str = "resnet18") -> tuple[str, str | None]:
    """What the course's ``--pretrained true`` (ImageNet weights) means here: ``("imagenet", None)``
    when they are in the local torch cache, else ``("synthetic", notice)`` when the shipped
    synthetic-pretrained encoder exists (``notice`` says so in one line). Raises
    :class:`cvaia.errors.ConfigError` naming both paths when neither is there."""
    from .errors import ConfigError

    imagenet = imagenet_weights_path(encoder)
    if imagenet.is_file():
        return "imagenet", None
    synthetic = synthetic_weights_path(encoder)
    if synthetic.is_file():
        return "synthetic", (f"--pretrained true: ImageNet weights for {encoder} are not in the local torch "
                             f"cache ({imagenet}); using the shipped synthetic-pretrained encoder {synthetic} "
                             f"instead (the offline stand-in, recorded in the run's config.json)")
    raise ConfigError(f"--pretrained true: no pretrained {encoder} encoder here: ImageNet weights are not in "
                      f"the local torch cache (expected {imagenet}; cvaia never downloads) and the shipped "
                      f"synthetic encoder {synthetic} is missing (build it with `python -m cvaia pretrain "
                      f"--encoder {encoder}`); copy one there, or use --pretrained false")
