"""Decide whether two computations are the same map: exactly when they are polynomial, by sampling otherwise.

The exact verdict is computed on *captured records* (:mod:`foldconv.capture`): each side — the reference, and the
candidate with its ``input_transform``/``output_transform`` and, for a :func:`derived` candidate, the build that
makes it from the reference's weights — is run once on fake tensors and recorded as a closed list of aten
operations. A record may claim exactness only when :func:`foldconv.check.ops.audit` admits it: every operation on a
value computed from the random draws is on the polynomial allow-list (convolutions, matrix products, sums,
layout and padding ops) with every dtype argument, ``out=`` target and result float64. Each trial draws random
*integer-valued* float64 inputs (and, for a derived candidate, weights) in ``[-exact_range, exact_range]``,
evaluates both records on them — nothing outside the records can influence these values — checking that every
audited operation computes on float64 integers (:func:`foldconv.check.ops.exactness_issue`), runs both sides
for real on the same draws to confirm that each record reproduces its side exactly, and compares the records'
outputs with ``torch.equal``: float64 arithmetic on these integers is exact while sums stay below ``2**53``. If
the two sides differ, the difference of some output coordinate is a non-zero polynomial of total degree ``D`` in
the draws, each uniform over ``N = 2*exact_range + 1`` values; by the Schwartz–Zippel lemma ``trials``
independent trials all miss it with probability at most ``(D/N)**trials``. ``D`` is tracked by the audit (1 for
fixed weights, 2 for one conv whose weights are resampled, ``L + 1`` for ``L`` stacked layers), or ``degree=``
if larger. The defaults give a bound below 1e-9.

Otherwise (an operation off the list or narrowing, a record that cannot be captured or does not reproduce its
side, outputs that are not integers, parameters that are real-valued and not ``derived``) the verdict is
*sampled*: the same integer draws plus one unit-normal draw, run for real and compared with a relative
tolerance ``rtol``; ``exact`` is False, no bound is given and ``reason`` says why in the function's terms.
paper_notes/checker.md states the whole contract.

Each side gets its own copy of every input and its outputs are copied as soon as it returns, so a side that
modifies its input (``nn.ReLU(inplace=True)``) or returns an alias cannot make the comparison vacuous.
"""
from __future__ import annotations

import copy
import functools
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from .. import tracing
from .._validate import per_axis_ints, require_allocation, require_int, require_numel
from ..capture import CaptureError, Record, capture
from ..errors import FoldError, first_line, fold_error
from .exact import (
    EXACT_RANGE,
    WEAKEST_BOUND,
    false_equivalent_bound,
    first_mismatch,
    integer_valued,
    integers,
    max_abs,
    relative_error,
    within_exact_limit,
)
from .ops import Audit, OpRecorder, audit, exactness_issue
from .options import MAX_TRIALS, CheckOptions, as_float_dtype, dtype_name, no_tf32, validate_options
from .report import EquivalenceReport, ErrorStats
from .structural import check_plain_fold, plain_conv
from .verdict import Verdict

__all__ = ["Derived", "derived", "check_equivalence", "check_fold", "no_tf32", "as_float_dtype", "MAX_TRIALS"]

Fn = Callable[[torch.Tensor], torch.Tensor]
_CHECK_FOLD_OPTIONS = ("dtypes", "trials", "exact_range", "degree", "rtol", "seed", "device")
_SAMPLED = "integer arithmetic proves nothing (sampled verdict, no bound)"


@dataclass(frozen=True)
class Derived:
    """A candidate built from the reference module (see :func:`derived`)."""

    build: Callable[[nn.Module], Fn]


def derived(build: Callable[[nn.Module], Fn]) -> Derived:
    """Mark a candidate as a function of the reference module, so the exact check can resample weights.

    With a derived candidate every exact trial draws fresh integer weights for the reference and evaluates the
    captured build on them: the verdict then holds for all weights, not just the given ones.

    Args:
        build: a callable taking the reference module (a float64 copy with the trial's weights) and returning
            the candidate.

    Returns:
        A :class:`Derived` to pass as ``candidate`` to :func:`check_equivalence`.

    Raises:
        FoldError: naming ``build`` when it is not callable.

    Example:
        >>> from foldconv import fold_conv, depth_to_space
        >>> conv = torch.nn.Conv2d(16, 4, 3)
        >>> r = check_equivalence(conv, derived(lambda m: fold_conv(m, 4)), (1, 16, 6, 6),
        ...                       input_transform=lambda x: depth_to_space(x, 4))
        >>> r.verdict.value
        'equivalent'
    """
    if not callable(build):
        raise fold_error("build", type(build).__name__, "must be a callable taking the reference module")
    return Derived(build)


