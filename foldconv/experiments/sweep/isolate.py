"""Run the sweep's points in a worker process, so that a native crash costs one point, not the run.

torch can take a process down from C++ (a heap-corruption abort, a segfault) where no Python handler runs.
The sweep app therefore hands its points to a worker process, which observes them in order and sends each
row back the moment it is done. When the worker dies, the first point without a row is the one it died
in: :func:`run_isolated` hands the caller a row that says so (:func:`foldconv.sweep.crashed_row`), starts
a fresh worker on the points after it, and goes on. The row is written like any other, so a resumed run
does not run that point again.

Rows travel as length-prefixed pickles over the worker's stdout; anything the worker prints goes to its
stderr (the app's). A Python exception in the worker is not a crash: the supervisor raises it again with
the worker's traceback. The worker runs torch on one thread, like :func:`foldconv.sweep.run_sweep`.
"""
from __future__ import annotations

import ctypes
import importlib
import json
import os
import pickle
import resource
import signal
import struct
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from typing import Any, BinaryIO, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

from ...sweep import Point, crashed_row, dtype_name, single_thread
from ...sweep.cost import work

__all__ = ["RUNNER", "IsolatedRun", "WorkerError", "run_isolated", "self_peak_rss_mb", "serve"]

#: The function a worker calls per point, as ``"module:function"`` (``function(point, dtypes) -> row``).
RUNNER = "foldconv.sweep:run_point"

_HEADER = struct.Struct("<Q")
# Ctrl-C reaches the worker too (one process group): it ignores it, even while importing torch, and the
# supervisor, interrupted itself, kills it; so the app prints its one line and no worker prints a traceback
_WORKER = ("import signal; signal.signal(signal.SIGINT, signal.SIG_IGN); import json, sys; sys.path[:0] = json.loads(sys.argv[1]); "
           "from foldconv.experiments.sweep.isolate import serve; serve()")


class WorkerError(RuntimeError):
    """A Python exception in the worker (a bug, not a native crash); the message holds its traceback."""


@dataclass
class IsolatedRun:
    """What a run of :func:`run_isolated` did: ``computed`` rows observed, ``crashed`` rows of points that took
    a worker down, ``workers`` started, and the largest resident memory of any worker (``peak_rss_mb``)."""

    computed: int = 0
    crashed: int = 0
    workers: int = 0
    peak_rss_mb: float = 0.0


def _send(out: BinaryIO, message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_HEADER.pack(len(data)) + data)
    out.flush()


def _receive(stream: BinaryIO) -> Optional[Any]:
    """The next message, or None when the stream ends (a dead worker may leave half a message)."""
    head = stream.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    (size,) = _HEADER.unpack(head)
    data = stream.read(size)
    return pickle.loads(data) if len(data) == size else None


#: After a point of this much work (:func:`foldconv.sweep.cost.work`, multiply-adds) the worker hands its freed
#: heap back to the system, so that its memory is that of its largest point, not of every point's fragments.
_TRIM_WORK = 1e6


#: Allocations from this size up are mapped on their own and unmapped when freed (glibc's ``M_MMAP_THRESHOLD``;
#: by default the threshold drifts up to 32 MB, and a long run of large, short-lived tensors then fragments the
#: heap: a worker's peak grew from 0.7 to 1.1 GB over one shard). About 10 % more time on the heaviest points.
_MMAP_THRESHOLD = 4 << 20


def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")  # glibc only; elsewhere the allocator keeps its own policy
    except OSError:
        return None


def _trim() -> None:
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)


def _runner(name: str) -> Callable[[Point, Sequence[Any]], Dict[str, Any]]:
    module, _, function = name.partition(":")
    return getattr(importlib.import_module(module), function)


def serve() -> None:
    """The worker's loop: read ``(runner, dtypes, points)`` from stdin, send one ``("row", row, seconds)``
    per point, then ``("done",)``; ``("error", traceback)`` if the runner raises."""
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # prints, from Python or C++, must not reach the row stream
    sys.stdout = sys.stderr
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-3, _MMAP_THRESHOLD)  # -3: M_MMAP_THRESHOLD
    try:
        runner_name, dtypes, pts = pickle.load(sys.stdin.buffer)
        runner = _runner(runner_name)
        with single_thread():
            for p in pts:
                start = time.perf_counter()
                try:
                    row = runner(p, dtypes)
                except Exception:  # noqa: BLE001 - a bug in the runner: the supervisor raises it again
                    _send(out, ("error", traceback.format_exc()))
                    return
                seconds = time.perf_counter() - start
                if work(p) >= _TRIM_WORK:
                    _trim()
                _send(out, ("row", row, seconds))
        _send(out, ("done",))
    except (BrokenPipeError, KeyboardInterrupt):  # the supervisor is gone or interrupted: stop quietly
        os._exit(0)


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        number = os.WTERMSIG(status)
        try:
            return f"killed by {signal.Signals(number).name}"
        except ValueError:
            return f"killed by signal {number}"
    return f"exit status {os.WEXITSTATUS(status)}"


def run_isolated(
    pts: Sequence[Point], dtypes: Sequence[Any], stats: Optional[IsolatedRun] = None, *, runner: Optional[str] = None,
) -> Iterator[Tuple[Point, Dict[str, Any], Optional[float]]]:
    """Observe ``pts`` in order in worker processes, yielding ``(point, row, seconds)`` as each row arrives
    (``seconds`` is None for the row of a point that crashed its worker); ``stats`` is updated as it goes.

    Example:
        >>> stats = IsolatedRun()
        >>> rows = [row for _, row, _ in run_isolated([Point("theorem", 1, 2, in_channels=2, size=5)], ["float64"], stats)]
        >>> rows[0]["agree"], stats.computed, stats.crashed, stats.workers
        (True, 1, 0, 1)
    """
    names = [dtype_name(d) for d in dtypes]
    stats = stats if stats is not None else IsolatedRun()
    todo: List[Point] = list(pts)
    command = [sys.executable, "-c", _WORKER, json.dumps(sys.path)]
    while todo:
        proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        stats.workers += 1
        done = 0
        try:
            try:
                proc.stdin.write(pickle.dumps((runner or RUNNER, names, todo), protocol=pickle.HIGHEST_PROTOCOL))
                proc.stdin.close()
            except BrokenPipeError:
                pass  # the worker died before reading: handled below like any crash
            while True:
                message = _receive(proc.stdout)
                if message is None or message[0] == "done":
                    break
                if message[0] == "error":
                    raise WorkerError(f"the sweep's worker raised an exception on {todo[done]}:\n{message[1]}")
                stats.computed += 1
                done += 1
                yield todo[done - 1], message[1], message[2]
        except BaseException:  # an error, an interrupt, or the caller stopped iterating: no orphan worker
            proc.kill()
            proc.wait()
            raise
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        proc.stdout.close()
        stats.peak_rss_mb = max(stats.peak_rss_mb, usage.ru_maxrss / 1024)  # kilobytes on Linux
        if done < len(todo):
            lost = todo[done]
            stats.crashed += 1
            done += 1
            yield lost, crashed_row(lost, dtypes, detail=f"worker {_describe(status)}"), None
        todo = todo[done:]


def self_peak_rss_mb() -> float:
    """The largest resident memory of this process so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
