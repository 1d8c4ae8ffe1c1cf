"""The receptive-field experiment in process: its config refuses bad values by name, a malformed request
writes nothing, a failed check writes everything and then says so (through the app skeleton)."""
from __future__ import annotations

import json
from fractions import Fraction

import pytest

from foldconv import FoldError
from foldconv.experiments import receptive_field as experiment
from foldconv.experiments.app import ClaimFailed, conclude
from foldconv.experiments.io import read_csv
from foldconv.experiments.receptive_field import FoldTable, RFExperiment, run_receptive_field
from foldconv.models import build_model


def run_app(e, out):
    """The app as the command runs it: the body, then the skeleton (checks, index, ClaimFailed)."""
    return conclude(run_receptive_field(e, out), out)

CONV = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3}
SMALL_FOLD = FoldTable(r=2, conv={"_target_": "torch.nn.Conv2d", "in_channels": 4, "out_channels": 2, "kernel_size": 3})

BAD = {
    "model a number": (lambda: RFExperiment(model=3), "model"),
    "model without _target_": (lambda: RFExperiment(model={"in_channels": 3}), "model"),
    "input_shape four axes": (lambda: RFExperiment(input_shape=[1, 3, 8, 8, 8, 8]), "input_shape"),
    "input_shape zero": (lambda: RFExperiment(input_shape=[1, 3, 0, 8]), "input_shape"),
    "input_shape no channels": (lambda: RFExperiment(input_shape=[8]), "input_shape"),
    "check not a bool": (lambda: RFExperiment(check="yes"), "check"),
    "check_size zero": (lambda: RFExperiment(check_size=0), "check_size"),
    "check_size a word": (lambda: RFExperiment(check_size="big"), "check_size"),
    "check_nodes zero": (lambda: RFExperiment(check_nodes=0), "check_nodes"),
    "erf_samples zero": (lambda: RFExperiment(erf_samples=0), "erf_samples"),
    "seed negative": (lambda: RFExperiment(seed=-1), "seed"),
    "fold r per-axis zero": (lambda: FoldTable(r="0x2"), "r"),
    "fold r text": (lambda: FoldTable(r="two"), "r"),
    "fold conv a name": (lambda: FoldTable(conv=""), "conv"),
    "fold order a number": (lambda: FoldTable(order=3), "order"),
    "fold order unknown": (lambda: FoldTable(order="bogus"), "order"),
    "fold order unknown, no table": (lambda: FoldTable(r=0, order="bogus"), "order"),  # validated whatever r says
    "format unknown": (lambda: RFExperiment(format="yaml"), "format"),
    "unknown torchvision name": (lambda: RFExperiment(model="resnet1"), "model"),
    "target not importable": (lambda: RFExperiment(model={"_target_": "no_such_pkg_xyz.net"}), "model._target_"),
    "fold conv target not importable": (lambda: FoldTable(conv={"_target_": "torch.nn.Conv9d"}), "conv._target_"),
    "constructor arguments missing": (lambda: build_model({"_target_": "torch.nn.Conv2d", "in_channels": 3}), "model._target_"),
    "target not a module": (lambda: build_model({"_target_": "builtins.dict"}), "model._target_"),
}


@pytest.mark.parametrize("call,param", list(BAD.values()), ids=list(BAD))
def test_bad_config_is_a_fold_error_naming_the_field(call, param):
    with pytest.raises(FoldError) as info:
        call()
    assert info.value.param == param, str(info.value)


