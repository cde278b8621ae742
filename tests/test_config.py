"""The Config dataclass: coercion, validation, hashing, flags."""

from __future__ import annotations

import argparse

import pytest

from cvaia.config import Config, ConfigError, add_config_arguments, config_from_args, make_config


def test_defaults_validate_and_hash_is_stable():
    a, b = make_config(), Config().validate()
    assert a == b
    assert a.config_hash() == b.config_hash()
    assert len(a.config_hash()) == 10


def test_hash_ignores_bookkeeping_fields_only():
    base = make_config()
    assert base.replace(name="x", workers=0, quiet=True, device="cpu").config_hash() == base.config_hash()
    assert base.replace(optimizer_lr=1e-3).config_hash() != base.config_hash()
    assert base.replace(tasks="semseg").config_hash() != base.config_hash()


def test_flag_strings_are_coerced():
    cfg = make_config(tasks="semseg,depth", encoder_dilation="F,F,T", aspp_rates="3,6,9",
                      aug_geom_reflect="true", num_epochs="3", optimizer_lr="1e-4")
    assert cfg.tasks == ("semseg", "depth")
    assert cfg.encoder_dilation == (False, False, True)
    assert cfg.aspp_rates == (3, 6, 9)
    assert cfg.aug_geom_reflect is True and cfg.num_epochs == 3 and cfg.optimizer_lr == 1e-4


@pytest.mark.parametrize("kw, flag", [
    (dict(optimizer="rmsprop"), "--optimizer"),
    (dict(num_epochs="three"), "--num_epochs"),
    (dict(num_bins=50), "--num_bins"),
    (dict(transformer_dim=256, num_heads=3), "--num_heads"),
    (dict(model_name="unet"), "--model_name"),
    (dict(tasks="semseg,normals"), "--tasks"),
    (dict(decoder_num_convs=4), "--decoder_num_convs"),
    (dict(encoder_dilation="F,T"), "--encoder_dilation"),
    (dict(aug_geom_reflect="maybe"), "--aug_geom_reflect"),
    (dict(model_name="adaptive_depth", tasks="semseg,depth"), "--tasks"),
    (dict(aspp_rates="3,0,9"), "--aspp_rates"),
    (dict(aspp_rates="3,x"), "--aspp_rates"),
    (dict(decoder_skip_channels=-1), "--decoder_skip_channels"),
])
def test_bad_values_name_the_flag(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        make_config(**kw)


def test_unknown_field_suggests_close_names():
    with pytest.raises(ConfigError, match="optimizer_lr"):
        make_config(optimizer_lrr=0.1)


def test_argparse_round_trip():
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--model_name", "deeplabv3p_multitask", "--batch_size", "8",
                              "--aug_geom_reflect", "--tasks", "semseg"])
    cfg = config_from_args(args)
    assert cfg.model_name == "deeplabv3p_multitask" and cfg.batch_size == 8
    assert cfg.aug_geom_reflect is True and cfg.tasks == ("semseg",)
    assert make_config(**cfg.to_dict()) == cfg


def test_ablation_values_no_atrous_and_no_skip():
    """``aspp_rates`` may be empty (no atrous branches); ``decoder_skip_channels`` may be 0 (no skip)."""
    for rates in ("", (), []):
        assert make_config(aspp_rates=rates).aspp_rates == ()
    cfg = make_config(aspp_rates="", decoder_skip_channels=0)
    assert cfg.decoder_skip_channels == 0
    assert make_config(**cfg.to_dict()) == cfg  # survives the run store's config.json round trip
    assert len({cfg.config_hash(), make_config().config_hash(), make_config(aspp_rates="").config_hash(),
                make_config(decoder_skip_channels=0).config_hash()}) == 4
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    args = parser.parse_args(["--aspp_rates", "", "--decoder_skip_channels", "0"])
    assert config_from_args(args) == cfg


def test_float16_flag_sets_the_effective_precision_without_mutating():
    cfg = make_config(optimizer_float_16=True)
    assert cfg.precision_on("cuda") == "fp16"
    assert cfg.precision == "auto"  # validate() leaves the fields as given
    before = cfg.to_dict()
    assert cfg.validate() is cfg and cfg.to_dict() == before
    assert make_config(optimizer_float_16=True, precision="bf16").precision_on("cuda") == "bf16"
    # one run, whichever way the precision field reads (older versions rewrote it to fp16)
    assert cfg.config_hash() == cfg.replace(precision="fp16").config_hash()
    # on a CPU every precision is fp32 (autocast runs on CUDA only): the same run as the default
    assert cfg.precision_on("cpu") == "fp32" and cfg.replace(device="cpu").config_hash() == make_config(device="cpu").config_hash()


def test_run_hashes_are_unchanged(tmp_path, monkeypatch):
    """Hashes of a few configs as computed before the config/registry refactor: existing run
    folders stay cache hits — on a machine with or without a GPU (issue 18: the hash holds the
    precision asked for, never the machine's)."""
    monkeypatch.setenv("CVAIA_DATA_DIR", str(tmp_path))  # the default data set is the synthetic one
    monkeypatch.setattr("torch.cuda.current_device", lambda: 0)
    monkeypatch.setattr("torch.cuda.get_device_capability", lambda d=None: (9, 0))
    cases = [({}, "67a6222d7a"), ({"optimizer": "adam", "optimizer_lr": 1e-4}, "d8948d8756"),
             ({"model_name": "adaptive_depth", "tasks": "depth"}, "3288b8f3a8"),
             ({"model_name": "cross_attention_multitask", "dataset_root": "/tmp/x"}, "dfe95268d6"),
             ({"tasks": "semseg", "seed": 3}, "a61d067b05"),
             # --device cpu: every precision is fp32, the default run
             ({"device": "cpu", "precision": "fp16"}, "67a6222d7a"),
             ({"device": "cpu", "optimizer_float_16": True}, "67a6222d7a"),
             # An explicit mixed-precision request for a job that may run on a GPU (--device
             # auto): its own run, on every machine. Issue 10 hashed these as the default run
             # (67a6222d7a) where the machine hashing them had no GPU and as the runs below where
             # it had one; these are the hashes they had on a GPU machine.
             ({"optimizer_float_16": True}, "e109cf6db8"), ({"precision": "fp16"}, "e109cf6db8"),
             ({"optimizer_float_16": True, "precision": "bf16"}, "44b525b143")]
    for gpu in (False, True):
        monkeypatch.setattr("torch.cuda.is_available", lambda g=gpu: g)
        for overrides, expected in cases:
            assert make_config(**overrides).config_hash() == expected, (overrides, gpu)


def test_default_dataset_is_part_of_the_hash(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAIA_DATA_DIR", str(tmp_path))
    cfg = make_config()
    synthetic_hash = cfg.config_hash()
    assert cfg.hash_dict()["dataset_root"] == "default:synthetic"
    (tmp_path / "miniscapes" / "train" / "rgb").mkdir(parents=True)
    assert cfg.hash_dict()["dataset_root"] == "default:miniscapes"
    assert cfg.config_hash() != synthetic_hash
