"""Pulling output positions back to input boxes through the analysed graph.

Two pull-backs: :func:`unclipped_hull` follows the index maps with their padding (Araujo's box, which may
reach outside the input), vectorised over many positions; :func:`clipped_box` clips at every layer's
border, so its result is the exact hull of the gradient support of one unit for generic weights.
:func:`unclipped_support` and :func:`clipped_support` pull back sets of indices instead of intervals: the
offsets some path reads, without the holes a hull hides (dilated convs, strided taps, cyclic shifts).
Everything is per axis: a unit's support is reported as its projection on each axis.

Example (a dilated conv: the box of output (0, 0) and the taps it really reads):
    >>> import torch
    >>> from foldconv.analysis.receptive_field import receptive_field
    >>> report = receptive_field(torch.nn.Conv2d(1, 1, 3, dilation=2), (1, 1, 9, 9))
    >>> report.box(index=(0, 0)), report.support(index=(0, 0))
    (((0, 4), (0, 4)), ((0, 2, 4), (0, 2, 4)))
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .geometry import Record

__all__ = ["Box", "Support", "AnalysedGraph", "unclipped_hull", "clipped_box", "unclipped_support", "clipped_support"]

Box = Tuple[Tuple[int, int], ...]
Support = Tuple[Tuple[int, ...], ...]
_FAR = 1 << 40


def _tabulated_hull(records: Mapping[Any, Record], s: Record, axis: int, pa, pb):
    """The hull of an unaligned source's positions ``pa..pb``: from its table of per-position boxes where
    the interval lies inside the source (a recursion per path would be exponential in a dense DAG such as
    HRNet's fusions), by recursion for intervals reaching into a consumer's padding."""
    table = s.tab.get(axis) if s.local(axis) else None
    if table is None:
        return unclipped_hull(records, s.geom.links, axis, pa, pb)
    lo_t, hi_t = table
    n = len(lo_t)
    a, b = np.asarray(pa), np.asarray(pb)
    inside = (a >= 0) & (b <= n - 1) & (a <= b)
    ca, cb = np.clip(a, 0, n - 1), np.clip(b, 0, n - 1)
    width = int(np.max(cb - ca, initial=0)) + 1
    idx = np.minimum(ca[..., None] + np.arange(max(width, 1)), np.maximum(cb, ca)[..., None])
    low, high = lo_t[idx].min(-1), hi_t[idx].max(-1)
    if not np.all(inside):  # only the intervals reaching into a consumer's padding are pulled back further
        out = ~inside
        rlow, rhigh = unclipped_hull(records, s.geom.links, axis, np.broadcast_to(a, out.shape)[out], np.broadcast_to(b, out.shape)[out])
        low, high = np.array(low, copy=True), np.array(high, copy=True)
        low[out], high[out] = rlow, rhigh
    return (int(low), int(high)) if np.ndim(low) == 0 else (low, high)


def unclipped_support(records: Mapping[Any, Record], links, axis: int, positions: np.ndarray) -> np.ndarray:
    """Input indices along ``axis`` (padding included, sorted) that some output in ``positions`` of a node
    with these ``links`` reads. One sweep over the graph in reverse order (the records' insertion order is
    topological), so a node reached by many paths is pulled back once."""
    order = {n: k for k, n in enumerate(records)}
    env: Dict[Any, np.ndarray] = {}
    parts = [np.zeros(0, dtype=np.int64)]

    def pull(links_, pos):
        for src, maps in links_:
            s = records[src]
            q = maps[axis].taps(pos) if s.local(axis) else np.zeros(1, dtype=np.int64)
            if s.aligned[axis]:
                parts.append((q[:, None] * s.bj[axis] - s.p[axis] + np.flatnonzero(s.sup[axis])[None, :]).reshape(-1))
            elif len(q):
                env[src] = q if src not in env else np.union1d(env[src], q)

    pull(links, np.asarray(positions, dtype=np.int64).reshape(-1))
    while env:
        node = max(env, key=order.__getitem__)
        pull(records[node].geom.links, env.pop(node))
    return np.unique(np.concatenate(parts))


def clipped_support(records: Mapping[Any, Record], order: Sequence[Any], target: Any, index: Sequence[int]) -> Optional[Support]:
    """The input pixels, per axis, that position ``index`` of ``target`` depends on: :func:`clipped_box`
    with sets instead of hulls (clipped at every layer's border, padding modes followed). None when the
    unit reads only padding. Exact for one path; where paths of different shapes meet near a border it is
    the projection of a product of per-axis sets, so it may hold pixels no single path reads there."""
    pos = {n: k for k, n in enumerate(order)}
    env: Dict[Any, List[np.ndarray]] = {target: [np.asarray([i], dtype=np.int64) for i in index]}
    result: Optional[List[np.ndarray]] = None
    input_size = records[order[0]].shape[2:]
    for n in reversed(order[: pos[target] + 1]):
        if n not in env:
            continue
        rec = records[n]
        sets = [v[(v >= 0) & (v < rec.positions(a))] for a, v in enumerate(env.pop(n))]
        if any(len(v) == 0 for v in sets):
            continue
        if not rec.geom.links:
            if rec.geom.measured:  # an empirically measured node: its affine box (no holes claimed), clipped
                sets = [np.arange(max(int(v[0]) * rec.bj[a] - rec.p[a], 0),
                                  min(int(v[-1]) * rec.bj[a] - rec.p[a] + rec.r[a] - 1, input_size[a] - 1) + 1) for a, v in enumerate(sets)]
            result = sets if result is None else [np.union1d(x, y) for x, y in zip(result, sets)]
            continue
        for src, maps in rec.geom.links:
            s = records[src]
            pulled = [maps[a].clip_taps(v, s.positions(a)) if s.local(a) else np.zeros(1, dtype=np.int64) for a, v in enumerate(sets)]
            if any(len(v) == 0 for v in pulled):
                continue
            env[src] = pulled if src not in env else [np.union1d(x, y) for x, y in zip(env[src], pulled)]
    if result is None or any(len(v) == 0 for v in result):
        return None
    return tuple(tuple(int(i) for i in v) for v in result)


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
            low, high = _tabulated_hull(records, s, axis, pa, pb)
        # an empty pull (a concatenation's other piece) reads nothing: it must not widen the union
        low, high = np.where(pa <= pb, low, _FAR), np.where(pa <= pb, high, -_FAR)
        lo = low if lo is None else np.minimum(lo, low)
        hi = high if hi is None else np.maximum(hi, high)
    if np.ndim(lo) == 0:
        return int(lo), int(hi)
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
            if any(lo > hi for lo, hi in pulled):  # this input is not read (another piece of a concatenation)
                continue
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

    def support(self, target: Any, index: Sequence[int], *, clip: bool) -> Optional[Support]:
        """Input indices, per axis, read by position ``index`` of ``target`` (see :func:`clipped_support`
        and :func:`unclipped_support`)."""
        if clip:
            return clipped_support(self.records, self.order, target, index)
        rec = self.records[target]
        out = []
        for a, i in enumerate(index):
            if rec.aligned[a]:
                out.append(tuple(int(v) for v in i * rec.bj[a] - rec.p[a] + np.flatnonzero(rec.sup[a])))
            else:
                taps = unclipped_support(self.records, rec.geom.links, a, np.asarray([i], dtype=np.int64))
                out.append(tuple(int(v) for v in taps))
        return tuple(out)

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
