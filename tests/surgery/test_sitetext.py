"""How a site reads in the rewrite report: a replacement made of several layers names each of them."""
from __future__ import annotations

from torch import nn

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
