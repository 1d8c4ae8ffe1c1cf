"""The one dimension rule, the per-axis normaliser and the specs as structured configs (foldconv._validate)."""
from __future__ import annotations

import dataclasses

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from omegaconf import OmegaConf

from foldconv import (
    ConvSpec,
    FoldError,
    FoldSpec,
    check_fold,
    depth_to_space,
    fold_channel_map,
    fold_conv,
    plan_fold,
    space_to_depth,
)
from foldconv._validate import (
    MAX_KERNEL_ELEMENTS,
    conv_output_size,
    conv_transpose_output_size,
    parse_factors,
    per_axis_ints,
    require_dims,
    resolve_dims,
)
from foldconv.fold import pad_to_multiple, plan_unfold


def test_resolve_dims_is_the_rule():
    assert resolve_dims(2, None, "r") == 2  # bare int: 2-D, like torch.pixel_shuffle
    assert resolve_dims(2, 3, "r") == 3  # an operand that knows its dims: that many axes
    assert resolve_dims((2, 2, 2), None, "r") == 3  # a tuple carries its own
    assert resolve_dims((2,), 1, "r") == 1
    with pytest.raises(FoldError) as info:
        resolve_dims((2, 2), 1, "r")
    assert info.value.param == "r"
    with pytest.raises(FoldError) as info:
        resolve_dims(2, 4, "r")
    assert info.value.param == "dims"


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_an_int_r_means_every_axis_of_the_spec(dims):
    spec = ConvSpec.make(dims, 2**dims * 3, 4, 3, padding=1)
    unbound = FoldSpec.make(2)
    assert unbound.bound is False and unbound.r == (2, 2)  # read as 2-D until it meets an operand
    plan = plan_fold(spec, unbound)
    assert plan.fold.r == (2,) * dims and plan.fold.dims == dims and plan.fold.bound
    assert plan == plan_fold(spec, 2) == plan_fold(spec, (2,) * dims)
    conv = spec.to_module()
    assert fold_conv(conv, unbound).kernel_size == fold_conv(conv, 2).kernel_size == (6,) * dims
    assert plan_unfold(plan.result, unbound).result == spec


def test_issue_example_1d_spec_with_an_int_built_foldspec():
    """plan_fold(1-D spec, FoldSpec.make(2)) failed while fold_conv(nn.Conv1d, 2) worked."""
    spec = ConvSpec.make(1, 4, 2, 3)
    assert plan_fold(spec, FoldSpec.make(2)).result.describe() == "Conv1d(2->2, k=(6,), s=(2,), p=(0,))"
    assert fold_conv(torch.nn.Conv1d(4, 2, 3), 2).kernel_size == (6,)
    assert check_fold(torch.nn.Conv1d(4, 2, 3), 2, input_size=(7,))


@pytest.mark.parametrize(
    "fold",
    [FoldSpec.make((2, 2)), FoldSpec.make(2, dims=2), FoldSpec.make(2, "c rh rw"), FoldSpec(2, bound=True)],
)
def test_a_bound_fold_of_other_dims_is_a_fold_error_naming_r(fold):
    with pytest.raises(FoldError, match="spatial dim") as info:
        plan_fold(ConvSpec.make(1, 4, 2, 3), fold)
    assert info.value.param == "r"


@pytest.mark.parametrize(
    "r,order,dims,param",
    [
        ((2, 2), "c rw", None, "order"),  # two factors, a 1-D order
        ((2, 2), "crd", 3, "r"),
        (2, "c rh rw", 1, "order"),
        (2, "crd", 4, "dims"),
        (0, "crd", None, "r"),
        ("2y2", "crd", None, "r"),
        (2, 7, None, "order"),
        (2, "crd", None, "bound"),  # via bound="yes" below
    ],
)
def test_foldspec_contradictions_name_the_parameter(r, order, dims, param):
    with pytest.raises(FoldError) as info:
        FoldSpec(r, order, dims, bound="yes") if param == "bound" else FoldSpec(r, order, dims)
    assert info.value.param == param


