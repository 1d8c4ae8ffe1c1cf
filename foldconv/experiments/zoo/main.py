"""The zoo app (``foldconv zoo``, ``python scripts/zoo.py``): its config (a library dataclass) and its body.

    foldconv zoo zoo=timm 'names=[resnet*,convnext*]'       # a name filter (fnmatch patterns)
    foldconv zoo -m zoo=timm shard.count=4 'shard.index=range(4)' hydra/launcher=parallel   # joblib
    foldconv zoo merge=multirun/<dir>                      # merge a finished multirun (refuses a partial one)
    foldconv zoo zoo=torchvision check_size=64 check_max_macs=10000000000   # every torchvision classification
                                                           # model, its receptive field checked against gradients at 64 px

Writes results.csv (one row per model, written as each finishes; the same command in the same run directory
resumes a killed run), summary.md (coverage table, blockers ranked), coverage.json, coverage.png,
macs_ratio.png, time.png; the app skeleton writes checks.{csv,md} and index.md. Exit status: 0 done, every
affordable gradient check agrees with the analytic receptive field and every torchvision model measured at its
published input reproduces the published figures; 1 one does not (outputs written); 2 a malformed request (one line).

Example:
    >>> from foldconv.experiments.app import instantiate, structured
    >>> cfg = structured(ZooExperiment)
    >>> cfg.zoo = "keras"
    >>> instantiate(cfg)
    Traceback (most recent call last):
    ...
    foldconv.errors.FoldError: zoo='keras': must be one of ('torchvision', 'timm')
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ...errors import fold_error
from ...models import ZOOS
from ..app import AppResult, Check
from ..io import progress_bar, status, write_atomic, write_csv, write_markdown
from ..sweep.main import Shard
from .aggregate import merge_zoo
from .measure import DEFAULT_CHECK_MAX_MACS, SMALL_SIZE
from .run import COLUMNS, run_zoo
from .summary import coverage, coverage_record, fast_tier_record, plot_zoo, summary_markdown

__all__ = ["ZooExperiment", "zoo_app", "write_zoo_outputs", "zoo_checks"]


@dataclass(frozen=True)
class ZooExperiment:
    """Everything ``foldconv zoo`` accepts.

    ``zoo``: ``timm`` | ``torchvision``; ``names``: fnmatch patterns (empty: the whole zoo); ``shard``: this
    job's share; ``time_limit_s``: per model (a stage still running is recorded as a timeout);
    ``check_max_macs``: forward MACs (at the check's input) up to which the float64 gradient check runs;
    ``check_size``: the spatial size of the check's input (None: each model's own); ``small_size``: the input
    size of a model built on CPU because meta failed; ``merge``: a multirun directory to merge instead of
    measuring.
    """

    zoo: str = "timm"
    names: List[str] = field(default_factory=list)
    shard: Shard = field(default_factory=Shard)
    time_limit_s: float = 120.0
    check_max_macs: int = DEFAULT_CHECK_MAX_MACS
    check_size: Optional[int] = None
    small_size: int = SMALL_SIZE
    merge: Optional[str] = None
    plots: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.zoo not in ZOOS:
            raise fold_error("zoo", self.zoo, f"must be one of {ZOOS}")
        if isinstance(self.time_limit_s, bool) or not isinstance(self.time_limit_s, (int, float)) or not self.time_limit_s > 0:
            raise fold_error("time_limit_s", self.time_limit_s, "must be a number of seconds > 0")
        if isinstance(self.check_max_macs, bool) or not isinstance(self.check_max_macs, int) or self.check_max_macs < 0:
            raise fold_error("check_max_macs", self.check_max_macs, "must be an integer >= 0 (0: no gradient check)")
        if isinstance(self.small_size, bool) or not isinstance(self.small_size, int) or self.small_size < 8:
            raise fold_error("small_size", self.small_size, "must be an integer >= 8")
        if self.check_size is not None and (isinstance(self.check_size, bool) or not isinstance(self.check_size, int) or self.check_size < 1):
            raise fold_error("check_size", self.check_size, "must be a spatial size >= 1, or null (each model's own input)")


#: What each file of a zoo run directory holds (index.md).
ZOO_FILES = {
    "summary.md": "the coverage table first, then what blocks count() and receptive_field(), ranked by how many models",
    "results.csv": "one row per model: build, params and MACs against sum(numel) and FlopCounterMode, unsupported ops, RF or its blocker, gradient check, times, errors",
    "results.config.json": "the config that produced results.csv (a rerun in this directory resumes only with the same one)",
    "coverage.json": "the coverage counts and percentages and every model's status, machine-readable (what the regression tests compare against)",
    "fast_tier.json": "one model per family (the quickest to measure of those built on meta in under a second), with its statuses and exact params and MACs: what the zoo fast tier of the tests measures again",
    "coverage.png": "coverage bars (% of models)",
    "macs_ratio.png": "histogram of count() MACs / FlopCounterMode MACs per model",
    "time.png": "seconds per model and stage",
    "*.log": "the app's log (Hydra)",
}


def write_zoo_outputs(
    rows: Sequence[Mapping[str, Any]], out: Path, *, zoo: str, title: str, plots: bool = True, note: str = "", **settings: Any,
) -> str:
    """summary.md, coverage.json (:func:`coverage_record`, with ``settings``), fast_tier.json and the plots; returns
    the answer line."""
    c = coverage(rows)
    write_atomic(out / "coverage.json", json.dumps(coverage_record(rows, zoo=zoo, **settings), indent=1) + "\n")
    write_atomic(out / "fast_tier.json", json.dumps(fast_tier_record(rows, zoo=zoo, **settings), indent=1) + "\n")
    if plots and rows:
        plot_zoo(rows, out, zoo=zoo)
    # last: until the plots are drawn, summary.md is the skeleton's "run in progress" (a run cut here says so)
    write_markdown(summary_markdown(rows, zoo=zoo, title=title, note=note), out / "summary.md")
    published = f"; torchvision's published figures reproduced on {c.published_ok} of {c.published_checked}" if c.published_checked else ""
    return (
        f"{c.built} of {c.models} models built; params exact on {c.params_exact_pct} %, MACs = FlopCounterMode on "
        f"{c.macs_exact_pct} %, RF analysed without fallback on {c.rf_analysed_pct} % (of those built); analytic = "
        f"empirical on {c.check_ok} of {c.checked} checked{published}"
    )


def zoo_checks(rows: Sequence[Mapping[str, Any]]) -> Tuple[Check, ...]:
    """The claims a zoo run checks, per model: the analytic receptive field equals the gradient supports (where the
    check ran), and a torchvision model's params and GMACs equal the published figures (where it was measured at
    its published input).

    Example:
        >>> [c.ok for c in zoo_checks([{"model": "m", "check": "mismatch", "published": "ok"}])]
        [False, True]
    """
    checks = []
    for r in rows:
        if r.get("check") in ("ok", "mismatch"):
            checks.append(Check("analytic receptive field = gradient supports", r["check"] == "ok", subject=str(r["model"]),
                                claim="RF-2", detail=f"at {r.get('check_shape') or r.get('input_shape', '')}"))
        if r.get("published"):
            checks.append(Check("params and GMACs = torchvision's published figures", r["published"] == "ok", subject=str(r["model"]),
                                claim="COUNT-2", detail="" if r["published"] == "ok" else str(r["published"])))
    return tuple(checks)


def zoo_app(config: ZooExperiment, out: Path, *, log: Any = status) -> AppResult:
    """The zoo app's body: measure (or merge) into ``out``; the checks of :func:`zoo_checks` go to the skeleton,
    which fails the run (after everything is written) when one does not hold."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # pretrained=False everywhere: never reach for the hub
    out = Path(out)
    if config.merge is not None:
        from hydra.utils import to_absolute_path

        rows: List[Dict[str, Any]] = list(merge_zoo(Path(to_absolute_path(config.merge))))
        write_csv(rows, out / "results.csv", COLUMNS)
        title = f"The {config.zoo} zoo: {len(rows)} models merged from {config.merge}"
    else:
        shard = f", shard {config.shard.index}/{config.shard.count}" if config.shard.count > 1 else ""
        title = f"The {config.zoo} zoo{shard}: coverage of count() and receptive_field()"
        rows = list(run_zoo(  # Ctrl-C: the skeleton says what is saved and how to resume
            config.zoo, out, names=config.names, shard_index=config.shard.index, shard_count=config.shard.count,
            time_limit_s=config.time_limit_s, check_max_macs=config.check_max_macs, small_size=config.small_size,
            check_size=config.check_size, progress=progress_bar if config.progress else None, log=log,
        ))
    settings = {"time_limit_s": config.time_limit_s, "check_max_macs": config.check_max_macs}
    if config.check_size is not None:
        settings["check_size"] = config.check_size
    answer = write_zoo_outputs(rows, out, zoo=config.zoo, title=title, plots=config.plots, **settings)
    return AppResult(title, answer, zoo_checks(rows), ZOO_FILES, f"{answer}; outputs in {out}", rows)
