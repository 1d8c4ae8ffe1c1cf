"""Rewrite a whole model into an equivalent form, site by site, and prove that nothing changed.

:func:`rewrite` applies the rules in the order given, each to the model the previous one produced: it traces
the model (torch.fx, :class:`~foldconv.surgery.patterns.Context`; module-level replacement when fx fails), finds the
rule's sites (:mod:`.patterns`), builds each replacement from the site's modules (:mod:`.rules`) and splices it in. A site
that cannot be rewritten keeps its layers and its row says why; the others still apply. Never rewritten: a site whose
layers may compute something other than their attributes say (a hook, a subclass with its own ``forward``, a
parameter the model reads directly: :mod:`.hazards`), and a site whose own check does not find it equivalent.
What trains is kept (:mod:`.params`): a new tensor copied from a frozen one is frozen, and a shared or parametrised
weight becomes a parametrisation of the very same parameter (or the site is refused, with the reason).

Verification has two levels. Each applied site is checked on its own input shape with
:func:`foldconv.check.check_equivalence` and a :func:`~foldconv.check.derived` candidate: the replacement is
rebuilt from random integer weights on every trial, so an exact verdict holds for all weights (Schwartz–Zippel
bound). The whole model (eval mode) is checked the same way: the candidate is the whole rewrite replayed on the
randomised original, so the verdict is exact when every op the model runs is polynomial; a model that runs a
non-polynomial op (ReLU, BatchNorm, pooling) is compared with its rewrite on their own weights in float64, a
sampled verdict (the report says which and why). A site whose rewrite holds for the model's own weights only (a bias tied over sub-pixels) is checked with
those weights. A whole rewritten model found not equivalent (or unable to run) is withdrawn: the original comes back
and the report says why. Then one backward pass of each says whether the result trains as the original
(:class:`~foldconv.surgery.params.TrainingCheck`). Every check allocates within foldconv's memory limit, estimated
before anything runs (:func:`foldconv.tracing.require_run_memory`). The input model is never modified; the result is a real module on the model's device and dtype,
in its train/eval mode. Sites made of module calls are swapped in place (the model keeps its class); a site with a
function or slices in it (YOLOv5's Focus, ``F.pixel_shuffle``) makes the result a ``torch.fx.GraphModule``.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2, padding=1), torch.nn.ReLU())
    >>> new, report = rewrite(net, (1, 3, 8, 8), ["strided_to_spd"])
    >>> report.applied, report.ok, report.sites[0].pattern, report.sites[0].exact
    (1, True, 'Conv2d 3x3 s2', True)
    >>> type(new).__name__, type(new[0]).__name__
    ('Sequential', 'SpaceToDepthConv')
"""
from __future__ import annotations

import copy
import dataclasses
import itertools
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
from torch import nn
from torch.nn.utils import parametrize

from .. import tracing
from ..check import EquivalenceReport, Verdict, check_equivalence, derived
from ..check.ops import OpRecorder
from ..errors import FoldError, first_line, fold_error
from .hazards import global_hazard, graph_reads, inlined_hazard, site_hazard
from .params import TensorMap, check_training, effective_parameters, keep_parameters, tensor_maps, trains_alike
from .patterns import Context, Match
from .report import RewriteReport, SiteReport
from .rules import Rule, RuleArg, parse_rules
from .sitetext import describe_site, site_costs
from .stage import FoldedStage

__all__ = ["rewrite", "find_sites", "check_model", "CHECK_COPIES"]

Parsed = List[Tuple[Rule, Dict[str, Any]]]
#: Forward passes' worth of float64 memory the checks of a rewrite hold at once (the memory guard's factor): the
#: model and its rewrite, and the gradients of the training check.
CHECK_COPIES = 3
#: Smaller integers for a whole-model retry when outputs of deep polynomial models reach 2**51.
_RETRY_RANGE, _RETRY_TRIALS = 16, 12


