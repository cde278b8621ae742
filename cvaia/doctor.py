"""``cvaia doctor``: exercise every CUDA code path once, the first time a GPU is at hand.

The test suite runs without a GPU (CUDA paths are checked there with fake CUDA tensors, see
``tests/test_cuda_fake.py``); this is the real thing, in a few minutes on one GPU. Each check
trains, predicts or measures something small with cvaia's own code, in a temporary work
folder (never the user's run store), and ends ``PASS``, ``FAIL`` (with the reason) or ``SKIP``
(with what it needs):

================  ====  ==========================================================================
check             CPU   what it does
================  ====  ==========================================================================
environment       yes   versions, device, compute capability, bf16 support, cuDNN, NVML
data              yes   a small synthetic data set in the work folder
train/<model>/…   yes   a few training steps of every model through :func:`cvaia.train.train`:
                        CPU fp32; GPU bf16 (where supported) and fp16 + GradScaler + gradient
                        clipping; finite losses, the precision and device the run records
compile           GPU   ``torch.compile`` of one model, a few bf16 steps
resume            yes   a run stopped after its first epoch (its checkpoint written) resumes at
                        the right step and ends like an uninterrupted run: bitwise on a CPU; on a
                        GPU within :data:`RESUME_NOISE_FACTOR` x the difference between two
                        uninterrupted runs (cuDNN autotuning, atomics: the measured noise), else FAIL
loader            yes   a run through the DataLoader path with 2 worker processes (pinned host
                        memory on CUDA): every batch of every epoch arrives, losses finite
predict_tta       yes   submission files of a trained run with flip TTA, graded
memory            GPU   peak memory of a run vs the device's total; free-memory accounting
pinned            GPU   batches through the pinned staging buffers equal direct indexing
power             GPU   NVML board power of the GPU torch uses (UUIDs must match), a reading > 0 W
bench             yes   a short reference vs fast benchmark of one model (:mod:`cvaia.bench`)
ddp               2 GPU ``torchrun`` with 2 processes (nccl) trains a run
================  ====  ==========================================================================

:func:`run_doctor` returns a :class:`DoctorReport` (``to_dict()`` is the JSON file the command
writes); progress goes to the ``log`` callback.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

PASS, FAIL, SKIP = "PASS", "FAIL", "SKIP"
DOCTOR_MODELS = ("deeplabv3p", "deeplabv3p_multitask", "adaptive_depth", "transformer_multitask",
                 "cross_attention_multitask")
#: the checks that need a GPU, with what they need (listed as SKIP on a CPU)
GPU_CHECKS = {
    "train/<model>/bf16": "a CUDA GPU with bf16 (compute capability >= 8.0)",
    "train/<model>/fp16": "a CUDA GPU (fp16 autocast + GradScaler)",
    "compile": "a CUDA GPU (torch.compile of the training step)",
    "memory": "a CUDA GPU (torch.cuda memory statistics)",
    "pinned": "a CUDA GPU (pinned host memory, host-to-device copies)",
    "power": "a CUDA GPU with NVML (nvidia-ml-py)",
    "ddp": "2 or more CUDA GPUs (torchrun, nccl)",
}


#: On a GPU, a resumed run may differ from an uninterrupted one by at most this many times the
#: difference between two uninterrupted runs (+ RESUME_FLOOR): nondeterministic kernels make two
#: identical runs differ; a resume that restores the wrong RNG, data order or optimizer state
#: differs by far more (the CPU, where the noise is 0, asks for bitwise equality).
RESUME_NOISE_FACTOR = 10.0
RESUME_FLOOR = 1e-6


def resume_verdict(resumed_diff: float, noise: float, cuda: bool) -> tuple[bool, float]:
    """``(ok, tolerance)``: a resumed run's largest weight difference from an uninterrupted run
    against the tolerance (0 on a CPU; on a GPU :data:`RESUME_NOISE_FACTOR` x ``noise``, the
    largest weight difference between two uninterrupted runs, + :data:`RESUME_FLOOR`)."""
    tol = RESUME_NOISE_FACTOR * noise + RESUME_FLOOR if cuda else 0.0
    return resumed_diff <= tol, tol


class CheckFailed(RuntimeError):
    """A check found something wrong (its message is the reason)."""


@dataclass
class DoctorSettings:
    """Sizes of the doctor's runs (small: the point is to run every path, not to learn)."""

    device: str = "auto"
    size: int = 64                # training crop; the data set's images are size x 2*size
    batch_size: int = 4
    steps: int = 2                # training steps per epoch of each run
    val_images: int = 4
    models: tuple = DOCTOR_MODELS
    bench_steps: int = 2
    workdir: str = ""             # default: a temporary folder, removed afterwards
    keep: bool = False            # keep the work folder

    @classmethod
    def for_device(cls, device: str) -> "DoctorSettings":
        """Defaults: 64² crops, batch 4 on a CPU; 128² crops, batch 8, 4 steps on a GPU."""
        if _is_cuda(device):
            return cls(device=device, size=128, batch_size=8, steps=4, val_images=8, bench_steps=10)
        return cls(device=device)


