"""Layout transforms: torch agreement, round trips, named orders, module forms, errors."""
from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torch import nn

from foldconv import DepthToSpace, FoldError, SpaceToDepth, depth_to_space, fold_channel_map, space_to_depth
from foldconv.layout import normalize_order

FACTORS = {1: ("rw",), 2: ("rh", "rw"), 3: ("rd", "rh", "rw")}


@st.composite
def layouts(draw, max_dims=3):
    dims = draw(st.integers(1, max_dims))
    r = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    order = draw(st.permutations(("c",) + FACTORS[dims]))
    batch = tuple(draw(st.lists(st.integers(1, 2), min_size=0, max_size=2)))
    g = draw(st.integers(1, 3))
    spatial = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    return dims, r, tuple(order), batch, g, spatial


@pytest.mark.claim("LAYOUT-1")
@given(r=st.integers(1, 4), g=st.integers(1, 3), h=st.integers(1, 5), w=st.integers(1, 5), b=st.integers(1, 2))
def test_crd_is_bit_identical_to_pixel_shuffle(r, g, h, w, b):
    x = torch.randn(b, g * r * r, h, w)
    assert torch.equal(depth_to_space(x, r, "crd"), F.pixel_shuffle(x, r))
    y = torch.randn(b, g, h * r, w * r)
    assert torch.equal(space_to_depth(y, r, "crd"), F.pixel_unshuffle(y, r))


@pytest.mark.claim("LAYOUT-1")
def test_crd_matches_pixel_shuffle_with_extra_batch_dims_and_float64():
    x = torch.randn(2, 3, 8, 4, 5, dtype=torch.float64)
    assert torch.equal(depth_to_space(x, 2), F.pixel_shuffle(x, 2))
    assert torch.equal(SpaceToDepth(2)(DepthToSpace(2)(x)), x)


@pytest.mark.claim("LAYOUT-2")
@given(layouts())
def test_round_trips_for_every_order_and_dims(case):
    dims, r, order, batch, g, spatial = case
    x = torch.randn(batch + (g * math.prod(r),) + spatial)
    y = depth_to_space(x, r, order)
    assert tuple(y.shape) == batch + (g,) + tuple(s * f for s, f in zip(spatial, r))
    assert torch.equal(space_to_depth(y, r, order), x)
    z = torch.randn(y.shape)
    assert torch.equal(depth_to_space(space_to_depth(z, r, order), r, order), z)


@pytest.mark.claim("LAYOUT-2")
@given(layouts(max_dims=2))
def test_depth_to_space_matches_index_formula(case):
    """out[c, h*r_h + i, w*r_w + j] = in[channel(c, i, j), h, w] with the channel index of the order."""
    dims, r, order, batch, g, spatial = case
    x = torch.randn((g * math.prod(r),) + spatial)
    y = depth_to_space(x, r, order)
    sizes = {"c": g, **dict(zip(FACTORS[dims], r))}
    for pos in itertools.product(*(range(s) for s in spatial)):
        for sub in itertools.product(*(range(f) for f in r)):
            for c in range(g):
                values = {"c": c, **dict(zip(FACTORS[dims], sub))}
                channel = 0
                for name in order:  # row-major over the order's axes
                    channel = channel * sizes[name] + values[name]
                out_pos = tuple(p * f + s for p, f, s in zip(pos, r, sub))
                assert y[(c,) + out_pos] == x[(channel,) + pos]


def tf_depth_to_space_nchw(x: torch.Tensor, r: int) -> torch.Tensor:
    """TensorFlow's documented DCR semantics, written with loops on an NCHW tensor:
    out[b, c, h*r + i, w*r + j] = in[b, (i*r + j)*C + c, h, w]."""
    b, cr2, h, w = x.shape
    c_out = cr2 // (r * r)
    out = torch.empty(b, c_out, h * r, w * r, dtype=x.dtype)
    for i in range(r):
        for j in range(r):
            for c in range(c_out):
                out[:, c, i::r, j::r] = x[:, (i * r + j) * c_out + c]
    return out


@pytest.mark.claim("LAYOUT-3")
@pytest.mark.parametrize("r,c", [(2, 1), (2, 3), (3, 2)])
def test_dcr_is_tensorflow_depth_to_space(r, c):
    x = torch.randn(2, c * r * r, 3, 4)
    assert torch.equal(depth_to_space(x, r, "dcr"), tf_depth_to_space_nchw(x, r))
    assert normalize_order("dcr") == ("rh", "rw", "c")


@pytest.mark.claim("LAYOUT-3")
@pytest.mark.parametrize("c", [1, 3])
def test_focus_is_yolov5_concatenation(c):
    x = torch.randn(2, c, 6, 8)
    yolo = torch.cat([x[..., ::2, ::2], x[..., 1::2, ::2], x[..., ::2, 1::2], x[..., 1::2, 1::2]], 1)
    assert torch.equal(space_to_depth(x, 2, "focus"), yolo)
    assert torch.equal(depth_to_space(yolo, 2, "focus"), x)
    # crd differs from focus as soon as there is more than one channel or rh != rw ordering matters
    assert not torch.equal(space_to_depth(x, 2, "crd"), yolo)


def test_channel_map_lists_sources():
    assert fold_channel_map(8, 2, "crd").tolist() == [[[0, 1], [2, 3]], [[4, 5], [6, 7]]]
    assert fold_channel_map(8, 2, "dcr").tolist() == [[[0, 2], [4, 6]], [[1, 3], [5, 7]]]


