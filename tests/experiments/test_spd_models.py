"""``<model>+spd`` means the same in every app that takes a model (shift, count, rf, rewrite): the model with its first
strided conv rewritten to space-to-depth; a typo's close matches keep the suffix; count gives the rewritten
model's figures, rf its boxes."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from foldconv.analysis.counting.counter import count
from foldconv.errors import FoldError
from foldconv.experiments.counting import CountExperiment
from foldconv.experiments.io import read_csv
from foldconv.experiments.receptive_field import RFExperiment
from foldconv.experiments.rewrite import RewriteExperiment, run_rewrite
from foldconv.experiments.shift import ShiftExperiment
from foldconv.experiments.spd_models import SpdSpec, build_spd_model, resolve_spd, spd_rewrite, spd_site


@pytest.mark.parametrize("make", [
    lambda v: ShiftExperiment(models=["resnet18", v]),
    lambda v: CountExperiment(model=v),
    lambda v: CountExperiment(models=[v]),
    lambda v: RFExperiment(model=v),
    lambda v: RewriteExperiment(model=v, rules=["spd_to_strided"]),
    lambda v: RewriteExperiment(models=[v, "resnet18"], rules=["spd_to_strided"]),
])
def test_every_app_config_takes_the_suffix_and_its_typo_hint_keeps_it(make):
    make("resnet18+spd")  # accepted
    with pytest.raises(FoldError) as err:
        make("resnt18+spd")
    assert "'resnt18+spd'" in str(err.value) and "did you mean resnet18+spd," in str(err.value), str(err.value)


def test_timm_typo_hint_keeps_prefix_and_suffix():
    pytest.importorskip("timm")
    with pytest.raises(FoldError, match=r"did you mean timm:resnet18d\+spd"):
        resolve_spd("timm:resnt18d+spd")


def test_the_rewrite_replaces_the_first_strided_conv_and_computes_the_same_function():
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(2, 3, 1), torch.nn.Conv2d(3, 4, 3, stride=2, padding=1), torch.nn.Conv2d(4, 4, 3, stride=2))
    x = torch.randn(1, 2, 9, 11, dtype=torch.float64)
    ref = net.double()(x)
    new, site = spd_rewrite(net)
    assert site.startswith("1: Conv2d(3->4, k=(3, 3), s=(2, 2), p=(1, 1)) -> space_to_depth(2)")
    assert type(new[1]).__name__ == "SpaceToDepthConv" and isinstance(new[2], torch.nn.Conv2d)  # only the first strided one
    assert torch.allclose(new(x), ref)
    with pytest.raises(FoldError, match="has no strided conv"):
        spd_rewrite(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3)), label="plain")


def test_count_gives_the_rewritten_models_figures():
    """resnet18's conv1 (7x7 s2, 3->64, no bias) becomes a 4x4 conv over 12 channels: +12*64*16 - 3*64*49 params,
    and per output position as many more MACs; everything else unchanged."""
    jobs = {j.label: j for j in CountExperiment(models=["resnet18", "resnet18+spd"], input_shape=[1, 3, 64, 64]).jobs()}
    assert set(jobs) == {"resnet18", "resnet18+spd"}
    base, spd = (count(jobs[k].model, jobs[k].input_shape) for k in ("resnet18", "resnet18+spd"))
    assert spd.params - base.params == 12 * 64 * 16 - 3 * 64 * 49
    assert spd.macs - base.macs == (12 * 16 - 3 * 49) * 64 * 32 * 32  # conv1's output: 64 channels of 32x32
    assert isinstance(CountExperiment(model="resnet18+spd").targets["resnet18+spd"].model, SpdSpec)
    with pytest.raises(FoldError, match=r"is rewritten \(\+spd\): its parameters and MACs are not the published"):
        CountExperiment(models=["resnet18+spd"], published=True)


def test_build_keeps_the_models_seeded_weights():
    a, b = build_spd_model("resnet18", seed=3), build_spd_model("resnet18+spd", seed=3)
    assert torch.equal(a.layer1[0].conv1.weight, b.layer1[0].conv1.weight)
    assert torch.equal(a.conv1.weight, b.conv1.conv.weight.reshape(64, 3, 2, 2, 4, 4).permute(0, 1, 4, 2, 5, 3).reshape(64, 3, 8, 8)[..., :7, :7])
    assert spd_site("resnet18") is None and "conv1:" in spd_site("resnet18+spd")


def _run(app: str, tmp_path, *overrides: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "foldconv_launcher", app, f"hydra.run.dir={tmp_path}", *overrides],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)


@pytest.mark.app
def test_count_and_rf_apps_take_the_suffix(tmp_path):
    out = {}
    for app, extra in (("count", ("plot=false",)), ("rf", ("input_shape=[1,3,64,64]", "erf_samples=1", "check_nodes=2"))):
        for model in ("resnet18", "resnet18+spd"):
            proc = _run(app, tmp_path / app / model, f"model={model}", *extra)
            assert proc.returncode == 0, proc.stderr
            out[app, model] = proc.stdout
    params = {m: int(read_csv(tmp_path / "count" / m / f"{m}_total.csv")[0]["params"]) for m in ("resnet18", "resnet18+spd")}
    assert params["resnet18+spd"] - params["resnet18"] == 12 * 64 * 16 - 3 * 64 * 49
    assert "| resnet18+spd |" in out["count", "resnet18+spd"]
    assert "resnet18+spd: the +spd rewrite replaced conv1: Conv2d(3->64, k=(7, 7)" in out["rf", "resnet18+spd"]
    base, spd = (read_csv(tmp_path / "rf" / m / "layers.csv")[-1] for m in ("resnet18", "resnet18+spd"))
    assert (base["jump_h"], base["jump_w"]) == (spd["jump_h"], spd["jump_w"])
    # the analysis counts the zero tap that pads conv1's 7 taps to 8 (two blocks of 2): at most one more pixel
    assert 0 <= int(spd["rf_h"].split()[0]) - int(base["rf_h"].split()[0]) <= 1  # e.g. "468 (global)"


def test_rewrite_takes_a_spd_model_and_its_inverse_rule_finds_the_rewritten_stem(tmp_path):
    result = run_rewrite(RewriteExperiment(model="resnet18+spd", rules=["spd_to_strided"], timing=False, onnx=False,
                                           round_trip=False, input_shape=[1, 3, 32, 32]), tmp_path)
    (model,) = result.value.models
    assert model.label == "resnet18+spd" and result.ok
    assert model.report.applied == 1 and [s.location for s in model.report.main_sites if s.applied] == ["conv1"]
