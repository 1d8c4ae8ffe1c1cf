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
"""
from __future__ import annotations

import functools
import math
import numbers
from typing import Sequence, Tuple, Union

import einops
import torch
from torch import nn

from .errors import fold_error

__all__ = [
    "ORDER_ALIASES",
    "IntOrTuple",
    "Order",
    "normalize_r",
    "per_axis_ints",
    "normalize_order",
    "order_string",
    "depth_to_space",
    "space_to_depth",
    "fold_channel_map",
    "DepthToSpace",
    "SpaceToDepth",
]

IntOrTuple = Union[int, Sequence[int]]
Order = Union[str, Sequence[str]]

ORDER_ALIASES = ("crd", "dcr", "focus")
_SPATIAL = {1: ("w",), 2: ("h", "w"), 3: ("d", "h", "w")}
_FACTORS = {1: ("rw",), 2: ("rh", "rw"), 3: ("rd", "rh", "rw")}


def _check_dims(spatial_dims: int) -> int:
    if isinstance(spatial_dims, bool) or not isinstance(spatial_dims, numbers.Integral) or spatial_dims not in _SPATIAL:
        raise fold_error("spatial_dims", spatial_dims, "must be 1, 2 or 3")
    return int(spatial_dims)


def per_axis_ints(value: IntOrTuple, dims: int, param: str, minimum: int) -> Tuple[int, ...]:
    """An int (repeated) or one int per spatial axis, each ``>= minimum``; FoldError otherwise.

    Example:
        >>> per_axis_ints(1, 3, "stride", 1), per_axis_ints((0, 2), 2, "padding", 0)
        ((1, 1, 1), (0, 2))
    """
    if isinstance(value, (bool, torch.Tensor)):
        raise fold_error(param, value, f"must be an integer >= {minimum} or one per spatial axis")
    if isinstance(value, numbers.Integral):
        values: Tuple = (value,) * dims
    elif isinstance(value, Sequence) and not isinstance(value, str):
        values = tuple(value)
        if len(values) != dims:
            raise fold_error(param, value, f"needs one value per spatial axis ({dims}), got {len(values)}")
    else:
        raise fold_error(param, value, f"must be an integer >= {minimum} or one per spatial axis")
    for v in values:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < minimum:
            raise fold_error(param, value, f"every entry must be an integer >= {minimum}")
    return tuple(int(v) for v in values)


def normalize_r(r: IntOrTuple, spatial_dims: int, param: str = "r") -> Tuple[int, ...]:
    """Return the fold factor as one positive int per spatial axis.

    Example:
        >>> normalize_r(2, 2), normalize_r((2, 3), 2)
        ((2, 2), (2, 3))
    """
    return per_axis_ints(r, _check_dims(spatial_dims), param, 1)


@functools.lru_cache(maxsize=None)
def _normalize_order_cached(order: Union[str, Tuple[str, ...]], spatial_dims: int) -> Tuple[str, ...]:
    factors = _FACTORS[spatial_dims]
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
            f"for {spatial_dims} spatial dim(s)",
        )
    return names


def normalize_order(order: Order, spatial_dims: int = 2) -> Tuple[str, ...]:
    """Resolve an alias or an einops axis list into a tuple of axis names.

    Example:
        >>> normalize_order("crd"), normalize_order("focus"), normalize_order("c rw", 1)
        (('c', 'rh', 'rw'), ('rw', 'rh', 'c'), ('c', 'rw'))
    """
    spatial_dims = _check_dims(spatial_dims)
    if not isinstance(order, str):
        if not isinstance(order, Sequence) or not all(isinstance(o, str) for o in order):
            raise fold_error("order", order, "must be a string or a sequence of axis names")
        order = tuple(order)
    return _normalize_order_cached(order, spatial_dims)


def order_string(order: Order, spatial_dims: int = 2) -> str:
    """The canonical einops spelling of an order, e.g. ``"rw rh c"`` for ``"focus"``.

    Example:
        >>> order_string("dcr")
        'rh rw c'
    """
    return " ".join(normalize_order(order, spatial_dims))


@functools.lru_cache(maxsize=None)
def _patterns(order: Tuple[str, ...], spatial_dims: int) -> Tuple[str, str]:
    spatial = _SPATIAL[spatial_dims]
    factors = _FACTORS[spatial_dims]
    packed = f"... ({' '.join(order)}) {' '.join(spatial)}"
    unpacked = "... c " + " ".join(f"({s} {f})" for s, f in zip(spatial, factors))
    return f"{packed} -> {unpacked}", f"{unpacked} -> {packed}"


def _infer_dims(r: IntOrTuple, spatial_dims: Union[int, None]) -> int:
    if spatial_dims is not None:
        return _check_dims(spatial_dims)
    if isinstance(r, Sequence) and not isinstance(r, str):
        return _check_dims(len(r))
    return 2


def _check_tensor(x: torch.Tensor, spatial_dims: int, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise fold_error(name, type(x).__name__, "must be a torch.Tensor")
    if x.dim() < spatial_dims + 1:
        raise fold_error(
            f"{name}.shape", tuple(x.shape), f"needs at least {spatial_dims + 1} dims (channels + {spatial_dims} spatial)"
        )


def depth_to_space(
    x: torch.Tensor, r: IntOrTuple, order: Order = "crd", spatial_dims: Union[int, None] = None
) -> torch.Tensor:
    """Move ``prod(r)`` channel factors into space: ``(..., G*prod(r), *S) -> (..., G, *(S*r))``.

    ``order="crd"`` is bit-identical to ``torch.nn.functional.pixel_shuffle``. ``spatial_dims`` defaults to
    ``len(r)`` for a tuple and to 2 for an int; any number of leading batch dims is allowed.

    Example:
        >>> x = torch.arange(8.).reshape(1, 8, 1, 1)
        >>> depth_to_space(x, 2).shape
        torch.Size([1, 2, 2, 2])
        >>> torch.equal(depth_to_space(x, 2), torch.nn.functional.pixel_shuffle(x, 2))
        True
    """
    dims = _infer_dims(r, spatial_dims)
    rs = normalize_r(r, dims)
    names = normalize_order(order, dims)
    _check_tensor(x, dims, "x")
    channels = x.shape[-dims - 1]
    block = math.prod(rs)
    if channels % block:
        raise fold_error(
            "x.shape", tuple(x.shape), f"channel count {channels} is not a multiple of prod(r)={block} (r={rs})"
        )
    forward, _ = _patterns(names, dims)
    return einops.rearrange(x, forward, **dict(zip(_FACTORS[dims], rs)))


def space_to_depth(
    x: torch.Tensor, r: IntOrTuple, order: Order = "crd", spatial_dims: Union[int, None] = None
) -> torch.Tensor:
    """Move ``r`` x ... blocks of pixels into channels: ``(..., G, *(S*r)) -> (..., G*prod(r), *S)``.

    The exact inverse of :func:`depth_to_space` with the same ``r`` and ``order``; ``order="crd"`` is
    bit-identical to ``torch.nn.functional.pixel_unshuffle``. Every spatial size must be a multiple of its
    factor (crop or pad first: :func:`foldconv.fold.pad_to_multiple`).

    Example:
        >>> x = torch.randn(2, 3, 4, 6)
        >>> torch.equal(depth_to_space(space_to_depth(x, 2), 2), x)
        True
    """
    dims = _infer_dims(r, spatial_dims)
    rs = normalize_r(r, dims)
    names = normalize_order(order, dims)
    _check_tensor(x, dims, "x")
    sizes = tuple(x.shape[-dims:])
    for axis, (size, factor) in enumerate(zip(sizes, rs)):
        if size % factor:
            raise fold_error(
                "x.shape",
                tuple(x.shape),
                f"spatial size {size} of axis {axis} is not a multiple of r={factor}; crop or pad it first",
            )
    _, backward = _patterns(names, dims)
    return einops.rearrange(x, backward, **dict(zip(_FACTORS[dims], rs)))


def fold_channel_map(channels: int, r: IntOrTuple, order: Order = "crd", spatial_dims: Union[int, None] = None) -> torch.Tensor:
    """Which original channel lands at each (folded channel, sub-pixel offset).

    Returns an int64 tensor of shape ``(channels // prod(r), *r)``: entry ``[g, i, j]`` is the channel whose
    pixel ends up at offset ``(i, j)`` of fold block of folded channel ``g``.

    Example:
        >>> fold_channel_map(4, 2, "crd").tolist()
        [[[0, 1], [2, 3]]]
        >>> fold_channel_map(4, 2, "focus").tolist()
        [[[0, 2], [1, 3]]]
    """
    dims = _infer_dims(r, spatial_dims)
    rs = normalize_r(r, dims)
    ids = torch.arange(channels).reshape((channels,) + (1,) * dims)
    return depth_to_space(ids, rs, order, dims)


class _Layout(nn.Module):
    def __init__(self, r: IntOrTuple, order: Order = "crd", spatial_dims: Union[int, None] = None):
        super().__init__()
        self.spatial_dims = _infer_dims(r, spatial_dims)
        self.r = normalize_r(r, self.spatial_dims)
        self.order = normalize_order(order, self.spatial_dims)

    def extra_repr(self) -> str:
        return f"r={self.r}, order={' '.join(self.order)!r}"


class DepthToSpace(_Layout):
    """:func:`depth_to_space` as a module, usable inside ``nn.Sequential``.

    Example:
        >>> DepthToSpace(2)(torch.zeros(1, 8, 3, 3)).shape
        torch.Size([1, 2, 6, 6])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return depth_to_space(x, self.r, self.order, self.spatial_dims)


class SpaceToDepth(_Layout):
    """:func:`space_to_depth` as a module, usable inside ``nn.Sequential``.

    Example:
        >>> SpaceToDepth(2)(torch.zeros(1, 2, 6, 6)).shape
        torch.Size([1, 8, 3, 3])
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return space_to_depth(x, self.r, self.order, self.spatial_dims)
