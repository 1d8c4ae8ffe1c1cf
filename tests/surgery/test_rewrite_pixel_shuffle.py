"""to_pixel_shuffle / from_pixel_shuffle: another ecosystem's depth-to-space or space-to-depth next to a conv becomes
torch's nn.PixelShuffle / nn.PixelUnshuffle with the conv's channels permuted, exactly, and back.

Proved on a TensorFlow-style ESPCN (convs, then a DCR depth-to-space: ONNX then runs one DepthToSpace(CRD) and no
Transpose) and on a YOLOv5 Focus stem (slices + cat in any order, then a conv), with every order and both forms of a
layout op (module and function); the inverse takes each back, for a DCR runtime.
"""
from __future__ import annotations

import itertools

import pytest
import timm.layers
import torch
from torch import nn

from foldconv import DepthToSpace, SpaceToDepth, Verdict, depth_to_space
from foldconv.surgery import RULES, inverse_rules, rewrite
from foldconv.surgery.onnx_export import export_onnx
from helpers import integer_tensor, integer_weights


class TFEspcn(nn.Module):
    """ESPCN as ported from TensorFlow: NCHW convs, then tf.nn.depth_to_space, which is order DCR."""

    def __init__(self, r: int = 3, layout: str = "function"):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 16, 5, padding=2), nn.Tanh(), nn.Conv2d(16, 8, 3, padding=1), nn.Tanh())
        self.tail = nn.Conv2d(8, r * r, 3, padding=1)
        self.shuffle = DepthToSpace(r, "dcr") if layout == "module" else None
        self.r = r

    def forward(self, x):
        y = self.tail(self.body(x))
        return self.shuffle(y) if self.shuffle is not None else depth_to_space(y, self.r, "dcr")


