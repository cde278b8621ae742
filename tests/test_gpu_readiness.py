"""What a first GPU user would hit (issue 10), tested without a GPU: mocks of torch.cuda's RNG
and memory queries and of NVML (pynvml), and fake CUDA tensors where a device is needed."""

from __future__ import annotations

import sys
import types

import pytest
import torch

from cvaia import devices, rng


# ---- 1. resuming a CUDA run: RNG states from a checkpoint mapped to the GPU ---------------------
@pytest.fixture()
def cuda_rng(monkeypatch):
    """``enable()`` makes torch.cuda report 2 initialised devices whose default generators are
    CPU generators: torch's own ``torch.cuda.set_rng_state`` then runs its callback, and the
    generator's ``set_state`` applies the same check as on a GPU (a CPU ByteTensor, else
    ``TypeError: RNG state must be a torch.ByteTensor``). Returns the 2 generators."""
    import torch.cuda.random as cuda_random

    def enable(gens=None):
        gens = gens if gens is not None else (torch.Generator(), torch.Generator())
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
        monkeypatch.setattr(torch.cuda, "default_generators", gens, raising=False)
        monkeypatch.setattr(cuda_random, "is_initialized", lambda: True)
        monkeypatch.setattr(cuda_random, "_lazy_call", lambda cb, **kw: cb())
        return gens

    return enable


def test_rng_states_mapped_to_the_gpu_are_restored(cuda_rng):
    """``torch.load(last.pt, map_location=cuda)`` moves the saved CUDA RNG states to the GPU;
    restoring them raised ``TypeError: RNG state must be a torch.ByteTensor`` (not caught),
    which crashed every resume of a run trained on CUDA."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    saved = [torch.Generator().manual_seed(5).get_state(), torch.Generator().manual_seed(6).get_state()]
    with FakeTensorMode(allow_non_fake_inputs=True):
        on_gpu = [s.to("cuda") for s in saved]  # what map_location=cuda gives
    assert not isinstance(on_gpu[0], torch.ByteTensor)
    cuda_rng()
    with pytest.raises(TypeError, match="ByteTensor"):  # torch's own check, as on a GPU
        torch.cuda.set_rng_state(on_gpu[0], 0)

    class Recorder:  # a generator that checks like torch's and keeps what it got
        def set_state(self, t):
            if not isinstance(t, torch.ByteTensor):
                raise TypeError("RNG state must be a torch.ByteTensor")
            self.state = t

    gens = cuda_rng((Recorder(), Recorder()))  # fake tensors have no values to set: record them
    rng.set_rng_state({"cuda": on_gpu})
    assert all(isinstance(g.state, torch.ByteTensor) and g.state.shape == saved[0].shape for g in gens)


def test_rng_state_values_and_device_count(cuda_rng):
    """The saved bytes are what is restored; a checkpoint of a 4-GPU job sets this job's 2."""
    states = [torch.Generator().manual_seed(i).get_state() for i in range(4)]
    before = torch.get_rng_state()
    torch.manual_seed(123)
    gens = cuda_rng()
    rng.set_rng_state({"torch": before, "cuda": states})
    assert torch.equal(torch.get_rng_state(), before)
    assert all(torch.equal(g.get_state(), states[i]) for i, g in enumerate(gens))


# ---- 3. NVML: the GPU torch uses, not the physical GPU with torch's index -----------------------
class FakeNVML(types.SimpleNamespace):
    """pynvml with 4 GPUs (physical index i draws 100 + i W) and a MIG instance on GPU 2."""

    UUIDS = ["GPU-aaaa0000-0000", "GPU-bbbb1111-1111", "GPU-cccc2222-2222", "GPU-dddd3333-3333"]
    MIG = "MIG-eeee4444-4444"

    def __init__(self):
        super().__init__()
        self.inits = 0

    def nvmlInit(self):
        self.inits += 1

    def nvmlDeviceGetCount(self):
        return len(self.UUIDS)

    def nvmlDeviceGetHandleByIndex(self, i):
        if not 0 <= i < len(self.UUIDS):
            raise RuntimeError("NVML_ERROR_INVALID_ARGUMENT")
        return ("gpu", i)

    def nvmlDeviceGetHandleByUUID(self, uuid):
        if uuid in self.UUIDS:
            return ("gpu", self.UUIDS.index(uuid))
        if uuid == self.MIG:
            return ("mig", 2)
        raise RuntimeError("NVML_ERROR_NOT_FOUND")

    def nvmlDeviceGetUUID(self, handle):
        return self.UUIDS[handle[1]].encode()

    def nvmlDeviceIsMigDeviceHandle(self, handle):
        return handle[0] == "mig"

    def nvmlDeviceGetDeviceHandleFromMigDeviceHandle(self, handle):
        return ("gpu", handle[1])

    def nvmlDeviceGetPowerUsage(self, handle):
        if handle[0] == "mig":
            raise RuntimeError("NVML_ERROR_NOT_SUPPORTED")
        return (100 + handle[1]) * 1000  # mW


