"""Space-to-depth + stride-1 conv == strided conv (SPD-1..4), exact in integer float64."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foldconv import ConvSpec, FoldError, SpaceToDepth, check_equivalence, derived, space_to_depth
from foldconv.equivalences.space_to_depth import (
    SpaceToDepthConv,
    conv_to_focus,
    focus_to_conv,
    spd_alignment,
    spd_to_strided,
    strided_to_spd,
)
from foldconv.fold import pad_to_multiple
from helpers import examples

CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
ORDERS = ["crd", "dcr", "focus", "rw c rh"]


class YoloFocus(torch.nn.Module):
    """YOLOv5's Focus as written there (models/common.py): four strided slices concatenated, then a conv."""

    def __init__(self, c1: int, c2: int, k: int = 3):
        super().__init__()
        self.conv = torch.nn.Conv2d(c1 * 4, c2, k, 1, k // 2, bias=False)

    def forward(self, x):
        return self.conv(torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1))


@st.composite
def strided_convs(draw):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    axes = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(dims))  # noqa: E731
    stride, kernel, dilation = axes(1, 3), axes(1, 4), axes(1, 2) if dims < 3 else (1,) * dims
    padding = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    groups = draw(st.sampled_from([1, 2]))
    mode = draw(st.sampled_from(["zeros", "zeros", "circular", "reflect", "replicate"]))
    extent = tuple(d * (k - 1) + 1 for d, k in zip(dilation, kernel))
    size = tuple(draw(st.integers(max(e, p + 1), e + (6 if dims < 3 else 3))) for e, p in zip(extent, padding))
    conv = CONV[dims](2 * groups, 2, kernel, stride, padding, dilation, groups, bias=draw(st.booleans()), padding_mode=mode)
    return conv, size, draw(st.sampled_from(ORDERS if dims == 2 else ["crd", "dcr", "focus"]))


@pytest.mark.claim("SPD-1")
@settings(max_examples=examples(40))
@given(strided_convs(), st.sampled_from(["auto", "explicit"]))
def test_strided_conv_is_space_to_depth_then_stride1_conv(case, padding):
    conv, size, order = case
    report = check_equivalence(
        conv, derived(lambda m: strided_to_spd(m, order, padding=padding)), (2, conv.in_channels) + size, dtypes=()
    )
    assert report.exact and report.ok, report.summary()


@pytest.mark.claim("SPD-1")
def test_spd_weight_is_space_to_depth_of_zero_padded_kernel_and_mutation_flips_verdict():
    conv = torch.nn.Conv2d(3, 4, 3, stride=2, padding=1)
    m = strided_to_spd(conv, "dcr")
    padded = torch.nn.functional.pad(conv.weight.detach(), [0, 1, 0, 1])
    assert torch.equal(m.conv.weight, space_to_depth(padded, 2, "dcr"))
    assert m.conv.kernel_size == (2, 2) and m.conv.stride == (1, 1) and m.mode == "explicit"
    conv = conv.double()
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-5, 6, conv.weight.shape))
        conv.bias.copy_(torch.randint(-5, 6, conv.bias.shape))
    m = strided_to_spd(conv, "dcr").double()
    assert check_equivalence(conv, m, (2, 3, 9, 8)).exact is True
    with torch.no_grad():
        m.conv.weight[1, 5, 0, 1] += 1
    report = check_equivalence(conv, m, (2, 3, 9, 8))
    assert report.exact is True and not report.ok and report.first_mismatch is not None


@pytest.mark.claim("SPD-2")
@settings(max_examples=examples(30))
@given(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), st.sampled_from(ORDERS), st.integers(1, 4)
)
def test_spd_then_conv_is_strided_conv(r, k, s, p, order, n):
    spd = torch.nn.Sequential(SpaceToDepth(r, order), torch.nn.Conv2d(2 * r * r, 3, k, s, p))
    size = (r * (n + k), r * (n + k + 1))
    report = check_equivalence(spd, derived(lambda m: spd_to_strided(m)), (2, 2) + size, dtypes=())
    assert report.exact and report.ok, report.summary()
    big = spd_to_strided(spd)
    assert big.kernel_size == (r * k,) * 2 and big.stride == (r * s,) * 2 and big.padding == (r * p,) * 2


