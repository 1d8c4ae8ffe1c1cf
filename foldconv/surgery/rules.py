"""The rewrite rules: one registry of names -> (find sites, build the replacement, the inverse), and their options.

A :class:`Rule` finds :class:`~foldconv.surgery.patterns.Match` es in a :class:`~foldconv.surgery.patterns.Context`
and builds, for one match, the module that replaces it: a module taking the site's input and computing the
site's output. ``build`` only reads the modules it is handed (``get(path)``), so the same build runs on the
user's weights and, for the exact check, on random integer weights (:func:`foldconv.check.derived`).
Every rule takes ``at`` (the site locations it may touch); :attr:`Rule.options` lists the others with defaults.
A rule names its ``inverse``, the rule that takes its rewrite back (:func:`inverse_rules`).

:data:`RULES` is the table (a :class:`foldconv.registry.Registry`: ``RULES.register(name, rule)``, ``RULES.get``,
``RULES.names()``, ``RULES.unregister``; a name that is registered already, a built-in included, is refused
unless ``replace=True``). :func:`foldconv.surgery.rewrite` also takes :class:`Rule` objects directly: a rule for
one call, never registered.

=========================== =========================================================================== ==========================
rule                        sites -> replacement                                                        inverse
=========================== =========================================================================== ==========================
``focus_to_conv``           YOLOv5 slices + cat + conv (any slice order), space-to-depth module or      ``conv_to_focus``
``spd_to_strided``          function + conv, ``SpaceToDepthConv`` -> one strided conv (the two names    ``strided_to_spd``
                            find the same sites)
``conv_to_focus``           stride-2 ``Conv2d`` -> ``SpaceToDepthConv`` in order ``"focus"``            ``focus_to_conv``
                            (option ``order``)
``strided_to_spd``          any strided conv -> ``SpaceToDepthConv`` (options ``order``, ``padding``)   ``spd_to_strided``
``transposed_to_subpixel``  ``ConvTransposeNd`` [+ a ``PeriodicBias``, back into the conv's bias] ->    ``subpixel_to_transposed``
                            ``SubPixelConv`` (option ``order``)
``subpixel_to_transposed``  conv [+ BatchNorm, folded] + depth-to-space, ``SubPixelConv`` ->            ``transposed_to_subpixel``
                            ``ConvTransposeNd`` (+ a :class:`~foldconv.surgery.periodic.PeriodicBias`
                            when the bias differs per sub-pixel)
``fold_stage``              the module at ``stage`` -> ``FoldedStage`` (options ``stage``, ``r``,       ``unfold_stage``
                            ``order``, ``fold_bn``, ``cost_neutral_only``)
``unfold_stage``            a ``FoldedStage`` (option ``stage``) -> the stage                           ``fold_stage``
``fold_bn``                 conv + eval-mode BatchNorm -> one conv                                      none
``to_pixel_shuffle``        conv + depth-to-space, space-to-depth (Focus slices included) + conv, in     ``from_pixel_shuffle``
                            another channel order (TensorFlow's DCR, timm's, YOLOv5's) ->
                            ``nn.Sequential(conv, nn.PixelShuffle)`` / ``(nn.PixelUnshuffle, conv)``,
                            the conv's output / input channels permuted: torch's op, one
                            ``DepthToSpace(CRD)`` in ONNX
``from_pixel_shuffle``      conv + ``nn.PixelShuffle`` / ``F.pixel_shuffle`` (and unshuffle) -> the     ``to_pixel_shuffle``
                            same in channel order ``order`` (default ``"dcr"``: a DCR runtime's)
=========================== =========================================================================== ==========================

Example:
    >>> RULES.names()[:3]
    ('conv_to_focus', 'focus_to_conv', 'fold_bn')
    >>> RULES.get("strided_to_spd").options, RULES.get("strided_to_spd").inverse
    ({'at': None, 'order': 'crd', 'padding': 'auto'}, 'spd_to_strided')
"""
from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .. import tracing
from .._validate import CONV_TRANSPOSE_TYPES, CONV_TYPES
from ..equivalences import (
    SpaceToDepthConv,
    SubPixelConv,
    copy_requires_grad,
    spd_to_strided,
    strided_to_spd,
    subpixel_to_transposed,
    transposed_to_subpixel,
)
from ..errors import FoldError, fold_error
from ..fold import expand_groups, fold_conv
from ..layout import DepthToSpace, LayoutModule, SpaceToDepth, depth_to_space, layout_module, normalize_order, space_to_depth
from ..registry import Registry
from ..specs import ConvSpec
from .bn import fold_bn
from .patterns import Context, Match, conv_then_bn, conv_then_layout, focus_slices, layout_then_conv, modules_where
from .periodic import PeriodicBias
from .report import RewriteReport
from .stage import FoldedStage, fold_stage, unfold_stage

