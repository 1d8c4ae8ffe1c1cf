"""What :func:`~foldconv.analysis.receptive_field.receptive_field` returns: per node and per spatial axis,
the receptive-field size, the jump (effective stride, a ``Fraction``) and the effective padding.

Example:
    >>> import torch
    >>> from foldconv.analysis.receptive_field import receptive_field
    >>> report = receptive_field(torch.nn.Conv2d(1, 1, 3, stride=2, padding=1), (1, 1, 8, 8))
    >>> report
    RFReport(Conv2d at (1, 1, 8, 8): 2 nodes; output rf=(3, 3) jump=(2, 2) padding=(1, 1), aligned, exact)
    >>> report.output.axes[0]
    AxisRF(rf=3, jump=Fraction(2, 1), padding=1, aligned=True, constant=False, exact=True, box_jump=2)
"""
from __future__ import annotations

import numbers
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple

from ..._tables import markdown_table
from ...errors import fold_error
from .pullback import AnalysedGraph, Box, Support

__all__ = ["AxisRF", "NodeRF", "RFReport"]


def _fmt(values: Sequence[Any]) -> str:
    return "(" + ", ".join(str(v) for v in values) + ")"


@dataclass(frozen=True)
class AxisRF:
    """Receptive field of one node along one spatial axis, in input pixels.

    ``aligned``: every output ``i`` reads exactly ``[i*box_jump - padding, ... + rf - 1]`` with integers.
    ``jump`` is the geometric effective stride (a Fraction after depth-to-space / upsampling);
    ``constant``: every output of the node reads the same box (after global pooling, SE gates, linear).
    ``exact``: False where a reshape merged this axis with others and the box is a conservative hull.
    ``support``: the offsets ``0..rf-1`` of the box that some path reads (empty: not known, no holes
    claimed); ``holes = rf - len(support)`` offsets inside the hull that no path reads (between the taps
    of a dilated conv, say). For an unaligned node: those of its largest box.
    """

    rf: int
    jump: Fraction
    padding: int
    aligned: bool = True
    constant: bool = False
    exact: bool = True
    box_jump: int = 1
    support: Tuple[int, ...] = field(default=(), repr=False)

    @property
    def holes(self) -> int:
        """Offsets inside the box that no path reads (0 when the support is the whole box or unknown)."""
        return self.rf - len(self.support) if self.support else 0


@dataclass(frozen=True)
class NodeRF:
    """A traced node: its op, its shape and its per-axis receptive fields.

    ``dims[a]``: the tensor dim that carries spatial axis ``a`` (None once the axis has been mixed away or
    merged with others); ``positions[a]``: the number of output positions along it (1 when ``dims[a]`` is None).
    """

    name: str
    op: str
    shape: Tuple[int, ...]
    axes: Tuple[AxisRF, ...]
    dims: Tuple[Optional[int], ...]
    positions: Tuple[int, ...]
    notes: Tuple[str, ...] = ()

    @property
    def rf(self) -> Tuple[int, ...]:
        return tuple(a.rf for a in self.axes)

    @property
    def jump(self) -> Tuple[Fraction, ...]:
        return tuple(a.jump for a in self.axes)

    @property
    def padding(self) -> Tuple[int, ...]:
        return tuple(a.padding for a in self.axes)

    @property
    def holes(self) -> Tuple[int, ...]:
        """Per axis, the offsets of the box that no path reads (:attr:`AxisRF.holes`)."""
        return tuple(a.holes for a in self.axes)

    @property
    def support(self) -> Tuple[Tuple[int, ...], ...]:
        """Per axis, the offsets of the box that some path reads (:attr:`AxisRF.support`)."""
        return tuple(a.support for a in self.axes)

    @property
    def aligned(self) -> bool:
        return all(a.aligned for a in self.axes)

    def global_axes(self, input_size: Sequence[int]) -> Tuple[bool, ...]:
        """Per spatial axis: does every output position read the whole input of ``input_size`` along it (after
        global pooling, a squeeze-excite gate, a linear head)? Its rf then counts padding it never sees, and its
        jump is no step between the fields of neighbouring units.

        Example:
            >>> import torch
            >>> from foldconv.analysis.receptive_field import receptive_field
            >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), torch.nn.AdaptiveAvgPool2d(1))
            >>> rep = receptive_field(net, (1, 1, 8, 8))
            >>> rep.output.global_axes((8, 8)), rep.nodes["_0"].global_axes((8, 8))
            ((True, True), (False, False))
        """
        out = []
        for a, n, m in zip(self.axes, input_size, self.positions):
            # aligned: position i reads [i*box_jump - padding, ... + rf - 1]; the first and the last must span 0..n-1
            last_lo = (m - 1) * (0 if a.constant else a.box_jump) - a.padding
            out.append(bool(a.aligned and last_lo <= 0 and a.rf - a.padding - 1 >= n - 1))
        return tuple(out)

    @property
    def exact(self) -> bool:
        return all(a.exact for a in self.axes)

    @property
    def constant(self) -> bool:
        return all(a.constant for a in self.axes)

    def __repr__(self) -> str:
        flags = ", ".join(f for f, on in (("aligned", self.aligned), ("exact", self.exact), ("constant", self.constant)) if on)
        return (f"NodeRF({self.name!r} {self.op} {_fmt(self.shape)}: rf={_fmt(self.rf)} jump={_fmt(self.jump)} "
                f"padding={_fmt(self.padding)}{', ' + flags if flags else ''})")