@dataclass(frozen=True)
class _Keep:
    """What a site's build keeps of the old parameters: new tensors made parametrisations of their old tensor
    (``maps``), and ``requires_grad`` of the other new tensors by name (``flags``). Decided once, from the model."""

    maps: Tuple[TensorMap, ...] = ()
    flags: Tuple[Tuple[str, bool], ...] = ()

    def build(self, rule: Rule, match: Match, get: Callable[[str], nn.Module], options: Dict[str, Any]) -> nn.Module:
        """The rule's replacement with the old parameters kept as decided. Buffers of the site's layers are put back
        afterwards: reading a parametrised weight in training mode advances its state (spectral_norm's power
        iteration), and a kept parametrisation must start where the original's is."""
        saved = [(b, b.detach().clone()) for path in match.modules for b in get(path).buffers()]
        try:
            built = rule.build(match, get, options)
        finally:
            with torch.no_grad():
                for buffer, value in saved:
                    buffer.copy_(value)
        return keep_parameters(built, get, self.maps, dict(self.flags))


@dataclass(frozen=True)
class _Step:
    """One rule's application: the graph it was planned on (None: the sites are swapped module by module) and its sites."""

    graph: Optional[fx.Graph]
    sites: Tuple[Tuple[Rule, Dict[str, Any], Match, _Keep], ...]
    class_name: str


def _site_module(ctx: Context, match: Match) -> fx.GraphModule:
    """The site alone as a module (input -> output), sharing the model's submodules: the check's reference."""
    graph = fx.Graph()
    if ctx.traced is None:
        value = graph.placeholder("x")
        for path in match.modules:
            value = graph.call_module(path, (value,))
        graph.output(value)
        return fx.GraphModule(ctx.model, graph)
    env: Dict[fx.Node, fx.Node] = {ctx.traced.node(match.input): graph.placeholder("x")}
    for node in ctx.traced.graph.nodes:
        if node.name in match.nodes:
            env[node] = graph.node_copy(node, lambda n: env[n])
    graph.output(env[ctx.traced.node(match.output)])
    return fx.GraphModule(ctx.model, graph)


def _apply_step(root: nn.Module, step: _Step, built: Optional[Dict[str, nn.Module]] = None) -> nn.Module:
    """Splice the step's replacements into ``root`` (modified: pass a copy). ``built``: replacements by location
    (None: build them from ``root``'s modules, which is what the whole-model check replays on random weights)."""
    modules = {}
    for rule, options, match, keep in step.sites:
        modules[match.location] = built[match.location] if built is not None else keep.build(rule, match, root.get_submodule, options)
    if step.graph is None:
        for _, _, match, _ in step.sites:
            root.set_submodule(match.location, modules[match.location])
            for path in match.modules:
                if path != match.location:
                    root.set_submodule(path, nn.Identity())
        return root
    graph = fx.Graph()
    val_map: Dict[fx.Node, fx.Node] = {}
    graph.output(graph.graph_copy(step.graph, val_map))
    by_name = {old.name: new for old, new in val_map.items()}
    for _, _, match, _ in step.sites:
        root.set_submodule(match.location, modules[match.location])
        out = by_name[match.output]
        with graph.inserting_after(out):
            new = graph.call_module(match.location, (by_name[match.input],))
        out.replace_all_uses_with(new)
        for name in reversed(match.nodes):
            graph.erase_node(by_name[name])
        by_name[match.output] = new  # a later site fed by this one reads the replacement
    graph.lint()
    result = fx.GraphModule(root, graph, class_name=step.class_name)
    result.training = root.training  # not .train(): every layer keeps its own mode
    return result


def _replay(model: nn.Module, steps: Sequence[_Step]) -> nn.Module:
    for step in steps:
        model = _apply_step(model, step)
    return model


def _at_sites(rule: Rule, options: Dict[str, Any], matches: List[Match]) -> List[Match]:
    wanted = options["at"]
    if wanted is None:
        return matches
    locations = [m.location for m in matches]
    missing = [w for w in wanted if w not in locations]
    if missing:
        raise fold_error("at", tuple(missing), f"names no site of rule {rule.name!r}; its sites: {', '.join(locations) or 'none'}")
    return [m for m in matches if m.location in wanted]


