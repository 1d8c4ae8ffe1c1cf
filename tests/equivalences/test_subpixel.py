"""Sub-pixel conv == transposed conv (SUB-1, SUB-2) and ICNR == nearest-neighbour resize (SUB-3), exact."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from foldconv import DepthToSpace, FoldError, check_equivalence, depth_to_space, derived
from foldconv.equivalences.subpixel import (
    SubPixelConv,
    icnr_,
    icnr_weight,
    subpixel_to_transposed,
    transposed_to_subpixel,
    upsample_conv_to_subpixel,
)
from helpers import examples

CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TCONV = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}
ORDERS = ["crd", "dcr", "focus"]


@st.composite
def subpixel_convs(draw):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    r = tuple(draw(st.integers(1, 3 if dims < 3 else 2)) for _ in range(dims))
    kernel = tuple(draw(st.integers(1, 4 if dims < 3 else 2)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, k - 1)) for k in kernel)
    groups = draw(st.sampled_from([1, 2]))
    conv = CONV[dims](2 * groups, 2 * groups * math.prod(r), kernel, padding=padding, groups=groups, bias=False)
    size = tuple(draw(st.integers(k, k + 3)) for k in kernel)
    return SubPixelConv(conv, r, draw(st.sampled_from(ORDERS))), size


@pytest.mark.claim("SUB-1")
@settings(max_examples=examples(40))
@given(subpixel_convs())
def test_subpixel_conv_is_transposed_conv(case):
    sub, size = case
    t = subpixel_to_transposed(sub)
    K, P = sub.conv.kernel_size, sub.conv.padding
    assert t.stride == sub.r and t.kernel_size == tuple(r * k for r, k in zip(sub.r, K))
    assert t.padding == tuple(r * (k - 1 - p) for r, k, p in zip(sub.r, K, P)) and set(t.output_padding) == {0}
    report = check_equivalence(sub, derived(lambda m: subpixel_to_transposed(m)), (2, sub.conv.in_channels) + size, dtypes=())
    assert report.exact and report.ok, report.summary()


@pytest.mark.claim("SUB-1")
def test_subpixel_index_mapping_and_bias_condition():
    r, K, P = 2, 3, 1
    conv = torch.nn.Conv1d(2, 3 * r, K, padding=P)
    with torch.no_grad():
        conv.bias.copy_(torch.tensor([1.0, 1.0, 2.0, 2.0, 5.0, 5.0]))  # crd: channel o*r + rho, constant over rho
    t = subpixel_to_transposed(conv, r, "crd")
    w, wt = conv.weight.detach(), t.weight.detach()
    for o in range(3):
        for rho in range(r):
            for c in range(2):
                for k in range(K):
                    assert wt[c, o, r * (K - 1 - k) + rho] == w[o * r + rho, c, k]
    assert t.bias.tolist() == [1.0, 2.0, 5.0]
    seq = torch.nn.Sequential(conv, DepthToSpace((r,))).double()
    x = torch.randn(2, 2, 6, dtype=torch.float64)
    assert torch.allclose(seq(x), t.double()(x), rtol=0, atol=1e-12)
    with torch.no_grad():
        conv.bias[1] += 1
    with pytest.raises(FoldError, match="conv.bias="):
        subpixel_to_transposed(conv, r)
    with pytest.raises(FoldError, match="conv.padding="):
        subpixel_to_transposed(torch.nn.Conv1d(2, 4, 3, padding=3), 2)


@pytest.mark.claim("SUB-1")
def test_subpixel_mutation_flips_verdict():
    sub = SubPixelConv(torch.nn.Conv2d(2, 8, 3, padding=1, bias=False), 2, "dcr").double()
    with torch.no_grad():
        sub.conv.weight.copy_(torch.randint(-4, 5, sub.conv.weight.shape))
    t = subpixel_to_transposed(sub)
    assert check_equivalence(sub, t, (1, 2, 4, 5)).ok
    with torch.no_grad():
        t.weight[1, 0, 2, 3] += 1
    report = check_equivalence(sub, t, (1, 2, 4, 5))
    assert report.exact and not report.ok


@st.composite
def transposed_convs(draw):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    r = tuple(draw(st.integers(1, 3 if dims < 3 else 2)) for _ in range(dims))
    dilation = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(dims))
    kernel = tuple(draw(st.integers(1, 6 if dims < 3 else 3)) for _ in range(dims))
    padding = tuple(draw(st.integers(0, d * (k - 1))) for k, d in zip(kernel, dilation))
    output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(r, dilation))
    groups = draw(st.sampled_from([1, 2]))
    size = tuple(draw(st.integers(2, 4)) for _ in range(dims))
    t = TCONV[dims](2 * groups, 2 * groups, kernel, r, padding, output_padding, groups, draw(st.booleans()), dilation)
    return t, size, draw(st.sampled_from(ORDERS))


@pytest.mark.claim("SUB-2")
@settings(max_examples=examples(50))
@given(transposed_convs())
def test_transposed_conv_is_subpixel_conv_then_crop(case):
    t, size, order = case
    out = [(n - 1) * s - 2 * p + d * (k - 1) + op + 1 for n, s, p, d, k, op in zip(size, t.stride, t.padding, t.dilation, t.kernel_size, t.output_padding)]
    if min(out) < 1:  # torch refuses an empty output: nothing to compare
        return
    report = check_equivalence(t, derived(lambda m: transposed_to_subpixel(m, order)), (2, t.in_channels) + size, dtypes=())
    assert report.exact and report.ok, report.summary()
    sub = transposed_to_subpixel(t, order)
    extents = [d * (k - 1) + 1 for k, d in zip(t.kernel_size, t.dilation)]
    no_crop = all(
        e % r == 0 and p % r == 0 and p <= r * (e // r - 1) and op == 0
        for e, r, p, op in zip(extents, t.stride, t.padding, t.output_padding)
    )
    assert (sub.crop == ((0, 0),) * len(size)) == no_crop


@pytest.mark.claim("SUB-2")
def test_round_trip_and_the_usual_4x4_stride2_pad1_deconv():
    t = torch.nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1)
    sub = transposed_to_subpixel(t)
    assert sub.conv.kernel_size == (2, 2) and sub.conv.padding == (1, 1) and sub.crop == ((1, 1), (1, 1))
    exact = torch.nn.ConvTranspose2d(4, 3, 4, stride=2, padding=2)
    sub = transposed_to_subpixel(exact, "dcr")
    assert sub.crop == ((0, 0), (0, 0)) and sub.conv.padding == (0, 0)
    back = subpixel_to_transposed(sub)
    assert torch.equal(back.weight, exact.weight) and torch.equal(back.bias, exact.bias)
    assert (back.kernel_size, back.stride, back.padding) == (exact.kernel_size, exact.stride, exact.padding)


@pytest.mark.claim("SUB-3")
@pytest.mark.parametrize("order", ORDERS)
def test_icnr_subpixel_is_nearest_resize_of_lr_conv(order):
    r = 2
    base = torch.nn.Conv2d(3, 2, 3, padding=1, bias=False)

    def build(m):
        conv = torch.nn.Conv2d(3, 2 * r * r, 3, padding=1, bias=False).to(m.weight.dtype)
        with torch.no_grad():
            conv.weight.copy_(icnr_weight(m.weight, r, order))
        return SubPixelConv(conv, r, order)

    reference = lambda x: F.interpolate(base.double()(x), scale_factor=r, mode="nearest")  # noqa: E731
    ref_module = torch.nn.Sequential(base, torch.nn.Upsample(scale_factor=r, mode="nearest"))
    report = check_equivalence(ref_module, derived(lambda m: build(m[0])), (2, 3, 4, 5))
    assert report.exact and report.ok, report.summary()
    sub = build(base.double())
    x = torch.randn(1, 3, 4, 5, dtype=torch.float64)
    assert torch.allclose(sub(x), reference(x), rtol=0, atol=1e-12)
    with torch.no_grad():
        sub.conv.weight[1] += 1  # one sub-kernel of one output channel differs: no longer a resize
    assert not check_equivalence(ref_module.double(), derived(lambda m: sub), (1, 3, 4, 5), dtypes=()).ok


@pytest.mark.claim("SUB-3")
def test_icnr_initialiser_copies_one_kernel_to_all_subpixels():
    conv = torch.nn.Conv2d(3, 2 * 9, 3)
    icnr_(conv.weight, 3, "focus")
    per_pixel = conv.weight.detach().reshape(3, 3, 2, 3, 3, 3)  # focus order: (rw rh o)
    assert all(torch.equal(per_pixel[i, j], per_pixel[0, 0]) for i in range(3) for j in range(3))
    assert not torch.equal(per_pixel[0, 0, 0], per_pixel[0, 0, 1])
    with pytest.raises(FoldError, match="multiple of prod"):
        icnr_(torch.nn.Conv2d(3, 5, 3).weight, 2)


@pytest.mark.claim("SUB-3")
@settings(max_examples=examples(30))
@given(
    st.integers(1, 3), st.integers(1, 5), st.integers(0, 3), st.integers(1, 2), st.sampled_from(ORDERS), st.integers(2, 4)
)
def test_nearest_upsample_then_conv_is_subpixel_conv(r, k, p, d, order, n):
    conv = torch.nn.Conv2d(2, 3, (k, max(1, k - 1)), padding=(p, 1), dilation=(d, 1))
    n = max(n, k * d)
    ref = torch.nn.Sequential(torch.nn.Upsample(scale_factor=r, mode="nearest"), conv)
    report = check_equivalence(ref, derived(lambda m: upsample_conv_to_subpixel(m[1], r, order)), (2, 2, n, n + 1), dtypes=())
    assert report.exact and report.ok, report.summary()


def test_error_paths():
    with pytest.raises(FoldError, match="conv.stride="):
        subpixel_to_transposed(torch.nn.Conv2d(2, 8, 3, stride=2), 2)
    with pytest.raises(FoldError, match="conv.padding_mode="):
        subpixel_to_transposed(torch.nn.Conv2d(2, 8, 3, padding=1, padding_mode="reflect"), 2)
    with pytest.raises(FoldError, match="r=None"):
        subpixel_to_transposed(torch.nn.Conv2d(2, 8, 3))
    with pytest.raises(FoldError, match="module.crop="):
        subpixel_to_transposed(SubPixelConv(torch.nn.Conv2d(2, 8, 3), 2, crop=((1, 0), (0, 0))))
    with pytest.raises(FoldError, match="conv.out_channels="):
        SubPixelConv(torch.nn.Conv2d(2, 6, 3), 2)
    with pytest.raises(FoldError, match="tconv="):
        transposed_to_subpixel(torch.nn.Conv2d(2, 2, 3))
    with pytest.raises(FoldError, match="conv.stride="):
        upsample_conv_to_subpixel(torch.nn.Conv2d(2, 2, 3, stride=2), 2)
    with pytest.raises(FoldError, match="weight="):
        icnr_weight(torch.zeros(3, 3), 2)
    with pytest.raises(FoldError, match="crop="):
        SubPixelConv(torch.nn.Conv2d(2, 8, 3), 2, crop=((1, -1), (0, 0)))
    assert torch.equal(depth_to_space(torch.arange(8.).reshape(1, 8, 1, 1), 2), F.pixel_shuffle(torch.arange(8.).reshape(1, 8, 1, 1), 2))


@pytest.mark.claim("STAGE-6")
def test_subpixel_to_transposed_reads_torch_and_timm_depth_to_space_modules():
    """conv + nn.PixelShuffle (ESPCN's tail) is conv + DepthToSpace(r, "crd"); timm's DepthToSpace is order "dcr"."""
    timm_layers = pytest.importorskip("timm.layers")
    torch.manual_seed(0)
    for module, ours in ((torch.nn.PixelShuffle(3), DepthToSpace(3, "crd")), (timm_layers.DepthToSpace(2), DepthToSpace(2, "dcr"))):
        r = ours.r[0]
        conv = torch.nn.Conv2d(4, 2 * r * r, 3, padding=1, bias=False).double()
        y = torch.randn(1, 2 * r * r, 3, 4, dtype=torch.float64)
        assert torch.equal(module(y), ours(y))
        seq = torch.nn.Sequential(conv, module)
        tconv = subpixel_to_transposed(seq)
        assert torch.equal(tconv.weight, subpixel_to_transposed(torch.nn.Sequential(conv, ours)).weight)
        assert tconv.stride == (r, r) and tconv.kernel_size == (3 * r, 3 * r)
        report = check_equivalence(seq, derived(lambda m: subpixel_to_transposed(m)), (2, 4, 5, 6), dtypes=())
        assert report.exact and report.ok, report.summary()
    with pytest.raises(FoldError, match="leave r and order unset"):
        subpixel_to_transposed(torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3), torch.nn.PixelShuffle(2)), 2)
