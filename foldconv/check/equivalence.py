"""Decide whether two computations are the same linear (or polynomial) map, exactly.

The exact verdict evaluates both sides on random *integer-valued* float64 inputs (and, for a
:func:`derived` candidate, random integer-valued float64 weights) in ``[-exact_range, exact_range]``: every
product is an integer of magnitude at most ``exact_range**2`` (2**20 by default), so float64 arithmetic is
exact while the sum of a layer's absolute terms stays below 2**53 (fan-in below 2**33 per layer with the
defaults), and the outputs are compared with ``torch.equal``, with no tolerance. Outputs of magnitude 2**51
or more switch the check to the float64-tolerance verdict (reported, ``exact`` False). Summation order, the only thing that differs between equivalent forms, cannot change an
exact integer sum.

False "equivalent": if the two sides differ, the difference of some output coordinate is a non-zero
polynomial of total degree ``D`` in the random integers, each drawn uniformly from a set of
``N = 2*exact_range + 1`` values; by the Schwartz-Zippel lemma one trial misses the difference with
probability at most ``D/N``, so ``trials`` independent trials do with probability at most
``(D/N)**trials``. ``D = 1`` for fixed weights, 2 for one conv or linear layer whose weights are resampled,
``L + 1`` for ``L`` stacked layers (pass ``degree=``). With the defaults (``exact_range=1024``,
``trials=3``, ``D=2``) the bound is below 1e-9; the report states the bound it used.

When the outputs are not integer-valued (a normalisation divides, an activation is not piecewise linear),
exact arithmetic is unavailable: the verdict then comes from float64 with a relative tolerance, and the
report says so (``exact`` is False).
"""
from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..errors import fold_error

__all__ = [
    "Verdict",
    "ErrorStats",
    "EquivalenceReport",
    "Derived",
    "derived",
    "check_equivalence",
    "check_fold",
    "no_tf32",
]

_MAX_EXACT = 2.0**53


class Verdict(str, Enum):
    """Outcome of an equivalence check."""

    EQUIVALENT = "equivalent"
    NOT_EQUIVALENT = "not equivalent"
    SHAPES_DIFFER = "output shapes differ"


@dataclass(frozen=True)
class ErrorStats:
    """Errors of the candidate against the reference on real-valued (unit-normal) data in one dtype.

    ``max_abs``/``max_rel``: candidate vs reference, both run in ``dtype``; ``max_rel`` is relative to the
    largest float64 reference output. ``ref_vs_float64``/``cand_vs_float64``: each side in ``dtype``
    against the float64 reference (rounding each form suffers on its own).
    """

    dtype: str
    max_abs: float
    max_rel: float
    ref_vs_float64: float
    cand_vs_float64: float


