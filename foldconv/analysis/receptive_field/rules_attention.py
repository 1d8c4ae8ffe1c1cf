"""Built-in receptive-field rules of attention and token models: ``scaled_dot_product_attention``,
``einsum``, ``unbind``/``stack``, cyclic shifts (``roll``), concatenation and splitting along a spatial
axis, and the elementwise ops transformers add (``addcmul``, ``lerp``, RMS norm).

Exactness, per rule (``paper_notes/receptive_fields.md`` §7):

- attention (SDPA, ``q @ k^T``, einsum contractions): *global* over the token axis; every query reads
  every key and value, so each output reads its own query's box and the whole of the axes the keys carry.
  Exact where the token axis is one spatial axis (or already global), and where it holds several spatial axes
  flattened with known digits (then only the digits in the token dim are read whole: a window's tokens read
  their window); a merged axis whose digits are not known stays a conservative hull until it is mixed;
- ``roll``: *exact* index map ``o -> (o - shift) mod n`` (:class:`~.geometry.Roll`); a window that wraps
  has the whole axis as its hull and two pieces as its support;
- ``cat``/``split``/``chunk``/``unbind``/``tensor_split`` along a spatial axis: *exact* (each piece is a
  slice, :class:`~.geometry.Piece` / :class:`~.geometry.Local`);
- ``stack``, ``addcmul``, ``addcdiv``, ``lerp``, layer scale, drop path: *exact* (elementwise);
  ``rms_norm`` mixes its normalised dims like ``layer_norm``, ``F.normalize`` its ``dim``.

Example (a cyclic shift after a conv: output column 0 reads the window of the last column):
    >>> import torch
    >>> from foldconv.analysis.receptive_field import receptive_field
    >>> class Shift(torch.nn.Module):
    ...     def forward(self, x):
    ...         return torch.roll(x, 1, -1)
    >>> report = receptive_field(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), Shift()), (1, 1, 8, 8))
    >>> report.output.rf, report.support(index=(0, 0))[1]
    ((3, 3), (5, 6, 7))
"""
from __future__ import annotations

import operator
from typing import List, Optional, Sequence

import torch
import torch.fx as fx
import torch.nn.functional as F

from .context import RuleContext, summed_exactly
from .geometry import Digits, Geometry, Local, Piece, Roll, Whole, digit_map
from .registry import register_rf_rule
from .rules_tensor import getitem_geometry, mix_geometry
from .trace import is_shape, no_rule

__all__ = ["combine_geometries", "einsum_geometry", "attention_geometry", "roll_geometry", "concat_rule"]


def combine_geometries(ctx: RuleContext, parts: Sequence[Geometry]) -> Geometry:
    """One node computed from several inputs, each described by its own one-link geometry (same output).

    A spatial axis sits on the output dim the first input puts it on; an input that puts the same axis on
    another output dim (the keys of ``q @ k^T``: rows follow the queries, columns the keys) is read whole
    along it, which is exact for the unit of a position (summed over every other dim, the key dim included).
    Where the axis is merged with known digits, only the digits the input holds elsewhere are read whole.
    """
    axes: List[tuple] = [(None, False, True, None)] * ctx.naxes
    for a in range(ctx.naxes):
        exact = all(g.exact[a] for g in parts)
        # a part that reads the whole axis exactly makes the union exact
        exact = exact or any(g.dims[a] is None and g.exact[a] and ctx.records[g.links[0][0]].geom.dims[a] is not None for g in parts)
        first = next((g for g in parts if g.dims[a] is not None), None)
        axes[a] = (first.dims[a], first.merged[a], exact, first.layout(a)) if first else (None, False, exact, None)
    links = []
    for g in parts:
        (src, maps), = g.links
        rec = ctx.records[src]
        new = list(maps)
        for a in range(ctx.naxes):
            want, have = axes[a][3], g.layout(a)
            if g.dims[a] is None or not rec.local(a) or (g.dims[a], g.merged[a], have) == (axes[a][0], axes[a][1], want):
                continue
            src_layout = ctx.layout_of(src, a)
            if want is not None and have is not None and src_layout is not None and isinstance(maps[a], (Local, Digits, Whole)):
                # the positions of this input's digits that the output also holds follow it; the others are read whole
                source = tuple(want.index(dg) if dg in have and dg in want else None for dg in src_layout)
                new[a] = digit_map([n for _, _, n in src_layout], source, [n for _, _, n in want])
                if not summed_exactly(have, want):
                    axes[a] = axes[a][:2] + (False,) + axes[a][3:]
            else:
                new[a] = Whole(rec.positions(a))
        links.append((src, new))
    return ctx.geometry(links, axes)


