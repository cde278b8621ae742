"""Cityscapes → the course (miniscapes) layout: the one place that reads Cityscapes files.

Input, as unpacked from the Cityscapes packages ``leftImg8bit_trainvaltest``,
``gtFine_trainvaltest``, ``disparity_trainvaltest`` and ``camera_trainvaltest``::

    <root>/leftImg8bit/<split>/<city>/<city>_<seq>_<frame>_leftImg8bit.png   8-bit RGB
    <root>/gtFine/<split>/<city>/<city>_<seq>_<frame>_gtFine_labelIds.png    8-bit label ids
    <root>/disparity/<split>/<city>/<city>_<seq>_<frame>_disparity.png       16-bit disparity
    <root>/camera/<split>/<city>/<city>_<seq>_<frame>_camera.json            calibration

Output: ``<out>/{train,val,test}/{rgb,semseg,depth}/<i>.{jpg,png}`` in the course encodings
(:mod:`cvaia.data.encoding`), plus ``meta.json`` (settings, counts, cities) and
``sources.json`` (the Cityscapes frame of every output index).

- **semseg**: label ids → the 19 train ids through the label table of ``cityscapesscripts``
  (``cityscapesscripts.helpers.labels``); every label without a train id (void, parking,
  guard rail, …) → 255.
- **depth**: a disparity pixel ``p`` > 0 means ``(p − 1) / 256`` pixels of disparity, so
  ``depth = baseline · fx / ((p − 1) / 256)`` metres with ``extrinsic.baseline`` and
  ``intrinsic.fx`` of the frame's camera file; ``p = 0`` (and ``p = 1``, zero disparity) is
  invalid. Written with the "invalidate" policy: outside 4..300 m → invalid.
- **geometry**: each frame is scaled so that it covers the output size and centre-cropped
  to it (Cityscapes' 2048×1024 is 2:1 like the course's 720×360 crops, so by default nothing
  is cut off). rgb is resampled bilinearly with antialiasing; semseg and depth take the
  nearest source pixel (the same one for both), so labels are never mixed and an invalid
  depth pixel is never blended into a valid one.
- **splits**: Cityscapes' train → train; Cityscapes' val is split by city: the
  ``test_cities`` (default: the last val city in alphabetical order, ``munster`` in the
  real data) → test, the others → val. Whole cities are held out, so no street appears in
  both. Within a split, frames are sorted by (city, sequence, frame); index ``i`` is the
  ``i``-th frame. Cityscapes' own test split has no public labels and is not used.

:func:`scan` finds and checks the frames; :func:`convert` writes the set.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from .classes import IGNORE_INDEX, NUM_CLASSES, class_names
from .miniscapes import SPLITS, DatasetError

#: Bumped whenever the conversion changes its output; part of the identity of a converted set.
CONVERTER_VERSION = 1
CONVERTER_NAME = "cvaia.data.cityscapes"
META_NAME = "meta.json"
SOURCES_NAME = "sources.json"
#: The course's image size (W, H): 720x360 crops, 2:1 like Cityscapes' 2048x1024.
DEFAULT_SIZE = (720, 360)
#: Cityscapes split → where its frames go (val is divided further by city).
SOURCE_SPLITS = ("train", "val")

#: Cityscapes folder → (file-name suffix, the package that holds it).
FOLDERS = {
    "leftImg8bit": ("_leftImg8bit.png", "leftImg8bit_trainvaltest.zip"),
    "gtFine": ("_gtFine_labelIds.png", "gtFine_trainvaltest.zip"),
    "disparity": ("_disparity.png", "disparity_trainvaltest.zip"),
    "camera": ("_camera.json", "camera_trainvaltest.zip"),
}
_STEM_RE = re.compile(r"^(?P<city>.+)_(?P<seq>\d+)_(?P<frame>\d+)$")
_OUT_FILES = (("rgb", ".jpg"), ("semseg", ".png"), ("depth", ".png"))
_OUT_RE = re.compile(r"^(0|[1-9]\d*)\.(jpg|png)$")


class ConvertError(RuntimeError):
    """The converted set cannot be written as asked (e.g. it would overwrite another set)."""


@dataclass(frozen=True)
class Frame:
    """One Cityscapes frame: its four source files."""

    city: str
    name: str  # "<city>_<seq>_<frame>"
    rgb: Path
    label: Path
    disparity: Path
    camera: Path


# ---- the label table --------------------------------------------------------------------------
@lru_cache(maxsize=1)
def label_id_to_train_id() -> np.ndarray:
    """uint8 lookup table of 256 entries: Cityscapes label id → train id (255 = ignore).

    Built from ``cityscapesscripts.helpers.labels``; ids that are no label at all map to 255
    too, but :func:`read_frame` rejects them (they mean a wrong or broken label file).
    """
    try:
        from cityscapesscripts.helpers.labels import labels
    except ImportError as exc:
        raise ConvertError("converting Cityscapes needs the cityscapesscripts package: "
                           "pip install 'cvaia[cityscapes]' (or pip install cityscapesscripts)"
                           ) from exc
    lut = np.full(256, IGNORE_INDEX, dtype=np.uint8)
    names = class_names()
    for label in labels:
        if not 0 <= label.id < 256:
            continue  # e.g. "license plate" (id -1): never stored in a label image
        if 0 <= label.trainId < NUM_CLASSES:
            if names[label.trainId] != label.name:  # our class table must be Cityscapes'
                raise ConvertError(f"cityscapesscripts maps {label.name!r} to train id "
                                   f"{label.trainId}, which is {names[label.trainId]!r} here")
            lut[label.id] = label.trainId
    return lut


@lru_cache(maxsize=1)
def _known_label_ids() -> np.ndarray:
    from cityscapesscripts.helpers.labels import labels

    known = np.zeros(256, dtype=bool)
    known[[lb.id for lb in labels if 0 <= lb.id < 256]] = True
    return known


# ---- finding the frames -----------------------------------------------------------------------
def _frames_in(root: Path, folder: str, split: str) -> dict[str, Path]:
    """``{<city>_<seq>_<frame>: path}`` of one Cityscapes folder and split."""
    suffix, package = FOLDERS[folder]
    base = root / folder / split
    if not base.is_dir():
        raise DatasetError(f"{base}: folder not found; expected "
                           f"{base}/<city>/<city>_<seq>_<frame>{suffix} (from Cityscapes' "
                           f"{package})")
    found: dict[str, Path] = {}
    for city_dir in sorted(p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for path in sorted(city_dir.iterdir()):
            if not path.name.endswith(suffix) or path.name.startswith("."):
                continue  # the other files of a package (_color.png, _polygons.json, …)
            stem = path.name[: -len(suffix)]
            m = _STEM_RE.match(stem)
            if m is None or m["city"] != city_dir.name:
                raise DatasetError(f"{path}: unexpected file name; expected "
                                   f"{city_dir.name}_<seq>_<frame>{suffix}")
            found[stem] = path
    if not found:
        raise DatasetError(f"{base}: no <city>/<city>_<seq>_<frame>{suffix} files")
    return found


def scan(root: str | os.PathLike) -> dict[str, list[Frame]]:
    """The frames of Cityscapes' train and val splits, sorted by (city, sequence, frame).

    Raises :class:`DatasetError` for a wrong root, a missing folder, and a frame that lacks
    any of its four files (naming the file that is missing).
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DatasetError(f"{root}: Cityscapes root not found (expected a folder with "
                           f"{'/, '.join(FOLDERS)}/ inside)")
    if not (root / "leftImg8bit").is_dir():
        inside = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))[:5]
        raise DatasetError(f"{root}: not a Cityscapes root: no leftImg8bit/ folder (found "
                           f"{inside or 'nothing'}); expected {'/, '.join(FOLDERS)}/ with "
                           f"<split>/<city>/ inside")
    out = {}
    for split in SOURCE_SPLITS:
        found = {folder: _frames_in(root, folder, split) for folder in FOLDERS}
        images = found["leftImg8bit"]
        for folder, files in found.items():
            if folder == "leftImg8bit":
                continue
            suffix = FOLDERS[folder][0]
            for stem in sorted(images.keys() - files.keys()):
                city = images[stem].parent.name
                raise DatasetError(f"{root / folder / split / city / (stem + suffix)}: missing; "
                                   f"every image needs one (image: {images[stem]})")
            for stem in sorted(files.keys() - images.keys()):
                city = files[stem].parent.name
                raise DatasetError(f"{files[stem]}: has no image "
                                   f"{root / 'leftImg8bit' / split / city / (stem + '_leftImg8bit.png')}")

        def key(stem):
            m = _STEM_RE.match(stem)
            return m["city"], int(m["seq"]), int(m["frame"])

        out[split] = [Frame(images[s].parent.name, s, images[s], found["gtFine"][s],
                            found["disparity"][s], found["camera"][s])
                      for s in sorted(images, key=key)]
    return out


