"""Exact shift equivariance of every node of a traced model: the lattice of input shifts it commutes with.

A node is *equivariant* to an input shift ``s`` (per axis, in input pixels) when shifting the input by ``s``
shifts the node's output by an integer ``t`` in the node's own coordinates, at every position whose
computation does not touch a border. The shifts that work form a lattice ``period * Z`` with
``t = s * own_period / period``; this module computes ``period`` (input pixels) and ``own_period`` (the
node's pixels) for every node from the receptive-field analysis' index maps.

The rule (derivation: paper_notes/shift.md §1). Each edge of the graph is, per axis, an index map whose
pull-back is periodic: shifting the map's output by ``b`` shifts what it reads by exactly ``a`` (a strided
window: ``(a, b) = (S, 1)``; space-to-depth by ``r``: ``(r, 1)``; depth-to-space / transposed conv /
nearest upsampling by ``r``: ``(1, r)``; adaptive pooling ``n -> m``: ``(n, m) / gcd``). A node whose input
commutes with ``(P, T)`` (input shift ``P``, own shift ``T``) therefore commutes with ``(P*m, T*m*b/a)`` for
the least ``m`` with ``a | T*m``. Merges (add, mul, cat) intersect their paths' lattices: ``period`` is the
lcm over the paths, provided the paths agree on the own shift per input pixel (they do when their jumps
agree; otherwise no shift but 0 works and the period is ``None``). A node that reads a whole axis (global
pooling, a linear head) is *invariant* to its inputs' period: ``own_period`` 0; a path through such a read
(a squeeze-excitation gate) constrains only the period. Global reads see the borders, so these two are
exact on circular or unbounded inputs and hold up to border effects on finite ones. For a plain chain of
integer strides ``period`` is the jump; after depth-to-space by ``r`` it is the numerator of the
fractional jump, while its own period is ``r``; a strided layer after depth-to-space (the folded conv)
gets both from the lcm rule, e.g. ``fold_conv`` by ``r`` of a stride-``S`` conv: ``S`` input pixels,
``r*S`` folded pixels.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.PixelShuffle(2),
    ...                           torch.nn.Conv2d(1, 1, 4, stride=4))
    >>> rep = shift_equivariance(net, (1, 1, 32, 32))
    >>> [(n.name, n.period, n.own_period) for n in rep.nodes.values()]  # doctest: +NORMALIZE_WHITESPACE
    [('input_1', (1, 1), (1, 1)), ('_0', (2, 2), (1, 1)), ('_1', (2, 2), (2, 2)), ('_2', (4, 4), (1, 1))]
    >>> rep.output.jump
    (Fraction(4, 1), Fraction(4, 1))
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from ..._tables import markdown_table
from ...errors import fold_error
from ..receptive_field import RFReport, receptive_field
from ..receptive_field.analyse import Leaves
from ..receptive_field.registry import Rule

__all__ = ["AxisShift", "NodeShift", "ShiftReport", "shift_equivariance", "edge_lattice"]

MAX_MULTIPLE = 64  # an edge whose pull-back has no period up to 64 times its jump is treated as breaking equivariance


@dataclass(frozen=True)
class AxisShift:
    """Shift equivariance of one node along one spatial axis of the network's input.

    ``period``: the smallest input shift (input pixels) under which the node is exactly equivariant away from
    the borders (None: no shift but 0; merged paths disagree). ``own_period``: the output shift it causes, in
    the node's own pixels (0: the node reads the whole axis, so it is invariant up to border effects).
    ``jump``: the node's geometric effective stride (input pixels per own pixel, a Fraction). ``local``: the
    axis is still a tensor dim of the node (a kept axis of size 1 after global pooling is local but invariant).
    """

    period: Optional[int]
    own_period: Optional[int]
    jump: Fraction
    local: bool = True

    @property
    def rate(self) -> Optional[Fraction]:
        """Own pixels of shift per input pixel (``own_period / period``; 0 for invariant axes)."""
        if self.period is None or self.own_period is None:
            return None
        return Fraction(self.own_period, self.period)


@dataclass(frozen=True)
class NodeShift:
    """A traced node (name, op, the innermost module that made it, its shape) and its per-axis lattice."""

    name: str
    op: str
    module: str
    shape: Tuple[int, ...]
    axes: Tuple[AxisShift, ...]

    @property
    def period(self) -> Tuple[Optional[int], ...]:
        """Smallest equivariant input shift per axis, in input pixels."""
        return tuple(a.period for a in self.axes)

    @property
    def own_period(self) -> Tuple[Optional[int], ...]:
        """The output shift of :attr:`period`, per axis, in the node's own pixels (0: invariant)."""
        return tuple(a.own_period for a in self.axes)

    @property
    def jump(self) -> Tuple[Fraction, ...]:
        return tuple(a.jump for a in self.axes)

    @property
    def local(self) -> bool:
        """Every spatial axis is still a tensor dim of the node."""
        return all(a.local for a in self.axes)


