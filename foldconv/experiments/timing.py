"""Wall-clock timing with torch.utils.benchmark (adaptive repeats, median and IQR): the app-facing view of
:func:`foldconv.surgery.timing.measure` (the one copy of the timer; ``check_seconds`` is re-exported from there).

Timings are only compared as ratios against an anchor measured in the same process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

from ..surgery.timing import check_seconds, measure

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


def time_call(
    fn: Callable[[], object], label: str = "", *, min_run_time: float = 0.2, threads: Optional[int] = None
) -> Timing:
    """Time ``fn()`` (no arguments) with :func:`foldconv.surgery.timing.measure` (``Timer.blocked_autorange``
    after a warm-up; CUDA is synchronised by the Timer). ``threads`` defaults to torch's current thread count.

    Example:
        >>> import torch
        >>> t = time_call(lambda: torch.ones(8).sum(), "sum", min_run_time=0.01)
        >>> t.label, t.median > 0 and t.runs >= 1
        ('sum', True)
    """
    sample = measure(fn, label, min_run_time=min_run_time, threads=threads)
    return Timing(label, sample.median, sample.iqr, len(sample.times))
