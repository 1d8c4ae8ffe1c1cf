"""The integer-exact kernel shared by :func:`~foldconv.check.check_equivalence` and the sweep's observation.

Why integers: a polynomial map (convolutions, matrix products, sums, layout changes) evaluated on
integer-valued float64 tensors whose intermediate values stay below ``2**53`` is computed *exactly*: every
partial sum is an integer that float64 represents, so the summation order — the only thing that differs
between two equivalent forms — cannot change the result, and outputs can be compared with ``torch.equal``,
with no tolerance. Values are drawn from ``[-bound, bound]`` with ``bound <= 2**20`` so that one product
stays below ``2**40``; an output of magnitude :data:`EXACT_LIMIT` (``2**51``) or more means the sums came
too close to ``2**53`` and exactness is no longer assured.

Example:
    >>> gen = torch.Generator().manual_seed(0)
    >>> a = integers((2, 3), gen)
    >>> compare(a, a.clone()), compare(a, a + 1), compare(a, None), compare(a, a[:1])
    (<Verdict.EQUIVALENT: 'equivalent'>, <Verdict.NOT_EQUIVALENT: 'not equivalent'>, <Verdict.INVALID: 'invalid'>, <Verdict.SHAPES_DIFFER: 'output shapes differ'>)
"""
from __future__ import annotations

from typing import Iterable, Optional, Tuple

import torch

from .verdict import Verdict

__all__ = [
    "EXACT_RANGE",
    "MAX_EXACT_RANGE",
    "MAX_EXACT",
    "EXACT_LIMIT",
    "integers",
    "compare",
    "combine",
    "first_mismatch",
    "relative_error",
    "integer_valued",
    "within_exact_limit",
    "false_equivalent_bound",
    "WEAKEST_BOUND",
    "max_abs",
]

#: Default half-width of the integer draws: values in [-1024, 1024], 2049 of them.
EXACT_RANGE = 1024
#: Largest accepted half-width: one product of two draws stays below 2**40.
MAX_EXACT_RANGE = 2**20
#: float64 represents every integer of magnitude up to 2**53.
MAX_EXACT = 2.0**53
#: Outputs at or above this magnitude leave too little headroom below 2**53: exactness is not claimed.
EXACT_LIMIT = MAX_EXACT / 4

# Worst first, so that combining verdicts keeps the most informative failure.
_SEVERITY = (Verdict.INVALID, Verdict.SHAPES_DIFFER, Verdict.NOT_EQUIVALENT)


def integers(shape: Tuple[int, ...], gen: torch.Generator, bound: int = EXACT_RANGE) -> torch.Tensor:
    """Integer-valued float64 tensor, uniform over ``[-bound, bound]``, drawn from ``gen``.

    Example:
        >>> t = integers((1000,), torch.Generator().manual_seed(1), 3)
        >>> t.dtype, int(t.min()), int(t.max()), bool(torch.equal(t, t.round()))
        (torch.float64, -3, 3, True)
    """
    return torch.randint(-bound, bound + 1, tuple(shape), generator=gen, dtype=torch.int64).to(torch.float64)


def compare(reference: Optional[torch.Tensor], candidate: Optional[torch.Tensor]) -> Verdict:
    """Exact comparison of two outputs: ``None`` (could not be computed) is INVALID; NaN never equals.

    Example:
        >>> compare(torch.tensor([float("nan")]), torch.tensor([float("nan")])).value
        'not equivalent'
    """
    if reference is None or candidate is None:
        return Verdict.INVALID
    if reference.shape != candidate.shape:
        return Verdict.SHAPES_DIFFER
    return Verdict.EQUIVALENT if bool(torch.equal(reference, candidate)) else Verdict.NOT_EQUIVALENT


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """The verdict of several trials: equivalent only when every trial is; otherwise the worst failure.

    Example:
        >>> combine([Verdict.EQUIVALENT, Verdict.NOT_EQUIVALENT]).value, combine([]).value
        ('not equivalent', 'equivalent')
    """
    seen = set(verdicts)
    for v in _SEVERITY:
        if v in seen:
            return v
    return Verdict.EQUIVALENT


