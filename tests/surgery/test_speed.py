"""Timing of equivalent forms: only verified forms are timed, speedups and their intervals are computed as stated,
and optimize never returns a model that is not conclusively faster. No timing assertions: timings are injected."""
from __future__ import annotations

import copy
import math

import pytest
import torch
from torch import nn

import foldconv.surgery.speed as speed
import foldconv.surgery.stage as stage
from foldconv import DepthToSpace, fold_conv
from foldconv.surgery.fastest import optimize
from foldconv.surgery.speed import FormTiming, Sample, Speedup, benchmark_forms, machine_description, measure
from helpers import raises_fold_error

MS = 1e-3


def sample(label: str, ms: float, spread: float = 0.0) -> Sample:
    """Five runs around ``ms`` milliseconds: quartiles at ms -/+ spread."""
    return Sample(label, tuple((ms + d * spread) * MS for d in (-2, -1, 0, 1, 2)))


class Recorder:
    """A timer that returns fixed samples by label (default 1 ms) and records what it was asked to time."""

    def __init__(self, times=None, default=(1.0, 0.0)):
        self.times, self.default, self.labels = dict(times or {}), default, []

    def __call__(self, fn, label):
        fn()  # the callable must run
        self.labels.append(label)
        return sample(label, *self.times.get(label, self.default))


@pytest.mark.claim("FORMS-2")
def test_sample_quartiles_are_torch_benchmarks():
    from torch.utils.benchmark.utils.common import Measurement, TaskSpec

    times = (0.7, 0.1, 0.4, 0.25, 0.3, 0.9, 0.2)
    ours, theirs = Sample("x", times), Measurement(1, list(times), TaskSpec("pass", "pass"))
    assert ours.median == pytest.approx(theirs.median, abs=0) and ours.iqr == pytest.approx(theirs.iqr, rel=1e-15)


@pytest.mark.claim("FORMS-2")
def test_speedup_arithmetic_and_the_inconclusive_rule():
    original = Sample("original", (1.0, 2.0, 3.0, 4.0, 5.0))  # median 3, q25 2, q75 4
    form = Sample("form", (0.5, 1.0, 1.5, 2.0, 2.5))  # median 1.5, q25 1, q75 2
    s = speed.speedup(original, form)
    assert (s.value, s.low, s.high) == (2.0, 1.0, 4.0)  # 3/1.5, 2/2, 4/1
    assert s.inconclusive and not s.faster  # the interval touches 1.0
    narrow = speed.speedup(Sample("o", (2.9, 3.0, 3.1)), form)
    assert narrow.low > 1 and narrow.faster and not narrow.inconclusive
    slower = speed.speedup(form, Sample("o", (2.9, 3.0, 3.1)))
    assert slower.high < 1 and not slower.faster and not slower.inconclusive
    assert Speedup(1.2, 0.9, 1.5).describe() == "1.20x [0.90, 1.50] inconclusive"
    assert Speedup(2.0, 1.5, 2.5).describe() == "2.00x [1.50, 2.50]"


@pytest.mark.claim("FORMS-2")
def test_injected_timings_become_speedups_not_time_ratios():
    conv = nn.Conv2d(8, 4, 3, padding=1)
    timer = Recorder({"original": (4.0, 0.1), "fold r=2": (2.0, 0.1), "channels_last": (4.0, 1.0)})
    report = benchmark_forms(conv, (1, 8, 6, 6), r_values=[2], compile=False, timer=timer)
    by = {t.form: t for t in report.timings}
    assert by["fold r=2"].speedup == pytest.approx(2.0) and by["fold r=2"].speedup_low == pytest.approx(3.9 / 2.1)
    assert not by["fold r=2"].inconclusive and by["channels_last"].inconclusive
    assert report.fastest.form == "fold r=2"
    rows = report.rows()
    assert all("speedup" in row and "interval" in row for row in rows) and not any("ratio" in k for k in rows[0])
    assert "fold r=2" in report.table() and report.machine in report.table()


