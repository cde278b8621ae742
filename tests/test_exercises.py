"""The exercise checks (cvaia.exercises) accept cvaia's readable references, print TODO for a
stub, and reject typical student mistakes with a message that names the mistake; the notebooks'
exercise cells run (stubs: TODO; references: PASS) and the student build keeps the solutions out."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cvaia import exercises as E
from cvaia import exercises_notebooks as EN
from cvaia.__main__ import main
from cvaia.experiments import Params
from cvaia.reference import (
    adaptive_bins,
    attention,
    cross_attention,
    deeplab,
    encoder,
    latents,
    multitask,
    silog,
    transformer,
)
from cvaia.workbook import NOTEBOOKS_DIR, list_notebooks

SOLUTIONS = {
    "basic_block": encoder.BasicBlock, "aspp": deeplab.ASPP, "decoder": deeplab.DecoderDeepLabV3p,
    "silog": silog.silog, "branched": multitask.BranchedDeepLab, "self_attention": attention.MultiHeadSelfAttention,
    "transformer_block": transformer.TransformerBlock, "latents": latents.LatentsExtractor,
    "positional_embedding": latents.PositionalEmbedding, "adaptive_bins": adaptive_bins.adaptive_bins,
    "cross_attention_head": cross_attention.ClassTokenSegHead,
}


def rejects(check, student, *phrases):
    with pytest.raises(E.ExerciseFailed) as info:
        check(student)
    message = str(info.value)
    for phrase in phrases:
        assert phrase in message, message
    return message


@pytest.mark.parametrize("name", sorted(SOLUTIONS))
def test_each_check_accepts_the_reference(name, capsys):
    E.CHECKS[name](SOLUTIONS[name], required=True)
    out = capsys.readouterr().out
    assert out.startswith("PASS  ") and out.count("\n") == 1, out


def test_every_exercise_has_a_check_and_a_reference():
    assert set(E.CHECKS) == set(SOLUTIONS)


class StubASPP(nn.Module):
    def __init__(self, in_ch, out_ch=256, rates=(3, 6, 9)):
        super().__init__()
        raise NotImplementedError("Exercise: build the branches")


def test_a_stub_prints_what_to_do_and_fails_only_when_required(capsys):
    E.check_aspp(StubASPP)  # no exception: the student build runs on
    out = capsys.readouterr().out
    assert out.startswith("TODO  ASPP: the exercise cell above still raises NotImplementedError"), out
    assert "Exercise: build the branches" in out and "run that cell, then this one" in out
    with pytest.raises(E.ExerciseFailed, match="SOLUTIONS is True"):
        E.check_aspp(StubASPP, required=True)


def test_a_stub_function_prints_what_to_do(capsys):
    def silog_stub(pred, target, lam=0.15):
        raise NotImplementedError("write the SILog loss")

    E.check_silog(silog_stub)
    assert capsys.readouterr().out.startswith("TODO  SILog loss")


# ---- dilated BasicBlock ------------------------------------------------------------------------------------------
class BlockNoResidual(encoder.BasicBlock):
    def forward(self, x):
        return self.relu(self.bn2(self.conv2(self.relu(self.bn1(self.conv1(x))))))


class BlockPadding1(encoder.BasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__(inplanes, planes, stride, downsample, dilation)
        self.conv1.padding = self.conv2.padding = (1, 1)


class BlockWithBias(encoder.BasicBlock):
    def __init__(self, inplanes, planes, stride=1, downsample=None, dilation=1):
        super().__init__(inplanes, planes, stride, downsample, dilation)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=dilation, dilation=dilation, bias=True)


def test_basic_block_mistakes():
    rejects(E.check_basic_block, BlockNoResidual, "you forgot the residual")
    rejects(E.check_basic_block, BlockPadding1, "needs both of the same size", "padding=dilation")
    rejects(E.check_basic_block, BlockWithBias, "needs no bias")


def test_stage_plan_is_torchvisions():
    from cvaia.models import ResNetEncoder

    for dil in [(False, False, True), (False, True, True), (False, False, False)]:
        plan = encoder.stage_plan(dil)
        enc = ResNetEncoder(replace_stride_with_dilation=dil)
        assert tuple(r["output_stride"] for r in plan) == enc.stage_strides
        for row, layer in zip(plan, (enc.layer1, enc.layer2, enc.layer3, enc.layer4), strict=True):
            assert layer[0].conv1.stride[0] == row["first_block_stride"]
            assert layer[0].conv1.dilation[0] == row["first_block_dilation"]
            assert layer[1].conv1.dilation[0] == row["dilation"]


# ---- ASPP --------------------------------------------------------------------------------------------------------
class ASPPNoFuse(deeplab.ASPP):
    def forward(self, x):
        context = F.interpolate(self.image(x.mean(dim=(2, 3), keepdim=True)), size=x.shape[-2:], mode="bilinear")
        return torch.cat([self.local(x), *(a(x) for a in self.atrous), context], dim=1)


class ASPPBias(deeplab.ASPP):
    def __init__(self, in_ch, out_ch=256, rates=(3, 6, 9)):
        super().__init__(in_ch, out_ch, rates)
        for branch in [self.local, *self.atrous, self.image]:
            conv = branch[0]
            branch[0] = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, padding=conv.padding,
                                  dilation=conv.dilation, bias=True)


class ASPPMaxPool(deeplab.ASPP):
    def forward(self, x):
        context = F.interpolate(self.image(x.amax(dim=(2, 3), keepdim=True)), size=x.shape[-2:], mode="bilinear")
        return self.fuse(torch.cat([self.local(x), *(a(x) for a in self.atrous), context], dim=1))


def test_aspp_mistakes():
    message = rejects(E.check_aspp, ASPPNoFuse, "your ASPP returns 5 branches concatenated without the projection")
    assert "expected shape 2×256×8×12, got 2×1280×8×12" in message
    rejects(E.check_aspp, ASPPBias, "4,132,864 parameters, cvaia's 4,131,584", "bias=False")
    rejects(E.check_aspp, ASPPMaxPool, "takes the maximum")


# ---- decoder -----------------------------------------------------------------------------------------------------
class DecoderNoSkip(deeplab.DecoderDeepLabV3p):
    def __init__(self, bottleneck_ch, skip_ch=64, out_ch=19, skip_channels=48, num_convs=2, mid_ch=256):
        super().__init__(bottleneck_ch, skip_ch, out_ch, skip_channels, num_convs, mid_ch)
        self.convs[0] = nn.Conv2d(bottleneck_ch, mid_ch, 3, padding=1)  # sees the bottleneck alone

    def forward(self, bottleneck, skip):
        up = F.interpolate(bottleneck, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        features = self.convs(up)
        return self.head(features), features


class DecoderSwapped(deeplab.DecoderDeepLabV3p):
    def forward(self, bottleneck, skip):
        up = F.interpolate(bottleneck, size=skip.shape[-2:], mode="bilinear", align_corners=False)
        features = self.convs(torch.cat([self.skip_proj(skip), up], dim=1))
        return self.head(features), features


class DecoderNoUpsample(deeplab.DecoderDeepLabV3p):
    def forward(self, bottleneck, skip):
        features = self.convs(torch.cat([bottleneck, self.skip_proj(skip)], dim=1))
        return self.head(features), features


def test_decoder_mistakes():
    rejects(E.check_decoder, DecoderNoSkip, "concatenate the projected skip")
    rejects(E.check_decoder, DecoderSwapped, "put the upsampled bottleneck first")
    rejects(E.check_decoder, DecoderNoUpsample, "raised RuntimeError", "upsample the bottleneck to the skip's h×w")


# ---- SILog -------------------------------------------------------------------------------------------------------
def silog_no_sqrt(pred, target, lam=0.15):
    valid = target > 0
    e = torch.log(target[valid]) - torch.log(pred[valid])
    return (e * e).mean() - (1 - lam) * e.mean() ** 2


def silog_no_mask(pred, target, lam=0.15):
    e = torch.log(target) - torch.log(pred)
    return torch.sqrt((e * e).mean() - (1 - lam) * e.mean() ** 2)


def silog_swapped(pred, target, lam=0.15):
    valid = target > 0
    e = torch.log(target[valid]) - torch.log(pred[valid])
    return torch.sqrt((e * e).mean() - lam * e.mean() ** 2)


def test_silog_mistakes():
    rejects(E.check_silog, silog_no_sqrt, "no square root")
    rejects(E.check_silog, silog_no_mask, "target 0", "must be left out")
    rejects(E.check_silog, silog_swapped, "λ and 1 − λ are swapped")


# ---- branched model ----------------------------------------------------------------------------------------------
class BranchedPlainDict(multitask.BranchedDeepLab):
    def __init__(self, encoder, aspp, decoder):
        nn.Module.__init__(self)
        self.encoder, self.aspp, self.decoder = encoder, dict(aspp), dict(decoder)


class BranchedSharedASPP(multitask.BranchedDeepLab):
    def forward(self, x):
        features = self.encoder(x)
        shared = self.aspp["semseg"](features[max(features)])
        out = {}
        for task in self.decoder:
            pred = F.interpolate(self.decoder[task](shared, features[4])[0], size=x.shape[-2:], mode="bilinear")
            out[task] = torch.exp(pred).clamp(0.1, 300.0) if task == "depth" else pred
        return out


class BranchedNoExp(multitask.BranchedDeepLab):
    def forward(self, x):
        features = self.encoder(x)
        return {task: F.interpolate(self.decoder[task](self.aspp[task](features[max(features)]), features[4])[0],
                                    size=x.shape[-2:], mode="bilinear") for task in self.decoder}


def test_branched_mistakes():
    rejects(E.check_branched, BranchedPlainDict, "not registered", "nn.ModuleDict")
    rejects(E.check_branched, BranchedSharedASPP, "uses the semseg ASPP")
    rejects(E.check_branched, BranchedNoExp, "exp(x).clamp(0.1, 300)")


# ---- self-attention, transformer block ---------------------------------------------------------------------------
class AttentionNoScale(attention.MultiHeadSelfAttention):
    def forward(self, x):
        B, N, C = x.shape
        h = self.norm(x)
        q, k, v = (p(h).view(B, N, self.num_heads, self.head_dim).transpose(1, 2) for p in (self.to_q, self.to_k, self.to_v))
        w = (q @ k.transpose(-2, -1)).softmax(-1)
        return self.out((w @ v).transpose(1, 2).reshape(B, N, C)), w


class AttentionSoftmaxQueries(attention.MultiHeadSelfAttention):
    def forward(self, x):
        B, N, C = x.shape
        h = self.norm(x)
        q, k, v = (p(h).view(B, N, self.num_heads, self.head_dim).transpose(1, 2) for p in (self.to_q, self.to_k, self.to_v))
        w = (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).softmax(-2)
        return self.out((w @ v).transpose(1, 2).reshape(B, N, C)), w


class AttentionBadMerge(attention.MultiHeadSelfAttention):
    def forward(self, x):
        B, N, C = x.shape
        h = self.norm(x)
        q, k, v = (p(h).view(B, N, self.num_heads, self.head_dim).transpose(1, 2) for p in (self.to_q, self.to_k, self.to_v))
        w = (q @ k.transpose(-2, -1) / math.sqrt(self.head_dim)).softmax(-1)
        return self.out((w @ v).reshape(B, N, C)), w


def test_self_attention_mistakes():
    rejects(E.check_self_attention, AttentionNoScale, "divide Q·Kᵀ by √d_k")
    rejects(E.check_self_attention, AttentionSoftmaxQueries, "softmax(dim=-1)")
    rejects(E.check_self_attention, AttentionBadMerge, "the output: not cvaia's values", "transpose(1, 2)")


class BlockNoAttnResidual(transformer.TransformerBlock):
    def forward(self, x):
        x, _ = self.attn(x)
        return x + self.mlp(x)


class BlockReLU(transformer.TransformerBlock):
    def __init__(self, dim, num_heads=4, expansion=4):
        super().__init__(dim, num_heads, expansion)
        self.mlp.net[2] = nn.ReLU()


class BlockNoExpansion(transformer.TransformerBlock):
    def __init__(self, dim, num_heads=4, expansion=4):
        super().__init__(dim, num_heads, 1)


def test_transformer_block_mistakes():
    rejects(E.check_transformer_block, BlockNoAttnResidual, "the residual around the attention is missing")
    rejects(E.check_transformer_block, BlockReLU, "uses GELU")
    rejects(E.check_transformer_block, BlockNoExpansion, "hidden width is C·expansion = 1024")


# ---- latents, positional embedding -------------------------------------------------------------------------------
class LatentsAvgPool(latents.LatentsExtractor):
    def forward(self, x):
        return F.adaptive_avg_pool2d(x, self.side).flatten(2).transpose(1, 2)


class LatentsNoTranspose(latents.LatentsExtractor):
    def forward(self, x):
        return F.interpolate(x, size=(self.side, self.side), mode="bilinear", align_corners=False).flatten(2)


class LatentsAnyN(latents.LatentsExtractor):
    def __init__(self, num_latents):
        nn.Module.__init__(self)
        self.side = math.isqrt(num_latents)


def test_latents_mistakes():
    rejects(E.check_latents, LatentsAvgPool, "adaptive average pooling")
    rejects(E.check_latents, LatentsNoTranspose, "transpose(1, 2) after flatten(2)")
    rejects(E.check_latents, LatentsAnyN, "(60) was accepted")


class PosBuffer(nn.Module):
    def __init__(self, num_tokens, dim):
        super().__init__()
        self.register_buffer("pos", torch.zeros(1, num_tokens, dim))

    def forward(self, tokens):
        return tokens + self.pos


class PosOneVector(latents.PositionalEmbedding):
    def __init__(self, num_tokens, dim):
        super().__init__(1, dim)


class PosUnitInit(latents.PositionalEmbedding):
    def __init__(self, num_tokens, dim):
        super().__init__(num_tokens, dim)
        self.pos.data.normal_()


def test_positional_embedding_mistakes():
    rejects(E.check_positional_embedding, PosBuffer, "nn.Parameter")
    rejects(E.check_positional_embedding, PosOneVector, "one per position")
    rejects(E.check_positional_embedding, PosUnitInit, "start small")


# ---- adaptive bins -----------------------------------------------------------------------------------------------
def bins_softmax_pixels(tokens, query, bin_depth, min_depth=0.1, max_depth=300.0):
    bins = torch.exp(bin_depth(tokens).squeeze(-1)).clamp(min_depth, max_depth)
    sim = torch.einsum("bnc,bchw->bnhw", tokens, query) / math.sqrt(tokens.shape[-1])
    probs = sim.flatten(2).softmax(-1).view_as(sim)
    return (probs * bins[:, :, None, None]).sum(1, keepdim=True), probs, bins


def bins_no_clamp(tokens, query, bin_depth, min_depth=0.1, max_depth=300.0):
    bins = torch.exp(bin_depth(tokens).squeeze(-1))
    probs = (torch.einsum("bnc,bchw->bnhw", tokens, query) / math.sqrt(tokens.shape[-1])).softmax(1)
    return (probs * bins[:, :, None, None]).sum(1, keepdim=True), probs, bins


def bins_no_scale(tokens, query, bin_depth, min_depth=0.1, max_depth=300.0):
    bins = torch.exp(bin_depth(tokens).squeeze(-1)).clamp(min_depth, max_depth)
    probs = torch.einsum("bnc,bchw->bnhw", tokens, query).softmax(1)
    return (probs * bins[:, :, None, None]).sum(1, keepdim=True), probs, bins


def test_adaptive_bins_mistakes():
    rejects(E.check_adaptive_bins, bins_softmax_pixels, "softmax over dim=1")
    rejects(E.check_adaptive_bins, bins_no_clamp, "clamp them")
    rejects(E.check_adaptive_bins, bins_no_scale, "divide ⟨query, token⟩ by √C")


# ---- cross-attention head ----------------------------------------------------------------------------------------
class CrossNoPool(cross_attention.ClassTokenSegHead):
    def __init__(self, dim, num_classes=19, num_layers=2, num_heads=4, expansion=4, kv_pool=4):
        super().__init__(dim, num_classes, num_layers, num_heads, expansion, kv_pool=1)


class CrossBufferTokens(cross_attention.ClassTokenSegHead):
    def __init__(self, dim, num_classes=19, num_layers=2, num_heads=4, expansion=4, kv_pool=4):
        super().__init__(dim, num_classes, num_layers, num_heads, expansion, kv_pool)
        tokens = self.class_tokens.detach().clone()
        del self.class_tokens
        self.register_buffer("class_tokens", tokens)


class CrossNoScale(cross_attention.ClassTokenSegHead):
    def forward(self, features):
        return super().forward(features) * math.sqrt(features.shape[1])


def test_cross_attention_head_mistakes():
    rejects(E.check_cross_attention_head, CrossNoPool, "attend to every pixel")
    rejects(E.check_cross_attention_head, CrossBufferTokens, "nn.Parameter of shape 1×K×C")
    rejects(E.check_cross_attention_head, CrossNoScale, "divide ⟨token, feature⟩ by √C")


# ---- copying weights ---------------------------------------------------------------------------------------------
def test_copy_weights_by_name_then_in_order_and_refusal():
    src, dst = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4)), nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4))
    pairs = E.copy_weights(src, dst)
    assert [a for a, _ in pairs] == [b for _, b in pairs]  # same names
    assert torch.equal(dst[0].weight, src[0].weight)
    other = nn.ModuleDict({"proj": nn.Linear(3, 4), "norm": nn.LayerNorm(4)})
    E.copy_weights(src, other)
    assert torch.equal(other["proj"].weight, src[0].weight) and torch.equal(other["norm"].bias, src[1].bias)
    with pytest.raises(ValueError, match="cannot copy cvaia's weights"):
        E.copy_weights(src, nn.Sequential(nn.Linear(3, 5)))


# ---- the notebooks' exercise cells and the student build ---------------------------------------------------------


def exercise_pairs(path: Path) -> list[tuple[str, str]]:
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    return [(EN.source(c), EN.source(nb["cells"][i + 1])) for i, c in EN.exercise_cells(nb)]


def run_pairs(path: Path, solutions: bool) -> None:
    namespace = {"P": Params(SOLUTIONS=solutions)}
    for exercise, check in exercise_pairs(path):
        exec(compile(exercise, f"{path.name}:exercise", "exec"), namespace)
        exec(compile(check, f"{path.name}:check", "exec"), namespace)


@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "notebooks"
    assert main(["student", "--out", str(out)]) == 0
    return out


def test_the_student_build_has_stubs_and_no_reference_code(student_dir):
    built = list_notebooks(student_dir)
    assert [p.name for p in built] == [p.name for p in list_notebooks(NOTEBOOKS_DIR)]
    n_exercises = 0
    for path in built:
        nb = json.loads(path.read_text(encoding="utf-8"))
        params = [EN.source(c) for c in nb["cells"] if "parameters" in EN.tags(c)]
        assert "SOLUTIONS = False" in params[0] and "SOLUTIONS = True" not in params[0]
        for _, cell in EN.exercise_cells(nb):
            src = EN.source(cell)
            n_exercises += 1
            assert "NotImplementedError" in src
            assert "reference" not in src and "SOLUTIONS" not in src, src
        has_exercises = bool(EN.exercise_cells(nb))
        for cell in nb["cells"]:
            assert cell.get("outputs", []) == [] and cell.get("execution_count") is None
            if has_exercises and cell["cell_type"] == "code":
                assert "inspect.getsource" not in EN.source(cell), path.name
    assert n_exercises == 10
    # notebook 00 has no exercise: its display of the metrics reference stays
    assert "inspect.getsource(ref_metrics)" in (student_dir / "00_data_and_setup.ipynb").read_text(encoding="utf-8")


def test_student_stubs_report_what_to_do_without_a_traceback(student_dir, capsys):
    for path in list_notebooks(student_dir):
        run_pairs(path, solutions=False)  # raises on any error
    out = capsys.readouterr().out.splitlines()
    todo = [line for line in out if line.startswith("TODO  ")]
    assert len(todo) == 11 and len(todo) == len(out), out  # 10 exercise cells, 11 checks (4c has two)
    assert any(line.startswith("TODO  ASPP: the exercise cell above still raises NotImplementedError "
                               "(Exercise 1.3a:") for line in todo)


def test_the_full_notebooks_fill_in_the_references_and_pass(capsys):
    for path in list_notebooks(NOTEBOOKS_DIR):
        run_pairs(path, solutions=True)
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 11 and all(line.startswith("PASS  ") for line in out), out


def test_the_student_build_never_overwrites(tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "01_semantic_segmentation.ipynb").write_text("my work")
    assert main(["student", "--out", str(out)]) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "01_semantic_segmentation.ipynb").read_text() == "my work"
    afile = tmp_path / "file"
    afile.write_text("x")
    assert main(["student", "--out", str(afile)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_hiding_a_reference_source_keeps_the_rest_of_the_cell():
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": 3,
            "source": ["display(Markdown(\"```python\\n\" + inspect.getsource(ref.silog) + \"```\"))\n", "x = 1"]}
    nb = {"cells": [cell, {"cell_type": "code", "metadata": {"tags": ["parameters"]}, "source": ["SOLUTIONS = True"]},
                    {"cell_type": "code", "metadata": {"tags": ["exercise"]},
                     "source": ["def f():\n", "    raise NotImplementedError\n", "\n", "if P.SOLUTIONS:\n", "    f = g\n"]}]}
    out = EN.student_notebook(nb)
    assert EN.source(out["cells"][0]) == EN.HIDDEN_SOURCE + "\nx = 1"
    assert out["cells"][0]["execution_count"] is None
    assert EN.source(out["cells"][2]) == "def f():\n    raise NotImplementedError"
    nb["cells"][2]["source"] = ["def f():\n", "    raise NotImplementedError\n"]
    with pytest.raises(EN.StudentBuildError, match="no solution block"):
        EN.student_notebook(nb)
