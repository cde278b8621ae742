"""Reader for any data set in the miniscapes format (the course data or our synthetic set).

Layout::

    <root>/<split>/rgb/<i>.jpg       RGB JPEG                       (always present)
    <root>/<split>/semseg/<i>.png    mode P or L, train ids 0..18, 255 = ignore   (optional)
    <root>/<split>/depth/<i>.png     mode L, quantised disparity codes, 0 = invalid (optional)

with indices ``i = 0 .. N-1``. The split size ``N`` is discovered from the files. The test
split usually has no labels; a label folder that *is* present must hold every index.

Two ways to read:

- :class:`MiniscapesSplit` reads one sample at a time with PIL (a ``torch`` Dataset);
- :func:`load_split_tensors` decodes a whole split once into compact uint8 tensors for the
  fast training path (depth stays as uint8 codes and is decoded on the device with the
  256-entry table :func:`cvaia.data.encoding.depth_lut`).
"""

from __future__ import annotations

import hashlib
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .classes import IGNORE_INDEX, NUM_CLASSES
from .encoding import decode_depth

#: The splits of a miniscapes-format root.
SPLITS = ("train", "val", "test")
#: Modality folder → file extension.
MODALITIES = {"rgb": ".jpg", "semseg": ".png", "depth": ".png"}

# True for every uint8 value that is a legal semseg label (0..18 and 255).
_LEGAL_LABEL = np.zeros(256, dtype=bool)
_LEGAL_LABEL[:NUM_CLASSES] = True
_LEGAL_LABEL[IGNORE_INDEX] = True


class DatasetError(ValueError):
    """A data set file or folder is missing, incomplete, unreadable or not in the expected format."""


# ---- file discovery ---------------------------------------------------------------------------
def _indices_in(folder: Path, ext: str) -> list[int]:
    """Sorted integer indices of the ``<i><ext>`` files in ``folder`` (hidden files ignored)."""
    indices = []
    others = []
    for entry in os.scandir(folder):
        name = entry.name
        if name.startswith("."):
            continue
        if not name.endswith(ext):
            others.append(name)
            continue
        stem = name[: -len(ext)]
        # ASCII digits without leading zeros: the reader opens "<i>.jpg", so "007.jpg" (or a
        # second "01.jpg" next to "1.jpg") would never be read.
        if not (stem.isascii() and stem.isdigit() and str(int(stem)) == stem):
            raise DatasetError(f"{folder / name}: unexpected file name; expected <index>{ext} "
                               f"with index 0, 1, 2, ... (no leading zeros)")
        indices.append(int(stem))
    if not indices:
        found = f" (found e.g. {sorted(others)[:3]})" if others else ""
        raise DatasetError(f"{folder}: no <index>{ext} files{found}")
    return sorted(indices)


def _check_complete(folder: Path, ext: str, indices: list[int], n: int) -> None:
    """Raise unless ``indices`` is exactly 0..n-1; the message names a missing or extra file."""
    if len(indices) == n and indices[-1] == n - 1:
        return
    present = set(indices)
    missing = [i for i in range(n) if i not in present]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise DatasetError(f"{folder}: missing {missing[0]}{ext}{more}; expected indices 0..{n - 1}")
    extra = [i for i in indices if i >= n]
    raise DatasetError(f"{folder}: unexpected {extra[0]}{ext}; expected indices 0..{n - 1} "
                       f"(as in the rgb folder)")


