"""CUDA code paths without a GPU: PyTorch's FakeTensorMode with CUDA fake tensors.

Inside :class:`~torch._subclasses.fake_tensor.FakeTensorMode` tensors created with
``device="cuda"`` are *fake* CUDA tensors: shapes, dtypes, strides and devices are computed
(the meta kernels), no data exists. This is enough to check, in CI and without a GPU:

- **CUDA autocast** (bf16 and fp16): autocast dispatches on the tensors' device, so its CUDA
  casting policy (e.g. ``upsample_bilinear2d`` and ``exp`` in fp32, ``cat`` promoting to the
  widest input) applies to fake CUDA tensors exactly as on a GPU. torch only refuses to
  *enter* CUDA autocast when no GPU is present, so the fixture lifts that check;
- **no host synchronisation**: fake tensors have no values, so any op whose result depends on
  data (``.item()``, ``bool(t)``, ``nonzero``, boolean-mask indexing, CUDA ``bincount``)
  raises ``DataDependentOutputException`` / ``DynamicOutputShapeException``; device→host
  copies (``.cpu()``, ``.tolist()`` go through ``item``) are caught by :class:`OpLog`;
- **where bf16/fp16 values flow**: :class:`OpLog` records every aten op with its inputs and
  outputs, so a test can ask which op produced a tensor and in which dtype.

Not covered here (needs a GPU, see ``python -m cvaia doctor``): backward (the autograd engine
needs a CUDA context), GradScaler's step, cuDNN algorithm choice, real timings and memory.
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from torch._subclasses.fake_tensor import FakeTensorMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from cvaia.config import make_config
from cvaia.data.augment import BatchAugment
from cvaia.evaluate import predict_batch
from cvaia.losses import MultiTaskLoss
from cvaia.metrics import ConfusionMatrix, DepthMetrics
from cvaia.models import build_model

aten = torch.ops.aten

#: ops that move or re-view values without computing new ones (walked through by `producer`)
PASS_THROUGH = {
    aten._to_copy, aten.view, aten._unsafe_view, aten.reshape, aten.slice, aten.select, aten.squeeze,
    aten.unsqueeze, aten.expand, aten.permute, aten.transpose, aten.t, aten.alias, aten.clone,
    aten.contiguous, aten.upsample_bilinear2d, aten.clamp, aten.split, aten.split_with_sizes,
    aten.detach, aten.as_strided, aten.squeeze_copy, aten.unsqueeze_copy, aten.view_copy,
}
LOW = (torch.bfloat16, torch.float16)


class OpLog(TorchDispatchMode):
    """Records every aten call (op, tensor inputs, tensor outputs) and device→host copies."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple] = []
        self.producer: dict[int, int] = {}  # id(output tensor) → index into calls
        self.host_copies: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        ins = [a for a in tree_flatten((args, kwargs))[0] if isinstance(a, torch.Tensor)]
        outs = [o for o in tree_flatten(out)[0] if isinstance(o, torch.Tensor)]
        packet = func.overloadpacket
        if any(i.device.type == "cuda" for i in ins) and any(o.device.type == "cpu" for o in outs):
            self.host_copies.append(str(func))
        if packet is aten.copy_ and args[0].device.type == "cpu" and args[1].device.type == "cuda":
            self.host_copies.append(str(func))
        self.calls.append((packet, ins, outs))  # keeps the tensors alive: ids stay unique
        for o in outs:
            self.producer[id(o)] = len(self.calls) - 1
        return out

    def source(self, t: torch.Tensor):
        """``(op, output dtype)`` of the op that computed ``t``'s values: walks back through
        views, casts, resizes and clamps (None for a tensor made outside, e.g. a parameter)."""
        while id(t) in self.producer:
            packet, ins, outs = self.calls[self.producer[id(t)]]
            if packet not in PASS_THROUGH or not ins:
                return packet, outs[0].dtype
            t = ins[0]
        return None, t.dtype

    def ops(self, packet):
        return [(ins, outs) for p, ins, outs in self.calls if p is packet]


@pytest.fixture()
def fake_cuda(monkeypatch):
    """A context factory: ``with fake_cuda() as log:`` runs under FakeTensorMode with CUDA
    autocast allowed and every op recorded in ``log`` (an :class:`OpLog`)."""
    import torch.cuda.amp.common as amp_common

    # torch refuses to enter CUDA autocast without a GPU ("CUDA is not available ... Disabling
    # autocast") and asks the device whether it has bf16: lift both checks, nothing else.
    monkeypatch.setattr(amp_common, "amp_definitely_not_available", lambda: False)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)

    @contextlib.contextmanager
    def ctx():
        log = OpLog()
        with FakeTensorMode(allow_non_fake_inputs=True), log:
            yield log

    return ctx


