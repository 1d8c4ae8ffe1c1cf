"""Receptive-field rules for timm's layers that ``torch.fx`` cannot trace (timm marks them "notrace"):
"same"-padded convolutions and poolings whose padding is computed from the input size, global attention
blocks, EfficientViT-M's window attention, VGG's convolutional head (``ConvMlp``), CrossViT's ``scale_image``
(a crop or a bicubic resize), TinyViT's block (a hull), and the window/grid reverse functions of Swin, MaxViT,
GCViT, DaViT and NesT (and Twins' windows over tokens).

timm stays optional: :func:`register_timm_rules` imports it only when the traced model already did (the
analysis calls it when ``timm`` is in ``sys.modules``). Exactness: the "same" convs and pools are *exact*
(TF's padding: ``max((ceil(n/s) - 1) s + (k - 1) d + 1 - n, 0)``, the smaller half on the left); GPSA
(ConViT) and LiteMLA (EfficientViT) attend over every token, and a MobileViT block whose convs span its patch
(or whose GroupNorm reads all positions, v2) reads every pixel: *global*, exact; EfficientViT-M's windows are
fixed blocks of the map, so each output's window is exact (a space-to-depth block); the window reverses replay
their views and permutes on the axes' digits (:func:`~.geometry.view_layout`), *exact* where the partitions kept
them, and Twins' windows over tokens read the block ``o // ws`` of each axis, *exact* likewise; where the digits
are not known, both are conservative whole-axis hulls (``exact=False``).
"""
from __future__ import annotations

import importlib
import math
from dataclasses import replace
from typing import Any, Tuple

from torch import nn

from .context import RuleContext, placed
from .geometry import IDENTITY, Geometry, Local, Regroup, view_layout
from .registry import register_rf_rule
from .rules_window import conv_geometry, per_axis, pool_geometry, resample_geometry
from .trace import no_rule

__all__ = ["same_padding", "register_timm_rules"]

_DONE = []


def same_padding(n: int, kernel: int, stride: int, dilation: int = 1) -> int:
    """Left padding of TF's "SAME" (timm's ``pad_same``): the total, halved, the extra pixel on the right.

    Example:
        >>> same_padding(224, 3, 2), same_padding(7, 3, 1), same_padding(8, 1, 2)
        (0, 1, 0)
    """
    total = max((math.ceil(n / stride) - 1) * stride + (kernel - 1) * dilation + 1 - n, 0)
    return total // 2


def _same_pads(ctx: RuleContext, node, m: Any, nd: int):
    size = ctx.shape_of(ctx.first(node))[-nd:]
    k, s, d = per_axis(m.kernel_size, nd), per_axis(m.stride if m.stride is not None else m.kernel_size, nd), per_axis(getattr(m, "dilation", 1), nd)
    return k, s, d, tuple(same_padding(n, ki, si, di) for n, ki, si, di in zip(size, k, s, d))


def _conv_same(ctx: RuleContext, node) -> Geometry:
    m = ctx.module(node)
    pads = _same_pads(ctx, node, m, len(m.kernel_size))[3] if getattr(m, "dynamic_padding", True) else m.padding
    k, s, d = m.kernel_size, m.stride, m.dilation
    g = conv_geometry(ctx, node, ctx.first(node), k, s, pads, d)
    # CondConv2d's routing weights (a global pool of the input) are a second tensor input: read whole
    extra = tuple((src, g.links[0][1]) for src in ctx.tensor_inputs(node)[1:])
    return replace(g, links=g.links + extra)


def _pool_same(ctx: RuleContext, node) -> Geometry:
    m = ctx.module(node)
    k, s, d, pads = _same_pads(ctx, node, m, 2)
    return pool_geometry(ctx, node, ctx.first(node), 2, k, s, pads, d)


def _global(ctx: RuleContext, node) -> Geometry:
    src = ctx.first(node)
    rec = ctx.records[src]
    mixed = sorted({rec.geom.dims[a] for a in range(ctx.naxes) if rec.geom.dims[a] is not None})
    return ctx.spatial(node, src, {}, mixes=mixed)


def _span(m: Any) -> Tuple[int, ...]:
    conv = getattr(m, "conv", m)
    if m is None:
        return (1, 1)
    if any(d != 1 for d in per_axis(conv.dilation, 2)):
        return (0, 0)  # dilated taps may skip residues: no claim
    return per_axis(conv.kernel_size, 2)


