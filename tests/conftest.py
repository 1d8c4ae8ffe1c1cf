"""Shared test configuration: the claims registry, hypothesis profiles and the test tiers.

Tiers: `slow` marks the model zoos and the apps run end to end in process with their figures (SLOW_PATHS, marked
here by path; the doctests of foldconv.experiments, in tests/test_doctests.py) and `app` marks every
test that runs a subprocess (the Hydra apps: tests/**/test_*_app.py, and any test that calls ``subprocess``
itself, through a helper or a fixture defined in tests/). `make check` deselects both, and the `zoo` tier (one timm
model per family, marked in tests/experiments/test_zoo_families.py). `make check` also loads the `fast` hypothesis
profile: property tests draw a quarter of their examples (helpers.examples), the whole suite all of them.
tests/ is on sys.path (pyproject's pytest ``pythonpath``), so tests import shared code with ``from helpers import ...``.
"""
from __future__ import annotations

import fnmatch
import functools
import inspect
import os
import re
import types
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from helpers import ROOT

CLAIMS_FILE = ROOT / "paper_notes" / "claims.md"
CLAIM_ROW = re.compile(r"^\|\s*([A-Z][A-Z0-9]*-\d+[a-z]?)\s*\|", re.M)

settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
# The fast tier (`make check`): the same derandomised search with fewer examples (tests that name their own count
# scale it with helpers.examples).
settings.register_profile("fast", deadline=None, derandomize=True, max_examples=25,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def pytest_configure(config):
    # Under pytest-xdist each worker is its own process: torch's default intra-op pool (one thread per core)
    # in every worker oversubscribes the cores and made `-n 2` slower than serial here (70 s against 25 s).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")  # also reaches the apps the `app` tests start
        import torch

        threads = os.environ["OMP_NUM_THREADS"]
        if threads.isdigit() and int(threads) > 0:
            torch.set_num_threads(int(threads))


def registered_claims() -> set:
    """Claim IDs listed in paper_notes/claims.md (first cell of a table row)."""
    return set(CLAIM_ROW.findall(CLAIMS_FILE.read_text()))


SLOW_PATHS = (
    "tests/experiments/test_zoo_t*.py",  # the whole-zoo runs: test_zoo_timm.py, test_zoo_torchvision.py
    # Apps run end to end in process and their figures rendered and measured: seconds per test, a third of the
    # fast tier's time. The library layers they call keep their own tests in the fast tier; `make test` runs these.
    "tests/experiments/test_png_text_fits.py",
    "tests/experiments/test_figures.py",
    "tests/experiments/test_app_outputs.py",
    "tests/experiments/test_shift_outputs.py",
    "tests/experiments/test_rewrite_outputs.py",
    "tests/experiments/test_receptive_field_experiment.py",
    "tests/experiments/test_receptive_field_measurements.py",
)
APP_PATHS = ("tests/*_app.py",)  # fnmatch's * also matches "/"
TOOL_PATHS = ("tests/test_architecture.py",)  # runs ruff and lint-imports (a second in all), no app: stays in `make check`


def _names(code: types.CodeType) -> set:
    """Global and attribute names a code object (and the functions nested in it) refers to."""
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _names(const)
    return names


_RUNS_SUBPROCESS: dict = {}


def _in_tests(func) -> bool:
    source = inspect.getsourcefile(func) if inspect.isfunction(func) else None
    return bool(source) and _under_tests(source)


@functools.cache
def _under_tests(source: str) -> bool:
    return Path(source).resolve().is_relative_to(ROOT / "tests")


def runs_subprocess(func) -> bool:
    """Whether ``func``, or a function of tests/ that it calls (transitively, e.g. helpers.run_script), uses
    ``subprocess``."""
    func = inspect.unwrap(func)
    if func in _RUNS_SUBPROCESS:
        return _RUNS_SUBPROCESS[func]
    _RUNS_SUBPROCESS[func] = False  # breaks recursion cycles
    code = getattr(func, "__code__", None)
    found = False
    if code is not None:
        names = _names(code)
        scope = getattr(func, "__globals__", {})
        found = "subprocess" in names or any(
            _in_tests(obj) and runs_subprocess(obj) for obj in (scope.get(name) for name in names)
        )
    _RUNS_SUBPROCESS[func] = found
    return found


def _uses_subprocess(item) -> bool:
    if runs_subprocess(getattr(item, "function", None) or (lambda: None)):
        return True
    fixtures = getattr(getattr(item, "_fixtureinfo", None), "name2fixturedefs", {})
    return any(
        _in_tests(fixturedef.func) and runs_subprocess(fixturedef.func)
        for name in getattr(item, "fixturenames", ())
        for fixturedef in fixtures.get(name, ())
    )


def pytest_collection_modifyitems(config, items):
    known = registered_claims()
    for item in items:
        path = Path(str(item.path)).resolve()
        relative = path.relative_to(ROOT).as_posix() if path.is_relative_to(ROOT) else path.as_posix()
        if any(fnmatch.fnmatch(relative, pattern) for pattern in SLOW_PATHS):
            item.add_marker(pytest.mark.slow)
        tool = any(fnmatch.fnmatch(relative, pattern) for pattern in TOOL_PATHS)
        if any(fnmatch.fnmatch(relative, pattern) for pattern in APP_PATHS) or (not tool and _uses_subprocess(item)):
            item.add_marker(pytest.mark.app)
        for mark in item.iter_markers("claim"):
            for claim_id in mark.args:
                if claim_id not in known:
                    raise pytest.UsageError(
                        f"{item.nodeid} is marked claim({claim_id!r}), which paper_notes/claims.md does not list"
                    )