def _site_check(ctx: Context, rule: Rule, options: Dict[str, Any], match: Match, keep: _Keep, seed: int,
                device: torch.device) -> EquivalenceReport:
    reference = _site_module(ctx, match)
    candidate = derived(lambda ref: keep.build(rule, match, ref.get_submodule, options))
    return check_equivalence(reference, candidate, match.input_shape, seed=seed, device=device, dtypes=())


def _plan(model: nn.Module, shape: Tuple[int, ...], parsed: Parsed, *, verify: bool, seed: int, dry: bool = False,
          keep_all: bool = False):
    """Apply the rules to a copy of ``model``; returns the new model, the steps, the rows and the trace status."""
    work = copy.deepcopy(model)
    device = tracing.module_device(model)
    steps: List[_Step] = []
    rows: List[SiteReport] = []
    traced, fallback = True, ""
    everywhere = global_hazard()
    for rule, options in parsed:
        # A folded stage is one layer to every rule: its body is not the model's (unfold_stage gives that back).
        ctx = Context.build(work, shape, leaves=(FoldedStage,) + tuple(rule.leaves(options)))  # dry: work stays the model
        if ctx.traced is None and traced:
            traced, fallback = False, ctx.fallback_reason
        graph = None if ctx.traced is None else ctx.traced.graph
        inline = inlined_hazard(ctx.model, graph)
        chosen, built, claimed = [], {}, set()
        for match in _at_sites(rule, options, rule.find(ctx, options)):
            covers = set(match.nodes or match.modules)
            problem = (match.problem or ("overlaps a site rewritten already" if covers & claimed else "") or everywhere
                       or site_hazard(ctx.model, match.modules) or graph_reads(graph, match.modules)
                       or (inline if len(match.nodes) != len(match.modules) else ""))
            match, module, keep, row = _plan_site(ctx, rule, options, match, problem, verify=verify and not dry, seed=seed,
                                                  device=device, keep_all=keep_all)
            applied = module is not None and not dry
            rows.append(dataclasses.replace(row, applied=applied))
            if applied:
                rows.extend(_part_rows(rule, match, module) if rule.details is not None else [])
                chosen.append((rule, options, match, keep))
                built[match.location] = module
                claimed |= covers
        if chosen:
            # Sites made of module calls only are swapped in place (the model keeps its class and methods); a
            # site with a function or a slice in it needs the traced graph.
            modular = all(len(match.nodes) == len(match.modules) for _, _, match, _ in chosen)
            name = type(model).__name__.removesuffix("Rewritten") + "Rewritten"
            step = _Step(None if modular else graph, tuple(chosen), name)
            work = _apply_step(work, step, built)
            steps.append(step)
    return work, steps, rows, traced, fallback


def _old_parameters(model: nn.Module, names: Sequence[str]) -> Dict[str, Tuple[bool, str]]:
    """Per old tensor name (``"conv.weight"``): its ``requires_grad``, and why it must be kept as it is ("" when a
    copy may replace it): shared with another layer, or parametrised."""
    counts: Dict[int, List[str]] = {}
    for name, p in model.named_parameters(remove_duplicate=False):
        counts.setdefault(id(p), []).append(name)
    out = {}
    for name in names:
        owner_path, _, attr = name.rpartition(".")
        owner = model.get_submodule(owner_path)
        if parametrize.is_parametrized(owner, attr):
            plist = owner.parametrizations[attr]
            originals = [getattr(plist, n) for n in (["original"] if plist.is_tensor else [f"original{i}" for i in range(plist.ntensors)])]
            kinds = ", ".join(type(step).__name__.lstrip("_") for step in plist)
            out[name] = (any(o.requires_grad for o in originals), f"{name} is parametrised ({kinds})")
            continue
        p = getattr(owner, attr)
        others = [n for n in counts.get(id(p), []) if n != name]
        out[name] = (bool(p.requires_grad), f"{name} is shared with {others[0]}" if others else "")
    return out


