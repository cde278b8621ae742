"""The course grader, run locally, and the export of predictions in submission format.

A predictions folder holds, for every image ``i`` of a split::

    <dir>/semseg/<i>.png   class ids 0..18 (mode P with the Cityscapes palette, or mode L)
    <dir>/depth/<i>.png    quantised disparity codes (mode L, see cvaia.data.encoding)

:func:`score_predictions` grades such a folder against a split's ground truth with the
grader's semantics (:mod:`cvaia.metrics`); :func:`export_predictions` writes one from a model;
:func:`pack_submission` packs one as the archive the course grader takes (a zip holding
``semseg/<i>.png`` and ``depth/<i>.png``).
``python -m cvaia score --dataset_root ROOT --split val --predictions DIR [--json]`` prints it.

Only the task folders that exist in the predictions are scored; a missing task's part of the
multitask score counts 0 (the result says so in ``notes``).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data.classes import NUM_CLASSES, class_names
from .data.encoding import decode_depth, normalize_rgb, write_depth_png, write_semseg_png
from .data.miniscapes import MiniscapesSplit
from .metrics import (
    ConfusionMatrix,
    DepthMetrics,
    grader_score,
    miou,
    per_class_iou,
    pixel_accuracy,
)

TASKS = ("semseg", "depth")
#: How many offending file names an error message lists before "... and N more".
_SHOW = 5
#: Forward passes run on inputs padded to a multiple of this (the encoder's output stride).
PAD_MULTIPLE = 32


class GraderError(ValueError):
    """A predictions folder is incomplete, has extra or mis-sized files, or holds bad values."""


def _listing(names: list[str]) -> str:
    shown = ", ".join(names[:_SHOW])
    more = f" ... and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return f"{len(names)} file(s): {shown}{more}"


def _read_png(path: Path, modes: tuple[str, ...], what: str) -> np.ndarray:
    """A uint8 array from an 8-bit PNG whose mode is one of ``modes``."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode not in modes:
                raise GraderError(f"{path}: {what} must be a mode {' or '.join(modes)} PNG, got mode {img.mode}")
            img.load()
            arr = np.array(img)  # a writable copy (torch.from_numpy warns on read-only arrays)
    except GraderError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError... for broken files
        raise GraderError(f"{path}: cannot read the {what} image ({type(e).__name__}: {e})") from None
    if arr.dtype != np.uint8:
        raise GraderError(f"{path}: {what} must hold 8-bit values, got {arr.dtype}")
    return arr


def _png_size(path: Path) -> tuple[int, int]:
    """(W, H) from the PNG header only."""
    from PIL import Image

    try:
        with Image.open(path) as img:
            return img.size
    except Exception as e:
        raise GraderError(f"{path}: cannot read the image ({type(e).__name__}: {e})") from None


