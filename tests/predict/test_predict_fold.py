"""predict_fold: FOLD-7 with strides, groups kept by the fold, validity of custom foldings, no tensors (O(factors))."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch.overrides import TorchFunctionMode

from foldconv import ConvSpec, FoldSpec, Verdict, depth_to_space, fold_channel_map, plan_fold
from foldconv.padding import padded_source
from foldconv.predict import Outcome, folded_output_alignment, predict_fold, windows
from foldconv.predict.windows import literal_by_windows, pairs_own_channels
from foldconv.sweep import Point, run_point
from helpers import integer_tensor


def _literal_1d(n, r, k, s, p, d):
    """Observed verdict of the literal fold of Conv1d(r -> 1, k, s, p, d) on length n (integer data in
    [-2**20, 2**20], exact in float64: a coincidental equality has probability < 1e-6)."""
    x, w = integer_tensor((1, r, n), seed=n, bound=2**20), integer_tensor((1, r, k), seed=k, bound=2**20)
    try:
        ref = F.conv1d(x, w, stride=s, padding=p, dilation=d)
    except RuntimeError:
        return None  # the original cannot run
    try:
        lit = F.conv1d(depth_to_space(x, r, dims=1), depth_to_space(w, r, dims=1), stride=r * s, padding=r * p, dilation=d)
    except RuntimeError:
        return Verdict.INVALID
    if lit.shape != ref.shape:
        return Verdict.SHAPES_DIFFER
    return Verdict.EQUIVALENT if torch.equal(lit, ref) else Verdict.NOT_EQUIVALENT


@pytest.mark.claim("FOLD-7")
def test_dilation_passed_through_with_strides_1_to_3():
    """Exhaustive small configs: stride 1 always changes the size; stride > 1 may keep it, and then the values differ
    (unless every window reads only zero padding: both sides are then the bias)."""
    kept_size = 0
    for r, k, d, s, p, n in itertools.product((2, 3), (1, 2, 3), (2, 3), (1, 2, 3), (0, 1, 2), range(1, 13)):
        observed = _literal_1d(n, r, k, s, p, d)
        if observed is None:
            continue
        spec = ConvSpec.make(1, r, 1, k, stride=s, padding=p, dilation=d)
        if observed is Verdict.EQUIVALENT:
            reads = {i * s - p + t * d for i in range(spec.output_size((n,))[0]) for t in range(k)}
            assert not reads & set(range(n)), (r, k, d, s, p, n)
        assert predict_fold(spec, r, input_size=n).literal is observed, (r, k, d, s, p, n)
        generic = predict_fold(spec, r)
        assert generic.outcome is Outcome.HOLDS_IF and "FOLD-7" in generic.codes
        if s == 1:
            assert generic.literal is Verdict.SHAPES_DIFFER and observed in (Verdict.SHAPES_DIFFER, Verdict.INVALID)
        else:
            assert generic.literal is Verdict.NOT_EQUIVALENT and "unless" in generic.reason
            kept_size += observed is Verdict.NOT_EQUIVALENT
    assert kept_size > 0  # the case the old claim missed exists


@pytest.mark.claim("FOLD-7")
def test_the_stride_2_counterexample():
    """Conv2d(4, 2, 3, stride=2, padding=1, dilation=2), r=2, on 8x8: same output size, different values."""
    spec = ConvSpec.make(2, 4, 2, 3, stride=2, padding=1, dilation=2)
    assert predict_fold(spec, 2).literal is Verdict.NOT_EQUIVALENT  # was "output shapes differ"
    assert predict_fold(spec, 2, input_size=(8, 8)).literal is Verdict.NOT_EQUIVALENT
    row = run_point(Point("dilation", 2, 2, in_channels=4, out_channels=2, kernel=3, stride=2, padding=1, dilation=2, size=8), dtypes=())
    assert row["observed_literal"] == "not equivalent" and row["agree"]


@pytest.mark.claim("FOLD-4")
def test_a_depthwise_conv_keeps_groups_when_folded():
    p = predict_fold(ConvSpec.make(2, 32, 32, 3, padding=1, groups=32), 2)
    assert p.outcome is Outcome.HOLDS_IF and p.literal is Verdict.INVALID
    assert p.folded.groups == 8 and p.folded == plan_fold(ConvSpec.make(2, 32, 32, 3, padding=1, groups=32), 2).result
    assert any("groups=8" in c for c in p.conditions)
    row = run_point(Point("groups", 2, 2, in_channels=8, out_channels=8, kernel=3, padding=1, groups=8, size=5), dtypes=())
    assert row["agree"] and row["observed_conditioned"] == "equivalent" and "groups=2" in row["folded"]


def test_custom_folded_padding_that_torch_cannot_run_is_invalid():
    spec = ConvSpec.make(2, 4, 2, 3, padding=1, padding_mode="circular")
    p = predict_fold(spec, 2, folded_padding=9, input_size=(4, 4))  # 9 > the folded map's 8
    assert p.literal is Verdict.INVALID and p.outcome is Outcome.HOLDS_IF and "folded_padding" in p.reason
    x, w = integer_tensor((1, 4, 4, 4)), integer_tensor((2, 4, 3, 3))
    with pytest.raises(RuntimeError):
        F.conv2d(F.pad(depth_to_space(x, 2), [9] * 4, mode="circular"), depth_to_space(w, 2))


def test_replicate_padding_larger_than_the_input_is_valid():
    spec = ConvSpec.make(2, 2, 2, 3, padding=(5, 0), padding_mode="replicate")  # r=1 on the padded axis
    p = predict_fold(spec, (1, 2), input_size=(3, 4))
    assert p.outcome is Outcome.HOLDS, p.reason
    row = run_point(Point("modes", 2, (1, 2), in_channels=2, kernel=3, padding=5, padding_mode="replicate", size=3), dtypes=())
    assert row["predicted"] != "invalid" and row["agree"], row


@pytest.mark.parametrize("mode,padding,size", [("circular", 5, 4), ("reflect", 4, 4)])
def test_padding_torch_refuses_is_invalid(mode, padding, size):
    p = predict_fold(ConvSpec.make(2, 4, 2, 3, padding=padding, padding_mode=mode), (1, 1), input_size=size)
    assert p.outcome is Outcome.INVALID and p.reason.startswith("padding=")
    with pytest.raises(RuntimeError):
        torch.nn.Conv2d(4, 2, 3, padding=padding, padding_mode=mode)(torch.zeros(1, 4, size, size))


# ------------------------------------------------------------------------------------------------------
# No tensors, O(factors): closed forms against tensor references.

class _NoTorch(TorchFunctionMode):
    """Fails on any torch function call (tensor creation included) inside the block."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        raise AssertionError(f"a prediction called torch: {func}")


