"""Analytic = empirical: gradient supports on random stacks and on one model per torchvision family;
Luo et al.'s effective receptive field; the empirical fallback for ops without a rule."""
from __future__ import annotations

import copy
import warnings

import numpy as np
import pytest
import torch
import torchvision
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from foldconv import DepthToSpace, SpaceToDepth
from foldconv._validate import conv_output_size, conv_transpose_output_size
from foldconv.analysis.receptive_field import receptive_field
from foldconv.analysis.receptive_field.empirical import (
    check_receptive_field,
    effective_receptive_field,
    empirical_box,
    positive_copy,
)
from helpers import examples, slow_case

# One representative per family, at a small input (2-core CI budget). VGG and AlexNet: the convolutional
# trunk only (their 100M-parameter classifiers only make the copy slow; the trunk is where the geometry is).
# The whole traceable zoo at 224 px runs in scripts/receptive_field.py and benchmarks/receptive_field.py.
FAMILY = [
    ("resnet18", 64, None),
    slow_case("vgg11", 64, "features"),
    slow_case("alexnet", 96, "features"),
    ("mobilenet_v2", 32, None),
    slow_case("mobilenet_v3_small", 32, None),
    slow_case("efficientnet_b0", 32, None),
    slow_case("densenet121", 64, None),
    ("squeezenet1_0", 64, None),
    slow_case("shufflenet_v2_x0_5", 64, None),
    slow_case("regnet_x_400mf", 64, None),
    slow_case("mnasnet0_5", 64, None),
    slow_case("googlenet", 64, None),
    slow_case("convnext_tiny", 64, None),
]


def _widen_stem(model: nn.Module) -> nn.Module:
    """A mutant with the same shapes and a larger field: the first conv with a kernel > 1 becomes a conv
    whose kernel is 2 larger per axis, with 1 more padding (so every output size stays the same)."""
    name, conv = next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d) and max(m.kernel_size) > 1)
    wider = nn.Conv2d(conv.in_channels, conv.out_channels, tuple(k + 2 for k in conv.kernel_size), conv.stride,
                      tuple(p + 1 for p in conv.padding), conv.dilation, conv.groups, conv.bias is not None, device="meta")
    mutant = copy.deepcopy(model).to("meta")  # the mutant is only analysed: shapes, no numbers
    parent, _, leaf = name.rpartition(".")
    setattr(mutant.get_submodule(parent), leaf, wider)
    return mutant


@pytest.mark.claim("RF-2")
@pytest.mark.parametrize("name,size,part", FAMILY, ids=[getattr(f, "id", None) or f[0] for f in FAMILY])
def test_analytic_equals_empirical_on_torchvision_family(name, size, part):
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # googlenet's init notice
        model = torchvision.models.get_model(name, weights=None)
    if part:
        model = getattr(model, part)
    shape = (1, 3, size, size)
    check = check_receptive_field(model, shape, max_nodes=6)
    assert len(check.rows) >= 9 and all(row.analytic is not None for row in check.rows)
    # the analytic boxes (pull-back of the traced graph) against the gradient supports measured on a copy
    assert [row.analytic for row in check.rows] == [row.empirical for row in check.rows], check.mismatches
    # mutation: the analysis of a model whose stem is wider (same shapes, larger field) must disagree
    wrong = receptive_field(_widen_stem(model), shape)
    assert sum(wrong.box(row.node, row.index) != row.empirical for row in check.rows) >= 1