@pytest.fixture()
def nvml(monkeypatch):
    fake = FakeNVML()
    monkeypatch.setitem(sys.modules, "pynvml", fake)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    return fake


def _watts(index: int) -> float:
    read = devices._power_reader(torch.device("cuda", index))
    assert read is not None
    return read()


@pytest.mark.parametrize("visible, index, physical", [
    ("2,3", 1, 3),                                         # SLURM: indices
    ("GPU-dddd3333-3333,GPU-aaaa0000-0000", 0, 3),         # UUIDs
    ("GPU-bbbb", 0, 1),                                    # a UUID prefix, as CUDA accepts
    ("MIG-eeee4444-4444", 0, 2),                           # a MIG instance: its board
    (None, 2, 2),                                          # nothing set: the index itself
])
def test_power_is_read_from_the_visible_gpu(nvml, monkeypatch, visible, index, physical):
    if visible is not None:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    assert _watts(index) == 100 + physical


def test_torch_uuid_wins_over_the_index(nvml, monkeypatch):
    """With CUDA's own device UUID (torch ≥ 2.0 reports it) no index arithmetic is needed."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    props = types.SimpleNamespace(uuid="cccc2222-2222")
    monkeypatch.setattr(torch.cuda, "get_device_properties", lambda i: props)
    assert _watts(1) == 102


def test_power_reader_off_gpu_and_on_unknown_entries(nvml, monkeypatch):
    assert devices._power_reader(torch.device("cpu")) is None
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-ffff")
    assert devices._power_reader(torch.device("cuda", 0)) is None  # no such GPU: no reading, no crash
    with pytest.raises(ValueError, match="not among CUDA_VISIBLE_DEVICES"):
        devices.nvml_handle(nvml, 3)


# ---- 5. free GPU memory counts PyTorch's own cache as free --------------------------------------
def test_cuda_free_bytes_counts_the_caching_allocator(monkeypatch):
    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (2 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: 30 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 1 * gib)
    # An earlier run in this kernel left 29 GiB cached: free for us, not for the driver.
    assert devices.cuda_free_bytes(torch.device("cuda", 0)) == 31 * gib


def test_gpu_placement_uses_the_memory_this_process_can_allocate(monkeypatch):
    """A 5 GiB split next to a 29 GiB cache left by an earlier run of this kernel stays on the
    GPU (before: the driver's 2 GiB "free" sent it to the slow host path)."""
    from cvaia.data.train_batches import gpu_placement

    gib = 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda d=None: (2 * gib, 80 * gib))
    monkeypatch.setattr(torch.cuda, "memory_reserved", lambda d=None: 30 * gib)
    monkeypatch.setattr(torch.cuda, "memory_allocated", lambda d=None: 1 * gib)
    assert gpu_placement(5 * gib, torch.device("cuda", 0)) == "gpu"
    assert gpu_placement(10 * gib, torch.device("cuda", 0)) == "pinned"


def test_pinned_staging_pins_batch_buffers_not_the_split(monkeypatch):
    """Host-resident data reach the GPU through two batch-sized pinned buffers (the whole split
    is never pinned or copied); a buffer is refilled only after the copy out of it finished."""
    from cvaia.data.train_batches import PinnedStaging

    pinned, events = [], []

    def pin_memory(self):
        pinned.append(tuple(self.shape))
        return self.clone()

    class Event:
        def __init__(self):
            self.recorded = self.synced = False
            events.append(self)

        def record(self, stream=None):
            self.recorded = True

        def synchronize(self):
            self.synced = True

    monkeypatch.setattr(torch.Tensor, "pin_memory", pin_memory)
    monkeypatch.setattr(torch.cuda, "Event", Event)
    monkeypatch.setattr(torch.cuda, "current_stream", lambda device=None: None)
    g = torch.Generator().manual_seed(0)
    src = {"rgb": torch.randint(0, 256, (10, 3, 4, 6), dtype=torch.uint8, generator=g),
           "depth": torch.randint(0, 256, (10, 4, 6), dtype=torch.uint8, generator=g)}
    staging = PinnedStaging(src, 4, torch.device("cpu"))  # cpu: .to() is then the identity
    assert pinned == [(4, 3, 4, 6), (4, 4, 6)] * 2
    for step, idx in enumerate([torch.tensor([3, 1, 7, 0]), torch.tensor([2, 9, 5, 4]), torch.tensor([6, 8])]):
        got = staging(idx)
        for k in src:
            assert torch.equal(got[k], src[k][idx])
        assert len(events) == step + 1 and events[-1].recorded
    assert events[0].synced and not events[1].synced  # batch 3 reused buffer 0 after its copy


