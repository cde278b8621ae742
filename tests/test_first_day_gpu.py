"""Issue 18, "first day on a GPU cluster": what a course team would hit in its first hour on
GPUs, tested on the CPU (fp16 arithmetic on the CPU, mocked CUDA memory queries, CPU gradient
scaler). The GPU itself is exercised by ``python -m cvaia doctor``."""

from __future__ import annotations

import pytest
import torch

from cvaia.models.adaptive import AdaptiveDepthHead
from cvaia.models.attention import SelfAttention
from cvaia.models.multitask import ClassTokenSegHead


# ---- item 7: fp16 attention scores ----------------------------------------------------------------
def _big(*shape, value=40.0):
    g = torch.Generator().manual_seed(0)
    return value * (1 + 0.01 * torch.rand(*shape, generator=g))


def test_explicit_attention_does_not_overflow_in_fp16():
    """Scores whose unscaled product exceeds fp16's 65504 (head_dim 64, q·k ≈ 64·40² ≈ 1e5):
    the explicit path gave inf - inf = NaN weights; with q scaled first (as SDPA does) it is
    finite and agrees with fp32 and with the fast path. (Keys of distinct sizes: at such scores
    fp16's resolution is 8, so the test asks what fp16 can hold, the winning key.)"""
    attn = SelfAttention(128, num_heads=2, impl="explicit").eval()
    steps = 1 + 0.1 * torch.arange(6.0)
    q = torch.full((1, 6, 128), 40.0)
    k = 40.0 * steps.view(1, 6, 1).expand(1, 6, 128)
    v = torch.randn(1, 6, 128, generator=torch.Generator().manual_seed(1))
    ref, ref_w = attn._attend(q, k, v, return_attention=True)
    half = attn.half()
    out, weights = half._attend(q.half(), k.half(), v.half(), return_attention=True)
    assert torch.isfinite(weights).all() and torch.isfinite(out).all()
    torch.testing.assert_close(weights.float(), ref_w, atol=1e-3, rtol=0)
    torch.testing.assert_close(out.float(), ref, atol=2e-2, rtol=2e-2)
    half.impl = "fast"
    torch.testing.assert_close(half._attend(q.half(), k.half(), v.half(), False)[0].float(), ref, atol=2e-2, rtol=2e-2)


def test_adaptive_bins_similarity_does_not_overflow_in_fp16():
    """Bin tokens · pixel queries of 32·60² > 65504: NaN bin probabilities before, now the fp32 ones."""
    head = AdaptiveDepthHead(latent_ch=32, query_ch=32, dim=32, num_bins=16, num_layers=0).eval()
    head.query_conv = torch.nn.Identity()  # the query is the input itself
    latents = 60 * (1 + 0.2 * torch.arange(4.0)).repeat_interleave(2).view(1, 1, 8, 1).expand(1, 32, 8, 8)
    query = torch.full((1, 32, 16, 16), 60.0)
    depth, probs, _ = head(latents, query)
    half = head.half()
    half.bin_depth.float()  # full_precision: the bin depths stay fp32, as under autocast
    depth16, probs16, _ = half(latents.half(), query.half())
    assert torch.isfinite(probs16).all() and torch.isfinite(depth16).all()
    torch.testing.assert_close(probs16.float(), probs, atol=1e-3, rtol=0)
    torch.testing.assert_close(depth16.float(), depth, rtol=1e-2, atol=0)


def test_class_token_logits_do_not_overflow_in_fp16():
    head = ClassTokenSegHead(dim=32, num_classes=3, num_layers=0, chunk=64).eval()
    with torch.no_grad():
        head.class_tokens.fill_(60.0)
    features = _big(1, 32, 8, 8, value=60.0)
    ref = head(features)
    logits = head.half()(features.half())
    assert torch.isfinite(logits).all()
    torch.testing.assert_close(logits.float(), ref, rtol=2e-3, atol=0)


# ---- item 7: a non-finite fp16 loss under a gradient scaler is a skipped step ----------------------
def _poison_losses(monkeypatch, bad_calls):
    """MultiTaskLoss returns an inf total on the calls (1-based) in ``bad_calls`` (an fp16
    overflow in the forward); the gradients are then inf/NaN too."""
    from cvaia.losses import MultiTaskLoss

    forward = MultiTaskLoss.forward
    calls = {"n": 0}

    def poisoned(self, outputs, targets):
        total, parts = forward(self, outputs, targets)
        calls["n"] += 1
        if bad_calls(calls["n"]):
            total = total * float("inf")
        return total, parts

    monkeypatch.setattr(MultiTaskLoss, "forward", poisoned)


