"""Observe each point of the sweep: run the original and the folded forms and compare them exactly.

Every conv observation uses the integer-exact kernel of :mod:`foldconv.check.exact` (the one
:func:`~foldconv.check.check_equivalence` uses): integer weights, biases and inputs, float64, compared with
``torch.equal``. :func:`~foldconv.sweep.forms.draw_plan` picks the range and the number of trials: one
draw in about ``[-2**20, 2**20]`` while an output sums at most 2,250 products, a narrower range and a
second trial beyond, so that every partial sum stays exact and a false "equivalent" has probability <= 1e-6 per
point (only convolutions and layout ops run, all on the polynomial allow-list). Fold points that differ
only in their fold share their draws and the original's output, and fold through cached layout maps
(:mod:`foldconv.sweep.forms`).
The float32/bfloat16 errors are :func:`~foldconv.check.exact.relative_error` of the library's folded form
in that dtype against the float64 original, on unit-normal data; bfloat16 (and float16) are computed in
float32 from operands rounded to the dtype, the result rounded back to it (float32 accumulation, as the CPU
kernels do; torch 2.14's CPU bfloat16 conv3d corrupts the heap for some strides). The prediction
(:mod:`foldconv.predict`) never sees a tensor.

An :class:`Observation` is ``valid`` when the original computation runs and the request is well formed;
when torch refuses the original (circular padding wrapping more than once, a pooling window larger than
the map) the point is observed ``invalid`` and the predictor must say so too.
"""
from __future__ import annotations

import functools
import math
import zlib
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import einops
import torch
import torch.nn.functional as F

from ..check import Verdict, check_fold
from ..check.exact import combine, compare, integers, relative_error
from ..errors import FoldError
from ..fold import fold_weight, plan_fold, unfold_weight
from ..layout import depth_to_space, fold_channel_map, normalize_order, space_to_depth
from ..predict import (
    Outcome,
    Prediction,
    conditioned_following,
    fold_following,
    following_example,
    predict_fold,
    predict_following,
    predict_space_to_depth,
)
from ..specs import ConvSpec, FoldSpec
from .forms import FoldForms, SharedDraws, clear_caches, conv_nd, draw_plan
from .grid import Point

__all__ = ["Observation", "forget", "observe_fold_plainly", "observe_point", "observed_outcome"]


@dataclass(frozen=True)
class Observation:
    """What was measured at one point.

    ``valid``: the original ran and the request is well formed. ``literal``: verdict of the literal
    construction; ``conditioned``: of the library's equivalent form. ``errors``: ``(dtype, relative
    error)`` of the folded form per low-precision dtype. ``crop_exact``/``pad_exact``: the space-to-depth
    size fixes; ``detail_agrees``: they match the prediction's.
    """

    valid: bool
    literal: Verdict
    conditioned: Verdict
    errors: Tuple[Tuple[str, float], ...] = ()
    crop_exact: Optional[bool] = None
    pad_exact: Optional[bool] = None
    detail_agrees: bool = True


_REFUSED = Observation(False, Verdict.INVALID, Verdict.INVALID)


def observed_outcome(obs: Observation) -> Outcome:
    """The outcome the measurements show: invalid, else the literal form, then the library's conditioned form.

    Example:
        >>> observed_outcome(Observation(True, Verdict.NOT_EQUIVALENT, Verdict.EQUIVALENT)).value
        'holds with conditions'
    """
    if not obs.valid:
        return Outcome.INVALID
    if obs.literal is Verdict.EQUIVALENT:
        return Outcome.HOLDS
    if obs.conditioned is Verdict.EQUIVALENT:
        return Outcome.HOLDS_IF
    return Outcome.FAILS


def _attempt(run: Callable[[], torch.Tensor]) -> Optional[torch.Tensor]:
    """The output, or None where torch or the library refuses the computation."""
    try:
        return run()
    except (RuntimeError, FoldError):
        return None


_CONV_FIELDS = ("dims", "in_channels", "out_channels", "kernel", "stride", "padding", "dilation", "groups", "padding_mode", "size", "batch")
_SHARED: Dict[str, SharedDraws] = {}  # the last conv observed: consecutive points of a grid share it


