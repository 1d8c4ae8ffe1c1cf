"""The big kernel of a fold, drawn: the folded weight of one output channel, its block grid, and which input
channel of the original conv every pixel of a block came from.

:func:`channel_map` reads the map off :func:`foldconv.fold.fold_weight` itself (it folds a weight whose entries are
the input channels' indices), so the labels are those of the fold the app checked, in any order, with groups and
dilation; :func:`kernel_figure` draws it beside the folded weight.

Example:
    >>> from foldconv.specs import ConvSpec, FoldSpec
    >>> channel_map(ConvSpec.make(2, 8, 1, 1), FoldSpec.make(2))[0, 0].tolist()
    [[0, 1], [2, 3]]
"""
from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from .._validate import require_int
from ..errors import fold_error
from ..fold import fold_weight
from ..specs import ConvSpec, FoldSpec

__all__ = ["STRUCTURAL_ZERO", "channel_map", "block_channels", "kernel_figure", "picture_shape"]

#: Channel-map entry of a folded weight position that no original weight lands on (another group, a dilation gap).
STRUCTURAL_ZERO = -1


def channel_map(spec: ConvSpec, fold: FoldSpec) -> torch.Tensor:
    """Per folded-weight position ``(out, folded in, *kernel)``, the original input channel whose weight lands
    there, or :data:`STRUCTURAL_ZERO`; the fold is :func:`foldconv.fold.fold_weight`'s own.

    Example:
        >>> m = channel_map(ConvSpec.make(2, 4, 1, 3, padding=1), FoldSpec.make(2))
        >>> tuple(m.shape), m[0, 0, :2, :2].tolist(), m[0, 0, 4:, 4:].tolist()
        ((1, 1, 6, 6), [[0, 1], [2, 3]], [[0, 1], [2, 3]])
    """
    per_group = spec.in_channels // spec.groups
    out_per_group = spec.out_channels // spec.groups
    group = torch.arange(spec.out_channels, dtype=torch.float64) // out_per_group
    # entry = 1 + the input channel's index: the fold moves entries and fills the rest with 0
    index = 1 + group[:, None] * per_group + torch.arange(per_group, dtype=torch.float64)[None, :]
    weight = index.reshape(index.shape + (1,) * spec.dims).expand((spec.out_channels, per_group) + spec.kernel_size)
    folded = fold_weight(weight.contiguous(), fold.r, fold.order, groups=spec.groups, dilation=spec.dilation).weight
    return folded.round().long() - 1


