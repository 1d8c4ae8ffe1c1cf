"""Which equivalent form of a layer or a model is fastest here: every form verified first, all timed in one run.

A form is timed only after :func:`foldconv.check.check_equivalence` has found it equivalent to the original
(a form that is not is reported unverified and never timed); :attr:`FormTiming.check` says how it was verified:
``"exact"`` (for all weights, on random integer weights) or ``"sampled"`` (in float64 on the target's own weights,
when the integer check cannot be exact: a deep model whose integer outputs overflow, a non-polynomial op;
:func:`foldconv.surgery.rewrite.check_model`, the check of a whole rewritten model).

Measurement (:mod:`foldconv.surgery.timing`): per-run times from ``torch.utils.benchmark.Timer.blocked_autorange``
after a warm-up. The original and each form are timed in interleaved rounds (original, form, original, form, ...,
``rounds`` times, each measurement ``min_run_time / rounds`` seconds long), and each side's runs are pooled over the
rounds: a load from another process that comes and goes during the run then falls on both sides of the comparison
alike instead of inflating one (timed one after the other, one run read channels_last 351x "conclusively" faster
because the original alone was timed under load). A form is compared with the original's runs from its own
rounds, as a speedup ``original median / form median``; its interval ``[original q25 / form q75, original q75 /
form q25]`` is what the pooled quartiles allow, and a result whose interval holds 1.0 is *inconclusive* (identical
runs of one conv on a shared machine have read 0.47x and 1.41x). The ``original`` row pools all the original's runs.
:func:`foldconv.surgery.optimize` only keeps a rewrite whose interval lies above 1.0. Claims FORMS-1 (only verified
forms are timed) and FORMS-2 (the speedup arithmetic), paper_notes/claims.md.
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .._tables import markdown_table
from .._validate import CONV_TRANSPOSE_TYPES, CONV_TYPES, check_bool, check_device, check_int
from ..check import EquivalenceReport, check_equivalence
from ..equivalences import SubPixelConv, spd_to_strided, strided_to_spd, subpixel_to_transposed, transposed_to_subpixel
from ..errors import FoldError, fold_error
from ..fold import fold_conv
from ..layout import DepthToSpace, layout_module
from .rewrite import check_model
from .timing import MIN_RUNS, ROUNDS, Sample, Speedup, Timer, check_seconds, interleaved, machine_description, measure, speedup

__all__ = [
    "CHECKS", "FORM_NAMES", "MIN_RUNS", "ROUNDS", "Sample", "Speedup", "FormTiming", "FormsReport",
    "measure", "speedup", "machine_description", "is_layer", "benchmark_forms",
]

#: Forms of a single layer; a model's forms are the rewrite rules (foldconv.surgery.RULE_NAMES) that apply to it.
FORM_NAMES = ("fold", "strided_to_spd", "spd_to_strided", "transposed_to_subpixel", "subpixel_to_transposed", "channels_last", "compile")
_UNCHECKED = "not verified (verify=False)"
#: How a form was verified (FormTiming.check): for all weights (exact), or on the weights at hand in float64 (sampled).
CHECKS = ("exact", "sampled")
_STAGE_RULES = ("fold_stage", "unfold_stage")  # need a stage and r: pass them as custom (name, build) forms
FormArg = Union[str, Tuple[str, Callable[[nn.Module], nn.Module]]]


@dataclass(frozen=True)
class FormTiming:
    """One form: its time (seconds) and its speedup over the original with the quartile interval.

    ``verified``: check_equivalence found it equivalent (False with ``verify=False`` too; ``note`` says which);
    ``check``: how (one of :data:`CHECKS`; empty when not verified). A form that could not be built or was not
    equivalent is not timed: its numbers are NaN.
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

    @property
    def timed(self) -> bool:
        return not math.isnan(self.median_s)

    @classmethod
    def untimed(cls, form: str, note: str) -> FormTiming:
        nan = float("nan")
        return cls(form, nan, nan, nan, nan, nan, False, False, note)

    @classmethod
    def from_samples(cls, form: str, anchor: Sample, sample: Sample, *, verified: bool, note: str = "",
                     check: str = "") -> FormTiming:
        s = speedup(anchor, sample)
        return cls(form, sample.median, sample.iqr, s.value, s.low, s.high, s.inconclusive, verified, note, check)

    def describe(self) -> str:
        """``"1.23x [1.10, 1.35]"`` (speedup over the original and its interval), or why it was not timed."""
        return Speedup(self.speedup, self.speedup_low, self.speedup_high).describe() if self.timed else f"not timed: {self.note}"


