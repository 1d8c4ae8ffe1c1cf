"""The one timing harness of benchmarks/: interleaved rounds, warmed anchors, one thread, medians with intervals.

Every script times its candidates and their anchors with :func:`compare`:

- every case is run ``warmup`` times and its block size calibrated before anything is timed (so the anchor's
  first calls, caches and allocations are not charged to it);
- then ``rounds`` rounds: each round times every case once, one block of ``number`` calls
  (``torch.utils.benchmark.Timer.timeit``, ``block`` seconds or so), in an order that rotates from round to
  round, so anchor and candidate alternate and a load that comes and goes falls on both;
- a time is the median over the rounds; a ratio is taken round by round (both sides measured under the same
  load) and is the median of the per-round ratios, with a 95 % bootstrap interval of that median; a ratio is
  "inconclusive" when its interval holds 1.0.

:func:`start` sets torch to one thread unless ``--threads`` says otherwise and prints the machine, the thread
count and the load average; :func:`finish` prints the load average again. On a shared machine both belong with
the figures.

Example (a check of the harness, not a measurement):
    >>> res = compare({"a": lambda: None, "b": lambda: None}, anchor="a", rounds=3, block=0.001)
    >>> len(res.seconds["b"]), res.speedup("a").describe()
    (3, '1.00x [1.00, 1.00] inconclusive')
"""
from __future__ import annotations

import argparse
import logging
import os
import random
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple

import torch

__all__ = ["ROOT", "Interval", "Result", "add_arguments", "compare", "export_revision", "finish", "goal", "interval", "machine",
           "overall", "start", "tally"]

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROUNDS = 7
BLOCK_S = 0.05
RESAMPLES = 2000


@dataclass(frozen=True)
class Interval:
    """A median with a 95 % interval (bootstrap over rounds); ``inconclusive`` when the interval holds 1.0."""

    median: float
    low: float
    high: float

    @property
    def inconclusive(self) -> bool:
        return self.low <= 1.0 <= self.high

    def describe(self, unit: str = "x", digits: int = 2) -> str:
        text = f"{self.median:.{digits}f}{unit} [{self.low:.{digits}f}, {self.high:.{digits}f}]"
        return text + " inconclusive" if unit == "x" and self.inconclusive else text

    def scaled(self, factor: float) -> Interval:
        values = sorted((self.low * factor, self.high * factor))
        return Interval(self.median * factor, values[0], values[1])


def interval(values: Sequence[float], *, resamples: int = RESAMPLES, seed: int = 0) -> Interval:
    """The median of ``values`` and the 2.5 % / 97.5 % quantiles of its bootstrap distribution (seeded).

    Example:
        >>> interval([1.0, 1.0, 1.0])
        Interval(median=1.0, low=1.0, high=1.0)
    """
    values = [float(v) for v in values]
    if not values:
        raise ValueError("interval: values must not be empty")
    rng = random.Random(seed)
    n = len(values)
    medians = sorted(statistics.median(rng.choices(values, k=n)) for _ in range(resamples if n > 1 else 1))
    low = medians[int(0.025 * (len(medians) - 1))]
    high = medians[int(round(0.975 * (len(medians) - 1)))]
    return Interval(statistics.median(values), low, high)


@dataclass(frozen=True)
class Result:
    """Seconds per call of every case, one value per round, and the anchor the ratios default to."""

    anchor: str
    seconds: Mapping[str, Tuple[float, ...]]
    number: Mapping[str, int]

    def time(self, label: str) -> Interval:
        """Seconds per call: the median over the rounds with its interval."""
        return interval(self.seconds[label])

    def speedup(self, label: str, anchor: Optional[str] = None) -> Interval:
        """Anchor time / this case's time, round by round (> 1: the case is faster than the anchor)."""
        base = self.seconds[anchor or self.anchor]
        return interval([a / b for a, b in zip(base, self.seconds[label])])

    def slowdown(self, label: str, anchor: Optional[str] = None) -> Interval:
        """This case's time / anchor time, round by round (> 1: the case is slower than the anchor)."""
        base = self.seconds[anchor or self.anchor]
        return interval([b / a for a, b in zip(base, self.seconds[label])])


def _timer(fn: Callable[[], object]):
    # torch.utils.benchmark imports cpp_extension, which logs "No CUDA runtime is found" on a CPU machine with a
    # CUDA_HOME; timing a Python callable compiles nothing.
    quiet = logging.getLogger("torch.utils.cpp_extension")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        from torch.utils.benchmark import Timer
    finally:
        quiet.setLevel(level)
    return Timer(stmt="fn()", globals={"fn": fn}, num_threads=torch.get_num_threads())


