"""The shape of the code base (issue 9): import layers, module sizes, thin apps, lint.

The layers and the app-stack ban are import-linter contracts in pyproject.toml ([tool.importlinter]);
the lint rules are ruff's ([tool.ruff]). `make lint` runs the same two tools.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

try:
    import tomllib
except ModuleNotFoundError:  # Python < 3.11
    tomllib = pytest.importorskip("tomli")

BIN = Path(sys.executable).parent
MAX_MODULE_LINES = 500
MAX_SCRIPT_LINES = 70


def run_tool(name: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / name), *args], cwd=ROOT, capture_output=True, text=True, timeout=300)


def line_count(path: Path) -> int:
    return len(path.read_text().splitlines())


def oversized(paths, limit: int, root: Path = ROOT) -> list:
    return sorted(f"{p.relative_to(root)} ({n} lines)" for p in paths if (n := line_count(p)) > limit)


def test_import_layers_hold():
    proc = run_tool("lint-imports", "--no-cache")
    assert proc.returncode == 0, proc.stdout[-6000:] + proc.stderr[-2000:]
    kept = re.search(r"Contracts: (\d+) kept, 0 broken", proc.stdout)
    assert kept and int(kept.group(1)) >= 3, proc.stdout[-2000:]


def test_every_layer_below_experiments_is_barred_from_the_app_stack():
    # The layers contract is exhaustive (every child of foldconv has a layer); this keeps the forbidden
    # contract's list in step with it, so a new module cannot slip past the app-stack rule.
    contracts = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["contracts"]
    layers = next(c for c in contracts if c["type"] == "layers")
    assert layers["containers"] == ["foldconv"] and layers["exhaustive"] is True
    modules = {f"foldconv.{name.strip()}" for layer in layers["layers"] for name in re.split(r"[|:]", layer)}
    app_stack = next(c for c in contracts if c["type"] == "forbidden")
    # above the app stack: experiments, and `python -m foldconv` (__main__), which runs its apps
    assert set(app_stack["source_modules"]) == modules - {"foldconv.experiments", "foldconv.__main__"}
    assert {"hydra", "omegaconf", "matplotlib", "tqdm"} <= set(app_stack["forbidden_modules"])


def test_no_module_exceeds_the_size_limit():
    big = oversized((ROOT / "foldconv").rglob("*.py"), MAX_MODULE_LINES)
    assert not big, f"modules over {MAX_MODULE_LINES} lines: {big}"


def test_apps_are_thin():
    scripts = sorted((ROOT / "scripts").glob("*.py"))
    assert scripts
    fat = oversized(scripts, MAX_SCRIPT_LINES)
    assert not fat, f"scripts over {MAX_SCRIPT_LINES} lines (move the logic into foldconv.experiments): {fat}"


def test_ruff_is_clean():
    proc = run_tool("ruff", "check", "--no-cache", "--output-format", "concise", "foldconv", "scripts", "tests", "benchmarks")
    assert proc.returncode == 0, proc.stdout[:6000] + proc.stderr[-2000:]


def test_the_size_check_can_fail(tmp_path):
    small, big = tmp_path / "small.py", tmp_path / "big.py"
    small.write_text("x = 1\n" * 3)
    big.write_text("x = 1\n" * 4)
    assert oversized([small, big], 3, root=tmp_path) == ["big.py (4 lines)"]
