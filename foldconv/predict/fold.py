"""Predict the literal fold of a conv, and the conditioned fold :func:`foldconv.fold_conv` builds, without tensors.

The literal fold pixel-shuffles the weight (``order``) and the input (``input_order``, default: the same),
uses stride ``folded_stride`` (default ``r*S``) and padding ``folded_padding`` (default ``r*P``), and passes
dilation, groups and padding mode through unchanged, as the motivating question writes it. Four steps, each a
small function: :func:`_validate` (malformed request -> INVALID), :func:`_literal` (the rules FOLD-3..9),
:func:`foldconv.predict.windows.literal_by_windows` (exact verdict for a concrete input size, RULE-12) and
:func:`_conditioned` (the plan of :func:`foldconv.fold.plan_fold`). The cost grows with the number of factors,
never with the channel count or the input size.

Example:
    >>> predict_fold(ConvSpec.make(2, 256, 64, 3, padding=1), 16, input_size=(4096, 4096)).outcome.value
    'holds'
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Optional, Sequence, Tuple, Union

from torch import nn

from .._validate import IntOrTuple, conv_output_size, per_axis_ints
from ..check import Verdict
from ..errors import FoldError, fold_error
from ..fold import groups_aligned, plan_fold, require_foldable
from ..layout import normalize_order
from ..padding import require_padding_fits
from ..specs import ConvSpec, FoldSpec
from .outcome import Outcome, Prediction, invalid
from .windows import literal_by_windows, orders_equivalent, pairs_own_channels

__all__ = ["predict_fold", "coerce_fold"]


@dataclass(frozen=True)
class _Request:
    spec: ConvSpec
    fold: FoldSpec
    input_order: Tuple[str, ...]
    stride: Tuple[int, ...]  # on the folded map
    padding: Tuple[int, ...]  # on the folded map
    input_size: Optional[Tuple[int, ...]]
    custom_stride: bool
    custom_padding: bool


def coerce_fold(fold: Union[FoldSpec, IntOrTuple], dims: int, order: Union[str, Sequence[str], None] = None, *, param: str) -> FoldSpec:
    """:meth:`FoldSpec.coerce` with errors about the fold itself naming the caller's parameter (``r`` or ``fold``).

    Example:
        >>> coerce_fold(2, 1, param="r").r
        (2,)
    """
    try:
        return FoldSpec.coerce(fold, dims, order)
    except FoldError as err:
        if err.param in ("r", "fold") and err.param != param:
            raise fold_error(param, fold.r if isinstance(fold, FoldSpec) else fold, err.rule or str(err)) from None
        raise


def _validate(conv, r, order, input_order, folded_stride, folded_padding, input_size) -> _Request:
    spec = conv if isinstance(conv, ConvSpec) else ConvSpec.from_module(conv)
    dims = spec.dims
    fold = coerce_fold(r, dims, order, param="r")
    if input_order is None:
        x_order = fold.order
    else:
        try:
            x_order = normalize_order(input_order, dims)
        except FoldError as err:
            raise fold_error("input_order", input_order, err.rule or str(err)) from None
    stride = tuple(f * s for f, s in zip(fold.r, spec.stride))
    padding = tuple(f * p for f, p in zip(fold.r, spec.padding))
    if folded_stride is not None:
        stride = per_axis_ints(folded_stride, dims, "folded_stride", 1)
    if folded_padding is not None:
        padding = per_axis_ints(folded_padding, dims, "folded_padding", 0)
    size = None
    if input_size is not None:
        size = per_axis_ints(input_size, dims, "input_size", 1)
        out = conv_output_size(size, spec.kernel_size, spec.stride, spec.padding, spec.dilation)
        if any(o < 1 for o in out):
            raise fold_error("input_size", size, f"gives the conv an empty output {out} (kernel extent {spec.effective_kernel})")
        require_padding_fits(size, spec.padding, spec.padding_mode, param="padding")
    return _Request(spec, fold, x_order, stride, padding, size, folded_stride is not None, folded_padding is not None)


@dataclass(frozen=True)
class _LiteralVerdict:
    verdict: Verdict
    reasons: Tuple[str, ...]
    codes: Tuple[str, ...]
    same_order: bool


def _dilation_shape(req: _Request, dilated: List[int]) -> Tuple[Verdict, str]:
    """FOLD-7 without an input size: is the output size known to change?

    Per axis with ``A = n + 2P - d(K-1) - 1``, the literal's numerator is ``r*A - (r-1)(d-1)``: with ``S = 1``
    the size always shrinks; with ``S > 1`` it stays ``floor(A/S) + 1`` iff ``r*(A mod S) >= (r-1)(d-1)``.
    """
    spec = req.spec
    if any(spec.stride[a] == 1 for a in dilated):
        return Verdict.SHAPES_DIFFER, ""
    rule = " and ".join(
        f"{req.fold.r[a]}*((n+2*{spec.padding[a]}-{spec.dilation[a] * (spec.kernel_size[a] - 1) + 1}) mod {spec.stride[a]}) "
        f">= {(req.fold.r[a] - 1) * (spec.dilation[a] - 1)}"
        for a in dilated
    )
    return Verdict.NOT_EQUIVALENT, f"the output size changes too unless {rule} on axis size n (give input_size to decide)"


def _size_verdict(req: _Request) -> Tuple[Verdict, List[str], Optional[Tuple[int, ...]]]:
    """With an input size: INVALID when torch cannot run the literal conv, SHAPES_DIFFER when its size differs."""
    if req.input_size is None:
        return Verdict.EQUIVALENT, [], None
    spec, fold = req.spec, req.fold
    out = conv_output_size(req.input_size, spec.kernel_size, spec.stride, spec.padding, spec.dilation)
    folded_size = tuple(n * f for n, f in zip(req.input_size, fold.r))
    lit_out = conv_output_size(folded_size, tuple(f * k for f, k in zip(fold.r, spec.kernel_size)), req.stride, req.padding, spec.dilation)
    try:
        require_padding_fits(folded_size, req.padding, spec.padding_mode, param="folded_padding", what="the folded map")
        if any(o < 1 for o in lit_out):
            raise fold_error("input_size", req.input_size, f"gives the literal folded conv an empty output {lit_out}")
    except FoldError as err:  # the rules still say why the forms differ
        return Verdict.INVALID, [f"{err}: torch cannot run the literal folded conv"], out
    return (Verdict.SHAPES_DIFFER if lit_out != out else Verdict.EQUIVALENT), [], out


def _differences(req: _Request, out: Optional[Tuple[int, ...]], channels_ok: bool, same_order: bool) -> Tuple[List[str], List[str], List[str]]:
    """The rules the literal breaks (FOLD-2, 4, 6, 7, 8, 9): (why it differs, why it agrees anyway, codes)."""
    spec, fold, dims = req.spec, req.fold, req.spec.dims
    differs: List[str] = []
    agrees: List[str] = []
    codes: List[str] = []
    aligned = groups_aligned(spec.in_channels, spec.groups, fold)  # in_channels % prod(r) == 0 here
    if not channels_ok and not same_order:
        differs.append(f"input folded in order {' '.join(req.input_order)!r} but weight in {fold.order_string!r}: "
                       "the sum pairs weights with other channels' pixels")
        codes.append("FOLD-9")
    if not channels_ok and not aligned:
        differs.append(f"groups={spec.groups} are not aligned with fold blocks in order {fold.order_string!r}: folded channels mix groups")
        codes.append("FOLD-4")
    if channels_ok and not (same_order and aligned):
        agrees.append(f"the input order {' '.join(req.input_order)!r} undoes the group misalignment of the weight order "
                      f"{fold.order_string!r}: every folded group still pairs each weight with its own channel")
        codes.append("RULE-12")
    if any(spec.dilation[a] > 1 and fold.r[a] > 1 for a in range(dims)):
        differs.append(f"dilation={spec.dilation} passed through spreads the folded taps over other fold blocks")
        codes.append("FOLD-7")
    mode_axes = [a for a in range(dims) if spec.padding_mode in ("reflect", "replicate") and spec.padding[a] > 0 and fold.r[a] > 1]
    if mode_axes:
        why = ("reflection reverses the sub-pixel order within a block" if spec.padding_mode == "reflect"
               else "replication copies a block edge that holds other channels")
        differs.append(f"padding_mode={spec.padding_mode!r} with padding on folded axes {mode_axes}: {why}")
        codes.append("FOLD-6")
    default_stride = tuple(f * s for f, s in zip(fold.r, spec.stride))
    single = [o == 1 for o in out] if out is not None else [False] * dims  # one output: the stride never acts
    if any(sf != sd and not one for sf, sd, one in zip(req.stride, default_stride, single)):
        differs.append(f"folded stride {req.stride} is not r*S={default_stride}: folded output i lines up with original "
                       "output j only where i*S' = j*r*S")
        codes.append("FOLD-8")
    default_padding = tuple(f * p for f, p in zip(fold.r, spec.padding))
    if req.padding != default_padding:
        differs.append(f"folded padding {req.padding} is not r*P={default_padding}: the windows are shifted")
        codes.append("FOLD-2")
    return differs, agrees, codes


def _literal(req: _Request) -> _LiteralVerdict:
    """The literal construction's verdict and the rules that decide it."""
    spec, fold, R = req.spec, req.fold, req.fold.block
    same_order = orders_equivalent(fold.order, req.input_order, r=fold.r, channels=spec.in_channels)
    per_group = spec.in_channels // spec.groups
    if per_group % R or (spec.in_channels // R) % spec.groups:
        reason = f"each group's {per_group} channel(s) cannot fill a fold block of {R}: the grouped weight cannot be folded as is"
        return _LiteralVerdict(Verdict.INVALID, (reason,), ("FOLD-4",), same_order)
    verdict, reasons, out = _size_verdict(req)
    channels_ok = pairs_own_channels(spec.in_channels, spec.groups, fold, req.input_order)
    differs, agrees, codes = _differences(req, out, channels_ok, same_order)
    reasons += agrees + differs
    if differs and verdict is Verdict.EQUIVALENT:
        verdict = Verdict.NOT_EQUIVALENT
    elif not differs and verdict is Verdict.SHAPES_DIFFER:
        reasons.append("output sizes differ")
    if req.input_size is None:
        dilated = [a for a in range(spec.dims) if spec.dilation[a] > 1 and fold.r[a] > 1]
        scaled = req.stride == tuple(f * x for f, x in zip(fold.r, spec.stride)) and req.padding == tuple(f * x for f, x in zip(fold.r, spec.padding))
        if dilated and scaled:
            verdict, extra = _dilation_shape(req, dilated)
            reasons += [extra] if extra else []
    elif verdict not in (Verdict.SHAPES_DIFFER, Verdict.INVALID):
        # With a concrete size the window index maps decide exactly, including degenerate windows that read only
        # padding (where a wrong stride or padding mode can coincide with the right one).
        exact = literal_by_windows(spec, fold, req.input_size, req.stride, req.padding, channels_ok=channels_ok)
        if exact is Verdict.EQUIVALENT and verdict is not Verdict.EQUIVALENT:
            reasons.append("degenerate: every window where the forms differ reads only padding values that coincide")
            codes.append("RULE-12")
        elif exact is not Verdict.EQUIVALENT and verdict is Verdict.EQUIVALENT:
            reasons.append("the window index maps differ for this input size")
            codes.append("RULE-12")
        verdict = exact
    return _LiteralVerdict(verdict, tuple(reasons), tuple(codes), same_order)


def _conditioned(req: _Request, lit: _LiteralVerdict) -> Prediction:
    """HOLDS_IF with fold_conv's plan and the changes it makes, or FAILS when plan_fold refuses."""
    spec = req.spec
    reasons, codes = list(lit.reasons), list(lit.codes)
    try:
        plan = plan_fold(spec, req.fold)
    except FoldError as err:
        if spec.padding_mode in ("reflect", "replicate"):
            codes.append("FOLD-6")
        if not any("padding_mode" in r for r in reasons):
            reasons.append(str(err))
        return Prediction(Outcome.FAILS, lit.verdict, None, (), tuple(dict.fromkeys(reasons)), tuple(dict.fromkeys(codes)))
    conditions = []
    if not lit.same_order:
        conditions.append(f"fold the input in the weight's order {req.fold.order_string!r}")
    if plan.dilation_expanded:
        conditions.append(f"expand the dilated kernel to the zero-filled dense kernel r*(d*(k-1)+1)={plan.result.kernel_size} "
                          f"(density {plan.kernel_density:.3g})")
    if plan.result.groups == 1 and spec.groups > 1:
        conditions.append(f"use groups=1 with the block-diagonal weight ({spec.groups}x the stored parameters)")
    elif plan.result.groups != spec.groups:
        conditions.append(f"use groups={plan.result.groups}: each folded group gathers {spec.groups // plan.result.groups} "
                          "original groups, with a block-diagonal weight inside it")
    if req.custom_stride and req.stride != plan.result.stride:
        conditions.append(f"use stride r*S={plan.result.stride} on the folded map")
    if req.custom_padding and req.padding != plan.result.padding:
        conditions.append(f"use padding r*P={plan.result.padding} on the folded map")
    if lit.verdict is Verdict.INVALID and plan.result.groups == spec.groups:
        conditions.append("fold the weight with fold_conv")
    return Prediction(Outcome.HOLDS_IF, lit.verdict, plan.result, tuple(conditions), tuple(dict.fromkeys(reasons)),
                      tuple(dict.fromkeys(codes)), plan.kernel_density)


def predict_fold(
    conv: Union[ConvSpec, nn.Module],
    r: Union[FoldSpec, IntOrTuple],
    order: Union[str, Sequence[str], None] = None,
    *,
    input_order: Union[str, Sequence[str], None] = None,
    folded_stride: Optional[IntOrTuple] = None,
    folded_padding: Optional[IntOrTuple] = None,
    input_size: Optional[IntOrTuple] = None,
) -> Prediction:
    """Predict the literal fold and the conditioned fold of ``conv`` by ``r`` (no tensors involved).

    ``folded_stride``, ``folded_padding`` and ``input_size`` (spatial sizes) take an int or one value per axis.
    Without ``input_size`` the verdict is the one for generic sizes; with it, it is exact. A malformed request
    gives ``Outcome.INVALID`` whose reason names the parameter.

    Args:
        conv: a :class:`ConvSpec` or an ``nn.Conv1d/2d/3d``.
        r: the fold factor: an int (every spatial axis), one per axis, or a FoldSpec.
        order: the weight's channel order, an alias or einops axes (default ``"crd"``, or the FoldSpec's).
        input_order: the order the input is folded in (default: ``order``).
        folded_stride: the folded conv's stride, ints >= 1 (default ``r * stride``).
        folded_padding: the folded conv's padding, ints >= 0 (default ``r * padding``).
        input_size: the unfolded input's spatial size, ints >= 1 (default: none, the generic verdict).

    Returns:
        A :class:`Prediction`: ``outcome`` (HOLDS, HOLDS_IF, FAILS or INVALID), ``literal`` (the checker's
        verdict on the literal fold), ``folded`` (the folded ConvSpec), ``conditions``, ``reasons``, ``codes``.
        A malformed argument gives INVALID with the FoldError's message as its reason (nothing is raised).

    Example:
        >>> p = predict_fold(ConvSpec.make(2, 256, 64, 3, padding=1), 16)
        >>> p.outcome.value, p.folded.kernel_size
        ('holds', (48, 48))
        >>> predict_fold(ConvSpec.make(2, 4, 4, 3, padding=1, padding_mode="reflect"), 2).outcome.value
        'fails'
        >>> predict_fold(ConvSpec.make(2, 4, 4, 3, dilation=2), 2).conditions[0][:30]
        'expand the dilated kernel to t'
        >>> predict_fold(ConvSpec.make(2, 4, 4, 3), 2, folded_stride=0).reason
        'folded_stride=0: must be an integer >= 1 or one per spatial axis'
    """
    try:
        req = _validate(conv, r, order, input_order, folded_stride, folded_padding, input_size)
    except FoldError as err:
        return invalid(err)
    spec = req.spec
    try:  # no fold block can be filled: a malformed request, worded as everywhere else
        require_foldable(spec.in_channels, req.fold)
    except FoldError as err:
        return invalid(err, "FOLD-3")
    lit = _literal(req)
    if lit.verdict is Verdict.EQUIVALENT:
        try:
            plan = plan_fold(spec, req.fold)
            folded, density = plan.result, plan.kernel_density
        except FoldError:  # a degenerate literal match (RULE-12) that fold_conv still refuses in general
            folded, density = None, 1.0
        return Prediction(Outcome.HOLDS, lit.verdict, folded, (), lit.reasons, lit.codes or ("FOLD-1",), density)
    return _conditioned(req, lit)