@pytest.mark.claim("RULE-13")
def test_predictions_touch_no_tensor_for_huge_channel_counts_and_sizes():
    specs = [
        ConvSpec.make(2, 2**36, 4, 3, padding=1),
        ConvSpec.make(2, 2**36, 2**36, 3, padding=1, groups=2**34),
        ConvSpec.make(2, 2**20, 8, 3, stride=2, padding=1, dilation=2, padding_mode="circular"),
    ]
    with _NoTorch():
        for spec in specs:
            for kwargs in ({}, {"input_size": (4096, 4096)}, {"input_order": "dcr", "folded_stride": 3, "input_size": 4096}):
                p = predict_fold(spec, 4, **kwargs)
                assert p.outcome is not Outcome.INVALID, p.reason


@pytest.mark.claim("RULE-13")
def test_windows_enumerate_only_outputs_that_touch_padding(monkeypatch):
    calls = []
    original = windows._taps
    monkeypatch.setattr(windows, "_taps", lambda *a: calls.append(a[0]) or original(*a))
    spec = ConvSpec.make(2, 16, 4, 3, padding=1, padding_mode="circular")
    assert predict_fold(spec, 4, input_size=(4096, 4096)).outcome is Outcome.HOLDS
    assert 0 < len(calls) <= 8  # 4096 * 4096 outputs, 2 axes, one border output each side
    calls.clear()
    predict_fold(spec, 4, folded_stride=(3, 4), folded_padding=(2, 5), input_size=(4096, 4096))
    assert len(calls) <= 16


