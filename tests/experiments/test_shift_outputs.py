"""What the shift app's outputs say: labels name the model (never a factory such as get_model), a stage after global pooling has no period,
consistency states its class count and that the weights are random, the figures draw every model (the +spd
rewrites too) with their legends beside the plots, and every text fits."""
from __future__ import annotations

import pytest
from test_png_text_fits import text_problems

from foldconv.analysis.shift import shift_equivariance
from foldconv.experiments import shift as app
from foldconv.experiments.shift import GLOBAL, LadderConfig, ShiftExperiment, period_text, run_shift
from foldconv.models import build_model, resolve_model


def test_labels_name_the_model_never_a_factory():
    pytest.importorskip("timm")
    e = ShiftExperiment(models=(
        "resnet18", "resnet18+spd", {"_target_": "torchvision.models.get_model", "name": "vgg11"},
        {"_target_": "timm.create_model", "model_name": "resnet10t", "num_classes": 10}, {"_target_": "torchvision.models.alexnet"},
    ))
    assert e.labels == ("resnet18", "resnet18+spd", "vgg11", "resnet10t", "alexnet")
    assert resolve_model(resolve_model("resnet18", num_classes=3).spelling).label == "resnet18"  # the spelling round-trips
    with pytest.raises(ValueError, match="distinct labels"):
        ShiftExperiment(models=("resnet18", {"_target_": "torchvision.models.get_model", "name": "resnet18"}))


def test_a_model_that_takes_no_image_and_a_rewrite_that_cannot_apply_are_refused_up_front():
    with pytest.raises(ValueError, match=r"models='dcgan': takes an input of shape \(1, 100, 1, 1\), a latent vector"):
        ShiftExperiment(models=("espcn", "dcgan"), ladder=LadderConfig(enabled=False))
    with pytest.raises(ValueError, match=r"models='dcgan\+spd': takes an input"):
        ShiftExperiment(models=("dcgan+spd",))
    with pytest.raises(ValueError, match=r"models='espcn\+spd': has no strided conv"):  # not "list espcn too", then this
        ShiftExperiment(models=("espcn+spd",))
    with pytest.raises(ValueError, match=r"is compared with its model 'resnet18'"):  # a rewrite that applies: its base is asked for
        ShiftExperiment(models=("resnet18+spd",))
    assert ShiftExperiment(models=("espcn",)).labels == ("espcn",)


@pytest.mark.parametrize("size", [32, 224])
def test_a_stage_after_global_pooling_has_no_period(size):
    report = shift_equivariance(build_model("resnet18", meta=True), (1, 3, size, size))
    assert period_text(report.stage("avgpool")) == period_text(report.stage("fc")) == GLOBAL
    assert period_text(report.stage("layer1")) == "(4,4)"
    assert app.deepest_period(report, app.stages_of(build_model("resnet18", meta=True))) == (16 if size == 32 else 32)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("shift")
    e = ShiftExperiment(models=({"_target_": "torchvision.models.get_model", "name": "mobilenet_v3_small", "num_classes": 10}, "resnet18",
                                "resnet18+spd"),
                        images=("camera",), crop=64, pairs=4, max_shift=8, ladder=LadderConfig(enabled=False))
    return e, run_shift(e, out), out


def test_consistency_states_the_class_count_and_random_weights(small_run):
    e, result, out = small_run
    summary = (out / "summary.md").read_text()
    assert "argmax over 10 classes" in summary and "argmax over 1000 classes" in summary
    assert summary.count("random weights, seed 0") >= 3
    assert "output period: none: reads the whole input" in summary and "output period 16" not in summary
    assert "random weights" in (out / "consistency.md").read_text()


