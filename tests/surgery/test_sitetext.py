"""How a site reads in the rewrite report: a replacement made of several layers names each of them."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from foldconv import ConvSpec
from foldconv.equivalences import strided_to_spd
from foldconv.models import build_model
from foldconv.surgery import rewrite
from foldconv.surgery.sitetext import describe


def test_a_sequential_reads_as_its_layers_in_order():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Sequential(nn.PixelShuffle(2)))
    assert describe(seq) == "Conv2d(3->4, k=(3, 3), s=(1, 1), p=(0, 0)) + ReLU + PixelShuffle(r=(2, 2), order='c rh rw')"
    assert describe(nn.Sequential()) == "Sequential"  # nothing to join


def test_espcn_after_names_the_transposed_conv_and_its_periodic_bias():
    _, report = rewrite(build_model("espcn", n1=8, n2=4, seed=0).eval(), (1, 1, 12, 12), ["subpixel_to_transposed"], verify=False)
    (site,) = [s for s in report.sites if s.applied]
    assert site.after.startswith("ConvTranspose2d(") and site.after.endswith(" + PeriodicBias"), site.after
    assert "Sequential" not in site.after  # the text is about layers, never the container


@pytest.mark.parametrize("kernel,stride,padding,size,mode", [
    (7, 2, 3, 32, "auto"), (7, 2, 3, 33, "auto"), (3, 2, 1, 9, "explicit"), (3, 2, 1, 8, "auto"), (4, 2, 1, 7, "explicit"),
    (1, 2, 0, 8, "auto"), (1, 2, 0, 9, "auto"), (3, 2, 2, 7, "inner"), (3, 3, 0, 10, "auto"), (2, 2, 0, 9, "explicit"),
])
def test_a_space_to_depth_site_names_every_step_it_runs(monkeypatch, kernel, stride, padding, size, mode):
    """Every pad, end fit and crop the module runs on the site's input is in its text, and none it does not run."""
    spd = strided_to_spd(nn.Conv2d(2, 3, kernel, stride=stride, padding=padding), padding=mode)
    ran = {"pad": 0, "zero-extend": 0}
    real_pad = F.pad

    def counting(x, pads, mode="constant", value=None):
        source = [p for p in reversed(spd.source.padding) for _ in range(2)]
        ran["pad" if list(pads) == source and any(source) and ran["pad"] == 0 else "zero-extend"] += any(pads)
        return real_pad(x, pads, mode=mode) if value is None else real_pad(x, pads, mode=mode, value=value)

    monkeypatch.setattr(F, "pad", counting)
    x = torch.randn(1, 2, size, size)
    y = spd(x)
    text = describe(spd, (1, 2, size, size))
    assert ("pad(" in text) == bool(ran["pad"]), (text, ran)
    assert ("zero-extend" in text) == bool(ran["zero-extend"]), (text, ran)
    folded = ConvSpec.from_module(spd.conv).output_size(tuple(-(-n // s) for n, s in zip((size, size), spd.r)))
    assert ("crop to" in text) == (spd.mode == "inner" and folded != tuple(y.shape[-2:])), text
    assert f"SpaceToDepth(r=(2, 2), order='c rh rw') + {describe(spd.conv)}" in text or stride != 2


def test_the_rewritten_site_of_a_padded_strided_conv_names_its_explicit_pad():
    model = nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.ReLU())
    _, report = rewrite(model.eval(), (1, 3, 32, 32), ["strided_to_spd"], verify=False)
    (site,) = [s for s in report.sites if s.applied]
    assert site.after.startswith("pad(3, 3) + SpaceToDepth("), site.after
