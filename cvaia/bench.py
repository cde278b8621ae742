"""Training throughput and peak memory: the course template's path vs cvaia's fast path.

For each model, two *arms* train for a few steps on the same device and data:

``reference`` — as the course template does it: fp32, NCHW, a ``DataLoader`` whose workers
decode every sample with PIL and apply per-sample torchvision transforms
(:class:`cvaia.data.reference.ReferenceDataset`), the explicit softmax(QKᵀ/√d)V attention,
``loss.item()`` after every step.

``fast`` — cvaia's path with the settings ``cvaia train`` uses by default: decoded uint8
tensors preloaded once (on the GPU when there is one), crops/flips/normalisation batched on the
device (:class:`cvaia.data.augment.BatchAugment`), ``F.scaled_dot_product_attention``, the
trainer's optimizer (fused Adam on CUDA) and, on CUDA, the trainer's precision (``auto``: bf16
where supported, else fp16 with a gradient scaler) and memory format; no host synchronisation
inside the step loop.

Each arm runs in its own subprocess so that its peak memory is its own: on CUDA the largest
memory allocated during the timed steps *less the preloaded data set* (the fast arm holds it
on the GPU, the reference arm on the host; ``data_memory_mb`` reports it), elsewhere the peak
RSS of the process and its DataLoader workers. ``--device cuda:N`` measures, names and reads
the memory of GPU N. Results: images/s and peak memory per arm and the fast/reference ratio.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

BENCH_MODELS = ("deeplabv3p", "deeplabv3p_multitask", "adaptive_depth", "transformer_multitask")
ARMS = ("reference", "fast")


@dataclass
class BenchSettings:
    """What one benchmark run measures (shared by both arms)."""

    size: int = 128            # square training crop
    batch_size: int = 8
    steps: int = 6             # timed steps
    warmup: int = 2            # untimed steps first (allocator, cudnn autotune, compile)
    device: str = "auto"
    workers: int = 2           # reference DataLoader workers
    compile: bool = False      # torch.compile in the fast arm
    images: int = 64           # training images in the bench data set
    dataset_root: str = ""     # default: a synthetic set sized for `size`, built once


def resolve_device(device: str) -> str:
    """"auto" → cuda when available, else cpu."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def bench_config(model_name: str, arm: str, s: BenchSettings, device: str):
    """The training config of one arm (course defaults; Adam; both tasks the model supports)."""
    from .config import make_config

    tasks = "depth" if model_name == "adaptive_depth" else "semseg,depth"
    common = dict(model_name=model_name, tasks=tasks, optimizer="adam", optimizer_lr=1e-4,
                  batch_size=s.batch_size, aug_input_crop_size=s.size, aug_geom_reflect=True,
                  device=device, workers=s.workers, quiet=True)
    if arm == "fast":  # precision and memory format: what `cvaia train` uses by default
        return make_config(attention_impl="fast", compile=s.compile, **common)
    return make_config(attention_impl="explicit", precision="fp32", channels_last=False, **common)


def arm_precision(cfg, device: str):
    """``(autocast dtype or None, channels_last)`` of an arm on ``device``, as the trainer does."""
    import torch

    from .train import autocast_dtype

    dev = torch.device(device)
    return autocast_dtype(cfg, dev), bool(cfg.channels_last) and dev.type == "cuda"


def cuda_device_name(device: str) -> str:
    """The name of the GPU ``device`` names (``cuda:N``: GPU N, not the current one)."""
    import torch

    return torch.cuda.get_device_name(torch.device(device))


def cuda_step_memory(device: str, resident_bytes: int) -> dict:
    """Memory readings of the timed steps on ``device``: peak allocated less ``resident_bytes``
    (the preloaded data), and the data themselves."""
    import torch

    peak = torch.cuda.max_memory_allocated(torch.device(device))
    return {"peak_memory_mb": (peak - resident_bytes) / 2**20, "data_memory_mb": resident_bytes / 2**20,
            "memory_kind": "cuda max allocated during the timed steps, less the data set preloaded on the GPU"}


