"""torch's padding modes as index arithmetic: the one definition every index-level analysis uses.

Example:
    >>> padded_source(-1, 4, "circular"), padded_source(-1, 4, "reflect"), padded_source(-1, 4, "zeros")
    (3, 1, None)
"""
from __future__ import annotations

from typing import Optional, Sequence

from .errors import fold_error

__all__ = ["PADDING_MODES", "padded_source", "require_padding_fits"]

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


def require_padding_fits(input_size: Sequence[int], padding: Sequence[int], mode: str, *, param: str = "input_size",
                         what: str = "the input") -> None:
    """torch's limits on padding larger than the input, as a FoldError naming ``param``: ``"input_size"`` (the
    map is too small) or ``"padding"`` (the padding too large for ``what``, the map of size ``input_size``).

    ``circular`` wraps at most once (``P <= n``), ``reflect`` mirrors without the edge (``P < n``);
    ``zeros`` and ``replicate`` take any padding.

    Example:
        >>> require_padding_fits((4, 4), (4, 1), "circular")
        >>> require_padding_fits((4, 4), (4, 1), "reflect")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: input_size=(4, 4): is too small for reflect padding (4, 1): torch needs padding < size on every axis
        >>> require_padding_fits((4, 4), (4, 1), "reflect", param="padding")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: padding=(4, 1): reflect padding does not fit the input (4, 4): torch needs padding < size on every axis
    """
    if mode not in PADDING_MODES:
        raise fold_error("padding_mode", mode, f"must be one of {PADDING_MODES}")
    strict = {"circular": False, "reflect": True}.get(mode)
    if strict is None:
        return
    if any(p > n or (strict and p == n and p > 0) for n, p in zip(input_size, padding)):
        needs = f"torch needs {'padding < size' if strict else 'padding <= size'} on every axis"
        if param == "input_size":
            raise fold_error("input_size", tuple(input_size), f"is too small for {mode} padding {tuple(padding)}: {needs}")
        raise fold_error(param, tuple(padding), f"{mode} padding does not fit {what} {tuple(input_size)}: {needs}")
