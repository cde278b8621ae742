"""Models: shapes, attention paths, dead parameters, encoder dilation and weights loading."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from cvaia.config import ConfigError, make_config
from cvaia.models import (
    CrossAttention,
    LatentsExtractor,
    PretrainedWeightsError,
    SelfAttention,
    TransformerBlock,
    build_model,
    deeplabv3p,
    imagenet_checkpoint_path,
    resnet_encoder,
    set_attention_impl,
)

#: small transformer settings so the attention models stay fast on the CPU
SMALL = dict(transformer_dim=32, num_heads=2, num_bins=16, num_transformer_layers=1, expansion=2)


def _model(**overrides):
    torch.manual_seed(0)
    return build_model(make_config(**overrides))


def _check_outputs(out, tasks, size, batch):
    assert set(out) == set(tasks)
    if "semseg" in tasks:
        assert out["semseg"].shape == (batch, 19, *size)
        assert torch.isfinite(out["semseg"]).all()
    if "depth" in tasks:
        d = out["depth"]
        assert d.shape == (batch, 1, *size)
        assert torch.isfinite(d).all() and d.min() >= 0.1 and d.max() <= 300.0


MODEL_TASKS = [
    ("deeplabv3p", ("semseg",)), ("deeplabv3p", ("depth",)), ("deeplabv3p", ("semseg", "depth")),
    ("deeplabv3p_multitask", ("semseg",)), ("deeplabv3p_multitask", ("depth",)),
    ("deeplabv3p_multitask", ("semseg", "depth")), ("adaptive_depth", ("depth",)),
    ("transformer_multitask", ("semseg", "depth")), ("cross_attention_multitask", ("semseg", "depth")),
]


@pytest.mark.parametrize("model_name,tasks", MODEL_TASKS)
def test_output_shapes_odd_sizes_and_batch1_eval(model_name, tasks):
    model = _model(model_name=model_name, tasks=",".join(tasks), **SMALL)
    assert model.tasks == tasks
    model.train()
    _check_outputs(model(torch.randn(2, 3, 40, 72)), tasks, (40, 72), 2)  # non-square, not /32
    model.eval()
    with torch.no_grad():
        _check_outputs(model(torch.randn(1, 3, 24, 56)), tasks, (24, 56), 1)


def test_joint_model_channel_split():
    """Joint model: the depth channel is exp(channel 19) clamped, upsampled like the logits."""
    model = deeplabv3p().eval()
    x = torch.randn(1, 3, 32, 48)
    with torch.no_grad():
        out = model(x)
        feats = model.encoder(x)
        raw, _ = model.decoder(model.aspp(feats[16]), feats[4])
        raw = F.interpolate(raw, size=(32, 48), mode="bilinear", align_corners=False)
    assert raw.shape[1] == 20
    torch.testing.assert_close(out["semseg"], raw[:, :19])
    torch.testing.assert_close(out["depth"], raw[:, 19:].exp().clamp(0.1, 300))



def test_deeplab_models_are_composed_from_their_parts():
    """The builders hand the encoder, ASPP and decoder to the model classes (torchvision style);
    parts that do not fit the tasks are refused with a message."""
    from cvaia.models.aspp import ASPP
    from cvaia.models.decoder import DecoderDeepLabV3p
    from cvaia.models.deeplab import DeepLabV3p, DeepLabV3pMultiTask

    enc = resnet_encoder("resnet18")
    aspp, decoder = ASPP(512, 256), DecoderDeepLabV3p(256, 64, 20)
    model = DeepLabV3p(enc, aspp, decoder, tasks=("depth", "semseg"))
    assert model.aspp is aspp and model.decoder is decoder and model.tasks == ("semseg", "depth")
    with pytest.raises(ValueError, match="decoder has 20 output channels.*semseg need 19"):
        DeepLabV3p(enc, aspp, decoder, tasks=("semseg",))
    branched = DeepLabV3pMultiTask(enc, {"depth": ASPP(512, 256)}, {"depth": DecoderDeepLabV3p(256, 64, 1)})
    assert branched.tasks == ("depth",) and list(branched.aspp) == ["depth"]
    with pytest.raises(ValueError, match="one ASPP and one decoder per task"):
        DeepLabV3pMultiTask(enc, {"semseg": aspp}, {"depth": DecoderDeepLabV3p(256, 64, 1)})


DEAD_PARAM_CONFIGS = [
    dict(model_name="deeplabv3p"),
    dict(model_name="deeplabv3p_multitask"),
    # the ablations of problem 1.3: ASPP without atrous branches, decoder without skip
    dict(model_name="deeplabv3p", tasks="semseg", aspp_rates="", decoder_skip_channels=0, encoder_dilation="F,F,F"),
    dict(model_name="deeplabv3p_multitask", aspp_rates="", decoder_skip_channels=0),
    dict(model_name="adaptive_depth", tasks="depth", latents_source="lowest", pos_embed="query", dropout=0.2),
    dict(model_name="adaptive_depth", tasks="depth", latents_source="decoder", pos_embed="input",
         transformer_reducer="conv"),
    dict(model_name="adaptive_depth", tasks="depth", latents_source="aspp", dropout=0.0),
    dict(model_name="transformer_multitask", latents_source="aspp", pos_embed="query", transformer_reducer="conv"),
    dict(model_name="cross_attention_multitask", latents_source="decoder", pos_embed="input"),
]


@pytest.mark.parametrize("overrides", DEAD_PARAM_CONFIGS, ids=lambda d: "-".join(map(str, d.values())))
def test_no_dead_parameters(overrides):
    """After forward + backward in training mode, every parameter has a gradient."""
    model = _model(**{**SMALL, **overrides}).train()
    out = model(torch.randn(2, 3, 32, 40))
    loss = sum(v.float().mean() for v in out.values())
    loss.backward()
    dead = [n for n, p in model.named_parameters() if p.grad is None]
    assert not dead, f"parameters without gradient: {dead}"
    # heads (not the zero-init-residual encoder) really receive signal
    heads = [p for n, p in model.named_parameters() if not n.startswith("encoder.")]
    assert sum(float(p.grad.abs().sum()) for p in heads) > 0


def test_modules_exist_only_when_used():
    # latents from the decoder at dim 256: no reducer, no query projection, no ASPP, no pos-embed
    m = _model(model_name="adaptive_depth", tasks="depth", latents_source="decoder", num_transformer_layers=1)
    names = [n for n, _ in m.named_parameters()]
    assert m.depth_head.reducer is None and m.depth_head.query_proj is None and m.aspp is None
    assert not any("pos_embed" in n for n in names) and not any(n.startswith("aspp") for n in names)
    # lowest features need a 512 -> dim reducer: Linear or 1x1 conv
    m = _model(model_name="adaptive_depth", tasks="depth", **SMALL)
    assert isinstance(m.depth_head.reducer, nn.Linear) and m.depth_head.reducer.in_features == 512
    assert isinstance(m.depth_head.query_proj, nn.Conv2d)  # 256 -> 32
    m = _model(model_name="adaptive_depth", tasks="depth", transformer_reducer="conv", pos_embed="query", **SMALL)
    assert isinstance(m.depth_head.reducer, nn.Conv2d)
    assert m.depth_head.transformer[0].attn.pos_embed.shape == (1, 16, 32)
    # joint model: one decoder with 19+1 channels; single task: 19 or 1
    assert deeplabv3p().decoder.head.out_channels == 20
    assert deeplabv3p(tasks=("depth",)).decoder.head.out_channels == 1


def test_adaptive_aux_outputs():
    model = _model(model_name="adaptive_depth", tasks="depth", **SMALL).eval()
    x = torch.randn(2, 3, 48, 64)
    with torch.no_grad():
        out = model(x, return_aux=True)
    probs, bins = out["bin_probs"], out["bin_depths"]
    assert probs.shape == (2, 16, 12, 16) and bins.shape == (2, 16)
    torch.testing.assert_close(probs.sum(1), torch.ones(2, 12, 16))
    assert bins.min() >= 0.1 and bins.max() <= 300
    depth4 = (probs * bins[:, :, None, None]).sum(1, keepdim=True)  # Σ p·d at stride 4
    ref = F.interpolate(depth4, size=(48, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(out["depth"], ref)


# ---- attention -------------------------------------------------------------------------------
@pytest.mark.parametrize("pos_embed", ["none", "query", "input"])
def test_self_attention_paths_agree(pos_embed):
    torch.manual_seed(1)
    attn = SelfAttention(32, num_heads=4, dropout=0.3, pos_embed=pos_embed, num_tokens=9, impl="fast").eval()
    x = torch.randn(3, 9, 32)
    fast = attn(x)
    attn.impl = "explicit"
    explicit, weights = attn(x, return_attention=True)
    torch.testing.assert_close(fast, attn(x), atol=1e-5, rtol=0)
    torch.testing.assert_close(fast, explicit, atol=1e-5, rtol=0)
    assert weights.shape == (3, 4, 9, 9)
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 4, 9))


def test_self_attention_against_independent_reference():
    """Explicit path == a from-scratch computation with the module's weights."""
    torch.manual_seed(2)
    attn = SelfAttention(16, num_heads=2, impl="explicit").eval()
    x = torch.randn(2, 5, 16)
    h = F.layer_norm(x, (16,), attn.norm.weight, attn.norm.bias)
    q, k, v = (lin(h).view(2, 5, 2, 8).permute(0, 2, 1, 3) for lin in (attn.to_q, attn.to_k, attn.to_v))
    w = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(16 / 2), dim=-1)
    ref = attn.out((w @ v).permute(0, 2, 1, 3).reshape(2, 5, 16))
    torch.testing.assert_close(attn(x), ref, atol=1e-6, rtol=0)


