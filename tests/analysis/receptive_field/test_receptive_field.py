"""Analytic receptive fields: published values, recurrences, layout ops, merges, folding, errors."""
from __future__ import annotations

import warnings
from fractions import Fraction

import pytest
import torch
from torch import nn

from foldconv import DepthToSpace, FoldError, SpaceToDepth
from foldconv.analysis.receptive_field import RFAlignmentWarning, UnsupportedOpError, receptive_field
from foldconv.analysis.receptive_field.fold import folded_receptive_field
from foldconv.models import meta_model


# Araujo, Norris & Sim (Distill 2019), RECEPTIVE_FIELD_TABLE.md: vgg_16 pool5 = 212 / 32 / 90.
# pool1..pool4 follow from the same recurrences (TF-slim 'SAME' 3x3 convs = padding 1; 'VALID' 2x2 pools).
@pytest.fixture(scope="module")
def vgg16_report():
    return receptive_field(meta_model("vgg16"), (1, 3, 224, 224))


VGG16_ENDPOINTS = {
    "features_4": (6, 2, 2),
    "features_9": (16, 4, 6),
    "features_16": (44, 8, 18),
    "features_23": (100, 16, 42),
    "features_30": (212, 32, 90),  # pool5: the table's row
}


@pytest.mark.claim("RF-1")
@pytest.mark.parametrize("name,expected", sorted(VGG16_ENDPOINTS.items()))
def test_vgg16_endpoints_match_araujo_table(vgg16_report, name, expected):
    node = vgg16_report[name]
    assert node.op == "MaxPool2d"
    for axis in node.axes:
        assert (axis.rf, axis.jump, axis.padding) == expected
        assert axis.aligned and axis.exact


@pytest.mark.claim("RF-1")
def test_vgg16_pool5_box_is_the_araujo_box(vgg16_report):
    report = vgg16_report
    # feature i of pool5 reads [32 i - 90, 32 i - 90 + 211]
    assert report.box("features_30", (0, 6), clip=False) == ((-90, 121), (102, 313))
    assert report.box("features_30", (0, 6)) == ((0, 121), (102, 223))


def test_araujo_recurrence_for_a_dilated_strided_stack():
    net = nn.Sequential(nn.Conv1d(1, 1, 5, stride=2, padding=2), nn.Conv1d(1, 1, 3, dilation=3, padding=1), nn.AvgPool1d(3, 2, 1, ceil_mode=True))
    out = receptive_field(net, (1, 1, 64)).output.axes[0]
    # r = 1 + 4*1 = 5, j = 2, P = 2; then k' = 7: r = 5 + 6*2 = 17, P = 2 + 1*2 = 4; then pool: r = 17 + 2*2 = 21, j = 4, P = 4 + 2 = 6
    assert (out.rf, out.jump, out.padding) == (21, 4, 6)


def test_affine_summary_equals_exact_pullback_everywhere():
    net = nn.Sequential(nn.Conv2d(1, 2, 7, 2, 3), nn.MaxPool2d(3, 2, 1), nn.Conv2d(2, 2, 3, 1, 1), nn.Conv2d(2, 2, 3, 2, 1))
    report = receptive_field(net, (1, 1, 40, 40))
    for name, node in report.nodes.items():
        h = node.shape[2]
        for i in range(h):
            j = node.axes[0]
            lo = i * int(j.jump) - j.padding
            assert report.box(name, (i, 0), clip=False)[0] == (lo, lo + j.rf - 1)


@pytest.mark.claim("RF-4")
def test_space_to_depth_multiplies_and_depth_to_space_divides_the_jump():
    net = nn.Sequential(SpaceToDepth(4), nn.Conv2d(16, 16, 3, padding=1), DepthToSpace(2))
    report = receptive_field(net, (1, 1, 32, 32))
    s2d, conv, d2s = list(report.nodes.values())[1:]
    assert (s2d.axes[0].rf, s2d.axes[0].jump, s2d.axes[0].padding) == (4, 4, 0)
    assert (conv.axes[0].rf, conv.axes[0].jump, conv.axes[0].padding) == (12, 4, 4)
    assert d2s.axes[0].jump == Fraction(2)  # 4 / 2
    # but pixels 2m and 2m+1 read the same conv pixel m: boxes repeat in pairs, so not the affine form
    assert not d2s.aligned
    assert report.box(list(report.nodes)[-1], (4, 4), clip=False) == report.box(list(report.nodes)[-1], (5, 5), clip=False) == ((4, 15), (4, 15))