def test_figures_draw_every_model_beside_not_over_the_data(small_run, monkeypatch):
    from foldconv.experiments.io import read_csv

    e, result, out = small_run
    rows = read_csv(out / "equivariance.csv")
    for r in rows:
        r.update(depth=int(r["depth"]), shift=int(r["shift"]), error=float(r["error"]), positions=int(r["positions"]))
        r["period"] = r["period"] if r["period"] == GLOBAL else int(r["period"])
    deepest = {"mobilenet_v3_small": 32, "resnet18": 32}
    fig = app._error_figure(rows, crop=e.crop, border=e.border, deepest=deepest)
    legend = [t.get_text() for ax in fig.axes if ax.get_legend() for t in ax.get_legend().get_texts()]
    assert legend == ["mobilenet_v3_small", "resnet18", "resnet18+spd (same numbers)"]
    # one panel per model and measured shift, every configured shift included, each titled with what it shows
    titles = [ax.get_title() for ax in fig.axes if ax.get_visible()]
    for model, drawn in (("mobilenet_v3_small", "mobilenet_v3_small:"), ("resnet18", "resnet18 and resnet18+spd:")):
        shifts = sorted({r["shift"] for r in rows if r["model"] == model})
        assert set(e.shifts) <= set(shifts) and 32 in shifts
        for s in shifts:
            assert sum(t.startswith(drawn) and f"input shift {s} px" in t for t in titles) == 1, (model, s, titles)
    assert sum("the period of its deepest spatial stage" in t for t in titles) == 2
    assert "border from the rf" in fig._suptitle.get_text() and "random weights" in fig._suptitle.get_text()
    assert not text_problems(fig)
    cons = read_csv(out / "consistency.csv")
    for r in cons:
        r.update(consistency=float(r["consistency"]), centred_consistency=float(r["centred_consistency"]))
    fig = app._consistency_figure(cons, ["a_feature_map"], seed=0, max_shift=8, pairs=4, images=e.images)
    assert not text_problems(fig)
    ax = fig.axes[0]
    renderer = fig.canvas.get_renderer()
    assert ax.get_legend().get_window_extent(renderer).x0 >= ax.get_window_extent(renderer).x1  # beside the bars
    title = ax.get_title().replace("\n", " ")
    assert "random weights" in title and "10/1000 classes" in title
    assert "each of 4 random crops (all from camera)" in title  # what was run: 4 pairs, 1 image
    assert "not drawn (not classifiers): a_feature_map" in title


def test_the_consistency_title_states_the_pairs_and_the_images_run():
    rows = [{"model": "m", "consistency": 0.5, "centred_consistency": 0.5, "classes_seen": 2, "centred_classes_seen": 2, "classes": 10}]
    fig = app._consistency_figure(rows, seed=0, max_shift=8, pairs=8, images=("camera", "astronaut"))
    assert not text_problems(fig)  # one model's narrow figure wraps the title
    title = fig.axes[0].get_title().replace("\n", " ")
    assert "of each of 8 random crops (4 from each of 2 images: camera, astronaut)" in title and "8 images" not in title
    assert app.consistency_inputs(5, ("camera", "astronaut", "coffee")) == "5 random crops (2 from camera, 2 from astronaut, 1 from coffee)"


def test_every_model_is_in_the_periods_table_the_plus_spd_with_whose_analysis(small_run):
    from foldconv.experiments.io import read_csv

    e, result, out = small_run
    rows = read_csv(out / "periods.csv")
    assert list(dict.fromkeys(r["model"] for r in rows)) == list(e.labels)
    spd = [r for r in rows if r["model"] == "resnet18+spd"]
    base = [r for r in rows if r["model"] == "resnet18"]
    assert [(r["stage"], r["period"], r["rf"]) for r in spd] == [(r["stage"], r["period"], r["rf"]) for r in base]
    assert all(r["analysis"].startswith("resnet18's (the same function") for r in spd) and all(r["analysis"] == "its own" for r in base)


def test_a_stage_that_keeps_no_position_says_why_and_the_crop_that_measures_it(small_run):
    from foldconv.experiments.io import read_csv

    e, result, out = small_run
    rows = [r for r in read_csv(out / "equivariance.csv") if r["model"] == "resnet18"]
    layer1 = next(r for r in rows if r["stage"] == "layer1" and r["shift"] == "32")
    # a 43 px field fits in a 64 px crop: it is the 32 px shift that leaves no unit inside both crops
    assert layer1["rf"] == "43" and layer1["positions"] == "0"
    assert layer1["theory"] == ("not measurable: no unit whose field (43 px) lies inside both crops (64 px, shifted 32 px); "
                                f"crop >= {layer1['min_crop']} px measures it")
    assert not [r for r in rows if r["theory"].startswith("not measurable: the field") and int(r["rf"]) <= e.crop]
    assert all("wider" not in r["theory"] for r in rows if int(r["rf"] or 0) <= e.crop)
    summary = (out / "summary.md").read_text()
    assert f"layer1 (rf 43 px, shift 32 px: crop >= {layer1['min_crop']} px)" in summary and "rf wider than the crop" not in summary


def test_any_model_runs_a_one_channel_net_and_a_feature_extractor_too(tmp_path):
    e = ShiftExperiment(models=("espcn", "yolov5_stem"), images=("camera",), crop=32, pairs=2, max_shift=4,
                        ladder=LadderConfig(enabled=False))
    result = run_shift(e, tmp_path)
    assert result.ok and [c.claim for c in result.checks] == ["SHIFT-1", "SHIFT-1"]
    summary = (tmp_path / "summary.md").read_text()
    assert "- espcn: no consistency; output period: (1,1) (not a classifier: output (1, 1, 96, 96))" in summary
    assert "- yolov5_stem: no consistency" in summary and not (tmp_path / "consistency.png").exists()
    assert app.in_channels(e.models[0].spec, build_model("espcn", meta=True)) == 1


