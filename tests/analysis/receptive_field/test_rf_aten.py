"""Receptive fields from the aten operations of one run: any model that runs, not only what torch.fx can trace.

The aten graph must give what the fx graph gives where both exist (same boxes, same exactness), follow the
Python control flow the run took, answer views written through with a hull that holds the gradient's box,
follow the output a key names, and the gradient fallback must never crash.
"""
from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from foldconv import FoldError
from foldconv.analysis import shift_equivariance
from foldconv.analysis.receptive_field import UnsupportedOpError, check_receptive_field, empirical_boxes, receptive_field
from foldconv.analysis.receptive_field.aten import record_aten
from foldconv.models import meta_model


class Unet(nn.Module):
    """Down, up (bilinear), skip concatenation, reflect padding, a transposed conv and a pixel shuffle."""

    def __init__(self):
        super().__init__()
        self.down = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(4), nn.ReLU(inplace=True),
                                  nn.MaxPool2d(2), nn.Conv2d(4, 4, 3, dilation=2, padding=2))
        self.up = nn.ConvTranspose2d(4, 4, 4, stride=2, padding=1)
        self.fuse = nn.Conv2d(8, 4, 3, padding=1)
        self.shuffle = nn.PixelShuffle(2)

    def forward(self, x):
        y = self.down[0](x)
        skip = self.down[2](self.down[1](y))
        z = self.down[4](self.down[3](skip))
        z = self.up(z) + F.interpolate(z, scale_factor=2, mode="bilinear", align_corners=False)
        return self.shuffle(self.fuse(torch.cat([z, skip], 1)))


