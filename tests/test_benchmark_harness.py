"""benchmarks/harness.py: the statistics every benchmark figure is read through, and one harness for every script.

No timing is asserted here (speed goals live in benchmarks/); the harness's arithmetic is checked on given times.
"""
from __future__ import annotations

import importlib.util
import sys

import pytest

from helpers import ROOT

BENCHMARKS = ROOT / "benchmarks"


@pytest.fixture(scope="module")
def harness():
    spec = importlib.util.spec_from_file_location("harness", BENCHMARKS / "harness.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("harness", module)
    spec.loader.exec_module(module)
    return module


def test_a_ratio_is_taken_round_by_round(harness):
    # A load that doubles both sides in rounds 2 and 3 leaves every per-round ratio at 2: pooled times would not.
    res = harness.Result("anchor", {"anchor": (2.0, 4.0, 4.0, 2.0, 2.0), "case": (1.0, 2.0, 2.0, 1.0, 1.0)}, {})
    assert res.speedup("case") == harness.Interval(2.0, 2.0, 2.0)
    assert res.slowdown("case") == harness.Interval(0.5, 0.5, 0.5)
    assert res.time("anchor").median == 2.0 and res.time("anchor").high == 4.0


def test_an_interval_that_holds_one_is_inconclusive(harness):
    tie = harness.interval([0.8, 1.2, 0.9, 1.1, 1.0, 0.95, 1.05])
    assert tie.low < 1.0 < tie.high and tie.inconclusive and tie.describe().endswith("inconclusive")
    clear = harness.interval([1.5, 1.6, 1.4, 1.55, 1.45])
    assert not clear.inconclusive and clear.low >= 1.4 and clear.high <= 1.6
    assert harness.interval([3.0, 1.0, 2.0]) == harness.interval([3.0, 1.0, 2.0])  # seeded: the same page twice


def test_goal_verdicts(harness):
    assert harness.goal(harness.Interval(12.0, 11.0, 13.0), 10.0) == "met"
    assert harness.goal(harness.Interval(9.0, 8.0, 9.5), 10.0) == "missed"
    assert harness.goal(harness.Interval(10.0, 9.0, 11.0), 10.0) == "within noise"
    assert harness.overall(["met", "met"]) == "met"
    assert harness.overall(["met", "within noise"]) == "within noise"
    assert harness.overall(["met", "within noise", "missed"]) == "missed"
    assert harness.tally(["met", "missed"]).endswith("of 2: missed")


def test_compare_interleaves_warms_and_rotates(harness):
    calls = []
    cases = {name: (lambda name=name: calls.append(name)) for name in ("a", "b", "c")}
    res = harness.compare(cases, anchor="a", rounds=3, block=1e-4, warmup=2)
    assert set(res.seconds) == {"a", "b", "c"} and all(len(v) == 3 for v in res.seconds.values())
    assert calls[:2] == ["a", "a"]  # warmed before anything is timed, the anchor too
    with pytest.raises(ValueError, match="anchor"):
        harness.compare(cases, anchor="d")


def test_every_benchmark_script_times_through_the_harness():
    scripts = sorted(p for p in BENCHMARKS.glob("*.py") if p.name not in ("harness.py", "table.py"))
    assert len(scripts) >= 9
    for path in scripts:
        assert "from harness import" in path.read_text(), f"{path.name} does not use benchmarks/harness.py"


def test_every_name_a_benchmark_imports_from_foldconv_exists():
    """A benchmark that cannot start measures nothing: each ``from foldconv... import name`` it makes resolves."""
    import ast

    missing = []
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "foldconv":
                module = importlib.import_module(node.module)
                missing += [f"{script.name}: {node.module}.{a.name}" for a in node.names if not hasattr(module, a.name)
                            and importlib.util.find_spec(f"{node.module}.{a.name}") is None]
    assert not missing, missing
