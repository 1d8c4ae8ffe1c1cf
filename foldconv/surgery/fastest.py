"""Pick the fastest verified form per site, and never return a model that is not conclusively faster.

:func:`optimize` asks :func:`foldconv.surgery.find_sites` where each rewrite rule applies and times every verified
form of each site against the original. A site whose replaced region is its one module (a strided conv) is timed
as that layer alone, at the site's own input shape; a site whose region is more than its module (YOLOv5's
slices + cat + conv, timm's SpaceToDepth + conv, a conv + PixelShuffle), or whose rewritten layer alone is not
equivalent to the original layer, is timed as the whole model with only that site rewritten. Per site it keeps the
form whose speedup interval lies above 1.0 with the largest speedup, rewrites the model with those choices (each
rule restricted to its sites with ``at``) and times the whole rewritten model against the original in the same run.
Every comparison is timed in interleaved rounds (:func:`foldconv.surgery.timing.interleaved`). The original comes
back unless that interval lies above 1.0 too (:mod:`foldconv.surgery.speed` on intervals): claim FORMS-3,
paper_notes/claims.md.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import tracing
from .._validate import require_device, require_int
from ..check import check_equivalence
from ..errors import FoldError
from .rewrite import check_model, find_sites, rewrite
from .rules import form_rules
from .speed import FormTiming
from .timing import ROUNDS, Timer, interleaved, machine_description, measure, prepare_target, require_seconds, runner

__all__ = ["SiteChoice", "OptimizeReport", "optimize"]


@dataclass(frozen=True)
class SiteChoice:
    """One site: every form timed there against the original, and the one chosen.

    ``scope``: ``"layer"`` (the site's module alone at its input shape) or ``"model"`` (the whole model with only
    this site rewritten). ``chosen`` is a rule name, or ``"original"`` when no form is conclusively faster.
    """

    location: str
    input_shape: Tuple[int, ...]
    scope: str
    candidates: Tuple[FormTiming, ...]
    chosen: str
    reason: str = ""

    @property
    def choice(self) -> Optional[FormTiming]:
        return next((c for c in self.candidates if c.form == self.chosen), None)


@dataclass(frozen=True)
class OptimizeReport:
    """What :func:`optimize` did: the per-site choices, the whole-model speedup and whether it kept the original.

    ``speedup``/``speedup_low``/``speedup_high``: original time / rewritten time for the whole model, measured in
    the same run (NaN when nothing was rewritten); ``timing``: that comparison with both medians (None when nothing
    was rewritten). ``kept_original``: the original model was returned; ``reason`` says why.
    """

    model: str
    input_shape: Tuple[int, ...]
    device: str
    sites: Tuple[SiteChoice, ...]
    rules: Tuple[Tuple[str, Tuple[str, ...]], ...]  # (rule, sites it was applied at) in the returned model
    speedup: float
    speedup_low: float
    speedup_high: float
    kept_original: bool
    reason: str
    machine: str
    timing: Optional[FormTiming] = None

    def rows(self) -> List[Dict[str, Any]]:
        """One row per (site, form): the speedup over the original layer, its interval, and whether it was chosen."""
        return [
            {"site": s.location, "scope": s.scope, "form": c.form, "verified": c.verified, "speedup": round(c.speedup, 3),
             "interval": f"[{c.speedup_low:.2f}, {c.speedup_high:.2f}]" if c.timed else "", "chosen": c.form == s.chosen,
             "note": c.note if not c.timed else s.reason if c.form == s.chosen else ""}
            for s in self.sites for c in s.candidates
        ]

    def summary(self) -> str:
        whole = "not timed" if math.isnan(self.speedup) else f"{self.speedup:.2f}x [{self.speedup_low:.2f}, {self.speedup_high:.2f}]"
        kept = "kept the original" if self.kept_original else "returned the rewritten model"
        return f"{self.model}: {kept} (whole model {whole}); {self.reason}"


def _submodule(model: nn.Module, path: str) -> Optional[nn.Module]:
    try:
        return model.get_submodule(path) if path and "+" not in path else None
    except AttributeError:
        return None


def optimize(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    device: Union[str, torch.device] = "cpu",
    min_run_time: float = 0.2,
    rounds: int = ROUNDS,
    threads: Optional[int] = 1,
    timer: Optional[Timer] = None,
) -> Tuple[nn.Module, OptimizeReport]:
    """The fastest verified form of ``model`` found by per-site timing, or ``model`` itself when that is not
    conclusively faster than the original, timed together in one run (float32, eval mode, no grad).

    Every comparison is timed in ``rounds`` interleaved rounds of ``min_run_time / rounds`` seconds per
    measurement (:mod:`foldconv.surgery.speed`). ``timer(fn, label) -> Sample`` replaces
    :func:`foldconv.surgery.timing.measure` (tests inject timings); labels are ``"<site>: original"``,
    ``"<site>: <rule>"``, ``"model: original"``, ``"model: <site>: <rule>"`` (a site timed in the whole model) and
    ``"model: rewritten"``.

    Args:
        model: the network (``nn.Module``); it is copied, never modified, and returned as is when kept.
        input_shape: the full input shape (ints >= 1) the model is timed and checked on.
        device: where the forms are timed (default ``"cpu"``; a device this machine lacks is a FoldError).
        min_run_time: seconds of timing per measurement, split over the rounds, a number > 0 (default 0.2).
        rounds: interleaved timing rounds, an int >= 1 (default 4).
        threads: torch threads while timing, an int >= 1 (default 1: steady times on a shared machine; None: torch's).
        timer: ``timer(fn, label) -> Sample`` instead of the wall-clock timer (default none).

    Returns:
        ``(best, report)``: the fastest verified model (``model`` itself when kept) and an
        :class:`~foldconv.surgery.fastest.OptimizeReport`: ``kept_original``, ``reason``, ``speedup`` with
        ``speedup_low``/``speedup_high``, ``rules`` (rule and sites applied) and ``sites`` (the forms timed).

    Raises:
        FoldError: naming ``model``, ``input_shape`` (malformed, too large, or the model cannot run on it),
        ``device``, ``min_run_time`` or ``rounds``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU())
        >>> best, report = optimize(net, (1, 3, 8, 8), min_run_time=0.01)
        >>> best is net, report.kept_original
        (True, True)
    """
    original = model
    model, shape = prepare_target(model, input_shape, min_run_time=min_run_time, param="model")
    dev = require_device(device)
    rounds = require_int(rounds, "rounds", 1)
    rules = form_rules()
    if threads is not None:
        require_int(threads, "threads", 1)
    time = timer or (lambda fn, label: measure(fn, label, min_run_time=require_seconds(min_run_time) / rounds, threads=threads))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev)
    run_original = runner(copy.deepcopy(model).to(dev), x)

    by_site: Dict[str, List[Any]] = {}
    for site in find_sites(model, shape, list(rules)):
        if not site.reason:
            by_site.setdefault(site.location, []).append(site)
    inputs = tracing.module_inputs(model, shape, paths=list(by_site))
    timing = _Timing(time, rounds, x, dev, run_original)
    choices = [_choose(model, shape, loc, sites, timing, inputs.get(loc, ())) for loc, sites in by_site.items()]
    chosen: Dict[str, List[str]] = {}
    for c in choices:
        if c.chosen != "original":
            chosen.setdefault(c.chosen, []).append(c.location)
    applied = tuple((rule, tuple(locs)) for rule, locs in chosen.items())
    machine = machine_description(dev, threads)

    def report(kept: bool, reason: str, t: Optional[FormTiming] = None) -> OptimizeReport:
        nums = (t.speedup, t.speedup_low, t.speedup_high) if t is not None else (math.nan,) * 3
        return OptimizeReport(type(original).__name__, shape, str(dev), tuple(choices), () if kept else applied, *nums,
                              kept_original=kept, reason=reason, machine=machine, timing=t)

    if not applied:
        return original, report(True, "no site has a verified form that is conclusively faster than its original")
    at_sites = [(rule, {"at": list(locs)}) for rule, locs in applied]
    new, _ = rewrite(model, shape, at_sites, verify=False)
    # as rewrite checks a whole model: exact where every op is polynomial, else sampled in float64
    check, _ = check_model(model, lambda ref: rewrite(ref, shape, at_sites, verify=False)[0], shape)
    if not check.ok:
        return original, report(True, f"the rewritten model failed verification: {check.summary()}")
    t = _timed_already(choices, applied)
    if t is None:  # a comparison not made yet: the whole model with every chosen site rewritten
        _, [(before, rewritten)] = interleaved(run_original, [("model: rewritten", runner(copy.deepcopy(new).eval().to(dev), x))],
                                               time, rounds=rounds, original_label="model: original")
        if isinstance(rewritten, Exception):
            raise rewritten
        t = FormTiming.from_samples("rewritten", before, rewritten, verified=True, note=check.summary(),
                                    check="exact" if check.exact else "sampled")
    s = t.as_speedup()
    if not s.faster:
        return original, report(True, f"the rewritten model is not conclusively faster than the original: {s.describe()}", t)
    return new.eval(), report(False, f"rewritten at {sum(len(locs) for _, locs in applied)} site(s), verified: {check.summary()}", t)


def _timed_already(choices: Sequence[SiteChoice], applied: Tuple[Tuple[str, Tuple[str, ...]], ...]) -> Optional[FormTiming]:
    """The chosen form's timing when the whole rewritten model is one site's form timed in the whole model already:
    the same comparison, not timed twice (two timings of it would read two different numbers)."""
    if len(applied) != 1 or len(applied[0][1]) != 1:
        return None
    rule, (loc,) = applied[0]
    site = next((c for c in choices if c.location == loc and c.scope == "model"), None)
    chosen = site.choice if site is not None and site.chosen == rule else None
    return dataclasses.replace(chosen, form="rewritten") if chosen is not None and chosen.timed else None


@dataclass(frozen=True)
class _Timing:
    """How one optimize run times: the timer, its rounds, the model's input and the original model's runner."""

    time: Timer
    rounds: int
    x: torch.Tensor
    device: torch.device
    run_model: Any


def _choose(model: nn.Module, shape: Tuple[int, ...], loc: str, sites: Sequence[Any], timing: _Timing,
            calls: Tuple[Tuple[int, ...], ...]) -> SiteChoice:
    """Time every form at one site (its layer alone when the site is that layer, else the whole model) and pick the fastest.

    ``calls``: the input shapes the module at ``loc`` is called with in the model. The site is its layer alone only
    when that module is called once, on the site's own input: a site whose region starts before its module (the
    slices of a Focus, a SpaceToDepth) gives the module another input, and is timed in the whole model."""
    site_shape = tuple(sites[0].input_shape)
    layer = _submodule(model, loc) if calls == (site_shape,) else None
    forms: List[Tuple[str, Optional[nn.Module], str]] = []  # (rule, form at scope or None, note)
    scope = "layer" if layer is not None else "model"
    for site in sites:
        try:
            new, _ = rewrite(model, shape, [(site.rule, {"at": [loc]})], verify=False)
        except FoldError as err:
            forms.append((site.rule, None, str(err)))
            continue
        if scope == "layer":
            replaced = _submodule(new, loc)
            if replaced is not None and _equivalent(layer, replaced, site_shape):
                forms.append((site.rule, replaced, "layer equivalent"))
                continue
            scope = "model"  # this form changes more than the site's module: compare all forms in context
        forms.append((site.rule, new, "model"))
    if scope == "model":
        forms = [(rule, (rewrite(model, shape, [(rule, {"at": [loc]})], verify=False)[0] if note == "layer equivalent" else m), note)
                 for rule, m, note in forms]
    target, target_shape = (layer, site_shape) if scope == "layer" else (model, shape)
    timings: Dict[str, FormTiming] = {}
    runs = []
    prefix = f"{loc}: " if scope == "layer" else f"model: {loc}: "
    xin = torch.randn(target_shape, generator=torch.Generator().manual_seed(1)).to(timing.device) if scope == "layer" else timing.x
    for rule, form, note in forms:
        if form is None:
            timings[rule] = FormTiming.untimed(rule, note)
            continue
        if scope == "layer":
            check = check_equivalence(target, form, target_shape)
        else:  # as rewrite checks a whole model: exact where every op is polynomial, else sampled in float64
            check, _ = check_model(model, lambda ref, rule=rule: rewrite(ref, shape, [(rule, {"at": [loc]})], verify=False)[0], shape)
        if not check.ok:
            timings[rule] = FormTiming.untimed(rule, f"unverified: {check.summary()}")
            continue
        timings[rule] = dataclasses.replace(FormTiming.untimed(rule, check.summary()), check="exact" if check.exact else "sampled")
        runs.append((rule, prefix + rule, runner(copy.deepcopy(form).eval().to(timing.device), xin)))
    original = runner(copy.deepcopy(target).to(timing.device), xin) if scope == "layer" else timing.run_model
    paired = interleaved(original, [(label, run) for _, label, run in runs], timing.time, rounds=timing.rounds,
                         original_label=f"{loc}: original" if scope == "layer" else "model: original")[1] if runs else []
    for (rule, _, _), (anchor, sample) in zip(runs, paired):
        if isinstance(sample, Exception):
            raise sample
        placeholder = timings[rule]
        timings[rule] = FormTiming.from_samples(rule, anchor, sample, verified=True, note=placeholder.note, check=placeholder.check)
    ordered = tuple(timings[rule] for rule, _, _ in forms)
    faster = [t for t in ordered if t.faster]
    best = max(faster, key=lambda t: t.speedup) if faster else None
    reason = f"fastest conclusive form: {best.describe()}" if best else "no verified form is conclusively faster"
    return SiteChoice(loc, site_shape, scope, ordered, best.form if best else "original", reason)


def _equivalent(layer: nn.Module, replaced: nn.Module, shape: Tuple[int, ...]) -> bool:
    """Whether the rewritten module alone equals the original layer on the site's input (not when it cannot run there)."""
    try:
        return check_equivalence(layer, replaced, shape).ok
    except FoldError:
        return False
