"""The sweep app: config, files, plots, progress and resume around the library's sweep (:mod:`foldconv.sweep`).

main (configs, the apps' bodies) -> isolate (points observed in a worker process: a native crash costs one
point) -> summary (CSV, Markdown, PNGs) -> aggregate (multirun merge).

Example (the sweep app's config is the library's grid, quick by default):
    >>> from foldconv.experiments.sweep import SweepConfig
    >>> SweepConfig().dtypes
    ['float32', 'bfloat16']
"""
from .aggregate import aggregate, multirun_results
from .isolate import IsolatedRun, run_isolated
from .main import AggregateConfig, SweepConfig, run_aggregate_app, run_sweep_app
from .summary import answer, summarize, write_sweep_outputs

__all__ = [
    "AggregateConfig", "IsolatedRun", "SweepConfig", "aggregate", "answer", "multirun_results", "run_aggregate_app",
    "run_isolated", "run_sweep_app", "summarize", "write_sweep_outputs",
]