def _layers(draw, size, channels):
    layers, c, n = [], 1, size
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["conv", "conv", "maxpool", "avgpool", "tconv", "shuffle", "unshuffle", "upsample", "d2s"]))
        if kind == "conv":
            k, s, d = draw(st.integers(1, 5)), draw(st.integers(1, 3)), draw(st.integers(1, 2))
            p = draw(st.integers(0, (d * (k - 1)) // 2 + 1))
            mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "circular"])) if p and p < n else "zeros"
            layer, c_out = nn.Conv2d(c, channels, k, s, p, d, padding_mode=mode), channels
            (n_out,) = conv_output_size((n,), (k,), (s,), (p,), (d,))
        elif kind in ("maxpool", "avgpool"):
            k = draw(st.integers(2, 3))
            s, p, ceil = draw(st.integers(1, 3)), draw(st.integers(0, k // 2)), draw(st.booleans())
            layer = nn.MaxPool2d(k, s, p, ceil_mode=ceil) if kind == "maxpool" else nn.AvgPool2d(k, s, p, ceil_mode=ceil)
            c_out = c
            n_out = -(-(n + 2 * p - k) // s) + 1 if ceil else (n + 2 * p - k) // s + 1
            if ceil and (n_out - 1) * s >= n + p:
                n_out -= 1
        elif kind == "tconv":
            k, s = draw(st.integers(2, 4)), draw(st.integers(1, 3))
            p = draw(st.integers(0, k - 1))
            layer, c_out = nn.ConvTranspose2d(c, channels, k, s, p), channels
            (n_out,) = conv_transpose_output_size((n,), (k,), (s,), (p,), (1,), (0,))
        elif kind in ("shuffle", "d2s"):
            if c % 4:
                layers.append(nn.Conv2d(c, 4, 1))
                c = 4
            layer = nn.PixelShuffle(2) if kind == "shuffle" else DepthToSpace(2, draw(st.sampled_from(["crd", "dcr"])))
            c_out, n_out = c // 4, 2 * n
        elif kind == "unshuffle":
            if n % 2:
                continue
            layer = nn.PixelUnshuffle(2) if draw(st.booleans()) else SpaceToDepth(2)
            c_out, n_out = 4 * c, n // 2
        else:
            mode = draw(st.sampled_from(["nearest", "bilinear"]))
            layer, c_out, n_out = nn.Upsample(scale_factor=2, mode=mode), c, 2 * n
        if n_out < 1 or n_out > 64:
            continue
        layers.append(layer)
        c, n = c_out, n_out
        if kind == "unshuffle":
            # the analysis is channel-blind (a unit's box is the hull over the node's channels); a later
            # depth-to-space that picks one channel per sub-pixel would undo the unshuffle exactly and see
            # less than that hull. A channel-mixing conv in between is what real networks have.
            layers.append(nn.Conv2d(c, c, 1))
    layers.append(nn.Conv2d(c, 2, 1))
    return nn.Sequential(*layers)


@st.composite
def stacks(draw):
    size = draw(st.integers(6, 20))
    return draw(st.just(size)), _layers(draw, size, 4)


@pytest.mark.claim("RF-2", "RF-4")
@settings(max_examples=examples(40))
@given(stacks())
def test_analytic_equals_empirical_on_random_stacks(case):
    size, net = case
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        report = receptive_field(net, (1, 1, size, size))
        nodes = [n for n in report.nodes if n != "input" and report.nodes[n].op != "input"]
        check = check_receptive_field(net, (1, 1, size, size), nodes=nodes, report=report)
    assert check.ok, (net, check.mismatches)


def test_max_pool_support_needs_the_average_pool_substitute():
    net = nn.Sequential(nn.Conv2d(1, 1, 3, padding=1), nn.MaxPool2d(4))
    # the real max pool passes gradient to one pixel per window: its support is smaller than the window
    model = positive_copy(net)
    x = torch.rand(1, 1, 16, 16, dtype=torch.float64, requires_grad=True)
    model(x)[0, 0, 1, 1].backward()
    assert int((x.grad != 0).sum()) <= 9 < 36
    # the substitute sees the full 6x6 window (4x4 pool of 3x3 convs)
    assert empirical_box(net, (1, 1, 16, 16), index=(1, 1)) == ((3, 8), (3, 8)) == receptive_field(net, (1, 1, 16, 16)).box(index=(1, 1))


@pytest.mark.claim("RF-6")
def test_effective_receptive_field_is_inside_the_box_and_grows_like_sqrt_depth():
    spreads, sizes = [], []
    for depth in (4, 16):
        torch.manual_seed(0)
        net = nn.Sequential(*[nn.Conv2d(4, 4, 3, padding=1) for _ in range(depth)])
        shape = (1, 4, 41, 41)
        erf = effective_receptive_field(net, shape, samples=6)
        (h0, h1), (w0, w1) = receptive_field(net, shape).box()
        outside = erf.copy()
        outside[h0:h1 + 1, w0:w1 + 1] = 0
        assert not outside.any() and np.count_nonzero(erf) == (h1 - h0 + 1) * (w1 - w0 + 1)
        line = erf.sum(0) / erf.sum()
        x = np.arange(41)
        mu = (line * x).sum()
        spreads.append(float(np.sqrt((line * (x - mu) ** 2).sum())))
        sizes.append(h1 - h0)
    assert sizes[1] / sizes[0] == 4  # RF - 1 grows linearly with depth
    assert spreads[1] / spreads[0] < 3  # the ERF's spread grows much slower (sqrt(4) = 2 in theory)
    assert spreads[1] < sizes[1] / 4


class Rolled(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        return self.b(torch.diff(self.a(x), dim=-1))


@pytest.mark.claim("RF-7")
def test_empirical_fallback_for_an_op_without_rule():
    report = receptive_field(Rolled(), (1, 1, 16, 16), fallback="real")
    assert report.fallback_nodes == ("diff",)
    diff = report["diff"]
    # diff along w: unit w reads conv pixels w and w+1, i.e. input [w-1, w+2]; h is untouched
    assert (diff.rf, diff.padding) == ((3, 4), (1, 1)) and not diff.exact
    assert report.output.rf == (5, 6) and report.output.padding == (2, 2)
    assert report.box(index=(8, 8)) == empirical_box(Rolled(), (1, 1, 16, 16), index=(8, 8)) == ((6, 10), (6, 11))


@pytest.mark.claim("RF-7")
def test_empirical_fallback_for_an_untraceable_model():
    class DataDependent(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 5, padding=2)

        def forward(self, x):
            return self.conv(x) if x.sum() > 0 else -self.conv(x)

    report = receptive_field(DataDependent(), (1, 1, 16, 16), fallback="real")
    assert report.output.rf == (5, 5) and report.output.padding == (2, 2)


def test_a_model_on_meta_is_measured_with_neutral_statistics_and_other_meta_buffers_are_refused():
    """Normalisation statistics on the meta device become mean 0 / variance 1 (they change no dependency), so a
    meta-built model is measured like the same model built on the CPU; a buffer whose values matter (a mask)
    is a FoldError naming it, not a device-mismatch traceback from inside torch."""
    from foldconv.errors import FoldError

    def net():
        return nn.Sequential(nn.Conv2d(2, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 1, 3, stride=2))

    with torch.device("meta"):
        meta = net()
    cpu = net()
    x = torch.rand(1, 2, 12, 12, dtype=torch.float64)
    a, b = positive_copy(meta), positive_copy(cpu)
    assert all(not t.is_meta for t in a.buffers())
    assert torch.equal(a(x), b(x))
    assert empirical_box(meta, (1, 2, 12, 12), index=(1, 1)) == empirical_box(cpu, (1, 2, 12, 12), index=(1, 1))

    class Masked(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 1, 3)
            self.register_buffer("mask", torch.ones(1, 1, 6, 6))

        def forward(self, x):
            return self.conv(x) * self.mask

    with torch.device("meta"):
        masked = Masked()
    with pytest.raises(FoldError, match="'mask' is on the meta device"):
        positive_copy(masked)