def test_cross_attention_and_blocks_agree():
    torch.manual_seed(3)
    cross = CrossAttention(24, num_heads=3).eval()
    q, ctx = torch.randn(2, 19, 24), torch.randn(2, 30, 24)
    fast = cross(q, ctx)
    y, weights = cross(q, ctx, return_attention=True)  # always the explicit path
    torch.testing.assert_close(fast, y, atol=1e-5, rtol=0)
    assert weights.shape == (2, 3, 19, 30)
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 19))
    block = TransformerBlock(24, num_heads=3, expansion=2, dropout=0.1).eval()
    x = torch.randn(2, 16, 24)
    out_fast = block(x)
    out_explicit, maps = block(x, return_attention=True)
    torch.testing.assert_close(out_fast, out_explicit, atol=1e-5, rtol=0)
    assert maps.shape == (2, 3, 16, 16)


def test_whole_model_attention_paths_agree():
    model = _model(model_name="cross_attention_multitask", pos_embed="query", **SMALL).eval()
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        fast = model(x)
        set_attention_impl(model, "explicit")
        explicit = model(x)
    for task in fast:
        torch.testing.assert_close(fast[task], explicit[task], atol=1e-5, rtol=1e-5)


def test_attention_bad_arguments():
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        SelfAttention(30, num_heads=4)
    with pytest.raises(ValueError, match="impl"):
        SelfAttention(32, impl="flash")
    with pytest.raises(ValueError, match="num_tokens"):
        SelfAttention(32, pos_embed="query")


