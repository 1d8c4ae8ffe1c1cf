"""The fold theorem and each of its conditions, proven with exact (integer-valued float64) checks."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import foldconv.fold as fold_module
from foldconv import (
    ConvSpec,
    FoldError,
    FoldSpec,
    Verdict,
    check_equivalence,
    check_fold,
    depth_to_space,
    derived,
    fold_channel_map,
    fold_conv,
    fold_weight,
    plan_fold,
    unfold_conv,
    unfold_weight,
)
from foldconv.fold import folded_groups, groups_aligned
from foldconv.layout import normalize_order
from foldconv.specs import conv_class
from helpers import integer_weights

FACTORS = {1: ("rw",), 2: ("rh", "rw"), 3: ("rd", "rh", "rw")}


@st.composite
def fold_cases(draw):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    r = tuple(draw(st.integers(1, 3 if dims < 3 else 2)) for _ in range(dims))
    g_in = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 1, 2, 0]))  # 0: depthwise, groups smaller than a fold block
    in_channels = g_in * math.prod(r) * max(groups, 1)
    groups = groups or in_channels
    out_channels = groups * draw(st.integers(1, 2))
    kernel = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    stride = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    dilation = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    mode = draw(st.sampled_from(["zeros", "zeros", "circular"]))
    if mode == "circular":
        padding = tuple(min(p, 1) for p in padding)
    order = tuple(draw(st.permutations(("c",) + FACTORS[dims])))
    bias = draw(st.booleans())
    batch = draw(st.integers(1, 2))
    conv = conv_class(dims)(in_channels, out_channels, kernel, stride, padding, dilation, groups, bias, mode)
    size = tuple(d * (k - 1) + 1 + draw(st.integers(0, 3)) for d, k in zip(dilation, kernel))
    return conv, r, order, size, batch


@pytest.mark.claim("FOLD-1")
def test_motivating_example_256_channels_3x3_is_48x48_stride_16():
    conv = torch.nn.Conv2d(256, 4, 3, padding=1)
    big = fold_conv(conv, 16)
    assert (big.in_channels, big.kernel_size, big.stride, big.padding) == (1, (48, 48), (16, 16), (16, 16))
    # The README's figures for 14x14 (folded: 1x224x224): equal parameters and MACs.
    spec, folded = ConvSpec.make(2, 256, 256, 3, padding=1), plan_fold(ConvSpec.make(2, 256, 256, 3, padding=1), FoldSpec.make(16)).result
    assert spec.params == folded.params == 590_080
    assert spec.macs((14, 14)) == folded.macs((224, 224)) == 115_605_504
    report = check_fold(conv, 16, input_size=(4, 5), trials=2)
    assert report.verdict is Verdict.EQUIVALENT and report.exact is True
    assert report.false_equivalent_bound < 1e-5


@pytest.mark.claim("FOLD-1", "FOLD-2", "FOLD-3", "FOLD-4", "FOLD-5", "FOLD-7")
@given(fold_cases())
def test_fold_is_exact_over_random_configurations(case):
    conv, r, order, size, batch = case
    big = fold_conv(conv, r, order)
    spec, res = ConvSpec.from_module(conv), ConvSpec.from_module(big)
    assert res.stride == tuple(f * s for f, s in zip(r, spec.stride))
    assert res.padding == tuple(f * p for f, p in zip(r, spec.padding))
    assert res.kernel_size == tuple(f * k for f, k in zip(r, spec.effective_kernel))
    assert res.in_channels == spec.in_channels // math.prod(r)
    report = check_fold(conv, r, order, input_size=size, batch=batch, trials=1, dtypes=())
    assert report.verdict is Verdict.EQUIVALENT and report.exact, report.summary()


@pytest.mark.claim("FOLD-2")
def test_rectangular_factors_and_per_axis_stride_padding():
    conv = torch.nn.Conv2d(12, 3, (3, 2), stride=(2, 1), padding=(1, 0))
    big = fold_conv(conv, (2, 3))
    assert (big.kernel_size, big.stride, big.padding, big.in_channels) == ((6, 6), (4, 3), (2, 0), 2)
    assert check_fold(conv, (2, 3), input_size=(7, 5))


@pytest.mark.claim("FOLD-3")
def test_partial_fold_keeps_g_channels():
    conv = torch.nn.Conv2d(3 * 16, 5, 3)
    big = fold_conv(conv, 4)
    assert big.in_channels == 3 and big.weight.shape == (5, 3, 12, 12)
    assert check_fold(conv, 4, input_size=(6, 6))


@pytest.mark.claim("FOLD-4")
@pytest.mark.parametrize(
    "in_ch,groups,r,order,folded",
    [
        (16, 2, 2, "crd", 2),
        (16, 4, 2, "crd", 4),
        (16, 2, 2, "dcr", 1),
        (16, 2, 2, "focus", 1),
        (8, 8, 2, "crd", 2),  # depthwise: each folded channel holds 4 whole groups, 2 folded groups remain
        (24, 4, 2, "crd", 2),  # group size 6, block 4: folded groups of lcm(4, 6) = 12 channels
        (16, 2, (1, 2), "rh c rw", 2),  # a factor of 1 before c is harmless
        (16, 2, (2, 1), "rh c rw", 1),
    ],
)
def test_groups_survive_as_far_as_blocks_and_groups_nest(in_ch, groups, r, order, folded):
    fold = FoldSpec.make(r, order)
    assert folded_groups(in_ch, groups, fold) == folded
    assert groups_aligned(in_ch, groups, fold) is (folded == groups)
    conv = torch.nn.Conv2d(in_ch, 2 * groups, 3, groups=groups, padding=1)
    big = fold_conv(conv, r, order)
    plan = plan_fold(ConvSpec.from_module(conv), fold)
    assert big.groups == plan.result.groups == folded
    assert plan.groups_expanded is (folded != groups) and plan.dense_groups is (folded == 1 < groups)
    assert check_fold(conv, r, order, input_size=(5, 4))


@pytest.mark.claim("FOLD-4")
def test_depthwise_conv_folds_to_a_grouped_conv_with_the_same_parameters():
    """Issue 10.13: Conv2d(32, 32, 3, groups=32), r=2 is Conv2d(8 -> 32, 6x6, s2, p2, groups=8), 1,184 parameters."""
    conv = torch.nn.Conv2d(32, 32, 3, padding=1, groups=32)
    big = fold_conv(conv, 2)
    assert (big.in_channels, big.out_channels, big.kernel_size, big.stride, big.padding, big.groups) == (
        8, 32, (6, 6), (2, 2), (2, 2), 8
    )
    assert sum(p.numel() for p in big.parameters()) == 1_184  # dense folding would store 32*8*36 + 32 = 9,248
    assert ConvSpec.from_module(conv).params == 32 * 9 + 32
    report = check_fold(conv, 2, input_size=(6, 5), trials=2)
    assert report.verdict is Verdict.EQUIVALENT and report.exact, report.summary()
    # Each output channel still reads one original channel: 9 non-zero taps of its 4 x 36 folded entries.
    assert plan_fold(ConvSpec.from_module(conv), 2).kernel_density == pytest.approx(1 / 4)
    assert int((big.weight != 0).sum()) <= 32 * 9


def _folded_groups_from_channel_map(in_ch: int, groups: int, fold: FoldSpec) -> int:
    """The most contiguous folded groups whose source channels are one run of whole original groups."""
    cmap = fold_channel_map(in_ch, fold.r, fold.order, dims=fold.dims).flatten(1)  # (G, R)
    folded, per_group = cmap.shape[0], in_ch // groups
    best = 1
    for g in range(1, folded + 1):
        if folded % g or (in_ch // g) % per_group:
            continue
        runs = [set(cmap[j * folded // g : (j + 1) * folded // g].flatten().tolist()) for j in range(g)]
        if all(run == set(range(j * in_ch // g, (j + 1) * in_ch // g)) for j, run in enumerate(runs)):
            best = g
    return best


@pytest.mark.claim("FOLD-4")
@given(
    per_group=st.integers(1, 8),
    groups=st.integers(1, 6),
    r=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    order=st.permutations(("c", "rh", "rw")),
)
def test_closed_form_folded_groups_match_the_channel_map(per_group, groups, r, order):
    """gcd(C/R, g) for a channel-major order, else 1: what the index map says, computed without one."""
    fold = FoldSpec.make(r, tuple(order))
    in_ch = per_group * groups
    if in_ch % fold.block:
        return
    assert folded_groups(in_ch, groups, fold) == _folded_groups_from_channel_map(in_ch, groups, fold)


@pytest.mark.claim("FOLD-4")
def test_plan_fold_needs_no_memory_proportional_to_channels():
    """Issue 10.10: 2**36 channels used to allocate a 512 GB channel map; the plan is arithmetic."""
    spec = ConvSpec.make(2, 2**36, 2**36, 3, groups=2**34, padding=1)
    plan = plan_fold(spec, 2)
    assert plan.result.groups == 2**34 and plan.result.in_channels == 2**34
    with pytest.raises(FoldError, match="MAX_KERNEL_ELEMENTS") as info:
        plan.result.to_module()
    assert info.value.param == "spec"


@pytest.mark.claim("FOLD-5")
def test_circular_padding_commutes():
    conv = torch.nn.Conv2d(8, 3, 3, padding=1, padding_mode="circular")
    big = fold_conv(conv, 2)
    assert big.padding_mode == "circular" and big.padding == (2, 2)
    assert check_fold(conv, 2, input_size=(5, 6))


def _manual_fold(conv: torch.nn.Module, r: int, **overrides) -> torch.nn.Module:
    """A folded conv built by hand, so that conditions fold_conv refuses can still be observed."""
    spec = ConvSpec.from_module(conv)
    fields = dict(
        in_channels=spec.in_channels // r**spec.dims,
        kernel_size=tuple(r * k for k in spec.kernel_size),
        stride=tuple(r * s for s in spec.stride),
        padding=tuple(r * p for p in spec.padding),
    )
    fields.update(overrides)
    big = spec.replace(**fields).to_module(dtype=conv.weight.dtype)
    with torch.no_grad():
        big.weight.copy_(depth_to_space(conv.weight, r, overrides.get("weight_order", "crd")) if "weight_order" not in overrides else big.weight)
        if conv.bias is not None:
            big.bias.copy_(conv.bias)
    return big


def _integer_conv(conv: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    return integer_weights(conv, seed, 9)


@pytest.mark.claim("FOLD-6")
@pytest.mark.parametrize("mode", ["reflect", "replicate"])
def test_reflect_and_replicate_break_the_fold(mode):
    conv = _integer_conv(torch.nn.Conv2d(4, 2, 3, padding=1, padding_mode=mode))
    big = _manual_fold(conv, 2)
    assert big.padding_mode == mode
    report = check_equivalence(conv, big, (1, 4, 5, 5), input_transform=lambda x: depth_to_space(x, 2))
    assert report.verdict is Verdict.NOT_EQUIVALENT and report.exact is True
    assert report.first_mismatch is not None
    # The interior (outputs that read no padding) still agrees: the failure is the padding alone.
    x = report.counterexample
    inner = conv(x)[..., 1:-1, 1:-1]
    assert torch.equal(inner, big(depth_to_space(x, 2))[..., 1:-1, 1:-1])
    with pytest.raises(FoldError, match=f"padding_mode='{mode}'"):
        fold_conv(conv, 2)


@pytest.mark.claim("FOLD-6")
def test_zeros_mode_control_for_the_reflect_case():
    conv = _integer_conv(torch.nn.Conv2d(4, 2, 3, padding=1))
    assert check_equivalence(conv, _manual_fold(conv, 2), (1, 4, 5, 5), input_transform=lambda x: depth_to_space(x, 2))


@pytest.mark.claim("FOLD-7")
def test_dilation_passed_through_fails_and_dense_kernel_holds():
    conv = _integer_conv(torch.nn.Conv2d(4, 2, 3, dilation=2, padding=2))
    naive = _manual_fold(conv, 2, dilation=(2, 2))
    report = check_equivalence(conv, naive, (1, 4, 9, 9), input_transform=lambda x: depth_to_space(x, 2))
    assert report.verdict is Verdict.SHAPES_DIFFER
    big = fold_conv(conv, 2)
    assert big.kernel_size == (10, 10) and big.dilation == (1, 1)
    plan = plan_fold(ConvSpec.from_module(conv), 2)
    assert plan.dilation_expanded and plan.kernel_density == pytest.approx(9 / 25)
    assert int((big.weight != 0).sum()) <= 9 * 4 * 2
    assert check_fold(conv, 2, input_size=(9, 9))


@pytest.mark.claim("FOLD-7")
def test_dilation_passed_through_always_changes_the_output_size():
    """With stride r*S and padding r*P, a dilation d > 1 kept on the folded kernel changes the output size."""
    for r, k, d, p, n in itertools.product((2, 3), (1, 2, 3), (2, 3), (0, 1, 2), range(6, 12)):
        original = ConvSpec.make(1, r, 1, k, padding=p, dilation=d)
        if (n + 2 * p - original.effective_kernel[0]) < 0:
            continue
        literal = ConvSpec.make(1, 1, 1, r * k, stride=r, padding=r * p, dilation=d)
        try:
            literal_size = literal.output_size((r * n,))
        except FoldError:  # the dilated folded kernel no longer fits: an empty output
            literal_size = (0,)
        assert original.output_size((n,)) != literal_size, (r, k, d, p, n)


@pytest.mark.claim("FOLD-7")
def test_dilation_passed_through_with_a_size_matching_padding_still_fails():
    conv = _integer_conv(torch.nn.Conv1d(2, 1, 2, dilation=2))  # length 8 -> 6
    naive = conv_class(1)(1, 1, 4, stride=2, padding=1, dilation=2).double()  # padding picked so 16 -> 6
    with torch.no_grad():
        naive.weight.copy_(depth_to_space(conv.weight, 2, dims=1))
        naive.bias.copy_(conv.bias)
    report = check_equivalence(conv, naive, (1, 2, 8), input_transform=lambda x: depth_to_space(x, 2, dims=1))
    assert report.reference_shape == report.candidate_shape == (1, 1, 6)
    assert report.verdict is Verdict.NOT_EQUIVALENT and report.exact


@pytest.mark.claim("FOLD-8")
@pytest.mark.parametrize("r,s,s_folded", [(2, 1, 1), (4, 1, 2), (4, 2, 4), (3, 1, 2)])
def test_folded_stride_not_multiple_of_r_gives_superset(r, s, s_folded):
    conv = _integer_conv(torch.nn.Conv2d(r * r, 2, 3, stride=s, padding=1))
    big = fold_conv(conv, r)
    loose = _manual_fold(conv, r, stride=(s_folded, s_folded))
    x = torch.randint(-5, 6, (1, r * r, 9, 9)).double()
    ref, out = conv(x), loose(depth_to_space(x, r))
    assert torch.equal(big(depth_to_space(x, r)), ref)
    matched = 0
    for i in range(out.shape[-2]):
        for k in range(out.shape[-1]):
            hit_i, hit_k = (i * s_folded) % (r * s) == 0, (k * s_folded) % (r * s) == 0
            if hit_i and hit_k:
                j, l = i * s_folded // (r * s), k * s_folded // (r * s)
                if j < ref.shape[-2] and l < ref.shape[-1]:
                    assert torch.equal(out[..., i, k], ref[..., j, l])
                    matched += 1
    if (r * s) % s_folded == 0:
        assert matched == ref.shape[-2] * ref.shape[-1]  # superset: every original output appears
    else:
        assert 0 < matched < ref.shape[-2] * ref.shape[-1]  # some original outputs are skipped
    # positions between the aligned ones are not outputs of the original conv
    assert not torch.equal(out[..., 1, 1], ref[..., 0, 0])


@pytest.mark.claim("FOLD-9")
@pytest.mark.parametrize("x_order,w_order", [("crd", "dcr"), ("crd", "c rw rh"), ("focus", "crd")])
def test_mismatched_orders_are_not_equivalent(x_order, w_order):
    conv = torch.nn.Conv2d(8, 2, 3, padding=1)  # G = 2 so "crd" and "dcr" really differ
    report = check_equivalence(
        conv, derived(lambda m: fold_conv(m, 2, w_order)), (1, 8, 4, 4), input_transform=lambda x: depth_to_space(x, 2, x_order)
    )
    assert report.verdict is Verdict.NOT_EQUIVALENT
    same = check_equivalence(
        conv, derived(lambda m: fold_conv(m, 2, x_order)), (1, 8, 4, 4), input_transform=lambda x: depth_to_space(x, 2, x_order)
    )
    assert same.verdict is Verdict.EQUIVALENT


@pytest.mark.claim("FOLD-9")
def test_motivating_pseudocode_folds_the_feature_map_into_the_weight():
    """The motivating question writes conv_weight = pixelshuffle(f_map, scale=C): the 'weight' is then the data."""
    c = 2
    conv = _integer_conv(torch.nn.Conv2d(c * c, 1, 3, bias=False))
    f_map = torch.randint(-5, 6, (1, c * c, 3, 3)).double()
    wrong_weight = depth_to_space(f_map, c)  # what the pseudo-code computes: shape (1, 1, 6, 6)
    wrong = F.conv2d(depth_to_space(f_map, c), wrong_weight, stride=c)
    right = F.conv2d(depth_to_space(f_map, c), depth_to_space(conv.weight, c), stride=c)
    assert torch.equal(right, conv(f_map))
    assert not torch.equal(wrong, conv(f_map))


@pytest.mark.claim("FOLD-10")
@given(fold_cases())
def test_unfold_inverts_fold_bit_exactly(case):
    conv, r, order, _, _ = case
    spec = ConvSpec.from_module(conv)
    if any(d != 1 for d in spec.dilation) or not groups_aligned(spec.in_channels, spec.groups, FoldSpec.make(r, order, spec.dims)):
        return
    back = unfold_conv(fold_conv(conv, r, order), r, order)
    assert ConvSpec.from_module(back) == spec
    assert torch.equal(back.weight, conv.weight)
    assert (back.bias is None) == (conv.bias is None) and (conv.bias is None or torch.equal(back.bias, conv.bias))
    big = fold_conv(conv, r, order)
    again = fold_conv(unfold_conv(big, r, order), r, order)
    assert torch.equal(again.weight, big.weight) and ConvSpec.from_module(again) == ConvSpec.from_module(big)


@pytest.mark.claim("FOLD-10")
def test_unfold_of_a_big_conv_is_equivalent():
    big = _integer_conv(torch.nn.Conv2d(1, 3, 8, stride=4, padding=4))
    small = unfold_conv(big, 4)
    assert (small.in_channels, small.kernel_size, small.stride, small.padding) == (16, (2, 2), (1, 1), (1, 1))
    report = check_equivalence(small, big, (2, 16, 4, 3), input_transform=lambda x: depth_to_space(x, 4))
    assert report.verdict is Verdict.EQUIVALENT and report.exact
    w = torch.randn(3, 1, 8, 8)
    assert torch.equal(fold_weight(unfold_weight(w, 4).weight, 4).weight, w)


@pytest.mark.claim("FOLD-11")
@given(fold_cases(), st.integers(4, 9))
def test_params_and_macs_are_equal(case, n):
    conv, r, order, size, _ = case
    spec = ConvSpec.from_module(conv)
    plan = plan_fold(spec, FoldSpec.make(r, order, spec.dims))
    size = tuple(max(n, s) for s in size)
    folded_size = tuple(s * f for s, f in zip(size, r))
    assert spec.output_size(size) == plan.result.output_size(folded_size)
    if not plan.groups_expanded and not plan.dilation_expanded:
        assert plan.result.params == spec.params
        assert plan.result.macs(folded_size) == spec.macs(size)
        big = fold_conv(conv, r, order)
        assert sum(p.numel() for p in big.parameters()) == sum(p.numel() for p in conv.parameters())
    else:
        # Expansions trade structural zeros for a legal module; the nonzero weights are still the same.
        assert plan.result.params >= spec.params
        assert math.isclose(plan.result.macs(folded_size) * plan.kernel_density, spec.macs(size))


@pytest.mark.parametrize(
    "call,match",
    [
        (lambda: fold_conv(torch.nn.Linear(4, 4), 2), "conv='Linear'"),
        (lambda: fold_conv(torch.nn.Conv2d(6, 2, 3), 2), "in_channels=6"),
        (lambda: fold_conv(torch.nn.Conv2d(8, 2, 3), (2, 2, 2)), r"r=\(2, 2, 2\)"),
        (lambda: fold_conv(torch.nn.Conv2d(8, 2, 3), 0), "r=0"),
        (lambda: fold_conv(torch.nn.Conv2d(8, 2, 3), 2, "c rh"), "order="),
        (lambda: fold_conv(torch.nn.Conv2d(8, 2, 2, padding="same"), 2), "padding='same'"),
        (lambda: unfold_conv(torch.nn.Conv2d(1, 2, 4, stride=1), 2), r"stride=\(1, 1\)"),
        (lambda: unfold_conv(torch.nn.Conv2d(1, 2, 3, stride=2), 2), r"kernel_size=\(3, 3\)"),
        (lambda: unfold_conv(torch.nn.Conv2d(1, 2, 4, stride=2, padding=1), 2), r"padding=\(1, 1\)"),
        (lambda: unfold_conv(torch.nn.Conv2d(1, 2, 4, stride=2, dilation=2), 2), r"dilation=\(2, 2\)"),
        (lambda: fold_weight(torch.randn(3, 4), 2), "weight="),
        (lambda: ConvSpec.make(2, 4, 3, 3, groups=2), "groups=2"),
        (lambda: ConvSpec.make(4, 4, 4, 3), "dims=4"),
        (lambda: ConvSpec.make(2, 4, 4, 3, padding_mode="mirror"), "padding_mode='mirror'"),
        (lambda: ConvSpec.make(2, 4, 4, 3, stride=0), "stride=0"),
        (lambda: ConvSpec.make(2, 4, 4, 3).output_size((1, 1)), r"input_size=\(1, 1\)"),
    ],
)
def test_every_fold_error_names_parameter_value_and_rule(call, match):
    with pytest.raises(FoldError, match=match) as info:
        call()
    assert ":" in str(info.value) and info.value.rule


def test_same_padding_symmetric_is_read_as_explicit():
    conv = torch.nn.Conv2d(8, 2, 3, padding="same")
    assert fold_conv(conv, 2).padding == (2, 2)
    assert check_fold(conv, 2, input_size=(5, 5))


def test_fold_keeps_training_mode_and_dtype():
    conv = torch.nn.Conv2d(4, 2, 3).double().eval()
    big = fold_conv(conv, 2)
    assert big.weight.dtype == torch.float64 and not big.training
    assert not hasattr(big, "fold_plan") and type(big) is torch.nn.Conv2d  # a plain module; plan_fold gives the plan
    assert normalize_order(plan_fold(ConvSpec.from_module(conv), 2).fold.order) == ("c", "rh", "rw")


def test_folded_weights_are_contiguous():
    """einops may return strided views; torch 2.14's CPU bfloat16 conv crashes on some of them."""
    fw = fold_weight(torch.randn(64, 1, 1, 1, dtype=torch.float64), 4, "dcr", groups=32, dilation=2)
    assert fw.weight.is_contiguous()
    assert unfold_weight(torch.randn(4, 2, 4, 4), 2, "focus").weight.is_contiguous()