@dataclass
class CheckResult:
    name: str
    status: str
    seconds: float = 0.0
    detail: str = ""
    data: dict = field(default_factory=dict)


@dataclass
class DoctorReport:
    device: str
    environment: dict
    settings: dict
    checks: list[CheckResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return all(c.status != FAIL for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {s: sum(c.status == s for c in self.checks) for s in (PASS, FAIL, SKIP)}

    def to_dict(self) -> dict:
        return {"device": self.device, "ok": self.ok, "counts": self.counts(), "seconds": self.seconds,
                "environment": self.environment, "settings": self.settings,
                "checks": [asdict(c) for c in self.checks]}

    def write_json(self, path: str | os.PathLike) -> Path:
        from .files import atomic_write_json

        atomic_write_json(path, self.to_dict())
        return Path(path)

    def format(self) -> str:
        """The printed report: one line per check, then the totals."""
        lines = []
        for c in self.checks:
            lines.append(f"{c.status:<5} {c.name:<34} {c.seconds:6.1f} s  {c.detail}".rstrip())
        n = self.counts()
        lines.append(f"\n{n[PASS]} passed, {n[FAIL]} failed, {n[SKIP]} skipped in {self.seconds:.0f} s on {self.device}")
        skipped = [c for c in self.checks if c.status == SKIP]
        if skipped and not _is_cuda(self.device):
            lines.append("GPU checks not run here (run `python -m cvaia doctor` on a GPU machine): "
                         + ", ".join(c.name for c in skipped))
        return "\n".join(lines)


def _is_cuda(device: str) -> bool:
    import torch

    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


# ---- the checks ---------------------------------------------------------------------------------
class _Doctor:
    def __init__(self, s: DoctorSettings, work: Path, log: Callable[[str], None]):
        import torch

        from .devices import select_device

        self.s = s
        self.work = work
        self.log = log
        self.device = select_device(s.device)
        self.cuda = self.device.type == "cuda"
        self.bf16 = self.cuda and torch.cuda.get_device_capability(self.device) >= (8, 0)
        self.root: Path | None = None
        self.finished: dict[str, Path] = {}  # check name → run folder

    # -- helpers --
    def cfg(self, model_name: str, **kw):
        from .config import make_config

        tasks = "depth" if model_name == "adaptive_depth" else "semseg,depth"
        base = dict(model_name=model_name, tasks=tasks, dataset_root=str(self.root), device=str(self.device),
                    aug_input_crop_size=self.s.size, batch_size=self.s.batch_size,
                    batch_size_validation=self.s.batch_size, num_epochs=1,
                    max_train_images=self.s.steps * self.s.batch_size, max_val_images=self.s.val_images,
                    optimizer="adam", optimizer_lr=1e-4, log_every=1, quiet=True, workers=0,
                    aug_geom_reflect=True, transformer_dim=64, num_bins=16, num_heads=2,
                    num_transformer_layers=1)
        base.update(kw)
        return make_config(**base)

    def train(self, cfg, name: str, **kw):
        from .train import train

        return train(cfg, run_dir=self.work / "runs" / name.replace("/", "_"), **kw).run_dir

    # -- checks --
    def environment(self) -> tuple[str, str, dict]:
        import torch

        from . import __version__

        env = {"cvaia": __version__, "torch": torch.__version__, "python": platform.python_version(),
               "device": str(self.device), "cuda_available": torch.cuda.is_available(),
               "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES")}
        from .config import make_config

        defaults = make_config()
        env["defaults"] = {"precision": defaults.precision_on(self.device),
                           "channels_last": defaults.channels_last_on(self.device)}
        if self.cuda:
            props = torch.cuda.get_device_properties(self.device)
            env.update(device_name=props.name, capability=".".join(map(str, torch.cuda.get_device_capability(self.device))),
                       total_memory_mb=props.total_memory / 2**20, device_count=torch.cuda.device_count(),
                       bf16=self.bf16, cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                       uuid=str(getattr(props, "uuid", "")))
            detail = (f"{props.name} (sm_{env['capability'].replace('.', '')}), bf16 {'yes' if self.bf16 else 'no'}; "
                      f"defaults train in {env['defaults']['precision']}"
                      f"{', channels_last' if env['defaults']['channels_last'] else ''}")
        else:
            env["device_name"] = platform.processor() or platform.machine()
            detail = f"{self.device} ({env['device_name']}), torch {torch.__version__}"
        return PASS, detail, env

    def data(self):
        from .data.synth import generate

        n_train = self.s.steps * self.s.batch_size * 2  # enough for the ddp check's 2 ranks
        self.root = generate(self.work / "data", height=self.s.size, width=2 * self.s.size, n_train=n_train,
                             n_val=self.s.val_images, n_test=self.s.val_images, seed=1, workers=1)
        return PASS, f"{n_train}/{self.s.val_images}/{self.s.val_images} images of {self.s.size}x{2 * self.s.size}", \
            {"root": str(self.root)}

    def train_model(self, model_name: str, precision: str):
        from .runs import Run

        extra = {"grad_clip": 1.0} if precision == "fp16" else {}
        cfg = self.cfg(model_name, precision=precision, **extra)
        run = Run(self.train(cfg, f"train/{model_name}/{precision}"))
        losses = list(run.history.loss)
        if not losses or not all(math.isfinite(v) for v in losses):
            raise CheckFailed(f"losses {losses}")
        final = run.final
        recorded = run.meta.get("precision")
        if recorded is not None and recorded != precision:
            raise CheckFailed(f"the run records precision {recorded}, trained as {precision}")
        if run.meta.get("channels_last", cfg.channels_last_on(self.device)) != cfg.channels_last_on(self.device):
            raise CheckFailed(f"the run records channels_last {run.meta.get('channels_last')}")
        if run.meta.get("device") != str(self.device):
            raise CheckFailed(f"the run records device {run.meta.get('device')}, trained on {self.device}")
        self.finished.setdefault(model_name, run.path)
        data = {"losses": losses, "peak_mem_mb": final.get("peak_mem_mb"), "images_per_s": final.get("images_per_s"),
                "precision": recorded, "channels_last": run.meta.get("channels_last")}
        return PASS, f"loss {losses[0]:.3f} → {losses[-1]:.3f}, {final.get('images_per_s', 0):.1f} img/s", data

    def compile(self):
        from .runs import Run

        precision = "bf16" if self.bf16 else "fp16"
        t0 = time.perf_counter()
        run = Run(self.train(self.cfg("deeplabv3p", precision=precision, compile=True), "compile"))
        losses = list(run.history.loss)
        if not all(math.isfinite(v) for v in losses):
            raise CheckFailed(f"losses {losses}")
        return PASS, f"deeplabv3p {precision} compiled, loss {losses[-1]:.3f} ({time.perf_counter() - t0:.0f} s incl. compile)", \
            {"losses": losses}

    def resume(self):
        from .runs import Run

        class Stop(RuntimeError):
            pass

        def stop_after_first(row):
            if row["epoch"] >= 1:
                raise Stop

        def weights(run):
            return run.load_checkpoint("last")["model"]

        def max_diff(a, b):
            return max(float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point())

        model = "adaptive_depth"  # dropout in its transformer: the RNG streams matter
        cfg = self.cfg(model, num_epochs=2, precision="bf16" if self.bf16 else ("fp16" if self.cuda else "fp32"))
        full = Run(self.train(cfg, "resume/full"))
        part_dir = self.work / "runs" / "resume_part"
        try:
            self.train(cfg, "resume/part", progress=stop_after_first)
            raise CheckFailed("the stop hook did not stop the run")
        except Stop:
            pass
        self.train(cfg, "resume/part")
        part = Run(part_dir)
        resumed = part.meta.get("resumed") or []
        if not resumed or resumed[0].get("at_step") != self.s.steps:
            raise CheckFailed(f"expected a resume at step {self.s.steps}, got {resumed}")
        if list(part.history.step) != list(full.history.step):
            raise CheckFailed(f"steps {list(part.history.step)} vs {list(full.history.step)}")
        a, b = weights(full), weights(part)
        diff = max_diff(a, b)
        noise = 0.0
        if self.cuda:  # what two uninterrupted runs differ by here
            noise = max_diff(a, weights(Run(self.train(cfg, "resume/full_again"))))
        ok, tol = resume_verdict(diff, noise, self.cuda)
        equal = diff == 0.0 and list(full.history.loss) == list(part.history.loss)
        data = {"max_weight_diff": diff, "noise_weight_diff": noise, "tolerance": tol, "bitwise_equal": equal,
                "final_loss": [full.final["train_loss"], part.final["train_loss"]]}
        if not ok or (not self.cuda and not equal):
            where = ("on the CPU a resumed run must equal the uninterrupted one" if not self.cuda else
                     f"more than {RESUME_NOISE_FACTOR:g}x the difference of two uninterrupted runs ({noise:.3g})")
            raise CheckFailed(f"{where}: max weight diff {diff:.3g} (tolerance {tol:.3g})")
        note = "bitwise equal" if equal else f"max weight diff {diff:.2g} (two uninterrupted runs: {noise:.2g})"
        return PASS, f"{model}: resumed at step {self.s.steps}, {note}", data

    def loader(self):
        from .runs import Run

        cfg = self.cfg("deeplabv3p", data_path="loader", workers=2, num_epochs=2, precision="bf16" if self.bf16 else
                       ("fp16" if self.cuda else "fp32"))
        run = Run(self.train(cfg, "loader"))
        if run.meta.get("data_path") != "loader":
            raise CheckFailed(f"the run records data path {run.meta.get('data_path')}, asked for loader")
        expected = list(range(1, 2 * self.s.steps + 1))
        if list(run.history.step) != expected:
            raise CheckFailed(f"steps {list(run.history.step)}, expected {expected}: batches went missing")
        losses = list(run.history.loss)
        if not all(math.isfinite(v) for v in losses):
            raise CheckFailed(f"losses {losses}")
        return PASS, f"2 workers, {len(losses)} steps, loss {losses[0]:.3f} → {losses[-1]:.3f}", {"losses": losses}

    def predict_tta(self):
        from .grader import export_predictions, score_predictions
        from .runs import Run

        name = "deeplabv3p_multitask" if "deeplabv3p_multitask" in self.finished else next(iter(self.finished), None)
        if name is None:
            raise CheckFailed("no trained run to predict with (every train check failed)")
        run = Run(self.finished[name])
        model = run.load_model("best", device=self.device)
        out = export_predictions(model, self.root, "val", self.work / "preds", device=self.device,
                                 batch_size=self.s.batch_size, tta_flip=True)
        scores = score_predictions(self.root, "val", out)
        if scores["num_images"] != self.s.val_images:
            raise CheckFailed(f"{scores['num_images']} images graded, expected {self.s.val_images}")
        return PASS, f"{name}: {scores['num_images']} images, graded score {scores['score']:.2f}", \
            {k: scores.get(k) for k in ("miou", "si_log_rmse", "score", "num_images")}

    def memory(self):
        import torch

        from .devices import cuda_free_bytes
        from .runs import Run

        total = torch.cuda.get_device_properties(self.device).total_memory / 2**20
        peaks = {m: Run(p).final.get("peak_mem_mb") for m, p in self.finished.items()}
        bad = {m: v for m, v in peaks.items() if v is None or not 0 < v < total}
        if bad:
            raise CheckFailed(f"peak memory outside (0, {total:.0f}) MiB: {bad}")
        free = cuda_free_bytes(self.device) / 2**20
        if not 0 < free <= total:
            raise CheckFailed(f"free memory {free:.0f} MiB of {total:.0f}")
        return PASS, f"peaks {min(peaks.values()):.0f}-{max(peaks.values()):.0f} MiB of {total:.0f}, free {free:.0f}", \
            {"peak_mem_mb": peaks, "free_mb": free, "total_mb": total}

    def pinned(self):
        import torch

        from .data.train_batches import PinnedStaging

        g = torch.Generator().manual_seed(0)
        src = {"rgb": torch.randint(0, 256, (16, 3, 32, 64), dtype=torch.uint8, generator=g),
               "depth": torch.randint(0, 256, (16, 32, 64), dtype=torch.uint8, generator=g)}
        staging = PinnedStaging(src, 4, self.device)
        if not all(b.is_pinned() for bufs in staging.buffers for b in bufs.values()):
            raise CheckFailed("staging buffers are not pinned")
        for _ in range(4):
            idx = torch.randperm(16, generator=g)[:4]
            got = staging(idx)
            for k, t in src.items():
                if not torch.equal(got[k].cpu(), t[idx]):
                    raise CheckFailed(f"batch {k} differs from direct indexing")
        return PASS, "4 batches through 2 pinned buffers equal direct indexing", {}

    def power(self):
        import torch

        from .devices import PowerMeter, _torch_uuid, nvml_handle

        try:
            import pynvml
        except ImportError:
            return SKIP, "pynvml (nvidia-ml-py) is not installed", {}
        pynvml.nvmlInit()
        index = self.device.index if self.device.index is not None else torch.cuda.current_device()
        handle = nvml_handle(pynvml, index)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else uuid
        expected = _torch_uuid(index)

        def bare(u: str) -> str:  # "GPU-…" / "MIG-…" → the UUID itself
            return u.split("-", 1)[1] if u.startswith(("GPU-", "MIG-")) else u

        if expected is not None and bare(uuid) != bare(expected):
            raise CheckFailed(f"NVML reads {uuid}, torch uses {expected}")
        meter = PowerMeter(self.device, interval=0.1).start()
        x = torch.randn(4096, 4096, device=self.device)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < 1.5:
            x = (x @ x).clamp_(-1, 1)
        torch.cuda.synchronize(self.device)
        meter.stop()
        watts = meter.mean_watts
        if watts is None or not watts > 0:
            raise CheckFailed(f"no power reading ({watts})")
        runs = {}
        from .runs import Run

        for m, p in self.finished.items():
            epochs = Run(p).epochs
            runs[m] = epochs["power_w"].tolist() if "power_w" in epochs else []
        return PASS, f"{watts:.0f} W under load, NVML device {uuid}", {"watts": watts, "uuid": uuid, "runs": runs}

    def bench(self):
        from .bench import BenchSettings, run_bench

        s = BenchSettings(size=self.s.size, batch_size=self.s.batch_size, steps=self.s.bench_steps,
                          warmup=1 if not self.cuda else 3, device=str(self.device), workers=0 if not self.cuda else 2,
                          images=self.s.steps * self.s.batch_size * 2, dataset_root=str(self.root))
        (row,) = run_bench(["deeplabv3p"], s, isolate=self.cuda, log=lambda *a: None)
        if not (row["reference_img_s"] > 0 and row["fast_img_s"] > 0):
            raise CheckFailed(f"throughput {row['reference_img_s']}, {row['fast_img_s']}")
        fast = row["arms"]["fast"]
        return PASS, (f"deeplabv3p {s.size}² batch {s.batch_size}: reference {row['reference_img_s']:.1f}, "
                      f"fast {row['fast_img_s']:.1f} img/s ({row['speedup']:.2f}x, {fast['precision']})"), \
            {k: v for k, v in row.items() if k != "arms"} | {"fast_precision": fast["precision"]}

    def ddp(self):
        import torch

        if torch.cuda.device_count() < 2:
            return SKIP, f"needs 2 GPUs, this machine has {torch.cuda.device_count()}", {}
        runs = self.work / "runs" / "ddp"
        env = dict(os.environ, CVAIA_RUNS_DIR=str(runs), OMP_NUM_THREADS="1")
        env.pop("WORLD_SIZE", None)
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "cvaia", "train", "--dataset_root", str(self.root), "--aug_input_crop_size", str(self.s.size),
               "--batch_size", str(self.s.batch_size // 2 or 1), "--num_epochs", "1",
               "--max_train_images", str(self.s.steps * self.s.batch_size), "--optimizer", "adam",
               "--optimizer_lr", "1e-4", "--device", "cuda", "--quiet"]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise CheckFailed(f"torchrun exited {proc.returncode}: {proc.stderr[-1500:]}")
        done = list(runs.glob("*/done.json"))
        if len(done) != 1:
            raise CheckFailed(f"expected one finished run in {runs}, found {len(done)}")
        summary = json.loads(done[0].read_text())["summary"]
        return PASS, f"2 processes, {summary.get('steps')} steps", {"summary": summary}


def _timed(name: str, fn, log) -> CheckResult:
    t0 = time.perf_counter()
    try:
        status, detail, data = fn()
    except CheckFailed as exc:
        status, detail, data = FAIL, str(exc), {}
    except Exception as exc:  # a crash is a finding: report it, go on with the next check
        tail = traceback.format_exc(limit=6)
        status, detail, data = FAIL, f"{type(exc).__name__}: {exc}", {"traceback": tail}
    result = CheckResult(name, status, time.perf_counter() - t0, detail, data)
    log(f"{result.status:<5} {result.name:<34} {result.seconds:6.1f} s  {result.detail}".rstrip())
    return result


def run_doctor(settings: DoctorSettings | None = None, log: Callable[[str], None] = lambda msg: None) -> DoctorReport:
    """Run every check (the GPU ones only on a GPU: listed as SKIP elsewhere) and return the report."""
    s = settings or DoctorSettings()
    t_start = time.perf_counter()
    work = Path(s.workdir).expanduser() if s.workdir else Path(tempfile.mkdtemp(prefix="cvaia-doctor-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        doc = _Doctor(s, work, log)
        checks: list[CheckResult] = []
        env = _timed("environment", doc.environment, log)
        checks.append(env)
        checks.append(_timed("data", doc.data, log))
        if doc.root is None:  # nothing below can run without data
            return DoctorReport(str(doc.device), env.data, asdict(s), checks, time.perf_counter() - t_start)

        def gpu(name: str, fn, needs: str | None = None):
            if doc.cuda:
                checks.append(_timed(name, fn, log))
            else:
                checks.append(CheckResult(name, SKIP, detail=f"needs {needs or GPU_CHECKS[name]}"))
                log(f"{SKIP:<5} {name:<34}    -    needs {needs or GPU_CHECKS[name]}")

        for model in s.models:
            if doc.cuda:
                if doc.bf16:
                    checks.append(_timed(f"train/{model}/bf16", lambda m=model: doc.train_model(m, "bf16"), log))
                else:
                    checks.append(CheckResult(f"train/{model}/bf16", SKIP, detail="this GPU has no bf16 (sm < 80)"))
                checks.append(_timed(f"train/{model}/fp16", lambda m=model: doc.train_model(m, "fp16"), log))
            else:
                checks.append(_timed(f"train/{model}/fp32", lambda m=model: doc.train_model(m, "fp32"), log))
        if not doc.cuda:
            for name in ("train/<model>/bf16", "train/<model>/fp16"):
                gpu(name, None)
        gpu("compile", doc.compile)
        checks.append(_timed("resume", doc.resume, log))
        checks.append(_timed("loader", doc.loader, log))
        checks.append(_timed("predict_tta", doc.predict_tta, log))
        gpu("memory", doc.memory)
        gpu("pinned", doc.pinned)
        gpu("power", doc.power)
        checks.append(_timed("bench", doc.bench, log))
        gpu("ddp", doc.ddp)
        return DoctorReport(str(doc.device), env.data, asdict(s), checks, time.perf_counter() - t_start)
    finally:
        if not s.keep and not s.workdir:
            shutil.rmtree(work, ignore_errors=True)


def default_report_path() -> Path:
    """``<run store>/doctor/<timestamp>.json`` (a new file each time: nothing is overwritten)."""
    from datetime import datetime

    from . import paths

    return paths.runs_dir() / "doctor" / f"{datetime.now().strftime('%Y%m%d-%H%M%S')}.json"


def json_dumps(report: DoctorReport) -> str:
    """The report as one JSON document (what ``--json`` prints)."""
    from .files import _clean_floats, _json_default

    return json.dumps(_clean_floats(report.to_dict()), indent=2, default=_json_default)