def test_foldspec_dims_from_each_source():
    assert FoldSpec.make(3, "c rw").dims == 1 and FoldSpec.make(3, "c rw").bound
    assert FoldSpec.make("2x3").r == (2, 3)
    assert FoldSpec.make(2, "focus").bind(3).order == ("rw", "rh", "rd", "c")
    assert FoldSpec.make(2, "dcr").with_order("crd").bound is False
    assert FoldSpec.make(2) == FoldSpec.make((2, 2))  # the same 2-D fold; only re-binding differs


def test_bare_tensor_rule_is_pixel_shuffle_including_unbatched_inputs():
    x = torch.randn(8, 3, 3)  # (C, H, W): pixel_shuffle accepts it without a batch axis
    assert torch.equal(depth_to_space(x, 2), torch.nn.functional.pixel_shuffle(x, 2))
    y = torch.randn(2, 5, 8, 3, 3)  # any number of batch axes
    assert torch.equal(depth_to_space(y, 2), torch.nn.functional.pixel_shuffle(y, 2))
    assert depth_to_space(torch.randn(1, 4, 3), 4, dims=1).shape == (1, 1, 12)
    assert space_to_depth(torch.randn(1, 1, 12), (4,)).shape == (1, 4, 3)
    with pytest.raises(FoldError) as info:
        depth_to_space(torch.randn(1, 4, 3), (2, 2), dims=1)
    assert info.value.param == "r"


def test_pad_to_multiple_never_pads_the_channel_axis():
    """Issue 9: pad_to_multiple(torch.ones(1, 1, 5), 4) padded the channel axis."""
    with pytest.raises(FoldError) as info:
        pad_to_multiple(torch.ones(1, 1, 5), 4)
    assert info.value.param == "dims"
    assert pad_to_multiple(torch.ones(1, 1, 5), 4, dims=1).shape == (1, 1, 8)
    assert pad_to_multiple(torch.ones(1, 1, 5), (4,)).shape == (1, 1, 8)
    assert pad_to_multiple(torch.ones(3, 5, 6), 4, dims=2).shape == (3, 8, 8)  # (C, H, W) said explicitly
    assert pad_to_multiple(torch.ones(2, 3, 5, 6), 4).shape == (2, 3, 8, 8)
    assert pad_to_multiple(torch.ones(2, 3, 5, 6, 7), 2, dims=3).shape == (2, 3, 6, 6, 8)


@given(st.integers(1, 3), st.data())
def test_per_axis_ints_is_the_one_normaliser(dims, data):
    value = data.draw(st.one_of(st.integers(-2, 5), st.tuples(*[st.integers(-2, 5)] * dims)))
    minimum = data.draw(st.integers(0, 1))
    expected = (value,) * dims if isinstance(value, int) else value
    if min(expected) >= minimum:
        assert per_axis_ints(value, dims, "x", minimum) == expected
    else:
        with pytest.raises(FoldError) as info:
            per_axis_ints(value, dims, "x", minimum)
        assert info.value.param == "x"


@pytest.mark.parametrize("value", [True, 2.0, "2", None, torch.tensor(2), (2, 2.5), (2, True), [[2]]])
def test_per_axis_ints_refuses_what_is_not_an_integer(value):
    with pytest.raises(FoldError) as info:
        per_axis_ints(value, 2 if isinstance(value, tuple) else 1, "stride", 1)
    assert info.value.param == "stride"


def test_parse_factors_is_the_apps_syntax():
    assert parse_factors("2x4") == (2, 4) and parse_factors(" 3 ") == 3 and parse_factors([2, "1"]) == (2, 1)
    assert parse_factors(5) == 5 and parse_factors(None) is None  # not strings: left to per_axis_ints
    assert parse_factors("2x1x1", "r") == (2, 1, 1) and parse_factors(4, "r") == 4
    with pytest.raises(FoldError) as info:
        parse_factors("2x", "kernel_size")
    assert info.value.param == "kernel_size"


