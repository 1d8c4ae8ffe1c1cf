"""Fold a convolution over ``G*prod(r)`` channels into a big strided convolution over ``G`` channels, and back.

The fold theorem (paper_notes/fold.md): with ``xf = depth_to_space(x, r, order)`` and
``wf = depth_to_space(w, r, order)`` (the same order on both), ::

    conv(x, w, stride=S, padding=P) == conv(xf, wf, stride=r*S, padding=r*P)

exactly, for any number of output channels, with the bias unchanged. Groups survive when every group's
channels are aligned with fold blocks; dilation survives only as a zero-filled dense kernel; padding modes
"zeros" and "circular" commute with the fold, "reflect" and "replicate" do not.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import NamedTuple, Optional, Tuple

import einops
import torch
from torch import nn

from .errors import fold_error
from .layout import IntOrTuple, Order, depth_to_space, fold_channel_map, space_to_depth
from .specs import ConvSpec, FoldSpec

__all__ = [
    "FoldPlan",
    "FoldedWeight",
    "plan_fold",
    "plan_unfold",
    "groups_aligned",
    "expand_groups",
    "expand_dilation",
    "fold_weight",
    "unfold_weight",
    "fold_conv",
    "unfold_conv",
    "pad_to_multiple",
]

_BAD_MODES = {
    "reflect": "reflection reverses the sub-pixel order within a block, so the folded map's mirror is not "
    "the fold of the original's mirror",
    "replicate": "replication copies the edge row of the folded map, which holds other channels' pixels, "
    "instead of each channel's own edge pixel",
}


@dataclass(frozen=True)
class FoldPlan:
    """The outcome of folding (or unfolding) a spec: the new spec and what had to change to get it.

    ``dense_groups``: the grouped weight had to be expanded to a block-diagonal dense weight (groups=1).
    ``dilation_expanded``: the dilated kernel became a zero-filled dense kernel. ``kernel_density`` is the
    fraction of the new kernel's entries that are not structural zeros.
    """

    source: ConvSpec
    fold: FoldSpec
    result: ConvSpec
    dense_groups: bool = False
    dilation_expanded: bool = False
    kernel_density: float = 1.0
    notes: Tuple[str, ...] = field(default_factory=tuple)
    direction: str = "fold"


class FoldedWeight(NamedTuple):
    """A folded (or unfolded) weight and the ``groups`` the conv that uses it must have."""

    weight: torch.Tensor
    groups: int


def groups_aligned(in_channels: int, groups: int, fold: FoldSpec) -> bool:
    """True when every folded channel gathers channels of one group and groups stay contiguous.

    That is what lets the folded conv keep ``groups``; it needs ``(in_channels/groups) % prod(r) == 0`` and
    every factor with ``r > 1`` after ``c`` in the order.

    Example:
        >>> groups_aligned(8, 2, FoldSpec.make(2, "crd")), groups_aligned(8, 2, FoldSpec.make(2, "dcr"))
        (True, False)
    """
    if groups == 1:
        return True
    if in_channels % fold.block or (in_channels // fold.block) % groups:
        return False
    cmap = fold_channel_map(in_channels, fold.r, fold.order, fold.dims)
    group_of = cmap // (in_channels // groups)
    folded = cmap.shape[0]
    expected = torch.arange(folded) // (folded // groups)
    return bool((group_of == expected.reshape((-1,) + (1,) * fold.dims)).all())


def _check_mode(spec: ConvSpec, fold: FoldSpec) -> None:
    # Reflect/replicate only matter where there is padding on an axis that is actually folded (r > 1).
    if spec.padding_mode in _BAD_MODES and any(p > 0 and r > 1 for p, r in zip(spec.padding, fold.r)):
        raise fold_error(
            "padding_mode", spec.padding_mode, "does not commute with folding when padding > 0 on a folded axis: " + _BAD_MODES[spec.padding_mode]
        )


def plan_fold(spec: ConvSpec, fold: FoldSpec) -> FoldPlan:
    """Spec of the folded conv, or a FoldError saying why there is none.

    Example:
        >>> p = plan_fold(ConvSpec.make(2, 256, 64, 3, padding=1), FoldSpec.make(16))
        >>> p.result.describe()
        'Conv2d(1->64, k=(48, 48), s=(16, 16), p=(16, 16))'
    """
    if fold.dims != spec.dims:
        raise fold_error("r", fold.r, f"has {fold.dims} factor(s) but the conv has {spec.dims} spatial dim(s)")
    _check_mode(spec, fold)
    if spec.in_channels % fold.block:
        raise fold_error(
            "in_channels", spec.in_channels, f"must be a multiple of prod(r)={fold.block} (r={fold.r}) to fold"
        )
    notes = []
    aligned = groups_aligned(spec.in_channels, spec.groups, fold)
    groups = spec.groups if aligned else 1
    density = 1.0
    if not aligned:
        notes.append(
            f"groups={spec.groups} are not aligned with fold blocks in order {fold.order_string!r}; the folded "
            f"conv is dense (groups=1) with a block-diagonal weight ({spec.groups}x the parameters)"
        )
        density /= spec.groups
    dilated = any(d != 1 for d in spec.dilation)
    kernel = spec.effective_kernel
    if dilated:
        density *= math.prod(spec.kernel_size) / math.prod(kernel)
        notes.append(
            f"dilation={spec.dilation} has no folded equivalent; the folded kernel is the zero-filled dense "
            f"kernel of size r*(d*(k-1)+1)={tuple(r * k for r, k in zip(fold.r, kernel))}"
        )
    result = ConvSpec.make(
        spec.dims,
        spec.in_channels // fold.block,
        spec.out_channels,
        tuple(r * k for r, k in zip(fold.r, kernel)),
        tuple(r * s for r, s in zip(fold.r, spec.stride)),
        tuple(r * p for r, p in zip(fold.r, spec.padding)),
        1,
        groups,
        spec.bias,
        spec.padding_mode,
    )
    return FoldPlan(spec, fold, result, not aligned, dilated, density, tuple(notes), "fold")


def plan_unfold(spec: ConvSpec, fold: FoldSpec) -> FoldPlan:
    """Spec of the conv over ``G*prod(r)`` channels equal to a big conv over ``G`` channels.

    Example:
        >>> plan_unfold(ConvSpec.make(2, 1, 64, 48, stride=16, padding=16), FoldSpec.make(16)).result.describe()
        'Conv2d(256->64, k=(3, 3), s=(1, 1), p=(1, 1))'
    """
    if fold.dims != spec.dims:
        raise fold_error("r", fold.r, f"has {fold.dims} factor(s) but the conv has {spec.dims} spatial dim(s)")
    _check_mode(spec, fold)
    if any(d != 1 for d in spec.dilation):
        raise fold_error("dilation", spec.dilation, "must be 1 to unfold (a dilated big kernel mixes fold blocks)")
    for name in ("kernel_size", "stride", "padding"):
        values = getattr(spec, name)
        if any(v % r for v, r in zip(values, fold.r)):
            raise fold_error(name, values, f"must be a multiple of r={fold.r} on every axis to unfold")
    unfolded_channels = spec.in_channels * fold.block
    aligned = groups_aligned(unfolded_channels, spec.groups, fold)
    notes = []
    if not aligned:
        notes.append(
            f"groups={spec.groups} are not aligned with fold blocks in order {fold.order_string!r}; the unfolded "
            "conv is dense (groups=1) with a block-diagonal weight"
        )
    result = ConvSpec.make(
        spec.dims,
        unfolded_channels,
        spec.out_channels,
        tuple(k // r for k, r in zip(spec.kernel_size, fold.r)),
        tuple(s // r for s, r in zip(spec.stride, fold.r)),
        tuple(p // r for p, r in zip(spec.padding, fold.r)),
        1,
        spec.groups if aligned else 1,
        spec.bias,
        spec.padding_mode,
    )
    density = 1.0 if aligned else 1.0 / spec.groups
    return FoldPlan(spec, fold, result, not aligned, False, density, tuple(notes), "unfold")


def expand_groups(weight: torch.Tensor, groups: int) -> torch.Tensor:
    """Dense block-diagonal weight ``(O, C, *K)`` of a grouped weight ``(O, C/groups, *K)``.

    Example:
        >>> expand_groups(torch.ones(4, 1, 1, 1), 4)[:, :, 0, 0].tolist()[1]
        [0.0, 1.0, 0.0, 0.0]
    """
    if groups == 1:
        return weight
    out_channels, per_group = weight.shape[:2]
    if out_channels % groups:
        raise fold_error("groups", groups, f"must divide the weight's out_channels={out_channels}")
    blocks = einops.rearrange(weight, "(g o) c ... -> g o c ...", g=groups)
    eye = torch.eye(groups, dtype=weight.dtype, device=weight.device)
    # Block (g, g') of the dense weight is blocks[g] when g == g' and zero elsewhere.
    dense = torch.einsum("goc...,gh->gohc...", blocks, eye)
    return einops.rearrange(dense, "g o h c ... -> (g o) (h c) ...")


def expand_dilation(weight: torch.Tensor, dilation: Tuple[int, ...]) -> torch.Tensor:
    """The zero-filled dense kernel of extent ``d*(k-1)+1`` that a dilated kernel stands for.

    Example:
        >>> expand_dilation(torch.ones(1, 1, 2), (3,)).tolist()
        [[[1.0, 0.0, 0.0, 1.0]]]
    """
    if all(d == 1 for d in dilation):
        return weight
    kernel = weight.shape[2:]
    extent = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    dense = weight.new_zeros(weight.shape[:2] + extent)
    dense[(slice(None), slice(None)) + tuple(slice(None, None, d) for d in dilation)] = weight
    return dense


def fold_weight(
    weight: torch.Tensor,
    r: IntOrTuple,
    order: Order = "crd",
    groups: int = 1,
    dilation: IntOrTuple = 1,
) -> FoldedWeight:
    """Fold a conv weight ``(O, C/groups, *K)``; returns the weight and the folded conv's ``groups``.

    Example:
        >>> w = torch.randn(64, 256, 3, 3)
        >>> fw = fold_weight(w, 16)
        >>> tuple(fw.weight.shape), fw.groups
        ((64, 1, 48, 48), 1)
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (3, 4, 5):
        raise fold_error("weight", getattr(weight, "shape", weight), "must be a conv weight tensor (O, C/groups, *K) with 1-3 spatial dims")
    dims = weight.dim() - 2
    fold = FoldSpec.make(r, order, dims)
    spec = ConvSpec.make(
        dims, weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), dilation=dilation, groups=groups, bias=False
    )
    plan = plan_fold(spec, fold)
    w = expand_dilation(weight, spec.dilation)
    if plan.dense_groups:
        w = expand_groups(w, groups)
    # Contiguous on purpose: einops may return a strided view, and torch 2.14's CPU bfloat16 conv corrupts
    # the heap on some non-contiguous weights (see paper_notes/where_it_fails.md, "environment").
    return FoldedWeight(depth_to_space(w, fold.r, fold.order, dims).contiguous(), plan.result.groups)


