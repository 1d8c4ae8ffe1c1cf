"""Files every experiment writes: tables (CSV, Markdown), plots (PNG), the run's index.md; and the
progress bar and resumable row log of long runs.

Rows are plain dicts (:func:`as_rows` makes them from result dataclasses); column order is the order of first
appearance. Figures are plain ``matplotlib.figure.Figure`` objects rendered straight to PNG: no pyplot state,
no window, and the caller's matplotlib backend is never touched (a notebook keeps its own).

Every file is written whole or not at all (a temporary file renamed into place), except :class:`RowLog`'s
CSV, which grows one complete line at a time so that a killed run keeps every finished row and a rerun
resumes from them.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Set, Tuple, Union

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
    "label_step",
    "no_data",
    "legend_beside",
    "MIN_FONT_PT",
    "write_atomic",
    "RowLog",
    "progress_bar",
    "duration",
    "write_index",
    "is_true",
]

PathLike = Union[str, os.PathLike]


def is_true(value: Any) -> bool:
    """A boolean cell, as written (``True``) or read back from CSV (``"True"``); anything else is false.

    Example:
        >>> is_true(True), is_true("True"), is_true("False"), is_true(""), is_true(None)
        (True, True, False, False, False)
    """
    return value is True or value == "True"


def as_rows(items: Iterable[Any]) -> List[Dict[str, Any]]:
    """Table rows from result dataclasses: one row per item, each field a column (``_`` read as a space).

    Example:
        >>> from foldconv.analysis.counting import LadderRow
        >>> as_rows([LadderRow("dense", 10)])
        [{'layer': 'dense', 'params': 10, 'local': False, 'shared': False}]
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
    return write_atomic(path, _csv_text(rows, columns, header=True))


def _csv_text(rows: Sequence[Mapping[str, Any]], columns: Sequence[str], *, header: bool) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n", extrasaction="ignore")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({c: format_value(row.get(c), "r") for c in columns})
    return buffer.getvalue()


