"""scripts/operators.py end to end: files in the Hydra run dir, exit status follows the checks."""
from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

from foldconv.experiments.operators import OperatorsExample, run_operators
from foldconv.experiments.io import read_csv


def run_app(tmp_path, *overrides):
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "operators.py"), f"hydra.run.dir={tmp_path}", *overrides],
        capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )


@pytest.mark.claim("FC-2")
def test_app_writes_figure_and_tables_and_passes(tmp_path):
    proc = run_app(tmp_path, "example.r=3", "example.order=focus", "example.size=[3,3]")
    assert proc.returncode == 0, proc.stderr
    for name in ("operators.png", "checks.csv", "checks.md", "shifts.csv", "parameters.csv", "parameters.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "operators.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checks = read_csv(tmp_path / "checks.csv")
    assert {row["claim"] for row in checks} >= {"FC-1", "FC-2", "FC-3", "FC-4", "SPD-1", "SPD-3", "SUB-1", "AXW-1"}
    assert all(row["holds"] == "True" for row in checks)
    shifts = read_csv(tmp_path / "shifts.csv")
    assert [row["violations"] == "0" for row in shifts] == [int(row["input shift"]) % 3 == 0 for row in shifts]


def test_app_exits_nonzero_when_a_claim_fails(tmp_path):
    proc = run_app(tmp_path, "mutate_folded=true")
    assert proc.returncode == 1
    assert "CLAIM FAILED" in proc.stderr and "permuted columns" in proc.stderr


def test_run_operators_in_process_and_bad_example():
    assert run_operators(OperatorsExample(r=2, stride=2, size=(4, 4), order="dcr")).ok
    from foldconv import FoldError

    with pytest.raises(FoldError, match="example="):
        run_operators(OperatorsExample(r=0))
    with pytest.raises(FoldError, match="input_size="):
        run_operators(OperatorsExample(kernel_size=5, padding=0, size=(3, 3)))
