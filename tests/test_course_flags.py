"""The course template's flags, verbatim: list flags, booleans, --pretrained true|false, the
template's extra flags, and clear errors for values that cannot work."""

from __future__ import annotations

import argparse
import warnings

import pytest

from cvaia import weights
from cvaia.__main__ import main
from cvaia.config import ConfigError, add_config_arguments, config_from_args, make_config


def _parse(argv: str | list[str]):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return config_from_args(parser.parse_args(argv.split() if isinstance(argv, str) else argv))


def test_tasks_space_or_comma_separated():
    assert _parse("--tasks semseg depth").tasks == ("semseg", "depth")
    assert _parse("--tasks semseg,depth").tasks == ("semseg", "depth")
    assert _parse("--tasks depth --model_name adaptive_depth").tasks == ("depth",)
    assert _parse("--aspp_rates 3 6 9").aspp_rates == (3, 6, 9)
    assert _parse(["--aspp_rates", ""]).aspp_rates == ()
    with pytest.raises(ConfigError, match="--tasks"):
        _parse("--tasks semseg normals")


def test_params_command_takes_the_course_tasks(capsys):
    assert main(["params", "--model_name", "deeplabv3p_multitask", "--tasks", "semseg", "depth", "--json"]) == 0
    assert '"total"' in capsys.readouterr().out


@pytest.mark.parametrize("word,value", [("yes", True), ("No", False), ("TRUE", True), ("false", False),
                                        ("t", True), ("F", False), ("Y", True), ("n", False),
                                        ("1", True), ("0", False)])
def test_course_booleans_in_any_case(word, value):
    cfg = _parse(f"--optimizer_float_16 {word} --aug_geom_reflect {word}")
    assert cfg.optimizer_float_16 is value and cfg.aug_geom_reflect is value