def bench_dataset(s: BenchSettings) -> Path:
    """The data set both arms read: ``s.dataset_root`` or a synthetic set sized for the crop."""
    from . import paths

    if s.dataset_root:
        return paths.resolve_dataset_root(s.dataset_root)
    from .data.synth import generate

    h, w = s.size, 2 * s.size
    root = paths.data_dir() / f"bench_{h}x{w}_{s.images}"
    generate(root, height=h, width=w, n_train=s.images, n_val=0, n_test=0, seed=1234)
    return root


def _peak_rss_parts_mb() -> tuple[float, float]:
    """(this process's peak RSS, the largest peak RSS of any one finished child), MiB.

    ``getrusage(RUSAGE_CHILDREN).ru_maxrss`` is the peak of the *largest* child, not a sum over
    the children (Linux reports KiB).
    """
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return own / 1024.0, kids / 1024.0


def _peak_rss_mb() -> float:
    """The larger of this process's peak RSS and its largest finished child's, MiB."""
    return max(_peak_rss_parts_mb())


def _reference_batches(cfg, root: Path, device: str):
    """Endless batches from a DataLoader of per-sample PIL decoding + transforms."""
    import torch

    from .data.reference import ReferenceDataset

    ds = ReferenceDataset(root, "train", cfg, train=True)
    g = torch.Generator().manual_seed(cfg.seed)
    loader = torch.utils.data.DataLoader(
        ds, batch_size=cfg.batch_size, shuffle=True, drop_last=True, generator=g,
        num_workers=cfg.workers, persistent_workers=cfg.workers > 0,
        pin_memory=device.startswith("cuda"))
    while True:
        for rgb, semseg, depth in loader:
            yield (rgb.to(device, non_blocking=True), semseg.to(device, non_blocking=True),
                   depth.to(device, non_blocking=True))


def _fast_batches(cfg, root: Path, device: str):
    """``(endless batches from preloaded uint8 tensors augmented on the device, bytes of the
    data on the device)``."""
    import torch

    from .data.augment import BatchAugment
    from .data.encoding import depth_lut
    from .data.miniscapes import load_split_tensors

    t = load_split_tensors(root, "train")
    on_gpu = device.startswith("cuda")
    rgb = t.rgb.to(device) if on_gpu else t.rgb
    semseg = t.semseg.to(device) if on_gpu else t.semseg
    codes = t.depth_codes.to(device) if on_gpu else t.depth_codes
    resident = sum(x.numel() * x.element_size() for x in (rgb, semseg, codes)) if on_gpu else 0
    lut = torch.from_numpy(depth_lut()).to(device)
    aug = BatchAugment.from_config(cfg)
    g = torch.Generator(device=device).manual_seed(cfg.seed)
    n, b = rgb.shape[0], cfg.batch_size

    def batches():
        while True:
            perm = torch.randperm(n, generator=g, device=device)
            for i in range(0, n - b + 1, b):
                idx = perm[i:i + b]
                x, y, d = aug(rgb[idx].to(device, non_blocking=True), semseg[idx].to(device, non_blocking=True),
                              lut[codes[idx].to(device, non_blocking=True).long()], generator=g)
                yield x, y, d

    return batches(), resident


def run_arm(model_name: str, arm: str, s: BenchSettings) -> dict:
    """Train ``s.warmup + s.steps`` steps of one arm in this process; return its measurements.

    ``cudnn.benchmark`` as each arm's training sets it: on for the fast arm (like
    :func:`cvaia.train.train` on CUDA: cuDNN times its kernels during the warm-up steps), off
    (PyTorch's default) for the reference arm; the caller's setting is restored afterwards."""
    import torch

    before = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = arm == "fast"
    try:
        return _run_arm(model_name, arm, s)
    finally:
        torch.backends.cudnn.benchmark = before