def _mutated_fold(conv: nn.Module) -> nn.Module:
    big = fold_conv(conv, 2)
    with torch.no_grad():
        big.weight[0, 0, 0, 0] += 1
    return nn.Sequential(DepthToSpace(2), big)


@pytest.mark.claim("FORMS-1")
def test_a_form_that_is_not_equivalent_is_reported_unverified_and_never_timed(monkeypatch):
    conv = nn.Conv2d(8, 4, 3, padding=1)
    timer = Recorder()
    report = benchmark_forms(conv, (1, 8, 6, 6), forms=["fold", ("mutated fold", _mutated_fold)], r_values=[2],
                             channels_last=False, compile=False, timer=timer)
    by = {t.form: t for t in report.timings}
    assert by["fold r=2"].verified and "fold r=2" in timer.labels
    mutated = by["mutated fold"]
    assert not mutated.verified and not mutated.timed and math.isnan(mutated.speedup)
    assert "unverified" in mutated.note and "mutated fold" not in timer.labels
    # a built-in form gone wrong (weight folded in "dcr", input in "crd": FOLD-9) is caught the same way
    monkeypatch.setattr(stage, "fold_conv", lambda c, fold: fold_conv(c, fold.r, "dcr"))
    timer = Recorder()
    report = benchmark_forms(conv, (1, 8, 6, 6), forms=["fold"], r_values=[2], timer=timer)
    (fold,) = [t for t in report.timings if t.form == "fold r=2"]
    assert not fold.verified and not fold.timed and timer.labels == ["original"] * speed.ROUNDS


@pytest.mark.claim("FORMS-1")
def test_every_layer_form_is_verified_before_it_is_timed():
    timer = Recorder()
    conv = nn.Conv2d(16, 8, 3, stride=2, padding=1)
    report = benchmark_forms(conv, (1, 16, 8, 8), r_values=range(2, 5), compile=False, timer=timer)
    forms = [t.form for t in report.timings]
    # r=3: 9 does not divide 16; a stride-2 Conv2d is a site of both SPD rules (orders "focus" and "crd")
    assert forms == ["original", "fold r=2", "fold r=4", "conv_to_focus", "strided_to_spd", "channels_last"]
    assert all(t.verified and t.timed and t.check == "exact" and "exact" in t.note for t in report.timings[1:])
    # interleaved rounds: the original right before each form, every round
    assert timer.labels == [label for _ in range(speed.ROUNDS) for form in forms[1:] for label in ("original", form)]
    tconv = nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1)
    assert [t.form for t in benchmark_forms(tconv, (1, 8, 5, 5), compile=False, timer=Recorder()).timings] == [
        "original", "transposed_to_subpixel", "channels_last"]
    espcn = nn.Sequential(nn.Conv2d(4, 12, 3, padding=1, bias=False), nn.PixelShuffle(2))
    report = benchmark_forms(espcn, (1, 4, 5, 5), forms=["subpixel_to_transposed"], timer=Recorder())
    assert [(t.form, t.verified, t.check) for t in report.timings[1:]] == [("subpixel_to_transposed", True, "exact")]
    spd = nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, 4, 3, padding=1))
    report = benchmark_forms(spd, (1, 3, 8, 8), compile=False, timer=Recorder())
    # torch's PixelUnshuffle is also a site of from_pixel_shuffle: the same map in order "dcr", the conv permuted
    assert [(t.form, t.verified, t.check) for t in report.timings[1:]] == [
        ("focus_to_conv", True, "exact"), ("from_pixel_shuffle", True, "exact"), ("spd_to_strided", True, "exact"),
        ("channels_last", True, "exact")]
    # a sub-pixel bias that varies over the sub-pixels: the rule's form is a bias-free transposed conv and a
    # periodic bias (chosen when the site is matched); that form holds for all weights, and the capture proves it
    report = benchmark_forms(nn.Sequential(nn.Conv2d(4, 12, 3, padding=1), nn.PixelShuffle(2)), (1, 4, 5, 5),
                             forms=["subpixel_to_transposed"], timer=Recorder())
    (periodic,) = report.timings[1:]
    assert periodic.verified and periodic.timed and periodic.check == "exact"