@dataclass(frozen=True)
class FormsReport:
    """Every form of one target, timed in one run on one machine (:func:`benchmark_forms`)."""

    target: str
    device: str
    input_shape: Tuple[int, ...]
    timings: Tuple[FormTiming, ...]
    machine: str

    @property
    def fastest(self) -> FormTiming:
        """The verified form with the largest conclusive speedup; the original when no form is conclusively faster."""
        faster = [t for t in self.timings if t.verified and t.timed and t.speedup_low > 1.0]
        return max(faster, key=lambda t: t.speedup) if faster else self.timings[0]

    def rows(self) -> List[Dict[str, Any]]:
        """One row per form: speedups (original time / form time), never a bare time ratio."""
        return [
            {"form": t.form, "verified": t.verified, "check": t.check, "median ms": round(t.median_s * 1e3, 4),
             "IQR ms": round(t.iqr_s * 1e3, 4), "speedup": round(t.speedup, 3),
             "interval": f"[{t.speedup_low:.2f}, {t.speedup_high:.2f}]" if t.timed else "",
             "inconclusive": t.inconclusive, "note": t.note}
            for t in self.timings
        ]

    def table(self) -> str:
        """The rows as Markdown, headed by the target, device, input shape and machine."""
        head = f"{self.target} on {self.device}, input {self.input_shape}; machine: {self.machine}"
        return head + "\n\n" + markdown_table(self.rows())


@dataclass(frozen=True)
class _Form:
    name: str
    build: Optional[Callable[[nn.Module], nn.Module]]  # None: could not be built (note says why)
    exact: bool = True  # verify with derived(build): every trial resamples the weights
    channels_last: bool = False
    note: str = ""


class _ChannelsLast(nn.Module):
    """The module with channels_last parameters, fed channels_last inputs (a no-op copy when already so)."""

    def __init__(self, module: nn.Module):
        super().__init__()
        self.module = module.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.contiguous(memory_format=torch.channels_last))


def _normalized(target: nn.Module) -> nn.Module:
    """nn.Pixel(Un)Shuffle / timm layouts inside a two-layer Sequential as foldconv's modules (the same map)."""
    if isinstance(target, nn.Sequential) and len(target) == 2:
        layouts = [layout_module(m) for m in target]
        return nn.Sequential(*(lay.as_module() if lay is not None else m for m, lay in zip(target, layouts)))
    return target


def _is_spd(target: nn.Module) -> bool:
    lay = layout_module(target[0]) if isinstance(target, nn.Sequential) and len(target) == 2 else None
    return lay is not None and lay.kind == "space_to_depth" and isinstance(target[1], CONV_TYPES)


def _is_subpixel(target: nn.Module) -> bool:
    if isinstance(target, SubPixelConv):
        return True
    lay = layout_module(target[1]) if isinstance(target, nn.Sequential) and len(target) == 2 else None
    return lay is not None and lay.kind == "depth_to_space" and isinstance(target[0], CONV_TYPES)


def is_layer(target: nn.Module) -> bool:
    """Whether :func:`benchmark_forms` treats ``target`` as one layer (a conv, transposed conv, SPD or sub-pixel pair)."""
    return isinstance(target, CONV_TYPES + CONV_TRANSPOSE_TYPES) or _is_spd(target) or _is_subpixel(target)


def _try(name: str, build: Callable[[nn.Module], nn.Module], target: nn.Module, **kw: Any) -> _Form:
    try:
        build(copy.deepcopy(target))
    except FoldError as err:
        return _Form(name, None, note=str(err))
    return _Form(name, build, **kw)


