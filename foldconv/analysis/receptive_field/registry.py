"""The one registry of receptive-field rules: built-in and user rules are registered the same way.

A rule is ``rule(ctx, node) -> Geometry | None`` (see :class:`~.context.RuleContext` for what ``ctx``
offers and :class:`~.geometry.Geometry` for the result; ``None`` means "no rule for these arguments").
It is looked up by what the fx node calls:

- ``call_module``: the module's class, then its base classes (the most specific registration wins);
- ``call_function``: the function object, then its qualified name ``"package.module.function"`` (so the
  functions of optional packages can be registered without importing them);
- ``call_method``: the method name (``"view"``, ``"mean"``...).

A later registration for the same target replaces the earlier one, so a user rule overrides a built-in.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Set, Tuple

from ...errors import fold_error

__all__ = ["Rule", "register_rf_rule", "rule_for", "leaf_types"]

Rule = Callable[[Any, Any], Any]

_RULES: Dict[Any, Rule] = {}
_LEAVES: Set[type] = set()


def register_rf_rule(target: Any, rule: Optional[Rule] = None, *, leaf: bool = True):
    """Register a receptive-field rule for a module class, a function (object or qualified name) or a
    method name. Usable as a decorator.

    ``leaf``: for a module class, keep its instances as single nodes when tracing (do not trace into
    their ``forward``); torch's own ``nn`` modules are leaves anyway.

    Example:
        >>> import torch
        >>> class Gate(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x * 2
        >>> _ = register_rf_rule(Gate, lambda ctx, node: ctx.pointwise(node))
    """
    valid = isinstance(target, type) or (isinstance(target, str) and target.strip() != "") or (
        callable(target) and not isinstance(target, str)
    )
    if not valid:
        raise fold_error("target", target, "must be a module class, a function, a qualified function name or a method name")
    if not isinstance(leaf, bool):
        raise fold_error("leaf", leaf, "must be True or False")

    def deco(fn: Rule) -> Rule:
        if not callable(fn):
            raise fold_error("rule", fn, "must be a callable rule(ctx, node) -> Geometry")
        _RULES[target] = fn
        if isinstance(target, type) and leaf:
            _LEAVES.add(target)
        return fn

    return deco(rule) if rule is not None else deco


def _qualified_name(fn: Any) -> Optional[str]:
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    return f"{module}.{name}" if module and name else None


def rule_for(op: str, target: Any, module: Any = None) -> Optional[Rule]:
    """The rule for an fx node with this ``op`` and ``target`` (``module``: the called module), or None.

    Example:
        >>> import torch
        >>> rule_for("call_module", "conv", torch.nn.Conv2d(1, 1, 3)) is not None
        True
    """
    if op == "call_module":
        for cls in type(module).__mro__:
            if cls in _RULES:
                return _RULES[cls]
        return None
    if op == "call_function":
        try:
            found = _RULES.get(target)
        except TypeError:  # an unhashable callable cannot have been registered
            found = None
        return found if found is not None else _RULES.get(_qualified_name(target))
    if op == "call_method":
        return _RULES.get(target)
    return None


def leaf_types() -> Tuple[type, ...]:
    """Module classes kept as leaves when tracing (registered with ``leaf=True``)."""
    return tuple(_LEAVES)
