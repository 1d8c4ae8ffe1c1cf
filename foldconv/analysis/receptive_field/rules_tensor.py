"""Built-in receptive-field rules of the tensor ops: elementwise ops, channel/feature mixing (linear, norms,
softmax), reductions, reshapes, permutes, indexing, einops ``Rearrange`` and torchvision's Swin helpers
(attention, concatenation, splits and matmul: :mod:`~.rules_attention`).

Every rule is registered through :func:`~.registry.register_rf_rule`, exactly like a user rule.

Example (a global pool reads the whole input):
    >>> import torch
    >>> from foldconv.analysis.receptive_field import receptive_field
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    >>> receptive_field(net, (1, 1, 8, 8)).output.rf
    (10, 10)
"""
from __future__ import annotations

import math
import operator
import re
from dataclasses import replace
from typing import Dict, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .context import RuleContext, placed
from .geometry import IDENTITY, Geometry, Local, Regroup, view_layout
from .registry import register_rf_rule
from .trace import UnsupportedOpError, no_rule

__all__ = ["mix_geometry", "reduce_geometry", "reshape_geometry", "permute_geometry", "getitem_geometry", "rearrange_geometry"]


def mix_geometry(ctx: RuleContext, node, src, dims: Sequence[int]) -> Geometry:
    """Same layout; every output reads the whole of the ``dims`` it mixes (linear, norms, softmax)."""
    return ctx.spatial(node, src, {}, mixes=dims)


def reduce_geometry(ctx: RuleContext, node, src, dims, keepdim: bool) -> Geometry:
    """``mean``/``sum``/``amax``... over ``dims`` (None: all), dropping them unless ``keepdim``."""
    rank = len(ctx.shape_of(src))
    dims = list(range(rank)) if dims is None else [dims] if isinstance(dims, int) else list(dims)
    dims = sorted({d % rank for d in dims})
    g = ctx.spatial(node, src, {}, mixes=dims)
    if keepdim:
        return g
    kept = [d for d in range(rank) if d not in dims]
    return ctx.moved(g, {d: k for k, d in enumerate(kept)})


def _reshape_groups(a: Sequence[int], b: Sequence[int]):
    """Pair groups of input dims and output dims with equal products (how a view regroups memory)."""
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        gi, gj = [], []
        pi = pj = 1
        if i < len(a):
            pi *= a[i]; gi.append(i); i += 1  # noqa: E702
        if j < len(b):
            pj *= b[j]; gj.append(j); j += 1  # noqa: E702
        while pi != pj:
            if pi < pj and i < len(a):
                pi *= a[i]; gi.append(i); i += 1  # noqa: E702
            elif j < len(b):
                pj *= b[j]; gj.append(j); j += 1  # noqa: E702
            elif i < len(a):
                pi *= a[i]; gi.append(i); i += 1  # noqa: E702
            else:
                break
        groups.append((gi, gj))
    return groups


def reshape_geometry(ctx: RuleContext, node, src) -> Geometry:
    """``view``/``reshape``/``flatten``...: a re-indexing of the row-major order, so an axis whose positions
    fall on whole digits of the new dims keeps them (exact, :func:`~.geometry.view_layout`); others are merged
    (a conservative hull)."""
    in_shape, out_shape = ctx.shape_of(src), ctx.output_shape(node)
    dim_map: Dict[int, Optional[int]] = {}
    merge: List[int] = []
    for gi, gj in _reshape_groups(in_shape, out_shape):
        big_i = [d for d in gi if in_shape[d] != 1]
        big_j = [d for d in gj if out_shape[d] != 1]
        for d in gi:
            if len(big_i) == 1 and len(big_j) == 1 and d == big_i[0]:
                dim_map[d] = big_j[0]
            elif in_shape[d] == 1 and len(big_i) == 0 and gj:
                dim_map[d] = gj[0]
                if len(gj) != 1:
                    merge.append(d)
            else:
                dim_map[d] = (big_j or gj or [None])[0]
                merge.append(d)
    g = ctx.relayout(node, src, dim_map, merge)
    axes, maps = [], list(g.links[0][1])
    for a in range(ctx.naxes):
        layout = ctx.layout_of(src, a)
        moved = view_layout(layout, in_shape, out_shape) if layout is not None else None
        if moved is None:
            axes.append((g.dims[a], g.merged[a], g.exact[a], g.layout(a)))
            continue
        maps[a], *axis = placed(moved, out_shape, ctx.records[src].geom.exact[a])
        axes.append(tuple(axis))
    return ctx.geometry([(src, maps)], axes)


