"""Rules for attention and token models (SDPA, einsum, matmul + softmax, unbind), cyclic shifts, spatial
concatenation and splits, resampling variants, timm's "same" padding, and receptive-field holes (the
support): every analytic result checked against the float64 gradient of a positive copy."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from foldconv.analysis.receptive_field import (
    UnsupportedOpError,
    check_receptive_field,
    empirical_support,
    receptive_field,
)
from helpers import raises_fold_error


def _check_all(model: nn.Module, shape, nodes=None):
    """check_receptive_field on every exact spatial node (or ``nodes``), with at least one row."""
    report = receptive_field(model, shape)
    if nodes is None:
        nodes = [n for n, v in report.nodes.items() if v.op != "input" and v.exact and any(d is not None for d in v.dims)]
    check = check_receptive_field(model, shape, nodes=nodes, report=report)
    assert check.rows and check.ok, check.mismatches[:3]
    return report


# ------------------------------------------------------------------------------------------- holes


def _dilated_stack(dilations=(1, 4, 16)) -> nn.Module:
    return nn.Sequential(*[nn.Conv1d(1, 1, 3, dilation=d) for d in dilations])


def _by_hand(dilations) -> set:
    offsets = {0}
    for d in dilations:  # each layer reads taps 0, d, 2d of the previous layer, whose jump is 1
        offsets = {u + t * d for u in offsets for t in range(3)}
    return offsets


@pytest.mark.claim("RF-8")
def test_dilated_stack_support_by_hand_and_against_the_gradient():
    dilations = (1, 4, 16)
    hand = _by_hand(dilations)
    assert (max(hand) + 1, len(hand)) == (43, 27)  # the hull is 43 wide, 16 of its offsets are never read
    report = receptive_field(_dilated_stack(dilations), (1, 1, 64))
    out = report.output
    assert out.rf == (43,) and out.holes == (16,) and set(out.support[0]) == hand
    assert "| holes |" in report.summary() and "(16)" in report.summary()
    for index in [(0,), (10,), (21,)]:
        analytic = report.support(index=index)
        assert analytic == ((tuple(sorted(index[0] + u for u in hand)),))
        assert analytic == empirical_support(_dilated_stack(dilations), (1, 1, 64), index=index)
    # mutation: a middle dilation of 5 reads other offsets, which the measured support must show
    wrong = receptive_field(_dilated_stack((1, 5, 16)), (1, 1, 64))
    assert wrong.support(index=(10,)) != empirical_support(_dilated_stack(dilations), (1, 1, 64), index=(10,))


class _Branches(nn.Module):
    """Two dilated branches merged by a sum, then by a max with a third: the support is the union."""

    def __init__(self, merge=torch.maximum):
        super().__init__()
        self.merge = merge
        self.a = nn.Conv2d(1, 2, 3, dilation=2, padding=2)
        self.b = nn.Conv2d(1, 2, 3, dilation=3, padding=3)
        self.c = nn.Conv2d(1, 2, (1, 3), dilation=(1, 5), padding=(0, 5))

    def forward(self, x):
        return self.merge(self.a(x) + self.b(x), self.c(x))


@pytest.mark.claim("RF-8")
def test_support_of_merged_branches_is_the_union_of_their_supports():
    report = receptive_field(_Branches(), (1, 1, 24, 24))
    # h: {-2,0,2} u {-3,0,3} u {0}; w: the same u {-5,0,5}; offsets from the box start
    assert report.output.rf == (7, 11) and report.output.holes == (2, 4)
    assert report.support(index=(12, 12), clip=False) == ((9, 10, 12, 14, 15), (7, 9, 10, 12, 14, 15, 17))
    # the gradient of a max reaches only the larger branch: the measurement sums the branches instead
    summed = _Branches(merge=torch.add)
    assert receptive_field(summed, (1, 1, 24, 24)).output.axes == report.output.axes
    for index in [(12, 12), (0, 0), (1, 23), (23, 4)]:
        assert report.support(index=index) == empirical_support(summed, (1, 1, 24, 24), index=index)


@pytest.mark.claim("RF-8")
def test_strided_and_transposed_supports_against_the_gradient():
    net = nn.Sequential(nn.Conv2d(1, 2, 3, stride=2, dilation=3, padding=3), nn.Conv2d(2, 2, 2, dilation=2),
                        nn.ConvTranspose2d(2, 1, 3, stride=2, dilation=2))
    shape = (1, 1, 30, 30)
    report = receptive_field(net, shape)
    assert max(report["_1"].holes) > 0
    for name in ("_0", "_1", "_2"):
        for index in [(0, 0), report.center(name), tuple(n - 1 for n in report[name].positions)]:
            assert report.support(name, index) == empirical_support(net, shape, node=name, index=index), (name, index)


# ----------------------------------------------------------------------------------------- attention


class _Tokens(nn.Module):
    """Patch embedding, tokens, one attention block (three spellings), back to the grid, a 3x3 conv."""

    def __init__(self, how: str, dim: int = 8, heads: int = 2):
        super().__init__()
        self.how, self.heads = how, heads
        self.embed = nn.Conv2d(1, dim, 4, stride=4)
        self.norm = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.out = nn.Conv2d(dim, 2, 3, padding=1)

    def forward(self, x):
        x = self.embed(x)
        n, c, h, w = x.shape
        t = x.flatten(2).transpose(1, 2)
        qkv = self.qkv(self.norm(t)).reshape(n, h * w, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        if self.how == "sdpa":
            a = F.scaled_dot_product_attention(q, k, v)
        elif self.how == "einsum":
            a = torch.einsum("bhqk,bhkd->bhqd", torch.einsum("bhqd,bhkd->bhqk", q, k).softmax(-1), v)
        else:
            a = (q @ k.transpose(-2, -1)).softmax(dim=-1) @ v
        t = t + self.proj(a.transpose(1, 2).reshape(n, h * w, c))
        return self.out(t.transpose(1, 2).reshape(n, c, h, w))


@pytest.mark.claim("RF-9")
@pytest.mark.parametrize("how", ["sdpa", "einsum", "matmul"])
def test_attention_over_tokens_is_global_and_exact(how):
    shape = (1, 1, 16, 12)
    report = _check_all(_Tokens(how), shape)
    assert report["embed"].rf == (4, 4) and report["embed"].jump == (4, 4)
    out = report.output
    # every token attends to every token: each output position reads the whole input, exactly
    assert out.exact and out.rf == (16, 12) and out.constant and out.holes == (0, 0)
    assert report.box(index=(0, 0)) == ((0, 15), (0, 11)) and report.output_name in check_receptive_field(
        _Tokens(how), shape, report=report).rows[-1].node


def test_einsum_with_a_diagonal_is_named():
    class Diagonal(nn.Module):
        def forward(self, x):
            return torch.einsum("bcii->bci", x)

    with pytest.raises(UnsupportedOpError, match="einsum"):
        receptive_field(Diagonal(), (1, 1, 6, 6), trace="fx")
    # its aten operations (a view of the diagonal) answer with the whole input, a hull flagged inexact
    report = receptive_field(Diagonal(), (1, 1, 6, 6))
    assert not report.output.exact and report.output.rf == (6, 6)


# ------------------------------------------------------------------------------------------- layout ops


class _Rolled(nn.Module):
    """Swin's cyclic shift: roll, a strided conv window, roll back."""

    def __init__(self, shift=3):
        super().__init__()
        self.shift = shift
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.b = nn.Conv2d(2, 2, 4, stride=4)
        self.up = nn.Upsample(scale_factor=4)

    def forward(self, x):
        y = torch.roll(self.a(x), shifts=(-self.shift, 2), dims=(2, 3))
        return torch.roll(self.up(self.b(y)), shifts=(self.shift, -2), dims=(2, 3))


