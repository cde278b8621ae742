"""Attention: the attention maps of chosen query positions, over the image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.colors as mcolors
import numpy as np
from matplotlib.figure import Figure

from .base import _as_maps, _figure, _styled, _to_numpy, rgb_to_uint8


@_styled
def attention_heatmaps(maps, titles: Sequence[str] | None = None, rgb=None, ncols: int = 4,
                       alpha: float = 0.6, cmap: str = "viridis", shared_scale: bool = False,
                       cbar_label: str = "weight", title: str | None = None,
                       panel_width: float = 3.2) -> Figure:
    """A grid of attention / similarity / probability maps, one panel each.

    ``maps``: K×h×w (numpy or torch) or a dict ``{title: h×w}``. With ``rgb`` (one image) each
    map is stretched over the image and blended (``alpha``). Each panel has its own colour bar,
    or one shared bar with ``shared_scale=True``.
    """
    if isinstance(maps, Mapping):
        titles = list(maps.keys()) if titles is None else titles
        maps = np.stack([_to_numpy(m, "maps").astype(np.float32) for m in maps.values()])
    a = _as_maps(maps, "maps")
    k, h, w = a.shape
    if titles is not None and len(titles) != k:
        raise ValueError(f"attention_heatmaps: {len(titles)} titles for {k} maps")
    background = rgb_to_uint8(rgb)[0] if rgb is not None else None
    H, W = background.shape[:2] if background is not None else (h, w)
    ncols = max(1, min(ncols, k))
    nrows = -(-k // ncols)
    fig, axes = _figure(nrows, ncols, figsize=(panel_width * ncols + (0.8 if shared_scale else 0.6 * ncols),
                                               panel_width * H / W * nrows + 0.5), squeeze=False)
    norm = mcolors.Normalize(float(np.nanmin(a)), float(np.nanmax(a))) if shared_scale else None
    im = None
    for i, ax in enumerate(axes.flat):
        ax.set_xticks([])
        ax.set_yticks([])
        if i >= k:
            ax.set_visible(False)
            continue
        if background is not None:
            ax.imshow(background, extent=(0, W, H, 0))
        im = ax.imshow(a[i], cmap=cmap, norm=norm, alpha=alpha if background is not None else 1.0,
                       extent=(0, W, H, 0), interpolation="nearest")
        ax.set_title(str(titles[i]) if titles is not None else f"map {i}")
        if not shared_scale:
            fig.colorbar(im, ax=ax, shrink=0.8)
    if shared_scale and im is not None:
        fig.colorbar(im, ax=axes.ravel().tolist(), label=cbar_label, shrink=0.9)
    if title:
        fig.suptitle(title)
    return fig
