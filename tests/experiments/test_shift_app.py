"""The shift Hydra app end to end (small config): every output written, a +spd rewrite equal to its model,
the folded rung equal to the conv rung; a bad override exits 2 with one line and writes nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from foldconv.experiments.io import read_csv


def run_app(tmp_path: Path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "shift.py"), f"hydra.run.dir={tmp_path}", *overrides],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )


def written(tmp_path: Path) -> set:
    return {p.name for p in tmp_path.iterdir() if p.suffix in (".csv", ".md", ".png")}


@pytest.mark.claim("SHIFT-3", "SHIFT-4")
def test_small_run_writes_everything_and_rewrites_agree(tmp_path):
    proc = run_app(tmp_path, "models=[resnet18,resnet18+spd]", "images=[camera,coffee]", "crop=64", "pairs=4",
                   "max_shift=8", "ladder.epochs=1", "ladder.channels=2", "ladder.image_size=16")
    assert proc.returncode == 0, proc.stderr
    stems = ("periods", "equivariance", "consistency", "ladder")
    assert written(tmp_path) == {f"{s}.{e}" for s in (*stems, "checks") for e in ("csv", "md")} | {
        "equivariance.png", "consistency.png", "ladder.png", "summary.md", "index.md"}
    checks = read_csv(tmp_path / "checks.csv")
    assert [(r["subject"], r["claim"], r["ok"]) for r in checks] == [
        ("resnet18", "SHIFT-1", "True"), ("resnet18+spd", "SHIFT-1", "True"), ("resnet18+spd", "SHIFT-3", "True"), ("ladder", "SHIFT-4", "True")]
    errs = read_csv(tmp_path / "equivariance.csv")
    a = [(r["stage"], r["shift"], float(r["error"])) for r in errs if r["model"] == "resnet18"]
    b = [(r["stage"], r["shift"], float(r["error"])) for r in errs if r["model"] == "resnet18+spd"]
    assert [x[:2] for x in a] == [x[:2] for x in b] and a
    assert all(abs(x[2] - y[2]) <= 1e-5 * max(1.0, x[2]) for x, y in zip(a, b) if x[2] == x[2])  # float32: same function
    periods = {r["stage"]: r["period"] for r in read_csv(tmp_path / "periods.csv")}
    assert periods["conv1"] == "(2,2)" and periods["layer4"] == "(32,32)" and periods["fc"] == "none: reads the whole input"
    assert all(float(r["error"]) == 0.0 for r in errs if r["theory"].startswith("0 exactly")) and any(r["theory"].startswith("0 exactly") for r in errs)
    site = "conv1: Conv2d(3->64, k=(7, 7), s=(2, 2), p=(3, 3)) -> space_to_depth(2) + Conv2d(12->64, k=(4, 4)"
    assert f"- resnet18+spd: the +spd rewrite replaced {site}" in (tmp_path / "summary.md").read_text()
    assert all(site in r["analysis"] for r in read_csv(tmp_path / "periods.csv") if r["model"] == "resnet18+spd")
    ladder = {r["layer"]: r for r in read_csv(tmp_path / "ladder.csv")}
    assert ladder["conv"]["accuracy"] == ladder["folded"]["accuracy"] and ladder["conv"]["params"] == ladder["folded"]["params"]


@pytest.mark.parametrize("overrides,named", [
    (("models=[resnet7]",), "models='resnet7'"),
    (("models=[resnet18+spd]",), "models='resnet18+spd': is compared with its model 'resnet18'"),
    (("models=[resnet18,resnt18+spd]",), "models='resnt18+spd': is not a torchvision model or a registered architecture; did you mean resnet18+spd,"),
    (("models=[espcn+spd]",), "models='espcn+spd': has no strided conv for the +spd rewrite"),  # before asking for espcn
    (("models=[espcn,dcgan]", "ladder.enabled=false"), "models='dcgan': takes an input of shape (1, 100, 1, 1), a latent vector"),
    (("images=[lena]",), "images='lena'"),
    (("border=edges",), "border='edges'"),
    (("ladder.image_size=30",), "image_size=30"),
])
def test_bad_override_exits_2_with_one_line_and_no_outputs(tmp_path, overrides, named):
    proc = run_app(tmp_path, *overrides, "ladder.epochs=0")
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("shift: error: ") and named in lines[0], proc.stderr
    assert written(tmp_path) == set()