@pytest.mark.claim("SPD-2")
def test_spd_conv_block_round_trip():
    # SPD-Conv (space-to-depth by 2, then a non-strided 3x3 conv) and back through strided_to_spd.
    spd = torch.nn.Sequential(SpaceToDepth(2, "focus"), torch.nn.Conv2d(16, 8, 3, 1, 1))
    big = spd_to_strided(spd)
    back = strided_to_spd(big, "focus")
    assert back.mode == "inner" and torch.equal(back.conv.weight, spd[1].weight) and torch.equal(back.conv.bias, spd[1].bias)
    assert back.conv.padding == (1, 1)


@pytest.mark.claim("SPD-3")
def test_yolov5_focus_is_one_6x6_stride2_pad2_conv():
    focus = YoloFocus(3, 16)
    big = focus_to_conv(focus.conv)
    assert (big.kernel_size, big.stride, big.padding, big.in_channels) == ((6, 6), (2, 2), (2, 2), 3)
    report = check_equivalence(focus, derived(lambda m: focus_to_conv(m.conv)), (2, 3, 8, 10))
    assert report.exact and report.ok, report.summary()
    # The other ecosystems' orders are not Focus's order: same weights, wrong mapping.
    for order in ("crd", "dcr"):
        wrong = check_equivalence(focus, derived(lambda m: spd_to_strided(m.conv, 2, order)), (2, 3, 8, 10), dtypes=())
        assert wrong.exact is True and not wrong.ok


@pytest.mark.claim("SPD-3")
def test_6x6_stride2_pad2_conv_is_yolov5_focus():
    big = torch.nn.Conv2d(3, 16, 6, 2, 2, bias=False)

    def build(m):
        focus = YoloFocus(3, 16)
        focus.conv = conv_to_focus(m).conv
        return focus

    m = conv_to_focus(big)
    assert m.mode == "inner" and m.conv.kernel_size == (3, 3) and m.conv.padding == (1, 1)
    report = check_equivalence(big, derived(build), (2, 3, 12, 6))
    assert report.exact and report.ok, report.summary()


@pytest.mark.claim("SPD-4")
def test_non_divisible_sizes_which_rows_are_read_cut_or_padded():
    spec = ConvSpec.make(1, 1, 1, 2, stride=2)
    # N=5, K=2, s=2: torch reads rows 0..3; row 4 is read by no window.
    (a,) = spd_alignment(spec, (5,))
    assert (a.outputs, a.read, a.length, a.adjust, a.unread) == (2, 4, 4, -1, 1)
    # N=5, K=3, s=2, P=0: rows 0..4 all read; the length 6 needs one zero row, met only by the zero tap.
    (b,) = spd_alignment(ConvSpec.make(1, 1, 1, 3, stride=2), (5,))
    assert (b.outputs, b.read, b.length, b.adjust, b.unread) == (2, 5, 6, 1, 0)
    # P=1, K=3, s=2, N=6: padded 8, torch reads 7 rows, the last padding row is cut.
    (c,) = spd_alignment(ConvSpec.make(1, 1, 1, 3, stride=2, padding=1), (6,))
    assert (c.padded, c.read, c.length, c.adjust, c.unread) == (8, 7, 8, 0, 0)



def _inner_conv_after(conv, prepare):
    """The stride-1 conv of strided_to_spd(conv) on space_to_depth(prepare(x), 2), without its cut/extension."""
    inner = strided_to_spd(conv).conv
    return lambda x: inner(space_to_depth(prepare(x), 2))

@pytest.mark.claim("SPD-4")
def test_non_divisible_sizes_naive_forms_fail_and_the_fix_restores_equivalence():
    conv = torch.nn.Conv2d(2, 3, 2, stride=2)
    x_shape = (2, 2, 5, 7)
    with pytest.raises(FoldError, match="not a multiple of r=2"):
        space_to_depth(torch.zeros(x_shape), 2)
    naive = derived(lambda m: _inner_conv_after(m, lambda x: pad_to_multiple(x, 2)))
    report = check_equivalence(conv, naive, x_shape, dtypes=())
    assert report.verdict.value == "output shapes differ"  # zero-padding to 6x8 creates an extra output row/col
    cropped = derived(lambda m: _inner_conv_after(m, lambda x: x[..., :4, :6]))
    assert check_equivalence(conv, cropped, x_shape, dtypes=()).ok  # dropping the unread rows is exact
    fixed = check_equivalence(conv, derived(lambda m: strided_to_spd(m)), x_shape, dtypes=())
    assert fixed.exact and fixed.ok


