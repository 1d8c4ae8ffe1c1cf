"""Run the sweep: predict and observe every point, one CSV row each, and say whether they agree.

Example:
    >>> rows = run_sweep([Point("theorem", 1, 2, in_channels=2, size=5)])
    >>> rows[0]["agree"], list(rows[0])[-3:]
    (True, ['rel_err_bfloat16', 'crop_exact', 'pad_exact'])
"""
from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch

from ...check import as_float_dtype
from .grid import Point
from .observe import observe_point, observed_outcome
from .summary import DEFAULT_DTYPES, dtype_name

__all__ = ["run_point", "run_sweep"]


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
    row: Dict[str, Any] = {k: (str(v) if isinstance(v, tuple) else v) for k, v in asdict(p).items()}
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
