"""The forms of a fold point (the original, the literal fold, the library's folded conv) and their draws.

**Draws shared by neighbours.** Points that differ only in their fold (factors, orders, folded stride) have
the same convolution and input size: :class:`SharedDraws` draws its integer weights, biases and inputs once
(seeded by the convolution, not by the fold, so a point observed alone or among its neighbours sees the same
numbers) and runs the original once per trial. :func:`draw_plan` picks the range and the number of trials;
a later trial runs only while every earlier one found the forms equal (a verdict other than "equivalent"
cannot change: validity and output shapes do not depend on the numbers).

**Layout maps.** :func:`~foldconv.layout.depth_to_space` and :func:`~foldconv.fold.fold_weight` move entries
and fill structural zeros (expanded dilation, merged groups); they never combine two entries. Each is
therefore a gather: applied once to an index tensor (the entries ``1..n`` as integer-valued float64, exact
below ``2**53``), it returns its own gather map (``0`` where it writes a structural zero), and applying that
map to a tensor gives exactly what the function gives on it (checked on a random probe when the map is
built). :class:`MapCache` builds the map of a shape, factor, order, groups and dilation that recurs (on its
:data:`MAP_AFTER`-th use; the function runs directly until then, and always for tensors over a million
elements) and keeps recent maps within a fixed element budget, so the library's functions run and validate
their arguments a few times per shape instead of once per trial and point.

**Shapes before arithmetic.** A form whose output shape differs from the original's (a wrong folded stride)
is decided by torch's own shape checks on meta tensors, without its convolution; a convolution whose im2col
buffer would exceed :data:`COLUMNS_BUDGET` runs one sample and one slab of output rows at a time.

Example:
    >>> spec = ConvSpec.make(2, 4, 2, 3, padding=1)
    >>> shared = SharedDraws(spec, (5, 5), batch=2, seed=0)
    >>> forms = FoldForms(spec, FoldSpec.make(2), (5, 5))
    >>> shared.verdict(forms.conditioned).value, shared.trials
    ('equivalent', 1)
"""
from __future__ import annotations

import collections
import functools
import math
from typing import Any, Callable, Dict, Hashable, List, Optional, Tuple, Union

import torch
import torch.nn.functional as F

from ..check import Verdict
from ..check.exact import EXACT_LIMIT, MAX_EXACT_RANGE, compare, false_equivalent_bound
from ..errors import FoldError, fold_error
from ..fold import FoldPlan, fold_weight, folded_weight_slabs, forget_plans, plan_fold
from ..layout import depth_to_space
from ..specs import ConvSpec, FoldSpec

__all__ = [
    "COLUMNS_BUDGET", "Direct", "SLAB_WEIGHT_ELEMENTS", "FALSE_EQUIVALENT", "FoldForms", "GatherMap", "MAP_AFTER", "MapCache", "NARROW_DTYPES", "SharedDraws",
    "clear_caches", "conv_nd", "draw_plan", "plan_or_none",
]

_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}

#: Dtypes whose error column is computed in float32 from operands rounded to the dtype, the result rounded
#: back to it: float32 accumulation, as the CPU kernels for these dtypes do. torch 2.14's own CPU bfloat16
#: conv3d corrupts the heap for some strides (6 and 9 on a 24-pixel map), which took whole sweeps down.
NARROW_DTYPES = (torch.bfloat16, torch.float16)


#: The largest probability of a false "equivalent" a point may have (Schwartz–Zippel over its draws).
FALSE_EQUIVALENT = 1e-6


