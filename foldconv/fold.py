"""Fold a convolution over ``G*prod(r)`` channels into a big strided convolution over ``G`` channels, and back.

The fold theorem (paper_notes/fold.md): with ``xf = depth_to_space(x, r, order)`` and
``wf = depth_to_space(w, r, order)`` (the same order on both), ::

    conv(x, w, stride=S, padding=P) == conv(xf, wf, stride=r*S, padding=r*P)

exactly, for any number of output channels, with the bias unchanged. Groups survive as
``gcd(G, groups)`` folded groups when the order is channel-major (:func:`folded_groups`); dilation survives
only as a zero-filled dense kernel; padding modes "zeros" and "circular" commute with the fold, "reflect" and
"replicate" do not. :func:`plan_fold` answers every question about the folded conv without a tensor;
:func:`fold_conv` builds it (a plain ``nn.ConvNd``) and refuses weights above ``MAX_KERNEL_ELEMENTS``.
"""
from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Iterator, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from ._validate import FACTOR_NAMES, per_axis_ints, require_int, require_numel, resolve_dims
from .errors import fold_error
from .layout import IntOrTuple, Order, depth_to_space, space_to_depth
from .specs import ConvSpec, FoldSpec

__all__ = [
    "forget_plans",
    "FoldPlan",
    "FoldedWeight",
    "plan_fold",
    "plan_unfold",
    "folded_groups",
    "require_foldable",
    "groups_aligned",
    "expand_groups",
    "expand_dilation",
    "fold_weight",
    "folded_weight_slabs",
    "unfold_weight",
    "fold_conv",
    "unfold_conv",
    "structural_zero_mask",
    "mask_structural_zeros",
    "pad_to_multiple",
]

FoldLike = Union[FoldSpec, IntOrTuple, str]

_BAD_MODES = {
    "reflect": "reflection reverses the sub-pixel order within a block, so the folded map's mirror is not "
    "the fold of the original's mirror",
    "replicate": "replication copies the edge row of the folded map, which holds other channels' pixels, "
    "instead of each channel's own edge pixel",
}


@dataclass(frozen=True)
class FoldPlan:
    """The outcome of folding (or unfolding) a spec: the new spec and what had to change to get it.

    ``groups_expanded``: the new conv has fewer groups than the source, so its weight is the source's
    block-diagonal expansion (structural zeros between the merged groups); ``dilation_expanded``: the dilated
    kernel became a zero-filled dense kernel. ``kernel_density`` is the fraction of the new weight's entries
    that are not structural zeros (:func:`structural_zero_mask` gives them).
    """

    source: ConvSpec
    fold: FoldSpec
    result: ConvSpec
    groups_expanded: bool = False
    dilation_expanded: bool = False
    kernel_density: float = 1.0
    notes: Tuple[str, ...] = field(default_factory=tuple)
    direction: str = "fold"

    @property
    def dense_groups(self) -> bool:
        """The grouped source became a dense (``groups=1``) conv."""
        return self.result.groups == 1 < self.source.groups


@dataclass(frozen=True)
class FoldedWeight:
    """A folded (or unfolded) weight and the ``groups`` of the conv that uses it."""

    weight: torch.Tensor
    groups: int


def _channel_major(fold: FoldSpec) -> bool:
    """Every factor with r > 1 comes after ``c``: a folded channel's sources are one contiguous block."""
    factor = dict(zip(FACTOR_NAMES[fold.dims], fold.r))
    return all(factor[name] == 1 for name in fold.order[: fold.order.index("c")])


def require_foldable(in_channels: int, fold: FoldSpec, *, param: str = "in_channels") -> None:
    """FoldError unless ``in_channels`` fills whole fold blocks (``prod(r)`` channels each): the one wording of a
    fold factor that does not divide the channels, wherever it is met (predict_fold, the fold app, the sweep).

    Example:
        >>> require_foldable(6, FoldSpec.make(2))
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: in_channels=6: must be a multiple of prod(r)=4 (r=(2, 2)) to fold
    """
    if in_channels % fold.block:
        raise fold_error(param, in_channels, f"must be a multiple of prod(r)={fold.block} (r={fold.r}) to fold")


