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
    report = (tmp_path / "summary.md").read_text()
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
    assert "cannot fold: padding_mode='reflect'" in (tmp_path / "summary.md").read_text()
    assert [row["form"] for row in read_csv(tmp_path / "costs.csv")] == ["original"]


def test_app_rejects_a_typo_in_one_line(tmp_path, monkeypatch, capsys):
    proc = run_script("fold_conv", "conv.kernal_size=5", run_dir=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "fold_conv: error: conv.kernal_size=5: not an option; did you mean conv.kernel_size?"
    ]
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process("fold_conv", ["+conv.kernal_size=5"], capsys)
    assert code == 2 and err.startswith("fold_conv: error: conv.kernal_size=5: not an option") and "did you mean conv.kernel_size?" in err


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
    assert "not equivalent" in (tmp_path / "summary.md").read_text()
    assert len(read_csv(tmp_path / "costs.csv")) == 2
    first = (tmp_path / "summary.md").read_text().splitlines()[2]
    assert first.endswith("; 1 of 1 checks FAILED (checks.md).") and "not equivalent" in first
    assert first == (tmp_path / "index.md").read_text().splitlines()[2]


def test_summary_first_line_carries_the_checks_verdict(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process("fold_conv", ["conv.in_channels=16", "fold.r=2", "input_size=[5,5]", "timing=false"], capsys)
    assert code == 0, err
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert summary[2].startswith("r=(2, 2): equivalent (exact)") and summary[2].endswith("; the 1 check holds.")
    assert summary[2] == (tmp_path / "index.md").read_text().splitlines()[2]
    assert summary.count(summary[2]) == 1  # the skeleton did not put index.md's line above the app's own
    code, _, err = run_in_process("fold_conv", ["conv.in_channels=16", "conv.padding_mode=reflect", "fold.r=2", "input_size=[5,5]",
                                                "timing=false"], capsys)
    assert code == 0, err
    first = (tmp_path / "summary.md").read_text().splitlines()[2]
    assert first.startswith("cannot fold:") and first.endswith("(nothing to check: there is no folded conv)")


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


def _labels(axes):
    """The channel labels of the figure's block panel, as a grid (row, column) -> text."""
    return {(round(t.get_position()[1]), round(t.get_position()[0])): t.get_text() for t in axes[1].texts}


@pytest.mark.parametrize("order", ["crd", "dcr", "focus"])
def test_big_kernel_labels_are_fold_weights_channel_map(order):
    from foldconv.experiments.fold_kernel import STRUCTURAL_ZERO, block_channels, channel_map, kernel_figure
    from foldconv.fold import fold_weight

    spec, fold = ConvSpec.make(2, 16, 3, 3, padding=1), FoldSpec.make(2, order)
    cmap = channel_map(spec, fold)
    # independently: fold a weight that holds 1000 * channel + tap; every folded entry names its channel
    w = torch.arange(16, dtype=torch.float64).view(1, 16, 1, 1) * 1000 + torch.arange(9, dtype=torch.float64).view(1, 1, 3, 3)
    folded = fold_weight(w.expand(3, 16, 3, 3).contiguous(), 2, order).weight
    assert torch.equal(cmap, (folded // 1000).long())
    taps = (folded % 1000).long()[0, 0]
    assert all(int(taps[i, j]) == (i // 2) * 3 + j // 2 for i in range(6) for j in range(6))  # block (a, b) is tap (a, b)
    _, axes = kernel_figure(fold_conv_weight(spec, fold), cmap, fold.r, folded_channel=1, order=fold.order_string)
    grid = block_channels(cmap[0, 1], fold.r)
    assert _labels(axes) == {(i, j): str(int(grid[i, j])) for i in range(2) for j in range(2)}
    # DESIGN.md section 3, folded channel g=1 of G=4: "c rh rw" c = 4g + 2rh + rw; "rh rw c" c = (2rh + rw)G + g; "rw rh c" c = (2rw + rh)G + g
    channel = {"crd": lambda rh, rw: 4 + 2 * rh + rw, "dcr": lambda rh, rw: (2 * rh + rw) * 4 + 1, "focus": lambda rh, rw: (2 * rw + rh) * 4 + 1}[order]
    assert grid.tolist() == [[channel(rh, rw) for rw in range(2)] for rh in range(2)] and STRUCTURAL_ZERO not in grid.tolist()


def fold_conv_weight(spec, fold):
    torch.manual_seed(0)
    return foldconv.fold.fold_conv(spec.to_module(), fold.r, fold.order).weight


def test_big_kernel_marks_structural_zeros_of_groups_and_dilation():
    from foldconv.experiments.fold_kernel import STRUCTURAL_ZERO, channel_map

    cmap = channel_map(ConvSpec.make(2, 8, 4, 3, padding=2, dilation=2, groups=2), FoldSpec.make(2))
    # dilation 2: the blocks between taps hold no weight; groups 2 merged into one folded conv: the other group's
    # channels are zeros in each output channel's folded weight
    assert (cmap[0, :, 2:4, :] == STRUCTURAL_ZERO).all()
    assert set(cmap[0].unique().tolist()) == {STRUCTURAL_ZERO, 0, 1, 2, 3}
    assert set(cmap[3].unique().tolist()) == {STRUCTURAL_ZERO, 4, 5, 6, 7}


def test_app_draws_the_big_kernel_and_refuses_a_channel_it_does_not_have(tmp_path):
    e = OneFoldExperiment(conv=ConvSpec.make(2, 16, 4, 3, padding=1), fold=FoldSpec.make(2), input_size=(5, 5), timing=False,
                          picture_channel=3, picture_folded_channel=3)
    result = run_one_fold(e, tmp_path)
    assert (tmp_path / "kernel.png").read_bytes()[:4] == b"\x89PNG" and tmp_path / "kernel.png" in result.files
    with pytest.raises(FoldError, match="^picture_channel=4: must be < conv.out_channels=4"):
        OneFoldExperiment(conv=ConvSpec.make(2, 16, 4, 3, padding=1), fold=FoldSpec.make(2), picture_channel=4)
    with pytest.raises(FoldError, match="^picture_folded_channel=4: must be < 4"):
        run_one_fold(OneFoldExperiment(conv=ConvSpec.make(2, 16, 4, 3, padding=1), fold=FoldSpec.make(2), input_size=(5, 5),
                                       timing=False, picture_folded_channel=4), tmp_path / "x")


def test_speed_is_a_speedup_with_its_interval_timed_in_interleaved_rounds(monkeypatch):
    import foldconv.experiments.one_fold as one_fold
    from foldconv.surgery.timing import Sample

    seen = []
    ms = {"original": 4.0, "folded (conv only)": 2.0, "folded (depth_to_space + conv)": 4.0}
    spread = {"original": 0.1, "folded (conv only)": 0.1, "folded (depth_to_space + conv)": 1.0}

    def fake(fn, label, **kw):
        fn()
        seen.append(label)
        return Sample(label, tuple((ms[label] + d * spread[label]) * 1e-3 for d in (-2, -1, 0, 1, 2)))

    monkeypatch.setattr(one_fold, "measure", fake)
    e = OneFoldExperiment(conv=ConvSpec.make(2, 16, 4, 3, padding=1), fold=FoldSpec.make(2), input_size=(5, 5), rounds=2)
    result = run_one_fold(e)
    forms = ["folded (conv only)", "folded (depth_to_space + conv)"]
    assert seen == [label for _ in range(2) for form in forms for label in ("original", form)]
    rows = {row["form"]: row for row in result.speed_rows()}
    conv_only, with_layout = rows["folded (conv only)"], rows["folded (depth_to_space + conv)"]
    assert conv_only["speedup"] == 2.0 and conv_only["speedup low"] == round(3.9 / 2.1, 3) and conv_only["inconclusive"] is False
    assert with_layout["speedup"] == 1.0 and with_layout["inconclusive"] is True  # the interval holds 1.0
    assert rows["original"]["inconclusive"] == "" and "reference" in rows["original"]["reads"]
    assert "2.00x [1.86, 2.16]" in result.speed_answer() and "1.00x [0.78, 1.37] inconclusive" in result.speed_answer()
    assert "higher is faster" in result.to_markdown() and "ratio" not in result.to_markdown()


def test_an_exact_fold_that_costs_more_says_so_in_its_answer():
    dilated = run_one_fold(OneFoldExperiment(conv=ConvSpec.make(2, 16, 8, 3, dilation=2), fold=FoldSpec.make(2), input_size=(8, 8),
                                             timing=False))
    assert dilated.ok and "equivalent (exact)" in dilated.answer()
    assert "but it costs more: params 1,160 -> 3,208" in dilated.answer() and "dilation made dense" in dilated.answer()
    plain = run_one_fold(OneFoldExperiment(conv=ConvSpec.make(2, 16, 8, 3, padding=1), fold=FoldSpec.make(2), input_size=(8, 8),
                                           timing=False))
    assert "costs more" not in plain.answer()
