"""torch's padding modes as index arithmetic: the one definition every index-level analysis uses.

Example:
    >>> padded_source(-1, 4, "circular"), padded_source(-1, 4, "reflect"), padded_source(-1, 4, "zeros")
    (3, 1, None)
"""
from __future__ import annotations

from typing import Optional

from .errors import fold_error

__all__ = ["PADDING_MODES", "padded_source"]

PADDING_MODES = ("zeros", "circular", "reflect", "replicate")


def padded_source(q: int, n: int, mode: str) -> Optional[int]:
    """The input index that padded position ``q`` of an axis of size ``n`` reads, or None for a zero.

    The one definition of torch's padding modes used by every index-level analysis (prediction, operator
    counts, A·X·W factors, receptive-field boxes). ``reflect`` does not repeat the edge.

    Example:
        >>> [padded_source(q, 3, m) for m in PADDING_MODES for q in (-1, 3)]
        [None, None, 2, 0, 1, 1, 0, 2]
    """
    if 0 <= q < n:
        return q
    if mode == "zeros":
        return None
    if mode == "circular":
        return q % n
    if mode == "replicate":
        return min(max(q, 0), n - 1)
    if mode == "reflect":
        period = 2 * (n - 1) if n > 1 else 1
        q = abs(q) % period
        return q if q < n else period - q
    raise fold_error("padding_mode", mode, f"must be one of {PADDING_MODES}")