def _shared(p: Point) -> SharedDraws:
    """The draws and original output of the point's conv and input size (seeded by them, not by the fold)."""
    key = "|".join(f"{k}={getattr(p, k)}" for k in _CONV_FIELDS)
    found = _SHARED.get(key)
    if found is None:
        spec = ConvSpec.make(p.dims, p.in_channels, p.out_channels, p.kernel, stride=p.stride, padding=p.padding,
                             dilation=p.dilation, groups=p.groups, padding_mode=p.padding_mode)
        found = SharedDraws(spec, (p.size,) * p.dims, batch=p.batch, seed=zlib.crc32(key.encode()))
        _SHARED.clear()
        _SHARED[key] = found
    return found


def forget() -> None:
    """Forget the shared draws, layout maps and plans of earlier points: the next point starts cold.

    Example:
        >>> forget()
    """
    _SHARED.clear()
    _fold_spec.cache_clear()
    clear_caches()


def _fold_point(p: Point, dtypes: Sequence[torch.dtype]) -> Tuple[Prediction, Observation]:
    shared = _shared(p)
    spec, size = shared.spec, shared.size
    fold = _fold_spec(p.r, p.order, p.dims)
    x_order = fold.order if p.input_order == "same" else normalize_order(p.input_order, p.dims)
    fstride = (p.folded_stride,) * p.dims if p.folded_stride else None
    pred = predict_fold(spec, fold, input_order=x_order, folded_stride=fstride, input_size=size)
    if shared.reference(0) is None or spec.in_channels % fold.block:  # torch refuses the original, or no block fills
        return pred, _REFUSED
    forms = FoldForms(spec, fold, size, x_order=x_order, folded_stride=fstride)
    literal = shared.verdict(forms.literal)
    if forms.plan is None:
        conditioned = Verdict.INVALID
    elif forms.literal_is_conditioned():
        conditioned = literal  # one computation: the literal form is the library's form
    else:  # the library's form depends on the fold only: once per fold for the whole group
        key = ("conditioned", fold)
        if key not in shared.memo:
            shared.memo[key] = shared.verdict(forms.conditioned)
        conditioned = shared.memo[key]
    errors: Tuple[Tuple[str, float], ...] = ()
    if forms.plan is not None and dtypes:
        key = ("errors", fold, tuple(dtypes))
        if key not in shared.memo:
            nw, nb, nx, ref = shared.normal()
            shared.memo[key] = tuple((str(dt).replace("torch.", ""), relative_error(forms.conditioned(nx.to(dt), nw.to(dt), nb.to(dt)), ref))
                                     for dt in dtypes)
        errors = shared.memo[key]
    return pred, Observation(True, literal, conditioned, errors)


def observe_fold_plainly(p: Point, *, trials: int = 2) -> Observation:
    """A fold point's exact observation the plain way: ``trials`` draws in ``[-1024, 1024]`` (2 trials: a false
    "equivalent" below 1e-6), each through the library's public functions (``depth_to_space``,
    ``fold_weight``, ``plan_fold``, a conv per form), nothing cached or shared between trials or points.

    The reference the sweep's own route is checked against (``tests/sweep``) and timed against
    (``benchmarks/sweep.py``); no error columns.

    Example:
        >>> obs = observe_fold_plainly(Point("orders", 2, 2, "crd", "dcr", in_channels=8, kernel=3, padding=1, size=5))
        >>> obs.literal.value, obs.conditioned.value
        ('not equivalent', 'equivalent')
    """
    spec = ConvSpec.make(p.dims, p.in_channels, p.out_channels, p.kernel, stride=p.stride, padding=p.padding,
                         dilation=p.dilation, groups=p.groups, padding_mode=p.padding_mode)
    fold = FoldSpec.make(p.r, p.order, p.dims)
    if spec.in_channels % fold.block:  # depth_to_space refuses the input: a malformed request, as r < 1 is
        return _REFUSED
    x_order = fold.order if p.input_order == "same" else normalize_order(p.input_order, p.dims)
    size = (p.size,) * p.dims
    stride_f = (p.folded_stride,) * p.dims if p.folded_stride else tuple(f * s for f, s in zip(fold.r, spec.stride))
    padding_f = tuple(f * q for f, q in zip(fold.r, spec.padding))
    try:
        plan: Optional[ConvSpec] = plan_fold(spec, fold).result
    except FoldError:
        plan = None
    gen = torch.Generator().manual_seed(p.seed())
    literal, conditioned = [], []
    for _ in range(trials):
        w, b = integers(spec.weight_shape, gen), integers((spec.out_channels,), gen)
        x = integers((p.batch, spec.in_channels) + size, gen)
        ref = _attempt(lambda: conv_nd(x, w, b, spec.stride, spec.padding, spec.dilation, spec.groups, spec.padding_mode))
        if ref is None:
            return _REFUSED
        literal.append(compare(ref, _attempt(lambda: conv_nd(
            depth_to_space(x, fold.r, x_order, dims=p.dims), depth_to_space(w, fold.r, fold.order, dims=p.dims), b,
            stride_f, padding_f, spec.dilation, spec.groups, spec.padding_mode))))

        def folded() -> torch.Tensor:
            fw = fold_weight(w, fold.r, fold.order, groups=spec.groups, dilation=spec.dilation)
            return conv_nd(depth_to_space(x, fold.r, fold.order, dims=p.dims), fw.weight, b, plan.stride, plan.padding, plan.dilation,
                           fw.groups, spec.padding_mode)

        conditioned.append(compare(ref, _attempt(folded)) if plan is not None else Verdict.INVALID)
    return Observation(True, combine(literal), combine(conditioned))


