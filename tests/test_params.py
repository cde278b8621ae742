"""Parameter tables against hand arithmetic from the report's layer list, and the params CLI."""

from __future__ import annotations

import json

import pytest
import torch
import torchvision

from cvaia.__main__ import main
from cvaia.config import make_config
from cvaia.models import build_model
from cvaia.params import format_parameter_table, parameter_table


# ---- hand arithmetic (independent of the model code) ------------------------------------------
def conv(cin, cout, k=1, bias=False):
    return cin * cout * k * k + (cout if bias else 0)


def bn(c):
    return 2 * c  # weight + bias (running stats are buffers)


def linear(cin, cout):
    return cin * cout + cout


def basic_block(cin, cout, downsample):
    n = conv(cin, cout, 3) + bn(cout) + conv(cout, cout, 3) + bn(cout)
    return n + (conv(cin, cout, 1) + bn(cout) if downsample else 0)


def resnet18_trunk():
    n = conv(3, 64, 7) + bn(64)
    cin = 64
    for cout in (64, 128, 256, 512):
        n += basic_block(cin, cout, downsample=cin != cout) + basic_block(cout, cout, False)
        cin = cout
    return n


def aspp(cin=512, cout=256, rates=3):
    one_by_one = conv(cin, cout, 1) + bn(cout)
    atrous = rates * (conv(cin, cout, 3) + bn(cout))
    pooling = conv(cin, cout, 1) + bn(cout)
    fuse = conv((2 + rates) * cout, cout, 1, bias=True)
    return one_by_one + atrous + pooling + fuse


def decoder(bottleneck, out, skip=48, convs=2, skip_in=64, mid=256):
    n = conv(skip_in, skip, 1, bias=True)
    cin = bottleneck + skip
    for _ in range(convs):
        n += conv(cin, mid, 3, bias=True) + bn(mid)
        cin = mid
    return n + conv(mid, out, 1, bias=True)


def transformer_block(dim, expansion=4):
    attention = bn(dim) + 4 * linear(dim, dim)  # LayerNorm has weight + bias like BN
    mlp = bn(dim) + linear(dim, dim * expansion) + linear(dim * expansion, dim)
    return attention + mlp


ENCODER = resnet18_trunk()
ASPP = aspp()


def test_hand_arithmetic_pieces():
    # the trunk is torchvision's resnet18 without its fc layer
    tv = sum(p.numel() for p in torchvision.models.resnet18().parameters())
    assert ENCODER == tv - linear(512, 1000) == 11_176_512
    # ASPP(512→256, rates 3,6,9) = 512*256 + 3*(512*256*9) + 512*256 + 5*256*256+256 + 5 BNs
    assert ASPP == 512 * 256 + 3 * (512 * 256 * 9) + 512 * 256 + 5 * 256 * 256 + 256 + 5 * 2 * 256 == 4_131_584


def test_joint_deeplabv3p_matches_report():
    """Report: joint DeepLabV3+ (R18, skip 48, 2 convs, rates 3,6,9, both tasks) ≈ 16.6M."""
    cfg = make_config(model_name="deeplabv3p", decoder_skip_channels=48, decoder_num_convs=2, aspp_rates="3,6,9")
    table = parameter_table(build_model(cfg))
    expected = {"encoder": ENCODER, "aspp": ASPP, "decoder": decoder(256, 19 + 1)}
    assert table == expected
    assert sum(table.values()) == 16_608_132
    assert round(sum(table.values()) / 1e6, 1) == 16.6


def test_branched_matches_report():
    """Report: branched (shared encoder, per-task ASPP + decoder) ≈ 22.0M."""
    table = parameter_table(build_model(make_config(model_name="deeplabv3p_multitask")))
    expected = {"encoder": ENCODER, "aspp.semseg": ASPP, "aspp.depth": ASPP,
                "decoder.semseg": decoder(256, 19), "decoder.depth": decoder(256, 1)}
    assert table == expected
    assert sum(table.values()) == 22_034_612
    assert round(sum(table.values()) / 1e6, 1) == 22.0


def test_final_decoder_variant():
    table = parameter_table(build_model(make_config(decoder_skip_channels=64, decoder_num_convs=3)))
    assert table["decoder"] == decoder(256, 20, skip=64, convs=3)



def test_ablation_tables_no_atrous_no_skip():
    """Problem 1.3's ablations: ASPP = 1x1 + pooling + fuse; decoder without the skip projection."""
    no_atrous = aspp(rates=0)
    # 1x1 512→256 + pooling 1x1 512→256 + fuse 512→256 (with bias) + 2 BNs
    assert no_atrous == 2 * 512 * 256 + 2 * 256 * 256 + 256 + 2 * 2 * 256 == 394_496
    base = make_config(tasks="semseg", encoder_dilation="F,F,F", aspp_rates="", decoder_skip_channels=0)
    table = parameter_table(build_model(base))
    assert table == {"encoder": ENCODER, "aspp": no_atrous, "decoder": decoder(256, 19, skip=0)}
    assert table["decoder"] == 256 * 256 * 9 + 256 + 2 * 256 + 256 * 256 * 9 + 256 + 2 * 256 + 256 * 19 + 19
    # dilation changes no parameter count; skip 48 adds exactly the projection and the wider first conv
    assert parameter_table(build_model(base.replace(encoder_dilation="F,F,T"))) == table
    with_skip = parameter_table(build_model(base.replace(encoder_dilation="F,F,T", aspp_rates="3,6,9",
                                                         decoder_skip_channels=48)))
    assert with_skip == {"encoder": ENCODER, "aspp": ASPP, "decoder": decoder(256, 19)}
    assert with_skip["decoder"] - table["decoder"] == conv(64, 48, 1, bias=True) + 48 * 256 * 9

