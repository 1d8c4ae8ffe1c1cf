"""What a receptive-field rule sees: :class:`RuleContext`, with helpers that build a node's
:class:`~.geometry.Geometry` from the layout of its inputs.

Most rules are one call: ``ctx.pointwise(node)`` (elementwise ops keep the layout),
``ctx.spatial(node, src, {dim: AxisMap}, mixes=(dim,))`` (windows along some dims, mixing along others) or
``ctx.relayout(node, src, {in_dim: out_dim})`` (permute, view).

Example (a rule for a module of one's own, for one call):
    >>> import torch
    >>> from foldconv.analysis.receptive_field import receptive_field
    >>> class Gate(torch.nn.Module):
    ...     def forward(self, x):
    ...         return x * torch.sigmoid(x)
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), Gate())
    >>> receptive_field(net, (1, 1, 16, 16), rules={Gate: lambda ctx, node: ctx.pointwise(node)}, leaves=[Gate]).output.rf
    (3, 3)
"""
from __future__ import annotations

import math
from dataclasses import replace
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch.fx as fx
from torch import nn

from .geometry import IDENTITY, AxisMap, Broadcast, Geometry, Layout, Local, Record, Whole, digit_map, normal_layout
from .trace import UnsupportedOpError, is_shape

__all__ = ["RuleContext"]


#: One spatial axis of a geometry being built: its map, the dim it sits on (or None), merged, exact, and
#: the digits of a merged axis whose positions are known (or None).
_Axis = Tuple[AxisMap, Optional[int], bool, bool, Optional[Layout]]


def placed(layout: Optional[Layout], shape: Sequence[int], exact: bool, amap: AxisMap = IDENTITY) -> _Axis:
    """An axis whose positions are the digits ``layout`` of a tensor of ``shape``: a dim of its own when the
    digits are one whole dim, on no dim when there are none (one position), else merged with known digits."""
    layout = normal_layout(layout or ())
    if not layout:
        return amap, None, False, exact, None
    (d, inner, size), = layout[:1]
    if len(layout) == 1 and inner == 1 and size == shape[d]:
        return amap, d, False, exact, None
    return amap, d, True, exact, layout


def reindex(have: Layout, want: Layout) -> AxisMap:
    """The map from positions laid out as ``want`` to the same axis laid out as ``have``: a digit of
    ``have`` that ``want`` also holds follows it, any other is read whole (the unit sums over its dim)."""
    source = tuple(want.index(dg) if dg in want else None for dg in have)
    return digit_map([s for _, _, s in have], source, [s for _, _, s in want])


def summed_exactly(have: Layout, want: Layout) -> bool:
    """Reading ``have``'s other digits whole (:func:`reindex`) is exact: they lie on dims that hold none of
    ``want``'s digits, so a unit of ``want``'s positions sums over all their values."""
    held = {d for d, _, _ in want}
    return not any(d in held for d, i, n in have if (d, i, n) not in want)


