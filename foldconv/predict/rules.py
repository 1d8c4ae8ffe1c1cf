"""Predict, from the configuration alone, whether folding holds, holds under conditions, or fails — and why.

Three questions, each answered without running a convolution:

- :func:`predict_fold`: a conv over ``G*prod(r)`` channels against the *literal* fold (weight and input
  pixel-shuffled, stride and padding scaled by ``r``, everything else passed through, as the seed writes it),
  and against the conditioned form :func:`foldconv.fold_conv` builds when the literal fold is not enough.
- :func:`predict_following`: does a layer that follows the conv commute with the fold of its output
  (``fold(L(y)) == L_folded(fold(y))``)? Pointwise ops, BatchNorm, GroupNorm/LayerNorm, Dropout2d, pooling,
  Upsample.
- :func:`predict_space_to_depth`: a big conv whose input size is not a multiple of ``r`` — which cropping or
  padding makes the unfolded (space-to-depth) form exact.

Every rule has a code (``Prediction.codes``) that names the claim in ``paper_notes/claims.md`` proving it.
"""
from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass, field
from enum import Enum
from typing import Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import FoldError
from ..fold import groups_aligned, plan_fold
from ..layout import fold_channel_map, normalize_order
from ..specs import ConvSpec, FoldSpec, padded_source

__all__ = [
    "Outcome",
    "Literal",
    "Prediction",
    "predict_fold",
    "orders_equivalent",
    "predict_following",
    "fold_following",
    "predict_space_to_depth",
    "folded_output_alignment",
]


class Outcome(str, Enum):
    """Overall answer for one configuration."""

    HOLDS = "holds"  # the literal fold is the same computation
    HOLDS_IF = "holds with conditions"  # an equivalent folded form exists, with the stated changes
    FAILS = "fails"  # no folded form of this kind computes the same function
    INVALID = "invalid"  # the request itself is malformed (FoldError)


class Literal(str, Enum):
    """What the literal construction gives, as the equivalence checker would report it."""

    EQUIVALENT = "equivalent"
    NOT_EQUIVALENT = "not equivalent"
    SHAPES_DIFFER = "output shapes differ"
    INVALID = "invalid"


@dataclass(frozen=True)
class Prediction:
    """A predicted outcome with the literal construction's verdict, the fix, and the reasons.

    ``literal``: verdict of the literal construction. ``folded``: the spec of the equivalent form when one
    exists (HOLDS, HOLDS_IF). ``conditions``: what must change for HOLDS_IF. ``codes``: rule identifiers.
    ``density``: fraction of the equivalent kernel that is not structurally zero.
    """

    outcome: Outcome
    literal: Literal
    folded: Optional[ConvSpec] = None
    conditions: Tuple[str, ...] = ()
    reasons: Tuple[str, ...] = ()
    codes: Tuple[str, ...] = ()
    density: float = 1.0

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "all conditions of the fold theorem hold"

    @property
    def code(self) -> str:
        return "+".join(self.codes) if self.codes else "theorem"


def _invalid(message: str, code: str = "invalid-input") -> Prediction:
    return Prediction(Outcome.INVALID, Literal.INVALID, reasons=(message,), codes=(code,))


def orders_equivalent(a: Sequence[str], b: Sequence[str], r: Sequence[int], channels: int, dims: int) -> bool:
    """Do two channel orders give the same channel map for these factors? (Size-1 factors don't count.)

    Example:
        >>> orders_equivalent(("c", "rh", "rw"), ("rh", "rw", "c"), (2, 2), 4, 2)  # G = 1
        True
        >>> orders_equivalent(("c", "rh", "rw"), ("rh", "rw", "c"), (2, 2), 8, 2)
        False
    """
    names = {1: ("rw",), 2: ("rh", "rw"), 3: ("rd", "rh", "rw")}[dims]
    sizes = dict(zip(names, r))
    sizes["c"] = channels // math.prod(r)
    strip = lambda order: tuple(n for n in order if sizes[n] > 1)  # noqa: E731
    return strip(a) == strip(b)


def _as_spec(conv: Union[ConvSpec, nn.Module]) -> ConvSpec:
    return conv if isinstance(conv, ConvSpec) else ConvSpec.from_module(conv)


