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

from ..analysis.counting.counter import CountReport
from ..errors import fold_error
from .io import figure, save_figure

__all__ = ["plot_layers", "plot_comparison"]


def plot_layers(report: CountReport, path: Union[str, Path], max_layers: int = 120) -> Path:
    """Two panels, parameters and MACs per layer in execution order (layers with neither are left out).

    Beyond ``max_layers`` bars the labels are dropped (the bars stay) so the figure remains readable.
    """
    rows = [row for row in report.rows() if row["params"] or row["macs"]]
    if not rows:
        raise fold_error("report", report.model, "has no layer with parameters or MACs to plot")
    width = min(max(7.0, 4 + 0.12 * len(rows)), 24)  # wide enough for the title, even for one layer
    fig, axes = figure(2, 1, figsize=(width, 6), sharex=True)
    xs = range(len(rows))
    for ax, key, label in ((axes[0], "params", "parameters"), (axes[1], "macs", "MACs")):
        ax.bar(xs, [row[key] for row in rows], color="tab:blue" if key == "params" else "tab:orange")
        ax.set_ylabel(label)
        ax.set_yscale("symlog", linthresh=1)
    axes[0].set_title(f"{report.model}: parameters and MACs per layer (input {report.input_shapes[0]})", fontsize=10)
    if len(rows) <= max_layers:
        axes[1].set_xticks(list(xs))
        axes[1].set_xticklabels([row["layer"] for row in rows], rotation=90, fontsize=6)
    else:
        axes[1].set_xlabel(f"layer index ({len(rows)} layers, execution order)")
    return save_figure(fig, path)


def plot_comparison(reports: Sequence[CountReport], path: Union[str, Path]) -> Path:
    """Parameters against MACs, one labelled point per model (log-log).

    Example:
        >>> import os, tempfile, torch
        >>> from foldconv.analysis.counting import count
        >>> reps = [count(torch.nn.Linear(4, n), (1, 4), name=f"fc{n}") for n in (2, 8)]
        >>> plot_comparison(reps, os.path.join(tempfile.mkdtemp(), "cmp.png")).name
        'cmp.png'
    """
    if not reports:
        raise fold_error("reports", list(reports), "must hold at least one CountReport")
    fig, ax = figure(figsize=(7, 5))
    for rep in reports:
        ax.scatter([rep.params], [rep.macs], s=18)
        ax.annotate(rep.model, (rep.params, rep.macs), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("MACs per sample")
    ax.set_title("models: parameters vs MACs")
    ax.grid(True, which="major", alpha=0.3)
    return save_figure(fig, path)