def _scaled(monkeypatch):
    """The trainer's fp16 gradient scaler, on the CPU (torch's CPU GradScaler, same algorithm)."""
    from cvaia import train as train_mod

    made = []

    def scaler(amp_dtype):
        made.append(torch.amp.GradScaler("cpu", enabled=True))
        return made[-1]

    monkeypatch.setattr(train_mod, "grad_scaler", scaler)
    return made


def test_a_non_finite_fp16_loss_is_a_skipped_step(tiny_root, tmp_path, monkeypatch, capsys):
    """Before: any non-finite loss stopped the run as diverged, though GradScaler had skipped
    that step and halved its scale. Now the run goes on (the step is skipped, its loss not
    averaged), says so once per epoch, and the weights stay finite."""
    from cvaia.config import make_config
    from cvaia.runs import Run
    from cvaia.train import train

    cfg = make_config(dataset_root=str(tiny_root), aug_input_crop_size=32, batch_size=2, num_epochs=2,
                      max_train_images=4, max_val_images=2, optimizer="adam", optimizer_lr=1e-3, device="cpu",
                      log_every=1)
    scalers = _scaled(monkeypatch)
    _poison_losses(monkeypatch, lambda n: n == 2)
    run = Run(train(cfg, run_dir=tmp_path / "run").run_dir)
    out = capsys.readouterr().out
    assert (run.path / "done.json").is_file() and run.final["steps"] == 4
    assert "epoch 1: 1 optimizer step(s) skipped: the fp16 loss was not finite" in out
    assert out.count("step(s) skipped") == 1  # epoch 2 had none
    losses = list(run.history.loss)
    assert len(losses) == 4 and all(v == v for i, v in enumerate(losses) if i != 1)  # step 2's window: no finite loss
    assert all(torch.isfinite(torch.tensor(v)) for v in run.epochs.train_loss)
    assert scalers[-1].get_scale() == 2.0**15  # halved once from 2**16: the step was skipped
    weights = run.load_model("last").state_dict()
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


def test_without_a_scaler_a_non_finite_loss_still_diverges(tiny_root, tmp_path, monkeypatch):
    from cvaia.config import make_config
    from cvaia.run_folder import TrainingDiverged
    from cvaia.train import train

    cfg = make_config(dataset_root=str(tiny_root), aug_input_crop_size=32, batch_size=2, num_epochs=1,
                      max_train_images=4, max_val_images=2, device="cpu", quiet=True)
    _poison_losses(monkeypatch, lambda n: n == 2)
    with pytest.raises(TrainingDiverged, match="at step 2"):
        train(cfg, run_dir=tmp_path / "run")


def test_too_many_skipped_steps_in_a_row_diverge(tiny_root, tmp_path, monkeypatch):
    """More than MAX_SKIPPED_STEPS non-finite steps in a row (the scaler at 1 and still
    overflowing) is a diverged run, named at the step where the limit was passed; an epoch with
    no finite step at all likewise."""
    from cvaia.config import make_config
    from cvaia.run_folder import TrainingDiverged
    from cvaia.train import MAX_SKIPPED_STEPS, train

    cfg = make_config(dataset_root=str(tiny_root), model_name="adaptive_depth", tasks="depth",
                      aug_input_crop_size=32, batch_size=1, num_epochs=2, max_train_images=12, max_val_images=2,
                      transformer_dim=32, num_bins=16, num_heads=2, device="cpu", quiet=True)
    _scaled(monkeypatch)
    _poison_losses(monkeypatch, lambda n: n >= 2)  # step 1 finite, then every step
    with pytest.raises(TrainingDiverged, match=f"at step {MAX_SKIPPED_STEPS + 2}"):
        train(cfg, run_dir=tmp_path / "a")
    _poison_losses(monkeypatch, lambda n: True)
    with pytest.raises(TrainingDiverged, match="no optimizer step of epoch 1 had a finite loss"):
        train(cfg.replace(num_epochs=1), run_dir=tmp_path / "b")


