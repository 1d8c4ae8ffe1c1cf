"""The table of receptive-field rules, :data:`RF_RULES`: built-in and user rules are registered the same way.

A rule is ``rule(ctx, node) -> Geometry | None`` (see :class:`~.context.RuleContext` for what ``ctx``
offers and :class:`~.geometry.Geometry` for the result; ``None`` means "no rule for these arguments").
It is looked up by what the fx node calls:

- ``call_module``: the module's class, then its base classes (the most specific registration wins);
- ``call_function``: the function object, then its qualified name ``"package.module.function"`` (so the
  functions of optional packages can be registered without importing them);
- ``call_method``: the method name (``"view"``, ``"mean"``...).

:func:`register_rf_rule` is the one way to add a rule (it also says whether a module class is kept whole when
tracing). :data:`RF_RULES` is a :class:`~foldconv.registry.Registry`: registering a target twice is a
FoldError unless ``replace=True``; ``RF_RULES.unregister(target)`` removes a rule; ``RF_RULES.names()``
lists them. One analysis can use other rules without touching the table:
``receptive_field(model, shape, rules={target: rule})`` (``RF_RULES.with_overrides(rules)``).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Sequence, Set, Tuple

from torch import nn

from ...errors import fold_error
from ...registry import Registry

__all__ = ["Rule", "RF_RULES", "register_rf_rule", "rule_for", "leaf_types"]

Rule = Callable[[Any, Any], Any]


def _qualified_name(fn: Any) -> Optional[str]:
    module, name = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    return f"{module}.{name}" if module and name else None


def _candidates(target: Any) -> Sequence[Any]:
    """Lookup order: a module (or module class) along its MRO, a function then its qualified name, a name as is."""
    if isinstance(target, nn.Module):
        return type(target).__mro__
    if isinstance(target, type) and issubclass(target, nn.Module):
        return target.__mro__
    if isinstance(target, str):
        return (target,)
    return (target, _qualified_name(target))


def _check_target(target: Any) -> None:
    valid = isinstance(target, type) or (isinstance(target, str) and target.strip() != "") or (
        callable(target) and not isinstance(target, str)
    )
    if not valid:
        raise fold_error("target", target, "must be a module class, a function, a qualified function name or a method name")


def _check_rule(target: Any, rule: Any) -> None:
    if not callable(rule):
        raise fold_error("rule", rule, "must be a callable rule(ctx, node) -> Geometry")


def _describe(target: Any) -> str:
    if isinstance(target, str):
        return target
    if isinstance(target, type):
        return f"{target.__module__}.{target.__qualname__}"
    return _qualified_name(target) or repr(target)


#: Every receptive-field rule, keyed by module class, function (object or qualified name) or method name.
RF_RULES: Registry[Rule] = Registry("target", candidates=_candidates, check_key=_check_target, check_value=_check_rule,
                                    describe=_describe, param="rules")
# Module classes registered with leaf=False (torch's own layers: fx keeps them whole anyway, and a subclass
# with its own forward must be traced through, not taken for its base class).
_NOT_LEAVES: Set[type] = set()


def register_rf_rule(target: Any, rule: Optional[Rule] = None, *, leaf: bool = True, replace: bool = False):
    """Register a receptive-field rule for a module class, a function (object or qualified name) or a
    method name; without ``rule``, a decorator. A target that has a rule already is a FoldError unless
    ``replace=True``.

    ``leaf``: for a module class, keep its instances as single nodes when tracing (do not trace into
    their ``forward``); torch's own ``nn`` modules are leaves anyway.

    Example:
        >>> import torch
        >>> class Gate(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x * 2
        >>> _ = register_rf_rule(Gate, lambda ctx, node: ctx.pointwise(node))
        >>> register_rf_rule(Gate, lambda ctx, node: None)
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: target='...Gate': is registered already; pass replace=True to replace it
        >>> _ = RF_RULES.unregister(Gate)
    """
    if not isinstance(leaf, bool):
        raise fold_error("leaf", leaf, "must be True or False")
    _check_target(target)

    def add(fn: Rule) -> Rule:
        RF_RULES.register(target, fn, replace=replace)
        if isinstance(target, type):
            (_NOT_LEAVES.discard if leaf else _NOT_LEAVES.add)(target)
        return fn

    return add(rule) if rule is not None else add


def rule_for(op: str, target: Any, module: Any = None, *, rules: Registry[Rule] = RF_RULES) -> Optional[Rule]:
    """The rule for an fx node with this ``op`` and ``target`` (``module``: the called module) in ``rules``
    (default: the table; ``RF_RULES.with_overrides(...)`` for one analysis), or None.

    Example:
        >>> import torch
        >>> rule_for("call_module", "conv", torch.nn.Conv2d(1, 1, 3)) is not None
        True
    """
    if op == "call_module":
        return rules.find(module)
    if op in ("call_function", "call_method"):
        return rules.find(target)
    return None


def leaf_types(rules: Registry[Rule] = RF_RULES) -> Tuple[type, ...]:
    """Module classes kept as leaves when tracing: those with a rule in ``rules``, unless registered with ``leaf=False``.

    Example:
        >>> from foldconv.layout import DepthToSpace
        >>> DepthToSpace in leaf_types(), nn.Conv2d in leaf_types()
        (True, False)
    """
    return tuple(k for k in rules.keys() if isinstance(k, type) and issubclass(k, nn.Module) and k not in _NOT_LEAVES)

