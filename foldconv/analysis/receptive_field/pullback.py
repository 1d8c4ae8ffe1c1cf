"""Pulling output positions back to input boxes through the analysed graph.

Two pull-backs: :func:`unclipped_hull` follows the index maps with their padding (Araujo's box, which may
reach outside the input), vectorised over many positions; :func:`clipped_box` clips at every layer's
border, so its result is the exact support of the gradient of one unit for generic weights.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .geometry import Record

__all__ = ["Box", "AnalysedGraph", "unclipped_hull", "clipped_box"]

Box = Tuple[Tuple[int, int], ...]


def unclipped_hull(records: Mapping[Any, Record], links, axis: int, a, b):
    """Input hull ``(lo, hi)`` along ``axis`` of outputs ``a..b`` of a node with these ``links``
    (ints or numpy arrays of positions)."""
    lo = hi = None
    for src, maps in links:
        s = records[src]
        pa, pb = maps[axis].pull(a, b) if s.local(axis) else (a * 0, b * 0)
        if s.aligned[axis]:
            low = pa * s.bj[axis] - s.p[axis]
            high = pb * s.bj[axis] - s.p[axis] + s.r[axis] - 1
        else:
            low, high = unclipped_hull(records, s.geom.links, axis, pa, pb)
        lo = low if lo is None else np.minimum(lo, low)
        hi = high if hi is None else np.maximum(hi, high)
    return lo, hi


def clipped_box(records: Mapping[Any, Record], order: Sequence[Any], target: Any, index: Sequence[int]) -> Optional[Box]:
    """The hull of input pixels that position ``index`` of ``target`` depends on, clipped at every
    layer's border; None when the unit reads only padding."""
    pos = {n: k for k, n in enumerate(order)}
    env: Dict[Any, List[List[int]]] = {target: [[i, i] for i in index]}
    result: Optional[Box] = None
    input_size = records[order[0]].shape[2:]
    for n in reversed(order[: pos[target] + 1]):
        if n not in env:
            continue
        ivs = env.pop(n)
        rec = records[n]
        empty = False
        for a, iv in enumerate(ivs):
            iv[0], iv[1] = max(int(iv[0]), 0), min(int(iv[1]), rec.positions(a) - 1)
            empty |= iv[0] > iv[1]
        if empty:
            continue
        if not rec.geom.links:
            if rec.geom.measured:  # an empirically measured node: its affine box, clipped to the input
                ivs = [[max(iv[0] * rec.bj[a] - rec.p[a], 0), min(iv[1] * rec.bj[a] - rec.p[a] + rec.r[a] - 1, input_size[a] - 1)]
                       for a, iv in enumerate(ivs)]
            found = tuple((iv[0], iv[1]) for iv in ivs)
            result = found if result is None else tuple((min(x[0], y[0]), max(x[1], y[1])) for x, y in zip(result, found))
            continue
        for src, maps in rec.geom.links:
            s = records[src]
            pulled = []
            for a, iv in enumerate(ivs):
                if s.local(a):
                    lo, hi = maps[a].clip_pull(iv[0], iv[1], s.positions(a))
                    pulled.append([int(lo), int(hi)])
                else:
                    pulled.append([0, 0])
            if src in env:
                env[src] = [[min(x[0], y[0]), max(x[1], y[1])] for x, y in zip(env[src], pulled)]
            else:
                env[src] = pulled
    return result


@dataclass(frozen=True)
class AnalysedGraph:
    """The analysed nodes in topological order (the input first) with their records: what
    :meth:`~.report.RFReport.box` pulls indices back through."""

    records: Mapping[Any, Record]
    order: Tuple[Any, ...]
    output: Any

    def node(self, name: Optional[str]) -> Any:
        """The fx node called ``name`` (None: the output); KeyError-free lookups are the report's job."""
        if name is None:
            return self.output
        return next(n for n in self.order if n.name == name)

    def box(self, target: Any, index: Sequence[int], *, clip: bool) -> Optional[Box]:
        """Input box of position ``index`` of ``target`` (see :func:`clipped_box` and :func:`unclipped_hull`)."""
        if clip:
            return clipped_box(self.records, self.order, target, index)
        rec = self.records[target]
        out = []
        for a, i in enumerate(index):
            if rec.aligned[a]:
                lo = i * rec.bj[a] - rec.p[a]
                out.append((lo, lo + rec.r[a] - 1))
            else:
                lo, hi = unclipped_hull(self.records, rec.geom.links, a, i, i)
                out.append((int(lo), int(hi)))
        return tuple(out)