def _decide_keep(ctx: Context, rule: Rule, options: Dict[str, Any], match: Match, keep_all: bool) -> Tuple[_Keep, str, Tuple[bool, str]]:
    """What the site's build keeps of the old parameters, why the site cannot be rewritten ("" when it can) and
    whether it trains alike (with the reason)."""
    reference = _site_module(ctx, match)
    maps, problem = tensor_maps(reference, lambda ref: rule.build(match, ref.get_submodule, options))
    old = _old_parameters(ctx.model, list(effective_parameters(reference)))
    must = {name: why or "keep_parameters=True" for name, (_, why) in old.items() if why or keep_all}
    trainable = {name: grad for name, (grad, _) in old.items()}
    if must:
        sources = {m.source for m in maps if not m.problem}
        broken = problem or next((f"its new {m.name} {m.problem}" for m in maps if m.problem), "")
        missing = next((name for name in must if name not in sources), "")
        if broken or missing:
            name = missing or next(iter(must))
            why = broken or f"{missing} is not copied into the rewrite"
            return _Keep(), f"{must[name]}, and the rewrite cannot keep it: {why}", (False, why)
    kept = tuple(m for m in maps if not m.problem and m.source in must)
    flags = tuple((m.name, trainable[m.source]) for m in maps if not m.problem and m.source in trainable)
    alike = trains_alike(maps, trainable, problem=problem, kept=[m.name for m in kept])
    return _Keep(kept, flags), "", alike


def _plan_site(ctx: Context, rule: Rule, options: Dict[str, Any], match: Match, problem: str, *, verify: bool, seed: int,
               device: torch.device, keep_all: bool = False) -> Tuple[Match, Optional[nn.Module], _Keep, SiteReport]:
    """Build one site's replacement (None with the reason when it cannot be built, or when its check does not
    find it equivalent) and check it."""
    module, reason, check, keep, alike = None, problem, None, _Keep(), (None, "")
    if not reason:
        try:
            if rule.decide is not None:
                match = rule.decide(match, ctx.module, options)
            keep, reason, alike = _decide_keep(ctx, rule, options, match, keep_all)
            if not reason:
                module = keep.build(rule, match, ctx.module, options)
        except Exception as err:  # noqa: BLE001 (a rule that cannot apply says why; the rest still apply)
            module, reason = None, first_line(err)
    if module is not None and verify:
        try:
            check = _site_check(ctx, rule, options, match, keep, seed, device)
        except FoldError as err:  # the rewrite holds for these weights only (a bias tied over sub-pixels)
            try:
                reference = _site_module(ctx, match)
                own = keep.build(rule, match, copy.deepcopy(reference).to(torch.float64).get_submodule, options)
                check = check_equivalence(reference, own, match.input_shape, seed=seed, device=device, dtypes=())
                reason = f"checked with the model's weights only; for other weights {first_line(err)}"
            except FoldError as again:
                module, reason = None, f"the site check could not run: {first_line(again)}"
        if check is not None and check.verdict is not Verdict.EQUIVALENT:
            how = "exact" if check.exact else "sampled"
            where = f", first mismatch at output index {check.first_mismatch}" if check.first_mismatch is not None else ""
            module, reason = None, f"not applied: its check found the rewrite {check.verdict.value} ({how}{where})"
    row = _row(rule, ctx, match, module, module is not None, reason, check)
    trains = alike if module is not None else (None, "")
    return match, module, keep, dataclasses.replace(row, trains_same=trains[0], training=trains[1])


def _row(rule: Rule, ctx: Context, match: Match, module: Optional[nn.Module], applied: bool, reason: str,
         check: Optional[EquivalenceReport]) -> SiteReport:
    reference = _site_module(ctx, match)
    before, after = describe_site(ctx, match), describe_site(ctx, match, module) if module is not None else ""
    (params_before, macs_before), (params_after, macs_after) = site_costs(reference, match.input_shape), (
        site_costs(module, match.input_shape) if module is not None else (0, 0))
    changes = ""
    if isinstance(module, FoldedStage) and module.report.fused_batchnorms:  # said with the model's own paths
        at = f"{match.location}." if match.location else ""
        changes = dataclasses.replace(module.report, fused_batchnorms=tuple(
            (at + bn, at + conv) for bn, conv in module.report.fused_batchnorms)).describe_fused()
    return SiteReport(
        rule.name, match.pattern, match.location, match.input_shape, before, after, params_before, params_after,
        macs_before, macs_after, applied=applied, reason=reason, verdict=None if check is None else check.verdict,
        exact=bool(check is not None and check.exact), check=check, changes=changes,
        order=" ".join(match.layout.order) if match.layout is not None else "", before_module=reference, after_module=module,
    )