@pytest.mark.claim("FORMS-1")
def test_a_model_gets_its_verified_rewrite_forms():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1))
    timer = Recorder()
    report = benchmark_forms(net, (1, 3, 8, 8), compile=False, timer=timer)
    forms = {t.form: t for t in report.timings}
    assert {"original", "strided_to_spd", "conv_to_focus", "transposed_to_subpixel", "channels_last"} <= set(forms)
    assert all(t.verified and t.timed for t in forms.values()) and set(timer.labels) == set(forms)
    unchecked = benchmark_forms(net, (1, 3, 8, 8), forms=["strided_to_spd"], verify=False, timer=Recorder())
    assert [(t.form, t.verified, t.timed) for t in unchecked.timings[1:]] == [("strided_to_spd", False, True)]
    assert "verify=False" in unchecked.timings[1].note


def test_a_real_timing_run_is_complete_and_leaves_the_target_alone():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    before = conv.weight.clone()
    report = benchmark_forms(conv, (1, 4, 6, 6), r_values=[2], compile=False, min_run_time=0.001)
    assert [t.timed for t in report.timings] == [True, True, True]
    assert all(t.median_s > 0 and t.speedup > 0 and t.speedup_low <= t.speedup <= t.speedup_high for t in report.timings)
    assert conv.weight.is_contiguous() and torch.equal(conv.weight, before)  # channels_last converted a copy
    assert len(measure(lambda: None, min_run_time=0.001).times) >= speed.MIN_RUNS


def test_compile_failure_is_a_note_under_auto_and_an_error_when_asked_for(monkeypatch):
    def broken(module):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", broken)
    report = benchmark_forms(nn.Conv2d(2, 2, 1), (1, 2, 3, 3), forms=["compile"], timer=Recorder())
    (compiled,) = [t for t in report.timings if t.form == "compile"]
    assert not compiled.timed and "no compiler here" in compiled.note
    err = raises_fold_error("compile", benchmark_forms, nn.Conv2d(2, 2, 1), (1, 2, 3, 3), forms=["compile"], compile=True, timer=Recorder())
    assert "no compiler here" in str(err)


def test_machine_line_names_cpu_torch_and_threads():
    line = machine_description("cpu")
    assert f"torch {torch.__version__}" in line and f", {torch.get_num_threads()} thread" in line


NET_SHAPE = (1, 3, 8, 8)


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 1))


@pytest.mark.claim("FORMS-3")
def test_optimize_keeps_the_original_when_the_rewritten_model_is_slower():
    net = _net()
    # every site form looks twice as fast alone, but the whole rewritten model is slower
    timer = Recorder({"0: original": (2.0, 0.01), "model: original": (5.0, 0.01), "model: rewritten": (6.0, 0.01)})
    best, report = optimize(net, NET_SHAPE, timer=timer)
    assert best is net and report.kept_original and report.rules == ()
    assert report.speedup < 1 and "not conclusively faster" in report.reason
    assert report.sites and all(s.chosen != "original" for s in report.sites)
    assert "model: rewritten" in timer.labels and "model: original" in timer.labels


@pytest.mark.claim("FORMS-3")
def test_optimize_keeps_the_original_when_the_whole_model_is_only_inconclusively_faster():
    timer = Recorder({"0: original": (2.0, 0.01), "model: original": (5.0, 0.5), "model: rewritten": (4.9, 0.5)})
    best, report = optimize(_net(), NET_SHAPE, timer=timer)
    assert report.kept_original and report.speedup > 1 and report.speedup_low <= 1


