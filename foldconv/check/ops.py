"""Which computations may claim the exact verdict: a polynomial allow-list, audited on a captured record.

Integer-valued outputs do not make a map polynomial: a clamp, a threshold or a max also send integers to
integers, but a difference between two such maps can hide in a region the random integers never reach, so
the Schwartz–Zippel bound says nothing about them. The checker therefore captures what each side computes as
a closed record of aten operations (:mod:`foldconv.capture`) and :func:`audit` admits a record to the exact
path only when every operation on a value that depends on the random draws (the input, resampled weights:
degree >= 1) is on :data:`POLYNOMIAL_OPS` — operations whose outputs are polynomials with integer
coefficients in their tensor inputs, fixed index maps of them, or constants — *and* computes in float64: every
dtype argument, every ``out=`` target and every result is float64, so a narrowing hidden in an argument
(``sum(dtype=torch.float16)``, an ``out=`` half buffer, an integer dtype) or a reinterpretation of bits
(``view(torch.int64)``) is refused wherever it is, whatever its name. An index that depends on the draws is
therefore impossible (indices are integers). Operations on constants alone (degree 0: the ``//`` and ``==`` a
build uses for index masks) compute constants and may be anything deterministic. Random operations
(``uniform_`` in a weight initialiser) and uninitialised memory (``empty``) are followed until overwritten:
when their values reach an output the record is refused.

Allow-listed ops are exact only while they compute on integers of float64 (a rounding trick such as
``(x + 1.5 * 2**52) - 1.5 * 2**52`` uses only ``add`` and ``sub`` but rounds): :func:`exactness_issue` checks
every input, output, scalar factor and fused partial sum of the audited operations while the record is
evaluated, and :func:`audit` bounds the degree of every value in the draws for the Schwartz–Zippel bound.

:class:`OpRecorder` records the names of the ops a block runs, on real tensors; it reports, it proves nothing
(:func:`foldconv.check.check_equivalence` decides on the captured record).

Example:
    >>> import torch
    >>> from foldconv.capture import capture
    >>> rec = capture(lambda x: x.sum(-1, dtype=torch.float16).double(), [torch.zeros(2, 3, dtype=torch.float64)])
    >>> audit(rec, rec.inputs).refusals
    ('aten.sum narrows a value computed from the input to dtype=torch.float16',)
    >>> audit(capture(lambda x: (x * x).sum(), [torch.zeros(3, dtype=torch.float64)]), rec.inputs[:1]).degree
    2
"""
from __future__ import annotations

import contextlib
import math
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, FrozenSet, Iterable, Iterator, List, Optional, Sequence, Set, Tuple

import torch
from torch.overrides import TorchFunctionMode

from ..capture import DispatchMode, Node, Record, Value
from .exact import EXACT_LIMIT, MAX_EXACT, max_abs

__all__ = ["POLYNOMIAL_OPS", "ESCAPES", "Audit", "audit", "exactness_issue", "OpRecorder", "polynomial_op"]