def test_latents_extractor():
    x = torch.randn(2, 5, 4, 4)
    tokens = LatentsExtractor(16)(x)  # already 4x4: bilinear resize is the identity
    torch.testing.assert_close(tokens, x.flatten(2).transpose(1, 2))
    assert LatentsExtractor(9)(torch.randn(1, 7, 13, 21)).shape == (1, 9, 7)
    with pytest.raises(ValueError, match="perfect square"):
        LatentsExtractor(10)


def test_class_token_head_chunking_is_exact():
    """Chunked similarity equals the unchunked one; cfg.cross_attention_chunk reaches the head."""
    big = _model(model_name="cross_attention_multitask", cross_attention_chunk=4096, **SMALL).eval()
    small = _model(model_name="cross_attention_multitask", cross_attention_chunk=7, **SMALL).eval()
    assert small.seg_head.chunk == 7
    x = torch.randn(1, 3, 40, 48)
    with torch.no_grad():
        torch.testing.assert_close(big(x)["semseg"], small(x)["semseg"], atol=1e-5, rtol=1e-5)
        features = torch.randn(2, 32, 10, 12)
        assert small.seg_head.context(features).shape == (2, 2 * 3, 32)  # pooled 4x per side


# ---- encoder ---------------------------------------------------------------------------------
def test_dilation_pyramid_shapes():
    x = torch.randn(1, 3, 64, 64)
    plain = resnet_encoder("resnet18", (False, False, False)).eval()
    dil = resnet_encoder("resnet18", (False, False, True)).eval()
    with torch.no_grad():
        fp, fd = plain(x), dil(x)
    assert {k: tuple(v.shape[1:]) for k, v in fp.items()} == {
        2: (64, 32, 32), 4: (64, 16, 16), 8: (128, 8, 8), 16: (256, 4, 4), 32: (512, 2, 2)}
    assert {k: tuple(v.shape[1:]) for k, v in fd.items()} == {
        2: (64, 32, 32), 4: (64, 16, 16), 8: (128, 8, 8), 16: (512, 4, 4)}
    assert plain.output_stride == 32 and dil.output_stride == 16
    assert dil.layer4[1].conv1.dilation == (2, 2) and dil.layer4[1].conv1.padding == (2, 2)
    # torchvision's own BasicBlock refuses this configuration
    with pytest.raises(NotImplementedError):
        torchvision.models.resnet18(replace_stride_with_dilation=[False, False, True])