def _not_regular(path: Path) -> str | None:
    """What ``path`` is when it is no regular file (a symlink to one counts as one), else None."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        return f"unreadable: {exc.strerror}"
    if stat.S_ISREG(mode):
        return None
    kinds = {stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a device node",
             stat.S_ISBLK: "a device node", stat.S_ISDIR: "a folder"}
    return next((name for test, name in kinds.items() if test(mode)), "not a regular file")


def _check_prediction_files(pred_task_dir: Path, gt: MiniscapesSplit, task: str) -> None:
    """Every ground-truth index has ``<i>.png`` of the right size, and nothing else is there."""
    expected = {f"{i}.png" for i in range(len(gt))}
    present = {e.name for e in os.scandir(pred_task_dir) if not e.name.startswith(".")}

    def by_index(name: str):
        stem = name[:-4] if name.endswith(".png") else name
        return (0, int(stem), name) if stem.isascii() and stem.isdigit() else (1, 0, name)

    missing = sorted(expected - present, key=by_index)
    extra = sorted(present - expected, key=by_index)
    problems = []
    if missing:
        problems.append(f"missing {_listing(missing)}")
    if extra:
        problems.append(f"unexpected {_listing(extra)}")
    if problems:
        raise GraderError(f"{pred_task_dir}: expected exactly 0.png .. {len(gt) - 1}.png "
                          f"({len(gt)} images of {gt.dir}); " + "; ".join(problems))
    odd = []
    for i in range(len(gt)):
        kind = _not_regular(pred_task_dir / f"{i}.png")
        if kind:
            odd.append(f"{i}.png ({kind})")
    if odd:  # reading a FIFO would wait forever, a device node could be endless
        raise GraderError(f"{pred_task_dir}: predictions must be regular files; refused {_listing(odd)}")
    wrong = []
    for i in range(len(gt)):
        want = _png_size(gt.path(i, task))
        got = _png_size(pred_task_dir / f"{i}.png")
        if got != want:
            wrong.append(f"{i}.png ({got[0]}x{got[1]}, expected {want[0]}x{want[1]})")
    if wrong:
        raise GraderError(f"{pred_task_dir}: mis-sized {_listing(wrong)} (W x H must match the ground truth)")


def score_predictions(dataset_root: str | os.PathLike, split: str, pred_dir: str | os.PathLike,
                      progress: bool = False, workers: int | None = None) -> dict:
    """Grade ``pred_dir`` (``semseg/<i>.png``, ``depth/<i>.png``) against ``dataset_root/split``.

    Returns a dict with ``miou``, ``per_class_iou`` (list of 19), ``pixel_accuracy``,
    ``si_log_rmse``, ``abs_rel``, ``rmse``, ``delta1..3``, ``score`` (the grader's multitask
    score), ``num_images``, ``tasks_scored``, ``tasks_missing``, ``class_names`` and ``notes``.
    Metrics of a task that has no predictions folder are ``None`` and contribute 0 to
    ``score``. Raises :class:`GraderError` for missing, extra, mis-sized or invalid prediction
    files (listing the first few and their count) and
    :class:`cvaia.data.miniscapes.DatasetError` for a bad data set. ``workers`` threads decode
    the PNGs (default: up to 8).
    """
    pred_dir = Path(pred_dir)
    if not pred_dir.is_dir():
        raise GraderError(f"{pred_dir}: predictions folder not found (expected semseg/ and/or depth/ inside)")
    gt = MiniscapesSplit(dataset_root, split)
    tasks = tuple(t for t in TASKS if (pred_dir / t).is_dir())
    if not tasks:
        raise GraderError(f"{pred_dir}: no semseg/ or depth/ folder with predictions inside")
    for t in tasks:
        if not (gt.has_semseg if t == "semseg" else gt.has_depth):
            raise GraderError(f"{gt.dir}: split {split!r} has no {t} ground truth to score "
                              f"{pred_dir / t} against (the test split is graded by the course server)")
        _check_prediction_files(pred_dir / t, gt, t)

    def load(i: int) -> dict[str, tuple[np.ndarray, np.ndarray]]:
        pair = {}
        if "semseg" in tasks:
            path = pred_dir / "semseg" / f"{i}.png"
            pred = _read_png(path, ("P", "L"), "semseg prediction")
            if pred.max(initial=0) >= NUM_CLASSES:
                bad = np.unique(pred[pred >= NUM_CLASSES])
                raise GraderError(f"{path}: semseg predictions must be class ids 0..{NUM_CLASSES - 1}, "
                                  f"found {bad[:_SHOW].tolist()}")
            pair["semseg"] = (pred, _read_png(gt.path(i, "semseg"), ("P", "L"), "semseg ground truth"))
        if "depth" in tasks:
            pred = decode_depth(_read_png(pred_dir / "depth" / f"{i}.png", ("L",), "depth prediction"))
            pair["depth"] = (pred, decode_depth(_read_png(gt.path(i, "depth"), ("L",), "depth ground truth")))
        return pair

    cm = ConfusionMatrix(NUM_CLASSES, device="cpu")
    dm = DepthMetrics(device="cpu")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(gt), desc=f"scoring {split}", unit="img")
    # PNG decoding runs in a thread pool (PIL releases the GIL), a chunk at a time so that
    # memory stays bounded; the metric updates run here, in index order.
    workers = max(1, min(8, os.cpu_count() or 1) if workers is None else workers)
    chunk = 4 * workers
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for start in range(0, len(gt), chunk):
            for pair in pool.map(load, range(start, min(start + chunk, len(gt)))):
                if "semseg" in pair:
                    cm.update(*(torch.from_numpy(a) for a in pair["semseg"]))
                if "depth" in pair:
                    dm.update(*(torch.from_numpy(a)[None] for a in pair["depth"]))
                if bar is not None:
                    bar.update(1)
    if bar is not None:
        bar.close()

    out: dict = {"split": split, "num_images": len(gt), "tasks_scored": list(tasks),
                 "tasks_missing": [t for t in TASKS if t not in tasks], "class_names": list(class_names())}
    if "semseg" in tasks:
        out.update(miou=miou(cm), per_class_iou=per_class_iou(cm).tolist(), pixel_accuracy=pixel_accuracy(cm))
    else:
        out.update(miou=None, per_class_iou=None, pixel_accuracy=None)
    keys = ("si_log_rmse", "abs_rel", "rmse", "delta1", "delta2", "delta3")
    if "depth" in tasks:
        d = dm.compute()
        out.update({k: d[k] for k in keys})
        out["num_depth_images"] = d["num_valid_images"]
    else:
        out.update({k: None for k in keys})
    # NaN (e.g. a depth ground truth without any valid pixel) → None, so --json stays valid JSON.
    out = {k: (None if isinstance(v, float) and v != v else v) for k, v in out.items()}
    out["score"] = grader_score(out["miou"], out["si_log_rmse"])
    out["notes"] = [f"no {t}/ predictions: its part of the score counts 0" for t in out["tasks_missing"]]
    return out


def format_scores(result: dict) -> str:
    """A human-readable table of a :func:`score_predictions` result."""
    lines = [f"split {result['split']}: {result['num_images']} images, tasks scored: "
             f"{', '.join(result['tasks_scored'])}"]
    if result.get("per_class_iou") is not None:
        lines.append("")
        lines.append(f"{'class':<16}{'IoU':>8}")
        for name, iou in zip(result["class_names"], result["per_class_iou"], strict=True):
            lines.append(f"{name:<16}{iou:8.2f}")
    lines.append("")

    def row(label, key, fmt):
        v = result.get(key)
        lines.append(f"{label:<22}{'—' if v is None else format(v, fmt):>10}")

    row("mIoU", "miou", ".2f")
    row("pixel accuracy (%)", "pixel_accuracy", ".2f")
    row("SI-logRMSE", "si_log_rmse", ".2f")
    row("abs rel", "abs_rel", ".4f")
    row("RMSE (m)", "rmse", ".3f")
    row("delta < 1.25", "delta1", ".4f")
    row("delta < 1.25^2", "delta2", ".4f")
    row("delta < 1.25^3", "delta3", ".4f")
    row("grader score", "score", ".2f")
    for note in result.get("notes", []):
        lines.append(f"note: {note}")
    return "\n".join(lines)


# ---- export --------------------------------------------------------------------------------
def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as img:
            if img.mode != "RGB":
                raise GraderError(f"{path}: rgb must be a mode RGB image, got mode {img.mode}")
            return np.asarray(img.convert("RGB"))
    except GraderError:
        raise
    except Exception as e:
        raise GraderError(f"{path}: cannot read the rgb image ({type(e).__name__}: {e})") from None


def _forward_padded(model, x: torch.Tensor, tasks: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """Run ``model`` on ``x`` padded (replicate, bottom/right) to multiples of 32; crop back."""
    h, w = x.shape[-2:]
    ph, pw = (-h) % PAD_MULTIPLE, (-w) % PAD_MULTIPLE
    xp = F.pad(x, (0, pw, 0, ph), mode="replicate") if (ph or pw) else x
    out = model(xp)
    if not isinstance(out, dict):
        raise GraderError(f"export_predictions: the model must return a dict of task outputs, got {type(out).__name__}")
    result = {}
    for t in tasks:
        if t not in out:
            raise GraderError(f"export_predictions: model.tasks lists {t!r} but its output has only {sorted(out)}")
        y = out[t]
        if y.shape[-2:] != xp.shape[-2:]:
            raise GraderError(f"export_predictions: {t} output is {tuple(y.shape[-2:])} for an input of "
                              f"{tuple(xp.shape[-2:])}; outputs must have the input's size")
        result[t] = y[..., :h, :w]
    return result


def _predict(model, x: torch.Tensor, tasks, tta_flip: bool) -> dict[str, torch.Tensor]:
    """Class ids (B×H×W) and depth (B×H×W metres); with ``tta_flip`` averaged with the mirror image."""
    out = _forward_padded(model, x, tasks)
    probs = out["semseg"].float().softmax(1) if "semseg" in out else None
    depth = out["depth"].float() if "depth" in out else None
    if tta_flip:
        flipped = _forward_padded(model, x.flip(-1), tasks)
        if probs is not None:
            probs = 0.5 * (probs + flipped["semseg"].float().softmax(1).flip(-1))
        if depth is not None:
            depth = 0.5 * (depth + flipped["depth"].float().flip(-1))
    result = {}
    if probs is not None:
        result["semseg"] = probs.argmax(1)
    if depth is not None:
        result["depth"] = depth[:, 0] if depth.dim() == 4 else depth
    return result


def _has_predictions(folder: Path) -> bool:
    return folder.is_dir() and any(not e.name.startswith(".") for e in os.scandir(folder))


def _is_prediction_file(entry: os.DirEntry) -> bool:
    return entry.name.endswith(".png") and entry.name[:-4].isdigit() and entry.is_file()


#: The lock file inside a predictions folder while :func:`export_predictions` writes it.
PREDICT_LOCK = ".predict.lock"
#: Prefix of the temporary sibling folder (inside ``out_dir``) a prediction is written into.
PARTIAL_PREFIX = ".partial-"


def _refuse_data_set(out_dir: Path) -> None:
    """Predictions never go into a data set (any miniscapes-format root or split): there,
    ``semseg/`` and ``depth/`` are its ground truth."""
    from .data.miniscapes import dataset_containing

    inside = dataset_containing(out_dir)
    if inside is None:
        return
    root, split = inside
    where = f"the {split} split of the data set {root}" if split else f"the data set {root}"
    raise GraderError(f"{out_dir}: is inside {where}, whose semseg/ and depth/ folders are ground truth; "
                      f"predictions are never written there (with or without --overwrite): choose an --out "
                      f"folder outside any data set")


def _lock_out_dir(out_dir: Path):
    """The lock of ``out_dir`` for one writer; a second one is refused at once, naming the first."""
    from .files import FileLock

    lock = FileLock(out_dir / PREDICT_LOCK, timeout=0)
    try:
        return lock.acquire()
    except TimeoutError:
        raise GraderError(f"{out_dir}: another predict ({lock.holder()}) is writing predictions into it now; "
                          f"wait until it is done, or choose another --out folder") from None


def _move_into_place(partial: Path, out_dir: Path, tasks: tuple[str, ...]) -> None:
    """Put the complete task folders of ``partial`` into ``out_dir``: each replaces the old one
    (files of the old folder that are no predictions move along); an old task folder the model
    does not predict loses its prediction files (and goes when left empty), so no stale task stays."""
    for t in TASKS:
        old, new = out_dir / t, partial / t
        if old.is_dir():
            others = [e for e in os.scandir(old) if not _is_prediction_file(e)]
            if t in tasks:
                for e in others:
                    os.replace(e.path, new / e.name)
                os.replace(old, partial / f"replaced-{t}")
            else:
                for e in os.scandir(old):
                    if _is_prediction_file(e):
                        os.unlink(e.path)
                if not others:
                    old.rmdir()  # an empty task folder would be graded as "all files missing"
        if t in tasks:
            os.replace(new, old)


def export_predictions(model, dataset_root: str | os.PathLike, split: str, out_dir: str | os.PathLike,
                       device="cpu", batch_size: int = 8, tta_flip: bool = False, progress: bool = False,
                       overwrite: bool = False) -> Path:
    """Write ``model``'s predictions for every image of a split in submission format.

    ``model.tasks`` names the tasks; ``model(x)`` returns ``{"semseg": B×19×H×W logits,
    "depth": B×1×H×W metres}``. Inputs are the full images, ImageNet-normalised; when H or
    W is not a multiple of 32 the input is padded at the bottom/right (replicating the edge
    pixels) for the forward pass and the outputs are cropped back, so every pixel gets a
    prediction. ``tta_flip`` averages with the horizontally mirrored image (semseg: softmax
    probabilities; depth: metres). The model is moved to ``device`` and run in eval mode (its
    training mode is restored afterwards).

    Writes ``out_dir/semseg/<i>.png`` (palette PNG) and ``out_dir/depth/<i>.png`` (disparity
    codes, predictions clamped to 4..300 m). An ``out_dir`` inside a data set (a split of any
    miniscapes-format root, or the root) is refused, ``overwrite`` or not. Refuses to write when
    ``out_dir/semseg`` or ``out_dir/depth`` already hold files, unless ``overwrite=True``. The
    predictions are written into a temporary folder (``out_dir/.partial-<pid>``) and moved into
    place once complete (:func:`_move_into_place`): a reader never sees a half-written or mixed
    set. One writer at a time (``out_dir/.predict.lock``): a second ``export_predictions`` into
    the same folder is refused at once. Returns ``out_dir``.
    """
    import shutil

    tasks = tuple(getattr(model, "tasks", ()) or ())
    if not tasks or any(t not in TASKS for t in tasks):
        raise GraderError(f"export_predictions: model.tasks must be a non-empty subset of {TASKS}, got {tasks!r}")
    if batch_size <= 0:
        raise GraderError(f"export_predictions: batch_size must be positive, got {batch_size}")
    out_dir = Path(out_dir).expanduser().absolute()
    _refuse_data_set(out_dir)
    data = MiniscapesSplit(dataset_root, split)
    blocker = next((p for p in [out_dir, *(out_dir / t for t in TASKS), *out_dir.parents]
                    if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise GraderError(f"{out_dir}: cannot hold the predictions: {blocker} is a file, not a folder; "
                          f"choose a folder (it is created if missing)")
    out_dir.mkdir(parents=True, exist_ok=True)
    lock = _lock_out_dir(out_dir)
    try:
        existing = [out_dir / t for t in TASKS if _has_predictions(out_dir / t)]
        if existing and not overwrite:
            raise GraderError(f"{out_dir}: already holds predictions in "
                              f"{', '.join(p.name + '/' for p in existing)}; choose another folder or pass "
                              "overwrite=True (--overwrite) to replace them")
        for e in os.scandir(out_dir):  # left by a killed writer (we hold the lock: none is running)
            if e.name.startswith(PARTIAL_PREFIX) and e.is_dir(follow_symlinks=False):
                shutil.rmtree(e.path, ignore_errors=True)
        partial = out_dir / f"{PARTIAL_PREFIX}{os.getpid()}"
        try:
            for t in tasks:
                (partial / t).mkdir(parents=True)
            _write_predictions(model, data, split, partial, tasks, device, batch_size, tta_flip, progress)
            _move_into_place(partial, out_dir, tasks)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    finally:
        lock.release()
    return out_dir


def _write_predictions(model, data: MiniscapesSplit, split: str, out_dir: Path, tasks, device, batch_size: int,
                       tta_flip: bool, progress: bool) -> None:
    """The prediction files of every image of ``data`` into ``out_dir/<task>/``."""
    device = torch.device(device)
    was_training = model.training
    model.to(device).eval()
    batches = [list(range(s, min(s + batch_size, len(data)))) for s in range(0, len(data), batch_size)]
    if progress:
        from tqdm.auto import tqdm

        batches = tqdm(batches, desc=f"predicting {split}", unit="batch")
    try:
        with torch.inference_mode():
            for batch in batches:
                images = [_read_rgb(data.path(i, "rgb")) for i in batch]
                # Group consecutive images of one size (a split normally has a single size).
                start = 0
                while start < len(batch):
                    end = start + 1
                    while end < len(batch) and images[end].shape == images[start].shape:
                        end += 1
                    rgb = torch.from_numpy(np.stack(images[start:end])).permute(0, 3, 1, 2).to(device)
                    pred = _predict(model, normalize_rgb(rgb), tasks, tta_flip)
                    for j, i in enumerate(batch[start:end]):
                        if "semseg" in pred:
                            write_semseg_png(out_dir / "semseg" / f"{i}.png",
                                             pred["semseg"][j].to(torch.uint8).cpu().numpy())
                        if "depth" in pred:
                            write_depth_png(out_dir / "depth" / f"{i}.png", pred["depth"][j].cpu().numpy(),
                                            policy="clamp")
                    start = end
    finally:
        model.train(was_training)


def pack_submission(pred_dir: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """Pack a predictions folder (:func:`export_predictions`) as the grader's archive: a zip
    of ``semseg/<i>.png`` and ``depth/<i>.png`` (the task folders present), written atomically.
    Returns ``archive``."""
    import zipfile

    from .files import atomic_open

    pred_dir, archive = Path(pred_dir), Path(archive)
    tasks = [t for t in TASKS if _has_predictions(pred_dir / t)]
    if not tasks:
        raise GraderError(f"{pred_dir}: no predictions to pack (expected semseg/<i>.png and/or depth/<i>.png)")
    with atomic_open(archive) as fh, zipfile.ZipFile(fh, "w", zipfile.ZIP_STORED) as z:
        for t in tasks:
            names = sorted((e.name for e in os.scandir(pred_dir / t) if e.name.endswith(".png")),
                           key=lambda n: int(n[:-4]) if n[:-4].isdigit() else -1)
            for name in names:
                z.write(pred_dir / t / name, f"{t}/{name}")
    return archive