def draw_plan(products: int, degree: int = 2) -> Tuple[int, int]:
    """``(bound, trials)`` for a polynomial of ``degree`` whose outputs sum at most ``products`` products of
    two draws (plus a bias): the widest range ``[-bound, bound]`` (at most ``MAX_EXACT_RANGE``) that keeps every
    partial sum below ``EXACT_LIMIT`` (exact in float64), and the fewest trials that bound a false
    "equivalent" by :data:`FALSE_EQUIVALENT`.

    Example:
        >>> draw_plan(27), draw_plan(1_700_000)
        ((1048576, 1), (36394, 2))
    """
    bound = min(MAX_EXACT_RANGE, math.isqrt(int(EXACT_LIMIT) // (max(1, products) + 1)))
    trials = 1
    while false_equivalent_bound(degree, bound, trials) > FALSE_EQUIVALENT:
        trials += 1
    return bound, trials


#: A dense folded weight above this many elements is never built whole: the library's form runs a slab of
#: output channels at a time (:data:`_SLABS` slabs), so that a shard's worker stays under 1 GB.
SLAB_WEIGHT_ELEMENTS = 2**24
_SLABS = 4


#: Elements of the unfolded input (torch's im2col buffer) one convolution call may need: 16 MB in float64, or
#: twice the weight's elements (at most 128 MB) for a large weight, which each call reads again. A larger call
#: runs one sample and one tile of outputs at a time (the same sums, in less memory).
COLUMNS_BUDGET = 2**21
_COLUMNS_CAP = 2**24


def conv_nd(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], stride: Tuple[int, ...], padding: Tuple[int, ...],
            dilation: Tuple[int, ...], groups: int, mode: str) -> torch.Tensor:
    """``F.conv{1,2,3}d`` with any padding mode (non-zero modes are padded explicitly, as ``nn.ConvNd`` does),
    computed in pieces when its unfolded input would exceed :data:`COLUMNS_BUDGET` elements.

    Example:
        >>> x = torch.arange(4.).reshape(1, 1, 4)
        >>> conv_nd(x, torch.ones(1, 1, 3), None, (1,), (1,), (1,), 1, "circular")
        tensor([[[4., 3., 6., 5.]]])
    """
    dims = x.dim() - 2
    if mode != "zeros" and any(p > 0 for p in padding):
        x = F.pad(x, [q for p in reversed(padding) for q in (p, p)], mode=mode)
        padding = (0,) * dims
    kernel = w.shape[2:]
    out = [(n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(x.shape[2:], kernel, stride, padding, dilation)]
    columns = x.shape[0] * x.shape[1] * math.prod(kernel) * math.prod(out)
    budget = min(_COLUMNS_CAP, max(COLUMNS_BUDGET, 2 * w.numel()))
    if columns <= budget or min(out) < 1 or x.device.type == "meta":
        return _CONV[dims](x, w, b, stride, padding, dilation, groups)  # torch itself refuses what is malformed
    x = F.pad(x, [q for p in reversed(padding) for q in (p, p)])
    return torch.cat([_tiles(x[i:i + 1], w, b, stride, dilation, groups, out, 0, budget) for i in range(x.shape[0])], 0)


def _tiles(x: torch.Tensor, w: torch.Tensor, b: Optional[torch.Tensor], stride: Tuple[int, ...], dilation: Tuple[int, ...],
           groups: int, out: List[int], axis: int, budget: int) -> torch.Tensor:
    """A padded one-sample conv whose outputs are ``out``, split along ``axis`` (then the next axes) into tiles
    whose unfolded input fits ``budget`` elements (one output position's always does what torch needs)."""
    dims, taps = len(out), x.shape[1] * math.prod(w.shape[2:])
    if axis == dims or taps * math.prod(out[axis:]) <= budget:
        return _CONV[dims](x, w, b, stride, 0, dilation, groups)
    rows = max(1, budget // (taps * math.prod(out[axis + 1:])))
    span = dilation[axis] * (w.shape[2 + axis] - 1) + 1
    tiles = []
    for first in range(0, out[axis], rows):
        n = min(out[axis], first + rows) - first
        part = x.narrow(2 + axis, first * stride[axis], (n - 1) * stride[axis] + span)
        tiles.append(_tiles(part, w, b, stride, dilation, groups, out[:axis] + [n] + out[axis + 1:], axis + 1, budget))
    return torch.cat(tiles, 2 + axis)


@functools.lru_cache(maxsize=4096)
def plan_or_none(spec: ConvSpec, fold: FoldSpec) -> Optional[FoldPlan]:
    """:func:`~foldconv.fold.plan_fold`, or None where the fold has no folded conv (cached: specs are values).

    Example:
        >>> plan_or_none(ConvSpec.make(2, 4, 2, 3, padding=1, padding_mode="reflect"), FoldSpec.make(2)) is None
        True
    """
    try:
        return plan_fold(spec, fold)
    except FoldError:
        return None


class GatherMap:
    """A layout function's gather map: output entry ``i`` is input entry ``index[i] - 1`` (``0``: a zero).

    ``shape`` is the output shape for one input of the shape it was built for; ``meta`` is what the function
    returned beside its tensor (e.g. the folded conv's groups), or None.
    """

    __slots__ = ("shape", "index", "zeros", "meta")

    def __init__(self, image: torch.Tensor, meta: Any = None) -> None:
        flat = image.reshape(-1)
        self.shape = tuple(image.shape)
        self.zeros = bool((flat == 0).any())
        self.index = flat.to(torch.int64) if self.zeros else flat.to(torch.int64) - 1
        self.meta = meta

    def __call__(self, t: torch.Tensor, rows: int = 1) -> torch.Tensor:
        """The function's output on ``t``: ``rows`` inputs of the map's input shape stacked along the first axis."""
        return self.apply(t.reshape(rows, -1)).reshape((rows * self.shape[0],) + self.shape[1:])

    @classmethod
    def of(cls, function: Callable[[torch.Tensor], Any], input_shape: Tuple[int, ...]) -> GatherMap:
        """The gather map of ``function`` on inputs of ``input_shape``; ``function`` returns a tensor or ``(tensor, meta)``.

        The map is checked on a random probe: a function that combines entries (not a gather) is a ValueError.

        Example:
            >>> m = GatherMap.of(lambda t: t.flip(-1), (1, 3))
            >>> m.shape, m.apply(torch.tensor([[10., 20., 30.]]))
            ((1, 3), tensor([[30., 20., 10.]]))
            >>> GatherMap.of(lambda t: t + t.flip(-1), (1, 3))
            Traceback (most recent call last):
            ...
            ValueError: the function is not a gather (it combines or scales entries)
        """
        n = math.prod(input_shape)
        image = function(torch.arange(1, n + 1, dtype=torch.float64).reshape(input_shape))
        found = cls(image) if isinstance(image, torch.Tensor) else cls(*image)
        probe = torch.randn(input_shape, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
        image = function(probe)
        image = image if isinstance(image, torch.Tensor) else image[0]
        index = found.index
        if (tuple(image.shape) != found.shape or not bool(((index >= 0) & (index <= n - (0 if found.zeros else 1))).all())
                or not torch.equal(image.reshape(1, -1), found.apply(probe.reshape(1, -1)))):
            raise ValueError("the function is not a gather (it combines or scales entries)")
        return found

    @property
    def numel(self) -> int:
        return self.index.numel()

    def apply(self, rows: torch.Tensor) -> torch.Tensor:
        """Gather every row of ``rows`` (``(R, n)``, ``n`` the input's element count): ``(R, numel)``."""
        if self.zeros:
            rows = torch.cat([rows.new_zeros(rows.shape[0], 1), rows], 1)
        return rows.index_select(1, self.index)

    def same(self, other: Any) -> bool:
        """Both maps send every input to the same place (so the two functions agree on every input)."""
        return isinstance(other, GatherMap) and (other is self or (
            self.shape == other.shape and self.zeros == other.zeros and bool(torch.equal(self.index, other.index))))


class Direct:
    """A layout function applied as it is (for tensors too large to keep a map of); ``meta`` as for a map,
    known once it has run.

    Example:
        >>> Direct(lambda t: (t.flip(-1), 3))(torch.tensor([[1., 2.]])), Direct(lambda t: t).same(None)
        (tensor([[2., 1.]]), False)
    """

    __slots__ = ("function", "meta")

    def __init__(self, function: Callable[[torch.Tensor], Any]) -> None:
        self.function, self.meta = function, None

    def __call__(self, t: torch.Tensor, rows: int = 1) -> torch.Tensor:
        image = self.function(t)
        if isinstance(image, torch.Tensor):
            return image
        self.meta = image[1]
        return image[0]

    def same(self, other: Any) -> bool:
        return False


#: The request of a layout that builds its map (building one costs about three direct runs of the function).
MAP_AFTER = 4


class MapCache:
    """The gather maps of recent shapes, least recently used first out, within ``budget`` index elements.

    The first :data:`MAP_AFTER` - 1 requests of a key run the function directly (:class:`Direct`: a point
    whose shapes hardly recur pays nothing extra); the next builds its map. A function whose input or output has more than
    ``largest`` elements gets no map: its convolution costs far more than the validation a map saves. A key
    whose function raised FoldError keeps that error, raised again on every later request.

    Example:
        >>> cache = MapCache(budget=10)
        >>> [type(cache.get("flip", lambda t: t.flip(-1), (1, 4))).__name__ for _ in range(5)]
        ['Direct', 'Direct', 'Direct', 'GatherMap', 'GatherMap']
        >>> cache.get("flip", None, (1, 4)) is cache.get("flip", None, (1, 4)), len(cache)
        (True, 1)
    """

    def __init__(self, budget: int = 4_000_000, largest: int = 1_000_000) -> None:
        self.budget, self.largest = budget, largest
        self._maps: collections.OrderedDict[Hashable, Union[GatherMap, FoldError]] = collections.OrderedDict()
        self._seen: collections.OrderedDict[Hashable, int] = collections.OrderedDict()
        self._size = 0

    def __len__(self) -> int:
        return len(self._maps)

    def clear(self) -> None:
        """Forget every map."""
        self._maps.clear()
        self._seen.clear()
        self._size = 0

    def get(self, key: Hashable, function: Callable[[torch.Tensor], Any], input_shape: Tuple[int, ...], *,
            output_numel: int = 0) -> Union[GatherMap, Direct]:
        """The map of ``function`` (named by ``key``) on inputs of ``input_shape``; FoldError where it refuses them.

        When the input or the output (``output_numel``, if larger) has more than ``largest`` elements, the
        function itself (:class:`Direct`): a map of it would double the memory of a tensor that large."""
        if max(math.prod(input_shape), output_numel) > self.largest:
            return Direct(function)
        full = (key, input_shape)
        found = self._maps.get(full)
        if found is None and self._seen.get(full, 0) < MAP_AFTER - 1:  # a map pays when a key recurs: until then, run directly
            self._seen[full] = self._seen.pop(full, 0) + 1
            if len(self._seen) > 4096:  # keys seen fewer times, remembered for a while
                self._seen.popitem(last=False)
            return Direct(function)
        if found is None:
            try:
                found = GatherMap.of(function, input_shape)
            except FoldError as err:
                found = err
            size = found.numel if isinstance(found, GatherMap) else 1
            self._maps[full] = found
            self._size += size
            while self._size > self.budget and len(self._maps) > 1:
                _, old = self._maps.popitem(last=False)
                self._size -= old.numel if isinstance(old, GatherMap) else 1
        else:
            self._maps.move_to_end(full)
        if isinstance(found, FoldError):
            raise found
        return found


_MAPS = MapCache()


def clear_caches() -> None:
    """Forget every cached layout map and fold plan (a cold start: what a benchmark round should time).

    Example:
        >>> clear_caches(); len(_MAPS)
        0
    """
    _MAPS.clear()
    plan_or_none.cache_clear()
    forget_plans()


class SharedDraws:
    """The draws of one convolution on one input size, and the original's output on them.

    ``draws[t]`` is trial ``t``'s integer ``(w, b, x)`` in ``[-bound, bound]`` (integer-valued float64, all
    trials from one draw of ``seed``); :meth:`reference` is the original's output on them (None where torch
    refuses the original); :meth:`normal` draws the unit-normal weight, bias and input of the error columns
    (from ``seed + 1``) and the float64 original on them. ``memo`` keeps what the points of the group found
    that depends only on their fold.

    Example:
        >>> shared = SharedDraws(ConvSpec.make(1, 2, 2, 3), (6,), batch=2, seed=0)
        >>> shared.trials, [tuple(t.shape) for t in shared.draws[0]], tuple(shared.reference(0).shape)
        (1, [(2, 2, 3), (2,), (2, 2, 6)], (2, 2, 4))
    """

    def __init__(self, spec: ConvSpec, input_size: Tuple[int, ...], *, batch: int, seed: int) -> None:
        self.spec, self.size, self.batch, self.seed = spec, tuple(input_size), batch, seed
        self.bound, self.trials = draw_plan(self.products)
        shapes = (tuple(spec.weight_shape), (spec.out_channels,), (batch, spec.in_channels) + self.size)
        sizes = [math.prod(shape) for shape in shapes] * self.trials
        gen = torch.Generator().manual_seed(seed)
        flat = torch.randint(-self.bound, self.bound + 1, (sum(sizes),), generator=gen, dtype=torch.float64).split(sizes)
        self.draws = [tuple(part.view(shape) for part, shape in zip(flat[3 * t:3 * t + 3], shapes)) for t in range(self.trials)]
        self._references: Dict[int, Optional[torch.Tensor]] = {}
        self._normal: Optional[Tuple[torch.Tensor, ...]] = None
        self.memo: Dict[Hashable, Any] = {}

    @property
    def products(self) -> int:
        """An upper bound on the products one output of any form sums: ``C * prod(d*(K-1)+1)`` (the folded
        kernel's taps, structural zeros included, over the folded channels)."""
        return self.spec.in_channels * math.prod(self.spec.effective_kernel)

    def original(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        s = self.spec
        return conv_nd(x, w, b, s.stride, s.padding, s.dilation, s.groups, s.padding_mode)

    def reference(self, trial: int) -> Optional[torch.Tensor]:
        """The original's output on trial ``trial`` (computed once), None where torch refuses it."""
        if trial not in self._references:
            w, b, x = self.draws[trial]
            try:
                self._references[trial] = self.original(x, w, b)
            except RuntimeError:  # e.g. circular padding wider than the input
                self._references[trial] = None
        return self._references[trial]

    def verdict(self, form: Callable[..., torch.Tensor]) -> Verdict:
        """The exact verdict of ``form(x, w, b, expect=shape)`` against the original over the trials.

        A trial where torch or the library refuses the form is INVALID; trials stop at the first verdict
        other than "equivalent" (the next trials could only confirm it)."""
        for t in range(self.trials):
            w, b, x = self.draws[t]
            ref = self.reference(t)
            try:
                out: Optional[torch.Tensor] = form(x, w, b, expect=None if ref is None else tuple(ref.shape))
            except (RuntimeError, FoldError):
                out = None
            found = compare(ref, out)
            if found is not Verdict.EQUIVALENT:
                return found
        return Verdict.EQUIVALENT

    def normal(self) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """Unit-normal float64 ``(w, b, x)`` and the original's output on them (drawn once)."""
        if self._normal is None:
            s = self.spec
            gen = torch.Generator().manual_seed((self.seed + 1) % 2**32)
            w = torch.randn(s.weight_shape, generator=gen, dtype=torch.float64)
            b = torch.randn(s.out_channels, generator=gen, dtype=torch.float64)
            x = torch.randn((self.batch, s.in_channels) + self.size, generator=gen, dtype=torch.float64)
            self._normal = (w, b, x, self.original(x, w, b))
        return self._normal  # type: ignore[return-value]


class FoldForms:
    """The literal fold and the library's folded conv of one configuration (the original is :class:`SharedDraws`').

    ``x_order``: the order the literal form folds the input in (the weight's order when None);
    ``folded_stride``: the literal form's stride (``r*S`` when None). The literal form folds the input
    (``x_order``) and the weight (``depth_to_space`` along its input channels, the fold's order) and passes
    stride ``r*S`` (or ``folded_stride``), padding ``r*P``, dilation and groups through; the library's form
    is :func:`~foldconv.fold.fold_weight` with :func:`~foldconv.fold.plan_fold`'s stride, padding and
    dilation on the input folded in the fold's order. ``literal``/``conditioned`` raise FoldError where the
    form does not exist (a channel count the block does not divide, no folded conv).
    """

    def __init__(self, spec: ConvSpec, fold: FoldSpec, input_size: Tuple[int, ...], *, x_order: Optional[Tuple[str, ...]] = None,
                 folded_stride: Optional[Tuple[int, ...]] = None, maps: MapCache = _MAPS) -> None:
        self.spec, self.fold, self.size, self.maps = spec, fold, tuple(input_size), maps
        self.x_order = x_order or fold.order
        self.stride_f = folded_stride or tuple(f * s for f, s in zip(fold.r, spec.stride))
        self.padding_f = tuple(f * q for f, q in zip(fold.r, spec.padding))
        plan = plan_or_none(spec, fold)
        self.plan = plan.result if plan is not None else None

    # -- layout --------------------------------------------------------------------------------------------

    def _input_map(self, order: Tuple[str, ...]) -> Union[GatherMap, Direct]:
        """``depth_to_space`` of one sample's input in ``order``: ``(1, C, *n) -> (1, C/R, *(r*n))``."""
        s, fold = self.spec, self.fold
        return self.maps.get(("d2s", fold.r, order), lambda t: depth_to_space(t, fold.r, order, dims=s.dims), (1, s.in_channels) + self.size)

    def _literal_map(self) -> Union[GatherMap, Direct]:
        s, fold = self.spec, self.fold
        return self.maps.get(("d2s", fold.r, fold.order), lambda t: depth_to_space(t, fold.r, fold.order, dims=s.dims), s.weight_shape)

    def _folded_map(self) -> Union[GatherMap, Direct]:
        """:func:`~foldconv.fold.fold_weight`'s map; its ``meta`` is the folded conv's groups."""
        s, fold = self.spec, self.fold

        def folded(t: torch.Tensor) -> Tuple[torch.Tensor, int]:
            fw = fold_weight(t, fold.r, fold.order, groups=s.groups, dilation=s.dilation)
            return fw.weight, fw.groups

        size = math.prod(self.plan.weight_shape) if self.plan is not None else 0
        return self.maps.get(("fold_weight", fold.r, fold.order, s.groups, s.dilation), folded, s.weight_shape, output_numel=size)

    def _run(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, xmap: Union[GatherMap, Direct], wmap: Union[GatherMap, Direct],
             conv: Tuple[Any, ...], expect: Optional[Tuple[int, ...]]) -> torch.Tensor:
        """The folded conv ``conv`` (stride, padding, dilation, mode; groups: ``wmap.meta`` when None) on the
        input and weight mapped by ``xmap``/``wmap``. With ``expect``, torch first computes the output's shape
        on meta tensors (the same checks, no arithmetic); a different shape is returned as that meta tensor,
        whose shape is all a comparison needs (a wrong folded stride on a big map would cost seconds)."""
        stride, padding, dilation, groups, mode = conv
        xf, wf = xmap(x, x.shape[0]), wmap(w)
        groups = wmap.meta if groups is None else groups
        sizes = tuple((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in zip(xf.shape[2:], wf.shape[2:], stride, padding, dilation))
        if expect is not None and (xf.shape[0], wf.shape[0]) + sizes != tuple(expect):  # torch's own checks decide it
            probe = conv_nd(torch.empty_like(xf, device="meta"), torch.empty_like(wf, device="meta"), torch.empty_like(b, device="meta"),
                            stride, padding, dilation, groups, mode)
            if tuple(probe.shape) != tuple(expect):
                return probe
        return conv_nd(xf, wf, b, stride, padding, dilation, groups, mode)

    # -- forms ---------------------------------------------------------------------------------------------

    def literal(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, *, expect: Optional[Tuple[int, ...]] = None) -> torch.Tensor:
        """The literal fold of the original's ``(x, w, b)`` (see :meth:`_run` for ``expect``)."""
        s = self.spec
        conv = (self.stride_f, self.padding_f, s.dilation, s.groups, s.padding_mode)
        return self._run(x, w, b, self._input_map(self.x_order), self._literal_map(), conv, expect)

    def literal_is_conditioned(self) -> bool:
        """The literal form is the library's form: same input order, the same weight map, stride, padding,
        dilation and groups (then one computation serves both)."""
        s, plan = self.spec, self.plan
        if plan is None or self.x_order != self.fold.order:
            return False
        if (self.stride_f, self.padding_f, s.dilation) != (plan.stride, plan.padding, plan.dilation):
            return False
        try:
            folded = self._folded_map()
            return folded.meta == s.groups and self._literal_map().same(folded)
        except FoldError:
            return False

    def conditioned(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, *, expect: Optional[Tuple[int, ...]] = None) -> torch.Tensor:
        """The library's folded conv of the original's ``(x, w, b)``; bfloat16/float16 operands are computed in
        float32 and the result rounded back (:data:`NARROW_DTYPES`)."""
        plan = self.plan
        if plan is None:
            raise fold_error("fold", self.fold.r, f"has no folded conv for {self.spec.describe()}")
        narrow = x.dtype in NARROW_DTYPES
        if narrow:  # operands rounded to the dtype, float32 accumulation, the result rounded to it
            dtype = x.dtype
            x, w, b = x.float(), w.float(), b.float()
        if plan.groups == 1 and math.prod(plan.weight_shape) > SLAB_WEIGHT_ELEMENTS:
            out = self._in_slabs(x, w, b, expect)
        else:
            conv = (plan.stride, plan.padding, plan.dilation, None, plan.padding_mode)
            out = self._run(x, w, b, self._input_map(self.fold.order), self._folded_map(), conv, expect)
        return out.to(dtype) if narrow and out.device.type != "meta" else out

    def _in_slabs(self, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, expect: Optional[Tuple[int, ...]]) -> torch.Tensor:
        """The library's dense folded conv a slab of output channels at a time (:func:`~foldconv.fold.folded_weight_slabs`):
        its weight is never whole in memory (a depthwise 3-D conv folded by 4 in "dcr" order: 430 MB in float64)."""
        s, fold, plan = self.spec, self.fold, self.plan
        xf = self._input_map(fold.order)(x, x.shape[0])
        conv = (plan.stride, plan.padding, plan.dilation, 1, plan.padding_mode)
        if expect is not None:  # torch's own shape checks first, as in _run
            meta = torch.empty(plan.weight_shape, device="meta", dtype=xf.dtype)
            probe = conv_nd(torch.empty_like(xf, device="meta"), meta, torch.empty_like(b, device="meta"), *conv)
            if tuple(probe.shape) != tuple(expect):
                return probe
        rows = -(-plan.out_channels // _SLABS)
        return torch.cat([conv_nd(xf, slab, b[first:last], *conv)
                          for first, last, slab in folded_weight_slabs(w, fold.r, fold.order, groups=s.groups, dilation=s.dilation, rows=rows)], 1)
