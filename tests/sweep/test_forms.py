"""The fold point's forms: layout gather maps equal the library's functions, pieces of a big conv equal the
whole, draws keep every sum exact and the false-"equivalent" bound, bfloat16 errors never reach torch's
bfloat16 convolution, and a wrong folded stride is decided from shapes without running the conv."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import foldconv.sweep.forms as forms
from foldconv.check import Verdict
from foldconv.check.exact import EXACT_LIMIT, false_equivalent_bound
from foldconv.errors import FoldError
from foldconv.fold import fold_weight
from foldconv.layout import depth_to_space
from foldconv.specs import ConvSpec, FoldSpec
from foldconv.sweep import Point, observe_point, single_thread
from foldconv.sweep.forms import FALSE_EQUIVALENT, FoldForms, GatherMap, MapCache, SharedDraws, conv_nd, draw_plan

AXES = {1: ("c", "rw"), 2: ("c", "rh", "rw"), 3: ("c", "rd", "rh", "rw")}


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():  # as the sweep runs: small convs on a busy machine crawl with a thread pool
        yield


@st.composite
def folds(draw):
    dims = draw(st.sampled_from([1, 2, 3]))
    r = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    order = " ".join(draw(st.permutations(AXES[dims])))
    return dims, r, order


@given(folds(), st.integers(1, 3), st.integers(1, 3))
def test_input_maps_are_depth_to_space(fold, groups_of_blocks, size):
    dims, r, order = fold
    shape = (1, groups_of_blocks * math.prod(r)) + (size,) * dims
    m = GatherMap.of(lambda t: depth_to_space(t, r, order, dims=dims), shape)
    x = torch.randint(-99, 100, (3,) + shape[1:], dtype=torch.float64)
    assert torch.equal(m.apply(x.reshape(3, -1)).reshape((3,) + m.shape[1:]), depth_to_space(x, r, order, dims=dims))


@given(folds(), st.sampled_from([1, 2, 4]), st.integers(1, 2), st.integers(1, 3), st.integers(1, 2))
def test_weight_maps_are_fold_weight(fold, groups, blocks_per_group, kernel, dilation):
    dims, r, order = fold
    shape = (2 * groups, blocks_per_group * math.prod(r)) + (kernel,) * dims  # in_channels = groups * blocks * R
    try:
        expected_groups = fold_weight(torch.zeros(shape, dtype=torch.float64), r, order, groups=groups, dilation=dilation).groups
    except FoldError:
        with pytest.raises(FoldError):
            GatherMap.of(lambda t: fold_weight(t, r, order, groups=groups, dilation=dilation).weight, shape)
        return
    m = GatherMap.of(lambda t: (lambda fw: (fw.weight, fw.groups))(fold_weight(t, r, order, groups=groups, dilation=dilation)), shape)
    w = torch.randint(-99, 100, shape, dtype=torch.float64)
    assert m.meta == expected_groups
    assert torch.equal(m.apply(w.reshape(1, -1)).reshape(m.shape), fold_weight(w, r, order, groups=groups, dilation=dilation).weight)


def test_a_function_that_is_not_a_gather_is_refused():
    for not_a_gather in (lambda t: t * 2, lambda t: t + t.flip(-1), lambda t: t[..., :1] + t[..., 1:2]):
        with pytest.raises(ValueError, match="not a gather"):
            GatherMap.of(not_a_gather, (1, 4))


def test_map_cache_keeps_errors_and_stays_within_its_budget():
    cache, calls = MapCache(budget=10, largest=8), []

    def flip(t):
        calls.append(t.shape)
        return t.flip(-1)

    assert all(isinstance(cache.get("flip", flip, (1, 4)), forms.Direct) for _ in range(forms.MAP_AFTER - 1)) and not calls
    first = cache.get("flip", flip, (1, 4))  # the request that builds the map
    assert cache.get("flip", flip, (1, 4)) is first and len(calls) == 2  # built once (the map and its probe)
    for _ in range(forms.MAP_AFTER):
        cache.get("flip", flip, (1, 7))  # 4 + 7 > 10 elements: the least recently used map goes
    assert len(cache) == 1 and cache.get("flip", flip, (1, 4)) is not first
    assert isinstance(cache.get("flip", flip, (1, 9)), forms.Direct)  # larger than `largest`: never a map
    assert isinstance(cache.get("flip", flip, (1, 9)), forms.Direct) and all(key[1] != (1, 9) for key in cache._maps)
    refusals = []

    def refuse(t):
        refusals.append(1)
        raise FoldError("x=1: refused")

    for _ in range(forms.MAP_AFTER - 1):
        cache.get("refuse", refuse, (1, 2))  # no map yet: the function runs (and refuses) when applied
    for _ in range(2):
        with pytest.raises(FoldError, match="refused"):
            cache.get("refuse", refuse, (1, 2))
    assert refusals == [1]  # the refusal is remembered, not recomputed


def test_draw_plan_keeps_every_sum_exact_and_the_bound():
    for products in (1, 27, 2048, 2049, 10_000, 1_700_000, 10**9):
        bound, trials = draw_plan(products)
        assert products * bound**2 + bound < EXACT_LIMIT  # every partial sum stays an exact float64 integer
        assert false_equivalent_bound(2, bound, trials) <= FALSE_EQUIVALENT
        assert trials == 1 or false_equivalent_bound(2, bound, trials - 1) > FALSE_EQUIVALENT  # the fewest trials
    assert draw_plan(1)[0] == 2**20 and draw_plan(2250)[1] == 1 and draw_plan(2251)[1] == 2


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_a_conv_in_pieces_equals_the_whole(dims, monkeypatch):
    """Above COLUMNS_BUDGET a conv runs per sample and per slab of output rows; the sums are the same."""
    monkeypatch.setattr(forms, "COLUMNS_BUDGET", 40)
    monkeypatch.setattr(forms, "_COLUMNS_CAP", 40)
    gen = torch.Generator().manual_seed(dims)
    for k, s, p, d, g, mode in itertools.product((1, 3), (1, 2), (0, 2), (1, 2), (1, 2), ("zeros", "circular", "replicate")):
        x = torch.randint(-9, 10, (2, 4) + (7,) * dims, generator=gen).double()
        w = torch.randint(-9, 10, (4, 4 // g) + (k,) * dims, generator=gen).double()
        b = torch.randint(-9, 10, (4,), generator=gen).double()
        conv = getattr(torch.nn, f"Conv{dims}d")(4, 4, k, s, p, d, g, padding_mode=mode).double()
        with torch.no_grad():
            conv.weight.copy_(w)
            conv.bias.copy_(b)
            assert torch.equal(conv_nd(x, w, b, (s,) * dims, (p,) * dims, (d,) * dims, g, mode), conv(x)), (k, s, p, d, g, mode)


def test_shared_draws_depend_on_the_seed_only():
    spec = ConvSpec.make(2, 4, 2, 3, padding=1)
    a, b = SharedDraws(spec, (5, 5), batch=2, seed=7), SharedDraws(spec, (5, 5), batch=2, seed=7)
    assert all(torch.equal(u, v) for u, v in zip(a.draws[0], b.draws[0]))
    assert not torch.equal(a.draws[0][0], SharedDraws(spec, (5, 5), batch=2, seed=8).draws[0][0])
    w, bias, x = a.draws[0]
    assert int(w.abs().max()) > 1024 and torch.equal(w, w.round())  # the wide range of one trial


def test_a_wrong_literal_fold_is_caught_on_every_trial_it_needs(monkeypatch):
    """Mutation: a literal form that drops one weight entry must be observed "not equivalent"."""
    spec, fold = ConvSpec.make(2, 8, 2, 3, padding=1), FoldSpec.make(2)
    shared, folded = SharedDraws(spec, (5, 5), batch=2, seed=0), FoldForms(spec, fold, (5, 5), maps=MapCache())
    assert shared.verdict(folded.literal) is Verdict.EQUIVALENT
    for _ in range(forms.MAP_AFTER - 1):
        folded._literal_map()
    real = folded._literal_map()  # the map
    broken = GatherMap(torch.where(torch.arange(real.index.numel()) == 5, 0, real.index + 1).reshape(real.shape).double())
    monkeypatch.setattr(folded, "_literal_map", lambda: broken)
    assert shared.verdict(folded.literal) is Verdict.NOT_EQUIVALENT


def test_a_wrong_folded_stride_is_decided_from_shapes(monkeypatch):
    """The literal form with folded stride 1 on a big 3-D map: torch's shape checks on meta tensors decide it."""
    p = Point("product", 3, 4, in_channels=128, out_channels=2, kernel=3, stride=2, padding=1, dilation=2, folded_stride=1, size=8)
    calls = []
    real = forms._CONV[3]
    monkeypatch.setitem(forms._CONV, 3, lambda x, w, b, stride, *args: calls.append((x.device.type, stride)) or real(x, w, b, stride, *args))
    _, obs = observe_point(p)
    assert obs.literal is Verdict.SHAPES_DIFFER
    assert ("meta", (1, 1, 1)) in calls and ("cpu", (1, 1, 1)) not in calls  # stride 1: the literal form, only on meta
    assert {stride for device, stride in calls if device == "cpu"} == {(2, 2, 2), (8, 8, 8)}  # the original and the library's form