def test_ladder_options_are_validated_even_when_the_ladder_is_off():
    for kwargs, param in ((dict(image_size=30, r=4), "ladder.image_size"), (dict(kernel=2), "ladder.kernel")):
        with pytest.raises(ValueError) as info:
            LadderConfig(enabled=False, **kwargs)
        assert info.value.param == param, str(info.value)
    LadderConfig(enabled=False, image_size=32, r=4)  # a valid ladder stays valid when switched off


def test_alignment_warnings_are_recorded_in_the_summary(tmp_path, recwarn):
    e = ShiftExperiment(models=({"_target_": "custom_model.PhaseSum"},), images=("camera",), crop=32, pairs=2, max_shift=4,
                        ladder=LadderConfig(enabled=False))
    result = run_shift(e, tmp_path)
    summary = (tmp_path / "summary.md").read_text()
    warned = [line for line in summary.splitlines() if line.startswith("- alignment warning: PhaseSum: node ")]
    assert warned and all("different centres" in line for line in warned), summary
    assert all(line[2:] in result.text for line in warned)
    assert not [w for w in recwarn if "different centres" in str(w.message)]  # in the outputs, not only on stderr


def test_a_pixel_border_that_keeps_nothing_says_so_not_the_rf_reason(tmp_path):
    e = ShiftExperiment(models=({"_target_": "custom_model.PhaseSum"},), images=("camera",), crop=32, pairs=2, max_shift=4, border=20,
                        ladder=LadderConfig(enabled=False))
    result = run_shift(e, tmp_path)
    from foldconv.experiments.io import read_csv

    rows = [r for r in read_csv(tmp_path / "equivariance.csv") if r["positions"] == "0"]
    assert rows and all(r["theory"].startswith("not measurable: cropping 20 px from both borders") and r["min_crop"] == "" for r in rows)
    assert "not measurable (the border leaves no position): conv" in result.text


def test_a_consistency_of_a_model_that_gives_one_class_to_every_image_is_flagged_degenerate():
    """Consistency 1.000 with '1 seen' is a random-weight model that always answers the same class: say so."""
    from foldconv.experiments.shift import _degenerate

    row = {"classes_seen": 1, "centred_classes_seen": 1}
    assert "DEGENERATE" in _degenerate(row) and _degenerate({"classes_seen": 7, "centred_classes_seen": 5}) == ""


def test_ladder_figure_keeps_identical_rungs_visible_and_says_they_coincide():
    """The folded rung computes what the conv rung computes: drawn in one style, its line hid the conv's."""
    def row(layer, *acc):
        return {"layer": layer, "params": 80, "accuracy": acc[0], "acc_shift1": acc[1], "acc_shift2": acc[2], "acc_shift4": acc[3]}

    rows = [row("dense", 0.5, 0.4, 0.3, 0.2), row("conv", 0.7, 0.65, 0.6, 0.5), row("folded", 0.7, 0.65, 0.6, 0.5)]
    fig = app._ladder_figure(rows, LadderConfig(), 0)
    ax = fig.axes[0]
    lines = {line.get_label().split()[0]: line for line in ax.get_lines()}
    conv, folded = lines["conv"], lines["folded"]
    assert (conv.get_marker(), conv.get_linestyle()) != (folded.get_marker(), folded.get_linestyle())
    # drawn first, the conv rung is the larger and the wider: it shows around the folded one drawn over it
    assert conv.get_markersize() > folded.get_markersize() and conv.get_linewidth() > folded.get_linewidth()
    # and below every thin line: a rung close to them (dense here) is not hidden under the wide one
    assert conv.get_zorder() < min(lines["dense"].get_zorder(), folded.get_zorder())
    notes = [t.get_text() for t in ax.texts]
    assert notes == ["conv and folded coincide (identical accuracies at every shift)"]
    assert "px" in ax.get_xlabel() and not text_problems(fig)
    rows[2] = row("folded", 0.7, 0.65, 0.6, 0.45)  # one value apart: nothing coincides, nothing is said
    assert not app._ladder_figure(rows, LadderConfig(), 0).axes[0].texts


def test_every_table_states_the_units_of_its_columns(small_run):
    e, result, out = small_run
    titles = {name: (out / f"{name}.md").read_text().splitlines()[0] for name in ("periods", "equivariance", "consistency")}
    assert "jump, rf, period: input px" in titles["periods"] and "own_period: px of the stage's own map" in titles["periods"]
    assert "jump, rf, period, shift, min_crop: input px" in titles["equivariance"] and "error: relative" in titles["equivariance"]
    assert "share of pairs whose argmax agrees" in titles["consistency"] and "input px" in titles["consistency"]
