"""Merge the results.csv files of a zoo multirun, refusing one that is not complete.

On top of the sweep's checks (:func:`~foldconv.experiments.sweep.aggregate.multirun_results`: every job of
the multirun's record finished and left its results.csv as it was, every shard index), a zoo job must hold a row for every model of its shard: a job
killed part-way leaves a results.csv that resumes, not one to merge. The expected models come from the
job's ``results.config.json`` (zoo, name filter, shard), so the check needs no config of its own.

Example:
    >>> import tempfile
    >>> merge_zoo(Path(tempfile.mkdtemp()))
    Traceback (most recent call last):
    ...
    foldconv.errors.FoldError: input=...: has no multirun.yaml (the record Hydra writes when a multirun starts), so its jobs cannot be listed; ...
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List

from ...errors import fold_error
from ...models import zoo_models
from ..io import read_csv
from ..sweep.aggregate import multirun_results
from .run import shard_of

__all__ = ["merge_zoo"]


def merge_zoo(root: Path) -> List[Dict[str, str]]:
    """Every row of every job of the zoo multirun in ``root`` (one per model), after checking it is complete."""
    root = Path(root)
    rows: Dict[str, Dict[str, str]] = {}
    for path in multirun_results(root):
        config_path = path.with_name("results.config.json")
        if not config_path.exists():
            raise fold_error("input", str(root), f"{path} has no results.config.json beside it (not written by the zoo app)")
        config = json.loads(config_path.read_text())
        shard = config.get("shard", {"index": 0, "count": 1})
        expected = shard_of(zoo_models(config["zoo"], config.get("names") or ()), index=shard["index"], count=shard["count"])
        job_rows = read_csv(path)
        have = {r["model"] for r in job_rows}
        missing = [m for m in expected if m not in have]
        if missing:
            raise fold_error(
                "input", str(root),
                f"job {path.parent.name} (shard {shard['index']}/{shard['count']}) lacks {len(missing)} of its {len(expected)} "
                f"models (e.g. {missing[0]}): it was interrupted; rerun it to resume, then merge",
            )
        for r in job_rows:
            rows.setdefault(r["model"], r)
    return [rows[m] for m in sorted(rows)]