def _part_rows(rule: Rule, match: Match, module: nn.Module) -> List[SiteReport]:
    return [
        SiteReport(rule.name, pattern, location, tuple(shape), "", "", 0, 0, 0, 0, applied=done, reason=why, part_of=match.location)
        for location, pattern, done, why, shape in rule.details(match, module)
    ]


def _non_polynomial(model: nn.Module, shape: Tuple[int, ...], device: torch.device) -> Tuple[str, ...]:
    """The ops off the checker's polynomial allow-list the model (eval mode, float64) runs on this shape."""
    m = copy.deepcopy(model).to(device=device, dtype=torch.float64).eval()
    x = torch.ones(shape, dtype=torch.float64, device=device)
    with torch.no_grad(), OpRecorder(sources=[x] + list(m.parameters())) as recorder:
        m(x)
    return tuple(sorted(recorder.refused))


def _whole_check(model: nn.Module, steps: Sequence[_Step], shape: Tuple[int, ...], seed: int) -> Tuple[EquivalenceReport, str]:
    return check_model(model, lambda ref: _replay(ref, steps), shape, seed=seed)


def check_model(model: nn.Module, build: Callable[[nn.Module], nn.Module], input_shape: Tuple[int, ...], *,
                seed: int = 0) -> Tuple[EquivalenceReport, str]:
    """``build(model)`` checked against ``model`` (eval mode) and a note saying how: for all weights (``build``
    replayed on random integer weights) when every op the model runs is polynomial, else (or when the integer
    check cannot be exact) in float64 on the model's own weights, a sampled verdict. ``build`` may modify its
    argument (it gets copies). Used for the whole model of :func:`rewrite` and by :func:`foldconv.surgery.benchmark_forms`.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(2, 2, 3), torch.nn.ReLU())
        >>> report, note = check_model(net, copy.deepcopy, (1, 2, 5, 5))
        >>> report.ok, report.exact, note.startswith("in float64 with the model's own weights")
        (True, False, True)
    """
    reference = copy.deepcopy(model).eval()
    device = tracing.module_device(model)
    refused = _non_polynomial(reference, input_shape, device)
    # The rewrite replayed in float64 on the model's own weights: what was built, without the rounding of
    # weights computed in the model's dtype (a folded BatchNorm in float32).
    def own() -> nn.Module:  # built only where the verdict needs it: a build can cost more than the check
        return build(copy.deepcopy(reference).to(torch.float64)).eval()

    if refused:
        # No trial count makes a non-polynomial model's verdict exact, and random integer weights overflow deep
        # ones: the rewrite is compared with the original on the model's own weights, in float64.
        report = check_equivalence(reference, own(), input_shape, seed=seed, device=device, dtypes=(), trials=1)
        return _said(report, f"in float64 with the model's own weights, since the model runs {', '.join(refused)} (not polynomial)")
    candidate = derived(lambda ref: build(ref).eval())
    try:
        report = check_equivalence(reference, candidate, input_shape, seed=seed, device=device, dtypes=())
    except FoldError as err:  # a site holds for the model's weights only
        report = check_equivalence(reference, own(), input_shape, seed=seed, device=device, dtypes=())
        return _said(report, f"in float64 with the model's own weights; the rewrite does not hold for all weights: {first_line(err)}")
    note = "for all weights: the rewrite replayed on random integer weights (Schwartz-Zippel bound)"
    if not report.exact and "2**51" in report.reason:
        report = check_equivalence(reference, candidate, input_shape, seed=seed, device=device, dtypes=(), exact_range=_RETRY_RANGE,
                                   trials=_RETRY_TRIALS)
        note = f"integer outputs reached 2**51 with the default range: retried with exact_range={_RETRY_RANGE}, trials={_RETRY_TRIALS}"
    if not report.exact:
        note = f"in float64, on random integer weights and on the model's own: {report.reason}"
    return report, note


