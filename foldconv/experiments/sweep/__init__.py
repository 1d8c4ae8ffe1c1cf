"""The equivalence sweep: a grid of configurations, predicted and observed exactly, summarised and plotted.

grid (Grid, Point, points) -> observe (one observation per section, the exact kernel of foldconv.check)
-> run (rows) -> summary (CSV, Markdown, PNGs) -> aggregate (multirun merge); main holds the apps' bodies.
"""
from ..app import parse_r
from .aggregate import aggregate, multirun_results
from .grid import Grid, Point, fold_factor, points
from .main import AggregateConfig, SweepConfig, run_aggregate_app, run_sweep_app
from .observe import Observation, observe_point, observed_outcome
from .run import run_point, run_sweep
from .summary import COLUMNS, columns, summarize, write_sweep_outputs

__all__ = [
    "AggregateConfig", "COLUMNS", "Grid", "Observation", "Point", "SweepConfig", "aggregate", "columns", "fold_factor",
    "multirun_results", "observe_point", "observed_outcome", "parse_r", "points", "run_aggregate_app",
    "run_point", "run_sweep", "run_sweep_app", "summarize", "write_sweep_outputs",
]