__all__ = ["RULES", "Rule", "RuleArg", "parse_rules", "inverse_rules", "form_rules", "REQUIRED"]

Getter = Callable[[str], nn.Module]
#: Marks an option without a default.
REQUIRED = "<required>"


@dataclass(frozen=True)
class Rule:
    """A named rewrite: ``find(ctx, options) -> [Match]``, ``build(match, get, options) -> nn.Module``.

    ``options``: every option with its default (:data:`REQUIRED` when it has none; ``at`` is added for you);
    ``inverse``: the name of the rule that takes this rule's rewrite back ("" when none does);
    ``leaves(options)``: what the tracer must keep whole (:data:`foldconv.tracing.Leaf` entries: a stage's path);
    ``details(match, built)``: extra table rows ``(location, pattern, applied, reason, input_shape)`` for the parts
    of a site (a stage's layers; ``input_shape`` the part's own input, () when unknown); ``decide(match, get, options)``: fixes, from the model's own weights, a choice ``build``
    then reads from ``match.variant`` (a build that branched on weight values would not be a polynomial of them);
    ``looks_for``: the sites ``find`` matches, in words (said when a rule matches nothing in a model).

    Example:
        >>> mine = Rule("bn_into_conv", RULES.get("fold_bn").find, RULES.get("fold_bn").build)
        >>> [(rule.name, options) for rule, options in parse_rules([mine])]
        [('bn_into_conv', {'at': None})]
    """

    name: str
    find: Callable[[Context, Mapping[str, Any]], List[Match]]
    build: Callable[[Match, Getter, Mapping[str, Any]], nn.Module]
    options: Dict[str, Any] = field(default_factory=dict)
    inverse: str = ""
    leaves: Callable[[Mapping[str, Any]], Tuple[tracing.Leaf, ...]] = lambda options: ()
    details: Optional[Callable[[Match, nn.Module], List[Tuple[str, str, bool, str, Tuple[int, ...]]]]] = None
    decide: Optional[Callable[[Match, Getter, Mapping[str, Any]], Match]] = None
    looks_for: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "options", {"at": None, **dict(self.options)})


#: A rule as :func:`foldconv.surgery.rewrite` takes it: a registered name or a :class:`Rule`, alone or with options.
RuleArg = Union[str, Rule, Tuple[Union[str, Rule], Mapping[str, Any]]]


def _validate_name(name: Any) -> None:
    if not isinstance(name, str) or not name.isidentifier():
        raise fold_error("rule", name, "must be an identifier-like name")


def _validate_rule(name: Any, rule: Any) -> None:
    if not isinstance(rule, Rule):
        raise fold_error("rule", type(rule).__name__, "must be a foldconv.surgery.Rule")
    if rule.name != name:
        raise fold_error("rule", rule.name, f"must be registered under its own name, not {name!r}")


#: The rewrite rules by name.
RULES: Registry[Rule] = Registry("rule", check_key=_validate_name, check_value=_validate_rule)


def _validate_order(value: Any, rule: str) -> Any:
    for dims in (2, 1, 3):
        try:
            normalize_order(value, dims)
            return value
        except FoldError:
            continue
    raise fold_error("order", value, f"is not a channel order (an alias crd/dcr/focus or einops axes) for rule {rule!r}")


def _validate_at(value: Any, rule: str) -> Optional[Tuple[str, ...]]:
    if value is None:
        return None
    if isinstance(value, str) or not isinstance(value, Sequence) or not all(isinstance(v, str) for v in value):
        raise fold_error("at", value, f"must be a sequence of site locations (module paths) for rule {rule!r}")
    return tuple(value)


