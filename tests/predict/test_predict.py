"""The prediction engine: each rule, checked against an exact or float64 observation (the sweep's)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from foldconv import ConvSpec, FoldError, FoldSpec, Verdict, depth_to_space, fold_conv
from foldconv.predict import (
    Outcome,
    Prediction,
    fold_following,
    following_example,
    following_examples,
    orders_equivalent,
    predict_fold,
    predict_following,
    predict_space_to_depth,
)
from foldconv.sweep import Point, run_point


def fold2(order="crd"):
    return FoldSpec.make(2, order)


@pytest.mark.claim("RULE-1")
@pytest.mark.parametrize("layer", [nn.ReLU(), nn.GELU(), nn.LeakyReLU(0.3), nn.Sigmoid(), nn.Hardswish()])
def test_pointwise_layers_commute(layer):
    y = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    pred = predict_following(layer, fold2(), 8)
    assert pred.outcome is Outcome.HOLDS
    assert torch.equal(layer(depth_to_space(y, 2)), depth_to_space(layer(y), 2))


def _bn(tied: bool, train: bool = False) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(8).double()
    with torch.no_grad():
        bn.weight.copy_(torch.arange(8.0) + 1)
        bn.bias.copy_(torch.arange(8.0) / 3)
        bn.running_mean.copy_(torch.arange(8.0) / 5)
        bn.running_var.copy_(torch.arange(8.0) / 7 + 1)
        if tied:  # crd blocks are channels 0-3 and 4-7
            for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
                t.copy_(t[[0, 0, 0, 0, 4, 4, 4, 4]])
    return bn.train(train)


@pytest.mark.claim("RULE-2")
def test_eval_batchnorm_commutes_only_with_tied_blocks():
    y = torch.randn(3, 8, 4, 4, dtype=torch.float64)
    tied = _bn(True)
    assert predict_following(tied, fold2(), 8).outcome is Outcome.HOLDS
    assert torch.allclose(fold_following(tied, fold2(), 8)(depth_to_space(y, 2)), depth_to_space(tied(y), 2), rtol=0, atol=1e-13)
    untied = _bn(True)
    with torch.no_grad():
        untied.weight[6] += 1  # breaks the block of folded channel 1 only
    pred = predict_following(untied, fold2(), 8)
    assert pred.outcome is Outcome.FAILS and "[1]" in pred.reasons[0]
    assert not torch.allclose(fold_following(untied, fold2(), 8)(depth_to_space(y, 2)), depth_to_space(untied(y), 2))
    # The same untied parameters in "dcr" order: blocks are {0,2,4,6} and {1,3,5,7}.
    assert "[0, 1]" in predict_following(_bn(False), fold2("dcr"), 8).reasons[0]


@pytest.mark.claim("RULE-3")
def test_train_batchnorm_fails():
    bn = _bn(True, train=True)
    assert predict_following(bn, fold2(), 8).outcome is Outcome.FAILS
    y = torch.randn(3, 8, 4, 4, dtype=torch.float64) * torch.arange(1.0, 9.0, dtype=torch.float64).view(1, 8, 1, 1)
    folded = fold_following(bn, fold2(), 8)
    assert not torch.allclose(folded(depth_to_space(y, 2)), depth_to_space(bn(y), 2))


@pytest.mark.claim("RULE-4")
def test_groupnorm_and_layernorm():
    y = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    aligned = nn.GroupNorm(2, 8).double()
    assert predict_following(aligned, fold2(), 8).outcome is Outcome.HOLDS
    assert torch.allclose(fold_following(aligned, fold2(), 8)(depth_to_space(y, 2)), depth_to_space(aligned(y), 2), atol=1e-13)
    assert predict_following(aligned, fold2("dcr"), 8).outcome is Outcome.FAILS
    per_channel = nn.GroupNorm(8, 8).double()
    pred = predict_following(per_channel, fold2(), 8)
    assert pred.outcome is Outcome.FAILS and pred.literal is Verdict.INVALID
    ln = nn.LayerNorm((8, 3, 3)).double()
    with torch.no_grad():
        ln.weight.copy_(torch.randn(8, 3, 3))
    assert predict_following(ln, fold2(), 8).outcome is Outcome.HOLDS
    assert torch.allclose(fold_following(ln, fold2(), 8)(depth_to_space(y, 2)), depth_to_space(ln(y), 2), atol=1e-12)
    assert predict_following(nn.LayerNorm(3), fold2(), 8).outcome is Outcome.FAILS


@pytest.mark.claim("RULE-5")
def test_dropout_train_drops_whole_blocks():
    assert predict_following(nn.Dropout2d(0.5).eval(), fold2(), 8).outcome is Outcome.HOLDS
    assert predict_following(nn.Dropout2d(0.5).train(), fold2(), 8).outcome is Outcome.FAILS
    row = run_point(Point("following", 2, 2, "crd", in_channels=8, out_channels=16, kernel=1, size=4, following="dropout_train", batch=4))
    assert row["observed_literal"] == "not equivalent" and row["agree"]


@pytest.mark.claim("RULE-6")
@pytest.mark.parametrize("pool,kind", [(nn.AvgPool2d(2, 2), "mean"), (nn.MaxPool2d(2, 2), "max")])
def test_pool_with_kernel_r_is_a_channel_group_reduction(pool, kind):
    y = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    pred = predict_following(pool, fold2(), 8, input_size=(3, 3))
    assert pred.outcome is Outcome.HOLDS_IF
    out = pool(depth_to_space(y, 2))
    groups = y.view(2, 2, 4, 3, 3)  # crd: folded channel g holds channels 4g..4g+3
    expected = groups.mean(2) if kind == "mean" else groups.amax(2)
    assert torch.allclose(out, expected, atol=1e-14)
    assert predict_following(nn.AvgPool2d(3, 1, 1), fold2(), 8).outcome is Outcome.FAILS
    for name in ("avgpool_r", "maxpool_r", "avgpool_3s1", "maxpool_2s1"):
        assert run_point(Point("following", 2, 4, "dcr", in_channels=32, out_channels=64, kernel=1, size=4, following=name))["agree"]


@pytest.mark.claim("RULE-7")
def test_upsample_does_not_commute():
    up = nn.Upsample(scale_factor=2)
    assert predict_following(up, fold2(), 8).outcome is Outcome.FAILS
    y = torch.randn(1, 8, 2, 2, dtype=torch.float64)
    assert not torch.equal(up(depth_to_space(y, 2)), depth_to_space(up(y), 2))
    assert predict_following(up, FoldSpec.make(1), 8).outcome is Outcome.HOLDS


@pytest.mark.claim("RULE-8")
@pytest.mark.parametrize("size,k,s,p,mode,crop,pad", [
    (8, 4, 2, 0, "zeros", True, True),   # divisible
    (9, 4, 2, 0, "zeros", True, True),   # the 9th row is never read
    (9, 4, 2, 2, "zeros", False, True),  # padding makes the last output read row 8
    (9, 4, 2, 2, "circular", False, False),
    (9, 4, 2, 0, "circular", True, True),
])
def test_space_to_depth_of_indivisible_sizes(size, k, s, p, mode, crop, pad):
    big = ConvSpec.make(2, 1, 2, k, stride=s, padding=p, padding_mode=mode)
    pred = predict_space_to_depth(big, 2, (size, size))
    assert (pred.size_fix.crop_exact, pred.size_fix.pad_exact) == (crop, pad)
    row = run_point(Point("space_to_depth", 2, 2, in_channels=1, out_channels=2, kernel=k, stride=s, padding=p, padding_mode=mode, size=size))
    assert row["agree"] and row["crop_exact"] == crop and row["pad_exact"] == pad


@pytest.mark.claim("RULE-9")
@pytest.mark.parametrize("r,order,size,param", [(0, "crd", 5, "r=0"), (1.5, "crd", 5, "r=1.5"), (-2, "crd", 5, "r=-2"),
                                                (2, "c rh", 5, "order="), (2, "crd", 0, "input_size=")])
def test_malformed_requests_are_invalid_and_raise(r, order, size, param):
    spec = ConvSpec.make(2, 4, 2, 3)
    pred = predict_fold(spec, r, order, input_size=(size, size))
    assert pred.outcome is Outcome.INVALID and pred.reasons[0].startswith(param)
    with pytest.raises(FoldError):
        if size == 0:
            from foldconv import check_fold
            check_fold(spec.to_module(), r, order, input_size=(size, size))
        else:
            fold_conv(spec.to_module(), r, order)


def test_rule_codes_and_conditions_are_informative():
    p = predict_fold(ConvSpec.make(2, 8, 4, 3, padding=1, groups=2), 2, "dcr")
    assert p.outcome is Outcome.HOLDS_IF and "FOLD-4" in p.codes and "groups=1" in p.conditions[0]
    p = predict_fold(ConvSpec.make(2, 4, 4, 3, padding=1, dilation=2), 2)
    assert p.outcome is Outcome.HOLDS_IF and p.literal is Verdict.SHAPES_DIFFER and "FOLD-7" in p.codes
    p = predict_fold(ConvSpec.make(2, 8, 4, 3, padding=1), 2, "crd", input_order="dcr")
    assert p.outcome is Outcome.HOLDS_IF and p.literal is Verdict.NOT_EQUIVALENT and "FOLD-9" in p.codes
    p = predict_fold(ConvSpec.make(2, 4, 4, 3, padding=1, padding_mode="replicate"), (1, 2))
    assert p.outcome is Outcome.FAILS and "FOLD-6" in p.codes
    assert predict_fold(ConvSpec.make(2, 4, 4, 3, padding=(1, 0), padding_mode="reflect"), (1, 2)).outcome is Outcome.HOLDS
    assert orders_equivalent(("c", "rh", "rw"), ("rh", "c", "rw"), r=(1, 2), channels=8)
    with pytest.raises(FoldError, match="layer='Linear'"):
        predict_following(nn.Linear(2, 2), fold2(), 8)


# ------------------------------------------------------------------------------------------------------
# RULE-10: prediction == observation on hypothesis-generated configurations.

@st.composite
def conv_points(draw):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    r = draw(st.sampled_from([1, 2, 3] if dims < 3 else [1, 2]))
    if dims == 2 and draw(st.booleans()):
        r = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    R = r[0] * r[1] if isinstance(r, tuple) else r**dims
    groups = draw(st.sampled_from([1, 1, 2, 3, 0]))
    G = draw(st.integers(1, 3))
    cin = G * R * (groups if groups > 0 else 1)
    if draw(st.integers(0, 9)) == 0:
        cin += 1  # occasionally not divisible
    g = cin if groups == 0 else groups
    if cin % g:
        g = 1
    k, s, p, d = draw(st.integers(1, 3)), draw(st.integers(1, 3)), draw(st.integers(0, 2)), draw(st.integers(1, 2))
    mode = draw(st.sampled_from(["zeros", "zeros", "circular", "reflect", "replicate"]))
    names = {1: ("c", "rw"), 2: ("c", "rh", "rw"), 3: ("c", "rd", "rh", "rw")}[dims]
    order = " ".join(draw(st.permutations(names)))
    x_order = draw(st.sampled_from(["same", " ".join(draw(st.permutations(names)))]))
    fs = draw(st.sampled_from([0, 0, 1, 2, 3]))
    size = d * (k - 1) + 1 + draw(st.integers(0, 3))
    size = max(size, p + 1)
    return Point("hypothesis", dims, r, order, x_order, cin, 2 * g, k, s, p, d, g, mode, fs, size)


@pytest.mark.claim("RULE-10")
@given(conv_points())
def test_prediction_matches_exact_observation(point):
    row = run_point(point, dtypes=())
    assert row["agree"], {k: row[k] for k in ("predicted", "observed", "predicted_literal", "observed_literal", "reason")}


@st.composite
def following_points(draw):
    r = draw(st.sampled_from([1, 2, 3, (2, 1), (1, 3)]))
    R = r[0] * r[1] if isinstance(r, tuple) else r * r
    order = " ".join(draw(st.permutations(("c", "rh", "rw"))))
    name = draw(st.sampled_from(following_examples()))
    return Point("following", 2, r, order, "same", 2 * R, 4 * R, 1, 1, 0, 1, 1, "zeros", 0, 4, name, 4)


@pytest.mark.claim("RULE-10")
@given(following_points())
def test_following_prediction_matches_observation(point):
    row = run_point(point, dtypes=())
    assert row["agree"], {k: row[k] for k in ("following", "predicted", "observed", "predicted_literal", "observed_literal", "reason")}


@pytest.mark.claim("RULE-10")
def test_a_wrong_rule_is_caught(monkeypatch):
    """Mutation check: if the engine wrongly claimed reflect padding folds, the sweep would disagree."""
    import foldconv.sweep.observe as observe

    def lying(*args, **kwargs):
        return Prediction(Outcome.HOLDS, Verdict.EQUIVALENT)

    point = Point("modes", 2, 2, in_channels=4, kernel=3, padding=1, padding_mode="reflect", size=6)
    assert run_point(point)["agree"]
    monkeypatch.setattr(observe, "predict_fold", lying)
    assert not run_point(point)["agree"]


def test_following_example_rejects_unknown_names():
    with pytest.raises(FoldError, match="following='softmax2'"):
        following_example("softmax2", 8, fold2(), torch.Generator())


@pytest.mark.claim("RULE-12")
@pytest.mark.parametrize(
    "point",
    [
        # (a) a wrong folded stride that only moves windows lying wholly in replicate padding
        Point("degenerate", 3, 1, "c rd rh rw", "same", 2, 2, 1, 2, 1, 1, 1, "replicate", 3, 2),
        # (b) a group-misaligning weight order undone by an input order that misaligns the same way
        Point("degenerate", 1, 2, "rw c", "c rw", 4, 4, 1, 1, 0, 1, 2, "zeros", 0, 1),
    ],
)
def test_degenerate_coincidences_are_predicted(point):
    row = run_point(point, dtypes=())
    assert row["observed_literal"] == "equivalent" and row["agree"], row
    assert "RULE-12" in row["rule"]
    if point.folded_stride:
        # Without a concrete size (no window simulation) the rules alone say "not equivalent".
        spec = ConvSpec.make(point.dims, point.in_channels, point.out_channels, point.kernel, stride=point.stride, padding=point.padding,
                             dilation=point.dilation, groups=point.groups, padding_mode=point.padding_mode)
        generic = predict_fold(spec, point.r, point.order, folded_stride=(point.folded_stride,) * point.dims)
        assert generic.literal is Verdict.NOT_EQUIVALENT
