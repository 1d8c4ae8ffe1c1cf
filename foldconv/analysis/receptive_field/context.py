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
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import torch.fx as fx
from torch import nn

from .geometry import IDENTITY, AxisMap, Broadcast, Geometry, Record, Whole
from .trace import UnsupportedOpError, is_shape

__all__ = ["RuleContext"]


#: One spatial axis of a geometry being built: its map, the dim it sits on (or None), merged, exact.
_Axis = Tuple[AxisMap, Optional[int], bool, bool]


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

        def axis(d: int, mg: bool, ex: bool) -> _Axis:
            if d in mix:
                # mixing a merged dim reads the whole axis only if the dim holds all of the grid merged into
                # it (ViT tokens); a window's tokens (Swin, MaxViT) hold part of it: a conservative hull
                whole = not mg or rec.shape[d] >= self._merged_grid(src, d)
                return IDENTITY if mg else Whole(rec.shape[d]), None, False, whole or ex
            if mg:
                return IDENTITY, d, True, ex
            return per.get(d, IDENTITY), d, False, ex

        return self._one_input(src, axis)

    def _one_input(self, src: fx.Node, axis: Callable[[int, bool, bool], _Axis]) -> Geometry:
        """The geometry of an op reading ``src`` alone: ``axis(dim, merged, exact)`` gives each spatial axis
        that sits on a dim of ``src`` its ``(map, dim, merged, exact)``; an axis on no dim stays on none."""
        geom = self.records[src].geom
        axes = [
            (IDENTITY, None, False, geom.exact[a]) if geom.dims[a] is None else axis(geom.dims[a], geom.merged[a], geom.exact[a])
            for a in range(self.naxes)
        ]
        maps, dims, merged, exact = (tuple(column) for column in zip(*axes)) if axes else ((), (), (), ())
        return Geometry(((src, maps),), dims, merged, exact)

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
            links.append((src, tuple(maps)))
        return Geometry(tuple(links), tuple(dims), tuple(merged), tuple(exact))

    def relayout(self, node: fx.Node, src: fx.Node, dim_map: Mapping[int, Optional[int]], merge_dims: Sequence[int] = ()) -> Geometry:
        """Pure re-indexing of dims (permute, view...): ``dim_map[in_dim] = out_dim``; axes on ``merge_dims``
        (input dims) get merged with other dims: conservative whole-axis boxes, exact=False."""
        rec = self.records[src]

        def axis(d: int, mg: bool, ex: bool) -> _Axis:
            out = dim_map.get(d)
            if d in merge_dims or mg:
                n = rec.shape[d]
                if not mg and n == 1:  # a size-1 axis is one position: dropping or merging it loses nothing
                    return IDENTITY, None, False, ex
                return IDENTITY if mg else Whole(n), out, True, ex and mg
            if out is None:
                raise UnsupportedOpError(
                    f"node={node.name!r}: drops spatial dim {d} of size {rec.shape[d]}", param="model", value=node.name
                )
            return IDENTITY, out, False, ex

        return self._one_input(src, axis)