def _out_size(n: int, k_eff: int, s: int, p: int) -> int:
    return (n + 2 * p - k_eff) // s + 1


def folded_output_alignment(out_len: int, folded_stride: int, r: int, stride: int, folded_out_len: int) -> Tuple[int, int]:
    """For a folded stride ``S'``: (#original outputs that appear in the folded output, #original outputs).

    Folded output ``i`` equals original output ``j`` exactly when ``i*S' == j*r*S``.

    Example:
        >>> folded_output_alignment(5, 1, 2, 1, 9)  # S' = 1 on r = 2: every original output, at even i
        (5, 5)
    """
    hits = sum(1 for j in range(out_len) if (j * r * stride) % folded_stride == 0 and j * r * stride // folded_stride < folded_out_len)
    return hits, out_len


def _axis_windows(n, k, s, p, d, mode, f, out_len, folded_stride, folded_padding):
    """Per output index on one axis: the original's tap set and the literal fold's tap set.

    Taps are (kernel tap t, weight sub-pixel, input row, input sub-pixel); zero-padding taps are dropped.
    """
    orig, lit = [], []
    for i in range(out_len):
        o = set()
        for t in range(k):
            src = padded_source(i * s - p + t * d, n, mode)
            if src is not None:
                o.update((t, sub, src, sub) for sub in range(f))
        l = set()
        for t2 in range(f * k):
            src = padded_source(i * folded_stride - folded_padding + t2 * d, n * f, mode)
            if src is not None:
                l.add((t2 // f, t2 % f, src // f, src % f))
        orig.append(frozenset(o))
        lit.append(frozenset(l))
    return orig, lit


def _literal_channels_ok(spec: ConvSpec, fold: FoldSpec, x_order: Tuple[str, ...]) -> bool:
    """Does the literal fold pair every weight with its own channel? (Index arithmetic on channel maps.)

    The literal folds each group's weight on its own ``C/groups`` channels, and the input on all ``C``; folded
    channel ``c`` belongs to group ``c // (G/groups)``. Both must name the same original channel for every
    (folded channel, sub-pixel).
    """
    C, g = spec.in_channels, spec.groups
    x_map = fold_channel_map(C, fold.r, x_order, spec.dims).flatten(1)
    w_map = fold_channel_map(C // g, fold.r, fold.order, spec.dims).flatten(1)  # local to a group
    per = w_map.shape[0]
    group = torch.arange(x_map.shape[0]) // per
    expected = group[:, None] * (C // g) + w_map.repeat(g, 1)
    return bool(torch.equal(x_map, expected))


def _literal_by_windows(spec: ConvSpec, fold: FoldSpec, size, stride_f, padding_f, channels_ok: bool) -> Literal:
    """Exact verdict of the literal fold from the per-axis window index maps (integers only, no tensors).

    An output equals the original's when, on every axis, both read the same (weight tap, input pixel) pairs,
    or when each side has some axis whose window lies entirely in zero padding (both are then the bias).
    """
    out = spec.output_size(size)
    per_axis = []
    for a in range(spec.dims):
        o, l = _axis_windows(size[a], spec.kernel_size[a], spec.stride[a], spec.padding[a], spec.dilation[a], spec.padding_mode,
                             fold.r[a], out[a], stride_f[a], padding_f[a])
        per_axis.append([(oi == li and bool(oi), not oi, not li) for oi, li in zip(o, l)])
    for combo in itertools.product(*per_axis):
        both_bias = any(c[1] for c in combo) and any(c[2] for c in combo)
        if both_bias:
            continue
        if not all(c[0] for c in combo) or not channels_ok:
            return Literal.NOT_EQUIVALENT
    return Literal.EQUIVALENT


def predict_fold(
    conv: Union[ConvSpec, nn.Module],
    r: Union[FoldSpec, int, Sequence[int]],
    order: Union[str, Sequence[str], None] = None,
    *,
    input_order: Union[str, Sequence[str], None] = None,
    folded_stride: Optional[Sequence[int]] = None,
    folded_padding: Optional[Sequence[int]] = None,
    input_size: Optional[Sequence[int]] = None,
) -> Prediction:
    """Predict the literal fold and the conditioned fold of ``conv`` by ``r`` (no tensors involved).

    The literal fold pixel-shuffles the weight (``order``) and the input (``input_order``, default: the same),
    uses stride ``folded_stride`` (default ``r*S``) and padding ``folded_padding`` (default ``r*P``), and
    passes dilation, groups and padding mode through unchanged.

    Example:
        >>> p = predict_fold(ConvSpec.make(2, 256, 64, 3, padding=1), 16)
        >>> p.outcome.value, p.folded.kernel_size
        ('holds', (48, 48))
        >>> predict_fold(ConvSpec.make(2, 4, 4, 3, padding=1, padding_mode="reflect"), 2).outcome.value
        'fails'
        >>> predict_fold(ConvSpec.make(2, 4, 4, 3, dilation=2), 2).conditions[0][:30]
        'expand the dilated kernel to t'
    """
    try:
        spec = _as_spec(conv)
        if isinstance(r, FoldSpec):
            fold = r if order is None else r.with_order(order)
        else:
            fold = FoldSpec.make(r, order or "crd", spec.dims)
        x_order = fold.order if input_order is None else normalize_order(input_order, spec.dims)
    except FoldError as err:
        return _invalid(str(err))
    dims, R = spec.dims, fold.block
    stride_f = tuple(folded_stride) if folded_stride is not None else tuple(f * s for f, s in zip(fold.r, spec.stride))
    padding_f = tuple(folded_padding) if folded_padding is not None else tuple(f * p for f, p in zip(fold.r, spec.padding))
    if len(stride_f) != dims or any(not isinstance(s, numbers.Integral) or s < 1 for s in stride_f):
        return _invalid(f"folded_stride={stride_f!r}: needs one integer >= 1 per spatial axis")
    if len(padding_f) != dims or any(not isinstance(p, numbers.Integral) or p < 0 for p in padding_f):
        return _invalid(f"folded_padding={padding_f!r}: needs one integer >= 0 per spatial axis")
    if input_size is not None:
        size = tuple(input_size)
        if len(size) != dims or any(not isinstance(n, numbers.Integral) or n < 1 for n in size):
            return _invalid(f"input_size={size!r}: needs {dims} spatial sizes >= 1 (empty tensors have no fold)")
        out = tuple(_out_size(n, k, s, p) for n, k, s, p in zip(size, spec.effective_kernel, spec.stride, spec.padding))
        if any(o < 1 for o in out):
            return _invalid(f"input_size={size!r}: the conv's output would be empty ({out})")
        limit = (lambda p, n: p >= n) if spec.padding_mode == "reflect" else (lambda p, n: p > n)
        if spec.padding_mode != "zeros" and any(limit(p, n) for p, n in zip(spec.padding, size)):
            return _invalid(f"padding={spec.padding}: {spec.padding_mode} padding needs padding <= input size {size}")
    reasons, codes, conditions = [], [], []

    # Channel divisibility: nothing can be folded.
    if spec.in_channels % R:
        return Prediction(
            Outcome.FAILS,
            Literal.INVALID,
            reasons=(f"in_channels={spec.in_channels} is not a multiple of prod(r)={R}: no fold block can be filled",),
            codes=("FOLD-3",),
        )
    per_group = spec.in_channels // spec.groups
    folded_channels = spec.in_channels // R
    # Literal construction validity (torch's own constraints on the literal folded conv).
    literal_invalid = None
    if per_group % R:
        literal_invalid = f"each group's {per_group} channel(s) cannot fill a fold block of {R}: the grouped weight cannot be folded as is"
    elif folded_channels % spec.groups:
        literal_invalid = f"folded in_channels={folded_channels} is not divisible by groups={spec.groups}"
    aligned = groups_aligned(spec.in_channels, spec.groups, fold)
    same_order = orders_equivalent(fold.order, x_order, fold.r, spec.in_channels, dims)
    bad_mode_axes = [
        a for a in range(dims) if spec.padding_mode in ("reflect", "replicate") and spec.padding[a] > 0 and fold.r[a] > 1
    ]
    # A dilation matters on the folded map whenever the folded kernel has more than one tap on that axis.
    dilated_axes = [a for a in range(dims) if spec.dilation[a] > 1 and fold.r[a] * spec.kernel_size[a] > 1 and fold.r[a] > 1]

    literal: Literal
    if literal_invalid:
        literal = Literal.INVALID
        reasons.append(literal_invalid)
        codes.append("FOLD-4")
    else:
        literal = Literal.EQUIVALENT
        if input_size is not None:
            folded_size = tuple(n * f for n, f in zip(size, fold.r))
            lit_out = tuple(
                _out_size(n, d * (f * k - 1) + 1, s, p)
                for n, d, f, k, s, p in zip(folded_size, spec.dilation, fold.r, spec.kernel_size, stride_f, padding_f)
            )
            if any(o < 1 for o in lit_out):
                literal = Literal.INVALID
                reasons.append(f"the literal folded conv's output would be empty ({lit_out})")
            elif lit_out != out:
                literal = Literal.SHAPES_DIFFER
        differs = []
        channels_ok = _literal_channels_ok(spec, fold, x_order)
        if not channels_ok and not same_order:
            differs.append(
                f"input folded in order {' '.join(x_order)!r} but weight in {fold.order_string!r}: the sum pairs weights with other channels' pixels"
            )
            codes.append("FOLD-9")
        if not channels_ok and not aligned:
            differs.append(
                f"groups={spec.groups} are not aligned with fold blocks in order {fold.order_string!r}: folded channels mix groups"
            )
            codes.append("FOLD-4")
        if channels_ok and not (same_order and aligned):
            reasons.append(
                f"the input order {' '.join(x_order)!r} undoes the group misalignment of the weight order {fold.order_string!r}: "
                "every folded group still pairs each weight with its own channel"
            )
            codes.append("RULE-12")
        if dilated_axes:
            differs.append(f"dilation={spec.dilation} passed through spreads the folded taps over other fold blocks")
            codes.append("FOLD-7")
        if bad_mode_axes:
            differs.append(
                f"padding_mode={spec.padding_mode!r} with padding on folded axes {bad_mode_axes}: "
                + ("reflection reverses the sub-pixel order within a block" if spec.padding_mode == "reflect" else "replication copies a block edge that holds other channels")
            )
            codes.append("FOLD-6")
        default_stride = tuple(f * s for f, s in zip(fold.r, spec.stride))
        default_padding = tuple(f * p for f, p in zip(fold.r, spec.padding))
        single = [o == 1 for o in out] if input_size is not None else [False] * dims
        if any(sf != sd and not one for sf, sd, one in zip(stride_f, default_stride, single)):
            differs.append(f"folded stride {stride_f} is not r*S={default_stride}: folded output i lines up with original output j only where i*S' = j*r*S")
            codes.append("FOLD-8")
        if padding_f != default_padding:
            differs.append(f"folded padding {padding_f} is not r*P={default_padding}: the windows are shifted")
            codes.append("FOLD-2")
        if differs:
            reasons.extend(differs)
            if literal is Literal.EQUIVALENT:
                literal = Literal.NOT_EQUIVALENT
            if input_size is None and dilated_axes and stride_f == default_stride and padding_f == default_padding:
                # On an axis with r > 1 the dilated folded kernel is d - 1 - floor((d-1)/r) > 0 taps longer
                # than r times the original's extent, whatever the size: the output always shrinks (FOLD-7).
                literal = Literal.SHAPES_DIFFER
        elif literal is Literal.SHAPES_DIFFER:
            reasons.append("output sizes differ")
        if input_size is not None and literal is not Literal.SHAPES_DIFFER and literal is not Literal.INVALID:
            # With a concrete size the window index maps decide exactly, including degenerate windows that
            # read only padding (where a wrong stride or padding mode can coincide with the right one).
            exact = _literal_by_windows(spec, fold, size, stride_f, padding_f, channels_ok=channels_ok)
            if exact is Literal.EQUIVALENT and literal is not Literal.EQUIVALENT:
                reasons.append("degenerate: every window where the forms differ reads only padding values that coincide")
                codes.append("RULE-12")
            elif exact is not Literal.EQUIVALENT and literal is Literal.EQUIVALENT:
                reasons.append("the window index maps differ for this input size")
                codes.append("RULE-12")
            literal = exact
    if literal is Literal.EQUIVALENT:
        try:
            plan = plan_fold(spec, fold)
            folded, density = plan.result, plan.kernel_density
        except FoldError:
            folded, density = None, 1.0
        return Prediction(Outcome.HOLDS, literal, folded, (), tuple(reasons), tuple(codes) or ("FOLD-1",), density)

    # Is there a conditioned form? fold_conv's plan, plus using the same order and r*S, r*P.
    try:
        plan = plan_fold(spec, fold)
    except FoldError as err:
        if spec.padding_mode in ("reflect", "replicate"):
            codes.append("FOLD-6")
        if not any("padding_mode" in r for r in reasons):
            reasons.append(str(err))
        return Prediction(Outcome.FAILS, literal, None, (), tuple(dict.fromkeys(reasons)), tuple(dict.fromkeys(codes)))
    if not same_order:
        conditions.append(f"fold the input in the weight's order {fold.order_string!r}")
    if plan.dilation_expanded:
        conditions.append(
            f"expand the dilated kernel to the zero-filled dense kernel r*(d*(k-1)+1)={plan.result.kernel_size} "
            f"(density {plan.kernel_density:.3g})"
        )
    if plan.dense_groups:
        conditions.append(f"use groups=1 with the block-diagonal weight ({spec.groups}x the stored parameters)")
    if folded_stride is not None and tuple(stride_f) != plan.result.stride:
        conditions.append(f"use stride r*S={plan.result.stride} on the folded map")
    if folded_padding is not None and tuple(padding_f) != plan.result.padding:
        conditions.append(f"use padding r*P={plan.result.padding} on the folded map")
    if literal_invalid and not plan.dense_groups:
        conditions.append("fold the weight with fold_conv")
    return Prediction(
        Outcome.HOLDS_IF, literal, plan.result, tuple(conditions), tuple(dict.fromkeys(reasons)), tuple(dict.fromkeys(codes)), plan.kernel_density
    )


# ----------------------------------------------------------------------------------------------------------
# Layers that follow the conv.

_POINTWISE = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Hardswish, nn.Hardsigmoid,
    nn.Mish, nn.Softplus, nn.Identity, nn.Hardtanh, nn.CELU, nn.SELU,
)
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
_AVG = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_MAX = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_DROP = (nn.Dropout1d, nn.Dropout2d, nn.Dropout3d)


def _tuple(v, dims):
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * dims


def _block_groups_differ(values: torch.Tensor, fold: FoldSpec, channels: int) -> Tuple[int, ...]:
    """Folded channels whose fold block holds unequal per-channel values."""
    cmap = fold_channel_map(channels, fold.r, fold.order, fold.dims).flatten(1)
    blocks = values[cmap]  # (folded channels, R)
    return tuple(int(i) for i in torch.nonzero((blocks != blocks[:, :1]).any(dim=1)).flatten())


def predict_following(layer: nn.Module, fold: FoldSpec, channels: int, size: Optional[Sequence[int]] = None) -> Prediction:
    """Does ``layer`` (applied to the conv's output, ``channels`` channels) commute with folding that output?

    The literal construction applies :func:`fold_following` (the same layer, with per-channel parameters
    taken per fold block) to the folded map and compares with the fold of ``layer``'s output:
    ``fold_following(layer)(depth_to_space(y)) == depth_to_space(layer(y))``. For pooling whose kernel equals
    its stride and divides ``r`` the literal construction fails, but the folded pool equals a reduction over
    each channel group of the unfolded map (HOLDS_IF). ``size`` (spatial size of ``y``) lets the prediction
    say when output shapes differ.

    Example:
        >>> f = FoldSpec.make(2)
        >>> predict_following(nn.ReLU(), f, 8).outcome.value
        'holds'
        >>> bn = nn.BatchNorm2d(8).eval()
        >>> with torch.no_grad(): _ = bn.weight.copy_(torch.arange(8.))
        >>> predict_following(bn, f, 8).reasons[0][:38]
        'BatchNorm statistics or affine paramet'
    """
    R, dims = fold.block, fold.dims
    if channels % R:
        return Prediction(Outcome.FAILS, Literal.INVALID, reasons=(f"channels={channels} is not a multiple of prod(r)={R}",), codes=("FOLD-3",))
    name = type(layer).__name__
    if all(f == 1 for f in fold.r):
        return Prediction(Outcome.HOLDS, Literal.EQUIVALENT, reasons=("r = 1: folding is the identity",), codes=("RULE-1",))
    if isinstance(layer, _POINTWISE):
        return Prediction(Outcome.HOLDS, Literal.EQUIVALENT, reasons=(f"{name} is elementwise: it commutes with any permutation of elements",), codes=("RULE-1",))
    if isinstance(layer, _BN):
        if layer.training or not layer.track_running_stats:
            return Prediction(
                Outcome.FAILS, Literal.NOT_EQUIVALENT,
                reasons=(f"{name} in train mode normalises each folded channel with batch statistics pooled over its {R} source channels",),
                codes=("RULE-3",),
            )
        parts = [layer.running_mean, layer.running_var]
        if layer.affine:
            parts += [layer.weight.detach(), layer.bias.detach()]
        differing = sorted(set().union(*(_block_groups_differ(p.detach(), fold, channels) for p in parts)))
        if differing:
            return Prediction(
                Outcome.FAILS, Literal.NOT_EQUIVALENT,
                reasons=(f"BatchNorm statistics or affine parameters differ within the fold blocks of folded channels {differing}",),
                codes=("RULE-2",),
            )
        return Prediction(Outcome.HOLDS, Literal.EQUIVALENT, reasons=("eval-mode BatchNorm with equal parameters within every fold block is a per-folded-channel affine map",), codes=("RULE-2",))
    if isinstance(layer, nn.GroupNorm):
        g = layer.num_groups
        per = channels // g
        if per % R or not groups_aligned(channels, g, fold):
            return Prediction(
                Outcome.FAILS, Literal.INVALID if (channels // R) % g else Literal.NOT_EQUIVALENT,
                reasons=(f"GroupNorm groups ({g} of {per} channels) are not unions of fold blocks in order {fold.order_string!r}: statistics are pooled over other elements",),
                codes=("RULE-4",),
            )
        if layer.affine:
            differing = sorted(set(_block_groups_differ(layer.weight.detach(), fold, channels)) | set(_block_groups_differ(layer.bias.detach(), fold, channels)))
            if differing:
                return Prediction(Outcome.FAILS, Literal.NOT_EQUIVALENT, reasons=(f"GroupNorm affine parameters differ within fold blocks of folded channels {differing}",), codes=("RULE-4",))
        return Prediction(Outcome.HOLDS, Literal.EQUIVALENT, reasons=("each GroupNorm group is a union of fold blocks: same elements, same statistics",), codes=("RULE-4",))
    if isinstance(layer, nn.LayerNorm):
        shape = tuple(layer.normalized_shape)
        if len(shape) < dims + 1:
            return Prediction(
                Outcome.FAILS, Literal.INVALID,
                reasons=(f"LayerNorm over {shape} excludes the channel axis: folding moves channels into the normalised axes, and the folded sizes no longer match",),
                codes=("RULE-4",),
            )
        return Prediction(
            Outcome.HOLDS, Literal.EQUIVALENT,
            reasons=("LayerNorm over (C, *spatial) sees the same elements in any layout; its affine parameters are folded too",),
            codes=("RULE-4",),
        )
    if isinstance(layer, _DROP):
        if not layer.training or layer.p == 0:
            return Prediction(Outcome.HOLDS, Literal.EQUIVALENT, reasons=(f"{name} in eval mode (or p=0) is the identity",), codes=("RULE-5",))
        return Prediction(
            Outcome.FAILS, Literal.NOT_EQUIVALENT,
            reasons=(f"{name} on the folded map drops whole fold blocks ({R} source channels at once); on the original it drops channels independently",),
            codes=("RULE-5",),
        )
    if isinstance(layer, _AVG + _MAX):
        k = _tuple(layer.kernel_size, dims)
        s = _tuple(layer.stride if layer.stride else layer.kernel_size, dims)
        p = _tuple(layer.padding, dims)
        kind = "mean" if isinstance(layer, _AVG) else "max"
        literal = Literal.NOT_EQUIVALENT
        if size is not None:
            orig = tuple(((n + 2 * pp - kk) // ss + 1) * f for n, pp, kk, ss, f in zip(size, p, k, s, fold.r))
            folded = tuple((n * f + 2 * pp - kk) // ss + 1 for n, pp, kk, ss, f in zip(size, p, k, s, fold.r))
            if orig != folded:
                literal = Literal.SHAPES_DIFFER
        if k == s and all(pp == 0 for pp in p) and all(f % kk == 0 for f, kk in zip(fold.r, k)) and any(kk > 1 for kk in k):
            return Prediction(
                Outcome.HOLDS_IF, literal,
                reasons=(f"{name}(kernel={k}, stride={s}) on the folded map reduces whole sub-blocks of each fold block, never the original neighbourhood",),
                conditions=(f"it equals the {kind} over each group of {math.prod(k)} channels of the unfolded map, refolded with r/k={tuple(f // kk for f, kk in zip(fold.r, k))}",),
                codes=("RULE-6",),
            )
        if all(kk == 1 for kk in k) and all(ss == 1 for ss in s) and all(pp == 0 for pp in p):
            return Prediction(Outcome.HOLDS, Literal.EQUIVALENT, reasons=(f"{name} with kernel 1 and stride 1 is the identity",), codes=("RULE-6",))
        return Prediction(
            Outcome.FAILS, literal,
            reasons=(f"{name}(kernel={k}, stride={s}, padding={p}) windows straddle fold blocks: they mix pixels of different positions and channels",),
            codes=("RULE-6",),
        )
    if isinstance(layer, nn.Upsample):
        scale = layer.scale_factor
        scales = _tuple(scale, dims) if scale is not None else None
        if scales is not None and all(float(sc) == 1.0 for sc in scales):
            return Prediction(Outcome.HOLDS, Literal.EQUIVALENT, reasons=("Upsample with scale 1 is the identity",), codes=("RULE-7",))
        if all(f == 1 for f in fold.r):
            return Prediction(Outcome.HOLDS, Literal.EQUIVALENT, reasons=("r = 1: folding is the identity",), codes=("RULE-7",))
        return Prediction(
            Outcome.FAILS, Literal.NOT_EQUIVALENT,
            reasons=(f"Upsample({layer.mode}, scale={scale}) on the folded map interleaves copies inside fold blocks: rows h*r+i go to (h*r+i)*s+t, not (h*s+t)*r+i",),
            codes=("RULE-7",),
        )
    raise FoldError(f"layer={name!r}: no rule for this layer type (pointwise, BatchNorm, GroupNorm, LayerNorm, Dropout, pooling, Upsample)", param="layer", value=name)


def fold_following(layer: nn.Module, fold: FoldSpec, channels: int) -> nn.Module:
    """The layer to apply on the folded map in place of ``layer`` on the original (when one exists).

    Pointwise and Dropout layers are reused; eval-mode BatchNorm and affine GroupNorm take the parameters
    of the first channel of each fold block (equal within blocks when the prediction holds); LayerNorm's
    affine parameters are folded; other layers are reused as they are (the literal construction).

    Example:
        >>> fold_following(nn.BatchNorm2d(8).eval(), FoldSpec.make(2), 8).num_features
        2
    """
    import copy

    R = fold.block
    first = fold_channel_map(channels, fold.r, fold.order, fold.dims).flatten(1)[:, 0]
    if isinstance(layer, _BN):
        new = type(layer)(channels // R, eps=layer.eps, momentum=layer.momentum, affine=layer.affine, track_running_stats=layer.track_running_stats)
        new = new.to(dtype=layer.running_mean.dtype if layer.running_mean is not None else torch.float32)
        with torch.no_grad():
            if layer.track_running_stats:
                new.running_mean.copy_(layer.running_mean[first])
                new.running_var.copy_(layer.running_var[first])
            if layer.affine:
                new.weight.copy_(layer.weight[first])
                new.bias.copy_(layer.bias[first])
        return new.train(layer.training)
    if isinstance(layer, nn.GroupNorm):
        new = nn.GroupNorm(layer.num_groups, channels // R, eps=layer.eps, affine=layer.affine).to(
            dtype=layer.weight.dtype if layer.affine else torch.float32
        )
        if layer.affine:
            with torch.no_grad():
                new.weight.copy_(layer.weight[first])
                new.bias.copy_(layer.bias[first])
        return new
    if isinstance(layer, nn.LayerNorm):
        from ..layout import depth_to_space

        shape = tuple(layer.normalized_shape)
        folded_shape = (shape[0] // R,) + tuple(n * f for n, f in zip(shape[1:], fold.r))
        new = nn.LayerNorm(folded_shape, eps=layer.eps, elementwise_affine=layer.elementwise_affine)
        if layer.elementwise_affine:
            new = new.to(layer.weight.dtype)
            with torch.no_grad():
                new.weight.copy_(depth_to_space(layer.weight, fold.r, fold.order, fold.dims))
                new.bias.copy_(depth_to_space(layer.bias, fold.r, fold.order, fold.dims))
        return new
    return copy.deepcopy(layer)


# ----------------------------------------------------------------------------------------------------------
# Space-to-depth of a map whose size is not a multiple of r (the unfold direction).


@dataclass(frozen=True)
class SpaceToDepthPrediction:
    """What restores the unfolded form of a big conv on a map of size ``size`` (not a multiple of ``r``).

    ``crop_exact``: cropping to ``floor(size/r)*r`` changes no output. ``pad_exact``: zero-padding to
    ``ceil(size/r)*r`` and keeping the first ``outputs`` outputs per axis is exact.
    """

    outcome: Outcome
    divisible: bool
    crop_to: Tuple[int, ...]
    pad_to: Tuple[int, ...]
    crop_exact: bool
    pad_exact: bool
    outputs: Tuple[int, ...]
    reasons: Tuple[str, ...] = field(default_factory=tuple)


def predict_space_to_depth(big: ConvSpec, r: Union[int, Sequence[int]], size: Sequence[int]) -> SpaceToDepthPrediction:
    """Predict how to unfold a big conv (kernel, stride, padding multiples of ``r``) on a map of ``size``.

    Example:
        >>> p = predict_space_to_depth(ConvSpec.make(2, 1, 4, 4, stride=2), 2, (7, 8))
        >>> p.divisible, p.crop_exact, p.pad_exact, p.crop_to
        (False, True, True, (6, 8))
    """
    fold = FoldSpec.make(r, "crd", big.dims)
    size = tuple(size)
    outputs = big.output_size(size)
    crop_to = tuple(n // f * f for n, f in zip(size, fold.r))
    pad_to = tuple(-(-n // f) * f for n, f in zip(size, fold.r))
    divisible = crop_to == size
    # Last input row read by the last output (padding excluded): (n_out-1)*S - P + K - 1.
    last_read = tuple((o - 1) * s - p + k - 1 for o, s, p, k in zip(outputs, big.stride, big.padding, big.effective_kernel))
    no_pad = all(p == 0 for p in big.padding)
    crop_exact = divisible or (all(lr < c for lr, c in zip(last_read, crop_to)) and all(c > 0 for c in crop_to))
    if crop_exact and big.padding_mode != "zeros" and not divisible:
        # Circular padding wraps to the (cropped) far edge: the padded values change unless there is no padding.
        crop_exact = no_pad
    pad_exact = big.padding_mode == "zeros" or divisible or no_pad
    reasons = []
    if divisible:
        reasons.append("every spatial size is a multiple of r")
    else:
        reasons.append(
            f"size {size} is not a multiple of r={fold.r}: space_to_depth needs cropping to {crop_to} "
            f"({'exact: the cropped pixels are never read' if crop_exact else 'not exact: outputs read the cropped pixels'}) "
            f"or zero-padding to {pad_to} and keeping the first {outputs} outputs "
            f"({'exact' if pad_exact else 'not exact: ' + big.padding_mode + ' padding wraps to the new edge'})"
        )
    outcome = Outcome.HOLDS if divisible else (Outcome.HOLDS_IF if crop_exact or pad_exact else Outcome.FAILS)
    return SpaceToDepthPrediction(outcome, divisible, crop_to, pad_to, crop_exact, pad_exact, outputs, tuple(reasons))