def _validated_shape(input_shape: Any) -> Tuple[int, ...]:
    if isinstance(input_shape, (str, bytes, torch.Tensor)) or not isinstance(input_shape, Sequence):
        raise fold_error("input_shape", input_shape, "must be a sequence of integer sizes, e.g. (1, 4, 8, 8)")
    if not input_shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in input_shape):
        raise fold_error("input_shape", tuple(input_shape), "must be non-empty with every size an integer >= 1")
    return tuple(int(s) for s in input_shape)


def _optional_callable(value: Any, param: str) -> None:
    if value is not None and not callable(value):
        raise fold_error(param, type(value).__name__, "must be a callable or None")


def _is_random(op_name: str) -> bool:
    """Is ``"aten.rand"`` (an op's recorded name) an op that draws random numbers?"""
    namespace, _, name = op_name.partition(".")
    packet = getattr(getattr(torch.ops, namespace, None), name.split(".")[0], None)
    overload = getattr(packet, "default", None) or next((getattr(packet, o) for o in getattr(packet, "overloads", list)()), None)
    return torch.Tag.nondeterministic_seeded in getattr(overload, "tags", ())


def _require_checkable(module: Any, param: str) -> None:
    """A module the float64 check can copy: real tensors that hold values (complex ones would lose their
    imaginary parts in the float64 copy; meta ones hold nothing to compute with)."""
    if not isinstance(module, nn.Module):
        return
    for name, t in list(module.named_parameters()) + list(module.named_buffers()):
        if t.is_complex():
            raise fold_error(param, type(module).__name__, f"has a complex tensor ({name}: {t.dtype}); the check computes in "
                             "float64 and would drop its imaginary part: check the real and imaginary parts as real modules")
        if t.is_meta:
            raise fold_error(param, type(module).__name__, f"is on the meta device ({name}): it holds no values to check; "
                             "build it on a real device (e.g. foldconv.build_model(..., meta=False))")


def _as_dtype(fn: Any, dtype: torch.dtype, device: Union[str, torch.device]) -> Any:
    """A module copy in ``dtype`` on ``device`` (never the caller's module); callables unchanged."""
    if isinstance(fn, nn.Module):
        return copy.deepcopy(fn).to(device=device, dtype=dtype)
    return fn


def _needs_cast(module: nn.Module, dtype: torch.dtype, device: torch.device) -> bool:
    tensors = list(module.parameters()) + list(module.buffers())
    return any((t.is_floating_point() and t.dtype != dtype) or t.device.type != device.type for t in tensors)


def _build(candidate: Derived, reference: nn.Module, dtype: torch.dtype, device: torch.device, *, fresh: bool = False) -> Any:
    """The candidate built from ``reference`` (a copy of it, unless ``fresh``), in ``dtype`` on ``device``."""
    built = candidate.build(reference if fresh else copy.deepcopy(reference))
    if not callable(built):
        raise fold_error("candidate", type(built).__name__, "derived(build): build must return a callable (a module)")
    if isinstance(built, nn.Module) and _needs_cast(built, dtype, device):
        built = built.to(device=device, dtype=dtype)
    return built


def _floating_params(module: Any) -> List[nn.Parameter]:
    """The parameters a derived check resamples: every floating one, each tied parameter once, in order."""
    return [p for p in module.parameters() if p.is_floating_point()] if isinstance(module, nn.Module) else []


def _with_params(module: nn.Module, values: Sequence[torch.Tensor]) -> nn.Module:
    """``module`` with its floating parameters replaced by ``values`` (tied parameters stay tied)."""
    replacement = {id(p): nn.Parameter(v, requires_grad=False) for p, v in zip(_floating_params(module), values)}
    for owner in module.modules():
        for name, p in list(owner._parameters.items()):
            if p is not None and id(p) in replacement:
                owner._parameters[name] = replacement[id(p)]
    return module


def _randomized(reference: nn.Module, values: Sequence[torch.Tensor]) -> nn.Module:
    """A copy of ``reference`` whose floating parameters hold ``values``."""
    module = copy.deepcopy(reference)
    for p, v in zip(_floating_params(module), values):
        p.copy_(v)
    return module


