"""The sweep and aggregate apps: their configs (library dataclasses, :class:`Grid` itself) and their bodies.

``scripts/sweep.py`` and ``scripts/aggregate.py`` register :class:`SweepConfig`/:class:`AggregateConfig` with
:func:`foldconv.experiments.app.register` and call :func:`run_sweep_app`/:func:`run_aggregate_app` through
:func:`foldconv.experiments.app.finish`. Everything is validated before the first point runs: a bad grid
value, fold factor, dtype or shard is a FoldError (exit 2, one line naming ``grid.<field>``, ``fold.r``,
``dtypes`` or ``shard.index``), and nothing is written.

Example:
    >>> from foldconv.experiments.app import instantiate, structured
    >>> cfg = structured(SweepConfig)
    >>> cfg.grid.orders = ["crd", "xyz"]
    >>> instantiate(cfg)
    Traceback (most recent call last):
    ...
    foldconv.errors.FoldError: grid.orders=('crd', 'xyz'): 'xyz' is not a channel order for dims (1, 2, 3): ...
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, List, Optional

from ...errors import fold_error
from ..app import ClaimFailed
from .aggregate import aggregate, multirun_results
from .grid import Grid, fold_factor, points
from .run import run_sweep
from .summary import dtype_name, write_sweep_outputs

__all__ = ["FoldOverride", "Shard", "SweepConfig", "AggregateConfig", "run_sweep_app", "run_aggregate_app"]


@dataclass(frozen=True)
class FoldOverride:
    """``fold.r``: restrict the grid to one fold factor (``2``, ``"2x1"``), e.g. to split a multirun by r."""

    r: Optional[str] = None

    def __post_init__(self) -> None:
        if self.r is not None:
            fold_factor(self.r, "r")


@dataclass(frozen=True)
class Shard:
    """This job runs points ``index, index + count, index + 2*count, ...``."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if self.count < 1:
            raise fold_error("count", self.count, "must be an integer >= 1")
        if not 0 <= self.index < self.count:
            raise fold_error("index", self.index, f"must be in [0, shard.count={self.count})")


@dataclass(frozen=True)
class SweepConfig:
    """Everything ``scripts/sweep.py`` accepts; ``grid`` is :class:`Grid` itself (presets in configs/grid/)."""

    grid: Grid = field(default_factory=Grid)
    fold: FoldOverride = field(default_factory=FoldOverride)
    shard: Shard = field(default_factory=Shard)
    dtypes: List[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    plots: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        for d in self.dtypes:
            dtype_name(d)


@dataclass(frozen=True)
class AggregateConfig:
    """``input``: a multirun directory (every job must have finished); ``plots``: draw the heatmaps."""

    input: str = "???"
    plots: bool = True


def run_sweep_app(config: SweepConfig, out: Path, progress: Optional[Callable[[Iterable, str], Iterable]] = None) -> str:
    """Run and write one sweep job into ``out``; ClaimFailed (after writing) when a prediction disagrees."""
    override = [config.fold.r] if config.fold.r is not None else None
    pts = points(config.grid, override)[config.shard.index :: config.shard.count]
    bar = (lambda it: progress(it, f"sweep {config.grid.name}")) if progress is not None and config.progress else None
    rows = run_sweep(pts, config.dtypes, progress=bar)
    title = f"Equivalence sweep: grid={config.grid.name}" + (f", r={config.fold.r}" if config.fold.r is not None else "")
    if config.shard.count > 1:
        title += f", shard {config.shard.index}/{config.shard.count}"
    write_sweep_outputs(rows, out, title, plots=config.plots)
    bad = sum(not r["agree"] for r in rows)
    if bad:
        raise ClaimFailed(f"{bad} of {len(rows)} prediction(s) disagree with the exact observation; see {out / 'summary.md'}")
    return f"{len(rows)} configurations; all {len(rows)} predictions agree with the exact observation; outputs in {out}"


def run_aggregate_app(config: AggregateConfig, out: Path, root: Path) -> str:
    """Merge the complete multirun in ``root`` into ``out``; FoldError for an incomplete one, ClaimFailed on disagreement."""
    paths = multirun_results(root)
    rows = aggregate(paths)
    write_sweep_outputs(rows, out, f"Aggregated sweep: {len(paths)} jobs from {root.name}", plots=config.plots)
    bad = sum(r.get("agree") != "True" for r in rows)
    if bad:
        raise ClaimFailed(f"{bad} of {len(rows)} merged rows disagree; see {out / 'summary.md'}")
    return f"merged {len(paths)} results.csv files into {len(rows)} rows (0 disagreements); outputs in {out}"