def _cfg(model_name: str, impl: str = "fast"):
    tasks = "depth" if model_name == "adaptive_depth" else "semseg,depth"
    return make_config(model_name=model_name, tasks=tasks, attention_impl=impl, transformer_dim=32,
                       num_bins=16, num_heads=2, num_transformer_layers=1, cross_attention_chunk=64)


def _cuda_model(cfg):
    # channels_last on the real CPU module (the trainer's model.to(memory_format=...)); the
    # move to the fake GPU keeps the strides.
    return build_model(cfg).to(memory_format=torch.channels_last)


def _check_precision_flow(log: OpLog, out: dict, dtype: torch.dtype) -> None:
    """The mixed-precision rules of cvaia's models (issue 10, item 7)."""
    convs = [outs[0].dtype for _, outs in log.ops(aten.convolution)]
    assert convs and convs.count(dtype) > len(convs) // 2, "autocast did not run the convs in low precision"
    # No concat promotes low-precision activations to fp32 (mixed-dtype inputs).
    for ins, _ in log.ops(aten.cat):
        assert len({t.dtype for t in ins}) == 1, [t.dtype for t in ins]
    # No bilinear resize of a low-precision tensor hands an fp32 result on (autocast's fp32
    # policy): a resize computed in fp32 (issue 18: so is its backward) is cast straight back.
    for ins, outs in log.ops(aten.upsample_bilinear2d):
        src = ins[0]
        while id(src) in log.producer and log.calls[log.producer[id(src)]][0] is aten._to_copy:
            src = log.calls[log.producer[id(src)]][1][0]
        if src.dtype == outs[0].dtype:
            continue
        back = [o for _, i, o in ((c[0], c[1], c[2]) for c in log.calls if c[0] is aten._to_copy)
                if i and i[0] is outs[0]]
        assert back and back[0][0].dtype == src.dtype, f"upsample of a {src.dtype} tensor ran in {outs[0].dtype}"
    # Log-depth and bin depths are computed in fp32 before exp, and so is the returned depth.
    exps = log.ops(aten.exp)
    assert exps, "no exp in a depth model"
    for ins, _ in exps:
        op, computed = log.source(ins[0])
        assert computed == torch.float32, f"exp of a value computed by {op} in {computed}"
    op, computed = log.source(out["depth"])
    assert computed == torch.float32, f"depth computed by {op} in {computed}"
    assert out["depth"].dtype == torch.float32


CASES = [("deeplabv3p", "fast"), ("deeplabv3p_multitask", "fast")] + [
    (m, impl) for m in ("adaptive_depth", "transformer_multitask", "cross_attention_multitask")
    for impl in ("fast", "explicit")]


