"""Point runners for the sweep app's worker (``run_sweep_app(..., runner="sweep_runners:<name>")`` or the
module's ``RUNNER``): the real :func:`foldconv.sweep.run_point`, slowed down and recorded, lying, or crashing
its process on one configuration. tests/experiments is on sys.path, and the worker inherits the app's path."""
from __future__ import annotations

import os
import time

from foldconv.experiments.io import format_value
from foldconv.predict import Outcome
from foldconv.sweep import point_row, run_point

#: The configuration that :func:`crash_on_one` takes down with ``os.abort()``: what a heap corruption does.
CRASHING = dict(section="theorem", dims=1, r=2, kernel=2, stride=1, padding=1, in_channels=2)


def recorded(p, dtypes):
    """``run_point``, after sleeping ``SWEEP_SLEEP`` seconds and appending the point's key columns (as
    results.csv writes them) to the file ``SWEEP_RECORD``."""
    time.sleep(float(os.environ["SWEEP_SLEEP"]))
    with open(os.environ["SWEEP_RECORD"], "a") as f:
        f.write("|".join(format_value(v, "r") for v in point_row(p).values()) + "\n")
    return run_point(p, dtypes)


def lying(p, dtypes):
    """``run_point`` with every observation reported as "fails": every prediction that does not say "fails" disagrees."""
    row = run_point(p, dtypes)
    row.update(observed=Outcome.FAILS.value, agree=row["predicted"] == Outcome.FAILS.value)
    return row


def crash_on_one(p, dtypes):
    """``run_point``, except that the :data:`CRASHING` configuration aborts the process (no Python handler runs)."""
    if all(getattr(p, k) == v for k, v in CRASHING.items()):
        os.abort()
    return run_point(p, dtypes)


def broken(p, dtypes):
    """A runner with a bug: a Python exception is not a crash, the app must report it."""
    raise ValueError(f"a bug in the runner at {p.section}")