class Focus(nn.Module):
    """YOLOv5's Focus stem (slices + cat, then Conv+BN+SiLU), the slices in a given order."""

    def __init__(self, offsets=((0, 0), (1, 0), (0, 1), (1, 1))):
        super().__init__()
        self.offsets = offsets
        self.conv = nn.Conv2d(12, 16, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.act = nn.SiLU()

    def forward(self, x):
        return self.act(self.bn(self.conv(torch.cat([x[..., a::2, b::2] for a, b in self.offsets], 1))))


@pytest.mark.claim("SURGERY-14")
@pytest.mark.parametrize("layout", ["function", "module"])
def test_a_tf_style_espcn_gets_torchs_pixel_shuffle_and_one_depth_to_space_crd_in_onnx(layout):
    model = integer_weights(TFEspcn(layout=layout)).eval()
    new, report = rewrite(model, (1, 1, 6, 6), ["to_pixel_shuffle"])
    site = report.sites[0]
    assert report.applied == 1 and site.exact and site.verdict is Verdict.EQUIVALENT and report.ok, report.summary()
    assert isinstance(new.get_submodule("tail"), nn.Sequential) and isinstance(new.get_submodule("tail")[1], nn.PixelShuffle)
    x = integer_tensor((2, 1, 6, 6))
    assert torch.equal(new(x), model(x))
    # the ported model uses torch's op: one DepthToSpace(CRD), no Transpose, at any size
    exported = export_onnx(new, (1, 1, 6, 6))
    assert exported.ok and exported.ops.count("DepthToSpace(CRD)") == 1 and "Transpose" not in exported.ops, exported.summary()
    original = export_onnx(model, (1, 1, 6, 6))
    assert "Transpose" in original.ops and "DepthToSpace(CRD)" not in original.ops
    # and back, for a DCR runtime: the inverse restores the DCR layout, exactly
    back, again = rewrite(new, (1, 1, 6, 6), list(inverse_rules(["to_pixel_shuffle"], report=report)))
    assert again.applied == 1 and again.ok and torch.equal(back(x), model(x))
    assert not any(isinstance(m, nn.PixelShuffle) for m in back.modules())


ORDERS = list(itertools.permutations(((0, 0), (1, 0), (0, 1), (1, 1))))


@pytest.mark.claim("SURGERY-14")
@pytest.mark.parametrize("offsets", [pytest.param(o, marks=() if k in (0, 5, 17) else pytest.mark.slow) for k, o in enumerate(ORDERS)])
def test_every_focus_slice_order_becomes_pixel_unshuffle_and_a_permuted_conv(offsets):
    # YOLOv5's order and two others in the fast tier, all 24 with the slow one
    model = integer_weights(Focus(offsets)).eval()
    new, report = rewrite(model, (1, 3, 8, 8), ["to_pixel_shuffle"])
    assert report.applied == 1 and report.sites[0].exact and report.ok, (offsets, report.summary())
    assert [type(m).__name__ for m in new.conv] == ["PixelUnshuffle", "Conv2d"]
    x = integer_tensor((1, 3, 8, 8))
    assert torch.allclose(new(x), model(x), rtol=1e-12, atol=0), offsets
    assert report.sites[0].trains_same  # a permutation of the weights: it trains as the original


@pytest.mark.claim("SURGERY-14")
def test_timm_layouts_and_foldconvs_in_any_order_and_the_inverse_in_any_order():
    modules = [
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), timm.layers.DepthToSpace(2)),  # timm's: DCR
        nn.Sequential(timm.layers.SpaceToDepth(4), nn.Conv2d(48, 4, 3, padding=1)),  # TResNet's stem: DCR
        nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), DepthToSpace(2, "rw c rh")),
        nn.Sequential(SpaceToDepth(2, "rh c rw"), nn.Conv2d(12, 4, 3, padding=1, groups=2)),
    ]
    for model in modules:
        model = integer_weights(model)
        shape = (1, 3, 8, 8)
        new, report = rewrite(model, shape, ["to_pixel_shuffle"])
        assert report.applied == 1 and report.sites[0].exact and report.ok, report.summary()
        assert any(isinstance(m, (nn.PixelShuffle, nn.PixelUnshuffle)) for m in new.modules())
        x = integer_tensor(shape)
        assert torch.equal(new(x), model(x))
        for order in ("dcr", "c rw rh"):
            back, again = rewrite(new, shape, [("from_pixel_shuffle", {"order": order})])
            assert again.applied == 1 and again.sites[0].exact and torch.equal(back(x), model(x)), order


@pytest.mark.claim("SURGERY-14")
def test_a_permuted_conv_is_caught_when_the_permutation_is_wrong():
    # mutation: the same rule with the inverse permutation (a plausible slip) must be found not equivalent
    good = RULES.get("to_pixel_shuffle")

    def transposed_perm(match, get, options):
        built = good.build(match, get, options)
        conv = built[0]
        with torch.no_grad():
            conv.weight.copy_(conv.weight.flip(0))
        return built

    from foldconv.surgery import Rule

    bad = Rule("wrong_shuffle", good.find, transposed_perm, leaves=good.leaves)
    model = integer_weights(nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), DepthToSpace(2, "dcr")))
    new, report = rewrite(model, (1, 3, 4, 4), [bad])
    assert report.applied == 0 and report.sites[0].verdict is Verdict.NOT_EQUIVALENT and not report.ok
    x = integer_tensor((1, 3, 4, 4))
    assert torch.equal(new(x), model(x))


def test_torchs_own_layout_and_unequal_factors_are_not_sites_or_say_why():
    crd = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.PixelShuffle(2))
    _, report = rewrite(crd, (1, 3, 4, 4), ["to_pixel_shuffle"])
    assert report.sites == ()  # torch's op already: nothing to do
    rect = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), DepthToSpace((2, 4), "dcr"))
    _, report = rewrite(rect, (1, 3, 4, 4), ["to_pixel_shuffle"])
    assert report.applied == 0 and "one factor for both axes" in report.sites[0].reason
