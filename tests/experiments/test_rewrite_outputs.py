"""The rewrite app's outputs say what they measure: figure axes name the quantity and its unit, a speedup is the
ratio of the times shown beside it."""
from __future__ import annotations

import inspect
import math
import re

import pytest
import torch

from foldconv.experiments.one_fold import OneFoldExperiment, run_one_fold
from foldconv.experiments.rewrite_plots import sites_figure
from foldconv.specs import ConvSpec, FoldSpec
from foldconv.surgery.speed import benchmark_forms
from foldconv.surgery.timing import Sample, Speedup

ROW = {"model": "m", "step": "rewrite", "rule": "focus_to_conv", "location": "focus.conv.conv", "applied": True,
       "input shape": "1x3x32x32", "params before": 3456, "params after": 3456, "MACs before": 884736, "MACs after": 884736}


def test_the_sites_figure_names_what_each_axis_counts():
    fig = sites_figure([ROW])
    params, macs = (ax.get_xlabel() for ax in fig.axes)
    assert "per sample" not in params + macs  # parameters do not depend on the input
    assert params.startswith("parameters") and "MACs (multiply-accumulates) of one forward pass" in macs
    assert "input 1x3x32x32" in fig.axes[0].get_yticklabels()[0].get_text()
    assert not math.isnan(fig.axes[0].get_xlim()[1])


def _timer(fast: str, *, slow_rounds=()):
    """Injected timings: a form whose label holds ``fast`` runs in 0.5 s, other forms in 2 s; the original in 1 s,
    3 s in the rounds listed (a load that came and went), so pooled and paired medians differ."""
    calls = []

    def timer(fn, label):
        calls.append(label)
        if label.endswith("original"):
            k = sum(c.endswith("original") for c in calls)
            return Sample(label, (3.0 if k in slow_rounds else 1.0,) * 5)
        return Sample(label, (0.5 if fast in label else 2.0,) * 5)

    return timer, calls


def test_a_speedup_is_the_ratio_of_the_two_medians_its_row_shows():
    timer, _ = _timer("fold", slow_rounds=(1, 3, 5, 7))  # the fold's rounds (every other) ran under load
    report = benchmark_forms(torch.nn.Conv2d(4, 4, 3, padding=1), (1, 4, 8, 8), r_values=[2], timer=timer)
    for row in report.rows()[1:]:
        assert row["speedup"] == pytest.approx(row["original median ms"] / row["median ms"], rel=1e-3)
    assert report.rows()[1]["original median ms"] != report.rows()[0]["median ms"]  # its own rounds, not the pool


def test_optimize_times_a_comparison_once_and_the_app_shows_that_one_timing():
    from foldconv.experiments.rewrite import ModelRun, _timed_by_optimize, timing_rows
    from foldconv.models import YoloV5Stem
    from foldconv.surgery import rewrite
    from foldconv.surgery.fastest import optimize

    model = YoloV5Stem().eval()
    timer, calls = _timer("focus_to_conv")
    _, opt = optimize(model, (1, 3, 32, 32), timer=timer)
    assert opt.rules == (("focus_to_conv", ("focus.conv.conv",)),) and not opt.kept_original
    assert "model: rewritten" not in calls  # the one site's form in the whole model IS the rewritten model
    assert opt.timing is not None and opt.timing.speedup == opt.speedup == 2.0
    _, report = rewrite(model, (1, 3, 32, 32), ["focus_to_conv"], verify=False)
    assert _timed_by_optimize(opt, ("focus_to_conv",), report) is opt.timing
    assert _timed_by_optimize(opt, (("focus_to_conv", {"at": ["focus.conv.conv"]}),), report) is None  # options: not assumed the same
    row = timing_rows(ModelRun("yolo", (1, 3, 32, 32), ("focus_to_conv",), report, optimized=opt))[-1]
    assert row["speedup"] == pytest.approx(row["original median ms"] / row["median ms"])


