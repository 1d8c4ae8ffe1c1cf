"""Merge the results.csv files of a sweep multirun into one table (+ summary.md and plots).

    python scripts/sweep.py -m fold.r=2,4 hydra.sweep.dir=multirun/demo
    python scripts/aggregate.py input=multirun/demo

The config is foldconv.experiments.sweep.main.AggregateConfig. Exit status: 0 merged and every row agrees,
1 a merged row disagrees (outputs written), 2 the input is not a complete multirun (a job crashed or has not
finished, a job folder or a shard is missing): one line, nothing written.
"""
from foldconv.experiments.cli import aggregate as main

if __name__ == "__main__":
    main()
