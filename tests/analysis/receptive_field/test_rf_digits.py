"""Reshapes that split or merge spatial axes are re-indexings: an axis keeps its mixed-radix digits over the
merged dims (token views, window partitions and reverses, space-to-depth by view + permute), so its boxes stay
exact. Every exact box is checked against the float64 gradient support of a positive copy; a per-token op
inside windows must read one pixel, attention inside them the whole window (a hull called exact would fail)."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from foldconv.analysis.receptive_field import check_receptive_field, receptive_field
from foldconv.analysis.receptive_field.geometry import Digits, digit_map, view_layout


def _check_all(model: nn.Module, shape, min_nodes: int = 1):
    """check_receptive_field on every exact node whose axes are dims of their own (first, centre, last)."""
    report = receptive_field(model, shape)
    nodes = [n for n, v in report.nodes.items() if v.op != "input" and v.exact and all(d is not None for d in v.dims)]
    assert len(nodes) >= min_nodes
    check = check_receptive_field(model, shape, nodes=nodes, report=report)
    assert check.rows and check.ok, check.mismatches[:3]
    return report


# ------------------------------------------------------------------------------------------- layouts


@pytest.mark.claim("RF-10")
def test_view_layout_follows_windows_tokens_and_space_to_depth():
    h, w = ((1, 1, 56),), ((2, 1, 56),)
    win = (1, 8, 7, 8, 7, 96)
    assert view_layout(h, (1, 56, 56, 96), win) == ((1, 1, 8), (2, 1, 7))
    assert view_layout(w, (1, 56, 56, 96), win) == ((3, 1, 8), (4, 1, 7))
    # after permute(0, 1, 3, 2, 4, 5): windows into the batch, tokens into one dim, and back again
    hp, wp = ((1, 1, 8), (3, 1, 7)), ((2, 1, 8), (4, 1, 7))
    tokens = view_layout(hp, (1, 8, 8, 7, 7, 96), (64, 49, 96)), view_layout(wp, (1, 8, 8, 7, 7, 96), (64, 49, 96))
    assert tokens == (((0, 8, 8), (1, 7, 7)), ((0, 1, 8), (1, 1, 7)))
    assert view_layout(tokens[0], (64, 49, 96), (1, 8, 8, 7, 7, 96)) == hp
    assert view_layout(((1, 1, 56), (2, 1, 7)), (1, 8, 8, 7, 7, 96), (1, 56, 56, 96)) is None  # not one axis's digits
    assert view_layout(((1, 1, 6),), (1, 6, 4), (1, 4, 6)) is None  # 6 rows across dims of 4 and 6: not a product
    # TResNet's space-to-depth: the major digit stays on the map, the minor one goes into the channels
    assert view_layout(((2, 1, 224),), (1, 3, 224, 224), (1, 3, 56, 4, 56, 4)) == ((2, 1, 56), (3, 1, 4))


@st.composite
def _digit_maps(draw):
    sizes = tuple(draw(st.lists(st.integers(1, 4), min_size=1, max_size=3)))
    kept = draw(st.lists(st.booleans(), min_size=len(sizes), max_size=len(sizes)))
    order = draw(st.permutations([k for k, keep in enumerate(kept) if keep]))
    slot = {k: i for i, k in enumerate(order)}
    source = tuple(slot.get(k) for k in range(len(sizes)))
    out_sizes = tuple(sizes[k] for k in order)
    return sizes, source, out_sizes


def _brute(sizes, source, out_sizes, o):
    out_digits = np.unravel_index(o, out_sizes) if out_sizes else ()
    ranges = [range(n) if src is None else [int(out_digits[src])] for n, src in zip(sizes, source)]
    return sorted(int(np.ravel_multi_index(ix, sizes)) for ix in itertools.product(*ranges))


@pytest.mark.claim("RF-10")
@settings(max_examples=60, deadline=None)
@given(_digit_maps())
def test_digit_maps_read_exactly_the_digit_products(spec):
    """Each output reads the product of its kept digits with every value of the free ones; digit_map's simpler
    equivalents (IDENTITY, Whole, a block Local) read the same indices, inside and outside the output."""
    sizes, source, out_sizes = spec
    m, simple = Digits(sizes, source, out_sizes), digit_map(sizes, source, out_sizes)
    n_out = int(np.prod(out_sizes, dtype=np.int64))
    for o in range(n_out):
        want = _brute(sizes, source, out_sizes, o)
        assert m.taps(np.array([o])).tolist() == want
        assert m.pull(o, o) == (want[0], want[-1])
        assert simple.taps(np.array([o])).tolist() == want
    # an interval reads the hull of its positions' hulls: all of them, every input index
    assert m.pull(0, n_out - 1) == (0, int(np.prod(sizes)) - 1)
    for o in (-1, n_out, 2 * n_out - 1):  # a consumer's padding: the same span one period away
        assert m.pull(o, o) == tuple(int(v) for v in simple.pull(o, o)) or type(simple).__name__ in ("Broadcast", "Whole")


# ------------------------------------------------------------------------------------------- windows


class _Windows(nn.Module):
    """A conv, then ``inner`` on the tokens of ``ws x ws`` windows (partitioned and reversed by view + permute,
    as Swin does), then a conv."""

    def __init__(self, inner: nn.Module, ws: int = 4, c: int = 4):
        super().__init__()
        self.stem, self.inner, self.head, self.ws = nn.Conv2d(1, c, 3, padding=1), inner, nn.Conv2d(c, 2, 3, padding=1), ws

    def forward(self, x):
        x = self.stem(x).permute(0, 2, 3, 1)  # (B, H, W, C)
        b, h, w, c = x.shape
        ws = self.ws
        t = x.view(b, h // ws, ws, w // ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, ws * ws, c)
        t = self.inner(t)
        x = t.view(b, h // ws, w // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5).reshape(b, h, w, c)
        return self.head(x.permute(0, 3, 1, 2))


class _Attention(nn.Module):
    def __init__(self, c: int = 4):
        super().__init__()
        self.qkv = nn.Linear(c, 3 * c)

    def forward(self, t):
        q, k, v = self.qkv(t).chunk(3, dim=-1)
        return torch.softmax(q @ k.transpose(-2, -1), dim=-1) @ v


@pytest.mark.claim("RF-10")
@pytest.mark.parametrize("trace", ["fx", "aten"])
def test_a_per_token_op_inside_windows_reads_its_own_pixel(trace):
    torch.manual_seed(0)
    net = _Windows(nn.Sequential(nn.LayerNorm(4), nn.Linear(4, 4)))
    report = _check_all(net, (1, 1, 16, 16)) if trace == "fx" else receptive_field(net, (1, 1, 16, 16), trace="aten")
    assert report.output.exact and report.output.rf == (5, 5)  # two 3 x 3 convs: the windows add nothing
    assert check_receptive_field(net, (1, 1, 16, 16), report=report).ok


@pytest.mark.claim("RF-10")
@pytest.mark.parametrize("trace", ["fx", "aten"])
def test_attention_inside_windows_reads_the_window(trace):
    """The same network with attention inside the windows (the mutation of the test above): an output reads the
    windows its head's taps fall in, widened by the stem, exactly, and the gradient agrees."""
    torch.manual_seed(0)
    net = _Windows(_Attention())
    report = _check_all(net, (1, 1, 16, 16)) if trace == "fx" else receptive_field(net, (1, 1, 16, 16), trace="aten")
    # (5, 5): the head reads 4..6, all in the window 4..7, and the stem one more pixel; (4, 4): the head reads 3..5,
    # in the windows 0..3 and 4..7; the largest box (rf) is two windows and two stem pixels
    assert report.output.exact and report.output.rf == (10, 10)
    assert report.box(index=(5, 5), clip=True) == ((3, 8), (3, 8))
    assert report.box(index=(4, 4), clip=True) == ((0, 8), (0, 8))
    assert check_receptive_field(net, (1, 1, 16, 16), report=report).ok


