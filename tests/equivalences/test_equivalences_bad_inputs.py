"""Bad-input catalogue of foldconv.equivalences: every case is a FoldError naming the parameter (issue 10)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv import ConvSpec, DepthToSpace, SpaceToDepth
from foldconv.equivalences import (
    DenseOperator,
    SpaceToDepthConv,
    SubPixelConv,
    axis_selection,
    axw_factors,
    conv_to_focus,
    dense_operator,
    focus_to_conv,
    icnr_,
    icnr_weight,
    layout_permutation,
    offset_tensor,
    shift_violations,
    spd_alignment,
    spd_to_strided,
    strided_to_spd,
    subpixel_to_transposed,
    transposed_to_subpixel,
    upsample_conv_to_subpixel,
)
from helpers import raises_fold_error

SPEC = ConvSpec.make(2, 1, 1, 2, stride=2)
CONV = nn.Conv2d(4, 1, 1)


def _op() -> DenseOperator:
    return dense_operator(nn.Conv2d(1, 1, 3), (1, 1, 4, 4))


def _varying_bias() -> nn.Module:
    conv = nn.Conv2d(2, 8, 3, padding=1)
    with torch.no_grad():
        conv.bias.copy_(torch.arange(8.0))
    return conv


CASES = [
    # space_to_depth
    ("alignment spec", lambda: spd_alignment("spec", (8, 8)), "spec"),
    ("alignment empty", lambda: spd_alignment(ConvSpec.make(2, 1, 1, 5), (3, 3)), "input_size"),
    ("alignment axes", lambda: spd_alignment(ConvSpec.make(1, 1, 1, 3), (8, 8)), "input_size"),
    ("alignment float", lambda: spd_alignment(SPEC, (8.5, 8)), "input_size"),
    ("SpaceToDepthConv mode", lambda: SpaceToDepthConv(CONV, (2, 2), "crd", source=SPEC, mode="magic"), "mode"),
    ("SpaceToDepthConv conv", lambda: SpaceToDepthConv(nn.Linear(2, 2), 2, "crd", source=SPEC, mode="inner"), "conv"),
    ("SpaceToDepthConv r", lambda: SpaceToDepthConv(CONV, (2, 2, 2), "crd", source=SPEC, mode="inner"), "r"),
    ("SpaceToDepthConv source", lambda: SpaceToDepthConv(CONV, 2, "crd", source="spec", mode="inner"), "source"),
    ("SpaceToDepthConv x", lambda: strided_to_spd(nn.Conv2d(1, 1, 2, stride=2))([1.0]), "x"),
    ("SpaceToDepthConv channels", lambda: strided_to_spd(nn.Conv2d(2, 2, 3, stride=2))(torch.zeros(1, 3, 8, 8)), "x.shape"),
    (
        "SpaceToDepthConv circular wraps twice",
        lambda: strided_to_spd(nn.Conv2d(2, 2, 3, stride=2, padding=3, padding_mode="circular"))(torch.zeros(1, 2, 2, 2)),
        "input_size",
    ),
    (
        "SpaceToDepthConv reflect too wide",
        lambda: strided_to_spd(nn.Conv2d(2, 2, 3, stride=2, padding=2, padding_mode="reflect"))(torch.zeros(1, 2, 2, 2)),
        "input_size",
    ),
    ("strided_to_spd conv", lambda: strided_to_spd(nn.Linear(2, 2)), "conv"),
    ("strided_to_spd padding word", lambda: strided_to_spd(nn.Conv2d(1, 1, 3, stride=2), padding="sideways"), "padding"),
    ("strided_to_spd inner", lambda: strided_to_spd(nn.Conv2d(1, 1, 3, stride=2, padding=1), padding="inner"), "padding"),
    ("strided_to_spd order", lambda: strided_to_spd(nn.Conv2d(1, 1, 3, stride=2), order="c rh"), "order"),
    ("strided_to_spd small input", lambda: strided_to_spd(nn.Conv2d(1, 1, 5, stride=2))(torch.zeros(1, 1, 3, 3)), "input_size"),
    ("strided_to_spd huge dilation", lambda: strided_to_spd(nn.Conv2d(1, 1, 3, stride=2, dilation=10**6)), "dilation"),
    ("spd_to_strided r", lambda: spd_to_strided(nn.Conv2d(4, 1, 3)), "r"),
    ("spd_to_strided order of parts", lambda: spd_to_strided(nn.Sequential(nn.Conv2d(4, 1, 3), SpaceToDepth(2))), "module"),
    ("spd_to_strided r twice", lambda: spd_to_strided(nn.Sequential(SpaceToDepth(2), nn.Conv2d(4, 1, 3)), 2), "r"),
    ("spd_to_strided r 0", lambda: spd_to_strided(nn.Conv2d(4, 1, 3), 0), "r"),
    ("spd_to_strided module", lambda: spd_to_strided(nn.ReLU(), 2), "module"),
    ("conv_to_focus stride", lambda: conv_to_focus(nn.Conv2d(1, 1, 3)), "conv.stride"),
    ("conv_to_focus Linear", lambda: conv_to_focus(nn.Linear(2, 2)), "conv"),
    ("focus_to_conv module", lambda: focus_to_conv(nn.Linear(2, 2)), "module"),
    ("focus_to_conv channels", lambda: focus_to_conv(nn.Conv2d(6, 2, 3)), "in_channels"),
    # subpixel
    ("SubPixelConv conv", lambda: SubPixelConv(nn.Linear(2, 2), 2), "conv"),
    ("SubPixelConv out_channels", lambda: SubPixelConv(nn.Conv2d(2, 6, 3), 2), "conv.out_channels"),
    ("SubPixelConv crop negative", lambda: SubPixelConv(nn.Conv2d(2, 8, 3), 2, crop=((1, -1), (0, 0))), "crop"),
    ("SubPixelConv crop axes", lambda: SubPixelConv(nn.Conv2d(2, 8, 3), 2, crop=((1, 1),)), "crop"),
    ("SubPixelConv input_pad float", lambda: SubPixelConv(nn.Conv2d(2, 8, 3), 2, input_pad=((1.5, 0), (0, 0))), "input_pad"),
    ("SubPixelConv forward channels", lambda: SubPixelConv(nn.Conv2d(2, 8, 3), 2)(torch.zeros(1, 3, 8, 8)), "x.shape"),
    ("SubPixelConv forward small", lambda: SubPixelConv(nn.Conv2d(2, 8, 5), 2)(torch.zeros(1, 2, 2, 2)), "input_size"),
    ("SubPixelConv r 0", lambda: SubPixelConv(nn.Conv2d(2, 8, 3), 0), "r"),
    ("SubPixelConv order", lambda: SubPixelConv(nn.Conv2d(2, 8, 3), 2, "c rw"), "order"),
    ("to_transposed crop", lambda: subpixel_to_transposed(SubPixelConv(nn.Conv2d(2, 8, 3), 2, crop=((1, 0), (0, 0)))), "module.crop"),
    ("to_transposed parts", lambda: subpixel_to_transposed(nn.Sequential(DepthToSpace(2), nn.Conv2d(2, 8, 3))), "module"),
    ("to_transposed Linear", lambda: subpixel_to_transposed(nn.Linear(2, 2), 2), "module"),
    ("to_transposed r", lambda: subpixel_to_transposed(nn.Conv2d(2, 8, 3)), "r"),
    ("to_transposed stride", lambda: subpixel_to_transposed(nn.Conv2d(2, 8, 3, stride=2), 2), "conv.stride"),
    ("to_transposed mode", lambda: subpixel_to_transposed(nn.Conv2d(2, 8, 3, padding=1, padding_mode="circular"), 2), "conv.padding_mode"),
    ("to_transposed padding", lambda: subpixel_to_transposed(nn.Conv2d(2, 8, 3, padding=3), 2), "conv.padding"),
    ("to_transposed out_channels", lambda: subpixel_to_transposed(nn.Conv2d(2, 6, 3), 2), "conv.out_channels"),
    ("to_transposed bias", lambda: subpixel_to_transposed(_varying_bias(), 2), "conv.bias"),
    ("to_transposed sequential dims", lambda: subpixel_to_transposed(nn.Sequential(nn.Conv1d(2, 8, 3), DepthToSpace(2))), "r"),
    ("to_subpixel tconv", lambda: transposed_to_subpixel(nn.Conv2d(2, 2, 3)), "tconv"),
    ("to_subpixel order", lambda: transposed_to_subpixel(nn.ConvTranspose2d(2, 2, 4, stride=2), order="bad"), "order"),
    ("icnr_weight weight", lambda: icnr_weight("w", 2), "weight"),
    ("icnr_weight r", lambda: icnr_weight(torch.zeros(2, 1, 3, 3), 0), "r"),
    ("icnr_ shape", lambda: icnr_(torch.zeros(6, 1, 3, 3), 2), "weight.shape"),
    ("icnr_ weight", lambda: icnr_(torch.zeros(6, 3), 2), "weight"),
    ("upsample conv", lambda: upsample_conv_to_subpixel(nn.Linear(2, 2), 2), "conv"),
    ("upsample stride", lambda: upsample_conv_to_subpixel(nn.Conv2d(2, 2, 3, stride=2), 2), "conv.stride"),
    ("upsample mode", lambda: upsample_conv_to_subpixel(nn.Conv2d(2, 2, 3, padding=1, padding_mode="reflect"), 2), "conv.padding_mode"),
    ("upsample r", lambda: upsample_conv_to_subpixel(nn.Conv2d(2, 2, 3), (2, 2, 2)), "r"),
    # dense
    ("dense zero size", lambda: dense_operator(nn.Conv2d(1, 1, 1), (1, 0, 3)), "input_shape"),
    ("dense too large", lambda: dense_operator(nn.Conv2d(1, 1, 1), (1, 1, 200, 200)), "input_shape"),
    ("dense batch", lambda: dense_operator(nn.Conv2d(1, 1, 1), (2, 1, 3, 3)), "input_shape"),
    ("dense float size", lambda: dense_operator(nn.Conv2d(1, 1, 1), (1, 1, 3.5)), "input_shape"),
    ("dense channels", lambda: dense_operator(nn.Conv2d(1, 1, 3), (1, 3, 4, 4)), "input_shape"),
    ("dense not callable", lambda: dense_operator(5, (1, 1, 3)), "fn"),
    ("dense scalar out", lambda: dense_operator(lambda x: x.sum(), (1, 1, 3)), "fn"),
    ("dense apply shape", lambda: _op().apply(torch.zeros(1, 1, 5, 5)), "x.shape"),
    ("offset stride", lambda: offset_tensor(_op(), 0), "stride"),
    ("offset op", lambda: offset_tensor("op"), "op"),
    ("offset flat op", lambda: offset_tensor(dense_operator(nn.Flatten(), (1, 1, 2, 2))), "op.input_shape"),
    ("locality delta", lambda: offset_tensor(_op()).locality_violations(-1), "delta"),
    ("locality delta axes", lambda: offset_tensor(_op()).locality_violations((1, 1, 1)), "delta"),
    ("shift out range", lambda: shift_violations(_op(), (1, 1), (5, 0)), "out_shift"),
    ("shift in range", lambda: shift_violations(_op(), (9, 0), (0, 0)), "in_shift"),
    ("shift axes", lambda: shift_violations(_op(), (1,), (0, 0)), "in_shift"),
    ("layout not permutation", lambda: layout_permutation(lambda x: x[..., :1], (1, 1, 2, 2)), "layout"),
    ("layout batch", lambda: layout_permutation(lambda x: x, (4, 1, 1)), "input_shape"),
    # axw
    ("selection mode", lambda: axis_selection(4, 4, shift=-1, padding_mode="mirror"), "padding_mode"),
    ("selection stride", lambda: axis_selection(4, 4, stride=0), "stride"),
    ("selection shift", lambda: axis_selection(4, 4, shift=0.5), "shift"),
    ("selection size", lambda: axis_selection(0, 4), "in_size"),
    ("axw module", lambda: axw_factors(nn.Linear(2, 2), (3,)), "module"),
    ("axw empty", lambda: axw_factors(nn.Conv2d(1, 1, 5), (3, 3)), "input_size"),
    ("axw float size", lambda: axw_factors(nn.Conv2d(1, 1, 1), 4.5), "input_size"),
    ("axw transposed axes", lambda: axw_factors(nn.ConvTranspose2d(1, 1, 3), (3,)), "input_size"),
    ("axw apply shape", lambda: axw_factors(nn.Conv2d(1, 1, 3), (4, 4)).apply(torch.zeros(1, 1, 5, 5)), "x.shape"),
]


@pytest.mark.parametrize("call,param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_a_fold_error_naming_the_parameter(call, param):
    raises_fold_error(param, call)


def test_the_catalogue_is_large():
    assert len(CASES) >= 70 and len({c[0] for c in CASES}) == len(CASES)