def _said(report: EquivalenceReport, note: str) -> Tuple[EquivalenceReport, str]:
    # The checker's own reason ("parameters are not integer-valued; use derived()") is advice for its callers;
    # a whole-model check says why it is sampled in the model's terms.
    return dataclasses.replace(report, reason=note), note


def _validated(model: Any, input_shape: Any, verify: Any, fold_bn: Any, seed: Any) -> Tuple[int, ...]:
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    shape = tracing.validate_input_shape(input_shape)
    for name, value in (("verify", verify), ("fold_bn", fold_bn)):
        if not isinstance(value, bool):
            raise fold_error(name, value, "must be True or False")
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise fold_error("seed", seed, "must be an integer >= 0 (the RNG seed of the checks)")
    if verify and any(t.is_meta for t in itertools.chain(model.parameters(), model.buffers())):
        raise fold_error("model", type(model).__name__, "is on the meta device: its weights hold no values to check the "
                         "rewrite with; build it on a real device, or pass verify=False")
    # The checks run the model and its rewrite in float64, and the training check keeps both graphs for backward.
    tracing.require_run_memory(model, shape, copies=CHECK_COPIES if verify else 1,
                             what="the rewrite's checks (the model and its rewrite in float64, with gradients)" if verify
                             else "tracing the model on real tensors")
    return shape


