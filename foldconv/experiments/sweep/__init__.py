"""The equivalence sweep: a grid of configurations, predicted and observed, summarised and plotted."""
from .core import Grid, Point, parse_r, points, run_point, run_sweep
from .summary import COLUMNS, aggregate, summarize, write_sweep_outputs

__all__ = ["COLUMNS", "Grid", "Point", "aggregate", "parse_r", "points", "run_point", "run_sweep", "summarize", "write_sweep_outputs"]