def test_encoder_is_torchvision_compatible():
    enc = resnet_encoder("resnet34", (False, True, True))
    tv = torchvision.models.resnet34()
    ref = {k: v.shape for k, v in tv.state_dict().items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in enc.state_dict().items()} == ref
    assert not hasattr(enc, "fc") and not hasattr(enc, "avgpool")
    # zero_init_residual: the last BN of every block starts at zero
    assert all(int(torch.count_nonzero(b.bn2.weight.detach())) == 0 for layer in (enc.layer1, enc.layer4) for b in layer)


def test_imagenet_without_cache_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    expected = tmp_path / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    assert imagenet_checkpoint_path("resnet18") == expected
    with pytest.raises(PretrainedWeightsError, match="never downloads") as info:
        resnet_encoder("resnet18", weights="imagenet")
    assert str(expected) in str(info.value)
    with pytest.raises(ConfigError, match="--pretrained"):
        build_model(make_config(pretrained="imagenet"))


def test_imagenet_from_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(4)
    tv = torchvision.models.resnet18()
    path = imagenet_checkpoint_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(tv.state_dict(), path)
    enc = resnet_encoder("resnet18", weights="imagenet")
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(v, tv.state_dict()[k])


def test_load_cvaia_checkpoint_into_encoder(tmp_path):
    torch.manual_seed(5)
    source = deeplabv3p()
    with torch.no_grad():
        for p in source.encoder.parameters():
            p.add_(torch.randn_like(p))
    ckpt = tmp_path / "last.pt"
    rng = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    torch.save({"model": source.state_dict(), "optimizer": {"state": {}}, "epoch": 3, "rng": rng,
                "config": {"model_name": "deeplabv3p"}, "best_value": None}, ckpt)  # as cvaia.train writes
    bare = tmp_path / "bare.pt"
    torch.save(source.state_dict(), bare)
    enc_only = tmp_path / "encoder.pt"
    torch.save(source.encoder.state_dict(), enc_only)
    for path in (ckpt, bare, enc_only):
        model = build_model(make_config(model_name="adaptive_depth", tasks="depth", pretrained=str(path), **SMALL))
        for k, v in source.encoder.state_dict().items():
            torch.testing.assert_close(model.encoder.state_dict()[k], v)