def permute_geometry(ctx: RuleContext, node, src, perm: Sequence[int]) -> Geometry:
    """``permute``: output dim ``e`` is input dim ``perm[e]``."""
    rank = len(ctx.shape_of(src))
    return ctx.relayout(node, src, {p % rank: e for e, p in enumerate(perm)})


def _transpose(ctx: RuleContext, node, src, d0: int, d1: int) -> Geometry:
    rank = len(ctx.shape_of(src))
    perm = list(range(rank))
    perm[d0 % rank], perm[d1 % rank] = perm[d1 % rank], perm[d0 % rank]
    return permute_geometry(ctx, node, src, perm)


def getitem_geometry(ctx: RuleContext, node, src, index) -> Geometry:
    """Basic indexing of a tensor: slices are windows of size 1, integers select (and drop) a dim."""
    shape = ctx.shape_of(src)
    index = index if isinstance(index, tuple) else (index,)
    consuming = sum(1 for x in index if x is not None and x is not Ellipsis)
    per, dim_map = {}, {}
    d = e = 0
    for x in index:
        if x is Ellipsis:
            for _ in range(len(shape) - consuming):
                dim_map[d] = e; d += 1; e += 1  # noqa: E702
        elif x is None:
            e += 1
        elif isinstance(x, slice):
            start, _, step = x.indices(shape[d])
            if (start, step) != (0, 1):
                per[d] = Local(1, step, -start)
            dim_map[d] = e; d += 1; e += 1  # noqa: E702
        elif isinstance(x, int):
            per[d] = Local(1, 0, -(x % shape[d]))
            dim_map[d] = None; d += 1  # noqa: E702
        else:
            raise no_rule(node, f"advanced indexing with {type(x).__name__}")
    while d < len(shape):
        dim_map[d] = e; d += 1; e += 1  # noqa: E702
    return ctx.moved(ctx.spatial(node, src, per), dim_map)


def _parse_rearrange_side(side: str) -> List[List[str]]:
    groups: List[List[str]] = []
    cur: Optional[List[str]] = None
    for tok in re.findall(r"\(|\)|\.\.\.|\w+", side):
        if tok == "(":
            cur = []
        elif tok == ")":
            groups.append(cur or [])
            cur = None
        elif cur is not None:
            cur.append(tok)
        else:
            groups.append([tok])
    return groups


