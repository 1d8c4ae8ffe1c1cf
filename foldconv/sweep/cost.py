"""How a sweep's points are split into shards, and how long they take.

Points are dealt to shards in blocks of :data:`BLOCK` consecutive points (block ``b`` to shard ``b % count``):
neighbouring points of a grid usually differ only in their fold (orders, folded stride) and share their
conv's draws and original output (:class:`~foldconv.sweep.forms.SharedDraws`), and dealing whole blocks
keeps those neighbours together while every shard still gets a slice of every region of the grid.

The estimate times a sample of blocks (spread evenly over the points still to run, and run first, so no
work is wasted) and fits ``seconds = a * points + b * work`` to them, where :func:`shared_work` counts the
multiply-adds a point's convolutions add after its neighbours' (over output pixels: a strided conv costs its
outputs, not its inputs); the fit, applied to the other blocks, gives the time left. The first point a worker
observes also pays its one-time warm-up (lazy imports, first kernels): the app leaves it out of the fit.

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

import functools
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

from ..errors import FoldError
from ..fold import folded_groups
from ..specs import FoldSpec
from .grid import Point

__all__ = ["BLOCK", "CostModel", "MIN_BLOCKS", "calibration", "in_shard", "shard", "shared_work", "work"]

#: Consecutive points that stay together: in a shard, in the calibration sample.
BLOCK = 64
#: Timed blocks of one dimensionality that give it a fit of its own.
MIN_BLOCKS = 3


def _blocks(pts: Sequence[Point], block: int) -> List[Sequence[Point]]:
    return [pts[start:start + block] for start in range(0, len(pts), block)]


def in_shard(index: int, count: int, *, block: int = BLOCK) -> Callable[[int], bool]:
    """Whether the point at position ``i`` belongs to shard ``index`` of ``count`` (blocks ``index, index + count,
    ...`` of ``block`` points): :func:`~foldconv.sweep.grid.iter_points`' ``select``, so that a shard of a large
    grid builds only its own points.

    Example:
        >>> [i for i in range(8) if in_shard(1, 2, block=2)(i)]
        [2, 3, 6, 7]
    """
    return lambda i: (i // block) % count == index


def shard(pts: Iterable[Point], index: int, count: int, *, block: int = BLOCK) -> List[Point]:
    """The points of shard ``index`` of ``count``: blocks ``index, index + count, ...`` of ``block`` points."""
    keep = in_shard(index, count, block=block)
    return [p for i, p in enumerate(pts) if keep(i)]


def _out_pixels(p: Point) -> int:
    n = (p.size + 2 * p.padding - p.dilation * (p.kernel - 1) - 1) // max(1, p.stride) + 1
    return max(0, n) ** p.dims


def _macs(p: Point, taps: float) -> float:
    """Multiply-adds of a conv over the point's output pixels and channels that sums ``taps`` products per output."""
    return float(p.batch * p.out_channels * taps * _out_pixels(p))


@functools.lru_cache(maxsize=4096)
def _folded_taps(in_channels: int, groups: int, r: object, order: str, dims: int, dilated: int) -> int:
    """Products per output of the library's folded conv: its groups merge where the fold scatters a group
    (:func:`~foldconv.fold.folded_groups`; a depthwise conv folds to a nearly dense one), 0 where it has none."""
    try:
        merged = folded_groups(in_channels, max(1, groups), FoldSpec.make(r, order, dims))
    except FoldError:
        return 0
    return in_channels // merged * dilated


def _literal_runs(p: Point) -> bool:
    """The literal form's output shape is the original's (else torch's meta shapes decide it, no arithmetic)."""
    return not p.folded_stride or (isinstance(p.r, int) and p.folded_stride == p.r * p.stride)


def work(p: Point) -> float:
    """Multiply-adds of the point's convolutions, each over the original's output pixels: the original and the
    literal fold (``C/g * K**d`` products per output each; the literal fold only when its output shape is the
    original's) and the library's folded conv, exact and once more for the error columns (the dilated kernel
    over the folded groups: ``C/g' * (d*(K-1)+1)**d``, ``g'`` from :func:`~foldconv.fold.folded_groups`), times
    batch and output channels; 0 outside the fold sections. What a point costs alone, up to a factor;
    :func:`shared_work` is what it adds after its neighbours.

    Example:
        >>> work(Point("theorem", 2, 2, in_channels=4, kernel=3, size=8))
        20736.0
    """
    if p.section in _NO_CONV:
        return 0.0
    taps = p.in_channels // max(1, p.groups) * p.kernel ** p.dims
    return _macs(p, taps * (1 + _literal_runs(p)) + 2 * _folded(p))


def _folded(p: Point) -> int:
    return _folded_taps(p.in_channels, p.groups, p.r, p.order, p.dims, (p.dilation * (p.kernel - 1) + 1) ** p.dims)


_NO_CONV = ("following", "space_to_depth", "strided_spd", "invalid")
_CONV_FIELDS = ("dims", "in_channels", "out_channels", "kernel", "stride", "padding", "dilation", "groups", "padding_mode", "size", "batch")


def shared_work(pts: Sequence[Point]) -> List[float]:
    """The multiply-adds each point adds after the points before it (:func:`work`'s terms, each counted once
    where the sweep computes it once): neighbours with the same conv share the original's output, and those
    with the same fold too share the library's form and its error columns
    (:class:`~foldconv.sweep.forms.SharedDraws`); the literal fold runs for every point.

    Example:
        >>> a = Point("theorem", 2, 2, in_channels=4, kernel=3, size=8)
        >>> b = Point("orders", 2, 2, "crd", "dcr", in_channels=4, kernel=3, size=8)
        >>> shared_work([a, b]) == [work(a), work(a) / 4]  # b: only its literal fold
        True
    """
    found: List[float] = []
    conv: Optional[Tuple[object, ...]] = None
    folds: set = set()
    for p in pts:
        if p.section in _NO_CONV:
            found.append(0.0)
            continue
        key = tuple(getattr(p, k) for k in _CONV_FIELDS)
        taps = p.in_channels // max(1, p.groups) * p.kernel ** p.dims
        total = taps if _literal_runs(p) else 0
        if key != conv:
            conv, folds = key, set()
            total += taps
        if (p.r, p.order) not in folds:
            folds.add((p.r, p.order))
            total += 2 * _folded(p)
        found.append(_macs(p, total))
    return found


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
        rows = [(float(len(pts)), sum(shared_work(pts)), seconds) for pts, seconds in timed]
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
        for p, w in zip(pts, shared_work(pts)):
            model = self.by_dims.get(p.dims, self)
            total += model.per_point + model.per_work * w
        return total