@dataclass
class EquivalenceReport:
    """What :func:`check_equivalence` found. Truthy exactly when the verdict is EQUIVALENT.

    Example:
        >>> conv = torch.nn.Conv1d(2, 2, 3)
        >>> report = check_equivalence(conv, derived(lambda m: m), (1, 2, 8))
        >>> bool(report), report.verdict.value, report.exact
        (True, 'equivalent', True)
        >>> check_equivalence(conv, conv, (1, 2, 8)).exact  # real-valued weights: float64 verdict
        False
    """

    verdict: Verdict
    exact: bool
    reference_shape: Tuple[int, ...]
    candidate_shape: Tuple[int, ...]
    trials: int = 0
    exact_range: int = 0
    degree: int = 1
    false_equivalent_bound: Optional[float] = None
    float64_max_abs: float = float("nan")
    float64_max_rel: float = float("nan")
    errors: Dict[str, ErrorStats] = field(default_factory=dict)
    first_mismatch: Optional[Tuple[int, ...]] = None
    counterexample: Optional[torch.Tensor] = None
    reason: str = ""

    def __bool__(self) -> bool:
        return self.verdict is Verdict.EQUIVALENT

    @property
    def equivalent(self) -> bool:
        return self.verdict is Verdict.EQUIVALENT

    def summary(self) -> str:
        """One line for logs and tables."""
        how = "exact" if self.exact else "float64 tolerance"
        text = f"{self.verdict.value} ({how})"
        if self.false_equivalent_bound is not None and self.equivalent and self.exact:
            text += f", P(false equivalent) <= {self.false_equivalent_bound:.1e}"
        if self.first_mismatch is not None:
            text += f", first mismatch at output index {self.first_mismatch}"
        if self.reason:
            text += f"; {self.reason}"
        return text

    def to_markdown(self) -> str:
        """A small Markdown table of the verdict and the errors per dtype."""
        lines = [
            f"**Verdict:** {self.summary()}",
            "",
            f"Output shapes: reference {self.reference_shape}, candidate {self.candidate_shape}.",
            "",
            "| dtype | max abs error | max rel error | reference vs float64 | candidate vs float64 |",
            "|---|---|---|---|---|",
            f"| float64 | {self.float64_max_abs:.3e} | {self.float64_max_rel:.3e} | 0 | {self.float64_max_abs:.3e} |",
        ]
        for stats in self.errors.values():
            lines.append(
                f"| {stats.dtype} | {stats.max_abs:.3e} | {stats.max_rel:.3e} | "
                f"{stats.ref_vs_float64:.3e} | {stats.cand_vs_float64:.3e} |"
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class Derived:
    """A candidate built from the reference module (see :func:`derived`)."""

    build: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]]


def derived(build: Callable[[nn.Module], Callable[[torch.Tensor], torch.Tensor]]) -> Derived:
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


def _as_dtype(fn: Any, dtype: torch.dtype) -> Any:
    if isinstance(fn, nn.Module):
        return copy.deepcopy(fn).to(dtype)
    return fn


def _integer_params(module: Any) -> bool:
    if not isinstance(module, nn.Module):
        return True
    for t in list(module.parameters()) + list(module.buffers()):
        if t.is_floating_point() and t.numel() and not bool(torch.equal(t, t.round())):
            return False
    return True


def _randomize(module: nn.Module, gen: torch.Generator, bound: int) -> nn.Module:
    with torch.no_grad():
        for p in module.parameters():
            if p.is_floating_point():
                p.copy_(torch.randint(-bound, bound + 1, p.shape, generator=gen, dtype=torch.int64).to(p))
    return module


def _apply(fn: Callable, x: torch.Tensor, transform: Optional[Callable], out_transform: Optional[Callable]) -> torch.Tensor:
    if transform is not None:
        x = transform(x)
    y = fn(x)
    if out_transform is not None:
        y = out_transform(y)
    return y


def _amax(t: torch.Tensor) -> float:
    """Largest absolute value, 0 for an empty tensor, NaN when any entry is NaN."""
    return float(t.abs().max()) if t.numel() else 0.0


def _first_mismatch(a: torch.Tensor, b: torch.Tensor, tol: float = 0.0) -> Optional[Tuple[int, ...]]:
    bad = ~((a - b).abs() <= tol)  # NaN compares unequal, so NaN or Inf differences count as mismatches
    if not bool(bad.any()):
        return None
    flat = int(torch.nonzero(bad.flatten())[0])
    index = []
    for size in reversed(a.shape):  # row-major unravel by hand: torch.unravel_index needs torch >= 2.2
        flat, rest = divmod(flat, size)
        index.append(rest)
    return tuple(reversed(index))


