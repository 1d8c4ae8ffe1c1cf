"""The following-layer rules: does a layer after the conv commute with folding the conv's output?

The question is ``fold_following(L)(depth_to_space(y)) == depth_to_space(L(y))`` for a layer ``L`` applied to
``y``, the conv's output with ``channels`` channels. One table, :data:`FOLLOWING_RULES` (a
:class:`~foldconv.registry.Registry`), maps layer types to a :class:`FollowingRule`; everything about a layer
type lives in its rule, and the public functions are lookups. Each takes ``rules={layer type: rule}`` for that
call only (consulted first; the table stays as it is):

==================================================== =========================================================
``predict_following(layer, fold, channels, *,        the Prediction (no tensors beyond the layer's own
input_size=None)``                                   parameters); INVALID for a malformed request
``fold_following(layer, fold, channels)``            the module to apply on the folded map: the *literal*
                                                     construction (the same layer, per-channel parameters
                                                     taken per fold block); FoldError for a malformed request
``conditioned_following(layer, fold, channels)``     when the prediction is HOLDS_IF: a module ``M`` on the
                                                     *unfolded* map with ``fold_following(L)(depth_to_space(y))
                                                     == M(y)`` (pooling: a reduction over channel groups)
``following_example(name, channels, fold,            a test layer for each named case, with seeded
generator)``, ``following_examples()``               non-trivial parameters (what the sweep iterates)
``register_following_rule(types, rule, *,           add the rule of layer types (subclasses inherit it; the
replace=False)``                                     most derived registered type wins); a type that has a
                                                     rule already needs ``replace=True``;
                                                     ``FOLLOWING_RULES.unregister(type)`` removes one
==================================================== =========================================================

``fold`` is a :class:`~foldconv.specs.FoldSpec` or an int / per-axis ``r`` (order ``"crd"``); an int ``r``
means every spatial axis of the layer (``BatchNorm2d``: 2), or of ``input_size``, or 2 for a layer that does
not know its dims (``ReLU``). ``input_size`` is the spatial size of ``y`` (an int or one per axis); rules use it
to decide shapes and validity (a pool larger than the map).

A rule subclasses :class:`FollowingRule` and overrides ``predict`` (required) and, where the defaults do not
fit, ``fold`` (default: a deep copy of the layer), ``conditioned`` (default: none), ``dims`` (default: unknown),
``validate`` (malformed requests beyond ``channels``/``fold``/``input_size``) and ``example`` with ``examples``
naming its cases. ``rule.predict`` is only called on a valid request with ``channels`` a multiple of
``prod(r)`` and some ``r > 1``; the lookups answer the rest.

Example:
    >>> import torch
    >>> f = FoldSpec.make(2)
    >>> predict_following(torch.nn.ReLU(), f, 8).outcome.value
    'holds'
    >>> fold_following(torch.nn.BatchNorm2d(8).eval(), f, 8).num_features
    2
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Type, Union

import torch
from torch import nn

from .._validate import IntOrTuple, per_axis_ints, require_int, resolve_dims
from ..check import Verdict
from ..errors import FoldError, fold_error
from ..fold import require_foldable
from ..registry import Registry, mro_candidates
from ..specs import FoldSpec
from .fold import coerce_fold
from .outcome import Outcome, Prediction, invalid

__all__ = [
    "FollowingRule",
    "FOLLOWING_RULES",
    "register_following_rule",
    "following_rule",
    "predict_following",
    "fold_following",
    "conditioned_following",
    "following_example",
    "following_examples",
]

FoldArg = Union[FoldSpec, IntOrTuple]


class FollowingRule:
    """How one family of layers behaves after a fold (subclass it; see the module docstring)."""

    #: Names of the example layers :meth:`example` builds (unique across the table).
    examples: Tuple[str, ...] = ()

    def dims(self, layer: nn.Module) -> Optional[int]:
        """The spatial dims the layer acts on, or None when it works on any."""
        return None

    def validate(self, layer: nn.Module, fold: FoldSpec, *, channels: int, input_size: Optional[Tuple[int, ...]]) -> None:
        """Raise FoldError for a request torch could not run (``channels`` not the layer's ``num_features``...)."""

    def predict(self, layer: nn.Module, fold: FoldSpec, *, channels: int, input_size: Optional[Tuple[int, ...]] = None) -> Prediction:
        """The prediction for a valid request with some ``r > 1``."""
        raise NotImplementedError

    def fold(self, layer: nn.Module, fold: FoldSpec, *, channels: int) -> nn.Module:
        """The literal construction on the folded map (default: the same layer)."""
        return copy.deepcopy(layer)

    def conditioned(self, layer: nn.Module, fold: FoldSpec, *, channels: int) -> nn.Module:
        """A module on the unfolded map equal to the folded layer on the folded map (for HOLDS_IF)."""
        raise fold_error("layer", type(layer).__name__, "has no conditioned folded form (its prediction is not 'holds with conditions')")

    def example(self, name: str, channels: int, fold: FoldSpec, generator: torch.Generator) -> nn.Module:
        """The example layer ``name`` (one of :attr:`examples`) for ``channels`` channels."""
        raise fold_error("following", name, f"is not an example of {type(self).__name__}")


def _check_type(key: Any) -> None:
    if not (isinstance(key, type) and issubclass(key, nn.Module)):
        raise fold_error("types", key, "must be nn.Module subclasses (one or a sequence)")


def _check_rule(key: Any, rule: Any) -> None:
    if not isinstance(rule, FollowingRule):
        raise fold_error("rule", type(rule).__name__, "must be a FollowingRule instance")


#: The rule of every layer type with one, looked up along the layer's class hierarchy.
FOLLOWING_RULES: Registry[FollowingRule] = Registry("types", candidates=mro_candidates, check_key=_check_type, check_value=_check_rule,
                                                    param="rules")

Types = Union[Type[nn.Module], Sequence[Type[nn.Module]]]
Rules = Optional[Mapping[Any, FollowingRule]]


def _types(types: Any) -> Tuple[type, ...]:
    types = tuple(types) if isinstance(types, (tuple, list)) else (types,)
    if not types or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in types):
        raise fold_error("types", types, "must be nn.Module subclasses (one or a sequence)")
    return types