@pytest.mark.claim("RF-4")
def test_pixel_shuffle_and_transposed_conv_give_fractional_jumps():
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PixelShuffle(2), nn.ConvTranspose2d(1, 1, 4, 2, 1))
    report = receptive_field(net, (1, 1, 8, 8))
    _, conv, shuffle, tconv = report.nodes.values()
    assert shuffle.jump == (Fraction(1, 2),) * 2 and not shuffle.aligned
    assert tconv.jump == (Fraction(1, 4),) * 2 and not tconv.aligned
    # shuffle output o reads conv output o // 2, i.e. input [o//2 - 1, o//2 + 1]
    assert report.box(list(report.nodes)[2], (5, 0), clip=False)[0] == (1, 3)


@pytest.mark.claim("RF-4")
def test_nearest_upsample_then_block_aligned_conv_returns_to_the_grid():
    net = nn.Sequential(nn.Upsample(scale_factor=4, mode="nearest"), nn.Conv2d(1, 1, 8, stride=4, padding=2))
    report = receptive_field(net, (1, 1, 8, 8))
    up, conv = list(report.nodes.values())[1:]
    assert up.jump[0] == Fraction(1, 4) and not up.aligned
    # output o reads upsampled [4o-2, 4o+5] -> input [o-1, o+1]
    assert conv.aligned and (conv.axes[0].rf, conv.axes[0].jump, conv.axes[0].padding) == (3, 1, 1)


class Focus(nn.Module):
    """YOLOv5's Focus: space-to-depth by slicing, then a conv."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(12, 8, 3, padding=1)

    def forward(self, x):
        x = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
        return self.conv(x)


class PhaseSum(nn.Module):
    """Focus's four sub-pixel phases added instead of stacked: every unit mixes pixels of different centres."""

    def forward(self, x):
        return x[..., ::2, ::2] + x[..., 1::2, ::2] + x[..., ::2, 1::2] + x[..., 1::2, 1::2]


@pytest.mark.claim("RF-4", "RF-5")
@pytest.mark.parametrize("trace", ["fx", "aten"])
def test_focus_slicing_has_space_to_depth_geometry_and_does_not_warn(trace):
    # stacking the phases of one block as channels is what a fold does: no misalignment to warn about
    with warnings.catch_warnings():
        warnings.simplefilter("error", RFAlignmentWarning)
        report = receptive_field(Focus(), (1, 3, 16, 16), trace=trace)
    assert report.warnings == ()
    cat = report[[n for n in report.nodes if "cat" in n][0]]
    assert (cat.rf, cat.jump, cat.padding) == ((2, 2), (2, 2), (0, 0))
    # the conv after it: a 6x6 conv with stride 2 and padding 2, as the fold theorem says
    assert (report.output.rf, report.output.jump, report.output.padding) == ((6, 6), (2, 2), (2, 2))


@pytest.mark.claim("RF-5")
def test_misaligned_paths_warn_naming_each_path_box_and_centre():
    # mutation of the Focus stem: the same phases added, not stacked, are paths with different centres
    with pytest.warns(RFAlignmentWarning, match="different centres") as caught:
        report = receptive_field(PhaseSum(), (1, 3, 16, 16))
    message = str(caught[0].message)
    assert "box jump 2" in message and "[0, 0] (centre 0)" in message and "[1, 1] (centre 1)" in message, message
    assert list(report.warnings) == [str(w.message) for w in caught]  # the report keeps what was raised