def _validate_option(rule: Rule, key: str, value: Any) -> Any:
    if key == "at":
        return _validate_at(value, rule.name)
    if key == "order":
        return _validate_order(value, rule.name)
    if key == "padding" and value not in ("auto", "inner", "explicit"):
        raise fold_error("padding", value, f"must be 'auto', 'inner' or 'explicit' for rule {rule.name!r}")
    if key in ("fold_bn", "cost_neutral_only") and not isinstance(value, bool):
        raise fold_error(key, value, f"must be True or False for rule {rule.name!r}")
    if key == "stage" and value is not None and (not isinstance(value, str) or not value):
        raise fold_error("stage", value, f"must be a module path such as 'layer1' for rule {rule.name!r}")
    if key == "r":
        items = value if isinstance(value, (tuple, list)) else (value,)
        if not items or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in items):
            raise fold_error("r", value, f"must be an integer >= 1 or one per spatial axis for rule {rule.name!r}")
    return value


def _rule(ref: Any, param: str) -> Rule:
    """The :class:`Rule` a name stands for (a FoldError listing the registered names), or ``ref`` itself."""
    if isinstance(ref, Rule):
        return ref
    found = RULES.find(ref) if isinstance(ref, str) else None
    if found is None:
        close = difflib.get_close_matches(ref, RULES.names(), n=1, cutoff=0.6) if isinstance(ref, str) else []
        hint = f"; did you mean {close[0]}?" if close else ""
        raise fold_error(param, ref, f"is not a rewrite rule; known rules: {', '.join(RULES.names())}{hint}")
    return found


def _split(item: Any, param: str) -> Tuple[Rule, Dict[str, Any]]:
    if isinstance(item, (str, Rule)):
        return _rule(item, param), {}
    if isinstance(item, Sequence) and len(item) == 2 and isinstance(item[0], (str, Rule)) and isinstance(item[1], Mapping):
        return _rule(item[0], param), dict(item[1])
    raise fold_error(param, item, "each rule must be a name or a Rule, alone or in a (rule, {option: value}) pair")


def parse_rules(rules: Any, *, fold_bn: bool = True) -> List[Tuple[Rule, Dict[str, Any]]]:
    """Validate ``rules`` (names or :class:`Rule` objects, alone or in ``(rule, {option: value})`` pairs) into
    rules with complete options. ``fold_bn`` is the default of every rule's ``fold_bn`` option.

    Example:
        >>> [(rule.name, opts["order"]) for rule, opts in parse_rules([("strided_to_spd", {"order": "dcr"})])]
        [('strided_to_spd', 'dcr')]
    """
    if isinstance(rules, (str, bytes, Rule)) or not isinstance(rules, Sequence) or not rules:
        raise fold_error("rules", rules, "must be a non-empty sequence of rule names or (name, {option: value}) pairs")
    parsed = []
    for item in rules:
        rule, given = _split(item, "rules")
        options = dict(rule.options)
        if "fold_bn" in options:
            options["fold_bn"] = fold_bn
        for key, value in given.items():
            if key not in rule.options:
                raise fold_error(key, value, f"is not an option of rule {rule.name!r}; its options: {', '.join(rule.options)}")
            options[key] = _validate_option(rule, key, value)
        for key, value in options.items():
            if value is REQUIRED:
                raise fold_error(key, None, f"is required by rule {rule.name!r}")
        parsed.append((rule, options))
    return parsed