def split_frames(frames: dict[str, list[Frame]],
                 test_cities: tuple[str, ...] | None = None) -> dict[str, list[Frame]]:
    """Course splits from Cityscapes' ones: train; val without ``test_cities``; test.

    ``test_cities=None`` holds out the last val city in alphabetical order.
    """
    val_cities = sorted({f.city for f in frames["val"]})
    if test_cities is None:
        if len(val_cities) < 2:
            raise DatasetError(f"Cityscapes val has only the city {val_cities}; the test split is "
                               f"held out from val by city, so name the test cities "
                               f"(--test_cities) and keep at least one for val")
        test_cities = (val_cities[-1],)
    test_cities = tuple(sorted(set(test_cities)))
    if not test_cities:
        raise DatasetError(f"no test city given; expected one or more of {', '.join(val_cities)}")
    unknown = [c for c in test_cities if c not in val_cities]
    if unknown:
        raise DatasetError(f"test city {unknown[0]!r} is not a Cityscapes val city; expected "
                           f"some of {', '.join(val_cities)}")
    if set(test_cities) == set(val_cities):
        raise DatasetError(f"the test cities ({', '.join(test_cities)}) are all of Cityscapes' "
                           f"val cities; keep at least one for the val split")
    return {"train": list(frames["train"]),
            "val": [f for f in frames["val"] if f.city not in test_cities],
            "test": [f for f in frames["val"] if f.city in test_cities]}