def test_bfloat16_errors_never_run_a_bfloat16_conv(monkeypatch):
    """torch 2.14's CPU bfloat16 conv3d corrupts the heap for some strides: the error columns compute in float32
    from operands rounded to bfloat16 and round the result back."""
    seen = []
    for dims in (1, 2, 3):
        real = forms._CONV[dims]
        monkeypatch.setitem(forms._CONV, dims, lambda x, *args, real=real: seen.append(x.dtype) or real(x, *args))
    # stride 3 x r=3 = folded stride 9 on a 3-D map: the configuration family that crashed
    p = Point("product", 3, 3, in_channels=27, out_channels=2, kernel=3, stride=3, padding=1, size=12)
    _, obs = observe_point(p, (torch.float32, torch.bfloat16))
    assert torch.bfloat16 not in seen and torch.float32 in seen
    errors = dict(obs.errors)
    assert 0 < errors["float32"] < 1e-5 and 1e-4 < errors["bfloat16"] < 5e-2


def test_bfloat16_errors_match_the_rounded_float32_computation():
    spec, fold = ConvSpec.make(2, 8, 2, 3, padding=1), FoldSpec.make(2)
    folded = FoldForms(spec, fold, (6, 6))
    gen = torch.Generator().manual_seed(0)
    w, b, x = torch.randn(spec.weight_shape, generator=gen), torch.randn(2, generator=gen), torch.randn(2, 8, 6, 6, generator=gen)
    out = folded.conditioned(x.bfloat16(), w.bfloat16(), b.bfloat16())
    fw = fold_weight(w.bfloat16().float(), 2)
    by_hand = F.conv2d(depth_to_space(x.bfloat16().float(), 2), fw.weight, b.bfloat16().float(), 2, 2).bfloat16()
    assert out.dtype is torch.bfloat16 and torch.equal(out, by_hand)