# ---- 9. DDP: each process holds only its shard of the training split -------------------------------
def test_ddp_ranks_preload_only_their_shard(tiny_root):
    from cvaia.config import make_config
    from cvaia.data.miniscapes import load_split_tensors
    from cvaia.data.train_batches import PreloadedTrainData

    cfg = make_config(dataset_root=str(tiny_root), aug_input_crop_size=32, batch_size=2, max_train_images=8)
    full = load_split_tensors(tiny_root, "train", max_images=8)
    ranks = [PreloadedTrainData(cfg, tiny_root, torch.device("cpu"), rank=r, world_size=2) for r in range(2)]
    for r, data in enumerate(ranks):
        assert data.n == 4 and data.n_total == 8 and data.steps_per_epoch == 2
        assert torch.equal(data.sources["rgb"], full.rgb[r::2])  # images r, r+2, ...: half the memory
        assert torch.equal(data.sources["semseg"], full.semseg[r::2])
    one = PreloadedTrainData(cfg, tiny_root, torch.device("cpu"))
    assert one.n == 8 and torch.equal(one.sources["rgb"], full.rgb)
    batches = [b for b, _ in ranks[1].batches(0)]
    assert len(batches) == 2 and batches[0].shape == (2, 3, 32, 32)


def test_sync_batchnorm_under_ddp_on_cuda_only():
    """--sync_batchnorm swaps every BatchNorm for SyncBatchNorm in a multi-process CUDA job (same
    parameters, same state-dict keys: checkpoints stay interchangeable); one process keeps its
    BatchNorms; a CPU (gloo) job gets a clear error."""
    from cvaia.config import ConfigError, make_config
    from cvaia.distributed import DistInfo, sync_batchnorm
    from cvaia.models import build_model

    model = build_model(make_config(model_name="deeplabv3p"))
    keys, params = list(model.state_dict()), [id(p) for p in model.parameters()]
    two = DistInfo(rank=0, world_size=2)
    assert sync_batchnorm(model, DistInfo(), torch.device("cuda"), True) is model
    assert sync_batchnorm(model, two, torch.device("cuda"), False) is model
    synced = sync_batchnorm(model, two, torch.device("cuda", 0), True)
    kinds = {type(m) for m in synced.modules()}
    assert torch.nn.SyncBatchNorm in kinds and torch.nn.BatchNorm2d not in kinds
    assert list(synced.state_dict()) == keys and [id(p) for p in synced.parameters()] == params
    with pytest.raises(ConfigError, match="--sync_batchnorm: SyncBatchNorm needs CUDA"):
        sync_batchnorm(build_model(make_config()), two, torch.device("cpu"), True)


# ---- 2. defaults that match the README on CUDA; the precision is part of a run's identity --------
def test_precision_auto_resolves_per_device():
    from cvaia.config import make_config, resolve_precision

    assert resolve_precision("auto", False, "cuda", True) == "bf16"
    assert resolve_precision("auto", False, "cuda", False) == "fp16"  # + GradScaler (the trainer)
    assert resolve_precision("auto", True, "cuda", True) == "fp16"   # the course flag
    assert resolve_precision("bf16", True, "cuda", True) == "bf16"
    for p in ("auto", "bf16", "fp16", "fp32"):
        assert resolve_precision(p, True, "cpu", True) == "fp32"  # autocast runs on CUDA only
    cfg = make_config()
    assert cfg.precision == "auto" and cfg.channels_last is True
    assert cfg.precision_on("cpu") == "fp32" and not cfg.channels_last_on("cpu")
    assert cfg.channels_last_on(torch.device("cuda", 0))