def attention_geometry(ctx: RuleContext, node, q, k, v) -> Geometry:
    """``softmax(q k^T) v`` over ``(..., tokens, features)``: the output follows the queries' layout and
    reads every key and value token (their dim -2 is mixed)."""
    parts = [ctx.spatial(node, q, {}, mixes=(-1,))] if q is not None else []
    parts += [ctx.spatial(node, s, {}, mixes=(-2, -1)) for s in (k, v) if s is not None]
    return combine_geometries(ctx, parts)


def _sdpa(ctx: RuleContext, node) -> Geometry:
    ins = set(ctx.tensor_inputs(node))
    roles = [node.args[i] if len(node.args) > i else node.kwargs.get(name) for i, name in enumerate(("query", "key", "value"))]
    q, k, v = (r if r in ins else None for r in roles)
    g = attention_geometry(ctx, node, q, k, v)
    mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
    if mask in ins:  # a mask computed from the input (the scores' shape): read whole, like the keys
        g = _with_link(ctx, g, node, mask)
    return g


def _with_link(ctx: RuleContext, g: Geometry, node, src) -> Geometry:
    extra = ctx.spatial(node, src, {}, mixes=(-2, -1))
    return Geometry(g.links + extra.links, g.dims, g.merged, tuple(x and y for x, y in zip(g.exact, extra.exact)))


def _parse_einsum(equation: str, ranks: Sequence[int]):
    eq = equation.replace(" ", "")
    lhs, _, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != len(ranks):
        raise ValueError(f"equation {equation!r} has {len(terms)} operands, got {len(ranks)} tensors")
    n_ell = max((r - len(t.replace("...", "")) for t, r in zip(terms, ranks) if "..." in t), default=0)
    ell = "".join(chr(0x100 + i) for i in range(n_ell))  # letters that cannot clash with the equation's
    terms = [t.replace("...", ell[n_ell - (r - len(t.replace("...", ""))):]) for t, r in zip(terms, ranks)]
    if not _:
        counts = {c: sum(t.count(c) for t in terms) for c in set("".join(terms))}
        rhs = ell + "".join(sorted(c for c, n in counts.items() if n == 1 and c not in ell))
    else:
        rhs = rhs.replace("...", ell)
    return terms, rhs


def einsum_geometry(ctx: RuleContext, node, equation: str, operands: Sequence) -> Geometry:
    """``torch.einsum``: a dim whose letter is in the output moves there; a summed letter mixes its dim."""
    ranks = [len(ctx.values[o]) if is_shape(ctx.values.get(o)) else 0 for o in operands]
    terms, rhs = _parse_einsum(equation, ranks)
    parts = []
    for src, term in zip(operands, terms):
        if src not in ctx.records or ctx.records[src].geom is None:
            continue
        if len(set(term)) != len(term):
            raise no_rule(node, f"einsum {equation!r} (a diagonal)")
        summed = [d for d, c in enumerate(term) if c not in rhs]
        g = ctx.spatial(node, src, {}, mixes=summed)
        parts.append(ctx.moved(g, {d: rhs.index(c) for d, c in enumerate(term) if c in rhs}))
    return combine_geometries(ctx, parts)


def _einsum(ctx: RuleContext, node) -> Geometry:
    equation = node.args[0]
    operands = node.args[1:]
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = operands[0]
    return einsum_geometry(ctx, node, equation, list(operands))


def roll_geometry(ctx: RuleContext, node, src, shifts, dims) -> Geometry:
    """``torch.roll``: a cyclic shift of each rolled dim; a roll of the flattened tensor is unsupported."""
    if dims is None or dims == ():
        raise no_rule(node, "roll without dims (of the flattened tensor)")
    shifts = shifts if isinstance(shifts, (tuple, list)) else (shifts,)
    dims = dims if isinstance(dims, (tuple, list)) else (dims,)
    rank = len(ctx.shape_of(src))
    per = {}
    for s, d in zip(shifts, dims):
        n = ctx.shape_of(src)[d % rank]
        if int(s) % n:
            per[d % rank] = Roll(n, int(s))
    return ctx.spatial(node, src, per)