@functools.lru_cache(maxsize=1024)
def _fold_spec(r: Any, order: str, dims: int) -> FoldSpec:
    return FoldSpec.make(r, order, dims)


# ----------------------------------------------------------------------------------------------------------
# Following layers: the examples of the registry in foldconv.predict.following.

_BLOCKS = {1: "b g i w -> b g i w", 2: "b g i j h w -> b g (i j) h w", 3: "b g i j l d h w -> b g (i j l) d h w"}


def _close(reference: Optional[torch.Tensor], candidate: Optional[torch.Tensor]) -> Verdict:
    """Float64 comparison for the following layers (normalisations divide: exact integers are unavailable)."""
    verdict = compare(reference, candidate)
    if verdict is Verdict.NOT_EQUIVALENT and torch.allclose(reference, candidate, rtol=1e-12, atol=1e-12):
        return Verdict.EQUIVALENT
    return verdict


def _following_point(p: Point) -> Tuple[Prediction, Observation]:
    fold = FoldSpec.make(p.r, p.order, p.dims)
    gen = torch.Generator().manual_seed(p.seed())
    layer = following_example(p.following, p.out_channels, fold, gen)
    size = (p.size,) * p.dims
    pred = predict_following(layer, fold, p.out_channels, input_size=size)
    y = torch.randn((p.batch, p.out_channels) + size, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        original = _attempt(lambda: layer(y))
    if original is None:
        return pred, _REFUSED
    if p.following == "dropout_train":
        # The folded Dropout zeroes whole folded channels; the original's mask, folded, must be block-constant
        # for any folded dropout to produce it. With 8+ blocks per sample a mixed block appears w.p. ~1.
        torch.manual_seed(p.seed())
        mask = (layer(torch.ones((p.batch * 4, p.out_channels) + size, dtype=torch.float64)) != 0).double()
        blocks = einops.rearrange(mask[:, fold_channel_map(p.out_channels, fold.r, fold.order, dims=p.dims)], _BLOCKS[p.dims])
        literal = Verdict.EQUIVALENT if bool((blocks == blocks[:, :, :1]).all()) else Verdict.NOT_EQUIVALENT
        return pred, Observation(True, literal, Verdict.INVALID)
    folded_y = depth_to_space(y, fold.r, fold.order, dims=p.dims)
    with torch.no_grad():
        try:
            folded_layer = fold_following(layer, fold, p.out_channels)
            lhs = _attempt(lambda: folded_layer(folded_y))
        except FoldError:
            lhs = None
        literal = _close(depth_to_space(original, fold.r, fold.order, dims=p.dims), lhs)
        try:
            conditioned_form = conditioned_following(layer, fold, p.out_channels)
            conditioned = _close(lhs, _attempt(lambda: conditioned_form(y))) if lhs is not None else Verdict.INVALID
        except FoldError:
            conditioned = Verdict.INVALID
    return pred, Observation(True, literal, conditioned)


# ----------------------------------------------------------------------------------------------------------
# Space-to-depth (the unfold direction) and malformed requests.


def _strided_reference(p: Point, big: ConvSpec, size: Tuple[int, ...]):
    """The point's integer draws and the strided conv's output on them: ``(trials, w, b, x, ref)``, None when torch
    refuses the conv. Trials are stacked as groups (one input channel each): space_to_depth in "c rh rw" order keeps
    them apart."""
    gen = torch.Generator().manual_seed(p.seed())
    bound, trials = draw_plan(math.prod(big.kernel_size))
    w = integers((trials * big.out_channels, 1) + big.kernel_size, gen, bound)
    b = integers((trials * big.out_channels,), gen, bound)
    x = integers((p.batch, trials) + size, gen, bound)
    ref = _attempt(lambda: conv_nd(x, w, b, big.stride, big.padding, big.dilation, trials, big.padding_mode))
    return None if ref is None else (trials, w, b, x, ref)


def _s2d_point(p: Point) -> Tuple[Prediction, Observation]:
    big = ConvSpec.make(p.dims, 1, p.out_channels, p.kernel, stride=p.stride, padding=p.padding, padding_mode=p.padding_mode)
    size = (p.size,) * p.dims
    pred = predict_space_to_depth(big, p.r, size)
    fold = FoldSpec.make(p.r, "crd", p.dims)
    drawn = _strided_reference(p, big, size)
    if drawn is None:
        return pred, _REFUSED
    trials, w, b, x, ref = drawn
    small = unfold_weight(w, fold.r, "crd")
    s_stride = tuple(s // f for s, f in zip(big.stride, fold.r))
    s_pad = tuple(q // f for q, f in zip(big.padding, fold.r))

    def unfolded(xx: torch.Tensor) -> Optional[torch.Tensor]:
        return _attempt(lambda: conv_nd(space_to_depth(xx, fold.r, "crd", dims=p.dims), small.weight, b, s_stride, s_pad, (1,) * p.dims,
                                        trials, big.padding_mode))

    fix = pred.size_fix
    literal = compare(ref, unfolded(x))
    crop = x[(Ellipsis,) + tuple(slice(0, c) for c in fix.crop_to)]
    crop_ok = all(c > 0 for c in fix.crop_to) and compare(ref, unfolded(crop)) is Verdict.EQUIVALENT
    pad_out = unfolded(F.pad(x, [q for n, t in reversed(list(zip(size, fix.pad_to))) for q in (0, t - n)]))
    pad_ok = pad_out is not None and compare(ref, pad_out[(Ellipsis,) + tuple(slice(0, o) for o in fix.outputs)]) is Verdict.EQUIVALENT
    conditioned = Verdict.EQUIVALENT if (crop_ok or pad_ok) else Verdict.NOT_EQUIVALENT
    agrees = crop_ok == fix.crop_exact and pad_ok == fix.pad_exact
    return pred, Observation(True, literal, conditioned, crop_exact=crop_ok, pad_exact=pad_ok, detail_agrees=agrees)


_PAD_MODE = {"zeros": "constant", "circular": "circular"}


def _strided_spd_prediction(big: ConvSpec, r: int, size: Tuple[int, ...]) -> Prediction:
    """What SPD-1 predicts for a strided conv and its space-to-depth form: the literal unfold where
    :func:`~foldconv.predict.predict_space_to_depth` says it holds as is; otherwise the form of ``strided_to_spd``
    (the kernel zero-padded at its end to whole blocks, the input padded first and its end cut or zero-extended)."""
    base = predict_space_to_depth(big, r, size)
    if base.outcome in (Outcome.HOLDS, Outcome.INVALID):
        return base
    s, k, p = big.stride[0], big.kernel_size[0], big.padding[0]
    q = -(-k // s)
    outputs = big.output_size(size)[0]
    steps = []
    if k != q * s:
        steps.append(f"zero-pad the kernel at its end from {k} to {q * s} taps ({q} block{'s' if q > 1 else ''} of {s})")
    if p:
        steps.append(f"pad the input by {p} ({big.padding_mode}) before space_to_depth")
    steps.append(f"cut or zero-extend the padded input's end to {s * (outputs - 1 + q)} px per axis (strided_to_spd)")
    reason = f"{base.reason}; SPD-1: space_to_depth({s}) + a stride-1 {q}-tap conv is exact once the input and kernel are aligned"
    return Prediction(Outcome.HOLDS_IF, base.literal, None, ("; ".join(steps),), (reason,), ("SPD-1",))


def _strided_spd_point(p: Point) -> Tuple[Prediction, Observation]:
    """A strided conv against space-to-depth + a stride-1 conv, built here from first principles (not by
    ``strided_to_spd``, whose claim this checks): literally (the unfolded weight on ``space_to_depth(x)``, the
    padding divided by ``s``) and aligned (SPD-1: explicit padding, the end fitted, the kernel zero-padded)."""
    big = ConvSpec.make(p.dims, 1, p.out_channels, p.kernel, stride=p.stride, padding=p.padding, padding_mode=p.padding_mode)
    size = (p.size,) * p.dims
    pred = _strided_spd_prediction(big, p.stride, size)
    drawn = _strided_reference(p, big, size)
    if drawn is None:
        return pred, _REFUSED
    trials, w, b, x, ref = drawn
    s, k, pad, d = p.stride, p.kernel, p.padding, p.dims
    unit = (1,) * d

    def literal() -> torch.Tensor:
        if pad % s:
            raise FoldError(f"padding {pad} is not whole blocks of {s}")
        small = unfold_weight(w, s, "crd").weight  # a FoldError where the kernel is not whole blocks
        return conv_nd(space_to_depth(x, s, "crd", dims=d), small, b, unit, (pad // s,) * d, unit, trials, p.padding_mode)

    def aligned() -> torch.Tensor:
        q = -(-k // s)
        length = s * (ref.shape[-1] - 1 + q)
        xp = F.pad(x, [pad] * 2 * d, mode=_PAD_MODE[p.padding_mode]) if pad else x
        xp = xp[(Ellipsis,) + (slice(0, length),) * d]
        xp = F.pad(xp, [0, length - xp.shape[-1]] * d)
        wp = F.pad(w, [0, q * s - k] * d)
        return conv_nd(space_to_depth(xp, s, "crd", dims=d), unfold_weight(wp, s, "crd").weight, b, unit, (0,) * d, unit, trials, "zeros")

    return pred, Observation(True, compare(ref, _attempt(literal)), compare(ref, _attempt(aligned)))


def _invalid_point(p: Point) -> Tuple[Prediction, Observation]:
    spec = ConvSpec.make(p.dims, p.in_channels, p.out_channels, p.kernel, stride=p.stride, padding=p.padding)
    size = (p.size,) * p.dims
    pred = predict_fold(spec, p.r, p.order, input_size=size)
    try:
        fold = FoldSpec.make(p.r, p.order, p.dims)
    except FoldError:
        return pred, _REFUSED  # a malformed request: no such fold factor or order
    conv = spec.to_module(dtype=torch.float64)
    if _attempt(lambda: conv(torch.zeros((1, spec.in_channels) + size, dtype=torch.float64))) is None:
        return pred, _REFUSED  # the original cannot run on this input
    try:
        report = check_fold(conv, fold.r, fold.order, input_size=size, trials=1, dtypes=())
    except FoldError:
        return pred, _REFUSED  # no folded form: channels that fill no fold block, a malformed request like r < 1
    return pred, Observation(True, report.verdict, report.verdict)


def observe_point(p: Point, dtypes: Sequence[torch.dtype] = ()) -> Tuple[Prediction, Observation]:
    """Predict (no tensors) and observe (exact integer arithmetic) one point of the sweep.

    Example:
        >>> pred, obs = observe_point(Point("theorem", 2, 2, in_channels=4, kernel=3, padding=1, size=5))
        >>> pred.outcome.value, observed_outcome(obs).value, obs.literal.value
        ('holds', 'holds', 'equivalent')
    """
    if p.section == "invalid":
        return _invalid_point(p)
    if p.section == "following":
        return _following_point(p)
    if p.section == "space_to_depth":
        return _s2d_point(p)
    if p.section == "strided_spd":
        return _strided_spd_point(p)
    return _fold_point(p, dtypes)