def test_the_fold_app_times_on_one_thread_says_so_and_a_wide_interval_is_inconclusive():
    assert OneFoldExperiment().threads == 1
    assert inspect.signature(benchmark_forms).parameters["threads"].default == 1
    wide = Speedup(17.5, 1.5, 100.0)  # above 1.0 throughout, but 67x wide: the runs varied, not the forms
    assert wide.inconclusive and not wide.faster and "too much" in wide.describe()
    assert Speedup(2.0, 1.5, 2.5).faster and not Speedup(2.0, 1.5, 2.5).inconclusive
    e = OneFoldExperiment(conv=ConvSpec.make(2, 16, 4, 3, padding=1), fold=FoldSpec.make(4), input_size=(6, 6), min_run_time=0.01)
    result = run_one_fold(e)
    assert "1 thread(s)" in result.speed_answer() and "1 thread)" in result.to_markdown()
    for row in result.speed_rows()[1:]:
        assert row["speedup"] == pytest.approx(row["original median ms"] / row["median ms"], rel=1e-2)


def test_benchmark_forms_says_how_long_it_took():
    timer, _ = _timer("fold")
    report = benchmark_forms(torch.nn.Conv2d(4, 4, 3, padding=1), (1, 4, 8, 8), r_values=[2], timer=timer)
    assert report.seconds > 0 and f"took {report.seconds:.1f} s" in report.summary()
    assert inspect.signature(benchmark_forms).parameters["min_run_time"].default <= 0.1


class Strided(torch.nn.Module):
    """A stage whose second conv sees a smaller map than the stage's input."""

    def __init__(self):
        super().__init__()
        self.stage = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, stride=2, padding=1), torch.nn.ReLU(),
                                         torch.nn.Conv2d(8, 4, 3, padding=1))

    def forward(self, x):
        return self.stage(x)


def test_a_stage_is_one_site_in_every_summary_and_table():
    from foldconv.experiments.rewrite import ModelRun, RewriteRun, _whole_rows, site_rows, summary_text
    from foldconv.surgery import rewrite

    rules = (("fold_stage", {"stage": "stage", "r": 2}),)
    _, report = rewrite(Strided().eval(), (1, 4, 8, 8), list(rules))
    run = ModelRun("strided", (1, 4, 8, 8), rules, report)
    assert "1 of 1 site(s) applied" in summary_text(RewriteRun((run,)))
    assert [r["sites"] for r in _whole_rows(run)] == [1]
    rows = site_rows(run)
    shapes = {r["location"]: r["input shape"] for r in rows}
    assert shapes["stage"] == shapes["stage.0"] == "1x4x8x8" and shapes["stage.2"] == "1x8x4x4"
    parts = [r for r in rows if r["part of"]]
    assert parts and all(r["params before"] == "" and r["MACs after"] == "" for r in parts)  # a part's costs are its site's
    assert len(sites_figure(rows).axes[0].get_yticklabels()) == 1  # one bar pair: the site


def test_the_summary_line_carries_the_costs_the_training_verdict_and_what_going_back_restores():
    """strided_to_spd on a 3x3 stride-2 conv: the same function, 16/9 the parameters, trains differently (the padded
    kernel's zero taps get gradients), and the inverse gives back a 4x4 stride-2 conv, not the 3x3 one."""
    from foldconv.experiments.rewrite import ModelRun, RewriteRun, summary_text
    from foldconv.surgery import rewrite

    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, stride=2, padding=1), torch.nn.ReLU())
    model, report = rewrite(net, (1, 4, 8, 8), ["strided_to_spd"])
    _, back = rewrite(model, (1, 4, 8, 8), ["spd_to_strided"])
    line = summary_text(RewriteRun((ModelRun("net", (1, 4, 8, 8), ("strided_to_spd",), report, back=back),)))
    assert "parameters 296 -> 520 (1.76x)" in line and "MACs" in line, line
    assert "trains DIFFERENTLY" in line and "not the original kernels: +224 parameters against the original" in line, line