@pytest.mark.claim("RF-5")
def test_resnet_shortcuts_are_aligned_and_union_is_taken():
    with warnings.catch_warnings():
        warnings.simplefilter("error", RFAlignmentWarning)
        report = receptive_field(meta_model("resnet18"), (1, 3, 64, 64))
    # layer2's first block: main path conv3x3 s2 + conv3x3, shortcut conv1x1 s2; the add takes the larger
    add = report["add_2"]
    main = report["layer2_0_bn2"]
    short = report["layer2_0_downsample_1"]
    assert add.rf == main.rf and add.padding == main.padding and add.rf > short.rf


@pytest.mark.claim("RF-5")
def test_misaligned_residual_warns():
    class Shifted(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Conv2d(1, 1, 3)  # o reads [o, o+2], centre o+1
            self.b = nn.Conv2d(1, 1, 1)  # o reads [o, o], centre o

        def forward(self, x):
            return self.a(x) + self.b(x)[..., :-2, :-2]

    with pytest.warns(RFAlignmentWarning):
        report = receptive_field(Shifted(), (1, 1, 10, 10))
    assert report.output.rf == (3, 3) and report.output.padding == (0, 0)


def test_global_pool_and_linear_read_the_whole_input():
    report = receptive_field(meta_model("resnet18"), (1, 3, 64, 64))
    out = report.output
    assert all(a.constant and a.exact for a in out.axes)
    assert report.box() == ((0, 63), (0, 63))
    flat = report["flatten"]
    assert flat.exact  # flattening a 1x1 map loses nothing


@pytest.mark.claim("RF-3")
def test_motivating_fold_48_vs_3():
    table = folded_receptive_field(nn.Conv2d(256, 8, 3, padding=1), 16, input_size=(4, 4))
    original, folded, back, d2s = table.rows
    assert original.rf == (3, 3) and original.padding == (1, 1)
    assert folded.kernel == (48, 48) and folded.rf == (48, 48) and folded.jump == (16, 16) and folded.padding == (16, 16)
    assert back.rf == (3, 3) and back.jump == (1, 1) and back.padding == (1, 1) and back.aligned
    assert d2s.jump == (Fraction(1, 16),) * 2 and not d2s.aligned
    assert table.ok and bool(table)


@pytest.mark.claim("RF-3")
@pytest.mark.parametrize("order", ["crd", "dcr", "focus"])
@pytest.mark.parametrize("k,s,p,r", [(3, 1, 1, 2), (5, 2, 2, 2), (1, 1, 0, 4), (3, 2, 0, 3)])
def test_folded_conv_in_input_pixels_is_the_original(order, k, s, p, r):
    conv = nn.Conv2d(2 * r * r, 3, k, stride=s, padding=p)
    table = folded_receptive_field(conv, r, order=order, input_size=(9, 9))
    original, folded, back, _ = table.rows
    assert folded.rf == (r * k,) * 2 and folded.jump == (r * s,) * 2
    assert (back.rf, back.jump, back.padding) == (original.rf, original.jump, original.padding)


@pytest.mark.claim("RF-3")
def test_folded_receptive_field_per_axis_factors_and_1d():
    table = folded_receptive_field(nn.Conv2d(8, 2, 3, padding=1), (4, 2), input_size=(5, 6))
    assert table.folded.rf == (12, 6) and table.folded.jump == (4, 2) and table.ok
    line = folded_receptive_field(nn.Conv1d(4, 2, 5, stride=2), 4, input_size=11)
    assert line.original.rf == (5,) and line.folded.rf == (20,) and line.unfolded.rf == (5,) and line.ok


@pytest.mark.claim("RF-7")
def test_unknown_op_names_the_op():
    class Rolled(nn.Module):
        def forward(self, x):
            return torch.diff(x, dim=-1)

    with pytest.raises(UnsupportedOpError, match="op='diff'") as info:
        receptive_field(Rolled(), (1, 1, 8, 8), trace="fx")
    assert isinstance(info.value, FoldError) and isinstance(info.value, ValueError)
    # by default the model's aten operations answer where its fx ops have no rule: diff is a slice minus a slice
    with pytest.warns(RFAlignmentWarning):
        report = receptive_field(Rolled(), (1, 1, 8, 8))
    assert report.output.rf == (1, 2) and report.output.exact and report.box(index=(3, 6)) == ((3, 3), (6, 7))


@pytest.mark.claim("RF-7")
def test_untraceable_model_is_a_clear_error():
    class DataDependent(nn.Module):
        def forward(self, x):
            if x.sum() > 0:
                return x
            return -x

    with pytest.raises(UnsupportedOpError, match="cannot trace"):
        receptive_field(DataDependent(), (1, 1, 8, 8), trace="fx")


@pytest.mark.parametrize("shape", [(1, 3), (1, 3, 0, 4), (1, 3, 4.0, 4), "1,3,4,4"])
def test_bad_input_shape(shape):
    with pytest.raises(FoldError, match="input_shape"):
        receptive_field(nn.Conv2d(3, 1, 1), shape)


def test_bad_fallback_and_index():
    with pytest.raises(FoldError, match="fallback"):
        receptive_field(nn.Conv2d(3, 1, 1), (1, 3, 4, 4), fallback="guess")
    report = receptive_field(nn.Conv2d(3, 1, 1), (1, 3, 4, 4))
    with pytest.raises(FoldError, match="index"):
        report.box(index=(4, 0))
    with pytest.raises(FoldError, match="node"):
        report.box("nope")


def test_einops_rearrange_is_understood():
    from einops.layers.torch import Rearrange

    net = nn.Sequential(Rearrange("b c (h h2) (w w2) -> b (c h2 w2) h w", h2=2, w2=2), nn.Conv2d(4, 4, 3, padding=1),
                        Rearrange("b (c h2 w2) h w -> b c (h h2) (w w2)", h2=2, w2=2))
    report = receptive_field(net, (1, 1, 8, 8))
    s2d, conv, d2s = list(report.nodes.values())[1:]
    assert (s2d.rf, s2d.jump) == ((2, 2), (2, 2))
    assert (conv.rf, conv.padding) == ((6, 6), (2, 2))
    assert d2s.jump == (1, 1) and d2s.rf == (6, 6)


def test_a_float64_model_is_analysed_like_its_float32_twin():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 3))
    expected = receptive_field(net, (1, 3, 17, 17)).output
    assert receptive_field(net.double(), (1, 3, 17, 17)).output == expected