def unfold_weight(weight: torch.Tensor, r: IntOrTuple, order: Order = "crd", groups: int = 1) -> FoldedWeight:
    """Inverse of :func:`fold_weight` for kernels that are multiples of ``r``.

    Example:
        >>> w = torch.randn(8, 16, 3, 3)
        >>> torch.equal(unfold_weight(fold_weight(w, 2).weight, 2).weight, w)
        True
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (3, 4, 5):
        raise fold_error("weight", getattr(weight, "shape", weight), "must be a conv weight tensor (O, C/groups, *K) with 1-3 spatial dims")
    dims = weight.dim() - 2
    fold = FoldSpec.make(r, order, dims)
    spec = ConvSpec.make(dims, weight.shape[1] * groups, weight.shape[0], tuple(weight.shape[2:]), stride=fold.r, groups=groups, bias=False)
    plan = plan_unfold(spec, fold)
    w = expand_groups(weight, groups) if plan.dense_groups else weight
    return FoldedWeight(space_to_depth(w, fold.r, fold.order, dims).contiguous(), plan.result.groups)


def _build(plan: FoldPlan, weight: torch.Tensor, bias: Optional[torch.Tensor], like: nn.Module) -> nn.Module:
    module = plan.result.to_module(dtype=weight.dtype, device=weight.device)
    with torch.no_grad():
        module.weight.copy_(weight)
        if bias is not None:
            module.bias.copy_(bias)
    module.train(like.training)
    module.weight.requires_grad_(like.weight.requires_grad)
    module.fold_plan = plan
    return module


def fold_conv(conv: nn.Module, r: IntOrTuple, order: Order = "crd") -> nn.Module:
    """The conv on ``depth_to_space(x, r, order)`` that computes exactly ``conv(x)``.

    The returned module carries ``.fold_plan`` (a :class:`FoldPlan`) saying what changed: kernel ``r*K``,
    stride ``r*S``, padding ``r*P``, and whether groups or dilation had to be expanded.

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
    fold = FoldSpec.make(r, order, spec.dims)
    plan = plan_fold(spec, fold)
    w = expand_dilation(conv.weight.detach(), spec.dilation)
    if plan.dense_groups:
        w = expand_groups(w, spec.groups)
    folded = depth_to_space(w, fold.r, fold.order, spec.dims)
    bias = conv.bias.detach() if conv.bias is not None else None
    return _build(plan, folded, bias, conv)