class ChannelsLast(nn.Module):
    """ConvNeXt's block: a depthwise conv, then LayerNorm and Linear on (N, H, W, C): the linear's rows stay exact."""

    def __init__(self):
        super().__init__()
        self.dw = nn.Conv2d(4, 4, 7, padding=3, groups=4)
        self.norm, self.fc = nn.LayerNorm(4), nn.Linear(4, 8)

    def forward(self, x):
        return self.fc(self.norm(self.dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)


MODELS = {
    "unet": (Unet, (1, 1, 16, 16)),
    "channels_last": (ChannelsLast, (1, 4, 12, 12)),
    "strided_slice_pool": (lambda: nn.Sequential(nn.Conv2d(2, 2, 3, stride=2), nn.AvgPool2d(3, 2, ceil_mode=True), nn.AdaptiveAvgPool2d(2)),
                           (1, 2, 23, 19)),
    "conv1d": (lambda: nn.Sequential(nn.Conv1d(1, 2, 5, dilation=3), nn.ReLU(), nn.Upsample(scale_factor=2)), (1, 1, 30)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_the_aten_graph_gives_what_the_fx_graph_gives(name):
    build, shape = MODELS[name]
    torch.manual_seed(0)
    model = build().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fx, aten = receptive_field(model, shape, trace="fx"), receptive_field(model, shape, trace="aten")
    a, b = fx.output, aten.output
    assert (a.rf, a.jump, a.padding, a.exact, a.aligned, a.shape) == (b.rf, b.jump, b.padding, b.exact, b.aligned, b.shape)
    assert aten.output.op.startswith("aten.") and all(n.op == "input" or "aten." in n.op or n.op == "getitem" for n in aten.nodes.values())
    for index in ((0,) * len(a.positions), tuple(n // 2 for n in a.positions), tuple(n - 1 for n in a.positions)):
        assert fx.box(index=index) == aten.box(index=index)
    assert check_receptive_field(model, shape, report=aten, max_nodes=4).ok


def test_a_meta_model_is_recorded_on_meta_tensors():
    model = meta_model("resnet18")
    gm, _, real = record_aten(model, (1, 3, 64, 64))
    assert not real and all(t.is_meta for t in model.parameters())  # left as it was
    fx, aten = receptive_field(model, (1, 3, 64, 64), trace="fx"), receptive_field(model, (1, 3, 64, 64), trace="aten")
    assert (fx.output.rf, fx.output.jump, fx.output.padding) == (aten.output.rf, aten.output.jump, aten.output.padding)
    assert fx.output.exact and aten.output.exact and fx.output.constant and aten.output.constant


class OddPad(nn.Module):
    """Pads odd sizes to even before a stride-2 conv: a Python branch on the shape, which torch.fx cannot trace."""

    def __init__(self, k: int = 3):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, k, stride=2)

    def forward(self, x):
        if x.shape[-1] % 2:
            x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x)


class Gated(nn.Module):
    """Takes one of two convs by the value of a buffer (read with .item()): data-dependent control flow."""

    def __init__(self, wide: bool):
        super().__init__()
        self.register_buffer("gate", torch.tensor(1.0 if wide else -1.0))
        self.narrow, self.wide = nn.Conv2d(1, 1, 3), nn.Conv2d(1, 1, 5)

    def forward(self, x):
        return self.wide(x) if self.gate.item() > 0 else self.narrow(x)


def test_control_flow_is_followed_as_it_ran():
    with pytest.raises(UnsupportedOpError, match="cannot trace"):
        receptive_field(OddPad(), (1, 1, 9, 9), trace="fx")
    odd, even = receptive_field(OddPad(), (1, 1, 9, 9)), receptive_field(OddPad(), (1, 1, 8, 8))
    assert "aten.constant_pad_nd" in [n.op for n in odd.nodes.values()]
    assert "aten.constant_pad_nd" not in [n.op for n in even.nodes.values()]
    assert odd.output.rf == even.output.rf == (3, 3) and odd.box(index=(3, 3)) == ((6, 8), (6, 8))
    assert check_receptive_field(OddPad(), (1, 1, 9, 9), report=odd).ok
    assert receptive_field(OddPad(k=5), (1, 1, 9, 9)).output.rf == (5, 5)  # the kernel, not a fixed answer
    # a branch on a value: the model runs on real tensors, and the branch it takes decides the field
    assert receptive_field(Gated(True), (1, 1, 8, 8)).output.rf == (5, 5)
    assert receptive_field(Gated(False), (1, 1, 8, 8)).output.rf == (3, 3)
    assert check_receptive_field(Gated(True), (1, 1, 8, 8)).ok


class WrittenView(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, x):
        out = torch.zeros_like(x)
        out[..., 2:] = self.conv(x)[..., :-2]  # a shift by 2, written through a view of a fresh tensor
        return out


def test_a_view_written_through_is_a_hull_that_holds_the_gradient():
    shape = (1, 1, 10, 10)
    report = receptive_field(WrittenView(), shape)
    assert not report.output.exact
    indices = ((0, 3), (4, 5), (9, 9))
    measured = empirical_boxes(WrittenView(), shape, [(None, i) for i in indices], report=report)
    for index, box in zip(indices, measured):
        (r0, r1), (c0, c1) = report.box(index=index)
        (e0, e1), (f0, f1) = box
        assert r0 <= e0 <= e1 <= r1 and c0 <= f0 <= f1 <= c1


class Named(nn.Module):
    def __init__(self):
        super().__init__()
        self.stem, self.head = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 2, 5)

    def forward(self, x):
        features = self.stem(x)
        return {"logits": self.head(features).mean((2, 3)), "features": features}


@pytest.mark.parametrize("trace", ["fx", "aten"])
def test_an_output_key_picks_the_tensor_analysed(trace):
    assert receptive_field(Named(), (1, 1, 12, 12), output="features", trace=trace).output.rf == (3, 3)
    logits = receptive_field(Named(), (1, 1, 12, 12), output="logits", trace=trace).output
    assert logits.rf == (12, 12) and logits.constant and logits.exact
    with pytest.raises(FoldError, match="output='scores'"):
        receptive_field(Named(), (1, 1, 12, 12), output="scores", trace=trace)
    assert shift_equivariance(Named(), (1, 1, 12, 12), output="features", trace=trace).output.period == (1, 1)


class NoGradient(nn.Module):
    """Untraceable, and its output's gradient vanishes everywhere (x - x): nothing to measure."""

    def forward(self, x):
        if x.sum() > 0:
            return (x - x).mean(1, keepdim=True)
        return x


def test_the_gradient_fallback_never_crashes():
    report = receptive_field(NoGradient(), (1, 2, 6, 7), fallback="real", trace="fx")
    assert report.fallback_nodes and report.output.rf == (6, 7) and not report.output.exact