# ---- item 6: notebooks honour DEVICE --------------------------------------------------------------
@pytest.fixture()
def two_gpus(monkeypatch):
    """torch.cuda reports two GPUs (nothing runs on them)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


def test_05_grades_on_the_notebooks_device(two_gpus):
    from cvaia.experiments import p05

    assert p05.grade_device({"DEVICE": "cuda:1"}) == "cuda:1"  # before: "cpu"
    assert p05.grade_device({"DEVICE": "auto"}) == "cuda:0"
    assert p05.grade_device({"DEVICE": "cuda"}) == "cuda:0"
    assert p05.grade_device({"DEVICE": "cpu"}) == "cpu"


def test_04_cost_table_runs_on_the_notebooks_device(monkeypatch, two_gpus):
    from cvaia import attention_cost
    from cvaia.experiments import p04

    seen = []
    monkeypatch.setattr(attention_cost, "cost_table", lambda *a, **kw: seen.append(kw["device"]))
    P = dict(p04.PROFILES["smoke"], DEVICE="cpu")
    p04.cost_table(P)
    p04.cost_table({**P, "DEVICE": "cuda:1"})
    assert seen == [torch.device("cpu"), torch.device("cuda", 1)]  # before: the GPU, whatever DEVICE said


def test_run_predict_defaults_to_the_runs_device(tiny_root, tmp_path, monkeypatch):
    """Run.predict (02 and 04 call it without a device) uses the run's --device here (before: the
    CPU, whatever DEVICE said); a device this machine lacks falls back to auto."""
    from cvaia.config import make_config
    from cvaia.runs import Run
    from cvaia.train import train

    cfg = make_config(dataset_root=str(tiny_root), aug_input_crop_size=32, batch_size=2, num_epochs=1,
                      max_train_images=2, max_val_images=2, device="cpu", quiet=True)
    run = Run(train(cfg, run_dir=tmp_path / "run").run_dir)
    loaded = []
    load = Run.load_model
    monkeypatch.setattr(Run, "load_model", lambda self, which="best", device="cpu": loaded.append(device)
                        or load(self, which, device))
    rgb = torch.randint(0, 256, (1, 32, 64, 3), dtype=torch.uint8).numpy()
    monkeypatch.setattr(Run, "device", lambda self: torch.device("cpu"))  # what "cpu" names here
    assert set(run.predict(rgb)) == {"semseg", "depth"} and loaded == [torch.device("cpu")]
    monkeypatch.undo()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert run.device() == torch.device("cpu")  # --device cpu stays the CPU
    run._config = run.config.replace(device="auto")
    assert run.device() == torch.device("cuda", 0)
    run._config = run.config.replace(device="cuda:1")  # trained on a 2-GPU node, read on a 1-GPU one
    assert run.device() == torch.device("cuda", 0)


# ---- item 8: 04's cost grid on a GPU that cannot hold every point ---------------------------------
def test_the_full_grids_largest_point_needs_about_25_gib():
    from cvaia.attention_cost import estimated_peak_bytes

    gib = estimated_peak_bytes(8, 8192, 256, 4, "explicit", "forward+backward") / 2**30
    assert 24 <= gib <= 30  # three 8 GiB attention matrices + the tokens
    assert estimated_peak_bytes(8, 8192, 256, 4, "fast", "forward+backward") == 2**30  # 16 token tensors of 64 MiB


def test_cost_grid_skips_points_that_do_not_fit_with_a_note(monkeypatch):
    from cvaia import attention_cost
    from cvaia.experiments import p04

    grid, base = {"N": [16, 32, 64], "H": [1, 4]}, {"B": 2, "N": 32, "D": 32, "H": 4}
    est = attention_cost.estimated_peak_bytes
    limit = est(2, 32, 32, 4, "explicit", "forward+backward") + 1  # N = 64 does not fit
    assert est(2, 64, 32, 4, "explicit", "forward+backward") > limit
    calls = []
    monkeypatch.setattr(attention_cost, "memory_budget", lambda device: calls.append(device) or limit)
    cost = attention_cost.cost_table(grid, base, rounds=1, min_run_time=0.001, device="cpu")  # "auto" limit
    assert calls == [torch.device("cpu")]
    assert sorted(cost[cost["vary"] == "N"]["N"].unique()) == [16, 32]
    assert sorted(cost[cost["vary"] == "H"]["H"].unique()) == [1, 4]
    assert [(p["N"], p["H"]) for p in cost.attrs["skipped"]] == [(64, 4)]
    note = attention_cost.skipped_note(cost)
    assert note.startswith("Not measured, since they would not fit the") and "N = 64" in note
    assert note in p04.cost_sentences(cost)
    # without a limit (a CPU's default) nothing is skipped, and the note is empty
    full = attention_cost.cost_table({"N": [16, 64]}, base, rounds=1, min_run_time=0.001, device="cpu",
                                     memory_limit=None)
    assert sorted(full["N"].unique()) == [16, 64] and attention_cost.skipped_note(full) == ""
    with pytest.raises(ValueError, match="no grid point fits"):
        attention_cost.cost_table(grid, base, rounds=1, min_run_time=0.001, device="cpu", memory_limit=1)


def test_the_default_budget_is_the_memory_this_process_can_allocate(monkeypatch):
    from cvaia import attention_cost, devices

    monkeypatch.setattr(devices, "cuda_free_bytes", lambda device: 20 * 2**30)
    assert attention_cost.memory_budget(torch.device("cuda", 0)) == int(0.9 * 20 * 2**30)
    assert attention_cost.memory_budget(torch.device("cpu")) is None


# ---- item 3: crops larger than the images ----------------------------------------------------------
def test_crop_fill_share():
    from cvaia.train import crop_fill_share

    assert crop_fill_share(256, 1.0, 128, 256) == 0.5  # the full profile on the synthetic set
    assert crop_fill_share(256, 1.0, 256, 512) == 0.0
    assert crop_fill_share(256, 2.0, 128, 256) == 0.0  # zoomed in 2x, the crop covers 128² pixels
    assert crop_fill_share(96, 1.0, 64, 128) == pytest.approx(1 / 3)


def test_a_crop_larger_than_the_images_warns_once_and_is_recorded(tiny_root, tmp_path):
    """Before: 256² crops of the 128×256 synthetic set trained silently on half-empty crops."""
    import warnings

    from cvaia.config import make_config
    from cvaia.errors import ConfigNotice
    from cvaia.runs import Run
    from cvaia.train import train

    cfg = make_config(dataset_root=str(tiny_root), aug_input_crop_size=96, batch_size=2, num_epochs=2,
                      max_train_images=2, max_val_images=2, device="cpu", quiet=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = Run(train(cfg, run_dir=tmp_path / "big").run_dir)
    notices = [str(w.message) for w in caught if issubclass(w.category, ConfigNotice)]
    assert len(notices) == 1, notices
    assert notices[0].startswith("--aug_input_crop_size 96 exceeds the training images") and "(64x128): 33%" in notices[0]
    assert run.meta["crop_fill_share"] == pytest.approx(1 / 3)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        small = Run(train(cfg.replace(aug_input_crop_size=64), run_dir=tmp_path / "fits").run_dir)
    assert not [w for w in caught if issubclass(w.category, ConfigNotice)]
    assert small.meta["crop_fill_share"] == 0.0


# ---- item 13: what --sync_batchnorm costs, next to the flag ----------------------------------------
def test_sync_batchnorm_help_states_its_host_syncs():
    """The flag's help names the host synchronisation per BatchNorm layer and the layer counts;
    both are checked here against torch's SyncBatchNorm source and the built models."""
    import inspect
    from dataclasses import fields

    import torch.nn.modules._functions as bn_functions

    from cvaia.config import Config, make_config
    from cvaia.models import build_model

    help_text = next(f.metadata["help"] for f in fields(Config) if f.name == "sync_batchnorm")
    assert "host synchronisation in every BatchNorm layer's forward" in help_text
    source = inspect.getsource(bn_functions.SyncBatchNorm.forward)
    assert "count_all[mask]" in source  # boolean-mask indexing: nonzero, which waits for the GPU
    for name, count in (("deeplabv3p", 27), ("deeplabv3p_multitask", 34)):
        model = build_model(make_config(model_name=name))
        assert sum(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()) == count
        assert f"{count} layers in {name}" in help_text or f"{count} in {name}" in help_text