def _layer_forms(target: nn.Module, r_values: Sequence[int]) -> List[_Form]:
    forms: List[_Form] = []
    if isinstance(target, CONV_TYPES):
        dims = len(target.kernel_size)
        for r in r_values:
            if target.in_channels % r**dims == 0:
                forms.append(_try(f"fold r={r}", lambda m, r=r: nn.Sequential(DepthToSpace(r, dims=dims), fold_conv(m, r)), target))
        if any(s > 1 for s in target.stride):
            forms.append(_try("strided_to_spd", strided_to_spd, target))
    elif isinstance(target, CONV_TRANSPOSE_TYPES):
        forms.append(_try("transposed_to_subpixel", transposed_to_subpixel, target))
    elif _is_spd(target):
        forms.append(_try("spd_to_strided", lambda m: spd_to_strided(_normalized(m)), target))
    elif _is_subpixel(target):
        forms.append(_try("subpixel_to_transposed", lambda m: subpixel_to_transposed(_normalized(m)), target))
    return forms


def _model_forms(target: nn.Module, input_shape: Tuple[int, ...], names: Sequence[str]) -> List[_Form]:
    from . import rewrite  # A's API; imported here so that speed.py never depends on the import order of the package

    forms = []
    for rule in names:
        new, report = rewrite(target, input_shape, [rule], verify=False)
        if report.applied:
            forms.append(_Form(rule, lambda m, new=new: new, exact=False))
        elif report.sites:
            forms.append(_Form(rule, None, note="; ".join(sorted({s.reason for s in report.sites if s.reason})) or "no site applied"))
    return forms


def _validated(target: Any, example_input_shape: Any, min_run_time: Any, param: str = "target") -> Tuple[nn.Module, Tuple[int, ...]]:
    """An eval-mode copy of ``target`` (the caller's module is never touched: channels_last converts in place,
    a train-mode BatchNorm would update its statistics) and the validated shape it runs on."""
    if not isinstance(target, nn.Module):
        raise fold_error(param, type(target).__name__, "must be an nn.Module (a layer or a model)")
    if isinstance(example_input_shape, (str, bytes)) or not isinstance(example_input_shape, Sequence) or not example_input_shape:
        raise fold_error("example_input_shape", example_input_shape, "must be a full input shape such as (1, 3, 224, 224)")
    shape = tuple(check_int(s, "example_input_shape", 1) for s in example_input_shape)
    check_seconds(min_run_time)
    target = copy.deepcopy(target).eval()
    try:
        with torch.no_grad():
            target(torch.zeros(shape))
    except (RuntimeError, ValueError, IndexError) as err:
        raise fold_error("example_input_shape", shape, f"the {param} cannot run on it: {_first_line(err)}") from None
    return target, shape


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


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
    example_input_shape: Sequence[int],
    *,
    forms: Optional[Sequence[FormArg]] = None,
    device: Union[str, torch.device] = "cpu",
    r_values: Sequence[int] = range(2, 17),
    channels_last: bool = True,
    compile: Union[bool, str] = "auto",
    min_run_time: float = 0.2,
    verify: bool = True,
    rounds: int = ROUNDS,
    timer: Optional[Timer] = None,
) -> FormsReport:
    """Time the original and every verified equivalent form of a layer or a model, in one run, in float32.

    A conv gets ``"fold r=R"`` (``DepthToSpace(R)`` then :func:`foldconv.fold_conv`) for every ``R`` in
    ``r_values`` with ``R**dims`` dividing its channels, and ``strided_to_spd`` when strided; a transposed conv
    ``transposed_to_subpixel``; a sub-pixel pair ``subpixel_to_transposed``; an SPD pair ``spd_to_strided``; any
    other module the rewrite rules that apply to it. Every target also gets ``channels_last`` (4-D inputs) and
    ``compile`` (``torch.compile``; ``"auto"``: a failure becomes a note, ``True``: a FoldError). ``forms`` picks
    form names or adds ``(name, build)`` pairs, ``build(target)`` returning an equivalent module. A form is timed
    only when it is found equivalent: for all weights where the integer check can be exact (the layer forms, a
    custom form), else sampled in float64 on the target's own weights (:attr:`FormTiming.check` says which).
    The original and each form are timed in ``rounds`` interleaved rounds of ``min_run_time / rounds`` seconds
    each (see the module). ``timer(fn, label) -> Sample`` replaces :func:`measure` (tests inject timings).

    Example:
        >>> report = benchmark_forms(torch.nn.Conv2d(4, 4, 3, padding=1), (1, 4, 8, 8), r_values=[2],
        ...                          compile=False, min_run_time=0.01)
        >>> [(t.form, t.verified) for t in report.timings]
        [('original', True), ('fold r=2', True), ('channels_last', True)]
    """
    target, shape = _validated(target, example_input_shape, min_run_time)
    dev = check_device(device)
    verify = check_bool(verify, "verify")
    check_bool(channels_last, "channels_last")
    if compile not in (True, False, "auto"):
        raise fold_error("compile", compile, "must be True, False or 'auto'")
    r_list = [check_int(r, "r_values", 2) for r in r_values]
    layer = is_layer(target)
    if not layer:
        from . import RULE_NAMES

        known: Sequence[str] = tuple(n for n in RULE_NAMES if n not in _STAGE_RULES) + ("channels_last", "compile")
    else:
        known = FORM_NAMES
    names, custom = _selected(forms, known)
    built_forms = _layer_forms(target, r_list) if layer else _model_forms(target, shape, [n for n in names if n in known[:-2]])
    if layer:
        built_forms = [f for f in built_forms if f.name.split(" ")[0] in names]
    if channels_last and "channels_last" in names:
        built_forms.append(_Form("channels_last", _ChannelsLast, exact=layer, channels_last=True) if len(shape) == 4
                           else _Form("channels_last", None, note=f"needs a 4-D input, not {shape}"))
    if compile is not False and "compile" in names:
        built_forms.append(_Form("compile", lambda m: torch.compile(copy.deepcopy(m)), exact=False))
    built_forms += custom
    rounds = check_int(rounds, "rounds", 1)
    time = timer or (lambda fn, label: measure(fn, label, min_run_time=min_run_time / rounds))
    x = torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dev)
    # Every form is built and verified before anything is timed, so that the timings sit close together.
    prepared = [_prepare(form, target, shape, verify=verify, strict=compile is True) for form in built_forms]
    runnable = [(form, built) for form, (built, _) in zip(built_forms, prepared) if built is not None]
    runs = [(form.name, _runner(built.to(dev).eval(), x.contiguous(memory_format=torch.channels_last) if form.channels_last else x))
            for form, built in runnable]
    anchor, paired = interleaved(_runner(copy.deepcopy(target).to(dev), x), runs, time, rounds=rounds)
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
    return FormsReport(_describe(target), str(dev), shape, tuple(timings), machine_description(dev))


