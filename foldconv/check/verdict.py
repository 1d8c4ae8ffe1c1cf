"""The one verdict of foldconv: what an equivalence check (or a prediction of one) says about two forms.

The string values are the ones written into CSV tables, so they never change.

Example:
    >>> from foldconv.check import Verdict
    >>> Verdict("output shapes differ") is Verdict.SHAPES_DIFFER, Verdict.INVALID.value
    (True, 'invalid')
"""
from __future__ import annotations

from enum import Enum

__all__ = ["Verdict"]


class Verdict(str, Enum):
    """Outcome of comparing two computations.

    ``INVALID``: one side cannot be built or run at all (a malformed request, or torch refuses it).
    """

    EQUIVALENT = "equivalent"
    NOT_EQUIVALENT = "not equivalent"
    SHAPES_DIFFER = "output shapes differ"
    INVALID = "invalid"
