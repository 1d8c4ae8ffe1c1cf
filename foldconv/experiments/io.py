"""Files every experiment writes: tables (CSV, Markdown) and plots (PNG).

Rows are plain dicts (:func:`as_rows` makes them from result dataclasses); column order is the order of first
appearance. Figures are plain ``matplotlib.figure.Figure`` objects rendered straight to PNG: no pyplot state,
no window, and the caller's matplotlib backend is never touched (a notebook keeps its own).
"""
from __future__ import annotations

import csv
import dataclasses
import io
import os
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

from .._tables import columns_of, format_value, markdown_table
from ..errors import fold_error

__all__ = [
    "columns_of",
    "format_value",
    "markdown_table",
    "as_rows",
    "write_csv",
    "read_csv",
    "write_markdown",
    "write_table",
    "figure",
    "save_figure",
]

PathLike = Union[str, os.PathLike]


def as_rows(items: Iterable[Any]) -> List[Dict[str, Any]]:
    """Table rows from result dataclasses: one row per item, each field a column (``_`` read as a space).

    Example:
        >>> from foldconv.experiments.operators import LadderRow
        >>> as_rows([LadderRow("dense", 10)])
        [{'layer': 'dense', 'params': 10}]
    """
    rows = []
    for item in items:
        if not dataclasses.is_dataclass(item) or isinstance(item, type):
            raise fold_error("items", type(item).__name__, "must be dataclass instances (one per row)")
        rows.append({f.name.replace("_", " "): getattr(item, f.name) for f in dataclasses.fields(item)})
    return rows


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


def figure(nrows: int = 1, ncols: int = 1, *, figsize: Optional[Tuple[float, float]] = None, **subplots: Any):
    """A figure and its axes like ``pyplot.subplots``, without pyplot: nothing global, no backend chosen.

    Example:
        >>> fig, axes = figure(1, 2, figsize=(4, 2), squeeze=False)
        >>> axes.shape
        (1, 2)
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplots)


def save_figure(fig: Any, path: PathLike, dpi: int = 120) -> Path:
    """Save a figure from :func:`figure` as PNG and free it (deterministic: no timestamp metadata).

    Example:
        >>> import tempfile, os
        >>> fig, ax = figure()
        >>> _ = ax.plot([0, 1], [1, 0])
        >>> save_figure(fig, os.path.join(tempfile.mkdtemp(), "p.png")).suffix
        '.png'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi, metadata={"Software": None})
    fig.clear()
    return path
