"""The one home of foldconv's input rules: dimensionality, per-axis integers, conv types, output sizes.

The dimension rule, written once:

- a module or a spec knows its spatial dims (``nn.Conv2d`` has 2, ``ConvSpec.dims``), and an int ``r`` means
  that many axes with the same factor;
- a bare tensor with an int ``r`` and no ``spatial_dims`` means 2-D, exactly as ``torch.pixel_shuffle`` does;
- a per-axis tuple carries its own length; any contradiction between two sources of dims is a FoldError.

Example:
    >>> per_axis_ints(2, 3, "r", 1), resolve_dims((2, 4), None, "r")
    ((2, 2, 2), 2)
    >>> conv_output_size((8, 8), (3, 3), (2, 2), (1, 1), (1, 1))
    (4, 4)
"""
from __future__ import annotations

import numbers
from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .errors import fold_error

__all__ = [
    "IntOrTuple",
    "SPATIAL_NAMES",
    "FACTOR_NAMES",
    "CONV_TYPES",
    "CONV_TRANSPOSE_TYPES",
    "check_dims",
    "check_int",
    "per_axis_ints",
    "resolve_dims",
    "conv_output_size",
    "require_conv",
]

IntOrTuple = Union[int, Sequence[int]]

#: Names of the spatial axes and of the fold factors, per number of spatial dims (einops axis names).
SPATIAL_NAMES = {1: ("w",), 2: ("h", "w"), 3: ("d", "h", "w")}
FACTOR_NAMES = {1: ("rw",), 2: ("rh", "rw"), 3: ("rd", "rh", "rw")}

CONV_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
CONV_TRANSPOSE_TYPES = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_int(value: Any, param: str, minimum: int) -> int:
    """A plain integer ``>= minimum`` (bools, floats, tensors refused); FoldError naming ``param`` otherwise.

    Example:
        >>> check_int(3, "groups", 1)
        3
    """
    if not _is_int(value) or value < minimum:
        raise fold_error(param, value, f"must be an integer >= {minimum}")
    return int(value)


def check_dims(dims: Any, param: str = "dims") -> int:
    """Spatial dims must be 1, 2 or 3.

    Example:
        >>> check_dims(3)
        3
    """
    if not _is_int(dims) or dims not in SPATIAL_NAMES:
        raise fold_error(param, dims, "must be 1, 2 or 3 spatial dims")
    return int(dims)


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
        if not _is_int(v) or v < minimum:
            raise fold_error(param, value, f"every entry must be an integer >= {minimum}")
    return tuple(int(v) for v in values)


def resolve_dims(value: Any, dims: Optional[int], param: str, *, default: int = 2) -> int:
    """The spatial dims implied by a per-axis value and an explicit ``dims`` (either may be missing).

    A tuple's length is its dims; an int implies nothing and takes ``dims`` or ``default`` (2, like
    ``torch.pixel_shuffle`` on a bare tensor). A tuple whose length contradicts ``dims`` is a FoldError.

    Example:
        >>> resolve_dims(2, None, "r"), resolve_dims(2, 3, "r"), resolve_dims((2, 2, 2), None, "r")
        (2, 3, 3)
    """
    if dims is not None:
        dims = check_dims(dims)
    if isinstance(value, Sequence) and not isinstance(value, str):
        n = len(value)
        if dims is not None and n != dims:
            raise fold_error(param, tuple(value), f"has {n} entries but the operand has {dims} spatial dims")
        return check_dims(n, param)
    return dims if dims is not None else default


def conv_output_size(
    input_size: Sequence[int],
    kernel_size: Sequence[int],
    stride: Sequence[int],
    padding: Sequence[int],
    dilation: Sequence[int],
) -> Tuple[int, ...]:
    """torch's output size per axis, ``(n + 2p - d(k-1) - 1) // s + 1`` (may be < 1: callers decide).

    Example:
        >>> conv_output_size((7,), (3,), (2,), (0,), (1,))
        (3,)
    """
    return tuple(
        (n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(input_size, kernel_size, stride, padding, dilation)
    )


def require_conv(module: Any, param: str = "conv") -> int:
    """The spatial dims of an ``nn.Conv1d/2d/3d``; FoldError for anything else.

    Example:
        >>> require_conv(nn.Conv3d(1, 1, 1))
        3
    """
    if not isinstance(module, CONV_TYPES):
        raise fold_error(param, type(module).__name__, "must be an nn.Conv1d, nn.Conv2d or nn.Conv3d")
    return len(module.kernel_size)