@pytest.mark.claim("RF-10")
def test_tokens_and_back_keep_the_grid():
    """(B, C, H, W) -> (B, H*W, C) tokens -> a linear -> back to the map: the conv after it is exact."""
    class Tokens(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.lin, self.b = nn.Conv2d(1, 3, 3, stride=2, padding=1), nn.Linear(3, 3), nn.Conv2d(3, 1, 3, dilation=2)

        def forward(self, x):
            y = self.a(x)
            b, c, h, w = y.shape
            t = self.lin(y.flatten(2).transpose(1, 2))
            return self.b(t.transpose(1, 2).reshape(b, c, h, w))

    torch.manual_seed(0)
    report = _check_all(Tokens(), (1, 1, 19, 17), min_nodes=3)
    assert report.output.exact and report.output.rf == (11, 11) and report.output.dims == (2, 3)


@pytest.mark.claim("RF-10")
def test_space_to_depth_by_view_and_permute_is_a_block():
    """TResNet's space-to-depth (view, permute, view into the channels) then a 3 x 3 conv: a conv on 4 x 4 blocks."""
    class S2D(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(16, 2, 3, padding=1)

        def forward(self, x):
            b, c, h, w = x.shape
            x = x.view(b, c, h // 4, 4, w // 4, 4).permute(0, 3, 5, 1, 2, 4).reshape(b, c * 16, h // 4, w // 4)
            return self.conv(x)

    torch.manual_seed(0)
    report = _check_all(S2D(), (1, 1, 16, 16))
    out = report.output
    assert out.exact and out.aligned and out.rf == (12, 12) and out.jump == (4, 4) and out.padding == (4, 4)


@pytest.mark.claim("RF-10")
def test_a_class_token_concatenated_onto_tokens_is_a_hull_until_mixed():
    """A class token put in front of the tokens shifts their positions, which digits cannot say: the tokens are
    a conservative hull there (not exact), and exact again once attention over all tokens mixes them."""
    class Cls(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.cls = nn.Conv2d(1, 2, 3, padding=1), nn.Parameter(torch.ones(1, 1, 2))

        def forward(self, x):
            t = self.conv(x).flatten(2).transpose(1, 2)
            t = torch.cat([self.cls, t], dim=1)
            mixed = torch.softmax(t @ t.transpose(1, 2), -1) @ t
            return t, mixed

    report = receptive_field(Cls(), (1, 1, 8, 8), output=0)
    assert not report.output.exact
    mixed = receptive_field(Cls(), (1, 1, 8, 8), output=1).output
    assert mixed.exact and mixed.rf == (10, 10)  # the whole map and the conv's padding


# ------------------------------------------------------------------------------------------- timm


@pytest.mark.claim("RF-10")
def test_timm_swin_shifted_windows_are_exact():
    """A small Swin (shifted windows of 4 tokens, patch merging): every exact node after a window reverse or a
    merge agrees with the gradient, and the logits read the whole input."""
    pytest.importorskip("timm")
    from timm.models.swin_transformer import SwinTransformer

    torch.manual_seed(0)
    net = SwinTransformer(img_size=32, patch_size=2, in_chans=1, window_size=4, embed_dim=8, depths=(2, 2), num_heads=(1, 1),
                          num_classes=3).eval()
    report = _check_all(net, (1, 1, 32, 32), min_nodes=10)
    assert report.output.exact and report.output.rf == (32, 32)
    inexact = [n for n, v in report.nodes.items() if not v.exact]
    assert not inexact, inexact[:5]


@pytest.mark.slow
@pytest.mark.parametrize("name, kwargs, shape", [
    ("tresnet_m", {"num_classes": 3}, (1, 3, 64, 64)),
    ("pvt_v2_b0", {"num_classes": 3}, (1, 3, 64, 64)),
    ("hiera_tiny_224", {"img_size": 64, "num_classes": 3}, (1, 3, 64, 64)),
    ("swinv2_cr_tiny_224", {"img_size": 64, "window_size": 4, "num_classes": 3}, (1, 3, 64, 64)),
])
def test_timm_models_with_merged_axes_are_exact(name, kwargs, shape):
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model(name, pretrained=False, **kwargs).eval()
    report = receptive_field(net, shape)
    assert report.output.exact
    check = check_receptive_field(net, shape, report=report, max_nodes=12)
    assert check.rows and check.ok, check.mismatches[:3]


def test_reading_other_digits_whole_is_exact_only_off_the_outputs_dims():
    """Keys laid out in the columns (a dim of their own) are summed whole by a unit of the rows: exact. The same
    axis spread over a dim that also holds the output's digits would be a superset: not exact."""
    from foldconv.analysis.receptive_field.context import reindex, summed_exactly

    rows, cols = ((0, 24, 8), (1, 7, 7)), ((0, 24, 8), (2, 7, 7))
    assert summed_exactly(cols, rows) and reindex(cols, rows).taps(np.array([9])).tolist() == list(range(7, 14))
    assert not summed_exactly(((1, 1, 56),), ((1, 8, 7), (2, 1, 8)))


def test_unequal_pieces_of_a_channel_split_keep_the_grid():
    """``split([2, 1, 3], dim=1)`` (a lambda layer's q, k, v): every piece keeps the map's positions, exactly; only a
    tuple element that is not a piece (a norm's statistics) is read whole."""
    class Qkv(nn.Module):
        def __init__(self):
            super().__init__()
            self.qkv, self.out = nn.Conv2d(1, 6, 3, padding=1), nn.Conv2d(3, 1, 3)

        def forward(self, x):
            q, k, v = torch.split(self.qkv(x), [2, 1, 3], dim=1)
            return self.out(v * k.sigmoid()) + q.sum(1, keepdim=True)[..., 1:-1, 1:-1]

    torch.manual_seed(0)
    report = _check_all(Qkv(), (1, 1, 12, 12), min_nodes=4)
    assert report.output.exact and report.output.rf == (5, 5)
