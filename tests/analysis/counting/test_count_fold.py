"""The fold view of costs: counts before and after fold_conv, which layers fold with which r (COUNT-5)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from foldconv.analysis.counting import count
from foldconv.analysis.counting.fold import (
    compare_fold,
    fold_matrix,
    fold_options,
    foldable_layers,
)
from foldconv.specs import ConvSpec
from helpers import examples


@pytest.mark.claim("COUNT-5")
def test_motivating_fold_has_the_same_params_and_macs():
    conv = nn.Conv2d(256, 256, 3, padding=1, device="meta")
    cmp = compare_fold(conv, (1, 256, 32, 32), r=16)
    for q in ("params", "macs", "flops", "weight_bytes", "dense_params", "operator_nonzeros", "density", "output_shape"):
        assert cmp.quantity(q).equal, cmp.quantity(q)
    assert (cmp.quantity("params").original, cmp.quantity("macs").original) == (590_080, 603_979_776)
    assert cmp.quantity("kernel_size").folded == (48, 48) and cmp.quantity("input_shape").folded == (1, 1, 512, 512)
    assert not cmp.quantity("kernel_size").equal and not cmp.quantity("input_shape").equal
    assert cmp.keeps_costs and cmp.plan.result.kernel_size == (48, 48)
    assert [row["quantity"] for row in cmp.rows()][:3] == ["conv", "input_shape", "output_shape"]


@st.composite
def fold_cases(draw):
    dims = draw(st.integers(1, 2))
    r = draw(st.integers(2, 3))
    g = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 2, 4]))
    cin = g * r**dims * groups if draw(st.booleans()) else r**dims * draw(st.integers(1, 2))  # aligned or depthwise-like
    groups = groups if cin % groups == 0 else 1
    cout = groups * draw(st.integers(1, 2))
    k = draw(st.integers(1, 3))
    d = draw(st.integers(1, 2))
    n = draw(st.integers(d * (k - 1) + 1, 6))
    p = draw(st.integers(0, 2))
    s = draw(st.integers(1, 2))
    mode = draw(st.sampled_from(["zeros", "circular"]))
    order = draw(st.sampled_from(["crd", "dcr"]))
    p = min(p, n) if mode == "circular" else p
    conv = ConvSpec.make(dims, cin, cout, k, stride=s, padding=p, dilation=d, groups=groups, padding_mode=mode)
    return conv.to_module(device="meta"), r, (1, cin) + (n,) * dims, order


@pytest.mark.claim("COUNT-5")
@settings(max_examples=examples(40))
@given(fold_cases())
def test_fold_keeps_costs_exactly_when_the_plan_is_cost_neutral(case):
    conv, r, shape, order = case
    spec = ConvSpec.from_module(conv)
    (option,) = fold_options(spec, shape[2:], rs=(r,), order=order)
    cmp = compare_fold(conv, shape, r=r, order=order)
    assert cmp.quantity("output_shape").equal
    assert cmp.quantity("params").folded == option.folded_params and cmp.quantity("macs").folded == option.folded_macs
    assert cmp.quantity("input_shape").folded == option.folded_input_shape[:1] + option.folded_input_shape[1:]
    if option.cost_neutral:
        for q in ("params", "macs", "flops", "dense_params", "operator_nonzeros"):
            assert cmp.quantity(q).equal, cmp.quantity(q)
        assert cmp.keeps_costs
    else:  # groups not aligned (dense block-diagonal weight) or dilation (zero-filled kernel): costs grow
        macs = cmp.quantity("macs")
        assert macs.folded > macs.original and not cmp.keeps_costs
        growth = (spec.groups / option.plan.result.groups) * (math.prod(spec.effective_kernel) / math.prod(spec.kernel_size))
        assert macs.folded == macs.original * growth


# A whole model folded (fold_model, compare_model_fold) lives in foldconv.surgery: tests/surgery/test_fold_model.py.


def test_which_layers_fold_with_which_r():
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.mobilenet_v2()
    options = foldable_layers(count(net, (1, 3, 224, 224)), rs=(2, 4))
    matrix = {row["layer"]: row for row in fold_matrix(options)}
    assert matrix["features.0.0"]["r=2"] == "no"  # 3 input channels
    # depthwise convs (groups == channels) fold only with a dense block-diagonal weight: costs change
    assert matrix["features.2.conv.1.0"]["r=2"] == "yes*"
    assert matrix["features.2.conv.2"]["r=2"] == "yes"
    reasons = [o.reason for o in options if not o.foldable]
    assert reasons and all("in_channels=" in reason for reason in reasons)
    assert all(o.folded is None and o.folded_macs is None for o in options if not o.foldable)


def test_a_conv_that_cannot_fold_is_an_answer_not_an_error():
    (option,) = fold_options(ConvSpec.make(2, 4, 4, 3, padding=1, padding_mode="reflect"), (8, 8), rs=(2,))
    assert not option.foldable and option.reason.startswith("padding_mode='reflect'")
    (option,) = fold_options(ConvSpec.make(1, 4, 4, 3), (8,), rs=((2, 2),))  # a 2-axis r on a 1-D conv
    assert not option.foldable and "r=" in option.reason
    assert option.row()["cost_neutral"] is False and "plan" not in option.row()