def _run_arm(model_name: str, arm: str, s: BenchSettings) -> dict:
    import torch

    from .devices import synchronize
    from .losses import MultiTaskLoss
    from .models import build_model

    device = resolve_device(s.device)
    cfg = bench_config(model_name, arm, s, device)
    cuda = device.startswith("cuda")
    if cuda:
        torch.cuda.set_device(torch.device(device))  # cuda:N: allocations and readings on GPU N
    torch.manual_seed(cfg.seed)
    root = bench_dataset(s)
    model = build_model(cfg).to(device)
    criterion = MultiTaskLoss.from_config(cfg).to(device)
    amp_dtype, channels_last = arm_precision(cfg, device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    if arm == "fast":  # the trainer's optimizer (fused on CUDA, multi-tensor elsewhere)
        from .optim import build_optimizer

        opt = build_optimizer(cfg, model, criterion, torch.device(device))
    else:  # the template's plain Adam
        params = list(model.parameters()) + list(criterion.parameters())
        opt = torch.optim.Adam(params, lr=cfg.optimizer_lr, weight_decay=cfg.optimizer_weight_decay)
    step_model = torch.compile(model) if cfg.compile else model
    if arm == "fast":
        batches, resident = _fast_batches(cfg, root, device)
    else:
        batches, resident = _reference_batches(cfg, root, device), 0
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    model.train()

    def step():
        x, y, d = next(batches)
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        targets = {"semseg": y, "depth": d}
        with torch.autocast(device_type="cuda", dtype=amp_dtype, enabled=amp_dtype is not None):
            out = step_model(x)
        loss, _ = criterion({k: v.float() for k, v in out.items()}, targets)  # as the trainer does
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        if arm == "reference":
            loss.item()  # the template logs every step: a host sync per step
        return loss

    for _ in range(s.warmup):
        step()
    synchronize(device)
    if cuda:
        torch.cuda.reset_peak_memory_stats(torch.device(device))
    t0 = time.perf_counter()
    for _ in range(s.steps):
        last = step()
    synchronize(device)
    elapsed = time.perf_counter() - t0
    result = {
        "model": model_name, "arm": arm, "device": device,
        "device_name": cuda_device_name(device) if cuda else "cpu",
        "images_per_s": s.steps * s.batch_size / elapsed,
        "step_ms": 1000 * elapsed / s.steps,
        "final_loss": float(last.detach()),
        "size": s.size, "batch_size": s.batch_size, "steps": s.steps,
        "precision": {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(amp_dtype, "fp32"),
        "channels_last": channels_last,
        "attention": cfg.attention_impl, "threads": torch.get_num_threads(),
        "cudnn_benchmark": torch.backends.cudnn.benchmark,  # in effect during the timed steps
    }
    if cuda:
        result.update(cuda_step_memory(device, resident))
    else:
        del batches  # ends DataLoader workers so their peak RSS is counted
        import gc

        gc.collect()
        own, largest_worker = _peak_rss_parts_mb()
        result["peak_memory_mb"] = max(own, largest_worker)
        result["peak_rss_process_mb"] = own
        result["peak_rss_largest_worker_mb"] = largest_worker
        # Not "process + workers": the kernel reports the largest child's peak, not a sum, and
        # peaks of separate processes (sharing copy-on-write pages) do not add up anyway.
        result["memory_kind"] = "peak RSS (the larger of the main process and its largest DataLoader worker)"
    return result


def run_arm_subprocess(model_name: str, arm: str, s: BenchSettings, timeout: float = 1800) -> dict:
    """:func:`run_arm` in a fresh Python process (isolated peak memory)."""
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        cmd = [sys.executable, "-m", "cvaia", "bench", "--_arm", arm, "--models", model_name,
               "--size", str(s.size), "--batch_size", str(s.batch_size), "--steps", str(s.steps),
               "--warmup", str(s.warmup), "--device", s.device, "--workers", str(s.workers),
               "--images", str(s.images), "--_out", out.name]
        if s.compile:
            cmd.append("--compile")
        if s.dataset_root:
            cmd += ["--dataset_root", s.dataset_root]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"bench arm {arm} of {model_name} failed:\n{proc.stderr[-3000:]}")
        return json.loads(Path(out.name).read_text())


def run_bench(models=BENCH_MODELS, settings: BenchSettings | None = None, isolate: bool = True,
              log=print) -> list[dict]:
    """Both arms of each model; returns one row per model with both arms and the ratio."""
    s = settings or BenchSettings()
    bench_dataset(s)  # build once, before the arms (not timed)
    rows = []
    for name in models:
        arms = {}
        for arm in ARMS:
            arms[arm] = run_arm_subprocess(name, arm, s) if isolate else run_arm(name, arm, s)
            log(f"  {name:<24} {arm:<9} {arms[arm]['images_per_s']:8.1f} img/s  "
                f"{arms[arm]['peak_memory_mb']:8.0f} MiB")
        ref, fast = arms["reference"], arms["fast"]
        rows.append({
            "model": name, "device": fast["device_name"], "size": s.size, "batch_size": s.batch_size,
            "reference_img_s": ref["images_per_s"], "fast_img_s": fast["images_per_s"],
            "speedup": fast["images_per_s"] / ref["images_per_s"],
            "reference_peak_mb": ref["peak_memory_mb"], "fast_peak_mb": fast["peak_memory_mb"],
            "memory_kind": fast["memory_kind"], "arms": arms,
        })
    return rows


def format_table(rows: list[dict]) -> str:
    """Markdown table of :func:`run_bench` rows."""
    head = ("| model | device | crop | batch | reference img/s | fast img/s | fast/ref | "
            "reference peak MiB | fast peak MiB |")
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['model']} | {r['device']} | {r['size']}² | {r['batch_size']} | "
                     f"{r['reference_img_s']:.1f} | {r['fast_img_s']:.1f} | {r['speedup']:.2f}× | "
                     f"{r['reference_peak_mb']:.0f} | {r['fast_peak_mb']:.0f} |")
    if rows:
        lines.append(f"\nMemory: {rows[0]['memory_kind']}.")
    return "\n".join(lines)