# ---- reading one frame ------------------------------------------------------------------------
def _open(path: Path, modes: tuple[str, ...], what: str):
    from PIL import Image

    try:
        img = Image.open(path)
        img.load()
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found (expected the {what})") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise DatasetError(f"{path}: cannot read the {what} ({type(e).__name__}: {e})") from None
    if img.mode not in modes:
        raise DatasetError(f"{path}: the {what} must be a mode {' or '.join(modes)} PNG, got "
                           f"mode {img.mode}")
    return img


def read_camera(path: str | os.PathLike) -> tuple[float, float]:
    """``(baseline in metres, fx in pixels)`` from a Cityscapes ``*_camera.json``."""
    path = Path(path)
    try:
        cam = json.loads(path.read_text())
    except FileNotFoundError:
        raise DatasetError(f"{path}: camera file not found") from None
    except (OSError, ValueError) as e:
        raise DatasetError(f"{path}: cannot read the camera JSON ({e})") from None
    values = []
    for group, field in (("extrinsic", "baseline"), ("intrinsic", "fx")):
        value = cam.get(group, {}).get(field) if isinstance(cam, dict) and \
            isinstance(cam.get(group), dict) else None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                not math.isfinite(value) or value <= 0:
            raise DatasetError(f"{path}: expected a positive number at {group}.{field}, "
                               f"got {value!r}")
        values.append(float(value))
    return values[0], values[1]


def disparity_to_depth(p: np.ndarray, baseline: float, fx: float) -> np.ndarray:
    """Cityscapes disparity PNG values → depth in metres (float32; 0 where invalid).

    ``p`` > 1 means a disparity of ``(p - 1) / 256`` pixels; ``p = 0`` is invalid and ``p = 1``
    (zero disparity, infinitely far) is invalid too.
    """
    p = np.asarray(p, dtype=np.float64)
    valid = p > 1
    disparity = np.where(valid, (p - 1.0) / 256.0, 1.0)
    return np.where(valid, baseline * fx / disparity, 0.0).astype(np.float32)


def crop_box(src_size: tuple[int, int], size: tuple[int, int]) -> tuple[float, float, float, float]:
    """The centred source box (x0, y0, x1, y1) that, scaled, exactly covers ``size`` (W, H)."""
    (w, h), (out_w, out_h) = src_size, size
    scale = max(out_w / w, out_h / h)
    bw, bh = out_w / scale, out_h / scale
    x0, y0 = (w - bw) / 2, (h - bh) / 2
    return (x0, y0, x0 + bw, y0 + bh)


