"""The real architectures of foldconv.models: built as their sources build them, registered by name."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv.equivalences import icnr_weight
from foldconv.errors import FoldError
from foldconv.models import (
    ARCHITECTURES,
    BLUR_MODELS,
    ESPCN,
    DCGANGenerator,
    YoloV5Stem,
    build_model,
    icnr_espcn,
    randomize_batchnorm,
)


def test_the_real_architectures_are_registered_with_their_inputs():
    for name, shape in (("yolov5_stem", (1, 3, 320, 320)), ("dcgan", (1, 100, 1, 1)), ("espcn", (1, 1, 128, 128)),
                        ("tresnet_m", (1, 3, 224, 224))):
        assert ARCHITECTURES.get(name).input_shape == shape and ARCHITECTURES.get(name).description
    assert {f"{n}_blur" for n in BLUR_MODELS} <= set(ARCHITECTURES.names())


@pytest.mark.parametrize("name, shape, out", [
    ("yolov5_stem", (1, 3, 32, 32), (1, 64, 8, 8)),
    ("dcgan", (1, 100, 1, 1), (1, 3, 64, 64)),
    ("espcn", (1, 1, 8, 8), (1, 1, 24, 24)),
])
def test_each_builds_and_runs(name, shape, out):
    kwargs = {"ngf": 8} if name == "dcgan" else {}
    model = build_model(name, seed=0, **kwargs).eval()
    with torch.no_grad():
        assert tuple(model(torch.zeros(shape)).shape) == out


def test_yolov5_focus_is_the_four_strided_slices_then_a_conv():
    stem = YoloV5Stem().eval()
    x = torch.arange(2 * 3 * 4 * 4, dtype=torch.float32).reshape(2, 3, 4, 4)
    captured = {}
    stem.focus.conv.register_forward_pre_hook(lambda m, args: captured.setdefault("x", args[0]))
    stem(x)
    expected = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
    assert torch.equal(captured["x"], expected)


def test_dcgan_uses_the_tutorials_init():
    gen = build_model("dcgan", seed=0)
    assert isinstance(gen, DCGANGenerator)
    conv_std = float(gen.main[0].weight.detach().std())
    assert 0.015 < conv_std < 0.025  # N(0, 0.02), not torch's default init
    assert all(float(m.bias.detach().abs().max()) == 0 for m in gen.modules() if isinstance(m, nn.BatchNorm2d))


def test_icnr_is_the_equivalences_icnr_in_pixelshuffles_order():
    model = icnr_espcn(ESPCN(r=2, channels=3, n2=4))
    weight = model.subpixel[0].weight
    low = weight.view(-1, 4, *weight.shape[1:])[:, 0]  # channels (c, rh, rw): the first sub-pixel of each channel
    assert torch.equal(weight, icnr_weight(low, 2, "crd"))
    assert not torch.equal(weight, icnr_weight(low, 2, "dcr"))  # mutant: another channel order
    with pytest.raises(FoldError, match="must be an ESPCN"):
        icnr_espcn(nn.Conv2d(1, 1, 1))


def test_randomize_batchnorm_makes_the_fold_of_a_batchnorm_observable():
    bn = nn.BatchNorm2d(3).eval()
    x = torch.randn(1, 3, 2, 2)
    assert torch.allclose(bn(x), x, atol=1e-4)  # a fresh BatchNorm is (almost) the identity
    randomize_batchnorm(bn, torch.Generator().manual_seed(0))
    assert not torch.allclose(bn(x), x, atol=1e-2)


def test_blur_models_are_antialiased_cnns():
    antialiased_cnns = pytest.importorskip("antialiased_cnns")
    model = build_model("resnet18_blur", meta=True)
    assert any(isinstance(m, antialiased_cnns.BlurPool) for m in model.modules())
