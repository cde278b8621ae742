"""Adaptive bins (problem 4): the bin clamp passes its gradient, and the readable reference
cores (cvaia.reference.attention, cvaia.reference.adaptive_bins) equal the library modules."""

from __future__ import annotations

import math

import pytest
import torch

from cvaia.config import make_config
from cvaia.experiments import p04
from cvaia.losses import silog
from cvaia.models import SelfAttention, adaptive, build_model
from cvaia.models.adaptive import AdaptiveDepthHead, bin_depths_from_logits
from cvaia.reference.adaptive_bins import adaptive_bins
from cvaia.reference.attention import MultiHeadSelfAttention


def test_bin_clamp_forward_is_the_clamp_and_its_gradient_passes_the_bounds():
    x = torch.tensor([-6.0, 0.5, 3.0, math.log(300.0) + 2.0, 12.0], requires_grad=True)
    d = bin_depths_from_logits(x)
    torch.testing.assert_close(d, torch.exp(x.detach()).clamp(0.1, 300.0), rtol=1e-6, atol=0)
    d.sum().backward()
    # gradient of exp at the (clamped) value: never zero, also past both bounds
    torch.testing.assert_close(x.grad, d.detach(), rtol=1e-6, atol=0)
    hard = torch.tensor([12.0], requires_grad=True)
    torch.exp(hard).clamp(0.1, 300.0).sum().backward()
    assert hard.grad.item() == 0.0  # the trap the library avoids


def _head(seed=0, **kw):
    torch.manual_seed(seed)
    return AdaptiveDepthHead(latent_ch=8, query_ch=8, dim=8, num_bins=4, num_layers=1, num_heads=2,
                             expansion=2, dropout=0.0, **kw).eval()


def test_bins_pushed_past_300_m_come_back(monkeypatch):
    """Every bin past the clamp (a constant 300 m map): SILog still moves them, a plain clamp does not."""
    gen = torch.Generator().manual_seed(1)
    latent, query = torch.randn(2, 8, 4, 4, generator=gen), torch.randn(2, 8, 6, 6, generator=gen)
    gt = torch.rand(2, 1, 6, 6, generator=gen) * 40 + 5

    def bias_grad():
        head = _head()
        with torch.no_grad():
            head.bin_depth.bias.fill_(12.0)  # exp(12) ≈ 1.6e5 m: every bin at the 300 m bound
        depth, _, bins = head(latent, query)
        assert torch.all(bins > 299.0)
        silog(depth, gt).backward()
        return head.bin_depth.bias.grad.item()

    g = bias_grad()
    assert g > 0  # pulls the bins nearer (gradient descent lowers the bias)
    monkeypatch.setattr(adaptive, "bin_depths_from_logits", lambda x: torch.exp(x).clamp(0.1, 300.0))
    assert bias_grad() == 0.0


def test_reference_attention_equals_the_library_module():
    torch.manual_seed(0)
    lib = SelfAttention(32, num_heads=4, impl="explicit").eval()
    ref = MultiHeadSelfAttention(32, num_heads=4)
    ref.load_state_dict(lib.state_dict())  # same parameter names: strict load
    x = torch.randn(2, 16, 32)
    y_ref, w_ref = ref(x)
    y_lib, w_lib = lib(x, return_attention=True)
    torch.testing.assert_close(y_ref, y_lib, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w_ref, w_lib, rtol=1e-5, atol=1e-7)
    lib.impl = "fast"
    torch.testing.assert_close(y_ref, lib(x), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(w_ref.sum(-1), torch.ones(2, 4, 16))


def test_reference_adaptive_bins_equals_the_head():
    head = _head(seed=3)
    gen = torch.Generator().manual_seed(2)
    latent, query_features = torch.randn(2, 8, 5, 5, generator=gen), torch.randn(2, 8, 7, 9, generator=gen)
    with torch.no_grad():
        depth, probs, bins = head(latent, query_features)
        r_depth, r_probs, r_bins = adaptive_bins(head.tokens(latent), head.query_conv(query_features), head.bin_depth)
    torch.testing.assert_close(r_bins, bins, rtol=1e-6, atol=0)
    torch.testing.assert_close(r_probs, probs, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(r_depth, depth, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("source", ["lowest", "aspp"])
def test_head_inputs_reproduce_the_models_bins(source):
    torch.manual_seed(0)
    model = build_model(make_config(model_name="adaptive_depth", tasks="depth", latents_source=source,
                                    transformer_dim=32, num_heads=4, num_bins=16, num_transformer_layers=1)).eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        aux = model(x, return_aux=True)
    _, _, tokens, query = p04.head_inputs(model, x)
    with torch.no_grad():
        _, probs, bins = adaptive_bins(tokens, query, model.depth_head.bin_depth)
    torch.testing.assert_close(bins, aux["bin_depths"], rtol=1e-6, atol=0)
    torch.testing.assert_close(probs, aux["bin_probs"], rtol=1e-5, atol=1e-6)
    assert p04.clamped_bins(model, x) == 0.0
