"""Merge the results.csv files of a sweep multirun into one table (+ summary.md and plots).

    python scripts/sweep.py -m fold.r=2,4 hydra.sweep.dir=multirun/demo
    python scripts/aggregate.py input=multirun/demo

The config is foldconv.experiments.sweep.main.AggregateConfig. Exit status: 0 merged and every row agrees,
1 a merged row disagrees (outputs written), 2 the input is not a complete multirun (a job crashed or has not
finished, a job folder or a shard is missing): one line, nothing written.
"""
from __future__ import annotations

from pathlib import Path

from hydra.utils import to_absolute_path

from foldconv.experiments.app import finish, hydra_app, instantiate, register, run_dir
from foldconv.experiments.sweep.main import AggregateConfig, run_aggregate_app

register("aggregate_schema", AggregateConfig)


def run(cfg) -> str:
    config: AggregateConfig = instantiate(cfg)
    return run_aggregate_app(config, run_dir(), Path(to_absolute_path(config.input)))


@hydra_app("aggregate")
def main(cfg) -> None:
    finish(lambda: run(cfg), name="aggregate")


if __name__ == "__main__":
    main()
