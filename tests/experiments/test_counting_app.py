"""scripts/count.py: writes its tables and plots into the Hydra run dir, and fails loudly."""
from __future__ import annotations

import subprocess
import sys

from conftest import ROOT

from foldconv.experiments.io import read_csv

SCRIPT = ROOT / "scripts" / "count.py"


def run(tmp_path, *overrides):
    return subprocess.run(
        [sys.executable, str(SCRIPT), f"hydra.run.dir={tmp_path}", *overrides],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )


def test_app_writes_tables_and_plots(tmp_path):
    result = run(
        tmp_path, "models=[resnet18,mobilenet_v3_small]", "input_size=[3,64,64]",
        "+expect.resnet18.params=11689512",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for stem in ("comparison", "checks", "d2l_dense", "resnet18_layers", "resnet18_type", "resnet18_op",
                 "resnet18_module", "resnet18_dense", "resnet18_fold", "resnet18_fold_model",
                 "seed_conv_fold_compare_r16"):
        assert (tmp_path / f"{stem}.csv").exists() and (tmp_path / f"{stem}.md").exists(), stem
    for png in ("comparison.png", "resnet18_layers.png", "mobilenet_v3_small_layers.png"):
        assert (tmp_path / png).stat().st_size > 1000
    checks = read_csv(tmp_path / "checks.csv")
    assert checks and all(row["ok"] == "True" for row in checks)
    models = [row["model"] for row in read_csv(tmp_path / "comparison.csv")]
    assert models == ["resnet18", "mobilenet_v3_small", "seed_conv"]


def test_app_exits_nonzero_when_a_check_fails(tmp_path):
    result = run(tmp_path, "models=[resnet18]", "input_size=[3,32,32]", "targets={}", "+expect.resnet18.params=1",
                 "plot=false")
    assert result.returncode == 1
    assert "CLAIM FAILED" in result.stderr
    failed = [row for row in read_csv(tmp_path / "checks.csv") if row["ok"] == "False"]
    assert [row["check"] for row in failed] == ["expect params"]


def test_app_rejects_unknown_keys(tmp_path):
    result = run(tmp_path, "modles=[resnet18]")
    assert result.returncode != 0 and "modles" in result.stderr