def _mobilevit(ctx: RuleContext, node) -> Geometry:
    # attention across patches, among the pixels at the same offset inside their patch; the kxk conv before
    # it (and the fusion conv after it) spread that over every offset when they span a patch, and
    # MobileViT-v2's GroupNorm over all positions reads every pixel: then every output reads the whole map
    m = ctx.module(node)
    patch = per_axis(m.patch_size, 2)
    spans = [k + f - 1 for k, f in zip(_span(m.conv_kxk), _span(getattr(m, "conv_fusion", None)))]
    if not isinstance(getattr(m, "norm", None), nn.GroupNorm) and any(s < p for s, p in zip(spans, patch)):
        raise no_rule(node, f"a MobileViT block whose convs (span {spans}) do not span its patch {patch} (it reads a "
                            "strided subset of pixels)")
    return _global(ctx, node)


#: The views and permutes of timm's window and grid reverses: the windows' view (from the window shape
#: ``(wh, ww)``, the map's ``(H, W)`` and ``C``) and the permute before the final view to the map.
_REVERSES = {
    "window_reverse": (lambda h, w, wh, ww, c: (-1, h // wh, w // ww, wh, ww, c), (0, 1, 3, 2, 4, 5)),
    "grid_reverse": (lambda h, w, gh, gw, c: (-1, h // gh, w // gw, gh, gw, c), (0, 3, 1, 4, 2, 5)),
    "window_reverse_nchw": (lambda h, w, wh, ww, c: (-1, h // wh, w // ww, c, wh, ww), (0, 3, 1, 4, 2, 5)),
    "grid_reverse_nchw": (lambda h, w, gh, gw, c: (-1, h // gh, w // gw, c, gh, gw), (0, 3, 4, 1, 5, 2)),
    "deblockify": None,
}


def _replayed(ctx: RuleContext, node, src, steps) -> Geometry:
    """The geometry of a chain of views (a shape) and permutes (a tuple of dims) applied to ``src``: exact where
    every axis's digits survive each step (:func:`~.geometry.view_layout`), else None."""
    axes, shape0 = [], ctx.shape_of(src)
    for a in range(ctx.naxes):
        layout, shape = ctx.layout_of(src, a), shape0
        if layout is None:
            if ctx.records[src].geom.dims[a] is not None:
                return None
            axes.append((None, False, ctx.records[src].geom.exact[a], None))
            continue
        for kind, arg in steps:
            if layout is None:
                return None
            if kind == "view":
                arg = tuple(math.prod(shape) // -math.prod(arg) if n == -1 else n for n in arg)
                layout, shape = view_layout(layout, shape, arg), arg
            else:
                layout, shape = tuple((arg.index(d), i, n) for d, i, n in layout), tuple(shape[d] for d in arg)
        if layout is None:
            return None
        axes.append(placed(layout, shape, ctx.records[src].geom.exact[a])[1:])
    return ctx.geometry([(src, [IDENTITY] * ctx.naxes)], axes)


def _window_reverse(ctx: RuleContext, node) -> Geometry:
    # windows (B*nW, wh, ww, C) back to the grid: the views and permutes the function does, replayed on the axes'
    # digits (exact); where they are not known, merged axes stay merged (a conservative hull)
    src = ctx.first(node)
    out, shape = ctx.output_shape(node), ctx.shape_of(src)
    name = getattr(node.target, "__name__", "")
    nchw = name.endswith("_nchw")
    if name == "deblockify":  # (B, T, N, C) -> (B, g, g, bs, bs, C) -> transpose(2, 3) -> (B, H, W, C)
        g_, bs = math.isqrt(shape[1]), out[1] // max(math.isqrt(shape[1]), 1)
        steps = [("view", (shape[0], g_, g_, bs, bs, shape[-1])), ("permute", (0, 1, 3, 2, 4, 5)), ("view", out)]
    elif name in _REVERSES:
        view, perm = _REVERSES[name]
        h, w, c = (out[2], out[3], out[1]) if nchw else (out[1], out[2], out[3])
        wh, ww = (shape[2], shape[3]) if nchw else (shape[1], shape[2])
        steps = [("view", view(h, w, wh, ww, c)), ("permute", perm), ("view", out)]
    else:
        steps = None
    exact = _replayed(ctx, node, src, steps) if steps and len(out) == 4 else None
    if exact is not None:
        return exact
    first = 2 if nchw or len(out) > 4 else 1
    g = ctx.spatial(node, src, {})
    dims = tuple(None if d is None else first + a for a, d in enumerate(g.dims))
    return replace(g, dims=dims, merged=tuple(d is not None for d in dims), digits=(), exact=tuple(e and d is None for e, d in zip(g.exact, dims)),
                   note="window reverse: conservative whole-axis hull")


def _conv_mlp(ctx: RuleContext, node) -> Geometry:
    # VGG's head: fc1 (a k x k conv), then a 1x1 conv. An axis shorter than k is first average-pooled up to k
    # (adaptive bins cover every input), so the valid k-conv's single output on it reads that whole axis.
    m = ctx.module(node)
    fc1, fc2, k = m.fc1, m.fc2, m.input_kernel_size
    src = ctx.first(node)
    plain = type(fc1) is nn.Conv2d and type(fc2) is nn.Conv2d
    if not plain or per_axis(fc2.kernel_size, 2) != (1, 1) or per_axis(fc2.stride, 2) != (1, 1) or per_axis(fc2.padding, 2) != (0, 0):
        raise no_rule(node, "a ConvMlp whose convs are not a plain k x k conv then a 1x1 conv")
    size = ctx.shape_of(src)[-2:]
    if all(n >= k for n in size):
        return conv_geometry(ctx, node, src, fc1.kernel_size, fc1.stride, fc1.padding, fc1.dilation)
    if per_axis(fc1.kernel_size, 2) != (k, k) or per_axis(fc1.padding, 2) != (0, 0) or per_axis(fc1.dilation, 2) != (1, 1):
        raise no_rule(node, f"a ConvMlp pooling an input of size {tuple(size)} up to {k} before a "
                      "padded or dilated conv")
    stride = per_axis(fc1.stride, 2)
    per = {-2 + i: Local(n, 1, 0) if n < k else Local(k, stride[i], 0) for i, n in enumerate(size)}
    return ctx.spatial(node, src, per, mixes=(-3,))


def _scale_image(ctx: RuleContext, node) -> Geometry:
    # CrossViT brings the image to each branch's size: as it is, a centre crop (crop_scale) or bicubic resizing
    src = ctx.first(node)
    ss, crop = tuple(ctx.arg(node, 1, "ss")), ctx.arg(node, 2, "crop_scale", False)
    h, w = ctx.shape_of(src)[-2:]
    if (h, w) == ss:
        return ctx.spatial(node, src, {})
    if crop and ss[0] <= h and ss[1] <= w:
        top, left = int(round((h - ss[0]) / 2.0)), int(round((w - ss[1]) / 2.0))
        return ctx.spatial(node, src, {-2: Local(1, 1, -top), -1: Local(1, 1, -left)})
    return resample_geometry(ctx, node, src, "bicubic", False)


def _local_window_attention(ctx: RuleContext, node) -> Geometry:
    # EfficientViT (MSRA): attention (with a depthwise conv on the queries) inside ws x ws windows of the
    # zero-padded map; every output reads its whole window, the window o // ws; one window: the whole map
    m = ctx.module(node)
    ws = m.attn.resolution
    src = ctx.first(node)
    if tuple(ctx.shape_of(src)[-2:]) == (ws, ws):
        return _global(ctx, node)
    return ctx.spatial(node, src, {-2: Regroup(ws, ws), -1: Regroup(ws, ws)}, mixes=(-3,))


def _windows_over_tokens(ctx: RuleContext, node) -> Geometry:
    # Twins' locally grouped attention: ws x ws windows of a (B, N, C) token sequence whose grid is merged into N
    # (the map zero-padded to whole windows): every token reads its window, the block o // ws of each axis,
    # exact where the axes' digits are known; otherwise the merged axes stay a conservative whole-axis hull
    m = ctx.module(node)
    src = ctx.first(node)
    g = ctx.spatial(node, src, {})
    ws = getattr(m, "ws", None)
    rec = ctx.records[src]
    if isinstance(ws, int) and all(rec.geom.dims[a] is None or (g.layout(a) is not None and len({d for d, _, _ in g.layout(a)}) == 1)
                                   for a in range(ctx.naxes)):
        maps = tuple(Regroup(ws, ws) if g.layout(a) is not None else mp for a, mp in enumerate(g.links[0][1]))
        return replace(g, links=((src, maps),))
    return replace(g, exact=tuple(e and not mg for e, mg in zip(g.exact, g.merged)))


def _tiny_vit_block(ctx: RuleContext, node) -> Geometry:
    # TinyViT: attention in ws x ws windows of the padded map (plus the shortcut), then a stride-1 depthwise
    # conv (k, padding p), then an MLP. A conv tap a in [o - p, o - p + k - 1] reads a's window, which lies in
    # [a - (ws - 1), a + ws - 1]: a window of k + 2 (ws - 1) at padding p + ws - 1 holds all of it (a hull:
    # which windows are read depends on o mod ws). One window over the whole map: every output reads it all.
    m = ctx.module(node)
    ws, conv = m.window_size, m.local_conv.conv
    src = ctx.first(node)
    shape, dims = ctx.shape_of(src), [d for d in ctx.records[src].geom.dims if d is not None]  # (B, H, W, C)
    if all(shape[d] == ws for d in dims):
        return _global(ctx, node)
    if per_axis(conv.stride, 2) != (1, 1) or per_axis(conv.dilation, 2) != (1, 1):
        raise no_rule(node, "a TinyVitBlock with a strided or dilated local conv")
    k, p = per_axis(conv.kernel_size, 2), per_axis(conv.padding, 2)
    g = ctx.spatial(node, src, {d: Local(k[i] + 2 * (ws - 1), 1, p[i] + ws - 1) for i, d in enumerate(dims)}, mixes=(-1,))
    return replace(g, exact=tuple(e and d is None for e, d in zip(g.exact, g.dims)))


def register_timm_rules() -> None:
    """Register the rules of timm's untraceable layers (once; nothing when timm is not installed).

    Example:
        >>> register_timm_rules()
    """
    if _DONE:
        return
    _DONE.append(True)
    try:
        import timm  # noqa: F401
    except ImportError:
        return
    for module, name, rule in (("timm.layers.conv2d_same", "Conv2dSame", _conv_same), ("timm.layers.std_conv", "StdConv2dSame", _conv_same),
                               ("timm.layers.std_conv", "ScaledStdConv2dSame", _conv_same), ("timm.layers.cond_conv2d", "CondConv2d", _conv_same),
                               ("timm.layers.pool2d_same", "AvgPool2dSame", _pool_same), ("timm.layers.pool2d_same", "MaxPool2dSame", _pool_same)):
        try:
            register_rf_rule(getattr(importlib.import_module(module), name), rule)
        except (ImportError, AttributeError):
            continue
    for module, name, rule in (("timm.models.convit", "GPSA", _global), ("timm.models.efficientvit_mit", "LiteMLA", _global),
                               ("timm.models.mobilevit", "MobileVitBlock", _mobilevit), ("timm.models.mobilevit", "MobileVitV2Block", _mobilevit),
                               ("timm.models.vgg", "ConvMlp", _conv_mlp),
                               ("timm.models.efficientvit_msra", "LocalWindowAttention", _local_window_attention),
                               ("timm.models.twins", "LocallyGroupedAttn", _windows_over_tokens),
                               ("timm.models.tiny_vit", "TinyVitBlock", _tiny_vit_block)):
        try:
            register_rf_rule(getattr(importlib.import_module(module), name), rule)
        except (ImportError, AttributeError):
            continue
    register_rf_rule("timm.models.crossvit.scale_image", _scale_image)
    for module in ("swin_transformer", "swin_transformer_v2", "swin_transformer_v2_cr", "gcvit", "davit", "maxxvit"):
        for fn in ("window_reverse", "grid_reverse", "window_reverse_nchw", "grid_reverse_nchw"):
            register_rf_rule(f"timm.models.{module}.{fn}", _window_reverse)
    register_rf_rule("timm.models.nest.deblockify", _window_reverse)  # NesT's blocks (B, T, N, C) back to (B, H, W, C)
