"""Tables (CSV, Markdown) and plots (PNG) shared by every experiment.

Rows are plain dicts; column order is the order of first appearance. Plots use matplotlib's Agg backend
so they render on machines with no display.
"""
from __future__ import annotations

import csv
import io
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

__all__ = ["columns_of", "format_value", "markdown_table", "write_csv", "read_csv", "write_markdown", "write_table", "figure", "save_figure"]

PathLike = Union[str, os.PathLike]


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


def write_csv(rows: Sequence[Mapping[str, Any]], path: PathLike, columns: Optional[Sequence[str]] = None) -> Path:
    """Write rows as CSV with full float precision (``repr``), so a re-read gives the same numbers.

    Example:
        >>> import tempfile, os
        >>> p = write_csv([{"a": 0.1, "b": "x"}], os.path.join(tempfile.mkdtemp(), "t.csv"))
        >>> read_csv(p)
        [{'a': '0.1', 'b': 'x'}]
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    columns = list(columns) if columns is not None else columns_of(rows)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
    writer.writeheader()
    for row in rows:
        writer.writerow({c: format_value(row.get(c), "r") for c in columns})
    path.write_text(buffer.getvalue())
    return path


def read_csv(path: PathLike) -> List[Dict[str, str]]:
    """Read a CSV written by :func:`write_csv` (values stay strings)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_markdown(text: str, path: PathLike) -> Path:
    """Write Markdown text (a trailing newline is added)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text.rstrip("\n") + "\n")
    return path


def write_table(rows: Sequence[Mapping[str, Any]], stem: PathLike, title: Optional[str] = None, columns: Optional[Sequence[str]] = None) -> Dict[str, Path]:
    """Write ``<stem>.csv`` and ``<stem>.md`` from the same rows; returns both paths."""
    stem = Path(stem)
    csv_path = write_csv(rows, stem.with_suffix(".csv"), columns)
    text = (f"# {title}\n\n" if title else "") + markdown_table(rows, columns)
    md_path = write_markdown(text, stem.with_suffix(".md"))
    return {"csv": csv_path, "md": md_path}


def figure(*args: Any, **kwargs: Any):
    """``matplotlib.pyplot.subplots`` on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig: Any, path: PathLike, dpi: int = 120) -> Path:
    """Save a figure as PNG and close it (deterministic: no timestamp metadata).

    Example:
        >>> import tempfile, os
        >>> fig, ax = figure()
        >>> _ = ax.plot([0, 1], [1, 0])
        >>> save_figure(fig, os.path.join(tempfile.mkdtemp(), "p.png")).suffix
        '.png'
    """
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    plt.close(fig)
    return path