def _windows_reference(spec, fold, size, stride_f, padding_f, channels_ok):
    """The per-output enumeration the closed form replaced (every output of every axis)."""
    out = spec.output_size(size)
    per_axis = []
    for a in range(spec.dims):
        n, k, s, p, d, f = size[a], spec.kernel_size[a], spec.stride[a], spec.padding[a], spec.dilation[a], fold.r[a]
        kinds = []
        for i in range(out[a]):
            o = {(t, u, q, u) for t in range(k) for u in range(f) if (q := padded_source(i * s - p + t * d, n, spec.padding_mode)) is not None}
            l = {(t2 // f, t2 % f, q // f, q % f) for t2 in range(f * k)
                 if (q := padded_source(i * stride_f[a] - padding_f[a] + t2 * d, n * f, spec.padding_mode)) is not None}
            kinds.append((o == l and bool(o), not o, not l))
        per_axis.append(kinds)
    for combo in itertools.product(*per_axis):
        if any(c[1] for c in combo) and any(c[2] for c in combo):
            continue
        if not (channels_ok and all(c[0] for c in combo)):
            return Verdict.NOT_EQUIVALENT
    return Verdict.EQUIVALENT


@st.composite
def window_cases(draw):
    dims = draw(st.sampled_from([1, 2]))
    r = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    k, s, d = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    p = draw(st.integers(0, 4))
    mode = draw(st.sampled_from(["zeros", "circular", "reflect", "replicate"]))
    n = draw(st.integers(max(1, d * (k - 1) + 1 - 2 * p), 12))
    if mode == "circular":
        n = max(n, p)
    if mode == "reflect":
        n = max(n, p + 1)
    spec = ConvSpec.make(dims, 1, 1, k, stride=s, padding=p, dilation=d, padding_mode=mode)
    fold = FoldSpec.make(r)
    out = spec.output_size((n,) * dims)
    # A folded stride and padding that keep the output length (the only case the windows decide).
    stride_f, padding_f = [], []
    for a in range(dims):
        options = [(S2, P2) for S2 in range(1, 3 * r[a] * s + 1) for P2 in range(0, r[a] * p + 4)
                   if (n * r[a] + 2 * P2 - d * (r[a] * k - 1) - 1) // S2 + 1 == out[a] and n * r[a] + 2 * P2 >= d * (r[a] * k - 1) + 1]
        if not options:
            options = [(r[a] * s, r[a] * p)]
        S2, P2 = draw(st.sampled_from(options))
        stride_f.append(S2)
        padding_f.append(P2)
    return spec, fold, (n,) * dims, tuple(stride_f), tuple(padding_f), draw(st.booleans())


@pytest.mark.claim("RULE-12")
@given(window_cases())
def test_closed_form_windows_equal_the_enumeration(case):
    spec, fold, size, stride_f, padding_f, channels_ok = case
    assert literal_by_windows(spec, fold, size, stride_f, padding_f, channels_ok=channels_ok) is \
        _windows_reference(spec, fold, size, stride_f, padding_f, channels_ok)


@st.composite
def channel_cases(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    r = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    names = ("c",) + {1: ("rw",), 2: ("rh", "rw"), 3: ("rd", "rh", "rw")}[dims]
    groups = draw(st.integers(1, 4))
    G = groups * draw(st.integers(1, 3))
    return FoldSpec.make(r, tuple(draw(st.permutations(names)))), tuple(draw(st.permutations(names))), G * math.prod(r), groups


@pytest.mark.claim("RULE-12")
@given(channel_cases())
def test_closed_form_channel_pairing_equals_the_channel_maps(case):
    fold, x_order, C, g = case
    x_map = fold_channel_map(C, fold.r, x_order, dims=fold.dims).flatten(1)
    w_map = fold_channel_map(C // g, fold.r, fold.order, dims=fold.dims).flatten(1)
    group = torch.arange(x_map.shape[0]) // w_map.shape[0]
    expected = torch.equal(x_map, group[:, None] * (C // g) + w_map.repeat(g, 1))
    assert pairs_own_channels(C, g, fold, x_order) is expected


@given(st.integers(1, 12), st.integers(1, 4), st.integers(1, 3), st.integers(1, 9), st.integers(1, 40))
def test_folded_output_alignment_closed_form(out_len, r, stride, folded_stride, folded_out_len):
    hits = sum(1 for j in range(out_len) if (j * r * stride) % folded_stride == 0 and j * r * stride // folded_stride < folded_out_len)
    assert folded_output_alignment(out_len, folded_out_len, r=r, stride=stride, folded_stride=folded_stride) == (hits, out_len)