@pytest.mark.parametrize("model_name, impl", CASES)
def test_forward_and_loss_under_cuda_autocast(fake_cuda, model_name, impl):
    """Each model's training forward + loss on fake CUDA tensors, channels_last, under bf16 and
    fp16 autocast: fp32 outputs and losses, low-precision activations stay low precision, the
    log-depth is fp32, and nothing reads a value back to the host."""
    cfg = _cfg(model_name, impl)
    model = _cuda_model(cfg).train()
    loss_fn = MultiTaskLoss.from_config(cfg)
    for dtype in LOW:
        # .to("cuda") swaps the parameters for fake ones in place: move copies
        net, crit = copy.deepcopy(model), copy.deepcopy(loss_fn)
        with fake_cuda() as log:
            net, crit = net.to("cuda"), crit.to("cuda")
            x = torch.randn(2, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
            targets = {"semseg": torch.randint(0, 19, (2, 64, 64), device="cuda"),
                       "depth": 1 + 50 * torch.rand(2, 1, 64, 64, device="cuda")}
            with torch.autocast("cuda", dtype=dtype):
                raw = net(x)
            forward_calls = len(log.calls)
            _check_precision_flow(log, raw, dtype)
            out = {k: v.float() for k, v in raw.items()}  # as the trainer does
            total, parts = crit(out, {k: targets[k] for k in model.tasks})
            assert total.device.type == "cuda" and total.dtype == torch.float32
            assert all(p.dtype == torch.float32 for p in parts.values())
            assert len(log.calls) > forward_calls
            assert not log.host_copies, log.host_copies
        assert set(raw) == set(model.tasks)


def test_prediction_with_tta_and_metrics(fake_cuda):
    """Evaluation on the GPU: TTA-flip prediction under bf16 autocast, confusion matrix and depth
    metrics updated on the device with no host sync (compute() reads back once, by design)."""
    cfg = _cfg("deeplabv3p")
    model = _cuda_model(cfg)
    with fake_cuda() as log:
        net = model.to("cuda")
        rgb = torch.randn(2, 3, 64, 96, device="cuda")
        out = predict_batch(net, rgb, tta_flip=True, autocast_dtype=torch.bfloat16, channels_last=True)
        assert {k: v.dtype for k, v in out.items()} == {"semseg": torch.float32, "depth": torch.float32}
        assert out["semseg"].shape == (2, 19, 64, 96) and out["depth"].shape == (2, 1, 64, 96)
        cm = ConfusionMatrix(device="cuda")
        cm.update(out["semseg"].argmax(1), torch.randint(0, 256, (2, 64, 96), device="cuda"))
        dm = DepthMetrics(device="cuda")
        dm.update(out["depth"], 80 * torch.rand(2, 1, 64, 96, device="cuda"))
        assert cm.matrix.device.type == "cuda"
        assert not log.host_copies, log.host_copies


@pytest.mark.parametrize("geometric", [False, True], ids=["crop", "warp"])
def test_augmentation_on_the_gpu(fake_cuda, geometric):
    """BatchAugment on CUDA batches (plain crops and homography warps): no data-dependent op,
    no device→host copy; float32 normalised rgb, int64 labels, float32 depth."""
    kw = dict(scale_min=0.8, scale_max=1.5, tilt_max_deg=5, wiggle_max_ratio=0.1) if geometric else {}
    aug = BatchAugment(32, reflect=True, **kw)
    with fake_cuda() as log:
        rgb = torch.randint(0, 256, (3, 3, 48, 80), dtype=torch.uint8, device="cuda")
        sem = torch.randint(0, 19, (3, 48, 80), dtype=torch.uint8, device="cuda")
        dep = 80 * torch.rand(3, 48, 80, device="cuda")
        x, y, d = aug(rgb, sem, dep)
        assert (x.device.type, x.dtype, tuple(x.shape)) == ("cuda", torch.float32, (3, 3, 32, 32))
        assert (y.dtype, tuple(y.shape)) == (torch.int64, (3, 32, 32))
        assert (d.dtype, tuple(d.shape)) == (torch.float32, (3, 1, 32, 32))
        assert not log.host_copies, log.host_copies


def test_resizes_compute_in_fp32_and_return_the_inputs_dtype(fake_cuda):
    """Issue 18, item 12: every bilinear resize of a bf16/fp16 activation runs on an fp32 input
    (so autograd's upsample_bilinear2d_backward accumulates in fp32, not with bf16 atomics) and
    its result is cast back to the activation's dtype (the concats stay low precision)."""
    cfg = _cfg("deeplabv3p")
    model = _cuda_model(cfg).train()
    for dtype in LOW:
        net = copy.deepcopy(model)
        with fake_cuda() as log:
            net = net.to("cuda")
            x = torch.randn(2, 3, 64, 64, device="cuda").contiguous(memory_format=torch.channels_last)
            with torch.autocast("cuda", dtype=dtype):
                net(x)
            ups = log.ops(aten.upsample_bilinear2d)
            assert ups
            for ins, outs in ups:
                assert ins[0].dtype == outs[0].dtype == torch.float32, (ins[0].dtype, outs[0].dtype)
            for ins, _ in log.ops(aten.cat):
                assert {t.dtype for t in ins} == {dtype}, [t.dtype for t in ins]


def test_the_harness_catches_host_syncs_and_fp32_upcasts(fake_cuda):
    """The checks above can fail: a `.item()` raises, a `.cpu()` is recorded, and autocast's
    fp32 upsample + concat promotion (the code before issue 10) break the rules."""
    from torch._subclasses.fake_tensor import (
        DataDependentOutputException,
        DynamicOutputShapeException,
    )

    with fake_cuda() as log:
        t = torch.randn(4, device="cuda")
        with pytest.raises(DataDependentOutputException):
            t.sum().item()
        with pytest.raises(DynamicOutputShapeException):
            t[t > 0]
        t.cpu()
        assert log.host_copies
    conv = torch.nn.Conv2d(3, 4, 1)
    with fake_cuda() as log:
        c = conv.to("cuda")
        x = torch.randn(1, 3, 8, 8, device="cuda")
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y = c(x)  # bf16
            up = torch.nn.functional.interpolate(y, size=(16, 16), mode="bilinear")  # fp32 by autocast
            mixed = torch.cat([up, c(torch.randn(1, 3, 16, 16, device="cuda"))], 1)
            depth = torch.exp(y)
        assert up.dtype == torch.float32 and mixed.dtype == torch.float32
        with pytest.raises(AssertionError):
            _check_precision_flow(log, {"depth": depth}, torch.bfloat16)
