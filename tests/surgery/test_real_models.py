"""The real architectures of foldconv.models rewritten by ``foldconv.surgery.rewrite``:
every applied site verified exactly, the whole model equivalent to the original, the rewritten layers of the
form the issue names, and the inverse rules taking each rewrite back. Small inputs keep the file fast.

Beyond the reports, each test runs both models on one float64 input (so a report that said "equivalent" for
two different functions would fail here), and a mutated rewrite (one weight changed) is refused by the checker.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, List, Tuple

import pytest
import torch
from torch import nn

from foldconv import check_equivalence, check_fold
from foldconv.models import build_model, randomize_batchnorm
from foldconv.surgery import rewrite


@dataclass(frozen=True)
class RealModel:
    """A real model with the rules that rewrite it and those that take the rewrite back (the rewrite app, foldconv
    rewrite, runs the same cases), on a small input."""

    name: str
    test_input_shape: Tuple[int, ...]
    rules: Tuple[Any, ...]
    inverse: Tuple[Any, ...]

    def build(self, seed: int = 0, **kwargs: Any) -> nn.Module:
        """Seeded random weights and BatchNorm statistics (a fresh BatchNorm is the identity: its fold unchecked)."""
        model = build_model(self.name, seed=seed, **kwargs)
        return randomize_batchnorm(model, torch.Generator().manual_seed(seed)).eval()


REAL_MODELS = {m.name: m for m in (
    RealModel("yolov5_stem", (1, 3, 32, 32), ("focus_to_conv",), (("conv_to_focus", {"at": ["focus.conv.conv"]}),)),
    RealModel("tresnet_m", (1, 3, 64, 64), ("spd_to_strided",), (("strided_to_spd", {"order": "dcr"}),)),
    RealModel("dcgan", (1, 100, 1, 1), ("transposed_to_subpixel",), ("subpixel_to_transposed",)),
    RealModel("espcn", (1, 1, 12, 12), ("subpixel_to_transposed",), ("transposed_to_subpixel",)),
    RealModel("resnet18", (1, 3, 32, 32), (("strided_to_spd", {"at": ["conv1"]}), ("fold_stage", {"stage": "layer1", "r": 2})),
              ("spd_to_strided", ("unfold_stage", {"stage": "layer1"}))),
)}


def applied(report) -> List:
    return [s for s in report.sites if s.applied and not s.part_of]  # the sites, not the rows of a stage's layers


def same_outputs(a: nn.Module, b: nn.Module, shape) -> bool:
    x = torch.randn(shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ya, yb = a.double().eval()(x.clone()), b.double().eval()(x.clone())
    return ya.shape == yb.shape and torch.allclose(ya, yb, rtol=1e-9, atol=1e-9)


def convs(model: nn.Module, cls=nn.Conv2d) -> List[nn.Module]:
    return [m for m in model.modules() if type(m) is cls]


def run(name: str):
    m: RealModel = REAL_MODELS[name]
    model = m.build(seed=0).double()  # float64 before the rewrite: a BatchNorm folded into a conv is not rounded to float32
    new, report = rewrite(model, m.test_input_shape, list(m.rules), verify=True)
    assert report.ok, report.summary()
    sites = applied(report)
    assert sites, report.summary()
    for site in sites:  # per site: the verdict "equivalent", exact for every layer rule (a stage holds ReLUs: sampled)
        assert site.verdict is not None and site.verdict.value == "equivalent", (site.location, site.verdict)
        assert site.exact or site.rule == "fold_stage", (site.location, site.check)
    assert report.verification is not None and report.verification.ok
    assert same_outputs(model, new, m.test_input_shape)
    return m, model, new, report


def round_trip(m: RealModel, model: nn.Module, new: nn.Module):
    back, report = rewrite(new, m.test_input_shape, list(m.inverse), verify=True)
    assert report.ok and report.applied >= 1, report.summary()
    assert same_outputs(model, back, m.test_input_shape)
    return back, report


def mutated(model: nn.Module, conv: nn.Module) -> None:
    with torch.no_grad():
        conv.weight.view(-1)[0] += 1.0


@pytest.mark.claim("REAL-1")
def test_yolov5_focus_stem_is_one_6x6_stride_2_conv_and_back():
    m, model, new, report = run("yolov5_stem")
    (site,) = applied(report)
    assert site.pattern == "slice+cat+Conv2d (Focus)" and site.location == "focus.conv.conv"
    first = convs(new)[0]
    assert (first.in_channels, first.out_channels, first.kernel_size, first.stride, first.padding) == (3, 32, (6, 6), (2, 2), (2, 2))
    assert site.params_before == site.params_after == 12 * 32 * 9 and site.macs_before == site.macs_after
    _, back = round_trip(m, model, new)
    assert [s.location for s in applied(back)] == ["focus.conv.conv"]  # at the stem only, not the other stride-2 conv
    mutated(new, first)
    assert not check_equivalence(model.double(), new.double(), m.test_input_shape).ok


@pytest.mark.slow
@pytest.mark.claim("REAL-2")
def test_tresnet_m_space_to_depth_stem_is_a_strided_conv_and_back():
    pytest.importorskip("timm")
    m, model, new, report = run("tresnet_m")
    (site,) = applied(report)
    assert site.location == "body.conv1.conv"
    stem = convs(new)[0]
    # SpaceToDepth(4) + Conv2d(48 -> 64, 3x3, p1) is one Conv2d(3 -> 64, 12x12, stride 4, padding 4)
    assert (stem.in_channels, stem.kernel_size, stem.stride, stem.padding) == (3, (12, 12), (4, 4), (4, 4))
    assert not any(type(mod).__name__ == "SpaceToDepth" for mod in new.modules())
    round_trip(m, model, new)


def check_dcgan(**kwargs):
    m = REAL_MODELS["dcgan"]
    model = m.build(**kwargs).double()
    new, report = rewrite(model, m.test_input_shape, list(m.rules), verify=True)
    assert report.ok and report.verification.ok, report.summary()
    sites = applied(report)
    assert [s.location for s in sites] == ["main.0", "main.3", "main.6", "main.9", "main.12"]
    assert all(s.exact and s.verdict.value == "equivalent" for s in sites)
    assert not any(t.stride == (2, 2) for t in convs(new, nn.ConvTranspose2d))  # no strided transposed conv is left
    assert same_outputs(model, new, m.test_input_shape)
    back, _ = round_trip(m, model, new)
    assert len([t for t in convs(back, nn.ConvTranspose2d) if t.stride == (2, 2)]) == 4


@pytest.mark.claim("REAL-3")
@pytest.mark.slow  # a whole model of many sites verified exactly: seconds; `make test` runs it
def test_dcgan_generator_becomes_sub_pixel_convs_and_back():
    check_dcgan(ngf=8)  # the tutorial's generator at an eighth of its width: the same layers, faster checks


@pytest.mark.slow
@pytest.mark.claim("REAL-3")
def test_dcgan_generator_at_full_width():
    check_dcgan()


@pytest.mark.claim("REAL-4")
def test_espcn_conv_plus_pixel_shuffle_is_a_transposed_conv_and_back():
    m, model, new, report = run("espcn")
    (site,) = applied(report)
    assert site.pattern == "Conv2d+PixelShuffle (sub-pixel)" and site.location == "subpixel.0"
    (tconv,) = convs(new, nn.ConvTranspose2d)
    assert (tconv.in_channels, tconv.out_channels, tconv.kernel_size, tconv.stride, tconv.padding) == (32, 1, (9, 9), (3, 3), (3, 3))
    assert not any(isinstance(mod, nn.PixelShuffle) for mod in new.modules())
    round_trip(m, model, new)
    mutated(new, tconv)
    assert not check_equivalence(model.double(), new.double(), m.test_input_shape).ok


@pytest.mark.claim("REAL-4")
def test_espcn_with_tied_sub_pixel_biases_is_one_transposed_conv_with_its_bias():
    m = REAL_MODELS["espcn"]
    model = m.build(icnr=True)
    new, report = rewrite(model, m.test_input_shape, list(m.rules), verify=True)
    assert report.ok, report.summary()
    (site,) = applied(report)
    assert site.after == "ConvTranspose2d(32->1, k=(9, 9), s=(3, 3), p=(3, 3))" and site.verdict.value == "equivalent"
    tconv = new.get_submodule("subpixel.0")
    assert type(tconv) is nn.ConvTranspose2d and tconv.bias is not None
    assert same_outputs(model, new, m.test_input_shape)


@pytest.mark.slow
@pytest.mark.claim("REAL-5")
def test_resnet18_stem_as_space_to_depth_and_a_folded_stage_and_back():
    m, model, new, report = run("resnet18")
    assert {s.rule for s in applied(report)} == {"strided_to_spd", "fold_stage"}, report.summary()
    stem = next(s for s in applied(report) if s.rule == "strided_to_spd")
    assert stem.location == "conv1" and "Conv2d(12->64, k=(4, 4), s=(1, 1)" in stem.after, stem.after
    assert (stem.params_before, stem.params_after) == (3 * 64 * 49, 12 * 64 * 16)
    assert type(new.layer1).__name__ == "FoldedStage"
    for conv in convs(model.layer1):  # each conv of the stage folds exactly (the stage's own check is sampled: ReLU)
        assert check_fold(conv, 2).exact and check_fold(conv, 2).ok
    back, _ = round_trip(m, model, new)
    assert type(back.layer1).__name__ != "FoldedStage" and back.conv1.stride == (2, 2)
