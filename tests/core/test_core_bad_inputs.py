"""Bad-input catalogue of the core (layout, specs, fold): every case is a FoldError naming the parameter.

A FoldError is a ValueError whose ``param`` is the argument at fault and whose message is
``"<param>=<value>: <rule>"``; never a TypeError, ZeroDivisionError, AttributeError or torch RuntimeError from
inside, and never a silent answer (issue 10, items 8-10).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from foldconv import (
    ConvSpec,
    DepthToSpace,
    FoldError,
    FoldSpec,
    SpaceToDepth,
    depth_to_space,
    fold_channel_map,
    fold_conv,
    fold_weight,
    plan_fold,
    space_to_depth,
    unfold_conv,
    unfold_weight,
)
from foldconv.fold import (
    expand_dilation,
    expand_groups,
    folded_groups,
    groups_aligned,
    mask_structural_zeros,
    pad_to_multiple,
    plan_unfold,
    structural_zero_mask,
)
from foldconv.layout import normalize_order, normalize_r, order_string
from foldconv.specs import conv_class
from helpers import raises_fold_error

X = torch.zeros(1, 4, 2, 2)
SPEC = ConvSpec.make(2, 4, 4, 3, padding=1)
W = torch.zeros(4, 2, 3, 3)


def _plan():
    return plan_fold(ConvSpec.make(2, 4, 4, 3, groups=4), 2)


CASES = [
    # layout
    ("d2s r=0", lambda: depth_to_space(X, 0), "r"),
    ("d2s r=True", lambda: depth_to_space(X, True), "r"),
    ("d2s r=1.5", lambda: depth_to_space(X, 1.5), "r"),
    ("d2s r tensor", lambda: depth_to_space(X, torch.tensor(2)), "r"),
    ("d2s r vs dims", lambda: depth_to_space(X, (2,), dims=2), "r"),
    ("d2s short order", lambda: depth_to_space(X, 2, "c rh"), "order"),
    ("d2s repeated order", lambda: depth_to_space(X, 2, "c rh rh"), "order"),
    ("d2s order int", lambda: depth_to_space(X, 2, 5), "order"),
    ("d2s order list of ints", lambda: depth_to_space(X, 2, ["c", 1, 2]), "order"),
    ("d2s channels", lambda: depth_to_space(torch.zeros(1, 6, 2, 2), 2), "x.shape"),
    ("d2s too few dims", lambda: depth_to_space(torch.zeros(4, 2), 2), "x.shape"),
    ("d2s not a tensor", lambda: depth_to_space([1, 2], 2), "x"),
    ("d2s dims=4", lambda: depth_to_space(X, 2, dims=4), "dims"),
    ("d2s dims=True", lambda: depth_to_space(X, 2, dims=True), "dims"),
    ("s2d size", lambda: space_to_depth(torch.zeros(1, 1, 5, 4), 2), "x.shape"),
    ("s2d dims=0", lambda: space_to_depth(X, 2, dims=0), "dims"),
    ("channel map channels=0", lambda: fold_channel_map(0, 2), "channels"),
    ("channel map channels float", lambda: fold_channel_map(4.0, 2), "channels"),
    ("channel map r", lambda: fold_channel_map(4, -1), "r"),
    ("to_module weight shape", lambda: ConvSpec.make(2, 4, 2, 3).to_module(weight=torch.zeros(2, 4, 3, 2)), "weight"),
    ("to_module bias without spec bias", lambda: ConvSpec.make(2, 4, 2, 3, bias=False).to_module(weight=torch.zeros(2, 4, 3, 3), bias=torch.zeros(2)), "bias"),
    ("to_module bias shape", lambda: ConvSpec.make(2, 4, 2, 3).to_module(weight=torch.zeros(2, 4, 3, 3), bias=torch.zeros(3)), "bias"),
    ("normalize_r dims", lambda: normalize_r(2, 0), "dims"),
    ("normalize_order alias", lambda: normalize_order("xyz"), "order"),
    ("normalize_order dims", lambda: normalize_order("crd", 4), "dims"),
    ("order_string dims", lambda: order_string("crd", 5), "dims"),
    ("DepthToSpace r", lambda: DepthToSpace(0), "r"),
    ("SpaceToDepth order", lambda: SpaceToDepth(2, "bad"), "order"),
    ("SpaceToDepth forward", lambda: SpaceToDepth(2)(torch.zeros(1, 1, 3, 4)), "x.shape"),
    # specs
    ("make dims float", lambda: ConvSpec.make(2.0, 4, 4, 3), "dims"),
    ("make dims 4", lambda: ConvSpec.make(4, 4, 4, 3), "dims"),
    ("make in_channels float", lambda: ConvSpec.make(2, 4.0, 4, 3), "in_channels"),
    ("make out_channels 0", lambda: ConvSpec.make(2, 4, 0, 3), "out_channels"),
    ("make kernel 0", lambda: ConvSpec.make(2, 4, 4, 0), "kernel_size"),
    ("make kernel 3 axes", lambda: ConvSpec.make(2, 4, 4, (3, 3, 3)), "kernel_size"),
    ("make kernel string", lambda: ConvSpec.make(2, 4, 4, "three"), "kernel_size"),
    ("make stride 0", lambda: ConvSpec.make(2, 4, 4, 3, stride=0), "stride"),
    ("make stride bools", lambda: ConvSpec.make(2, 4, 4, 3, stride=(True, True)), "stride"),
    ("make padding -1", lambda: ConvSpec.make(2, 4, 4, 3, padding=-1), "padding"),
    ("make dilation 0", lambda: ConvSpec.make(2, 4, 4, 3, dilation=(1, 0)), "dilation"),
    ("make groups 0", lambda: ConvSpec.make(2, 4, 4, 3, groups=0), "groups"),
    ("make groups 3", lambda: ConvSpec.make(2, 4, 4, 3, groups=3), "groups"),
    ("make bias 'no'", lambda: ConvSpec.make(2, 4, 4, 3, bias="no"), "bias"),
    ("make bias None", lambda: ConvSpec.make(2, 4, 4, 3, bias=None), "bias"),
    ("make padding_mode", lambda: ConvSpec.make(2, 4, 4, 3, padding_mode="mirror"), "padding_mode"),
    ("direct bias", lambda: ConvSpec(2, 4, 4, 3, bias="no"), "bias"),
    ("output_size empty", lambda: SPEC.replace(padding=0).output_size((1, 1)), "input_size"),
    ("output_size axes", lambda: SPEC.output_size((8,)), "input_size"),
    ("output_size float", lambda: SPEC.output_size(8.7), "input_size"),
    ("output_size zero", lambda: SPEC.output_size((0, 4)), "input_size"),
    ("macs empty", lambda: SPEC.replace(padding=0).macs((2, 2)), "input_size"),
    ("replace unknown field", lambda: SPEC.replace(foo=1), "changes"),
    ("replace bad value", lambda: SPEC.replace(stride=0), "stride"),
    ("from_module Linear", lambda: ConvSpec.from_module(nn.Linear(2, 2)), "conv"),
    ("from_module asymmetric same", lambda: ConvSpec.from_module(nn.Conv2d(4, 4, 2, padding="same")), "padding"),
    ("to_module too large", lambda: ConvSpec.make(2, 2**20, 2**20, 3).to_module(), "spec"),
    ("conv_class 4", lambda: conv_class(4), "dims"),
    ("FoldSpec r 0", lambda: FoldSpec.make(0), "r"),
    ("FoldSpec r tuple vs dims", lambda: FoldSpec.make((2, 2), dims=3), "r"),
    ("FoldSpec order vs dims", lambda: FoldSpec.make(2, "c rw", dims=2), "order"),
    ("FoldSpec r string", lambda: FoldSpec.make("2by2"), "r"),
    ("FoldSpec bound", lambda: FoldSpec(2, bound="yes"), "bound"),
    ("FoldSpec bind dims", lambda: FoldSpec.make(2).bind(0), "dims"),
    ("FoldSpec bind bound", lambda: FoldSpec.make((2, 2)).bind(3), "r"),
    ("FoldSpec coerce object", lambda: FoldSpec.coerce(object(), 2), "fold"),
    ("FoldSpec coerce order clash", lambda: FoldSpec.coerce(FoldSpec.make(2), 2, "dcr"), "order"),
    # fold
    ("plan_fold fold None", lambda: plan_fold(SPEC, None), "fold"),
    ("plan_fold spec", lambda: plan_fold("conv", 2), "spec"),
    ("plan_fold r zeros", lambda: plan_fold(SPEC, (0, 0)), "r"),
    ("plan_fold r float", lambda: plan_fold(SPEC, 2.0), "fold"),
    ("plan_fold in_channels", lambda: plan_fold(ConvSpec.make(2, 6, 4, 3), 2), "in_channels"),
    ("plan_fold reflect", lambda: plan_fold(SPEC.replace(padding_mode="reflect"), 2), "padding_mode"),
    ("plan_fold dims", lambda: plan_fold(SPEC, (2, 2, 2)), "r"),
    ("plan_unfold dilation", lambda: plan_unfold(ConvSpec.make(2, 1, 4, 4, stride=2, dilation=2), 2), "dilation"),
    ("plan_unfold kernel", lambda: plan_unfold(ConvSpec.make(2, 1, 4, 3, stride=2), 2), "kernel_size"),
    ("plan_unfold stride", lambda: plan_unfold(ConvSpec.make(2, 1, 4, 4), 2), "stride"),
    ("plan_unfold r 0", lambda: plan_unfold(ConvSpec.make(2, 1, 4, 4, stride=2), 0), "r"),
    ("folded_groups in_channels", lambda: folded_groups(0, 1, 2), "in_channels"),
    ("folded_groups groups", lambda: folded_groups(8, 3, 2), "groups"),
    ("groups_aligned block", lambda: groups_aligned(6, 1, 2), "in_channels"),
    ("expand_groups 0", lambda: expand_groups(W, 0), "groups"),
    ("expand_groups 3", lambda: expand_groups(W, 3), "groups"),
    ("expand_groups float", lambda: expand_groups(W, 2.0), "groups"),
    ("expand_groups weight", lambda: expand_groups("w", 2), "weight"),
    ("expand_groups huge", lambda: expand_groups(torch.zeros(2**15, 1, 1, 1), 2**15), "groups"),
    ("expand_dilation 0", lambda: expand_dilation(W, (0, 0)), "dilation"),
    ("expand_dilation axes", lambda: expand_dilation(W, (2,)), "dilation"),
    ("expand_dilation huge", lambda: expand_dilation(W, 10**6), "dilation"),
    ("fold_weight groups 0", lambda: fold_weight(W, 2, groups=0), "groups"),
    ("fold_weight groups float", lambda: fold_weight(W, 2, groups=2.0), "groups"),
    ("fold_weight weight 2-D", lambda: fold_weight(torch.randn(3, 4), 2), "weight"),
    ("fold_weight dilation 0", lambda: fold_weight(W, 2, dilation=0), "dilation"),
    ("fold_weight r", lambda: fold_weight(W, 3), "in_channels"),
    ("unfold_weight kernel", lambda: unfold_weight(torch.zeros(4, 1, 3, 3), 2), "kernel_size"),
    ("unfold_weight groups", lambda: unfold_weight(torch.zeros(4, 1, 4, 4), 2, groups=-1), "groups"),
    ("fold_conv Linear", lambda: fold_conv(nn.Linear(4, 4), 2), "conv"),
    ("fold_conv r 0", lambda: fold_conv(nn.Conv2d(8, 2, 3), 0), "r"),
    ("fold_conv r float", lambda: fold_conv(nn.Conv2d(8, 2, 3), 2.0), "r"),
    ("fold_conv r None", lambda: fold_conv(nn.Conv2d(8, 2, 3), None), "r"),
    ("fold_conv order", lambda: fold_conv(nn.Conv2d(8, 2, 3), 2, "c rh"), "order"),
    ("fold_conv huge dilation", lambda: fold_conv(nn.Conv2d(8, 2, 3, dilation=10**6), 2), "dilation"),
    ("fold_conv huge groups", lambda: fold_conv(nn.Conv2d(2**14, 2**14, 3, groups=2**14), FoldSpec.make(2, "dcr")), "groups"),
    ("fold_conv same", lambda: fold_conv(nn.Conv2d(8, 2, 2, padding="same"), 2), "padding"),
    ("unfold_conv stride", lambda: unfold_conv(nn.Conv2d(1, 2, 4, stride=1), 2), "stride"),
    ("pad_to_multiple ambiguous", lambda: pad_to_multiple(torch.ones(1, 1, 5), 4), "dims"),
    ("pad_to_multiple x", lambda: pad_to_multiple("x", 2), "x"),
    ("pad_to_multiple r", lambda: pad_to_multiple(X, 0), "r"),
    ("pad_to_multiple dims vs r", lambda: pad_to_multiple(X, (2, 2), dims=1), "r"),
    ("structural_zero_mask plan", lambda: structural_zero_mask("plan"), "plan"),
    ("mask module shape", lambda: mask_structural_zeros(nn.Conv2d(1, 4, 3), _plan()), "module"),
    ("mask module no weight", lambda: mask_structural_zeros(nn.ReLU(), _plan()), "module"),
    # found by H8's adversarial pass: resource guards, wrong names, unchecked values
    ("pad_to_multiple huge r", lambda: pad_to_multiple(X, 10**12), "r"),
    ("pad_to_multiple value str", lambda: pad_to_multiple(X, 3, value="0"), "value"),
    ("pad_to_multiple value None", lambda: pad_to_multiple(X, 3, value=None), "value"),
    ("fold_channel_map huge channels", lambda: fold_channel_map(2**40, 2), "channels"),
    ("fold_channel_map channels not a multiple", lambda: fold_channel_map(2, 2), "channels"),
    ("fold_channel_map channels np float", lambda: fold_channel_map(np.float64(8.0), 2), "channels"),
]


@pytest.mark.parametrize("call,param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_fold_error_naming_the_parameter(call, param):
    raises_fold_error(param, call)


def test_the_catalogue_is_large():
    assert len(CASES) >= 90 and len({c[0] for c in CASES}) == len(CASES)


def test_numpy_integers_are_accepted_where_ints_are():
    assert fold_channel_map(np.int64(8), np.int64(2)).shape == (2, 2, 2)
    assert pad_to_multiple(X, np.int64(3)).shape == (1, 4, 3, 3)
    assert plan_fold(ConvSpec.make(2, np.int64(8), np.int32(4), np.int64(3)), np.int64(2)).result.in_channels == 2
    assert fold_conv(nn.Conv2d(8, 4, 3), (np.int64(2), np.int16(2))).in_channels == 2


def test_what_used_to_fail_with_other_errors_now_works_or_names_the_parameter():
    """Issue 10.8: plan_fold(spec, 2) raised AttributeError; it now takes an int like fold_conv does."""
    assert plan_fold(SPEC, 2) == plan_fold(SPEC, FoldSpec.make(2))
    assert plan_fold(SPEC, "2x2").fold.r == (2, 2)
    assert expand_groups(torch.zeros(4, 1, 1, 1), 4).shape == (4, 4, 1, 1)


def test_the_mask_refuses_a_module_that_is_not_the_plans_fold():
    plan = _plan()
    big = plan.result.to_module()
    with torch.no_grad():
        big.weight.fill_(1.0)
    with pytest.raises(FoldError) as info:
        mask_structural_zeros(big, plan)
    assert info.value.param == "module" and "structural zeros" in str(info.value)
