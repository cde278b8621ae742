"""AdaBins-style adaptive depth (problem 4): latents → transformer → bins, per-pixel mixture.

Pipeline of :class:`AdaptiveDepth` (``model_name="adaptive_depth"``)::

    encoder (F,F,T) ──► bottleneck 512 ch (stride 16) ─┬─► decoder (no ASPP) ─► 256 ch, stride 4
                     └► stride-4 skip (64 ch) ─────────┘           │
                                                                    ├─► query conv 3x3 ─► query map
    latents source: lowest (bottleneck) | decoder output | own ASPP(512→256)
        └► [reducer →] LatentsExtractor (√N×√N bilinear, flatten) ─► N tokens
           └► transformer blocks ─► bin tokens ─► Linear(dim, 1) ─► exp, clamp 0.1..300 ─► bin depths d
    bin probabilities p = softmax over bins of <query(pixel), token(bin)> / sqrt(dim)
    depth(pixel) = Σ_bins p · d   (stride 4, then bilinear to the input size)

Bin depths use ``exp`` (like the DeepLab depth head) and are clamped to 0.1..300 m; as a
convex combination of clamped bins, the per-pixel depth stays in that range too. The clamp
passes its gradient straight through (:func:`bin_depths_from_logits`): a plain clamp has zero
gradient past its bounds, and bins pushed there by a few large steps never come back.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn

from .attention import LatentsExtractor, TransformerBlock
from .deeplab import DEPTH_RANGE, upsample_to
from .encoder import ResNetEncoder
from .ops import full_precision

LATENT_SOURCES = ("lowest", "decoder", "aspp")
REDUCERS = ("linear", "conv")


def bin_depths_from_logits(log_bins: Tensor) -> Tensor:
    """Bin depths in metres: ``exp(log_bins)`` clamped to ``DEPTH_RANGE`` (0.1..300 m), with a
    straight-through gradient at the bounds.

    The forward value is ``exp(x).clamp(0.1, 300)`` (to float rounding: ``exp(log 300)`` is
    300.00003 in fp32; inside the range it is the same op). A plain clamp has zero gradient
    past a bound, so a bin pushed beyond 300 m (a few large Adam steps early in training do
    that) stays there for good and, once every bin is there, the depth map is constant. Here
    the gradient is the one of ``exp`` at the bound, so the loss can pull the bin back.
    """
    lo, hi = DEPTH_RANGE
    clamped = log_bins.clamp(math.log(lo), math.log(hi))
    return torch.exp(log_bins + (clamped - log_bins).detach())


class LatentTransformer(nn.Module):
    """Latent tokens from a feature map, transformed: reducer → latents → transformer blocks.

    ``reducer`` maps ``in_ch`` to ``dim`` channels only when they differ: a ``Linear`` on the
    tokens (``"linear"``) or a 1×1 conv on the map before resizing (``"conv"``; same result
    and parameters, more compute). :class:`LatentsExtractor` resizes to √N×√N and flattens;
    ``num_layers`` :class:`TransformerBlock` s follow. ``tokens(x)``: B×C×h×w → B×N×dim.
    """

    def __init__(self, in_ch: int, dim: int, num_tokens: int, num_layers: int, num_heads: int,
                 expansion: int, dropout: float, pos_embed: str, reducer: str,
                 attention_impl: str) -> None:
        super().__init__()
        if reducer not in REDUCERS:
            raise ValueError(f"reducer {reducer!r}: expected one of {', '.join(REDUCERS)}")
        self.reducer_kind = reducer
        if in_ch == dim:
            self.reducer = None
        elif reducer == "conv":
            self.reducer = nn.Conv2d(in_ch, dim, 1)
        else:
            self.reducer = nn.Linear(in_ch, dim)
        self.latents = LatentsExtractor(num_tokens)
        self.transformer = nn.ModuleList([
            TransformerBlock(dim, num_heads, expansion, dropout, pos_embed, num_tokens, attention_impl)
            for _ in range(num_layers)])

    def tokens(self, features: Tensor) -> Tensor:
        """B×C×h×w → the transformed latent tokens B×N×dim."""
        if self.reducer is not None and self.reducer_kind == "conv":
            features = self.reducer(features)
        tokens = self.latents(features)
        if self.reducer is not None and self.reducer_kind == "linear":
            tokens = self.reducer(tokens)
        for block in self.transformer:
            tokens = block(tokens)
        return tokens


class AdaptiveDepthHead(LatentTransformer):
    """Bins from latent tokens and a per-pixel softmax over them.

    Sub-modules (each exists only when used):

    - ``query_conv``: 3x3 conv (bias) ``query_ch → query_ch`` giving the query map;
    - ``query_proj``: 1x1 conv ``query_ch → dim`` (only if ``dim != query_ch``);
    - ``reducer``: ``latent_ch → dim`` (only if ``latent_ch != dim``) — ``Linear`` on the tokens
      (``reducer="linear"``) or a 1x1 conv on the feature map before resizing (``"conv"``;
      mathematically the same map since both are per-pixel affine and bilinear weights sum to
      1, it only costs more: it runs on every pixel);
    - ``latents``: :class:`LatentsExtractor` (no parameters);
    - ``transformer``: ``num_layers`` × :class:`TransformerBlock`;
    - ``bin_depth``: ``Linear(dim, 1)`` per token, then ``exp`` and clamp to 0.1..300 m
      (in fp32 under autocast, like the per-pixel mixture of the bins) by
      :func:`bin_depths_from_logits`, whose gradient passes the clamp. With a plain clamp,
      Adam at lr 1e-3 pushed every bin past 300 m within the first steps of a short run, where
      the clamp's gradient is zero: a constant depth map for good. A/B (notebook 04's baseline,
      interim synthetic encoder, 512 crops of 64², 100 val images, SI-logRMSE): at lr 1e-3
      plain clamp 94.5 (every bin at 300 m, the constant-map score) vs straight-through 49.6;
      at lr 5e-4 (the quick recipe) 47.3 vs 47.6 — no bin stays at a bound there, and the
      pass-through costs nothing. (Starting the bias at log(27 m) as well changed nothing at
      1e-3: 50.5.)

    ``forward(latent_features, query_features)`` → ``(depth B×1×h×w, bin_probs B×N×h×w,
    bin_depths B×N)`` at the query features' resolution.
    """

    table_groups = True  # cvaia.params lists the sub-modules as their own rows

    def __init__(self, latent_ch: int, query_ch: int = 256, dim: int = 256, num_bins: int = 64,
                 num_layers: int = 2, num_heads: int = 4, expansion: int = 4, dropout: float = 0.1,
                 pos_embed: str = "none", reducer: str = "linear", attention_impl: str = "fast") -> None:
        super().__init__(latent_ch, dim, num_bins, num_layers, num_heads, expansion, dropout,
                         pos_embed, reducer, attention_impl)
        self.dim, self.num_bins = dim, num_bins
        self.query_conv = nn.Conv2d(query_ch, query_ch, 3, padding=1, bias=True)
        self.query_proj = nn.Conv2d(query_ch, dim, 1) if dim != query_ch else None
        self.bin_depth = nn.Linear(dim, 1)

    def forward(self, latent_features: Tensor, query_features: Tensor):
        tokens = self.tokens(latent_features)
        # Bin depths and the per-pixel mixture in fp32 even under autocast (a few values per
        # pixel): the depth is never rounded to bf16/fp16.
        log_bins = full_precision(self.bin_depth, tokens).squeeze(-1)
        bin_depths = bin_depths_from_logits(log_bins)  # B×N metres
        query = self.query_conv(query_features)
        if self.query_proj is not None:
            query = self.query_proj(query)
        # the tokens scaled before the product (not the B×N×h×w result): in fp16 the unscaled
        # dot products overflow sqrt(dim) = 16 times sooner (and it is N·C, not N·h·w, multiplies)
        similarity = torch.einsum("bnc,bchw->bnhw", tokens * self.dim ** -0.5, query)
        bin_probs = torch.softmax(similarity, dim=1)
        with torch.autocast(bin_probs.device.type, enabled=False):
            depth = torch.einsum("bnhw,bn->bhw", bin_probs.to(bin_depths.dtype), bin_depths).unsqueeze(1)
        return depth, bin_probs, bin_depths


class DepthBranch(NamedTuple):
    """The adaptive-depth branch's modules (built by :func:`cvaia.models.builder.depth_branch`):
    a decoder (no ASPP) giving the 256-ch stride-4 query features, an ASPP when the latents
    come from it (else None), the :class:`AdaptiveDepthHead`, and where the latents come from."""

    decoder: nn.Module
    aspp: nn.Module | None
    head: AdaptiveDepthHead
    latents_source: str


def run_depth_branch(feats: dict, output_stride: int, latents_source: str, decoder: nn.Module,
                     aspp: nn.Module | None, head: AdaptiveDepthHead):
    """Forward of the adaptive-depth branch on an encoder pyramid → head outputs at stride 4."""
    bottleneck = feats[output_stride]
    decoded, _ = decoder(bottleneck, feats[4])
    if latents_source == "lowest":
        source = bottleneck
    elif latents_source == "decoder":
        source = decoded
    else:
        source = aspp(bottleneck)
    return head(source, decoded)


class AdaptiveDepth(nn.Module):
    """Adaptive-bins depth model (depth only); see the module docstring.

    ``forward(x)`` → ``{"depth": B×1×H×W metres}``; ``forward(x, return_aux=True)`` adds
    ``"bin_probs"`` (B×N×H/4×W/4) and ``"bin_depths"`` (B×N metres) for the inspector.
    """

    def __init__(self, encoder: ResNetEncoder, depth: DepthBranch) -> None:
        super().__init__()
        if depth.latents_source not in LATENT_SOURCES or (depth.latents_source == "aspp") != (depth.aspp is not None):
            raise ValueError(f"AdaptiveDepth: latents_source {depth.latents_source!r} does not fit the branch "
                             f"(an ASPP exactly when the latents come from it)")
        self.tasks = ("depth",)
        self.latents_source = depth.latents_source
        self.encoder = encoder
        self.decoder = depth.decoder
        self.aspp = depth.aspp
        self.depth_head = depth.head

    def forward(self, x: Tensor, return_aux: bool = False) -> dict[str, Tensor]:
        feats = self.encoder(x)
        depth, bin_probs, bin_depths = run_depth_branch(feats, self.encoder.output_stride, self.latents_source,
                                                        self.decoder, self.aspp, self.depth_head)
        out = {"depth": upsample_to(depth, x.shape[-2:])}
        if return_aux:
            out.update(bin_probs=bin_probs, bin_depths=bin_depths)
        return out