def test_onnx_op_changes_are_explained_and_site_rows_carry_no_model_wide_figure():
    """A 1x1 stride-2 conv before a BatchNorm becomes space-to-depth, conv, crop: the crop (a Slice) stands between
    the Conv and the BatchNorm, so the export keeps a BatchNormalization node: onnx.md says so, and why."""
    from foldconv.experiments.rewrite import ModelRun, onnx_rows, site_onnx_ops, site_rows
    from foldconv.surgery import export_onnx, rewrite

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 6, 1, stride=2), torch.nn.BatchNorm2d(6), torch.nn.ReLU()).eval()
    with torch.no_grad():
        model[1].running_mean.uniform_(-1, 1)
        model[1].running_var.uniform_(0.5, 2)
    new, report = rewrite(model, (1, 4, 8, 8), ["strided_to_spd"])
    onnx = {"original": export_onnx(model, (1, 4, 8, 8)), "rewritten": export_onnx(new, (1, 4, 8, 8))}
    assert onnx["original"].norm_inputs == () and onnx["rewritten"].norm_inputs == ("Slice",)
    run = ModelRun("m", (1, 4, 8, 8), ("strided_to_spd",), report, onnx=onnx, site_ops=site_onnx_ops(report))
    rewritten = next(r for r in onnx_rows(run) if r["form"] == "rewritten")
    assert "+BatchNormalization" in rewritten["change vs original"]
    why = rewritten["why the ops changed"]
    assert "+BatchNormalization: " in why and "follow Slice" in why and "the own steps of site 0" in why
    assert why.count("end fit") == 1, why
    every_op = set(re.findall(r"[+-]([A-Za-z()]+)", rewritten["change vs original"]))
    assert every_op >= {"Pad", "Slice", "BatchNormalization"} and all(op in why for op in every_op), (every_op, why)
    rows = site_rows(run)
    assert rows and not [k for k in rows[0] if "ONNX" in k]  # a site row holds per-site figures only


def test_the_summary_states_what_the_app_and_the_rules_did_to_the_model_besides_the_rewrite():
    """A stage fold's BatchNorms folded into their convs, the app's seeded weights, random BatchNorm statistics and
    eval mode: each stated in summary.md, not only in a table."""
    from foldconv.experiments.rewrite import ModelRun, RewriteRun, summary_text
    from foldconv.surgery import rewrite

    stage = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.BatchNorm2d(4), torch.nn.ReLU())
    model = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 1), stage).eval()
    _, rep = rewrite(model, (1, 4, 8, 8), [("fold_stage", {"stage": "1", "r": 2})])
    line = summary_text(RewriteRun((ModelRun("net", (1, 4, 8, 8), ("fold_stage",), rep),)), seed=3)
    assert "besides the rules: fold_stage at 1 first folded 1 eval-mode BatchNorm(s) into the conv before each: 1.1 into 1.0" in line
    assert "seeded random weights (seed 3)" in line and "in eval mode" in line
    _, plain = rewrite(model, (1, 4, 8, 8), [("fold_stage", {"stage": "1", "r": 2, "fold_bn": False})])
    assert "besides the rules" not in summary_text(RewriteRun((ModelRun("net", (1, 4, 8, 8), ("fold_stage",), plain),)))


def test_one_rule_name_alone_is_a_list_of_one():
    from foldconv.experiments.rewrite import RewriteExperiment, normalize_rules

    assert normalize_rules("subpixel_to_transposed") == ("subpixel_to_transposed",)
    assert RewriteExperiment(model="espcn", rules="subpixel_to_transposed").rules == ("subpixel_to_transposed",)
    with pytest.raises(ValueError, match="rules=''"):
        normalize_rules("")


def test_a_rule_that_matches_nothing_says_so_and_what_it_looks_for(tmp_path):
    from foldconv.experiments.rewrite import RewriteExperiment, run_rewrite

    e = RewriteExperiment(model="espcn", rules=["transposed_to_subpixel"], size="test", onnx=False, timing=False)
    result = run_rewrite(e, tmp_path)
    hint = "rule transposed_to_subpixel matches no site in espcn (it looks for a ConvTranspose"
    assert hint in result.answer and hint in (tmp_path / "summary.md").read_text()
    sites = (tmp_path / "sites.md").read_text()
    assert "No site: " + hint in sites and "|  |" not in sites