def read_frame(frame: Frame, size: tuple[int, int] = DEFAULT_SIZE):
    """One frame at ``size`` (W, H): ``(rgb uint8 H×W×3, semseg uint8 H×W, depth float32 H×W)``.

    semseg holds train ids (255 = ignore); depth is in metres, 0 = invalid (not yet limited
    to 4..300 m: the writer does that).
    """
    from PIL import Image

    rgb = _open(frame.rgb, ("RGB",), "rgb image")
    label = _open(frame.label, ("L",), "label-id image")
    disp = _open(frame.disparity, ("I;16", "I"), "16-bit disparity image")
    for img, path in ((label, frame.label), (disp, frame.disparity)):
        if img.size != rgb.size:
            raise DatasetError(f"{path}: size {img.size[0]}x{img.size[1]} (WxH) does not match "
                               f"its image {frame.rgb} ({rgb.size[0]}x{rgb.size[1]})")
    ids = np.asarray(label)
    if not _known_label_ids()[ids].all():
        bad = np.unique(ids[~_known_label_ids()[ids]])[:5].tolist()
        raise DatasetError(f"{frame.label}: values {bad} are no Cityscapes label ids; expected "
                           f"a *_gtFine_labelIds.png")
    p = np.asarray(disp)
    if p.min() < 0 or p.max() > 65535:
        raise DatasetError(f"{frame.disparity}: values must be 0..65535 (16-bit disparity)")
    baseline, fx = read_camera(frame.camera)
    depth = Image.fromarray(disparity_to_depth(p, baseline, fx), mode="F")

    box = crop_box(rgb.size, size)
    out_rgb = np.asarray(rgb.resize(size, Image.Resampling.BILINEAR, box=box))
    # Nearest: the same source pixel for labels and depth; nothing is averaged.
    out_ids = np.asarray(label.resize(size, Image.Resampling.NEAREST, box=box))
    out_depth = np.asarray(depth.resize(size, Image.Resampling.NEAREST, box=box))
    return out_rgb, label_id_to_train_id()[out_ids], out_depth


# ---- writing the set ----------------------------------------------------------------------------
def _write_one(job) -> None:
    """Convert one frame into its three files (via a scratch folder, then renamed)."""
    from .encoding import write_sample

    frame, size, out, scratch, split, index = job
    rgb, sem, depth = read_frame(frame, size)
    write_sample(out, split, index, rgb, sem, depth, scratch)


def _read_json(path: Path) -> dict | None:
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ConvertError(f"{path}: unreadable ({exc}); remove the folder or choose another "
                           f"--out") from exc


def _write_json(path: Path, data) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)


def _remove_converted(out: Path) -> None:
    """Delete the files a conversion wrote (index-named images, ``sources.json``)."""
    for split in SPLITS:
        for kind, _ in _OUT_FILES:
            folder = out / split / kind
            if folder.is_dir():
                for name in os.listdir(folder):
                    if _OUT_RE.match(name):
                        (folder / name).unlink()
    (out / SOURCES_NAME).unlink(missing_ok=True)


def _complete(out: Path, split: str, index: int) -> bool:
    return all((out / split / kind / f"{index}{ext}").is_file() for kind, ext in _OUT_FILES)


def _check_size(size) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f"size must be (width, height), got {size!r}") from None
    if w < 32 or h < 32:
        raise ValueError(f"size must be at least 32x32 (the evaluation crops to multiples of 32), "
                         f"got {w}x{h}")
    return w, h