@pytest.mark.claim("RF-9")
def test_roll_is_an_exact_cyclic_map():
    shape = (1, 1, 16, 16)
    report = _check_all(_Rolled(), shape)
    # the last window wraps around: its hull is the whole axis, its support the two ends
    sup = report.support(index=(15, 8))
    assert sup == empirical_support(_Rolled(), shape, index=(15, 8))
    assert report.box(index=(15, 8))[0] == (0, 15) and len(sup[0]) < 16


class _Pieces(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Conv2d(1, 2, 3, padding=1)
        self.left = nn.Conv2d(2, 2, 3, padding=1)
        self.right = nn.Conv2d(2, 2, 5, padding=2)
        self.out = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        l, r = self.a(x).chunk(2, dim=-1)
        top, bottom = torch.split(self.a(x), [5, 7], dim=2)
        y = torch.cat([self.left(l), self.right(r)], dim=-1) + torch.cat([bottom, top], dim=2)
        rows = self.a(x).unbind(2)
        return self.out(y + rows[3].unsqueeze(2))


@pytest.mark.claim("RF-9")
def test_cat_split_chunk_unbind_along_a_spatial_axis():
    report = _check_all(_Pieces(), (1, 1, 12, 12))
    assert report["getitem_4"].dims[0] is None  # one row of the map, broadcast back along h

    class Restacked(nn.Module):
        def forward(self, x):
            return torch.stack(x.unbind(2), dim=2)

    with pytest.raises(UnsupportedOpError, match="stack"):
        receptive_field(Restacked(), (1, 1, 6, 6), trace="fx")
    # its aten operations: the pieces stacked back are a hull, flagged inexact, never a claimed exact box
    restacked = receptive_field(Restacked(), (1, 1, 6, 6))
    assert not restacked.output.exact and restacked.output.rf[0] == 6


class _Resampled(nn.Module):
    def __init__(self, mode, align, size=None, scale=None):
        super().__init__()
        self.mode, self.align, self.size, self.scale = mode, align, size, scale
        self.a = nn.Conv2d(1, 2, 3, stride=2, padding=1)
        self.b = nn.Conv2d(2, 1, 3, padding=1)

    def forward(self, x):
        y = F.interpolate(self.a(x), size=self.size, scale_factor=self.scale, mode=self.mode, align_corners=self.align)
        return self.b(y)


RESAMPLING = [("nearest", None, None, 2), ("nearest", None, (7, 13), None), ("nearest-exact", None, (13, 5), None),
              ("bilinear", False, None, 2), ("bilinear", True, None, 2), ("bilinear", False, (11, 17), None),
              ("bilinear", True, (5, 9), None), ("bicubic", False, None, 2), ("bicubic", True, (13, 7), None),
              ("area", None, (3, 5), None), ("bilinear", False, None, 1.5), ("nearest", None, None, 0.5)]


@pytest.mark.claim("RF-9")
@pytest.mark.parametrize("mode,align,size,scale", RESAMPLING, ids=[f"{m}-{a}-{s}-{f}" for m, a, s, f in RESAMPLING])
def test_interpolate_variants_against_the_gradient(mode, align, size, scale):
    _check_all(_Resampled(mode, align, size, scale), (1, 1, 14, 10))


def test_timm_same_padding_layers():
    timm = pytest.importorskip("timm")
    from timm.layers import Conv2dSame
    from timm.layers.pool2d_same import AvgPool2dSame, MaxPool2dSame

    net = nn.Sequential(Conv2dSame(1, 2, 3, stride=2), AvgPool2dSame(3, 2), Conv2dSame(2, 2, 4, stride=1, dilation=2),
                        AvgPool2dSame(2, 2))
    assert timm is not None
    for size in (17, 20):
        report = _check_all(net, (1, 1, size, size))
        assert report.output.exact
        # the max pool pads like the average pool (the check measures max pools as average pools of torch's type)
        maxed = nn.Sequential(net[0], MaxPool2dSame(3, 2), net[2], net[3])
        assert receptive_field(maxed, (1, 1, size, size)).output == report.output


def test_timm_mobilevit_block_is_global_when_its_convs_span_the_patch():
    pytest.importorskip("timm")
    from timm.models.mobilevit import MobileVitBlock

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), MobileVitBlock(8, 8, patch_size=2, transformer_dim=8, num_heads=2,
                                                                      transformer_depth=1), nn.Conv2d(8, 2, 1))
    report = _check_all(net, (1, 1, 8, 8), nodes=["_2"])
    assert report.output.exact and report.output.rf == (10, 10) and report.output.constant
    # patch 8 with 3x3 convs: each pixel reads a strided subset of the map; named, not guessed
    wide = nn.Sequential(MobileVitBlock(8, 8, patch_size=8, transformer_dim=8, num_heads=2, transformer_depth=1))
    with pytest.raises(UnsupportedOpError, match="MobileVitBlock|do not span"):
        receptive_field(wide, (1, 8, 16, 16), trace="fx")


