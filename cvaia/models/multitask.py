"""Problem 5: both tasks through attention.

- :class:`TransformerMultiTask` (``transformer_multitask``): the adaptive-depth branch plus a
  segmentation branch ``ASPP(512→256) → latents → transformer blocks → reshape to the latent
  grid → upsample to the bottleneck size → DeepLabV3+ decoder (stride-4 skip) → 19 classes``.
- :class:`CrossAttentionMultiTask` (``cross_attention_multitask``): the adaptive-depth branch
  plus a class-token head: 19 learnable tokens attend to decoder features, class maps are
  token·feature similarities (see :class:`ClassTokenSegHead` for the memory budget).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .adaptive import DepthBranch, LatentTransformer, run_depth_branch
from .attention import CrossTransformerBlock
from .decoder import DecoderDeepLabV3p
from .deeplab import upsample_to
from .encoder import ResNetEncoder


class TransformerSegHead(LatentTransformer):
    """Feature map (e.g. ASPP, 256 ch) → N latent tokens → transformer → back to a map.

    ``forward(x)`` B×C×h×w → B×dim×h×w: tokens from :class:`LatentsExtractor` (√N×√N),
    ``[reducer →]`` ``num_layers`` transformer blocks, reshaped to the √N×√N grid and
    upsampled bilinearly to ``x``'s size. ``reducer`` (``in_ch → dim``) exists only when
    ``dim != in_ch``.
    """

    table_groups = True

    def __init__(self, in_ch: int = 256, dim: int = 256, num_tokens: int = 64, num_layers: int = 2,
                 num_heads: int = 4, expansion: int = 4, dropout: float = 0.1, pos_embed: str = "none",
                 reducer: str = "linear", attention_impl: str = "fast") -> None:
        super().__init__(in_ch, dim, num_tokens, num_layers, num_heads, expansion, dropout,
                         pos_embed, reducer, attention_impl)

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        tokens = self.tokens(x)
        side = self.latents.side
        grid = tokens.transpose(1, 2).reshape(tokens.shape[0], tokens.shape[2], side, side)
        return upsample_to(grid, size)


class ClassTokenSegHead(nn.Module):
    """Class-token cross-attention segmentation head, with bounded memory.

    ``num_classes`` learnable tokens (``class_tokens``, 1×K×dim) pass through ``num_layers``
    :class:`CrossTransformerBlock` s whose keys/values are the stride-4 features average-pooled
    by ``kv_pool`` per side; the class map of pixel p is ``<token_k, feature_p> / sqrt(dim)``,
    computed in chunks of ``chunk`` pixels. ``forward(features B×dim×h×w)`` → logits B×K×h×w.

    Memory, for the setting the report ran out of memory with (dim 512, 3 layers, batch 32,
    256×256 crops, so h×w = 64×64 = P = 4096 stride-4 pixels, fp32):

    - attending with every *pixel* as a token (pixel self-attention) would store
      B·H·P² = 32·8·4096²·4 B ≈ 17 GB of attention weights per layer — the blow-up;
    - even tokens → all pixels costs, per layer, the normalised context, K and V at
      B·P·dim·4 B = 268 MB each (≈ 0.8 GB, ≈ 2.4 GB for 3 layers, saved for backward) plus
      B·H·K·P·4 B = 80 MB of explicit attention weights;
    - here keys/values come from the features pooled 4× per side: M = 16·16 = 256 tokens, so
      context/K/V are 16.8 MB each (≈ 50 MB per layer, 150 MB for 3), and the ``fast`` path
      (``scaled_dot_product_attention``, fused) never stores the B·H·K·M weights;
    - the class maps B·K·P·4 B = 10 MB are the output itself; chunking over pixels bounds any
      temporary of the similarity (and its backward) to B·K·chunk values instead of the whole
      map — for a plain dot product that saving is small, the big savings are the two above.

    The remaining memory is that of any DeepLab model at this size (encoder/decoder activations,
    the 268 MB dim-512 feature map, the 160 MB full-resolution logits).

    Measured (CPU, fp32, batch 2 at 256², dim 512, 3 layers, 8 heads; bytes of the tensors
    autograd saves for backward, parameters excluded, via ``saved_tensors_hooks``): this head
    17 MiB (attending to all 4096 pixels instead: 207 MiB); the whole
    ``cross_attention_multitask`` model 246 MiB (``deeplabv3p_multitask``: 159 MiB). Linear in
    the batch, so at batch 32: head 0.27 GiB (3.3 GiB unpooled), model ≈ 3.8 GiB of activations
    plus 38.3M parameters × (weights, grads, momentum) ≈ 0.46 GB.
    """

    table_groups = True

    def __init__(self, dim: int = 256, num_classes: int = 19, num_layers: int = 2, num_heads: int = 4,
                 expansion: int = 4, dropout: float = 0.1, attention_impl: str = "fast",
                 chunk: int = 4096, kv_pool: int = 4) -> None:
        super().__init__()
        if chunk <= 0 or kv_pool <= 0:
            raise ValueError(f"ClassTokenSegHead: chunk and kv_pool must be positive, got {chunk}, {kv_pool}")
        self.dim, self.chunk, self.kv_pool = dim, chunk, kv_pool
        self.class_tokens = nn.Parameter(torch.zeros(1, num_classes, dim))
        nn.init.trunc_normal_(self.class_tokens, std=0.02)
        self.blocks = nn.ModuleList([CrossTransformerBlock(dim, num_heads, expansion, dropout, attention_impl)
                                     for _ in range(num_layers)])

    def context(self, features: Tensor) -> Tensor:
        """Keys/values: ``features`` average-pooled by ``kv_pool`` per side → B×M×dim."""
        h, w = features.shape[-2:]
        pooled = F.adaptive_avg_pool2d(features, (max(1, h // self.kv_pool), max(1, w // self.kv_pool)))
        return pooled.flatten(2).transpose(1, 2)

    def forward(self, features: Tensor) -> Tensor:
        b, _, h, w = features.shape
        context = self.context(features)
        tokens = self.class_tokens.expand(b, -1, -1)
        for block in self.blocks:
            tokens = block(tokens, context)
        flat = features.flatten(2)  # B×dim×P
        tokens = tokens * self.dim ** -0.5  # scaled before the product: no fp16 overflow of the dot products
        logits = [torch.einsum("bkc,bcp->bkp", tokens, part) for part in flat.split(self.chunk, dim=2)]
        return torch.cat(logits, dim=2).view(b, -1, h, w)


class _AdaptiveDepthMultiTask(nn.Module):
    """Shared parts: encoder, the adaptive-depth branch (``decoder.depth``, ``aspp.depth`` when
    the latents come from ASPP, ``depth_head``), and per-task ModuleDicts (``aspp.semseg``
    is the segmentation branch's ASPP)."""

    def __init__(self, encoder: ResNetEncoder, depth: DepthBranch, seg_aspp: nn.Module) -> None:
        super().__init__()
        self.tasks = ("semseg", "depth")
        self.latents_source = depth.latents_source
        self.encoder = encoder
        self.aspp = nn.ModuleDict({"semseg": seg_aspp})
        if depth.aspp is not None:
            self.aspp["depth"] = depth.aspp
        self.decoder = nn.ModuleDict({"depth": depth.decoder})
        self.depth_head = depth.head

    def _depth(self, feats):
        return run_depth_branch(feats, self.encoder.output_stride, self.latents_source, self.decoder["depth"],
                                self.aspp["depth"] if "depth" in self.aspp else None, self.depth_head)

    def _semseg(self, feats) -> Tensor:  # stride-4 logits
        raise NotImplementedError

    def forward(self, x: Tensor, return_aux: bool = False) -> dict[str, Tensor]:
        """``{"semseg": B×19×H×W, "depth": B×1×H×W}``; ``return_aux`` adds ``bin_probs`` and
        ``bin_depths`` of the depth branch."""
        feats = self.encoder(x)
        depth, bin_probs, bin_depths = self._depth(feats)
        out = {"semseg": upsample_to(self._semseg(feats), x.shape[-2:]),
               "depth": upsample_to(depth, x.shape[-2:])}
        if return_aux:
            out.update(bin_probs=bin_probs, bin_depths=bin_depths)
        return out


class TransformerMultiTask(_AdaptiveDepthMultiTask):
    """Both tasks through attention; see the module docstring.

    Seg branch: ``aspp.semseg`` (512→256) → ``seg_head`` (:class:`TransformerSegHead`, N =
    ``num_bins`` tokens of width ``dim``) → ``decoder.semseg`` (DeepLabV3+ on the dim-channel
    map with the stride-4 skip, 19 classes).
    """

    def __init__(self, encoder: ResNetEncoder, depth: DepthBranch, seg_aspp: nn.Module,
                 seg_head: TransformerSegHead, seg_decoder: DecoderDeepLabV3p) -> None:
        super().__init__(encoder, depth, seg_aspp)
        self.seg_head = seg_head
        self.decoder["semseg"] = seg_decoder

    def _semseg(self, feats) -> Tensor:
        x = self.seg_head(self.aspp["semseg"](feats[self.encoder.output_stride]))
        logits, _ = self.decoder["semseg"](x, feats[4])
        return logits


class CrossAttentionMultiTask(_AdaptiveDepthMultiTask):
    """Adaptive depth + class-token cross-attention segmentation.

    Seg branch: ``aspp.semseg`` (512→256) → ``decoder.semseg`` (DeepLabV3+, output ``dim``
    channels at stride 4) → ``seg_head`` (:class:`ClassTokenSegHead`) → 19 class maps.
    """

    def __init__(self, encoder: ResNetEncoder, depth: DepthBranch, seg_aspp: nn.Module,
                 seg_head: ClassTokenSegHead, seg_decoder: DecoderDeepLabV3p) -> None:
        super().__init__(encoder, depth, seg_aspp)
        self.decoder["semseg"] = seg_decoder
        self.seg_head = seg_head

    def _semseg(self, feats) -> Tensor:
        features, _ = self.decoder["semseg"](self.aspp["semseg"](feats[self.encoder.output_stride]), feats[4])
        return self.seg_head(features)