@pytest.mark.claim("FORMS-3")
def test_optimize_returns_the_verified_rewrite_when_conclusively_faster_and_picks_the_fastest_form():
    net = _net()
    timer = Recorder({"0: original": (2.0, 0.01), "0: strided_to_spd": (1.0, 0.01), "0: conv_to_focus": (1.5, 0.01),
                      "model: original": (5.0, 0.01), "model: rewritten": (4.0, 0.01)})
    best, report = optimize(net, NET_SHAPE, timer=timer)
    assert best is not net and not report.kept_original
    (site,) = report.sites
    assert site.location == "0" and site.chosen == "strided_to_spd" and site.scope == "layer"
    assert report.rules == (("strided_to_spd", ("0",)),) and report.speedup == pytest.approx(5.0 / 4.0)
    x = torch.randn(NET_SHAPE)
    assert torch.allclose(best(x), net.eval()(x), atol=1e-6)
    assert any(row["chosen"] for row in report.rows()) and "returned the rewritten model" in report.summary()


@pytest.mark.claim("FORMS-3")
def test_optimize_keeps_the_original_when_no_site_form_is_conclusively_faster():
    timer = Recorder()  # every form as fast as its original: every interval holds 1.0
    net = _net()
    best, report = optimize(net, NET_SHAPE, timer=timer)
    assert best is net and report.kept_original and math.isnan(report.speedup)
    assert all(s.chosen == "original" for s in report.sites) and "model: rewritten" not in timer.labels


def test_bad_inputs():
    conv = nn.Conv2d(2, 2, 3)
    raises_fold_error("target", benchmark_forms, "conv", (1, 2, 5, 5))
    raises_fold_error("input_shape", benchmark_forms, conv, "1x2x5x5")
    raises_fold_error("input_shape", benchmark_forms, conv, (1, 2, 0, 5))
    raises_fold_error("input_shape", benchmark_forms, conv, (1, 3, 5, 5))  # the conv cannot run on it
    raises_fold_error("input_shape", optimize, conv, (1, 3, 5, 5))
    raises_fold_error("min_run_time", benchmark_forms, conv, (1, 2, 5, 5), min_run_time=0)
    raises_fold_error("device", benchmark_forms, conv, (1, 2, 5, 5), device="gpu")
    if not torch.cuda.is_available():
        raises_fold_error("device", benchmark_forms, conv, (1, 2, 5, 5), device="cuda")
    raises_fold_error("compile", benchmark_forms, conv, (1, 2, 5, 5), compile="yes")
    raises_fold_error("verify", benchmark_forms, conv, (1, 2, 5, 5), verify=1)
    raises_fold_error("forms", benchmark_forms, conv, (1, 2, 5, 5), forms=["nope"])
    raises_fold_error("forms", benchmark_forms, conv, (1, 2, 5, 5), forms="fold")
    raises_fold_error("r_values", benchmark_forms, conv, (1, 2, 5, 5), r_values=[1])
    raises_fold_error("times", Sample, "x", ())
    raises_fold_error("times", Sample, "x", (1.0, -1.0))
    raises_fold_error("model", optimize, "net", (1, 2, 5, 5))
    raises_fold_error("min_run_time", optimize, _net(), NET_SHAPE, min_run_time=-1)
    assert FormTiming.untimed("x", "why").describe() == "not timed: why"


class Loaded(Recorder):
    """A timer on a machine where another process runs during the first ``busy`` measurements (any label):
    every time measured then is ``factor`` times longer."""

    def __init__(self, busy: int, factor: float = 300.0, **kw):
        super().__init__(**kw)
        self.busy, self.factor = busy, factor

    def __call__(self, fn, label):
        s = super().__call__(fn, label)
        scale = self.factor if len(self.labels) <= self.busy else 1.0
        return Sample(label, tuple(t * scale for t in s.times))


