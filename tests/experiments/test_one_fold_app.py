"""The fold_conv app end to end: outputs, per-axis r, an impossible fold, typos, and a failed claim."""
from __future__ import annotations

import pytest
import torch

import foldconv.fold
from app_harness import run_in_process
from foldconv import ConvSpec, FoldError, FoldSpec
from foldconv.experiments.io import read_csv
from foldconv.experiments.one_fold import OneFoldExperiment, run_one_fold
from helpers import run_script


@pytest.mark.claim("FOLD-1", "FOLD-11")
def test_app_writes_report_with_equal_counts(tmp_path):
    proc = run_script(
        "fold_conv", "conv.in_channels=64", "conv.out_channels=8", "fold.r=8", "input_size=[5,5]", "timing=false",
        run_dir=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report.md").read_text()
    assert "equivalent (exact)" in report and "k=(24, 24)" in report
    rows = read_csv(tmp_path / "costs.csv")
    assert [r["form"] for r in rows] == ["original", "folded"]
    assert rows[0]["params"] == rows[1]["params"] and rows[0]["macs"] == rows[1]["macs"]
    assert rows[1]["input shape"] == "(1,1,40,40)"


@pytest.mark.claim("FOLD-1")
def test_app_takes_per_axis_r_written_2x4(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(
        "fold_conv", ["conv.in_channels=32", "conv.out_channels=3", "fold.r=2x4", "input_size=[4,3]", "timing=false"], capsys
    )
    assert code == 0, err
    assert "k=(6, 12), s=(2, 4)" in out and "equivalent (exact)" in out
    rows = read_csv(tmp_path / "costs.csv")
    assert rows[1]["input shape"] == "(1,4,8,12)" and rows[0]["macs"] == rows[1]["macs"]


def test_an_int_r_folds_every_axis_of_a_1d_or_3d_conv():
    for dims, size in ((1, (6,)), (3, (3, 3, 3))):
        conv = ConvSpec(dims=dims, in_channels=2**dims * 2, out_channels=2, kernel_size=3, padding=1)
        result = run_one_fold(OneFoldExperiment(conv=conv, fold=FoldSpec(2), input_size=size, timing=False))
        assert result.ok and result.plan.result.kernel_size == (6,) * dims
        assert result.costs[0].macs == result.costs[1].macs


def test_app_reports_an_impossible_fold(tmp_path):
    proc = run_script(
        "fold_conv", "conv.in_channels=16", "conv.padding_mode=reflect", "fold.r=2", "input_size=[5,5]", "timing=false",
        run_dir=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert "cannot fold: padding_mode='reflect'" in (tmp_path / "report.md").read_text()
    assert [row["form"] for row in read_csv(tmp_path / "costs.csv")] == ["original"]


def test_app_rejects_a_typo_in_one_line(tmp_path, monkeypatch, capsys):
    proc = run_script("fold_conv", "conv.kernal_size=5", run_dir=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "fold_conv: error: Could not override 'conv.kernal_size': Key 'kernal_size' not in 'ConvSpec'; did you mean conv.kernel_size?"
    ]
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process("fold_conv", ["+conv.kernal_size=5"], capsys)
    assert code == 2 and err.startswith("fold_conv: error: conv.kernal_size=5: is not a field of ConvSpec") and "did you mean conv.kernel_size?" in err


def test_a_failed_check_exits_1_after_writing_the_report(tmp_path, monkeypatch, capsys):
    real = foldconv.fold.fold_conv

    def off_by_one(conv, *args, **kwargs):
        folded = real(conv, *args, **kwargs)
        with torch.no_grad():
            folded.weight[0, 0, 0, 0] += 1
        return folded

    monkeypatch.setattr(foldconv.fold, "fold_conv", off_by_one)  # check_fold looks it up when it runs
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process("fold_conv", ["conv.in_channels=16", "fold.r=2", "input_size=[5,5]", "timing=false"], capsys)
    assert code == 1
    assert err.startswith("CLAIM FAILED: 1 of 1 check(s) failed: fold r=(2, 2): the folded conv computes the original's function (not equivalent")
    assert "not equivalent" in (tmp_path / "report.md").read_text()
    assert len(read_csv(tmp_path / "costs.csv")) == 2


def test_experiment_validates_itself():
    assert OneFoldExperiment().fold.r == (16, 16) and OneFoldExperiment().input_shape == (1, 256, 14, 14)
    with pytest.raises(FoldError, match=r"^fold\.r=\(2, 2, 2\): has 3 factor"):
        OneFoldExperiment(fold=FoldSpec("2x2x2"))
    with pytest.raises(FoldError, match="^input_size=.*empty output"):
        OneFoldExperiment(conv=ConvSpec.make(2, 4, 4, 5), fold=FoldSpec(2), input_size=3)
    with pytest.raises(FoldError, match="^dtypes="):
        OneFoldExperiment(dtypes=("float32", "int8"))
    with pytest.raises(FoldError, match="^timing="):
        OneFoldExperiment(timing="yes")
