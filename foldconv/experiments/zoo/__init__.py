"""A zoo (timm or torchvision) measured: every model counted and traced, with coverage figures.

:mod:`foldconv.models` (names, families, input shapes, the one resolver) → ``measure`` (a build on meta or
CPU, one model → one frozen :class:`ZooRow`) → ``run`` (shards, resumable rows) → ``summary`` (coverage, blockers ranked, plots) →
``aggregate`` (merge a multirun) → ``main`` (the app's config and body).

Example (shards of a zoo differ by at most one model):
    >>> from foldconv.experiments.zoo import shard_of
    >>> [shard_of(["a", "b", "c"], index=k, count=2) for k in range(2)]
    [['a', 'c'], ['b']]
"""
from .measure import Built, ZooRow, build_zoo_model, measure_model
from .run import run_zoo, shard_of
from .summary import Coverage, blockers, coverage

__all__ = ["Built", "Coverage", "ZooRow", "blockers", "build_zoo_model", "coverage", "measure_model", "run_zoo", "shard_of"]