@pytest.fixture()
def weight_files(tmp_path, monkeypatch):
    """ImageNet cache and shipped-weights folders under tmp_path (both empty)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(weights, "WEIGHTS_DIR", tmp_path / "shipped")
    imagenet = weights.imagenet_weights_path("resnet18")
    synthetic = weights.synthetic_weights_path("resnet18")
    return imagenet, synthetic


def _touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"weights")


def test_pretrained_false_is_random_true_is_imagenet(weight_files):
    imagenet, _ = weight_files
    assert _parse("--pretrained false").pretrained == "random"
    assert _parse("--pretrained No").pretrained == "random"
    _touch(imagenet)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no notice: nothing was substituted
        assert _parse("--pretrained true").pretrained == "imagenet"
        assert make_config(pretrained=True).pretrained == "imagenet"


def test_pretrained_true_offline_uses_the_synthetic_encoder_with_a_notice(weight_files):
    from cvaia.errors import ConfigNotice

    imagenet, synthetic = weight_files
    with pytest.raises(ConfigError, match="--pretrained true") as err:
        _parse("--pretrained True")
    assert str(imagenet) in str(err.value) and str(synthetic) in str(err.value)  # neither exists
    _touch(synthetic)
    with pytest.warns(ConfigNotice, match="not in the local torch cache.*synthetic") as notices:
        cfg = _parse("--pretrained True")
    assert len(notices) == 1 and "\n" not in str(notices[0].message)
    assert cfg.pretrained == "synthetic"
    assert cfg.hash_dict()["pretrained_weights"] == weights.weights_identity("synthetic")


def test_pretrained_true_prints_one_line_in_the_cli(weight_files, capsys):
    _, synthetic = weight_files
    _touch(synthetic)
    with pytest.raises(SystemExit):  # the fake weights file cannot be loaded: a usage error after the notice
        main(["params", "--pretrained", "true", "--json"])
    err = capsys.readouterr().err
    notice = [line for line in err.splitlines() if "not in the local torch cache" in line]
    assert len(notice) == 1 and notice[0].startswith("[cvaia] ")


def test_template_flags_with_real_semantics():
    cfg = _parse("--workers 4 --workers_validation 3 --accumulate_grad_batches 2 --dataset miniscapes "
                 "--prepare_submission true --num_steps_visualization_first 5 "
                 "--num_steps_visualization_interval 7 --visualize_num_samples_in_batch 2 "
                 "--visualize_img_grid_width 4 --observe_train_ids [0,3] --observe_valid_ids [1]")
    assert (cfg.workers_validation, cfg.accumulate_grad_batches, cfg.dataset) == (3, 2, "miniscapes")
    assert cfg.prepare_submission and cfg.observe_train_ids == (0, 3) and cfg.observe_valid_ids == (1,)
    assert (cfg.num_steps_visualization_first, cfg.num_steps_visualization_interval) == (5, 7)
    assert (cfg.visualize_num_samples_in_batch, cfg.visualize_img_grid_width) == (2, 4)
    assert _parse(["--observe_train_ids", "[0,", "100]"]).observe_train_ids == (0, 100)
    assert _parse("--tensorboard_img_grid_width 3").visualize_img_grid_width == 3  # older name
    assert _parse("--log_to_console false").quiet
    with pytest.raises(ConfigError, match="--dataset"):
        _parse("--dataset cityscapes")
    with pytest.raises(ConfigError, match="--observe_train_ids"):
        _parse("--observe_train_ids {0:1}")


def test_accumulation_changes_the_hash_only_when_used():
    base = make_config()
    assert "accumulate_grad_batches" not in base.hash_dict()  # existing runs keep their hashes
    assert make_config(accumulate_grad_batches=2).config_hash() != base.config_hash()
    bookkeeping = make_config(workers_validation=7, prepare_submission=True, observe_train_ids=[5],
                              num_steps_visualization_first=1, visualize_img_grid_width=3)
    assert bookkeeping.config_hash() == base.config_hash()


def test_daemon_flags_are_accepted_with_a_notice():
    from cvaia.errors import ConfigNotice

    with pytest.warns(ConfigNotice) as notices:
        cfg = _parse("--tensorboard_daemon_start True --tensorboard_daemon_port 10000 --ngrok_daemon_start no "
                     "--ngrok_auth_token abc")
    assert cfg == make_config()
    assert [str(n.message).split(":")[0] for n in notices] == [
        "--tensorboard_daemon_start", "--tensorboard_daemon_port", "--ngrok_daemon_start", "--ngrok_auth_token"]


@pytest.mark.parametrize("kw,flag", [
    ({"optimizer_lr": "nan"}, "--optimizer_lr"), ({"optimizer_lr": "inf"}, "--optimizer_lr"),
    ({"optimizer_lr": float("-inf")}, "--optimizer_lr"), ({"optimizer_weight_decay": "nan"}, "--optimizer_weight_decay"),
    ({"batch_size": 1}, "--batch_size"), ({"aug_input_crop_size": 16}, "--aug_input_crop_size"),
    ({"accumulate_grad_batches": 0}, "--accumulate_grad_batches"), ({"observe_valid_ids": [-1]}, "--observe_valid_ids"),
])
def test_values_that_cannot_work_are_refused_at_config_time(kw, flag):
    with pytest.raises(ConfigError, match=flag):
        make_config(**kw)


def test_batch_of_one_is_fine_without_image_pooling():
    assert make_config(batch_size=1, model_name="adaptive_depth", tasks="depth").batch_size == 1
    with pytest.raises(ConfigError, match="image-pooling"):
        make_config(batch_size=1, model_name="adaptive_depth", tasks="depth", latents_source="aspp")


def test_dataset_root_spellings_of_one_folder_hash_the_same(tmp_path, monkeypatch):
    (tmp_path / "d").mkdir()
    monkeypatch.chdir(tmp_path)
    hashes = {make_config(dataset_root=root).config_hash() for root in (str(tmp_path / "d"), f"{tmp_path}/d/", "d")}
    assert len(hashes) == 1
    monkeypatch.chdir(tmp_path / "d")  # the same relative spelling elsewhere is another folder
    assert make_config(dataset_root="d").config_hash() not in hashes


def test_notebook_parameter_of_the_wrong_type_fails_in_resolve():
    from cvaia import experiments

    with pytest.raises(experiments.ParameterError, match="SEED must be an integer.*'zero'"):
        experiments.resolve("00", {"PROFILE": "smoke", "SEED": "zero"})
    assert experiments.resolve("00", {"PROFILE": "smoke", "SEED": 3}).SEED == 3