class RuleContext:
    """The analysed part of the graph, as a rule sees it.

    ``values[node]``: the node's summarised value (a :class:`~.trace.TensorShape` for a tensor);
    ``records[node]``: the :class:`~.geometry.Record` of every node analysed so far; ``naxes``: the
    number of spatial axes of the network's input; ``gm``: the traced ``GraphModule``.
    """

    def __init__(self, gm: fx.GraphModule, values: Mapping[fx.Node, Any], records: Dict[fx.Node, Record], naxes: int):
        self.gm, self.values, self.records, self.naxes = gm, values, records, naxes

    def val(self, arg: Any) -> Any:
        """An argument with every node replaced by its summarised value."""
        return fx.node.map_arg(arg, lambda n: self.values.get(n))

    def module(self, node: fx.Node) -> nn.Module:
        """The module a ``call_module`` node calls."""
        return self.gm.get_submodule(node.target)

    def shape_of(self, src: fx.Node) -> Tuple[int, ...]:
        """The shape of an analysed tensor input."""
        return self.records[src].shape

    def output_shape(self, node: fx.Node) -> Tuple[int, ...]:
        """The shape of the node's (first) tensor output."""
        v = self.values[node]
        while not is_shape(v) and isinstance(v, (tuple, list)) and v:  # (values, indices) of max pooling
            v = v[0]
        return tuple(v)

    def tensor_inputs(self, node: fx.Node) -> List[fx.Node]:
        """The node's inputs that depend on the network's input, in argument order, without repeats."""
        found: List[fx.Node] = []

        def keep(n: fx.Node) -> None:
            rec = self.records.get(n)
            if rec is not None and rec.geom is not None:
                found.append(n)

        fx.node.map_arg((node.args, node.kwargs), keep)
        return list(dict.fromkeys(found))

    def arg(self, node: fx.Node, index: int, name: str, default: Any = None) -> Any:
        """Argument ``index`` (or keyword ``name``) of the call, as a summarised value."""
        if len(node.args) > index:
            return self.val(node.args[index])
        return self.val(node.kwargs.get(name, default))

    def first(self, node: fx.Node) -> fx.Node:
        """The first tensor input (UnsupportedOpError when there is none)."""
        ins = self.tensor_inputs(node)
        if not ins:
            raise UnsupportedOpError(f"node={node.name!r}: has no tensor input", param="model", value=node.name)
        return ins[0]

    def spatial(self, node: fx.Node, src: fx.Node, per_dim: Mapping[int, AxisMap], mixes: Sequence[int] = ()) -> Geometry:
        """Same layout as ``src``; local axes at a dim in ``per_dim`` get that map, at a dim in ``mixes``
        they become whole (the op mixes along that dim)."""
        rec = self.records[src]
        rank = len(rec.shape)
        per = {d % rank: m for d, m in per_dim.items()}
        mix = {d % rank for d in mixes}

        def axis(a: int, d: int, mg: bool, ex: bool) -> _Axis:
            digits = rec.geom.layout(a)
            if digits is not None:
                return self._digit_axis(rec, a, digits, per, mix, ex)
            if d in mix:
                # mixing a merged dim reads the whole axis only if the dim holds all of the grid merged into
                # it (ViT tokens); a window's tokens (Swin, MaxViT) hold part of it: a conservative hull
                whole = not mg or rec.shape[d] >= self._merged_grid(src, d)
                return IDENTITY if mg else Whole(rec.shape[d]), None, False, whole or ex, None
            if mg:
                return IDENTITY, d, True, ex, None
            return per.get(d, IDENTITY), d, False, ex, None

        return self._one_input(src, axis)

    def _digit_axis(self, rec: Record, a: int, digits: Layout, per: Mapping[int, AxisMap], mix: set, ex: bool) -> _Axis:
        """A merged axis with known digits under an op that keeps the dims: digits on mixed dims are read whole
        (and leave the layout); a window along the dim of the major digit whose other digits are all mixed is
        that window on blocks; any other window on a digit's dim makes the axis a conservative hull."""
        n = rec.positions(a)
        windowed = [k for k, (d, _, _) in enumerate(digits) if d in per and not (type(per[d]) is Local and (per[d].k, per[d].s, per[d].p) == (1, 1, 0))]
        if windowed:
            d, inner, size = digits[0]
            m = per.get(d)
            if windowed == [0] and inner == 1 and size == rec.shape[d] and all(dd in mix for dd, _, _ in digits[1:]) \
                    and type(m) is Local and m.d == 1 and m.mode == "zeros" and m.s:
                block = n // size
                return Local(m.k * block, m.s * block, m.p * block), d, False, ex, None
            return Whole(n), digits[0][0], True, False, None
        kept = tuple(dg for dg in digits if dg[0] not in mix)
        if len(kept) == len(digits):
            return IDENTITY, digits[0][0], True, ex, digits
        # every digit mixed: the op reads every position of the axis, as a mix of a dim of its own does (exact)
        return placed(kept, rec.shape, ex or not kept, reindex(digits, kept))

    def _one_input(self, src: fx.Node, axis: Callable[[int, int, bool, bool], _Axis]) -> Geometry:
        """The geometry of an op reading ``src`` alone: ``axis(axis, dim, merged, exact)`` gives each spatial
        axis that sits on a dim of ``src`` its ``(map, dim, merged, exact, digits)``; an axis on no dim stays on none."""
        geom = self.records[src].geom
        axes = [
            (IDENTITY, None, False, geom.exact[a], None) if geom.dims[a] is None else axis(a, geom.dims[a], geom.merged[a], geom.exact[a])
            for a in range(self.naxes)
        ]
        return self.geometry([(src, [x[0] for x in axes])], [x[1:] for x in axes])

    def geometry(self, links: Sequence[Tuple[fx.Node, Sequence[AxisMap]]], axes: Sequence[Tuple[Optional[int], bool, bool, Optional[Layout]]],
                 note: str = "") -> Geometry:
        """A :class:`Geometry` from its links and, per spatial axis, ``(dim, merged, exact, digits)``."""
        dims, merged, exact, digits = (tuple(column) for column in zip(*axes)) if axes else ((), (), (), ())
        return Geometry(tuple((s, tuple(m)) for s, m in links), dims, merged, exact, note,
                        digits=digits if any(dg is not None for dg in digits) else ())

    def grid_size(self, src: fx.Node, axis: int) -> int:
        """The number of grid positions of spatial ``axis`` where it was last a dim of its own (following
        first inputs back through merges); 0 when there is none."""
        node = src
        while node is not None:
            rec = self.records[node]
            if rec.geom is None:
                return 0
            if rec.local(axis):
                return rec.positions(axis)
            if not rec.geom.merged[axis] or not rec.geom.links:
                return 0
            node = next((s for s, _ in rec.geom.links if self.records[s].geom.dims[axis] is not None), None)
        return 0

    def _merged_grid(self, src: fx.Node, d: int) -> int:
        rec = self.records[src]
        sizes = [self.grid_size(src, a) for a in range(self.naxes) if rec.geom.dims[a] == d and rec.geom.merged[a]]
        return math.prod(sizes) if sizes and all(sizes) else 1 << 62

    def pointwise(self, node: fx.Node, inputs: Optional[Sequence[fx.Node]] = None) -> Geometry:
        """Elementwise op over broadcast inputs (add, mul, activations...)."""
        inputs = list(inputs) if inputs is not None else self.tensor_inputs(node)
        out_shape = self.values[node]
        if not is_shape(out_shape):
            out_shape = self.records[inputs[0]].shape
        out_rank = len(out_shape)
        links = []
        dims: List[Optional[int]] = [None] * self.naxes
        merged, exact = [False] * self.naxes, [True] * self.naxes
        for src in inputs:
            rec = self.records[src]
            shift = out_rank - len(rec.shape)
            maps: List[AxisMap] = []
            for a in range(self.naxes):
                d = rec.geom.dims[a]
                exact[a] = exact[a] and rec.geom.exact[a]
                if d is None:
                    maps.append(IDENTITY)
                    continue
                e = d + shift
                if rec.geom.merged[a]:
                    maps.append(IDENTITY)
                    if dims[a] is None:
                        dims[a], merged[a] = e, True
                    continue
                maps.append(Broadcast() if rec.shape[d] == 1 and out_shape[e] != 1 else IDENTITY)
                if dims[a] is None or merged[a]:
                    dims[a], merged[a] = e, False
                elif dims[a] != e:
                    raise UnsupportedOpError(
                        f"node={node.name!r}: inputs carry spatial axis {a} on different dims", param="model", value=node.name
                    )
            links.append((src, maps))
        digits: List[Optional[Layout]] = [None] * self.naxes
        for a in range(self.naxes):
            shifted = [self._shifted(src, a, out_rank - len(self.records[src].shape)) for src in inputs]
            if not any(self.records[src].geom.layout(a) is not None for src in inputs):
                continue
            # an input whose digits are known fixes the positions; the others follow their digits there
            want = next((lay for lay in shifted if lay and normal_layout(lay)), None)
            if want is None:
                continue
            _, dims[a], merged[a], _, digits[a] = placed(want, out_shape, exact[a])
            for (_, maps), lay in zip(links, shifted):
                if lay is not None and lay != want:
                    have, goal = normal_layout(lay), normal_layout(want)
                    maps[a] = reindex(have, goal)
                    exact[a] = exact[a] and summed_exactly(have, goal)
        return self.geometry(links, list(zip(dims, merged, exact, digits)))

    def _shifted(self, src: fx.Node, a: int, shift: int) -> Optional[Layout]:
        lay = self.layout_of(src, a)
        return None if lay is None else tuple((d + shift, i, n) for d, i, n in lay)

    def relayout(self, node: fx.Node, src: fx.Node, dim_map: Mapping[int, Optional[int]], merge_dims: Sequence[int] = ()) -> Geometry:
        """Pure re-indexing of dims (permute, view...): ``dim_map[in_dim] = out_dim``; axes on ``merge_dims``
        (input dims) get merged with other dims: conservative whole-axis boxes, exact=False. An axis with
        known digits is renamed with its dims, or becomes such a hull when one of its dims is merged."""
        rec = self.records[src]

        def axis(a: int, d: int, mg: bool, ex: bool) -> _Axis:
            digits = rec.geom.layout(a)
            if digits is not None:
                if all(dd not in merge_dims and dim_map.get(dd) is not None for dd, _, _ in digits):
                    return placed(tuple((dim_map[dd], i, n) for dd, i, n in digits), self.output_shape(node), ex)
                return Whole(rec.positions(a)), dim_map.get(d), True, False, None
            out = dim_map.get(d)
            if d in merge_dims or mg:
                n = rec.shape[d]
                if not mg and n == 1:  # a size-1 axis is one position: dropping or merging it loses nothing
                    return IDENTITY, None, False, ex, None
                return IDENTITY if mg else Whole(n), out, True, ex and mg, None
            if out is None:
                raise UnsupportedOpError(
                    f"node={node.name!r}: drops spatial dim {d} of size {rec.shape[d]}", param="model", value=node.name
                )
            return IDENTITY, out, False, ex, None

        return self._one_input(src, axis)

    def hull_digits(self, g: Geometry, dim: int) -> Geometry:
        """``g`` with every axis whose known digits lie on output dim ``dim`` merged as a conservative whole-axis
        hull (``exact=False``): a concatenation along that dim shifts positions the digits cannot express."""
        hit = [g.layout(a) is not None and any(d == dim for d, _, _ in g.layout(a)) for a in range(self.naxes)]
        if not any(hit):
            return g
        links = tuple((s, tuple(Whole(self.records[s].positions(a)) if hit[a] and self.records[s].local(a) else m for a, m in enumerate(maps)))
                      for s, maps in g.links)
        digits = tuple(None if h else dg for h, dg in zip(hit, g.digits))
        return replace(g, links=links, digits=digits if any(dg is not None for dg in digits) else (),
                       exact=tuple(e and not h for e, h in zip(g.exact, hit)))

    def layout_of(self, src: fx.Node, a: int) -> Optional[Layout]:
        """The digits of spatial axis ``a`` in ``src``: one whole dim for a dim of its own, the known digits of
        a merged axis; None when the axis has no positions there (mixed away, or merged as a hull)."""
        rec = self.records[src]
        if rec.plain(a):
            d = rec.geom.dims[a]
            return ((d, 1, rec.shape[d]),)
        return rec.geom.layout(a)

    def moved(self, g: Geometry, dim_map: Mapping[int, Optional[int]]) -> Geometry:
        """``g`` with its output dims renamed by ``dim_map`` (a dim mapped to None is gone: an axis on it is
        on no dim); known digits are renamed with them."""
        dims = tuple(None if d is None else dim_map.get(d) for d in g.dims)
        merged = tuple(m and d is not None for m, d in zip(g.merged, dims))
        if not g.digits:
            return replace(g, dims=dims, merged=merged)
        digits: List[Optional[Layout]] = []
        for a, dg in enumerate(g.digits):
            if dg is None or dims[a] is None:
                digits.append(None)
            elif any(dim_map.get(d) is None for d, _, _ in dg):
                raise UnsupportedOpError(f"axis {a}: a dim holding its digits was dropped", param="model", value=str(dg))
            else:
                digits.append(tuple((dim_map[d], i, n) for d, i, n in dg))
        return replace(g, dims=dims, merged=merged, digits=tuple(digits))
