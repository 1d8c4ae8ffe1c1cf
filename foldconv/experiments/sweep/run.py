"""Run the sweep: predict and observe every point, one CSV row each, and say whether they agree.

Example:
    >>> rows = run_sweep([Point("theorem", 1, 2, in_channels=2, size=5)])
    >>> rows[0]["agree"], list(rows[0])[-3:]
    (True, ['rel_err_bfloat16', 'crop_exact', 'pad_exact'])
"""
from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

from ...check import as_float_dtype
from .grid import Point
from .observe import observe_point, observed_outcome
from .summary import DEFAULT_DTYPES, dtype_name

__all__ = ["Estimate", "estimate", "point_row", "run_point", "run_sweep", "run_into"]


def point_row(p: Point) -> Dict[str, Any]:
    """The point's own columns of its CSV row (what identifies the row when a run resumes).

    Example:
        >>> point_row(Point("theorem", 2, (2, 1)))["r"]
        '(2, 1)'
    """
    return {k: (str(v) if isinstance(v, tuple) else v) for k, v in asdict(p).items()}


def run_point(p: Point, dtypes: Sequence[Any] = DEFAULT_DTYPES) -> Dict[str, Any]:
    """Predict and observe one point; returns one CSV row (inputs, prediction, observation, agreement).

    ``agree``: the predicted outcome and literal verdict equal the observed ones (and, for space-to-depth,
    the predicted crop/pad fixes are the exact ones).

    Example:
        >>> row = run_point(Point("theorem", 2, 2, in_channels=4, kernel=3, padding=1, size=5))
        >>> row["predicted"], row["observed"], row["agree"]
        ('holds', 'holds', True)
    """
    dtypes = tuple(as_float_dtype(d, "dtypes") for d in dtypes)
    pred, obs = observe_point(p, dtypes)
    observed = observed_outcome(obs)
    agree = observed is pred.outcome and obs.literal == pred.literal and obs.detail_agrees
    row = point_row(p)
    row.update(
        predicted=pred.outcome.value,
        observed=observed.value,
        predicted_literal=pred.literal.value,
        observed_literal=obs.literal.value,
        observed_conditioned=obs.conditioned.value,
        agree=bool(agree),
        rule=pred.code,
        reason=pred.reason,
        conditions="; ".join(pred.conditions),
        folded=pred.folded.describe() if pred.folded is not None else "",
        density=pred.density,
    )
    errors = dict(obs.errors)
    for dt in dtypes:
        row[f"rel_err_{dtype_name(dt)}"] = errors.get(dtype_name(dt))
    row.update(crop_exact=obs.crop_exact, pad_exact=obs.pad_exact)
    return row


def run_sweep(
    pts: Sequence[Point],
    dtypes: Sequence[Any] = DEFAULT_DTYPES,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
) -> List[Dict[str, Any]]:
    """Run every point (single-threaded torch for small, deterministic convs); ``progress`` wraps the loop.

    Example:
        >>> rows = run_sweep([Point("theorem", 1, 2, in_channels=2, size=5)], ["float64"])
        >>> rows[0]["rel_err_float64"] < 1e-15
        True
    """
    dtypes = tuple(as_float_dtype(d, "dtypes") for d in dtypes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        iterator = progress(pts) if progress else pts
        return [run_point(p, dtypes) for p in iterator]
    finally:
        torch.set_num_threads(threads)


@dataclass(frozen=True)
class Estimate:
    """What a short calibration measured: the estimated ``seconds`` of the points, and the rows it already
    computed (by point key), which the run reuses instead of computing them again."""

    seconds: float
    measured: int
    rows: Dict[str, Dict[str, Any]]


def _stratum(p: Point) -> Tuple[bool, int, str]:
    return (p.section == "invalid", p.dims, str(p.r))


def _block(p: Point) -> float:
    """The block size r^dims (1 for the malformed r of the invalid section)."""
    r = p.r if isinstance(p.r, tuple) else (p.r,) * p.dims
    if not all(isinstance(v, int) and v >= 1 for v in r):
        return 1.0
    return float(math.prod(r))


def estimate(pts: Sequence[Point], dtypes: Sequence[Any] = DEFAULT_DTYPES, *, budget_s: float = 1.5) -> Estimate:
    """Estimate how long ``pts`` take: time a few points of every stratum (section invalid or not, dims, r),
    cheapest strata first, for about ``budget_s`` seconds; a stratum left unmeasured is scaled from the
    costliest measured stratum of its dims by (block size ratio)^2. Every point timed is kept in ``rows``.

    Example:
        >>> e = estimate([Point("theorem", 1, 2, in_channels=2, size=5)] * 3, ["float64"])
        >>> e.measured, e.seconds > 0
        (1, True)
    """
    dtypes = tuple(as_float_dtype(d, "dtypes") for d in dtypes)
    strata: Dict[Tuple[bool, int, str], List[Point]] = {}
    for p in pts:
        strata.setdefault(_stratum(p), []).append(p)
    order = sorted(strata, key=lambda s: (not s[0], s[1], _block(strata[s][0]), s[2]))
    costs: Dict[Tuple[bool, int, str], List[float]] = {s: [] for s in order}
    rows: Dict[str, Dict[str, Any]] = {}
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for fraction in (0.5, 0.2, 0.8):  # a middle point of every stratum first, then two more where time allows
            for s in order:
                if time.perf_counter() - start > budget_s:
                    break
                p = strata[s][int(fraction * (len(strata[s]) - 1))]
                if p.key() in rows:
                    continue
                t0 = time.perf_counter()
                rows[p.key()] = run_point(p, dtypes)
                costs[s].append(time.perf_counter() - t0)
    finally:
        torch.set_num_threads(threads)
    total = 0.0
    for s in order:
        if costs[s]:
            per_point = sum(costs[s]) / len(costs[s])
        else:
            known = [(_block(strata[m][0]), sum(c) / len(c)) for m, c in costs.items() if c and m[1] == s[1]] or \
                [(_block(strata[m][0]), sum(c) / len(c)) for m, c in costs.items() if c] or [(1.0, 1e-3)]
            block, cost = max(known, key=lambda bc: bc[1])
            per_point = cost * (_block(strata[s][0]) / block) ** 2
        total += per_point * len(strata[s])
    return Estimate(total, len(rows), rows)


def run_into(
    pts: Sequence[Point],
    append: Callable[[Dict[str, Any]], None],
    dtypes: Sequence[Any] = DEFAULT_DTYPES,
    *,
    done: Optional[Dict[str, Dict[str, Any]]] = None,
    progress: Optional[Callable[[Iterable], Iterable]] = None,
) -> int:
    """Run every point in order and hand each finished row to ``append`` (e.g. :meth:`RowLog.append`); rows
    in ``done`` (by point key, from :func:`estimate`) are not computed again. Returns how many were computed.

    Example:
        >>> out = []
        >>> run_into([Point("theorem", 1, 2, in_channels=2, size=5)], out.append, ["float64"]), out[0]["agree"]
        (1, True)
    """
    dtypes = tuple(as_float_dtype(d, "dtypes") for d in dtypes)
    done = dict(done or {})
    computed = 0
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for p in progress(pts) if progress else pts:
            row = done.pop(p.key(), None)
            if row is None:
                row = run_point(p, dtypes)
                computed += 1
            append(row)
    finally:
        torch.set_num_threads(threads)
    return computed