def inverse_rules(rules: Sequence[RuleArg], *, report: Optional[RewriteReport] = None, model: Optional[nn.Module] = None,
                  input_shape: Optional[Sequence[int]] = None, param: str = "rules") -> Tuple[RuleArg, ...]:
    """The rules that take ``rules`` back, in reverse order: each rule's :attr:`Rule.inverse`, with the options the
    inverse also takes (a stage's ``stage``, the sites ``at``).

    ``report`` (the forward rewrite's :class:`~foldconv.surgery.RewriteReport`): each inverse rule is restricted
    (``at``) to the sites its rule rewrote, which keep their locations, and a rule that rewrote nothing has nothing
    to undo; without it an inverse rule also rewrites other sites of its pattern (``conv_to_focus`` takes every
    stride-2 conv), which is still exact but not the original's form. A rule may write its replacement as a small
    container at the site (a transposed conv and its per-sub-pixel bias): given the rewritten ``model`` and its
    ``input_shape``, the inverse's sites are looked up in it at or under each rewritten location. An inverse that
    takes an ``order`` the rule was not given builds, with ``report``, each site's layout in the order the site had
    (:attr:`SiteReport.order`: timm's space-to-depth comes back in timm's order), one entry per order.
    A rule without an inverse (``fold_bn``: the BatchNorm's statistics are gone into the conv) is a FoldError naming ``param``.

    Example:
        >>> inverse_rules(["strided_to_spd", ("fold_stage", {"stage": "layer1", "r": 2})])
        (('unfold_stage', {'stage': 'layer1'}), 'spd_to_strided')
    """
    if isinstance(rules, (str, bytes, Rule)) or not isinstance(rules, Sequence):
        raise fold_error(param, rules, "must be a sequence of rule names or (name, {option: value}) pairs")
    if report is not None and not isinstance(report, RewriteReport):
        raise fold_error("report", type(report).__name__, "must be the RewriteReport of the forward rewrite")
    out: List[RuleArg] = []
    for item in reversed(list(rules)):
        rule, options = _split(item, param)
        if not rule.inverse:
            raise fold_error(param, rule.name, "has no inverse rule: its rewrite cannot be taken back")
        inverse = _rule(rule.inverse, param)
        kept = {k: v for k, v in options.items() if k in inverse.options and (report is None or k != "at")}
        if report is not None:
            sites = [s for s in report.main_sites if s.applied and s.rule == rule.name]
            if not sites:
                continue  # the rule rewrote nothing: nothing to undo
            by_order: Dict[str, List[str]] = {}
            for s in sites:  # the way back builds each site's layout in the order it had, unless told another
                key = s.order if "order" in inverse.options and "order" not in kept else ""
                by_order.setdefault(key, []).append(s.location)
            for order, locations in by_order.items():
                written = sorted(set(locations))
                these = {**kept, **({"order": order} if order else {})}
                if model is not None and input_shape is not None:
                    ctx = Context.build(model, input_shape, leaves=inverse.leaves(these))
                    found = {m.location for m in inverse.find(ctx, {**inverse.options, **these}) if not m.problem}
                    written = sorted(loc for loc in found if any(loc == w or loc.startswith(w + ".") for w in written)) or written
                out.append((inverse.name, {**these, "at": written}))
            continue
        out.append((inverse.name, kept) if kept else inverse.name)
    return tuple(out)


def form_rules() -> Tuple[str, ...]:
    """The rules that give a model an equivalent form on their own: every registered rule with an inverse and no
    required option (what :func:`foldconv.surgery.benchmark_forms` and :func:`foldconv.surgery.optimize` try).

    Example:
        >>> "strided_to_spd" in form_rules(), "fold_stage" in form_rules(), "fold_bn" in form_rules()
        (True, False, False)
    """
    return tuple(name for name in RULES.names()
                 if RULES.get(name).inverse and REQUIRED not in RULES.get(name).options.values())


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
    return copy_requires_grad(spec.replace(groups=1).to_module(weight=weight, bias=bias), conv).train(conv.training)


def _spd_module_to_strided(module: SpaceToDepthConv, input_shape: Sequence[int]) -> nn.Module:
    """A ``SpaceToDepthConv`` as one strided conv: the fold of its conv, with the source's padding."""
    big = fold_conv(module.conv, module.r, module.order)
    source = module.source
    spec = ConvSpec.from_module(big)
    if module.mode == "explicit":
        spec = spec.replace(padding=source.padding, padding_mode=source.padding_mode)
        big = copy_requires_grad(spec.to_module(weight=big.weight.detach(), bias=None if big.bias is None else big.bias.detach()),
                                 big).train(module.training)
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
    """Every transposed conv; a bias-free one whose only user is a :class:`PeriodicBias` (what
    ``subpixel_to_transposed`` builds for a bias that differs per sub-pixel) takes the bias into its site, so that
    the way back gives the sub-pixel conv its bias again and the site's parameters are all counted in its row."""
    found = modules_where(ctx, lambda p, m: isinstance(m, CONV_TRANSPOSE_TYPES), _strided_name)
    if ctx.traced is None:
        return found
    out = []
    for match in found:
        users = list(ctx.traced.node(match.output).users)
        user = users[0] if len(users) == 1 and users[0].op == "call_module" else None
        if user is not None and isinstance(ctx.node_module(user), PeriodicBias) and ctx.module(match.location).bias is None:
            paths = [match.location, str(user.target)]
            match = dataclasses.replace(match, pattern=f"{match.pattern} + PeriodicBias", modules=tuple(paths),
                                        nodes=match.nodes + (user.name,), output=user.name,
                                        problem=match.problem or ctx.shared(paths))
        out.append(match)
    return out