def write_atomic(path: PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` whole or not at all: a temporary file in the same folder, flushed to disk,
    then renamed over ``path`` (a rename is atomic), so a kill at any instant leaves the old file or the new.

    Example:
        >>> import tempfile, os
        >>> p = write_atomic(os.path.join(tempfile.mkdtemp(), "a.txt"), "hello\\n")
        >>> p.read_text(), sorted(os.listdir(p.parent))
        ('hello\\n', ['a.txt'])
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_csv(path: PathLike) -> List[Dict[str, str]]:
    """Read a CSV written by :func:`write_csv` (values stay strings)."""
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def write_markdown(text: str, path: PathLike) -> Path:
    """Write Markdown text (a trailing newline is added)."""
    return write_atomic(path, text.rstrip("\n") + "\n")


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
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)  # this figure's own canvas (layout needs a renderer); pyplot's backend is untouched
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
    # bbox_inches="tight" grows the saved area to every artist's extent, so no title or label is cut off
    fig.savefig(path, dpi=dpi, metadata={"Software": None}, bbox_inches="tight", pad_inches=0.05)
    fig.clear()
    return path


#: The smallest font any figure of the experiments uses (tests/experiments/test_png_text_fits.py checks it).
MIN_FONT_PT = 8


def label_step(count: int, max_labels: int) -> int:
    """Name every k-th of ``count`` ticks so that at most ``max_labels`` names are drawn (k >= 1).

    Example:
        >>> label_step(40, 150), label_step(300, 150), label_step(301, 150)
        (1, 2, 3)
    """
    return max(1, -(-count // max_labels))


def no_data(ax: Any, why: str) -> None:
    """Mark an axes that has nothing to draw: "no data" and why, in its middle, and no ticks, so an empty panel
    is never read as a grid of zeros or a missing file.

    Example:
        >>> fig, ax = figure(figsize=(3, 2))
        >>> no_data(ax, "no modes rows in this shard")
        >>> ax.texts[0].get_text()
        'no data\\nno modes rows in this shard'
    """
    ax.set_xticks([])
    ax.set_yticks([])
    ax.text(0.5, 0.5, f"no data\n{why}", ha="center", va="center", fontsize=9, color="0.35", transform=ax.transAxes, wrap=True)


def legend_beside(ax: Any, **options: Any) -> Any:
    """The axes' legend to the right of its plot area, outside the data, so it never covers a bar or its label.

    Example:
        >>> fig, ax = figure(figsize=(3, 2))
        >>> _ = ax.bar([0], [1], label="holds")
        >>> legend_beside(ax).get_texts()[0].get_text()
        'holds'
    """
    return ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0, fontsize=8, frameon=False, **options)


def _flat(config: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    out: Dict[str, Any] = {}
    for key, value in config.items():
        if isinstance(value, Mapping):
            out.update(_flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


class RowLog:
    """A CSV that grows one complete row at a time and that a rerun of the same config resumes.

    ``path`` (e.g. ``results.csv``) gets ``columns`` as its header; ``config`` (plain data: what decides the
    rows) is stored beside it in ``<stem>.config.json``. Opening an existing log with the same config and
    columns resumes it: :attr:`done` holds the keys (the values of ``key`` columns, as written) of the rows
    already there, so the caller skips them. A different config or header is a FoldError naming ``param``
    (the run directory), so the app refuses in one line instead of mixing two runs in one table.

    Crash safety: the header is created by an atomic rename, so the file exists only with a complete header;
    each row is one ``write(2)`` of one whole line to a file opened for appending, so a killed process
    leaves every row it finished (the kernel holds the data; ``fsync`` runs at most every ``sync_s`` seconds
    and on close, for a power cut). A torn last line (a full disk, a power cut mid-write) is cut off when the
    log is opened again, so the file read back is always a valid CSV of complete rows.

    Example:
        >>> import tempfile, os
        >>> path = os.path.join(tempfile.mkdtemp(), "results.csv")
        >>> with RowLog(path, ["k", "v"], key=["k"], config={"n": 2}) as log:
        ...     log.append({"k": 1, "v": 0.5})
        >>> log = RowLog(path, ["k", "v"], key=["k"], config={"n": 2})  # the same config: resume
        >>> log.done, log.key_of({"k": 1}) in log.done
        ({('1',)}, True)
        >>> log.close()
        >>> RowLog(path, ["k", "v"], key=["k"], config={"n": 3})
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: run_dir=...: holds results.csv of a different config (n: 2 there, 3 now); rerun with the same config to resume it, or use a new run directory
    """

    def __init__(
        self, path: PathLike, columns: Sequence[str], *, key: Sequence[str], config: Mapping[str, Any],
        param: str = "run_dir", sync_s: float = 1.0,
    ) -> None:
        self.path = Path(path)
        self.columns = list(columns)
        self.key = list(key)
        self.config_path = self.path.with_name(self.path.stem + ".config.json")
        self.sync_s = sync_s
        missing = [k for k in self.key if k not in self.columns]
        if missing:
            raise fold_error("key", missing, f"must be columns of the log ({self.columns})")
        config = json.loads(json.dumps(config, sort_keys=True, default=str))
        self.done: Set[Tuple[str, ...]] = set()
        if self.path.exists():
            self._check(config, param)
            self._repair()
            self.done = {self.key_of(row) for row in read_csv(self.path)}
        else:
            write_atomic(self.config_path, json.dumps(config, sort_keys=True, indent=1) + "\n")
            write_atomic(self.path, _csv_text([], self.columns, header=True))
        self.resumed = len(self.done)
        self._fd: Optional[int] = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._synced = time.monotonic()

    def _check(self, config: Dict[str, Any], param: str) -> None:
        where = str(self.path.parent)
        if not self.config_path.exists():
            raise fold_error(param, where, f"holds a {self.path.name} without {self.config_path.name} (not written by this app, or by an older version); use a new run directory")
        old = json.loads(self.config_path.read_text())
        if old != config:
            a, b = _flat(old), _flat(config)
            diff = [f"{k}: {a.get(k, 'absent')} there, {b.get(k, 'absent')} now" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]
            shown = "; ".join(diff[:3]) + (f"; and {len(diff) - 3} more" if len(diff) > 3 else "")
            raise fold_error(param, where, f"holds {self.path.name} of a different config ({shown}); rerun with the same config to resume it, or use a new run directory")
        with open(self.path, newline="") as handle:
            header = next(csv.reader(handle), [])
        if header != self.columns:
            raise fold_error(param, where, f"{self.path.name} has other columns than this run writes; use a new run directory")

    def _repair(self) -> None:
        data = self.path.read_bytes()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a torn last line: keep the complete rows before it
            with open(self.path, "r+b") as handle:
                handle.truncate(end)
                os.fsync(handle.fileno())

    def key_of(self, row: Mapping[str, Any]) -> Tuple[str, ...]:
        """The key of a row, as its key columns are written (so raw and read-back rows compare equal)."""
        return tuple(format_value(row.get(k), "r") for k in self.key)

    def append(self, row: Mapping[str, Any]) -> None:
        """Append one row (one whole line in one write) and remember its key."""
        if self._fd is None:
            raise fold_error("log", str(self.path), "is closed")
        data = _csv_text([row], self.columns, header=False).encode()
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view):]
        self.done.add(self.key_of(row))
        if time.monotonic() - self._synced >= self.sync_s:
            os.fsync(self._fd)
            self._synced = time.monotonic()

    def rows(self) -> List[Dict[str, str]]:
        """Every row in the file (values as strings, as :func:`read_csv` gives them)."""
        return read_csv(self.path)

    def close(self) -> None:
        if self._fd is not None:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> RowLog:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def status(line: str) -> None:
    """Print a progress or status line of a run (plans, estimates, time taken) on stderr, where tqdm's bars go,
    so that stdout holds only the app's answer (a JSON document with ``format=json``).

    Example:
        >>> status("2 models; about 10 s")  # on stderr
    """
    print(line, file=sys.stderr, flush=True)


def progress_bar(items: Iterable[Any], desc: str, *, total: Optional[int] = None, unit: str = "it") -> Iterable[Any]:
    """A tqdm bar over ``items`` on stderr, redrawn at most twice a second, only when stderr is a terminal. The library below ``experiments/`` never imports tqdm: it takes this as a callback.

    Example:
        >>> sum(progress_bar(range(3), "demo", unit="cfg"))
        3
    """
    from tqdm.auto import tqdm

    # disable=None: no bar when stderr is not a terminal (a log file, a pipe, a test), so an error stays one line
    return tqdm(items, desc=desc, total=total, unit=unit, mininterval=0.5, dynamic_ncols=True, disable=None)


def duration(seconds: float) -> str:
    """A rough duration for estimates: ``'40 s'``, ``'3 min'``, ``'2 h 25 min'``.

    Example:
        >>> duration(39.6), duration(200), duration(8700)
        ('40 s', '3 min', '2 h 25 min')
    """
    if seconds < 90:
        return f"{max(1, round(seconds))} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min".replace(" 00 min", "")


def write_index(out: PathLike, described: Mapping[str, str], *, title: str, answer: str = "") -> Path:
    """``index.md`` in ``out``: the run's answer, then one line per file written, each a link with what it holds.

    ``described`` maps a file name (or glob pattern such as ``*_layers.png``) to its one-line description;
    only files that exist and hold something are listed (each pattern once per match), then any other such file
    of ``out``: an empty file (the log of an app that logged nothing) is not an output worth opening.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp()); _ = write_markdown("# hi", d / "summary.md")
        >>> print(write_index(d, {"summary.md": "the answer first"}, title="Demo").read_text().splitlines()[-1])
        - [summary.md](summary.md): the answer first
    """
    out = Path(out)
    listed: List[str] = []
    lines = [f"# {title}", ""] + ([answer, ""] if answer else []) + ["Files of this run:", ""]
    for pattern, text in described.items():
        for path in sorted(out.glob(pattern)):
            if path.is_file() and path.stat().st_size and path.name not in listed:
                listed.append(path.name)
                lines.append(f"- [{path.name}]({path.name}): {text}")
    others = sorted(p.name for p in out.iterdir() if p.is_file() and p.stat().st_size and p.name not in listed
                    and p.name != "index.md" and not p.name.startswith("."))
    lines += [f"- [{name}]({name})" for name in others]
    if (out / ".hydra").is_dir():
        lines.append("- [.hydra/config.yaml](.hydra/config.yaml): the composed config of this run (and overrides.yaml: the command line)")
    return write_markdown("\n".join(lines), out / "index.md")