# ---- item 15: what the README promises about determinism ---------------------------------------------
def test_readme_determinism_says_what_holds_where():
    """The promise of identical metrics is a CPU promise; on CUDA cudnn.benchmark and atomics
    make runs differ, and --precision fp32 convolutions run in TF32 by PyTorch's default (checked
    here: cvaia does not change it)."""
    import re
    from pathlib import Path

    import cvaia

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    para = re.search(r"\*\*Determinism\.\*\*(.*?)\n\n", readme, re.S).group(1)
    assert para.lstrip().startswith("On a CPU, training metrics are the same in every execution")
    for needed in ("cudnn.benchmark", "atomics", "TF32", "allow_tf32"):
        assert needed in para, needed
    assert torch.backends.cudnn.allow_tf32 is True
    sources = "".join(p.read_text() for p in Path(cvaia.__file__).parent.rglob("*.py"))
    assert "allow_tf32" not in sources and "set_float32_matmul_precision" not in sources


# ---- item 11: bench's fast arm times what training runs ------------------------------------------
def test_bench_fast_arm_sets_cudnn_benchmark_like_the_trainer(tiny_root):
    from cvaia.bench import BenchSettings, run_arm

    s = BenchSettings(size=32, batch_size=2, steps=1, warmup=1, device="cpu", workers=0, dataset_root=str(tiny_root))
    before = torch.backends.cudnn.benchmark
    fast = run_arm("deeplabv3p", "fast", s)
    ref = run_arm("deeplabv3p", "reference", s)
    assert fast["cudnn_benchmark"] is True and ref["cudnn_benchmark"] is False
    assert torch.backends.cudnn.benchmark == before  # the caller's setting is left as it was


