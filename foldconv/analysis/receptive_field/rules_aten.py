"""Built-in receptive-field rules of aten operations (the graphs of :mod:`~.aten`): the same geometry as the
module and function rules (:mod:`~.rules_window`, :mod:`~.rules_tensor`, :mod:`~.rules_attention`), read
from the operations' schema arguments.

A rule is registered for an operation's overload packet (``torch.ops.aten.convolution``), which covers every
overload; an operation tagged ``pointwise`` by torch needs none (:func:`aten_rule`). Exactness: windows,
views, permutes, slices, concatenations, matrix products and attention are exact as their function rules
are; operations that read data-dependent or scattered positions (``index``, ``gather``, ``index_select``,
``flip``, ``cumsum``, ``sort``, ``as_strided``, writes into a view...) are conservative whole-axis hulls
(``exact=False``) along the dims they touch.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any, Dict, Optional, Sequence

import torch
import torch.fx as fx

from .aten import aliased
from .context import RuleContext
from .geometry import IDENTITY, Geometry, Local, Whole
from .registry import RF_RULES, Rule, register_rf_rule
from .rules_attention import attention_geometry, combine_geometries, concat_rule, roll_geometry
from .rules_tensor import mix_geometry, permute_geometry, reduce_geometry, reshape_geometry
from .rules_window import adaptive_geometry, conv_geometry, layout_geometry, pad_geometry, pool_geometry, resample_geometry

__all__ = ["aten_rule", "hull_geometry", "fuse_matmuls"]

A = torch.ops.aten


def aten_rule(target: Any, rules: Any = RF_RULES) -> Optional[Rule]:
    """The rule of an aten operation in ``rules``: by overload, then packet; an operation torch tags ``pointwise``
    (and its in-place twin) is elementwise. None when there is none.

    Example:
        >>> aten_rule(torch.ops.aten.gelu.default) is not None, aten_rule(torch.ops.aten.convolution.default) is not None
        (True, True)
    """
    packet = getattr(target, "overloadpacket", None)
    if packet is None:
        return None
    rule = rules.find(target) or rules.find(packet)
    if rule is not None:
        return rule
    if torch.Tag.pointwise in getattr(target, "tags", ()):
        return _pointwise
    name = packet.__name__
    twin = getattr(A, name[:-1], None) if name.endswith("_") else None
    if twin is not None and any(torch.Tag.pointwise in getattr(twin, o).tags for o in twin.overloads()):
        return _pointwise
    return None


def hull_geometry(ctx: RuleContext, node, src, dims: Sequence[int]) -> Geometry:
    """A conservative hull: every output reads the whole of ``dims`` of ``src`` (``exact=False`` on the axes there)."""
    rank = len(ctx.shape_of(src))
    dims = {d % rank for d in dims}
    g = ctx.spatial(node, src, {}, mixes=tuple(dims))
    rec = ctx.records[src]
    touched = [rec.geom.dims[a] in dims for a in range(ctx.naxes)]
    return replace(g, exact=tuple(e and not t for e, t in zip(g.exact, touched)), note="conservative hull (data-dependent positions)")


def _arg(ctx: RuleContext, node, index: int, name: str, default: Any = None) -> Any:
    return ctx.arg(node, index, name, default)


def _tracked(ctx: RuleContext, node, x: Any) -> bool:
    return isinstance(x, fx.Node) and x in ctx.tensor_inputs(node)


def _pointwise(ctx: RuleContext, node) -> Geometry:
    return ctx.pointwise(node)


def _pointwise_first(ctx: RuleContext, node) -> Geometry:
    return ctx.pointwise(node, [ctx.first(node)])


def _copy(ctx: RuleContext, node) -> Geometry:
    # copy(self, src) / copy_: the values are src's (broadcast); a constant copied into a tracked tensor keeps its layout
    src = node.args[1] if len(node.args) > 1 else node.kwargs.get("src")
    return ctx.pointwise(node, [src] if _tracked(ctx, node, src) else [ctx.first(node)])


def _aliased(ctx: RuleContext, node) -> Geometry:
    base, writes = node.args[0], [w for w in node.args[1:] if _tracked(ctx, node, w)]
    parts = [ctx.pointwise(node, [base])] if _tracked(ctx, node, base) else []
    g = parts[0] if parts else None
    links = list(g.links) if g else []
    for w in writes:
        rec = ctx.records[w]
        maps = tuple(Whole(rec.positions(a)) if rec.local(a) else IDENTITY for a in range(ctx.naxes))
        links.append((w, maps))
    if g is None:  # a constant written into (a fresh buffer filled through a view): the layout of a write of its rank
        rank = len(ctx.output_shape(node))
        like = next((ctx.records[w].geom for w in writes if len(ctx.shape_of(w)) == rank), None)
        dims = like.dims if like else (None,) * ctx.naxes
        merged = like.merged if like else (False,) * ctx.naxes
    else:
        dims, merged = g.dims, g.merged
    return Geometry(tuple(links), dims, merged, (False,) * ctx.naxes, note="read after a write into shared memory: conservative hull")


def _conv(ctx: RuleContext, node) -> Geometry:
    # convolution(input, weight, bias, stride, padding, dilation, transposed, output_padding, groups)
    weight = node.args[1]
    kernel = tuple(ctx.values[weight][2:])
    g = conv_geometry(ctx, node, node.args[0], kernel, _arg(ctx, node, 3, "stride", 1), _arg(ctx, node, 4, "padding", 0),
                      _arg(ctx, node, 5, "dilation", 1), transposed=bool(_arg(ctx, node, 6, "transposed", False)))
    extra = [s for s in ctx.tensor_inputs(node) if s is not node.args[0]]  # weights or bias computed from the input
    if not extra:
        return g
    parts = [g] + [hull_geometry(ctx, node, s, range(len(ctx.shape_of(s)))) for s in extra]
    return Geometry(tuple(lk for p in parts for lk in p.links), g.dims, g.merged, tuple(all(p.exact[a] for p in parts) for a in range(ctx.naxes)))


def _max_pool(nd: int) -> Rule:
    def rule(ctx: RuleContext, node) -> Geometry:
        kernel = _arg(ctx, node, 1, "kernel_size")
        stride = _arg(ctx, node, 2, "stride", None) or kernel
        return pool_geometry(ctx, node, node.args[0], nd, kernel, stride, _arg(ctx, node, 3, "padding", 0), _arg(ctx, node, 4, "dilation", 1))
    return rule


def _avg_pool(nd: int) -> Rule:
    def rule(ctx: RuleContext, node) -> Geometry:
        kernel = _arg(ctx, node, 1, "kernel_size")
        stride = _arg(ctx, node, 2, "stride", None) or kernel
        return pool_geometry(ctx, node, node.args[0], nd, kernel, stride, _arg(ctx, node, 3, "padding", 0))
    return rule


def _upsample(mode: str, has_align: bool) -> Rule:
    def rule(ctx: RuleContext, node) -> Geometry:
        src = node.args[0]
        nd = len(ctx.shape_of(src)) - 2
        align = bool(_arg(ctx, node, 2, "align_corners", False)) if has_align else False
        first = 3 if has_align else 2
        if getattr(node.target, "_overloadname", "") == "vec":  # (input, output_size, [align_corners,] scale_factors)
            scales = _arg(ctx, node, first, "scale_factors", None)
        else:  # (input, output_size, [align_corners,] scales per axis)
            scales = [_arg(ctx, node, first + i, f"scales_{i}", None) for i in range(nd)]
            scales = None if any(s is None for s in scales) else scales
        return resample_geometry(ctx, node, src, mode, align, scales, None)
    return rule


def _pad(mode: str) -> Rule:
    return lambda ctx, node: pad_geometry(ctx, node, node.args[0], _arg(ctx, node, 1, "pad" if mode == "zeros" else "padding"), mode)


def _slice(ctx: RuleContext, node) -> Geometry:
    src = node.args[0]
    shape = ctx.shape_of(src)
    dim = _arg(ctx, node, 1, "dim", 0) % len(shape)
    start, end, step = _arg(ctx, node, 2, "start", None), _arg(ctx, node, 3, "end", None), _arg(ctx, node, 4, "step", 1)
    start, _, step = slice(start, end, step).indices(shape[dim])
    return ctx.spatial(node, src, {dim: Local(1, step, -start)} if (start, step) != (0, 1) else {})


def _select(ctx: RuleContext, node) -> Geometry:
    src = node.args[0]
    rank = len(ctx.shape_of(src))
    dim = _arg(ctx, node, 1, "dim") % rank
    index = _arg(ctx, node, 2, "index") % ctx.shape_of(src)[dim]
    g = ctx.spatial(node, src, {dim: Local(1, 0, -index)})
    return ctx.moved(g, {d: (None if d == dim else d if d < dim else d - 1) for d in range(rank)})


def _unfold(ctx: RuleContext, node) -> Geometry:
    # unfold(self, dimension, size, step): windows along `dimension`; a window's offsets become a new last dim
    src = node.args[0]
    dim = _arg(ctx, node, 1, "dimension") % len(ctx.shape_of(src))
    g = ctx.spatial(node, src, {dim: Local(_arg(ctx, node, 2, "size"), _arg(ctx, node, 3, "step"), 0)})
    rec = ctx.records[src]
    return replace(g, exact=tuple(e and rec.geom.dims[a] != dim for a, e in enumerate(g.exact)),
                   note="unfold: the window's offsets sit on a dim of their own (a hull per window)")


def _im2col(ctx: RuleContext, node) -> Geometry:
    # im2col(self, kernel_size, dilation, padding, stride) -> (N, C*k*k, L): windows, then every position merged into L
    src = node.args[0]
    kernel = tuple(_arg(ctx, node, 1, "kernel_size"))
    g = conv_geometry(ctx, node, src, kernel, _arg(ctx, node, 4, "stride"), _arg(ctx, node, 3, "padding"), _arg(ctx, node, 2, "dilation"))
    local = [g.dims[a] is not None and len(ctx.shape_of(src)) - g.dims[a] <= len(kernel) for a in range(ctx.naxes)]
    rank_out = len(ctx.output_shape(node))
    return replace(g, dims=tuple(rank_out - 1 if loc else d for loc, d in zip(local, g.dims)), digits=(),
                   merged=tuple(loc or m for loc, m in zip(local, g.merged)), exact=tuple(e and not loc for loc, e in zip(local, g.exact)))


def _mm(ctx: RuleContext, node, a, b, bias=None) -> Geometry:
    parts = []
    if _tracked(ctx, node, a):
        parts.append(ctx.spatial(node, a, {}, mixes=(-1,)))
    if _tracked(ctx, node, b):
        parts.append(ctx.spatial(node, b, {}, mixes=(-2,)))
    if bias is not None and _tracked(ctx, node, bias):
        parts.append(ctx.pointwise(node, [bias]))
    return combine_geometries(ctx, parts)


def _sdpa(ctx: RuleContext, node) -> Geometry:
    q, k, v = (x if _tracked(ctx, node, x) else None for x in node.args[:3])
    g = attention_geometry(ctx, node, q, k, v)
    mask = node.kwargs.get("attn_mask", node.args[3] if len(node.args) > 3 and isinstance(node.args[3], fx.Node) else None)
    if _tracked(ctx, node, mask):
        extra = ctx.spatial(node, mask, {}, mixes=(-2, -1))
        g = Geometry(g.links + extra.links, g.dims, g.merged, tuple(x and y for x, y in zip(g.exact, extra.exact)))
    return g


def _dims_arg(ctx: RuleContext, node, index: int, name: str):
    dims = _arg(ctx, node, index, name, None)
    return None if dims in (None, [], ()) else dims


def _reduce(ctx: RuleContext, node) -> Geometry:
    if node.target.overloadpacket in (A.sum, A.mean, A.amax, A.amin, A.max, A.min, A.prod, A.any, A.all) and len(node.args) == 1 \
            and "dim" not in node.kwargs:
        return reduce_geometry(ctx, node, node.args[0], None, False)
    return reduce_geometry(ctx, node, node.args[0], _dims_arg(ctx, node, 1, "dim"), _arg(ctx, node, 2, "keepdim", False))


def _var(ctx: RuleContext, node) -> Geometry:
    # var.correction(self, dim=None, *, correction=None, keepdim=False); var.dim(self, dim, unbiased, keepdim)
    keep = node.kwargs.get("keepdim", node.args[3] if len(node.args) > 3 else False)
    return reduce_geometry(ctx, node, node.args[0], _dims_arg(ctx, node, 1, "dim"), ctx.val(keep))


def _norm(ctx: RuleContext, node) -> Geometry:
    # linalg_vector_norm(self, ord, dim, keepdim); norm.ScalarOpt_dim(self, p, dim, keepdim)
    return reduce_geometry(ctx, node, node.args[0], _dims_arg(ctx, node, 2, "dim"), _arg(ctx, node, 3, "keepdim", False))


def _along(index: int, name: str, conservative: bool = False) -> Rule:
    def rule(ctx: RuleContext, node) -> Geometry:
        src = ctx.first(node)
        dim = _arg(ctx, node, index, name, -1)
        if src is not node.args[0]:  # only the index depends on the input: where it reads is data-dependent
            return hull_geometry(ctx, node, src, range(len(ctx.shape_of(src))))
        return hull_geometry(ctx, node, src, (dim,)) if conservative else mix_geometry(ctx, node, src, (dim,))
    return rule


def _hull_all(ctx: RuleContext, node) -> Geometry:
    parts = [hull_geometry(ctx, node, s, range(len(ctx.shape_of(s)))) for s in ctx.tensor_inputs(node)]
    return combine_geometries(ctx, parts)


def _index(ctx: RuleContext, node) -> Geometry:
    # index.Tensor(self, indices): one index tensor on one dim keeps the layout; anything else reads everything
    src, indices = node.args[0], list(node.args[1])
    if not _tracked(ctx, node, src) or any(_tracked(ctx, node, i) for i in indices if isinstance(i, fx.Node)):
        return _hull_all(ctx, node)
    used = [d for d, i in enumerate(indices) if i is not None]
    shape, out = ctx.shape_of(src), ctx.output_shape(node)
    if len(used) == 1 and len(out) == len(shape) and len(ctx.values[indices[used[0]]]) == 1:
        return hull_geometry(ctx, node, src, used)
    return _hull_all(ctx, node)


def _index_put(ctx: RuleContext, node) -> Geometry:
    src = node.args[0]
    base = ctx.pointwise(node, [src]) if _tracked(ctx, node, src) else None
    others = [s for s in ctx.tensor_inputs(node) if s is not src]
    links = list(base.links) if base else []
    for s in others:
        links.extend(hull_geometry(ctx, node, s, range(len(ctx.shape_of(s)))).links)
    dims = base.dims if base else (None,) * ctx.naxes
    return Geometry(tuple(links), dims, base.merged if base else (False,) * ctx.naxes, (False,) * ctx.naxes,
                    note="a write at data-dependent positions: conservative hull")


def _stack(ctx: RuleContext, node) -> Geometry:
    """``stack``: each input gets the new dim; an axis that an input had selected one position of (``unbind``, ``select``)
    and that is stacked back is a conservative hull (``exact=False``): the pieces' positions are not an index map."""
    inputs = ctx.tensor_inputs(node)
    rank = len(ctx.output_shape(node))
    dim = _arg(ctx, node, 1, "dim", 0) % rank
    g = combine_geometries(ctx, [ctx.moved(ctx.spatial(node, s, {}), {d: (d if d < dim else d + 1) for d in range(rank - 1)}) for s in inputs])
    picked = [any(ctx.records[s].geom.dims[a] is None and any(ctx.records[src].local(a) for src, _ in ctx.records[s].geom.links)
                  for s in inputs) for a in range(ctx.naxes)]
    return replace(g, exact=tuple(e and not p for e, p in zip(g.exact, picked)))


