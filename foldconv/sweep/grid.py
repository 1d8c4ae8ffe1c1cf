"""The sweep's grid: axis values (validated before anything runs), the points they expand to, and their order.

A grid is a set of *sections*, each varying a few axes over their value lists while the others stay at
their first value (or, with ``product=True``, the full Cartesian product of the conv axes — cluster-sized):

============== ==============================================================================
section        varies
============== ==============================================================================
theorem        dims x r x kernel x stride x padding x folded channels G
modes          dims x r x padding_mode x stride x padding
dilation       r x dilation x kernel x padding
groups         r x groups x order x G
orders         r x order x input_order x G
folded_stride  r x stride x folded_stride
following      r x order x following layer
space_to_depth r x map size x kernel x padding_mode (the unfold direction: a big conv whose kernel, stride
               and padding are multiples of r)
strided_spd    the convs space-to-depth replaces in real models (SPD-1, ``strided_to_spd``): the grid's kernel x
               stride (> 1, the factor) x padding, and the standard strided forms (:data:`STRIDED_FORMS`:
               3x3 s2 p1, 1x1 s2 p0, 7x7 s2 p3), x map size x padding_mode (zeros, circular)
invalid        malformed requests (r < 1, non-integer r, unknown order, empty input)
============== ==============================================================================

:class:`Grid` is also the Hydra schema of ``scripts/sweep.py`` (``grid.*`` overrides); its defaults are the
quick grid of ``configs/grid/quick.yaml``. The following layers are the examples of the following-layer
registry (:func:`foldconv.predict.following_examples`).
"""
from __future__ import annotations

import functools
import hashlib
import itertools
import math
import zlib
from dataclasses import dataclass, field, fields
from typing import Any, Callable, Iterator, List, Optional, Sequence, Tuple, Union

from .._validate import parse_factors
from ..errors import FoldError, fold_error
from ..layout import normalize_order
from ..padding import PADDING_MODES
from ..predict import following_examples

__all__ = ["Grid", "POINT_FIELDS", "Point", "STRIDED_FORMS", "fold_factor", "iter_points", "points"]

#: (kernel, stride, padding) of the strided convs real models downsample with, always in the strided_spd section
#: (when the stride is one of the run's factors): ResNet/MobileNetV2's 3x3 s2 p1, the 1x1 s2 downsample shortcut,
#: the 7x7 s2 p3 stem.
STRIDED_FORMS = ((3, 2, 1), (1, 2, 0), (7, 2, 3))

Factor = Union[int, Tuple[int, ...]]


def fold_factor(value: Any, param: str = "r") -> Factor:
    """A validated fold factor from config text or numbers: an int >= 1, or 1-3 per-axis ints >= 1.

    Example:
        >>> fold_factor("2x1"), fold_factor(4)
        ((2, 1), 4)
    """
    try:
        r = parse_factors(value, param)
    except FoldError:
        raise fold_error(param, value, "must be an integer >= 1 or per-axis factors like '2x1'") from None
    values = r if isinstance(r, tuple) else (r,)
    if not 1 <= len(values) <= 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in values):
        raise fold_error(param, value, "must be an integer >= 1 or 1 to 3 per-axis factors >= 1 like '2x1'")
    return r


@functools.cache
def _order_ok(order: str, dims: int) -> bool:
    try:
        normalize_order(order, dims)
        return True
    except FoldError:
        return False


# field -> (smallest value, what the value means) for the integer axes.
_INT_AXES = {
    "dims": (1, None), "kernel": (1, None), "stride": (1, None), "padding": (0, None), "dilation": (1, None),
    "groups": (0, "0 = depthwise"), "folded_channels": (1, None), "folded_strides": (0, "0 = r*S"), "s2d_sizes": (1, None),
}


