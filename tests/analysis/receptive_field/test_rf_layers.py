"""The receptive-field package's own layering: each module imports only modules listed before it (so there
is no cycle), never a private name of another module, and every built-in rule goes through the registry."""
from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch
from torch import nn

from foldconv.analysis.receptive_field import receptive_field, register_rf_rule, registry

PACKAGE = Path(registry.__file__).parent
ORDER = ["registry", "geometry", "trace", "aten", "context", "rules_window", "rules_tensor", "rules_attention", "rules_timm", "rules_aten",
         "pullback", "report", "measure", "analyse", "empirical", "fold"]


def sibling_imports(module: str):
    """``(imported module, imported names)`` for every ``from .x import ...`` of the module."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module is None:
                yield from ((alias.name, ()) for alias in node.names)
            else:
                yield node.module, tuple(alias.name for alias in node.names)


def test_every_module_is_in_the_order():
    assert sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__") == sorted(ORDER)


@pytest.mark.parametrize("module", ORDER)
def test_module_imports_only_earlier_modules_and_public_names(module):
    for target, names in sibling_imports(module):
        assert ORDER.index(target) < ORDER.index(module), f"{module} imports {target}"
        assert not [n for n in names if n.startswith("_")], f"{module} imports private names of {target}: {names}"


def test_built_in_rules_are_registered_and_a_user_rule_replaces_one():
    assert registry.rule_for("call_module", "c", nn.Conv2d(1, 1, 3)) is not None
    assert registry.rule_for("call_function", torch.cumsum) is None
    builtin = registry.rule_for("call_module", "r", nn.ReLU())

    class Spread(nn.ReLU):  # a subclass inherits the ReLU rule through its MRO ...
        pass

    assert registry.rule_for("call_module", "s", Spread()) is builtin
    # ... until its own rule says it reads the whole width
    from foldconv.analysis.receptive_field.rules_tensor import mix_geometry

    register_rf_rule(Spread, lambda ctx, node: mix_geometry(ctx, node, ctx.first(node), (-1,)))
    net = nn.Sequential(nn.Conv2d(1, 1, 3), Spread())
    assert receptive_field(net, (1, 1, 9, 9)).output.rf == (3, 9)
    assert receptive_field(nn.Sequential(nn.Conv2d(1, 1, 3), nn.ReLU()), (1, 1, 9, 9)).output.rf == (3, 3)