def _expand(ctx: RuleContext, node) -> Geometry:
    return ctx.pointwise(node, [node.args[0]])


def _view(ctx: RuleContext, node) -> Geometry:
    return reshape_geometry(ctx, node, node.args[0])


def _permute(ctx: RuleContext, node) -> Geometry:
    return permute_geometry(ctx, node, node.args[0], _arg(ctx, node, 1, "dims"))


def _transpose(ctx: RuleContext, node) -> Geometry:
    src = node.args[0]
    rank = len(ctx.shape_of(src))
    d0, d1 = (_arg(ctx, node, 1, "dim0", 0) % rank, _arg(ctx, node, 2, "dim1", 1) % rank) if rank > 1 else (0, 0)
    perm = list(range(rank))
    perm[d0], perm[d1] = perm[d1], perm[d0]
    return permute_geometry(ctx, node, src, perm)


def _layer_norm(ctx: RuleContext, node) -> Geometry:
    return mix_geometry(ctx, node, node.args[0], tuple(range(-len(_arg(ctx, node, 1, "normalized_shape")), 0)))


def _group_norm(ctx: RuleContext, node) -> Geometry:
    return mix_geometry(ctx, node, node.args[0], tuple(range(1, len(ctx.shape_of(node.args[0])))))


def _softmax(ctx: RuleContext, node) -> Geometry:
    return mix_geometry(ctx, node, node.args[0], (_arg(ctx, node, 1, "dim", -1),))


