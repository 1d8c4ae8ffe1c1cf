"""Predict the unfold direction: a big conv computed as space-to-depth and a small conv, on any map size.

A big conv (kernel, stride and padding multiples of ``r``, no dilation, a padding mode that commutes) is the
conv over ``G*prod(r)`` channels that :func:`foldconv.fold.unfold_conv` builds, applied to
``space_to_depth(x, r)``. That needs every spatial size divisible by ``r``; otherwise the map is cropped or
zero-padded first (RULE-8), and :class:`~foldconv.predict.outcome.SizeFix` says which of the two is exact.

Example:
    >>> p = predict_space_to_depth(ConvSpec.make(2, 1, 2, 4, stride=2), 2, (9, 9))
    >>> p.outcome.value, p.size_fix.crop_exact, p.size_fix.pad_exact
    ('holds with conditions', True, True)
"""
from __future__ import annotations

from typing import Tuple, Union

from torch import nn

from .._validate import IntOrTuple, conv_output_size, per_axis_ints
from ..check import Verdict
from ..errors import FoldError, fold_error
from ..fold import plan_unfold
from ..padding import require_padding_fits
from ..specs import ConvSpec, FoldSpec
from .fold import coerce_fold
from .outcome import Outcome, Prediction, SizeFix, invalid

__all__ = ["predict_space_to_depth"]


def _crop_count_kept(n: int, c: int, out: int, k: int, s: int, p: int) -> bool:
    """Cropping one axis from ``n`` to ``c`` rows keeps its output count."""
    return c == n or (c > 0 and conv_output_size((c,), (k,), (s,), (p,), (1,))[0] == out)


