"""Decide whether two computations are the same map: exactly when they are polynomial, by sampling otherwise.

The exact verdict evaluates both sides on random *integer-valued* float64 inputs (and, for a
:func:`derived` candidate, random integer-valued float64 weights) in ``[-exact_range, exact_range]``, with
the kernel of :mod:`foldconv.check.exact`: float64 arithmetic on these integers is exact while sums stay
below ``2**53``, so outputs are compared with ``torch.equal``, with no tolerance. Exactness is claimed only
when *every aten op that ran* on either side is on the polynomial allow-list of :mod:`foldconv.check.ops`
(convolutions, matrix products, sums, layout and padding ops), every output is an integer and below
``2**51``. Then, if the two sides differ, the difference of some output coordinate is a non-zero
polynomial of total degree ``D`` in the random integers, each uniform over ``N = 2*exact_range + 1``
values; by the Schwartz–Zippel lemma ``trials`` independent trials all miss it with probability at most
``(D/N)**trials``. ``D = 1`` for fixed weights, 2 for one conv or linear layer whose weights are resampled,
``L + 1`` for ``L`` stacked layers (pass ``degree=``). The defaults give a bound below 1e-9.

Otherwise (a clamp, a threshold, a division, a normalisation ran; outputs are not integers; parameters are
real-valued and not ``derived``) the verdict is *sampled*: the same integer draws plus one unit-normal draw,
compared with a relative tolerance ``rtol``; ``exact`` is False, no bound is given and ``reason`` says why.
paper_notes/checker.md states the whole contract.

Each side gets its own copy of every input and its outputs are copied as soon as it returns, so a side that
modifies its input (``nn.ReLU(inplace=True)``) or returns an alias cannot make the comparison vacuous.
"""
from __future__ import annotations

import contextlib
import copy
import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Set, Tuple, Union

import torch
from torch import nn

from .._validate import check_device, check_int, check_numel, per_axis_ints
from ..errors import FoldError, fold_error
from .exact import (
    EXACT_RANGE,
    MAX_EXACT_RANGE,
    _amax,
    false_equivalent_bound,
    first_mismatch,
    integer_valued,
    integers,
    relative_error,
    within_exact_limit,
)
from .ops import OpRecorder
from .report import EquivalenceReport, ErrorStats
from .verdict import Verdict

__all__ = ["Derived", "derived", "check_equivalence", "check_fold", "no_tf32", "as_float_dtype"]