def _example_owners() -> Dict[str, FollowingRule]:
    """Example name -> the rule that builds it, in registration order."""
    owners: Dict[str, FollowingRule] = {}
    for _, rule in FOLLOWING_RULES.items():
        for name in rule.examples:
            owners.setdefault(name, rule)
    return owners


def register_following_rule(types: Types, rule: FollowingRule, *, replace: bool = False) -> FollowingRule:
    """Make ``rule`` the rule of ``types`` (and their subclasses without a rule of their own); returns ``rule``.

    A type that has a rule already is a FoldError unless ``replace=True`` (nothing is registered then);
    ``FOLLOWING_RULES.unregister(type)`` removes a rule. For one call only: ``predict_following(..., rules=...)``.

    Example:
        >>> class Swish(torch.nn.Module):
        ...     def forward(self, x): return x * torch.sigmoid(x)
        >>> class Elementwise(FollowingRule):
        ...     def predict(self, layer, fold, *, channels, input_size=None):
        ...         return Prediction(Outcome.HOLDS, Verdict.EQUIVALENT, reasons=("elementwise",))
        >>> _ = register_following_rule(Swish, Elementwise())
        >>> predict_following(Swish(), 2, 8).reason
        'elementwise'
        >>> register_following_rule(Swish, Elementwise())
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: types='Swish': is registered already; pass replace=True to replace it
    """
    types = _types(types)
    _check_rule(None, rule)
    if not isinstance(replace, bool):
        raise fold_error("replace", replace, "must be True or False")
    owners = _example_owners()
    for name in rule.examples:
        owner = owners.get(name)
        if owner is not None and owner is not rule and type(owner) is not type(rule):
            raise fold_error("rule", type(rule).__name__, f"names the example {name!r}, which {type(owner).__name__} already builds")
    taken = [t for t in types if t in FOLLOWING_RULES.keys()]
    if taken and not replace:  # checked for every type first: a refused registration registers nothing
        raise fold_error("types", taken[0].__qualname__, "is registered already; pass replace=True to replace it")
    for t in types:
        FOLLOWING_RULES.register(t, rule, replace=replace)
    return rule