@dataclass(frozen=True)
class ShiftReport:
    """Shift lattices of every tensor node of a traced model, in topological order (the input first).

    ``rf`` is the receptive-field report the lattices were derived from (its graph, jumps and boxes).
    """

    model_name: str
    input_shape: Tuple[int, ...]
    nodes: Mapping[str, NodeShift]
    output_name: str
    rf: RFReport

    @property
    def output(self) -> NodeShift:
        return self.nodes[self.output_name]

    def __getitem__(self, name: str) -> NodeShift:
        if not isinstance(name, str) or name not in self.nodes:
            raise fold_error("node", name, f"is not a tensor node of the traced model; known: {list(self.nodes)[:8]}")
        return self.nodes[name]

    def stage(self, module: str) -> NodeShift:
        """The last node made inside ``module`` (a dotted module path such as ``"layer2"``): its output.

        Example:
            >>> import torch
            >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, stride=2), torch.nn.ReLU())
            >>> shift_equivariance(net, (1, 1, 9, 9)).stage("0").period
            (2, 2)
        """
        found = [n for n in self.nodes.values() if n.module == module or n.module.startswith(module + ".")]
        if not found:
            raise fold_error("module", module, f"made no tensor node; modules: {sorted({n.module for n in self.nodes.values()})[:8]}")
        return found[-1]

    def period_in(self, node: str, frame: str) -> Tuple[Optional[Fraction], ...]:
        """``node``'s period expressed as a shift of ``frame``'s own grid (e.g. the folded map).

        Example:
            >>> import torch
            >>> from foldconv import fold_conv
            >>> from foldconv.layout import DepthToSpace
            >>> conv = torch.nn.Conv2d(16, 1, 3, padding=1)
            >>> rep = shift_equivariance(torch.nn.Sequential(DepthToSpace(4), fold_conv(conv, 4)), (1, 16, 6, 6))
            >>> rep.output.period, rep.period_in(rep.output_name, "_0")
            ((1, 1), (Fraction(4, 1), Fraction(4, 1)))
        """
        target, ref = self[node], self[frame]
        return tuple(None if t.period is None or f.rate is None else t.period * f.rate for t, f in zip(target.axes, ref.axes))

    def summary(self, max_rows: int = 20) -> str:
        """A Markdown table: node, op, jump, period (input px), own period.

        Example:
            >>> import torch
            >>> print(shift_equivariance(torch.nn.Conv1d(1, 1, 3, stride=2), (1, 1, 9)).summary())
            | node | op | jump | period | own_period |
            |---|---|---|---|---|
            | input_1 | input | (1) | (1) | (1) |
            | conv1d | conv1d | (2) | (2) | (1) |
        """
        names = list(self.nodes)
        if len(names) > max_rows:
            names = names[: max_rows // 2] + names[-(max_rows - max_rows // 2):]
        rows = [{"node": n, "op": self.nodes[n].op, "jump": self.nodes[n].jump, "period": self.nodes[n].period,
                 "own_period": self.nodes[n].own_period} for n in names]
        return markdown_table(rows)


def _is_constant(amap: Any) -> bool:
    o = np.arange(1, 6, dtype=np.int64)
    lo, hi = amap.pull(o, o)
    return bool(np.all(np.asarray(lo) == np.asarray(lo).flat[0]) and np.all(np.asarray(hi) == np.asarray(hi).flat[0]))


def edge_lattice(amap: Any, positions: int) -> Optional[Tuple[int, int]]:
    """``(a, b)``: the least output shift ``b`` of an index map (an ``AxisMap`` of the receptive-field
    analysis) that shifts what it reads by a constant ``a``, over ``positions`` output positions; None when
    there is none up to ``MAX_MULTIPLE`` times its jump. Clamping maps (resampling) are probed away from
    their ends.

    Example:
        >>> from foldconv.analysis.receptive_field.geometry import Local, Regroup, Adaptive
        >>> edge_lattice(Local(3, 2, 1), 8), edge_lattice(Regroup(1, 4), 8), edge_lattice(Adaptive(7, 3), 3)
        ((2, 1), (1, 4), (7, 3))
    """
    ratio = Fraction(amap.jump(Fraction(1)))
    if ratio <= 0:
        return None
    a0, b0 = ratio.numerator, ratio.denominator
    for k in range(1, MAX_MULTIPLE + 1):
        a, b = a0 * k, b0 * k
        top = max(positions - b - 1, 2)
        o = np.arange(1, top, dtype=np.int64)
        lo0, hi0 = amap.pull(o, o)
        lo1, hi1 = amap.pull(o + b, o + b)
        if np.all(np.asarray(lo1) - np.asarray(lo0) == a) and np.all(np.asarray(hi1) - np.asarray(hi0) == a):
            return a, b
    return None


def _combine(parts: Sequence[Tuple[int, Optional[Fraction]]]) -> Tuple[Optional[int], Optional[Fraction], bool]:
    """Intersect path lattices ``(period, rate)`` (rate None: the path constrains only the period)."""
    if any(p is None for p, _ in parts):
        return None, None, False
    period = 1
    for p, _ in parts:
        period = math.lcm(period, p)
    rates = {r for _, r in parts if r is not None}
    if len(rates) > 1:
        return None, None, False
    return period, (rates.pop() if rates else None), True


def _axis(rf: RFReport, records: Mapping[Any, Any], node: Any, a: int, lattice: Dict[Any, Tuple]) -> AxisShift:
    rec = records[node]
    jump = rec.j[a]
    spread = rec.local(a) and rec.positions(a) > 1  # one position left (global pool): it read the whole axis
    if not rec.geom.links:  # a node measured from gradients (fallback): no index maps to follow
        return AxisShift(None, None, jump, rec.local(a))
    parts = []
    for src, maps in rec.geom.links:
        s_period, s_rate = lattice[src][a]
        s_rec = records[src]
        if s_period is None:
            parts.append((None, None))
        elif not spread or not s_rec.local(a) or not s_rate or _is_constant(maps[a]):
            parts.append((s_period, None))  # read whole, or broadcast: only the source's own lattice matters
        else:
            edge = edge_lattice(maps[a], rec.positions(a))
            if edge is None:
                parts.append((None, None))
                continue
            ea, eb = edge
            own = s_period * s_rate  # the source's own period
            m = ea // math.gcd(ea, int(own))
            parts.append((s_period * m, Fraction(int(own) * m * eb, ea) / (s_period * m)))
    period, rate, ok = _combine(parts)
    if not ok:
        return AxisShift(None, None, jump, rec.local(a))
    if not spread or rate is None:
        return AxisShift(period, 0, jump, rec.local(a))
    return AxisShift(period, int(period * rate), jump, True)


def shift_equivariance(
    model: nn.Module, input_shape: Sequence[int], *, leaves: Leaves = (), rules: Optional[Mapping[Any, Rule]] = None,
    output: Any = None, trace: str = "auto",
) -> ShiftReport:
    """Per node and spatial axis: the smallest input shift (input pixels) under which the node is exactly
    shift-equivariant away from the borders, and the shift it causes on the node's own grid.

    Traces the model with :func:`~foldconv.analysis.receptive_field.receptive_field` (same ops, same
    errors: an op without a rule is a FoldError naming it; the same ``leaves``, per-call ``rules``, ``output``
    key and ``trace``: any model that runs is analysed from its aten operations where torch.fx cannot trace
    it) and follows its index maps (module docstring).

    Args:
        model: the network (real or meta weights; traced, left as it was).
        input_shape: ``(N, C, *spatial)`` with 1 to 3 spatial dims.
        leaves: module classes and/or qualified module names kept as single nodes (default none).
        rules: per-call receptive-field rules ``{module class, function or method name: rule}`` (default none).
        output: the key or index of the output tensor to analyse (a mapping or tuple output; default None).
        trace: ``"auto"`` (default: torch.fx, else the aten record), ``"fx"`` or ``"aten"``.

    Returns:
        A :class:`ShiftReport`: ``nodes`` (per node its ``period``, ``own_period`` and per-axis ``axes``),
        ``output`` and ``rf`` (the receptive-field report it follows).

    Raises:
        FoldError: as :func:`~foldconv.analysis.receptive_field.receptive_field` (``model``, ``input_shape``,
        ``leaves``, ``rules``, an op without a rule).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.MaxPool2d(2),
        ...                           torch.nn.AdaptiveAvgPool2d(1))
        >>> rep = shift_equivariance(net, (1, 3, 33, 33))
        >>> rep["_1"].period, rep["_1"].own_period, rep.output.period, rep.output.own_period
        ((4, 4), (1, 1), (4, 4), (0, 0))
    """
    rf = receptive_field(model, input_shape, leaves=leaves, rules=rules, output=output, trace=trace)
    records, order = rf.graph.records, rf.graph.order
    naxes = len(rf.input_shape) - 2
    lattice: Dict[Any, Tuple] = {}
    nodes: Dict[str, NodeShift] = {}
    for k, node in enumerate(order):
        if k == 0:
            axes = tuple(AxisShift(1, 1, Fraction(1)) for _ in range(naxes))
        else:
            axes = tuple(_axis(rf, records, node, a, lattice) for a in range(naxes))
        lattice[node] = tuple((ax.period, ax.rate) for ax in axes)
        stack = node.meta.get("nn_module_stack") or {}
        module = next(reversed(stack)) if stack else ""
        info = rf.nodes[node.name]
        nodes[node.name] = NodeShift(node.name, info.op, str(module), info.shape, axes)
    return ShiftReport(rf.model_name, rf.input_shape, nodes, rf.output_name, rf)
