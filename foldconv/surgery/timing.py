"""Wall-clock timing: per-run samples, speedups with the interval their quartiles allow, interleaved rounds.

The one copy of the timing primitives: :mod:`foldconv.surgery.speed`, :mod:`foldconv.surgery.fastest` and the
fold app use them. :func:`prepare_target` makes the copy a timing runs and
:func:`runner` the callable it times; :func:`measure` times one callable in blocks sized to its own speed (so a slow
call costs ``MIN_RUNS`` calls, not ``MIN_RUNS`` blocks of ten); :func:`interleaved` times an original and its forms in rounds
(original, form, original, form, ...) so that a load that comes and goes during the run hits both sides of every
comparison instead of one; :func:`speedup` compares two samples.

Example:
    >>> s = speedup(Sample("original", (2.0, 2.0, 2.0)), Sample("form", (1.0, 1.0, 1.0)))
    >>> s.describe()
    '2.00x [2.00, 2.00]'
"""
from __future__ import annotations

import copy
import math
import numbers
import os
import platform
import time
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .. import tracing
from .._validate import require_device, require_int
from ..errors import first_line, fold_error

__all__ = [
    "MIN_RUNS", "ROUNDS", "MAX_SPREAD", "Sample", "Speedup", "Timer", "require_seconds", "interleaved", "machine_description", "measure",
    "prepare_target", "runner", "speedup",
]

#: Fewest timed blocks per measurement: quartiles of fewer say nothing about the spread.
MIN_RUNS = 5
#: Default number of rounds of :func:`interleaved`.
ROUNDS = 4
#: Widest interval (high / low) a speedup is read from: a wider one (``17.5x [0.93, 100]`` on a loaded machine) says
#: the runs varied more than any difference between the forms could show, so the result is inconclusive.
MAX_SPREAD = 4.0
#: ``timer(fn, label) -> Sample``: :func:`measure`, or injected timings in tests.
Timer = Callable[[Callable[[], object], str], "Sample"]


@dataclass(frozen=True)
class Sample:
    """Per-run times (seconds) of one callable; quartiles as ``torch.utils.benchmark.Measurement`` computes them.

    Example:
        >>> s = Sample("conv", (1.0, 2.0, 3.0, 4.0, 5.0))
        >>> s.median, s.q25, s.q75, s.iqr
        (3.0, 2.0, 4.0, 2.0)
    """

    label: str
    times: Tuple[float, ...]

    def __post_init__(self) -> None:
        times = tuple(self.times)
        if not times or any(isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0 < t < math.inf for t in times):
            raise fold_error("times", times, "must be a non-empty sequence of run times in seconds, each > 0")
        object.__setattr__(self, "times", tuple(float(t) for t in times))

    def _quantile(self, q: float) -> float:
        return float(torch.tensor(sorted(self.times), dtype=torch.float64).quantile(q))

    @property
    def median(self) -> float:
        return self._quantile(0.5)

    @property
    def q25(self) -> float:
        return self._quantile(0.25)

    @property
    def q75(self) -> float:
        return self._quantile(0.75)

    @property
    def iqr(self) -> float:
        return self.q75 - self.q25


@dataclass(frozen=True)
class Speedup:
    """Original time / form time (> 1: the form is faster), with the interval the quartiles allow.

    Example:
        >>> s = speedup(Sample("original", (2.0, 2.0, 2.0)), Sample("form", (1.0, 1.0, 1.0)))
        >>> s.value, s.inconclusive, s.faster, s.describe()
        (2.0, False, True, '2.00x [2.00, 2.00]')
    """

    value: float
    low: float
    high: float

    @property
    def too_wide(self) -> bool:
        """The interval spans more than :data:`MAX_SPREAD` (high / low): the runs varied too much to read a ratio."""
        return not self.high <= self.low * MAX_SPREAD

    @property
    def inconclusive(self) -> bool:
        """These timings cannot tell which form is faster: the interval holds 1.0, or it is too wide to read
        (:attr:`too_wide`)."""
        return self.low <= 1.0 <= self.high or self.too_wide

    @property
    def faster(self) -> bool:
        """Conclusively faster than the original: the whole interval lies above 1.0 and it is not too wide."""
        return self.low > 1.0 and not self.too_wide

    def describe(self) -> str:
        """``"2.00x [1.80, 2.20]"``, with ``" inconclusive"`` (and why, when the interval is too wide).

        Example:
            >>> Speedup(17.5, 0.93, 100.0).describe()
            '17.50x [0.93, 100.00] inconclusive (the interval spans 108x: the runs varied too much)'
        """
        text = f"{self.value:.2f}x [{self.low:.2f}, {self.high:.2f}]"
        if self.too_wide:
            return text + f" inconclusive (the interval spans {self.high / self.low:.0f}x: the runs varied too much)"
        return text + " inconclusive" if self.inconclusive else text