def _build_transposed(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    tconv = get(match.location)
    sub = transposed_to_subpixel(tconv, options["order"])
    if len(match.modules) < 2:
        return sub
    periodic = get(match.modules[1])
    plain = not any(v for pairs in (sub.crop, sub.input_pad) for pair in pairs for v in pair)
    if plain and sub.conv.bias is None and tuple(periodic.r) == tuple(sub.r) and tuple(periodic.order) == tuple(sub.order):
        # the periodic bias is the sub-pixel conv's bias, channel for channel (the same order and factors)
        sub.conv.bias = nn.Parameter(periodic.bias.detach().clone().to(sub.conv.weight.dtype))
        copy_requires_grad(sub.conv, periodic, {"bias": "bias"})
        return sub
    kept = PeriodicBias(periodic.bias.detach(), periodic.r, periodic.order)
    return nn.Sequential(sub, copy_requires_grad(kept, periodic, {"bias": "bias"})).train(tconv.training)


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
    bare = copy_requires_grad(spec.to_module(weight=module.weight.detach()), module).train(module.training)
    tconv = subpixel_to_transposed(bare, match.layout.r, match.layout.order)
    bias = copy_requires_grad(PeriodicBias(module.bias.detach(), match.layout.r, match.layout.order), module, {"bias": "bias"})
    return nn.Sequential(tconv, bias).train(module.training)


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
    stage = get(match.location)
    folded, report = fold_stage(stage, options["r"], input_shape=match.input_shape, order=options["order"],
                                fold_bn=options["fold_bn"] and not stage.training, cost_neutral_only=options["cost_neutral_only"])
    if report.folded_layers == 0:  # only layout ops and merged BatchNorms would change: not a fold of the stage
        why = next((f"{layer.name}: {layer.reason}" for layer in report.layers if layer.reason), "")
        raise fold_error("r", options["r"], f"folds no layer of stage {match.location!r}" + (f" ({why})" if why else ""))
    return folded


def _stage_details(match: Match, built: nn.Module) -> List[Tuple[str, str, bool, str, Tuple[int, ...]]]:
    layers = built.report.layers if isinstance(built, FoldedStage) else ()
    return [(f"{match.location}.{layer.name}", f"{layer.kind} ({layer.action})", layer.action != "kept", layer.reason,
             layer.input_shape) for layer in layers]


def _find_unfold(ctx: Context, options: Mapping[str, Any]) -> List[Match]:
    if options["stage"] is not None:
        return _stage_match(ctx, options["stage"], "unfold_stage")
    return modules_where(ctx, lambda p, m: isinstance(m, FoldedStage), lambda m: "stage FoldedStage")


def _build_unfold(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    return unfold_stage(get(match.location))


# --- torch's pixel shuffle and the layouts of other ecosystems -----------------------------------------------------

_TORCH_SHUFFLES = (nn.PixelShuffle, nn.PixelUnshuffle)
_TORCH_SHUFFLE_FNS = (F.pixel_shuffle, torch.pixel_shuffle, F.pixel_unshuffle, torch.pixel_unshuffle)


def _pair_kind(module: nn.Module) -> str:
    """``"d2s"`` for ``nn.Sequential(conv, depth-to-space)``, ``"s2d"`` for ``nn.Sequential(space-to-depth, conv)``,
    "" for anything else: the form both pixel-shuffle rules build, found again as one layer."""
    if type(module) is not nn.Sequential or len(module) != 2:
        return ""
    first, second = module[0], module[1]
    if isinstance(first, CONV_TYPES) and (info := layout_module(second)) is not None and info.kind == "depth_to_space":
        return "d2s"
    if isinstance(second, CONV_TYPES) and (info := layout_module(first)) is not None and info.kind == "space_to_depth":
        return "s2d"
    return ""


def _pair_layout(module: nn.Module) -> nn.Module:
    return module[1] if _pair_kind(module) == "d2s" else module[0]


def _torch_layout(ctx: Context, match: Match) -> bool:
    """The site's layout op is torch's own (``nn.PixelShuffle``/``nn.PixelUnshuffle`` or their functions)."""
    if match.layout is None:
        return type(_pair_layout(ctx.module(match.location))) in _TORCH_SHUFFLES
    if ctx.traced is not None:
        for name in match.nodes:
            node = ctx.traced.node(name)
            if node.op == "call_function" and node.target in _TORCH_SHUFFLE_FNS:
                return True
            if node.op == "call_module" and type(ctx.module(str(node.target))) in _TORCH_SHUFFLES:
                return True
        return False
    return any(type(ctx.module(p)) in _TORCH_SHUFFLES for p in match.modules)


def _shuffle_sites(ctx: Context, torch_own: bool) -> List[Match]:
    """Conv + depth-to-space and space-to-depth + conv sites (Focus slices too; a BatchNorm in between is not),
    and the two-layer Sequentials the rules build, whose layout is torch's own (``torch_own``) or not."""
    pairs = modules_where(ctx, lambda p, m: bool(_pair_kind(m)),
                          lambda m: f"Sequential({type(m[0]).__name__}, {type(m[1]).__name__})")
    found = conv_then_layout(ctx, with_bn=False) + layout_then_conv(ctx) + focus_slices(ctx) + pairs
    return [m for m in found if _torch_layout(ctx, m) == torch_own]


def _pair_leaves(options: Mapping[str, Any]) -> Tuple[tracing.Leaf, ...]:
    return (lambda module: bool(_pair_kind(module)),)


def _channel_ids(channels: int) -> torch.Tensor:
    return torch.arange(channels, dtype=torch.float64).reshape(1, channels, 1, 1)


def _permute_outputs(conv: nn.Module, perm: torch.Tensor) -> nn.Module:
    """The conv whose output channel ``j`` (weight row and bias) is the given conv's channel ``perm[j]``; grouped
    only when the permutation keeps every channel in its group."""
    spec = ConvSpec.from_module(conv)
    per_group = spec.out_channels // spec.groups
    keep = bool((perm // per_group == torch.arange(spec.out_channels) // per_group).all())
    weight = conv.weight.detach() if keep else expand_groups(conv.weight.detach(), spec.groups)
    index = perm.to(weight.device)
    bias = None if conv.bias is None else conv.bias.detach().index_select(0, index)
    new = (spec if keep else spec.replace(groups=1)).to_module(weight=weight.index_select(0, index), bias=bias)
    return copy_requires_grad(new, conv).train(conv.training)


def _reordered(match: Match, get: Getter, order: Tuple[str, ...]) -> nn.Module:
    """The site with its layout in channel order ``order``: the conv's output channels (before a depth-to-space)
    or input channels (after a space-to-depth) permuted so that the function is the same."""
    if match.layout is None:  # a two-layer Sequential
        pair = get(match.location)
        kind = _pair_kind(pair)
        conv, info = (pair[0], layout_module(pair[1])) if kind == "d2s" else (pair[1], layout_module(pair[0]))
    else:
        conv, info = get(match.location), match.layout
        kind = "d2s" if info.kind == "depth_to_space" else "s2d"
        if match.channel_perm is not None:  # Focus slices in another order: the conv read in order "focus" first
            conv = _permute_inputs(conv, match.channel_perm)
    if len(info.r) != 2 or info.r[0] != info.r[1]:
        raise fold_error("r", info.r, "must be one factor for both axes of a 2-D map: nn.PixelShuffle and nn.PixelUnshuffle take one")
    r = info.r[0]
    if kind == "d2s":
        # conv'(x) = space_to_depth(depth_to_space(conv(x), r, old), r, new): a permutation of conv's channels
        perm = space_to_depth(depth_to_space(_channel_ids(conv.out_channels), r, info.order), r, order)[0, :, 0, 0].long()
        layout = nn.PixelShuffle(r) if order == normalize_order("crd", 2) else DepthToSpace(r, order)
        return nn.Sequential(_permute_outputs(conv, perm), layout).train(conv.training)
    # space_to_depth(x, r, old) channel k is space_to_depth(x, r, new) channel held[k]: the conv reads it there
    held = space_to_depth(depth_to_space(_channel_ids(conv.in_channels), r, order), r, info.order)[0, :, 0, 0].long()
    layout = nn.PixelUnshuffle(r) if order == normalize_order("crd", 2) else SpaceToDepth(r, order)
    return nn.Sequential(layout, _permute_inputs(conv, tuple(torch.argsort(held).tolist()))).train(conv.training)


def _find_to_shuffle(ctx: Context, options: Mapping[str, Any]) -> List[Match]:
    return _shuffle_sites(ctx, torch_own=False)


def _build_to_shuffle(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    return _reordered(match, get, normalize_order("crd", 2))


def _find_from_shuffle(ctx: Context, options: Mapping[str, Any]) -> List[Match]:
    return _shuffle_sites(ctx, torch_own=True)


def _build_from_shuffle(match: Match, get: Getter, options: Mapping[str, Any]) -> nn.Module:
    return _reordered(match, get, normalize_order(options["order"], 2))


def _stage_leaves(options: Mapping[str, Any]) -> Tuple[str, ...]:
    return (options["stage"],) if options.get("stage") else ()


for _built_in in (
    Rule("focus_to_conv", _find_spd, _build_spd, inverse="conv_to_focus",
         looks_for="space-to-depth (Focus slices + cat, a SpaceToDepth module or function) then a conv, or a SpaceToDepthConv"),
    Rule("conv_to_focus", _find_focus_form, _build_focus_form, {"order": "focus"}, inverse="focus_to_conv",
         looks_for="a Conv2d of stride 2"),
    Rule("strided_to_spd", _find_strided, _build_strided, {"order": "crd", "padding": "auto"}, inverse="spd_to_strided",
         looks_for="a conv with a stride above 1"),
    Rule("spd_to_strided", _find_spd, _build_spd, inverse="strided_to_spd",
         looks_for="space-to-depth (Focus slices + cat, a SpaceToDepth module or function) then a conv, or a SpaceToDepthConv"),
    Rule("transposed_to_subpixel", _find_transposed, _build_transposed, {"order": "crd"}, inverse="subpixel_to_transposed",
         leaves=lambda options: (PeriodicBias,), looks_for="a ConvTranspose1d/2d/3d"),
    Rule("subpixel_to_transposed", _find_subpixel, _build_subpixel, {"fold_bn": True}, inverse="transposed_to_subpixel",
         decide=_decide_subpixel, looks_for="a conv [+ BatchNorm] then depth-to-space (PixelShuffle or another order), or a SubPixelConv"),
    Rule("fold_stage", _find_stage, _build_stage,
         {"stage": REQUIRED, "r": REQUIRED, "order": "crd", "fold_bn": True, "cost_neutral_only": True},
         inverse="unfold_stage", leaves=_stage_leaves, details=_stage_details, looks_for="the module at the path given as stage"),
    Rule("unfold_stage", _find_unfold, _build_unfold, {"stage": None}, inverse="fold_stage", leaves=_stage_leaves,
         looks_for="a FoldedStage"),
    Rule("fold_bn", lambda ctx, options: conv_then_bn(ctx), _build_fold_bn, looks_for="a conv followed by an eval-mode BatchNorm"),
    Rule("to_pixel_shuffle", _find_to_shuffle, _build_to_shuffle, inverse="from_pixel_shuffle", leaves=_pair_leaves,
         looks_for="a conv + depth-to-space or space-to-depth + conv in a channel order other than torch's"),
    Rule("from_pixel_shuffle", _find_from_shuffle, _build_from_shuffle, {"order": "dcr"}, inverse="to_pixel_shuffle",
         leaves=_pair_leaves, looks_for="a conv + nn.PixelShuffle / F.pixel_shuffle, or nn.PixelUnshuffle + conv"),
):
    RULES.register(_built_in.name, _built_in)
