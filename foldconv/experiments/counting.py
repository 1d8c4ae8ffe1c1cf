"""The counting experiment: count models, write every view, check the figures, plot.

``scripts/count.py`` builds the models (torchvision names or Hydra ``_target_`` s) and hands them here
as :class:`CountJob` s; everything it writes comes from :func:`run_count_jobs`.

Example:
    >>> import tempfile, torch
    >>> job = CountJob("tiny", torch.nn.Conv2d(16, 4, 3), (1, 16, 8, 8), expect={"params": 580})
    >>> checks = run_count_jobs([job], tempfile.mkdtemp(), fold_rs=(2,), plot=False)
    >>> [(c["check"], c["ok"]) for c in checks]
    [('params == sum(numel)', True), ('macs == FlopCounterMode/2', True), ('expect params', True), ('fold_conv r=2 keeps params and macs', True)]
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from torch import nn

from ..errors import fold_error
from ..layout import IntOrTuple, Order
from .io import write_table
from ..analysis.counting.dense import d2l_table, dense_equivalents
from ..analysis.counting.fold import DEFAULT_RS, compare_fold, compare_model_fold, fold_matrix, foldable_layers
from .count_plots import plot_comparison, plot_layers
from ..analysis.counting.zoo import validate_count
from ..analysis.counting.counter import CountReport, count

__all__ = ["CountJob", "run_count_jobs"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class CountJob:
    """One model to count: a label for file names, the module, the input shape (with batch axis),
    optional published figures (``num_params``, ``gmacs``) and exact expectations (``params``, ``macs``, ...)."""

    label: str
    model: nn.Module
    input_shape: Tuple[int, ...]
    published: Optional[Dict[str, Any]] = None
    expect: Dict[str, int] = field(default_factory=dict)


def _check(checks: List[Dict[str, Any]], label: str, name: str, expected: Any, measured: Any) -> None:
    checks.append({"model": label, "check": name, "expected": expected, "measured": measured, "ok": expected == measured})


def run_count_jobs(
    jobs: Sequence[CountJob],
    out_dir: Union[str, Path],
    fold_rs: Sequence[IntOrTuple] = DEFAULT_RS,
    fold_order: Order = "crd",
    fold_compare_r: Optional[IntOrTuple] = 2,
    check_flop_counter: bool = True,
    plot: bool = True,
    d2l: bool = False,
) -> List[Dict[str, Any]]:
    """Count every job, write ``<label>_*.{csv,md}`` (+ ``<label>_layers.png``), ``comparison``,
    ``checks`` (+ ``comparison.png``) into ``out_dir`` and return the check rows (``ok`` per check).

    Checks: parameters equal ``sum(p.numel())``; MACs equal FlopCounterMode/2 (when
    ``check_flop_counter``); published and expected figures; and, for ``fold_compare_r``, that folding
    every cost-neutral conv keeps parameters and MACs.
    """
    if not jobs:
        raise fold_error("jobs", list(jobs), "must hold at least one CountJob")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    checks: List[Dict[str, Any]] = []
    reports: List[CountReport] = []
    for job in jobs:
        if check_flop_counter:
            row = validate_count(job.model, job.input_shape, name=job.label)
            report = row["report"]
        else:
            report = count(job.model, job.input_shape, name=job.label)
        reports.append(report)
        numel = sum(p.numel() for p in job.model.parameters())
        _check(checks, job.label, "params == sum(numel)", numel, report.params)
        if check_flop_counter:
            _check(checks, job.label, "macs == FlopCounterMode/2", row["flop_counter_macs"], report.macs)
        if job.published:
            _check(checks, job.label, "published params", job.published["num_params"], report.params)
            _check(checks, job.label, "published GMACs (3 decimals)", job.published["gmacs"], round(report.macs / 1e9, 3))
        for key, value in job.expect.items():
            if key not in report.totals():
                raise fold_error("expect", key, f"must be one of the totals {sorted(report.totals())}")
            _check(checks, job.label, f"expect {key}", value, report.totals()[key])

        write_count_report(report, out, job.label)
        dense = dense_equivalents(report)
        if dense:
            write_table(dense, out / f"{job.label}_dense", title=f"{job.label}: dense-equivalent cost of every conv")
        folds = foldable_layers(report, fold_rs, fold_order)
        if folds:
            write_table(fold_matrix(folds), out / f"{job.label}_fold", title=f"{job.label}: which convs fold with which r (yes* = costs change)")
            write_table(folds, out / f"{job.label}_fold_detail", title=f"{job.label}: fold options per conv")
        if isinstance(job.model, _CONVS):
            for option in folds:
                if not option["foldable"]:
                    continue
                r = option["r"]
                rows = compare_fold(job.model, r, job.input_shape, fold_order)
                write_table(rows, out / f"{job.label}_fold_compare_r{r}", title=f"{job.label}: original vs fold_conv(r={r})")
                if option["cost_neutral"]:
                    equal = all(row["equal"] for row in rows if row["quantity"] in ("params", "macs"))
                    _check(checks, job.label, f"fold_conv r={r} keeps params and macs", True, equal)
        if fold_compare_r is not None and folds and not isinstance(job.model, _CONVS):
            cmp = compare_model_fold(job.model, job.input_shape, fold_compare_r, fold_order)
            title = f"{job.label}: totals before and after folding {cmp['folded_layers']} conv(s) with r={fold_compare_r}"
            write_table(cmp["totals"], out / f"{job.label}_fold_model", title=title)
            if cmp["folded_layers"]:
                equal = all(row["equal"] for row in cmp["totals"] if row["quantity"] in ("params", "macs"))
                _check(checks, job.label, f"fold r={fold_compare_r} keeps params and macs", True, equal)
        if plot:
            plot_layers(report, out / f"{job.label}_layers.png")

    write_table([r.totals() for r in reports], out / "comparison", title="Models compared")
    write_table(checks, out / "checks", title="Checks")
    if d2l:
        write_table(d2l_table(), out / "d2l_dense", title="D2L: fully connected vs local vs conv (weights)")
    if plot:
        plot_comparison(reports, out / "comparison.png")
    return checks


def write_count_report(report: CountReport, directory: Union[str, Path], stem: Optional[str] = None) -> Dict[str, Path]:
    """Write ``<stem>_{layers,module,type,op,total}.{csv,md}`` into ``directory``; returns the paths.

    Example:
        >>> import tempfile, torch
        >>> from foldconv.analysis import count
        >>> sorted(write_count_report(count(torch.nn.Linear(3, 2), (1, 3)), tempfile.mkdtemp()))[:2]
        ['layers_csv', 'layers_md']
    """
    stem = stem or report.model
    paths: Dict[str, Path] = {}
    for view in ("layers", "module", "type", "op", "total"):
        rows = report.table(view, fmt="rows")
        out = write_table(rows, Path(directory) / f"{stem}_{view}", title=f"{report.model}: counts by {view}")
        paths[f"{view}_csv"], paths[f"{view}_md"] = out["csv"], out["md"]
    return paths
