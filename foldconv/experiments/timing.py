"""Wall-clock timing with torch.utils.benchmark (warm-up, adaptive repeats, median and IQR).

Timings are only compared as ratios against an anchor measured in the same process.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import torch
import torch.utils.benchmark as benchmark

__all__ = ["Timing", "time_call"]


@dataclass(frozen=True)
class Timing:
    """Median and interquartile range of one call, in seconds, over ``runs`` measured blocks."""

    label: str
    median: float
    iqr: float
    runs: int

    @property
    def median_ms(self) -> float:
        return self.median * 1e3


def time_call(fn: Callable[[], object], label: str = "", min_run_time: float = 0.2, threads: Optional[int] = None) -> Timing:
    """Time ``fn()`` (no arguments) with ``Timer.blocked_autorange``; CUDA is synchronised by the Timer.

    Example:
        >>> t = time_call(lambda: torch.ones(8).sum(), "sum", min_run_time=0.01)
        >>> t.median > 0 and t.runs >= 1
        True
    """
    timer = benchmark.Timer(
        stmt="fn()", globals={"fn": fn}, label=label, num_threads=threads or torch.get_num_threads()
    )
    m = timer.blocked_autorange(min_run_time=min_run_time)
    return Timing(label, float(m.median), float(m.iqr), len(m.times))
