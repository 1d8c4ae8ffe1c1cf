"""Plain-text tables (Markdown cells and rows), shared by reports in every layer. No file I/O here.

Example:
    >>> print(markdown_table([{"form": "3x3", "params": 9}]))
    | form | params |
    |---|---|
    | 3x3 | 9 |
"""
from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ["columns_of", "format_value", "markdown_table"]


def columns_of(rows: Sequence[Mapping[str, Any]]) -> List[str]:
    """Union of the rows' keys, in order of first appearance.

    Example:
        >>> columns_of([{"a": 1}, {"b": 2, "a": 3}])
        ['a', 'b']
    """
    seen: Dict[str, None] = {}
    for row in rows:
        for key in row:
            seen.setdefault(key, None)
    return list(seen)


def format_value(value: Any, floatfmt: str = ".4g") -> str:
    """How a cell is written: floats with ``floatfmt``, tuples without spaces, None as empty.

    Example:
        >>> format_value(0.000123456), format_value((3, 3)), format_value(None)
        ('0.0001235', '(3,3)', '')
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        return repr(value) if floatfmt == "r" else format(value, floatfmt)
    if isinstance(value, tuple):
        return "(" + ",".join(format_value(v, floatfmt) for v in value) + ")"
    return str(value)


def markdown_table(rows: Sequence[Mapping[str, Any]], columns: Optional[Sequence[str]] = None, floatfmt: str = ".4g") -> str:
    """A GitHub-flavoured Markdown table.

    Example:
        >>> print(markdown_table([{"form": "3x3", "params": 9}]))
        | form | params |
        |---|---|
        | 3x3 | 9 |
    """
    columns = list(columns) if columns is not None else columns_of(rows)
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [format_value(row.get(c), floatfmt).replace("|", "\\|") for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