def default_settings(device: str) -> BenchSettings:
    """CPU: 128² crops, batch 8; CUDA: the issue's 256² crops, batch 32."""
    if resolve_device(device).startswith("cuda"):
        return BenchSettings(size=256, batch_size=32, steps=30, warmup=10, device=device,
                             workers=8, images=512)
    return BenchSettings(device=device, workers=min(2, os.cpu_count() or 1))


# ---- the workbook's machine probe -------------------------------------------------------------
#: What :func:`machine_probe` times, in words (recorded next to its value).
PROBE_WHAT = ("median wall time of one training step (forward, SILog + cross-entropy loss, backward, "
              "Adam) of the quick recipe's joint model (notebook 03's joint DeepLabV3+ at the quick "
              "profile's batch and crop, random inputs)")


def probe_config(device: str = "cpu"):
    """The config :func:`machine_probe` trains: notebook 03's joint model on its quick profile."""
    from .experiments import p03

    return p03.joint_config({**p03.PROFILES["quick"], "DEVICE": device})


def machine_probe(steps: int = 5, warmup: int = 1, device: str = "cpu", max_s: float = 8.0) -> dict:
    """Time ``steps`` training steps (after ``warmup`` untimed ones) of :func:`probe_config`
    in this process, on random inputs, with torch's current CPU threads. Timing stops early once
    the timed steps took ``max_s`` seconds (after at least two), so a loaded machine does not
    make the probe itself long; ``probe_steps`` records how many were timed.

    Returns ``{"probe_s": median seconds per step, "probe_what", "probe_steps", "torch_threads",
    "batch_size", "crop", "model", "device"}``: the workbook's unit of time, so that a budget and an
    estimate travel between machines of the same kind that differ in speed (≤ ~10 s on 2 cores)."""
    import statistics

    import torch

    from .devices import synchronize
    from .losses import MultiTaskLoss
    from .models import build_model
    from .optim import build_optimizer

    device = resolve_device(device)
    cfg = probe_config(device)
    dev = torch.device(device)
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    model = build_model(cfg).to(dev).train()
    criterion = MultiTaskLoss.from_config(cfg).to(dev)
    opt = build_optimizer(cfg, model, criterion, dev)
    b, c = cfg.batch_size, cfg.aug_input_crop_size
    x = torch.randn(b, 3, c, c, generator=g).to(dev)
    targets = {"semseg": torch.randint(0, 19, (b, c, c), generator=g).to(dev),
               "depth": (4.0 + 60.0 * torch.rand(b, c, c, generator=g)).to(dev)}
    times = []
    for i in range(warmup + steps):
        synchronize(device)
        t0 = time.perf_counter()
        loss, _ = criterion({k: v.float() for k, v in model(x).items()}, targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        synchronize(device)
        if i >= warmup:
            times.append(time.perf_counter() - t0)
            if len(times) >= 2 and sum(times) >= max_s:
                break
    return {"probe_s": statistics.median(times), "probe_what": PROBE_WHAT, "probe_steps": len(times),
            "torch_threads": torch.get_num_threads(), "batch_size": b, "crop": c,
            "model": cfg.model_name, "device": device}