class _ReflectSubPixel(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(2, 8, 3, padding=1, padding_mode="reflect")
        self.shuffle = torch.nn.PixelShuffle(2)

    def forward(self, x):
        return self.shuffle(self.conv(x))


def test_a_site_not_applied_gives_its_reason_in_the_summary_and_no_after_cost():
    from foldconv.experiments.rewrite import ModelRun, RewriteRun, site_rows, summary_text
    from foldconv.surgery import rewrite

    _, report = rewrite(_ReflectSubPixel().eval(), (1, 2, 6, 6), ["subpixel_to_transposed"])
    run = ModelRun("subpix", (1, 2, 6, 6), ("subpixel_to_transposed",), report)
    line = summary_text(RewriteRun((run,)))
    assert "0 of 1 site(s) applied" in line and "not applied: subpixel_to_transposed at" in line
    assert "padding_mode='reflect': must be 'zeros'" in line, line
    (row,) = site_rows(run)
    assert row["params before"] == 8 * 2 * 9 + 8 and row["params after"] == "" and row["MACs after"] == ""
    fig = sites_figure([row])
    for ax in fig.axes:  # one bar (before) per axis, and the words "not applied" where the after bar would be
        assert len(ax.patches) == 1 and any("not applied" in t.get_text() for t in ax.texts)
        assert not any(t.get_text() == "0" for t in ax.texts)
    assert "reflect" in " ".join(t.get_text() for t in fig.axes[0].texts)


def test_a_shape_without_the_batch_axis_is_refused_up_front_naming_input_shape(tmp_path):
    from foldconv.experiments.rewrite import RewriteExperiment, run_rewrite

    e = RewriteExperiment(model="espcn", input_shape=[1, 32, 32], timing=False)
    with pytest.raises(ValueError, match=re.escape("input_shape=[1, 32, 32]: must be a full tensor shape with the batch "
                                                   "axis first; did you mean [1, 1, 32, 32]?")):
        run_rewrite(e, tmp_path)
    assert not list(tmp_path.iterdir())


def test_an_export_failure_is_one_line_naming_the_label_and_keeps_the_verified_rewrite(tmp_path, capfd):
    """torch's legacy exporter refuses pixel_shuffle on an unbatched (C, H, W) input and logs its whole graph on the
    process's stdout; the run says so in one line under the model's label and writes everything else."""
    from foldconv.experiments.rewrite import ModelRun, RewriteExperiment, onnx_rows, run_rewrite
    from foldconv.surgery import export_onnx

    shuffle = torch.nn.Sequential(torch.nn.PixelShuffle(2))
    with pytest.raises(ValueError) as info:
        export_onnx(shuffle, (4, 4, 4), name="shuffler")
    text = str(info.value)
    assert text.startswith("model='shuffler': torch.onnx.export failed") and "only support 4d input" in text
    assert "https" not in text and "\n" not in text
    assert "graph" not in capfd.readouterr().out
    e = RewriteExperiment(model=shuffle, rules=["fold_bn"], input_shape=[4, 4, 4], timing=False)
    result = run_rewrite(e, tmp_path)
    assert "graph" not in capfd.readouterr().out
    (run,) = result.value.models
    assert isinstance(run, ModelRun) and run.report.ok and isinstance(run.onnx["original"], str)
    assert any("export failed" in c.detail and not c.ok for c in result.checks)
    rows = onnx_rows(run)
    assert [r["ok"] for r in rows] == [False, False] and "only support 4d input" in rows[0]["why the ops changed"]
    assert {"summary.md", "sites.md", "models.md", "onnx.md"} <= {p.name for p in tmp_path.iterdir()}


def test_timms_build_of_a_real_models_name_is_told_apart_from_the_real_model():
    from foldconv.experiments.rewrite import RewriteExperiment

    with pytest.raises(ValueError) as info:
        RewriteExperiment(model="timm:tresnet_m")
    text = str(info.value)
    assert "timm:tresnet_m is timm's build; the rewrite app's real model is model=tresnet_m" in text, text
    assert "must be given for tresnet_m" not in text


@pytest.mark.parametrize("order", ["dcr", "crd", "focus"])
def test_the_way_back_restores_the_layout_order_the_site_had(order):
    """spd_to_strided on timm's (dcr) space-to-depth, taken back by inverse_rules: the same order again, not the
    inverse rule's default."""
    from foldconv.layout import SpaceToDepth, normalize_order
    from foldconv.surgery import inverse_rules, rewrite

    model = torch.nn.Sequential(SpaceToDepth(2, order), torch.nn.Conv2d(12, 8, 3, padding=1)).eval()
    new, report = rewrite(model, (1, 3, 8, 8), ["spd_to_strided"])
    inverse = inverse_rules(["spd_to_strided"], report=report, model=new, input_shape=(1, 3, 8, 8))
    assert inverse == (("strided_to_spd", {"order": " ".join(normalize_order(order)), "at": ["1"]}),)
    back_model, back = rewrite(new, (1, 3, 8, 8), list(inverse))
    assert back.ok and f"order='{' '.join(normalize_order(order))}'" in back.sites[0].after


def test_every_onnx_op_change_is_given_to_the_site_steps_that_export_it():
    """ESPCN's sub-pixel site becomes a transposed conv and a periodic bias: the bias's Gather, Reshapes and Add are
    the site's own (its module exported alone shows them), and a row without a space-to-depth site says nothing of
    an end fit. A model op no site exports is said to be the exporter's work around the sites."""
    from types import SimpleNamespace as R

    from foldconv.experiments.rewrite import REAL_MODELS, ModelRun, SiteOps, onnx_rows, op_change_reasons, site_onnx_ops
    from foldconv.surgery import export_onnx, rewrite

    model = REAL_MODELS["espcn"].build()
    shape = REAL_MODELS["espcn"].test_input_shape
    new, report = rewrite(model, shape, ["subpixel_to_transposed"])
    sites = site_onnx_ops(report)
    assert set(sites["subpixel.0"].after) >= {"ConvTranspose", "Gather", "Add"}
    onnx = {"original": export_onnx(model, shape), "rewritten": export_onnx(new, shape)}
    why = onnx_rows(ModelRun("espcn", shape, ("subpixel_to_transposed",), report, onnx=onnx, site_ops=sites))[1]["why the ops changed"]
    assert why.startswith("+Add, +ConvTranspose, +Gather, +Reshape x5, -Conv, -DepthToSpace(CRD): the own steps of site subpixel.0"), why
    assert "not in any" not in why and "end fit" not in why and "Pad" not in why
    # an op no site's export has is not given to a site
    lone = {"0": SiteOps("transposed_to_subpixel", "Conv2d + DepthToSpace", ("ConvTranspose",), ("Conv", "DepthToSpace(CRD)"))}
    text = op_change_reasons(R(ops=("ConvTranspose",)), R(ops=("Conv", "DepthToSpace(CRD)", "Gather")), lone)
    assert "+Gather: not in any rewritten site's own export" in text and "+Conv, +DepthToSpace(CRD), -ConvTranspose: the own steps of site 0" in text


def test_the_way_back_takes_the_periodic_bias_into_its_site_and_counts_it():
    """ESPCN's last conv has a bias per sub-pixel: subpixel_to_transposed writes a bias-free transposed conv and a
    PeriodicBias; transposed_to_subpixel takes both as one site, so its row counts the bias's 9 parameters and the
    sub-pixel conv gets its bias back. A changed bias value must still be restored (the bias is copied, not zeroed)."""
    from foldconv.experiments.rewrite import REAL_MODELS, ModelRun, site_rows
    from foldconv.surgery import inverse_rules, rewrite

    model = REAL_MODELS["espcn"].build()
    shape = REAL_MODELS["espcn"].test_input_shape
    new, report = rewrite(model, shape, ["subpixel_to_transposed"])
    inverse = inverse_rules(["subpixel_to_transposed"], report=report, model=new, input_shape=shape)
    back_model, back = rewrite(new, shape, list(inverse))
    assert back.ok
    rows = site_rows(ModelRun("espcn", shape, ("subpixel_to_transposed",), report, back))
    assert [(r["params before"], r["params after"]) for r in rows] == [(2601, 2601), (2601, 2601)]
    assert "PeriodicBias" in rows[1]["before"]
    convs = [m for m in back_model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 9]
    assert len(convs) == 1 and torch.equal(convs[0].bias.detach(), model.subpixel[0].bias.detach())
    x = torch.randn(shape, dtype=torch.float64)
    assert torch.allclose(back_model.double()(x), model.double()(x), rtol=1e-10, atol=1e-12)