def test_modules_work_in_sequential_and_repr():
    seq = torch.nn.Sequential(SpaceToDepth(2, "focus"), torch.nn.Identity(), DepthToSpace(2, "focus"))
    x = torch.randn(1, 3, 4, 6)
    assert torch.equal(seq(x), x)
    assert "rw rh c" in repr(seq)
    assert DepthToSpace((2, 3)).dims == 2 and SpaceToDepth(2, dims=3).r == (2, 2, 2)


@pytest.mark.parametrize(
    "call,param",
    [
        (lambda: depth_to_space(torch.zeros(1, 4, 2, 2), 0), "r=0"),
        (lambda: depth_to_space(torch.zeros(1, 4, 2, 2), True), "r=True"),
        (lambda: depth_to_space(torch.zeros(1, 4, 2, 2), 1.5), "r=1.5"),
        (lambda: depth_to_space(torch.zeros(1, 4, 2, 2), (2,), dims=2), "r=(2,)"),
        (lambda: depth_to_space(torch.zeros(1, 4, 2, 2), 2, "c rh"), "order='c rh'"),
        (lambda: depth_to_space(torch.zeros(1, 4, 2, 2), 2, "c rh rh"), "order='c rh rh'"),
        (lambda: depth_to_space(torch.zeros(1, 6, 2, 2), 2), "x.shape=(1, 6, 2, 2)"),
        (lambda: depth_to_space(torch.zeros(4, 2), 2), "x.shape=(4, 2)"),
        (lambda: depth_to_space([1, 2], 2), "x='list'"),
        (lambda: space_to_depth(torch.zeros(1, 1, 5, 4), 2), "x.shape=(1, 1, 5, 4)"),
        (lambda: space_to_depth(torch.zeros(1, 1, 4, 4), 2, dims=4), "dims=4"),
    ],
)
def test_errors_name_parameter_and_value(call, param):
    with pytest.raises(FoldError) as info:
        call()
    assert str(info.value).startswith(param)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("r", [2, 3, 4])
def test_layout_module_matches_each_layout_module(r):
    # torch's and timm's modules compute exactly the map layout_module names (LAYOUT-1 and the timm "dcr" order).
    import timm.layers

    from foldconv.layout import layout_module

    x = torch.arange(2 * 3 * r * r * 2 * r * 3 * r, dtype=torch.float64).reshape(2, 3 * r * r, 2 * r, 3 * r)
    small = x[:, :3]
    cases = [(nn.PixelShuffle(r), x), (nn.PixelUnshuffle(r), small), (DepthToSpace(r, "focus"), x), (SpaceToDepth(r, "dcr"), small)]
    if r == 4:  # timm's SpaceToDepth asserts block_size == 4
        cases.append((timm.layers.SpaceToDepth(4), small))
    cases.append((timm.layers.DepthToSpace(r), x))
    for module, inp in cases:
        info = layout_module(module)
        assert info is not None, module
        assert torch.equal(module(inp), info.as_module()(inp)), module
    assert layout_module(nn.Conv2d(1, 1, 1)) is None


def _einops_pattern(order, dims, to_space):
    spatial = {1: ("w",), 2: ("h", "w"), 3: ("d", "h", "w")}[dims]
    packed = f"... ({' '.join(order)}) {' '.join(spatial)}"
    unpacked = "... c " + " ".join(f"({s} {f})" for s, f in zip(spatial, FACTORS[dims]))
    return f"{packed} -> {unpacked}" if to_space else f"{unpacked} -> {packed}"


@pytest.mark.claim("LAYOUT-2")
@given(case=layouts())
def test_cached_view_plan_is_the_einops_pattern(case):
    # The layout ops run a cached reshape/permute plan instead of parsing the pattern per call; the named-axis
    # einops pattern is the specification, so every order, dims and batch shape must agree with it bit for bit.
    import einops

    dims, r, order, batch, g, spatial = case
    sizes = dict(zip(FACTORS[dims], r))
    x = torch.randn(*batch, g * math.prod(r), *spatial)
    assert torch.equal(depth_to_space(x, r, order), einops.rearrange(x, _einops_pattern(order, dims, True), **sizes))
    y = torch.randn(*batch, g, *(s * f for s, f in zip(spatial, r)))
    assert torch.equal(space_to_depth(y, r, order), einops.rearrange(y, _einops_pattern(order, dims, False), **sizes))


@pytest.mark.claim("LAYOUT-2")
@pytest.mark.parametrize("order", ["focus", "rw c rh", "c rw rh", "dcr", "rh c rw", "crd"])
@pytest.mark.parametrize("r", [(8, 8), (16, 16), (8, 16)])
def test_large_factor_space_to_depth_in_tiles_is_the_einops_pattern(order, r, monkeypatch):
    # Large 2-D tensors with the channel axis after a factor are copied in tiles of (channels, output rows):
    # the same map, tile seams included (thresholds lowered so that a small tensor takes many tiles).
    import einops

    import foldconv.layout as layout_module

    monkeypatch.setattr(layout_module, "TILED_COPY_BYTES", 0)
    monkeypatch.setattr(layout_module, "TILE_BYTES", 3 * 16 * 48 * 4)
    y = torch.randn(2, 5, 3 * r[0], 3 * r[1])
    names = tuple(normalize_order(order, 2))
    expected = einops.rearrange(y, _einops_pattern(names, 2, False), rh=r[0], rw=r[1])
    assert torch.equal(space_to_depth(y, r, order), expected)
    assert torch.equal(depth_to_space(expected, r, order), y)