def test_support_bad_inputs_are_fold_errors():
    report = receptive_field(_dilated_stack(), (1, 1, 64))
    raises_fold_error("clip", lambda: report.support(clip="yes"))
    raises_fold_error("index", lambda: report.support(index=(99,)))
    raises_fold_error("node", lambda: report.support("nope"))
    raises_fold_error("index", lambda: empirical_support(_dilated_stack(), (1, 1, 64), index=(1, 2)))


@pytest.mark.claim("RF-9")
@pytest.mark.parametrize("size", [(12, 12), (4, 10), (4, 4)], ids=["conv", "one-axis-pooled-up", "both-pooled-up"])
def test_timm_vgg_conv_mlp_head(size):
    """VGG's ConvMlp: its k x k conv, or, on an axis shorter than k, the adaptive pooling up to k that lets the
    valid conv's single output read the whole axis; then timm's vgg11 at 224, computed by hand."""
    timm = pytest.importorskip("timm")
    from timm.models.vgg import ConvMlp

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.MaxPool2d(2), ConvMlp(4, 6, kernel_size=3, drop_rate=0.0))
    report = _check_all(net, (1, 1, *size))
    assert report.output.exact
    halves = [n // 2 for n in size]
    assert report.output.rf == tuple(2 * n + 2 if n < 3 else 8 for n in halves)
    with torch.device("meta"):
        vgg = timm.create_model("vgg11", pretrained=False)
    # eight 3x3 convs and five 2x2 pools give 150 at jump 32; the head's 7x7 conv adds 6 * 32
    assert receptive_field(vgg, (1, 3, 224, 224)).output.rf == (342, 342)


@pytest.mark.claim("RF-9")
def test_timm_conv_mlp_that_the_rule_does_not_cover_is_named():
    pytest.importorskip("timm")
    from timm.models.vgg import ConvMlp

    head = ConvMlp(4, 6, kernel_size=3, drop_rate=0.0)
    head.fc1 = nn.Conv2d(4, 6, 3, padding=1)  # pooled up to 3, then padded: not covered
    with pytest.raises(UnsupportedOpError, match="pooling an input of size \\(2, 2\\)"):
        receptive_field(nn.Sequential(head), (1, 4, 2, 2), trace="fx")
    # by default its aten operations answer, and agree with the gradient
    assert check_receptive_field(nn.Sequential(head), (1, 4, 2, 2)).ok
    head.fc2 = nn.Conv2d(6, 6, 3)
    with pytest.raises(UnsupportedOpError, match="not a plain k x k conv then a 1x1 conv"):
        receptive_field(nn.Sequential(head), (1, 4, 8, 8), trace="fx")


try:
    from timm.models.crossvit import scale_image
except ImportError:  # timm is optional; the test that needs it skips
    scale_image = None


class _Scaled(nn.Module):
    def __init__(self, size, crop):
        super().__init__()
        self.size, self.crop = size, crop
        self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 1, 2)

    def forward(self, x):  # a module-level name, as in timm: fx wraps the globals it calls
        return self.b(scale_image(self.a(x), self.size, self.crop))


