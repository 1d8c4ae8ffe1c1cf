"""The equivalence sweep's science: the grid of configurations, the exact oracle, one row per point.

:mod:`.grid` (:class:`Grid`, :class:`Point`, :func:`points`) -> :mod:`.observe` (the prediction and the exact
observation of one point; the fold points' forms in :mod:`.forms`) -> :mod:`.run` (one row per point, the
row schema) and :mod:`.cost` (how long points take). Files, plots, progress bars and the process that
isolates native crashes are the sweep app's (:mod:`foldconv.experiments.sweep`).

Example:
    >>> rows = run_sweep(points(Grid(dims=(1,), r=(2,), following=(), s2d_sizes=(), invalid=False))[:3], ())
    >>> [(row["section"], row["observed"], row["agree"]) for row in rows]
    [('theorem', 'holds', True), ('theorem', 'holds', True), ('theorem', 'holds', True)]
"""
from .grid import POINT_FIELDS, Grid, Point, fold_factor, iter_points, points
from .observe import Observation, forget, observe_fold_plainly, observe_point, observed_outcome
from .run import (
    COLUMNS,
    CRASHED,
    DEFAULT_DTYPES,
    columns,
    crashed_row,
    dtype_name,
    point_row,
    run_point,
    run_sweep,
    single_thread,
)

__all__ = [
    "COLUMNS", "CRASHED", "DEFAULT_DTYPES", "Grid", "Observation", "POINT_FIELDS", "Point", "columns", "crashed_row",
    "dtype_name", "fold_factor", "forget", "iter_points", "observe_fold_plainly", "observe_point", "observed_outcome", "point_row", "points", "run_point", "run_sweep",
    "single_thread",
]
