"""The receptive_field Hydra app end to end: the documented `_target_` override, the r syntax, and a bad
override that must exit non-zero with one line and leave no output behind."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from foldconv.experiments.io import read_csv

OUTPUTS = ("fold", "layers", "check", "checks")


def run_app(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "receptive_field.py"), f"hydra.run.dir={tmp_path}", *overrides],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )


def written(tmp_path: Path) -> set:
    return {p.name for p in tmp_path.iterdir() if p.suffix in (".csv", ".md", ".png")}


@pytest.mark.claim("RF-3")
def test_documented_target_override_and_per_axis_fold(tmp_path):
    proc = run_app(
        tmp_path, "model._target_=torch.nn.Conv2d", "+model.in_channels=3", "+model.out_channels=8", "+model.kernel_size=5",
        "input_shape=[1,3,32,32]", "check_size=16", "erf_samples=2", "fold.r=2x1", "fold.conv.in_channels=8",
    )
    assert proc.returncode == 0, proc.stderr
    assert written(tmp_path) == {f"{s}.{e}" for s in OUTPUTS for e in ("csv", "md")} | {"rf_jump.png", "erf.png", "summary.md", "index.md"}
    assert proc.stdout.startswith("Conv2d: output rf (5, 5)")  # the model's answer first, the fold table after
    layers = read_csv(tmp_path / "layers.csv")
    assert (layers[-1]["op"], layers[-1]["rf_h"], layers[-1]["rf_w"]) == ("conv2d", "5", "5")
    fold = read_csv(tmp_path / "fold.csv")
    assert [(row["rf"], row["jump"]) for row in fold] == [("(3,3)", "(1,1)"), ("(6,3)", "(2,1)"), ("(3,3)", "(1,1)"), ("(1,1)", "(1/2,1)")]
    assert all(row["ok"] == "True" for row in read_csv(tmp_path / "check.csv"))
    assert [(r["claim"], r["ok"]) for r in read_csv(tmp_path / "checks.csv")] == [("RF-3", "True"), ("RF-2", "True")]


@pytest.mark.parametrize("overrides,named", [
    (("model._target_=torch.nn.Conv2d", "+model.in_channels=3"), "model._target_='torch.nn.Conv2d': cannot be built"),  # arguments missing
    (("model._target_=mypkg_not_installed.make_net",), "model._target_='mypkg_not_installed.make_net': is not importable"),
    (("input_shape=[1,3]",), "input_shape="),
    (("fold.r=3", "model=resnet18"), "fold.conv.in_channels="),  # 256 channels do not fold by 3x3
    (("model=resnet1",), "model='resnet1'"),
    (("fold.r=0x2",), "fold.r="),
])
def test_bad_override_exits_2_with_one_line_and_no_outputs(tmp_path, overrides, named):
    proc = run_app(tmp_path, *overrides)
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("receptive_field: error: ") and named in lines[0], proc.stderr
    assert written(tmp_path) == set()


def test_format_json_prints_a_document_a_program_can_parse(tmp_path):
    """`foldconv rf format=json | jq`: stdout is the JSON document alone; where it was written goes to stderr."""
    import json

    proc = run_app(tmp_path, "model._target_=torch.nn.Conv2d", "+model.in_channels=3", "+model.out_channels=8",
                   "+model.kernel_size=5", "input_shape=[1,3,32,32]", "check=false", "format=json")
    assert proc.returncode == 0, proc.stderr
    document = json.loads(proc.stdout)
    assert f"written to {tmp_path}" in proc.stderr and document