def speedup(original: Sample, form: Sample) -> Speedup:
    """``original.median / form.median`` in ``[original.q25 / form.q75, original.q75 / form.q25]``.

    Example:
        >>> speedup(Sample("original", (1.0, 2.0, 3.0)), Sample("form", (1.0, 2.0, 3.0))).describe()
        '1.00x [0.60, 1.67] inconclusive'
    """
    return Speedup(original.median / form.median, original.q25 / form.q75, original.q75 / form.q25)


def require_seconds(value: Any, param: str = "min_run_time") -> float:
    """A positive number of seconds; FoldError naming ``param`` otherwise.

    Example:
        >>> require_seconds(0.5)
        0.5
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise fold_error(param, value, "must be a number of seconds > 0")
    return float(value)


def prepare_target(target: Any, input_shape: Any, *, min_run_time: Any, param: str = "target") -> Tuple[nn.Module, Tuple[int, ...]]:
    """An eval-mode copy of ``target`` and the validated ``input_shape`` it runs on: the caller's module is never
    touched (channels_last converts in place, a train-mode BatchNorm would update its statistics). A FoldError
    names ``param``, ``input_shape`` (also when the target cannot run on it) or ``min_run_time``.

    Example:
        >>> conv, shape = prepare_target(torch.nn.Conv2d(2, 2, 1).train(), [1, 2, 3, 3], min_run_time=0.1)
        >>> conv.training, shape
        (False, (1, 2, 3, 3))
    """
    if not isinstance(target, nn.Module):
        raise fold_error(param, type(target).__name__, "must be an nn.Module (a layer or a model)")
    shape = tracing.validate_input_shape(input_shape, ranks=range(1, 64))
    require_seconds(min_run_time)
    # every form is checked in float64 (the target and the form) before it is timed
    tracing.require_run_memory(target, shape, copies=3, what="timing the forms and checking each in float64")
    target = copy.deepcopy(target).eval()
    try:
        with torch.no_grad():
            target(torch.zeros(shape))
    except (RuntimeError, ValueError, IndexError) as err:
        raise fold_error("input_shape", shape, f"the {param} cannot run on it: {first_line(err)}") from None
    return target, shape


def runner(module: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    """The callable a timing runs: ``module(x)`` without grad.

    Example:
        >>> runner(torch.nn.Identity(), torch.ones(2))()
        tensor([1., 1.])
    """

    def run() -> object:
        with torch.no_grad():
            return module(x)

    return run


def _synchronizer() -> Callable[[], None]:
    """What makes a block's clock reading include the work it queued: CUDA kernels run asynchronously."""
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        return torch.cuda.synchronize
    return lambda: None


def _block(fn: Callable[[], object], number: int, sync: Callable[[], None]) -> float:
    sync()
    start = time.perf_counter()
    for _ in range(number):
        fn()
    sync()
    return time.perf_counter() - start


#: A calibration block at least this long (s): the clock's own overhead is then negligible.
_CALIBRATION_S = 1e-3


