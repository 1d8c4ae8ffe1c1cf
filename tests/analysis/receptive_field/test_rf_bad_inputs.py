"""Bad inputs to the receptive-field API: every one is a FoldError (a ValueError) naming the parameter."""
from __future__ import annotations

from typing import Callable

import pytest
import torch
from torch import nn

from foldconv import FoldError
from foldconv.analysis import shift_equivariance
from foldconv.analysis.receptive_field import (
    check_receptive_field,
    effective_receptive_field,
    empirical_box,
    empirical_boxes,
    folded_receptive_field,
    positive_copy,
    receptive_field,
    register_rf_rule,
)
from helpers import raises_fold_error

NET = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3))
SHAPE = (1, 3, 8, 8)


def report():
    return receptive_field(NET, SHAPE)


class Rolled(nn.Module):
    def forward(self, x):
        return torch.diff(x, dim=-1)


class BadRule(nn.Module):
    def forward(self, x):
        return x


register_rf_rule(BadRule, lambda ctx, node: 42)  # a rule that returns something other than a Geometry

CASES = {
    # receptive_field
    "model is not a module": (lambda: receptive_field("resnet18", SHAPE), "model"),
    "input_shape too short": (lambda: receptive_field(NET, (1, 3)), "input_shape"),
    "input_shape four spatial dims": (lambda: receptive_field(NET, (1, 3, 4, 4, 4, 4)), "input_shape"),
    "input_shape zero": (lambda: receptive_field(NET, (1, 3, 0, 4)), "input_shape"),
    "input_shape float": (lambda: receptive_field(NET, (1, 3, 4.0, 4)), "input_shape"),
    "input_shape bool": (lambda: receptive_field(NET, (1, 3, True, 4)), "input_shape"),
    "input_shape string": (lambda: receptive_field(NET, "1,3,4,4"), "input_shape"),
    "input_shape wrong channels": (lambda: receptive_field(NET, (1, 5, 8, 8)), "input_shape"),
    "input_shape smaller than kernel": (lambda: receptive_field(nn.Conv2d(3, 1, 5), (1, 3, 2, 2)), "input_shape"),
    "fallback unknown": (lambda: receptive_field(NET, SHAPE, fallback="guess"), "fallback"),
    "leaves not classes": (lambda: receptive_field(NET, SHAPE, leaves=[int]), "leaves"),
    "leaves a bare class": (lambda: receptive_field(NET, SHAPE, leaves=nn.Conv2d), "leaves"),
    "leaves a bare name": (lambda: receptive_field(NET, SHAPE, leaves="0"), "leaves"),
    "leaves an unknown module name": (lambda: receptive_field(NET, SHAPE, leaves=["9"]), "leaves"),
    "rules not a mapping": (lambda: receptive_field(NET, SHAPE, rules=[(nn.ReLU, lambda ctx, node: None)]), "rules"),
    "rules target a number": (lambda: receptive_field(NET, SHAPE, rules={3: lambda ctx, node: None}), "rules"),
    "rules rule not callable": (lambda: receptive_field(NET, SHAPE, rules={nn.ReLU: "pointwise"}), "rules"),
    "shift rules rule not callable": (lambda: shift_equivariance(NET, SHAPE, rules={nn.ReLU: "pointwise"}), "rules"),
    "shift leaves unknown name": (lambda: shift_equivariance(NET, SHAPE, leaves=["nope"]), "leaves"),
    "op without rule": (lambda: receptive_field(Rolled(), SHAPE, trace="fx"), "model"),
    "trace unknown": (lambda: receptive_field(NET, SHAPE, trace="jit"), "trace"),
    "output key unknown (aten)": (lambda: receptive_field(NET, SHAPE, output="logits", trace="aten"), "output"),
    "output key unknown (fx)": (lambda: receptive_field(NET, SHAPE, output="logits", trace="fx"), "output"),
    "rule returns no Geometry": (lambda: receptive_field(nn.Sequential(BadRule()), SHAPE), "rule"),
    # RFReport.box
    "box index out of range": (lambda: report().box(index=(6, 0)), "index"),
    "box index negative": (lambda: report().box(index=(-1, 0)), "index"),
    "box index wrong length": (lambda: report().box(index=(0,)), "index"),
    "box index floats": (lambda: report().box(index=(0.0, 1.0)), "index"),
    "box index string": (lambda: report().box(index="00"), "index"),
    "box node unknown": (lambda: report().box("nope"), "node"),
    "box clip not bool": (lambda: report().box(clip="yes"), "clip"),
    # check_receptive_field
    "check nodes unknown": (lambda: check_receptive_field(NET, SHAPE, nodes=["nope"]), "nodes"),
    "check nodes a string": (lambda: check_receptive_field(NET, SHAPE, nodes="_0"), "nodes"),
    "check max_nodes zero": (lambda: check_receptive_field(NET, SHAPE, max_nodes=0), "max_nodes"),
    "check max_nodes float": (lambda: check_receptive_field(NET, SHAPE, max_nodes=2.5), "max_nodes"),
    "check report of another shape": (lambda: check_receptive_field(NET, SHAPE, report=receptive_field(NET, (1, 3, 9, 9))), "report"),
    "check report not a report": (lambda: check_receptive_field(NET, SHAPE, report={"rf": 3}), "report"),
    "check seed negative": (lambda: check_receptive_field(NET, SHAPE, seed=-1), "seed"),
    "check input_shape bad": (lambda: check_receptive_field(NET, (1, 3, 8)), "input_shape"),
    # effective_receptive_field and the empirical boxes
    "erf samples zero": (lambda: effective_receptive_field(NET, SHAPE, samples=0), "samples"),
    "erf samples float": (lambda: effective_receptive_field(NET, SHAPE, samples=2.5), "samples"),
    "erf seed float": (lambda: effective_receptive_field(NET, SHAPE, seed=1.5), "seed"),
    "erf node unknown": (lambda: effective_receptive_field(NET, SHAPE, node="nope"), "node"),
    "erf index out of range": (lambda: effective_receptive_field(NET, SHAPE, index=(99, 0)), "index"),
    "erf model not a module": (lambda: effective_receptive_field(None, SHAPE), "model"),
    "empirical_box index wrong length": (lambda: empirical_box(NET, SHAPE, index=(1, 1, 1)), "index"),
    "empirical_boxes queries malformed": (lambda: empirical_boxes(NET, SHAPE, [("_0",)]), "queries"),
    "empirical_boxes queries a string": (lambda: empirical_boxes(NET, SHAPE, "_0"), "queries"),
    "positive_copy not a module": (lambda: positive_copy(torch.zeros(3)), "module"),
    "positive_copy integer dtype": (lambda: positive_copy(NET, dtype=torch.int64), "dtype"),
    # folded_receptive_field
    "fold conv not a conv": (lambda: folded_receptive_field(nn.Linear(4, 4), 2), "conv"),
    "fold transposed conv": (lambda: folded_receptive_field(nn.ConvTranspose2d(4, 4, 3), 2), "conv"),
    "fold r zero": (lambda: folded_receptive_field(nn.Conv2d(4, 1, 3), 0), "r"),
    "fold r of other dims": (lambda: folded_receptive_field(nn.Conv2d(8, 1, 3), (2, 2, 2)), "r"),
    "fold order unknown": (lambda: folded_receptive_field(nn.Conv2d(4, 1, 3), 2, order="xyz"), "order"),
    "fold input_size wrong length": (lambda: folded_receptive_field(nn.Conv2d(4, 1, 3), 2, input_size=(4,)), "input_size"),
    "fold input_size zero": (lambda: folded_receptive_field(nn.Conv2d(4, 1, 3), 2, input_size=(0, 4)), "input_size"),
    "fold input_size below kernel": (lambda: folded_receptive_field(nn.Conv2d(4, 1, 5), 2, input_size=(3, 3)), "input_size"),
    "fold circular padding wider than input": (
        lambda: folded_receptive_field(nn.Conv2d(4, 1, 5, padding=3, padding_mode="circular"), 2, input_size=(2, 2)), "input_size"
    ),
    # register_rf_rule
    "register target a number": (lambda: register_rf_rule(3, lambda ctx, node: None), "target"),
    "register target empty name": (lambda: register_rf_rule("  ", lambda ctx, node: None), "target"),
    "register rule not callable": (lambda: register_rf_rule(Rolled, "pointwise"), "rule"),
    "register leaf not bool": (lambda: register_rf_rule(Rolled, lambda ctx, node: None, leaf="yes"), "leaf"),
    "register replace not bool": (lambda: register_rf_rule(Rolled, lambda ctx, node: None, replace="yes"), "replace"),
    "register a target twice": (lambda: register_rf_rule(BadRule, lambda ctx, node: None), "target"),
    "register a built-in target again": (lambda: register_rf_rule(nn.Conv2d, lambda ctx, node: None), "target"),
}


@pytest.mark.parametrize("call,param", list(CASES.values()), ids=list(CASES))
def test_bad_input_is_a_fold_error_naming_the_parameter(call: Callable[[], object], param: str):
    raises_fold_error(param, call)


def test_a_refused_registration_registers_nothing():
    with pytest.raises(FoldError):
        register_rf_rule(Rolled, "pointwise")
    with pytest.raises(FoldError, match="op='diff'"):
        receptive_field(Rolled(), SHAPE, trace="fx")
