"""Registry: one duplicate policy and one per-call view (``with_overrides``) for every rule table."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv.analysis.counting.ops import OP_COSTS, OpCost
from foldconv.analysis.receptive_field.registry import RF_RULES
from foldconv.errors import FoldError
from foldconv.predict.following import FOLLOWING_RULES
from foldconv.registry import Registry, mro_candidates


def test_a_view_consults_its_overrides_first_and_leaves_the_table_alone():
    table = Registry("layer", candidates=mro_candidates, param="rules")
    table.register(nn.Module, "any module")
    table.register(nn.Conv2d, "a conv")
    view = table.with_overrides({nn.modules.conv._ConvNd: "any conv", (nn.ReLU, nn.GELU): "pointwise"})
    # an override beats a table entry even for a more specific class: it is what this call asked for
    assert view.get(nn.Conv2d(1, 1, 1)) == "any conv" and table.get(nn.Conv2d(1, 1, 1)) == "a conv"
    assert view.get(nn.GELU()) == view.get(nn.ReLU()) == "pointwise" and table.get(nn.GELU()) == "any module"
    assert table.with_overrides(None) is table and table.with_overrides({}) is table
    with pytest.raises(FoldError, match="per-call view"):
        view.register(nn.Tanh, "x")
    with pytest.raises(FoldError, match="per-call view"):
        view.unregister(nn.Conv2d)


@pytest.mark.parametrize("table, param, bad_key, bad_value", [
    (OP_COSTS, "op_costs", 3, "free"),
    (RF_RULES, "rules", 3, "pointwise"),
    (FOLLOWING_RULES, "rules", int, object()),
])
def test_every_tables_view_names_its_per_call_parameter(table, param, bad_key, bad_value):
    good_key = {"op_costs": torch.ops.aten.relu, "rules": nn.ReLU}[param]
    for overrides in ([(good_key, bad_value)], {bad_key: table.find(good_key) if table is not OP_COSTS else (lambda i, o: OpCost())},
                      {good_key: bad_value}):
        with pytest.raises(FoldError) as info:
            table.with_overrides(overrides)
        assert info.value.param == param, overrides


def test_a_good_override_changes_the_answer():
    """Mutation check: the view is consulted (a different rule gives a different count)."""
    from foldconv.analysis.counting import count

    tenfold = {torch.ops.aten.relu: lambda inputs, outputs: OpCost(elementwise_flops=10 * outputs[0].numel())}
    assert count(nn.ReLU(), (2, 3), op_costs=tenfold).flops == 60 != count(nn.ReLU(), (2, 3)).flops