_PRODUCTS = {
    "convolution", "_convolution", "convolution_overrideable", "addmm", "mm", "bmm", "baddbmm", "addbmm", "addmv", "mv",
    "dot", "vdot", "matmul", "linear", "einsum", "tensordot", "outer", "addr",
}
# in-place forms too: torchvision's residual `out += identity` is add_
_ARITHMETIC = {"add", "sub", "rsub", "mul", "neg", "addcmul", "sum", "cumsum", "trace", "add_", "sub_", "mul_", "neg_", "addcmul_"}
_LAYOUT = {
    "view", "_unsafe_view", "reshape", "_reshape_alias", "permute", "transpose", "t", "expand", "expand_as", "clone",
    "contiguous", "slice", "select", "narrow", "squeeze", "unsqueeze", "flatten", "unflatten", "unfold", "as_strided",
    "alias", "detach", "set_", "split", "split_with_sizes", "chunk", "unbind", "cat", "stack", "flip", "roll", "repeat", "tile",
    "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "movedim", "swapaxes", "diagonal",
    "diag", "diag_embed", "im2col", "col2im", "index", "index_select", "gather", "take", "slice_scatter",
    "select_scatter", "diagonal_scatter", "as_strided_scatter", "index_put", "index_put_", "index_add", "index_add_",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
}
# Constant padding adds constants (degree 0); circular, reflection and replication padding copy input elements.
_PADDING = {
    "constant_pad_nd", "pad", "_pad_circular", "_pad_enum", "reflection_pad1d", "reflection_pad2d", "reflection_pad3d",
    "replication_pad1d", "replication_pad2d", "replication_pad3d",
}
_CONSTANTS = {
    "zeros", "zeros_like", "eye", "ones", "ones_like", "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided",
    "new_zeros", "new_ones", "new_full", "full", "full_like", "fill", "fill_", "zero_", "arange", "scalar_tensor",
    "lift_fresh", "lift_fresh_copy", "detach_", "copy", "copy_", "_to_copy",
}
#: aten op names (overload packets) that may claim the exact verdict. ``copy_``/``_to_copy`` only when the
#: conversion cannot round (see :func:`polynomial_op`).
POLYNOMIAL_OPS: FrozenSet[str] = frozenset(_PRODUCTS | _ARITHMETIC | _LAYOUT | _PADDING | _CONSTANTS)

_CONVERSIONS = {"copy", "copy_", "_to_copy"}


def _lossless(source: torch.dtype, target: torch.dtype) -> bool:
    """A dtype conversion that keeps every integer below 2**53 (float64 target, or no change)."""
    return source == target or target == torch.float64


def polynomial_op(func: Any, args: tuple, kwargs: Dict[str, Any], out: Any) -> bool:
    """Is this call on the allow-list (an aten op from :data:`POLYNOMIAL_OPS`, converting without rounding)?

    Example:
        >>> polynomial_op(torch.ops.aten.relu.default, (), {}, None), polynomial_op(torch.ops.aten.mm.default, (), {}, None)
        (False, True)
    """
    if getattr(func, "namespace", None) != "aten":
        return False
    name = func.overloadpacket.__name__
    if name not in POLYNOMIAL_OPS | _RANDOM_INIT:
        return False
    if name in _CONVERSIONS:
        sources = [a for a in args if isinstance(a, torch.Tensor)]
        source = sources[-1].dtype if sources else None
        if name != "_to_copy" and len(sources) >= 2:
            target = sources[0].dtype  # copy_(dst, src)
        elif isinstance(out, torch.Tensor):
            target = out.dtype
        else:
            return False
        return source is None or _lossless(source, target)
    return True


_INEXACT_NOTE = "left float64's exact integers"
# Ops with a fused sum inside: the bound on their partial sums (see _partial_sum_bound).
_ONCE_PER_OUTPUT = {"convolution", "_convolution", "convolution_overrideable", "linear", "mm", "bmm", "mv", "dot",
                    "vdot", "matmul", "tensordot", "addmm", "addmv", "addbmm", "baddbmm"}
_SUMS = {"sum", "cumsum", "trace", "col2im", "index_add", "index_put", "einsum"}
# Degree rule: outputs = additive argument + product of the others (conv/linear: bias is argument 2).
_ADDITIVE_ARG = {"convolution": 2, "_convolution": 2, "convolution_overrideable": 2, "linear": 2, "addmm": 0,
                 "addmv": 0, "addr": 0, "baddbmm": 0, "addbmm": 0, "addcmul": 0}
_MULTIPLYING = _PRODUCTS | {"mul"}
# Weight initialisation when a build creates a module (nn.Conv2d's kaiming_uniform_).
_RANDOM_INIT = {"uniform_", "normal_"}
# Ops that read only the shape, dtype and device of their tensor arguments: their results are fresh constants.
_SHAPE_ONLY = {"empty_like", "zeros_like", "ones_like", "full_like", "new_empty", "new_empty_strided", "new_zeros",
               "new_ones", "new_full"}