def test_bad_checkpoints_are_clear_errors(tmp_path):
    no_encoder = tmp_path / "head.pt"
    torch.save({"model": {"decoder.head.weight": torch.zeros(3)}}, no_encoder)
    with pytest.raises(PretrainedWeightsError, match="no encoder weights"):
        resnet_encoder(weights=str(no_encoder))
    r34 = tmp_path / "r34.pt"
    torch.save(resnet_encoder("resnet34").state_dict(), r34)
    with pytest.raises(PretrainedWeightsError, match="missing keys|do not fit"):
        resnet_encoder("resnet18", weights=str(r34))
    with pytest.raises(ConfigError, match="--pretrained.*no such file"):
        build_model(make_config(pretrained=str(tmp_path / "missing.pt")))
    garbage = tmp_path / "garbage.pt"
    garbage.write_text("not a checkpoint")
    with pytest.raises(PretrainedWeightsError, match="could not be read"):
        resnet_encoder(weights=str(garbage))


@pytest.mark.parametrize("overrides", [
    dict(model_name="deeplabv3p", encoder_dilation="F,F,F", model_encoder_name="resnet34"),
    dict(model_name="adaptive_depth", tasks="depth", encoder_dilation="F,T,T", latents_source="aspp"),
    dict(model_name="transformer_multitask", encoder_dilation="F,F,F"),
], ids=["r34-FFF", "adaptive-FTT", "transformer-FFF"])
def test_other_encoders_and_dilations(overrides):
    model = _model(**{**SMALL, **overrides}).eval()
    with torch.no_grad():
        _check_outputs(model(torch.randn(1, 3, 40, 56)), model.tasks, (40, 56), 1)


def test_aspp_batch_of_one_in_training_is_a_clear_error():
    """Regression: BatchNorm's bare "Expected more than 1 value per channel" named no cause."""
    from cvaia.models import ASPP

    aspp = ASPP(8, 4, rates=(1,))
    with pytest.raises(ValueError, match="at least 2 images per batch.*--batch_size"):
        aspp(torch.randn(1, 8, 5, 5))
    assert aspp(torch.randn(2, 8, 5, 5)).shape == (2, 4, 5, 5)
    assert aspp.eval()(torch.randn(1, 8, 5, 5)).shape == (1, 4, 5, 5)  # evaluation: batch 1 is fine


# ---- ablations of problem 1.3 -------------------------------------------------------------------
@pytest.mark.parametrize("dilation", ["F,F,F", "F,F,T"])
def test_ablation_no_atrous_no_skip_shapes_and_modules(dilation):
    """``--aspp_rates ""`` and ``--decoder_skip_channels 0``: the modules are really gone."""
    model = _model(tasks="semseg", aspp_rates="", decoder_skip_channels=0, encoder_dilation=dilation)
    assert model.aspp.rates == () and len(model.aspp.branches) == 2  # 1x1 + image pooling
    assert model.aspp.fuse.in_channels == 2 * 256
    assert not any(isinstance(m, nn.Conv2d) and m.dilation != (1, 1) for m in model.aspp.modules())
    assert model.decoder.skip_proj is None and model.decoder.convs[0].in_channels == 256
    assert not any("skip_proj" in n for n, _ in model.named_parameters())
    model.eval()
    with torch.no_grad():
        _check_outputs(model(torch.randn(1, 3, 40, 56)), ("semseg",), (40, 56), 1)
    # the report's settings are untouched: 3 atrous branches, a 64 → 48 skip projection
    full = _model(tasks="semseg")
    assert full.aspp.rates == (3, 6, 9) and len(full.aspp.branches) == 5
    assert full.decoder.skip_proj.in_channels == 64 and full.decoder.skip_proj.out_channels == 48


def test_decoder_without_skip_ignores_the_skip_values():
    """Without a skip connection the stride-4 features only give the output size."""
    from cvaia.models import DecoderDeepLabV3p

    torch.manual_seed(0)
    dec = DecoderDeepLabV3p(16, 8, out_ch=5, skip_channels=0, num_convs=1).eval()
    bottleneck = torch.randn(2, 16, 3, 4)
    with torch.no_grad():
        a, fa = dec(bottleneck, torch.randn(2, 8, 12, 16))
        b, fb = dec(bottleneck, torch.randn(2, 8, 12, 16))
    assert a.shape == (2, 5, 12, 16) and fa.shape == (2, 256, 12, 16)
    torch.testing.assert_close(a, b)
    # with a skip the same call does depend on the skip features
    dec = DecoderDeepLabV3p(16, 8, out_ch=5, skip_channels=4, num_convs=1).eval()
    with torch.no_grad():
        assert not torch.allclose(dec(bottleneck, torch.randn(2, 8, 12, 16))[0],
                                  dec(bottleneck, torch.randn(2, 8, 12, 16))[0])
    with pytest.raises(ValueError, match="skip_channels"):
        DecoderDeepLabV3p(16, 8, out_ch=5, skip_channels=-1)


