"""Checks for the course's coding exercises: the student's module against cvaia's.

Each notebook has, for every module the course asks students to write, an *exercise cell* (a
stub that raises ``NotImplementedError``, or cvaia's readable reference when the notebook
parameter ``SOLUTIONS`` is True) and a *check cell* calling one function of this module, e.g.
``exercises.check_aspp(ASPP, required=SOLUTIONS)``. A check

1. builds the student's module at the course's sizes and runs it on a fixed input: the
   output's shape must be cvaia's (a wrong shape is explained: "your ASPP returns 5 branches
   concatenated without the projection: expected 256 channels, got 1280");
2. counts its parameters against cvaia's (ASPP(512, 256, (3, 6, 9)): 4,131,584);
3. copies cvaia's weights into it (by parameter name, else in order of definition; the stub's
   docstring lists the layers in that order) and compares the outputs, in training and in
   evaluation mode where BatchNorm is involved — known mistakes (no residual, softmax over
   the wrong axis, no 1/√d scaling, ...) are recognised by their output and named;
4. back-propagates and compares the gradients of every parameter (and of the input) with
   cvaia's: a parameter that gets none was not used, a wrong one was detached.

It prints one ``PASS`` line, or raises :class:`ExerciseFailed` (an ``AssertionError``) with a
message saying what to change. A module that is still the stub prints a ``TODO`` line saying
what to do; with ``required=True`` (the full workbook, ``SOLUTIONS=True``) a stub fails too.
"""

from __future__ import annotations

import copy
import math
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Tolerances of every value comparison (float32, the same weights): rtol, atol.
RTOL, ATOL = 1e-4, 1e-5
#: Gradients are sums over many terms: compared a little more loosely.
GRAD_RTOL, GRAD_ATOL = 1e-3, 1e-5


class ExerciseFailed(AssertionError):
    """A student's module does not behave like cvaia's; the message says how."""


class _Todo(Exception):
    """The student's code still raises NotImplementedError."""


def _n(x: int) -> str:
    return f"{x:,}"


def _shape(t) -> str:
    return "×".join(map(str, t.shape)) if isinstance(t, Tensor) else type(t).__name__


def n_parameters(module: nn.Module) -> int:
    """Number of (trainable and frozen) parameters of ``module``."""
    return sum(p.numel() for p in module.parameters())


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _max_diff(a: Tensor, b: Tensor) -> float:
    return float((a.detach().double() - b.detach().double()).abs().max()) if a.numel() else 0.0


def _close(a, b, rtol: float = RTOL, atol: float = ATOL) -> bool:
    return (isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape
            and bool(torch.allclose(a.detach().float(), b.detach().float(), rtol=rtol, atol=atol)))


class _Check:
    """One exercise's check: builds, calls and compares, turning every problem into a message."""

    def __init__(self, exercise: str, name: str, hints: str = "") -> None:
        self.exercise, self.name, self.hints = exercise, name, hints
        self.notes: list[str] = []

    def fail(self, message: str) -> None:
        raise ExerciseFailed(f"{self.exercise}: {message}")

    def build(self, cls, *args, **kwargs):
        call = f"{self.name}({', '.join([*map(repr, args), *(f'{k}={v!r}' for k, v in kwargs.items())])})"
        try:
            module = cls(*args, **kwargs)
        except NotImplementedError as exc:
            raise _Todo(str(exc)) from None
        except Exception as exc:  # the student's constructor: say which call and what it raised
            self.fail(f"{call} raised {type(exc).__name__}: {exc}")
        if not isinstance(module, nn.Module):
            self.fail(f"{call} returned a {type(module).__name__}, expected an nn.Module")
        return module

    def call(self, fn: Callable, *args, what: str = "forward", **kwargs):
        try:
            return fn(*args, **kwargs)
        except NotImplementedError as exc:
            raise _Todo(str(exc)) from None
        except ExerciseFailed:
            raise
        except Exception as exc:
            inputs = ", ".join(_shape(a) for a in args if isinstance(a, Tensor))
            hint = f" {self.hints}" if self.hints else ""
            self.fail(f"your {self.name}'s {what} raised {type(exc).__name__} on input(s) {inputs}: {exc}.{hint}")

    def expect_tensor(self, out, what: str) -> Tensor:
        if not isinstance(out, Tensor):
            self.fail(f"{what}: expected a tensor, got {type(out).__name__}")
        return out

    def expect_shape(self, out: Tensor, expected: Tensor, what: str, explain: Callable[[Tensor], str | None] = None):
        if out.shape != expected.shape:
            why = explain(out) if explain else None
            self.fail(f"{what}: expected shape {_shape(expected)}, got {_shape(out)}" + (f" — {why}" if why else ""))

    def expect_params(self, student: nn.Module, library: nn.Module, what: str,
                      explain: Callable[[int], str | None] | None = None) -> int:
        got, want = n_parameters(student), n_parameters(library)
        if got != want:
            why = explain(got - want) if explain else None
            self.fail(f"{what} has {_n(got)} parameters, cvaia's {_n(want)} (difference {got - want:+,})"
                      + (f" — {why}" if why else ""))
        return want

    def expect_close(self, out: Tensor, expected: Tensor, what: str, variants: dict | None = None,
                     causes: str = "") -> float:
        """Values equal to ``expected``; else the first of ``variants`` (name → tensor) it equals
        names the mistake, else ``causes`` lists the usual ones."""
        if _close(out, expected):
            return _max_diff(out, expected)
        if not torch.isfinite(out).all():
            self.fail(f"{what} holds NaN or infinite values (cvaia's is finite)" + (f"; {causes}" if causes else ""))
        for mistake, value in (variants or {}).items():
            if _close(out, value, rtol=1e-3, atol=1e-4):
                self.fail(f"{what}: not cvaia's values (max |difference| {_max_diff(out, expected):.3g}): {mistake}")
        self.fail(f"{what}: not cvaia's values with the same weights (max |difference| "
                  f"{_max_diff(out, expected):.3g})" + (f"; usual causes: {causes}" if causes else ""))

    def passed(self, summary: str) -> None:
        print(f"PASS  {self.exercise}: {summary}")


def _run(exercise: str, required: bool, body: Callable[[], None]) -> None:
    try:
        body()
    except _Todo as exc:
        message = (f"TODO  {exercise}: the exercise cell above still raises NotImplementedError ({exc}). "
                   f"Replace each `raise NotImplementedError` by your code (the docstring lists what to build), "
                   f"run that cell, then this one.")
        if required:
            raise ExerciseFailed(message.replace("TODO  ", "", 1) + " (required here: SOLUTIONS is True, so the "
                                 "exercise cell should have filled in cvaia's reference)") from None
        print(message)


