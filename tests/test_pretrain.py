"""The shipped synthetic-pretrained encoder: file, sidecar, loading, and the command that rebuilds it."""

import json
import shlex
import subprocess
import sys

import pytest
import torch

from cvaia import pretrain
from cvaia.config import make_config
from cvaia.models import build_model
from cvaia.models.encoder import PretrainedWeightsError, resnet_encoder
from cvaia.weights import file_sha256, sidecar_path, synthetic_weights_path, weights_identity

WEIGHTS = synthetic_weights_path("resnet18")


def test_shipped_file_matches_its_sidecar():
    side = json.loads(sidecar_path(WEIGHTS).read_text())
    assert side["file"] == WEIGHTS.name
    assert side["sha256"] == file_sha256(WEIGHTS)
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert side["tensors"] == len(state)
    floats = [v for v in state.values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    # torchvision's key layout, encoder only (no decoder/head keys, no fc)
    assert "conv1.weight" in state and "layer4.1.bn2.running_var" in state
    assert not any(k.startswith(("encoder.", "fc.", "aspp", "decoder")) for k in state)
    # what it was made from and what it reached
    assert side["data"]["seed"] == pretrain.DATA_SEED != 0  # disjoint from the default set (seed 0)
    for key in ("command", "steps", "device", "train_time_s"):
        assert side[key], key
    assert side["metrics_val"]["best"]["miou"] > 0 and side["metrics_val"]["best"]["si_log_rmse"] > 0


def test_dry_run_would_rebuild_the_shipped_file():
    side = json.loads(sidecar_path(WEIGHTS).read_text())
    args = shlex.split(side["command"])
    assert args[:4] == ["python", "-m", "cvaia", "pretrain"]
    out = subprocess.run([sys.executable, "-m", "cvaia", "pretrain", *args[4:], "--dry-run"], capture_output=True,
                         text=True, check=True)
    report = json.loads(out.stdout)
    assert report["matches_shipped"] is True
    assert report["recipe"] == side["recipe"]
    assert report["command"] == side["command"]
    assert report["data_size"] == {k: side["data"][k] for k in pretrain.DATA_SIZE}


def test_synthetic_weights_load_into_every_encoder_user():
    enc = resnet_encoder("resnet18", weights="synthetic")
    state = torch.load(WEIGHTS, map_location="cpu", weights_only=True)
    assert torch.equal(enc.conv1.weight.detach(), state["conv1.weight"].float())
    model = build_model(make_config(model_name="deeplabv3p_multitask", tasks="semseg,depth", pretrained="synthetic"))
    assert torch.equal(model.encoder.layer3[0].conv1.weight.detach(), state["layer3.0.conv1.weight"].float())


def test_missing_synthetic_weights_name_the_command(monkeypatch, tmp_path):
    monkeypatch.setattr("cvaia.models.encoder.synthetic_weights_path", lambda name: tmp_path / f"{name}_synthetic.pt")
    with pytest.raises(PretrainedWeightsError, match="python -m cvaia pretrain"):
        resnet_encoder("resnet18", weights="synthetic")


def test_weights_identity_follows_the_content(tmp_path):
    assert weights_identity("random") == "random"
    f = tmp_path / "w.pt"
    f.write_bytes(b"one")
    a = weights_identity(str(f))
    f.write_bytes(b"two!")
    b = weights_identity(str(f))
    assert a.startswith("sha256:") and b.startswith("sha256:") and a != b
    assert weights_identity(str(tmp_path / "nope.pt")).startswith("missing:")
    assert weights_identity("synthetic") == "sha256:" + file_sha256(WEIGHTS)


def test_export_never_overwrites(tmp_path):
    target = tmp_path / "enc.pt"
    target.write_bytes(b"user's file")
    with pytest.raises(FileExistsError, match="never"):
        pretrain.export_encoder(object(), target, "cmd")
    assert target.read_bytes() == b"user's file"


def test_run_hash_covers_the_weights_content(tmp_path):
    f = tmp_path / "enc.pt"
    f.write_bytes(b"first weights")
    cfg = make_config(pretrained=str(f))
    first = cfg.config_hash()
    assert make_config(pretrained=str(f)).config_hash() == first
    f.write_bytes(b"other weights, same path")
    assert cfg.config_hash() != first
    # random keeps its hash free of any file
    assert "pretrained_weights" not in make_config(pretrained="random").hash_dict()


def test_results_table_mixes_random_and_pretrained_runs(tiny_root, isolated_dirs):
    from cvaia.runs import get_run, results_table

    base = dict(dataset_root=str(tiny_root), tasks="semseg", batch_size=2, num_epochs=1, aug_input_crop_size=32,
                max_train_images=2, max_val_images=1, quiet=True)
    runs = [get_run(make_config(**base, pretrained=p)) for p in ("random", "synthetic")]
    table = results_table(runs)
    assert list(table["pretrained"]) == ["random", "synthetic"]
    assert table["pretrained_weights"].iloc[0] is None or table["pretrained_weights"].isna().iloc[0]
    assert table["pretrained_weights"].iloc[1] == "sha256:" + file_sha256(WEIGHTS)
