"""How a sweep's points are split into shards, and how long they take.

Points are dealt to shards in blocks of :data:`BLOCK` consecutive points (block ``b`` to shard ``b % count``):
neighbouring points of a grid usually differ only in their fold (orders, folded stride) and share their
conv's draws and original output (:class:`~foldconv.sweep.forms.SharedDraws`), and dealing whole blocks
keeps those neighbours together while every shard still gets a slice of every region of the grid.

The estimate times a sample of blocks (spread evenly over the points still to run, and run first, so no
work is wasted) and fits ``seconds = a * points + b * work`` to them, where :func:`work` counts the
multiply-adds of a point's convolutions; the fit, applied to the other blocks, gives the time left.

Example:
    >>> from foldconv.sweep.grid import Point
    >>> pts = [Point("theorem", 1, 2, in_channels=2, kernel=k, size=5 + k) for k in range(1, 7)]
    >>> [p.kernel for p in shard(pts, 1, 2, block=2)]
    [3, 4]
    >>> first, rest = calibration(pts, blocks=2, block=2)
    >>> [p.kernel for p in first], [p.kernel for p in rest]
    ([1, 2, 5, 6], [3, 4])
"""
from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .grid import Point

__all__ = ["BLOCK", "CostModel", "MIN_BLOCKS", "calibration", "shard", "work"]

#: Consecutive points that stay together: in a shard, in the calibration sample.
BLOCK = 64
#: Timed blocks of one dimensionality that give it a fit of its own.
MIN_BLOCKS = 3


def _blocks(pts: Sequence[Point], block: int) -> List[Sequence[Point]]:
    return [pts[start:start + block] for start in range(0, len(pts), block)]


def shard(pts: Iterable[Point], index: int, count: int, *, block: int = BLOCK) -> List[Point]:
    """The points of shard ``index`` of ``count``: blocks ``index, index + count, ...`` of ``block`` points
    (``pts`` may be a stream, e.g. :func:`~foldconv.sweep.grid.iter_points`: only the shard's are kept)."""
    return [p for i, p in enumerate(pts) if (i // block) % count == index]


def work(p: Point) -> float:
    """Multiply-adds of the point's convolutions over its whole input: the original and the literal fold
    (``C/g * K**d`` taps each) and the library's folded conv (the dilated kernel, ``C/g * (d*(K-1)+1)**d``),
    times batch, output channels and input pixels: what a point costs, up to a factor.

    Example:
        >>> work(Point("theorem", 2, 2, in_channels=4, kernel=3, size=8))
        27648.0
    """
    taps = 2 * p.kernel ** p.dims + (p.dilation * (p.kernel - 1) + 1) ** p.dims
    return float(p.batch * p.out_channels * (p.in_channels // max(1, p.groups)) * taps * max(1, p.size) ** p.dims)


def calibration(pts: Sequence[Point], *, blocks: int = 24, block: int = BLOCK) -> Tuple[List[Point], List[Point]]:
    """Split ``pts`` into the blocks to time first (``blocks`` of them, evenly spread, first and last
    included) and the rest, each in its original order."""
    chunks = _blocks(pts, block)
    if len(chunks) <= blocks:
        return list(pts), []
    step = (len(chunks) - 1) / (blocks - 1)
    chosen = {round(i * step) for i in range(blocks)}
    first = [p for b, chunk in enumerate(chunks) if b in chosen for p in chunk]
    rest = [p for b, chunk in enumerate(chunks) if b not in chosen for p in chunk]
    return first, rest


class CostModel:
    """``seconds = a * points + b * work``, fitted to timed blocks (least squares, ``a, b >= 0``), one fit per
    number of spatial dims that has at least :data:`MIN_BLOCKS` timed blocks (a 3-D multiply-add costs other
    than a 1-D one), the fit of all blocks for the others.

    Example:
        >>> pts = [Point("theorem", 2, 2, in_channels=4, kernel=3, size=8)] * 4
        >>> model = CostModel.fit([(pts[:2], 0.5), (pts[2:], 0.5)])
        >>> round(model.seconds(pts), 6)
        1.0
    """

    def __init__(self, per_point: float, per_work: float, by_dims: Optional[Dict[int, CostModel]] = None) -> None:
        self.per_point, self.per_work, self.by_dims = per_point, per_work, dict(by_dims or {})

    @classmethod
    def fit(cls, timed: Sequence[Tuple[Sequence[Point], float]]) -> CostModel:
        """The model of blocks timed as ``(points, seconds)``."""
        whole = cls._fit([(pts, seconds) for pts, seconds in timed if pts])
        strata: Dict[int, List[Tuple[Sequence[Point], float]]] = {}
        for pts, seconds in timed:
            if pts and len({p.dims for p in pts}) == 1:
                strata.setdefault(pts[0].dims, []).append((pts, seconds))
        whole.by_dims = {dims: cls._fit(blocks) for dims, blocks in strata.items() if len(blocks) >= MIN_BLOCKS}
        return whole

    @classmethod
    def _fit(cls, timed: Sequence[Tuple[Sequence[Point], float]]) -> CostModel:
        rows = [(float(len(pts)), sum(work(p) for p in pts), seconds) for pts, seconds in timed]
        n = sum(r[0] for r in rows)
        if not rows or n == 0:
            return cls(0.0, 0.0)
        total = sum(r[2] for r in rows)
        snn = sum(r[0] * r[0] for r in rows)
        sww = sum(r[1] * r[1] for r in rows)
        snw = sum(r[0] * r[1] for r in rows)
        sny = sum(r[0] * r[2] for r in rows)
        swy = sum(r[1] * r[2] for r in rows)
        det = snn * sww - snw * snw
        if det > 1e-12 * max(snn * sww, 1e-300):
            a, b = (sny * sww - swy * snw) / det, (swy * snn - sny * snw) / det
            if a >= 0 and b >= 0:
                return cls(a, b)
        # The constrained optimum lies on an axis: all time per point, or all time per multiply-add.
        a_only = cls(total / n, 0.0)
        b_only = cls(0.0, swy / sww) if sww > 0 else a_only
        return min((a_only, b_only), key=lambda m: sum((m.per_point * r[0] + m.per_work * r[1] - r[2]) ** 2 for r in rows))

    def seconds(self, pts: Sequence[Point]) -> float:
        """The predicted time of ``pts``."""
        total = 0.0
        for p in pts:
            model = self.by_dims.get(p.dims, self)
            total += model.per_point + model.per_work * work(p)
        return total
