"""Equivalence checking: one verdict enum and the integer-exact checker.

Example:
    >>> import torch
    >>> from foldconv.check import check_fold
    >>> check_fold(torch.nn.Conv2d(8, 2, 3), 2).verdict.value
    'equivalent'
"""
from .equivalence import Derived, check_equivalence, check_fold, derived
from .options import as_float_dtype, no_tf32
from .report import EquivalenceReport, ErrorStats
from .verdict import Verdict

__all__ = [
    "Derived", "EquivalenceReport", "ErrorStats", "Verdict", "as_float_dtype", "check_equivalence", "check_fold", "derived", "no_tf32",
]