def following_rule(layer: nn.Module, *, rules: Rules = None) -> FollowingRule:
    """The rule for ``layer``'s type (or its nearest base class with one), from ``rules`` (this call only) or
    the table; FoldError naming ``layer`` if none.

    Example:
        >>> type(following_rule(torch.nn.GELU())).__name__
        'ElementwiseRule'
    """
    return _rule(layer, FOLLOWING_RULES.with_overrides(rules))


def _rule(layer: nn.Module, table: Registry[FollowingRule]) -> FollowingRule:
    if not isinstance(layer, nn.Module):
        raise fold_error("layer", type(layer).__name__, "must be an nn.Module")
    rule = table.find(layer)
    if rule is None:
        known = sorted({t.__name__ for t in table.keys()})
        raise fold_error("layer", type(layer).__name__, "has no following-layer rule; pass rules={type: rule} or register one with "
                         f"register_following_rule (known: {', '.join(known)})")
    return rule


def _request(layer: nn.Module, fold: FoldArg, channels: int, input_size: Optional[IntOrTuple],
             table: Registry[FollowingRule]) -> Tuple[FollowingRule, FoldSpec, int, Optional[Tuple[int, ...]]]:
    rule = _rule(layer, table)
    channels = require_int(channels, "channels", 1)
    dims = rule.dims(layer)
    if dims is None:
        if isinstance(fold, FoldSpec) and fold.bound:
            dims = fold.dims
        elif isinstance(input_size, Sequence) and not isinstance(input_size, str):
            dims = resolve_dims(input_size, None, "input_size")
        elif isinstance(fold, FoldSpec):
            dims = fold.dims
        else:
            dims = resolve_dims(fold, None, "fold")
    spec = coerce_fold(fold, dims, param="fold")
    size = per_axis_ints(input_size, dims, "input_size", 1) if input_size is not None else None
    rule.validate(layer, spec, channels=channels, input_size=size)
    return rule, spec, channels, size


def predict_following(layer: nn.Module, fold: FoldArg, channels: int, *, input_size: Optional[IntOrTuple] = None,
                      rules: Rules = None) -> Prediction:
    """Does ``layer`` (applied to the conv's output, ``channels`` channels) commute with folding that output?

    The literal construction is :func:`fold_following`; ``input_size`` (spatial size of the conv's output)
    lets the prediction decide shapes and validity. A malformed request (``channels=0``, a fold of other dims,
    ``channels`` that are not the layer's ``num_features``) gives INVALID; a layer type without a rule raises
    FoldError naming ``layer``. ``rules``: ``{layer type: FollowingRule}`` for this call, consulted first.

    Args:
        layer: the layer applied to the conv's output.
        fold: a FoldSpec, or ``r`` (int or per axis; order ``"crd"``).
        channels: the conv's output channels.
        input_size: the spatial size of the conv's output (an int or one per axis), when known (default none).
        rules: ``{layer type: FollowingRule}`` for this call, consulted before the registered rules (default none).

    Returns:
        A :class:`Prediction`: the outcome, the literal construction's verdict and the reasons.

    Raises:
        FoldError: naming ``layer`` when it is not a module or no rule (registered or in ``rules``) covers its type.

    Example:
        >>> f = FoldSpec.make(2)
        >>> predict_following(torch.nn.ReLU(), f, 8).outcome.value
        'holds'
        >>> bn = torch.nn.BatchNorm2d(8).eval()
        >>> with torch.no_grad(): _ = bn.weight.copy_(torch.arange(8.))
        >>> predict_following(bn, f, 8).reasons[0][:38]
        'BatchNorm statistics or affine paramet'
        >>> predict_following(torch.nn.MaxPool2d(2, 2, dilation=2), 2, 8).outcome.value
        'fails'
    """
    table = FOLLOWING_RULES.with_overrides(rules)
    _rule(layer, table)  # no rule: FoldError (not a malformed request)
    try:
        rule, spec, channels, size = _request(layer, fold, channels, input_size, table)
    except FoldError as err:
        return invalid(err)
    try:
        require_foldable(channels, spec, param="channels")
    except FoldError as err:
        return invalid(err)
    if spec.block == 1:
        return Prediction(Outcome.HOLDS, Verdict.EQUIVALENT, reasons=("r = 1: folding is the identity",), codes=("RULE-1",))
    return rule.predict(layer, spec, channels=channels, input_size=size)


