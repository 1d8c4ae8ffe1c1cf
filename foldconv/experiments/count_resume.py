"""What makes a count run resumable: the config fingerprint of its jobs and the totals a resumed model keeps.

:func:`foldconv.experiments.counting.run_count_jobs` records each finished model in ``models.csv``
(:class:`~foldconv.experiments.io.RowLog`) with :func:`fingerprint` as its config, so a rerun of the same
jobs and settings in the same directory skips them.

Example:
    >>> import torch
    >>> from foldconv.experiments.counting import CountJob
    >>> sorted(fingerprint([CountJob("c", torch.nn.Conv2d(2, 2, 1), (1, 2, 4, 4))], plot=False)["jobs"]["c"])
    ['expect', 'input_shape', 'model', 'published']
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any, Dict, Sequence

__all__ = ["Totals", "tuples", "fingerprint"]


@dataclass(frozen=True)
class Totals:
    """What :func:`~foldconv.experiments.count_plots.plot_comparison` reads of a model (a resumed model has no
    CountReport in this run).

    Example:
        >>> Totals("net", 10, 20).macs
        20
    """

    model: str
    params: int
    macs: int


def tuples(value: Any) -> Any:
    """JSON gives lists back; the tables write shapes as tuples.

    Example:
        >>> tuples([1, [3, 4]])
        (1, (3, 4))
    """
    return tuple(tuples(v) for v in value) if isinstance(value, list) else value


def fingerprint(jobs: Sequence[Any], **settings: Any) -> Dict[str, Any]:
    """What decides a count run's rows: every job (its module's repr hashed) and the settings."""
    described = {
        j.label: {"model": hashlib.sha256(repr(j.model).encode()).hexdigest()[:16], "input_shape": [s if isinstance(s, int) else str(s) for s in j.input_shape],
                  "published": j.published is not None, "expect": dict(j.expect)}
        for j in jobs
    }
    return {"jobs": described, **{k: str(v) for k, v in settings.items()}}