def _calibrate(timer, block: float) -> int:
    """Calls per block so that a block lasts about ``block`` seconds (at least one call)."""
    n = 1
    while True:
        total = timer.timeit(n).times[0] * n
        if total >= block / 5 or n >= 10**6:
            return max(1, int(round(n * block / total)))
        n *= 10


def compare(cases: Mapping[str, Callable[[], object]], *, anchor: str, rounds: int = ROUNDS, block: float = BLOCK_S,
            warmup: int = 3) -> Result:
    """Time every case in ``rounds`` interleaved rounds after warming each; ``anchor`` is the default reference.

    A case whose first call raises is not timed: the error propagates (a benchmark compares work that runs).
    """
    if anchor not in cases:
        raise ValueError(f"anchor {anchor!r} is not one of the cases {list(cases)}")
    if rounds < 1 or block <= 0:
        raise ValueError(f"rounds must be >= 1 and block > 0 s, got rounds={rounds}, block={block}")
    labels = list(cases)
    timers: Dict[str, object] = {}
    number: Dict[str, int] = {}
    for label in labels:
        for _ in range(warmup):
            cases[label]()
        timers[label] = _timer(cases[label])
        number[label] = _calibrate(timers[label], block)
    seconds: Dict[str, list] = {label: [] for label in labels}
    for i in range(rounds):
        for label in labels[i % len(labels):] + labels[: i % len(labels)]:
            seconds[label].append(timers[label].timeit(number[label]).times[0])
    return Result(anchor, {k: tuple(v) for k, v in seconds.items()}, number)


def goal(ratio: Interval, at_least: float) -> str:
    """"met" when the whole interval reaches ``at_least``, "missed" when none of it does, otherwise "within noise"."""
    if ratio.low >= at_least:
        return "met"
    if ratio.high < at_least:
        return "missed"
    return "within noise"


def overall(verdicts: Sequence[str]) -> str:
    """One verdict for a goal measured several times: "missed" if any part is, "met" if all are, else "within noise"."""
    if "missed" in verdicts:
        return "missed"
    return "met" if all(v == "met" for v in verdicts) else "within noise"


def tally(verdicts: Sequence[str]) -> str:
    """``"22 met, 2 within noise, 0 missed of 24: within noise"``."""
    counts = ", ".join(f"{sum(v == k for v in verdicts)} {k}" for k in ("met", "within noise", "missed"))
    return f"{counts} of {len(verdicts)}: {overall(verdicts)}"


def add_arguments(parser: argparse.ArgumentParser, *, rounds: int = ROUNDS, block: float = BLOCK_S) -> argparse.ArgumentParser:
    """The harness's flags: ``--threads`` (default 1), ``--rounds``, ``--block`` (seconds per timed block)."""
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads (default 1)")
    parser.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds")
    parser.add_argument("--block", type=float, default=block, help="seconds per timed block of calls")
    return parser


def machine() -> str:
    """CPU model, cores, torch version, threads (foldconv's own description) and the 1/5/15-minute load averages."""
    from foldconv.surgery.timing import machine_description  # here, not at import: first_call.py times a bare start

    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    return f"{machine_description()}, load average {load}"


def start(args: argparse.Namespace, what: str, method: Optional[str] = None) -> float:
    """Set torch's thread count from ``args.threads``, print what is measured on which machine and how; returns the
    start time. ``method`` replaces the harness's own description (a script that times something else)."""
    torch.set_num_threads(max(1, int(args.threads)))
    method = method or (f"{args.rounds} interleaved rounds, blocks of ~{args.block} s, medians with 95 % bootstrap "
                        "intervals over the rounds")
    print(f"{what}\nmachine: {machine()}\nmethod: {method}", flush=True)
    return time.perf_counter()


def finish(started: float) -> None:
    load = ", ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nload average after: {load}; wall time {time.perf_counter() - started:.0f} s")


def export_revision(rev: str, into: str) -> str:
    """The package at git revision ``rev`` as ``foldconv_before`` under ``into`` (returned: put it on sys.path).

    Its modules import each other relatively, so the old package runs beside this checkout's in one process and
    both are timed in the same interleaved rounds.
    """
    archive = subprocess.run(["git", "-C", ROOT, "archive", rev, "foldconv"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", into], input=archive, check=True)
    os.rename(os.path.join(into, "foldconv"), os.path.join(into, "foldconv_before"))
    return into
