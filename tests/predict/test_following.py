"""The following-layer registry: one table of rules; predictions match what fold_following builds (float64)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv import FoldError, FoldSpec, Verdict, depth_to_space
from foldconv.predict import (
    FOLLOWING_RULES,
    FollowingRule,
    Outcome,
    Prediction,
    conditioned_following,
    fold_following,
    following_example,
    following_examples,
    following_rule,
    predict_following,
    register_following_rule,
)


def _observe(layer, fold, channels, size, batch=4):
    """The literal verdict of fold_following on a random float64 map (tolerance 1e-12: layers may divide)."""
    y = torch.randn((batch, channels) + size, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        try:
            rhs = depth_to_space(layer(y), fold.r, fold.order, dims=fold.dims)
        except RuntimeError:
            return None
        try:
            lhs = fold_following(layer, fold, channels)(depth_to_space(y, fold.r, fold.order, dims=fold.dims))
        except (RuntimeError, FoldError):
            return Verdict.INVALID
    if lhs.shape != rhs.shape:
        return Verdict.SHAPES_DIFFER
    return Verdict.EQUIVALENT if torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12) else Verdict.NOT_EQUIVALENT


def _agrees(layer, fold, channels, size):
    pred = predict_following(layer, fold, channels, input_size=size)
    observed = _observe(layer, fold, channels, size)
    return pred, observed, (pred.literal is observed)


@pytest.mark.claim("RULE-1")
@pytest.mark.parametrize("layer", [nn.Hardshrink(0.3), nn.Softshrink(0.3), nn.Tanhshrink(), nn.LogSigmoid(), nn.Softsign(),
                                   nn.Threshold(0.1, -3.0), nn.RReLU().eval(), nn.PReLU(1), nn.SELU(), nn.Mish()])
def test_every_elementwise_layer_has_a_rule_and_commutes(layer):
    pred, observed, agree = _agrees(layer.double(), FoldSpec.make((2, 3)), 12, (3, 2))
    assert pred.outcome is Outcome.HOLDS and observed is Verdict.EQUIVALENT and agree


@pytest.mark.claim("RULE-1")
def test_per_channel_prelu_needs_tied_slopes():
    fold, gen = FoldSpec.make(2), torch.Generator().manual_seed(0)
    tied, untied = following_example("prelu_tied", 8, fold, gen), following_example("prelu_untied", 8, fold, gen)
    assert _agrees(tied, fold, 8, (3, 3))[1:] == (Verdict.EQUIVALENT, True)
    pred, observed, agree = _agrees(untied, fold, 8, (3, 3))
    assert pred.outcome is Outcome.FAILS and observed is Verdict.NOT_EQUIVALENT and agree and "[0, 1]" in pred.reason


@pytest.mark.claim("RULE-1")
@pytest.mark.parametrize("dim,order,holds", [(0, "dcr", True), (-1, "dcr", True), (2, "focus", True), (1, "crd", True),
                                             (1, "dcr", False), (1, "c rw rh", True), (1, "rh c rw", False)])
def test_glu_pairs_halves_that_the_fold_keeps_in_step(dim, order, holds):
    pred, observed, agree = _agrees(nn.GLU(dim), FoldSpec.make(2, order), 16, (4, 6))
    assert agree and (pred.outcome is Outcome.HOLDS) is holds and (observed is Verdict.EQUIVALENT) is holds


@pytest.mark.claim("RULE-3")
def test_eval_batchnorm_without_running_stats_uses_batch_statistics():
    bn = nn.BatchNorm2d(8, track_running_stats=False).double().eval()
    pred, observed, agree = _agrees(bn, FoldSpec.make(2), 8, (3, 3))
    assert pred.outcome is Outcome.FAILS and observed is Verdict.NOT_EQUIVALENT and agree  # fold_following used to crash


@pytest.mark.claim("RULE-4")
@pytest.mark.parametrize("shape,bias", [((8, 3, 3), False), ((4, 8, 3, 3), True), ((4, 8, 3, 3), False)])
def test_layernorm_without_bias_or_over_the_batch_axis(shape, bias):
    ln = nn.LayerNorm(shape, bias=bias).double()
    with torch.no_grad():
        ln.weight.copy_(torch.randn(shape))
    pred, observed, agree = _agrees(ln, FoldSpec.make(2), 8, (3, 3))
    assert pred.outcome is Outcome.HOLDS and observed is Verdict.EQUIVALENT and agree


@pytest.mark.claim("RULE-4")
def test_layernorm_along_unfolded_axes_only():
    assert _agrees(nn.LayerNorm(4).double(), FoldSpec.make((2, 1)), 8, (3, 4))[1:] == (Verdict.EQUIVALENT, True)
    pred, observed, agree = _agrees(nn.LayerNorm(4).double(), FoldSpec.make((1, 2)), 8, (3, 4))
    assert pred.outcome is Outcome.FAILS and observed is Verdict.INVALID and agree


@pytest.mark.claim("RULE-5")
def test_plain_dropout_is_elementwise():
    assert _agrees(nn.Dropout(0.5).eval(), FoldSpec.make(2), 8, (3, 3))[1:] == (Verdict.EQUIVALENT, True)
    pred = predict_following(nn.Dropout(0.5).train(), FoldSpec.make(2), 8)
    assert pred.outcome is Outcome.HOLDS and "in law" in pred.reason
    assert predict_following(nn.Dropout2d(0.5).train(), FoldSpec.make(2), 8).outcome is Outcome.FAILS
    # In law: the folded Dropout's keep rate and its independence across the elements of a fold block.
    torch.manual_seed(0)
    mask = nn.Dropout(0.5)(torch.ones(20000, 4, 1, 1)) != 0
    folded = depth_to_space(mask.double(), 2)[:, 0]
    assert abs(float(folded.mean()) - 0.5) < 0.02 and abs(float((folded[:, 0, 0] * folded[:, 1, 1]).mean()) - 0.25) < 0.02


@pytest.mark.claim("RULE-6")
def test_a_dilated_pool_does_not_fold():
    pool = nn.MaxPool2d(2, 2, dilation=2)
    pred, observed, agree = _agrees(pool, FoldSpec.make(2), 8, (5, 5))
    assert pred.outcome is Outcome.FAILS and "dilation" in pred.reason and agree and observed is not Verdict.EQUIVALENT
    with pytest.raises(FoldError, match="conditioned"):
        conditioned_following(pool, FoldSpec.make(2), 8)


@pytest.mark.claim("RULE-6", "RULE-7")
@pytest.mark.parametrize("layer", [
    nn.MaxPool2d((1, 2)), nn.AvgPool2d((1, 3), stride=(1, 2), padding=(0, 1), ceil_mode=True, count_include_pad=False),
    nn.MaxPool2d((1, 3), stride=(1, 1), padding=(0, 1), dilation=(3, 1)), nn.Upsample(scale_factor=(1, 2)),
    nn.Upsample(scale_factor=(1.0, 1.5), mode="bilinear"), nn.Upsample(size=(3, 7), mode="bicubic", align_corners=True),
])
def test_pooling_and_upsampling_along_unfolded_axes_hold(layer):
    pred, observed, agree = _agrees(layer, FoldSpec.make((2, 1)), 8, (3, 5))
    assert pred.outcome is Outcome.HOLDS and observed is Verdict.EQUIVALENT and agree, pred.reason


@pytest.mark.claim("RULE-6")
@pytest.mark.parametrize("layer", [
    nn.AvgPool2d(2), nn.MaxPool2d(2), nn.AvgPool2d(2, divisor_override=3), nn.AvgPool2d((2, 3), stride=(2, 1), padding=(0, 1)),
    nn.AvgPool2d((2, 3), stride=(2, 2), padding=(0, 1), count_include_pad=False, ceil_mode=True),
])
def test_a_pool_on_folded_and_unfolded_axes_is_a_group_reduction(layer):
    fold, y = FoldSpec.make((2, 1), "dcr"), torch.randn(2, 8, 3, 5, dtype=torch.float64)
    pred = predict_following(layer, fold, 8, input_size=(3, 5))
    assert pred.outcome is Outcome.HOLDS_IF and "pooled along the r = 1 axes" in pred.conditions[0]
    assert torch.allclose(conditioned_following(layer, fold, 8)(y), layer(depth_to_space(y, fold.r, fold.order)), rtol=1e-13, atol=1e-13)
    if layer.kernel_size == 2:  # and with every axis folded
        y = torch.randn(2, 16, 3, 5, dtype=torch.float64)
        reduce = conditioned_following(layer, FoldSpec.make(2), 16)
        assert torch.allclose(reduce(y), layer(depth_to_space(y, 2)), rtol=1e-13, atol=1e-13)


@pytest.mark.claim("RULE-6")
@pytest.mark.parametrize("r", [5, 6, 8])
def test_a_pool_larger_than_the_map_is_invalid(r):
    for name in ("avgpool_r", "maxpool_r"):
        pool = following_example(name, 2 * r * r, FoldSpec.make(r), torch.Generator())
        pred = predict_following(pool, FoldSpec.make(r), 2 * r * r, input_size=(4, 4))
        assert pred.outcome is Outcome.INVALID and pred.reason.startswith("input_size=") and _observe(pool, FoldSpec.make(r), 2 * r * r, (4, 4)) is None


def test_every_example_prediction_matches_its_literal_construction():
    for fold in (FoldSpec.make(2), FoldSpec.make((2, 1), "dcr"), FoldSpec.make(3, "focus"), FoldSpec.make(2, dims=1)):
        for name in following_examples():
            if name == "dropout_train":
                continue  # random channel masks: the sweep observes their block structure
            layer = following_example(name, 4 * fold.block, fold, torch.Generator().manual_seed(3))
            pred, observed, agree = _agrees(layer, fold, 4 * fold.block, (4,) * fold.dims)
            assert agree, (fold, name, pred.literal, observed, pred.reason)
            if pred.outcome is Outcome.HOLDS_IF:
                y = torch.randn((2, 4 * fold.block) + (4,) * fold.dims, dtype=torch.float64)
                lhs = fold_following(layer, fold, 4 * fold.block)(depth_to_space(y, fold.r, fold.order, dims=fold.dims))
                assert torch.allclose(conditioned_following(layer, fold, 4 * fold.block)(y), lhs, rtol=1e-12, atol=1e-12)


class Swish(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(x)


class _Elementwise(FollowingRule):
    def predict(self, layer, fold, *, channels, input_size=None):
        return Prediction(Outcome.HOLDS, Verdict.EQUIVALENT, reasons=("elementwise",), codes=("RULE-1",))


def test_a_registered_rule_answers_for_its_type_and_subclasses():
    class Swish(nn.Module):
        def forward(self, x):
            return x * torch.sigmoid(x)

    class Swish2(Swish):
        pass

    class Elementwise(FollowingRule):
        examples = ("swish_test_only",)

        def predict(self, layer, fold, *, channels, input_size=None):
            return Prediction(Outcome.HOLDS, Verdict.EQUIVALENT, reasons=("elementwise",), codes=("RULE-1",))

        def example(self, name, channels, fold, generator):
            return Swish()

    with pytest.raises(FoldError, match="layer='Swish'"):
        predict_following(Swish(), 2, 8)
    rule = register_following_rule(Swish, Elementwise())
    try:
        assert predict_following(Swish2(), 2, 8).reason == "elementwise"
        assert isinstance(fold_following(Swish(), 2, 8), Swish) and "swish_test_only" in following_examples()
        assert type(following_rule(nn.AvgPool3d(2))).__name__ == "PoolRule"
    finally:
        assert FOLLOWING_RULES.unregister(Swish) is rule
    assert "swish_test_only" not in following_examples()
    with pytest.raises(FoldError, match="layer='Swish2'"):
        predict_following(Swish2(), 2, 8)


def test_a_per_call_rule_applies_in_that_call_only():
    layer, rules = Swish(), {Swish: _Elementwise()}
    assert predict_following(layer, 2, 8, rules=rules).reason == "elementwise"
    assert isinstance(fold_following(layer, 2, 8, rules=rules), Swish)
    assert following_rule(layer, rules=rules) is rules[Swish]
    with pytest.raises(FoldError, match="no conditioned folded form"):
        conditioned_following(layer, 2, 8, rules=rules)  # the rule's default: none
    # the table is as it was: the next call without rules has none for Swish
    assert Swish not in FOLLOWING_RULES
    with pytest.raises(FoldError, match="layer='Swish'.*no following-layer rule"):
        predict_following(layer, 2, 8)


def test_a_per_call_rule_beats_a_built_in_one():
    builtin = following_rule(nn.BatchNorm2d(8))
    bn = nn.BatchNorm2d(8).train()  # batch statistics: the built-in rule says it fails
    assert predict_following(bn, 2, 8).outcome is Outcome.FAILS
    # a rule given for a base class beats the table's rule for the subclass, in this call
    assert predict_following(bn, 2, 8, rules={(nn.modules.batchnorm._BatchNorm,): _Elementwise()}).reason == "elementwise"
    assert predict_following(bn, 2, 8).outcome is Outcome.FAILS and following_rule(nn.BatchNorm2d(8)) is builtin


def test_the_table_refuses_a_second_rule_for_a_type_unless_replace():
    builtin = FOLLOWING_RULES.get(nn.ReLU)
    with pytest.raises(FoldError, match="registered already") as info:
        register_following_rule((Swish, nn.ReLU), _Elementwise())  # refused as a whole: Swish is not registered either
    assert info.value.param == "types" and Swish not in FOLLOWING_RULES and FOLLOWING_RULES.get(nn.ReLU) is builtin
    mine = register_following_rule(nn.ReLU, _Elementwise(), replace=True)
    try:
        assert predict_following(nn.ReLU(), 2, 8).reason == "elementwise"
    finally:
        register_following_rule(nn.ReLU, builtin, replace=True)
    assert following_rule(nn.ReLU()) is builtin is not mine


@pytest.mark.parametrize(
    "rules",
    [[(Swish, _Elementwise())], {Swish: object()}, {int: _Elementwise()}, {"Swish": _Elementwise()}],
    ids=["a list", "not a rule", "not a module type", "a name"],
)
def test_bad_per_call_rules_name_the_parameter(rules):
    for call in (lambda: predict_following(Swish(), 2, 8, rules=rules), lambda: fold_following(Swish(), 2, 8, rules=rules),
                 lambda: conditioned_following(Swish(), 2, 8, rules=rules), lambda: following_rule(Swish(), rules=rules)):
        with pytest.raises(FoldError) as info:
            call()
        assert info.value.param == "rules" and str(info.value).startswith("rules=")


def test_an_int_r_means_the_layers_dims():
    assert predict_following(nn.BatchNorm1d(4).eval(), 2, 4).outcome is Outcome.HOLDS  # r=(2,) on a 1-D BatchNorm
    assert fold_following(nn.BatchNorm3d(16).eval(), 2, 16).num_features == 2  # r=(2, 2, 2)
    assert predict_following(nn.ReLU(), 2, 4, input_size=(3,)).outcome is Outcome.HOLDS  # dims from input_size
