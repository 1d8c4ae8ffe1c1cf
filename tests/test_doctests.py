"""Every public docstring example in the library runs and prints what it says."""
from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import foldconv

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(foldconv.__path__, prefix="foldconv.") if not m.name.split(".")[-1].startswith("__")
) + ["foldconv"]


# The experiments layer's examples run whole apps (seconds each): `make test` runs them, the fast tier does not.
CASES = [pytest.param(name, marks=pytest.mark.slow) if name.startswith("foldconv.experiments") else name for name in MODULES]


@pytest.mark.parametrize("name", CASES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring example (give its module docstring or its functions one)"
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
