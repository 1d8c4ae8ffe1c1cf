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


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0, f"{name} has no docstring example (give its module docstring or its functions one)"
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {name}"
