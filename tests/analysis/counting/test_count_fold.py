"""The fold view of costs: counts before and after fold_conv, which layers fold with which r (COUNT-5)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from foldconv.analysis.counting.fold import compare_fold, compare_model_fold, fold_matrix, fold_model, fold_options, foldable_layers
from foldconv.analysis.counting import count
from foldconv.errors import FoldError
from foldconv.specs import ConvSpec


@pytest.mark.claim("COUNT-5")
def test_seed_fold_has_the_same_params_and_macs():
    conv = nn.Conv2d(256, 256, 3, padding=1, device="meta")
    rows = {row["quantity"]: row for row in compare_fold(conv, 16, (1, 256, 32, 32))}
    for q in ("params", "macs", "flops", "weight_bytes", "dense_params", "operator_nonzeros", "density", "output_shape"):
        assert rows[q]["equal"], rows[q]
    assert (rows["params"]["original"], rows["macs"]["original"]) == (590_080, 603_979_776)
    assert rows["kernel"]["folded"] == (48, 48) and rows["input_shape"]["folded"] == (1, 1, 512, 512)
    assert not rows["kernel"]["equal"] and not rows["input_shape"]["equal"]


@st.composite
def fold_cases(draw):
    dims = draw(st.integers(1, 2))
    r = draw(st.integers(2, 3))
    g = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 2]))
    cin = g * r**dims * groups
    cout = groups * draw(st.integers(1, 2))
    k = draw(st.integers(1, 3))
    d = draw(st.integers(1, 2))
    n = draw(st.integers(d * (k - 1) + 1, 6))
    p = draw(st.integers(0, 2))
    s = draw(st.integers(1, 2))
    mode = draw(st.sampled_from(["zeros", "circular"]))
    order = draw(st.sampled_from(["crd", "dcr"]))
    conv = ConvSpec.make(dims, cin, cout, k, s, min(p, n) if mode == "circular" else p, d, groups, True, mode)
    return conv.to_module(device="meta"), r, (1, cin) + (n,) * dims, order


@pytest.mark.claim("COUNT-5")
@settings(max_examples=40)
@given(fold_cases())
def test_fold_keeps_costs_exactly_when_the_plan_is_cost_neutral(case):
    conv, r, shape, order = case
    spec = ConvSpec.from_module(conv)
    option = fold_options(spec, shape[2:], rs=(r,), order=order)[0]
    rows = {row["quantity"]: row for row in compare_fold(conv, r, shape, order)}
    assert rows["output_shape"]["equal"]
    assert rows["params"]["folded"] == option["folded_params"] and rows["macs"]["folded"] == option["folded_macs"]
    if option["cost_neutral"]:
        for q in ("params", "macs", "flops", "dense_params", "operator_nonzeros"):
            assert rows[q]["equal"], (q, rows[q])
    else:  # groups not aligned (dense block-diagonal weight) or dilation (zero-filled kernel): costs grow
        assert rows["macs"]["folded"] > rows["macs"]["original"]
        growth = (spec.groups if "groups" in option["reason"] else 1) * (
            math.prod(spec.effective_kernel) / math.prod(spec.kernel_size)
        )
        assert rows["macs"]["folded"] == rows["macs"]["original"] * growth


@pytest.mark.claim("COUNT-5")
def test_folding_every_conv_of_a_model_keeps_its_totals():
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.resnet18()
    out = compare_model_fold(net, (1, 3, 64, 64), 2)
    totals = {row["quantity"]: row for row in out["totals"]}
    assert totals["params"]["equal"] and totals["macs"]["equal"] and totals["flops"]["equal"]
    # The depth_to_space copies are new activations: the folded model writes more memory.
    assert totals["activation_elements"]["folded"] > totals["activation_elements"]["original"]
    assert out["folded_layers"] == 19 and [r["layer"] for r in out["layers"] if not r["folded"]] == ["conv1"]


def test_folded_model_computes_the_same_function():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1)).double()
    folded, rows = fold_model(net, 2)
    assert [r["folded"] for r in rows] == [False, True]
    # fold_model works on a meta copy; rebuild the folded layer on real weights to check the function.
    from foldconv.fold import fold_conv

    real = nn.Sequential(net[0], net[1], nn.Sequential(folded[2][0], fold_conv(net[2], 2)))
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(net(x), real(x))


def test_which_layers_fold_with_which_r():
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.mobilenet_v2()
    rows = foldable_layers(count(net, (1, 3, 224, 224)), rs=(2, 4))
    matrix = {row["layer"]: row for row in fold_matrix(rows)}
    assert matrix["features.0.0"]["r=2"] == "no"  # 3 input channels
    # depthwise convs (groups == channels) fold only with a dense block-diagonal weight: costs change
    assert matrix["features.2.conv.1.0"]["r=2"] == "yes*"
    assert matrix["features.2.conv.2"]["r=2"] == "yes"
    reasons = [row["reason"] for row in rows if not row["foldable"]]
    assert all("in_channels=" in reason for reason in reasons)


def test_fold_options_errors():
    with pytest.raises(FoldError, match="spec="):
        fold_options(nn.Conv2d(4, 4, 3), (8, 8))
    with pytest.raises(FoldError, match="input_shape="):
        compare_fold(nn.Conv2d(4, 4, 3), 2, (1, 4, 8))
    rows = fold_options(ConvSpec.make(2, 4, 4, 3, padding=1, padding_mode="reflect"), (8, 8), rs=(2,))
    assert not rows[0]["foldable"] and rows[0]["reason"].startswith("padding_mode='reflect'")