def _roll(ctx: RuleContext, node) -> Geometry:
    return roll_geometry(ctx, node, ctx.first(node), ctx.arg(node, 1, "shifts"), ctx.arg(node, 2, "dims", None))


def _local_dim(ctx: RuleContext, src, dim: int) -> bool:
    rec = ctx.records[src]
    dim %= len(rec.shape)
    return any(rec.plain(a) and rec.geom.dims[a] == dim for a in range(ctx.naxes))


def concat_rule(ctx: RuleContext, node) -> Geometry:
    """``cat`` along a spatial dim: each input is the piece of the axis at its offset; along other dims
    the inputs are merged like an elementwise op."""
    inputs = ctx.tensor_inputs(node)
    out_shape = ctx.output_shape(node)
    dim = ctx.arg(node, 1, "dim", 0) % len(out_shape)
    if not any(_local_dim(ctx, s, dim) and ctx.shape_of(s)[dim] < out_shape[dim] for s in inputs):
        return ctx.hull_digits(ctx.pointwise(node, inputs), dim)
    parts, offset = [], 0
    seq = ctx.arg(node, 0, "tensors")
    for item, value in zip(node.args[0] if node.args else node.kwargs["tensors"], seq):
        n = value[dim] if is_shape(value) else 0
        if item in inputs:
            parts.append(ctx.spatial(node, item, {dim: Piece(offset, n)}))
        offset += n
    dims = parts[0].dims
    if any(p.dims != dims for p in parts):
        raise no_rule(node, f"concatenation along spatial dim {dim} of inputs with different layouts")
    exact = tuple(all(p.exact[a] for p in parts) for a in range(ctx.naxes))
    return Geometry(tuple(lk for p in parts for lk in p.links), dims, parts[0].merged, exact)


_SPLITTERS = (torch.split, torch.chunk, torch.tensor_split, torch.unbind, "split", "chunk", "tensor_split", "unbind",
              "split_with_sizes")


def _split_dim(ctx: RuleContext, node) -> int:
    name = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "")
    if name == "unbind":
        return ctx.arg(node, 1, "dim", 0)
    return ctx.arg(node, 2, "dim", 0)


def _split(ctx: RuleContext, node) -> Geometry:
    """The tuple of pieces: its layout is that of one piece (``unbind`` drops the dim); the element a
    :func:`getitem` takes is then the slice of its piece (:func:`split_element`)."""
    src = ctx.first(node)
    rank = len(ctx.shape_of(src))
    dim = _split_dim(ctx, node) % rank
    g = ctx.spatial(node, src, {})
    if node.target in ("unbind", torch.unbind):  # an element drops the dim (along a spatial dim: one position)
        return ctx.moved(g, {d: (d if d < dim else d - 1) for d in range(rank) if d != dim})
    return g


def split_element(ctx: RuleContext, node, parent, index: int) -> Optional[Geometry]:
    """Element ``index`` of a split/chunk/unbind along a spatial dim: a slice (or one position) of the
    source; None when the split is not along a spatial dim."""
    if parent.op not in ("call_function", "call_method") or parent.target not in _SPLITTERS:
        return None
    src = ctx.first(parent)
    rank = len(ctx.shape_of(src))
    dim = _split_dim(ctx, parent) % rank
    if not _local_dim(ctx, src, dim):
        return None
    pieces = ctx.values[parent]
    if parent.target in ("unbind", torch.unbind):
        g = ctx.spatial(node, src, {dim: Local(1, 0, -(index % len(pieces)))})
        return ctx.moved(g, {d: (None if d == dim else d if d < dim else d - 1) for d in range(rank)})
    start = sum(p[dim] for p in pieces[: index % len(pieces)])
    return ctx.spatial(node, src, {dim: Local(1, 1, -start)} if start else {})


def _stack(ctx: RuleContext, node) -> Geometry:
    inputs = ctx.tensor_inputs(node)
    for s in inputs:  # positions of a spatial axis stacked back into a dim: not an elementwise merge
        parent = s.args[0] if s.op == "call_function" and s.target is operator.getitem else s
        if isinstance(parent, fx.Node) and split_element(ctx, s, parent, 0) is not None:
            raise no_rule(node, "stacking the pieces of a spatial axis")
    rank = len(ctx.output_shape(node))
    dim = ctx.arg(node, 1, "dim", 0) % rank
    parts = [ctx.moved(ctx.spatial(node, s, {}), {d: (d if d < dim else d + 1) for d in range(rank - 1)}) for s in inputs]
    return combine_geometries(ctx, parts)


