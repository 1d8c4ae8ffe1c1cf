"""Geometry of one traced node: per-axis index maps, the node's :class:`Geometry`, and its :class:`Record`.

Every layer is described, per spatial axis, by how an interval of *output* indices ``[a, b]`` pulls back
to an interval of *input* indices (``pull``) and, for maps that keep features on an integer grid, by the
Araujo-Norris-Sim recurrence ``(r, j, P) -> (r', j', P')`` (``rec``). ``pull`` is exact for every map (it
is the hull of the indices the outputs read) and works on ints and on numpy int arrays alike.

A receptive-field rule (:func:`~foldconv.analysis.receptive_field.register_rf_rule`) returns a
:class:`Geometry`: for each tensor input, one map per spatial axis, plus where each spatial axis lives in
the node's output. The analysis keeps one :class:`Record` per node (the geometry and the per-axis summary).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from ...padding import padded_source

__all__ = [
    "AxisMap", "Local", "Regroup", "Transposed", "Resample", "Adaptive", "Whole", "Broadcast", "Roll", "Piece", "IDENTITY",
    "Digits", "digit_map", "Layout", "normal_layout", "view_layout", "Geometry", "Record",
]


def _ceil_div(x, d):
    return -((-x) // d)


class AxisMap:
    """Base class. ``integral`` maps keep features on the input grid and have a recurrence."""

    integral: bool = True

    def jump(self, j: Fraction) -> Fraction:
        """Effective stride (distance between neighbouring outputs, in input pixels) after this map."""
        raise NotImplementedError

    def rec(self, r: int, j: int, p: int) -> Tuple[int, int, int]:
        """Araujo et al.'s recurrence on (size, box jump, effective padding); integral maps only."""
        raise NotImplementedError

    def pull(self, a, b):
        """Input index hull ``(lo, hi)`` read by outputs ``a..b`` (padding indices included)."""
        raise NotImplementedError

    def clip_pull(self, a: int, b: int, n: int) -> Tuple[int, int]:
        """Like :meth:`pull`, for an input of size ``n`` whose padding maps back inside (reflect etc.)."""
        return self.pull(a, b)

    def taps(self, o: np.ndarray) -> np.ndarray:
        """The input indices (padding included, sorted, unique) that some output in ``o`` reads: a subset
        of the hull :meth:`pull`; the default is the whole hull of every output."""
        lo, hi = self.pull(o, o)
        lo, hi = np.broadcast_to(lo, o.shape), np.broadcast_to(hi, o.shape)
        return np.unique(np.concatenate([np.arange(a, b + 1) for a, b in zip(lo.tolist(), hi.tolist())] or [np.zeros(0, np.int64)]))

    def clip_taps(self, o: np.ndarray, n: int) -> np.ndarray:
        """Like :meth:`taps`, for an input of size ``n``: padding indices read nothing (zero padding)."""
        t = self.taps(o)
        return t[(t >= 0) & (t < n)]

    def offsets(self) -> np.ndarray:
        """Integral maps: the tap offsets of one output, relative to its first tap (a conv's ``d*arange(k)``)."""
        raise NotImplementedError

    def support_rec(self, mask: np.ndarray, j: int) -> np.ndarray:
        """The support recurrence of integral maps: ``mask`` marks the offsets (from the box start, box jump
        ``j``) the input reads; the output reads ``{t*j + u}`` over its taps ``t`` and the input's ``u``."""
        offs = self.offsets()
        if j == 0 or len(offs) == 1:
            return mask
        out = np.zeros(int(offs[-1]) * j + len(mask), dtype=bool)
        for t in offs.tolist():
            out[t * j: t * j + len(mask)] |= mask
        return out


