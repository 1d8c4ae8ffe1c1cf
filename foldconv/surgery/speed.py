"""Which equivalent form of a layer or a model is fastest here: every form verified first, all timed in one run.

A form is a rewrite: the target (a layer or a model) is taken as a one-module model and each rewrite rule that
applies to it (:func:`foldconv.surgery.rules.form_rules`; the sites are found as :func:`foldconv.surgery.rewrite`
finds them) gives one form, so what a form is lives in the rules alone. A conv also gets its folds (the rule
``fold_stage`` with ``r``), and every target ``channels_last`` and, when asked for, ``torch.compile`` (opt-in:
compiling costs a minute on a small model, far more than timing it).

A form is timed only after :func:`foldconv.check.check_equivalence` has found it equivalent to the original
(a form that is not is reported unverified and never timed); :attr:`FormTiming.check` says how it was verified:
``"exact"`` (for all weights, on random integer weights) or ``"sampled"`` (in float64 on the target's own weights,
when the integer check cannot be exact: a deep model whose integer outputs overflow, a non-polynomial op;
:func:`foldconv.surgery.rewrite.check_model`, the check of a whole rewritten model).

Measurement (:mod:`foldconv.surgery.timing`): per-run times of blocks sized to the callable's own speed, after a
warm-up. The original and each form are timed in interleaved rounds (original, form, original, form, ...,
``rounds`` times, each measurement ``min_run_time / rounds`` seconds long), and each side's runs are pooled over the
rounds: a load from another process that comes and goes during the run then falls on both sides of the comparison
alike instead of inflating one (timed one after the other, one run read channels_last 351x "conclusively" faster
because the original alone was timed under load). A form is compared with the original's runs from its own
rounds, as a speedup ``original median / form median``; its interval ``[original q25 / form q75, original q75 /
form q25]`` is what the pooled quartiles allow, and a result whose interval holds 1.0, or spans more than
:data:`~foldconv.surgery.timing.MAX_SPREAD` (the runs varied more than the forms), is *inconclusive* (identical
runs of one conv on a shared machine have read 0.47x and 1.41x). Every row shows the original's median from the
form's own rounds beside the form's, so the speedup shown is the ratio of the two times shown. The ``original`` row pools all the original's runs.
:func:`foldconv.surgery.optimize` only keeps a rewrite whose interval lies above 1.0. Claims FORMS-1 (only verified
forms are timed) and FORMS-2 (the speedup arithmetic), paper_notes/claims.md.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._tables import markdown_table
from .._validate import CONV_TYPES, require_bool, require_device, require_int
from ..check import EquivalenceReport, check_equivalence
from ..errors import FoldError, first_line, fold_error
from ..specs import ConvSpec
from .rewrite import check_model, rewrite
from .rules import RuleArg, form_rules
from .stage import FoldedStage
from .timing import (
    MIN_RUNS,
    ROUNDS,
    Sample,
    Speedup,
    Timer,
    interleaved,
    machine_description,
    measure,
    prepare_target,
    runner,
    speedup,
)

__all__ = [
    "CHECKS", "MIN_RUNS", "ROUNDS", "TIMED_RTOL", "Sample", "Speedup", "FormTiming", "FormsReport", "measure", "speedup",
    "machine_description", "benchmark_forms", "check_shape",
]

_UNCHECKED = "not verified (verify=False)"
#: How a form was verified (FormTiming.check): for all weights (exact), or on the weights at hand in float64 (sampled).
CHECKS = ("exact", "sampled")
#: Forms that are not rules: a conv's folds (fold r=R), and the memory format and compiler of any target.
_OTHER_FORMS = ("fold", "channels_last", "compile")
FormArg = Union[str, Tuple[str, Callable[[nn.Module], nn.Module]]]


@dataclass(frozen=True)
class FormTiming:
    """One form: its time (seconds) and its speedup over the original with the quartile interval.

    ``verified``: check_equivalence found it equivalent (False with ``verify=False`` too; ``note`` says which);
    ``check``: how (one of :data:`CHECKS`; empty when not verified); ``original_median_s``: the original's median
    over the rounds this form was compared in, so that ``speedup == original_median_s / median_s`` is the ratio of
    the two times shown. A form that could not be built or was not equivalent is not timed: its numbers are NaN.
    """

    form: str
    median_s: float
    iqr_s: float
    speedup: float
    speedup_low: float
    speedup_high: float
    inconclusive: bool
    verified: bool
    note: str = ""
    check: str = ""
    original_median_s: float = math.nan

    @property
    def timed(self) -> bool:
        return not math.isnan(self.median_s)

    def as_speedup(self) -> Speedup:
        """The speedup this timing reads, with its interval (:class:`~foldconv.surgery.timing.Speedup`).

        Example:
            >>> FormTiming("f", 1e-3, 0.0, 2.0, 1.5, 2.5, False, True).as_speedup().faster
            True
        """
        return Speedup(self.speedup, self.speedup_low, self.speedup_high)

    @property
    def faster(self) -> bool:
        """Verified, timed and conclusively faster than the original (:attr:`Speedup.faster`)."""
        return self.verified and self.timed and self.as_speedup().faster

    @classmethod
    def untimed(cls, form: str, note: str) -> FormTiming:
        nan = float("nan")
        return cls(form, nan, nan, nan, nan, nan, False, False, note)

    @classmethod
    def from_samples(cls, form: str, anchor: Sample, sample: Sample, *, verified: bool, note: str = "",
                     check: str = "") -> FormTiming:
        s = speedup(anchor, sample)
        return cls(form, sample.median, sample.iqr, s.value, s.low, s.high, s.inconclusive, verified, note, check, anchor.median)

    def describe(self) -> str:
        """``"1.23x [1.10, 1.35]"`` (speedup over the original and its interval), or why it was not timed."""
        return self.as_speedup().describe() if self.timed else f"not timed: {self.note}"


@dataclass(frozen=True)
class FormsReport:
    """Every form of one target, timed in one run on one machine (:func:`benchmark_forms`)."""

    target: str
    device: str
    input_shape: Tuple[int, ...]
    timings: Tuple[FormTiming, ...]
    machine: str
    seconds: float = math.nan  # the whole call's wall time: building, verifying and timing every form
    rounds: int = ROUNDS
    check_shape: Tuple[int, ...] = ()  # where the forms were checked exactly, when smaller than input_shape
    skipped: Tuple[str, ...] = ()  # forms asked for (r_values) and not tried, each with why

    @property
    def fastest(self) -> FormTiming:
        """The verified form with the largest conclusive speedup; the original when no form is conclusively faster."""
        faster = [t for t in self.timings if t.faster]
        return max(faster, key=lambda t: t.speedup) if faster else self.timings[0]

    def rows(self) -> List[Dict[str, Any]]:
        """One row per form: speedups (original time / form time), never a bare time ratio."""
        return [
            {"form": t.form, "verified": t.verified, "check": t.check, "original median ms": round(t.original_median_s * 1e3, 4),
             "median ms": round(t.median_s * 1e3, 4), "IQR ms": round(t.iqr_s * 1e3, 4), "speedup": round(t.speedup, 3),
             "interval": f"[{t.speedup_low:.2f}, {t.speedup_high:.2f}]" if t.timed else "",
             "inconclusive": t.inconclusive, "note": t.note}
            for t in self.timings
        ]

    def table(self) -> str:
        """The rows as Markdown, headed by the target, device, input shape and machine."""
        head = (f"{self.target} on {self.device}, input {self.input_shape}; machine: {self.machine}; speedup = original "
                f"median ms / median ms, both from the same {self.rounds} interleaved round(s)")
        return head + "\n\n" + markdown_table(self.rows())

    def summary(self) -> str:
        """One line: the fastest verified form (or that none is conclusively faster) with its speedup, then how
        many forms were conclusively faster, slower, inconclusive and not timed, and how long the call took.

        Example:
            >>> t = [FormTiming("original", 2e-3, 0.0, 1.0, 1.0, 1.0, True, True),
            ...      FormTiming("fold r=2", 1e-3, 0.0, 2.0, 1.5, 2.5, False, True)]
            >>> FormsReport("Conv2d", "cpu", (1, 4, 8, 8), tuple(t), "here").summary()
            'Conv2d on cpu, input (1, 4, 8, 8): fastest fold r=2, speedup 2.00x [1.50, 2.50] (higher is faster); of 1 form(s): 1 faster'
        """
        forms = self.timings[1:]
        timed = [t for t in forms if t.timed]
        counts = {
            "faster": sum(t.faster for t in timed),
            "slower": sum(t.speedup_high < 1.0 and not t.inconclusive for t in timed),
            "inconclusive": sum(t.inconclusive for t in timed),
            "not timed": len(forms) - len(timed),
        }
        best = self.fastest
        if best.form == "original":
            head = "no form is conclusively faster than the original"
        else:
            head = f"fastest {best.form}, speedup {best.describe()} (higher is faster)"
        tally = ", ".join(f"{n} {what}" for what, n in counts.items() if n)
        took = "" if math.isnan(self.seconds) else f"; took {self.seconds:.1f} s ({self.rounds} round(s); {self.machine})"
        checked = (f"; forms checked exactly at input {self.check_shape} (covers {self.input_shape}), then once at "
                   f"{self.input_shape} in float32" if self.check_shape and self.check_shape != self.input_shape else "")
        skipped = f"; not tried: {'; '.join(self.skipped)}" if self.skipped else ""
        return f"{self.target} on {self.device}, input {self.input_shape}: {head}; of {len(forms)} form(s): {tally or 'none'}{checked}{skipped}{took}"


@dataclass(frozen=True)
class _Form:
    name: str
    build: Optional[Callable[[nn.Module], nn.Module]]  # None: could not be built (note says why)
    exact: bool = True  # verify with derived(build): every trial resamples the weights
    channels_last: bool = False
    note: str = ""
    rule: Optional[RuleArg] = None  # the rule that builds it (rebuilt at the check's size when that is smaller)
    built: Optional[nn.Module] = None  # what build(target) gave when the rule was tried: built once, not twice

    def at(self, shape: Tuple[int, ...]) -> _Form:
        """The same form built for inputs of ``shape`` (a rule's build reads the input shape it traces with)."""
        if self.rule is None or self.build is None:
            return self
        rule = self.rule
        return dataclasses.replace(self, build=lambda m: _rewritten(m, shape, rule)[0], built=None)


class _ChannelsLast(nn.Module):
    """The module with channels_last parameters, fed channels_last inputs (a no-op copy when already so)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))


def _rewritten(target: nn.Module, shape: Tuple[int, ...], rule: RuleArg) -> Tuple[nn.Module, Any]:
    """``target`` as a one-module model rewritten by ``rule`` (not verified here), and the report; the
    one-module wrapper is taken off again when the rewrite kept it."""
    new, report = rewrite(nn.Sequential(target), shape, [rule], verify=False)
    return (new[0] if isinstance(new, nn.Sequential) and len(new) == 1 else new), report


def _rule_form(name: str, target: nn.Module, shape: Tuple[int, ...], rule: RuleArg) -> Optional[_Form]:
    """The form ``rule`` gives ``target`` (a build that rewrites the weights it is handed), a form that says why
    it cannot be built when the rule finds sites but rewrites none, or None when the rule finds no site."""
    try:
        built, report = _rewritten(copy.deepcopy(target), shape, rule)
    except FoldError as err:
        return _Form(name, None, note=first_line(err))
    sites = report.main_sites
    if not report.applied:
        return _Form(name, None, note="; ".join(sorted({s.reason for s in sites if s.reason})) or "no site applied") if sites else None
    if isinstance(built, FoldedStage) and not built.report.folded_layers:
        return _Form(name, None, note="; ".join(layer.reason for layer in built.report.layers))
    return _Form(name, lambda m: _rewritten(m, shape, rule)[0], rule=rule, built=built)


def _forms(target: nn.Module, shape: Tuple[int, ...], names: Sequence[str], r_values: Sequence[int]) -> List[_Form]:
    forms: List[Optional[_Form]] = []
    if "fold" in names and isinstance(target, CONV_TYPES):
        dims = len(target.kernel_size)
        for r in r_values:
            if target.in_channels % r**dims == 0:
                rule = ("fold_stage", {"stage": "0", "r": r, "fold_bn": False, "cost_neutral_only": False})
                forms.append(_rule_form(f"fold r={r}", target, shape, rule))
    forms += [_rule_form(rule, target, shape, rule) for rule in names if rule not in _OTHER_FORMS]
    return [f for f in forms if f is not None]


def _selected(forms: Optional[Sequence[FormArg]], known: Sequence[str]) -> Tuple[Tuple[str, ...], List[_Form]]:
    if forms is None:
        return tuple(known), []
    if isinstance(forms, (str, bytes)) or not isinstance(forms, Sequence):
        raise fold_error("forms", forms, "must be a sequence of form names or (name, build) pairs")
    names, custom = [], []
    for item in forms:
        if isinstance(item, str) and item in known:
            names.append(item)
        elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and callable(item[1]):
            custom.append(_Form(item[0], item[1]))
        else:
            raise fold_error("forms", item, f"must be one of {tuple(known)} or a (name, build) pair, build(target) -> module")
    return tuple(names), custom


def check_shape(target: nn.Module, input_shape: Sequence[int], r_values: Sequence[int] = ()) -> Tuple[int, ...]:
    """The smallest input shape on which checking a conv's forms proves them at ``input_shape``: batch 1, and per
    spatial axis a size with the same remainder modulo ``L = lcm(stride, *r_values)`` and at least ``2 * (kernel
    extent + padding + L)`` rows. Why it suffices: the conv and every form of it (its folds by each r, space-to-depth,
    channels_last) compute each output from a window of the input and repeat every ``L`` rows, so every output
    row of the larger input meets the same window, borders and position modulo ``L`` as some output row of the
    smaller one. Any other target (a model: a classifier's input size is fixed) keeps ``input_shape``.

    Example:
        >>> check_shape(torch.nn.Conv2d(64, 64, 3, padding=1), (1, 64, 56, 56), [2, 4, 8])
        (1, 64, 24, 24)
        >>> check_shape(torch.nn.Sequential(torch.nn.Conv2d(64, 64, 3)), (1, 64, 56, 56))
        (1, 64, 56, 56)
    """
    shape = tuple(input_shape)
    if not isinstance(target, CONV_TYPES) or len(shape) != len(target.kernel_size) + 2:
        return shape
    spec = ConvSpec.from_module(target)
    sizes = []
    for n, ke, p, st in zip(shape[2:], spec.effective_kernel, spec.padding, spec.stride):
        period = math.lcm(st, *r_values)
        least = 2 * (ke + p + period)
        sizes.append(n if n <= least else least + (n - least) % period)
    return (1, shape[1]) + tuple(sizes)


def _verify(form: _Form, target: nn.Module, built: nn.Module, shape: Tuple[int, ...]) -> Tuple[EquivalenceReport, str]:
    """The check and a note on how it was made. A form built from the target's weights is checked as a rewritten
    model is: for all weights when it can be, else in float64 on the target's own weights (a deep model's integer
    outputs overflow; a bias tied over sub-pixels holds for these weights only)."""
    if form.exact:
        report, how = check_model(target, form.build, shape)
        return report, "" if report.exact or how in report.reason else how
    return check_equivalence(target, built, shape), ""


def benchmark_forms(
    target: nn.Module,
    input_shape: Sequence[int],
    *,
    forms: Optional[Sequence[FormArg]] = None,
    device: Union[str, torch.device] = "cpu",
    r_values: Sequence[int] = range(2, 17),
    channels_last: bool = True,
    compile: Union[bool, str] = False,
    min_run_time: float = 0.1,
    verify: bool = True,
    rounds: int = ROUNDS,
    threads: Optional[int] = 1,
    timer: Optional[Timer] = None,
    verify_size: str = "auto",
) -> FormsReport:
    """Time the original and every verified equivalent form of a layer or a model, in one run, in float32.

    The target, taken as a one-module model, gets one form per rewrite rule that applies to it
    (:func:`~foldconv.surgery.rules.form_rules`: a strided conv ``strided_to_spd`` and, stride 2, ``conv_to_focus``;
    a transposed conv ``transposed_to_subpixel``; a sub-pixel pair ``subpixel_to_transposed``; an SPD pair
    ``spd_to_strided`` and ``focus_to_conv``; a model every rule that rewrites a site of it). A conv also gets
    ``"fold r=R"`` (``DepthToSpace(R)`` then :func:`foldconv.fold_conv`: the rule ``fold_stage``) for every ``R``
    in ``r_values`` with ``R**dims`` dividing its channels. Every target also gets ``channels_last`` (4-D inputs).
    ``torch.compile`` is opt-in (compiling takes far longer than the timing): ``compile="auto"`` or ``forms``
    naming ``"compile"`` adds it with a failure as a note, ``compile=True`` with a failure as a FoldError. ``forms``
    picks form names or adds ``(name, build)`` pairs, ``build(target)`` returning an equivalent module. A form is
    timed only when it is found equivalent: for all weights where the integer check can be exact (every op the
    target runs is polynomial), else sampled in float64 on the target's own weights (:attr:`FormTiming.check`
    says which).
    The original and each form are timed in ``rounds`` interleaved rounds of ``min_run_time / rounds`` seconds
    each (see the module), on ``threads`` threads (default one, as benchmarks/ times: on a machine shared with other
    jobs one thread gives far steadier times). The default call is bounded: about ``2 * min_run_time`` (0.2 s) of
    timing per form plus building and verifying it; :meth:`FormsReport.summary` says how long the call took. ``timer(fn, label) -> Sample`` replaces :func:`measure` (tests
    inject timings).

    Args:
        target: a layer or a model (``nn.Module``); it is copied, never modified.
        input_shape: the full input shape (ints >= 1) the forms are timed on.
        forms: form names to keep and/or ``(name, build)`` pairs to add (default: every form that applies).
        device: where the forms are timed (default ``"cpu"``; a device this machine lacks is a FoldError).
        r_values: fold factors to try on a conv, each an int >= 2 (default 2 to 16).
        channels_last: time the ``channels_last`` form (default True).
        compile: time ``torch.compile``: False (default), True, or ``"auto"`` (a failure becomes a note).
        min_run_time: seconds of timing per measurement, split over the rounds, a number > 0 (default 0.1).
        verify: time a form only when it is found equivalent (default True).
        rounds: interleaved timing rounds, an int >= 1 (default 4).
        threads: torch threads while timing, an int >= 1 (default 1: steady times on a shared machine; None: torch's
            own setting).
        timer: ``timer(fn, label) -> Sample`` instead of the wall-clock timer (default none).
        verify_size: ``"auto"`` (default): a conv's rule forms and channels_last are checked exactly at
            :func:`check_shape` (batch 1, each spatial size cut to the least that covers the timed one), then compared
            once at ``input_shape`` in float32; ``"full"``: checked at ``input_shape``.

    Returns:
        A :class:`FormsReport`: ``timings`` (per form ``speedup`` with ``speedup_low``/``speedup_high``,
        ``verified``, ``check``, ``note``; the original first), ``fastest`` and ``rows()``.

    Raises:
        FoldError: naming ``target``, ``input_shape`` (malformed, too large, or the target cannot run on it),
        ``forms``, ``device``, ``r_values``, ``channels_last``, ``compile``, ``min_run_time``, ``verify`` or ``rounds``.

    Example:
        >>> report = benchmark_forms(torch.nn.Conv2d(4, 4, 3, padding=1), (1, 4, 8, 8), r_values=[2], min_run_time=0.01)
        >>> [(t.form, t.verified) for t in report.timings]
        [('original', True), ('fold r=2', True), ('channels_last', True)]
    """
    started = time.perf_counter()
    target, shape = prepare_target(target, input_shape, min_run_time=min_run_time)
    dev = require_device(device)
    verify = require_bool(verify, "verify")
    require_bool(channels_last, "channels_last")
    if compile not in (True, False, "auto"):
        raise fold_error("compile", compile, "must be True, False or 'auto'")
    if verify_size not in ("auto", "full"):
        raise fold_error("verify_size", verify_size, "must be 'auto' (a conv's forms checked at check_shape) or 'full'")
    r_list = [require_int(r, "r_values", 2) for r in r_values]
    names, custom = _selected(forms, ("fold",) + form_rules() + ("channels_last", "compile"))
    built_forms = _forms(target, shape, names, r_list)
    if channels_last and "channels_last" in names:
        built_forms.append(_Form("channels_last", _ChannelsLast, channels_last=True) if len(shape) == 4
                           else _Form("channels_last", None, note=f"needs a 4-D input, not {shape}"))
    if "compile" in names and (compile is not False or "compile" in (forms or ())):
        built_forms.append(_Form("compile", lambda m: torch.compile(copy.deepcopy(m)), exact=False))
    built_forms += custom
    rounds = require_int(rounds, "rounds", 1)
    if threads is not None:
        require_int(threads, "threads", 1)
    clock = timer or (lambda fn, label: measure(fn, label, min_run_time=min_run_time / rounds, threads=threads))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev)
    # Every form is built and verified before anything is timed, so that the timings sit close together; a conv's
    # forms are checked at the smallest input that covers the timed one (the check, not the timing, grows with size).
    folds = [r for r in r_list if "fold" in names and isinstance(target, CONV_TYPES) and target.in_channels % r ** len(target.kernel_size) == 0]
    small = check_shape(target, shape, folds) if verify_size == "auto" else shape
    prepared = [_prepare(form, target, shape, verify=verify, strict=compile is True, small=small) for form in built_forms]
    runnable = [(form, built) for form, (built, _) in zip(built_forms, prepared) if built is not None]
    runs = [(form.name, runner(built.to(dev).eval(), x.contiguous(memory_format=torch.channels_last) if form.channels_last else x))
            for form, built in runnable]
    anchor, paired = interleaved(runner(copy.deepcopy(target).to(dev), x), runs, clock, rounds=rounds)
    by_form = {id(form): pair for (form, _), pair in zip(runnable, paired)}
    timings = [FormTiming.from_samples("original", anchor, anchor, verified=True,
                                       note=f"the anchor, timed before each form in {rounds} interleaved round(s)")]
    for form, (_, placeholder) in zip(built_forms, prepared):
        if id(form) not in by_form:
            timings.append(placeholder)
            continue
        own_anchor, result = by_form[id(form)]
        if isinstance(result, Exception):
            timings.append(_compile_failure(form, result, compile is True))
            continue
        timings.append(FormTiming.from_samples(form.name, own_anchor, result, verified=placeholder.note != _UNCHECKED,
                                               note=placeholder.note, check=placeholder.check))
    skipped = ()
    if "fold" in names and isinstance(target, CONV_TYPES) and len(folds) < len(r_list):
        dims = len(target.kernel_size)
        skipped = (f"fold r={', '.join(str(r) for r in r_list if r not in folds)}: r**{dims} does not divide the "
                   f"{target.in_channels} input channels",)
    return FormsReport(_describe(target), str(dev), shape, tuple(timings), machine_description(dev, threads),
                       seconds=time.perf_counter() - started, rounds=rounds, check_shape=small, skipped=skipped)


def _describe(module: nn.Module) -> str:
    text = repr(module)
    return text if "\n" not in text and len(text) < 120 else type(module).__name__


def _compile_failure(form: _Form, err: Exception, strict: bool) -> FormTiming:
    """torch.compile fails in every exception type: a note under compile="auto", a FoldError under True."""
    if form.name != "compile" or isinstance(err, FoldError):
        raise err
    if strict:
        raise fold_error("compile", True, f"torch.compile failed here: {first_line(err)}") from None
    return FormTiming.untimed("compile", f"torch.compile failed here: {type(err).__name__}: {first_line(err)[:200]}")


#: Largest relative error (over the largest output) of a form against the original at the timed size, in float32,
#: when the form's check ran at a smaller size (:func:`check_shape`).
TIMED_RTOL = 1e-4


def _prepare(form: _Form, target: nn.Module, shape: Tuple[int, ...], *, verify: bool, strict: bool,
             small: Optional[Tuple[int, ...]] = None) -> Tuple[Optional[nn.Module], FormTiming]:
    """The built form and a placeholder result (its note and check), or None and the reason it will not be timed.
    With ``small`` (a smaller shape from :func:`check_shape`), a rule's form or channels_last is checked there and
    the module built for ``shape`` is compared with the target at ``shape`` once, in float32."""
    if form.build is None:
        return None, FormTiming.untimed(form.name, form.note)
    reduced = small is not None and small != shape and (form.rule is not None or form.channels_last)
    try:
        built = form.built if form.built is not None else form.build(copy.deepcopy(target))
        if not verify:
            return built, FormTiming.untimed(form.name, _UNCHECKED)
        if reduced:  # rule forms and channels_last are checked with derived(build): ``built`` is not what is compared
            report, how = _verify(form.at(small), target, built, small)
        else:
            report, how = _verify(form, target, built, shape)
    except Exception as err:  # noqa: BLE001
        return None, _compile_failure(form, err, strict)
    if not report.ok:
        return None, FormTiming.untimed(form.name, f"unverified: {report.summary()}")
    note = report.summary() + (f" ({how})" if how else "")
    if reduced:
        x = torch.randn(shape, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            want, got = target(x), built.eval()(x.contiguous(memory_format=torch.channels_last) if form.channels_last else x)
        error = float((got - want).abs().max() / want.abs().max().clamp_min(1e-30)) if got.shape == want.shape else math.inf
        if not error <= TIMED_RTOL:
            return None, FormTiming.untimed(form.name, f"unverified: at the timed input {shape} its float32 output differs "
                                                       f"from the original's by {error:.1e} of the largest output (> {TIMED_RTOL:g})")
        note = (f"{note}; checked at input {small} (covers {shape}: check_shape), and at {shape} in float32 "
                f"(relative error {error:.1e})")
    return built, dataclasses.replace(FormTiming.untimed(form.name, note), check="exact" if report.exact else "sampled")