def _adaptive(ctx: RuleContext, node) -> Geometry:
    return adaptive_geometry(ctx, node, node.args[0])


def _layout(to_space: bool) -> Rule:
    return lambda ctx, node: layout_geometry(ctx, node, node.args[0], (_arg(ctx, node, 1, "upscale_factor" if to_space else "downscale_factor"),) * 2, 2, to_space)


def _roll(ctx: RuleContext, node) -> Geometry:
    return roll_geometry(ctx, node, node.args[0], _arg(ctx, node, 1, "shifts"), _arg(ctx, node, 2, "dims", None))


_RULES: Dict[Any, Rule] = {
    aliased: _aliased,
    A.convolution: _conv, A._convolution: _conv,
    A.max_pool1d: _max_pool(1), A.max_pool2d: _max_pool(2), A.max_pool3d: _max_pool(3),
    A.max_pool1d_with_indices: _max_pool(1), A.max_pool2d_with_indices: _max_pool(2), A.max_pool3d_with_indices: _max_pool(3),
    A.avg_pool1d: _avg_pool(1), A.avg_pool2d: _avg_pool(2), A.avg_pool3d: _avg_pool(3),
    A._adaptive_avg_pool2d: _adaptive, A._adaptive_avg_pool3d: _adaptive, A.adaptive_avg_pool1d: _adaptive,
    A.adaptive_max_pool1d: _adaptive, A.adaptive_max_pool2d: _adaptive, A.adaptive_max_pool3d: _adaptive,
    A.constant_pad_nd: _pad("zeros"),
    A.reflection_pad1d: _pad("reflect"), A.reflection_pad2d: _pad("reflect"), A.reflection_pad3d: _pad("reflect"),
    A.replication_pad1d: _pad("replicate"), A.replication_pad2d: _pad("replicate"), A.replication_pad3d: _pad("replicate"),
    A.upsample_nearest1d: _upsample("nearest", False), A.upsample_nearest2d: _upsample("nearest", False),
    A.upsample_nearest3d: _upsample("nearest", False), A._upsample_nearest_exact1d: _upsample("nearest-exact", False),
    A._upsample_nearest_exact2d: _upsample("nearest-exact", False), A._upsample_nearest_exact3d: _upsample("nearest-exact", False),
    A.upsample_linear1d: _upsample("linear", True), A.upsample_bilinear2d: _upsample("bilinear", True),
    A.upsample_trilinear3d: _upsample("trilinear", True), A.upsample_bicubic2d: _upsample("bicubic", True),
    A.pixel_shuffle: _layout(True), A.pixel_unshuffle: _layout(False),
    A.view: _view, A._unsafe_view: _view, A.reshape: _view, A.unsqueeze: _view, A.squeeze: _view, A.flatten: _view,
    A.unflatten: _view, A.view_as: _view,
    A.expand: _expand, A.permute: _permute, A.transpose: _transpose, A.t: _transpose,
    A.slice: _slice, A.select: _select, A.cat: concat_rule, A.stack: _stack, A.diagonal: _hull_all, A.roll: _roll, A.unfold: _unfold, A.im2col: _im2col,
    A.mm: lambda ctx, node: _mm(ctx, node, node.args[0], node.args[1]),
    A.bmm: lambda ctx, node: _mm(ctx, node, node.args[0], node.args[1]),
    A.matmul: lambda ctx, node: _mm(ctx, node, node.args[0], node.args[1]),
    A.addmm: lambda ctx, node: _mm(ctx, node, node.args[1], node.args[2], node.args[0]),
    A.baddbmm: lambda ctx, node: _mm(ctx, node, node.args[1], node.args[2], node.args[0]),
    A.native_layer_norm: _layer_norm, A.layer_norm: _layer_norm,
    A.native_group_norm: _group_norm, A.group_norm: _group_norm,
    A._softmax: _softmax, A._log_softmax: _softmax, A.softmax: _softmax, A.log_softmax: _softmax,
    A.mean: _reduce, A.sum: _reduce, A.amax: _reduce, A.amin: _reduce, A.max: _reduce, A.min: _reduce, A.prod: _reduce,
    A.logsumexp: _reduce, A.any: _reduce, A.all: _reduce, A.argmax: _reduce, A.argmin: _reduce,
    A.var: _var, A.std: _var, A.var_mean: _var, A.std_mean: _var, A.linalg_vector_norm: _norm, A.norm: _norm,
    A.gather: _along(1, "dim", True), A.index_select: _along(1, "dim", True), A.cumsum: _along(1, "dim", True),
    A.cumprod: _along(1, "dim", True), A.sort: _along(1, "dim", True), A.topk: _along(2, "dim", True),
    A.flip: lambda ctx, node: hull_geometry(ctx, node, node.args[0], _arg(ctx, node, 1, "dims")),
    A.index: _index, A.index_put: _index_put, A.index_put_: _index_put,
    A.slice_scatter: _index_put, A.select_scatter: _index_put, A.masked_scatter: _index_put,
    A.as_strided: _hull_all, A.repeat: _hull_all, A.grid_sampler_2d: _hull_all, A.col2im: _hull_all, A.tile: _hull_all,
    A.native_batch_norm: _pointwise_first, A.batch_norm: _pointwise_first, A._to_copy: _pointwise_first,
    A.clone: _pointwise_first, A.alias: _pointwise_first, A.detach: _pointwise_first, A.lift_fresh_copy: _pointwise_first,
    A.contiguous: _pointwise_first, A.masked_fill: _pointwise, A.where: _pointwise, A.hardswish: _pointwise,
    A.hardswish_: _pointwise, A.rsub: _pointwise, A.floor_divide: _pointwise, A.copy: _copy, A.copy_: _copy,
    A.native_dropout: _pointwise_first, A.dropout: _pointwise_first,
}
_NEWER = {name: _sdpa for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_flash_attention",
                                     "_scaled_dot_product_efficient_attention", "_scaled_dot_product_cudnn_attention",
                                     "_scaled_dot_product_attention_math", "scaled_dot_product_attention")}
