"""Built-in receptive-field rules of the windowed ops: convolutions, transposed convolutions, pooling,
adaptive pooling, resampling, pixel (un)shuffle / depth-to-space / space-to-depth and padding.

Each op, as a module and as a function, is registered through :func:`~.registry.register_rf_rule`, exactly
like a user rule. torch's ``nn`` modules are leaves of the trace anyway (``leaf=False``); foldconv's layout
modules are made leaves so that the trace keeps them whole.

Example (a strided conv, then a pool: the field and the jump compose):
    >>> import torch
    >>> from foldconv.analysis.receptive_field import receptive_field
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, stride=2), torch.nn.MaxPool2d(2))
    >>> node = receptive_field(net, (1, 1, 32, 32)).output
    >>> node.rf, node.jump
    ((5, 5), (Fraction(4, 1), Fraction(4, 1)))
"""
from __future__ import annotations

import functools
from fractions import Fraction
from typing import Any, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..._validate import CONV_TRANSPOSE_TYPES, CONV_TYPES
from ...layout import DepthToSpace, SpaceToDepth, depth_to_space, space_to_depth
from .context import RuleContext
from .geometry import Adaptive, Geometry, Local, Regroup, Resample, Transposed
from .registry import register_rf_rule

__all__ = ["per_axis", "conv_geometry", "pool_geometry", "adaptive_geometry", "resample_geometry", "layout_geometry", "pad_geometry"]


def per_axis(value: Any, n: int) -> Tuple[int, ...]:
    """An int repeated ``n`` times, or a sequence as a tuple of ints (layer attributes, call arguments)."""
    if isinstance(value, (tuple, list)):
        return tuple(int(x) for x in value)
    return (int(value),) * n


def per_axis_float(value: Any, n: int) -> Tuple[float, ...]:
    """A scale factor per axis (a number repeated ``n`` times, or a sequence)."""
    if isinstance(value, (tuple, list)):
        return tuple(float(x) for x in value)
    return (float(value),) * n


def _conv_padding(padding: Any, kernel: Sequence[int], dilation: Sequence[int], n: int) -> Tuple[int, ...]:
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * n
        return tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))  # "same": torch puts the extra pixel right
    return per_axis(padding, n)


def conv_geometry(ctx: RuleContext, node, src, kernel, stride, padding, dilation, mode: str = "zeros", transposed: bool = False) -> Geometry:
    """A (transposed) convolution over the last ``len(kernel)`` dims; it mixes the channel dim."""
    nd = len(kernel)
    stride, dilation = per_axis(stride, nd), per_axis(dilation, nd)
    padding = _conv_padding(padding, kernel, dilation, nd)
    per = {}
    for i in range(nd):
        k = dilation[i] * (kernel[i] - 1) + 1
        if transposed and stride[i] > 1:
            per[-nd + i] = Transposed(k, stride[i], padding[i], dilation[i])
        elif transposed:
            per[-nd + i] = Local(k, 1, k - 1 - padding[i], dilation=dilation[i])
        else:
            per[-nd + i] = Local(k, stride[i], padding[i], mode, dilation[i])
    return ctx.spatial(node, src, per, mixes=(-nd - 1,))


def pool_geometry(ctx: RuleContext, node, src, nd: int, kernel, stride, padding, dilation=1) -> Geometry:
    """Max or average pooling (``stride=None`` means the kernel, as in torch): a conv's window."""
    kernel = per_axis(kernel, nd)
    stride = per_axis(stride if stride not in (None, ()) else kernel, nd)
    return conv_geometry(ctx, node, src, kernel, stride, per_axis(padding, nd), per_axis(dilation, nd))