@pytest.mark.parametrize("size,crop", [((6, 5), True), ((6, 5), False), ((9, 13), True), ((12, 8), False)],
                         ids=["crop", "shrink", "larger-than-input", "same-size"])
@pytest.mark.claim("RF-9")
def test_timm_crossvit_scale_image(size, crop):
    """CrossViT's scale_image: a centre crop, a bicubic resize (also when a crop is asked for but the target is
    larger), or nothing; checked against the gradient."""
    pytest.importorskip("timm")
    report = _check_all(_Scaled(size, crop), (1, 1, 14, 10))
    if size == (6, 5) and crop:  # the crop starts at round(6 / 2) = 3 and round(3 / 2) = 2: the conv's window, moved
        assert report.output.rf == (4, 4) and report.output.padding == (-3, -2)


class _Repeated(nn.Module):
    def __init__(self, dim, functional):
        super().__init__()
        self.dim, self.functional = dim, functional
        self.a, self.b = nn.Conv2d(1, 2, 3), nn.Conv2d(2, 1, (2, 3))

    def forward(self, x):
        y = self.a(x)
        y = torch.repeat_interleave(y, 3, self.dim) if self.functional else y.repeat_interleave(3, dim=self.dim)
        return self.b(y[:, :2])


@pytest.mark.claim("RF-9")
@pytest.mark.parametrize("dim,functional", [(2, True), (-1, False), (1, False)], ids=["rows", "columns", "channels"])
def test_repeat_interleave_is_nearest_upsampling_along_its_dim(dim, functional):
    report = _check_all(_Repeated(dim, functional), (1, 1, 9, 8))
    # the second conv's taps (2 rows, 3 columns) over a dim repeated 3 times read one or two of its sources
    # (at most 2), each read through the first conv's 3 taps: 2 + 2 along that dim, the taps + 2 along others
    expected = {2: (4, 5), -1: (4, 4), 1: (4, 5)}[dim]
    assert report.output.rf == expected and report.output.exact