def rearrange_geometry(ctx: RuleContext, node, src, pattern: str, lengths: Dict[str, int]) -> Geometry:
    """einops ``Rearrange``: a dim whose major axis leads its output group is a (de)grouping window;
    anything else is a merge (conservative)."""
    left, right = (s.strip() for s in pattern.split("->"))
    in_shape, out_shape = ctx.shape_of(src), ctx.output_shape(node)

    def expand(groups, rank):
        out = []
        for g in groups:
            if g == ["..."]:
                out += [[f"...{i}"] for i in range(rank - len(groups) + 1)]
            elif "..." in g:
                raise UnsupportedOpError(f"pattern={pattern!r}: grouped ellipsis has no receptive-field rule", param="model", value=pattern)
            else:
                out.append(g)
        return out

    lg, rg = expand(_parse_rearrange_side(left), len(in_shape)), expand(_parse_rearrange_side(right), len(out_shape))
    sizes = dict(lengths)
    for g, n in zip(lg, in_shape):
        unknown = [x for x in g if x not in sizes]
        if len(unknown) == 1:
            sizes[unknown[0]] = n // math.prod(sizes[x] for x in g if x in sizes)
    where = {x: (gi, pos) for gi, g in enumerate(rg) for pos, x in enumerate(g)}
    rec = ctx.records[src]
    local_majors = {lg[rec.geom.dims[a]][0] for a in range(ctx.naxes) if rec.local(a)}
    per, dim_map, merge = {}, {}, []
    for d, g in enumerate(lg):
        e, pos = where[g[0]]
        dim_map[d] = e
        fi = math.prod(sizes[x] for x in g[1:])
        fo = math.prod(sizes[x] for x in rg[e][1:])
        if pos != 0 or any(x in local_majors for x in rg[e][1:]):
            merge.append(d)
        elif fi != 1 or fo != 1:
            per[d] = Regroup(fi, fo) if fo != 1 else Local(fi, fi, 0)
    windows = ctx.spatial(node, src, per)
    relaid = ctx.relayout(node, src, dim_map, merge)
    maps = tuple(m2 if m2 is not IDENTITY else m1 for m1, m2 in zip(windows.links[0][1], relaid.links[0][1]))
    # a window on the digits of a merged axis is a hull there (its known digits are not kept)
    hulled = [relaid.layout(a) is not None and windows.layout(a) is None for a in range(ctx.naxes)]
    digits = tuple(None if h else relaid.layout(a) for a, h in enumerate(hulled))
    return replace(relaid, links=((src, maps),), digits=digits if any(d is not None for d in digits) else (),
                   exact=tuple(e and w and not h for e, w, h in zip(relaid.exact, windows.exact, hulled)))


def _shifted_window_attention(ctx: RuleContext, node) -> Geometry:
    # torchvision Swin: attention inside (cyclically shifted) windows of the (B, H, W, C) map. A window
    # that wraps around the border makes the hull the whole axis, so report that, flagged inexact.
    src = ctx.first(node)
    g = ctx.spatial(node, src, {}, mixes=(-3, -2))
    dims_in = ctx.records[src].geom.dims
    exact = tuple(False if d is None and dims_in[a] is not None else e for a, (d, e) in enumerate(zip(g.dims, g.exact)))
    return replace(g, exact=exact, note="shifted-window attention: conservative whole-axis hull")


# ---------------------------------------------------------------------------------- registrations

_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.RReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Hardswish, nn.Hardsigmoid, nn.Sigmoid, nn.LogSigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Softsign,
    nn.Hardshrink, nn.Softshrink, nn.Tanhshrink, nn.Threshold, nn.Identity, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.FeatureAlphaDropout, nn.BatchNorm1d, nn.BatchNorm2d,
    nn.BatchNorm3d, nn.SyncBatchNorm, nn.LocalResponseNorm, nn.ChannelShuffle,
)
_POINTWISE_FUNCTIONS = (
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.floordiv, operator.pow,
    operator.iadd, operator.imul, torch.add, torch.sub, torch.mul, torch.div, torch.where, torch.maximum,
    torch.minimum, torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.exp, torch.abs, torch.neg,
    torch.sqrt, torch.rsqrt, torch.pow, torch.erf, F.relu, F.relu6, F.gelu, F.silu, F.hardswish,
    F.hardsigmoid, F.sigmoid, F.tanh, F.leaky_relu, F.elu, F.mish, F.dropout, F.dropout1d, F.dropout2d,
    F.dropout3d, F.batch_norm, F.hardtanh, F.softplus, F.local_response_norm, torch.channel_shuffle,
    torch.native_channel_shuffle, torch.clone, torch.Tensor.contiguous,
    "torchvision.ops.stochastic_depth.stochastic_depth",
    "torchvision.models.swin_transformer._patch_merging_pad",  # zero pad at the end of H and W, then a merge
)
_POINTWISE_METHODS = (
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "add", "add_", "mul", "mul_", "sub", "div", "clamp", "clamp_",
    "contiguous", "clone", "float", "double", "half", "to", "type_as", "exp", "abs", "neg", "sqrt", "pow",
    "masked_fill", "detach", "requires_grad_", "hardswish", "expand", "expand_as",
)
_NORMS_OVER_ALL = (nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)


