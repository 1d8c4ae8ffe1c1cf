"""YOLOv5's Focus, written out exactly as in YOLOv5, in all 24 slice orders: one 6x6 stride-2 conv each, exactly."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from foldconv import Verdict
from foldconv.surgery import rewrite
from helpers import integer_tensor


def autopad(k, p=None):  # YOLOv5 models/common.py
    if p is None:
        p = k // 2 if isinstance(k, int) else [x // 2 for x in k]
    return p


class Conv(nn.Module):  # YOLOv5 models/common.py
    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, autopad(k, p), groups=g, bias=False)
        self.bn = nn.BatchNorm2d(c2)
        self.act = nn.SiLU() if act is True else (act if isinstance(act, nn.Module) else nn.Identity())

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class Focus(nn.Module):  # YOLOv5 models/common.py
    def __init__(self, c1, c2, k=1, s=1, p=None, g=1, act=True):
        super().__init__()
        self.conv = Conv(c1 * 4, c2, k, s, p, g, act)

    def forward(self, x):  # x(b,c,w,h) -> y(b,4c,w/2,h/2)
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


OFFSETS = ((0, 0), (1, 0), (0, 1), (1, 1))
ORDERS = list(itertools.permutations(OFFSETS))


class SlicedConv(nn.Module):
    """Focus with the four slices in a given order, a bare conv after the cat (polynomial: exact verdicts)."""

    def __init__(self, order, c1=2, c2=3):
        super().__init__()
        self.order = order
        self.conv = nn.Conv2d(4 * c1, c2, 3, padding=1)

    def forward(self, x):
        return self.conv(torch.cat([x[..., a::2, b::2] for a, b in self.order], 1))


class AllOrders(nn.Module):
    def __init__(self):
        super().__init__()
        self.branches = nn.ModuleList(SlicedConv(order) for order in ORDERS)

    def forward(self, x):
        return torch.cat([branch(x) for branch in self.branches], 1)


@pytest.mark.claim("SURGERY-4")
def test_yolov5_focus_stem_becomes_one_6x6_stride_2_conv():
    model = nn.Sequential(Focus(3, 8, 3), Conv(8, 8, 3, 2)).eval()
    new, report = rewrite(model, (1, 3, 16, 16), ["focus_to_conv"])
    site, = report.sites
    assert site.pattern == "slice+cat+Conv2d (Focus)" and site.location == "0.conv.conv"
    assert site.before == "4 slices x[..., a::2, b::2] + cat + Conv2d(12->8, k=(3, 3), s=(1, 1), p=(1, 1))"
    assert site.after == "Conv2d(3->8, k=(6, 6), s=(2, 2), p=(2, 2))"
    assert site.exact and site.verdict is Verdict.EQUIVALENT and report.ok
    assert (site.params_before, site.macs_before) == (site.params_after, site.macs_after)
    assert isinstance(new, torch.fx.GraphModule) and not any(n.target is torch.cat for n in new.graph.nodes)
    x = torch.randn(2, 3, 16, 16)
    assert torch.allclose(new(x), model(x), atol=1e-5)


@pytest.mark.claim("SURGERY-4")
@pytest.mark.slow  # a whole model of many sites verified exactly: seconds; `make test` runs it
def test_every_one_of_the_24_slice_orders_is_rewritten_exactly():
    model = AllOrders()
    new, report = rewrite(model, (1, 2, 8, 8), ["focus_to_conv"])
    assert len(report.sites) == 24 and report.applied == 24
    assert all(s.exact and s.verdict is Verdict.EQUIVALENT for s in report.sites)
    assert report.ok and report.verification.exact
    assert all(new.get_submodule(f"branches.{i}.conv").kernel_size == (6, 6) for i in range(24))
    x = integer_tensor((1, 2, 8, 8))
    assert torch.equal(new.double()(x), model.double()(x))


def test_a_slice_set_that_is_not_a_full_block_is_not_a_focus():
    class Three(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(8, 2, 1)

        def forward(self, x):  # one block offset repeated: not a space-to-depth
            return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., ::2, ::2]], 1))

    _, report = rewrite(Three(), (1, 2, 4, 4), ["focus_to_conv"])
    assert report.sites == () and report.ok
