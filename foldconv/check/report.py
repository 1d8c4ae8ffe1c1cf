"""What an equivalence check reports: the verdict, how it was reached, and the low-precision errors.

Example:
    >>> from foldconv.check import check_equivalence, derived
    >>> import torch
    >>> report = check_equivalence(torch.nn.Conv1d(2, 2, 3), derived(lambda m: m), (1, 2, 8))
    >>> report.ok, report.verdict.value, report.exact
    (True, 'equivalent', True)
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch

from .exact import max_abs, relative_error
from .verdict import Verdict

__all__ = ["ErrorStats", "EquivalenceReport"]


@dataclass(frozen=True)
class ErrorStats:
    """Errors of the candidate against the reference on real-valued (unit-normal) data in one dtype.

    Every entry is :func:`foldconv.check.exact.relative_error`-style: ``max_abs`` is the largest absolute
    difference, candidate vs reference, both run in ``dtype``; ``max_rel`` is the same relative to the largest
    float64 reference output. ``ref_vs_float64``/``cand_vs_float64``: each side in ``dtype`` against the
    float64 reference, absolute (the rounding each form suffers on its own).

    Example:
        >>> ErrorStats("float32", 1e-7, 1e-8, 0.0, 1e-7).dtype
        'float32'
    """

    dtype: str
    max_abs: float
    max_rel: float
    ref_vs_float64: float
    cand_vs_float64: float

    @classmethod
    def measure(cls, dtype: str, reference: torch.Tensor, candidate: torch.Tensor, reference64: torch.Tensor) -> ErrorStats:
        """The statistics of both sides' outputs in ``dtype`` against each other and the float64 reference.

        Example:
            >>> ErrorStats.measure("bfloat16", torch.ones(2), torch.tensor([1.0, 1.5]), torch.ones(2)).max_rel
            0.5
        """
        yr, yc = reference.to(torch.float64), candidate.to(torch.float64)
        y64 = reference64.to(torch.float64)
        return cls(dtype, max_abs(yr - yc), relative_error(yc, yr), max_abs(yr - y64), max_abs(yc - y64))


@dataclass(frozen=True)
class EquivalenceReport:
    """What :func:`~foldconv.check.check_equivalence` found. Truthy (and ``ok``) exactly when EQUIVALENT.

    ``exact``: the verdict was proved with integer arithmetic and every op that ran is on the polynomial
    allow-list; then ``false_equivalent_bound`` is the Schwartz–Zippel bound. Otherwise the verdict was
    sampled in float64 with a tolerance, ``false_equivalent_bound`` is None and ``reason`` says why
    (``non_polynomial_ops`` names the ops that ruled exactness out).

    Example:
        >>> r = EquivalenceReport(Verdict.NOT_EQUIVALENT, True, (1, 2), (1, 2), first_mismatch=(0, 1))
        >>> bool(r), r.summary()
        (False, 'not equivalent (exact), first mismatch at output index (0, 1)')
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
    non_polynomial_ops: Tuple[str, ...] = ()
    reason: str = ""

    def __bool__(self) -> bool:
        return self.verdict is Verdict.EQUIVALENT

    @property
    def ok(self) -> bool:
        """The verdict is EQUIVALENT (same as ``bool(report)``)."""
        return self.verdict is Verdict.EQUIVALENT

    def summary(self) -> str:
        """One line for logs and tables."""
        how = "exact" if self.exact else "float64 tolerance"
        text = f"{self.verdict.value} ({how})"
        if self.false_equivalent_bound is not None and self.ok and self.exact:
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