# ---- item 9: DDP evaluation and dropout ------------------------------------------------------------
def test_each_rank_gets_its_own_dropout_stream_and_rank_0_keeps_its_own():
    from cvaia.distributed import DistInfo, seed_rank

    def stream(info):
        torch.manual_seed(3)
        seed_rank(3, info)
        return torch.rand(4)

    single, r0, r1, r2 = (stream(i) for i in (DistInfo(), DistInfo(0, 3), DistInfo(1, 3), DistInfo(2, 3)))
    torch.manual_seed(3)
    assert torch.equal(single, torch.rand(4)) and torch.equal(r0, single)  # runs of one process unchanged
    assert not torch.equal(r1, r0) and not torch.equal(r2, r0) and not torch.equal(r1, r2)


def _buffers_worker(rank: int, init: str, out: str) -> None:
    import torch.distributed as dist

    from cvaia.distributed import DistInfo, broadcast_buffers_

    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        bn = torch.nn.BatchNorm2d(3)
        bn.train()
        bn(torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(rank)) + rank)  # each rank its stats
        broadcast_buffers_(bn, DistInfo(rank, 2))
        torch.save({k: v.clone() for k, v in bn.state_dict().items()}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_ranks_evaluate_rank_0s_batchnorm_statistics(tmp_path):
    """After a DDP epoch each rank's BatchNorm running statistics are its own (DDP broadcasts
    them before each forward; the forward updates them); broadcast_buffers_ (called before
    evaluation) gives every rank rank 0's, the ones its checkpoint saves."""
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rendezvous'}"
    out = str(tmp_path / "buffers")
    mp.spawn(_buffers_worker, args=(init, out), nprocs=2, join=True)
    a, b = (torch.load(f"{out}.{r}") for r in range(2))
    assert all(torch.equal(a[k], b[k]) for k in a)
    bn = torch.nn.BatchNorm2d(3).train()
    bn(torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0)))
    torch.testing.assert_close(a["running_mean"], bn.running_mean)  # rank 0's own


# ---- item 10: the data path is the job's, chosen once --------------------------------------------
def _data_path_worker(rank: int, init: str, root: str, out: str) -> None:
    from pathlib import Path

    import torch.distributed as dist

    from cvaia.config import make_config
    from cvaia.data import train_batches
    from cvaia.distributed import DistInfo
    from cvaia.train import job_data_path

    # rank 1 runs on a node with little free memory: on its own it would pick the DataLoader
    train_batches.available_ram = (lambda: 2**40) if rank == 0 else (lambda: 1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=2)
    try:
        cfg = make_config(dataset_root=root, device="cpu")
        alone = train_batches.choose_data_path(cfg, Path(root))
        torch.save({"alone": alone, "job": job_data_path(cfg, Path(root), DistInfo(rank, 2))}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_every_rank_takes_rank_0s_data_path(tiny_root, tmp_path):
    import torch.multiprocessing as mp

    out = str(tmp_path / "paths")
    mp.spawn(_data_path_worker, args=(f"file://{tmp_path / 'rdv'}", str(tiny_root), out), nprocs=2, join=True)
    got = [torch.load(f"{out}.{r}") for r in range(2)]
    assert [g["alone"] for g in got] == ["preload", "loader"]  # what each would pick by itself
    assert [g["job"] for g in got] == ["preload", "preload"]