class Local(AxisMap):
    """Conv/pool/slice window: output ``o`` reads ``o*s - p + [0, k-1]`` (``k`` the dilated extent).

    ``s = 0`` selects the single index ``-p`` (integer indexing). ``mode`` is the padding mode.

    Example:
        >>> Local(3, 2, 1).pull(0, 1), Local(3, 2, 1).rec(1, 1, 0)
        ((-1, 3), (3, 2, 1))
    """

    def __init__(self, k: int, s: int, p: int, mode: str = "zeros", dilation: int = 1):
        self.k, self.s, self.p, self.mode, self.d = int(k), int(s), int(p), mode, int(dilation)

    def jump(self, j):
        return j * self.s if self.s else j

    def rec(self, r, j, p):
        return r + (self.k - 1) * j, j * self.s, p + self.p * j

    def pull(self, a, b):
        return a * self.s - self.p, b * self.s - self.p + self.k - 1

    def clip_pull(self, a, b, n):
        lo, hi = self.pull(a, b)
        if self.mode == "zeros" and lo >= 0 and hi <= n - 1:
            return lo, hi
        # near a border the hull must skip dilation holes and follow the padding mode: enumerate the taps
        taps = {o * self.s - self.p + t for o in range(a, b + 1) for t in range(0, self.k, self.d)}
        idx = {q for q in (padded_source(t, n, self.mode) for t in taps) if q is not None}
        if not idx:
            return 1, 0
        return min(idx), max(idx)

    def offsets(self):
        return np.arange(0, self.k, max(self.d, 1), dtype=np.int64)

    def taps(self, o):
        o = np.asarray(o, dtype=np.int64).reshape(-1)
        return np.unique((o[:, None] * self.s - self.p + self.offsets()[None, :]).reshape(-1))

    def clip_taps(self, o, n):
        t = self.taps(o)
        if self.mode == "zeros":
            return t[(t >= 0) & (t < n)]
        return np.unique(np.asarray([q for q in (padded_source(int(v), n, self.mode) for v in t) if q is not None] or [], dtype=np.int64))

    def __repr__(self):
        return f"Local(k={self.k}, s={self.s}, p={self.p})"


IDENTITY = Local(1, 1, 0)