def test_fold_conv_spends_no_random_initialisation_on_the_weight_it_replaces():
    # A module built and then overwritten draws its random init first (half of fold_conv's build time); the
    # global generator is left untouched when the weight and bias are given.
    conv = torch.nn.Conv2d(16, 4, 3, padding=1)
    state = torch.random.get_rng_state()
    big = fold_conv(conv, 4)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert big.weight.data_ptr() != conv.weight.data_ptr() and big.weight.requires_grad


@given(
    st.integers(1, 3), st.integers(1, 3), st.sampled_from(["crd", "dcr", "focus"]), st.sampled_from([1, 2, 4, 0]),
    st.integers(1, 3), st.integers(1, 2), st.integers(1, 3),
)
def test_a_large_fold_built_in_slabs_equals_the_fold_in_one_piece(dims, r, order, g, dilation, multiple, kernel):
    # Large folded weights are built a slab of output channels at a time (bounded memory): entry for entry the
    # same weight as the one-piece route (a threshold of 0 sends every fold through the slabs).
    cin = multiple * r ** dims * (g or 1)
    groups = g or cin
    gen = torch.Generator().manual_seed(dims * 100 + r * 10 + kernel)
    w = torch.randint(-7, 8, (2 * groups, cin // groups) + (kernel,) * dims, generator=gen).double()
    whole = fold_weight(w, r, order, groups=groups, dilation=dilation)
    original = fold_module.CHUNKED_FOLD_ELEMENTS
    try:
        fold_module.CHUNKED_FOLD_ELEMENTS = 0
        slabs = fold_weight(w, r, order, groups=groups, dilation=dilation)
        assert torch.equal(slabs.weight, whole.weight) and slabs.groups == whole.groups and slabs.weight.is_contiguous()
        mutated = w.clone()
        mutated.view(-1)[-1] += 1  # a changed source entry must show in the slab-built weight
        assert not torch.equal(fold_weight(mutated, r, order, groups=groups, dilation=dilation).weight, whole.weight)
    finally:
        fold_module.CHUNKED_FOLD_ELEMENTS = original


def test_a_folded_conv_owns_its_weight_even_when_the_fold_is_a_pure_reindexing():
    """A 1x1 kernel folds by re-indexing alone: editing the folded weight must not edit the original conv's."""
    from foldconv import fold_weight

    conv = torch.nn.Conv2d(4, 1, 1, bias=False)
    before = conv.weight.detach().clone()
    big = fold_conv(conv, 2)
    with torch.no_grad():
        big.weight.add_(3)
        fold_weight(conv.weight.detach(), 2).weight.add_(5)
    assert torch.equal(conv.weight, before)
