"""scripts/operators.py end to end: files in the Hydra run dir, exit status follows the checks."""
from __future__ import annotations

import pytest

from app_harness import run_in_process
from foldconv.experiments.io import read_csv
from foldconv.experiments.operators import OperatorsExample, run_operators
from helpers import run_script


def run_app(tmp_path, *overrides):
    return run_script("operators", *overrides, run_dir=tmp_path, timeout=120)


@pytest.mark.claim("FC-2")
def test_app_writes_figure_and_tables_and_passes(tmp_path):
    proc = run_app(tmp_path, "example.r=3", "example.order=focus", "example.input_size=[3,3]", "example.family_checks=true")
    assert proc.returncode == 0, proc.stderr
    for name in ("operators.png", "checks.csv", "checks.md", "shifts.csv", "parameters.csv", "parameters.md"):
        assert (tmp_path / name).stat().st_size > 0, name
    assert (tmp_path / "operators.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    checks = read_csv(tmp_path / "checks.csv")
    assert {row["claim"] for row in checks} >= {"FC-1", "FC-2", "FC-3", "FC-4", "SPD-1", "SPD-3", "SUB-1", "AXW-1"}
    assert all(row["ok"] == "True" for row in checks)
    shifts = read_csv(tmp_path / "shifts.csv")
    violations, shift = "violations (dense-operator entries that break the shift at the best output shift)", "input shift (px of the folded input, axis 0)"
    assert [row[violations] == "0" for row in shifts] == [int(row[shift]) % 3 == 0 for row in shifts]
    # every column says its unit: which map's pixels a shift is in, what a violation counts
    assert list(shifts[0]) == [shift, "best output shift (px of the folded conv's output, axis 0)", violations, "multiple of r*S = 3 px"]
    assert "params (weights + biases, count)" in read_csv(tmp_path / "parameters.csv")[0]


@pytest.mark.claim("FC-2")
def test_app_takes_per_axis_r(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    overrides = ["example.r=2x1", "example.kernel_size=[3,1]", "example.padding=[1,0]", "example.input_size=[3,4]"]
    code, _, err = run_in_process("operators", overrides, capsys)
    assert code == 0, err
    checks = {row["check"]: row for row in read_csv(tmp_path / "checks.csv")}
    assert checks["folded matrix = original matrix with permuted columns"]["ok"] == "True"
    assert "stride 2x1" in " ".join(checks)


def test_app_exits_1_after_writing_when_a_claim_fails(tmp_path):
    proc = run_app(tmp_path, "example.mutate_folded=true")
    assert proc.returncode == 1
    assert "CLAIM FAILED" in proc.stderr and "permuted columns" in proc.stderr
    failed = {row["check"] for row in read_csv(tmp_path / "checks.csv") if row["ok"] == "False"}
    assert "folded matrix = original matrix with permuted columns" in failed
    assert (tmp_path / "operators.png").stat().st_size > 0


def test_run_operators_in_process_and_bad_example():
    assert run_operators(OperatorsExample(r=2, stride=2, input_size=(4, 4), order="dcr")).ok
    assert not run_operators(OperatorsExample(input_size=(3, 3), mutate_folded=True)).ok
    from foldconv import FoldError

    with pytest.raises(FoldError, match="^r=0: "):
        OperatorsExample(r=0)
    with pytest.raises(FoldError, match="^r='2x'"):
        OperatorsExample(r="2x")
    with pytest.raises(FoldError, match="^input_size="):
        OperatorsExample(kernel_size=5, padding=0, input_size=(3, 3))
    with pytest.raises(FoldError, match="^input_size=.*dense operator"):
        OperatorsExample(input_size=(100, 100))


@pytest.mark.claim("FC-2")
def test_any_conv_in_channels_and_groups_and_only_its_own_checks_by_default():
    e = OperatorsExample(in_channels=8, out_channels=2, groups=2, input_size=(3, 3))
    assert e.folded_channels == 2 and e.spec.groups == 2
    result = run_operators(e)
    assert result.ok and {c.claim for c in result.checks} == {"FC-1", "FC-2", "FC-3", "FC-4", "SPD-1", "AXW-1"}
    assert not run_operators(OperatorsExample(in_channels=8, out_channels=2, groups=2, input_size=(3, 3), mutate_folded=True)).ok
    family = run_operators(OperatorsExample(input_size=(3, 3), family_checks=True))
    assert {"SPD-3", "SUB-1"} <= {c.claim for c in family.checks}
    from foldconv import FoldError

    with pytest.raises(FoldError, match="^in_channels=6: must be a multiple of prod.r.=4"):
        OperatorsExample(in_channels=6)
    with pytest.raises(FoldError, match="^groups=3: must divide in_channels=8"):
        OperatorsExample(in_channels=8, groups=3)


def test_a_wide_operator_is_drawn_in_blocks_that_keep_every_band():
    import torch

    from foldconv.experiments.operators import largest_in_blocks

    m = torch.zeros(4, 10)
    m[1, 7], m[2, 3], m[2, 2] = -5.0, 2.0, 1.0
    reduced = largest_in_blocks(m, 2, 4)
    assert reduced.tolist() == [[0.0, -5.0, 0.0], [2.0, 0.0, 0.0]]
    # the 64 x 1024 operator: the panels hold at most one cell per two pixels at the figure's dpi, and the bands survive
    import foldconv.experiments.operators as operators

    drawn = []
    real = operators.operator_figure

    def spy(*args, **kwargs):
        fig, axes = real(*args, **kwargs)
        drawn.extend(ax.get_images()[0].get_array() for ax in axes[:2])
        return fig, axes

    e = OperatorsExample(in_channels=16, input_size=(8, 8))
    operators.operator_figure = spy
    try:
        run_operators(e, None)  # no file: the figure is drawn only when out_dir is given
        assert drawn == []
        import tempfile

        run_operators(e, tempfile.mkdtemp(), dpi=60)
    finally:
        operators.operator_figure = real
    budget = int(3.6 * 60) // 2
    assert all(a.shape[0] <= budget and a.shape[1] <= budget for a in drawn)
    assert all((abs(a).max(axis=0) > 0).sum() > 0.5 * a.shape[1] for a in drawn[:1])  # a band in most columns
