"""Bad inputs to the prediction API: an INVALID prediction (predictors) or a FoldError (builders), naming the parameter.

The contract (foldconv.predict.outcome): predictors answer a malformed request with ``Outcome.INVALID`` whose
first reason starts with ``"<param>="``, and raise FoldError only when they have no rule for the layer type;
``fold_following``/``conditioned_following``/``following_example``/``register_following_rule`` build things
and raise FoldError naming the parameter. Never a TypeError, KeyError, IndexError or AttributeError.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv import ConvSpec, FoldError, FoldSpec
from foldconv.predict import (
    ChannelGroupReduce,
    FollowingRule,
    Outcome,
    conditioned_following,
    fold_following,
    following_example,
    predict_fold,
    predict_following,
    predict_space_to_depth,
    register_following_rule,
)

CONV = ConvSpec.make(2, 4, 2, 3, padding=1)

FOLD_CASES = [
    (dict(r=0), "r"),
    (dict(r=-1), "r"),
    (dict(r=1.5), "r"),
    (dict(r=True), "r"),
    (dict(r="abc"), "r"),
    (dict(r=(2, 2, 2)), "r"),
    (dict(r=FoldSpec.make(2, dims=3)), "r"),  # a fold of other dimensionality (was KeyError 'rd')
    (dict(r=(2, 0)), "r"),
    (dict(order="xyz"), "order"),
    (dict(order="c rh"), "order"),
    (dict(r=FoldSpec.make(2, "dcr"), order="crd"), "order"),
    (dict(input_order="c rh rh"), "input_order"),
    (dict(input_order=3), "input_order"),
    (dict(folded_stride=0), "folded_stride"),
    (dict(folded_stride=(True, True)), "folded_stride"),  # was taken as 1
    (dict(folded_stride=(1, 2, 3)), "folded_stride"),
    (dict(folded_stride=1.5), "folded_stride"),
    (dict(folded_padding=-1), "folded_padding"),
    (dict(folded_padding="1"), "folded_padding"),
    (dict(folded_padding=(0, None)), "folded_padding"),
    (dict(input_size=0), "input_size"),
    (dict(input_size=(8,)), "input_size"),
    (dict(input_size=(8.5, 8)), "input_size"),
    (dict(input_size=torch.tensor([8, 8])), "input_size"),
    (dict(conv=ConvSpec.make(2, 4, 2, 5), input_size=(2, 2)), "input_size"),  # empty output
    (dict(conv=nn.Linear(2, 2)), "conv"),
    (dict(conv="conv"), "conv"),
    (dict(conv=ConvSpec.make(2, 4, 2, 3, padding=5, padding_mode="circular"), input_size=4), "padding"),
    (dict(conv=ConvSpec.make(2, 4, 2, 3, padding=4, padding_mode="reflect"), r=(1, 1), input_size=4), "padding"),
]


@pytest.mark.claim("RULE-9")
@pytest.mark.parametrize("kwargs,param", FOLD_CASES)
def test_predict_fold_bad_inputs_are_invalid(kwargs, param):
    kwargs = dict(kwargs)
    conv, r = kwargs.pop("conv", CONV), kwargs.pop("r", 2)
    pred = predict_fold(conv, r, **kwargs)
    assert pred.outcome is Outcome.INVALID and pred.reason.startswith(f"{param}="), pred.reason


@pytest.mark.parametrize("kwargs", [dict(folded_stride=2), dict(folded_padding=2), dict(input_size=8), dict(r=FoldSpec.make(2))])
def test_predict_fold_takes_ints_for_per_axis_values(kwargs):
    kwargs = dict(kwargs)
    assert predict_fold(CONV, kwargs.pop("r", 2), **kwargs).outcome is not Outcome.INVALID


S2D_CASES = [
    (dict(r=0), "r"),
    (dict(r=(2, 2, 2)), "r"),
    (dict(input_size=0), "input_size"),
    (dict(input_size=(8,)), "input_size"),
    (dict(input_size=2), "input_size"),  # empty output for kernel 4
    (dict(big=nn.ReLU()), "conv"),
    (dict(big=ConvSpec.make(2, 1, 2, 4, stride=2, padding=10, padding_mode="circular")), "padding"),
]


@pytest.mark.claim("RULE-9")
@pytest.mark.parametrize("kwargs,param", S2D_CASES)
def test_predict_space_to_depth_bad_inputs_are_invalid(kwargs, param):
    kwargs = dict(kwargs)
    big, r, size = kwargs.pop("big", ConvSpec.make(2, 1, 2, 4, stride=2)), kwargs.pop("r", 2), kwargs.pop("input_size", 8)
    pred = predict_space_to_depth(big, r, size)
    assert pred.outcome is Outcome.INVALID and pred.reason.startswith(f"{param}="), pred.reason


FOLLOWING_CASES = [
    (nn.ReLU(), 2, 0, None, "channels"),  # was "holds"
    (nn.ReLU(), 2, 2.5, None, "channels"),
    (nn.ReLU(), 2, True, None, "channels"),
    (nn.BatchNorm2d(8).eval(), 2, 4, None, "channels"),  # was "holds"
    (nn.BatchNorm2d(8).eval(), FoldSpec.make(2, dims=3), 8, None, "fold"),  # was IndexError
    (nn.BatchNorm2d(8).eval(), (2, 2, 2), 8, None, "fold"),
    (nn.ReLU(), 0, 8, None, "fold"),
    (nn.ReLU(), "bad", 8, None, "fold"),
    (nn.BatchNorm2d(8).eval(), 2, 8, (4,), "input_size"),
    (nn.ReLU(), 2, 8, (0, 4), "input_size"),
    (nn.GroupNorm(2, 8), 2, 6, None, "channels"),
    (nn.LayerNorm((8, 3, 3)), 2, 4, None, "channels"),
    (nn.LayerNorm((8, 3, 3)), 2, 8, (4, 4), "input_size"),
    (nn.LayerNorm((2, 2, 8, 3, 3)), 2, 8, None, "layer"),
    (nn.MaxPool2d(2, padding=2), 2, 8, None, "layer"),
    (nn.MaxPool2d(3), 2, 8, (2, 2), "input_size"),
    (nn.AvgPool2d(5, 5), 5, 50, (4, 4), "input_size"),  # the sweep's avgpool_r at r=5 (was "output shapes differ")
    (nn.MaxPool2d(2, return_indices=True), 2, 8, None, "layer"),
    (nn.PReLU(3), 2, 8, None, "channels"),
    (nn.GLU(1), (1, 1), 5, None, "channels"),  # GLU halves the channels
    (nn.GLU(-1), 2, 8, (4, 5), "input_size"),
    (nn.Upsample(scale_factor=(2, 2, 2)), 2, 8, None, "fold"),
]


@pytest.mark.claim("RULE-9")
@pytest.mark.parametrize("layer,fold,channels,size,param", FOLLOWING_CASES)
def test_predict_following_bad_inputs_are_invalid(layer, fold, channels, size, param):
    pred = predict_following(layer, fold, channels, input_size=size)
    assert pred.outcome is Outcome.INVALID and pred.reason.startswith(f"{param}="), pred.reason


@pytest.mark.parametrize("layer,fold,channels,size,param", [case for case in FOLLOWING_CASES if case[3] is None])
def test_fold_following_bad_inputs_raise(layer, fold, channels, size, param):
    with pytest.raises(FoldError) as err:
        fold_following(layer, fold, channels)
    assert err.value.param == param


class _Rule(FollowingRule):
    def predict(self, layer, fold, *, channels, input_size=None):
        raise NotImplementedError


RAISE_CASES = [
    (lambda: predict_following(nn.Linear(2, 2), 2, 8), "layer"),
    (lambda: predict_following("relu", 2, 8), "layer"),
    (lambda: fold_following(nn.Softmax(dim=1), 2, 8), "layer"),
    (lambda: fold_following(nn.ReLU(), 2, 6), "channels"),
    (lambda: fold_following(nn.GroupNorm(8, 8), 2, 8), "layer"),  # 2 folded channels cannot hold 8 groups
    (lambda: conditioned_following(nn.ReLU(), 2, 8), "layer"),
    (lambda: conditioned_following(nn.AvgPool2d(3, 1, 1), 2, 8), "layer"),
    (lambda: following_example("nope", 8, 2, torch.Generator()), "following"),
    (lambda: following_example("relu", 0, 2, torch.Generator()), "channels"),
    (lambda: following_example("relu", 8, 0, torch.Generator()), "fold"),
    (lambda: following_example("relu", 8, 2, "gen"), "generator"),
    (lambda: register_following_rule(int, _Rule()), "types"),
    (lambda: register_following_rule((), _Rule()), "types"),
    (lambda: register_following_rule(nn.ReLU, object()), "rule"),
    (lambda: register_following_rule(nn.Softmax, type("Clash", (FollowingRule,), {"examples": ("relu",)})()), "rule"),
    (lambda: register_following_rule(nn.ReLU, _Rule()), "types"),  # has a rule already (replace=True replaces it)
    (lambda: register_following_rule(nn.Softmax, _Rule(), replace="yes"), "replace"),
    (lambda: predict_following(nn.ReLU(), 2, 8, rules={nn.ReLU: object()}), "rules"),
    (lambda: fold_following(nn.ReLU(), 2, 8, rules=[nn.ReLU]), "rules"),
    (lambda: ChannelGroupReduce(FoldSpec.make(2), (3, 3), "max"), "kernel"),
    (lambda: ChannelGroupReduce(FoldSpec.make(2), (2, 2), "median"), "kind"),
    (lambda: ChannelGroupReduce(FoldSpec.make(2), (2,), "max"), "kernel"),
]


@pytest.mark.parametrize("call,param", RAISE_CASES)
def test_builders_raise_fold_errors_naming_the_parameter(call, param):
    with pytest.raises(FoldError) as err:
        call()
    assert err.value.param == param and str(err.value).startswith(f"{param}=")