def _open_image(path: Path, modes: tuple[str, ...], what: str) -> np.ndarray:
    """Decode an image with PIL into a uint8 array; check its mode."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            mode = img.mode
            if mode not in modes:
                raise DatasetError(f"{path}: {what} must be a mode {' or '.join(modes)} image, got mode {mode}")
            img.load()
            arr = np.array(img)  # a writable copy
    except DatasetError:
        raise
    except FileNotFoundError:
        raise DatasetError(f"{path}: file not found (expected the {what} image)") from None
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise DatasetError(f"{path}: cannot read the {what} image ({type(e).__name__}: {e})") from None
    if arr.dtype != np.uint8:
        raise DatasetError(f"{path}: {what} must hold 8-bit values, got {arr.dtype}")
    return arr


# ---- one split --------------------------------------------------------------------------------
class MiniscapesSplit(Dataset):
    """One split of a miniscapes-format root, read one sample at a time with PIL.

    ``read(i)`` (also ``split[i]``) returns a dict with

    - ``rgb``: uint8 (H, W, 3);
    - ``semseg``: int64 (H, W), ids 0..18 and 255 = ignore (if the split has labels);
    - ``depth``: float32 (H, W) metres, 0 = invalid (if the split has depth).

    ``read_raw(i)`` returns the undecoded uint8 arrays ``rgb``, ``semseg`` and ``depth_codes``.
    Every problem raises :class:`DatasetError` naming the file or folder.
    """

    def __init__(self, root: str | os.PathLike, split: str):
        self.root = Path(root)
        self.split = split
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
        if not self.root.is_dir():
            raise DatasetError(f"{self.root}: data set root not found (expected a folder with "
                               f"{'/, '.join(SPLITS)}/ inside)")
        self.dir = self.root / split
        if not self.dir.is_dir():
            raise DatasetError(f"{self.dir}: split folder not found (expected <root>/{split}/rgb/0.jpg, ...)")
        rgb_dir = self.dir / "rgb"
        if not rgb_dir.is_dir():
            raise DatasetError(f"{rgb_dir}: rgb folder not found (expected {rgb_dir}/0.jpg, 1.jpg, ...)")

        rgb_indices = _indices_in(rgb_dir, MODALITIES["rgb"])
        # N is the largest index found in any modality: then a gap in rgb, or a label without
        # its rgb image, both show up as a missing rgb file.
        label_indices = {}
        for name in ("semseg", "depth"):
            folder = self.dir / name
            if folder.is_dir():
                label_indices[name] = _indices_in(folder, MODALITIES[name])
        n = max([rgb_indices[-1]] + [ix[-1] for ix in label_indices.values()]) + 1
        _check_complete(rgb_dir, MODALITIES["rgb"], rgb_indices, n)
        for name, ix in label_indices.items():
            _check_complete(self.dir / name, MODALITIES[name], ix, n)
        self._len = n
        self.modalities = ("rgb",) + tuple(label_indices)
        self._image_size: tuple[int, int] | None = None

    # -- basic properties --
    def __len__(self) -> int:
        return self._len

    @property
    def has_semseg(self) -> bool:
        """Whether the split has semantic labels."""
        return "semseg" in self.modalities

    @property
    def has_depth(self) -> bool:
        """Whether the split has depth ground truth."""
        return "depth" in self.modalities

    @property
    def image_size(self) -> tuple[int, int]:
        """(H, W) of the first rgb image (read from its header only)."""
        if self._image_size is None:
            from PIL import Image

            path = self.path(0, "rgb")
            try:
                with Image.open(path) as img:
                    w, h = img.size
            except Exception as e:
                raise DatasetError(f"{path}: cannot read the rgb image ({type(e).__name__}: {e})") from None
            self._image_size = (h, w)
        return self._image_size

    def path(self, i: int, modality: str = "rgb") -> Path:
        """File of sample ``i`` for ``modality`` (rgb, semseg or depth)."""
        return self.dir / modality / f"{i}{MODALITIES[modality]}"

    def _index(self, i) -> int:
        i = int(i)
        if i < 0:
            i += self._len
        if not 0 <= i < self._len:
            raise IndexError(f"index {i} out of range for {self.dir} with {self._len} images")
        return i

    # -- reading --
    def read_raw(self, i: int) -> dict[str, np.ndarray]:
        """uint8 arrays ``rgb`` (H, W, 3) and, where present, ``semseg`` and ``depth_codes`` (H, W)."""
        i = self._index(i)
        rgb_path = self.path(i, "rgb")
        out = {"rgb": _open_image(rgb_path, ("RGB",), "rgb")}
        size = out["rgb"].shape[:2]
        if self.has_semseg:
            path = self.path(i, "semseg")
            ids = _open_image(path, ("P", "L"), "semseg")
            if not _LEGAL_LABEL[ids].all():
                bad = np.unique(ids[~_LEGAL_LABEL[ids]])
                raise DatasetError(f"{path}: semseg ids must be 0..{NUM_CLASSES - 1} or {IGNORE_INDEX}, "
                                   f"found {bad[:5].tolist()}")
            out["semseg"] = ids
        if self.has_depth:
            out["depth_codes"] = _open_image(self.path(i, "depth"), ("L",), "depth")
        for key, name in (("semseg", "semseg"), ("depth_codes", "depth")):
            if key in out and out[key].shape != size:
                raise DatasetError(f"{self.path(i, name)}: size {out[key].shape[1]}x{out[key].shape[0]} "
                                   f"(WxH) does not match its rgb image {rgb_path} "
                                   f"({size[1]}x{size[0]})")
        return out

    def read(self, i: int) -> dict[str, np.ndarray]:
        """Decoded sample: ``rgb`` uint8, ``semseg`` int64, ``depth`` float32 metres."""
        raw = self.read_raw(i)
        out = {"rgb": raw["rgb"]}
        if "semseg" in raw:
            out["semseg"] = raw["semseg"].astype(np.int64)
        if "depth_codes" in raw:
            out["depth"] = decode_depth(raw["depth_codes"])
        return out

    __getitem__ = read

    def preload_nbytes(self, max_images: int = 0) -> int:
        """Memory that :func:`load_split_tensors` needs for this split (bytes)."""
        n = len(self) if max_images <= 0 else min(max_images, len(self))
        h, w = self.image_size
        return n * h * w * (3 + self.has_semseg + self.has_depth)

    def __repr__(self) -> str:
        return f"MiniscapesSplit({str(self.root)!r}, {self.split!r}: {len(self)} images, {'+'.join(self.modalities)})"


# ---- the whole split as tensors -----------------------------------------------------------------
@dataclass
class SplitTensors:
    """A decoded split in compact uint8 tensors (see :func:`load_split_tensors`)."""

    rgb: torch.Tensor  # uint8 N×3×H×W
    semseg: torch.Tensor | None  # uint8 N×H×W (255 = ignore)
    depth_codes: torch.Tensor | None  # uint8 N×H×W (decode with depth_lut())
    root: Path
    split: str

    def __len__(self) -> int:
        return self.rgb.shape[0]

    @property
    def nbytes(self) -> int:
        """Memory held by the tensors."""
        return sum(t.numel() for t in (self.rgb, self.semseg, self.depth_codes) if t is not None)


def _cache_key(data: MiniscapesSplit, n: int) -> str:
    """Hash of name, size and modification time of every file that goes into the tensors."""
    h = hashlib.sha1()
    for name in data.modalities:
        for i in range(n):
            st = os.stat(data.path(i, name))
            h.update(f"{name}/{i}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def load_split_tensors(root: str | os.PathLike, split: str, max_images: int = 0,
                       workers: int | None = None, progress: bool = False,
                       cache: bool = False, indices=None) -> SplitTensors:
    """Decode (the first ``max_images`` of, 0 = all) a split once into uint8 tensors.

    ``indices`` (a sequence of image numbers among those) decodes only these images, in that
    order — e.g. one process's shard of a multi-GPU job; no cache is used then.

    Images are decoded in a thread pool (PIL releases the GIL while decoding). All images of
    the split must have the same size. Depth is kept as uint8 codes (4x less memory than
    float metres); decode on the device with ``lut[codes.long()]``, ``lut`` from
    :func:`cvaia.data.encoding.depth_lut`.

    ``cache=True`` stores the tensors in ``<root>/.cache/<split>-<n>.pt`` and reuses them
    only while every source file has the same size and modification time. The cache is as
    large as the decoded data, so it is off by default; a root that cannot be written to
    simply gets no cache.
    """
    data = MiniscapesSplit(root, split)
    if max_images < 0:
        raise DatasetError(f"max_images must be >= 0 (0 = all), got {max_images}")
    n = len(data) if max_images == 0 else min(max_images, len(data))
    chosen = list(range(n))
    if indices is not None:
        chosen = [int(i) for i in indices]
        bad = [i for i in chosen if not 0 <= i < n]
        if bad:
            raise DatasetError(f"{data.root / split}: image index {bad[0]} is outside 0..{n - 1}")
        n, cache = len(chosen), False

    cache_path = data.root / ".cache" / f"{split}-{n}.pt"
    key = _cache_key(data, n) if cache else None
    if cache and cache_path.is_file():
        try:
            stored = torch.load(cache_path, weights_only=True)
        except Exception:
            stored = None  # broken cache file: rebuild it
        if stored is not None and stored.get("key") == key:
            return SplitTensors(stored["rgb"], stored["semseg"], stored["depth_codes"], data.root, split)

    h, w = data.image_size
    rgb = torch.empty((n, 3, h, w), dtype=torch.uint8)
    semseg = torch.empty((n, h, w), dtype=torch.uint8) if data.has_semseg else None
    depth = torch.empty((n, h, w), dtype=torch.uint8) if data.has_depth else None

    def load(i: int) -> None:
        raw = data.read_raw(chosen[i])
        if raw["rgb"].shape[:2] != (h, w):
            got = raw["rgb"].shape
            raise DatasetError(f"{data.path(chosen[i], 'rgb')}: size {got[1]}x{got[0]} (WxH) differs from "
                               f"{data.path(0, 'rgb')} ({w}x{h}); all images of a split must have one size")
        rgb[i].copy_(torch.from_numpy(raw["rgb"]).permute(2, 0, 1))
        if semseg is not None:
            semseg[i].copy_(torch.from_numpy(raw["semseg"]))
        if depth is not None:
            depth[i].copy_(torch.from_numpy(raw["depth_codes"]))

    if workers is None:
        workers = min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        jobs = pool.map(load, range(n))
        if progress:
            from tqdm.auto import tqdm

            jobs = tqdm(jobs, total=n, desc=f"decoding {split}", unit="img")
        for _ in jobs:  # consume, re-raising the first error
            pass

    out = SplitTensors(rgb, semseg, depth, data.root, split)
    if cache:
        tmp = cache_path.with_name(f".{cache_path.name}.{os.getpid()}.tmp")
        try:
            cache_path.parent.mkdir(exist_ok=True)
            torch.save({"key": key, "rgb": rgb, "semseg": semseg, "depth_codes": depth}, tmp)
            os.replace(tmp, cache_path)  # atomic: a reader never sees half a file
        except OSError:
            tmp.unlink(missing_ok=True)  # read-only root or full disk: work without a cache
    return out


def check_image_size(root: str | os.PathLike, splits: tuple[str, ...], minimum: int) -> None:
    """:class:`DatasetError` when the images of a split are smaller than ``minimum`` pixels a side."""
    for split in splits:
        h, w = MiniscapesSplit(root, split).image_size
        if min(h, w) < minimum:
            raise DatasetError(f"{Path(root) / split}: images are {h}x{w} pixels; the models need at least "
                               f"{minimum} a side (the encoder's output stride): use larger images (--dataset_root)")


def _is_split_folder(path: Path) -> bool:
    """Whether ``path`` looks like a split of a miniscapes-format set (``rgb/`` next to ``semseg/``
    or ``depth/``)."""
    return (path / "rgb").is_dir() and any((path / m).is_dir() for m in MODALITIES if m != "rgb")


def dataset_containing(path: str | os.PathLike) -> tuple[Path, str | None] | None:
    """``(root, split)`` of the miniscapes-format data set that ``path`` is, or lies inside
    (``split`` None for the root itself or a folder beside its splits); None when it is in none.
    Any set counts, not only the configured one: a predictions folder must never land in one."""
    path = Path(path).expanduser().absolute()
    for p in [path, *path.parents]:
        try:
            if _is_split_folder(p):
                parent_is_root = p.name in SPLITS and any(_is_split_folder(p.parent / s) for s in SPLITS)
                return (p.parent, p.name) if parent_is_root else (p, None)
            if any(_is_split_folder(p / s) for s in SPLITS):
                return p, None
        except OSError:  # an unreadable ancestor: not known to be a data set
            continue
    return None


# ---- identity ----------------------------------------------------------------------------------
#: Files per modality folder whose size and modification time entered the fingerprint of
#: earlier versions (``kind: "files"`` records: still compared as they were made).
FINGERPRINT_SAMPLE = 16


def _folder_entries(folder: Path) -> list[tuple[str, int, int]]:
    """``(name, size, mtime_ns)`` of every visible entry of ``folder``, sorted by name."""
    out = []
    for e in os.scandir(folder):
        if e.name.startswith("."):
            continue
        st = e.stat()
        out.append((e.name, st.st_size, st.st_mtime_ns))
    return sorted(out)


def _content_sha256(folder: Path, names: list[str]) -> str:
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}\n".encode())
        with open(folder / name, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
    return h.hexdigest()


def data_identity(root: str | os.PathLike, content: bool = False) -> dict:
    """What identifies the data under ``root`` for the run store: every file counts.

    ``{"kind": "scan", "sha256", "files": {"train/rgb": N, ...}, "folders": {"train/rgb": sha,
    ...}, "meta_sha256", "sampled_sha256"}``: the names, sizes and modification times of every
    file of every split (a directory scan: cheap; a ``tar -x`` keeps them, so re-extracting the
    same archive gives the same identity), per folder and over all; ``meta_sha256`` the hash of
    ``meta.json`` (a generated set) or None; ``sampled_sha256`` the fingerprint records of earlier
    versions were made of (:func:`identity_difference` compares those with it). ``content=True``
    adds ``content_sha256`` (every file's bytes: reads the whole set; ``--verify_data``).
    ``{"kind": "missing"}`` when ``root`` is not a folder.
    """
    root = Path(root)
    if not root.is_dir():
        return {"kind": "missing"}
    meta = root / "meta.json"
    meta_sha = hashlib.sha256(meta.read_bytes()).hexdigest() if meta.is_file() else None
    counts: dict[str, int] = {}
    folders: dict[str, str] = {}
    whole, sampled, data = hashlib.sha256(), hashlib.sha256(), hashlib.sha256()
    for split in SPLITS:
        for modality in MODALITIES:
            folder = root / split / modality
            if not folder.is_dir():
                continue
            key = f"{split}/{modality}"
            entries = _folder_entries(folder)
            counts[key] = len(entries)
            h = hashlib.sha256()
            for name, size, mtime in entries:
                h.update(f"{name}:{size}:{mtime}\n".encode())
            folders[key] = h.hexdigest()
            whole.update(f"{key}:{folders[key]}\n".encode())
            step = max(1, len(entries) // FINGERPRINT_SAMPLE)
            for name, size, mtime in entries[::step][:FINGERPRINT_SAMPLE]:
                sampled.update(f"{key}/{name}:{size}:{mtime}\n".encode())
            if content:
                data.update(f"{key}:{_content_sha256(folder, [n for n, _, _ in entries])}\n".encode())
    sampled.update(repr(sorted(counts.items())).encode())
    record = {"kind": "scan", "sha256": whole.hexdigest(), "files": counts, "folders": folders,
              "meta_sha256": meta_sha, "sampled_sha256": sampled.hexdigest()}
    if content:
        record["content_sha256"] = data.hexdigest()
    return record


def identity_difference(then: dict, now: dict) -> str | None:
    """How the data identity recorded for a run (``then``) differs from the data's ``now``
    (:func:`data_identity`), in words; None when they agree.

    Records of earlier versions are compared as they were made: ``kind: "meta"`` (a generated
    set: its ``meta.json`` alone) and ``kind: "files"`` (a sample of the files). A ``scan``
    record's content hash is compared when both have one (``--verify_data``).
    """
    kind = then.get("kind")
    if now.get("kind") == "missing":
        return None if kind == "missing" else "the data set folder is gone"
    counts_then, counts_now = then.get("files", {}), now.get("files", {})
    counted = [f"{k}: {counts_then.get(k, 0)} -> {counts_now.get(k, 0)} files"
               for k in sorted(set(counts_then) | set(counts_now)) if counts_then.get(k, 0) != counts_now.get(k, 0)]
    if kind == "meta":
        same = then.get("sha256") == now.get("meta_sha256")
        return None if same else "its meta.json differs (the set was regenerated with other settings)"
    if kind == "files":
        if then.get("sha256") == now.get("sampled_sha256"):
            return None
        return "; ".join(counted) or "files were replaced (sizes or modification times differ)"
    if kind == "scan":
        if then.get("sha256") != now.get("sha256"):
            edited = [k for k, v in then.get("folders", {}).items()
                      if counts_then.get(k) == counts_now.get(k) and now.get("folders", {}).get(k) != v]
            words = counted + [f"{k}: files replaced or edited (names, sizes or modification times differ)"
                               for k in edited]
            return "; ".join(words) or "files were replaced or edited"
        if then.get("content_sha256") and now.get("content_sha256") and \
                then["content_sha256"] != now["content_sha256"]:
            return "the files' contents differ (--verify_data), though names, sizes and modification times agree"
        return None
    return f"it was identified by {kind}, now by {now.get('kind')}"