@dataclass(frozen=True)
class Grid:
    """Axis values of a sweep; see the module docstring for how sections combine them.

    Every value is validated on construction (a FoldError naming the field, the value and the allowed
    values; the sweep app names it ``grid.<field>``), so a bad grid fails before the first point runs.
    Lists become tuples, ``r`` entries are parsed (``"2x1"`` -> ``(2, 1)``).

    Example:
        >>> Grid(dims=[2], r=["2x1", 3]).r
        ((2, 1), 3)
        >>> Grid(padding_modes=("zeros", "reflekt"))
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: padding_modes=('zeros', 'reflekt'): 'reflekt' is not one of ('zeros', 'circular', 'reflect', 'replicate')
    """

    name: str = "quick"
    dims: Tuple[int, ...] = (1, 2, 3)
    r: Tuple[Any, ...] = (1, 2, 3, 4, (2, 1))
    kernel: Tuple[int, ...] = (1, 2, 3)
    stride: Tuple[int, ...] = (1, 2)
    padding: Tuple[int, ...] = (0, 1)
    dilation: Tuple[int, ...] = (1, 2)
    groups: Tuple[int, ...] = (1, 2, 0)  # 0 = depthwise
    folded_channels: Tuple[int, ...] = (1, 2)
    out_channels: int = 2
    padding_modes: Tuple[str, ...] = PADDING_MODES
    orders: Tuple[str, ...] = ("crd", "dcr", "focus")
    input_orders: Tuple[str, ...] = ("same", "crd", "dcr")
    folded_strides: Tuple[int, ...] = (0, 1)  # 0 = r*S, the theorem's stride
    following: Tuple[str, ...] = field(default_factory=following_examples)  # every registered example layer
    s2d_sizes: Tuple[int, ...] = (8, 9)
    extra: int = 3  # spatial size = effective kernel + extra
    product: bool = False
    invalid: bool = True

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("name", "out_channels", "extra", "product", "invalid"):
                continue
            if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
                raise fold_error(f.name, value, "must be a list of values")
            object.__setattr__(self, f.name, tuple(value))
        object.__setattr__(self, "r", tuple(fold_factor(v, "r") for v in self.r))
        for name, (low, note) in _INT_AXES.items():
            for v in getattr(self, name):
                if isinstance(v, bool) or not isinstance(v, int) or v < low:
                    raise fold_error(name, getattr(self, name), f"{v!r} is not an integer >= {low}" + (f" ({note})" if note else ""))
        if not set(self.dims) <= {1, 2, 3}:
            raise fold_error("dims", self.dims, "every entry must be 1, 2 or 3")
        for name, low in (("out_channels", 1), ("extra", 0)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise fold_error(name, v, f"must be an integer >= {low}")
        for name in ("product", "invalid"):
            if not isinstance(getattr(self, name), bool):
                raise fold_error(name, getattr(self, name), "must be true or false")
        self._check_names("padding_modes", PADDING_MODES)
        self._check_names("following", following_examples())
        for name, extra in (("orders", ()), ("input_orders", ("same",))):
            for order in getattr(self, name):
                if order not in extra and not any(_order_ok(order, d) for d in self.dims):
                    raise fold_error(
                        name, getattr(self, name),
                        f"{order!r} is not a channel order for dims {self.dims}: use an alias (crd, dcr, focus)"
                        + (", 'same'" if extra else "") + " or an einops axis list such as 'c rh rw'",
                    )

    def _check_names(self, name: str, allowed: Sequence[str]) -> None:
        for v in getattr(self, name):
            if v not in allowed:
                raise fold_error(name, getattr(self, name), f"{v!r} is not one of {tuple(allowed)}")


@dataclass(frozen=True)
class Point:
    """One configuration of the sweep (all fields are plain data, written as CSV columns).

    ``size`` is the spatial size of every axis of the input (an ``input_size`` of ``(size,) * dims``).
    """

    section: str
    dims: int
    r: Any
    order: str = "crd"
    input_order: str = "same"
    in_channels: int = 1
    out_channels: int = 2
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    padding_mode: str = "zeros"
    folded_stride: int = 0
    size: int = 6
    following: str = "none"
    batch: int = 2

    def key(self) -> str:
        """Every field as ``name=value``, joined by ``|`` (what :meth:`seed` hashes)."""
        return _KEY.format(*(getattr(self, k) for k in POINT_FIELDS))

    def seed(self) -> int:
        """The RNG seed of this point's draws (a hash of its fields: stable across runs and shards)."""
        return zlib.crc32(self.key().encode())


#: The fields of :class:`Point`, in order: the point's own CSV columns.
POINT_FIELDS: Tuple[str, ...] = tuple(f.name for f in fields(Point))
# Point.key's format: the stream formats a candidate's key from its values, without building the Point.
_KEY = "|".join(f"{k}={{}}" for k in POINT_FIELDS)


def points(grid: Grid, r_override: Optional[Sequence[Any]] = None) -> List[Point]:
    """All points of a grid, deduplicated, in a deterministic order; ``r_override`` replaces ``grid.r``.

    Example:
        >>> pts = points(Grid(dims=(2,), r=(2,), kernel=(3,), stride=(1,), padding=(0,), folded_channels=(1,),
        ...     padding_modes=("zeros",), orders=("crd",), input_orders=("same",), folded_strides=(0,),
        ...     dilation=(1,), groups=(1,), following=(), s2d_sizes=(), invalid=False))
        >>> [p.section for p in pts]  # one point per conv section: every axis has a single value
        ['theorem', 'modes', 'dilation', 'groups', 'orders', 'folded_stride']
    """
    return list(iter_points(grid, r_override))


def iter_points(grid: Grid, r_override: Optional[Sequence[Any]] = None, *, select: Optional[Callable[[int], bool]] = None) -> Iterator[Point]:
    """The points of :func:`points`, one at a time: a shard of a large grid keeps only its own.

    Duplicates (two axis values that give the same point, e.g. groups=1 and depthwise on one channel) are
    dropped by a 128-bit digest of the point's key, so the points seen so far cost 16 bytes each.
    ``select(i)``: keep only the points whose index ``i`` (among the deduplicated points) it accepts; the
    others are never built (a shard of the 2.9M-point full grid enumerates it in seconds).

    Example:
        >>> next(iter_points(Grid())).key()[:40]
        'section=theorem|dims=1|r=1|order=crd|inp'
        >>> [p.kernel for p in iter_points(Grid(dims=(1,), r=(2,), stride=(1,), padding=(0,), folded_channels=(1,)), select=lambda i: i < 3)]
        [1, 2, 3]
    """
    rs = tuple(fold_factor(r, "fold.r") for r in r_override) if r_override else grid.r
    seen = set()
    index = 0
    for values in _candidates(grid, rs):
        digest = hashlib.blake2b(_KEY.format(*values).encode(), digest_size=16).digest()
        if digest not in seen:
            seen.add(digest)
            if select is None or select(index):
                yield Point(*values)
            index += 1


def _candidates(grid: Grid, rs: Tuple[Any, ...]) -> Iterator[Tuple[Any, ...]]:
    """The field values (:data:`POINT_FIELDS`' order) of every point the sections make, in order, duplicates included."""
    def block(r: Any, dims: int) -> int:
        return math.prod(r) if isinstance(r, tuple) else int(r) ** dims

    def fits(r: Any, dims: int) -> bool:
        return not isinstance(r, tuple) or len(r) == dims

    def conv_point(section: str, dims: int, r: Any, G: int, k: int, s: int, pad: int, d: int, g: int, mode: str, order: str, x_order: str,
                   fs: int) -> Iterator[Tuple[Any, ...]]:
        # A grid may list orders of one dimensionality ("c rw rh"); they apply only to points of that one.
        if not fits(r, dims) or not _order_ok(order, dims) or not (x_order == "same" or _order_ok(x_order, dims)):
            return
        R = block(r, dims)
        cin = G * R * (g if g > 0 else 1)
        groups = g if g > 0 else cin  # depthwise
        cout = grid.out_channels * groups if groups > 1 else grid.out_channels
        size = d * (k - 1) + 1 + grid.extra
        if mode != "zeros":
            size = max(size, pad + 1)
        yield (section, dims, r, order, x_order, cin, cout, k, s, pad, d, groups, mode, fs, size, "none", 2)

    D = (2,) if 2 in grid.dims else grid.dims[:1]
    if grid.product:
        for dims, r, G, k, s, pad, d, g, mode, order, xo, fs in itertools.product(
            grid.dims, rs, grid.folded_channels, grid.kernel, grid.stride, grid.padding, grid.dilation, grid.groups,
            grid.padding_modes, grid.orders, grid.input_orders, grid.folded_strides,
        ):
            yield from conv_point("product", dims, r, G, k, s, pad, d, g, mode, order, xo, fs)
    else:
        for dims, r, k, s, pad, G in itertools.product(grid.dims, rs, grid.kernel, grid.stride, grid.padding, grid.folded_channels):
            yield from conv_point("theorem", dims, r, G, k, s, pad, 1, 1, "zeros", "crd", "same", 0)
        for dims, r, mode, s, pad in itertools.product(grid.dims, rs, grid.padding_modes, grid.stride, grid.padding):
            yield from conv_point("modes", dims, r, 1, 3, s, pad, 1, 1, mode, "crd", "same", 0)
        for dims, r, d, k, pad in itertools.product(D, rs, grid.dilation, grid.kernel, grid.padding):
            yield from conv_point("dilation", dims, r, 1, k, 1, pad, d, 1, "zeros", "crd", "same", 0)
        for dims, r, g, order, G in itertools.product(D, rs, grid.groups, grid.orders, grid.folded_channels):
            yield from conv_point("groups", dims, r, G, 3, 1, 1, 1, g, "zeros", order, "same", 0)
        for dims, r, order, xo, G in itertools.product(D, rs, grid.orders, grid.input_orders, grid.folded_channels):
            yield from conv_point("orders", dims, r, G, 3, 1, 1, 1, 1, "zeros", order, xo, 0)
        for dims, r, s, fs in itertools.product(D, rs, grid.stride, grid.folded_strides):
            yield from conv_point("folded_stride", dims, r, 1, 3, s, 1, 1, 1, "zeros", "crd", "same", fs)
    for dims, r, order, name in itertools.product(D, rs, grid.orders, grid.following):
        if not fits(r, dims) or not _order_ok(order, dims):
            continue
        R = block(r, dims)
        yield ("following", dims, r, order, "same", 2 * R, 4 * R, 1, 1, 0, 1, 1, "zeros", 0, 4, name, 4)
    for dims, r, n, k, mode in itertools.product(D, rs, grid.s2d_sizes, grid.kernel, ("zeros", "circular")):
        if isinstance(r, tuple):
            continue  # the unfold-direction section uses square factors
        if n + 2 * r >= k * r:  # a non-empty output
            yield ("space_to_depth", dims, r, "crd", "same", 1, 2, k * r, r, r, 1, 1, mode, 0, n, "none", 2)
    factors = {r for r in rs if not isinstance(r, tuple)}  # the stride is the factor: a job split by r owns its strides
    forms = [(k, s, pad) for k, s, pad in itertools.product(grid.kernel, grid.stride, grid.padding) if s > 1] + list(STRIDED_FORMS)
    for dims, (k, s, pad), n, mode in itertools.product(D, forms, grid.s2d_sizes, ("zeros", "circular")):
        if s in factors and n + 2 * pad >= k and (mode == "zeros" or pad <= n):  # a non-empty output torch can compute
            yield ("strided_spd", dims, s, "crd", "same", 1, 2, k, s, pad, 1, 1, mode, 0, n, "none", 2)
    if grid.invalid:
        for r, order, size in ((0, "crd", 6), (-1, "crd", 6), (1.5, "crd", 6), (2, "c rh rh", 6), (2, "xyz", 6), (2, "crd", 0)):
            yield ("invalid", 2, r, order, "same", 4, 2, 3, 1, 0, 1, 1, "zeros", 0, size, "none", 2)
        yield ("invalid", 2, 2, "crd", "same", 6, 2, 3, 1, 0, 1, 1, "zeros", 0, 6, "none", 2)  # channels not divisible