def _describe(module: nn.Module) -> str:
    text = repr(module)
    return text if "\n" not in text and len(text) < 120 else type(module).__name__


def _runner(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    def run() -> object:
        with torch.no_grad():
            return module(x)

    return run


def _compile_failure(form: _Form, err: Exception, strict: bool) -> FormTiming:
    """torch.compile fails in every exception type: a note under compile="auto", a FoldError under True."""
    if form.name != "compile" or isinstance(err, FoldError):
        raise err
    if strict:
        raise fold_error("compile", True, f"torch.compile failed here: {_first_line(err)}") from None
    return FormTiming.untimed("compile", f"torch.compile failed here: {type(err).__name__}: {_first_line(err)[:200]}")


def _prepare(form: _Form, target: nn.Module, shape: Tuple[int, ...], *, verify: bool, strict: bool) -> Tuple[Optional[nn.Module], FormTiming]:
    """The built form and a placeholder result (its note and check), or None and the reason it will not be timed."""
    if form.build is None:
        return None, FormTiming.untimed(form.name, form.note)
    try:
        built = form.build(copy.deepcopy(target))
        if not verify:
            return built, FormTiming.untimed(form.name, _UNCHECKED)
        report, how = _verify(form, target, built, shape)
    except Exception as err:  # noqa: BLE001
        return None, _compile_failure(form, err, strict)
    if not report.ok:
        return None, FormTiming.untimed(form.name, f"unverified: {report.summary()}")
    note = report.summary() + (f" ({how})" if how else "")
    return built, dataclasses.replace(FormTiming.untimed(form.name, note), check="exact" if report.exact else "sampled")