def test_aspp_without_atrous_is_pointwise_plus_global_context():
    """No atrous branch: away from a perturbed pixel, outputs move only by the (spatially constant)
    change of the image-pooling branch."""
    from cvaia.models import ASPP

    torch.manual_seed(0)
    aspp = ASPP(6, 4, rates=()).eval()
    x = torch.randn(1, 6, 7, 9)
    y = x.clone()
    y[..., 3, 4] += 5.0
    with torch.no_grad():
        diff = aspp(y) - aspp(x)
    mask = torch.ones(7, 9, dtype=torch.bool)
    mask[3, 4] = False
    away = diff[..., mask]  # 1×4×62: the same shift at every other pixel
    torch.testing.assert_close(away, away[..., :1].expand_as(away))
    # a 3x3 atrous branch (rate 1) makes the neighbours differ from the far pixels
    aspp = ASPP(6, 4, rates=(1,)).eval()
    with torch.no_grad():
        diff = aspp(y) - aspp(x)
    assert not torch.allclose(diff[..., 3, 5], diff[..., 0, 0])
    with pytest.raises(ValueError, match="rates"):
        ASPP(6, 4, rates=(0,))


def test_frozen_bn_keeps_the_pretrained_statistics_and_scales(tmp_path):
    torch.manual_seed(6)
    source = resnet_encoder("resnet18")
    with torch.no_grad():  # statistics and scales a pretraining could have left
        for m in source.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
    path = tmp_path / "encoder.pt"
    torch.save(source.state_dict(), path)
    cfg = make_config(model_name="deeplabv3p", tasks="semseg,depth", pretrained=str(path), encoder_frozen_bn=True)
    model = build_model(cfg)
    frozen = [m for m in model.encoder.modules() if isinstance(m, torchvision.ops.misc.FrozenBatchNorm2d)]
    assert len(frozen) == 20 and not any(isinstance(m, nn.BatchNorm2d) for m in model.encoder.modules())
    before = {k: v.clone() for k, v in model.encoder.state_dict().items()}
    for k, v in before.items():  # loaded (num_batches_tracked is a BatchNorm counter frozen BN has not)
        torch.testing.assert_close(v, source.state_dict()[k])
    # a training step moves the convolutions and the decoder, never the encoder's BN
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    out = model(torch.randn(2, 3, 64, 64))
    (out["semseg"].square().mean() + out["depth"].mean()).backward()
    opt.step()
    after = model.encoder.state_dict()
    bn_keys = [k for k in before if k.split(".")[-1] in ("running_mean", "running_var") or ".bn" in k or k.startswith("bn1")]
    assert bn_keys and all(torch.equal(before[k], after[k]) for k in bn_keys)
    assert not torch.equal(before["conv1.weight"], after["conv1.weight"])
    # and back: a frozen-BN model's encoder loads into a plain one (the counter is filled in)
    plain = tmp_path / "frozen_encoder.pt"
    torch.save(model.encoder.state_dict(), plain)
    again = build_model(make_config(model_name="deeplabv3p", tasks="semseg,depth", pretrained=str(plain)))
    torch.testing.assert_close(again.encoder.bn1.running_var, source.bn1.running_var)


def test_frozen_bn_needs_pretrained_weights_and_only_then_enters_the_hash():
    with pytest.raises(ConfigError, match="--encoder_frozen_bn: needs pretrained"):
        make_config(encoder_frozen_bn=True)
    with pytest.raises(PretrainedWeightsError, match="frozen BatchNorm needs pretrained"):
        resnet_encoder("resnet18", frozen_bn=True)
    assert "encoder_frozen_bn" not in make_config().hash_dict()  # old runs keep their hashes
