"""The equivalence phase diagram: predict every configuration of a grid, check it exactly, draw the map.

    python scripts/sweep.py                                  # quick grid (make demo), < 1 minute
    python scripts/sweep.py grid=full fold.r=2 grid.dims=[2] # one slice of the full grid (see configs/grid/full.yaml)
    python scripts/sweep.py -m grid=quick fold.r=2,4         # one job per r (multirun)
    python scripts/sweep.py -m fold.r=2,4 hydra/launcher=parallel        # joblib, local processes
    python scripts/sweep.py -m grid=full fold.r=1,2,3,4 shard.count=64 shard.index="range(64)"         hydra/launcher=cluster                                # SLURM via submitit, 256 jobs

The config is foldconv.experiments.sweep.SweepConfig (grid: the library's Grid). Writes results.csv,
summary.md and PNG heatmaps into the run directory. Exit status: 0 every prediction agrees with the exact
observation, 1 one disagrees (outputs written), 2 a malformed override (one line, checked before any point runs).
"""
from foldconv.experiments.cli import sweep as main

if __name__ == "__main__":
    main()