def rewrite(model: nn.Module, input_shape: Sequence[int], rules: Sequence[RuleArg], *,
            verify: bool = True, fold_bn: bool = True, seed: int = 0,
            keep_parameters: bool = False) -> Tuple[nn.Module, RewriteReport]:
    """A new, real, runnable model equal to ``model`` with the rules applied, and the report.

    ``input_shape``: the full shape of one input ``(N, C, *spatial)``, on which the model is traced and checked.
    ``rules``: applied in order; each a registered name (``foldconv.surgery.RULES.names()``) or a
    :class:`~foldconv.surgery.Rule` (used for this call only), alone or in a ``(rule, {option: value})`` pair
    (every rule takes ``at=[locations]``). ``fold_bn``: fold an eval-mode BatchNorm into the conv before it where
    a rule needs that (a stage fold, a BatchNorm between a conv and its PixelShuffle). ``verify``: check every
    applied site and the whole model (eval mode) and whether the result trains as the original
    (:attr:`RewriteReport.training`); ``seed`` seeds those checks. ``keep_parameters``: every new weight that is
    a copy of old entries becomes a parametrisation of the old parameter, so the result has exactly the
    original's parameters and trains as it does (shared and parametrised weights are kept so always).

    The returned model computes the original's function: a site whose layers may compute something other than
    their attributes say (a forward hook, a subclass that overrides ``forward``, :mod:`.hazards`) or whose check
    does not find it equivalent is not applied, and its row says why; when the whole rewritten model is not
    found equivalent, the rewrite is withdrawn: the result is a copy of the original and
    :attr:`RewriteReport.withdrawn` says why. ``report.ok`` is False whenever a check found a difference.

    Args:
        model: the network (``nn.Module``); it is copied, never modified.
        input_shape: the full input shape ``(N, C, *spatial)`` (2 to 5 ints >= 1) the model is traced and checked on.
        rules: a non-empty sequence of rule names, :class:`~foldconv.surgery.Rule` objects or ``(rule, {option:
            value})`` pairs, applied in order.
        verify: check every site, the whole model and training (default True).
        fold_bn: fold an eval-mode BatchNorm into the conv before it where a rule needs it (default True).
        seed: the seed of the checks, an int >= 0 (default 0).
        keep_parameters: keep the original parameters, new weights parametrised on them (default False).

    Returns:
        ``(new_model, report)``: the rewritten model and a :class:`RewriteReport` (truthy when no check found a
        difference): ``sites`` (one row per site: ``pattern``, ``location``, ``before``/``after``, ``applied``,
        ``reason``), ``applied``, ``verification``, ``training``, ``withdrawn``.

    Raises:
        FoldError: naming ``model``, ``input_shape`` (malformed or above the allocation limit), ``rules``, a rule's
        option, ``verify``, ``fold_bn``, ``seed`` or ``keep_parameters``.

    Example:
        >>> from foldconv import SpaceToDepth
        >>> net = torch.nn.Sequential(SpaceToDepth(2, "focus"), torch.nn.Conv2d(12, 8, 3, padding=1))
        >>> new, report = rewrite(net, (1, 3, 8, 8), ["spd_to_strided"])
        >>> report.sites[0].pattern, report.sites[0].after, report.verification.exact
        ('SpaceToDepth+Conv2d (space-to-depth)', 'Conv2d(3->8, k=(6, 6), s=(2, 2), p=(2, 2))', True)
        >>> report.sites[0].trains_same, report.training.same
        (True, True)
    """
    shape = _validated(model, input_shape, verify, fold_bn, seed)
    if not isinstance(keep_parameters, bool):
        raise fold_error("keep_parameters", keep_parameters, "must be True or False")
    parsed = parse_rules(rules, fold_bn=fold_bn)
    new, steps, rows, traced, fallback = _plan(model, shape, parsed, verify=verify, seed=seed, keep_all=keep_parameters)
    verification, note, training, withdrawn = None, "", None, ""
    if verify:
        try:
            verification, note = _whole_check(model, steps, shape, seed)
        except Exception as err:  # noqa: BLE001 (a rewritten model that cannot even run is withdrawn, not raised)
            withdrawn = f"the rewritten model could not be checked: {first_line(err, with_type=not isinstance(err, FoldError))}"
        if verification is not None and not verification.ok:
            how = "exact" if verification.exact else "sampled"
            withdrawn = f"the whole rewritten model is {verification.verdict.value} to the original ({how})"
        if withdrawn:
            new, steps = copy.deepcopy(model), []
            rows = [dataclasses.replace(r, applied=False, reason=f"withdrawn: {withdrawn}") if r.applied else r for r in rows]
        elif steps:
            training = check_training(model, lambda ref: _replay(ref, steps), shape, seed=seed)
    report = RewriteReport(type(model).__name__, shape, tuple(rule.name for rule, _ in parsed), traced, fallback,
                           tuple(rows), verification, note, training=training, withdrawn=withdrawn)
    return new, report


def find_sites(model: nn.Module, input_shape: Sequence[int], rules: Sequence[RuleArg]) -> Tuple[SiteReport, ...]:
    """What :func:`rewrite` would do with each rule on ``model`` as it is (applied=False; nothing changes).

    A site a rule cannot rewrite carries the reason; the others an empty reason and the ``after`` text.

    Args:
        model: the network (``nn.Module``); it is not modified.
        input_shape: the full input shape ``(N, C, *spatial)`` (2 to 5 ints >= 1) the model is traced on.
        rules: a non-empty sequence of rule names, :class:`~foldconv.surgery.Rule` objects or ``(rule, {option:
            value})`` pairs.

    Returns:
        One :class:`SiteReport` per site found, in order: ``rule``, ``pattern``, ``location``, ``before``,
        ``after`` and ``reason`` (empty when the rule can rewrite it).

    Raises:
        FoldError: naming ``model``, ``input_shape``, ``rules`` or a rule's option.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1))
        >>> [(s.pattern, s.location, s.reason) for s in find_sites(net, (1, 8, 5, 5), ["transposed_to_subpixel"])]
        [('ConvTranspose2d 4x4 s2', '0', '')]
    """
    shape = _validated(model, input_shape, False, True, 0)
    _, _, rows, _, _ = _plan(model, shape, parse_rules(rules), verify=False, seed=0, dry=True)
    return tuple(rows)
