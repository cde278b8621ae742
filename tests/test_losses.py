"""Losses: CE with ignore, SILog (masking, λ semantics, scale invariance), task weighting."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cvaia.config import make_config
from cvaia.losses import MultiTaskLoss, cross_entropy, silog, silog_variants


def _depth_pair(seed=0, shape=(2, 1, 6, 7)):
    g = torch.Generator().manual_seed(seed)
    target = torch.rand(shape, generator=g, dtype=torch.float64) * 80 + 1
    pred = target * torch.exp(0.3 * torch.randn(shape, generator=g, dtype=torch.float64))
    return pred, target


def _silog_numpy(pred, target, lam):
    """Independent reference: plain numpy over the valid pixels of the whole batch."""
    p = np.asarray(pred, dtype=np.float64).ravel()
    t = np.asarray(target, dtype=np.float64).ravel()
    ok = np.isfinite(t) & (t > 0)
    e = np.log(t[ok]) - np.log(np.maximum(p[ok], 1e-3))
    return math.sqrt(e.var() + lam * e.mean() ** 2)


# ---- cross-entropy ---------------------------------------------------------------------------
def test_cross_entropy_ignores_255_like_torch():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 19, 5, 6, generator=g)
    target = torch.randint(0, 19, (2, 5, 6), generator=g)
    target[0, :2] = 255
    ours = cross_entropy(logits, target.to(torch.uint8))
    ref = F.cross_entropy(logits, target, ignore_index=255)
    assert torch.allclose(ours, ref, atol=1e-6)
    assert torch.allclose(cross_entropy(logits, target[:, None]), ref, atol=1e-6)  # B×1×H×W target


def test_cross_entropy_all_ignored_is_zero_with_finite_grads():
    logits = torch.randn(2, 19, 4, 4, requires_grad=True)
    target = torch.full((2, 4, 4), 255)
    loss = cross_entropy(logits, target)
    loss.backward()
    assert loss.item() == 0.0
    assert torch.isfinite(logits.grad).all() and (logits.grad == 0).all()


def test_cross_entropy_shape_error():
    with pytest.raises(ValueError, match="target shape"):
        cross_entropy(torch.randn(2, 19, 4, 4), torch.zeros(2, 4, 5, dtype=torch.long))


# ---- SILog -----------------------------------------------------------------------------------
@pytest.mark.parametrize("lam", [0.0, 0.15, 0.5, 1.0])
def test_silog_matches_numpy_reference(lam):
    pred, target = _depth_pair()
    assert silog(pred, target, lam=lam).item() == pytest.approx(_silog_numpy(pred, target, lam), rel=1e-9)


def test_silog_lambda_semantics():
    pred, target = _depth_pair(seed=3)
    e = (torch.log(target) - torch.log(pred)).ravel()
    # λ = 0: standard deviation of the log error; λ = 1: log-RMSE.
    assert silog(pred, target, lam=0.0).item() == pytest.approx(e.std(unbiased=False).item(), rel=1e-9)
    assert silog(pred, target, lam=1.0).item() == pytest.approx(e.pow(2).mean().sqrt().item(), rel=1e-9)
    # E[e²] - (1-λ)E[e]² == Var(e) + λE[e]²
    lam = 0.15
    assert silog(pred, target, lam).item() ** 2 == pytest.approx(
        (e.var(unbiased=False) + lam * e.mean() ** 2).item(), rel=1e-9)


def test_silog_masks_invalid_targets_and_accepts_both_layouts():
    pred, target = _depth_pair(seed=4)
    t2 = target.clone()
    t2[0, 0, :2] = 0.0
    t2[1, 0, 3, :] = float("nan")
    t2[1, 0, 4, 0] = -1.0
    ref = _silog_numpy(pred, t2, 0.15)
    assert silog(pred, t2).item() == pytest.approx(ref, rel=1e-9)
    # values of the prediction under invalid pixels do not matter
    p2 = pred.clone()
    p2[0, 0, :2] = 1e6
    p2[1, 0, 3, :] = 0.0
    assert silog(p2, t2).item() == pytest.approx(ref, rel=1e-9)
    assert silog(pred[:, 0], t2).item() == pytest.approx(ref, rel=1e-9)  # B×H×W vs B×1×H×W
    with pytest.raises(ValueError, match="does not match"):
        silog(pred[:, :, :5], t2)


def test_silog_all_invalid_is_zero_with_finite_grads():
    pred = torch.rand(2, 1, 4, 4, requires_grad=True)
    target = torch.zeros(2, 1, 4, 4)
    target[0, 0, 0, 0] = float("nan")
    for name, fn in silog_variants.items():
        pred.grad = None
        loss = fn(pred, target)
        loss.backward()
        assert loss.item() == 0.0, name
        assert torch.isfinite(pred.grad).all(), name


def test_silog_perfect_prediction_has_finite_grads():
    target = torch.rand(1, 1, 5, 5) * 50 + 1
    pred = target.clone().requires_grad_(True)
    loss = silog(pred, target)
    loss.backward()
    assert loss.item() < 1e-5
    assert torch.isfinite(pred.grad).all()


def test_silog_var_part_is_scale_invariant():
    pred, target = _depth_pair(seed=5)
    for c in (0.1, 3.0, 17.0):
        # Var(e) is exactly invariant; with λ = 0 so is the loss.
        assert silog_variants["variance"](pred * c, target).item() == pytest.approx(
            silog_variants["variance"](pred, target).item(), rel=1e-9)
        assert silog(pred * c, target, lam=0.0).item() == pytest.approx(silog(pred, target, lam=0.0).item(), rel=1e-9)
        # both scaled: e unchanged, every variant unchanged
        for fn in silog_variants.values():
            assert fn(pred * c, target * c).item() == pytest.approx(fn(pred, target).item(), rel=1e-9)
    # λ > 0 still penalises a wrong global scale
    assert silog(pred * 3.0, target, lam=0.15).item() > silog(pred, target, lam=0.15).item() + 0.1


def test_silog_variants_relations():
    pred, target = _depth_pair(seed=6)
    v = {k: fn(pred, target).item() for k, fn in silog_variants.items()}
    assert v["no_sqrt"] == pytest.approx(v["sqrt"] ** 2, rel=1e-9)
    assert v["scaled_sqrt"] == pytest.approx(10 * v["sqrt"], rel=1e-9)
    e = (torch.log(target) - torch.log(pred)).ravel()
    assert v["eigen"] == pytest.approx((e.pow(2).mean() - 0.5 * e.mean() ** 2).item(), rel=1e-9)


# ---- MultiTaskLoss ---------------------------------------------------------------------------
def _outputs_targets(seed=0):
    g = torch.Generator().manual_seed(seed)
    outputs = {"semseg": torch.randn(2, 19, 4, 5, generator=g),
               "depth": torch.rand(2, 1, 4, 5, generator=g) * 30 + 1}
    targets = {"semseg": torch.randint(0, 19, (2, 4, 5), generator=g),
               "depth": torch.rand(2, 4, 5, generator=g) * 30 + 1}
    return outputs, targets


def test_fixed_weighting_and_single_task():
    outputs, targets = _outputs_targets()
    ce = cross_entropy(outputs["semseg"], targets["semseg"])
    sl = silog(outputs["depth"], targets["depth"], 0.15)
    loss = MultiTaskLoss(("semseg", "depth"), "fixed", w_semseg=0.25, w_depth=0.75)
    total, parts = loss(outputs, targets)
    assert total.item() == pytest.approx(0.25 * ce.item() + 0.75 * sl.item(), rel=1e-6)
    assert parts["semseg"].item() == pytest.approx(ce.item()) and not parts["depth"].requires_grad
    assert loss.weights() == {"semseg": 0.25, "depth": 0.75}
    assert list(loss.parameters()) == []
    single = MultiTaskLoss(("depth",), "fixed", w_semseg=0.5, w_depth=0.5)
    total, parts = single({"depth": outputs["depth"]}, {"depth": targets["depth"]})
    assert set(parts) == {"depth"} and total.item() == pytest.approx(sl.item(), rel=1e-6)
    assert single.weights() == {"depth": 1.0}


def test_uncertainty_weighting_has_learned_log_variances():
    outputs, targets = _outputs_targets(1)
    loss = MultiTaskLoss(("semseg", "depth"), "uncertainty")
    params = dict(loss.named_parameters())
    assert set(params) == {"log_vars.semseg", "log_vars.depth"}
    with torch.no_grad():
        loss.log_vars["semseg"].fill_(0.5)
        loss.log_vars["depth"].fill_(-1.0)
    total, parts = loss(outputs, targets)
    expected = math.exp(-0.5) * parts["semseg"].item() + 0.5 + math.exp(1.0) * parts["depth"].item() - 1.0
    assert total.item() == pytest.approx(expected, rel=1e-6)
    total.backward()
    # d/ds [exp(-s) L + s] = 1 - exp(-s) L
    assert loss.log_vars["semseg"].grad.item() == pytest.approx(1 - math.exp(-0.5) * parts["semseg"].item(), rel=1e-5)
    assert loss.weights()["depth"] == pytest.approx(math.exp(1.0))


def test_dwa_weights_follow_loss_ratios():
    outputs, targets = _outputs_targets(2)
    loss = MultiTaskLoss(("semseg", "depth"), "dwa")
    assert list(loss.parameters()) == []
    assert loss.weights() == {"semseg": 1.0, "depth": 1.0}
    loss.end_epoch({"semseg": 2.0, "depth": 1.0})
    assert loss.weights() == {"semseg": 1.0, "depth": 1.0}  # still equal in epoch 2
    w = loss.end_epoch({"semseg": 1.0, "depth": 0.9})
    r = np.array([1.0 / 2.0, 0.9 / 1.0]) / 2.0
    ref = 2 * np.exp(r) / np.exp(r).sum()
    assert [w["semseg"], w["depth"]] == pytest.approx(ref.tolist(), rel=1e-12)
    assert sum(w.values()) == pytest.approx(2.0)
    assert w["depth"] > w["semseg"]  # the task whose loss fell less gets more weight
    total, parts = loss(outputs, targets)
    assert total.item() == pytest.approx(w["semseg"] * parts["semseg"].item() + w["depth"] * parts["depth"].item(), rel=1e-6)
    # the history travels with state_dict (resume)
    fresh = MultiTaskLoss(("semseg", "depth"), "dwa")
    fresh.load_state_dict(loss.state_dict())
    assert fresh.weights() == pytest.approx(w)
    with pytest.raises(KeyError, match="depth"):
        loss.end_epoch({"semseg": 1.0})


def test_from_config_and_errors():
    cfg = make_config(tasks="semseg,depth", loss_weighting="uncertainty", loss_weight_semseg=0.3,
                      loss_weight_depth=0.7, silog_lambda=0.5)
    loss = MultiTaskLoss.from_config(cfg)
    assert loss.tasks == ("semseg", "depth") and loss.weighting == "uncertainty" and loss.lam == 0.5
    assert loss.fixed_weights == {"semseg": 0.3, "depth": 0.7}
    with pytest.raises(ValueError, match="weighting"):
        MultiTaskLoss(("semseg",), "magic")
    with pytest.raises(ValueError, match="tasks"):
        MultiTaskLoss(("normals",))
    with pytest.raises(KeyError, match="depth"):
        MultiTaskLoss(("semseg", "depth"))({"semseg": torch.randn(1, 19, 2, 2)},
                                           {"semseg": torch.zeros(1, 2, 2, dtype=torch.long)})


def test_silog_half_precision_inputs_are_computed_in_float32():
    pred, target = _depth_pair(seed=8)
    ref = silog(pred.float(), target.float())
    low = silog(pred.bfloat16(), target.float())
    assert low.dtype == torch.float32
    assert low.item() == pytest.approx(silog(pred.bfloat16().float(), target.float()).item(), rel=1e-6)
    assert ref.item() == pytest.approx(_silog_numpy(pred, target, 0.15), rel=1e-5)
