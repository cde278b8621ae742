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


def test_run_identity_does_not_depend_on_the_machine_that_hashes_it(monkeypatch, tmp_path):
    """Issue 18, item 1: a login node without a GPU and the GPU job it submits name the same run
    folder (before: fp32 on the login node, bf16 in the job: `sweep --no_wait` printed folders
    that never existed and re-submitting queued finished runs again). The hash holds the
    precision asked for; explicit requests stay apart from the default; on --device cpu every
    request is the default (fp32) run."""
    from cvaia import run_folder as rf
    from cvaia.config import make_config

    monkeypatch.setenv("CVAIA_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CVAIA_RUNS_DIR", str(tmp_path / "runs"))
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    requests = [dict(), dict(precision="bf16"), dict(precision="fp16"), dict(precision="fp32"),
                dict(optimizer_float_16=True), dict(device="cuda"), dict(device="cpu", precision="bf16"),
                dict(model_name="adaptive_depth", tasks="depth", precision="fp16")]
    seen = {}
    for gpu, capability in ((False, None), (True, (9, 0)), (True, (7, 5))):  # login node, A100/H100, V100/T4
        monkeypatch.setattr(torch.cuda, "is_available", lambda g=gpu: g)
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None, c=capability: c)
        for i, kw in enumerate(requests):
            folder = rf.run_dir_for(make_config(**kw))
            assert seen.setdefault(i, folder) == folder, (kw, gpu, capability)
    hashes = {i: make_config(**kw).config_hash() for i, kw in enumerate(requests)}
    assert hashes[0] == hashes[5] == hashes[6] == make_config(device="cpu").config_hash()
    assert len({hashes[1], hashes[2], hashes[3], hashes[0]}) == 4  # on a GPU: four different runs
    assert hashes[4] == hashes[2]  # the course flag is fp16
    # ... and differs from the hash an older version gave a CPU run "in fp16" (really fp32)
    assert make_config(precision="fp16").config_hash() != "87bfdcd7f7"


def test_precision_on_the_machine_is_still_resolved_there(monkeypatch):
    """What training here uses (not part of the hash): bf16 on Ampere+, fp16 on older GPUs, fp32 without."""
    from cvaia.config import make_config

    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    capability = {"value": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: capability["value"])
    assert make_config().effective_precision == "bf16"
    capability["value"] = (7, 5)
    assert make_config().effective_precision == "fp16"
    assert make_config(device="cpu", precision="bf16").effective_precision == "fp32"


def test_a_finished_run_served_to_another_machine_says_what_it_used(tiny_root, tmp_path, monkeypatch, capsys):
    """The default request trained on a CPU is the run a GPU machine is served (one identity);
    the run says in which precision it trained, and the log says so when this machine would differ."""
    from cvaia.config import make_config
    from cvaia.runs import Run
    from cvaia.train import served_precision_note, train

    cfg = make_config(dataset_root=str(tiny_root), aug_input_crop_size=32, batch_size=2, num_epochs=1,
                      max_train_images=2, max_val_images=2, quiet=True)  # --device auto, on this CPU
    result = train(cfg, run_dir=tmp_path / "run")
    assert Run(result.run_dir).meta["precision"] == "fp32" and served_precision_note(cfg, result.run_dir) == ""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d=None: (9, 0))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    note = served_precision_note(cfg, result.run_dir)
    assert note == "; it trained in fp32 on cpu, here it would train in bf16 on cuda"
    again = train(cfg.replace(quiet=False), run_dir=tmp_path / "run")
    assert not again.trained and note in capsys.readouterr().out


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


# ---- issue 18, item 5: resuming with another memory format -----------------------------------------
def _layout_net():
    # no bias before the BatchNorm: its true gradient is 0, and Adam would turn the rounding
    # noise of that gradient into full-size steps that differ between any two kernels
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, bias=False), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
                               torch.nn.Conv2d(8, 4, 3))