def _crop_read(n: int, c: int, out: int, k: int, s: int, p: int, mode: str) -> bool:
    """Some window of one axis reads what cropping it from ``n`` to ``c`` rows changes: a row in ``[c, n)``, or
    (a padding mode that wraps) the padding, whose source moves to the new edge."""
    if c == n:
        return False
    if mode != "zeros" and p > 0:
        return True
    first = max(0, -(-(c - k + 1 + p) // s))  # first window that ends at row c or later
    last = min(out - 1, (n - 1 + p) // s)  # last window that starts before row n
    return first <= last


def _only_padding(n: int, out: int, k: int, s: int, p: int, mode: str) -> bool:
    """Every window of one axis lies in zero padding: every output of the conv is its bias alone."""
    return mode == "zeros" and all(o * s - p + k - 1 < 0 or o * s - p > n - 1 for o in range(out))


def _size_fix(big: ConvSpec, fold: FoldSpec, size: Tuple[int, ...], outputs: Tuple[int, ...]) -> Tuple[SizeFix, bool]:
    """The size fixes, and whether every output is the bias alone (an axis read only in zero padding)."""
    crop_to = tuple(n // f * f for n, f in zip(size, fold.r))
    pad_to = tuple(-(-n // f) * f for n, f in zip(size, fold.r))
    axes = list(zip(size, crop_to, outputs, big.kernel_size, big.stride, big.padding))
    counts = all(_crop_count_kept(n, c, o, k, s, p) for n, c, o, k, s, p in axes)
    read = any(_crop_read(n, c, o, k, s, p, big.padding_mode) for n, c, o, k, s, p in axes)
    # An output reads a cropped row along one axis only if no other axis puts its window in zero padding: when
    # one axis does for every output, every output is the bias in both forms, whatever the crop removes.
    bias_only = any(_only_padding(n, o, k, s, p, big.padding_mode) for n, _, o, k, s, p in axes)
    crop_exact = counts and (not read or bias_only)
    # Zero rows added at the end are what zero padding would have supplied; a wrapping padding moves its source.
    pad_exact = all(t == n or big.padding_mode == "zeros" or p == 0 for n, t, p in zip(size, pad_to, big.padding))
    return SizeFix(crop_to == size, crop_to, pad_to, crop_exact, pad_exact, outputs), bias_only and read and counts


def predict_space_to_depth(
    big: Union[ConvSpec, nn.Module], r: Union[FoldSpec, IntOrTuple], input_size: IntOrTuple
) -> Prediction:
    """Predict whether ``big`` on a map of spatial size ``input_size`` can run as its unfolded form, and how.

    HOLDS when every size is a multiple of ``r``; HOLDS_IF when cropping or zero-padding the map first is exact
    (``size_fix`` says which); FAILS when neither is, or when ``big`` has no unfolded form (kernel, stride or
    padding not multiples of ``r``, dilation, reflect/replicate padding on a folded axis: the reason is
    :func:`foldconv.fold.plan_unfold`'s); INVALID for a malformed request or one torch cannot run.

    Args:
        big: the big strided conv, a :class:`ConvSpec` or an ``nn.Conv1d/2d/3d``.
        r: the fold factor: an int (every spatial axis), one per axis, or a FoldSpec.
        input_size: the spatial size of the map ``big`` reads, an int or one per axis, each >= 1.

    Returns:
        A :class:`Prediction`: ``outcome``, ``folded`` (the unfolded ConvSpec), ``conditions``, ``reasons`` and
        ``size_fix`` (``divisible``, ``crop_to``/``crop_exact``, ``pad_to``/``pad_exact``). A malformed argument
        gives INVALID with the FoldError's message as its reason (nothing is raised).

    Example:
        >>> p = predict_space_to_depth(ConvSpec.make(2, 1, 4, 4, stride=2), 2, (7, 8))
        >>> p.size_fix.divisible, p.size_fix.crop_exact, p.size_fix.pad_exact, p.size_fix.crop_to
        (False, True, True, (6, 8))
        >>> predict_space_to_depth(ConvSpec.make(2, 1, 4, 3), 2, (8, 8)).outcome.value
        'fails'
    """
    try:
        spec = big if isinstance(big, ConvSpec) else ConvSpec.from_module(big)
        fold = coerce_fold(r, spec.dims, param="r")
        size = per_axis_ints(input_size, spec.dims, "input_size", 1)
        outputs = conv_output_size(size, spec.kernel_size, spec.stride, spec.padding, spec.dilation)
        if any(o < 1 for o in outputs):
            raise fold_error("input_size", size, f"gives the big conv an empty output {outputs}")
        require_padding_fits(size, spec.padding, spec.padding_mode, param="padding")
    except FoldError as err:
        return invalid(err)
    try:
        plan = plan_unfold(spec, fold)
    except FoldError as err:
        return Prediction(Outcome.FAILS, Verdict.INVALID, reasons=(f"no unfolded form: {err}",), codes=("RULE-8",))
    fix, degenerate = _size_fix(spec, fold, size, outputs)
    if fix.divisible:
        return Prediction(Outcome.HOLDS, Verdict.EQUIVALENT, plan.result, reasons=("every spatial size is a multiple of r",),
                          codes=("RULE-8",), density=plan.kernel_density, size_fix=fix)
    crop = ("exact: every output is the bias alone (an axis whose every window reads only zero padding)" if degenerate
            else "exact: the cropped pixels are never read" if fix.crop_exact else "not exact: outputs read the cropped pixels")
    pad = "exact" if fix.pad_exact else f"not exact: {spec.padding_mode} padding wraps to the new edge"
    reason = (f"size {size} is not a multiple of r={fold.r}: space_to_depth needs cropping to {fix.crop_to} ({crop}) "
              f"or zero-padding to {fix.pad_to} and keeping the first {outputs} outputs ({pad})")
    conditions = tuple(
        text for text, ok in ((f"crop the input to {fix.crop_to}", fix.crop_exact),
                              (f"zero-pad the input to {fix.pad_to} and keep the first {outputs} outputs", fix.pad_exact)) if ok
    )
    outcome = Outcome.HOLDS_IF if conditions else Outcome.FAILS
    codes = ("RULE-8", "RULE-12") if degenerate else ("RULE-8",)
    return Prediction(outcome, Verdict.INVALID, plan.result if conditions else None, conditions, (reason,), codes,
                      plan.kernel_density, fix)