def check_equivalence(
    reference: Callable[[torch.Tensor], torch.Tensor],
    candidate: Union[Callable[[torch.Tensor], torch.Tensor], Derived],
    input_shape: Sequence[int],
    input_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    *,
    output_transform: Optional[Callable[[torch.Tensor], torch.Tensor]] = None,
    dtypes: Sequence[torch.dtype] = (torch.float32,),
    trials: int = 3,
    exact_range: int = 1024,
    degree: Optional[int] = None,
    rtol: float = 1e-10,
    seed: int = 0,
    device: Union[str, torch.device] = "cpu",
) -> EquivalenceReport:
    """Is ``candidate(input_transform(x))`` the same function of ``x`` as ``reference(x)``?

    Modules are copied (never modified) and run in float64 for the verdict; plain callables must accept
    any floating dtype. ``output_transform`` maps the candidate's output back into the reference's layout.
    See the module docstring for the exactness argument and the bound on a false "equivalent".

    Example:
        >>> from foldconv import fold_conv, depth_to_space
        >>> conv = torch.nn.Conv2d(4, 3, 3, padding=1)
        >>> big = fold_conv(conv, 2)
        >>> check_equivalence(conv, big, (2, 4, 6, 6), lambda x: depth_to_space(x, 2)).verdict.value
        'equivalent'
    """
    shape = tuple(int(s) for s in input_shape)
    if not shape or any(s < 1 for s in shape):
        raise fold_error("input_shape", tuple(input_shape), "must be non-empty with every size >= 1")
    if trials < 1:
        raise fold_error("trials", trials, "must be >= 1")
    if not 1 <= exact_range <= 2**20:
        raise fold_error("exact_range", exact_range, "must be in [1, 2**20] so products stay exact in float64")
    is_derived = isinstance(candidate, Derived)
    if is_derived and not isinstance(reference, nn.Module):
        raise fold_error("reference", type(reference).__name__, "must be an nn.Module when the candidate is derived()")
    degree = degree if degree is not None else (2 if is_derived else 1)
    gen = torch.Generator().manual_seed(seed)
    with no_tf32(), torch.no_grad():
        ref64 = _as_dtype(reference, torch.float64)
        if isinstance(ref64, nn.Module):
            ref64 = ref64.to(device)
        cand64 = candidate.build(copy.deepcopy(ref64)) if is_derived else _as_dtype(candidate, torch.float64)
        if isinstance(cand64, nn.Module):
            cand64 = cand64.to(device)
        # Exact verdict.
        exact: Optional[bool] = True  # None: exact arithmetic unavailable; False: exact check found a difference
        if not is_derived and not (_integer_params(ref64) and _integer_params(cand64)):
            exact, reason = None, "parameters are not integer-valued; use derived() for an exact verdict"
        else:
            reason = ""
        first, counter = None, None
        ref_shape = cand_shape = ()
        if exact:
            for _ in range(trials):
                if is_derived:
                    ref_t = _randomize(copy.deepcopy(ref64), gen, exact_range)
                    cand_t = candidate.build(copy.deepcopy(ref_t))
                    if isinstance(cand_t, nn.Module):
                        cand_t = cand_t.to(torch.float64)
                else:
                    ref_t, cand_t = ref64, cand64
                x = torch.randint(-exact_range, exact_range + 1, shape, generator=gen).to(torch.float64).to(device)
                y_ref = ref_t(x)
                y_cand = _apply(cand_t, x, input_transform, output_transform)
                ref_shape, cand_shape = tuple(y_ref.shape), tuple(y_cand.shape)
                if ref_shape != cand_shape:
                    return EquivalenceReport(
                        Verdict.SHAPES_DIFFER, True, ref_shape, cand_shape, reason=f"reference {ref_shape} vs candidate {cand_shape}"
                    )
                finite = bool(torch.isfinite(y_ref).all() and torch.isfinite(y_cand).all())
                if finite and not (torch.equal(y_ref, y_ref.round()) and torch.equal(y_cand, y_cand.round())):
                    exact, reason = None, "outputs are not integer-valued (a non-polynomial op), verdict from float64"
                    break
                if finite and _amax(y_ref) >= _MAX_EXACT / 4:
                    exact, reason = None, f"integer outputs reach 2**51; lower exact_range={exact_range}"
                    break
                if not finite or not torch.equal(y_ref, y_cand):
                    first = _first_mismatch(y_ref, y_cand)
                    counter = x.cpu()
                    exact = False
                    if not finite:
                        reason = "non-finite outputs never compare equal"
                    break
        # Float64 on real-valued data, with the given weights.
        x = torch.randn(shape, generator=gen, dtype=torch.float64).to(device)
        y_ref = ref64(x)
        y_cand = _apply(cand64, x, input_transform, output_transform)
        ref_shape, cand_shape = tuple(y_ref.shape), tuple(y_cand.shape)
        if ref_shape != cand_shape:
            return EquivalenceReport(
                Verdict.SHAPES_DIFFER, exact is not None, ref_shape, cand_shape, reason=f"reference {ref_shape} vs candidate {cand_shape}"
            )
        scale = _amax(y_ref) if bool(torch.isfinite(y_ref).all()) else float("inf")
        diff = (y_ref - y_cand).abs()
        f64_abs = _amax(diff)
        if not bool(torch.isfinite(diff).all()):
            f64_abs = float("nan")
        f64_rel = f64_abs / scale if scale > 0 else f64_abs
        if exact is None:
            tol = rtol * max(scale, 1.0)
            first = _first_mismatch(y_ref, y_cand, tol)
            equivalent = first is None and math.isfinite(f64_abs)
            counter = None if equivalent else x.cpu()
        else:
            equivalent = bool(exact)
        errors: Dict[str, ErrorStats] = {}
        for dtype in dtypes:
            ref_d = _as_dtype(reference, dtype)
            cand_d = candidate.build(copy.deepcopy(ref_d)) if is_derived else _as_dtype(candidate, dtype)
            if isinstance(ref_d, nn.Module):
                ref_d = ref_d.to(device)
            if isinstance(cand_d, nn.Module):
                cand_d = cand_d.to(device)
            xd = x.to(dtype)
            yr = ref_d(xd).to(torch.float64)
            yc = _apply(cand_d, xd, input_transform, output_transform).to(torch.float64)
            m = _amax(yr - yc)
            errors[str(dtype).replace("torch.", "")] = ErrorStats(
                str(dtype).replace("torch.", ""),
                m,
                m / scale if scale > 0 else m,
                _amax(yr - y_ref),
                _amax(yc - y_ref),
            )
    n_values = 2 * exact_range + 1
    return EquivalenceReport(
        verdict=Verdict.EQUIVALENT if equivalent else Verdict.NOT_EQUIVALENT,
        exact=exact is not None,
        reference_shape=ref_shape,
        candidate_shape=cand_shape,
        trials=trials if exact is not None else 0,
        exact_range=exact_range,
        degree=degree,
        false_equivalent_bound=(min(1.0, degree / n_values) ** trials) if exact is not None else None,
        float64_max_abs=f64_abs,
        float64_max_rel=f64_rel,
        errors=errors,
        first_mismatch=first,
        counterexample=counter,
        reason=reason,
    )


def check_fold(
    conv: nn.Module,
    r: Union[int, Sequence[int]],
    order: Union[str, Sequence[str]] = "crd",
    input_size: Optional[Sequence[int]] = None,
    batch: int = 2,
    **kwargs: Any,
) -> EquivalenceReport:
    """Check ``fold_conv(conv, r, order)`` on ``depth_to_space(x)`` against ``conv`` on ``x``, for all weights.

    ``input_size`` is the spatial size of ``x`` (default: twice the dilated kernel, at least 8 per axis).

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
        input_size = tuple(max(8, 2 * k) for k in spec.effective_kernel)
    shape = (batch, spec.in_channels) + tuple(input_size)
    return check_equivalence(
        conv,
        derived(lambda m: fold_conv(m, fold.r, fold.order)),
        shape,
        lambda x: depth_to_space(x, fold.r, fold.order, spec.dims),
        **kwargs,
    )