def _pointwise(ctx: RuleContext, node) -> Geometry:
    return ctx.pointwise(node)


def _pointwise_first(ctx: RuleContext, node) -> Geometry:
    return ctx.pointwise(node, [ctx.first(node)])


def _mix_all_but_batch(ctx: RuleContext, node) -> Geometry:
    src = ctx.first(node)
    return mix_geometry(ctx, node, src, tuple(range(1, len(ctx.shape_of(src)))))


def _reshape(ctx: RuleContext, node) -> Geometry:
    return reshape_geometry(ctx, node, ctx.first(node))


def _reduce(ctx: RuleContext, node) -> Geometry:
    return reduce_geometry(ctx, node, ctx.first(node), ctx.arg(node, 1, "dim", None), ctx.arg(node, 2, "keepdim", False))


def _variance(ctx: RuleContext, node) -> Geometry:
    # torch.var/std(x, dim, unbiased, keepdim) or (x, dim, *, correction, keepdim), or (x, unbiased): a bool in
    # the second place is `unbiased`, and the third positional is never keepdim
    dim = ctx.arg(node, 1, "dim", None)
    dim = None if isinstance(dim, bool) else dim
    keepdim = ctx.val(node.args[3]) if len(node.args) > 3 else ctx.val(node.kwargs.get("keepdim", False))
    return reduce_geometry(ctx, node, ctx.first(node), dim, keepdim)


def _repeat_interleave(ctx: RuleContext, node) -> Geometry:
    # each element repeated r times in a row: output o reads o // r (nearest upsampling), on whatever dim
    repeats, dim = ctx.arg(node, 1, "repeats"), ctx.arg(node, 2, "dim", None)
    if isinstance(repeats, bool) or not isinstance(repeats, int) or repeats < 1 or not isinstance(dim, int):
        raise no_rule(node, f"repeat_interleave with repeats={repeats!r}, dim={dim!r} (only an int repeat along one dim)")
    return ctx.spatial(node, ctx.first(node), {dim: Regroup(1, repeats)})


def _softmax(ctx: RuleContext, node) -> Geometry:
    return mix_geometry(ctx, node, ctx.first(node), (ctx.arg(node, 1, "dim", -1),))


def _layer_norm(ctx: RuleContext, node) -> Geometry:
    shape = ctx.arg(node, 1, "normalized_shape")
    n = len(shape) if isinstance(shape, (tuple, list)) else 1
    return mix_geometry(ctx, node, ctx.first(node), tuple(range(-n, 0)))


def _permute_method(ctx: RuleContext, node) -> Geometry:
    first = ctx.val(node.args[1])
    perm = first if len(node.args) == 2 and isinstance(first, (tuple, list)) else ctx.val(node.args[1:])
    return permute_geometry(ctx, node, ctx.first(node), perm)


def _transpose_call(ctx: RuleContext, node) -> Geometry:
    return _transpose(ctx, node, ctx.first(node), ctx.arg(node, 1, "dim0"), ctx.arg(node, 2, "dim1"))