# Ops whose results hold whatever the memory held: followed like random values until overwritten.
_UNINITIALISED = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted"}
# In-place ops that overwrite their target without reading it (a write that covers the storage replaces it).
_OVERWRITE = {"copy_", "fill_", "zero_"}
#: Tensor methods that move values out of torch (into numpy, Python or raw memory), where no op can be recorded.
ESCAPES: FrozenSet[str] = frozenset({"numpy", "tolist", "__array__", "data_ptr", "untyped_storage", "storage",
                                     "_typed_storage", "__dlpack__"})


def _base(short: str) -> str:
    """The functional name of an in-place op (``mul_`` -> ``mul``), for the rules that do not care."""
    return short[:-1] if short.endswith("_") and not short.endswith("__") else short


def _tensors(values: Any) -> List[torch.Tensor]:
    """Every tensor in an argument list (one level of nesting: cat, einsum, index take lists)."""
    found: List[torch.Tensor] = []
    for v in values:
        if isinstance(v, torch.Tensor):
            found.append(v)
        elif isinstance(v, (list, tuple)):
            found.extend(t for t in v if isinstance(t, torch.Tensor))
    return found


def _key(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def _amax(t: Optional[torch.Tensor]) -> float:
    return max_abs(t) if t is not None and t.is_floating_point() else 0.0


def _l1(t: Optional[torch.Tensor]) -> float:
    if t is None or not t.is_floating_point() or not t.numel():
        return 0.0
    return float(t.detach().abs().sum())


def _exact_integers(t: torch.Tensor) -> bool:
    if t.is_complex():
        return False
    if not t.is_floating_point() or not t.numel():
        return True
    d = t.detach()
    return bool(torch.isfinite(d).all()) and bool(torch.equal(d, d.round())) and float(d.abs().max()) < EXACT_LIMIT


def _integer_scalar(v: Any) -> bool:
    if isinstance(v, (list, tuple)):
        return all(_integer_scalar(u) for u in v)
    if isinstance(v, complex):
        return False
    if isinstance(v, float):
        return math.isfinite(v) and v.is_integer()
    return True  # ints, bools, dtypes, None, strings


def _partial_sum_bound(name: str, args: tuple, kwargs: Dict[str, Any]) -> float:
    """An upper bound on every partial sum an op forms internally (0 when it forms none).

    Ops in ``_ONCE_PER_OUTPUT`` use each element of each operand at most once per output element, so
    ``min(max|a| * sum|b|, sum|a| * max|b|)`` bounds their sums; general sums are bounded by the product of the
    operands' l1 norms (each term is a distinct tuple of operand elements).
    """
    scal = {k: v for k, v in kwargs.items() if isinstance(v, (int, float))}
    if name in _ONCE_PER_OUTPUT:
        ts = [a if isinstance(a, torch.Tensor) else None for a in args[:3]]
        extra = 0.0
        if name in _ADDITIVE_ARG:
            add = _ADDITIVE_ARG[name]
            extra = abs(float(scal.get("beta", 1))) * _amax(ts[add] if add < len(ts) else None)
            ts = [t for i, t in enumerate(ts) if i != add]
        a, b = (ts + [None, None])[:2]
        alpha = abs(float(scal.get("alpha", 1)))
        return extra + alpha * min(_amax(a) * _l1(b), _l1(a) * _amax(b))
    if name in ("addcmul", "addr"):  # self + value * t1 * t2: the product is formed before the sum
        ts = _tensors(args)
        value = abs(float(scal.get("value", scal.get("alpha", 1))))
        return _amax(ts[0]) + value * math.prod(_amax(t) for t in ts[1:]) if ts else 0.0
    if name in _SUMS:
        ts = [t for t in _tensors(args) if t.is_floating_point()]
        if name in ("index_add", "index_put"):
            return sum(_l1(t) for t in ts)
        return math.prod(max(1.0, _l1(t)) for t in ts) if ts else 0.0
    return 0.0


def exactness_issue(name: str, args: Sequence[Any], kwargs: Dict[str, Any], out: Any) -> Optional[str]:
    """Why an op computed on real tensors may have rounded (None: it computed on float64 integers, exactly).

    Checked for arithmetic and product ops: every tensor read and written is a finite integer below 2**51,
    every Python scalar factor is an integer, and every fused partial sum stays below 2**53 (bounded from the
    operands by ``_partial_sum_bound``). Layout, padding and constant ops only move or create values and cannot
    round; a non-integer they carry is caught where it is computed with, or in the output.

    Example:
        >>> x = torch.tensor([1.0, 2.0], dtype=torch.float64)
        >>> exactness_issue("aten.mul", (x, 0.5), {}, x * 0.5)
        'aten.mul: a non-integer scalar factor'
        >>> exactness_issue("aten.add", (x, x), {}, x + x) is None
        True
    """
    short = _base(name.split(".", 1)[-1])
    accumulating = short == "index_put" and bool(kwargs.get("accumulate", args[3] if len(args) > 3 else False))
    if short not in {_base(n) for n in _ARITHMETIC} | _PRODUCTS | {"index_add", "col2im"} and not accumulating:
        return None
    if not _integer_scalar(list(args) + list(kwargs.values())):
        return f"{name}: a non-integer scalar factor"
    if not all(_exact_integers(t) for t in _tensors(list(args) + list(kwargs.values())) + _tensors([out])):
        return f"{name}: a value {_INEXACT_NOTE}"
    if _partial_sum_bound(short, tuple(args), kwargs) >= MAX_EXACT:
        return f"{name}: an internal sum can reach 2**53"
    return None


def _combine_degree(short: str, args: Sequence[Any], degree_of: Callable[[Any], int]) -> int:
    """Upper bound on the degree of an op's output from its arguments' (products add, everything else takes the max)."""
    short = _base(short)

    def total(values: Iterable[Any]) -> List[int]:
        return [degree_of(v) for v in _leaves_of(values)]

    if short in _ADDITIVE_ARG and len(args) > _ADDITIVE_ARG[short]:
        add = _ADDITIVE_ARG[short]
        return max(max(total([args[add]]), default=0), sum(total([a for i, a in enumerate(args) if i != add])))
    if short in _MULTIPLYING:
        return sum(total(args))
    return max(total(args), default=0)


def _leaves_of(tree: Any) -> Iterator[Any]:
    if isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _leaves_of(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _leaves_of(item)
    else:
        yield tree


@dataclass(frozen=True)
class Audit:
    """What :func:`audit` found in a record.

    ``refusals``: why the record may not claim the exact verdict, one line per cause in the function's terms
    (empty: admitted); ``refused_ops``: the ops (``aten.clamp``) those lines are about; ``degree``: an upper
    bound on the total degree of the outputs in the sources; ``watched``: indices of the nodes whose values
    :func:`exactness_issue` must check while the record is evaluated.
    """

    refusals: Tuple[str, ...]
    refused_ops: Tuple[str, ...]
    degree: int
    watched: FrozenSet[int]

    @property
    def admitted(self) -> bool:
        """No refusal: the record may claim the exact verdict (if its evaluation stays exact)."""
        return not self.refusals


def _where(node: Node) -> str:
    return f" (in {node.scope[-1]})" if node.scope else ""


_DEFINED, _UNINITIALISED_STATE, _RANDOM = 0, 1, 2


def _roles(node: Node, meta: Sequence[Any], random: bool) -> List[Tuple[Value, bool, bool]]:
    """(value, read, written) for each value among a node's arguments.

    A value is not read when the node only views it (an output shares its storage and nothing is written) or
    only overwrites it (``copy_``/``fill_``/``zero_``/a random fill's target, an ``out=`` buffer).
    """
    schema = getattr(node.op, "_schema", None)
    arguments = list(schema.arguments) if schema is not None else []
    out_storages = {meta[v.id].storage for v in node.outputs()}
    overwrite = node.short in _OVERWRITE or random
    roles: List[Tuple[Value, bool, bool]] = []
    for i, arg in enumerate(arguments):
        if not arg.kwarg_only and i < len(node.args):
            given = node.args[i]
        elif arg.name in node.kwargs:
            given = node.kwargs[arg.name]
        else:
            continue
        info = arg.alias_info
        writes = info is not None and info.is_write
        for v in _leaves_of(given):
            if not isinstance(v, Value):
                continue
            viewed = not node.writes and meta[v.id].storage in out_storages
            pure = writes and (overwrite or arg.kwarg_only)
            roles.append((v, not (viewed or pure or node.short in _SHAPE_ONLY), writes))
    return roles


class _Walk:
    """One pass over a record: degrees per storage, and which elements hold undefined (uninitialised or random) values."""

    def __init__(self, record: Record, sources: Iterable[Value], what: str) -> None:
        self.record, self.meta, self.what = record, record.meta, what
        self.degree: Dict[int, int] = {self.meta[v.id].storage: 1 for v in sources}
        self.state: Dict[int, torch.Tensor] = {}  # storage -> per-element _DEFINED / _UNINITIALISED_STATE / _RANDOM
        self.origin: Dict[int, str] = {}  # storage -> the op its undefined values come from
        self.refusals: List[str] = []
        self.refused: Set[str] = set()
        self.watched: Set[int] = set()
        self.constants = {self.meta[v.id].storage for v in record.state_values}

    def refuse(self, node: Optional[Node], text: str, op: Optional[str] = None) -> None:
        line = text + (_where(node) if node is not None else "")
        if line not in self.refusals:
            self.refusals.append(line)
        if op or node is not None:
            self.refused.add(op or node.name)

    def deg(self, v: Any) -> int:
        return self.degree.get(self.meta[v.id].storage, 0) if isinstance(v, Value) else 0

    def _elements(self, v: Value) -> torch.Tensor:
        m = self.meta[v.id]
        return torch.arange(m.storage_numel).as_strided(m.shape, m.stride, m.offset).reshape(-1)

    def states(self, v: Value) -> Optional[torch.Tensor]:
        """The state of each element ``v`` reads, in ``v``'s shape (None: all defined)."""
        state = self.state.get(self.meta[v.id].storage)
        if state is None:
            return None
        m = self.meta[v.id]
        return state[self._elements(v)].reshape(m.shape)

    def undefined(self, v: Value) -> int:
        """The worst state among the elements ``v`` reads (0: all defined)."""
        picked = self.states(v)
        return int(picked.max()) if picked is not None and picked.numel() else _DEFINED

    def mark(self, v: Value, value: Any, origin: str) -> None:
        """Set the state of the elements of ``v`` (a state, or a tensor of states in ``v``'s shape)."""
        storage = self.meta[v.id].storage
        if isinstance(value, int) and value == _DEFINED and storage not in self.state:
            return
        state = self.state.setdefault(storage, torch.zeros(self.meta[v.id].storage_numel, dtype=torch.int8))
        if isinstance(value, torch.Tensor):
            state[self._elements(v)] = value.reshape(-1)
        else:
            state[self._elements(v)] = value
        if origin:
            self.origin.setdefault(storage, origin)
        if not bool(state.any()):
            del self.state[storage]
            self.origin.pop(storage, None)

    def node(self, index: int, node: Node) -> None:
        short, name = node.short, node.name
        random = torch.Tag.nondeterministic_seeded in getattr(node.op, "tags", ())
        roles = _roles(node, self.meta, random)
        reads = [v for v, read, _ in roles if read]
        overwritten = {v for v, read, writes in roles if writes and not read}  # an out= role (its old values unread)
        # For degrees, an out= buffer is fresh only if no other role reads its storage (``mul(y, x, out=y)`` reads y)
        read_storages = {self.meta[v.id].storage for v, read, _ in roles if read}
        pure = {v for v in overwritten if self.meta[v.id].storage not in read_storages}
        source_degree = max((self.deg(v) for v, _, _ in roles if short not in _SHAPE_ONLY and v not in pure), default=0)
        out_degree = 0 if short in _SHAPE_ONLY else _combine_degree(short, node.args, lambda v: 0 if v in pure else self.deg(v))
        if source_degree and random:
            self.refuse(node, f"{name} is random and ran on a value computed from {self.what}")
        elif source_degree:
            self._polynomial(node, name, short)
            self.watched.add(index)
        # undefined values (uninitialised memory, random draws) flow into what an op writes and returns
        worst, origin = _DEFINED, ""
        for v in reads:
            state = self.undefined(v)
            if state > worst:
                worst, origin = state, self.origin[self.meta[v.id].storage]
        if random:
            worst, origin = _RANDOM, name
        written = [v for v, _, writes in roles if writes]
        for v in written:
            if self.meta[v.id].storage in self.constants and source_degree:
                self.refuse(node, f"changes its parameters or buffers (or tensors in its closure) when called: {name} writes "
                                  f"a value computed from {self.what} into one")
            storage = self.meta[v.id].storage
            kept = 0 if v in pure and self.meta[v.id].covers_storage else self.degree.get(storage, 0)
            self.degree[storage] = max(kept, out_degree)
            if short == "copy_" and v in overwritten and len(reads) == 1:  # element by element: dst[i] = src[i]
                src = self.states(reads[0])
                shape = self.meta[v.id].shape
                states = torch.zeros(shape, dtype=torch.int8) if src is None else src.broadcast_to(shape)
                self.mark(v, states, origin)
            else:
                self.mark(v, worst, origin)
        in_storages = {self.meta[v.id].storage for v, _, _ in roles}
        written_storages = {self.meta[v.id].storage for v in written}
        for v in node.outputs():
            storage = self.meta[v.id].storage
            if storage in written_storages:
                continue
            if storage in in_storages:  # a view: its storage keeps what it holds
                self.degree[storage] = max(self.degree.get(storage, 0), out_degree)
                continue
            self.degree[storage] = out_degree
            self.state.pop(storage, None)
            self.origin.pop(storage, None)
            if short in _UNINITIALISED:
                self.mark(v, _UNINITIALISED_STATE, name)
            else:
                self.mark(v, worst, origin)

    def _polynomial(self, node: Node, name: str, short: str) -> None:
        meta, what = self.meta, self.what
        if getattr(node.op, "namespace", None) != "aten" or short not in POLYNOMIAL_OPS:
            self.refuse(node, f"not polynomial: {name} ran on a value computed from {what}")
        narrowing = [leaf for leaf in _leaves_of((node.args, node.kwargs)) if isinstance(leaf, torch.dtype) and leaf != torch.float64]
        for leaf in narrowing:
            verb, link = ("reinterprets the bits of", "as") if short == "view" else ("narrows", "to")
            self.refuse(node, f"{name} {verb} a value computed from {what} {link} dtype={leaf}")
        if narrowing:
            return
        for v in node.outputs() + list(node.writes):
            if meta[v.id].dtype != torch.float64:
                if "out" in node.kwargs:
                    self.refuse(node, f"{name} writes a value computed from {what} into an out= buffer of {meta[v.id].dtype}")
                else:
                    self.refuse(node, f"{name} turns a value computed from {what} into {meta[v.id].dtype}")

    def finish(self) -> Audit:
        outputs = [v for v in _leaves_of(self.record.output) if isinstance(v, Value)]
        for v in outputs:
            state = self.undefined(v)
            if state != _DEFINED:
                origin = self.origin[self.meta[v.id].storage]
                kind = "random" if state == _RANDOM else "uninitialised"
                self.refuse(None, f"{kind} values from {origin} reach the output", origin)
            if self.meta[v.id].dtype != torch.float64:
                self.refuse(None, f"the output is {self.meta[v.id].dtype}, not float64")
        degree = max((self.deg(v) for v in outputs), default=0)
        return Audit(tuple(self.refusals), tuple(sorted(self.refused)), degree, frozenset(self.watched))


def audit(record: Record, sources: Iterable[Value], *, what: str = "the input") -> Audit:
    """May ``record`` claim the exact verdict, given which of its inputs are the random draws (``sources``)?

    Walks the record once, following per storage the degree of its values in the sources (a view or an
    in-place write keeps the larger of what the storage held and what is written; a write that replaces the
    whole storage sets it) and, per element, whether it holds uninitialised (``empty``) or random values.
    Every node that reads a value of degree >= 1 must be on :data:`POLYNOMIAL_OPS` with every dtype argument,
    ``out=`` target and result float64, and must not write into a constant (the side's parameters, buffers or
    closure tensors: state); no node may read uninitialised memory; random values must not reach an output,
    and outputs must be float64. ``what`` names the sources in the messages.

    Example:
        >>> from foldconv.capture import capture
        >>> rec = capture(lambda x: x.view(torch.int64).double(), [torch.zeros(3, dtype=torch.float64)])
        >>> audit(rec, rec.inputs).refusals[0]
        'aten.view reinterprets the bits of a value computed from the input as dtype=torch.int64'
    """
    walk = _Walk(record, sources, what)
    for index, node in enumerate(record.nodes):
        walk.node(index, node)
    return walk.finish()


class _EscapeWatch(TorchFunctionMode):
    """Sees Tensor methods (``numpy``, ``tolist``, ...) that take values where no aten op is recorded."""

    def __init__(self, recorder: OpRecorder) -> None:
        super().__init__()
        self.recorder = recorder

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105 (torch's protocol)
        name = getattr(func, "__name__", "")
        if name in ESCAPES and not self.recorder._internal:
            random_inputs = [t for t in _tensors(args) if self.recorder.degree(t) > 0]
            if random_inputs:
                self.recorder.refused.add(f"Tensor.{name}")
        return func(*args, **(kwargs or {}))


class OpRecorder(DispatchMode):
    """Record the names of the aten ops run inside the block on real tensors (a report, not a proof).

    ``ran``: every op name; ``refused``: ops off the allow-list that touched a value depending on ``sources``
    (or any value, without sources), and ``Tensor.numpy``-style escapes of such values; ``inexact``: allow-listed
    ops that left float64's exact integers (:func:`exactness_issue`). :meth:`degree` is an upper bound on the
    total degree of a tensor as a polynomial in the sources (sums take the maximum, products add). Values
    computed where a dispatch mode cannot see them (``Tensor.apply_``, another thread) are not seen here:
    :func:`foldconv.check.check_equivalence` decides on a captured record instead (:func:`audit`).

    Example:
        >>> x, w = torch.ones(1, 1, 4), torch.ones(1, 1, 2)
        >>> with OpRecorder(sources=[x, w]) as rec:
        ...     y = torch.nn.functional.conv1d(x, w).clamp(max=1)
        >>> sorted(rec.ran), sorted(rec.refused), rec.degree(y)
        (['aten.clamp', 'aten.convolution'], ['aten.clamp'], 2)
        >>> with OpRecorder() as rec:
        ...     _ = (x + 1.5 * 2**52) - 1.5 * 2**52    # rounds x to an integer: not the identity
        >>> sorted(rec.inexact)[0]
        "aten.add: a value left float64's exact integers"
    """

    def __init__(self, sources: Iterable[torch.Tensor] = ()) -> None:
        super().__init__()
        self.ran: Set[str] = set()
        self.refused: Set[str] = set()
        self.inexact: Set[str] = set()
        self._degree: Dict[int, Tuple[int, List[Any]]] = {}
        self._internal = False
        self._escapes = _EscapeWatch(self)
        self._tracking = False
        for t in sources:
            self.mark(t, 1)
            self._tracking = True

    def mark(self, t: torch.Tensor, degree: int) -> None:
        """Declare ``t`` (and every view of its storage) a polynomial of ``degree`` in the random draws."""
        self._set(t, degree)

    def degree(self, t: torch.Tensor) -> int:
        """Upper bound on the total degree of ``t`` in the sources (0: a constant)."""
        if not t.numel():
            return 0
        degree, holders = self._degree.get(_key(t), (0, []))
        # a storage freed since (every tensor seen on it is gone) may have been reused by a new tensor
        return degree if any(ref() is not None for ref in holders) else 0

    def _set(self, t: torch.Tensor, degree: int) -> None:
        key = _key(t)
        holders = self._degree[key][1] if key in self._degree else []
        # Dead references are dropped when the list reaches a power of two (16, 32, ...), not at every op: code
        # that reads a tensor element by element makes one view per element of the same storage, and pruning on
        # every record made such a loop quadratic.
        if len(holders) >= 16 and not len(holders) & (len(holders) - 1):
            holders[:] = [ref for ref in holders if ref() is not None]
        holders.append(weakref.ref(t))
        self._degree[key] = (degree, holders)

    def __enter__(self) -> OpRecorder:
        self._escapes.__enter__()
        try:
            return super().__enter__()
        except BaseException:
            self._escapes.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: Any) -> Any:
        try:
            return super().__exit__(*exc)
        finally:
            self._escapes.__exit__(*exc)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Ops run inside this block (the checker's own bookkeeping) are not recorded.

        Example:
            >>> with OpRecorder() as rec:
            ...     with rec.paused():
            ...         _ = torch.ones(2).abs()
            >>> sorted(rec.ran)
            []
        """
        saved, self._internal = self._internal, True
        try:
            yield
        finally:
            self._internal = saved

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105 (torch's protocol)
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        if self._internal:
            return out
        touched = _tensors(args) + _tensors([out])
        if touched and all(t.is_meta for t in touched):  # shapes only (a build's shape pass): no value to judge
            return out
        name = f"{getattr(func, 'namespace', '?')}.{func.overloadpacket.__name__}"
        if not touched and getattr(func, "namespace", None) == "prim":
            return out  # a metadata query
        self.ran.add(name)
        self._internal = True
        try:
            if not polynomial_op(func, args, kwargs, out):
                if not self._on_constants(func, args):
                    self.refused.add(name)
            else:
                issue = exactness_issue(name, args, kwargs, out)
                if issue:
                    self.inexact.add(issue)
            self._propagate(func.overloadpacket.__name__, args, out)
        finally:
            self._internal = False
        return out

    def _on_constants(self, func: Any, args: tuple) -> bool:
        """With ``sources`` given: a deterministic op whose tensor inputs are all constants computes a constant."""
        inputs = _tensors(args)
        if not self._tracking or not inputs or torch.Tag.nondeterministic_seeded in getattr(func, "tags", ()):
            return False
        return all(self.degree(t) == 0 for t in inputs)

    def _propagate(self, short: str, args: tuple, out: Any) -> None:
        degree = _combine_degree(short, args, lambda t: self.degree(t) if isinstance(t, torch.Tensor) else 0)
        in_keys = {_key(t) for t in _tensors(args)}
        for t in _tensors([out]):
            # a view or an in-place write keeps what its storage held; a fresh output is exactly this degree
            self._set(t, max(self.degree(t), degree) if _key(t) in in_keys else degree)