def _integer_params(module: Any) -> bool:
    if not isinstance(module, nn.Module):
        return True
    return all(integer_valued(t) for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point() and t.numel())


def _call(side: str, fn: Any, x: torch.Tensor, transform: Optional[Fn], out_transform: Optional[Fn], shape: Tuple[int, ...]) -> torch.Tensor:
    """Run one side on its own copy of ``x``; torch's refusals become FoldErrors naming what was wrong."""
    x = x.clone()
    step, culprit = "input_transform", transform
    try:
        if transform is not None:
            x = transform(x)
        step, culprit = side, fn
        y = fn(x)
        if out_transform is not None:
            step, culprit = "output_transform", out_transform
            y = out_transform(y)
    except FoldError:
        raise
    except (RuntimeError, IndexError) as err:
        if step == "reference":
            raise fold_error("input_shape", shape, f"the reference cannot run on it: {first_line(err)}") from err
        name = getattr(culprit, "__qualname__", type(culprit).__name__)
        raise fold_error(step, name, f"cannot run on an input of input_shape={shape}: {first_line(err)}") from err
    if not isinstance(y, torch.Tensor):
        raise fold_error(step, type(y).__name__, "must return a tensor")
    if y.is_complex():
        raise fold_error(step, str(y.dtype), "must return a real tensor (complex outputs are not compared)")
    if not y.is_floating_point():
        return y.to(torch.float64)  # bool and integer outputs are compared as numbers
    return y.clone()  # nothing run later (the other side, a later trial) can change this output


def _state(fn: Any) -> Tuple[Tuple[torch.Tensor, torch.Tensor], ...]:
    """(tensor, saved copy) for every parameter and buffer of a module side; () for a plain callable."""
    if not isinstance(fn, nn.Module):
        return ()
    return tuple((t, t.detach().clone()) for t in list(fn.parameters()) + list(fn.buffers()))


def _restore(state: Tuple[Tuple[torch.Tensor, torch.Tensor], ...]) -> bool:
    """Put every saved tensor back; True when a call had changed one (state that changes in forward)."""
    changed = False
    for t, saved in state:
        if t.shape != saved.shape or not bool(torch.equal(t.detach(), saved)):
            changed = True
            with torch.no_grad():
                t.data = saved.clone()
    return changed


def _tolerance_mismatch(y_ref: torch.Tensor, y_cand: torch.Tensor, rtol: float) -> Optional[Tuple[int, ...]]:
    finite = bool(torch.isfinite(y_ref).all())
    scale = max_abs(y_ref) if finite else 0.0
    return first_mismatch(y_ref, y_cand, rtol * max(scale, 1.0) if finite else 0.0)


def _shapes_report(exact: bool, ref_shape: Tuple[int, ...], cand_shape: Tuple[int, ...]) -> EquivalenceReport:
    return EquivalenceReport(Verdict.SHAPES_DIFFER, exact, ref_shape, cand_shape, reason=f"reference {ref_shape} vs candidate {cand_shape}")


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal values, NaN where the other has NaN (a record reproduces a side bit for bit)."""
    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    return bool(torch.equal(a, b)) or bool(((a == b) | (a.isnan() & b.isnan())).all())


@dataclass(frozen=True)
class _Side:
    """One side's captured record, its audit, and the nodes whose values are checked while it is evaluated."""

    name: str
    record: Record
    audit: Audit
    watched: FrozenSet[int]

    def evaluate(self, inputs: Sequence[torch.Tensor]) -> Tuple[torch.Tensor, Optional[str]]:
        """The record's output on (copies of) ``inputs``, and the first op that left float64's integers."""
        issues: List[str] = []

        def observe(node: Any, args: tuple, kwargs: dict, out: Any) -> None:
            if id(node) in self.watched and not issues:
                issue = exactness_issue(node.name, args, kwargs, out)
                if issue:
                    issues.append(issue)

        y = self.record.run([t.clone() for t in inputs], observe=observe)
        return y, (issues[0] if issues else None)


def _names(module: Any, root: str) -> Dict[int, str]:
    if not isinstance(module, nn.Module):
        return {}
    return {id(m): f"{root}.{name}" if name else root for name, m in module.named_modules()}


