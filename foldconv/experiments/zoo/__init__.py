"""A zoo (timm or torchvision) measured: every model counted and traced, with coverage figures.

``models`` (names, families, input shapes, builds on meta or CPU) → ``measure`` (one model → one frozen
:class:`ZooRow`) → ``run`` (shards, resumable rows) → ``summary`` (coverage, blockers ranked, plots) →
``aggregate`` (merge a multirun) → ``main`` (the app's config and body).
"""
from .measure import ZooRow, measure_model
from .models import Built, build_model, zoo_models
from .run import run_zoo, shard_of
from .summary import Coverage, blockers, coverage

__all__ = ["Built", "Coverage", "ZooRow", "blockers", "build_model", "coverage", "measure_model", "run_zoo", "shard_of", "zoo_models"]