def test_adaptive_depth_defaults():
    model = build_model(make_config(model_name="adaptive_depth", tasks="depth"))
    table = parameter_table(model)
    expected = {
        "encoder": ENCODER,
        "decoder": decoder(512, 256),  # directly on the 512-ch bottleneck, no ASPP
        "depth_head.query_conv": conv(256, 256, 3, bias=True),
        "depth_head.reducer": linear(512, 256),  # lowest features → dim 256
        "depth_head.transformer": 2 * transformer_block(256),
        "depth_head.bin_depth": linear(256, 1),
    }
    assert table == expected
    assert sum(table.values()) == sum(p.numel() for p in model.parameters())


def test_adaptive_depth_variants():
    # ASPP latents: own ASPP, no reducer at dim 256; 8 heads do not change the count
    table = parameter_table(build_model(make_config(model_name="adaptive_depth", tasks="depth",
                                                    latents_source="aspp", num_heads=8,
                                                    num_transformer_layers=6, pos_embed="query")))
    assert table["aspp"] == ASPP and "depth_head.reducer" not in table
    assert table["depth_head.transformer"] == 6 * (transformer_block(256) + 64 * 256)  # + pos-embed N×dim
    # dim 512: reducer 512→512 not needed, the 256-ch query map is projected to 512
    table = parameter_table(build_model(make_config(model_name="adaptive_depth", tasks="depth",
                                                    transformer_dim=512, transformer_reducer="conv")))
    assert "depth_head.reducer" not in table
    assert table["depth_head.query_proj"] == conv(256, 512, 1, bias=True)
    assert table["depth_head.transformer"] == 2 * transformer_block(512)


def test_transformer_multitask_defaults():
    table = parameter_table(build_model(make_config(model_name="transformer_multitask")))
    expected = {
        "encoder": ENCODER,
        "aspp.semseg": ASPP,
        "decoder.depth": decoder(512, 256),
        "decoder.semseg": decoder(256, 19),
        "depth_head.query_conv": conv(256, 256, 3, bias=True),
        "depth_head.reducer": linear(512, 256),
        "depth_head.transformer": 2 * transformer_block(256),
        "depth_head.bin_depth": linear(256, 1),
        "seg_head.transformer": 2 * transformer_block(256),
    }
    assert table == expected


def test_cross_attention_table():
    model = build_model(make_config(model_name="cross_attention_multitask", transformer_dim=64,
                                    num_transformer_layers=3, num_bins=16))
    table = parameter_table(model)
    assert table["seg_head.class_tokens"] == 19 * 64
    # cross block: two LayerNorms (queries, context) + Q/K/V/out + MLP
    assert table["seg_head.blocks"] == 3 * (transformer_block(64) + bn(64))
    assert table["decoder.semseg"] == decoder(256, 64)
    assert sum(table.values()) == sum(p.numel() for p in model.parameters())


def test_table_counts_shared_parameters_once():
    lin = torch.nn.Linear(3, 3)
    model = torch.nn.Sequential(lin, lin)
    assert parameter_table(model) == {"0": 12}
    text = format_parameter_table({"a": 3, "b": 1})
    assert "total" in text and "75.0%" in text


# ---- CLI -----------------------------------------------------------------------------------------
def test_params_cli_json(capsys):
    assert main(["params", "--model_name", "deeplabv3p_multitask", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["total"] == 22_034_612 == sum(data["modules"].values())
    assert data["modules"]["decoder.depth"] == decoder(256, 1)


def test_params_cli_table(capsys):
    assert main(["params", "--model_name", "deeplabv3p", "--decoder_skip_channels", "48"]) == 0
    out = capsys.readouterr().out
    assert "encoder" in out and "16,608,132" in out and "total" in out


@pytest.mark.parametrize("argv,message", [
    (["--model_name", "unet"], "--model_name"),
    (["--model_name", "adaptive_depth", "--tasks", "depth", "--num_bins", "10"], "perfect square"),
    (["--model_name", "adaptive_depth", "--tasks", "depth", "--transformer_dim", "30"], "not divisible"),
    (["--model_name", "adaptive_depth"], "depth only"),
    (["--modle_name", "deeplabv3p"], "unrecognized arguments"),
])
def test_params_cli_bad_flags(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        main(["params", *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_params_cli_missing_weights(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(SystemExit):
        main(["params", "--pretrained", "imagenet"])
    err = capsys.readouterr().err
    assert "--pretrained" in err and str(tmp_path / "hub" / "checkpoints") in err
