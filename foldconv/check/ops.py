"""Which aten ops may claim the exact verdict: a polynomial allow-list, checked on what actually runs.

Integer-valued outputs do not make a map polynomial: a clamp, a threshold or a max also send integers to
integers, but a difference between two such maps can hide in a region the random integers never reach, so
the Schwartz–Zippel bound says nothing about them. The checker therefore records every aten op both sides
execute (a ``TorchDispatchMode``, below autograd, after composite ops are decomposed) and claims exactness
only when each op is on :data:`POLYNOMIAL_OPS`: ops whose outputs are polynomials (with integer
coefficients) in their tensor inputs, or fixed index maps of them (views, padding, gathers with constant
indices), or constants. Anything else (``relu``, ``clamp``, ``hardtanh``, ``max``, ``where``, ``div``,
comparisons, ``_local_scalar_dense`` — a Python branch on a tensor value —, dtype conversions that round)
demotes the verdict to a sampled float64 one, and the report names the op. So does a Tensor method that
takes values out of torch (``numpy``, ``tolist``, ...: :data:`ESCAPES`) on a tensor that depends on the random
draws, since what happens to them there cannot be recorded. Allow-listed ops are exact only while they compute
on integers of float64 (a rounding trick such as ``(x + 1.5 * 2**52) - 1.5 * 2**52`` uses only ``add`` and
``sub`` but rounds): the recorder checks every input, output, scalar factor and fused partial sum
(``inexact``), and bounds the degree of every tensor in the random draws (:meth:`OpRecorder.degree`) for the
Schwartz–Zippel bound. Given those draws (``sources``), an op off the list whose tensor inputs are all constants
(degree 0: index masks computed with ``//`` and ``==`` while building a weight) computes a constant and is not
held against the verdict, unless it is random.

Example:
    >>> import torch
    >>> with OpRecorder() as rec:
    ...     _ = torch.nn.functional.hardtanh(torch.ones(2) + 1)
    >>> sorted(rec.refused)
    ['aten.hardtanh']
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Dict, FrozenSet, Iterable, Iterator, List, Optional, Set

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

from .exact import EXACT_LIMIT, MAX_EXACT

__all__ = ["POLYNOMIAL_OPS", "ESCAPES", "OpRecorder", "polynomial_op"]

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
POLYNOMIAL_OPS: FrozenSet[str] = frozenset(_PRODUCTS | _ARITHMETIC | _LAYOUT | _PADDING | _CONSTANTS | {"uniform_", "normal_"})

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
    if name not in POLYNOMIAL_OPS:
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
_SUMS = {"sum", "cumsum", "trace", "col2im", "index_add", "index_add_", "index_put", "index_put_", "einsum"}
# Degree rule: outputs = additive argument + product of the others (conv/linear: bias is argument 2).
_ADDITIVE_ARG = {"convolution": 2, "_convolution": 2, "convolution_overrideable": 2, "linear": 2, "addmm": 0,
                 "addmv": 0, "addr": 0, "baddbmm": 0, "addbmm": 0, "addcmul": 0}
_MULTIPLYING = _PRODUCTS | {"mul"}
# Weight initialisation when a build creates a module (nn.Conv2d's kaiming_uniform_): allowed as constants of
# degree 0 because their values are real-valued almost surely, so any later use is flagged as inexact.
_RANDOM_INIT = {"uniform_", "normal_"}
#: Tensor methods that move values out of torch (into numpy, Python or raw memory), where no op can be recorded.
ESCAPES: FrozenSet[str] = frozenset({"numpy", "tolist", "__array__", "data_ptr", "untyped_storage", "storage",
                                     "_typed_storage", "__dlpack__"})


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
    if t is None or not t.is_floating_point() or not t.numel():
        return 0.0
    return float(t.detach().abs().max())


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
        if name in ("index_add", "index_add_", "index_put", "index_put_"):
            return sum(_l1(t) for t in ts)
        return math.prod(max(1.0, _l1(t)) for t in ts) if ts else 0.0
    return 0.0


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


class OpRecorder(TorchDispatchMode):
    """Record the aten ops run inside the block, and whether integer arithmetic stayed exact.

    ``ran``: every op name; ``refused``: ops off the allow-list, and ``Tensor.numpy``-style escapes of
    values that depend on the random draws into numpy or Python, where nothing can be recorded;
    ``inexact``: allow-listed ops whose inputs, outputs or internal partial sums left float64's exact
    integers (a non-integer, a value of magnitude 2**51 or more, a non-integer scalar factor such as
    ``x * (1/3)``, or a fused sum that can reach 2**53): rounding may have happened there. ``sources`` are
    the random draws (the input, resampled weights): they have degree 1; every other tensor not produced
    inside the block is a constant. :meth:`degree` is an upper bound on the total degree of a tensor as a
    polynomial in the sources (sums take the maximum, products add).

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
        self._degree: Dict[int, int] = {}
        self._internal = False
        self._escapes = _EscapeWatch(self)
        self._tracking = False
        for t in sources:
            self.mark(t, 1)
            self._tracking = True

    def mark(self, t: torch.Tensor, degree: int) -> None:
        """Declare ``t`` (and every view of its storage) a polynomial of ``degree`` in the random draws."""
        self._degree[_key(t)] = degree

    def degree(self, t: torch.Tensor) -> int:
        """Upper bound on the total degree of ``t`` in the sources (0: a constant)."""
        return self._degree.get(_key(t), 0) if t.numel() else 0

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
        self.ran.add(name)
        self._internal = True
        try:
            if not polynomial_op(func, args, kwargs, out):
                if not self._on_constants(func, args):
                    self.refused.add(name)
            else:
                self._exactness(name, func.overloadpacket.__name__, args, kwargs, out)
            self._propagate(func.overloadpacket.__name__, args, out)
        finally:
            self._internal = False
        return out

    def _on_constants(self, func: Any, args: tuple) -> bool:
        """With ``sources`` given: a deterministic op whose tensor inputs are all constants (degree 0, such as the
        index masks a build computes with ``//`` and ``==``) computes a constant; only ops touching the random
        draws must be polynomial."""
        inputs = _tensors(args)
        if not self._tracking or not inputs or torch.Tag.nondeterministic_seeded in getattr(func, "tags", ()):
            return False
        return all(self.degree(t) == 0 for t in inputs)

    def _exactness(self, name: str, short: str, args: tuple, kwargs: Dict[str, Any], out: Any) -> None:
        # Layout, padding and constant ops only move or create values and cannot round; a non-integer they
        # carry (an initialiser's, later overwritten, or not) is caught where it is computed with, or in the output.
        accumulating = short in ("index_put", "index_put_") and bool(kwargs.get("accumulate", args[3] if len(args) > 3 else False))
        if short not in _ARITHMETIC | _PRODUCTS | {"index_add", "index_add_", "col2im"} and not accumulating:
            return
        if not _integer_scalar(list(args) + list(kwargs.values())):
            self.inexact.add(f"{name}: a non-integer scalar factor")
            return
        inputs = _tensors(args)
        outputs = _tensors([out])
        if not all(_exact_integers(t) for t in inputs + outputs):
            self.inexact.add(f"{name}: a value {_INEXACT_NOTE}")
        elif _partial_sum_bound(short, args, kwargs) >= MAX_EXACT:
            self.inexact.add(f"{name}: an internal sum can reach 2**53")

    def _propagate(self, short: str, args: tuple, out: Any) -> None:
        inputs = _tensors(args)
        if short in _ADDITIVE_ARG and len(args) > _ADDITIVE_ARG[short]:
            add = args[_ADDITIVE_ARG[short]]
            others = [a for i, a in enumerate(args) if i != _ADDITIVE_ARG[short]]
            degree = max(self.degree(add) if isinstance(add, torch.Tensor) else 0,
                         sum(self.degree(t) for t in _tensors(others)))
        elif short in _MULTIPLYING:
            degree = sum(self.degree(t) for t in inputs)
        else:
            degree = max((self.degree(t) for t in inputs), default=0)
        in_keys = {_key(t) for t in inputs}
        for t in _tensors([out]):
            k = _key(t)
            # a view or an in-place write keeps what its storage held; a fresh output is exactly this degree
            self._degree[k] = max(self._degree.get(k, 0), degree) if k in in_keys else degree
