"""The sweep and aggregate apps: their configs (library dataclasses, :class:`Grid` itself) and their bodies.

``scripts/sweep.py`` and ``scripts/aggregate.py`` register :class:`SweepConfig`/:class:`AggregateConfig` with
:func:`foldconv.experiments.app.register` and call :func:`run_sweep_app`/:func:`run_aggregate_app` through
:func:`foldconv.experiments.app.finish`. Everything is validated before the first point runs: a bad grid
value, fold factor, dtype or shard is a FoldError (exit 2, one line naming ``grid.<field>``, ``fold.r``,
``dtypes`` or ``shard.index``), and nothing is written.

A sweep writes results.csv AS IT GOES (:class:`~foldconv.experiments.io.RowLog`): a killed run keeps every
finished row, and the same command with the same ``hydra.run.dir`` resumes it, computing only the rows
that are missing (a different config in that directory is refused: exit 2, one line). The points are
observed in a worker process (:mod:`.isolate`): a native crash in torch costs the point it happened in (a
row says so, and a resume skips it), not the run. Once a sample of blocks spread over the run is done
(they run first) it prints how many configurations it runs and about how long they take on this machine
(:mod:`foldconv.sweep.cost`), with a sharding hint when that is more than a few minutes; at the end, how
long they took and the peak memory of the app and of its worker.

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

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Tuple

from ...errors import fold_error
from ...sweep import POINT_FIELDS, Grid, Point, columns, dtype_name, fold_factor, iter_points, point_row, run_point, single_thread
from ...sweep.cost import BLOCK, CostModel, calibration, in_shard
from ..app import CONFIG_DIR, ClaimFailed
from ..io import RowLog, duration, progress_bar, status, write_csv, write_index
from .aggregate import multirun_results, write_merged
from .isolate import IsolatedRun, run_isolated, self_peak_rss_mb
from .summary import answer, crashed, disagreements, error_floor, write_sweep_outputs

__all__ = ["FoldOverride", "Shard", "SweepConfig", "AggregateConfig", "describe_grid", "plan", "run_sweep_app", "run_aggregate_app", "sweep_files"]


@dataclass(frozen=True)
class FoldOverride:
    """``fold.r``: restrict the grid to one fold factor (``2``, ``"2x1"``), e.g. to split a multirun by r."""

    r: Optional[str] = None

    def __post_init__(self) -> None:
        if self.r is not None:
            fold_factor(self.r, "r")


@dataclass(frozen=True)
class Shard:
    """This job runs blocks ``index, index + count, index + 2*count, ...`` of 64 consecutive points
    (:func:`foldconv.sweep.cost.shard`: neighbours share their conv's draws, so they stay together)."""

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
    isolate: bool = True  # observe in a worker process (a native crash costs one point); false: in this process

    def __post_init__(self) -> None:
        for d in self.dtypes:
            dtype_name(d)


@dataclass(frozen=True)
class AggregateConfig:
    """``input``: a multirun directory (every job must have finished); ``plots``: draw the heatmaps."""

    input: str = "???"
    plots: bool = True


#: Seconds above which the up-front estimate suggests sharding, and the length of one suggested shard.
SHARD_HINT_S = 180
SHARD_TARGET_S = 600

#: What each file of a sweep's run directory holds (index.md).
SWEEP_FILES = {
    "summary.md": "the answer first (do predictions agree with the exact observations?), what the outcomes mean, the remedies, every rule",
    "results.csv": "one row per configuration: the point, predicted and observed outcome, rule, reason, conditions (the remedy), errors per dtype",
    "results.config.json": "the config that produced results.csv (a rerun in this directory resumes only with the same one)",
    "outcomes.png": "observed outcome counts per section",
    "outcomes_by_r.png": "observed outcome counts per fold factor r, pooling only the sections run at every r (the title names those left out, and the invalid-input probes, whose r values are not fold factors)",
    "heatmap_modes.png": "fraction of r > 1 configurations whose literal fold holds, stride x padding, per padding mode",
    "heatmap_errors.png": "largest relative error of the folded form run in each low-precision dtype against the original in float64, r x kernel (the dtype's own rounding included)",
    "*.log": "the app's log (Hydra)",
}


def sweep_files(rows: Any) -> Dict[str, str]:
    """:data:`SWEEP_FILES` as index.md lists them for ``rows`` (a list or a Tally): the error heatmap's line
    says what its floor is only from the rows the run has.

    Example:
        >>> sweep_files([])["heatmap_errors.png"].endswith("(run fold.r=1 too for that floor)")
        True
    """
    files = dict(SWEEP_FILES)
    files["heatmap_errors.png"] = f"{files['heatmap_errors.png']}; {error_floor(rows)}"
    return files


def _fingerprint(config: SweepConfig, rows: int) -> Dict[str, Any]:
    """What decides the rows (not ``plots``, ``progress``, ``isolate`` or the grid's name): a resume must match it;
    ``rows`` (how many the job plans) lets a cut job's record say whether all its rows were written."""
    grid = {k: v for k, v in asdict(config.grid).items() if k != "name"}
    return {"grid": grid, "fold.r": config.fold.r, "shard": asdict(config.shard), "dtypes": [dtype_name(d) for d in config.dtypes], "rows": rows}


def _preset(name: str) -> Optional[Grid]:
    """The grid of ``configs/grid/<name>.yaml``, or None when no preset has that name."""
    path = CONFIG_DIR / "grid" / f"{name}.yaml"
    if not path.is_file():
        return None
    from omegaconf import OmegaConf

    return Grid(**OmegaConf.to_container(OmegaConf.load(path), resolve=True))


def _yaml_value(value: Any) -> str:
    if isinstance(value, tuple):
        return "[" + ",".join("x".join(map(str, v)) if isinstance(v, tuple) else str(v) for v in value) + "]"
    return str(value).lower() if isinstance(value, bool) else str(value)


def describe_grid(grid: Grid) -> str:
    """The grid actually run, for titles: the preset's name when every axis is the preset's, else the preset
    with each overridden axis as the user would write it (``grid.<field>=...``), or "custom" without a preset.

    Example:
        >>> describe_grid(Grid())
        'grid=quick'
        >>> describe_grid(Grid(kernel=(3,), stride=(2,)))
        'custom grid (grid=quick with grid.kernel=[3] grid.stride=[2])'
        >>> describe_grid(Grid(name="mine"))
        'custom grid (grid.name=mine, no such preset)'
    """
    preset = _preset(grid.name)
    if preset is None:
        return f"custom grid (grid.name={grid.name}, no such preset)"
    changed = [f"grid.{k}={_yaml_value(v)}" for k, v in asdict(grid).items() if k != "name" and v != getattr(preset, k)]
    if not changed:
        return f"grid={grid.name}"
    return f"custom grid (grid={grid.name} with {' '.join(changed)})"


def plan(total: int, resumed: int, seconds: float, shard: Optional[Shard] = None) -> str:
    """The line printed once the calibration blocks are done: how many, how long, and whether to shard.

    Example:
        >>> plan(1354, 0, 40.2)
        '1,354 configurations, about 40 s on this machine'
        >>> plan(2_900_000, 0, 8700)
        "2,900,000 configurations, about 2 h 25 min on this machine; to split it into ~10-minute jobs add -m shard.count=15 shard.index='range(15)' (see README, multirun)"
    """
    todo = total - resumed
    if todo == 0:
        return f"{total:,} configurations, all already in results.csv: nothing left to compute"
    head = f"{total:,} configurations"
    if resumed:
        head += f" ({resumed:,} already in results.csv, resuming; {todo:,} to run)"
    line = f"{head}, about {duration(seconds)} on this machine"
    if seconds > SHARD_HINT_S:
        count = (shard.count if shard else 1) * math.ceil(seconds / SHARD_TARGET_S)
        line += f"; to split it into ~10-minute jobs add -m shard.count={count} shard.index='range({count})' (see README, multirun)"
    return line


def _in_process(pts: List[Point], dtypes: List[str], stats: IsolatedRun) -> Iterator[Tuple[Point, Dict[str, Any], Optional[float]]]:
    """The worker's loop, in this process (``isolate=false``): no protection from native crashes."""
    with single_thread():
        for p in pts:
            start = time.perf_counter()
            row = run_point(p, dtypes)
            stats.computed += 1
            yield p, row, time.perf_counter() - start


def run_sweep_app(
    config: SweepConfig, out: Path, progress: Optional[Callable[[Iterable, str], Iterable]] = None, *,
    log: Callable[[str], None] = status, runner: Optional[str] = None,
) -> str:
    """Run one sweep job into ``out``, writing each row as it finishes and resuming a killed run of the same
    config there; ClaimFailed (after writing everything) when a prediction disagrees or a point crashed.

    ``progress(items, desc)`` wraps the loop (default: a tqdm bar, when ``config.progress``); ``log`` gets the
    estimate and, at the end, the time taken and the peak memory. ``runner`` (``"module:function"``) replaces
    :func:`foldconv.sweep.run_point` in the worker (for tests: a point that crashes its process).
    """
    out = Path(out)
    start = time.perf_counter()
    override = [config.fold.r] if config.fold.r is not None else None
    pts = list(iter_points(config.grid, override, select=in_shard(config.shard.index, config.shard.count)))
    cols = columns(config.dtypes)
    stats = IsolatedRun()
    with RowLog(out / "results.csv", cols, key=list(POINT_FIELDS), config=_fingerprint(config, len(pts)), param="hydra.run.dir") as rows_log:
        todo = [p for p in pts if rows_log.key_of(point_row(p)) not in rows_log.done]
        first, rest = calibration(todo)
        if not todo:
            log(plan(len(pts), len(pts), 0.0, config.shard))
        stream = (run_isolated(first + rest, config.dtypes, stats, runner=runner) if config.isolate
                  else _in_process(first + rest, config.dtypes, stats))
        if config.progress and todo:
            wrap = progress or (lambda it, desc: progress_bar(it, desc, total=len(todo), unit="cfg"))
            stream = wrap(stream, f"sweep {config.grid.name}" + ("" if describe_grid(config.grid) == f"grid={config.grid.name}" else " (custom)"))
        timed: List[Tuple[Point, Optional[float]]] = []
        estimate = None
        for p, row, seconds in stream:  # Ctrl-C: the skeleton says what is saved and how to resume
            rows_log.append(row)
            if estimate is None:
                timed.append((p, seconds))
                if len(timed) == len(first):
                    estimate = (time.perf_counter() - start) + _fit(timed).seconds(rest)
                    log(plan(len(pts), len(pts) - len(todo), estimate, config.shard))
    rows = rows_log.rows()
    rank = {rows_log.key_of(point_row(p)): i for i, p in enumerate(pts)}
    ordered = sorted(rows, key=lambda r: rank.get(rows_log.key_of(r), len(rank)))
    if ordered != rows:  # e.g. the calibration blocks, run first: the file is always in point order
        write_csv(ordered, out / "results.csv", cols)
    title = f"Equivalence sweep: {describe_grid(config.grid)}" + (f", r={config.fold.r}" if config.fold.r is not None else "")
    if config.shard.count > 1:
        title += f", shard {config.shard.index}/{config.shard.count}"
    write_sweep_outputs(ordered, out, title, plots=config.plots, csv=False)
    write_index(out, sweep_files(ordered), title=title, answer=answer(ordered))
    if todo:
        took = time.perf_counter() - start
        worker = f", worker {stats.peak_rss_mb:,.0f} MB" if config.isolate else ""
        log(f"took {duration(took)} (estimated {duration(estimate or took)}); peak memory: app {self_peak_rss_mb():,.0f} MB{worker}")
    bad, lost = disagreements(ordered), crashed(ordered)
    resumed = f" ({len(pts) - len(todo):,} resumed from an earlier run, {stats.computed:,} computed now)" if len(todo) < len(pts) else ""
    if bad or lost:
        problems = ([f"{len(bad)} of {len(rows)} prediction(s) disagree with the exact observation"] if bad else []) + (
            [f"{len(lost)} of {len(rows)} configuration(s) crashed the worker and were not observed"] if lost else [])
        raise ClaimFailed(f"{'; '.join(problems)}; see {out / 'summary.md'}")
    if not rows:  # an empty shard: "all 0 predictions agree" would claim a check that never ran
        return f"{answer(ordered).rstrip('.')}; outputs in {out}"
    return f"{len(rows)} configurations; all {len(rows)} predictions agree with the exact observation{resumed}; outputs in {out}"


def _fit(timed: List[Tuple[Point, Optional[float]]]) -> CostModel:
    """The cost model of the calibration rows, a block of consecutive rows at a time (crashed points left out,
    and the first point, whose time holds the worker's one-time warm-up: already in the elapsed time)."""
    blocks, current, seconds = [], [], 0.0
    for i, (p, s) in enumerate(timed):
        if s is None or i == 0:
            continue
        current.append(p)
        seconds += s
        if len(current) == BLOCK:
            blocks.append((current, seconds))
            current, seconds = [], 0.0
    if current:
        blocks.append((current, seconds))
    return CostModel.fit(blocks)


def run_aggregate_app(config: AggregateConfig, out: Path, root: Path) -> str:
    """Merge the complete multirun in ``root`` into ``out``; FoldError for an incomplete one, ClaimFailed on disagreement."""
    paths = multirun_results(root)
    tally = write_merged(paths, Path(out) / "results.csv")
    title = f"Aggregated sweep: {len(paths)} jobs from {root.name}"
    write_sweep_outputs(tally, out, title, plots=config.plots)
    write_index(out, {**sweep_files(tally), "results.csv": "every job's rows merged (a job column names the job folder); rows shared by jobs kept once"}, title=title, answer=tally.answer())
    bad, lost = len(tally.bad), len(tally.lost)
    if bad or lost:
        raise ClaimFailed(f"{bad} of {tally.n} merged rows disagree and {lost} crashed their worker (not observed); see {out / 'summary.md'}")
    return f"merged {len(paths)} results.csv files into {tally.n} rows (0 disagreements); outputs in {out}"