def folded_groups(in_channels: int, groups: int, fold: FoldLike) -> int:
    """The ``groups`` of the folded conv: ``gcd(in_channels / prod(r), groups)`` for a channel-major order, else 1.

    Closed form (no tensor, O(dims)). In a channel-major order folded channel ``g`` gathers the contiguous
    original channels ``[g*R, (g+1)*R)``; folded groups must be contiguous runs of folded channels whose
    sources are unions of whole original groups, so their size is a multiple of both the group size ``C/g``
    and ``R``, and the most groups is ``C / lcm(R, C/g) = gcd(C/R, g)``. A depthwise ``Conv2d(32, 32, 3,
    groups=32)`` folded by 2 keeps 8 groups. Any factor ``r > 1`` before ``c`` scatters a folded channel's
    sources over the whole channel axis: groups=1 (dense, block-diagonal weight). An int ``r`` is 2-D.

    Example:
        >>> folded_groups(32, 32, 2), folded_groups(8, 2, 2), folded_groups(8, 2, FoldSpec.make(2, "dcr"))
        (8, 2, 1)
    """
    fold = fold if isinstance(fold, FoldSpec) else FoldSpec.coerce(fold, resolve_dims(fold, None, "r"))
    in_channels = require_int(in_channels, "in_channels", 1)
    groups = require_int(groups, "groups", 1)
    require_foldable(in_channels, fold)
    if in_channels % groups:
        raise fold_error("groups", groups, f"must divide in_channels={in_channels}")
    return math.gcd(in_channels // fold.block, groups) if _channel_major(fold) else 1


def groups_aligned(in_channels: int, groups: int, fold: FoldLike) -> bool:
    """True when the folded conv keeps all ``groups``: ``(C/R) % groups == 0`` and a channel-major order.

    Example:
        >>> groups_aligned(8, 2, FoldSpec.make(2, "crd")), groups_aligned(8, 2, FoldSpec.make(2, "dcr"))
        (True, False)
    """
    return folded_groups(in_channels, groups, fold) == groups


def _check_mode(spec: ConvSpec, fold: FoldSpec) -> None:
    # Reflect/replicate only matter where there is padding on an axis that is actually folded (r > 1).
    if spec.padding_mode in _BAD_MODES and any(p > 0 and r > 1 for p, r in zip(spec.padding, fold.r)):
        raise fold_error(
            "padding_mode", spec.padding_mode, "does not commute with folding when padding > 0 on a folded axis: " + _BAD_MODES[spec.padding_mode]
        )


def _spec_and_fold(spec: Any, fold: FoldLike, order: Optional[Order] = None) -> Tuple[ConvSpec, FoldSpec]:
    if not isinstance(spec, ConvSpec):
        raise fold_error("spec", type(spec).__name__, "must be a ConvSpec (ConvSpec.make or ConvSpec.from_module)")
    return spec, FoldSpec.coerce(fold, spec.dims, order)


def plan_fold(spec: ConvSpec, fold: FoldLike) -> FoldPlan:
    """Spec of the folded conv, or a FoldError saying why there is none. Arithmetic only (no tensor).

    ``fold`` is a FoldSpec or an int / per-axis ``r`` (order ``"crd"``); an int means every axis of ``spec``.

    Args:
        spec: the conv to fold, a :class:`ConvSpec` (``ConvSpec.make`` or ``ConvSpec.from_module``).
        fold: a FoldSpec, an int (every axis of ``spec``), per-axis factors or ``"2x4"`` (order ``"crd"``).

    Returns:
        A :class:`FoldPlan`: ``result`` (the folded ConvSpec), ``groups_expanded``, ``dilation_expanded``,
        ``kernel_density`` and ``notes``.

    Raises:
        FoldError: naming ``spec``, ``fold``/``r``, ``in_channels`` (not a multiple of ``prod(r)``) or
        ``padding_mode`` (reflect/replicate with padding on a folded axis).

    Example:
        >>> p = plan_fold(ConvSpec.make(2, 256, 64, 3, padding=1), FoldSpec.make(16))
        >>> p.result.describe()
        'Conv2d(1->64, k=(48, 48), s=(16, 16), p=(16, 16))'
        >>> plan_fold(ConvSpec.make(2, 32, 32, 3, padding=1, groups=32), 2).result.groups
        8
    """
    return _plan_fold(*_spec_and_fold(spec, fold))


def forget_plans() -> None:
    """Forget the remembered fold plans (:func:`plan_fold` remembers the last 4,096): a cold start, as a
    benchmark round should time.

    Example:
        >>> forget_plans()
    """
    _plan_fold.cache_clear()


@functools.lru_cache(maxsize=4096)
def _plan_fold(spec: ConvSpec, fold: FoldSpec) -> FoldPlan:
    """:func:`plan_fold` of validated specs, remembered: specs and plans are frozen values, and a checker or a
    sweep plans the same conv and fold again and again (a FoldError is raised again, not remembered)."""
    _check_mode(spec, fold)
    groups = folded_groups(spec.in_channels, spec.groups, fold)
    notes = []
    if groups != spec.groups:
        how = "dense (groups=1)" if groups == 1 else f"groups={groups}"
        notes.append(
            f"groups={spec.groups} do not all survive the fold in order {fold.order_string!r}: the folded conv is "
            f"{how} with a block-diagonal weight ({spec.groups // groups}x the parameters)"
        )
    dilated = any(d != 1 for d in spec.dilation)
    kernel = spec.effective_kernel
    if dilated:
        notes.append(
            f"dilation={spec.dilation} has no folded equivalent; the folded kernel is the zero-filled dense "
            f"kernel of size r*(d*(k-1)+1)={tuple(r * k for r, k in zip(fold.r, kernel))}"
        )
    result = ConvSpec.make(
        spec.dims,
        spec.in_channels // fold.block,
        spec.out_channels,
        tuple(r * k for r, k in zip(fold.r, kernel)),
        stride=tuple(r * s for r, s in zip(fold.r, spec.stride)),
        padding=tuple(r * p for r, p in zip(fold.r, spec.padding)),
        groups=groups,
        bias=spec.bias,
        padding_mode=spec.padding_mode,
    )
    density = groups / spec.groups * math.prod(spec.kernel_size) / math.prod(kernel)
    return FoldPlan(spec, fold, result, groups != spec.groups, dilated, density, tuple(notes), "fold")


def plan_unfold(spec: ConvSpec, fold: FoldLike) -> FoldPlan:
    """Spec of the conv over ``G*prod(r)`` channels equal to a big conv over ``G`` channels.

    Example:
        >>> plan_unfold(ConvSpec.make(2, 1, 64, 48, stride=16, padding=16), FoldSpec.make(16)).result.describe()
        'Conv2d(256->64, k=(3, 3), s=(1, 1), p=(1, 1))'
    """
    spec, fold = _spec_and_fold(spec, fold)
    _check_mode(spec, fold)
    if any(d != 1 for d in spec.dilation):
        raise fold_error("dilation", spec.dilation, "must be 1 to unfold (a dilated big kernel mixes fold blocks)")
    for name in ("kernel_size", "stride", "padding"):
        values = getattr(spec, name)
        if any(v % r for v, r in zip(values, fold.r)):
            raise fold_error(name, values, f"must be a multiple of r={fold.r} on every axis to unfold")
    keep = spec.groups == 1 or _channel_major(fold)
    notes = () if keep else (
        f"groups={spec.groups} are not aligned with fold blocks in order {fold.order_string!r}; the unfolded "
        "conv is dense (groups=1) with a block-diagonal weight",
    )
    result = ConvSpec.make(
        spec.dims,
        spec.in_channels * fold.block,
        spec.out_channels,
        tuple(k // r for k, r in zip(spec.kernel_size, fold.r)),
        stride=tuple(s // r for s, r in zip(spec.stride, fold.r)),
        padding=tuple(p // r for p, r in zip(spec.padding, fold.r)),
        groups=spec.groups if keep else 1,
        bias=spec.bias,
        padding_mode=spec.padding_mode,
    )
    return FoldPlan(spec, fold, result, not keep, False, 1.0 if keep else 1.0 / spec.groups, notes, "unfold")


def _check_weight(weight: Any, param: str = "weight") -> int:
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (3, 4, 5):
        raise fold_error(param, getattr(weight, "shape", weight), "must be a conv weight tensor (O, C/groups, *K) with 1-3 spatial dims")
    return weight.dim() - 2


def _merge_groups(weight: torch.Tensor, groups: int, new_groups: int) -> torch.Tensor:
    """The weight of the same conv written with ``new_groups`` (a divisor of ``groups``): block-diagonal blocks."""
    m = groups // new_groups
    if m == 1:
        return weight
    out, width = weight.shape[0] // groups, weight.shape[1]
    rest = tuple(weight.shape[2:])
    blocks = weight.reshape((new_groups, m, out, width) + rest)
    # Within merged group j, block (g, h) is blocks[j, g] when g == h and zero elsewhere: written through the
    # (g, h) diagonal of a zero tensor (a copy, no multiplication by an identity).
    merged = weight.new_zeros((new_groups, m, out, m, width) + rest)
    merged.diagonal(dim1=1, dim2=3).copy_(blocks.movedim(1, -1))
    return merged.reshape((weight.shape[0], m * width) + rest)


def expand_groups(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Dense block-diagonal weight ``(O, C, *K)`` of a grouped weight ``(O, C/groups, *K)``.

    Example:
        >>> expand_groups(torch.ones(4, 1, 1, 1), 4)[:, :, 0, 0].tolist()[1]
        [0.0, 1.0, 0.0, 0.0]
    """
    _check_weight(weight)
    groups = require_int(groups, "groups", 1)
    out_channels = weight.shape[0]
    if out_channels % groups:
        raise fold_error("groups", groups, f"must divide the weight's out_channels={out_channels}")
    require_numel((out_channels, weight.shape[1] * groups) + tuple(weight.shape[2:]), "groups", groups)
    return _merge_groups(weight, groups, 1)


def expand_dilation(weight: torch.Tensor, dilation: IntOrTuple) -> torch.Tensor:
    """The zero-filled dense kernel of extent ``d*(k-1)+1`` that a dilated kernel stands for.

    Example:
        >>> expand_dilation(torch.ones(1, 1, 2), 3).tolist()
        [[[1.0, 0.0, 0.0, 1.0]]]
    """
    dims = _check_weight(weight)
    dilation = per_axis_ints(dilation, dims, "dilation", 1)
    if all(d == 1 for d in dilation):
        return weight
    extent = tuple(d * (k - 1) + 1 for d, k in zip(dilation, weight.shape[2:]))
    require_numel(tuple(weight.shape[:2]) + extent, "dilation", dilation)
    dense = weight.new_zeros(tuple(weight.shape[:2]) + extent)
    dense[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dilation)] = weight
    return dense


def _blame(plan: FoldPlan) -> Tuple[str, Any]:
    """The parameter that makes a plan's weight large: the bigger of the dilation and group expansions."""
    spread = math.prod(plan.source.effective_kernel) // math.prod(plan.source.kernel_size)
    merged = plan.source.groups // plan.result.groups if plan.direction == "fold" else 1
    if spread == merged == 1:
        return "weight", plan.source.weight_shape
    return ("dilation", plan.source.dilation) if spread >= merged else ("groups", plan.source.groups)


def _fold_tensor(weight: torch.Tensor, plan: FoldPlan) -> torch.Tensor:
    """The new weight of a plan, checked against MAX_KERNEL_ELEMENTS before anything is allocated."""
    source, fold, result = plan.source, plan.fold, plan.result
    require_numel(result.weight_shape, *_blame(plan))
    if plan.direction == "fold" and math.prod(result.weight_shape) > CHUNKED_FOLD_ELEMENTS:
        return _fold_in_slabs(weight, plan)
    if plan.direction == "fold":
        w = _merge_groups(expand_dilation(weight, source.dilation), source.groups, result.groups)
        w = depth_to_space(w, fold.r, fold.order, dims=source.dims)
    else:
        w = _merge_groups(weight, source.groups, result.groups)
        w = space_to_depth(w, fold.r, fold.order, dims=source.dims)
    # Contiguous on purpose: einops may return a strided view, and torch 2.14's CPU bfloat16 conv corrupts
    # the heap on some non-contiguous weights (see paper_notes/where_it_fails.md, "environment").
    return w.contiguous()


#: Folded weights above this many elements are built a slab of output channels at a time, straight into the
#: result: the dilation's zero-filled kernel, the merged groups' block-diagonal weight and ``depth_to_space``'s
#: copy then cost an eighth of the result each, not a whole result each (a depthwise 3-D conv folded by 4
#: in a non-channel-major order: 410 MB of folded weight, 825 MB more at its peak in one piece).
CHUNKED_FOLD_ELEMENTS = 1 << 22
_SLABS = 8


def _fold_in_slabs(weight: torch.Tensor, plan: FoldPlan) -> torch.Tensor:
    """:func:`_fold_tensor` of a fold, in slabs of output channels (rows are independent in every step)."""
    out = weight.new_empty(plan.result.weight_shape)
    for first, last, slab in _slabs(weight, plan, max(1, -(-weight.shape[0] // _SLABS))):
        out[first:last] = slab
    return out


def _slabs(weight: torch.Tensor, plan: FoldPlan, step: int) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """``(first, last, rows)``: the folded weight's output channels ``first:last``, ``step`` at a time."""
    source, fold, result = plan.source, plan.fold, plan.result
    groups, merged = source.groups, source.groups // result.groups
    rows, width = weight.shape[0] // groups, weight.shape[1]  # output channels and input channels per source group
    taps = (slice(None), slice(None)) + tuple(slice(None, None, d) for d in source.dilation)
    for first in range(0, weight.shape[0], step):
        last = min(weight.shape[0], first + step)
        part = weight.new_zeros((last - first, merged * width) + tuple(source.effective_kernel))
        for g in range(first // rows, -(-last // rows)):  # the source groups whose rows meet the slab
            a, b = max(first, g * rows), min(last, (g + 1) * rows)
            column = (g % merged) * width  # the group's input channels within its merged group
            part[a - first:b - first, column:column + width][taps] = weight[a:b]
        yield first, last, depth_to_space(part, fold.r, fold.order, dims=source.dims).contiguous()


def folded_weight_slabs(
    weight: torch.Tensor, r: FoldLike, order: Optional[Order] = None, *, groups: int = 1, dilation: IntOrTuple = 1, rows: int = 1,
) -> Iterator[Tuple[int, int, torch.Tensor]]:
    """:func:`fold_weight`'s weight a slab of ``rows`` output channels at a time, as ``(first, last, slab)``:
    rows ``first:last`` of the folded weight. A conv whose folded weight is too large to hold at once runs
    slab by slab (output channels are independent; for a folded conv with ``groups' > 1``, ``rows`` should be a
    multiple of its output channels per group, so that a slab stays in one group).

    Example:
        >>> w = torch.randn(4, 8, 3, 3)
        >>> whole = fold_weight(w, 2).weight
        >>> [(a, b) for a, b, _ in folded_weight_slabs(w, 2, rows=3)]
        [(0, 3), (3, 4)]
        >>> torch.equal(torch.cat([s for _, _, s in folded_weight_slabs(w, 2, rows=3)]), whole)
        True
    """
    spec = _weight_spec(weight, groups, dilation=dilation)
    plan = plan_fold(spec, FoldSpec.coerce(r, spec.dims, order, param="r"))
    rows = require_int(rows, "rows", 1)
    require_numel((rows,) + tuple(plan.result.weight_shape[1:]), *_blame(plan))
    return _slabs(weight, plan, rows)


def _weight_spec(weight: Any, groups: Any, **fields: Any) -> ConvSpec:
    dims = _check_weight(weight)
    groups = require_int(groups, "groups", 1)  # before in_channels, which is computed from it
    return ConvSpec.make(dims, weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), groups=groups, bias=False, **fields)


def fold_weight(
    weight: torch.Tensor, r: FoldLike, order: Optional[Order] = None, *, groups: int = 1, dilation: IntOrTuple = 1
) -> FoldedWeight:
    """Fold a conv weight ``(O, C/groups, *K)``; returns the weight and the folded conv's ``groups``.

    Args:
        weight: a conv weight ``(O, C/groups, *K)`` with 1 to 3 spatial dims.
        r: the fold factor: an int (every spatial axis of the conv), per-axis factors, ``"2x4"`` or a FoldSpec.
        order: the channel order (alias or einops axes); default ``"crd"``, or the FoldSpec's own.
        groups: the ``groups`` of the conv that owns ``weight``, a positive int (default 1).
        dilation: that conv's dilation, an int >= 1 or one per axis (default 1); expanded to a dense kernel.

    Returns:
        A :class:`~foldconv.fold.FoldedWeight`: ``weight``, of shape ``(O, C / prod(r) / groups', *(r * K))``
        (``K`` the dilated extent), and ``groups``, the folded conv's ``groups'``.

    Raises:
        FoldError: naming ``weight``, ``r``, ``order``, ``groups``, ``dilation`` or ``in_channels``, or the
        parameter that makes the folded weight exceed ``MAX_KERNEL_ELEMENTS``.

    Example:
        >>> w = torch.randn(64, 256, 3, 3)
        >>> fw = fold_weight(w, 16)
        >>> tuple(fw.weight.shape), fw.groups
        ((64, 1, 48, 48), 1)
    """
    spec = _weight_spec(weight, groups, dilation=dilation)
    plan = plan_fold(spec, FoldSpec.coerce(r, spec.dims, order, param="r"))
    return FoldedWeight(_own(_fold_tensor(weight, plan), weight), plan.result.groups)


def unfold_weight(weight: torch.Tensor, r: FoldLike, order: Optional[Order] = None, *, groups: int = 1) -> FoldedWeight:
    """Inverse of :func:`fold_weight` for kernels that are multiples of ``r``.

    Args:
        weight: a big conv weight ``(O, C/groups, *K)``, each ``K`` a multiple of its factor.
        r: the fold factor: an int (every spatial axis of the conv), per-axis factors, ``"2x4"`` or a FoldSpec.
        order: the channel order (alias or einops axes); default ``"crd"``, or the FoldSpec's own.
        groups: the ``groups`` of the conv that owns ``weight``, a positive int (default 1).

    Returns:
        A :class:`~foldconv.fold.FoldedWeight`: ``weight``, of shape ``(O, C * prod(r) / groups', *(K / r))``,
        and ``groups``, the unfolded conv's ``groups'``.

    Raises:
        FoldError: naming ``weight``, ``r``, ``order``, ``groups`` or ``kernel_size`` (not a multiple of ``r``).

    Example:
        >>> w = torch.randn(8, 16, 3, 3)
        >>> torch.equal(unfold_weight(fold_weight(w, 2).weight, 2).weight, w)
        True
    """
    dims = _check_weight(weight)
    fold = FoldSpec.coerce(r, dims, order, param="r")
    plan = plan_unfold(_weight_spec(weight, groups, stride=fold.r), fold)
    return FoldedWeight(_own(_fold_tensor(weight, plan), weight), plan.result.groups)


def _own(folded: torch.Tensor, source: torch.Tensor) -> torch.Tensor:
    """``folded`` as a tensor of its own: a fold that is a pure re-indexing (a 1x1 kernel, say) can come back as a
    view of ``source``, and a caller editing the folded weight would edit the original conv's."""
    if folded.device.type != "meta" and folded.untyped_storage().data_ptr() == source.untyped_storage().data_ptr():
        return folded.clone()
    return folded


def _build(plan: FoldPlan, conv: nn.Module) -> nn.Module:
    bias = None if conv.bias is None else conv.bias.detach()
    module = plan.result.to_module(weight=_own(_fold_tensor(conv.weight.detach(), plan), conv.weight), bias=bias, copy=False)
    module.train(conv.training)
    module.weight.requires_grad_(conv.weight.requires_grad)
    if conv.bias is not None:
        module.bias.requires_grad_(conv.bias.requires_grad)
    return module


def fold_conv(conv: nn.Module, r: FoldLike, order: Optional[Order] = None) -> nn.Module:
    """The conv on ``depth_to_space(x, r, order)`` that computes exactly ``conv(x)`` (a plain ``nn.ConvNd``).

    ``r``: an int (every spatial axis of ``conv``), per-axis factors or a FoldSpec; ``order`` defaults to
    ``"crd"`` (or the FoldSpec's). :func:`plan_fold` says what changed: kernel ``r*K``, stride ``r*S``,
    padding ``r*P``, and whether groups or dilation had to be expanded. Training mode and ``requires_grad``
    of weight and bias are copied; the structural zeros of an expanded weight are trainable unless masked
    (:func:`mask_structural_zeros`).

    Args:
        conv: an ``nn.Conv1d/2d/3d`` (``padding="same"`` only when symmetric).
        r: the fold factor: an int (every spatial axis of the conv), per-axis factors, ``"2x4"`` or a FoldSpec.
        order: the channel order (alias or einops axes); default ``"crd"``, or the FoldSpec's own.

    Returns:
        A new ``nn.ConvNd`` over ``in_channels // prod(r)`` channels; ``conv`` is left as it was.

    Raises:
        FoldError: naming ``conv``, ``r``, ``order``, ``in_channels``, ``padding``/``padding_mode``, or the
        parameter that makes the folded weight exceed ``MAX_KERNEL_ELEMENTS``.

    Example:
        >>> from foldconv import depth_to_space
        >>> conv = torch.nn.Conv2d(256, 8, 3, padding=1).double()
        >>> big = fold_conv(conv, 16)
        >>> big.kernel_size, big.stride
        ((48, 48), (16, 16))
        >>> x = torch.randn(1, 256, 5, 5, dtype=torch.float64)
        >>> torch.allclose(conv(x), big(depth_to_space(x, 16)))
        True
    """
    spec = ConvSpec.from_module(conv)
    return _build(plan_fold(spec, FoldSpec.coerce(r, spec.dims, order, param="r")), conv)


def unfold_conv(conv: nn.Module, r: FoldLike, order: Optional[Order] = None) -> nn.Module:
    """The conv on ``x`` that computes exactly ``conv(depth_to_space(x, r, order))``.

    Needs kernel, stride and padding that are multiples of ``r`` and no dilation; the exact inverse of
    :func:`fold_conv` for undilated convs whose groups all survive the fold.

    Args:
        conv: an ``nn.Conv1d/2d/3d`` acting on the folded map.
        r: the fold factor: an int (every spatial axis of the conv), per-axis factors, ``"2x4"`` or a FoldSpec.
        order: the channel order (alias or einops axes); default ``"crd"``, or the FoldSpec's own.

    Returns:
        A new ``nn.ConvNd`` over ``in_channels * prod(r)`` channels; ``conv`` is left as it was.

    Raises:
        FoldError: naming ``conv``, ``r``, ``order``, ``dilation`` (not 1), or ``kernel_size``/``stride``/
        ``padding`` (not a multiple of ``r``).

    Example:
        >>> conv = torch.nn.Conv2d(256, 8, 3, padding=1)
        >>> back = unfold_conv(fold_conv(conv, 16), 16)
        >>> torch.equal(back.weight, conv.weight), back.kernel_size
        (True, (3, 3))
    """
    spec = ConvSpec.from_module(conv)
    return _build(plan_unfold(spec, FoldSpec.coerce(r, spec.dims, order, param="r")), conv)


def structural_zero_mask(plan: FoldPlan) -> torch.Tensor:
    """Boolean mask (``plan.result.weight_shape``) of the entries that are zero by construction.

    They come from expanded dilation (the gaps between taps) and merged groups (off-diagonal blocks). They
    are ordinary parameters of the new conv: training it updates them and leaves the source's function class.

    Example:
        >>> plan = plan_fold(ConvSpec.make(1, 2, 2, 2, dilation=2, groups=2), 2)
        >>> structural_zero_mask(plan)[:, 0].int().tolist()
        [[0, 1, 1, 1, 0, 1], [1, 0, 1, 1, 1, 0]]
    """
    if not isinstance(plan, FoldPlan):
        raise fold_error("plan", type(plan).__name__, "must be a FoldPlan (plan_fold / plan_unfold)")
    ones = torch.ones(plan.source.weight_shape, dtype=torch.float32)
    return _fold_tensor(ones, plan) == 0


def mask_structural_zeros(module: nn.Module, plan: FoldPlan) -> RemovableHandle:
    """Keep the structural zeros of a folded conv at zero during training: a hook zeroes their gradient.

    Any optimiser whose step is zero for a zero gradient (SGD with momentum and weight decay, Adam, AdamW)
    then leaves them at zero, so the trained folded conv stays the fold of a conv like ``plan.source``.
    Returns the hook's handle (``.remove()`` to undo).

    Example:
        >>> conv = torch.nn.Conv2d(4, 4, 3, groups=4)
        >>> plan = plan_fold(ConvSpec.from_module(conv), FoldSpec.make(2, "dcr"))
        >>> big = fold_conv(conv, plan.fold)
        >>> handle = mask_structural_zeros(big, plan)
        >>> big(torch.randn(1, 1, 8, 8)).sum().backward()
        >>> bool(big.weight.grad[structural_zero_mask(plan)].eq(0).all())
        True
    """
    mask = structural_zero_mask(plan)
    weight = getattr(module, "weight", None)
    if not isinstance(weight, torch.Tensor) or tuple(weight.shape) != tuple(mask.shape):
        raise fold_error(
            "module", type(module).__name__, f"must have a weight of shape {tuple(mask.shape)}, the plan's result"
        )
    mask = mask.to(weight.device)
    if bool(weight.detach()[mask].ne(0).any()):
        raise fold_error("module", type(module).__name__, "has non-zero weights at the plan's structural zeros")
    return weight.register_hook(lambda grad: grad.masked_fill(mask, 0))


def pad_to_multiple(x: torch.Tensor, r: IntOrTuple, *, dims: Optional[int] = None, value: float = 0.0) -> torch.Tensor:
    """Pad the end of every spatial axis up to a multiple of its factor (so space_to_depth applies).

    The dims rule: ``dims`` or ``len(r)``; an int ``r`` alone means 2-D on an ``(N, C, H, W)`` tensor. A 3-D
    tensor with an int ``r`` and no ``dims`` is refused: ``(N, C, W)`` and ``(C, H, W)`` cannot be told apart,
    and guessing wrong pads the channel axis.

    Example:
        >>> pad_to_multiple(torch.ones(1, 1, 5, 6), 4).shape
        torch.Size([1, 1, 8, 8])
        >>> pad_to_multiple(torch.ones(1, 1, 5), 4, dims=1).shape
        torch.Size([1, 1, 8])
    """
    n = resolve_dims(r, dims, "r")
    rs = per_axis_ints(r, n, "r", 1)
    if not isinstance(x, torch.Tensor) or x.dim() < n + 1:
        raise fold_error("x", getattr(x, "shape", x), f"must be a tensor with at least {n + 1} dims (channels + {n} spatial)")
    if dims is None and isinstance(r, int) and x.dim() == 3:
        raise fold_error(
            "dims", None, f"is needed for a 3-D tensor of shape {tuple(x.shape)} with an int r: pass dims=1 for (N, C, W) or dims=2 for (C, H, W)"
        )
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise fold_error("value", value, "must be a real number (the constant padded in)")
    pads = []
    for size, factor in reversed(list(zip(x.shape[-n:], rs))):
        pads += [0, (-size) % factor]
    padded = tuple(x.shape[:-n]) + tuple(size + (-size) % factor for size, factor in zip(x.shape[-n:], rs))
    require_numel(padded, "r", r, what="a padded tensor")
    return torch.nn.functional.pad(x, pads, value=value)