@pytest.mark.claim("FORMS-2")
def test_timing_rounds_interleave_the_original_and_each_form_so_a_passing_load_hits_both():
    conv = nn.Conv2d(4, 4, 3, padding=1)
    # the original and channels_last are equally fast; a load inflates the first measurement only (the original's)
    report = benchmark_forms(conv, (1, 4, 6, 6), forms=["channels_last"], timer=Loaded(busy=1), rounds=4)
    (cl,) = report.timings[1:]
    assert cl.speedup == pytest.approx(1.0) and not cl.speedup_low > 1.0  # not "300x faster"
    assert cl.inconclusive and report.fastest.form == "original"
    timer = Recorder()
    benchmark_forms(conv, (1, 4, 6, 6), forms=["fold", "channels_last"], r_values=[2], timer=timer, rounds=3)
    assert timer.labels == ["original", "fold r=2", "original", "channels_last"] * 3
    # each form's interval comes from the original's runs of its own rounds: a load during one form's rounds only
    slow = Loaded(busy=2, factor=10.0)  # the first original and fold r=2 measurements
    by = {t.form: t for t in benchmark_forms(conv, (1, 4, 6, 6), forms=["fold", "channels_last"], r_values=[2],
                                            timer=slow, rounds=1).timings}
    assert by["fold r=2"].speedup == pytest.approx(1.0) and by["channels_last"].speedup == pytest.approx(1.0)
    raises_fold_error("rounds", benchmark_forms, conv, (1, 4, 6, 6), rounds=0)


def _deep(depth: int = 80, width: int = 16) -> nn.Module:
    """Deep enough that random integer weights overflow its outputs to non-finite values (so do tresnet_m's)."""
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, width, 3, padding=1)]
    for _ in range(depth):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.BatchNorm2d(width), nn.LeakyReLU(0.1)]
    return nn.Sequential(*layers).eval()


@pytest.mark.claim("FORMS-1")
@pytest.mark.slow  # a whole torchvision model checked site by site: tens of seconds; `make test` runs it
def test_a_custom_form_of_a_deep_model_is_verified_by_sampling_when_the_integer_check_cannot_be_exact():
    from foldconv.check import check_equivalence, derived

    deep = _deep()
    # the integer check alone: random integer weights overflow the outputs, and the form would read unverified
    assert not check_equivalence(deep, derived(copy.deepcopy), (1, 3, 8, 8), trials=1).ok
    timer = Recorder()
    report = benchmark_forms(deep, (1, 3, 8, 8), forms=[("copy", copy.deepcopy)], timer=timer, rounds=1)
    (form,) = report.timings[1:]
    assert form.verified and form.timed and form.check == "sampled" and "copy" in timer.labels
    assert "float64" in form.note and "own weights" in form.note
    # a wrong custom form is still caught by the sampled check
    def broken(model):
        model = copy.deepcopy(model)
        with torch.no_grad():
            model[-2].running_mean[0] += 1.0
        return model

    report = benchmark_forms(deep, (1, 3, 8, 8), forms=[("broken", broken)], timer=Recorder(), rounds=1)
    assert not report.timings[1].verified and not report.timings[1].timed and report.timings[1].check == ""
    # a polynomial layer's custom form is still checked for all weights
    conv = nn.Conv2d(4, 4, 3, padding=1)
    report = benchmark_forms(conv, (1, 4, 6, 6), forms=[("fold 2", lambda m: nn.Sequential(DepthToSpace(2), fold_conv(m, 2)))],
                             timer=Recorder(), rounds=1)
    assert report.timings[1].verified and report.timings[1].check == "exact"


@pytest.mark.slow
@pytest.mark.claim("FORMS-1")
def test_a_custom_form_of_tresnet_m_is_verified_and_timed():
    from foldconv.models import build_model

    net = build_model("tresnet_m", seed=0).eval()
    report = benchmark_forms(net, (1, 3, 32, 32), forms=[("copy", copy.deepcopy)], timer=Recorder(), rounds=1)
    (form,) = report.timings[1:]
    assert form.verified and form.timed and form.check == "sampled", form.note


