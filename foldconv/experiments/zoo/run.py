"""Measure a zoo (or one shard of it) into ``results.csv``, one atomic row per model, resuming after a kill.

The rows go through :class:`~foldconv.experiments.io.RowLog`: each finished model is one complete line, and
a rerun of the same config in the same directory skips the models already written. A shard is every
``count``-th model of the sorted, filtered list starting at ``index``, so ``shard.count`` jobs of a multirun
cover the zoo exactly once and their sizes differ by at most one model.

Example:
    >>> shard_of(["a", "b", "c", "d", "e"], index=1, count=2)
    ['b', 'd']
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence

from ...errors import fold_error
from ...models import zoo_models
from ..app import close_matches
from ..io import RowLog, progress_bar
from .measure import DEFAULT_CHECK_MAX_MACS, SMALL_SIZE, ZooRow, measure_model

__all__ = ["COLUMNS", "shard_of", "run_zoo"]

#: The columns of results.csv, in ZooRow's field order.
COLUMNS = [f.name for f in dataclasses.fields(ZooRow)]


def shard_of(names: Sequence[str], *, index: int, count: int) -> List[str]:
    """Every ``count``-th name starting at ``index`` (``0 <= index < count``).

    Example:
        >>> shard_of(list("abc"), index=0, count=1)
        ['a', 'b', 'c']
    """
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise fold_error("shard.count", count, "must be an integer >= 1")
    if isinstance(index, bool) or not isinstance(index, int) or not 0 <= index < count:
        raise fold_error("shard.index", index, f"must be an integer with 0 <= index < shard.count={count}")
    return list(names[index::count])


def _matching(zoo: str, names: Sequence[str]) -> List[str]:
    """:func:`~foldconv.models.zoo_models`, refusing every pattern that matches nothing (also beside patterns that
    match: a typo is never silently dropped), with the close model names, as a misspelt model name gets them
    everywhere else (``resnet5O`` -> ``resnet50``)."""
    import fnmatch

    patterns = [names] if isinstance(names, str) else list(names)
    every = zoo_models(zoo)
    if not patterns:
        return every
    unmatched = [str(p) for p in patterns if not any(fnmatch.fnmatchcase(n, str(p)) for n in every)]
    if unmatched:
        close = [c for p in unmatched for c in close_matches(p.strip("*?[]"), every)]
        hint = f"; did you mean {' or '.join(dict.fromkeys(close))}?" if close else ""
        which = "match" if len(unmatched) == len(patterns) else f"{', '.join(unmatched)} {'matches' if len(unmatched) == 1 else 'match'}"
        raise fold_error("names", patterns, f"{which} no model of the {zoo} zoo{hint}")
    return zoo_models(zoo, patterns)


def _scrambled(name: str) -> str:
    return hashlib.sha256(name.encode()).hexdigest()


def run_zoo(
    zoo: str,
    out: Path,
    *,
    names: Sequence[str] = (),
    shard_index: int = 0,
    shard_count: int = 1,
    time_limit_s: Optional[float] = 120.0,
    check_max_macs: int = DEFAULT_CHECK_MAX_MACS,
    small_size: int = SMALL_SIZE,
    check_size: Optional[int] = None,
    progress: Optional[Callable[..., Iterable[Any]]] = progress_bar,
    on_row: Optional[Callable[[Dict[str, Any]], None]] = None,
    log: Optional[Callable[[str], None]] = None,
) -> List[Dict[str, str]]:
    """Measure the shard's models not yet in ``out/results.csv``; returns every row of the file. ``check_size``:
    the spatial size of the gradient check (None: each model's own input, :func:`~.measure.measure_model`).

    Example:
        >>> import tempfile
        >>> rows = run_zoo("torchvision", Path(tempfile.mkdtemp()), names=["alexnet"], check_max_macs=0, progress=None)
        >>> [(r["model"], r["params_ok"], r["macs_ok"]) for r in rows]
        [('alexnet', 'True', 'True')]
    """
    models = shard_of(_matching(zoo, names), index=shard_index, count=shard_count)
    config = {
        "zoo": zoo, "names": list(names), "shard": {"index": shard_index, "count": shard_count},
        "time_limit_s": time_limit_s, "check_max_macs": check_max_macs, "small_size": small_size,
        **({"check_size": check_size} if check_size is not None else {}),
    }
    out = Path(out)
    with RowLog(out / "results.csv", COLUMNS, key=["model"], config=config, param="hydra.run.dir") as rows_log:
        # a fixed pseudo-random order: a run stopped part-way holds a uniform sample of the zoo, not its first letters
        todo = sorted((m for m in models if rows_log.key_of({"model": m}) not in rows_log.done), key=_scrambled)
        if log is not None:
            resumed = f" ({len(models) - len(todo)} already in results.csv, resuming; {len(todo)} to run)" if len(todo) < len(models) else ""
            log(f"{len(models)} {zoo} models{resumed}")
        items: Iterable[str] = todo if progress is None else progress(todo, f"{zoo} zoo", total=len(todo), unit="model")
        for name in items:
            row = measure_model(zoo, name, check_max_macs=check_max_macs, time_limit_s=time_limit_s, small_size=small_size,
                                check_size=check_size).as_row()
            rows_log.append(row)
            if on_row is not None:
                on_row(row)
        return rows_log.rows()
