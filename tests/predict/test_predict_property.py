"""predict_fold and predict_space_to_depth against an independent exact observation, beyond the sweep's grid.

The sweep checks square r, equal sizes per axis and the default folded stride/padding. Here hypothesis draws
1-D, 2-D and 3-D convs with rectangular r (factors 1 on some axes), per-axis kernels, strides, paddings,
dilations, groups, every padding mode, odd sizes, an input order other than the weight's, and
folded_stride / folded_padding overrides; each prediction (tensors never seen) must equal the observation
(integer-exact float64 runs of the literal construction and of fold_conv's conditioned form).
"""
from __future__ import annotations

import itertools

import pytest
import torch
import torch.nn.functional as F
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from foldconv.check import Verdict
from foldconv.check.exact import combine, compare, integers
from foldconv.errors import FoldError
from foldconv.fold import fold_weight, plan_fold, unfold_weight
from foldconv.layout import depth_to_space, space_to_depth
from foldconv.predict import Outcome, predict_fold, predict_space_to_depth
from foldconv.specs import ConvSpec, FoldSpec
from helpers import examples

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
_FACTORS = {1: ("rw",), 2: ("rh", "rw"), 3: ("rd", "rh", "rw")}
SETTINGS = dict(max_examples=examples(60), deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])


def _conv(x, w, b, stride, padding, dilation, groups, mode, dims):
    if mode != "zeros" and any(p > 0 for p in padding):
        x = F.pad(x, [q for p in reversed(padding) for q in (p, p)], mode=mode)
        padding = (0,) * dims
    return _CONV[dims](x, w, b, stride, padding, dilation, groups)


def _attempt(run):
    try:
        return run()
    except (RuntimeError, FoldError):
        return None


def _orders(dims):
    return [" ".join(p) for p in itertools.permutations(("c",) + _FACTORS[dims])]


@st.composite
def fold_configs(draw):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    r = tuple(draw(st.sampled_from([1, 2, 2, 3])) for _ in range(dims))
    if dims == 3:
        r = tuple(min(f, 2) for f in r)
    block = 1
    for f in r:
        block *= f
    groups = draw(st.sampled_from([1, 1, 2]))
    in_channels = block * groups * draw(st.sampled_from([1, 2])) * draw(st.sampled_from([1, 1, 3])) // draw(st.sampled_from([1, 1, 2]))
    in_channels = max(groups, in_channels - in_channels % groups)
    out_channels = groups * draw(st.sampled_from([1, 2]))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    dilation = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(dims))
    mode = draw(st.sampled_from(["zeros", "zeros", "circular", "reflect", "replicate"]))
    size = tuple(draw(st.integers(1, 7 if dims < 3 else 4)) for _ in range(dims))
    order = draw(st.sampled_from(_orders(dims)))
    input_order = draw(st.sampled_from([None, None] + _orders(dims)))
    folded_stride = draw(st.sampled_from([None, None, None] + [tuple(draw(st.integers(1, 4)) for _ in range(dims))]))
    folded_padding = draw(st.sampled_from([None, None, None] + [tuple(draw(st.integers(0, 4)) for _ in range(dims))]))
    return dict(dims=dims, r=r, groups=groups, in_channels=in_channels, out_channels=out_channels, kernel=kernel,
                stride=stride, padding=padding, dilation=dilation, mode=mode, size=size, order=order,
                input_order=input_order, folded_stride=folded_stride, folded_padding=folded_padding)


def _observe_fold(c):
    """Outcome and literal verdict of one configuration, from integer-exact runs only."""
    dims = c["dims"]
    spec = ConvSpec.make(dims, c["in_channels"], c["out_channels"], c["kernel"], stride=c["stride"], padding=c["padding"],
                         dilation=c["dilation"], groups=c["groups"], padding_mode=c["mode"])
    fold = FoldSpec.make(c["r"], c["order"], dims)
    if spec.in_channels % fold.block:  # depth_to_space refuses the input (no block fills): a malformed request
        with pytest.raises(FoldError, match=f"multiple of prod\\(r\\)={fold.block}"):
            depth_to_space(integers((1, spec.in_channels) + c["size"], torch.Generator()), fold.r, fold.order, dims=dims)
        return spec, Outcome.INVALID, Verdict.INVALID
    x_order = c["input_order"] or c["order"]
    stride_f = c["folded_stride"] or tuple(f * s for f, s in zip(fold.r, spec.stride))
    padding_f = c["folded_padding"] or tuple(f * q for f, q in zip(fold.r, spec.padding))
    try:
        plan = plan_fold(spec, fold).result
    except FoldError:
        plan = None
    gen = torch.Generator().manual_seed(0)
    literal, conditioned = [], []
    for _ in range(2):
        w, b = integers(spec.weight_shape, gen), integers((spec.out_channels,), gen)
        x = integers((2, spec.in_channels) + c["size"], gen)
        ref = _attempt(lambda: _conv(x, w, b, spec.stride, spec.padding, spec.dilation, spec.groups, spec.padding_mode, dims))
        if ref is None:
            return spec, Outcome.INVALID, Verdict.INVALID
        literal.append(compare(ref, _attempt(lambda: _conv(
            depth_to_space(x, fold.r, x_order, dims=dims), depth_to_space(w, fold.r, fold.order, dims=dims), b,
            stride_f, padding_f, spec.dilation, spec.groups, spec.padding_mode, dims))))
        if plan is None:
            conditioned.append(Verdict.INVALID)
            continue
        fw = fold_weight(w, fold.r, fold.order, groups=spec.groups, dilation=spec.dilation)
        conditioned.append(compare(ref, _attempt(lambda: _conv(
            depth_to_space(x, fold.r, fold.order, dims=dims), fw.weight, b, plan.stride, plan.padding, plan.dilation,
            fw.groups, spec.padding_mode, dims))))
    lit = combine(literal)
    if lit is Verdict.EQUIVALENT:
        return spec, Outcome.HOLDS, lit
    return spec, (Outcome.HOLDS_IF if combine(conditioned) is Verdict.EQUIVALENT else Outcome.FAILS), lit