def test_output_size_formulas():
    assert conv_output_size((8, 8), (3, 3), (2, 2), (1, 1), (1, 1)) == (4, 4)
    assert ConvSpec.make(2, 1, 1, 3, stride=2, padding=1).output_size(8) == (4, 4)  # an int: every axis
    assert conv_transpose_output_size((3,), (4,), (2,), (1,), (1,), (1,)) == (7,)
    tconv = torch.nn.ConvTranspose1d(1, 1, 4, stride=2, padding=1, output_padding=1)
    assert tconv(torch.zeros(1, 1, 3)).shape[-1] == 7
    assert require_dims(1) == 1 and MAX_KERNEL_ELEMENTS == 2**28


def test_convspec_built_directly_is_validated_and_normalised():
    spec = ConvSpec(2, 4, 8, [3, 5], stride="1x2", groups=2)
    assert spec.kernel_size == (3, 5) and spec.stride == (1, 2) and spec.padding == (0, 0)
    assert spec == ConvSpec.make(2, 4, 8, (3, 5), stride=(1, 2), groups=2)
    assert dataclasses.replace(spec, padding=1).padding == (1, 1)
    for bad, param in [
        (dict(bias="no"), "bias"),
        (dict(bias=1), "bias"),
        (dict(groups=2.0), "groups"),
        (dict(in_channels=2.0), "in_channels"),
        (dict(kernel_size=(3,)), "kernel_size"),
        (dict(dims=True), "dims"),
        (dict(padding_mode=None), "padding_mode"),
    ]:
        fields = dict(dims=2, in_channels=4, out_channels=8, kernel_size=3) | bad
        with pytest.raises(FoldError) as info:
            ConvSpec(**fields)
        assert info.value.param == param, bad
        with pytest.raises(FoldError):
            dataclasses.replace(spec, **bad)


def _merge(schema, *dotlist, **values):
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), values, OmegaConf.from_dotlist(list(dotlist))))


@pytest.mark.parametrize(
    "override,kernel",
    [("kernel_size=3", (3, 3)), ("kernel_size=[3,5]", (3, 5)), ("kernel_size=3x5", (3, 5))],
)
def test_convspec_is_a_structured_config(override, kernel):
    spec = _merge(ConvSpec, override, "padding=1", dims=2, in_channels=8, out_channels=4)
    assert isinstance(spec, ConvSpec) and spec.kernel_size == kernel and spec.padding == (1, 1)
    again = OmegaConf.to_object(OmegaConf.structured(spec))  # a spec round-trips through a config
    assert again == spec


@pytest.mark.parametrize(
    "override,r,dims,bound",
    [("r=2", (2, 2), 2, False), ("r=2x4", (2, 4), 2, True), ("r=[2,1,1]", (2, 1, 1), 3, True), ("r='3'", (3, 3), 2, False)],
)
def test_foldspec_is_a_structured_config(override, r, dims, bound):
    fold = _merge(FoldSpec, override, "order=dcr")
    assert isinstance(fold, FoldSpec) and (fold.r, fold.dims, fold.bound) == (r, dims, bound)
    assert fold.order[-1] == "c"


@pytest.mark.parametrize(
    "schema,values,param",
    [
        (ConvSpec, dict(dims=2, in_channels=4, out_channels=4, kernel_size=0), "kernel_size"),
        (ConvSpec, dict(dims=2, in_channels=4, out_channels=4, kernel_size=3, groups=3), "groups"),
        (ConvSpec, dict(dims=1, in_channels=4, out_channels=4, kernel_size="3x3"), "kernel_size"),
        (ConvSpec, dict(dims=2, in_channels=4, out_channels=4, kernel_size=3, padding_mode="mirror"), "padding_mode"),
        (FoldSpec, dict(r=0), "r"),
        (FoldSpec, dict(r="2x2", dims=3), "r"),
        (FoldSpec, dict(r=2, order="c rh"), "order"),
    ],
)
def test_a_bad_config_is_a_fold_error(schema, values, param):
    with pytest.raises(FoldError) as info:
        _merge(schema, **values)
    assert info.value.param == param


def test_fold_channel_map_follows_the_rule():
    assert fold_channel_map(4, 4, dims=1).tolist() == [[0, 1, 2, 3]]
    assert fold_channel_map(4, 2).shape == (1, 2, 2)
    with pytest.raises(FoldError) as info:
        fold_channel_map(0, 2)
    assert info.value.param == "channels"