def unfold_conv(conv: nn.Module, r: IntOrTuple, order: Order = "crd") -> nn.Module:
    """The conv on ``x`` that computes exactly ``conv(depth_to_space(x, r, order))``.

    Needs kernel, stride and padding that are multiples of ``r`` and no dilation; the exact inverse of
    :func:`fold_conv` for undilated convs whose groups are aligned with the fold.

    Example:
        >>> conv = torch.nn.Conv2d(256, 8, 3, padding=1)
        >>> back = unfold_conv(fold_conv(conv, 16), 16)
        >>> torch.equal(back.weight, conv.weight), back.kernel_size
        (True, (3, 3))
    """
    spec = ConvSpec.from_module(conv)
    fold = FoldSpec.make(r, order, spec.dims)
    plan = plan_unfold(spec, fold)
    w = conv.weight.detach()
    if plan.dense_groups:
        w = expand_groups(w, spec.groups)
    unfolded = space_to_depth(w, fold.r, fold.order, spec.dims)
    bias = conv.bias.detach() if conv.bias is not None else None
    return _build(plan, unfolded, bias, conv)


def pad_to_multiple(
    x: torch.Tensor, r: IntOrTuple, spatial_dims: Optional[int] = None, value: float = 0.0
) -> torch.Tensor:
    """Zero-pad the end of every spatial axis up to a multiple of its factor (so space_to_depth applies).

    Example:
        >>> pad_to_multiple(torch.ones(1, 1, 5, 6), 4).shape
        torch.Size([1, 1, 8, 8])
    """
    dims = spatial_dims or (len(r) if isinstance(r, (tuple, list)) else 2)
    fold = FoldSpec.make(r, "crd", dims)
    if not isinstance(x, torch.Tensor) or x.dim() < dims + 1:
        raise fold_error("x", getattr(x, "shape", x), f"must be a tensor with at least {dims + 1} dims")
    pads = []
    for size, factor in reversed(list(zip(x.shape[-dims:], fold.r))):
        pads += [0, (-size) % factor]
    return torch.nn.functional.pad(x, pads, value=value)