def adaptive_geometry(ctx: RuleContext, node, src) -> Geometry:
    """Adaptive pooling: bins of the input; an exact division is an ordinary pooling window."""
    in_shape, out_shape = ctx.shape_of(src), ctx.output_shape(node)
    nd = len(in_shape) - 2 if len(in_shape) >= 3 else 1
    per = {}
    for i in range(1, nd + 1):
        n_in, n_out = in_shape[-i], out_shape[-i]
        per[-i] = Local(n_in // n_out, n_in // n_out, 0) if n_in % n_out == 0 else Adaptive(n_in, n_out)
    return ctx.spatial(node, src, per)


def resample_geometry(ctx: RuleContext, node, src, mode: str, align_corners: Any, scale: Any = None, recompute: Any = None) -> Geometry:
    """``F.interpolate`` / ``nn.Upsample``: integer nearest factors stay on a grid, others are resamplings
    (with torch's source step ``1/scale_factor`` when a scale factor is given and not recomputed)."""
    in_shape, out_shape = ctx.shape_of(src), ctx.output_shape(node)
    nd = len(in_shape) - 2
    scales = per_axis_float(scale, nd) if scale is not None and not recompute and not align_corners else None
    per = {}
    for i in range(1, len(in_shape) - 1):
        n_in, n_out = in_shape[-i], out_shape[-i]
        ratio = Fraction(1 / scales[-i]) if scales else Fraction(n_in, n_out)
        if ratio != Fraction(n_in, n_out):
            per[-i] = Resample(n_in, n_out, mode, bool(align_corners), ratio)
            continue
        if n_in == n_out and mode != "bicubic":
            continue
        if mode == "nearest" and n_out % n_in == 0:
            per[-i] = Regroup(1, n_out // n_in)
        elif mode == "nearest" and n_in % n_out == 0:
            per[-i] = Local(1, n_in // n_out, 0)
        elif mode == "area":
            per[-i] = Local(n_in // n_out, n_in // n_out, 0) if n_in % n_out == 0 else Adaptive(n_in, n_out)
        else:
            per[-i] = Resample(n_in, n_out, mode, bool(align_corners))
    return ctx.spatial(node, src, per)


def layout_geometry(ctx: RuleContext, node, src, r: Sequence[int], nd: int, to_space: bool) -> Geometry:
    """Depth-to-space (``to_space``) divides the jump by ``r``; space-to-depth is a ``k = s = r`` window
    that also mixes the channel dim."""
    per: dict = {-nd + i: (Regroup(1, f) if to_space else Local(f, f, 0)) for i, f in enumerate(r)}
    return ctx.spatial(node, src, per, mixes=(-nd - 1,) if not to_space else ())


def pad_geometry(ctx: RuleContext, node, src, pad: Any, mode: str) -> Geometry:
    """``F.pad`` order: ``(left, right)`` of the last dim first."""
    rank = len(ctx.shape_of(src))
    pad = per_axis(pad, 2 * (rank - 2)) if isinstance(pad, int) else tuple(pad)
    per: dict = {}
    for i in range(len(pad) // 2):
        left = pad[2 * i]
        if left or pad[2 * i + 1]:
            per[-1 - i] = Local(1, 1, left, mode)
    return ctx.spatial(node, src, per)


# ------------------------------------------------------------------------------------- module rules


def _conv_module(ctx: RuleContext, node) -> Geometry:
    m = ctx.module(node)
    return conv_geometry(ctx, node, ctx.first(node), m.kernel_size, m.stride, m.padding, m.dilation, m.padding_mode)


def _conv_transpose_module(ctx: RuleContext, node) -> Geometry:
    m = ctx.module(node)
    return conv_geometry(ctx, node, ctx.first(node), m.kernel_size, m.stride, m.padding, m.dilation, transposed=True)


def _pool_module(ctx: RuleContext, node, nd: int) -> Geometry:
    m = ctx.module(node)
    return pool_geometry(ctx, node, ctx.first(node), nd, m.kernel_size, m.stride, m.padding, getattr(m, "dilation", 1))


_PAD_MODES = {"Zero": "zeros", "Constant": "zeros", "Reflection": "reflect", "Replication": "replicate", "Circular": "circular"}

for _t in CONV_TYPES:
    register_rf_rule(_t, _conv_module, leaf=False)
for _t in CONV_TRANSPOSE_TYPES:
    register_rf_rule(_t, _conv_transpose_module, leaf=False)
for _nd, (_max, _avg) in enumerate(zip((nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d), (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)), 1):
    register_rf_rule(_max, functools.partial(_pool_module, nd=_nd), leaf=False)
    register_rf_rule(_avg, functools.partial(_pool_module, nd=_nd), leaf=False)
for _t in (nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d):
    register_rf_rule(_t, lambda ctx, node: adaptive_geometry(ctx, node, ctx.first(node)), leaf=False)
for _kind, _mode in _PAD_MODES.items():
    for _d in (1, 2, 3):
        _t = getattr(nn, f"{_kind}Pad{_d}d", None)
        if _t is not None:  # CircularPad*d is newer than torch 2.0
            register_rf_rule(_t, lambda ctx, node, mode=_mode: pad_geometry(ctx, node, ctx.first(node), ctx.module(node).padding, mode), leaf=False)
register_rf_rule(
    nn.Upsample,
    lambda ctx, node: resample_geometry(ctx, node, ctx.first(node), ctx.module(node).mode, ctx.module(node).align_corners,
                                        ctx.module(node).scale_factor, getattr(ctx.module(node), "recompute_scale_factor", None)),
    leaf=False,
)
register_rf_rule(nn.PixelShuffle, lambda ctx, node: layout_geometry(ctx, node, ctx.first(node), (ctx.module(node).upscale_factor,) * 2, 2, True), leaf=False)
register_rf_rule(
    nn.PixelUnshuffle, lambda ctx, node: layout_geometry(ctx, node, ctx.first(node), (ctx.module(node).downscale_factor,) * 2, 2, False), leaf=False
)
register_rf_rule(DepthToSpace, lambda ctx, node: layout_geometry(ctx, node, ctx.first(node), ctx.module(node).r, ctx.module(node).dims, True))
register_rf_rule(SpaceToDepth, lambda ctx, node: layout_geometry(ctx, node, ctx.first(node), ctx.module(node).r, ctx.module(node).dims, False))


# ----------------------------------------------------------------------------------- function rules


def _conv_function(ctx: RuleContext, node) -> Geometry:
    w = ctx.values[node.args[1] if len(node.args) > 1 else node.kwargs["weight"]]
    kernel = tuple(w[2:])
    transposed = "transpose" in node.target.__name__
    # conv(input, weight, bias, stride, padding, dilation, groups);
    # conv_transpose(input, weight, bias, stride, padding, output_padding, groups, dilation)
    dilation = ctx.arg(node, 7 if transposed else 5, "dilation", 1)
    return conv_geometry(ctx, node, ctx.first(node), kernel, ctx.arg(node, 3, "stride", 1), ctx.arg(node, 4, "padding", 0), dilation, transposed=transposed)


def _pool_function(ctx: RuleContext, node, nd: int) -> Geometry:
    # max_pool(input, kernel_size, stride, padding, dilation, ...); avg_pool has no dilation
    dilation = ctx.arg(node, 4, "dilation", 1) if "max" in node.target.__name__ else 1
    kernel, stride, padding = ctx.arg(node, 1, "kernel_size"), ctx.arg(node, 2, "stride"), ctx.arg(node, 3, "padding", 0)
    return pool_geometry(ctx, node, ctx.first(node), nd, kernel, stride, padding, dilation)


def _layout_function(ctx: RuleContext, node) -> Geometry:
    r = ctx.arg(node, 1, "r")
    nd = ctx.arg(node, 3, "dims", None)
    nd = nd if nd is not None else (len(r) if isinstance(r, (tuple, list)) else 2)
    return layout_geometry(ctx, node, ctx.first(node), per_axis(r, nd), nd, node.target is depth_to_space)


def _pad_function(ctx: RuleContext, node) -> Geometry:
    mode = ctx.arg(node, 2, "mode", "constant")
    return pad_geometry(ctx, node, ctx.first(node), ctx.arg(node, 1, "pad"), "zeros" if mode == "constant" else mode)


for _f in (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d):
    register_rf_rule(_f, _conv_function)
for _nd, _fs in enumerate(((F.max_pool1d, F.avg_pool1d), (F.max_pool2d, F.avg_pool2d), (F.max_pool3d, F.avg_pool3d)), 1):
    for _f in _fs:
        register_rf_rule(_f, functools.partial(_pool_function, nd=_nd))
for _f in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d):
    register_rf_rule(_f, lambda ctx, node: adaptive_geometry(ctx, node, ctx.first(node)))
for _f in (F.interpolate, F.upsample):
    register_rf_rule(_f, lambda ctx, node: resample_geometry(
        ctx, node, ctx.first(node), ctx.arg(node, 3, "mode", "nearest"), ctx.arg(node, 4, "align_corners", False),
        ctx.arg(node, 2, "scale_factor", None), ctx.arg(node, 5, "recompute_scale_factor", None)))
# dict.fromkeys: F.pixel_shuffle is torch.pixel_shuffle itself in the torch versions that alias it
for _f in dict.fromkeys((F.pixel_shuffle, torch.pixel_shuffle)):
    register_rf_rule(_f, lambda ctx, node: layout_geometry(ctx, node, ctx.first(node), (ctx.arg(node, 1, "upscale_factor"),) * 2, 2, True))
for _f in dict.fromkeys((F.pixel_unshuffle, torch.pixel_unshuffle)):
    register_rf_rule(_f, lambda ctx, node: layout_geometry(ctx, node, ctx.first(node), (ctx.arg(node, 1, "downscale_factor"),) * 2, 2, False))
for _f in (depth_to_space, space_to_depth):
    register_rf_rule(_f, _layout_function)
register_rf_rule(F.pad, _pad_function)
