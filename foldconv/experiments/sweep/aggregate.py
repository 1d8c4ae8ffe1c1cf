"""Merge the results.csv files of a sweep multirun, refusing a multirun that is not complete.

A Hydra multirun directory holds its record (``multirun.yaml``, written before the first job) and one numbered
folder per job (``0/``, ``1/``, ...), each with the job's composed config in ``.hydra/config.yaml``, its
``results.csv`` and, once the job finished, its completion marker (:mod:`foldconv.experiments.records`). A merge
is only meaningful when every job finished: a job that never started, one cut mid-rows or mid-plots (no
marker), a results.csv truncated after its job finished, or a shard whose siblings are missing
(``shard.count=4`` but index 2 absent) is a FoldError naming ``input``, so the app exits 2 with one line naming
every such job instead of a table that looks complete.
"""
from __future__ import annotations

import collections
import csv
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Dict, Iterator, List, Sequence, Union

from ...errors import fold_error
from ..records import require_complete
from .summary import Tally

__all__ = ["aggregate", "merged_rows", "multirun_results", "write_merged"]


def _job_config(job: Path) -> Dict:
    from omegaconf import OmegaConf

    path = job / ".hydra" / "config.yaml"
    return OmegaConf.to_container(OmegaConf.load(path), resolve=False) if path.exists() else {}  # type: ignore[return-value]


def multirun_results(root: Union[str, Path]) -> List[Path]:
    """The results.csv of every job of the multirun in ``root``, after checking that every job finished.

    The jobs come from the multirun's own record (:func:`~foldconv.experiments.records.require_complete`): a
    job that never started, was cut mid-rows or mid-plots, or whose results.csv was truncated afterwards is
    named, with the command that resumes the whole multirun; so is a missing shard index.

    Example:
        >>> import tempfile
        >>> d = Path(tempfile.mkdtemp())
        >>> (d / "0" / ".hydra").mkdir(parents=True)
        >>> multirun_results(d)
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: input=...: has no multirun.yaml (the record Hydra writes when a multirun starts), so its jobs cannot be listed; ...
    """
    jobs = [job.path for job in require_complete(root)]
    shards: Dict[str, set] = collections.defaultdict(set)
    counts: Dict[str, int] = {}
    for job in jobs:
        cfg = _job_config(job)
        shard = cfg.pop("shard", None) if isinstance(cfg, dict) else None
        if isinstance(shard, dict) and isinstance(shard.get("count"), int) and shard["count"] > 1:
            key = repr(sorted(cfg.items(), key=lambda kv: kv[0]))
            shards[key].add(shard.get("index"))
            counts[key] = shard["count"]
    for key, indices in shards.items():
        absent = sorted(set(range(counts[key])) - indices)
        if absent:
            raise fold_error("input", str(root), f"shard index(es) {absent} of shard.count={counts[key]} are missing; refusing to merge an incomplete multirun")
    return [job / "results.csv" for job in jobs]


def merged_rows(paths: Sequence[Path]) -> Iterator[Dict[str, str]]:
    """The rows of results.csv files, one at a time, each with a ``job`` column (the job's folder name) first.

    Rows that appear in several jobs (grid points shared by every job, such as the invalid section) come once,
    the first time they are seen; a 128-bit digest of each row stands for it, so that millions of rows merge
    in little memory.
    """
    seen = set()
    for path in sorted(Path(p) for p in paths):
        with open(path, newline="") as handle:
            for row in csv.DictReader(handle):
                key = hashlib.blake2b("\x1f".join(f"{k}={v}" for k, v in row.items() if k != "job" and not k.startswith("rel_err")).encode(),
                                      digest_size=16).digest()
                if key in seen:
                    continue
                seen.add(key)
                yield {"job": path.parent.name, **{k: v for k, v in row.items() if k != "job"}}


def aggregate(paths: Sequence[Path]) -> List[Dict[str, str]]:
    """Concatenate results.csv files, adding a ``job`` column (the job's folder name); see :func:`merged_rows`.

    Example:
        >>> import tempfile
        >>> from foldconv.experiments.io import write_csv
        >>> d = Path(tempfile.mkdtemp())
        >>> _ = write_csv([{"section": "theorem", "r": 2}], d / "0" / "results.csv")
        >>> aggregate([d / "0" / "results.csv"])
        [{'job': '0', 'section': 'theorem', 'r': '2'}]
    """
    return list(merged_rows(paths))


def write_merged(paths: Sequence[Path], out: Path) -> Tally:
    """Write the merged rows of ``paths`` to ``out`` (whole or not at all) and return their :class:`Tally`."""
    columns: List[str] = ["job"]
    for path in paths:
        with open(path, newline="") as handle:
            columns += [c for c in next(csv.reader(handle), []) if c not in columns]
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tally = Tally()
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=columns, lineterminator="\n", extrasaction="ignore")
            writer.writeheader()
            for row in merged_rows(paths):
                writer.writerow(row)
                tally.add(row)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return tally
