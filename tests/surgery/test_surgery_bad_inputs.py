"""Every malformed rewrite request is a FoldError naming the parameter, its value and the rule."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv.surgery import RULES, Rule, find_sites, inverse_rules, rewrite
from helpers import raises_fold_error

NET = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2, padding=1))
SHAPE = (1, 3, 8, 8)


def test_unknown_rule_lists_the_known_names():
    err = raises_fold_error("rules", rewrite, NET, SHAPE, ["fold_everything"])
    assert all(name in str(err) for name in RULES.names())
    assert "did you mean strided_to_spd?" in str(raises_fold_error("rules", rewrite, NET, SHAPE, ["strided_to_sdp"]))


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
    assert err.value == ("body.conv",) and err.rule == "names no site of rule 'strided_to_spd'; its sites: 0"
    two = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.Conv2d(4, 4, 3, stride=2))
    err = raises_fold_error("at", rewrite, two, (1, 3, 16, 16), [("strided_to_spd", {"at": ["0", "2"]})])
    assert err.value == ("2",) and err.rule.endswith("its sites: 0, 1")


def test_stage_rules_need_a_real_stage_and_their_required_options():
    raises_fold_error("stage", rewrite, NET, SHAPE, [("fold_stage", {"r": 2})])
    raises_fold_error("r", rewrite, NET, SHAPE, [("fold_stage", {"stage": "0"})])
    raises_fold_error("r", rewrite, NET, SHAPE, [("fold_stage", {"stage": "0", "r": 0})])
    raises_fold_error("stage", rewrite, NET, SHAPE, [("fold_stage", {"stage": "layer9", "r": 2})])
    raises_fold_error("stage", rewrite, NET, SHAPE, [("unfold_stage", {"stage": ""})])


@pytest.mark.parametrize("shape", [(8, 8), "1x3x8x8", (1, 3, 0, 8), (1, 3, 8.0, 8), torch.zeros(1, 3, 8, 8)])
def test_bad_input_shapes(shape):
    raises_fold_error("input_shape", rewrite, NET, shape, ["strided_to_spd"])
    raises_fold_error("input_shape", find_sites, NET, shape, ["strided_to_spd"])


def test_a_shape_the_model_cannot_run_on(capfd):
    err = raises_fold_error("input_shape", rewrite, NET, (1, 5, 8, 8), ["strided_to_spd"])
    assert "cannot run" in str(err) and "expected input[1, 5, 8, 8] to have 3 channels" in str(err)
    out, printed = capfd.readouterr()
    assert "Traceback" not in out + printed  # no traceback printed before the one-line error


@pytest.mark.parametrize("keyword, value", [("verify", "yes"), ("fold_bn", 1), ("seed", -1), ("seed", 1.5)])
def test_bad_keywords(keyword, value):
    raises_fold_error(keyword, rewrite, NET, SHAPE, ["strided_to_spd"], **{keyword: value})


def test_not_a_model():
    raises_fold_error("model", rewrite, lambda x: x, SHAPE, ["strided_to_spd"])
    raises_fold_error("model", find_sites, "resnet18", SHAPE, ["strided_to_spd"])


def test_the_rule_table_refuses_duplicates_non_rules_and_unknown_names():
    good = RULES.get("strided_to_spd")
    raises_fold_error("rule", RULES.register, "strided_to_spd", good)  # a built-in is replaced only with replace=True
    raises_fold_error("rule", RULES.register, "mine", "strided_to_spd")
    raises_fold_error("rule", RULES.register, "mine", good)  # registered under another rule's name
    raises_fold_error("rule", RULES.register, "not a name", Rule("not a name", good.find, good.build))
    raises_fold_error("rule", RULES.unregister, "never_registered")
    assert RULES.register("strided_to_spd", good, replace=True) is good and RULES.get("strided_to_spd") is good


def test_inverse_rules_of_a_rule_without_one_or_a_bad_report():
    err = raises_fold_error("rules", inverse_rules, ["strided_to_spd", "fold_bn"])
    assert err.value == "fold_bn" and "no inverse" in err.rule
    raises_fold_error("rules", inverse_rules, "strided_to_spd")
    raises_fold_error("rules", inverse_rules, ["fold_everything"])
    raises_fold_error("report", inverse_rules, ["strided_to_spd"], report="a report")
