"""The fold_conv Hydra app end to end: outputs, structured-config typos, an impossible fold."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from foldconv.experiments.io import read_csv

from conftest import ROOT


def run_app(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "fold_conv.py"), f"hydra.run.dir={tmp_path}", *overrides],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )


@pytest.mark.claim("FOLD-1", "FOLD-11")
def test_app_writes_report_with_equal_counts(tmp_path):
    proc = run_app(tmp_path, "conv.in_channels=64", "conv.out_channels=8", "fold.r=8", "input_size=[5,5]", "timing=false")
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    assert "equivalent (exact)" in report and "k=(24, 24)" in report
    rows = read_csv(tmp_path / "counts.csv")
    assert [r["form"] for r in rows] == ["original", "folded"]
    assert rows[0]["params"] == rows[1]["params"] and rows[0]["MACs"] == rows[1]["MACs"]
    assert rows[1]["input"] == "(1,1,40,40)"


def test_app_reports_an_impossible_fold(tmp_path):
    proc = run_app(tmp_path, "conv.in_channels=16", "conv.padding_mode=reflect", "fold.r=2", "input_size=[5,5]", "timing=false")
    assert proc.returncode == 0, proc.stderr
    assert "cannot fold: padding_mode='reflect'" in (tmp_path / "report.md").read_text()


def test_app_rejects_a_typo(tmp_path):
    proc = run_app(tmp_path, "conv.kernal_size=5")
    assert proc.returncode != 0
    assert "kernal_size" in proc.stderr
