"""Frozen descriptions of a convolution and of a fold, with conversion to and from ``nn.Conv`` modules.

Specs are plain data: the prediction engine reasons over them without building a tensor, and they are
what experiment tables record.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, replace
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .errors import fold_error
from .padding import PADDING_MODES, padded_source
from .layout import IntOrTuple, Order, normalize_order, normalize_r, per_axis_ints

__all__ = ["ConvSpec", "FoldSpec", "PADDING_MODES", "conv_class", "padded_source"]

_CONV = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


def conv_class(dims: int) -> type:
    """The ``nn.ConvNd`` class for 1, 2 or 3 spatial dims.

    Example:
        >>> conv_class(2).__name__
        'Conv2d'
    """
    if dims not in _CONV:
        raise fold_error("dims", dims, "must be 1, 2 or 3")
    return _CONV[dims]


_tuple = per_axis_ints


@dataclass(frozen=True)
class ConvSpec:
    """Hyper-parameters of an N-d convolution (no weights). Per-axis values are tuples.

    Example:
        >>> s = ConvSpec.make(2, 256, 64, 3, padding=1)
        >>> s.kernel_size, s.params, s.macs_per_position
        ((3, 3), 147520, 147456)
        >>> s.output_size((32, 32))
        (32, 32)
    """

    dims: int
    in_channels: int
    out_channels: int
    kernel_size: Tuple[int, ...]
    stride: Tuple[int, ...]
    padding: Tuple[int, ...]
    dilation: Tuple[int, ...]
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"

    @classmethod
    def make(
        cls,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> "ConvSpec":
        """Validate and normalise; ints become per-axis tuples."""
        if isinstance(dims, bool) or dims not in (1, 2, 3):
            raise fold_error("dims", dims, "must be 1, 2 or 3")
        for name, value in (("in_channels", in_channels), ("out_channels", out_channels), ("groups", groups)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise fold_error(name, value, "must be an integer >= 1")
        if in_channels % groups or out_channels % groups:
            raise fold_error(
                "groups", groups, f"must divide in_channels={in_channels} and out_channels={out_channels}"
            )
        if padding_mode not in PADDING_MODES:
            raise fold_error("padding_mode", padding_mode, f"must be one of {PADDING_MODES}")
        return cls(
            dims=int(dims),
            in_channels=int(in_channels),
            out_channels=int(out_channels),
            kernel_size=_tuple(kernel_size, dims, "kernel_size", 1),
            stride=_tuple(stride, dims, "stride", 1),
            padding=_tuple(padding, dims, "padding", 0),
            dilation=_tuple(dilation, dims, "dilation", 1),
            groups=int(groups),
            bias=bool(bias),
            padding_mode=padding_mode,
        )

    @classmethod
    def from_module(cls, conv: nn.Module) -> "ConvSpec":
        """Read the spec of an ``nn.Conv1d/2d/3d``; string paddings become explicit numbers.

        ``padding="same"`` is only representable when every ``dilation*(kernel-1)`` is even (symmetric).
        """
        if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            raise fold_error("conv", type(conv).__name__, "must be an nn.Conv1d, nn.Conv2d or nn.Conv3d")
        dims = len(conv.kernel_size)
        padding = conv.padding
        if isinstance(padding, str):
            if padding == "valid":
                padding = (0,) * dims
            else:
                total = [d * (k - 1) for d, k in zip(conv.dilation, conv.kernel_size)]
                if any(t % 2 for t in total):
                    raise fold_error(
                        "padding",
                        "same",
                        f"is asymmetric for kernel_size={conv.kernel_size}, dilation={conv.dilation}; "
                        "write it as an explicit pad before the conv",
                    )
                padding = tuple(t // 2 for t in total)
        return cls.make(
            dims,
            conv.in_channels,
            conv.out_channels,
            tuple(conv.kernel_size),
            tuple(conv.stride),
            tuple(padding),
            tuple(conv.dilation),
            conv.groups,
            conv.bias is not None,
            conv.padding_mode,
        )

    def to_module(self, dtype: Optional[torch.dtype] = None, device: Union[str, torch.device, None] = None) -> nn.Module:
        """Build an ``nn.ConvNd`` (randomly initialised) with this spec."""
        return conv_class(self.dims)(
            self.in_channels,
            self.out_channels,
            self.kernel_size,
            stride=self.stride,
            padding=self.padding,
            dilation=self.dilation,
            groups=self.groups,
            bias=self.bias,
            padding_mode=self.padding_mode,
            dtype=dtype,
            device=device,
        )

    def replace(self, **changes) -> "ConvSpec":
        """A copy with some fields changed, re-validated.

        Example:
            >>> ConvSpec.make(2, 4, 4, 3).replace(stride=2).stride
            (2, 2)
        """
        fields = {k: getattr(self, k) for k in self.__dataclass_fields__}
        fields.update(changes)
        return ConvSpec.make(**fields)

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        return (self.out_channels, self.in_channels // self.groups) + self.kernel_size

    @property
    def effective_kernel(self) -> Tuple[int, ...]:
        """Extent of the dilated kernel, ``d*(k-1)+1`` per axis."""
        return tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))

    @property
    def params(self) -> int:
        return math.prod(self.weight_shape) + (self.out_channels if self.bias else 0)

    @property
    def macs_per_position(self) -> int:
        """Multiply-adds for one output position, all output channels (bias not counted)."""
        return self.out_channels * (self.in_channels // self.groups) * math.prod(self.kernel_size)

    def output_size(self, input_size: Sequence[int]) -> Tuple[int, ...]:
        """Spatial output size for a spatial input size (torch's formula); raises when it would be empty."""
        if len(input_size) != self.dims:
            raise fold_error("input_size", tuple(input_size), f"needs {self.dims} spatial sizes")
        out = tuple(
            (n + 2 * p - ke) // s + 1
            for n, p, ke, s in zip(input_size, self.padding, self.effective_kernel, self.stride)
        )
        if any(o < 1 for o in out):
            raise fold_error(
                "input_size", tuple(input_size), f"gives an empty output {out} for kernel extent {self.effective_kernel}"
            )
        return out

    def macs(self, input_size: Sequence[int]) -> int:
        """Multiply-adds for one sample of the given spatial input size."""
        return self.macs_per_position * math.prod(self.output_size(input_size))

    def describe(self) -> str:
        """One line, e.g. ``Conv2d(256->64, k=(3, 3), s=(1, 1), p=(1, 1))``."""
        extra = ""
        if any(d != 1 for d in self.dilation):
            extra += f", d={self.dilation}"
        if self.groups != 1:
            extra += f", groups={self.groups}"
        if self.padding_mode != "zeros":
            extra += f", mode={self.padding_mode}"
        return (
            f"Conv{self.dims}d({self.in_channels}->{self.out_channels}, k={self.kernel_size}, "
            f"s={self.stride}, p={self.padding}{extra})"
        )


@dataclass(frozen=True)
class FoldSpec:
    """How channels are folded into space: a factor per spatial axis and a channel order.

    Example:
        >>> f = FoldSpec.make(16)
        >>> f.r, f.order, f.block
        ((16, 16), ('c', 'rh', 'rw'), 256)
    """

    r: Tuple[int, ...]
    order: Tuple[str, ...]
    dims: int = 2

    @classmethod
    def make(cls, r: IntOrTuple, order: Order = "crd", dims: Optional[int] = None) -> "FoldSpec":
        if dims is None:
            dims = len(r) if isinstance(r, Sequence) and not isinstance(r, str) else 2
        rs = normalize_r(r, dims)
        return cls(r=rs, order=normalize_order(order, dims), dims=dims)

    @property
    def block(self) -> int:
        """Channels per folded channel, ``prod(r)``."""
        return math.prod(self.r)

    @property
    def order_string(self) -> str:
        return " ".join(self.order)

    def with_order(self, order: Order) -> "FoldSpec":
        return replace(self, order=normalize_order(order, self.dims))
