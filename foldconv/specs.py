"""Frozen descriptions of a convolution and of a fold, with conversion to and from ``nn.Conv`` modules.

Specs are plain data: the prediction engine reasons over them without building a tensor, and they are
what experiment tables record. Both are validated however they are built (``make``, the constructor,
``dataclasses.replace`` or a config), and both are Hydra/OmegaConf structured configs as they stand:

    >>> from omegaconf import OmegaConf
    >>> conv = OmegaConf.merge(OmegaConf.structured(ConvSpec), {"dims": 2, "in_channels": 16, "out_channels": 4})
    >>> conv = OmegaConf.merge(conv, OmegaConf.from_dotlist(["kernel_size=[3,5]", "padding=1"]))
    >>> OmegaConf.to_object(conv).describe()
    'Conv2d(16->4, k=(3, 5), s=(1, 1), p=(1, 1))'
    >>> fold = OmegaConf.merge(OmegaConf.structured(FoldSpec), OmegaConf.from_dotlist(["r=2x4"]))
    >>> OmegaConf.to_object(fold).r
    (2, 4)

Per-axis fields (``kernel_size``, ``stride``, ``padding``, ``dilation``, ``r``) are typed ``Any`` so that a
config may give an int (``conv.kernel_size=3``), a list (``conv.kernel_size=[3,5]``) or the string syntax
``"2x4"`` (``fold.r=2x4``); ``__post_init__`` turns them into validated tuples or raises FoldError.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ._validate import (
    CONV_TYPES,
    conv_output_size,
    parse_factors,
    per_axis_ints,
    require_bool,
    require_conv,
    require_dims,
    require_int,
    require_numel,
)
from .errors import fold_error
from .layout import ORDER_ALIASES, IntOrTuple, Order, normalize_order
from .padding import PADDING_MODES, padded_source

__all__ = ["ConvSpec", "FoldSpec", "PADDING_MODES", "conv_class", "padded_source"]


def conv_class(dims: int) -> type:
    """The ``nn.ConvNd`` class for 1, 2 or 3 spatial dims.

    Example:
        >>> conv_class(2).__name__
        'Conv2d'
    """
    return CONV_TYPES[require_dims(dims) - 1]


_PER_AXIS = (("kernel_size", 1), ("stride", 1), ("padding", 0), ("dilation", 1))


def _no_initialisation() -> None:
    """What ``reset_parameters`` does for a module whose parameters are replaced at once."""


@dataclass(frozen=True)
class ConvSpec:
    """Hyper-parameters of an N-d convolution (no weights). Per-axis values are tuples after validation.

    Example:
        >>> s = ConvSpec.make(2, 256, 64, 3, padding=1)
        >>> s.kernel_size, s.params, s.macs_per_position
        ((3, 3), 147520, 147456)
        >>> s.output_size((32, 32))
        (32, 32)
        >>> ConvSpec(dims=1, in_channels=4, out_channels=2, kernel_size="3").kernel_size
        (3,)
    """

    dims: int
    in_channels: int
    out_channels: int
    kernel_size: Any
    stride: Any = 1
    padding: Any = 0
    dilation: Any = 1
    groups: int = 1
    bias: bool = True
    padding_mode: str = "zeros"

    def __post_init__(self) -> None:
        dims = require_dims(self.dims)
        values = {"dims": dims}
        for name in ("in_channels", "out_channels", "groups"):
            values[name] = require_int(getattr(self, name), name, 1)
        for name, minimum in _PER_AXIS:
            values[name] = per_axis_ints(parse_factors(getattr(self, name), name), dims, name, minimum)
        values["bias"] = require_bool(self.bias, "bias")
        if not isinstance(self.padding_mode, str) or self.padding_mode not in PADDING_MODES:
            raise fold_error("padding_mode", self.padding_mode, f"must be one of {PADDING_MODES}")
        groups = values["groups"]
        if values["in_channels"] % groups or values["out_channels"] % groups:
            raise fold_error(
                "groups", groups, f"must divide in_channels={values['in_channels']} and out_channels={values['out_channels']}"
            )
        for name, value in values.items():
            object.__setattr__(self, name, value)

    @classmethod
    def make(
        cls,
        dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: IntOrTuple,
        *,
        stride: IntOrTuple = 1,
        padding: IntOrTuple = 0,
        dilation: IntOrTuple = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> ConvSpec:
        """Validate and normalise (ints become per-axis tuples); the same as the constructor, keyword-only tail.

        Example:
            >>> ConvSpec.make(1, 4, 4, 3, stride=2).stride
            (2,)
        """
        return cls(dims, in_channels, out_channels, kernel_size, stride, padding, dilation, groups, bias, padding_mode)

    @classmethod
    def from_module(cls, conv: nn.Module) -> ConvSpec:
        """Read the spec of an ``nn.Conv1d/2d/3d``; string paddings become explicit numbers.

        ``padding="same"`` is only representable when every ``dilation*(kernel-1)`` is even (symmetric).

        Example:
            >>> ConvSpec.from_module(nn.Conv2d(3, 8, 3, padding="same")).padding
            (1, 1)
        """
        dims = require_conv(conv)
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
            stride=tuple(conv.stride),
            padding=tuple(padding),
            dilation=tuple(conv.dilation),
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        )

    def to_module(
        self,
        dtype: Optional[torch.dtype] = None,
        device: Union[str, torch.device, None] = None,
        *,
        weight: Optional[torch.Tensor] = None,
        bias: Optional[torch.Tensor] = None,
        copy: bool = True,
    ) -> nn.Module:
        """Build an ``nn.ConvNd`` with this spec, randomly initialised or loaded with ``weight`` (and ``bias``:
        None keeps the random one) whose dtype and device it then takes; refuses weights above MAX_KERNEL_ELEMENTS.
        The module owns copies of ``weight`` and ``bias``; ``copy=False`` hands it ``weight`` itself (a tensor
        the caller has just built and keeps no other use for, e.g. a folded weight).

        Example:
            >>> ConvSpec.make(2, 4, 8, 3, groups=2).to_module().weight.shape
            torch.Size([8, 2, 3, 3])
            >>> m = ConvSpec.make(1, 1, 1, 2).to_module(weight=torch.ones(1, 1, 2), bias=torch.zeros(1))
            >>> m(torch.tensor([[[1.0, 2.0, 3.0]]])).tolist()
            [[[3.0, 5.0]]]
        """
        require_numel(self.weight_shape, "spec", self.describe())
        if weight is None:
            return self._build(dtype, device)
        if tuple(weight.shape) != self.weight_shape:
            raise fold_error("weight", tuple(weight.shape), f"must have the spec's weight shape {self.weight_shape}")
        if bias is not None and (not self.bias or tuple(bias.shape) != (self.out_channels,)):
            raise fold_error("bias", tuple(bias.shape), f"must be None or of shape ({self.out_channels},) with spec.bias=True")
        # Built on meta without reset_parameters, so no random initialisation is spent on a weight that is replaced
        # at once (torch's meta init alone cost more than fold_weight on a 64-channel conv).
        module = self._build(weight.dtype, "meta", initialise=False)
        module.weight = nn.Parameter(weight.detach().clone() if copy else weight.detach(), requires_grad=True)
        if self.bias:
            if bias is None:  # keep a freshly initialised bias, drawn as nn.ConvNd.reset_parameters draws it
                bias = torch.empty(self.out_channels, dtype=weight.dtype, device=weight.device)
                bound = 1 / math.sqrt(math.prod(self.weight_shape[1:])) if math.prod(self.weight_shape[1:]) else 0.0
                nn.init.uniform_(bias, -bound, bound)
            module.bias = nn.Parameter(bias.detach().to(weight.dtype).clone(), requires_grad=True)
        return module

    def _build(self, dtype: Optional[torch.dtype], device: Union[str, torch.device, None], *, initialise: bool = True) -> nn.Module:
        cls = conv_class(self.dims)
        module = cls.__new__(cls)
        if not initialise:  # an instance attribute shadows the method while __init__ runs, then goes
            object.__setattr__(module, "reset_parameters", _no_initialisation)
        try:
            cls.__init__(
                module, self.in_channels, self.out_channels, self.kernel_size, stride=self.stride, padding=self.padding,
                dilation=self.dilation, groups=self.groups, bias=self.bias, padding_mode=self.padding_mode, dtype=dtype, device=device,
            )
        finally:
            module.__dict__.pop("reset_parameters", None)
        return module

    def replace(self, **changes: Any) -> ConvSpec:
        """A copy with some fields changed, re-validated.

        Example:
            >>> ConvSpec.make(2, 4, 4, 3).replace(stride=2).stride
            (2, 2)
        """
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise fold_error("changes", unknown, f"are not ConvSpec fields ({', '.join(f.name for f in dataclasses.fields(self))})")
        return dataclasses.replace(self, **changes)

    @property
    def weight_shape(self) -> Tuple[int, ...]:
        """``(out_channels, in_channels/groups, *kernel_size)``."""
        return (self.out_channels, self.in_channels // self.groups) + self.kernel_size

    @property
    def effective_kernel(self) -> Tuple[int, ...]:
        """Extent of the dilated kernel, ``d*(k-1)+1`` per axis."""
        return tuple(d * (k - 1) + 1 for d, k in zip(self.dilation, self.kernel_size))

    @property
    def params(self) -> int:
        """Weights plus biases."""
        return math.prod(self.weight_shape) + (self.out_channels if self.bias else 0)

    @property
    def macs_per_position(self) -> int:
        """Multiply-adds for one output position, all output channels (bias not counted)."""
        return self.out_channels * (self.in_channels // self.groups) * math.prod(self.kernel_size)

    def output_size(self, input_size: IntOrTuple) -> Tuple[int, ...]:
        """Spatial output size for a spatial input size (an int means every axis); FoldError when it is empty.

        Example:
            >>> ConvSpec.make(2, 1, 1, 3, stride=2).output_size(9)
            (4, 4)
        """
        size = per_axis_ints(input_size, self.dims, "input_size", 1)
        out = conv_output_size(size, self.kernel_size, self.stride, self.padding, self.dilation)
        if any(o < 1 for o in out):
            raise fold_error(
                "input_size", size, f"gives an empty output {out} for kernel extent {self.effective_kernel} and padding {self.padding}"
            )
        return out

    def macs(self, input_size: IntOrTuple) -> int:
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


def _order_dims(order: Any) -> Optional[int]:
    """The dims an order implies by itself: None for an alias, the number of factor names otherwise."""
    if isinstance(order, str):
        if order.strip().lower() in ORDER_ALIASES:
            return None
        names = order.replace("(", " ").replace(")", " ").split()
    elif isinstance(order, Sequence):
        names = list(order)
    else:
        raise fold_error("order", order, f"must be one of {ORDER_ALIASES} or a sequence of einops axis names")
    return len(names) - 1 if 2 <= len(names) <= 4 else None


@dataclass(frozen=True)
class FoldSpec:
    """How channels are folded into space: a factor per spatial axis and a channel order.

    The dims rule: ``dims`` comes from the caller, from a per-axis ``r`` or from an order written as einops
    names, and all that are given must agree (FoldError otherwise); the spec is then ``bound``. One int ``r``
    with an alias order and no ``dims`` is *unbound*: it reads as 2-D, like ``torch.pixel_shuffle`` on a
    bare tensor, and :meth:`bind` (which :func:`~foldconv.fold.plan_fold` and every fold of a conv call)
    re-binds it to the conv's dims, so ``FoldSpec.make(2)`` folds a ``Conv1d`` by 2 and a ``Conv3d`` by
    ``2x2x2``. A bound spec of other dims is a FoldError naming ``r``.

    Example:
        >>> f = FoldSpec.make(16)
        >>> f.r, f.order, f.block, f.bound
        ((16, 16), ('c', 'rh', 'rw'), 256, False)
        >>> f.bind(1).r, FoldSpec.make("2x4", "dcr").order
        ((16,), ('rh', 'rw', 'c'))
    """

    r: Any
    order: Any = "crd"
    dims: Optional[int] = None
    bound: bool = field(default=False, compare=False)

    def __post_init__(self) -> None:
        r = parse_factors(self.r, "r")
        order = tuple(self.order) if isinstance(self.order, Sequence) and not isinstance(self.order, str) else self.order
        sources = []
        if self.dims is not None:
            sources.append(("dims", self.dims, require_dims(self.dims)))
        if isinstance(r, tuple):
            sources.append(("r", r, require_dims(len(r), "r")))
        order_dims = _order_dims(order)
        if order_dims is not None:
            sources.append(("order", order, order_dims))
        for name, value, n in sources[1:]:
            first, first_value, m = sources[0]
            if n != m:
                raise fold_error(name, value, f"implies {n} spatial dim(s) but {first}={first_value!r} implies {m}")
        dims = sources[0][2] if sources else 2
        object.__setattr__(self, "r", per_axis_ints(r, dims, "r", 1))
        object.__setattr__(self, "order", normalize_order(order, dims))
        object.__setattr__(self, "dims", dims)
        object.__setattr__(self, "bound", require_bool(self.bound, "bound") or bool(sources))

    @classmethod
    def make(cls, r: IntOrTuple, order: Order = "crd", dims: Optional[int] = None) -> FoldSpec:
        """Validate and normalise (the same as the constructor).

        Example:
            >>> FoldSpec.make(2, dims=3).r
            (2, 2, 2)
        """
        return cls(r, order, dims)

    @classmethod
    def coerce(cls, fold: Any, dims: int, order: Optional[Order] = None, *, param: str = "fold") -> FoldSpec:
        """A FoldSpec bound to ``dims`` from a FoldSpec, an int or per-axis factors (``order``: default ``"crd"``).

        An ``order`` given with a FoldSpec must be the FoldSpec's own (two different orders are a FoldError);
        ``param`` names the argument in the error for anything else.

        Example:
            >>> FoldSpec.coerce(2, 1).r, FoldSpec.coerce(FoldSpec.make(2, "dcr"), 3).order
            ((2,), ('rd', 'rh', 'rw', 'c'))
        """
        if isinstance(fold, FoldSpec):
            bound = fold.bind(dims)
            if order is not None and normalize_order(order, bound.dims) != bound.order:
                raise fold_error("order", order, f"contradicts the FoldSpec's order {bound.order_string!r}; give one of them")
            return bound
        if isinstance(fold, (bool, torch.Tensor)) or not isinstance(fold, (numbers.Integral, str, Sequence)):
            raise fold_error(param, fold, "must be a FoldSpec, an int r or per-axis factors")
        return cls(fold, "crd" if order is None else order, dims)

    def bind(self, dims: int) -> FoldSpec:
        """This fold for an operand with ``dims`` spatial dims (see the class docstring).

        Example:
            >>> FoldSpec.make((2, 2)).bind(1)
            Traceback (most recent call last):
            ...
            foldconv.errors.FoldError: r=(2, 2): has 2 factor(s) but the operand has 1 spatial dim(s)
        """
        dims = require_dims(dims)
        if not self.bound:
            return FoldSpec(self.r[0], self.alias, dims)
        if dims != self.dims:
            raise fold_error("r", self.r, f"has {self.dims} factor(s) but the operand has {dims} spatial dim(s)")
        return self

    @property
    def alias(self) -> Optional[str]:
        """The alias (``"crd"``, ``"dcr"``, ``"focus"``) this order is, or None."""
        return next((a for a in ORDER_ALIASES if normalize_order(a, self.dims) == self.order), None)

    @property
    def block(self) -> int:
        """Channels per folded channel, ``prod(r)``."""
        return math.prod(self.r)

    @property
    def order_string(self) -> str:
        """The order as einops names, e.g. ``"c rh rw"``."""
        return " ".join(self.order)

    def with_order(self, order: Order) -> FoldSpec:
        """The same factors with another channel order.

        Example:
            >>> FoldSpec.make(2).with_order("focus").order
            ('rw', 'rh', 'c')
        """
        if self.bound:
            return FoldSpec(self.r, order, self.dims)
        return FoldSpec(self.r[0], order)
