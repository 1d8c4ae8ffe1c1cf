"""The zoo app (``foldconv zoo``, ``python scripts/zoo.py``): its config (a library dataclass) and its body.

    foldconv zoo zoo=timm 'names=[resnet*,convnext*]'       # a name filter (fnmatch patterns)
    foldconv zoo -m zoo=timm shard.count=4 'shard.index=range(4)' hydra/launcher=parallel   # joblib
    foldconv zoo merge=multirun/<dir>                      # merge a finished multirun (refuses a partial one)

Writes results.csv (one row per model, written as each finishes; the same command in the same run directory
resumes a killed run), summary.md (coverage table, blockers ranked), coverage.json, coverage.png,
macs_ratio.png, time.png and index.md. Exit status: 0 done and every affordable gradient check agrees with
the analytic receptive field, 1 one disagrees (outputs written), 2 a malformed request (one line).

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
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ...errors import fold_error
from ..app import ClaimFailed, finish, hydra_app, instantiate, register, run_dir
from ..io import progress_bar, write_atomic, write_csv, write_index, write_markdown
from ..sweep.main import Shard
from .aggregate import merge_zoo
from .measure import DEFAULT_CHECK_MAX_MACS
from .models import SMALL_SIZE, ZOOS
from .run import COLUMNS, run_zoo
from .summary import coverage, coverage_record, fast_tier_record, plot_zoo, summary_markdown

__all__ = ["ZooExperiment", "run_zoo_app", "write_zoo_outputs", "zoo"]


@dataclass(frozen=True)
class ZooExperiment:
    """Everything ``foldconv zoo`` accepts.

    ``zoo``: ``timm`` | ``torchvision``; ``names``: fnmatch patterns (empty: the whole zoo); ``shard``: this
    job's share; ``time_limit_s``: per model (a stage still running is recorded as a timeout);
    ``check_max_macs``: forward MACs up to which the float64 gradient check runs; ``small_size``: the input
    size of a model built on CPU because meta failed; ``merge``: a multirun directory to merge instead of
    measuring.
    """

    zoo: str = "timm"
    names: List[str] = field(default_factory=list)
    shard: Shard = field(default_factory=Shard)
    time_limit_s: float = 120.0
    check_max_macs: int = DEFAULT_CHECK_MAX_MACS
    small_size: int = SMALL_SIZE
    merge: Optional[str] = None
    plots: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        if self.zoo not in ZOOS:
            raise fold_error("zoo", self.zoo, f"must be one of {ZOOS}")
        if not self.time_limit_s or self.time_limit_s <= 0:
            raise fold_error("time_limit_s", self.time_limit_s, "must be a number of seconds > 0")
        if isinstance(self.check_max_macs, bool) or not isinstance(self.check_max_macs, int) or self.check_max_macs < 0:
            raise fold_error("check_max_macs", self.check_max_macs, "must be an integer >= 0 (0: no gradient check)")
        if isinstance(self.small_size, bool) or not isinstance(self.small_size, int) or self.small_size < 8:
            raise fold_error("small_size", self.small_size, "must be an integer >= 8")


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
    """summary.md, coverage.json (:func:`coverage_record`, with ``settings``), the plots and index.md; returns the answer line."""
    c = coverage(rows)
    write_markdown(summary_markdown(rows, zoo=zoo, title=title, note=note), out / "summary.md")
    write_atomic(out / "coverage.json", json.dumps(coverage_record(rows, zoo=zoo, **settings), indent=1) + "\n")
    write_atomic(out / "fast_tier.json", json.dumps(fast_tier_record(rows, zoo=zoo, **settings), indent=1) + "\n")
    if plots and rows:
        plot_zoo(rows, out, zoo=zoo)
    answer = (
        f"{c.built} of {c.models} models built; params exact on {c.params_exact_pct} %, MACs = FlopCounterMode on "
        f"{c.macs_exact_pct} %, RF analysed without fallback on {c.rf_analysed_pct} % (of those built); analytic = "
        f"empirical on {c.check_ok} of {c.checked} checked"
    )
    write_index(out, ZOO_FILES, title=title, answer=answer)
    return answer


def run_zoo_app(config: ZooExperiment, out: Path, *, log: Any = print) -> str:
    """Measure (or merge) into ``out``; ClaimFailed (after writing everything) when a gradient check disagrees."""
    out = Path(out)
    if config.merge is not None:
        from hydra.utils import to_absolute_path

        rows: List[Dict[str, Any]] = list(merge_zoo(Path(to_absolute_path(config.merge))))
        write_csv(rows, out / "results.csv", COLUMNS)
        title = f"The {config.zoo} zoo: {len(rows)} models merged from {config.merge}"
    else:
        shard = f", shard {config.shard.index}/{config.shard.count}" if config.shard.count > 1 else ""
        title = f"The {config.zoo} zoo{shard}: coverage of count() and receptive_field()"
        try:
            rows = list(run_zoo(
                config.zoo, out, names=config.names, shard_index=config.shard.index, shard_count=config.shard.count,
                time_limit_s=config.time_limit_s, check_max_macs=config.check_max_macs, small_size=config.small_size,
                progress=progress_bar if config.progress else None, log=log,
            ))
        except KeyboardInterrupt:
            print(f"interrupted: the finished models are saved in {out / 'results.csv'}; run the same command with "
                  f"hydra.run.dir={out} to resume", file=sys.stderr)
            raise SystemExit(130) from None
    answer = write_zoo_outputs(rows, out, zoo=config.zoo, title=title, plots=config.plots,
                               time_limit_s=config.time_limit_s, check_max_macs=config.check_max_macs)
    bad = [r["model"] for r in rows if r.get("check") == "mismatch"]
    if bad:
        raise ClaimFailed(f"analytic != empirical receptive field on {len(bad)} model(s) ({', '.join(bad[:5])}); see {out / 'summary.md'}")
    return f"{answer}; outputs in {out}"


register("zoo_schema", ZooExperiment)


@hydra_app("zoo")
def zoo(cfg: Any) -> None:
    """``foldconv zoo`` / ``python scripts/zoo.py``."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # pretrained=False everywhere: never reach for the hub
    finish(lambda: run_zoo_app(instantiate(cfg), run_dir()), name="zoo")