# ---- copying cvaia's weights into the student's module ------------------------------------------------------------
def copy_weights(src: nn.Module, dst: nn.Module, check: _Check | None = None) -> list[tuple[str, str]]:
    """Copy every parameter and buffer of ``src`` (cvaia's module) into ``dst`` (the student's).

    Tensors are matched by name where both have the name with the same shape; the others in
    order of definition (``num_batches_tracked`` counters are skipped). Returns the pairs
    ``(src name, dst name)``; raises :class:`ExerciseFailed` (or ``ValueError`` without a
    ``check``) naming the first tensor that has no counterpart.
    """
    s = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    d = {k: v for k, v in dst.state_dict().items() if not k.endswith("num_batches_tracked")}
    pairs = [(k, k) for k in d if k in s and s[k].shape == d[k].shape]
    named = {k for k, _ in pairs}
    rest_s = [k for k in s if k not in named]
    rest_d = [k for k in d if k not in named]
    problem = None
    if len(rest_s) != len(rest_d):
        problem = (f"cvaia's holds {len(s)} weight/statistics tensors, yours {len(d)}")
    else:
        for ks, kd in zip(rest_s, rest_d, strict=True):
            if s[ks].shape != d[kd].shape:
                problem = (f"in order of definition, cvaia's {ks} ({_shape(s[ks])}) meets your {kd} "
                           f"({_shape(d[kd])})")
                break
            pairs.append((ks, kd))
    if problem:
        listing = "; ".join(f"{k} {_shape(v)}" for k, v in list(s.items())[:12])
        message = (f"cannot copy cvaia's weights into yours: {problem}. Define the layers in the order the "
                   f"docstring lists them (cvaia's tensors: {listing}{' …' if len(s) > 12 else ''})")
        if check is None:
            raise ValueError(message)
        check.fail(message)
    target = dst.state_dict()
    with torch.no_grad():
        for ks, kd in pairs:
            target[kd].copy_(s[ks])
    return pairs


