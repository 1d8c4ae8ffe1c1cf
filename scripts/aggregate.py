"""Merge the results.csv files of a sweep multirun into one table (+ summary.md and plots).

    python scripts/sweep.py -m fold.r=2,4 hydra.sweep.dir=multirun/demo
    python scripts/aggregate.py input=multirun/demo
"""
from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from hydra.utils import to_absolute_path
from omegaconf import MISSING

from foldconv.experiments.sweep.summary import aggregate, write_sweep_outputs


@dataclass
class AggregateConfig:
    input: str = MISSING  # a multirun directory; every */results.csv below it is merged
    plots: bool = True


ConfigStore.instance().store(name="aggregate_schema", node=AggregateConfig)


@hydra.main(version_base="1.3", config_path="../configs", config_name="aggregate")
def main(cfg: AggregateConfig) -> None:
    root = Path(to_absolute_path(cfg.input))
    paths = sorted(root.rglob("results.csv"))
    if not paths:
        print(f"input={str(root)!r}: no results.csv below this directory", file=sys.stderr)
        sys.exit(2)
    rows = aggregate(paths)
    out = Path(HydraConfig.get().runtime.output_dir)
    write_sweep_outputs(rows, out, f"Aggregated sweep: {len(paths)} jobs from {root.name}", plots=cfg.plots)
    bad = sum(r["agree"] != "True" for r in rows)
    print(f"merged {len(paths)} results.csv files into {len(rows)} rows ({bad} disagreements); outputs in {out}")
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()