def _matmul(ctx: RuleContext, node) -> Geometry:
    """``a @ b``: rows follow ``a`` (its last dim is mixed), columns follow ``b`` (its dim -2 is mixed)."""
    ins = ctx.tensor_inputs(node)
    if len(ins) == 1:
        return mix_geometry(ctx, node, ins[0], (-1,) if node.args[0] is ins[0] else (-2,))
    return combine_geometries(ctx, [ctx.spatial(node, ins[0], {}, mixes=(-1,)), ctx.spatial(node, ins[1], {}, mixes=(-2,))])


def _getitem(ctx: RuleContext, node) -> Geometry:
    parent, index = node.args[0], ctx.val(node.args[1])
    if is_shape(ctx.values[parent]):
        return getitem_geometry(ctx, node, parent, index)
    piece = split_element(ctx, node, parent, index) if isinstance(index, int) else None
    if piece is not None:
        return piece
    items, value = ctx.values[parent], ctx.values.get(node)
    split = parent.op in ("call_function", "call_method") and parent.target in _SPLITTERS  # pieces of unequal sizes, off the grid
    if not split and isinstance(index, int) and is_shape(value) and isinstance(items, (tuple, list)) and items and tuple(value) != tuple(items[0]):
        # another shape than the tuple's first tensor (the statistics of a norm, say): read whole, a conservative hull
        rec = ctx.records[parent]
        maps = tuple(Whole(rec.positions(a)) if rec.local(a) else Local(1, 1, 0) for a in range(ctx.naxes))
        return Geometry(((parent, maps),), (None,) * ctx.naxes, (False,) * ctx.naxes, (False,) * ctx.naxes)
    return ctx.spatial(node, parent, {})  # an element of a tuple: the tuple's layout


def _rms_norm(ctx: RuleContext, node) -> Geometry:
    shape = ctx.arg(node, 1, "normalized_shape")
    n = len(shape) if isinstance(shape, (tuple, list)) else 1
    return mix_geometry(ctx, node, ctx.first(node), tuple(range(-n, 0)))


def _pointwise(ctx: RuleContext, node) -> Geometry:
    return ctx.pointwise(node)


for _f in (F.scaled_dot_product_attention, "torch._C._nn.scaled_dot_product_attention"):
    register_rf_rule(_f, _sdpa)
for _f in (torch.einsum, "torch.functional.einsum"):
    register_rf_rule(_f, _einsum)
for _f in (torch.roll, "roll"):
    register_rf_rule(_f, _roll)
for _f in dict.fromkeys((torch.cat, torch.concat, getattr(torch, "concatenate", torch.cat))):  # older torch has no concatenate
    register_rf_rule(_f, concat_rule)
for _f in _SPLITTERS:
    register_rf_rule(_f, _split)
register_rf_rule(torch.stack, _stack)
for _f in (torch.matmul, operator.matmul, "matmul", torch.bmm, "bmm"):
    register_rf_rule(_f, _matmul)
register_rf_rule(operator.getitem, _getitem)
# (beyond rules_tensor's pointwise ops, which cover mul_, F.silu, F.softplus and F.elu)
for _f in (torch.addcmul, torch.addcdiv, torch.lerp, "addcmul", "addcdiv", "lerp", "addcmul_", "addcdiv_", "lerp_", "div_",
           "sub_", "square", "rsqrt", "reciprocal", "sin", "cos", "log", "erf", "gelu", "silu", "softplus", "sign", "round",
           "floor", "ceil", "tanh_", "exp_", torch.square, torch.reciprocal, torch.sign, torch.log, torch.sin, torch.cos,
           torch.nan_to_num, F.celu, F.selu, F.softsign, F.logsigmoid, F.hardshrink):
    register_rf_rule(_f, _pointwise)
register_rf_rule(F.normalize, lambda ctx, node: mix_geometry(ctx, node, ctx.first(node), (ctx.arg(node, 2, "dim", 1),)))
if hasattr(F, "rms_norm"):
    register_rf_rule(F.rms_norm, _rms_norm)