def test_a_malformed_request_writes_nothing(tmp_path):
    # the fold table is computed first; the model then cannot be built: no fold.csv may be left behind
    e = RFExperiment(model={"_target_": "torch.nn.Conv2d", "in_channels": 3}, fold=SMALL_FOLD)
    with pytest.raises(FoldError, match="model._target_="):
        run_receptive_field(e, tmp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(FoldError, match="fold.conv.in_channels="):  # 3 channels do not fold by 2x2
        run_receptive_field(RFExperiment(model=CONV, fold=FoldTable(r=2, conv=CONV)), tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_check_writes_everything_then_raises(tmp_path, monkeypatch):
    real = experiment.check_receptive_field

    def shifted(*args, **kwargs):  # a check whose empirical side is off by one pixel must fail the run
        check = real(*args, **kwargs)
        row = check.rows[0]
        moved = tuple((lo + 1, hi) for lo, hi in row.empirical)
        return type(check)(check.model, (type(row)(row.node, row.op, row.position, row.index, row.analytic, moved),) + check.rows[1:])

    monkeypatch.setattr(experiment, "check_receptive_field", shifted)
    e = RFExperiment(model=CONV, input_shape=(1, 3, 12, 12), check_size=12, erf_samples=1, fold=SMALL_FOLD)
    with pytest.raises(ClaimFailed, match=r"1 of 2 check\(s\) failed: Conv2d: analytic boxes = gradient supports at \(12, 12\) \(1 of \d+ analytic boxes differ"):
        run_app(e, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {
        "fold.csv", "fold.md", "layers.csv", "layers.md", "check.csv", "check.md", "rf_jump.png", "erf.png", "summary.md", "index.md",
        "checks.csv", "checks.md", "rf.json",
    }
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert summary[2].startswith("Conv2d: output rf (3, 3)") and summary[4].startswith("FAILED: Conv2d: analytic boxes = gradient supports")
    assert [r["ok"] for r in read_csv(tmp_path / "checks.csv")] == ["True", "False"]
    monkeypatch.undo()
    assert run_app(e, tmp_path).endswith(f"written to {tmp_path}")


def test_the_models_answer_comes_before_the_fold_table_and_index_links_every_file(tmp_path):
    e = RFExperiment(model=CONV, input_shape=(1, 3, 12, 12), check_size=12, erf_samples=1, fold=SMALL_FOLD)
    lines = run_app(e, tmp_path).splitlines()
    assert lines[0].startswith("Conv2d: output rf (3, 3)") and lines[-3].startswith("fold table (fold.conv = Conv2d 4->2 channels, r=2")
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert summary[2] == lines[0] and summary[4] == "Every check holds."
    index = (tmp_path / "index.md").read_text()
    files = {p.name for p in tmp_path.iterdir()} - {"index.md"}
    assert all(f"[{name}]({name}): " in index for name in files), (files, index)


def test_input_shape_is_the_full_shape_count_takes():
    e = RFExperiment(model=CONV, input_shape=[2, 3, 20, 18], check_size=8)
    assert (e.input_shape, e.input_size, e.gradient_check_shape) == ((2, 3, 20, 18), (20, 18), (2, 3, 8, 8))
    assert RFExperiment(model=CONV, input_shape=[1, 3, 16], check_size=64).gradient_check_shape == (1, 3, 64)  # 1-D
    assert RFExperiment(model=CONV, input_shape=[1, 3, 16]).gradient_check_shape is None  # "auto": from the model's rf


def test_fallback_real_measures_an_op_without_a_rule_and_error_refuses_it(tmp_path):
    model = {"_target_": "custom_model.Rolled"}
    with pytest.raises(FoldError) as info:
        run_receptive_field(RFExperiment(model=model, input_shape=[1, 3, 16, 16], check=False, fold=FoldTable(r=0)), tmp_path / "a")
    assert "median" in str(info.value) and "fallback" in str(info.value)
    text = run_app(RFExperiment(model=model, input_shape=[1, 3, 16, 16], check=False, fold=FoldTable(r=0), fallback="real"),
                   tmp_path / "b")
    assert "output rf" in text
    with pytest.raises(FoldError) as info:
        RFExperiment(fallback="gradient")
    assert info.value.param == "fallback"


@pytest.mark.parametrize("check", [True, False])
def test_erf_node_is_validated_whatever_check_says(tmp_path, check):
    e = RFExperiment(model=CONV, input_shape=(1, 3, 12, 12), check=check, check_size=12, erf_samples=1, erf_node="no_such_node",
                     fold=FoldTable(r=0))
    with pytest.raises(FoldError) as info:
        run_receptive_field(e, tmp_path)
    assert info.value.param == "erf_node" and list(tmp_path.iterdir()) == []


def test_an_erf_node_with_check_off_says_why_no_erf_is_drawn(tmp_path):
    e = RFExperiment(model=CONV, input_shape=(1, 3, 12, 12), check=False, erf_node="conv2d", fold=FoldTable(r=0))
    text = run_app(e, tmp_path)
    assert "no erf.png for erf_node=conv2d: the ERF is drawn with the gradient check (check=true)" in text
    assert not (tmp_path / "erf.png").exists()


def test_the_check_size_and_why_are_stated_where_the_check_is_shown(tmp_path):
    # auto: a 3x3 conv at 12 px is checked at 32 px (rf + two jumps, at least 32): not input_shape's size
    e = RFExperiment(model=CONV, input_shape=(1, 3, 12, 12), erf_samples=1, fold=FoldTable(r=0))
    result = run_receptive_field(e, tmp_path)
    why = "check_size=auto: the rf of conv2d, (3, 3), plus two jumps"
    assert f"check at (32, 32) ({why}" in result.text and "larger than input_shape's (12, 12)" in result.text
    assert why in (tmp_path / "check.md").read_text().splitlines()[0]
    rf = json.loads((tmp_path / "rf.json").read_text())
    assert rf["check"]["input_shape"] == [1, 3, 32, 32] and rf["check"]["why"].startswith(why)
    explicit = run_receptive_field(RFExperiment(model=CONV, input_shape=(1, 3, 12, 12), check_size=12, erf_samples=1,
                                                fold=FoldTable(r=0)), tmp_path / "b")
    assert "check at (12, 12) (check_size=12; the centre box" in explicit.text and "input_shape" not in explicit.text


def _shuffled(stride):
    return {"_target_": "torch.nn.Sequential", "_args_": [
        {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3, "stride": stride, "padding": 1},
        {"_target_": "torch.nn.PixelShuffle", "upscale_factor": 2}]}


def test_rf_json_round_trips_every_box_and_format_json_prints_it(tmp_path):
    e = RFExperiment(model=_shuffled(1), input_shape=(1, 3, 12, 10), check_size=12, erf_samples=1, fold=SMALL_FOLD, format="json")
    out = run_app(e, tmp_path)
    printed = json.loads(out.rsplit("\n\nwritten to ", 1)[0])
    stored = json.loads((tmp_path / "rf.json").read_text())
    assert printed == stored
    report = run_receptive_field(RFExperiment(model=_shuffled(1), input_shape=(1, 3, 12, 10), check=False, fold=FoldTable(r=0)),
                                 tmp_path / "again").value
    nodes = stored["receptive_field"]["nodes"]
    assert [n["name"] for n in nodes] == list(report.nodes)
    for n in nodes:
        assert tuple(tuple(b) for b in n["box"]) == report.box(n["name"]), n["name"]
        assert tuple(Fraction(a["jump"]) for a in n["axes"]) == report[n["name"]].jump  # exact, fractions included
    assert [Fraction(a["jump"]) for a in nodes[-1]["axes"]] == [Fraction(1, 2)] * 2  # the pixel shuffle's half jump survives
    assert stored["check"]["ok"] and all(row["analytic"] == row["empirical"] for row in stored["check"]["boxes"])
    assert stored["fold"]["ok"] and [c["ok"] for c in stored["checks"]] == [True, True]
    # mutation: a stride-2 conv reads other boxes, and the JSON says so
    strided = run_receptive_field(RFExperiment(model=_shuffled(2), input_shape=(1, 3, 12, 10), check=False, fold=FoldTable(r=0)),
                                  tmp_path / "strided")
    assert json.loads((tmp_path / "strided" / "rf.json").read_text())["receptive_field"]["nodes"][-1]["box"] != nodes[-1]["box"]
    assert strided.text.startswith("Sequential")  # format=table prints the answer, not JSON


def test_alignment_warnings_are_recorded_in_the_summary_and_the_json(tmp_path, recwarn):
    e = RFExperiment(model={"_target_": "custom_model.PhaseSum"}, input_shape=(1, 3, 16, 16), check_size=16, erf_samples=1,
                     fold=FoldTable(r=0))
    text = run_app(e, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    findings, _, listed = summary.partition("## Alignment warnings")  # the findings first, then every warning under its heading
    warned = [line for line in listed.splitlines() if line.startswith("- node ")]
    assert warned and all("different centres" in line for line in warned) and len(warned) == len(set(warned))
    assert f"{len(warned)} alignment warning(s) at " in findings and "- node " not in findings
    assert all(f"alignment warning: {line[2:]}" in text for line in warned)
    stored = json.loads((tmp_path / "rf.json").read_text())
    assert stored["warnings"] == [line[2:] for line in warned]
    assert not [w for w in recwarn if "different centres" in str(w.message)]  # said once, in the outputs, not on stderr
    # the same app on an aligned model records none
    run_app(RFExperiment(model=CONV, input_shape=(1, 3, 16, 16), check_size=16, erf_samples=1, fold=FoldTable(r=0)), tmp_path / "b")
    assert "alignment warning" not in (tmp_path / "b" / "summary.md").read_text()


def test_the_erf_figure_states_the_input_it_was_measured_on(tmp_path, monkeypatch):
    titles = []
    real = experiment.erf_figure

    def spy(*args, **kwargs):
        fig = real(*args, **kwargs)
        titles.append(fig.axes[0].get_title())
        return fig

    monkeypatch.setattr(experiment, "erf_figure", spy)
    run_receptive_field(RFExperiment(model=CONV, input_shape=(1, 3, 12, 12), erf_samples=1, fold=FoldTable(r=0)), tmp_path)
    flat = " ".join(titles[0].split())
    assert "measured on 32x32 px, the gradient check's input (check_size=auto: from the rf of conv2d, (3, 3);" in flat
    assert "larger than input_shape's (12, 12))" in flat


@pytest.mark.parametrize("model, shape", [("resnet18", [3, 32, 32]),
                                          ("espcn", [1, 32, 32])])  # torch runs ESPCN's Conv2d on it, unbatched: 32 channels of a 1-D map
def test_a_shape_without_its_batch_axis_is_named_as_the_input_shapes_error(tmp_path, model, shape):
    e = RFExperiment(model=model, input_shape=shape, check=False, fold=FoldTable(r=0))
    with pytest.raises(FoldError) as info:
        run_receptive_field(e, tmp_path)
    assert info.value.param == "input_shape" and f"did you mean {[1, *shape]}?" in str(info.value), str(info.value)
    assert not list(tmp_path.iterdir())


def test_the_checks_are_about_the_model_unless_a_fold_table_is_asked_for(tmp_path):
    e = RFExperiment(model=CONV, input_shape=(1, 3, 12, 12), check_size=12, erf_samples=1)  # fold left at its default
    result = run_receptive_field(e, tmp_path)
    assert e.fold.r == 0 and [c.claim for c in result.checks] == ["RF-2"], result.checks
    assert not (tmp_path / "fold.csv").exists() and "fold" not in result.text and json.loads((tmp_path / "rf.json").read_text())["fold"] is None


DEEP = {"_target_": "torch.nn.Sequential", "_args_": [{"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 2, "kernel_size": 25, "padding": 12},
                                                      {"_target_": "torch.nn.Conv2d", "in_channels": 2, "out_channels": 2, "kernel_size": 25, "padding": 12}]}


def test_an_automatic_check_too_long_for_its_budget_is_made_smaller_and_says_so(tmp_path):
    wanted = RFExperiment(model=DEEP, input_shape=(1, 3, 20, 20), erf_samples=1)
    roomy = run_receptive_field(wanted, tmp_path / "a")
    assert "check at (51, 51)" in roomy.text and "reduced from" not in roomy.text  # rf 49 plus two jumps of 1
    tight = run_receptive_field(RFExperiment(model=DEEP, input_shape=(1, 3, 20, 20), erf_samples=1, check_budget_s=1e-9), tmp_path / "b")
    assert "check at (32, 32)" in tight.text and "reduced from 51x51 px" in tight.text and "check_budget_s=1e-09 s" in tight.text
    assert "reduced from 51x51 px" in (tmp_path / "b" / "summary.md").read_text()
    with pytest.raises(FoldError, match="check_budget_s=0"):
        RFExperiment(check_budget_s=0)


def test_a_long_check_prints_its_estimate_and_its_progress_and_measures_the_same_boxes(tmp_path, monkeypatch, capsys):
    e = RFExperiment(model=DEEP, input_shape=(1, 3, 20, 20), erf_samples=1, check_size=24)
    run_receptive_field(e, tmp_path / "quiet")
    assert "gradient check" not in capsys.readouterr().err
    monkeypatch.setattr(experiment, "ESTIMATE_AFTER_S", 0.0)
    monkeypatch.setattr(experiment, "PROGRESS_AFTER_S", 0.0)
    run_receptive_field(e, tmp_path / "loud")
    err = capsys.readouterr().err.splitlines()
    assert err[0].startswith("gradient check at 24x24 px: ") and " boxes and 1 ERF sample(s), about " in err[0], err
    assert any(line.startswith("gradient check: 1 of ") for line in err) and any(line.startswith("ERF of ") for line in err), err
    assert read_csv(tmp_path / "loud" / "check.csv") == read_csv(tmp_path / "quiet" / "check.csv")  # node by node: the same boxes


def test_a_run_without_checks_says_nothing_was_checked(tmp_path):
    run_receptive_field(RFExperiment(model=CONV, input_shape=(1, 3, 16, 16), check=False, fold=FoldTable(r=0)), tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    assert "Nothing was checked (check=false" in summary and "Every check holds" not in summary


def test_a_three_entry_shape_that_is_not_channels_first_gets_a_full_shape_not_a_wrong_guess(tmp_path):
    with pytest.raises(FoldError) as info:  # [1, 3, 64]: prepending a batch axis would make C = 1 for a 3-channel conv
        run_receptive_field(RFExperiment(model="resnet18", input_shape=[1, 3, 64], check=False, fold=FoldTable(r=0)), tmp_path)
    assert info.value.param == "input_shape" and "e.g. [1, 3, 64, 64]" in str(info.value) and "did you mean" not in str(info.value)
