"""Space-to-depth followed by a stride-1 conv is a strided conv, and every strided conv is one.

Derivation (paper_notes/space_to_depth.md), per spatial axis, stride ``s``, dilated kernel extent
``Ke = d*(K-1)+1``, padding ``P``, input size ``N``, padded size ``M = N + 2P``:

* torch's strided conv has ``n_out = (M - Ke) // s + 1`` outputs; output ``o`` reads padded rows
  ``[o*s, o*s + Ke)``. Zero-padding the kernel at its end to ``s*q`` taps, ``q = ceil(Ke/s)``, adds only
  zero taps, so output ``o`` is also the conv over ``[o*s, o*s + s*q)`` -- a window of ``q`` whole blocks.
* A window of whole blocks with stride ``s`` is the fold theorem read backwards: on
  ``space_to_depth(x_padded, s, order)`` it is a stride-1 conv with kernel ``q`` and the weight
  ``space_to_depth(w_zero_padded, s, order)`` (same order on both).
* ``space_to_depth`` needs a length that is a multiple of ``s``. The windows read exactly
  ``L = s*(n_out - 1 + q)`` padded rows, so the padded input is cut or zero-extended at its end to ``L``:
  ``L - M`` lies in ``[-(s-1), s-1]``; rows cut are read by no window, rows added meet zero taps only.

Backwards, ``space_to_depth(s)`` then a conv with kernel ``K'``, stride ``S'``, padding ``P'`` is the strided
conv with kernel ``s*K'``, stride ``s*S'``, padding ``s*P'`` (:func:`spd_to_strided`); SPD-Conv is that with
``S' = 1``, and YOLOv5's ``Focus(k=3)`` is that with ``s = 2``, order ``"focus"``: one 6x6 conv, stride 2,
padding 2.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import CONV_TYPES, per_axis_ints, require_conv, require_input, require_numel, traced_input
from ..errors import fold_error
from ..fold import expand_dilation, expand_groups, fold_conv, groups_aligned
from ..layout import Order, layout_module, space_to_depth
from ..padding import require_padding_fits
from ..specs import ConvSpec, FoldSpec
from .flags import copy_requires_grad

__all__ = [
    "AxisAlignment",
    "SpaceToDepthConv",
    "spd_alignment",
    "strided_to_spd",
    "spd_to_strided",
    "focus_to_conv",
    "conv_to_focus",
]

_TORCH_PAD_MODE = {"zeros": "constant", "circular": "circular", "reflect": "reflect", "replicate": "replicate"}


@dataclass(frozen=True)
class AxisAlignment:
    """Which rows of one spatial axis a strided conv reads, and how space-to-depth must cut or extend them.

    ``size``: input rows ``N``; ``padded``: ``M = N + 2P``; ``outputs``: torch's output count;
    ``read``: padded rows some window reads, ``(outputs-1)*s + Ke``; ``length``: rows space-to-depth sees,
    ``L = s*(outputs - 1 + ceil(Ke/s))``; ``adjust = L - M``: zero rows appended at the end (> 0) or rows
    cut from the end (< 0); ``unread``: rows of the unpadded input that no window reads (they may be
    dropped freely, and ``space_to_depth`` of an input whose size is not a multiple of ``s`` needs them
    dropped or padded).
    """

    size: int
    padded: int
    outputs: int
    read: int
    length: int
    adjust: int
    unread: int


def spd_alignment(spec: ConvSpec, input_size: Sequence[int]) -> Tuple[AxisAlignment, ...]:
    """Per spatial axis, the rows a strided conv reads and the cut/extension space-to-depth needs.

    Example:
        >>> a, = spd_alignment(ConvSpec.make(1, 1, 1, 3, stride=2), (8,))
        >>> a.outputs, a.read, a.length, a.adjust, a.unread
        (3, 7, 8, 0, 1)
    """
    if not isinstance(spec, ConvSpec):
        raise fold_error("spec", type(spec).__name__, "must be a ConvSpec")
    size = per_axis_ints(input_size, spec.dims, "input_size", 1)
    outputs = spec.output_size(size)
    result = []
    for n, p, ke, s, o in zip(size, spec.padding, spec.effective_kernel, spec.stride, outputs):
        m = n + 2 * p
        read = (o - 1) * s + ke
        length = s * (o - 1 + math.ceil(ke / s))
        result.append(AxisAlignment(n, m, o, read, length, length - m, max(0, n - (read - p))))
    return tuple(result)


class SpaceToDepthConv(nn.Module):
    """``space_to_depth(s, order)`` then a stride-1 conv, with the cut/pad that makes it equal a strided conv.

    ``mode="explicit"``: pad ``x`` by the source padding (in its padding mode), cut or zero-extend the end
    to ``L`` (:func:`spd_alignment`), space-to-depth, conv with padding 0. ``mode="inner"`` (zero padding
    that is a multiple of ``s``): zero-extend ``x`` to a multiple of ``s``, space-to-depth, conv with padding
    ``P/s``, keep the first ``outputs`` positions (at most one trailing position is dropped, only when the
    extension created it). On inputs whose sizes make the cut/extension zero -- e.g. even sizes for Focus --
    the module is literally ``conv(space_to_depth(x))``.

    Example:
        >>> m = strided_to_spd(torch.nn.Conv2d(3, 8, 6, stride=2, padding=2), order="focus")
        >>> m.conv
        Conv2d(12, 8, kernel_size=(3, 3), stride=(1, 1), padding=(1, 1))
    """

    def __init__(self, conv: nn.Module, r: Tuple[int, ...], order: Order, *, source: ConvSpec, mode: str):
        super().__init__()
        if mode not in ("explicit", "inner"):
            raise fold_error("mode", mode, "must be 'explicit' or 'inner'")
        if not isinstance(source, ConvSpec):
            raise fold_error("source", type(source).__name__, "must be the ConvSpec of the strided conv")
        require_conv(conv, "conv")
        fold = FoldSpec.coerce(r, source.dims, order, param="r")
        self.conv = conv
        self.r, self.order, self.dims = fold.r, fold.order, fold.dims
        self.source = source
        self.mode = mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if traced_input(x):  # fx or TorchScript: every length as ops on the input's sizes
            return self._traced(x)
        dims = self.dims
        size = require_input(x, dims, channels=self.source.in_channels)
        axes = spd_alignment(self.source, size)
        if self.mode == "explicit":
            if any(self.source.padding):
                require_padding_fits(size, self.source.padding, self.source.padding_mode)
                pads = [p for p in reversed(self.source.padding) for _ in range(2)]
                x = F.pad(x, pads, mode=_TORCH_PAD_MODE[self.source.padding_mode])
            x = _fit_end(x, [a.length for a in axes])
            return self.conv(space_to_depth(x, self.r, self.order, dims=dims))
        x = _fit_end(x, [n + (-n) % s for n, s in zip(size, self.r)])
        y = self.conv(space_to_depth(x, self.r, self.order, dims=dims))
        return y[(Ellipsis,) + tuple(slice(0, a.outputs) for a in axes)]

    def _traced(self, x: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` with every length computed from the input's sizes as ops (under a TorchScript trace, as
        the ONNX exporter runs, the sizes are traced values): the exported model runs at every input size."""
        dims, source = self.dims, self.source
        if self.mode == "explicit" and any(source.padding):
            x = F.pad(x, [p for p in reversed(source.padding) for _ in range(2)], mode=_TORCH_PAD_MODE[source.padding_mode])
        lengths, outputs = [], []
        for a, (s, ke, p) in enumerate(zip(self.r, source.effective_kernel, source.padding)):
            n = x.shape[x.dim() - dims + a]
            if self.mode == "explicit":  # x is padded: the windows read its first s*(outputs - 1 + ceil(Ke/s)) rows
                outputs.append((n - ke) // s + 1)
                lengths.append(s * ((n - ke) // s + math.ceil(ke / s)))
            else:
                outputs.append((n + 2 * p - ke) // s + 1)
                lengths.append((n + s - 1) // s * s)
        # zero-extend every axis by s - 1 rows, then keep the first length rows of it
        x = F.pad(x, [g for s in reversed(self.r) for g in (0, s - 1)])
        for a, length in enumerate(lengths):
            x = x.narrow(x.dim() - dims + a, 0, length)
        y = self.conv(space_to_depth(x, self.r, self.order, dims=dims))
        if self.mode == "inner":
            for a, count in enumerate(outputs):
                y = y.narrow(y.dim() - dims + a, 0, count)
        return y

    def extra_repr(self) -> str:
        return f"r={self.r}, order={' '.join(self.order)!r}, mode={self.mode!r}, source={self.source.describe()!r}"


def _fit_end(x: torch.Tensor, lengths: Sequence[int]) -> torch.Tensor:
    """Cut or zero-extend the end of the last ``len(lengths)`` axes to the given lengths."""
    dims = len(lengths)
    sizes = x.shape[-dims:]
    x = x[(Ellipsis,) + tuple(slice(0, min(n, l)) for n, l in zip(sizes, lengths))]
    grow = [max(0, l - n) for n, l in zip(sizes, lengths)]
    if any(grow):
        x = F.pad(x, [g for g in reversed(grow) for g in (0, g)])
    return x


def _check_conv(conv: nn.Module, name: str = "conv") -> ConvSpec:
    require_conv(conv, name)
    return ConvSpec.from_module(conv)


def strided_to_spd(conv: nn.Module, order: Order = "crd", *, padding: str = "auto") -> SpaceToDepthConv:
    """The space-to-depth + stride-1 conv form of a strided conv (any kernel, padding, dilation, groups, mode).

    ``s`` is the conv's stride; the new conv has kernel ``ceil((d*(K-1)+1)/s)`` on ``C*prod(s)`` channels and
    the weight ``space_to_depth(zero-padded dense kernel, s, order)``. ``padding``: ``"inner"`` moves a zero
    padding that is a multiple of ``s`` into the new conv (``P/s``), ``"explicit"`` pads ``x`` first,
    ``"auto"`` picks ``"inner"`` when it can.

    Args:
        conv: an ``nn.Conv1d/2d/3d``; its stride is the space-to-depth factor.
        order: the space-to-depth channel order, an alias or einops axes (default ``"crd"``).
        padding: ``"auto"`` (default), ``"inner"`` (zero padding a multiple of the stride) or ``"explicit"``.

    Returns:
        A :class:`SpaceToDepthConv` equal to ``conv`` at every input size: ``conv`` (the stride-1 conv), ``r``,
        ``order``, ``mode`` (``"inner"`` or ``"explicit"``) and ``source`` (the strided conv's spec).

    Raises:
        FoldError: naming ``conv`` (not a conv), ``order``, or ``padding`` (unknown, or ``"inner"`` where the
        padding is not zero padding that is a multiple of the stride).

    Example:
        >>> conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
        >>> m = strided_to_spd(conv)
        >>> m.mode, m.conv.kernel_size, m.conv.in_channels
        ('explicit', (2, 2), 12)
        >>> x = torch.randn(1, 3, 7, 9, dtype=torch.float64)
        >>> torch.allclose(m.double()(x), conv.double()(x))
        True
    """
    spec = _check_conv(conv)
    if padding not in ("auto", "inner", "explicit"):
        raise fold_error("padding", padding, "must be 'auto', 'inner' or 'explicit'")
    s = spec.stride
    fold = FoldSpec.make(s, order, spec.dims)
    inner_ok = spec.padding_mode == "zeros" and all(p % r == 0 for p, r in zip(spec.padding, s))
    if padding == "inner" and not inner_ok:
        raise fold_error(
            "padding",
            padding,
            f"'inner' needs zero padding that is a multiple of the stride; got padding={spec.padding}, "
            f"stride={s}, padding_mode={spec.padding_mode!r}",
        )
    mode = "inner" if (padding == "inner" or (padding == "auto" and inner_ok)) else "explicit"
    q = tuple(math.ceil(k / r) for k, r in zip(spec.effective_kernel, s))
    blame = ("dilation", spec.dilation) if any(d > 1 for d in spec.dilation) else ("stride", spec.stride)
    require_numel((spec.out_channels, spec.in_channels * fold.block) + q, *blame, what="the space-to-depth conv's weight")
    w = expand_dilation(conv.weight.detach(), spec.dilation)
    grow = [r * k - e for r, k, e in zip(s, q, spec.effective_kernel)]
    # Extra taps go at the end of every axis: they meet rows past the last one each window really reads.
    w = F.pad(w, [g for g in reversed(grow) for g in (0, g)])
    aligned = groups_aligned(spec.in_channels * fold.block, spec.groups, fold)
    if not aligned:
        w = expand_groups(w, spec.groups)
    weight = space_to_depth(w, s, fold.order, dims=spec.dims)
    inner = ConvSpec.make(
        spec.dims,
        spec.in_channels * fold.block,
        spec.out_channels,
        q,
        padding=tuple(p // r for p, r in zip(spec.padding, s)) if mode == "inner" else 0,
        groups=spec.groups if aligned else 1,
        bias=spec.bias,
    )
    module = copy_requires_grad(inner.to_module(weight=weight, bias=None if conv.bias is None else conv.bias.detach()), conv)
    result = SpaceToDepthConv(module, fold.r, fold.order, source=spec, mode=mode)
    return result.train(conv.training)


def _split_spd(module: nn.Module, r: Union[int, Sequence[int], None], order: Optional[Order]) -> Tuple[nn.Module, object, Order]:
    if isinstance(module, nn.Sequential):
        layout = layout_module(module[0]) if len(module) == 2 else None
        if layout is None or layout.kind != "space_to_depth" or not isinstance(module[1], CONV_TYPES):
            raise fold_error(
                "module", type(module).__name__, "must be a conv, or nn.Sequential(space-to-depth, nn.ConvNd(...)) with "
                "foldconv's SpaceToDepth, nn.PixelUnshuffle or timm's SpaceToDepth first",
            )
        if r is not None or order is not None:
            raise fold_error("r", r, f"is read from the {type(module[0]).__name__} of the Sequential; leave r and order unset")
        return module[1], layout.r, layout.order
    if r is None:
        raise fold_error("r", r, "is needed when the module is a bare conv (the space-to-depth factor)")
    return module, r, "crd" if order is None else order


def spd_to_strided(module: nn.Module, r: Union[int, Sequence[int], None] = None, order: Optional[Order] = None) -> nn.Module:
    """The strided conv on ``x`` equal to ``conv(space_to_depth(x, r, order))`` (SPD-Conv, Focus, ...).

    ``module`` is the conv that follows the space-to-depth (then give ``r`` and ``order``), or an
    ``nn.Sequential(space_to_depth, conv)`` whose first module is foldconv's ``SpaceToDepth(r, order)``,
    ``nn.PixelUnshuffle(r)`` (order ``"crd"``) or timm's ``SpaceToDepth`` (order ``"dcr"``), read by
    :func:`foldconv.layout.layout_module`. Kernel ``K'``, stride ``S'`` and padding ``P'``
    become ``r*K'``, ``r*S'`` and ``r*P'`` (this is :func:`foldconv.fold_conv`; the conv's input is the
    folded map here, the strided conv's input is ``x``). ``x``'s sizes must be multiples of ``r``.

    Args:
        module: a conv that reads the space-to-depth map, or ``nn.Sequential(space_to_depth, conv)``.
        r: the space-to-depth factor, an int or one per axis; needed for a bare conv, unset for a Sequential.
        order: the space-to-depth channel order for a bare conv (default ``"crd"``); unset for a Sequential.

    Returns:
        A new ``nn.ConvNd`` on ``x`` with kernel ``r*K'``, stride ``r*S'`` and padding ``r*P'``.

    Raises:
        FoldError: naming ``module`` (neither form), ``r`` (missing for a bare conv, given with a Sequential),
        or what :func:`foldconv.fold_conv` refuses.

    Example:
        >>> from foldconv import SpaceToDepth
        >>> spd = torch.nn.Sequential(SpaceToDepth(2, "focus"), torch.nn.Conv2d(12, 8, 3, padding=1))
        >>> big = spd_to_strided(spd)
        >>> big.kernel_size, big.stride, big.padding
        ((6, 6), (2, 2), (2, 2))
        >>> spd_to_strided(torch.nn.Sequential(torch.nn.PixelUnshuffle(2), spd[1])).kernel_size  # order "crd"
        (6, 6)
    """
    conv, r, order = _split_spd(module, r, order)
    _check_conv(conv, "module")
    return fold_conv(conv, r, order)


def focus_to_conv(conv: nn.Module) -> nn.Module:
    """YOLOv5 ``Focus``'s conv (after the ``"focus"``-order space-to-depth by 2) as one strided conv.

    ``Focus(k=3)`` (3x3 conv, padding 1) becomes a 6x6 conv with stride 2 and padding 2.

    Args:
        conv: the conv that reads the Focus map, an ``nn.Conv2d`` (``in_channels`` a multiple of 4).

    Returns:
        A new stride-2 conv on the image, with kernel and padding twice those of ``conv``.

    Raises:
        FoldError: naming ``module`` (not a conv) or ``in_channels`` (not a multiple of ``2**dims``), as
        :func:`spd_to_strided` does.

    Example:
        >>> big = focus_to_conv(torch.nn.Conv2d(12, 32, 3, padding=1, bias=False))
        >>> big.kernel_size, big.stride, big.padding, big.in_channels
        ((6, 6), (2, 2), (2, 2), 3)
    """
    return spd_to_strided(conv, 2, "focus")


def conv_to_focus(conv: nn.Module) -> SpaceToDepthConv:
    """A stride-2 2-D conv as ``Focus``: ``"focus"``-order space-to-depth by 2, then a stride-1 conv.

    Args:
        conv: an ``nn.Conv2d`` with stride 2.

    Returns:
        A :class:`SpaceToDepthConv` in ``"focus"`` order (``mode``: ``"inner"`` when the padding allows it).

    Raises:
        FoldError: naming ``conv`` (not a conv) or ``conv.stride`` (not ``(2, 2)`` on a 2-D conv).

    Example:
        >>> m = conv_to_focus(torch.nn.Conv2d(3, 32, 6, stride=2, padding=2))
        >>> m.conv.kernel_size, m.conv.padding, m.mode
        ((3, 3), (1, 1), 'inner')
    """
    spec = _check_conv(conv)
    if spec.dims != 2 or spec.stride != (2, 2):
        raise fold_error("conv.stride", spec.stride, "must be (2, 2) on a 2-D conv for the Focus form")
    return strided_to_spd(conv, "focus")