class FoldRoundTrip(nn.Module):
    """A fold's round trip (space-to-depth, conv, depth-to-space) beside the identity: equal strides, boxes that vary."""

    def __init__(self):
        super().__init__()
        self.down, self.conv, self.up = nn.PixelUnshuffle(2), nn.Conv2d(4, 4, 3, padding=1), nn.PixelShuffle(2)

    def forward(self, x):
        return x + self.up(self.conv(self.down(x)))


@pytest.mark.claim("RF-5")
def test_a_varying_field_of_equal_strides_is_not_called_different_strides():
    with pytest.warns(RFAlignmentWarning) as caught:
        report = receptive_field(FoldRoundTrip(), (1, 1, 16, 16))
    messages = [str(w.message) for w in caught]
    assert len(messages) == 2 and not any("different effective strides" in m for m in messages), messages
    assert all("of the same effective stride (1)" in m and "the largest" in m for m in messages)
    assert messages[0].split("axis ")[1][0] == "h" and messages[1].split("axis ")[1][0] == "w"
    # the field does vary: the units of one 2x2 block read different boxes
    assert report.box(index=(0, 0), clip=False) != tuple((lo + 1, hi + 1) for lo, hi in report.box(index=(1, 1), clip=False))
    # mutation: an upsampled stride-2 path against the stride-1 one says which strides differ
    mixed = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding=1))
    with pytest.warns(RFAlignmentWarning) as caught_mixed:
        receptive_field(SkipToCoarse(mixed), (1, 1, 16, 16))
    assert [str(w.message).split(": its")[0].split("merges ")[1] for w in caught_mixed] == [
        f"paths with different effective strides on axis {a} (1, 2)" for a in "hw"]


class SkipToCoarse(nn.Module):
    """A stride-2 path added to a half-resolution crop of the input: two paths of different strides (2 and 1)."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def forward(self, x):
        return self.path(x) + x[..., :8, :8]