@dataclass(frozen=True)
class RFReport:
    """Receptive fields of every tensor node of a traced model, in topological order.

    ``nodes``: name -> :class:`NodeRF` (the input is ``nodes[first]`` with op ``"input"``); ``warnings``: the
    alignment warnings raised; ``fallback_nodes``: nodes measured from gradients on real tensors (``fallback="real"``).
    ``graph_module`` is the traced model and ``graph`` the records the pull-back of :meth:`box` follows.
    """

    model_name: str
    input_shape: Tuple[int, ...]
    nodes: Mapping[str, NodeRF]
    output_name: str
    warnings: Tuple[str, ...] = ()
    fallback_nodes: Tuple[str, ...] = ()
    graph_module: Any = field(default=None, repr=False, compare=False)
    graph: Optional[AnalysedGraph] = field(default=None, repr=False, compare=False)

    @property
    def output(self) -> NodeRF:
        """The model's (first tensor) output."""
        return self.nodes[self.output_name]

    @property
    def input_size(self) -> Tuple[int, ...]:
        """The spatial sizes of the input."""
        return self.input_shape[2:]

    def __getitem__(self, name: str) -> NodeRF:
        if not isinstance(name, str) or name not in self.nodes:
            known = list(self.nodes)
            raise fold_error("node", name, f"is not a tensor node of the traced model; known: {known[:8]}{'...' if len(known) > 8 else ''}")
        return self.nodes[name]

    def center(self, node: Optional[str] = None) -> Tuple[int, ...]:
        """The centre output index of a node (per axis; 0 for axes that are no longer spatial)."""
        return tuple((n - 1) // 2 for n in self[node if node is not None else self.output_name].positions)

    def box(self, node: Optional[str] = None, index: Optional[Sequence[int]] = None, *, clip: bool = True) -> Optional[Box]:
        """Input box ``((lo, hi), ...)`` (inclusive, per axis) read by one output position of ``node``.

        ``clip=False``: Araujo's box ``[i*j - P, i*j - P + r - 1]`` (may reach into the padding).
        ``clip=True``: the exact hull of input pixels the unit depends on: the index is pulled back layer
        by layer and clipped at every layer's border, so it equals the support of the gradient for
        generic weights. ``None`` when the unit reads only padding. Default node: the output; default
        index: the centre.
        """
        if not isinstance(clip, bool):
            raise fold_error("clip", clip, "must be True or False")
        index = self.checked_index(node, index)
        return self.graph.box(self.graph.node(node), index, clip=clip)

    def support(self, node: Optional[str] = None, index: Optional[Sequence[int]] = None, *, clip: bool = True) -> Optional[Support]:
        """Input pixels ``((i, ...), ...)`` (sorted, per axis) that one output position of ``node`` reads:
        :meth:`box` without the holes a hull hides. ``clip=False``: in Araujo's coordinates (padding
        indices included); ``clip=True``: pulled back layer by layer and clipped at every border, so it is
        the projection on each axis of the gradient's non-zero pattern for generic weights.

        Example:
            >>> import torch
            >>> from foldconv.analysis.receptive_field import receptive_field
            >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 1, 3, dilation=2), torch.nn.Conv1d(1, 1, 2, dilation=3))
            >>> rf = receptive_field(net, (1, 1, 12))
            >>> rf.output.rf, rf.output.holes, rf.support(index=(0,))
            ((8,), (2,), ((0, 2, 3, 4, 5, 7),))
        """
        if not isinstance(clip, bool):
            raise fold_error("clip", clip, "must be True or False")
        index = self.checked_index(node, index)
        return self.graph.support(self.graph.node(node), index, clip=clip)

    def checked_index(self, node: Optional[str] = None, index: Optional[Sequence[int]] = None) -> Tuple[int, ...]:
        """``index`` as a tuple of positions of ``node`` (default: its centre); FoldError naming ``index``
        when it is not one in-range integer per spatial axis."""
        rec = self[node if node is not None else self.output_name]
        if index is None:
            return self.center(node)
        if isinstance(index, (str, bytes)) or not isinstance(index, Sequence) or not all(
            isinstance(i, numbers.Integral) and not isinstance(i, bool) for i in index
        ):
            raise fold_error("index", index, "must be a sequence of integer positions, one per spatial axis")
        if len(index) != len(rec.axes):
            raise fold_error("index", tuple(index), f"needs one position per spatial axis ({len(rec.axes)})")
        for a, (i, n) in enumerate(zip(index, rec.positions)):
            if not 0 <= i < n:
                raise fold_error("index", tuple(index), f"position {i} of axis {a} is outside 0..{n - 1}")
        return tuple(int(i) for i in index)

    def to_dict(self, *, boxes: bool = True) -> Dict[str, Any]:
        """Everything on the report as plain Python data (``json.dumps`` takes it): the model, the input
        shape, the output node, the alignment warnings and fallback nodes, and every node in topological order
        with its op, shape, per-axis fields (``jump`` as an exact fraction string, ``"1/4"``; ``Fraction(s)``
        reads it back) and, with ``boxes``, the input box its centre unit reads (:meth:`box`, clipped at the
        borders; None where it reads only padding) as ``[[lo, hi], ...]``.

        Example:
            >>> import json, torch
            >>> from foldconv.analysis.receptive_field import receptive_field
            >>> rep = receptive_field(torch.nn.Conv2d(1, 1, 3, stride=2, padding=1), (1, 1, 8, 8))
            >>> d = json.loads(json.dumps(rep.to_dict()))
            >>> d["output"], d["nodes"][-1]["axes"][0]["jump"], d["nodes"][-1]["center"], d["nodes"][-1]["box"]
            ('conv2d', '2', [1, 1], [[1, 3], [1, 3]])
        """
        if not isinstance(boxes, bool):
            raise fold_error("boxes", boxes, "must be True or False")
        nodes = []
        for name, n in self.nodes.items():
            row: Dict[str, Any] = {
                "name": name, "op": n.op, "shape": list(n.shape), "dims": list(n.dims), "positions": list(n.positions),
                "notes": list(n.notes),
                "axes": [{"rf": a.rf, "jump": str(a.jump), "padding": a.padding, "aligned": a.aligned, "constant": a.constant,
                          "exact": a.exact, "box_jump": a.box_jump, "holes": a.holes, "support": list(a.support)} for a in n.axes],
            }
            if boxes and self.graph is not None:
                box = self.box(name)
                row["center"] = list(self.center(name))
                row["box"] = None if box is None else [[int(lo), int(hi)] for lo, hi in box]
            nodes.append(row)
        return {"model": self.model_name, "input_shape": list(self.input_shape), "output": self.output_name,
                "warnings": list(self.warnings), "fallback_nodes": list(self.fallback_nodes), "nodes": nodes}

    def __repr__(self) -> str:
        o = self.output
        flags = ", ".join(f for f, on in (("aligned", o.aligned), ("exact", o.exact)) if on) or "not aligned"
        extra = (f"; holes={_fmt(o.holes)}" if any(o.holes) else "") + "".join(
            f"; {len(v)} {k}" for k, v in (("warnings", self.warnings), ("fallback nodes", self.fallback_nodes)) if v
        )
        return (f"RFReport({self.model_name} at {_fmt(self.input_shape)}: {len(self.nodes)} nodes; output rf={_fmt(o.rf)} "
                f"jump={_fmt(o.jump)} padding={_fmt(o.padding)}, {flags}{extra})")

    def summary(self, max_rows: int = 20) -> str:
        """A Markdown table of the nodes (the first and last ``max_rows // 2`` when there are more);
        ``holes``: offsets inside ``rf`` that no path reads.

        Example:
            >>> import torch
            >>> from foldconv.analysis.receptive_field import receptive_field
            >>> print(receptive_field(torch.nn.Conv1d(1, 1, 5), (1, 1, 9)).summary())
            | node | op | shape | rf | holes | jump | padding | aligned | exact |
            |---|---|---|---|---|---|---|---|---|
            | input_1 | input | (1,1,9) | (1) | (0) | (1) | (0) | True | True |
            | conv1d | conv1d | (1,1,5) | (5) | (0) | (1) | (0) | True | True |
        """
        names = list(self.nodes)
        if len(names) > max_rows:
            names = names[: max_rows // 2] + [""] + names[-(max_rows - max_rows // 2):]
        rows = []
        for name in names:
            if not name:
                rows.append({"node": f"... {len(self.nodes) - max_rows} more"})
                continue
            n = self.nodes[name]
            rows.append({"node": name, "op": n.op, "shape": n.shape, "rf": n.rf, "holes": n.holes, "jump": n.jump, "padding": n.padding,
                         "aligned": n.aligned, "exact": n.exact})
        return markdown_table(rows)