def block_channels(cmap: torch.Tensor, r: Tuple[int, ...]) -> torch.Tensor:
    """The ``r_h x r_w`` channel grid shared by every block of a 2-D map (``(kernel_h, kernel_w)``) whose blocks
    are ``r`` apart: entry ``(i, j)`` is the channel at every position ``(a*r_h + i, b*r_w + j)`` that is not a
    structural zero (:data:`STRUCTURAL_ZERO` when all are). A FoldError when two blocks disagree.

    Example:
        >>> block_channels(torch.tensor([[0, 1, 0, 1], [2, -1, 2, 3]]), (2, 2)).tolist()
        [[0, 1], [2, 3]]
    """
    rh, rw = r
    kh, kw = cmap.shape
    blocks = cmap.reshape(kh // rh, rh, kw // rw, rw).permute(1, 3, 0, 2).reshape(rh, rw, -1)
    grid = blocks.max(dim=-1).values
    real = blocks != STRUCTURAL_ZERO
    if bool(((blocks != grid[..., None]) & real).any()):
        raise fold_error("cmap", tuple(cmap.shape), f"blocks {r} apart hold different channels at one sub-position")
    return grid


def kernel_figure(weight: torch.Tensor, cmap: torch.Tensor, r: Tuple[int, ...], *, title: str = "",
                  out_channel: int = 0, folded_channel: int = 0, order: str = "c rh rw",
                  dilation: Tuple[int, int] = (1, 1)) -> Tuple[Any, Any]:
    """Two panels: the folded 2-D kernel ``weight[out_channel, folded_channel]`` with grid lines every ``r``
    (each block one tap of the original kernel, labelled when there are few; with ``dilation`` the blocks between
    taps are structural zeros), and the ``r_h x r_w`` grid of the
    original input channel every block takes at each sub-position (from ``cmap``, :func:`channel_map`).

    Example:
        >>> from foldconv.fold import fold_conv
        >>> conv = torch.nn.Conv2d(4, 2, 3, padding=1)
        >>> spec, fold = ConvSpec.from_module(conv), FoldSpec.make(2)
        >>> fig, axes = kernel_figure(fold_conv(conv, 2).weight, channel_map(spec, fold), (2, 2))
        >>> len(axes)
        2
    """
    import numpy as np
    from matplotlib.colors import BoundaryNorm, ListedColormap

    from .io import figure

    if weight.dim() != 4 or tuple(weight.shape) != tuple(cmap.shape):
        raise fold_error("weight", tuple(weight.shape), f"must be a 2-D conv weight shaped like the channel map {tuple(cmap.shape)}")
    for name, value, count in (("out_channel", out_channel, weight.shape[0]), ("folded_channel", folded_channel, weight.shape[1])):
        if require_int(value, name, 0) >= count:
            raise fold_error(name, value, f"must be < {count} (the folded weight has {count})")
    rh, rw = r
    kernel = weight[out_channel, folded_channel].detach().double().cpu()
    channels = cmap[out_channel, folded_channel]
    grid = block_channels(channels, (rh, rw))
    kh, kw = kernel.shape
    taps_h, taps_w = kh // rh, kw // rw
    side = 5.2
    tall = min(1.0, max(kh / kw, rh / rw))  # a wide kernel needs less height
    fig, axes = figure(1, 2, figsize=(2 * side + 1.6, side * tall + 1.2))
    ax = axes[0]
    scale = float(kernel.abs().max()) or 1.0
    image = ax.imshow(kernel.numpy(), cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.03, shrink=min(1.0, max(0.3, kh / kw))).set_label("folded weight")
    zeros = (channels == STRUCTURAL_ZERO).numpy()
    if zeros.any():  # positions no original weight lands on: grey, so a zero weight and a structural zero differ
        ax.imshow(np.ma.masked_where(~zeros, np.ones_like(zeros, dtype=float)), cmap=ListedColormap(["#bbbbbb"]),
                  interpolation="nearest")
    for i in range(1, taps_h):
        ax.axhline(i * rh - 0.5, color="black", lw=0.8)
    for j in range(1, taps_w):
        ax.axvline(j * rw - 0.5, color="black", lw=0.8)
    if taps_h * taps_w <= 49:
        dh, dw = dilation
        for a in range(taps_h):
            for b in range(taps_w):
                if zeros[a * rh:(a + 1) * rh, b * rw:(b + 1) * rw].all():
                    continue  # a dilation gap or another group's block: no tap of the original lands here
                ax.text(b * rw - 0.5 + 0.06 * rw, a * rh - 0.5 + 0.06 * rh, f"tap ({a // dh},{b // dw})", ha="left",
                        va="top", fontsize=8, bbox={"facecolor": "white", "alpha": 0.7, "edgecolor": "none", "pad": 1})
    ax.set_xticks([j * rw - 0.5 for j in range(taps_w + 1)], [str(j * rw) for j in range(taps_w + 1)])
    ax.set_yticks([i * rh - 0.5 for i in range(taps_h + 1)], [str(i * rh) for i in range(taps_h + 1)])
    ax.set_xlabel(f"folded kernel column (blocks {rw} wide, each one tap of the original)", fontsize=9)
    ax.set_ylabel(f"folded kernel row (blocks {rh} high)", fontsize=9)
    ax.set_title(f"folded weight [{out_channel}, {folded_channel}]: {kh}x{kw}, a {taps_h}x{taps_w} grid of {rh}x{rw} blocks"
                 + (" (grey: structural zero)" if zeros.any() else ""), fontsize=9)
    ax = axes[1]
    real = grid[grid != STRUCTURAL_ZERO]
    low, high = (int(real.min()), int(real.max())) if real.numel() else (0, 1)
    shown = np.ma.masked_where(grid.numpy() == STRUCTURAL_ZERO, grid.numpy())
    levels = np.arange(low, high + 2) - 0.5
    colours = ax.imshow(shown, cmap="viridis", norm=BoundaryNorm(levels, 256), interpolation="nearest")
    bar = fig.colorbar(colours, ax=ax, fraction=0.046, pad=0.03, shrink=min(1.0, max(0.3, rh / rw)))
    bar.set_label("input channel of the original conv")
    bar.set_ticks(sorted({int(v) for v in np.linspace(low, high, min(8, high - low + 1))}))
    if rh * rw <= 256:
        for i in range(rh):
            for j in range(rw):
                c = int(grid[i, j])
                ax.text(j, i, "-" if c == STRUCTURAL_ZERO else str(c), ha="center", va="center", fontsize=8,
                        color="white" if c != STRUCTURAL_ZERO and c - low < 0.5 * (high - low + 1) else "black")
    step_h, step_w = max(1, rh // 8), max(1, rw // 8)
    ax.set_xticks(range(0, rw, step_w))
    ax.set_yticks(range(0, rh, step_h))
    ax.set_xlabel("sub-position rw inside a block", fontsize=9)
    ax.set_ylabel("sub-position rh inside a block", fontsize=9)
    ax.set_title(f"input channel at each sub-position of every block (order {order})", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig, axes


def picture_shape(spec: ConvSpec) -> Optional[str]:
    """Why a conv's big kernel cannot be drawn, or None (a 2-D conv can).

    Example:
        >>> picture_shape(ConvSpec.make(1, 4, 1, 3))
        'the kernel picture is drawn for 2-D convs; this one is 1-D'
    """
    return None if spec.dims == 2 else f"the kernel picture is drawn for 2-D convs; this one is {spec.dims}-D"