def randomize_batchnorm(module: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and affine parameters (so evaluation mode is tested too)."""
    gen = _gen(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                n = m.num_features
                m.running_mean.copy_(torch.randn(n, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(n, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(n, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(n, generator=gen) * 0.1)
    return module


def _grads(module: nn.Module) -> dict[str, Tensor | None]:
    return {k: (None if p.grad is None else p.grad.detach().clone()) for k, p in module.named_parameters()}


def _compare_grads(check: _Check, student: nn.Module, library: nn.Module, pairs, extra=()) -> int:
    """Gradients of the student's parameters against cvaia's (after the same backward)."""
    s_params = dict(library.named_parameters())
    d_params = dict(student.named_parameters())
    g_lib, g_stu = _grads(library), _grads(student)
    compared = 0
    for ks, kd in pairs:
        if kd not in d_params:
            continue  # a buffer (BatchNorm statistics)
        if ks in s_params and not s_params[ks].requires_grad:
            continue
        if g_stu[kd] is None:
            check.fail(f"no gradient reaches your parameter {kd}: it is not used in forward, or its path is cut "
                       f"(.detach(), .data, torch.no_grad(), a numpy round trip)")
        if g_lib.get(ks) is not None and not _close(g_stu[kd], g_lib[ks], GRAD_RTOL, GRAD_ATOL):
            check.fail(f"the gradient of your {kd} differs from cvaia's (max |difference| "
                       f"{_max_diff(g_stu[kd], g_lib[ks]):.3g}) although the outputs agree: part of forward is "
                       f"detached or computed outside autograd (.detach(), .data, torch.no_grad(), .item())")
        compared += 1
    for what, a, b in extra:
        if a is None:
            check.fail(f"no gradient reaches the {what}: its path through your module is cut (.detach(), .data, "
                       f"torch.no_grad())")
        if b is not None and not _close(a, b, GRAD_RTOL, GRAD_ATOL):
            check.fail(f"the gradient with respect to the {what} differs from cvaia's (max |difference| "
                       f"{_max_diff(a, b):.3g})")
        compared += 1
    return compared


def _backward(outputs, gen_seed: int = 1) -> None:
    """Backward of ``Σ output · r`` with fixed random ``r`` (every output value matters)."""
    gen = _gen(gen_seed)
    outputs = [o for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs]) if isinstance(o, Tensor)]
    loss = sum((o * torch.randn(o.shape, generator=gen)).sum() for o in outputs)
    loss.backward()


# ---- 1.2b: dilated BasicBlock ------------------------------------------------------------------------------------
_BLOCK_HINTS = ("out + identity needs both of the same size: a 3×3 conv with dilation d keeps h×w "
                "only with padding=d (padding=dilation); only conv1 carries the stride")


def check_basic_block(cls, required: bool = False) -> None:
    """``cls(inplanes, planes, stride=1, downsample=None, dilation=1)`` against
    :class:`cvaia.models.DilatedBasicBlock`: layer4's dilated block (512 → 512, dilation 2, the
    report's encoder (F, F, T)) and a strided block with a downsample (64 → 128, stride 2)."""
    check = _Check("dilated BasicBlock", cls.__name__, _BLOCK_HINTS)

    def body():
        from .models import DilatedBasicBlock

        lines = []
        cases = [
            ("dilation 2 (layer4 of the (F, F, T) encoder)", dict(inplanes=512, planes=512, stride=1, dilation=2),
             (2, 512, 9, 11), None),
            ("stride 2 with a downsample (layer2's first block)", dict(inplanes=64, planes=128, stride=2, dilation=1),
             (2, 64, 16, 20), lambda: nn.Sequential(nn.Conv2d(64, 128, 1, stride=2, bias=False), nn.BatchNorm2d(128))),
        ]
        for i, (label, kw, in_shape, make_down) in enumerate(cases):
            torch.manual_seed(i)
            down = make_down() if make_down else None
            lib = DilatedBasicBlock(kw["inplanes"], kw["planes"], kw["stride"], down, dilation=kw["dilation"])
            randomize_batchnorm(lib, seed=i)
            student = check.build(cls, kw["inplanes"], kw["planes"], kw["stride"], copy.deepcopy(down),
                                  dilation=kw["dilation"])
            x = torch.randn(in_shape, generator=_gen(10 + i))
            lib.eval(), student.eval()
            with torch.no_grad():
                want = lib(x)
                got = check.expect_tensor(check.call(student, x), f"{label}: the output")

            def explain(out, kw=kw, x=x):
                h = x.shape[-2] // kw["stride"]
                if out.dim() == 4 and out.shape[-2] < h and kw["dilation"] > 1:
                    return (f"the size shrinks: pad each 3×3 conv of dilation {kw['dilation']} by "
                            f"{kw['dilation']} (padding=dilation), not 1")
                if out.dim() == 4 and out.shape[-2] != h:
                    return "only conv1 carries the stride; conv2 has stride 1"
                return None

            check.expect_shape(got, want, f"{label}: the output of a {_shape(x)} input", explain)
            n = check.expect_params(student, lib, f"{label}: your block",
                                    lambda d, planes=kw["planes"]: "a 3×3 conv before BatchNorm needs no bias "
                                    "(bias=False)" if 0 < d <= 2 * planes and d % planes == 0 else None)
            pairs = copy_weights(lib, student, check)
            variants = _block_variants(lib, x)
            for mode in ("eval", "train"):
                lib.train(mode == "train"), student.train(mode == "train")
                xs = x.clone().requires_grad_(mode == "train")
                xl = x.clone().requires_grad_(mode == "train")
                want = lib(xl)
                got = check.call(student, xs)
                check.expect_close(got, want, f"{label}, {mode} mode: the output", variants if mode == "eval" else None,
                                   "both convs dilated (not only one), ReLU after adding the identity, the identity "
                                   "from `downsample(x)` when a downsample is given")
            _backward(want), _backward(got)
            k = _compare_grads(check, student, lib, pairs, [("input", xs.grad, xl.grad)])
            lines.append(f"{label}: {_n(n)} parameters, {k} gradients")
        check.passed("; ".join(lines) + "; outputs (train and eval mode) and gradients equal cvaia's.")

    _run(check.exercise, required, body)


def _block_variants(lib: nn.Module, x: Tensor) -> dict[str, Tensor]:
    """Outputs of typical wrong BasicBlocks, with the library block's weights (eval mode)."""
    lib = copy.deepcopy(lib).eval()
    identity = x if lib.downsample is None else lib.downsample(x)
    with torch.no_grad():
        inner = lib.bn2(lib.conv2(lib.relu(lib.bn1(lib.conv1(x)))))
        out = {"you forgot the residual: add the identity (x, or downsample(x)) before the last ReLU": F.relu(inner),
               "the last ReLU is missing: return relu(out + identity)": inner + identity,
               "the ReLU comes before the addition: add the identity first, then the ReLU": F.relu(inner) + identity}
        if lib.conv1.dilation[0] > 1:
            c1 = F.conv2d(x, lib.conv1.weight, stride=lib.conv1.stride, padding=1)
            h = lib.relu(lib.bn1(c1))
            out["only conv2 is dilated: conv1 needs dilation (and padding) d too"] = lib.relu(lib.bn2(lib.conv2(h)) + identity)
            h = lib.relu(lib.bn1(lib.conv1(x)))
            c2 = F.conv2d(h, lib.conv2.weight, padding=1)
            out["only conv1 is dilated: conv2 needs dilation (and padding) d too"] = lib.relu(lib.bn2(c2) + identity)
    return out


# ---- 1.3: ASPP and the decoder -----------------------------------------------------------------------------------
def check_aspp(cls, required: bool = False) -> None:
    """``cls(in_ch, out_ch=256, rates=(3, 6, 9))`` against :class:`cvaia.models.ASPP` (512 → 256)."""
    check = _Check("ASPP", cls.__name__, "every branch must keep its input's h×w before torch.cat: a 3×3 conv "
                   "with dilation r needs padding=r, and the image-pooling branch must be upsampled back to h×w")

    def body():
        from .models import ASPP

        in_ch, out_ch, rates = 512, 256, (3, 6, 9)
        torch.manual_seed(0)
        lib = randomize_batchnorm(ASPP(in_ch, out_ch, rates))
        student = check.build(cls, in_ch, out_ch, rates)
        x = torch.randn(2, in_ch, 8, 12, generator=_gen(1))
        lib.eval(), student.eval()
        with torch.no_grad():
            want, got = lib(x), check.expect_tensor(check.call(student, x), "the output")

        def explain(out):
            if out.dim() == 4 and out.shape[1] == (2 + len(rates)) * out_ch:
                return (f"your ASPP returns {2 + len(rates)} branches concatenated without the projection: "
                        f"the 1×1 `fuse` conv maps the {out.shape[1]} channels to {out_ch}")
            if out.dim() == 4 and out.shape[1] == out_ch:
                return "every branch keeps h×w (padding = dilation rate), so the output does too"
            return None

        check.expect_shape(got, want, f"for input {_shape(x)} the output", explain)

        def explain_params(d):
            if d == (2 + len(rates)) * out_ch:
                return ("the branch convs have biases: a conv followed by BatchNorm needs none (BN subtracts "
                        "the mean, then adds its own bias): bias=False")
            if d == -out_ch:
                return "the fuse conv has no bias: it is not followed by BatchNorm, so it keeps one"
            if d == -2 * out_ch:
                return "one branch lacks its BatchNorm"
            if d == -9 * in_ch * out_ch - 2 * out_ch - out_ch * out_ch:
                return "one atrous branch is missing: one 3×3 conv per rate"
            return (f"expected 1×1 (in·out) + {len(rates)} atrous 3×3 (9·in·out each) + image pooling (in·out) + "
                    f"fuse ({2 + len(rates)}·out·out + out) + 2·out per BatchNorm ({2 + len(rates)} of them)")

        n = check.expect_params(student, lib, f"your ASPP({in_ch}, {out_ch}, {rates})", explain_params)
        pairs = copy_weights(lib, student, check)
        with torch.no_grad():
            check.expect_close(check.call(student, x), lib(x), "eval mode: the output", _aspp_variants(lib, x),
                               "the order of the concatenation (1×1, rates in order, image pooling last, as "
                               "the layers are defined), BatchNorm then ReLU in every branch, mean over h and w "
                               "for the image pooling")
        lib.train(), student.train()
        xs, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
        want, got = lib(xl), check.call(student, xs)
        check.expect_close(got, want, "training mode (batch statistics): the output")
        _backward(want), _backward(got)
        k = _compare_grads(check, student, lib, pairs, [("input", xs.grad, xl.grad)])
        check.passed(f"output {_shape(want)} for input {_shape(x)}, {_n(n)} parameters (as cvaia's and the report's), "
                     f"outputs in train and eval mode and the gradients of all {k} tensors equal cvaia's.")

    _run(check.exercise, required, body)


def _aspp_variants(lib: nn.Module, x: Tensor) -> dict[str, Tensor]:
    lib = copy.deepcopy(lib).eval()
    with torch.no_grad():
        outs = [b(x) for b in lib.branches]
        pool = lib.branches[-1].project(x.amax(dim=(2, 3), keepdim=True)).expand_as(outs[-1])
        out = {"the image-pooling branch takes the maximum: it averages over h×w (global average pooling)":
               lib.fuse(torch.cat([*outs[:-1], pool], 1))}
        rev = [outs[-1], *outs[:-1]]
        out["the image-pooling branch is concatenated first: keep the order in which the layers are defined "
            "(1×1, rates, pooling)"] = lib.fuse(torch.cat(rev, 1))
    return out


def check_decoder(cls, required: bool = False) -> None:
    """``cls(bottleneck_ch, skip_ch=64, out_ch=19, skip_channels=48, num_convs=2)`` → forward
    ``(bottleneck, skip)`` → ``(logits at stride 4, features)`` against :class:`cvaia.models.DecoderDeepLabV3p`."""
    check = _Check("DeepLabV3+ decoder", cls.__name__, "upsample the bottleneck to the skip's h×w (F.interpolate, "
                   "bilinear) before concatenating; the first 3×3 conv sees bottleneck_ch + skip_channels channels")

    def body():
        from .models import DecoderDeepLabV3p

        args = (256, 64, 19, 48, 2)
        torch.manual_seed(0)
        lib = randomize_batchnorm(DecoderDeepLabV3p(*args))
        student = check.build(cls, *args)
        gen = _gen(2)
        b, s = torch.randn(2, 256, 4, 6, generator=gen), torch.randn(2, 64, 16, 24, generator=gen)
        lib.eval(), student.eval()
        with torch.no_grad():
            want = lib(b, s)
            got = check.call(student, b, s)
        if not (isinstance(got, tuple) and len(got) == 2):
            check.fail(f"forward must return a pair (logits, features) — the logits for the loss, the "
                       f"{args[-1]}-conv features for later heads — got {type(got).__name__}")
        check.expect_tensor(got[0], "the logits")

        def explain(out):
            if out.dim() == 4 and tuple(out.shape[-2:]) == tuple(b.shape[-2:]):
                return "the logits are at the bottleneck's size: upsample to the skip's size (stride 4) first"
            if out.dim() == 4 and out.shape[1] != args[2]:
                return f"the last 1×1 conv maps the 256 features to out_ch = {args[2]} classes"
            return None

        check.expect_shape(got[0], want[0], f"for bottleneck {_shape(b)} and skip {_shape(s)} the logits", explain)
        check.expect_shape(check.expect_tensor(got[1], "the features"), want[1], "the features (before the last conv)")

        def explain_params(d):
            if d == -48 * 9 * 256:
                return "the first 3×3 conv sees only the bottleneck: concatenate the projected skip (48 ch) to it"
            if d == 9 * 256 * 256 + 256 + 2 * 256:
                return "one 3×3 conv (+ BN) too many: num_convs=2"
            if d == -2 * 256:
                return "the 3×3 convs have no bias: the course's decoder convs keep theirs (bias=True)"
            if d in (-48, -19):
                return "a 1×1 conv lacks its bias: the skip projection and the head keep theirs (no BN after them)"
            return ("expected skip 1×1 (64·48 + 48) + num_convs × [3×3 conv (with bias) + BN] + 1×1 head "
                    "(256·19 + 19)")

        n = check.expect_params(student, lib, "your decoder(256, 64, 19, 48, 2)", explain_params)
        pairs = copy_weights(lib, student, check)
        with torch.no_grad():
            variants = {}
            lib_e = copy.deepcopy(lib).eval()
            up = F.interpolate(b, size=s.shape[-2:], mode="bilinear", align_corners=False)
            variants["the concatenation is [skip, bottleneck]: put the upsampled bottleneck first"] = \
                lib_e.head(lib_e.convs(torch.cat([lib_e.skip_proj(s), up], 1)))
            upn = F.interpolate(b, size=s.shape[-2:], mode="nearest")
            variants["the bottleneck is upsampled by nearest neighbour: use bilinear (align_corners=False)"] = \
                lib_e.head(lib_e.convs(torch.cat([upn, lib_e.skip_proj(s)], 1)))
            upa = F.interpolate(b, size=s.shape[-2:], mode="bilinear", align_corners=True)
            variants["align_corners=True: use align_corners=False, as everywhere in cvaia"] = \
                lib_e.head(lib_e.convs(torch.cat([upa, lib_e.skip_proj(s)], 1)))
            got = check.call(student, b, s)
            check.expect_close(got[0], lib(b, s)[0], "eval mode: the logits", variants,
                               "bilinear upsampling with align_corners=False, [upsampled bottleneck, projected skip] "
                               "in this order, conv → BN → ReLU")
        lib.train(), student.train()
        bs, bl = b.clone().requires_grad_(), b.clone().requires_grad_()
        want, got = lib(bl, s), check.call(student, bs, s)
        check.expect_close(got[0], want[0], "training mode: the logits")
        _backward(want[0]), _backward(got[0])
        k = _compare_grads(check, student, lib, pairs, [("bottleneck input", bs.grad, bl.grad)])
        check.passed(f"logits {_shape(want[0])} at stride 4, {_n(n)} parameters, outputs (train and eval mode) "
                     f"and the gradients of all {k} tensors equal cvaia's.")

    _run(check.exercise, required, body)


# ---- 2: SILog ----------------------------------------------------------------------------------------------------
def check_silog(fn, required: bool = False) -> None:
    """``fn(pred_m, target_m, lam=0.15)`` → a scalar, against :func:`cvaia.losses.silog` on a
    noisy prediction of a random depth map with 20 % invalid (0) pixels."""
    check = _Check("SILog loss", getattr(fn, "__name__", "silog"))

    def body():
        from .losses import silog

        gen = _gen(3)
        target = torch.rand(2, 1, 12, 16, generator=gen) * 79 + 1
        target[torch.rand(target.shape, generator=gen) < 0.2] = 0.0   # invalid pixels (no depth)
        pred = (target.clamp_min(1) * 1.3 * torch.exp(0.2 * torch.randn(target.shape, generator=gen)))
        results = []
        for lam in (0.15, 0.0, 1.0):
            ps, pl = pred.clone().requires_grad_(), pred.clone().requires_grad_()
            want = silog(pl, target, lam)
            got = check.expect_tensor(check.call(fn, ps, target, lam, what="call"), f"silog(pred, target, {lam})")
            if got.dim() != 0:
                check.fail(f"silog(pred, target, {lam}) must return a scalar (0-dim tensor), got shape {_shape(got)}: "
                           f"average over all valid pixels of the batch")
            if not torch.isfinite(got):
                check.fail(f"silog(pred, target, {lam}) = {got.item()}: the 20 % pixels with target 0 (no depth) must "
                           f"be left out before taking log (mask = target > 0)")
            valid = target > 0
            e = torch.log(target[valid]) - torch.log(pred[valid])
            e_all = torch.log(target.clamp_min(1e-3)) - torch.log(pred)
            variants = {
                "no square root: return sqrt(Var(e) + λ·E[e]²)": e.var(unbiased=False) + lam * e.mean() ** 2,
                "λ and 1 − λ are swapped: sqrt(E[e²] − (1 − λ)·E[e]²) = sqrt(Var(e) + λ·E[e]²)":
                    torch.sqrt(((e * e).mean() - lam * e.mean() ** 2).clamp_min(0)),
                "the mean uses all pixels: keep only those with target > 0 (mask before the mean)":
                    torch.sqrt(((e_all * e_all).mean() - (1 - lam) * e_all.mean() ** 2).clamp_min(0)),
                "the mean term is added: subtract it, sqrt(E[e²] − (1 − λ)·E[e]²)":
                    torch.sqrt(((e * e).mean() + (1 - lam) * e.mean() ** 2)),
            }
            check.expect_close(got, want, f"silog(pred, target, λ={lam})", variants,
                               "e = log(target) − log(pred) on valid pixels; sqrt(mean(e²) − (1 − λ)·mean(e)²)")
            _backward(want), _backward(got)
            if ps.grad is None:
                check.fail("no gradient reaches the prediction: is the loss computed from `pred` (not a detached "
                           "copy or numpy)?")
            if ps.grad[~valid].abs().max() > 0:
                check.fail("invalid pixels (target 0) get a gradient: leave them out of the loss")
            if not _close(ps.grad, pl.grad, GRAD_RTOL, 1e-7):
                check.fail(f"the gradient with respect to the prediction differs from cvaia's (max |difference| "
                           f"{_max_diff(ps.grad, pl.grad):.3g})")
            results.append(f"λ={lam}: {got.item():.4f}")
        with torch.no_grad():
            a, b = check.call(fn, pred, target, 0.0, what="call"), check.call(fn, 2.5 * pred, target, 0.0, what="call")
        if not _close(a, b, 1e-4, 1e-6):
            check.fail(f"with λ = 0 the loss must not change when the prediction is scaled (×2.5): {a.item():.5f} vs "
                       f"{b.item():.5f}")
        check.passed(f"{', '.join(results)} as cvaia's; invalid pixels get no gradient; λ = 0 is scale invariant.")

    _run(check.exercise, required, body)


# ---- 3: the branched multi-task model ----------------------------------------------------------------------------
def check_branched(cls, required: bool = False) -> None:
    """``cls(encoder, aspp={task: ASPP}, decoder={task: decoder})`` → ``forward(x)`` →
    ``{"semseg": logits, "depth": metres}``, built from cvaia's parts, against
    :class:`cvaia.models.DeepLabV3pMultiTask` made of the *same* parts."""
    check = _Check("branched multi-task model", cls.__name__,
                   "the decoders return (prediction, features); the encoder returns {stride: features}: the "
                   "bottleneck is the deepest (features[16] here), the skip features[4]")

    def body():
        from .models import deeplabv3p_multitask

        torch.manual_seed(0)
        lib = deeplabv3p_multitask(encoder="resnet18", weights="random")
        randomize_batchnorm(lib)
        student = check.build(cls, lib.encoder, {t: lib.aspp[t] for t in lib.tasks},
                              {t: lib.decoder[t] for t in lib.tasks})
        x = torch.randn(2, 3, 32, 48, generator=_gen(4))
        lib.eval(), student.eval()
        with torch.no_grad():
            want = lib(x)
            got = check.call(student, x)
        if not isinstance(got, dict) or set(got) != {"semseg", "depth"}:
            keys = sorted(got) if isinstance(got, dict) else type(got).__name__
            check.fail(f"forward must return a dict with keys 'semseg' and 'depth', got {keys}")
        for task in ("semseg", "depth"):
            check.expect_tensor(got[task], f"output {task!r}")
            check.expect_shape(got[task], want[task], f"for input {_shape(x)} the {task} output",
                               lambda o: "upsample to the input's size (bilinear)" if o.dim() == 4 and o.shape[-1] < x.shape[-1]
                               else None)
        n_lib, n_stu = n_parameters(lib), n_parameters(student)
        if n_stu < n_lib:
            missing = n_lib - n_stu
            check.fail(f"your model has {_n(n_stu)} parameters, cvaia's {_n(n_lib)}: {_n(missing)} are not registered — "
                       f"keep the per-task modules in nn.ModuleDict (a plain dict hides them from .parameters(), "
                       f"the optimizer and the checkpoint)")
        check.expect_params(student, lib, "your branched model")
        d = got["depth"]
        if d.min() < 0.1 - 1e-6 or d.max() > 300 + 1e-3:
            check.fail(f"the depth output spans {d.min().item():.3g} … {d.max().item():.3g}: the decoder predicts "
                       f"log-depth; return exp(x).clamp(0.1, 300) metres")
        check.expect_close(got["semseg"], want["semseg"], "the semseg logits",
                           causes="the semseg branch uses aspp['semseg'] and decoder['semseg'] on the bottleneck, "
                           "with the stride-4 skip")
        with torch.no_grad():
            feats = lib.encoder(x)
            bott, skip = feats[lib.encoder.output_stride], feats[4]
            shared = F.interpolate(lib.decoder["depth"](lib.aspp["semseg"](bott), skip)[0], size=x.shape[-2:],
                                   mode="bilinear", align_corners=False)
        check.expect_close(got["depth"], want["depth"], "the depth output",
                           {"the depth branch uses the semseg ASPP: each task has its own ASPP (aspp['depth'])":
                            torch.exp(shared).clamp(0.1, 300)},
                           "each task has its own ASPP and decoder; exp(x).clamp(0.1, 300) after upsampling")
        # the student's model holds cvaia's modules: backward through each model in turn, same upstream gradient
        lib.train(), student.train()
        got = check.call(student, x)
        _backward([got["semseg"], got["depth"]])
        g_stu = _grads(lib)
        lib.zero_grad(set_to_none=True)
        want = lib(x)
        _backward([want["semseg"], want["depth"]])
        g_lib = _grads(lib)
        lost = [k for k, g in g_stu.items() if g is None or (g_lib[k] is not None and not _close(g, g_lib[k], 1e-2, 1e-4))]
        if lost:
            check.fail(f"the gradients of {len(lost)} parameters differ from cvaia's (first: {lost[0]}): every task's "
                       f"loss must reach the shared encoder and its own branch")
        check.passed(f"semseg {_shape(want['semseg'])} logits and depth {_shape(want['depth'])} metres equal cvaia's "
                     f"branched model built from the same parts; {_n(n_lib)} parameters; gradients reach every part.")

    _run(check.exercise, required, body)


# ---- 4: attention, transformer block, latents, positional embedding, bins ---------------------------------------
def _attention_variants(lib, x: Tensor) -> dict[str, Tensor]:
    """Attention weights of typical mistakes (B×H×N×N), from the library module's weights."""
    with torch.no_grad():
        h = lib.norm(x)
        q, k = lib._split(lib.to_q(h)), lib._split(lib.to_k(h))
        scores = q @ k.transpose(-2, -1)
        d = lib.head_dim
        return {"the scores are not scaled: divide Q·Kᵀ by √d_k": scores.softmax(-1),
                f"the scores are divided by √C = √{lib.dim}: divide by √d_k = √(C/H) = √{d}, the width of one head":
                    (scores / math.sqrt(lib.dim)).softmax(-1),
                "the softmax runs over the queries (dim=-2): each query's weights over the keys must sum to 1 "
                "(softmax(dim=-1))": (scores / math.sqrt(d)).softmax(-2)}


def check_self_attention(cls, required: bool = False) -> None:
    """``cls(dim, num_heads)`` → ``forward(x B×N×C)`` → ``(output B×N×C, weights B×H×N×N)``
    against :class:`cvaia.models.SelfAttention` (dim 256, 4 heads)."""
    check = _Check("multi-head self-attention", cls.__name__,
                   "B×N×C → view(B, N, H, C/H) → transpose(1, 2) gives B×H×N×d_k")

    def body():
        from .models import SelfAttention

        dim, heads = 256, 4
        torch.manual_seed(0)
        lib = SelfAttention(dim, heads, dropout=0.0, impl="explicit")
        student = check.build(cls, dim, heads)
        x = torch.randn(2, 10, dim, generator=_gen(5))
        with torch.no_grad():
            y_l, w_l = lib(x, return_attention=True)
            got = check.call(student, x)
        if not (isinstance(got, tuple) and len(got) == 2):
            check.fail(f"forward must return (output, attention weights), got {type(got).__name__}")
        y, w = check.expect_tensor(got[0], "the output"), check.expect_tensor(got[1], "the weights")
        check.expect_shape(y, y_l, f"for tokens {_shape(x)} the output")
        check.expect_shape(w, w_l, "the attention weights (B, H, N, N)",
                           lambda o: "one N×N map per head: keep the head axis" if o.dim() == 3 else None)
        n = check.expect_params(student, lib, f"your attention({dim}, {heads})",
                                lambda d: "a LayerNorm (2·C) is missing: pre-norm, normalise the input first"
                                if d == -2 * dim else "expected LayerNorm (2·C) + Q, K, V, out Linear(C, C) with bias")
        pairs = copy_weights(lib, student, check)
        with torch.no_grad():
            y, w = check.call(student, x)
        check.expect_close(w, w_l, "the attention weights", _attention_variants(lib, x))
        check.expect_close(y, y_l, "the output", causes="merge the heads back with transpose(1, 2) then reshape(B, N, C) "
                           "(a reshape alone mixes heads and tokens), then the output projection")
        xs, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
        yl, _ = lib(xl, return_attention=True)
        ys, _ = check.call(student, xs)
        _backward(yl), _backward(ys)
        k = _compare_grads(check, student, lib, pairs, [("input tokens", xs.grad, xl.grad)])
        check.passed(f"output {_shape(y_l)} and weights {_shape(w_l)} (rows sum to 1) equal cvaia's, {_n(n)} "
                     f"parameters, gradients of all {k} tensors equal.")

    _run(check.exercise, required, body)


def check_transformer_block(cls, required: bool = False) -> None:
    """``cls(dim, num_heads, expansion=4)`` → ``forward(x B×N×C)`` → B×N×C against
    :class:`cvaia.models.TransformerBlock` (pre-norm, residuals, GELU MLP)."""
    check = _Check("transformer block", cls.__name__)

    def body():
        from .models import TransformerBlock

        dim, heads, e = 256, 4, 4
        torch.manual_seed(0)
        lib = TransformerBlock(dim, heads, e, dropout=0.0, impl="explicit")
        student = check.build(cls, dim, heads, e)
        x = torch.randn(2, 10, dim, generator=_gen(6))
        with torch.no_grad():
            want = lib(x)
            got = check.call(student, x)
        if isinstance(got, tuple):
            check.fail("forward returns a tuple: the block returns the tokens only (your attention returns "
                       "(output, weights): take its first element)")
        check.expect_shape(check.expect_tensor(got, "the output"), want, f"for tokens {_shape(x)} the output")

        def explain_params(d):
            if d == -2 * dim:
                return "a LayerNorm is missing: the attention and the MLP each normalise their own input"
            if d < 0 and d % dim == 0:
                return f"the MLP's hidden width is C·expansion = {dim * e}"
            return "expected attention (LayerNorm + 4 Linear(C, C)) + MLP (LayerNorm, Linear(C, eC), Linear(eC, C))"

        n = check.expect_params(student, lib, f"your block({dim}, {heads}, {e})", explain_params)
        pairs = copy_weights(lib, student, check)
        with torch.no_grad():
            a = lib.attn(x)
            net = lib.mlp.net
            mlp_relu = lambda t: net[4](F.relu(net[1](net[0](t))))  # noqa: E731
            x1 = x + a
            variants = {"the residual around the attention is missing: x = x + attn(x)": a + lib.mlp(a),
                        "the residual around the MLP is missing: return x + mlp(x)": lib.mlp(x1),
                        "the MLP uses ReLU: the course's MLP uses GELU": x1 + mlp_relu(x1),
                        "post-norm: the course block normalises each branch's input (pre-norm), not the sum":
                            F.layer_norm(x1 + lib.mlp(x1), (dim,))}
            got = check.call(student, x)
        check.expect_close(got, want, "the output", variants, "pre-norm residuals x + attn(x), then x + mlp(x)")
        xs, xl = x.clone().requires_grad_(), x.clone().requires_grad_()
        want, got = lib(xl), check.call(student, xs)
        _backward(want), _backward(got)
        k = _compare_grads(check, student, lib, pairs, [("input tokens", xs.grad, xl.grad)])
        check.passed(f"output {_shape(want)} equals cvaia's, {_n(n)} parameters, gradients of all {k} tensors equal.")

    _run(check.exercise, required, body)


def check_latents(cls, required: bool = False) -> None:
    """``cls(num_latents)`` → ``forward(x B×C×h×w)`` → B×N×C against :class:`cvaia.models.LatentsExtractor`."""
    check = _Check("latents extractor", cls.__name__)

    def body():
        from .models import LatentsExtractor

        lib = LatentsExtractor(16)
        student = check.build(cls, 16)
        x = torch.randn(2, 8, 12, 20, generator=_gen(7))
        want = lib(x)
        got = check.expect_tensor(check.call(student, x), "the tokens")
        check.expect_shape(got, want, f"for features {_shape(x)} the tokens (B, N, C)",
                           lambda o: "the tokens are B×C×N: transpose(1, 2) after flatten(2)"
                           if tuple(o.shape) == (2, 8, 16) else None)
        if n_parameters(student):
            check.fail(f"your extractor has {_n(n_parameters(student))} parameters: it only resizes and flattens "
                       f"(a projection, if any, belongs to the head)")
        grid = F.interpolate(x, size=(4, 4), mode="bilinear", align_corners=False)
        variants = {
            "adaptive average pooling: the course resizes bilinearly (F.interpolate(..., mode='bilinear', "
            "align_corners=False))": F.adaptive_avg_pool2d(x, 4).flatten(2).transpose(1, 2),
            "align_corners=True: use align_corners=False": F.interpolate(x, size=(4, 4), mode="bilinear",
                                                                          align_corners=True).flatten(2).transpose(1, 2),
            "a reshape mixes channels and positions: flatten(2), then transpose(1, 2)": grid.reshape(2, 16, 8),
            "the tokens run column by column: flatten the √N×√N grid row by row (flatten(2))":
                grid.transpose(2, 3).flatten(2).transpose(1, 2),
        }
        check.expect_close(got, want, "the tokens", variants)
        xs = x.clone().requires_grad_()
        _backward(check.call(student, xs))
        xl = x.clone().requires_grad_()
        _backward(lib(xl))
        _compare_grads(check, student, lib, [], [("feature map", xs.grad, xl.grad)])
        try:
            cls(60)
        except ValueError:
            pass
        except NotImplementedError as exc:
            raise _Todo(str(exc)) from None
        except Exception as exc:
            check.fail(f"{cls.__name__}(60) raised {type(exc).__name__}; raise a ValueError saying num_latents must "
                       f"be a perfect square")
        else:
            check.fail(f"{cls.__name__}(60) was accepted: 60 tokens do not form a square grid; raise ValueError "
                       f"in __init__ (math.isqrt)")
        check.passed(f"{_shape(x)} → {_shape(want)} tokens (row by row over the 4×4 grid) equal cvaia's; no "
                     f"parameters; gradients reach the feature map; num_latents=60 is refused.")

    _run(check.exercise, required, body)


def check_positional_embedding(cls, required: bool = False) -> None:
    """``cls(num_tokens, dim)`` → ``forward(tokens B×N×C)`` → tokens + a learned 1×N×C embedding
    (what cvaia's ``SelfAttention(pos_embed="input")`` adds to its normalised input)."""
    check = _Check("positional embedding", cls.__name__)

    def body():
        N, C = 16, 32
        student = check.build(cls, N, C)
        params = list(student.parameters())
        if not params:
            check.fail("your embedding has no parameters: a learned positional embedding is an nn.Parameter "
                       "(a buffer, a plain tensor or a fixed sinusoid does not learn)")
        if len(params) != 1 or params[0].numel() != N * C:
            shapes = ", ".join(_shape(p) for p in params)
            why = (" — one vector for all tokens tells them nothing about position: one per position, 1×N×C"
                   if sum(p.numel() for p in params) == C else "")
            check.fail(f"expected one parameter of N·C = {N}·{C} = {_n(N * C)} values (shape 1×N×C), got {shapes}{why}")
        pos = params[0]
        if pos.detach().std() > 0.5:
            check.fail(f"the embedding starts with std {pos.detach().std().item():.2f}: start small (e.g. "
                       f"nn.init.trunc_normal_(…, std=0.02)) so that it does not drown the features at first")
        x = torch.randn(2, N, C, generator=_gen(8))
        value = torch.randn(pos.shape, generator=_gen(9))
        with torch.no_grad():
            pos.copy_(value)
        got = check.expect_tensor(check.call(student, x), "the output")
        want = x + value.reshape(1, N, C)
        check.expect_shape(got, want, f"for tokens {_shape(x)} the output")
        check.expect_close(got, want, "the output", {"the embedding is multiplied: add it": x * value.reshape(1, N, C)},
                           "return tokens + embedding (broadcast over the batch)")
        for p in student.parameters():
            p.grad = None
        xs = x.clone().requires_grad_()
        out = check.call(student, xs)
        r = torch.randn(out.shape, generator=_gen(10))
        (out * r).sum().backward()
        if pos.grad is None:
            check.fail("no gradient reaches the embedding: it is not used in forward, or is detached")
        if not _close(pos.grad.reshape(1, N, C), r.sum(0, keepdim=True), GRAD_RTOL, GRAD_ATOL):
            check.fail("the embedding's gradient is not the batch sum of the upstream gradient: add the same "
                       "embedding to every image of the batch")
        check.passed(f"one learned {_shape(pos)} parameter ({_n(N * C)} values) added to every image's tokens; "
                     f"its gradient is right.")

    _run(check.exercise, required, body)


def check_adaptive_bins(fn, required: bool = False) -> None:
    """``fn(tokens B×N×C, query B×C×h×w, bin_depth Linear(C, 1), min_depth=0.1, max_depth=300)`` →
    ``(depth B×1×h×w, probabilities B×N×h×w, bin depths B×N)`` against the head of
    :class:`cvaia.models.AdaptiveDepthHead` on the same tokens and query map."""
    check = _Check("adaptive bins", getattr(fn, "__name__", "adaptive_bins"))

    def body():
        from .models import AdaptiveDepthHead

        torch.manual_seed(0)
        head = AdaptiveDepthHead(32, 32, dim=32, num_bins=16, num_layers=1, num_heads=4, expansion=2, dropout=0.0,
                                 attention_impl="explicit").eval()
        gen = _gen(11)
        latent, qf = torch.randn(2, 32, 8, 8, generator=gen), torch.randn(2, 32, 12, 16, generator=gen)
        with torch.no_grad():
            head.bin_depth.bias.fill_(math.log(20.0))  # bins around 20 m, all inside 0.1 … 300 m
            tokens, query = head.tokens(latent), head.query_conv(qf)
            depth_l, probs_l, bins_l = head(latent, qf)
            got = check.call(fn, tokens, query, head.bin_depth, what="call")
        if not (isinstance(got, tuple) and len(got) == 3):
            check.fail(f"return (depth, bin probabilities, bin depths), got {type(got).__name__}")
        depth, probs, bins = (check.expect_tensor(t, w) for t, w in zip(got, ("depth", "probabilities", "bin depths"), strict=True))
        check.expect_shape(bins, bins_l, "the bin depths (B, N)", lambda o: "squeeze(-1) the Linear's output"
                           if o.dim() == 3 else None)
        check.expect_shape(probs, probs_l, "the bin probabilities (B, N, h, w)")
        check.expect_shape(depth, depth_l, "the depth (B, 1, h, w)", lambda o: "keepdim=True in the sum over bins"
                           if o.dim() == 3 else None)
        check.expect_close(bins, bins_l, "the bin depths", {"the bin depths are the Linear's raw output: bin depth = "
                                                             "exp(Linear(token)), clamped": head.bin_depth(tokens).squeeze(-1)})
        if not torch.allclose(probs.sum(1), torch.ones_like(probs.sum(1)), atol=1e-5):
            check.fail("the probabilities of a pixel do not sum to 1 over the bins: softmax over dim=1 (the N bins) of "
                       "the B×N×h×w similarities")
        with torch.no_grad():
            sim = torch.einsum("bnc,bchw->bnhw", tokens, query)
        check.expect_close(probs, probs_l, "the bin probabilities",
                           {"the similarities are not scaled: divide ⟨query, token⟩ by √C": sim.softmax(1),
                            "divided by C: divide by √C": (sim / 32).softmax(1)})
        check.expect_close(depth, depth_l, "the depth", causes="depth = Σ over bins of probability × bin depth")
        far = copy.deepcopy(head.bin_depth)
        with torch.no_grad():
            far.bias.fill_(math.log(5000.0))
            _, _, bins_far = check.call(fn, tokens, query, far, what="call")
            near = copy.deepcopy(head.bin_depth)
            near.bias.fill_(math.log(0.001))
            _, _, bins_near = check.call(fn, tokens, query, near, what="call")
        if bins_far.max() > 300.0 * (1 + 1e-5) or bins_near.min() < 0.1 * (1 - 1e-5):
            check.fail(f"bin depths of {bins_far.max().item():.4g} m and {bins_near.min().item():.3g} m came out: clamp "
                       f"them to min_depth … max_depth (0.1 … 300 m)")
        ts, tl = tokens.clone().requires_grad_(), tokens.clone().requires_grad_()
        qs, ql = query.clone().requires_grad_(), query.clone().requires_grad_()
        lin = copy.deepcopy(head.bin_depth)
        d_s, _, _ = check.call(fn, ts, qs, lin, what="call")
        _backward(d_s)
        from .reference.adaptive_bins import adaptive_bins as ref

        d_l, _, _ = ref(tl, ql, head.bin_depth)
        _backward(d_l)
        _compare_grads(check, lin, head.bin_depth, [("weight", "weight"), ("bias", "bias")],
                       [("tokens", ts.grad, tl.grad), ("query map", qs.grad, ql.grad)])
        check.passed(f"bins {_shape(bins_l)} (exp, clamped to 0.1 … 300 m), probabilities {_shape(probs_l)} (sum to 1 "
                     f"over bins) and depth {_shape(depth_l)} equal cvaia's head; gradients reach tokens, query map "
                     f"and the bin Linear.")

    _run(check.exercise, required, body)


# ---- 5: the cross-attention head ---------------------------------------------------------------------------------
def check_cross_attention_head(cls, required: bool = False) -> None:
    """``cls(dim, num_classes=19, num_layers=2, num_heads=4, expansion=4, kv_pool=4)`` →
    ``forward(features B×C×h×w)`` → logits B×K×h×w against :class:`cvaia.models.ClassTokenSegHead`."""
    check = _Check("cross-attention head", cls.__name__)

    def body():
        from .models import ClassTokenSegHead

        dim, K, L, H, e, pool = 64, 19, 2, 4, 4, 4
        torch.manual_seed(0)
        lib = ClassTokenSegHead(dim, K, L, H, e, dropout=0.0, attention_impl="explicit", kv_pool=pool)
        student = check.build(cls, dim, K, L, H, e, pool)
        f = torch.randn(2, dim, 16, 24, generator=_gen(12))
        with torch.no_grad():
            want = lib(f)
            got = check.expect_tensor(check.call(student, f), "the logits")
        check.expect_shape(got, want, f"for features {_shape(f)} the class logits (B, K, h, w)",
                           lambda o: "the logits are B×h×w×K: put the classes on dim 1" if tuple(o.shape) == (2, 16, 24, K)
                           else None)

        def explain_params(d):
            if d == -K * dim:
                return "the class tokens are not learned: make them an nn.Parameter of shape 1×K×C"
            if d == -2 * dim * L:
                return "one LayerNorm per block is missing: normalise the queries (tokens) and the context apart"
            return ("expected class tokens (K·C) + per block: 2 LayerNorms, Q/K/V/out Linear(C, C), "
                    "MLP (LayerNorm, Linear(C, eC), Linear(eC, C))")

        n = check.expect_params(student, lib, f"your head({dim}, {K}, {L}, {H}, {e}, {pool})", explain_params)
        pairs = copy_weights(lib, student, check)
        with torch.no_grad():
            full = copy.deepcopy(lib)
            full.kv_pool = 1
            variants = {"the tokens attend to every pixel: average-pool the features kv_pool× per side first "
                        "(F.adaptive_avg_pool2d), as the memory budget needs": full(f),
                        "the class maps are not scaled: divide ⟨token, feature⟩ by √C": want * math.sqrt(dim)}
            got = check.call(student, f)
        check.expect_close(got, want, "the logits", variants,
                           "queries = class tokens (expanded over the batch), keys/values = pooled features; "
                           "residuals around attention and MLP")
        fs, fl = f.clone().requires_grad_(), f.clone().requires_grad_()
        want, got = lib(fl), check.call(student, fs)
        _backward(want), _backward(got)
        k = _compare_grads(check, student, lib, pairs, [("features", fs.grad, fl.grad)])
        n_course = n_parameters(ClassTokenSegHead(256, 19, 2, 4, 4))
        check.passed(f"logits {_shape(want)} equal cvaia's, {_n(n)} parameters at dim {dim} (the course's dim 256, "
                     f"2 layers: {_n(n_course)}), gradients of all {k} tensors equal.")

    _run(check.exercise, required, body)


#: exercise name → check function (the tests and the student build iterate over it).
CHECKS = {
    "basic_block": check_basic_block,
    "aspp": check_aspp,
    "decoder": check_decoder,
    "silog": check_silog,
    "branched": check_branched,
    "self_attention": check_self_attention,
    "transformer_block": check_transformer_block,
    "latents": check_latents,
    "positional_embedding": check_positional_embedding,
    "adaptive_bins": check_adaptive_bins,
    "cross_attention_head": check_cross_attention_head,
}
