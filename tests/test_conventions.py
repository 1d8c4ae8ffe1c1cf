"""The project's naming conventions, checked over every module of the package (README "Architecture").

"Did it pass" is spelled one way: a result with an ``ok`` property is truthy exactly when ``ok`` is, and no
result carries a second spelling of the same bit. Full tensor shapes are ``input_shape`` and spatial sizes
``input_size``: no public function takes ``size``/``shape``/``in_shape``/``spatial_dims``.
"""
from __future__ import annotations

import dataclasses
import importlib
import inspect
import pkgutil

import pytest

import foldconv
from foldconv import EquivalenceReport, Verdict

SECOND_SPELLINGS = {"equivalent", "passed", "holds", "success", "is_ok", "all_ok"}
SHAPE_SPELLINGS = {"size", "shape", "in_shape", "x_shape", "spatial_dims", "ndim"}


def _public_objects():
    for info in pkgutil.walk_packages(foldconv.__path__, "foldconv."):
        module = importlib.import_module(info.name)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if getattr(obj, "__module__", None) == module.__name__ and "._" not in module.__name__:
                yield f"{module.__name__}.{name}", obj


PUBLIC = dict(_public_objects())
RESULTS = {name: cls for name, cls in PUBLIC.items() if inspect.isclass(cls) and isinstance(vars(cls).get("ok"), property)}


def test_the_scan_sees_the_results():
    # guards the scan itself: if discovery broke, the tests below would pass on nothing
    assert len(PUBLIC) > 150
    assert {"foldconv.check.report.EquivalenceReport", "foldconv.analysis.receptive_field.empirical.RFCheck"} <= set(RESULTS)
    assert len(RESULTS) >= 8


@pytest.mark.parametrize("name", sorted(RESULTS))
def test_ok_results_are_truthy_exactly_when_ok_and_have_one_spelling(name):
    cls = RESULTS[name]
    assert "__bool__" in vars(cls), f"{name} has .ok but bool() ignores it"
    assert not (SECOND_SPELLINGS & {f.name for f in dataclasses.fields(cls)} if dataclasses.is_dataclass(cls) else set())
    assert not SECOND_SPELLINGS & set(vars(cls)), f"{name} spells 'did it pass' twice"


@pytest.mark.parametrize("verdict", list(Verdict))
def test_equivalence_report_bool_is_ok(verdict):
    report = EquivalenceReport(verdict, True, (1,), (1,))
    assert bool(report) is report.ok is (verdict is Verdict.EQUIVALENT)
    assert not hasattr(report, "equivalent")


def test_public_functions_use_input_shape_and_input_size():
    offenders = []
    for name, obj in PUBLIC.items():
        functions = [(name, obj)] if inspect.isfunction(obj) else []
        if inspect.isclass(obj):
            for attr, value in vars(obj).items():
                value = value.__func__ if isinstance(value, (classmethod, staticmethod)) else value
                if not attr.startswith("_") and inspect.isfunction(value):
                    functions.append((f"{name}.{attr}", value))
        for fname, fn in functions:
            bad = SHAPE_SPELLINGS & set(inspect.signature(fn).parameters)
            # check.exact.integers(shape, ...) draws a tensor of any shape, like torch.randint(size=...)
            if bad and fname != "foldconv.check.exact.integers":
                offenders.append((fname, sorted(bad)))
    assert not offenders, offenders
