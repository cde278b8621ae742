"""The model registry, and checkpoints saved before the builders were refactored still load.

``tests/data/model_state_keys_v1.json`` was written from the code at commit 7cde2d3 (before
the registry and the composed builders): for each of 12 model variants (every model, the
ablations, every latents source, reducers, widths), built with ``torch.manual_seed(0)``, the
state dict's key names, shapes, dtypes and the sum of every tensor. Only names and shapes are
stored (the weights would be megabytes); the sums pin the initialisation, so that a
configuration trains to the same numbers as its cached run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cvaia.config import Config, ConfigError, make_config
from cvaia.models import MODEL_NAMES, MODELS, build_model, task_error

FIXTURE = Path(__file__).parent / "data" / "model_state_keys_v1.json"
SAVED = json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("variant", sorted(SAVED))
def test_checkpoint_saved_before_the_refactor_loads(variant):
    saved = SAVED[variant]
    torch.manual_seed(0)
    model = build_model(make_config(**saved["overrides"]))
    assert type(model).__name__ == saved["class"]
    state = model.state_dict()
    assert list(state) == list(saved["state"])  # same names (and order)
    for key, (shape, dtype, total) in saved["state"].items():
        assert list(state[key].shape) == shape and str(state[key].dtype) == f"torch.{dtype}", key
        assert float(state[key].double().sum()) == pytest.approx(total, rel=1e-9, abs=1e-6), key
    # a state dict of the old layout loads strictly
    old = {k: torch.full(shape, 0.5).to(getattr(torch, dtype)) for k, (shape, dtype, _) in saved["state"].items()}
    model.load_state_dict(old, strict=True)
    assert all(torch.equal(v, old[k]) for k, v in model.state_dict().items())


def test_config_choices_and_task_rules_come_from_the_registry():
    field = next(f for f in Config.__dataclass_fields__.values() if f.name == "model_name")
    assert tuple(field.metadata["choices"]) == MODEL_NAMES == tuple(MODELS)
    for name, info in MODELS.items():
        tasks = info.tasks or ("semseg",)
        assert task_error(name, tasks) is None
        cfg = make_config(model_name=name, tasks=",".join(tasks))  # every registered model is a valid config
        assert cfg.model_name == name
    with pytest.raises(ConfigError, match="--tasks: model adaptive_depth predicts depth only"):
        make_config(model_name="adaptive_depth")
    with pytest.raises(ConfigError, match="--tasks: model cross_attention_multitask predicts semseg,depth"):
        make_config(model_name="cross_attention_multitask", tasks="depth")
    assert "--model_name" in task_error("unet", ("semseg",))


def test_build_model_checks_the_same_rules_on_an_unvalidated_config():
    cfg = make_config(model_name="adaptive_depth", tasks="depth")
    object.__setattr__(cfg, "tasks", ("semseg", "depth"))  # bypass validate()
    with pytest.raises(ConfigError, match="--tasks"):
        build_model(cfg)


def test_depth_branch_must_fit_its_latents_source():
    from cvaia.models import AdaptiveDepth, AttentionOptions, depth_branch, resnet_encoder

    enc = resnet_encoder("resnet18")
    branch = depth_branch(enc, skip_channels=48, num_convs=1, latents_source="lowest", aspp_rates=(3,),
                          attention=AttentionOptions(dim=32, num_bins=16, num_layers=1))
    with pytest.raises(ValueError, match="latents_source"):
        AdaptiveDepth(enc, branch._replace(latents_source="aspp"))
    with pytest.raises(ValueError, match="latents_source"):
        depth_branch(enc, skip_channels=48, num_convs=1, latents_source="middle", aspp_rates=(3,),
                     attention=AttentionOptions())