def measure(fn: Callable[[], object], label: str = "", *, min_run_time: float = 0.2, warmup: int = 1,
            threads: Optional[int] = None) -> Sample:
    """Time ``fn()`` in blocks after ``warmup`` calls and a calibration block: at least :data:`MIN_RUNS` blocks and ``min_run_time``
    seconds in all, each block as many calls as fit ``min_run_time / (2 * MIN_RUNS)`` (one call when a call is
    slower), so a measurement lasts about ``max(min_run_time, MIN_RUNS calls)``; CUDA is synchronised around
    every block; ``threads`` defaults to torch's current thread count. Each run is a block's time per call.

    Example:
        >>> s = measure(lambda: torch.ones(8).sum(), "sum", min_run_time=0.01)
        >>> s.label, s.median > 0, len(s.times) >= MIN_RUNS
        ('sum', True, True)
    """
    if not callable(fn):
        raise fold_error("fn", type(fn).__name__, "must be a callable taking no arguments")
    require_seconds(min_run_time)
    if threads is not None:
        require_int(threads, "threads", 1)
    warmup = require_int(warmup, "warmup", 0)
    before = torch.get_num_threads()
    torch.set_num_threads(threads or before)
    try:
        for _ in range(warmup):
            fn()
        sync = _synchronizer()
        number, took = 1, _block(fn, 1, sync)
        while took < _CALIBRATION_S and number < 10**7:
            number *= 10
            took = _block(fn, number, sync)
        number = max(1, round(min_run_time / (2 * MIN_RUNS) / max(took / number, 1e-12)))
        times: List[float] = []
        start = time.perf_counter()
        while len(times) < MIN_RUNS or time.perf_counter() - start < min_run_time:
            times.append(_block(fn, number, sync) / number)
    finally:
        torch.set_num_threads(before)
    return Sample(label, tuple(t if t > 0 else 1e-12 for t in times))


#: Per form: the original's runs from that form's rounds and the form's pooled runs, or what its timing raised.
Paired = Tuple[Sample, Union[Sample, Exception]]


def interleaved(original: Callable[[], object], forms: Sequence[Tuple[str, Callable[[], object]]], time: Timer, *,
                rounds: int = ROUNDS, original_label: str = "original") -> Tuple[Sample, List[Paired]]:
    """Time ``original`` and each form in ``rounds`` rounds, the original right before the form every time
    (original, form, original, form, ...), and pool each side's runs over the rounds.

    A load that starts or stops during the run then falls on both sides of a comparison in the same proportion
    instead of inflating one side's whole sample (one run read channels_last 351x "conclusively" faster because
    the original alone was timed while another process ran). Returns the original's runs pooled over everything
    (the anchor row) and, per form, ``(the original's runs from this form's rounds, the form's pooled runs)`` to
    compare with :func:`speedup`; a form whose timing raises is not timed again and gets the exception instead.
    With no forms the original is timed ``rounds`` times.

    Example:
        >>> calls = []
        >>> def timer(fn, label):
        ...     calls.append(label)
        ...     return Sample(label, (1.0,))
        >>> anchor, paired = interleaved(lambda: None, [("form", lambda: None)], timer, rounds=2)
        >>> calls, len(anchor.times), [len(s.times) for s in paired[0]]
        (['original', 'form', 'original', 'form'], 2, [2, 2])
    """
    rounds = require_int(rounds, "rounds", 1)
    runs: List[List[Sample]] = [[] for _ in forms]
    got: List[List[Sample]] = [[] for _ in forms]
    errors: List[Optional[Exception]] = [None for _ in forms]
    alone: List[Sample] = []
    for _ in range(rounds):
        if not forms:
            alone.append(time(original, original_label))
        for i, (label, fn) in enumerate(forms):
            if errors[i] is not None:
                continue
            runs[i].append(time(original, original_label))
            try:
                got[i].append(time(fn, label))
            except Exception as err:  # noqa: BLE001 (the caller decides: torch.compile fails in every type)
                errors[i] = err
    everything = alone + [s for side in runs for s in side]
    anchor = Sample(original_label, tuple(t for s in everything for t in s.times))
    paired: List[Paired] = []
    for side, sample, error in zip(runs, got, errors):
        mine = Sample(original_label, tuple(t for s in side for t in s.times))
        if error is not None:
            paired.append((mine, error))
        else:
            paired.append((mine, Sample(sample[0].label, tuple(t for s in sample for t in s.times))))
    return anchor, paired


def machine_description(device: Union[str, torch.device] = "cpu", threads: Optional[int] = None) -> str:
    """CPU model, core count, torch version, thread count (``threads``, default torch's current), and the GPU's
    name for a CUDA device.

    Example:
        >>> "torch " + torch.__version__ in machine_description()
        True
    """
    device = require_device(device)
    cpu = ""
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), "")
    except OSError:
        pass
    n = threads or torch.get_num_threads()
    text = f"{cpu or platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, {n} thread{'s' if n != 1 else ''}"
    return text + (f", {torch.cuda.get_device_name(device)}" if device.type == "cuda" else "")
