"""Receptive-field rules per call (``rules=``), the table's duplicate policy, and ``leaves=`` by class or by name.

A rule given to one call applies to that call only: the table (RF_RULES) is the same afterwards, and a second call
without it meets the op without a rule again. A per-call rule beats a built-in one.
"""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv import FoldError
from foldconv.analysis import shift_equivariance
from foldconv.analysis.receptive_field import (
    RF_RULES,
    UnsupportedOpError,
    check_receptive_field,
    effective_receptive_field,
    empirical_box,
    receptive_field,
    register_rf_rule,
)
from foldconv.analysis.receptive_field.registry import leaf_types, rule_for
from foldconv.analysis.receptive_field.rules_tensor import mix_geometry

SHAPE = (1, 2, 12, 12)


class Channelwise(nn.Module):
    """Scales each channel on its own: pointwise, but torch.fx cannot trace it (it iterates over a tensor)."""

    def forward(self, x):
        return torch.stack([c * (k + 2) for k, c in enumerate(x.unbind(1))], 1)


def pointwise(ctx, node):
    return ctx.pointwise(node)


def net():
    return nn.Sequential(nn.Conv2d(2, 2, 3), Channelwise(), nn.Conv2d(2, 1, 3, dilation=2))


def test_a_per_call_rule_applies_in_that_call_only():
    assert Channelwise not in RF_RULES and Channelwise not in leaf_types()
    with pytest.raises(UnsupportedOpError, match="cannot trace"):
        receptive_field(net(), SHAPE, trace="fx")
    report = receptive_field(net(), SHAPE, rules={Channelwise: pointwise})
    assert report.output.rf == (7, 7) and report.output.exact and not report.fallback_nodes
    assert [n.op for n in report.nodes.values()] == ["input", "Conv2d", "Channelwise", "Conv2d"]  # kept whole
    # the table is as it was: a second call without the rule meets the untraceable module again
    assert Channelwise not in RF_RULES and Channelwise not in leaf_types()
    with pytest.raises(UnsupportedOpError, match="cannot trace"):
        receptive_field(net(), SHAPE, trace="fx")
    # and by default is analysed from its aten operations (unbind, mul, stack): the same field, op by op
    again = receptive_field(net(), SHAPE)
    assert again.output.rf == (7, 7) and again.output.exact and "Channelwise" not in [n.op for n in again.nodes.values()]


def test_a_per_call_rule_for_a_function_and_the_analyses_that_take_rules():
    class Diff(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return torch.diff(self.conv(x), dim=-1)

    # diff reads two neighbours along the last axis: a conservative whole-width mix is a rule that changes the answer
    wide = {torch.diff: lambda ctx, node: mix_geometry(ctx, node, ctx.first(node), (-1,))}
    with pytest.raises(UnsupportedOpError, match="op='diff'"):
        receptive_field(Diff(), (1, 1, 9, 9), trace="fx")
    assert receptive_field(Diff(), (1, 1, 9, 9), rules=wide).output.rf == (3, 9)
    assert rule_for("call_function", torch.diff) is None
    with pytest.raises(UnsupportedOpError, match="op='diff'"):
        receptive_field(Diff(), (1, 1, 9, 9), trace="fx")
    # the analyses built on receptive_field take the same rules
    model = net()
    rules = {Channelwise: pointwise}
    assert check_receptive_field(model, SHAPE, rules=rules).ok
    assert empirical_box(model, SHAPE, index=(0, 0), rules=rules) == ((0, 6), (0, 6))
    assert effective_receptive_field(model, SHAPE, samples=1, rules=rules).shape == (12, 12)
    assert shift_equivariance(model, SHAPE, rules=rules).output.period == (1, 1)
    with pytest.raises(UnsupportedOpError):
        shift_equivariance(model, SHAPE, trace="fx")
    assert shift_equivariance(model, SHAPE).output.period == (1, 1)  # its aten operations answer alike


def test_a_per_call_rule_beats_a_built_in_one_and_leaves_it_in_place():
    builtin = RF_RULES.find(nn.ReLU)
    model = nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU())
    wide = {nn.ReLU: lambda ctx, node: mix_geometry(ctx, node, ctx.first(node), (-1,))}
    assert receptive_field(model, (1, 1, 9, 9), rules=wide).output.rf == (3, 9)
    assert receptive_field(model, (1, 1, 9, 9)).output.rf == (3, 3)
    assert RF_RULES.find(nn.ReLU) is builtin


def test_the_table_refuses_a_second_rule_for_a_target_unless_replace():
    class Gate(nn.Module):
        def forward(self, x):
            return x * 2

    first = register_rf_rule(Gate, pointwise)
    try:
        with pytest.raises(FoldError, match="registered already") as info:
            register_rf_rule(Gate, lambda ctx, node: None)
        assert info.value.param == "target" and RF_RULES.find(Gate) is first
        wide = register_rf_rule(Gate, lambda ctx, node: mix_geometry(ctx, node, ctx.first(node), (-1,)), replace=True)
        assert RF_RULES.find(Gate) is wide
        assert receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3), Gate()), (1, 1, 9, 9)).output.rf == (3, 9)
    finally:
        RF_RULES.unregister(Gate)
    assert Gate not in RF_RULES and Gate not in leaf_types()
    with pytest.raises(FoldError, match="is not registered"):
        RF_RULES.unregister(Gate)


def test_a_registered_class_is_a_leaf_unless_leaf_false():
    class Kept(nn.Module):
        def forward(self, x):
            return x + 1

    register_rf_rule(Kept, pointwise, leaf=False)
    try:
        assert Kept in RF_RULES and Kept not in leaf_types()
        ops = [n.op for n in receptive_field(nn.Sequential(Kept()), (1, 1, 4)).nodes.values()]
        assert ops == ["input", "add"]  # traced through: its own ops answer
    finally:
        RF_RULES.unregister(Kept)


def test_leaves_by_class_or_by_qualified_name():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)

        def forward(self, x):
            return self.conv(x)

    model = nn.Sequential(Block(), Block())
    by_name = receptive_field(model, (1, 1, 12, 12), leaves=["0"], fallback="real")
    assert by_name.fallback_nodes == ("_0",) and "_1_conv" in by_name.nodes  # only the named instance is kept whole
    assert by_name.output.rf == (5, 5)
    by_class = receptive_field(model, (1, 1, 12, 12), leaves=[Block], fallback="real")
    assert by_class.fallback_nodes == ("_0", "_1")
    with pytest.raises(UnsupportedOpError, match="no receptive-field rule"):
        receptive_field(model, (1, 1, 12, 12), leaves=["1"])
    # a class given a rule for the call is kept whole in every instance, as a registered one is
    assert receptive_field(model, (1, 1, 12, 12), leaves=["1"], rules={Block: pointwise}).output.rf == (1, 1)