class Regroup(AxisMap):
    """Space-to-depth by ``fi`` then depth-to-space by ``fo``: output ``o`` reads block ``o // fo``.

    Example:
        >>> Regroup(1, 16).pull(17, 31), Regroup(1, 16).jump(Fraction(1))
        ((1, 1), Fraction(1, 16))
    """

    def __init__(self, fi: int, fo: int):
        self.fi, self.fo = int(fi), int(fo)
        self.integral = self.fo == 1

    def jump(self, j):
        return j * Fraction(self.fi, self.fo)

    def rec(self, r, j, p):
        return Local(self.fi, self.fi, 0).rec(r, j, p)

    def pull(self, a, b):
        return (a // self.fo) * self.fi, (b // self.fo) * self.fi + self.fi - 1

    def offsets(self):
        return np.arange(self.fi, dtype=np.int64)

    def __repr__(self):
        return f"Regroup(in={self.fi}, out={self.fo})"


class Transposed(AxisMap):
    """Transposed conv with dilated extent ``k``, stride ``s`` and padding ``p``: output ``o`` reads inputs
    ``i`` with ``i*s - p <= o <= i*s - p + k - 1``.

    Example:
        >>> Transposed(4, 2, 1).pull(1, 1), Transposed(4, 2, 1).jump(Fraction(1))
        ((0, 1), Fraction(1, 2))
    """

    integral = False

    def __init__(self, k: int, s: int, p: int, dilation: int = 1):
        self.k, self.s, self.p, self.d = int(k), int(s), int(p), int(dilation)

    def jump(self, j):
        return j / self.s

    def pull(self, a, b):
        return _ceil_div(a + self.p - self.k + 1, self.s), (b + self.p) // self.s

    def taps(self, o):
        # input i reaches output i*s - p + t*d: o reads i when (o + p - i*s) is a tap offset
        o = np.asarray(o, dtype=np.int64).reshape(-1)
        lo, hi = self.pull(o, o)
        width = int(np.max(hi - lo)) + 1 if len(o) else 0
        i = lo[:, None] + np.arange(max(width, 0))[None, :]
        off = o[:, None] + self.p - i * self.s
        keep = (i <= hi[:, None]) & (off >= 0) & (off <= self.k - 1) & (off % max(self.d, 1) == 0)
        return np.unique(i[keep])

    def clip_pull(self, a, b, n):
        # With stride and dilation > 1 an output may fall between the taps of every input (its value is the
        # bias alone): the hull is that of the inputs really read, empty (1, 0) when there are none.
        t = self.clip_taps(np.arange(int(a), int(b) + 1, dtype=np.int64), n)
        return (1, 0) if len(t) == 0 else (int(t[0]), int(t[-1]))

    def __repr__(self):
        return f"Transposed(k={self.k}, s={self.s}, p={self.p})"


class Resample(AxisMap):
    """``F.interpolate`` from ``n_in`` to ``n_out`` samples (nearest, nearest-exact, (bi/tri)linear, bicubic).

    Example:
        >>> tuple(int(v) for v in Resample(4, 8, "bilinear").pull(1, 1))
        (0, 1)
    """

    integral = False

    def __init__(self, n_in: int, n_out: int, mode: str = "nearest", align_corners: bool = False, ratio: Any = None):
        self.n_in, self.n_out, self.mode, self.align_corners = int(n_in), int(n_out), mode, bool(align_corners)
        # torch's source step: n_in/n_out, or 1/scale_factor when a scale factor is given (not recomputed)
        self.ratio = Fraction(ratio) if ratio is not None else Fraction(self.n_in, self.n_out)

    def jump(self, j):
        return j * Fraction(self.n_in, self.n_out)

    def _base(self, o):
        """First source index of output ``o`` and whether the second tap has a non-zero weight."""
        n, m = self.n_in, self.n_out
        p, q = self.ratio.numerator, self.ratio.denominator
        if self.mode == "nearest":
            return np.minimum((o * p) // q, n - 1), o * 0
        if self.mode == "nearest-exact":
            return np.minimum(((2 * o + 1) * p) // (2 * q), n - 1), o * 0
        if self.align_corners:
            num, den = o * (n - 1), max(m - 1, 1)
        else:  # src = (o + 1/2) ratio - 1/2, clamped at 0 (not for bicubic)
            num, den = (2 * o + 1) * p - q, 2 * q
            if self.mode != "bicubic":
                num = np.maximum(num, 0)
        base = num // den
        return (base if self.mode == "bicubic" else np.minimum(base, n - 1)), ((num % den) != 0) * 1

    def pull(self, a, b):
        lo, _ = self._base(a)
        hi, frac = self._base(b)
        if self.mode in ("nearest", "nearest-exact"):
            return lo, hi
        if self.mode == "bicubic":  # taps floor-1..floor+2 clamped into the input; a source on a sample reads it alone
            _, lfrac = self._base(a)
            lo = np.where(lfrac != 0, lo - 1, lo)
            hi = np.where(frac != 0, hi + 2, hi)
            return np.clip(lo, 0, self.n_in - 1), np.clip(hi, 0, self.n_in - 1)
        # a tap whose weight is exactly zero (source on a sample, or clamped at the border) reads nothing
        return lo, np.minimum(hi + frac, self.n_in - 1)

    def taps(self, o):
        o = np.asarray(o, dtype=np.int64).reshape(-1)
        if self.mode in ("nearest", "nearest-exact") or self.mode.endswith("linear"):
            base, frac = self._base(o)
            return np.unique(np.concatenate([base, np.minimum(base + 1, self.n_in - 1)[frac != 0]]))
        return super().taps(o)

    def __repr__(self):
        return f"Resample({self.n_in}->{self.n_out}, {self.mode})"


class Adaptive(AxisMap):
    """Adaptive pooling bin ``o`` of ``n_out`` over ``n_in``: ``[floor(o*n_in/n_out), ceil((o+1)*n_in/n_out) - 1]``.

    Example:
        >>> Adaptive(7, 3).pull(1, 1)
        (2, 4)
    """

    integral = False

    def __init__(self, n_in: int, n_out: int):
        self.n_in, self.n_out = int(n_in), int(n_out)

    def jump(self, j):
        return j * Fraction(self.n_in, self.n_out)

    def pull(self, a, b):
        return (a * self.n_in) // self.n_out, _ceil_div((b + 1) * self.n_in, self.n_out) - 1

    def __repr__(self):
        return f"Adaptive({self.n_in}->{self.n_out})"


class Whole(AxisMap):
    """Every output reads the whole axis of size ``n`` (global pooling, flatten + linear, attention).

    Example:
        >>> Whole(7).pull(0, 0), Whole(7).rec(5, 2, 1)
        ((0, 6), (17, 0, 1))
    """

    def __init__(self, n: int):
        self.n = int(n)

    def jump(self, j):
        return j * self.n

    def rec(self, r, j, p):
        return r + (self.n - 1) * j, 0, p

    def pull(self, a, b):
        return a * 0, b * 0 + self.n - 1

    def offsets(self):
        return np.arange(self.n, dtype=np.int64)

    def __repr__(self):
        return f"Whole({self.n})"


class Broadcast(AxisMap):
    """A size-1 axis broadcast against a larger one: every output reads index 0.

    Example:
        >>> Broadcast().pull(3, 5)
        (0, 0)
    """

    def jump(self, j):
        return j

    def rec(self, r, j, p):
        return r, 0, p

    def pull(self, a, b):
        return a * 0, b * 0

    def offsets(self):
        return np.zeros(1, dtype=np.int64)

    def __repr__(self):
        return "Broadcast()"


class Roll(AxisMap):
    """``torch.roll`` by ``shift`` along an axis of size ``n`` (Swin's cyclic shift): output ``o`` reads
    ``(o - shift) mod n``. Not affine: an interval that wraps around the end reads both ends, so its hull
    is the whole axis (the support, :meth:`taps`, is the two pieces).

    Example:
        >>> Roll(8, 3).pull(3, 4), Roll(8, 3).pull(2, 3), Roll(8, 3).taps(np.arange(2, 4)).tolist()
        ((0, 1), (0, 7), [0, 7])
    """

    integral = False

    def __init__(self, n: int, shift: int):
        self.n, self.shift = int(n), int(shift) % max(int(n), 1)

    def jump(self, j):
        return j

    def pull(self, a, b):
        # outside 0..n-1 (a consumer's padding) the map continues periodically, like the other maps' extrapolation
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        qa, qb = a // self.n, b // self.n
        lo, hi = (a - self.shift) % self.n, (b - self.shift) % self.n
        wraps = (b - a + 1 >= self.n) | (lo > hi) | (qa != qb)
        lo = np.where(wraps, qa * self.n, qa * self.n + lo)
        hi = np.where(wraps, qb * self.n + self.n - 1, qb * self.n + hi)
        if lo.ndim == 0:
            return int(lo), int(hi)
        return lo, hi

    def taps(self, o):
        o = np.asarray(o, dtype=np.int64).reshape(-1)
        return np.unique((o // self.n) * self.n + (o - self.shift) % self.n)

    def __repr__(self):
        return f"Roll(n={self.n}, shift={self.shift})"


class Piece(AxisMap):
    """One input of a concatenation along a spatial axis: output ``o`` reads input index ``o - offset``
    when it lies in ``0..n-1``, and nothing otherwise (an empty pull, ``lo > hi``).

    Example:
        >>> Piece(4, 3).pull(5, 9), Piece(4, 3).pull(1, 2)[0] > Piece(4, 3).pull(1, 2)[1]
        ((1, 2), True)
    """

    integral = False

    def __init__(self, offset: int, n: int):
        self.offset, self.n = int(offset), int(n)

    def jump(self, j):
        return j

    def pull(self, a, b):
        lo, hi = np.maximum(a - self.offset, 0), np.minimum(b - self.offset, self.n - 1)
        empty = lo > hi
        lo, hi = np.where(empty, 1, lo), np.where(empty, 0, hi)  # one canonical empty interval
        return (int(lo), int(hi)) if np.ndim(lo) == 0 else (lo, hi)

    def taps(self, o):
        t = np.asarray(o, dtype=np.int64).reshape(-1) - self.offset
        return np.unique(t[(t >= 0) & (t < self.n)])

    def __repr__(self):
        return f"Piece(offset={self.offset}, n={self.n})"


#: Where a spatial axis lives when a reshape spread it over several dims or shares a dim with other axes: its
#: digits, major first, each ``(dim, inner, size)``: the axis index is the mixed-radix number whose digit ``k``
#: is ``(position along dim) // inner % size``.
Layout = Tuple[Tuple[int, int, int], ...]


class Digits(AxisMap):
    """A re-indexing of mixed-radix digits: input index digit ``k`` (sizes ``sizes``, major first) is output
    digit ``source[k]`` (output digit sizes ``out_sizes``), or, where ``source[k]`` is None, every value of it
    (the op sums or mixes along the dim that held it). Exact: each output reads a product of digit ranges.
    Positions outside the output (a consumer's padding) continue periodically, one input span per output span.

    Example (an axis of 2 x 3 digits whose minor digit is mixed away):
        >>> m = Digits((2, 3), (0, None), (2,))
        >>> m.pull(1, 1), m.taps(np.array([0])).tolist()
        ((3, 5), [0, 1, 2])
    """

    integral = False

    def __init__(self, sizes: Sequence[int], source: Sequence[Optional[int]], out_sizes: Sequence[int]):
        self.sizes, self.source, self.out_sizes = tuple(int(s) for s in sizes), tuple(source), tuple(int(s) for s in out_sizes)
        self.n_in, self.n_out = int(np.prod(self.sizes, dtype=np.int64)), int(np.prod(self.out_sizes, dtype=np.int64))
        w_in = np.cumprod((1,) + self.sizes[::-1])[::-1][1:]  # weight of each input digit
        w_out = np.cumprod((1,) + self.out_sizes[::-1])[::-1][1:]
        o = np.arange(self.n_out, dtype=np.int64)
        base = np.zeros(self.n_out, dtype=np.int64)
        free = np.zeros(1, dtype=np.int64)
        for k, (size, src) in enumerate(zip(self.sizes, self.source)):
            if src is None:
                free = (free[:, None] + np.arange(size, dtype=np.int64)[None, :] * w_in[k]).reshape(-1)
            else:
                base += (o // w_out[src]) % self.out_sizes[src] * w_in[k]
        self._base, self._free = base, np.sort(free)
        self._span = int(self._free[-1])

    def jump(self, j):
        return j * Fraction(self.n_in, max(self.n_out, 1))

    def _split(self, o):
        o = np.asarray(o, dtype=np.int64)
        q, r = np.divmod(o, self.n_out)
        return self._base[r] + q * self.n_in

    def pull(self, a, b):
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        width = int(np.max(b - a, initial=0)) + 1
        pos = a[..., None] + np.arange(max(width, 1), dtype=np.int64)
        pos = np.minimum(pos, np.maximum(b, a)[..., None])  # an interval: the hull of its positions' hulls
        start = self._split(pos)
        lo, hi = start.min(-1), start.max(-1) + self._span
        return (int(lo), int(hi)) if lo.ndim == 0 else (lo, hi)

    def taps(self, o):
        o = np.asarray(o, dtype=np.int64).reshape(-1)
        return np.unique((self._split(o)[:, None] + self._free[None, :]).reshape(-1))

    def __repr__(self):
        return f"Digits({self.sizes} <- {self.source} of {self.out_sizes})"


def digit_map(sizes: Sequence[int], source: Sequence[Optional[int]], out_sizes: Sequence[int]) -> AxisMap:
    """The :class:`Digits` map, as the simplest map that equals it: IDENTITY (the same digits), ``Whole``
    (every digit free), ``Broadcast`` (no input digit), ``Local(K, K, 0)`` (the output is the leading digits,
    the trailing ``K`` positions are free: a block), else :class:`Digits`.

    Example:
        >>> digit_map((4, 7), (0, None), (4,)), digit_map((4, 7), (None, None), (4, 7)), digit_map((4, 7), (0, 1), (4, 7))
        (Local(k=7, s=7, p=0), Whole(28), Local(k=1, s=1, p=0))
    """
    sizes, source, out_sizes = tuple(sizes), tuple(source), tuple(out_sizes)
    if not sizes:
        return Broadcast()
    if all(s is None for s in source):
        return Whole(int(np.prod(sizes, dtype=np.int64)))
    kept = [s for s in source if s is not None]
    lead = len(kept)
    if kept == list(range(len(out_sizes))) and source[:lead] == tuple(kept) and all(s is None for s in source[lead:]) \
            and tuple(sizes[:lead]) == out_sizes:
        block = int(np.prod(sizes[lead:], dtype=np.int64))
        return IDENTITY if block == 1 else Local(block, block, 0)
    return Digits(sizes, source, out_sizes)


def normal_layout(layout: Layout) -> Layout:
    """``layout`` without size-1 digits, with neighbouring digits of one dim that are contiguous joined.

    Example:
        >>> normal_layout(((1, 7, 8), (3, 1, 1), (1, 1, 7)))
        ((1, 1, 56),)
    """
    out: List[Tuple[int, int, int]] = []
    for d, inner, size in layout:
        if size == 1:
            continue
        if out and out[-1][0] == d and out[-1][1] == inner * size:
            out[-1] = (d, inner, out[-1][2] * size)
        else:
            out.append((int(d), int(inner), int(size)))
    return tuple(out)


def view_layout(layout: Layout, source_shape: Sequence[int], out_shape: Sequence[int]) -> Optional[Layout]:
    """The digits of an axis after a view (a row-major re-indexing) from ``in_shape`` to ``out_shape``; None
    when a digit does not fall on whole digits of the new dims (the positions are then not a product).
    ``source_shape``: the shape the view reads.

    Example (a (56, 56) grid split into 8 x 8 windows of 7 x 7):
        >>> view_layout(((1, 1, 56),), (1, 56, 56, 96), (1, 8, 7, 8, 7, 96))
        ((1, 1, 8), (2, 1, 7))
    """
    def strides(shape):
        return [int(np.prod(shape[d + 1:], dtype=np.int64)) for d in range(len(shape))]

    s_in, s_out = strides(source_shape), strides(out_shape)
    out: List[Tuple[int, int, int]] = []
    for d, inner, size in layout:
        flat, k, pieces = inner * s_in[d], size, []
        while k > 1:
            e = next((e for e in range(len(out_shape)) if s_out[e] <= flat < s_out[e] * out_shape[e]), None)
            if e is None or flat % s_out[e]:
                return None
            inner_e = flat // s_out[e]
            if inner_e * k <= out_shape[e]:
                pieces.append((e, inner_e, k))
                break
            if out_shape[e] % inner_e or k % (out_shape[e] // inner_e):
                return None
            c = out_shape[e] // inner_e
            pieces.append((e, inner_e, c))
            flat, k = flat * c, k // c
        out.extend(reversed(pieces))
    return normal_layout(tuple(out))


@dataclass(frozen=True)
class Geometry:
    """How a node is computed from its tensor inputs, per spatial axis of the network's input.

    ``links``: ``((input node, (AxisMap per spatial axis)), ...)``, one entry per tensor input.
    ``dims[a]``: the tensor dim of the output that carries spatial axis ``a`` (None: the axis was mixed
    away, every output reads the whole of it). ``merged[a]``: the axis shares its dim with others (after a
    reshape), so only a conservative hull is known; ``exact[a]``: False where the box is such a hull.
    ``measured``: the node was measured from gradients (no links: its record holds the affine box).
    ``digits[a]`` (when given): the :data:`Layout` of a merged axis whose reshapes are known, so that its
    positions are still exact (``dims[a]`` is then its major digit's dim and ``merged[a]`` True).

    Example:
        >>> g = Geometry((), (2, 3), (False, False), (True, True))
        >>> g.dims, g.measured
        ((2, 3), False)
    """

    links: Tuple[Tuple[Any, Tuple[AxisMap, ...]], ...]
    dims: Tuple[Optional[int], ...]
    merged: Tuple[bool, ...]
    exact: Tuple[bool, ...]
    note: str = ""
    measured: bool = False
    digits: Tuple[Optional[Layout], ...] = ()

    def layout(self, a: int) -> Optional[Layout]:
        """The digits of a merged axis ``a`` whose positions are known (None otherwise)."""
        return self.digits[a] if self.digits and self.merged[a] and self.dims[a] is not None else None


@dataclass
class Record:
    """The analysis' state of one node: its geometry, its shape and, per axis, the summary
    ``r`` (size), ``bj`` (integer box jump), ``p`` (effective padding), ``j`` (geometric jump), ``aligned``,
    and ``sup``: a boolean mask of length ``r`` marking the offsets of the box that some path reads (the
    support; False entries are holes, e.g. between the taps of a dilated conv). For an aligned node it holds
    for every position; otherwise it is the support of the position with the largest box, and ``tab[axis]``
    holds the exact ``(lo, hi)`` of every position (so a later pull-back looks them up instead of recursing).

    Filled in topological order by the analysis; read by the pull-back and the report.
    """

    node: Any
    geom: Optional[Geometry]
    shape: Tuple[int, ...]
    r: List[int] = field(default_factory=list)
    bj: List[int] = field(default_factory=list)
    p: List[int] = field(default_factory=list)
    j: List[Fraction] = field(default_factory=list)
    aligned: List[bool] = field(default_factory=list)
    sup: List[np.ndarray] = field(default_factory=list)
    tab: Dict[int, Tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    def local(self, axis: int) -> bool:
        """Spatial axis ``axis`` still has positions: a tensor dim of its own (not mixed away, not merged), or
        digits of merged dims whose layout is known (:meth:`Geometry.layout`)."""
        return self.geom is not None and self.geom.dims[axis] is not None and (not self.geom.merged[axis] or self.geom.layout(axis) is not None)

    def plain(self, axis: int) -> bool:
        """Spatial axis ``axis`` is a tensor dim of its own."""
        return self.geom is not None and self.geom.dims[axis] is not None and not self.geom.merged[axis]

    def positions(self, axis: int) -> int:
        """Number of output positions along spatial axis ``axis`` (1 once it is no longer local)."""
        if not self.local(axis):
            return 1
        digits = self.geom.layout(axis)
        return int(self.shape[self.geom.dims[axis]]) if digits is None else int(np.prod([s for _, _, s in digits], dtype=np.int64))
