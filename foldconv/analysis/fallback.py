"""What an analysis does where its fast path (meta tensors, analytic rules) cannot answer: one vocabulary.

``fallback="error"`` raises a FoldError naming what stopped it; ``fallback="real"`` runs on real tensors
instead: :func:`~foldconv.analysis.counting.count` runs the model on real CPU tensors of the same shapes,
:func:`~foldconv.analysis.receptive_field.receptive_field` measures the node without a rule from gradients.

Example:
    >>> validate_fallback("real")
    'real'
"""
from __future__ import annotations

from typing import Any

from ..errors import fold_error

__all__ = ["FALLBACKS", "validate_fallback"]

FALLBACKS = ("error", "real")


def validate_fallback(fallback: Any, param: str = "fallback") -> str:
    """``fallback`` when it is one of :data:`FALLBACKS`, else a FoldError naming ``param``.

    Example:
        >>> validate_fallback("cpu")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: fallback='cpu': must be one of ['error', 'real']
    """
    if not isinstance(fallback, str) or fallback not in FALLBACKS:
        raise fold_error(param, fallback, f"must be one of {list(FALLBACKS)}")
    return fallback