class _Variance(nn.Module):
    def __init__(self, call):
        super().__init__()
        self.call, self.a = call, nn.Conv2d(1, 2, 3, padding=1)

    def forward(self, x):
        return self.call(self.a(x))


@pytest.mark.parametrize("call, rf", [
    (lambda y: torch.var(y, 1, False, True), (3, 3)),  # over channels, (dim, unbiased, keepdim) positional
    (lambda y: torch.std(y, dim=2, keepdim=True), (10, 3)),  # over rows: every row, and the conv's padding
    (lambda y: y.var(-1, keepdim=True, unbiased=False), (3, 9)),
], ids=["channels-positional", "rows", "columns-method"])
@pytest.mark.claim("RF-9")
def test_variance_reduces_over_its_dims_whatever_the_signature(call, rf):
    report = _check_all(_Variance(call), (1, 1, 8, 7))
    assert report.output.rf == rf


@pytest.mark.claim("RF-9")
def test_repeat_interleave_without_a_dim_is_named():
    class Flat(nn.Module):
        def forward(self, x):
            return x.repeat_interleave(2)  # flattens: no spatial axis survives as such

    with pytest.raises(UnsupportedOpError, match="repeat_interleave with repeats=2, dim=None"):
        receptive_field(Flat(), (1, 1, 4, 4), trace="fx")


@pytest.mark.claim("RF-9")
@pytest.mark.parametrize("size", [(10, 9), (4, 4), (3, 6)], ids=["padded-windows", "one-window", "smaller-than-a-window"])
def test_timm_efficientvit_local_window_attention_reads_its_window(size):
    """EfficientViT-M: every output reads its whole ws x ws window of the zero-padded map (ws = 4 here)."""
    pytest.importorskip("timm")
    from timm.models.efficientvit_msra import LocalWindowAttention

    torch.manual_seed(0)
    attn = LocalWindowAttention(4, 2, num_heads=2, attn_ratio=1, resolution=4, window_resolution=4, kernels=(3, 3))
    net = nn.Sequential(nn.Conv2d(1, 4, 1), attn)
    report = _check_all(net, (1, 1, *size))
    assert report.output.exact
    assert report.output.rf == (4, 4)