def first_mismatch(a: torch.Tensor, b: torch.Tensor, tol: float = 0.0) -> Optional[Tuple[int, ...]]:
    """Index of the first element (row-major order) where ``|a - b| > tol``, or None. NaN/Inf count as mismatches.

    Example:
        >>> first_mismatch(torch.zeros(2, 3), torch.tensor([[0., 0, 0], [0, 5, 1]]))
        (1, 1)
    """
    bad = ~((a - b).abs() <= tol)  # NaN compares unequal, so NaN or Inf differences count as mismatches
    if not bool(bad.any()):
        return None
    flat = int(torch.nonzero(bad.flatten())[0])
    index = []
    for size in reversed(a.shape):  # row-major unravel by hand: torch.unravel_index needs torch >= 2.2
        flat, rest = divmod(flat, size)
        index.append(rest)
    return tuple(reversed(index))


def max_abs(t: Optional[torch.Tensor]) -> float:
    """Largest absolute value as a float: 0 for None or an empty tensor, NaN when any entry is NaN (bool: 0 or 1).

    Example:
        >>> max_abs(torch.tensor([1.0, -3.0])), max_abs(torch.empty(0)), max_abs(torch.tensor([True, False]))
        (3.0, 0.0, 1.0)
    """
    if t is None or not t.numel():
        return 0.0
    t = t.detach()
    return float((t.to(torch.uint8) if t.dtype == torch.bool else t).abs().max())


def relative_error(approx: torch.Tensor, reference: torch.Tensor) -> float:
    """THE relative error of foldconv: ``max |approx - reference| / max |reference|`` (float64).

    Relative to the largest reference magnitude, not elementwise, so outputs near zero do not blow it up;
    when the reference is all zeros (or empty) it is the absolute error. NaN when either side is non-finite.

    Example:
        >>> relative_error(torch.tensor([1.0, 2.0, 4.5]), torch.tensor([1.0, 2.0, 4.0]))
        0.125
        >>> relative_error(torch.tensor([0.5]), torch.tensor([0.0]))
        0.5
    """
    reference = reference.to(torch.float64)
    diff = approx.to(torch.float64) - reference
    if not (bool(torch.isfinite(diff).all()) and bool(torch.isfinite(reference).all())):
        return float("nan")
    err, scale = max_abs(diff), max_abs(reference)
    return err / scale if scale > 0 else err


def integer_valued(t: torch.Tensor) -> bool:
    """Every entry is a finite integer (what exact comparison needs).

    Example:
        >>> integer_valued(torch.tensor([1.0, -3.0])), integer_valued(torch.tensor([0.5])), integer_valued(torch.tensor([float("inf")]))
        (True, False, False)
    """
    return bool(torch.isfinite(t).all()) and bool(torch.equal(t, t.round()))


def within_exact_limit(t: torch.Tensor) -> bool:
    """All magnitudes below :data:`EXACT_LIMIT` (2**51): sums of this size are still exact in float64.

    Example:
        >>> within_exact_limit(torch.tensor([2.0**50])), within_exact_limit(torch.tensor([2.0**52]))
        (True, False)
    """
    return max_abs(t) < EXACT_LIMIT


#: The weakest Schwartz–Zippel bound an exact verdict may state: above it (a high degree, a small exact_range or
#: few trials) the integer trials prove too little, and the verdict is sampled in float64 instead.
WEAKEST_BOUND = 1e-3


def false_equivalent_bound(degree: int, exact_range: int, trials: int) -> float:
    """Schwartz–Zippel: ``(degree / (2*exact_range + 1)) ** trials``, capped at 1.

    The probability that ``trials`` independent uniform integer draws all miss a non-zero polynomial
    difference of total degree ``degree``.

    Example:
        >>> f"{false_equivalent_bound(2, 1024, 3):.2e}"
        '9.30e-10'
    """
    return min(1.0, degree / (2 * exact_range + 1)) ** trials
