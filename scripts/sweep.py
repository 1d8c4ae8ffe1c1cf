"""The equivalence phase diagram: predict every configuration of a grid, check it exactly, draw the map.

    python scripts/sweep.py                                  # quick grid (make demo), < 1 minute
    python scripts/sweep.py grid=full fold.r=2 grid.dims=[2] # one slice of the full grid (see configs/grid/full.yaml)
    python scripts/sweep.py -m grid=quick fold.r=2,4         # one job per r (multirun)
    python scripts/sweep.py -m fold.r=2,4 hydra/launcher=parallel        # joblib, local processes
    python scripts/sweep.py -m grid=full fold.r=1,2,3,4 shard.count=64 shard.index="range(64)" \
        hydra/launcher=cluster                                # SLURM via submitit, 256 jobs

Writes results.csv, summary.md and PNG heatmaps into the run directory; exits 1 when any prediction
disagrees with the exact observation (after writing everything).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional

import hydra
from hydra.core.config_store import ConfigStore
from hydra.core.hydra_config import HydraConfig
from tqdm import tqdm

from foldconv.experiments.one_fold import parse_dtype
from foldconv.experiments.sweep.core import Grid, parse_r, points, run_sweep
from foldconv.experiments.sweep.summary import write_sweep_outputs


@dataclass
class GridConfig:
    name: str = "quick"
    dims: List[int] = field(default_factory=lambda: [1, 2, 3])
    r: List[str] = field(default_factory=lambda: ["1", "2", "3", "4"])
    kernel: List[int] = field(default_factory=lambda: [1, 2, 3])
    stride: List[int] = field(default_factory=lambda: [1, 2])
    padding: List[int] = field(default_factory=lambda: [0, 1])
    dilation: List[int] = field(default_factory=lambda: [1, 2])
    groups: List[int] = field(default_factory=lambda: [1, 2, 0])
    folded_channels: List[int] = field(default_factory=lambda: [1, 2])
    out_channels: int = 2
    padding_modes: List[str] = field(default_factory=lambda: ["zeros", "circular", "reflect", "replicate"])
    orders: List[str] = field(default_factory=lambda: ["crd", "dcr", "focus"])
    input_orders: List[str] = field(default_factory=lambda: ["same", "crd", "dcr"])
    folded_strides: List[int] = field(default_factory=lambda: [0, 1])
    following: List[str] = field(default_factory=list)
    s2d_sizes: List[int] = field(default_factory=lambda: [8, 9])
    extra: int = 3
    product: bool = False
    invalid: bool = True


@dataclass
class FoldOverride:
    r: Optional[str] = None  # restrict the grid to one fold factor (for multirun splits: fold.r=2,4)


@dataclass
class ShardConfig:
    index: int = 0  # this job runs points index, index + count, index + 2*count, ...
    count: int = 1


@dataclass
class SweepConfig:
    grid: GridConfig = field(default_factory=GridConfig)
    fold: FoldOverride = field(default_factory=FoldOverride)
    shard: ShardConfig = field(default_factory=ShardConfig)
    dtypes: List[str] = field(default_factory=lambda: ["float32", "bfloat16"])
    plots: bool = True
    progress: bool = True


ConfigStore.instance().store(name="sweep_schema", node=SweepConfig)


@hydra.main(version_base="1.3", config_path="../configs", config_name="sweep")
def main(cfg: SweepConfig) -> None:
    out = Path(HydraConfig.get().runtime.output_dir)
    g = cfg.grid
    grid = Grid(
        name=g.name, dims=tuple(g.dims), r=tuple(parse_r(v) for v in g.r), kernel=tuple(g.kernel), stride=tuple(g.stride),
        padding=tuple(g.padding), dilation=tuple(g.dilation), groups=tuple(g.groups), folded_channels=tuple(g.folded_channels),
        out_channels=g.out_channels, padding_modes=tuple(g.padding_modes), orders=tuple(g.orders), input_orders=tuple(g.input_orders),
        folded_strides=tuple(g.folded_strides), following=tuple(g.following), s2d_sizes=tuple(g.s2d_sizes), extra=g.extra,
        product=g.product, invalid=g.invalid,
    )
    override = [parse_r(cfg.fold.r)] if cfg.fold.r is not None else None
    if not 0 <= cfg.shard.index < cfg.shard.count:
        print(f"shard.index={cfg.shard.index}: must be in [0, shard.count={cfg.shard.count})", file=sys.stderr)
        sys.exit(2)
    pts = points(grid, override)[cfg.shard.index :: cfg.shard.count]
    bar = (lambda it: tqdm(it, desc=f"sweep {g.name}", unit="cfg", mininterval=0.5)) if cfg.progress else None
    rows = run_sweep(pts, [parse_dtype(d) for d in cfg.dtypes], progress=bar)
    title = f"Equivalence sweep: grid={g.name}" + (f", r={cfg.fold.r}" if cfg.fold.r is not None else "")
    if cfg.shard.count > 1:
        title += f", shard {cfg.shard.index}/{cfg.shard.count}"
    write_sweep_outputs(rows, out, title, plots=cfg.plots)
    bad = [r for r in rows if not r["agree"]]
    print(f"{len(rows)} configurations; {len(rows) - len(bad)} predictions agree with the exact observation; outputs in {out}")
    if bad:
        print(f"CLAIM FAILED: {len(bad)} prediction(s) disagree with the observation; see {out / 'summary.md'}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