def test_a_cpu_run_is_not_served_to_a_gpu_request(monkeypatch, tmp_path):
    """The hash holds the effective precision: fp32 on a CPU whatever the field says (a CPU run
    "in bf16" is an fp32 run), bf16/fp16 on a GPU — so a finished CPU run never answers a GPU
    request, and one precision is one run however it was asked for."""
    from cvaia.config import make_config

    monkeypatch.setenv("CVAIA_DATA_DIR", str(tmp_path))
    cpu = {p: make_config(precision=p, device="cpu").config_hash() for p in ("auto", "fp32", "bf16", "fp16")}
    assert len(set(cpu.values())) == 1
    assert make_config(device="cpu", optimizer_float_16=True).config_hash() == cpu["auto"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    capability = {"value": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability["value"])
    gpu = make_config(device="auto")
    bf16_hash = gpu.config_hash()
    assert gpu.effective_precision == "bf16" and bf16_hash != cpu["auto"]
    assert bf16_hash == make_config(precision="bf16").config_hash()
    capability["value"] = (7, 5)  # a T4 / V100: fp16 + GradScaler
    assert make_config().effective_precision == "fp16"
    assert make_config().config_hash() == make_config(precision="fp16").config_hash() != bf16_hash
    assert make_config(optimizer_float_16=True).config_hash() == make_config(precision="fp16").config_hash()
    # ... and differs from the hash an older version gave a CPU run "in fp16" (really fp32)
    assert make_config(precision="fp16").config_hash() != "87bfdcd7f7"


def test_a_run_records_the_precision_and_device_it_used(tiny_root, tmp_path):
    from cvaia.config import make_config
    from cvaia.runs import Run
    from cvaia.train import train

    cfg = make_config(dataset_root=str(tiny_root), aug_input_crop_size=32, batch_size=2, num_epochs=1,
                      max_train_images=2, max_val_images=2, precision="bf16", device="cpu", quiet=True)
    run = Run(train(cfg, run_dir=tmp_path / "run").run_dir)
    assert (run.meta["precision"], run.meta["channels_last"], run.meta["device"]) == ("fp32", False, "cpu")
    assert run.final["precision"] == "fp32" and run.final["channels_last"] is False


# ---- 4. peak memory: the training steps of the epoch, without the preloaded data ------------------
def test_training_peak_excludes_the_preloaded_data(monkeypatch):
    from cvaia.distributed import DistInfo
    from cvaia.train import training_peak_mb

    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda d=None: 5 * 2**30)
    assert training_peak_mb(torch.device("cuda", 0), 2**30, DistInfo()) == 4096  # 5 GiB peak, 1 GiB data
    assert training_peak_mb(torch.device("cpu"), 0, DistInfo()) is None


# ---- 8. resume: what holds --------------------------------------------------------------------------
def test_each_rank_resumes_its_own_rng_state():
    """Checkpoints keep every rank's RNG state (before: rank 0's only, restored on every rank —
    on CUDA, rank r's dropout stream became another GPU's)."""
    from cvaia.train import rank_rng_state

    ckpt = {"rng": "r0", "rng_ranks": ["r0", "r1", "r2", "r3"]}
    assert [rank_rng_state(ckpt, r, 4) for r in range(4)] == ["r0", "r1", "r2", "r3"]
    assert rank_rng_state(ckpt, 1, 2) == "r0"  # another number of processes: rank 0's
    assert rank_rng_state({"rng": "old"}, 1, 4) == "old"  # a checkpoint of an older version


def test_resume_with_dropout_equals_uninterrupted_on_cpu(tiny_root, tmp_path):
    """The promise that holds exactly on a CPU (README "Resuming"): a run with dropout (the RNG
    streams matter) stopped after epoch 1 resumes at step 2 and ends bitwise like an
    uninterrupted one. On CUDA it resumes at the same step with the same data order,
    augmentation and per-rank RNG, but not bitwise (cuDNN autotuning, atomics in backward)."""
    from cvaia.config import make_config
    from cvaia.runs import Run
    from cvaia.train import train

    class Stop(RuntimeError):
        pass

    def stop(row):
        if row["epoch"] == 1:
            raise Stop

    cfg = make_config(dataset_root=str(tiny_root), model_name="adaptive_depth", tasks="depth", num_epochs=2,
                      aug_input_crop_size=32, batch_size=2, max_train_images=4, max_val_images=2,
                      transformer_dim=32, num_bins=16, num_heads=2, dropout=0.3, device="cpu", quiet=True,
                      log_every=1)
    full = Run(train(cfg, run_dir=tmp_path / "full").run_dir)
    with pytest.raises(Stop):
        train(cfg, run_dir=tmp_path / "part", progress=stop)
    part = Run(train(cfg, run_dir=tmp_path / "part").run_dir)
    assert part.meta["resumed"][0]["at_step"] == 2
    assert list(part.history.loss) == list(full.history.loss)
    a = torch.load(full.path / "checkpoints" / "last.pt", weights_only=False)["model"]
    b = torch.load(part.path / "checkpoints" / "last.pt", weights_only=False)["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