def _movedim(ctx: RuleContext, node) -> Geometry:
    src = ctx.first(node)
    rank = len(ctx.shape_of(src))
    source, dest = ctx.arg(node, 1, "source"), ctx.arg(node, 2, "destination")
    source = [s % rank for s in (source if isinstance(source, (tuple, list)) else (source,))]
    dest = [d % rank for d in (dest if isinstance(dest, (tuple, list)) else (dest,))]
    perm = [None] * rank
    for s, d in zip(source, dest):
        perm[d] = s
    rest = iter(d for d in range(rank) if d not in source)
    return permute_geometry(ctx, node, src, [p if p is not None else next(rest) for p in perm])


def _rearrange_module(ctx: RuleContext, node) -> Geometry:
    m = ctx.module(node)
    return rearrange_geometry(ctx, node, ctx.first(node), m.pattern, dict(getattr(m, "axes_lengths", {}) or {}))


for _t in _POINTWISE_MODULES:
    register_rf_rule(_t, _pointwise_first, leaf=False)
for _f in _POINTWISE_FUNCTIONS:
    register_rf_rule(_f, _pointwise)
for _m in _POINTWISE_METHODS:
    register_rf_rule(_m, _pointwise_first if _m.startswith("expand") else _pointwise)
for _t in _NORMS_OVER_ALL:
    register_rf_rule(_t, _mix_all_but_batch, leaf=False)
for _f in (F.group_norm, F.instance_norm):
    register_rf_rule(_f, _mix_all_but_batch)
register_rf_rule(nn.Linear, lambda ctx, node: mix_geometry(ctx, node, ctx.first(node), (-1,)), leaf=False)
register_rf_rule(F.linear, lambda ctx, node: mix_geometry(ctx, node, ctx.first(node), (-1,)))
register_rf_rule(nn.LayerNorm, lambda ctx, node: mix_geometry(ctx, node, ctx.first(node), tuple(range(-len(ctx.module(node).normalized_shape), 0))), leaf=False)
register_rf_rule(F.layer_norm, _layer_norm)
for _t in (nn.Softmax, nn.LogSoftmax):
    register_rf_rule(_t, lambda ctx, node: mix_geometry(ctx, node, ctx.first(node), (ctx.module(node).dim if ctx.module(node).dim is not None else -1,)), leaf=False)
for _f in (F.softmax, torch.softmax, F.log_softmax, torch.log_softmax, "softmax", "log_softmax"):
    register_rf_rule(_f, _softmax)
register_rf_rule(
    nn.MultiheadAttention, lambda ctx, node: mix_geometry(ctx, node, ctx.first(node), (1,) if ctx.module(node).batch_first else (0,)), leaf=False
)
for _t in (nn.Flatten, nn.Unflatten):
    register_rf_rule(_t, _reshape, leaf=False)
for _f in (torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze, "view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as", "unflatten"):
    register_rf_rule(_f, _reshape)
register_rf_rule(torch.permute, lambda ctx, node: permute_geometry(ctx, node, ctx.first(node), ctx.arg(node, 1, "dims")))
register_rf_rule("permute", _permute_method)
for _f in (torch.transpose, "transpose", torch.swapaxes, torch.swapdims, "swapaxes", "swapdims"):
    register_rf_rule(_f, _transpose_call)
for _f in (torch.movedim, torch.moveaxis, "movedim", "moveaxis"):
    register_rf_rule(_f, _movedim)
for _f in (torch.mean, torch.sum, torch.amax, torch.amin, "mean", "sum", "amax", "amin", "max", "min", "prod", "logsumexp", "norm"):
    register_rf_rule(_f, _reduce)
for _f in (torch.var, torch.std, "var", "std"):
    register_rf_rule(_f, _variance)
for _f in (torch.repeat_interleave, "repeat_interleave"):
    register_rf_rule(_f, _repeat_interleave)
register_rf_rule("torchvision.models.swin_transformer.shifted_window_attention", _shifted_window_attention)
try:
    from einops.layers.torch import Rearrange
except ImportError:  # einops is a dependency, but the analyzer itself does not need it
    Rearrange = None
if Rearrange is not None:
    register_rf_rule(Rearrange, _rearrange_module)
