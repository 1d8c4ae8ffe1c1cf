"""Every malformed rewrite request is a FoldError naming the parameter, its value and the rule."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv.surgery import find_sites, register_rule, rewrite, unregister_rule
from foldconv.surgery.rules import get_rule
from helpers import raises_fold_error

NET = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1))
SHAPE = (1, 3, 8, 8)


def test_unknown_rule_lists_the_known_names():
    err = raises_fold_error("rules", rewrite, NET, SHAPE, ["fold_everything"])
    assert "strided_to_spd" in str(err) and "focus_to_conv" in str(err)


@pytest.mark.parametrize("rules", ["strided_to_spd", [], [("strided_to_spd",)], [42], [("strided_to_spd", "crd")]])
def test_malformed_rule_lists(rules):
    raises_fold_error("rules", rewrite, NET, SHAPE, rules)


@pytest.mark.parametrize("option, value", [("order", "xyz"), ("padding", "same"), ("at", "0"), ("at", [0])])
def test_bad_option_values_name_the_option_and_the_rule(option, value):
    err = raises_fold_error(option, rewrite, NET, SHAPE, [("strided_to_spd", {option: value})])
    assert "strided_to_spd" in str(err)


def test_unknown_option_lists_the_rule_options():
    err = raises_fold_error("colour", rewrite, NET, SHAPE, [("strided_to_spd", {"colour": "red"})])
    assert "order" in str(err) and "padding" in str(err)


def test_at_naming_no_site_lists_the_sites():
    err = raises_fold_error("at", rewrite, NET, SHAPE, [("strided_to_spd", {"at": ["body.conv"]})])
    assert "'0'" in str(err) or "0" in err.rule


def test_stage_rules_need_a_real_stage_and_their_required_options():
    raises_fold_error("stage", rewrite, NET, SHAPE, [("fold_stage", {"r": 2})])
    raises_fold_error("r", rewrite, NET, SHAPE, [("fold_stage", {"stage": "0"})])
    raises_fold_error("r", rewrite, NET, SHAPE, [("fold_stage", {"stage": "0", "r": 0})])
    raises_fold_error("stage", rewrite, NET, SHAPE, [("fold_stage", {"stage": "layer9", "r": 2})])
    raises_fold_error("stage", rewrite, NET, SHAPE, [("unfold_stage", {"stage": ""})])


@pytest.mark.parametrize("shape", [(8, 8), "1x3x8x8", (1, 3, 0, 8), (1, 3, 8.0, 8), torch.zeros(1, 3, 8, 8)])
def test_bad_example_input_shapes(shape):
    raises_fold_error("example_input_shape", rewrite, NET, shape, ["strided_to_spd"])


def test_a_shape_the_model_cannot_run_on():
    err = raises_fold_error("example_input_shape", rewrite, NET, (1, 5, 8, 8), ["strided_to_spd"])
    assert "cannot run" in str(err)


@pytest.mark.parametrize("keyword, value", [("verify", "yes"), ("fold_bn", 1), ("seed", -1), ("seed", 1.5)])
def test_bad_keywords(keyword, value):
    raises_fold_error(keyword, rewrite, NET, SHAPE, ["strided_to_spd"], **{keyword: value})


def test_not_a_model():
    raises_fold_error("model", rewrite, lambda x: x, SHAPE, ["strided_to_spd"])
    raises_fold_error("model", find_sites, "resnet18", SHAPE, ["strided_to_spd"])


def test_register_rule_refuses_duplicates_and_non_rules():
    raises_fold_error("rule.name", register_rule, get_rule("strided_to_spd"))
    raises_fold_error("rule", register_rule, "strided_to_spd")
    raises_fold_error("name", unregister_rule, "strided_to_spd")
    raises_fold_error("rules", unregister_rule, "never_registered")
