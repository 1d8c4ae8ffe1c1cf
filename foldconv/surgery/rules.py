"""The rewrite rules: a registry of names -> (find sites, build the replacement), and their options.

A :class:`Rule` finds :class:`~foldconv.surgery.patterns.Match` es in a :class:`~foldconv.surgery.patterns.Context`
and builds, for one match, the module that replaces it: a module taking the site's input and computing the
site's output. ``build`` only reads the modules it is handed (``get(path)``), so the same build runs on the
user's weights and, for the exact check, on random integer weights (:func:`foldconv.check.derived`).
Every rule takes ``at`` (the site locations it may touch); :attr:`Rule.options` lists the others with defaults.

=========================== ==================================================================================
rule                        sites -> replacement
=========================== ==================================================================================
``focus_to_conv``           YOLOv5 slices + cat + conv (any slice order), space-to-depth module or function +
``spd_to_strided``          conv, ``SpaceToDepthConv`` -> one strided conv (the two names find the same sites)
``conv_to_focus``           stride-2 ``Conv2d`` -> ``SpaceToDepthConv`` in order ``"focus"`` (option ``order``)
``strided_to_spd``          any strided conv -> ``SpaceToDepthConv`` (options ``order``, ``padding``)
``transposed_to_subpixel``  ``ConvTransposeNd`` -> ``SubPixelConv`` (option ``order``)
``subpixel_to_transposed``  conv [+ BatchNorm, folded] + depth-to-space, ``SubPixelConv`` -> ``ConvTransposeNd``
                            (+ a :class:`~foldconv.surgery.periodic.PeriodicBias` when the bias differs per sub-pixel)
``fold_stage``              the module at ``stage`` -> ``FoldedStage`` (options ``stage``, ``r``, ``order``, ``fold_bn``)
``unfold_stage``            a ``FoldedStage`` (option ``stage``) -> the stage
``fold_bn``                 conv + eval-mode BatchNorm -> one conv
=========================== ==================================================================================

Example:
    >>> sorted(RULE_NAMES)[:3]
    ['conv_to_focus', 'focus_to_conv', 'fold_stage']
    >>> get_rule("strided_to_spd").options
    {'at': None, 'order': 'crd', 'padding': 'auto'}
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._validate import CONV_TRANSPOSE_TYPES, CONV_TYPES
from ..equivalences import (
    SpaceToDepthConv,
    SubPixelConv,
    spd_to_strided,
    strided_to_spd,
    subpixel_to_transposed,
    transposed_to_subpixel,
)
from ..errors import FoldError, fold_error
from ..fold import expand_groups, fold_conv
from ..layout import LayoutModule, depth_to_space, normalize_order
from ..specs import ConvSpec
from .bn import fold_bn
from .patterns import Context, Match, conv_then_bn, conv_then_layout, focus_slices, layout_then_conv, modules_where
from .periodic import PeriodicBias

__all__ = ["RULE_NAMES", "Rule", "RuleArg", "register_rule", "unregister_rule", "get_rule", "rule_names", "parse_rules", "REQUIRED"]

RuleArg = Union[str, Tuple[str, Mapping[str, Any]]]
Getter = Callable[[str], nn.Module]
#: The rules of issue 11 (the registry also holds ``fold_bn`` and whatever :func:`register_rule` adds).
RULE_NAMES = ("focus_to_conv", "conv_to_focus", "strided_to_spd", "spd_to_strided",
              "transposed_to_subpixel", "subpixel_to_transposed", "fold_stage", "unfold_stage")
#: Marks an option without a default.
REQUIRED = "<required>"


@dataclass(frozen=True)
class Rule:
    """A named rewrite: ``find(ctx, options) -> [Match]``, ``build(match, get, options) -> nn.Module``.

    ``options``: every option with its default (:data:`REQUIRED` when it has none; ``at`` is added for you);
    ``leaves(options)``: module paths the tracer must keep whole (a stage); ``details(match, built)``: extra
    table rows ``(location, pattern, applied, reason)`` for the parts of a site (a stage's layers);
    ``decide(match, get, options)``: fixes, from the model's own weights, a choice ``build`` then reads from
    ``match.variant`` (a build that branched on weight values would not be a polynomial of them).
    """

    name: str
    find: Callable[[Context, Mapping[str, Any]], List[Match]]
    build: Callable[[Match, Getter, Mapping[str, Any]], nn.Module]
    options: Dict[str, Any] = field(default_factory=dict)
    leaves: Callable[[Mapping[str, Any]], Tuple[str, ...]] = lambda options: ()
    details: Optional[Callable[[Match, nn.Module], List[Tuple[str, str, bool, str]]]] = None
    decide: Optional[Callable[[Match, Getter, Mapping[str, Any]], Match]] = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", {"at": None, **dict(self.options)})


_REGISTRY: Dict[str, Rule] = {}


def register_rule(rule: Rule, *, replace: bool = False) -> Rule:
    """Add a rule to the registry (``replace=True`` to overwrite one of the same name); returns it.

    Example:
        >>> r = register_rule(get_rule("fold_bn"), replace=True)
        >>> r.name
        'fold_bn'
    """
    if not isinstance(rule, Rule):
        raise fold_error("rule", type(rule).__name__, "must be a foldconv.surgery.Rule")
    if not isinstance(rule.name, str) or not rule.name.isidentifier():
        raise fold_error("rule.name", rule.name, "must be an identifier-like string")
    if rule.name in _REGISTRY and not replace:
        raise fold_error("rule.name", rule.name, "is registered already; pass replace=True to overwrite it")
    _REGISTRY[rule.name] = rule
    return rule


def unregister_rule(name: str) -> Rule:
    """Remove a registered rule (the issue's own rules stay); returns it.

    Example:
        >>> _ = register_rule(Rule("mine", get_rule("fold_bn").find, get_rule("fold_bn").build))
        >>> unregister_rule("mine").name, "mine" in rule_names()
        ('mine', False)
    """
    get_rule(name)
    if name in RULE_NAMES:
        raise fold_error("name", name, "is one of the issue's rules (RULE_NAMES) and stays registered")
    return _REGISTRY.pop(name)


def rule_names() -> Tuple[str, ...]:
    """Every registered rule name."""
    return tuple(_REGISTRY)


def get_rule(name: str) -> Rule:
    """The rule registered as ``name``; a FoldError listing the known names otherwise."""
    if not isinstance(name, str) or name not in _REGISTRY:
        raise fold_error("rules", name, f"is not a rewrite rule; known rules: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def _check_order(value: Any, rule: str) -> Any:
    for dims in (2, 1, 3):
        try:
            normalize_order(value, dims)
            return value
        except FoldError:
            continue
    raise fold_error("order", value, f"is not a channel order (an alias crd/dcr/focus or einops axes) for rule {rule!r}")


def _check_at(value: Any, rule: str) -> Optional[Tuple[str, ...]]:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise fold_error("at", value, f"must be a sequence of site locations (module paths) for rule {rule!r}")
    return tuple(value)


def _check_option(rule: Rule, key: str, value: Any) -> Any:
    if key == "at":
        return _check_at(value, rule.name)
    if key == "order":
        return _check_order(value, rule.name)
    if key == "padding" and value not in ("auto", "inner", "explicit"):
        raise fold_error("padding", value, f"must be 'auto', 'inner' or 'explicit' for rule {rule.name!r}")
    if key in ("fold_bn",) and not isinstance(value, bool):
        raise fold_error(key, value, f"must be True or False for rule {rule.name!r}")
    if key == "stage" and value is not None and (not isinstance(value, str) or not value):
        raise fold_error("stage", value, f"must be a module path such as 'layer1' for rule {rule.name!r}")
    if key == "r":
        items = value if isinstance(value, (tuple, list)) else (value,)
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
            raise fold_error("r", value, f"must be an integer >= 1 or one per spatial axis for rule {rule.name!r}")
    return value


def parse_rules(rules: Any, *, fold_bn: bool = True) -> List[Tuple[Rule, Dict[str, Any]]]:
    """Validate ``rules`` (names or ``(name, {option: value})`` pairs) into rules with complete options.

    Example:
        >>> [(rule.name, opts["order"]) for rule, opts in parse_rules([("strided_to_spd", {"order": "dcr"})])]
        [('strided_to_spd', 'dcr')]
    """
    if isinstance(rules, (str, bytes)) or not isinstance(rules, Sequence) or not rules:
        raise fold_error("rules", rules, "must be a non-empty sequence of rule names or (name, {option: value}) pairs")
    parsed = []
    for item in rules:
        if isinstance(item, str):
            name, given = item, {}
        elif isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], Mapping):
            name, given = item[0], dict(item[1])
        else:
            raise fold_error("rules", item, "each rule must be a name or a (name, {option: value}) pair")
        rule = get_rule(name)
        options = dict(rule.options)
        if "fold_bn" in options:
            options["fold_bn"] = fold_bn
        for key, value in given.items():
            if key not in rule.options:
                raise fold_error(key, value, f"is not an option of rule {name!r}; its options: {', '.join(rule.options)}")
            options[key] = _check_option(rule, key, value)
        for key, value in options.items():
            if value is REQUIRED:
                raise fold_error(key, None, f"is required by rule {name!r}")
        parsed.append((rule, options))
    return parsed


# --- site finders and builders ---------------------------------------------------------------------------------

def _kernel_text(values: Sequence[int]) -> str:
    return "x".join(str(v) for v in values)


def _strided_name(module: nn.Module) -> str:
    s = tuple(module.stride)
    stride = str(s[0]) if len(set(s)) == 1 else _kernel_text(s)
    return f"{type(module).__name__} {_kernel_text(module.kernel_size)} s{stride}"


def _permute_inputs(conv: nn.Module, perm: Tuple[int, ...]) -> nn.Module:
    """The conv whose input channel ``j`` is the given conv's channel ``perm[j]`` (groups expanded first)."""
    spec = ConvSpec.from_module(conv)
    weight = expand_groups(conv.weight.detach(), spec.groups)
    index = torch.tensor(perm, dtype=torch.long, device=weight.device)
    weight = torch.index_select(weight, 1, index)
    bias = None if conv.bias is None else conv.bias.detach()
    return spec.replace(groups=1).to_module(weight=weight, bias=bias).train(conv.training)


def _spd_module_to_strided(module: SpaceToDepthConv, input_shape: Sequence[int]) -> nn.Module:
    """A ``SpaceToDepthConv`` as one strided conv: the fold of its conv, with the source's padding."""
    big = fold_conv(module.conv, module.r, module.order)
    source = module.source
    spec = ConvSpec.from_module(big)
    if module.mode == "explicit":
        spec = spec.replace(padding=source.padding, padding_mode=source.padding_mode)
        big = spec.to_module(weight=big.weight.detach(), bias=None if big.bias is None else big.bias.detach()).train(module.training)
    size = tuple(input_shape[2:])
    if spec.output_size(size) != source.output_size(size):
        raise fold_error(
            "input_shape", tuple(input_shape),
            f"the SpaceToDepthConv zero-extends the input end ({module.mode} mode): its output size {source.output_size(size)} "
            f"is not that of one conv ({spec.output_size(size)}) on this input",
        )
    return big


def _find_spd(ctx: Context, options: Mapping[str, Any]) -> List[Match]:
    modules = modules_where(ctx, lambda p, m: isinstance(m, SpaceToDepthConv), lambda m: "SpaceToDepthConv (SPD-Conv)")
    return focus_slices(ctx) + layout_then_conv(ctx) + modules


def _build_spd(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    module = get(match.location)
    if isinstance(module, SpaceToDepthConv):
        return _spd_module_to_strided(module, match.input_shape)
    if match.channel_perm is not None:
        module = _permute_inputs(module, match.channel_perm)
    return spd_to_strided(module, match.layout.r, match.layout.order)


def _strided(module: nn.Module) -> bool:
    return isinstance(module, CONV_TYPES) and any(s > 1 for s in module.stride)


def _find_strided(ctx: Context, options: Mapping[str, Any]) -> List[Match]:
    return modules_where(ctx, lambda p, m: _strided(m), _strided_name)


def _build_strided(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    return strided_to_spd(get(match.location), options["order"], padding=options["padding"])


def _find_focus_form(ctx: Context, options: Mapping[str, Any]) -> List[Match]:
    return modules_where(ctx, lambda p, m: isinstance(m, nn.Conv2d) and tuple(m.stride) == (2, 2), _strided_name)


def _build_focus_form(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    return strided_to_spd(get(match.location), options["order"])


def _find_transposed(ctx: Context, options: Mapping[str, Any]) -> List[Match]:
    return modules_where(ctx, lambda p, m: isinstance(m, CONV_TRANSPOSE_TYPES), _strided_name)


def _build_transposed(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    return transposed_to_subpixel(get(match.location), options["order"])


def _find_subpixel(ctx: Context, options: Mapping[str, Any]) -> List[Match]:
    modules = modules_where(ctx, lambda p, m: isinstance(m, SubPixelConv), lambda m: "SubPixelConv (sub-pixel)")
    return conv_then_layout(ctx, with_bn=options["fold_bn"]) + modules


def _cropped_to_transposed(module: SubPixelConv) -> nn.Module:
    """A sub-pixel conv with a crop of ``(a, b)`` rows per axis (as :func:`transposed_to_subpixel` builds it) is
    the transposed conv of its uncropped form with padding ``+a`` and ``output_padding = a - b`` (torch crops
    the padding from both ends and gives ``output_padding`` rows back at the end): needs ``0 <= a - b < r``."""
    if any(v for pair in module.input_pad for v in pair):
        raise fold_error("module.input_pad", module.input_pad, "must be empty to convert to a transposed conv")
    tconv = subpixel_to_transposed(SubPixelConv(module.conv, module.r, module.order).train(module.training))
    extra = tuple(a - b for a, b in module.crop)
    if any(not 0 <= e < r for e, r in zip(extra, module.r)):
        raise fold_error("module.crop", module.crop, f"start - end must lie in [0, r) per axis (r={module.r}) to be a transposed conv's padding and output_padding")
    tconv.padding = tuple(p + a for p, (a, _) in zip(tconv.padding, module.crop))
    tconv.output_padding = extra
    return tconv


def _build_subpixel(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    module = get(match.location)
    if isinstance(module, SubPixelConv):
        return _cropped_to_transposed(module)
    if match.bn:
        module = fold_bn(module, get(match.bn))
    if match.variant != "periodic":
        return subpixel_to_transposed(module, match.layout.r, match.layout.order)
    # A bias that differs between sub-pixels: a bias-free transposed conv, then the bias with period r.
    spec = ConvSpec.from_module(module).replace(bias=False)
    bare = spec.to_module(weight=module.weight.detach()).train(module.training)
    tconv = subpixel_to_transposed(bare, match.layout.r, match.layout.order)
    return nn.Sequential(tconv, PeriodicBias(module.bias.detach(), match.layout.r, match.layout.order)).train(module.training)


def _decide_subpixel(match: Match, get: Getter, options: Mapping[str, Any]) -> Match:
    """"periodic" when the conv's bias (BatchNorm folded) differs between the sub-pixels of a channel."""
    if match.layout is None:
        return match
    module = get(match.location)
    if match.bn:
        module = fold_bn(module, get(match.bn))
    tied = module.bias is None or _tied_bias(module.bias.detach(), match.layout)
    return dataclasses.replace(match, variant="" if tied else "periodic")


def _tied_bias(bias: torch.Tensor, layout: LayoutModule) -> bool:
    """Every output channel's ``prod(r)`` sub-pixel biases are equal (then a transposed conv's bias holds them)."""
    dims = len(layout.r)
    block = depth_to_space(bias.reshape((1, -1) + (1,) * dims), layout.r, layout.order, dims=dims)[0]  # (O, *r)
    first = block[(slice(None),) + (slice(0, 1),) * dims]
    return bool(torch.equal(block, first.expand_as(block)))


def _build_fold_bn(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    return fold_bn(get(match.location), get(match.bn))


def _stage_match(ctx: Context, path: str, what: str) -> List[Match]:
    try:
        ctx.module(path)
    except AttributeError:
        raise fold_error("stage", path, f"is not a module path of the model (rule {what!r})") from None
    return modules_where(ctx, lambda p, m: p == path, lambda m: f"stage {type(m).__name__}")


def _find_stage(ctx: Context, options: Mapping[str, Any]) -> List[Match]:
    return _stage_match(ctx, options["stage"], "fold_stage")


def _build_stage(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    from .stage import fold_stage  # helper module of this package, imported when the rule runs

    stage = get(match.location)
    if options["fold_bn"] and not stage.training:
        from .rewrite import apply_rules

        stage = apply_rules(stage, match.input_shape, [(get_rule("fold_bn"), dict(get_rule("fold_bn").options))])
    return fold_stage(stage, options["r"], input_shape=match.input_shape, order=options["order"])


def _stage_details(match: Match, built: nn.Module) -> List[Tuple[str, str, bool, str]]:
    rows = []
    for layer in getattr(built, "layers", ()):
        rows.append((f"{match.location}.{layer.name}", f"{layer.kind} ({layer.action})", layer.action != "kept", layer.reason))
    return rows


def _find_unfold(ctx: Context, options: Mapping[str, Any]) -> List[Match]:
    if options["stage"] is not None:
        return _stage_match(ctx, options["stage"], "unfold_stage")
    return modules_where(ctx, lambda p, m: type(m).__name__ == "FoldedStage", lambda m: "stage FoldedStage")


def _build_unfold(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    from .stage import unfold_stage

    return unfold_stage(get(match.location))


def _stage_leaves(options: Mapping[str, Any]) -> Tuple[str, ...]:
    return (options["stage"],) if options.get("stage") else ()


for _rule in (
    Rule("focus_to_conv", _find_spd, _build_spd),
    Rule("conv_to_focus", _find_focus_form, _build_focus_form, {"order": "focus"}),
    Rule("strided_to_spd", _find_strided, _build_strided, {"order": "crd", "padding": "auto"}),
    Rule("spd_to_strided", _find_spd, _build_spd),
    Rule("transposed_to_subpixel", _find_transposed, _build_transposed, {"order": "crd"}),
    Rule("subpixel_to_transposed", _find_subpixel, _build_subpixel, {"fold_bn": True}, decide=_decide_subpixel),
    Rule("fold_stage", _find_stage, _build_stage, {"stage": REQUIRED, "r": REQUIRED, "order": "crd", "fold_bn": True},
         leaves=_stage_leaves, details=_stage_details),
    Rule("unfold_stage", _find_unfold, _build_unfold, {"stage": None}, leaves=_stage_leaves),
    Rule("fold_bn", lambda ctx, options: conv_then_bn(ctx), _build_fold_bn),
):
    register_rule(_rule)