_NEWER.update(_safe_softmax=_softmax, _unsafe_index=_index, _native_batch_norm_legit_no_training=_pointwise_first,
              _native_batch_norm_legit=_pointwise_first)
for _name, _rule in _NEWER.items():
    if hasattr(A, _name):  # older torch lacks some of these
        _RULES[getattr(A, _name)] = _rule
for _target, _rule in _RULES.items():
    register_rf_rule(_target, _rule)


def fuse_matmuls(gm: fx.GraphModule, values: Dict[fx.Node, Any]) -> None:
    """Undo the flattening ``linear``/``matmul`` do on inputs of rank > 2: ``view (.., C) -> (M, C)``, ``mm``/``addmm``,
    ``view (M, D) -> (.., D)`` becomes ``matmul`` (plus the bias), so that the rows keep their own dims (exact)
    instead of being merged into one (a hull).

    Example:
        >>> from foldconv.analysis.receptive_field.aten import record_aten
        >>> gm, values, _ = record_aten(torch.nn.Linear(3, 4), (1, 2, 5, 3))
        >>> fuse_matmuls(gm, values)
        >>> [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]  # (as_strided: the weight, transposed)
        ['aten.as_strided.default', 'aten.matmul.default', 'aten.add.Tensor']
    """
    views = (A.view.default, A._unsafe_view.default, A.reshape.default)
    for node in list(gm.graph.nodes):
        if node.op != "call_function" or node.target not in views or not isinstance(node.args[0], fx.Node):
            continue
        mm = node.args[0]
        if mm.op != "call_function" or mm.target not in (A.mm.default, A.addmm.default) or len(mm.users) != 1:
            continue
        a, b = (mm.args[0], mm.args[1]) if mm.target is A.mm.default else (mm.args[1], mm.args[2])
        if not isinstance(a, fx.Node) or a.op != "call_function" or a.target not in views or not isinstance(a.args[0], fx.Node):
            continue
        x = a.args[0]
        xs, out = tuple(values.get(x, ())), tuple(values.get(node, ()))
        if len(xs) < 3 or len(out) != len(xs) or xs[:-1] != out[:-1]:
            continue
        with gm.graph.inserting_before(node):
            new = gm.graph.call_function(A.matmul.default, (x, b))
            values[new] = values[node]
            if mm.target is A.addmm.default:
                added = gm.graph.call_function(A.add.Tensor, (new, mm.args[0]))
                values[added] = values[node]
                new = added
        node.replace_all_uses_with(new)
        for dead in (node, mm, a):
            if not dead.users:
                gm.graph.erase_node(dead)
                values.pop(dead, None)
    gm.recompile()