class Focusish(nn.Module):
    """YOLOv5's Focus: four slices, cat, then a conv on 4x the channels."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(12, 8, 3, padding=1)
        self.act = nn.ReLU()

    def forward(self, x):
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
        return self.act(self.conv(x))


@pytest.mark.claim("FORMS-3")
@pytest.mark.parametrize("make", [Focusish, lambda: nn.Sequential(nn.PixelUnshuffle(2), nn.Conv2d(12, 8, 3, padding=1), nn.ReLU())],
                         ids=["focus", "space_to_depth"])
def test_optimize_times_a_multi_module_site_in_the_whole_model_not_its_conv_on_the_model_input(make):
    torch.manual_seed(0)
    net = make().eval()
    timer = Recorder()
    best, report = optimize(net, (1, 3, 8, 8), timer=timer, rounds=2)
    (site,) = report.sites
    assert site.scope == "model" and site.input_shape == (1, 3, 8, 8)
    assert site.candidates and all(c.verified and c.timed for c in site.candidates)
    assert all(label.startswith("model: ") for label in timer.labels)
    assert "model: original" in timer.labels and best is net  # every form as fast as the original: kept


@pytest.mark.claim("FORMS-3")
@pytest.mark.parametrize("name", ["yolov5_stem", pytest.param("tresnet_m", marks=pytest.mark.slow)])
def test_optimize_runs_on_the_real_models_with_a_focus_or_space_to_depth_stem(name):
    from foldconv.models import build_model, randomize_batchnorm

    net = randomize_batchnorm(build_model(name, seed=0), torch.Generator().manual_seed(0)).eval()
    shape = (1, 3, 32, 32)
    stem = {"yolov5_stem": "focus_to_conv", "tresnet_m": "spd_to_strided"}[name]
    timer = Recorder({"model: original": (2.0, 0.01), "model: rewritten": (1.0, 0.01)}, default=(1.0, 0.01))
    best, report = optimize(net, shape, timer=timer, rounds=1)
    stems = [s for s in report.sites if s.scope == "model"]
    assert stems and any(c.form == stem and c.verified and c.timed for s in stems for c in s.candidates)
    assert not report.kept_original and best is not net
    x = torch.randn(shape)
    assert torch.allclose(best(x), net(x), atol=1e-4)


def test_compile_is_opt_in_the_default_call_never_compiles(monkeypatch):
    compiled = []
    monkeypatch.setattr(torch, "compile", lambda module, **kw: compiled.append(module) or module)
    conv = nn.Conv2d(4, 4, 3, padding=1)
    report = benchmark_forms(conv, (1, 4, 6, 6), r_values=[2], timer=Recorder())
    assert "compile" not in [t.form for t in report.timings] and compiled == []
    for asked in ({"compile": "auto"}, {"compile": True}, {"forms": ["compile"]}):
        report = benchmark_forms(conv, (1, 4, 6, 6), r_values=[2], timer=Recorder(), **asked)
        assert "compile" in [t.form for t in report.timings], asked
    assert len(compiled) == 3


@pytest.mark.claim("FORMS-2")
def test_forms_report_summary_names_the_fastest_form_and_counts_the_inconclusive():
    conv = nn.Conv2d(8, 4, 3, padding=1)
    timer = Recorder({"original": (4.0, 0.1), "fold r=2": (2.0, 0.1), "channels_last": (4.0, 1.0)})
    line = benchmark_forms(conv, (1, 8, 6, 6), r_values=[2], timer=timer).summary()
    assert "fastest fold r=2, speedup 2.00x [" in line and "higher is faster" in line
    assert "of 2 form(s): 1 faster, 1 inconclusive" in line
    slower = Recorder({"original": (2.0, 0.01), "fold r=2": (4.0, 0.01), "channels_last": (2.0, 0.5)})
    line = benchmark_forms(conv, (1, 8, 6, 6), r_values=[2], timer=slower).summary()
    assert "no form is conclusively faster" in line and "1 slower, 1 inconclusive" in line


def test_a_slow_call_is_timed_min_runs_times_not_in_blocks_of_ten():
    calls = []
    sample = measure(lambda: calls.append(1), min_run_time=1e-9, warmup=0)
    # calibration grows the block until it lasts 1 ms; the timed blocks then hold one call each
    assert len(sample.times) == speed.MIN_RUNS
    slow = []

    def call():
        slow.append(1)
        torch.ones(64, 64).matmul(torch.ones(64, 64))
        import time
        time.sleep(0.002)

    sample = measure(call, min_run_time=0.001, warmup=1)
    assert len(slow) == 1 + 1 + speed.MIN_RUNS and len(sample.times) == speed.MIN_RUNS


def test_a_convs_forms_are_checked_at_the_least_input_that_covers_the_timed_one(monkeypatch):
    """The bound on benchmark_forms' build and check work, read structurally: which forms are built, at which size
    each is checked (never the timed one when a smaller one covers it), and what was not tried, with why."""
    assert speed.check_shape(nn.Conv2d(64, 64, 3, padding=1), (1, 64, 56, 56), [2, 4, 8]) == (1, 64, 24, 24)
    assert speed.check_shape(nn.Conv2d(8, 8, 3, stride=2, padding=1), (2, 8, 41, 9), [2]) == (1, 8, 13, 9)  # >= 2*(3+1+2), odd as 41
    assert speed.check_shape(nn.Sequential(nn.Conv2d(8, 8, 3)), (1, 8, 56, 56), [2]) == (1, 8, 56, 56)  # a model: as given
    checked = []
    real = speed.check_model

    def recording(target, build, shape, **kwargs):
        checked.append(tuple(shape))
        return real(target, build, shape, **kwargs)

    monkeypatch.setattr(speed, "check_model", recording)
    conv = nn.Conv2d(16, 16, 3, padding=1)
    report = benchmark_forms(conv, (1, 16, 40, 40), r_values=range(2, 5), timer=Recorder())
    assert [t.form for t in report.timings] == ["original", "fold r=2", "fold r=4", "channels_last"]
    assert report.check_shape == (1, 16, 16, 16) and checked == [report.check_shape] * 3  # one check per form, small
    assert all(t.verified and t.check == "exact" and "checked at input (1, 16, 16, 16)" in t.note for t in report.timings[1:])
    assert report.skipped == ("fold r=3: r**2 does not divide the 16 input channels",)
    assert "checked exactly at input (1, 16, 16, 16)" in report.summary() and "not tried: fold r=3" in report.summary()
    checked.clear()
    full = benchmark_forms(conv, (1, 16, 40, 40), r_values=[2], timer=Recorder(), verify_size="full")
    assert checked == [(1, 16, 40, 40)] * 2 and full.check_shape == (1, 16, 40, 40) and "checked exactly" not in full.summary()


def test_a_form_checked_small_is_still_compared_at_the_timed_size(monkeypatch):
    """A form right at the checked size and wrong at the timed one is reported unverified and never timed."""
    real = speed._ChannelsLast.forward

    def wrong_when_large(self, x):
        y = real(self, x)
        return y + 1 if x.shape[-1] > 20 else y

    monkeypatch.setattr(speed._ChannelsLast, "forward", wrong_when_large)
    timer = Recorder()
    report = benchmark_forms(nn.Conv2d(4, 4, 3, padding=1), (1, 4, 40, 40), r_values=[2], timer=timer)
    last = report.timings[-1]
    assert last.form == "channels_last" and not last.verified and not last.timed
    assert last.note.startswith("unverified: at the timed input (1, 4, 40, 40)")
    assert "channels_last" not in timer.labels and report.timings[1].verified