Fn = Callable[[torch.Tensor], torch.Tensor]
_CHECK_FOLD_OPTIONS = ("dtypes", "trials", "exact_range", "degree", "rtol", "seed", "device")
#: Largest ``trials``: each trial runs both sides once.
MAX_TRIALS = 1000
_FLOAT_DTYPES = {"float64": torch.float64, "float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class Derived:
    """A candidate built from the reference module (see :func:`derived`)."""

    build: Callable[[nn.Module], Fn]


def derived(build: Callable[[nn.Module], Fn]) -> Derived:
    """Mark a candidate as a function of the reference module, so the exact check can resample weights.

    With a derived candidate every exact trial draws fresh integer weights for the reference and rebuilds
    the candidate from them: the verdict then holds for all weights, not just the given ones.

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


@contextlib.contextmanager
def no_tf32() -> Iterator[None]:
    """Switch TF32 off for matmul and cuDNN inside the block (restored afterwards).

    Example:
        >>> with no_tf32():
        ...     torch.backends.cuda.matmul.allow_tf32
        False
    """
    saved = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def as_float_dtype(value: Any, param: str = "dtype") -> torch.dtype:
    """A floating torch dtype from a dtype or its name (``"float32"``, ``"torch.bfloat16"``); FoldError otherwise.

    Example:
        >>> as_float_dtype("bfloat16"), as_float_dtype(torch.float16)
        (torch.bfloat16, torch.float16)
    """
    if isinstance(value, torch.dtype) and value in _FLOAT_DTYPES.values():
        return value
    if isinstance(value, str) and value.replace("torch.", "") in _FLOAT_DTYPES:
        return _FLOAT_DTYPES[value.replace("torch.", "")]
    raise fold_error(param, value, f"must be a floating dtype or its name, one of {sorted(_FLOAT_DTYPES)}")


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _validated_shape(input_shape: Any) -> Tuple[int, ...]:
    if isinstance(input_shape, (str, bytes, torch.Tensor)) or not isinstance(input_shape, Sequence):
        raise fold_error("input_shape", input_shape, "must be a sequence of integer sizes, e.g. (1, 4, 8, 8)")
    if not input_shape or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in input_shape):
        raise fold_error("input_shape", tuple(input_shape), "must be non-empty with every size an integer >= 1")
    return tuple(int(s) for s in input_shape)


def _validated_dtypes(dtypes: Any) -> Tuple[torch.dtype, ...]:
    if isinstance(dtypes, (str, torch.dtype)):
        dtypes = (dtypes,)
    if not isinstance(dtypes, Sequence):
        raise fold_error("dtypes", dtypes, "must be a sequence of floating dtypes or their names")
    return tuple(as_float_dtype(d, "dtypes") for d in dtypes)


def _validated_rtol(rtol: Any) -> float:
    if isinstance(rtol, bool) or not isinstance(rtol, numbers.Real) or not math.isfinite(rtol) or rtol < 0:
        raise fold_error("rtol", rtol, "must be a finite number >= 0")
    return float(rtol)


def _validated_device(device: Any) -> torch.device:
    return check_device(device)


def _optional_callable(value: Any, param: str) -> None:
    if value is not None and not callable(value):
        raise fold_error(param, type(value).__name__, "must be a callable or None")


def _as_dtype(fn: Any, dtype: torch.dtype, device: Union[str, torch.device]) -> Any:
    """A module copy in ``dtype`` on ``device`` (never the caller's module); callables unchanged."""
    if isinstance(fn, nn.Module):
        return copy.deepcopy(fn).to(device=device, dtype=dtype)
    return fn


def _build(candidate: Derived, reference: nn.Module, dtype: torch.dtype, device: Union[str, torch.device]) -> Any:
    built = candidate.build(copy.deepcopy(reference))
    if not callable(built):
        raise fold_error("candidate", type(built).__name__, "derived(build): build must return a callable (a module)")
    return built.to(device=device, dtype=dtype) if isinstance(built, nn.Module) else built


def _integer_params(module: Any) -> bool:
    if not isinstance(module, nn.Module):
        return True
    return all(integer_valued(t) for t in list(module.parameters()) + list(module.buffers()) if t.is_floating_point() and t.numel())


def _randomize(module: nn.Module, gen: torch.Generator, bound: int) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point():
                p.copy_(integers(p.shape, gen, bound).to(p))
    return module


def _first_line(err: BaseException) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


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
            raise fold_error("input_shape", shape, f"the reference cannot run on it: {_first_line(err)}") from err
        name = getattr(culprit, "__qualname__", type(culprit).__name__)
        raise fold_error(step, name, f"cannot run on an input of input_shape={shape}: {_first_line(err)}") from err
    if not isinstance(y, torch.Tensor):
        raise fold_error(step, type(y).__name__, "must return a tensor")
    if y.is_complex():
        raise fold_error(step, str(y.dtype), "must return a real tensor (complex outputs are not compared)")
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
    scale = _amax(y_ref) if bool(torch.isfinite(y_ref).all()) else math.inf
    return first_mismatch(y_ref, y_cand, rtol * max(scale, 1.0) if math.isfinite(scale) else 0.0)


def _shapes_report(exact: bool, ref_shape: Tuple[int, ...], cand_shape: Tuple[int, ...]) -> EquivalenceReport:
    return EquivalenceReport(Verdict.SHAPES_DIFFER, exact, ref_shape, cand_shape, reason=f"reference {ref_shape} vs candidate {cand_shape}")


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
    docstring for when the verdict is exact and what the bound on a false "equivalent" means.

    Example:
        >>> from foldconv import fold_conv, depth_to_space
        >>> conv = torch.nn.Conv2d(4, 3, 3, padding=1)
        >>> big = fold_conv(conv, 2)
        >>> check_equivalence(conv, big, (2, 4, 6, 6), input_transform=lambda x: depth_to_space(x, 2)).verdict.value
        'equivalent'
        >>> check_equivalence(torch.nn.Hardtanh(-1e9, 1e9), torch.nn.Identity(), (1, 4, 3, 3)).summary()
        'equivalent (float64 tolerance); not polynomial: aten.hardtanh ran, so integer arithmetic proves nothing (sampled verdict, no bound)'
    """
    shape = _validated_shape(input_shape)
    check_numel(shape, "input_shape", shape, what="an input")
    trials = check_int(trials, "trials", 1)
    if trials > MAX_TRIALS:
        raise fold_error("trials", trials, f"must be at most {MAX_TRIALS} (3 trials already bound a false 'equivalent' below 1e-9)")
    device = _validated_device(device)
    exact_range = check_int(exact_range, "exact_range", 1)
    if exact_range > MAX_EXACT_RANGE:
        raise fold_error("exact_range", exact_range, "must be in [1, 2**20] so products stay exact in float64")
    if degree is not None:
        degree = check_int(degree, "degree", 1)
    rtol = _validated_rtol(rtol)
    seed = check_int(seed, "seed", 0)
    dtype_list = _validated_dtypes(dtypes)
    is_derived = isinstance(candidate, Derived)
    if not callable(reference):
        raise fold_error("reference", type(reference).__name__, "must be a callable (a module or a function)")
    if not is_derived and not callable(candidate):
        raise fold_error("candidate", type(candidate).__name__, "must be a callable or derived(build)")
    if is_derived and not isinstance(reference, nn.Module):
        raise fold_error("reference", type(reference).__name__, "must be an nn.Module when the candidate is derived()")
    _optional_callable(input_transform, "input_transform")
    _optional_callable(output_transform, "output_transform")
    gen = torch.Generator().manual_seed(seed)

    stateful: Set[str] = set()

    def run_pair(ref: Any, cand: Any, x: torch.Tensor, recorder: Optional[OpRecorder] = None) -> Tuple[torch.Tensor, torch.Tensor]:
        # Every call starts from the given parameters and buffers: a side whose forward changes them (BatchNorm
        # in train mode, a call counter) is not a function of its input, and is put back after each call.
        bookkeeping = recorder.paused if recorder is not None else contextlib.nullcontext
        with bookkeeping():
            states = (_state(ref), _state(cand))
        try:
            return _call("reference", ref, x, None, None, shape), _call("candidate", cand, x, input_transform, output_transform, shape)
        finally:
            with bookkeeping():
                for side, state in zip(("reference", "candidate"), states):
                    if _restore(state):
                        stateful.add(side)

    with no_tf32(), torch.no_grad():
        ref64 = _as_dtype(reference, torch.float64, device)
        cand64 = _build(candidate, ref64, torch.float64, device) if is_derived else _as_dtype(candidate, torch.float64, device)
        exact, reason = True, ""
        if not is_derived and not (_integer_params(ref64) and _integer_params(cand64)):
            exact, reason = False, "parameters are not integer-valued; use derived() for an exact verdict"
        refused: Set[str] = set()
        verdict: Optional[Verdict] = None
        first: Optional[Tuple[int, ...]] = None
        counter: Optional[torch.Tensor] = None
        observed_degree = 1
        for _ in range(trials):
            x = integers(shape, gen, exact_range).to(device)
            ref_t = _randomize(copy.deepcopy(ref64), gen, exact_range) if is_derived else ref64
            sources = [x] + (list(ref_t.parameters()) if is_derived else [])
            # the build runs inside the recorder too: the candidate's weights must be polynomial in the reference's
            with OpRecorder(sources=sources) as recorder:
                cand_t = _build(candidate, ref_t, torch.float64, device) if is_derived else cand64
                y_ref, y_cand = run_pair(ref_t, cand_t, x, recorder)
            if y_ref.shape != y_cand.shape:
                return _shapes_report(True, tuple(y_ref.shape), tuple(y_cand.shape))
            refused |= recorder.refused
            observed_degree = max(observed_degree, recorder.degree(y_ref), recorder.degree(y_cand))
            finite = bool(torch.isfinite(y_ref).all() and torch.isfinite(y_cand).all())
            if exact and recorder.refused:
                exact = False
                reason = f"not polynomial: {', '.join(sorted(refused))} ran, so integer arithmetic proves nothing (sampled verdict, no bound)"
            elif exact and stateful:
                exact = False
                reason = (f"the {' and '.join(sorted(stateful))} changes its parameters or buffers when called (e.g. BatchNorm "
                          "in train mode): not a function of its input; each call compared from the given state (sampled verdict)")
            elif exact and recorder.inexact:
                exact = False
                reason = f"integer arithmetic was not exact ({'; '.join(sorted(recorder.inexact))}): sampled verdict, no bound"
            elif exact and finite and not (integer_valued(y_ref) and integer_valued(y_cand)):
                exact, reason = False, "outputs are not integer-valued (a non-polynomial op), verdict from float64"
            elif exact and finite and not (within_exact_limit(y_ref) and within_exact_limit(y_cand)):
                exact, reason = False, f"integer outputs reach 2**51; lower exact_range={exact_range}"
            mismatch = first_mismatch(y_ref, y_cand) if exact else _tolerance_mismatch(y_ref, y_cand, rtol)
            if mismatch is not None:
                verdict, first, counter = Verdict.NOT_EQUIVALENT, mismatch, x.cpu()
                if not finite:
                    reason = "; ".join(filter(None, [reason, "non-finite outputs never compare equal"]))
                break
        # The recorder's degree is an upper bound on the polynomial's; a caller's larger degree is kept.
        degree = max(degree or 1, observed_degree)
        if exact and stateful:  # a state change seen only after the last trial's pair
            exact, reason = False, f"the {' and '.join(sorted(stateful))} changes its parameters or buffers when called"
        # Float64 on real-valued data, with the given weights: error statistics, and a sample when not exact.
        x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device)
        y_ref, y_cand = run_pair(ref64, cand64, x)
        if y_ref.shape != y_cand.shape:
            return _shapes_report(exact, tuple(y_ref.shape), tuple(y_cand.shape))
        diff = _amax(y_ref - y_cand) if bool(torch.isfinite(y_ref - y_cand).all()) else float("nan")
        if verdict is None and not exact:
            mismatch = _tolerance_mismatch(y_ref, y_cand, rtol)
            if mismatch is not None:
                verdict, first, counter = Verdict.NOT_EQUIVALENT, mismatch, x.cpu()
        errors: Dict[str, ErrorStats] = {}
        for dtype in dtype_list:
            ref_d = _as_dtype(reference, dtype, device)
            cand_d = _build(candidate, ref_d, dtype, device) if is_derived else _as_dtype(candidate, dtype, device)
            yr, yc = (y.to(torch.float64) for y in run_pair(ref_d, cand_d, x.to(dtype)))
            errors[_dtype_name(dtype)] = ErrorStats(
                _dtype_name(dtype), _amax(yr - yc), relative_error(yc, yr), _amax(yr - y_ref), _amax(yc - y_ref)
            )
    return EquivalenceReport(
        verdict=verdict or Verdict.EQUIVALENT,
        exact=exact,
        reference_shape=tuple(y_ref.shape),
        candidate_shape=tuple(y_cand.shape),
        trials=trials,
        exact_range=exact_range,
        degree=degree,
        false_equivalent_bound=false_equivalent_bound(degree, exact_range, trials) if exact else None,
        float64_max_abs=diff,
        float64_max_rel=relative_error(y_cand, y_ref),
        errors=errors,
        first_mismatch=first,
        counterexample=counter,
        non_polynomial_ops=tuple(sorted(refused)),
        reason=reason,
    )


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
    the other keywords go to :func:`check_equivalence`.

    Example:
        >>> check_fold(torch.nn.Conv2d(64, 8, 3, stride=2, padding=1), 4).summary()
        'equivalent (exact), P(false equivalent) <= 9.3e-10'
    """
    from ..fold import fold_conv
    from ..layout import depth_to_space
    from ..specs import ConvSpec, FoldSpec

    spec = ConvSpec.from_module(conv)
    fold = FoldSpec.make(r, order, spec.dims)
    if input_size is None:
        size: Tuple[int, ...] = tuple(max(8, 2 * k) for k in spec.effective_kernel)
    else:
        size = per_axis_ints(input_size, spec.dims, "input_size", 1)
    batch = check_int(batch, "batch", 1)
    check_numel((spec.in_channels,) + size, "input_size", size, what="an input")
    check_numel((batch, spec.in_channels) + size, "batch", batch, what="an input")
    for key, value in kwargs.items():
        if key not in _CHECK_FOLD_OPTIONS:
            raise fold_error(key, value, f"is not an option of check_fold; use {', '.join(_CHECK_FOLD_OPTIONS)}")
    try:
        return check_equivalence(
            conv,
            derived(lambda m: fold_conv(m, fold.r, fold.order)),
            (batch, spec.in_channels) + size,
            input_transform=lambda x: depth_to_space(x, fold.r, fold.order, dims=spec.dims),
            **kwargs,
        )
    except FoldError as err:
        if err.param == "input_shape":  # the caller gave input_size (spatial only): name that
            raise fold_error("input_size", size, err.rule or str(err)) from None
        raise