@settings(**SETTINGS)
@given(fold_configs())
def test_predict_fold_matches_the_exact_observation(c):
    spec, outcome, literal = _observe_fold(c)
    pred = predict_fold(spec, c["r"], c["order"], input_order=c["input_order"], folded_stride=c["folded_stride"],
                        folded_padding=c["folded_padding"], input_size=c["size"])
    assert (pred.outcome, pred.literal) == (outcome, literal), (c, pred.reason)


@st.composite
def s2d_configs(draw):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    r = tuple(draw(st.sampled_from([1, 2, 2, 3])) for _ in range(dims))
    if dims == 3:
        r = tuple(min(f, 2) for f in r)
    kernel = tuple(f * draw(st.integers(1, 2)) + draw(st.sampled_from([0, 0, 0, 1])) for f in r)
    stride = tuple(f * draw(st.integers(1, 2)) + draw(st.sampled_from([0, 0, 0, 1])) for f in r)
    padding = tuple(f * draw(st.integers(0, 1)) for f in r)
    mode = draw(st.sampled_from(["zeros", "zeros", "circular", "reflect", "replicate"]))
    size = tuple(draw(st.integers(1, 9 if dims < 3 else 5)) for _ in range(dims))
    return dict(dims=dims, r=r, kernel=kernel, stride=stride, padding=padding, mode=mode, size=size)


def _observe_s2d(c):
    dims, size = c["dims"], c["size"]
    big = ConvSpec.make(dims, 1, 2, c["kernel"], stride=c["stride"], padding=c["padding"], padding_mode=c["mode"])
    gen = torch.Generator().manual_seed(0)
    w, b = integers(big.weight_shape, gen), integers((2,), gen)
    x = integers((1, 1) + size, gen)
    ref = _attempt(lambda: _conv(x, w, b, big.stride, big.padding, big.dilation, 1, big.padding_mode, dims))
    if ref is None:
        return big, Outcome.INVALID
    fold = FoldSpec.make(c["r"], "crd", dims)
    if any(k % f or s % f or q % f for k, s, q, f in zip(big.kernel_size, big.stride, big.padding, fold.r)) or (
            big.padding_mode in ("reflect", "replicate") and any(q and f > 1 for q, f in zip(big.padding, fold.r))):
        return big, Outcome.FAILS
    small = unfold_weight(w, fold.r, "crd")
    s_stride = tuple(s // f for s, f in zip(big.stride, fold.r))
    s_pad = tuple(q // f for q, f in zip(big.padding, fold.r))

    def unfolded(xx):
        return _attempt(lambda: _conv(space_to_depth(xx, fold.r, "crd", dims=dims), small.weight, b, s_stride, s_pad,
                                      (1,) * dims, 1, big.padding_mode, dims))

    if compare(ref, unfolded(x)) is Verdict.EQUIVALENT:
        return big, Outcome.HOLDS
    crop = tuple(n - n % f for n, f in zip(size, fold.r))
    pad = tuple(-(-n // f) * f for n, f in zip(size, fold.r))
    crop_ok = all(n > 0 for n in crop) and compare(ref, unfolded(x[(Ellipsis,) + tuple(slice(0, n) for n in crop)])) is Verdict.EQUIVALENT
    padded = unfolded(F.pad(x, [q for n, t in reversed(list(zip(size, pad))) for q in (0, t - n)]))
    pad_ok = padded is not None and compare(ref, padded[(Ellipsis,) + tuple(slice(0, o) for o in ref.shape[2:])]) is Verdict.EQUIVALENT
    return big, Outcome.HOLDS_IF if (crop_ok or pad_ok) else Outcome.FAILS


@settings(**SETTINGS)
@given(s2d_configs())
def test_predict_space_to_depth_matches_the_exact_observation(c):
    big, outcome = _observe_s2d(c)
    pred = predict_space_to_depth(big, c["r"], c["size"])
    assert pred.outcome == outcome, (c, pred.reason)


@pytest.mark.parametrize("r", [(1, 2), (2, 1), (3, 2)])
def test_rectangular_r_is_predicted_per_axis(r):
    spec = ConvSpec.make(2, 12, 4, (3, 1), padding=(1, 0))
    assert predict_fold(spec, r, input_size=(5, 7)).outcome is Outcome.HOLDS