@pytest.mark.claim("RF-9")
def test_timm_nest_deblockify_is_exact():
    """NesT's deblockify puts blocks back on the grid: the blockify views and permutes keep every axis's digits,
    so the boxes stay exact, and every exact node agrees with the gradient support."""
    pytest.importorskip("timm")
    from timm.models.nest import Nest

    torch.manual_seed(0)
    net = Nest(img_size=16, in_chans=1, patch_size=2, num_levels=2, embed_dims=(4, 8), num_heads=(1, 1), depths=(1, 1),
               num_classes=3)
    report = _check_all(net, (1, 1, 16, 16))
    # attention inside 4 x 4-token blocks of 2 px patches: each output reads its 8 px block
    assert report.nodes["deblockify"].exact and report.nodes["deblockify"].rf == (8, 8)
    assert report.box("deblockify", (5, 2), clip=True) == ((8, 15), (0, 7))
    assert report.nodes["levels_0_pool"].exact and report.nodes["levels_0_pool"].rf == (2, 2)
    assert report.output.exact


@pytest.mark.claim("RF-9")
def test_timm_twins_locally_grouped_attention_is_exact():
    """Twins' windows over a token sequence: each token reads its window (the block o // ws of each axis of the
    grid merged into the tokens), exact; the nodes back on the grid agree with the gradient."""
    pytest.importorskip("timm")
    from timm.models.twins import Twins

    torch.manual_seed(0)
    net = Twins(img_size=16, patch_size=2, in_chans=1, num_classes=3, embed_dims=(4, 8), num_heads=(1, 1),
                mlp_ratios=(1, 1), depths=(2, 1), sr_ratios=(2, 1), wss=(2, 2))
    report = _check_all(net, (1, 1, 16, 16))
    attn = report.nodes["blocks_0_0_attn"]
    assert attn.op == "LocallyGroupedAttn" and attn.exact and attn.rf == (4, 4)
    assert report.box("blocks_0_0_attn", (3, 0), clip=False) == ((4, 7), (0, 3))
    assert report.nodes["patch_embeds_0_proj"].exact and report.nodes["patch_embeds_0_proj"].rf == (2, 2)
    assert report.nodes["view"].exact and report.nodes["view"].dims == (2, 3)


@pytest.mark.claim("RF-9")
@pytest.mark.parametrize("size", [(9, 7), (3, 3)], ids=["padded-windows", "one-window"])
def test_timm_tiny_vit_block_is_a_hull_of_windows_and_its_conv(size):
    """TinyViT's block: window attention (ws = 3), then a 3x3 depthwise conv: a hull of 3 + 2 * 2 = 7 that holds
    the gradient support (not exact: which windows are read depends on the position); one window: global."""
    pytest.importorskip("timm")
    from timm.models.tiny_vit import TinyVitBlock

    class Block(nn.Module):  # TinyViT's stages run the block channels-last
        def __init__(self):
            super().__init__()
            self.a, self.block = nn.Conv2d(1, 4, 1), TinyVitBlock(4, num_heads=2, window_size=3, local_conv_size=3)

        def forward(self, x):
            # contiguous: on the permuted view itself, autograd gives non-zero gradients at inputs whose
            # finite differences move no output (receptive_fields.md, section 7), and the check reads gradients
            return self.block(self.a(x).permute(0, 2, 3, 1).contiguous())

    torch.manual_seed(0)
    report = receptive_field(Block(), (1, 1, *size))
    assert report.output.rf == ((7, 7) if size != (3, 3) else (3, 3))
    assert report.output.exact == (size == (3, 3))
    rows = check_receptive_field(Block(), (1, 1, *size), nodes=["block"], report=report).rows
    for row in rows:  # the hull holds the gradient support at the first, centre and last positions
        assert all(a0 <= e0 and e1 <= a1 for (a0, a1), (e0, e1) in zip(row.analytic, row.empirical)), row
    assert all(row.ok for row in rows) == (size == (3, 3))  # larger than the support somewhere, unless global