@pytest.mark.claim("SPD-4")
@pytest.mark.parametrize("n", range(3, 12))
def test_unread_rows_do_not_change_the_strided_conv(n):
    conv = torch.nn.Conv1d(1, 1, 3, stride=3, padding=1).double()
    (a,) = spd_alignment(ConvSpec.from_module(conv), (n,))
    x = torch.randint(-9, 10, (1, 1, n)).double()
    kept = x[..., : n - a.unread]
    changed = torch.cat([kept, torch.randint(-9, 10, (1, 1, a.unread)).double()], -1)
    assert torch.equal(conv(x), conv(changed))
    if a.unread == 0 and n > 1:  # every row is read: changing the last one changes the output
        bumped = x.clone()
        bumped[..., -1] += 1
        assert not torch.equal(conv(x), conv(bumped))


def test_error_paths():
    with pytest.raises(FoldError, match="conv="):
        strided_to_spd(torch.nn.Linear(2, 2))
    with pytest.raises(FoldError, match="padding='inner'"):
        strided_to_spd(torch.nn.Conv2d(1, 1, 3, stride=2, padding=1), padding="inner")
    with pytest.raises(FoldError, match="padding='sideways'"):
        strided_to_spd(torch.nn.Conv2d(1, 1, 3, stride=2), padding="sideways")
    with pytest.raises(FoldError, match=r"conv.stride=\(1, 1\)"):
        conv_to_focus(torch.nn.Conv2d(1, 1, 3))
    with pytest.raises(FoldError, match="r=None"):
        spd_to_strided(torch.nn.Conv2d(4, 1, 3))
    with pytest.raises(FoldError, match="module="):
        spd_to_strided(torch.nn.Sequential(torch.nn.Conv2d(4, 1, 3), SpaceToDepth(2)))
    with pytest.raises(FoldError, match="order="):
        strided_to_spd(torch.nn.Conv2d(1, 1, 3, stride=2), order="c rh")
    with pytest.raises(FoldError, match="input_size="):
        strided_to_spd(torch.nn.Conv2d(1, 1, 5, stride=2))(torch.zeros(1, 1, 3, 3))
    with pytest.raises(FoldError, match="mode="):
        SpaceToDepthConv(torch.nn.Conv2d(4, 1, 1), (2, 2), "crd", source=ConvSpec.make(2, 1, 1, 2, stride=2), mode="magic")


@pytest.mark.claim("STAGE-6")
def test_spd_to_strided_reads_torch_and_timm_space_to_depth_modules():
    """nn.PixelUnshuffle is SpaceToDepth(r, "crd") and timm's SpaceToDepth is SpaceToDepth(4, "dcr"): bit-identical."""
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    for module, ours in ((torch.nn.PixelUnshuffle(2), SpaceToDepth(2, "crd")), (timm_layers.SpaceToDepth(4), SpaceToDepth(4, "dcr"))):
        r = ours.r[0]
        conv = torch.nn.Conv2d(3 * r * r, 5, 3, padding=1).double()
        x = torch.randn(2, 3, 4 * r, 3 * r, dtype=torch.float64)
        assert torch.equal(module(x), ours(x))
        seq = torch.nn.Sequential(module, conv)
        big = spd_to_strided(seq)
        reference = spd_to_strided(torch.nn.Sequential(ours, conv))
        assert torch.equal(big.weight, reference.weight) and torch.equal(big.bias, reference.bias)
        assert big.kernel_size == (3 * r,) * 2 and big.stride == (r, r) and big.padding == (r, r)
        report = check_equivalence(seq, derived(lambda m: spd_to_strided(m)), (2, 3, 4 * r, 3 * r), dtypes=())
        assert report.exact and report.ok, report.summary()
    # read in another order, timm's module gives another conv: the order is what the module computes
    seq = torch.nn.Sequential(timm_layers.SpaceToDepth(4), torch.nn.Conv2d(48, 5, 1).double())
    wrong = spd_to_strided(seq[1], 4, "crd")
    report = check_equivalence(seq, wrong, (1, 3, 8, 8), dtypes=())
    assert not report.ok
