"""Wall-clock timing with torch.utils.benchmark (warm-up, adaptive repeats, median and IQR).

Timings are only compared as ratios against an anchor measured in the same process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import torch

from .._validate import check_int
from ..errors import fold_error

__all__ = ["Timing", "check_seconds", "time_call"]


@dataclass(frozen=True)
class Timing:
    """Median and interquartile range of one call, in seconds, over ``runs`` measured blocks.

    Timings are only compared as ratios against an anchor measured in the same process (see the module).
    """

    label: str
    median: float
    iqr: float
    runs: int

    @property
    def median_ms(self) -> float:
        """The median in milliseconds."""
        return self.median * 1e3


def check_seconds(value: Any, param: str = "min_run_time") -> float:
    """A positive number of seconds; FoldError naming ``param`` otherwise.

    Example:
        >>> check_seconds(0.5)
        0.5
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < float("inf"):
        raise fold_error(param, value, "must be a number of seconds > 0")
    return float(value)


def time_call(
    fn: Callable[[], object], label: str = "", *, min_run_time: float = 0.2, threads: Optional[int] = None
) -> Timing:
    """Time ``fn()`` (no arguments) with ``Timer.blocked_autorange``; CUDA is synchronised by the Timer.

    ``threads`` defaults to torch's current thread count.

    Example:
        >>> t = time_call(lambda: torch.ones(8).sum(), "sum", min_run_time=0.01)
        >>> t.label, t.median > 0 and t.runs >= 1
        ('sum', True)
    """
    if not callable(fn):
        raise fold_error("fn", type(fn).__name__, "must be a callable taking no arguments")
    check_seconds(min_run_time)
    if threads is not None:
        check_int(threads, "threads", 1)
    # Imported here, with cpp_extension's logger quiet: torch.utils.benchmark imports cpp_extension, which logs
    # "No CUDA runtime is found" when it finds a CUDA_HOME but no CUDA runtime; it is about compiling C++
    # extensions, which a Timer on a Python callable never does.
    import logging

    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        import torch.utils.benchmark as benchmark
    finally:
        quiet.setLevel(level)

    timer = benchmark.Timer(
        stmt="fn()", globals={"fn": fn}, label=label, num_threads=threads or torch.get_num_threads()
    )
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(label, float(m.median), float(m.iqr), len(m.times))