@pytest.mark.parametrize("order", ["dcr", "focus"])
def test_a_large_dense_folded_conv_in_slabs_equals_the_whole(order, monkeypatch):
    """Above SLAB_WEIGHT_ELEMENTS the library's dense folded conv runs a slab of output channels at a time: the
    same verdicts, the same low-precision outputs; a weight entry dropped from one slab is caught."""
    spec, fold = ConvSpec.make(2, 8, 6, 3, padding=1, groups=2), FoldSpec.make(2, order)  # groups merge: a dense fold
    shared = SharedDraws(spec, (5, 5), batch=2, seed=3)
    whole = FoldForms(spec, fold, (5, 5), maps=MapCache())
    assert whole.plan.groups == 1
    w, b, x = shared.draws[0]
    expected = whole.conditioned(x, w, b)
    monkeypatch.setattr(forms, "SLAB_WEIGHT_ELEMENTS", 0)
    sliced = FoldForms(spec, fold, (5, 5), maps=MapCache())
    assert torch.equal(sliced.conditioned(x, w, b), expected)
    assert shared.verdict(sliced.conditioned) is Verdict.EQUIVALENT
    assert torch.equal(sliced.conditioned(x.bfloat16(), w.bfloat16(), b.bfloat16()), whole.conditioned(x.bfloat16(), w.bfloat16(), b.bfloat16()))
    real = forms.folded_weight_slabs

    def dropping(*args, **kwargs):
        for i, (first, last, slab) in enumerate(real(*args, **kwargs)):
            if i == 1:
                slab = slab.clone()
                slab.view(-1)[slab.view(-1).nonzero()[0]] = 0
            yield first, last, slab

    monkeypatch.setattr(forms, "folded_weight_slabs", dropping)
    assert shared.verdict(sliced.conditioned) is Verdict.NOT_EQUIVALENT
