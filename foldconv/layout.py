"""Depth-to-space and space-to-depth in 1, 2 and 3 spatial dimensions, in any channel order.

A fold block of ``r_1 x ... x r_n`` pixels comes from ``G * r_1 * ... * r_n`` channels. The order of the
factors inside the channel axis is what differs between ecosystems, so it is always explicit and written
as einops axes (``"c rh rw"``). Aliases:

========== ================= ===================================================================
alias      order (2-D)       who uses it
========== ================= ===================================================================
``crd``    ``c rh rw``       torch ``pixel_shuffle`` / ``pixel_unshuffle``, ONNX DepthToSpace CRD
``dcr``    ``rh rw c``       TensorFlow ``depth_to_space`` (NHWC), ONNX DepthToSpace DCR
``focus``  ``rw rh c``       YOLOv5 ``Focus`` concatenation order
========== ================= ===================================================================

For other dimensionalities the factors are named after the spatial axes: ``rw`` (1-D), ``rh rw`` (2-D),
``rd rh rw`` (3-D); the aliases generalise as "c first, factors in axis order", "factors in axis order,
c last" and "factors in reverse axis order, c last".

The dims rule (:mod:`foldconv._validate`): ``dims`` is the number of spatial axes; a per-axis ``r`` carries
its own; with an int ``r`` and no ``dims`` a tensor is 2-D exactly as for ``torch.pixel_shuffle``: its last
three axes are ``(C, H, W)`` and any before them are batch axes (a 3-D ``(N, C, W)`` signal needs ``dims=1``).
A ``dims`` that contradicts a per-axis ``r`` is a FoldError.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import einops
import torch
from torch import nn

from ._validate import (
    FACTOR_NAMES,
    SPATIAL_NAMES,
    IntOrTuple,
    per_axis_ints,
    require_dims,
    require_input,
    require_int,
    require_numel,
    resolve_dims,
)
from .errors import fold_error

__all__ = [
    "ORDER_ALIASES",
    "IntOrTuple",
    "Order",
    "normalize_r",
    "normalize_order",
    "order_string",
    "depth_to_space",
    "space_to_depth",
    "fold_channel_map",
    "DepthToSpace",
    "SpaceToDepth",
    "LayoutModule",
    "layout_module",
]

Order = Union[str, Sequence[str]]

ORDER_ALIASES = ("crd", "dcr", "focus")


def normalize_r(r: IntOrTuple, dims: int, *, param: str = "r") -> Tuple[int, ...]:
    """Return the fold factor as one positive int per spatial axis.

    Example:
        >>> normalize_r(2, 2), normalize_r((2, 3), 2), normalize_r(2, 3)
        ((2, 2), (2, 3), (2, 2, 2))
    """
    return per_axis_ints(r, require_dims(dims), param, 1)


@functools.cache
def _normalize_order_cached(order: Union[str, Tuple[str, ...]], dims: int) -> Tuple[str, ...]:
    factors = FACTOR_NAMES[dims]
    if isinstance(order, str):
        key = order.strip().lower()
        if key == "crd":
            return ("c",) + factors
        if key == "dcr":
            return factors + ("c",)
        if key == "focus":
            return tuple(reversed(factors)) + ("c",)
        names = tuple(key.replace("(", " ").replace(")", " ").split())
    else:
        names = tuple(order)
    expected = set(("c",) + factors)
    if len(names) != len(expected) or set(names) != expected:
        raise fold_error(
            "order",
            order,
            f"must be one of {ORDER_ALIASES} or a permutation of the einops axes {' '.join(('c',) + factors)!r} "
            f"for {dims} spatial dim(s)",
        )
    return names


def normalize_order(order: Order, dims: int = 2) -> Tuple[str, ...]:
    """Resolve an alias or an einops axis list into a tuple of axis names (``dims`` defaults to 2, the bare rule).

    Example:
        >>> normalize_order("crd"), normalize_order("focus"), normalize_order("c rw", 1)
        (('c', 'rh', 'rw'), ('rw', 'rh', 'c'), ('c', 'rw'))
    """
    dims = require_dims(dims)
    if not isinstance(order, str):
        if not isinstance(order, Sequence) or not all(isinstance(o, str) for o in order):
            raise fold_error("order", order, "must be a string or a sequence of axis names")
        order = tuple(order)
    return _normalize_order_cached(order, dims)


def order_string(order: Order, dims: int = 2) -> str:
    """The canonical einops spelling of an order, e.g. ``"rw rh c"`` for ``"focus"``.

    Example:
        >>> order_string("dcr"), order_string("focus", 3)
        ('rh rw c', 'rw rh rd c')
    """
    return " ".join(normalize_order(order, dims))


@functools.cache
def _patterns(order: Tuple[str, ...], dims: int) -> Tuple[str, str]:
    spatial = SPATIAL_NAMES[dims]
    factors = FACTOR_NAMES[dims]
    packed = f"... ({' '.join(order)}) {' '.join(spatial)}"
    unpacked = "... c " + " ".join(f"({s} {f})" for s, f in zip(spatial, factors))
    return f"{packed} -> {unpacked}", f"{unpacked} -> {packed}"


def _resolve_uncached(r: IntOrTuple, order: Order, dims: Optional[int]) -> Tuple[int, Tuple[int, ...], Tuple[str, ...]]:
    n = resolve_dims(r, dims, "r")
    return n, normalize_r(r, n), normalize_order(order, n)


_resolve_cached = functools.lru_cache(maxsize=256)(_resolve_uncached)


def _resolve(r: IntOrTuple, order: Order, dims: Optional[int]) -> Tuple[int, Tuple[int, ...], Tuple[str, ...]]:
    """The dims rule for a bare tensor: dims, per-axis factors and order names (validated once per spelling:
    the layout ops run on tiny tensors in the sweep, where validation would otherwise dominate)."""
    if type(r) is int or (type(r) is tuple and all(type(v) is int for v in r)):
        if isinstance(order, (str, tuple)) and (dims is None or type(dims) is int):
            return _resolve_cached(r, order, dims)
    return _resolve_uncached(r, order, dims)


Step = Tuple[Tuple[int, ...], Tuple[int, ...], Tuple[int, ...]]  # reshape to, permute by, reshape to


def _step(shape: Tuple[int, ...], names: Tuple[str, ...], rs: Tuple[int, ...], dims: int, to_space: bool) -> Step:
    """The reshape / permute / reshape that :func:`_patterns`' einops pattern performs on this shape."""
    batch = shape[: len(shape) - dims - 1]
    nb = len(batch)
    factors = FACTOR_NAMES[dims]
    if to_space:  # (..., (names), *S) -> (..., c, *(S r))
        sizes = {name: rs[factors.index(name)] if name != "c" else shape[nb] // math.prod(rs) for name in names}
        spatial = shape[nb + 1:]
        view = batch + tuple(sizes[n] for n in names) + spatial
        at = {name: nb + i for i, name in enumerate(names)}
        perm = tuple(range(nb)) + (at["c"],) + tuple(p for k, f in enumerate(factors) for p in (nb + dims + 1 + k, at[f]))
        return view, perm, batch + (sizes["c"],) + tuple(s * f for s, f in zip(spatial, rs))
    # (..., c, *(S r)) -> (..., (names), *S)
    spatial = tuple(s // f for s, f in zip(shape[nb + 1:], rs))
    view = batch + (shape[nb],) + tuple(v for s, f in zip(spatial, rs) for v in (s, f))
    at = {"c": nb, **{f: nb + 2 + 2 * k for k, f in enumerate(factors)}}
    perm = tuple(range(nb)) + tuple(at[n] for n in names) + tuple(nb + 1 + 2 * k for k in range(dims))
    return view, perm, batch + (shape[nb] * math.prod(rs),) + spatial


@functools.lru_cache(maxsize=1024)
def _plan(shape: Tuple[int, ...], names: Tuple[str, ...], rs: Tuple[int, ...], dims: int, to_space: bool) -> Tuple[Step, ...]:
    """The view steps of one layout change on this shape, computed once per shape, so a call costs a few view
    calls and the copy, not a pattern lookup. The einops pattern stays the specification: tests/core/test_layout.py
    checks the plan against ``einops.rearrange`` bit for bit, for every order.
    """
    return (_step(shape, names, rs, dims, to_space),)


#: A 2-D space_to_depth with its channel axis after a factor ("rh rw c", "rw c rh", ...) copies tensors from this
#: many bytes up in tiles of :data:`TILE_BYTES` of input, when a factor is 8 or more.
TILED_COPY_BYTES = 4 << 20
TILE_BYTES = 256 << 10


def _tiled(x: torch.Tensor, step: Step, names: Tuple[str, ...], rs: Tuple[int, ...]) -> torch.Tensor:
    """One space_to_depth step copied a tile of (channels, output rows) at a time.

    In one pass, every value of the factors before ``c`` walks all channels' rows again (0.8x pixel_unshuffle at
    r = 16 for "rw rh c": the rows no longer fit in the cache between the walks); a tile's rows do, so each is
    read from memory once (benchmarks/layout.py)."""
    view, perm, out = step
    src = x.reshape(view).permute(perm)
    y = torch.empty(src.shape, dtype=x.dtype, device=x.device)
    nb = len(view) - 5  # batch axes; then c, h, rh, w, rw
    c_axis, h_axis = nb + names.index("c"), nb + 3
    channels, rows = src.shape[c_axis], src.shape[h_axis]
    per = max(1, TILE_BYTES // (rs[0] * x.shape[-1] * x.element_size()))  # (channel, output row) pairs per tile
    cc = min(channels, per)
    hc = max(1, min(rows, per // cc))
    for c in range(0, channels, cc):
        for h in range(0, rows, hc):
            n, m = min(cc, channels - c), min(hc, rows - h)
            y.narrow(c_axis, c, n).narrow(h_axis, h, m).copy_(src.narrow(c_axis, c, n).narrow(h_axis, h, m))
    return y.reshape(out)


def _rearrange(x: torch.Tensor, names: Tuple[str, ...], rs: Tuple[int, ...], dims: int, *, to_space: bool) -> torch.Tensor:
    if not torch.jit.is_tracing():
        try:
            steps = _plan(tuple(x.shape), names, rs, dims, to_space)
        except TypeError:  # symbolic sizes (torch.compile) are not hashable
            steps = ()
        if (steps and not to_space and dims == 2 and names[0] != "c" and max(rs) >= 8
                and x.numel() * x.element_size() >= TILED_COPY_BYTES):
            return _tiled(x, steps[0], names, rs)
        for view, perm, out in steps:
            x = x.reshape(view).permute(perm).reshape(out)
        if steps:
            return x
    # sizes that are not plain ints (exporter tracing, symbolic shapes): einops records the pattern symbolically
    forward, backward = _patterns(names, dims)
    return einops.rearrange(x, forward if to_space else backward, **dict(zip(FACTOR_NAMES[dims], rs)))


def depth_to_space(x: torch.Tensor, r: IntOrTuple, order: Order = "crd", *, dims: Optional[int] = None) -> torch.Tensor:
    """Move ``prod(r)`` channel factors into space: ``(..., G*prod(r), *S) -> (..., G, *(S*r))``.

    ``order="crd"`` is bit-identical to ``torch.nn.functional.pixel_shuffle``. ``dims`` defaults to
    ``len(r)`` for a tuple and to 2 for an int (the bare-tensor rule of ``pixel_shuffle``: the last three axes
    are ``(C, H, W)``); any number of leading batch dims is allowed.

    Args:
        x: a tensor ``(..., C, *S)`` with ``dims`` spatial axes; ``C`` a multiple of ``prod(r)``.
        r: the fold factor, a positive int (every axis) or one per spatial axis.
        order: the channel order, an alias (``"crd"``, the default; ``"dcr"``, ``"focus"``) or einops axes.
        dims: the number of spatial axes, 1 to 3 (default: ``len(r)`` for a tuple, 2 for an int).

    Returns:
        The tensor ``(..., C // prod(r), *(S * r))``.

    Raises:
        FoldError: naming ``r``, ``order``, ``dims`` or ``x`` (not a tensor, too few axes, ``C`` not divisible).

    Example:
        >>> x = torch.arange(8.).reshape(1, 8, 1, 1)
        >>> depth_to_space(x, 2).shape
        torch.Size([1, 2, 2, 2])
        >>> torch.equal(depth_to_space(x, 2), torch.nn.functional.pixel_shuffle(x, 2))
        True
        >>> depth_to_space(torch.zeros(1, 4, 3), 4, dims=1).shape
        torch.Size([1, 1, 12])
    """
    dims, rs, names = _resolve(r, order, dims)
    if not isinstance(x, torch.Tensor) or x.dim() <= dims:
        require_input(x, dims)
    channels = x.shape[-dims - 1]
    block = math.prod(rs)
    if channels % block:
        raise fold_error(
            "x.shape", tuple(x.shape), f"channel count {channels} is not a multiple of prod(r)={block} (r={rs})"
        )
    return _rearrange(x, names, rs, dims, to_space=True)


def space_to_depth(x: torch.Tensor, r: IntOrTuple, order: Order = "crd", *, dims: Optional[int] = None) -> torch.Tensor:
    """Move ``r`` x ... blocks of pixels into channels: ``(..., G, *(S*r)) -> (..., G*prod(r), *S)``.

    The exact inverse of :func:`depth_to_space` with the same ``r``, ``order`` and dims rule; ``order="crd"``
    is bit-identical to ``torch.nn.functional.pixel_unshuffle``. Every spatial size must be a multiple of its
    factor (crop or pad first: :func:`foldconv.fold.pad_to_multiple`).

    Args:
        x: a tensor ``(..., G, *S)`` with ``dims`` spatial axes, each size a multiple of its factor.
        r: the fold factor, a positive int (every axis) or one per spatial axis.
        order: the channel order, an alias (``"crd"``, the default; ``"dcr"``, ``"focus"``) or einops axes.
        dims: the number of spatial axes, 1 to 3 (default: ``len(r)`` for a tuple, 2 for an int).

    Returns:
        The tensor ``(..., G * prod(r), *(S // r))``.

    Raises:
        FoldError: naming ``r``, ``order``, ``dims`` or ``x`` (not a tensor, too few axes, a size not divisible).

    Example:
        >>> x = torch.randn(2, 3, 4, 6)
        >>> torch.equal(depth_to_space(space_to_depth(x, 2), 2), x)
        True
    """
    dims, rs, names = _resolve(r, order, dims)
    if not isinstance(x, torch.Tensor) or x.dim() <= dims:
        require_input(x, dims)
    sizes = x.shape[-dims:]
    for axis, (size, factor) in enumerate(zip(sizes, rs)):
        if size % factor:
            raise fold_error(
                "x.shape",
                tuple(x.shape),
                f"spatial size {size} of axis {axis} is not a multiple of r={factor}; crop or pad it first",
            )
    return _rearrange(x, names, rs, dims, to_space=False)


def fold_channel_map(channels: int, r: IntOrTuple, order: Order = "crd", *, dims: Optional[int] = None) -> torch.Tensor:
    """Which original channel lands at each (folded channel, sub-pixel offset).

    Returns an int64 tensor of shape ``(channels // prod(r), *r)``: entry ``[g, i, j]`` is the channel whose
    pixel ends up at offset ``(i, j)`` of fold block of folded channel ``g``. It has ``channels`` entries;
    questions about groups are answered in closed form by :func:`foldconv.fold.folded_groups`.

    Args:
        channels: the unfolded channel count, a positive multiple of ``prod(r)``.
        r: the fold factor, a positive int (every axis) or one per spatial axis.
        order: the channel order, an alias (``"crd"``, the default; ``"dcr"``, ``"focus"``) or einops axes.
        dims: the number of spatial axes, 1 to 3 (default: ``len(r)`` for a tuple, 2 for an int).

    Returns:
        An int64 tensor ``(channels // prod(r), *r)`` of original channel indices.

    Raises:
        FoldError: naming ``channels`` (not a positive multiple of ``prod(r)``), ``r``, ``order`` or ``dims``.

    Example:
        >>> fold_channel_map(4, 2, "crd").tolist()
        [[[0, 1], [2, 3]]]
        >>> fold_channel_map(4, 2, "focus").tolist()
        [[[0, 2], [1, 3]]]
    """
    dims, rs, names = _resolve(r, order, dims)
    channels = require_int(channels, "channels", 1)
    if channels % math.prod(rs):
        raise fold_error("channels", channels, f"must be a multiple of prod(r)={math.prod(rs)} (r={rs})")
    require_numel((channels,), "channels", channels, what="a channel map")
    ids = torch.arange(channels).reshape((channels,) + (1,) * dims)
    return depth_to_space(ids, rs, names, dims=dims)


class _Layout(nn.Module):
    def __init__(self, r: IntOrTuple, order: Order = "crd", *, dims: Optional[int] = None):
        super().__init__()
        self.dims, self.r, self.order = _resolve(r, order, dims)

    def extra_repr(self) -> str:
        return f"r={self.r}, order={' '.join(self.order)!r}"


class DepthToSpace(_Layout):
    """:func:`depth_to_space` as a module, usable inside ``nn.Sequential`` (same arguments, same dims rule).

    Example:
        >>> DepthToSpace(2)(torch.zeros(1, 8, 3, 3)).shape
        torch.Size([1, 2, 6, 6])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(x, self.r, self.order, dims=self.dims)


class SpaceToDepth(_Layout):
    """:func:`space_to_depth` as a module, usable inside ``nn.Sequential`` (same arguments, same dims rule).

    Example:
        >>> SpaceToDepth(2)(torch.zeros(1, 2, 6, 6)).shape
        torch.Size([1, 8, 3, 3])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_depth(x, self.r, self.order, dims=self.dims)


@dataclass(frozen=True)
class LayoutModule:
    """What a layout module computes: ``kind`` ("space_to_depth" or "depth_to_space"), per-axis ``r``, ``order``."""

    kind: str
    r: Tuple[int, ...]
    order: Tuple[str, ...]

    def as_module(self) -> nn.Module:
        """The foldconv module that computes the same map.

        Example:
            >>> layout_module(torch.nn.PixelUnshuffle(2)).as_module()
            SpaceToDepth(r=(2, 2), order='c rh rw')
        """
        cls = SpaceToDepth if self.kind == "space_to_depth" else DepthToSpace
        return cls(self.r, self.order)


# timm's SpaceToDepth/DepthToSpace (timm.layers.space_to_depth) put the block factors before the channels,
# ``(N, bs, bs, C, H/bs, W/bs)``: the "dcr" order. Recognised by class and module name so timm stays optional.
_TIMM_LAYOUT = {"SpaceToDepth": "space_to_depth", "DepthToSpace": "depth_to_space"}


def layout_module(module: nn.Module) -> Optional[LayoutModule]:
    """The kind, factors and channel order of a depth-to-space / space-to-depth module, or None for any other module.

    Recognises foldconv's :class:`DepthToSpace` / :class:`SpaceToDepth`, ``nn.PixelShuffle`` /
    ``nn.PixelUnshuffle`` (order ``"crd"``, 2-D) and timm's ``SpaceToDepth`` / ``DepthToSpace`` (order ``"dcr"``,
    2-D, ``module.bs`` the factor), so rewrites treat all of them as the same map.

    Example:
        >>> layout_module(torch.nn.PixelShuffle(3))
        LayoutModule(kind='depth_to_space', r=(3, 3), order=('c', 'rh', 'rw'))
        >>> layout_module(torch.nn.ReLU()) is None
        True
    """
    if isinstance(module, (DepthToSpace, SpaceToDepth)):
        kind = "depth_to_space" if isinstance(module, DepthToSpace) else "space_to_depth"
        return LayoutModule(kind, tuple(module.r), tuple(module.order))
    if isinstance(module, nn.PixelShuffle):
        return LayoutModule("depth_to_space", (module.upscale_factor,) * 2, normalize_order("crd", 2))
    if isinstance(module, nn.PixelUnshuffle):
        return LayoutModule("space_to_depth", (module.downscale_factor,) * 2, normalize_order("crd", 2))
    cls = type(module)
    if cls.__module__.startswith("timm.") and cls.__name__ in _TIMM_LAYOUT and isinstance(getattr(module, "bs", None), int):
        return LayoutModule(_TIMM_LAYOUT[cls.__name__], (module.bs,) * 2, normalize_order("dcr", 2))
    return None
