"""Plots of counts: parameters and MACs per layer of one model, and a comparison of models.

Example:
    >>> import os, tempfile, torch
    >>> from foldconv.analysis.counting import count
    >>> rep = count(torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.Conv2d(8, 8, 3)), (1, 3, 16, 16))
    >>> plot_layers(rep, os.path.join(tempfile.mkdtemp(), "layers.png")).suffix
    '.png'
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

from .._validate import require_int
from ..analysis.counting.counter import CountReport
from ..errors import fold_error
from .io import figure, label_step, save_figure

__all__ = ["plot_layers", "plot_comparison", "short_count"]


def short_count(value: float) -> str:
    """A count as people read it, three significant digits: ``950``, ``12.3k``, ``500k``, ``4.1M``, ``1.8G``.

    Example:
        >>> short_count(950), short_count(12345), short_count(500_000), short_count(4_100_000), short_count(1.8e9)
        ('950', '12.3k', '500k', '4.1M', '1.8G')
    """
    for size, unit in ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.3g}{unit}"
    return f"{value:g}"


def _labelled_bars(ax, ys, values, colour: str) -> None:
    """Horizontal bars from 0 on a linear axis, each labelled with its value: lengths compare as the numbers do
    (an 11x difference looks 11x), and a bar too short to see still has its number."""
    ax.barh(ys, values, color=colour)
    top = max(list(values) + [1])
    for y, v in zip(ys, values):
        ax.text(v + top * 0.01, y, short_count(v), va="center", fontsize=8)
    ax.set_xlim(0, top * 1.22)  # room for the labels
    ax.xaxis.set_major_formatter(_formatter())


def _formatter():
    from matplotlib.ticker import FuncFormatter

    return FuncFormatter(lambda v, _: short_count(v))


def plot_layers(report: CountReport, path: Union[str, Path], max_labels: int = 150) -> Path:
    """Two panels side by side, parameters and MACs per layer as horizontal bars, layers top to bottom in
    execution order (layers with neither are left out).

    The figure grows taller with the layers so every name stays at 8 pt; beyond ``max_labels`` layers only
    every k-th is named (the bars all stay).
    """
    rows = [row for row in report.rows() if row["params"] or row["macs"]]
    if not rows:
        raise fold_error("report", report.model, "has no layer with parameters or MACs to plot")
    require_int(max_labels, "max_labels", 1)
    step = label_step(len(rows), max_labels)
    height = min(max(3.0, 1.6 + 0.16 * len(rows) / step), 60.0)
    fig, axes = figure(1, 2, figsize=(10.0, height), sharey=True)
    ys = range(len(rows))
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "macs", "MACs")):
        _labelled_bars(ax, list(ys), [row[key] for row in rows], "tab:blue" if key == "params" else "tab:orange")
        ax.set_xlabel(f"{label} per layer (linear, from 0; each bar labelled)")
        ax.grid(True, axis="x", alpha=0.3)
    shown = list(ys)[::step]
    axes[0].set_yticks(shown, [rows[k]["layer"] for k in shown], fontsize=8)
    axes[0].set_ylim(len(rows) - 0.5, -0.5)  # first layer at the top
    axes[0].set_ylabel("layer (execution order)" + (f"; one in {step} of {len(rows)} named" if step > 1 else ""))
    # one title over both panels, on the left axes: a suptitle collides with the top bars of tall figures
    axes[0].set_title(f"{report.model}: parameters and MACs per layer (input {report.input_shapes[0]})", fontsize=10, loc="left")
    return save_figure(fig, path)


def plot_comparison(reports: Sequence[CountReport], path: Union[str, Path]) -> Path:
    """Parameters and MACs per model: two panels of labelled horizontal bars from 0, one bar per model (a single
    model gets two labelled bars, not a lone dot on log-log axes).

    Example:
        >>> import os, tempfile, torch
        >>> from foldconv.analysis.counting import count
        >>> reps = [count(torch.nn.Linear(4, n), (1, 4), name=f"fc{n}") for n in (2, 8)]
        >>> plot_comparison(reps, os.path.join(tempfile.mkdtemp(), "cmp.png")).name
        'cmp.png'
    """
    if not reports:
        raise fold_error("reports", list(reports), "must hold at least one CountReport")
    names = [rep.model for rep in reports]
    fig, axes = figure(1, 2, figsize=(10.0, 1.6 + 0.35 * len(reports)), sharey=True)
    ys = list(range(len(reports)))
    for ax, key, label, colour in ((axes[0], "params", "parameters", "tab:blue"), (axes[1], "macs", "MACs per sample", "tab:orange")):
        _labelled_bars(ax, ys, [getattr(rep, key) for rep in reports], colour)
        ax.set_xlabel(f"{label} (linear, from 0)")
        ax.grid(True, axis="x", alpha=0.3)
    axes[0].set_yticks(ys, names, fontsize=8)
    axes[0].set_ylim(len(reports) - 0.5, -0.5)
    axes[0].set_title("parameters and MACs per model" if len(reports) > 1 else f"{names[0]}: parameters and MACs", fontsize=10, loc="left")
    return save_figure(fig, path)
