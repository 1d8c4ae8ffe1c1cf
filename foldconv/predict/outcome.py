"""What a prediction says: an :class:`Outcome`, the literal construction's :class:`~foldconv.check.Verdict`, and why.

Every predictor of :mod:`foldconv.predict` returns one :class:`Prediction`. A malformed request (a value no
fold can take: ``r=0``, an unknown order, an empty input) is a Prediction with ``Outcome.INVALID`` whose first
reason starts with ``"<param>=<value>:"``; predictors raise :class:`~foldconv.FoldError` only when they have no
rule for what they were given (an unknown layer type).

Example:
    >>> p = Prediction(Outcome.HOLDS, Verdict.EQUIVALENT, codes=("FOLD-1",))
    >>> p.outcome.value, p.literal.value, p.code, p.reason
    ('holds', 'equivalent', 'FOLD-1', 'all conditions of the fold theorem hold')
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Optional, Tuple

from ..check import Verdict
from ..errors import FoldError
from ..specs import ConvSpec

__all__ = ["Outcome", "Prediction", "SizeFix", "invalid", "holds", "fails", "Verdict"]


class Outcome(str, Enum):
    """Overall answer for one configuration."""

    HOLDS = "holds"  # the literal construction is the same computation
    HOLDS_IF = "holds with conditions"  # an equivalent form exists, with the stated changes
    FAILS = "fails"  # no form of this kind computes the same function
    INVALID = "invalid"  # the request itself is malformed, or torch cannot run the original


@dataclass(frozen=True)
class SizeFix:
    """How a map whose size is not a multiple of ``r`` is made foldable (:func:`predict_space_to_depth`).

    ``crop_exact``: cropping the end of every axis to ``crop_to = floor(n/r)*r`` changes no output.
    ``pad_exact``: zero-padding the end to ``pad_to = ceil(n/r)*r`` and keeping the first ``outputs`` outputs
    per axis is exact. ``divisible``: nothing needs fixing.
    """

    divisible: bool
    crop_to: Tuple[int, ...]
    pad_to: Tuple[int, ...]
    crop_exact: bool
    pad_exact: bool
    outputs: Tuple[int, ...]


@dataclass(frozen=True)
class Prediction:
    """A predicted outcome with the literal construction's verdict, the fix, and the reasons.

    ``literal``: the verdict the equivalence checker would give the literal construction. ``folded``: the
    spec of the equivalent conv when one exists (the folded conv for :func:`predict_fold`, the unfolded one for
    :func:`predict_space_to_depth`). ``conditions``: what must change for HOLDS_IF. ``codes``: claim IDs in
    ``paper_notes/claims.md``. ``density``: fraction of the equivalent kernel that is not structurally zero.
    ``size_fix``: the crop/pad answer of :func:`predict_space_to_depth` (None elsewhere).
    """

    outcome: Outcome
    literal: Verdict
    folded: Optional[ConvSpec] = None
    conditions: Tuple[str, ...] = ()
    reasons: Tuple[str, ...] = ()
    codes: Tuple[str, ...] = ()
    density: float = 1.0
    size_fix: Optional[SizeFix] = None

    @property
    def reason(self) -> str:
        """All reasons on one line."""
        return "; ".join(self.reasons) if self.reasons else "all conditions of the fold theorem hold"

    @property
    def code(self) -> str:
        """All codes on one line (``"FOLD-4+FOLD-7"``)."""
        return "+".join(self.codes) if self.codes else "theorem"


def invalid(err: FoldError | str, code: str = "invalid-input") -> Prediction:
    """The INVALID prediction for a malformed request; its reason is the FoldError's message.

    Example:
        >>> from foldconv.errors import fold_error
        >>> invalid(fold_error("r", 0, "must be an integer >= 1")).reason
        'r=0: must be an integer >= 1'
    """
    return Prediction(Outcome.INVALID, Verdict.INVALID, reasons=(str(err),), codes=(code,))


def holds(reason: str, code: str) -> Prediction:
    """The HOLDS prediction of a literal construction that is the same computation, with its reason and claim code.

    Example:
        >>> holds("elementwise", "RULE-1").outcome.value
        'holds'
    """
    return Prediction(Outcome.HOLDS, Verdict.EQUIVALENT, reasons=(reason,), codes=(code,))


def fails(literal: Verdict, reason: str, code: str) -> Prediction:
    """The FAILS prediction, with the verdict the checker gives the literal construction, its reason and claim code.

    Example:
        >>> fails(Verdict.NOT_EQUIVALENT, "mixes channels", "RULE-6").literal.value
        'not equivalent'
    """
    return Prediction(Outcome.FAILS, literal, reasons=(reason,), codes=(code,))