def fold_following(layer: nn.Module, fold: FoldArg, channels: int, *, rules: Rules = None) -> nn.Module:
    """The layer to apply on the folded map in place of ``layer`` on the original: the literal construction.

    Pointwise and Dropout layers are reused; eval-mode BatchNorm, affine GroupNorm and per-channel PReLU take
    the parameters of the first channel of each fold block (equal within blocks when the prediction holds);
    LayerNorm's affine parameters are folded; other layers are reused as they are. FoldError for a malformed
    request. ``rules``: per-call rules, as for :func:`predict_following`.

    Example:
        >>> fold_following(torch.nn.BatchNorm2d(8).eval(), FoldSpec.make(2), 8).num_features
        2
    """
    rule, spec, channels, _ = _request(layer, fold, channels, None, FOLLOWING_RULES.with_overrides(rules))
    require_foldable(channels, spec, param="channels")
    return rule.fold(layer, spec, channels=channels)


def conditioned_following(layer: nn.Module, fold: FoldArg, channels: int, *, rules: Rules = None) -> nn.Module:
    """For a HOLDS_IF prediction: the module on the *unfolded* map that equals the folded layer on the folded map
    (``rules``: per-call rules, as for :func:`predict_following`).

    Example:
        >>> y = torch.randn(1, 8, 3, 3)
        >>> pool, f = torch.nn.MaxPool2d(2, 2), FoldSpec.make(2)
        >>> from foldconv import depth_to_space
        >>> torch.equal(conditioned_following(pool, f, 8)(y), pool(depth_to_space(y, 2)))
        True
    """
    rule, spec, channels, _ = _request(layer, fold, channels, None, FOLLOWING_RULES.with_overrides(rules))
    require_foldable(channels, spec, param="channels")
    return rule.conditioned(layer, spec, channels=channels)


def following_examples() -> Tuple[str, ...]:
    """Names of every registered example layer, in registration order.

    Example:
        >>> following_examples()[:3]
        ('relu', 'gelu', 'leaky_relu')
    """
    return tuple(_example_owners())


def following_example(name: str, channels: int, fold: FoldArg, generator: torch.Generator) -> nn.Module:
    """Build the example layer ``name`` for ``channels`` channels with non-trivial parameters drawn from ``generator``.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> type(following_example("bn_eval_tied", 8, FoldSpec.make(2), g)).__name__
        'BatchNorm2d'
    """
    owners = _example_owners()
    if name not in owners:
        raise fold_error("following", name, f"unknown layer name; choose from {tuple(owners)}")
    channels = require_int(channels, "channels", 1)
    spec = fold if isinstance(fold, FoldSpec) else coerce_fold(fold, resolve_dims(fold, None, "fold"), param="fold")
    if not isinstance(generator, torch.Generator):
        raise fold_error("generator", type(generator).__name__, "must be a torch.Generator")
    return owners[name].example(name, channels, spec, generator)