def convert(root: str | os.PathLike, out: str | os.PathLike, size: tuple[int, int] = DEFAULT_SIZE,
            test_cities: tuple[str, ...] | None = None, workers: int | None = None,
            force: bool = False, progress: bool = False, report: dict | None = None) -> Path:
    """Convert Cityscapes at ``root`` into the course layout at ``out``; return ``out``.

    ``size`` is the output (W, H). ``test_cities``: the val cities that become the test
    split (None: the last one alphabetically). ``workers``: threads (None: up to 4).

    The file names of all frames and every camera file are checked before anything is
    written. ``out`` must be missing,
    empty, or a set this converter wrote: re-running with the same settings (source, size,
    test cities, converter version, same source frames) finishes an interrupted conversion
    and is a no-op for a complete one. A set converted with other settings is refused unless
    ``force``, which deletes the converted images first; a non-empty folder without this
    converter's ``meta.json`` is never touched. If ``report`` is a dict, it receives
    ``converted`` (frames written now), ``seconds`` and ``counts``.
    """
    root = Path(root).expanduser().resolve()
    out = Path(out).expanduser().resolve()
    size = _check_size(size)
    label_id_to_train_id()  # a missing cityscapesscripts fails before any work
    splits = split_frames(scan(root), test_cities)
    for frames in splits.values():  # cheap, and a bad camera file would stop a long run late
        for f in frames:
            read_camera(f.camera)
    held_out = tuple(sorted({f.city for f in splits["test"]}))
    sources = {s: [f.name for f in frames] for s, frames in splits.items()}
    digest = hashlib.sha1(json.dumps(sources, sort_keys=True).encode()).hexdigest()
    counts = {s: len(frames) for s, frames in splits.items()}
    settings = {"converter": CONVERTER_NAME, "version": CONVERTER_VERSION, "source": str(root),
                "width": size[0], "height": size[1], "test_cities": list(held_out),
                "counts": counts, "sources_sha1": digest}

    if out.exists() and not out.is_dir():
        raise ConvertError(f"{out}: exists and is not a folder")
    meta = _read_json(out / META_NAME) if out.is_dir() else None
    if out.is_dir() and meta is None and any(out.iterdir()):
        raise ConvertError(f"{out}: folder is not empty and has no meta.json, so it is not a "
                           f"converted Cityscapes set; choose another --out (nothing was changed)")
    if meta is not None and meta.get("converter") != CONVERTER_NAME:
        raise ConvertError(f"{out}: meta.json was not written by {CONVERTER_NAME}, so this is "
                           f"not a converted Cityscapes set; choose another --out (nothing was "
                           f"changed)")
    if meta is not None:
        old = {k: meta.get(k) for k in settings}
        if old != settings:
            what = [f"{k} {old[k]!r} → {settings[k]!r}" for k in settings
                    if old[k] != settings[k] and k not in ("counts", "sources_sha1")]
            if old["sources_sha1"] != digest:
                what.append("the source frames differ")
            if not force:
                raise ConvertError(f"{out}: holds a Cityscapes set converted with other settings "
                                   f"({', '.join(what)}); pass --force (force=True) to replace "
                                   f"it, or choose another --out")
            _remove_converted(out)
            meta = None
    if meta is not None and meta.get("complete") and \
            all(_complete(out, s, i) for s in splits for i in range(counts[s])):
        if report is not None:
            report.update(converted=0, seconds=0.0, counts=counts)
        return out

    for split in SPLITS:
        for kind, _ in _OUT_FILES:
            (out / split / kind).mkdir(parents=True, exist_ok=True)
    new_meta = dict(settings, complete=False, class_names=list(class_names()),
                    splits={s: {"count": counts[s],
                                "cities": sorted({f.city for f in splits[s]}),
                                "from": "train" if s == "train" else "val"} for s in splits})
    _write_json(out / META_NAME, new_meta)  # marks the folder as ours before any image
    _write_json(out / SOURCES_NAME, sources)
    scratch = out / ".partial"  # files are written here, then renamed into place
    scratch.mkdir(exist_ok=True)
    for leftover in scratch.iterdir():  # from an interrupted run
        if leftover.is_file():
            leftover.unlink()
    jobs = [(f, size, out, scratch, s, i) for s, frames in splits.items()
            for i, f in enumerate(frames) if not _complete(out, s, i)]
    if workers is None:
        workers = min(4, os.cpu_count() or 1)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers must be an integer ≥ 1, got {workers!r}")
    start = time.perf_counter()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), desc=f"cityscapes → {out.name}", unit="img")
    pool = ThreadPoolExecutor(max_workers=workers)
    try:
        for _ in pool.map(_write_one, jobs):  # re-raises the first error
            if bar is not None:
                bar.update(1)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)  # after an error: drop the queued frames
        if bar is not None:
            bar.close()
    try:
        scratch.rmdir()
    except OSError:
        pass
    new_meta["complete"] = True
    _write_json(out / META_NAME, new_meta)
    if report is not None:
        report.update(converted=len(jobs), seconds=time.perf_counter() - start, counts=counts)
    return out
