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

__all__ = ["plot_layers", "plot_comparison"]


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
        ax.barh(ys, [row[key] for row in rows], color="tab:blue" if key == "params" else "tab:orange")
        ax.set_xlabel(f"{label} (symlog scale)")
        ax.set_xscale("symlog", linthresh=1)
        ax.grid(True, axis="x", alpha=0.3)
    shown = list(ys)[::step]
    axes[0].set_yticks(shown, [rows[k]["layer"] for k in shown], fontsize=8)
    axes[0].set_ylim(len(rows) - 0.5, -0.5)  # first layer at the top
    axes[0].set_ylabel("layer (execution order)" + (f"; every {step}th of {len(rows)} named" if step > 1 else ""))
    # one title over both panels, on the left axes: a suptitle collides with the top bars of tall figures
    axes[0].set_title(f"{report.model}: parameters and MACs per layer (input {report.input_shapes[0]})", fontsize=10, loc="left")
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
        ax.annotate(rep.model, (rep.params, rep.macs), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("MACs per sample")
    ax.set_title("models: parameters vs MACs")
    ax.grid(True, which="major", alpha=0.3)
    return save_figure(fig, path)
