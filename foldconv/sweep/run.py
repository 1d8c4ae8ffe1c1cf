"""Run the sweep: predict and observe every point, one CSV row each, and say whether they agree.

Example:
    >>> rows = run_sweep([Point("theorem", 1, 2, in_channels=2, size=5)])
    >>> rows[0]["agree"], list(rows[0])[-3:]
    (True, ['rel_err_bfloat16', 'crop_exact', 'pad_exact'])
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

import torch

from ..check import as_float_dtype
from .grid import POINT_FIELDS, Point
from .observe import observe_point, observed_outcome

__all__ = [
    "COLUMNS", "CRASHED", "DEFAULT_DTYPES", "columns", "crashed_row", "dtype_name", "point_row", "run_point", "run_sweep", "single_thread",
]

#: The error columns a sweep measures by default.
DEFAULT_DTYPES = (torch.float32, torch.bfloat16)
_RESULT = [
    "predicted", "observed", "predicted_literal", "observed_literal", "observed_conditioned", "agree", "rule", "reason",
    "conditions", "folded", "density",
]
#: The ``observed`` value of a point whose observation took its process down (see :func:`crashed_row`).
CRASHED = "crashed"


def dtype_name(dtype: Any) -> str:
    """``torch.bfloat16`` or ``"bfloat16"`` -> ``"bfloat16"`` (FoldError naming ``dtypes`` otherwise).

    Example:
        >>> dtype_name("torch.bfloat16"), dtype_name(torch.float32)
        ('bfloat16', 'float32')
    """
    return str(as_float_dtype(dtype, "dtypes")).replace("torch.", "")


def columns(dtypes: Sequence[Any] = DEFAULT_DTYPES) -> List[str]:
    """The CSV columns of a sweep measuring ``dtypes``: the point, the verdicts, one ``rel_err_<dtype>`` each.

    Example:
        >>> [c for c in columns(["float64"]) if c.startswith("rel_err")]
        ['rel_err_float64']
    """
    return list(POINT_FIELDS) + _RESULT + [f"rel_err_{dtype_name(d)}" for d in dtypes] + ["crop_exact", "pad_exact"]


#: The CSV columns of a sweep with the default dtypes (float32, bfloat16).
COLUMNS = columns()


def point_row(p: Point) -> Dict[str, Any]:
    """The point's own columns of its CSV row (what identifies the row when a run resumes).

    Example:
        >>> point_row(Point("theorem", 2, (2, 1)))["r"]
        '(2, 1)'
    """
    row = {k: getattr(p, k) for k in POINT_FIELDS}
    return {k: (str(v) if isinstance(v, tuple) else v) for k, v in row.items()}


def crashed_row(p: Point, dtypes: Sequence[Any] = DEFAULT_DTYPES, *, detail: str) -> Dict[str, Any]:
    """The row of a point whose observation took its process down (a native crash): nothing was observed.

    ``observed`` is :data:`CRASHED`, ``agree`` is empty (neither agreement nor disagreement was seen) and
    ``reason`` says what happened; a resumed run finds the row and does not run the point again.

    Example:
        >>> row = crashed_row(Point("theorem", 2, 2), ["float32"], detail="killed by SIGABRT")
        >>> row["observed"], row["agree"], row["reason"]
        ('crashed', '', 'the observation crashed its process (killed by SIGABRT); not observed')
    """
    row = point_row(p)
    row.update({k: "" for k in _RESULT})
    row.update(observed=CRASHED, reason=f"the observation crashed its process ({detail}); not observed")
    row.update({f"rel_err_{dtype_name(dt)}": None for dt in dtypes})
    row.update(crop_exact=None, pad_exact=None)
    return row


class single_thread:
    """Run torch on one intra-op thread inside the block (small, deterministic convs); restore it after.

    Example:
        >>> with single_thread():
        ...     torch.get_num_threads()
        1
    """

    def __enter__(self) -> None:
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def __exit__(self, *exc: Any) -> None:
        torch.set_num_threads(self._threads)


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
    with single_thread():
        return [run_point(p, dtypes) for p in (progress(pts) if progress else pts)]