def _capture(name: str, fn: Callable[..., torch.Tensor], inputs: List[torch.Tensor], names: Dict[int, str], what: str,
             refused: Set[str]) -> Tuple[Optional[_Side], List[str]]:
    """Capture and audit one side; (None, reasons) when it may not claim exactness."""
    try:
        record = capture(fn, inputs, names=names)
    except CaptureError as err:
        if err.op:
            refused.add(err.op)
        return None, [f"the {name} cannot be captured: {err}"]
    found = audit(record, record.inputs, what=what)
    refused.update(found.refused_ops)
    if not found.admitted:
        return None, [f"the {name}: {line}" for line in found.refusals]
    watched = frozenset(id(record.nodes[i]) for i in found.watched)
    return _Side(name, record, found, watched), []


def _capture_sides(reference: Any, candidate: Union[Any, Derived], cand64: Any, shape: Tuple[int, ...], transforms: Tuple[Optional[Fn], Optional[Fn]],
                   device: torch.device, refused: Set[str]) -> Tuple[Optional[Tuple[_Side, _Side]], List[str]]:
    """Both sides as audited records taking (x, *resampled weights); (None, reasons) if either may not be exact."""
    is_derived = isinstance(candidate, Derived)
    params = _floating_params(reference) if is_derived else []
    inputs = [torch.empty(shape, dtype=torch.float64, device=device)] + [p.detach() for p in params]
    what = "the input and the weights" if params else "the input"
    ref_copy = copy.deepcopy(reference) if is_derived else reference
    build_copy = copy.deepcopy(reference) if is_derived else None

    def reference_fn(x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        module = _with_params(ref_copy, weights) if weights else ref_copy
        return _call("reference", module, x, None, None, shape)

    def candidate_fn(x: torch.Tensor, *weights: torch.Tensor) -> torch.Tensor:
        built = _build(candidate, _with_params(build_copy, weights), torch.float64, device, fresh=True) if is_derived else cand64
        return _call("candidate", built, x, transforms[0], transforms[1], shape)

    ref_side, ref_reasons = _capture("reference", reference_fn, inputs, _names(ref_copy, "reference"), what, refused)
    cand_names = _names(build_copy, "reference") if is_derived else _names(cand64, "candidate")
    cand_side, cand_reasons = _capture("candidate", candidate_fn, inputs, cand_names, what, refused)
    reasons = ref_reasons + cand_reasons
    return (None if reasons or ref_side is None or cand_side is None else (ref_side, cand_side)), reasons


def check_equivalence(
    reference: Fn,
    candidate: Union[Fn, Derived],
    input_shape: Sequence[int],
    *,
    input_transform: Optional[Fn] = None,
    output_transform: Optional[Fn] = None,
    dtypes: Sequence[Union[torch.dtype, str]] = (torch.float32,),
    trials: int = 3,
    exact_range: int = EXACT_RANGE,
    degree: Optional[int] = None,
    rtol: float = 1e-10,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
) -> EquivalenceReport:
    """Is ``candidate(input_transform(x))`` the same function of ``x`` as ``reference(x)``?

    Modules are copied (never modified) and run in float64 for the verdict; plain callables must accept
    any floating dtype. ``output_transform`` maps the candidate's output back into the reference's layout.
    ``dtypes`` (dtypes or names such as ``"bfloat16"``) add low-precision error statistics. See the module
    docstring for when the verdict is exact and what the bound on a false "equivalent" means. Bool and integer
    outputs are compared as numbers (exactly, but never with the bound: no polynomial computes them). What the
    check allocates is estimated on meta tensors before anything runs: a FoldError naming ``input_shape`` above
    foldconv's allocation limit (:func:`foldconv.allocation_limit`).

    Args:
        reference: a module or callable taking one tensor (modules are copied, never modified).
        candidate: a module or callable, or ``derived(build)`` (then ``reference`` must be an ``nn.Module``).
        input_shape: the full shape of ``x``, a non-empty sequence of ints >= 1.
        input_transform: maps ``x`` to the candidate's input (default: none).
        output_transform: maps the candidate's output into the reference's layout (default: none).
        dtypes: floating dtypes or their names for the error statistics (default ``(torch.float32,)``).
        trials: exact trials, 1 to 1000 (default 3).
        exact_range: integer draws lie in ``[-exact_range, exact_range]``, 1 to ``2**20`` (default 1024).
        degree: a polynomial degree for the bound when larger than the audited one (an int >= 1; default none).
        rtol: the relative tolerance of a sampled verdict, a finite number >= 0 (default ``1e-10``).
        seed: the seed of the draws, an int >= 0 (default 0).
        device: where both sides run (default ``"cpu"``; a device this machine lacks is a FoldError).

    Returns:
        An :class:`EquivalenceReport`, truthy when equivalent: ``verdict``, ``exact``,
        ``false_equivalent_bound``, ``first_mismatch``, ``reason``, ``errors`` (per dtype) and ``summary()``.

    Raises:
        FoldError: naming the bad argument (a non-callable side or transform, a malformed option), or
        ``input_shape`` above foldconv's allocation limit.

    Example:
        >>> from foldconv import fold_conv, depth_to_space
        >>> conv = torch.nn.Conv2d(4, 3, 3, padding=1)
        >>> big = fold_conv(conv, 2)
        >>> check_equivalence(conv, big, (2, 4, 6, 6), input_transform=lambda x: depth_to_space(x, 2)).verdict.value
        'equivalent'
        >>> check_equivalence(torch.nn.Hardtanh(-1e9, 1e9), torch.nn.Identity(), (1, 4, 3, 3)).summary()
        'equivalent (float64 tolerance); the reference: not polynomial: aten.hardtanh ran on a value computed from the input: integer arithmetic proves nothing (sampled verdict, no bound)'
    """
    shape = _validated_shape(input_shape)
    options = validate_options(dtypes=dtypes, trials=trials, exact_range=exact_range, degree=degree, rtol=rtol, seed=seed, device=device)
    return _check(reference, candidate, shape, input_transform, output_transform, options)


#: Float64 copies of one forward pass a check holds at once: the real run of each side, the replay of its
#: capture, and the comparison's working tensors.
CHECK_COPIES = 4


class _AsModule(nn.Module):
    """A plain callable as a module, so that its allocations are counted on meta tensors like a module's."""

    def __init__(self, fn: Callable[[torch.Tensor], Any]) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(x)


def _forward_elements(fn: Any, shape: Tuple[int, ...]) -> int:
    return tracing.forward_elements(fn if isinstance(fn, nn.Module) else _AsModule(fn), shape)


def _require_memory(reference: Any, candidate: Any, shape: Tuple[int, ...], input_transform: Optional[Fn]) -> int:
    """The bytes a check on ``shape`` allocates (estimated on meta tensors before anything real runs); a FoldError
    naming ``input_shape`` above foldconv's allocation limit."""
    moved = shape
    if input_transform is not None:
        try:
            moved = tuple(input_transform(torch.empty(shape, device="meta", dtype=torch.float64)).shape)
        except Exception:  # noqa: BLE001 (a transform that cannot run on meta: its output taken as large as its input)
            moved = shape
    elements = _forward_elements(reference, shape)
    elements += elements if isinstance(candidate, Derived) else _forward_elements(candidate, moved)
    return require_allocation(8 * CHECK_COPIES * elements, param="input_shape", value=shape,
                            what="running both sides in float64, capturing and comparing them")


def _check(reference: Any, candidate: Union[Any, Derived], shape: Tuple[int, ...], input_transform: Optional[Fn],
           output_transform: Optional[Fn], options: CheckOptions) -> EquivalenceReport:
    is_derived = isinstance(candidate, Derived)
    if not callable(reference):
        raise fold_error("reference", type(reference).__name__, "must be a callable (a module or a function)")
    if not is_derived and not callable(candidate):
        raise fold_error("candidate", type(candidate).__name__, "must be a callable or derived(build)")
    if is_derived and not isinstance(reference, nn.Module):
        raise fold_error("reference", type(reference).__name__, "must be an nn.Module when the candidate is derived()")
    _optional_callable(input_transform, "input_transform")
    _optional_callable(output_transform, "output_transform")
    _require_checkable(reference, "reference")
    _require_checkable(candidate, "candidate")
    _require_memory(reference, candidate, shape, input_transform)
    device, bound = options.device, options.exact_range
    gen = torch.Generator().manual_seed(options.seed)
    stateful: Set[str] = set()

    def run_pair(ref: Any, cand: Any, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        # Every call starts from the given parameters and buffers: a side whose forward changes them (BatchNorm
        # in train mode, a call counter) is not a function of its input, and is put back after each call.
        states = (_state(ref), _state(cand))
        try:
            return _call("reference", ref, x, None, None, shape), _call("candidate", cand, x, input_transform, output_transform, shape)
        finally:
            for side, state in zip(("reference", "candidate"), states):
                if _restore(state):
                    stateful.add(side)

    def screened(ref: Any, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, List[str]]:
        """The first trial's real calls under the op recorder: ops off the list on the draws rule exactness out
        before anything is captured (capturing costs more than running)."""
        sources = [x] + (list(ref.parameters()) if is_derived else [])
        outputs, reasons = [], []
        for side in ("reference", "candidate"):
            with OpRecorder(sources=sources) as recorder:
                fn = ref if side == "reference" else (_build(candidate, ref, torch.float64, device) if is_derived else cand64)
                with recorder.paused():
                    state = _state(fn)
                try:
                    transforms = (None, None) if side == "reference" else (input_transform, output_transform)
                    outputs.append(_call(side, fn, x, transforms[0], transforms[1], shape))
                finally:
                    with recorder.paused():
                        if _restore(state):
                            stateful.add(side)
            if recorder.refused:
                refused.update(recorder.refused)
                drawn = sorted(op for op in recorder.refused if _is_random(op))
                computed = sorted(set(recorder.refused) - set(drawn))
                if computed:
                    reasons.append(f"the {side}: not polynomial: {', '.join(computed)} ran on a value computed from "
                                   f"{'the input and the weights' if is_derived else 'the input'}")
                if drawn:
                    reasons.append(f"the {side} draws random numbers ({', '.join(drawn)}): what it computes may depend on them")
        return outputs[0], outputs[1], reasons

    with no_tf32(), torch.no_grad():
        ref64 = _as_dtype(reference, torch.float64, device)
        cand64 = _build(candidate, ref64, torch.float64, device) if is_derived else _as_dtype(candidate, torch.float64, device)
        refused: Set[str] = set()
        sides: Optional[Tuple[_Side, _Side]] = None
        exact, reason = True, ""
        if not is_derived and not (_integer_params(ref64) and _integer_params(cand64)):
            exact, reason = False, "parameters are not integer-valued; use derived() for an exact verdict"
        params = _floating_params(ref64) if is_derived else []
        verdict: Optional[Verdict] = None
        first: Optional[Tuple[int, ...]] = None
        counter: Optional[torch.Tensor] = None
        for trial in range(options.trials):
            x = integers(shape, gen, bound).to(device)
            weights = [integers(tuple(p.shape), gen, bound).to(p) for p in params]
            ref_t = _randomized(ref64, weights) if is_derived else ref64
            if trial == 0 and exact:
                y_ref, y_cand, reasons = screened(ref_t, x)
                if not reasons and y_ref.shape == y_cand.shape:
                    sides, reasons = _capture_sides(ref64, candidate, cand64, shape, (input_transform, output_transform), device, refused)
                if reasons:
                    exact, reason = False, f"{'; '.join(reasons)}: {_SAMPLED}"
            else:
                cand_t = _build(candidate, ref_t, torch.float64, device) if is_derived else cand64
                y_ref, y_cand = run_pair(ref_t, cand_t, x)
            if y_ref.shape != y_cand.shape:
                return _shapes_report(True, tuple(y_ref.shape), tuple(y_cand.shape))
            changed = [(side.name, c) for side in sides or () for c in side.record.changed_constants()] if exact else []
            if changed:
                exact, reason = False, (f"the {changed[0][0]} changes a tensor it keeps ({changed[0][1]}, in a closure, a parameter "
                                        "or a buffer) when called: state its record cannot follow (sampled verdict, no bound)")
            if exact and sides is not None:
                evaluated = []
                for side, real in zip(sides, (y_ref, y_cand)):
                    y, issue = side.evaluate([x] + weights)
                    if issue:
                        exact, reason = False, f"integer arithmetic was not exact ({issue}): sampled verdict, no bound"
                        break
                    if not _same(y, real):
                        exact, reason = False, (f"the captured {side.name} does not reproduce its output on a trial (it depends on "
                                                "something its tensors do not hold, such as Python state in a closure): "
                                                "sampled verdict, no bound")
                        break
                    evaluated.append(y)
                if exact:
                    y_ref, y_cand = evaluated  # the verdict comes from the records
            finite = bool(torch.isfinite(y_ref).all() and torch.isfinite(y_cand).all())
            if exact and stateful:
                exact = False
                reason = (f"the {' and '.join(sorted(stateful))} changes its parameters or buffers when called (e.g. BatchNorm "
                          "in train mode): not a function of its input; each call compared from the given state (sampled verdict)")
            elif exact and finite and not (integer_valued(y_ref) and integer_valued(y_cand)):
                exact, reason = False, "outputs are not integer-valued (a non-polynomial op), verdict from float64"
            elif exact and finite and not (within_exact_limit(y_ref) and within_exact_limit(y_cand)):
                exact, reason = False, f"integer outputs reach 2**51; lower exact_range={bound}"
            mismatch = first_mismatch(y_ref, y_cand) if exact else _tolerance_mismatch(y_ref, y_cand, options.rtol)
            if mismatch is not None:
                verdict, first, counter = Verdict.NOT_EQUIVALENT, mismatch, x.cpu()
                if not finite:
                    reason = "; ".join(filter(None, [reason, "non-finite outputs never compare equal"]))
                break
        observed = max((side.audit.degree for side in sides), default=1) if sides is not None else 1
        # The audit's degree is an upper bound on the polynomial's; a caller's larger degree is kept.
        degree = max(options.degree or 1, observed)
        if exact and verdict is None and false_equivalent_bound(degree, bound, options.trials) > WEAKEST_BOUND:
            exact, reason = False, (f"the integer trials prove too little at degree {degree}: P(false equivalent) <= "
                                    f"{false_equivalent_bound(degree, bound, options.trials):.1e} > {WEAKEST_BOUND:g} with "
                                    f"exact_range={bound}, trials={options.trials}; raise either: sampled verdict, no bound")
        if exact and stateful:  # a state change seen only after the last trial's pair
            exact, reason = False, f"the {' and '.join(sorted(stateful))} changes its parameters or buffers when called"
        # Float64 on real-valued data, with the given weights: error statistics, and a sample when not exact.
        x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device)
        y_ref, y_cand = run_pair(ref64, cand64, x)
        if y_ref.shape != y_cand.shape:
            return _shapes_report(exact, tuple(y_ref.shape), tuple(y_cand.shape))
        diff = max_abs(y_ref - y_cand) if bool(torch.isfinite(y_ref - y_cand).all()) else float("nan")
        if verdict is None and not exact:
            mismatch = _tolerance_mismatch(y_ref, y_cand, options.rtol)
            if mismatch is not None:
                verdict, first, counter = Verdict.NOT_EQUIVALENT, mismatch, x.cpu()
        errors: Dict[str, ErrorStats] = {}
        for dtype in options.dtypes:
            ref_d = _as_dtype(reference, dtype, device)
            cand_d = _build(candidate, ref_d, dtype, device) if is_derived else _as_dtype(candidate, dtype, device)
            yr, yc = run_pair(ref_d, cand_d, x.to(dtype))
            errors[dtype_name(dtype)] = ErrorStats.measure(dtype_name(dtype), yr, yc, y_ref)
    return EquivalenceReport(
        verdict=verdict or Verdict.EQUIVALENT,
        exact=exact,
        reference_shape=tuple(y_ref.shape),
        candidate_shape=tuple(y_cand.shape),
        trials=options.trials,
        exact_range=bound,
        degree=degree,
        false_equivalent_bound=false_equivalent_bound(degree, bound, options.trials) if exact else None,
        float64_max_abs=diff,
        float64_max_rel=relative_error(y_cand, y_ref),
        errors=errors,
        first_mismatch=first,
        counterexample=counter,
        non_polynomial_ops=tuple(sorted(refused)),
        reason=reason,
    )


_SPECS: Dict[Tuple[Any, ...], Any] = {}


def _conv_spec(conv: Any) -> Any:
    """``ConvSpec.from_module(conv)``, remembered per hyper-parameters (the sweep checks the same convs again)."""
    from ..specs import ConvSpec

    if not isinstance(conv, nn.modules.conv._ConvNd) or isinstance(conv, nn.modules.conv._ConvTransposeNd):
        return ConvSpec.from_module(conv)  # the FoldError it raises names what is wrong
    key = (type(conv), conv.in_channels, conv.out_channels, tuple(conv.kernel_size), tuple(conv.stride),
           conv.padding if isinstance(conv.padding, str) else tuple(conv.padding), tuple(conv.dilation), conv.groups,
           conv.bias is None, conv.padding_mode)
    spec = _SPECS.get(key)
    if spec is None:
        if len(_SPECS) > 4096:
            _SPECS.clear()
        spec = _SPECS[key] = ConvSpec.from_module(conv)
    return spec


def _fold_spec(r: Any, order: Any, dims: int) -> Any:
    """``FoldSpec.make(r, order, dims)``, remembered for hashable arguments."""
    from ..specs import FoldSpec

    try:
        return _cached_fold_spec(r, order, dims)
    except TypeError:  # a list of factors or orders: not hashable, not cached
        return FoldSpec.make(r, order, dims)


@functools.lru_cache(maxsize=1024)
def _cached_fold_spec(r: Any, order: Any, dims: int) -> Any:
    from ..specs import FoldSpec

    return FoldSpec.make(r, order, dims)


def check_fold(
    conv: nn.Module,
    r: Union[int, Sequence[int]],
    order: Union[str, Sequence[str]] = "crd",
    *,
    input_size: Optional[Sequence[int]] = None,
    batch: int = 2,
    **kwargs: Any,
) -> EquivalenceReport:
    """Check ``fold_conv(conv, r, order)`` on ``depth_to_space(x)`` against ``conv`` on ``x``, for all weights.

    ``input_size`` is the spatial size of ``x`` (default: twice the dilated kernel, at least 8 per axis);
    the other keywords go to :func:`check_equivalence`. A plain ``nn.ConvNd`` takes the structural route of
    :mod:`foldconv.check.structural` (all trials in one grouped conv per side); any other conv module (a
    subclass, hooks, a parametrisation) is captured and checked like any candidate.

    Args:
        conv: an ``nn.Conv1d/2d/3d`` (a subclass, or a conv with hooks or a parametrisation, too).
        r: the fold factor, an int (every spatial axis of ``conv``) or one per axis.
        order: the channel order, an alias or einops axes (default ``"crd"``).
        input_size: the spatial size of ``x``, an int or one per axis, each >= 1 (default: as above).
        batch: the batch size of ``x``, an int >= 1 (default 2).
        **kwargs: options of :func:`check_equivalence`: ``dtypes``, ``trials``, ``exact_range``, ``degree``,
            ``rtol``, ``seed``, ``device``; any other keyword is a FoldError.

    Returns:
        An :class:`EquivalenceReport` (truthy when equivalent): ``verdict``, ``exact``,
        ``false_equivalent_bound``, ``reason``, ``summary()``.

    Raises:
        FoldError: naming ``conv``, ``r``, ``order``, ``input_size``, ``batch`` (also when too large for the
        allocation limit) or the bad keyword.

    Example:
        >>> check_fold(torch.nn.Conv2d(64, 8, 3, stride=2, padding=1), 4).summary()
        'equivalent (exact), P(false equivalent) <= 9.3e-10'
    """
    from ..fold import fold_conv
    from ..layout import depth_to_space

    _require_checkable(conv, "conv")
    spec = _conv_spec(conv)
    fold = _fold_spec(r, order, spec.dims)
    if input_size is None:
        size: Tuple[int, ...] = tuple(max(8, 2 * k) for k in spec.effective_kernel)
    else:
        size = per_axis_ints(input_size, spec.dims, "input_size", 1)
    batch = require_int(batch, "batch", 1)
    for key, value in kwargs.items():
        if key not in _CHECK_FOLD_OPTIONS:
            raise fold_error(key, value, f"is not an option of check_fold; use {', '.join(_CHECK_FOLD_OPTIONS)}")
    options = validate_options(**kwargs)
    shape = (batch, spec.in_channels) + size
    out_size = spec.output_size(size) if all(s >= k for s, k in zip(size, spec.effective_kernel)) else size
    per_image = spec.in_channels * math.prod(size) + spec.out_channels * math.prod(out_size)
    for param, value, images in (("input_size", size, 1), ("batch", batch, batch)):
        # the size alone too large names input_size; a batch that makes it too large names batch. Both sides of
        # a plain conv's check hold an input and an output per image (counted from the spec: no meta run)
        full = (images,) + shape[1:]
        try:
            require_allocation(8 * CHECK_COPIES * 2 * images * per_image, param=param, value=value,
                             what=f"checking the fold on inputs of shape {full} in float64")
            require_numel(full, param, value, what="an input")
        except FoldError as err:
            raise fold_error(param, value, err.rule or str(err)) from None
    if plain_conv(conv):
        report = check_plain_fold(conv, spec, fold, shape, options)
        if report is not None:
            return report
    try:
        return _check(conv, derived(lambda m: fold_conv(m, fold.r, fold.order)), shape,
                      lambda x: depth_to_space(x, fold.r, fold.order, dims=spec.dims), None, options)
    except FoldError as err:
        if err.param == "input_shape":  # the caller gave input_size (spatial only): name that
            raise fold_error("input_size", size, err.rule or str(err)) from None
        raise