@pytest.mark.parametrize("saved_channels_last", [True, False], ids=["cl-to-nchw", "nchw-to-cl"])
@pytest.mark.parametrize("kind", ["adam", "sgd"])
def test_optimizer_state_takes_the_parameters_layout_on_load(saved_channels_last, kind):
    """Issue 18, item 5. Fused optimizers (CUDA's; here the CPU's) index parameter, gradient and
    moments by memory offset: moments loaded in the checkpoint's layout update wrong elements.
    After load_optimizer_state one step of the resumed model (other layout) equals the step the
    uninterrupted one takes; the plain load_state_dict does not (the harness sees the bug)."""
    import copy

    from cvaia.optim import load_optimizer_state

    def make(params, **kw):
        if kind == "adam":
            return torch.optim.Adam(params, lr=1e-2, **kw)
        return torch.optim.SGD(params, lr=1e-2, momentum=0.9, **kw)

    x = torch.randn(2, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    a = _layout_net()
    if saved_channels_last:
        a = a.to(memory_format=torch.channels_last)
    opt = make(a.parameters(), fused=True)
    for _ in range(3):
        opt.zero_grad()
        a(x).square().mean().backward()
        opt.step()
    model_state, opt_state = copy.deepcopy(a.state_dict()), copy.deepcopy(opt.state_dict())
    opt.zero_grad()
    a(x).square().mean().backward()
    opt.step()
    uninterrupted = [p.detach().clone() for p in a.parameters()]

    def resume_and_step(load, **kw):
        b = _layout_net()
        if not saved_channels_last:
            b = b.to(memory_format=torch.channels_last)
        b.load_state_dict(model_state)
        o = make(b.parameters(), **kw)
        converted = load(o, copy.deepcopy(opt_state))  # (a loaded state aliases the dict's tensors)
        o.zero_grad()
        b(x).square().mean().backward()
        o.step()
        return [p.detach().clone() for p in b.parameters()], converted, o

    def plain(o, s):
        o.load_state_dict(s)

    def gap(ps):
        return max(float((p - q).abs().max()) for p, q in zip(ps, uninterrupted, strict=True))

    fixed, converted, _ = resume_and_step(load_optimizer_state, fused=True)
    broken, _, _ = resume_and_step(plain, fused=True)
    assert converted == (4 if kind == "adam" else 2)  # the two conv weights' moments / momenta
    assert gap(fixed) < 1e-6 and gap(broken) > 1e-3, (gap(fixed), gap(broken))
    # the kernel is this optimizer's, not the checkpoint's: a CUDA (fused) run resumed on a CPU
    # takes the CPU's foreach kernel (before: load_state_dict switched it to the fused one)
    foreach, _, o = resume_and_step(load_optimizer_state, foreach=True)
    assert [(g["fused"], g["foreach"]) for g in o.param_groups] == [(None, True)]
    assert gap(foreach) < 1e-6
    _, _, o = resume_and_step(plain, foreach=True)
    assert o.param_groups[0]["fused"] is True  # what torch does on its own


def test_a_run_resumed_in_another_memory_format_continues_correctly(tiny_root, tmp_path, monkeypatch):
    """A run trained channels_last with the fused optimizer (as on CUDA) and resumed in NCHW
    with foreach (as on a CPU): the resumed trainer's optimizer state has the parameters' strides
    and this device's kernel (before: the checkpoint's strides, and the fused kernel, which then
    updated wrong elements)."""
    from cvaia import optim
    from cvaia import train as train_mod
    from cvaia.config import Config, make_config

    class Stop(RuntimeError):
        pass

    def stop(row):
        raise Stop

    built = []

    def recording(*args, **kw):
        built.append(optim.build_optimizer(*args, **kw))
        return built[-1]

    monkeypatch.setattr(train_mod, "build_optimizer", recording)
    cfg = make_config(dataset_root=str(tiny_root), num_epochs=2, aug_input_crop_size=32, batch_size=2,
                      max_train_images=4, max_val_images=2, optimizer="adam", optimizer_lr=1e-3, device="cpu",
                      quiet=True)
    monkeypatch.setattr(optim, "optimizer_kernel", lambda device: {"fused": True})
    monkeypatch.setattr(Config, "channels_last_on", lambda self, device: True)
    with pytest.raises(Stop):
        train_mod.train(cfg, run_dir=tmp_path / "run", progress=stop)
    first = built[-1]
    assert any(p.dim() == 4 and p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
               for g in first.param_groups for p in g["params"])
    monkeypatch.setattr(optim, "optimizer_kernel", lambda device: {"foreach": True})
    monkeypatch.setattr(Config, "channels_last_on", lambda self, device: False)
    train_mod.train(cfg, run_dir=tmp_path / "run")
    resumed = built[-1]
    assert all(g.get("fused") is not True and g["foreach"] is True for g in resumed.param_groups)
    mismatched = [(tuple(p.shape), k) for g in resumed.param_groups for p in g["params"]
                  for k, v in resumed.state[p].items() if torch.is_tensor(v) and v.shape == p.shape
                  and v.stride() != p.stride()]
    assert not mismatched, mismatched[:3]
