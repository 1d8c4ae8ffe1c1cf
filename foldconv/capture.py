"""What a function computes, as a closed record of aten operations that can be read and replayed.

:func:`capture` runs a function once on *fake* tensors (torch's ``FakeTensorMode``: shapes, dtypes, devices and
aliasing, but no values) and records every aten operation that reaches the dispatcher, below autograd and
after composite operations are decomposed: the operation, its arguments and keyword arguments (tensors
replaced by :class:`Value` references) and the metadata of its results (:class:`TensorMeta`). The
:class:`Record` is *closed*: every tensor an operation reads is a declared input, a constant (a real tensor
from the function's closure or module state, copied when first used) or the result of an earlier operation
of the record. :meth:`Record.run` replays exactly those operations on new inputs, so nothing outside the
record can influence what the replay computes.

Why fake tensors: values that do not exist cannot be read. ``float(t)``, ``t.item()``, ``t.tolist()``,
``t.numpy()``, ``Tensor.apply_`` / ``map_`` on a tensor that depends on the inputs either fail in fake mode or
are refused by the capture, and work done where the recorder cannot see it (another thread, a disabled
dispatch mode) produces fake tensors the record never saw, which the capture refuses when they are used or
returned. A failed capture raises :class:`CaptureError` with the reason; an error the function itself catches
still fails the capture (the real run would take another path).

Operations on constants alone (index masks, ``torch.tensor`` literals, ``arange``, a module's fixed buffers) run
for real while capturing and enter the record as constants, so a Python decision or a boolean mask on them works
and is the same in every replay; the function's own tensors are never written while capturing (real tensors go
into fake operations as their fakes), and the constants a record was computed from are kept by weak reference,
so :meth:`Record.changed_constants` shows when the function changed one since.

What a record cannot see is Python state: a function that keeps a counter in a closure, or asks whether its
tensors are fake, can compute something else on real tensors. :meth:`Record.run` on the inputs a real call got
and a comparison with that call's output (as :func:`foldconv.check.check_equivalence` does on every trial)
shows such a difference wherever those inputs reach it.

:class:`DispatchMode` is the base for foldconv's dispatch modes: recent torch (2.14 here) wraps each
mode's ``__torch_dispatch__`` in ``torch._disable_dynamo``, whose first call imports ``torch._dynamo`` (about a
second); the base keeps the handler as written (foldconv never compiles inside a mode).

Example:
    >>> import torch
    >>> rec = capture(lambda x, w: torch.nn.functional.linear(x, w).sum(1), [torch.ones(2, 3), torch.ones(4, 3)])
    >>> [node.name for node in rec.nodes]
    ['aten.t', 'aten.mm', 'aten.sum']
    >>> rec.run([torch.ones(2, 3), 2 * torch.ones(4, 3)]).tolist()
    [24.0, 24.0]
"""
from __future__ import annotations

import contextlib
import threading
import warnings
import weakref
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import nn
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes

from .errors import first_line

__all__ = ["DispatchMode", "Observer", "CaptureError", "TensorMeta", "Value", "Node", "Record", "capture", "READS_VALUES",
           "flat_tensors", "written_tensors", "module_scopes"]


class DispatchMode(TorchDispatchMode):
    """A ``TorchDispatchMode`` whose ``__torch_dispatch__`` runs as written, without importing ``torch._dynamo``.

    Subclass it instead of ``TorchDispatchMode``. Recent torch (2.14 here) wraps every subclass's handler in
    ``torch._disable_dynamo`` (so that ``torch.compile`` does not trace into it); the wrapper's first call
    imports ``torch._dynamo``, about a second in a fresh process. The handler is restored after torch's own
    ``__init_subclass__``; older torch, which wraps nothing, is unaffected.

    Example:
        >>> class Names(DispatchMode):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.seen = []
        ...     def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        ...         self.seen.append(str(func.overloadpacket))
        ...         return func(*args, **(kwargs or {}))
        >>> with Names() as mode:
        ...     _ = torch.ones(2) * 3
        >>> mode.seen
        ['aten.ones', 'aten.mul']
    """

    def __init_subclass__(cls, **kwargs: Any) -> None:
        raw = cls.__dict__.get("__torch_dispatch__")
        super().__init_subclass__(**kwargs)
        if raw is not None and cls.__dict__.get("__torch_dispatch__") is not raw:
            type.__setattr__(cls, "__torch_dispatch__", raw)


class Observer(DispatchMode):
    """Runs every aten operation as called (real, meta or fake tensors alike) and hands it, with its result, to
    ``observe(func, args, kwargs, out)``: the recording loop an analysis builds its own record with.

    Example:
        >>> seen = []
        >>> with Observer(lambda func, args, kwargs, out: seen.append((str(func.overloadpacket), tuple(out.shape)))):
        ...     _ = torch.ones(2, 3).sum(0)
        >>> seen
        [('aten.ones', (2, 3)), ('aten.sum', (3,))]
    """

    def __init__(self, observe: Callable[[Any, Tuple[Any, ...], Dict[str, Any], Any], None]) -> None:
        super().__init__()
        self.observe = observe

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105 (torch's protocol)
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        self.observe(func, tuple(args), dict(kwargs), out)
        return out


class CaptureError(RuntimeError):
    """A function could not be captured as a closed record; the message says where, in the function's terms.

    ``op``: the aten operation (``"aten.add"``) or Tensor method (``"Tensor.apply_"``) concerned, if any.

    Example:
        >>> try:
        ...     capture(lambda x: x * float(x.sum()), [torch.ones(2)])
        ... except CaptureError as err:
        ...     err.op, str(err)
        ('aten._local_scalar_dense', "Tensor.__float__ reads a tensor's value into Python (aten._local_scalar_dense), where nothing can be recorded")
    """

    def __init__(self, message: str, op: Optional[str] = None) -> None:
        super().__init__(message)
        self.op = op


#: Tensor methods that read values without an aten operation (into numpy, a capsule, a pickle or a Python
#: callback): on a fake tensor they are refused (``apply_`` would read memory that does not exist). ``item``,
#: ``tolist``, ``float(t)`` and ``if t:`` need no entry: they run ``aten._local_scalar_dense``, which fails on
#: fake tensors; a fake tensor's storage holds no values to read.
READS_VALUES = frozenset({"apply_", "map_", "map2_", "numpy", "__array__", "__dlpack__", "__reduce_ex__"})


@dataclass(frozen=True)
class TensorMeta:
    """Metadata of one tensor in a record: what the operation produced, without its values.

    ``storage``: an id shared by every tensor of the record that aliases the same memory (views, in-place
    results); ``storage_numel``: that memory's size in elements of ``dtype``.
    """

    shape: Tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    stride: Tuple[int, ...]
    offset: int
    storage: int
    storage_numel: int

    @property
    def covers_storage(self) -> bool:
        """Does this tensor reach every element of its storage exactly once (a write to it replaces all)?"""
        numel = 1
        for size in self.shape:
            numel *= size
        if numel != self.storage_numel or self.offset:
            return False
        expected = 1
        for size, stride in sorted(zip(self.shape, self.stride), key=lambda p: p[1]):
            if size > 1 and stride != expected:
                return False
            expected *= size
        return True


@dataclass(frozen=True)
class Value:
    """A tensor of a record: an input, a constant or an operation's result (``id`` indexes ``Record.meta``)."""

    id: int


@dataclass(frozen=True)
class Node:
    """One aten operation of a record.

    ``args``/``kwargs``: as the operation got them, with each tensor replaced by its :class:`Value`;
    ``result``: the operation's return value with each tensor replaced by a new :class:`Value` (an in-place
    operation's result is a new value of the same storage); ``writes``: the values the operation mutates;
    ``scope``: the qualified names of the modules whose ``forward`` was running (outermost first).
    """

    op: Any
    args: Tuple[Any, ...]
    kwargs: Mapping[str, Any]
    result: Any
    writes: Tuple[Value, ...]
    scope: Tuple[str, ...]

    @property
    def name(self) -> str:
        """``namespace.packet``, e.g. ``aten.add`` (the overload is ``op``)."""
        packet = getattr(self.op, "overloadpacket", self.op)
        return f"{getattr(self.op, 'namespace', '?')}.{getattr(packet, '__name__', str(packet))}"

    @property
    def short(self) -> str:
        """The overload packet's name without namespace, e.g. ``add_``."""
        return self.name.split(".", 1)[1]

    def inputs(self) -> List[Value]:
        """Every value among ``args`` and ``kwargs`` (``out=`` targets too), in order."""
        return [v for v in _leaves((self.args, self.kwargs)) if isinstance(v, Value)]

    def outputs(self) -> List[Value]:
        """Every value the operation returned, in order."""
        return [v for v in _leaves(self.result) if isinstance(v, Value)]


@dataclass(frozen=True)
class _Constant:
    value: Value
    storage: int  # index into Record.storages
    dtype: torch.dtype
    shape: Tuple[int, ...]
    stride: Tuple[int, ...]
    offset: int
    source: Any = field(default=None, compare=False)  # a weak reference to the tensor it was copied from
    born: bool = False  # made while capturing (from constants alone), not kept by the function

    def view(self, storages: Sequence[Any]) -> torch.Tensor:
        storage = storages[self.storage]
        return torch.empty(0, dtype=self.dtype, device=storage.device).set_(storage, self.offset, self.shape, self.stride)


@dataclass(frozen=True)
class Record:
    """A closed record of aten operations (see the module docstring); :meth:`run` replays it.

    ``inputs``: one :class:`Value` per input of :func:`capture`; ``nodes``: the operations in order;
    ``output``: the function's return value with tensors as values; ``meta``: every value's
    :class:`TensorMeta`; ``constant_values``: the values that are constants (their tensors are copied at
    capture and restored for every run).
    """

    inputs: Tuple[Value, ...]
    nodes: Tuple[Node, ...]
    output: Any
    meta: Tuple[TensorMeta, ...]
    constants: Tuple[_Constant, ...]
    storages: Tuple[Any, ...]
    mutable_storages: Tuple[bool, ...]

    @property
    def constant_values(self) -> Tuple[Value, ...]:
        """The values that are constants."""
        return tuple(c.value for c in self.constants)

    @property
    def state_values(self) -> Tuple[Value, ...]:
        """The constants the function keeps (its parameters, buffers, closure tensors): writing them is state."""
        return tuple(c.value for c in self.constants if not c.born)

    def run(self, inputs: Sequence[torch.Tensor], *, observe: Optional[Callable[[Node, tuple, dict, Any], None]] = None) -> Any:
        """Replay the record on ``inputs`` (same shapes, dtypes and devices as at capture); return its output.

        Only the recorded operations run, each on the tensors the record says. ``observe(node, args,
        kwargs, result)`` is called after each operation with the real tensors. Inputs are used as given
        (an operation that mutates an input mutates it); constants start from their captured values on
        every run.

        Example:
            >>> rec = capture(lambda x: (x + 1).relu_(), [torch.zeros(3)])
            >>> rec.run([torch.tensor([-2.0, 0.0, 3.0])]).tolist()
            [0.0, 1.0, 4.0]
        """
        if len(inputs) != len(self.inputs):
            raise CaptureError(f"the record has {len(self.inputs)} inputs, got {len(inputs)}")
        env: List[Any] = [None] * len(self.meta)
        for value, tensor in zip(self.inputs, inputs):
            meta = self.meta[value.id]
            if tuple(tensor.shape) != meta.shape or tensor.dtype != meta.dtype:
                raise CaptureError(f"input {value.id}: expected {meta.shape} {meta.dtype}, got {tuple(tensor.shape)} {tensor.dtype}")
            env[value.id] = tensor
        storages = [s.clone() if mutable else s for s, mutable in zip(self.storages, self.mutable_storages)]
        for c in self.constants:
            env[c.value.id] = c.view(storages)
        for node in self.nodes:
            args, kwargs = _resolve(node.args, env), _resolve(node.kwargs, env)
            out = node.op(*args, **kwargs)
            _bind(node.result, out, env)
            if observe is not None:
                observe(node, args, kwargs, out)
        return _resolve(self.output, env)

    def changed_constants(self) -> List[str]:
        """The constants whose tensors (those still alive) no longer hold the values captured: state that changed.

        A function that writes into a tensor it keeps (a closure tensor, a parameter, a buffer) — by any means,
        seen by the dispatcher or not — computes with other values on its next call than the record does.

        Example:
            >>> table = torch.zeros(2)
            >>> rec = capture(lambda x: x + table, [torch.zeros(2)])
            >>> before = rec.changed_constants()
            >>> table += 1
            >>> before, rec.changed_constants()
            ([], ['a constant of shape (2,)'])
        """
        changed = []
        for c in self.constants:
            tensor = c.source() if c.source is not None and not c.born else None
            if tensor is None:
                continue  # gone: the function can no longer read it
            now, then = tensor.detach(), c.view(self.storages)
            same = now.shape == then.shape and now.dtype == then.dtype and (
                bool(torch.equal(now, then)) or (now.is_floating_point() and bool(((now == then) | (now.isnan() & then.isnan())).all())))
            if not same:
                changed.append(f"a constant of shape {tuple(then.shape)}")
        return changed


def _address(t: torch.Tensor) -> Tuple[int, str]:
    """Where a real tensor's memory is (no operation runs: storages are read, not computed)."""
    return t.untyped_storage().data_ptr(), t.device.type + str(t.device.index)


def _flat_tensors(args: Sequence[Any], kwargs: Mapping[str, Any]) -> List[torch.Tensor]:
    """The tensors among an aten call's arguments (aten nests at most one list deep)."""
    found = []
    for a in list(args) + list(kwargs.values()):
        if isinstance(a, torch.Tensor):
            found.append(a)
        elif isinstance(a, (list, tuple)):
            found.extend(t for t in a if isinstance(t, torch.Tensor))
    return found


def _leaves(tree: Any) -> Iterator[Any]:
    if isinstance(tree, (list, tuple)):
        for item in tree:
            yield from _leaves(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _leaves(item)
    else:
        yield tree


def _resolve(tree: Any, env: List[Any]) -> Any:
    if isinstance(tree, Value):
        return env[tree.id]
    if isinstance(tree, list):
        return [_resolve(t, env) for t in tree]
    if isinstance(tree, tuple):
        return tuple(_resolve(t, env) for t in tree)
    if isinstance(tree, dict):
        return {k: _resolve(v, env) for k, v in tree.items()}
    return tree


def _bind(pattern: Any, out: Any, env: List[Any]) -> None:
    if isinstance(pattern, Value):
        env[pattern.id] = out
    elif isinstance(pattern, (list, tuple)):
        for p, o in zip(pattern, out):
            _bind(p, o, env)


class _State:
    """Everything one capture accumulates; ``failure`` is sticky (a caught error still fails the capture)."""

    def __init__(self, fake_mode: Any, names: Mapping[int, str]) -> None:
        from torch._subclasses.fake_tensor import FakeTensor

        self.fake_mode = fake_mode
        self.fake_type = FakeTensor
        self.names = names
        self.thread = threading.get_ident()
        self.failure: Optional[CaptureError] = None
        self.slot: Dict[int, Value] = {}  # id(tensor) -> its newest value
        self.keep: List[Any] = []  # every tensor seen, so ids are not reused during the capture
        self.meta: List[TensorMeta] = []
        self.nodes: List[Node] = []
        self.constants: List[_Constant] = []
        self.storages: List[Any] = []
        self.storage_index: Dict[Tuple[int, str], int] = {}  # (data_ptr, device) of a real storage -> snapshot
        self.storage_ids: Dict[int, int] = {}  # fake storage -> record storage id
        self.scope: List[str] = []
        self.shadow: Dict[int, Any] = {}  # id(fake tensor) -> a real tensor holding the same values
        self.shadow_storages: Dict[Tuple[int, str], Any] = {}  # private copies of the constants' storages
        self.unknown: set = set()
        self.constant_ids: set = set()
        self.born: set = set()  # (data_ptr, device) of the real tensors folded ops made  # record storages whose values the shadows no longer follow

    def fail(self, message: str, op: Optional[str] = None) -> CaptureError:
        err = CaptureError(message, op)
        if self.failure is None:
            self.failure = err
        return err

    def new_value(self, tensor: torch.Tensor, fake: torch.Tensor) -> Value:
        value = Value(len(self.meta))
        storage = fake.untyped_storage()
        sid = self.storage_ids.setdefault(storage._cdata, len(self.storage_ids))
        size = storage.nbytes() // max(fake.element_size(), 1)
        self.meta.append(TensorMeta(tuple(fake.shape), fake.dtype, fake.device, tuple(fake.stride()), int(fake.storage_offset()),
                                    sid, int(size)))
        self.slot[id(tensor)] = value
        self.keep.append((tensor, fake))  # alive until the end: ids and storage addresses are never reused meanwhile
        return value

    def refer(self, tree: Any, op: str) -> Any:
        """``tree`` with every tensor replaced by its value; a real tensor becomes a constant."""
        if isinstance(tree, torch.Tensor):
            value = self.slot.get(id(tree))
            if value is not None:
                return value
            return self._constant(tree, op)
        if isinstance(tree, list):
            return [self.refer(t, op) for t in tree]
        if isinstance(tree, tuple):
            return tuple(self.refer(t, op) for t in tree)
        if isinstance(tree, dict):
            return {k: self.refer(v, op) for k, v in tree.items()}
        if isinstance(tree, (torch.UntypedStorage, torch.TypedStorage)):
            raise self.fail(f"{op} took a raw storage: memory the record cannot follow", op)
        return tree

    def _constant(self, tensor: torch.Tensor, op: str) -> Value:
        from torch._subclasses.fake_tensor import FakeTensor

        if isinstance(tensor, FakeTensor):
            raise self.fail(f"{op} used a tensor computed outside the capture (in another thread or under a disabled "
                            "dispatch mode), so the record cannot say how it was computed", op)
        if tensor.is_meta or type(tensor) not in (torch.Tensor, nn.Parameter):
            raise self.fail(f"{op} used a {type(tensor).__name__} on device {tensor.device}, which has no values to record", op)
        with _disable_current_modes():
            storage = tensor.untyped_storage()
            key = _address(tensor)
            if key not in self.storage_index:
                self.storage_index[key] = len(self.storages)
                self.storages.append(storage.clone())
        fake = self.fake_mode.from_tensor(tensor)
        value = self.new_value(tensor, fake)
        self.constants.append(_Constant(value, self.storage_index[key], tensor.dtype, tuple(tensor.shape), tuple(tensor.stride()),
                                        int(tensor.storage_offset()), weakref.ref(tensor), key in self.born))
        self.constant_ids.add(value.id)
        return value

    def known(self, tensors: Sequence[torch.Tensor]) -> bool:
        """Do all these tensors have shadows (are they computed from constants alone)?"""
        for t in tensors:
            value = self.slot.get(id(t))
            if value is not None and self.meta[value.id].storage in self.unknown:
                return False
            if isinstance(t, self.fake_type):
                if value is None or id(t) not in self.shadow:
                    return False
            elif t.is_meta or type(t) not in (torch.Tensor, nn.Parameter):
                return False
        return True

    def local(self, tensors: Sequence[torch.Tensor]) -> bool:
        """Are these real tensors made while capturing and not yet part of the record (an op may write them)?"""
        return all(not isinstance(t, self.fake_type) and self.is_born(t) and _address(t) not in self.storage_index for t in tensors)

    def fresh(self, real: Any, shadow_args: Any) -> bool:
        """Is every tensor of ``real`` new memory, or a view of memory made while capturing?"""
        used = {_address(t) for t in _flat_tensors(*shadow_args)} - self.born
        return all(_address(t) not in used for t in _leaves(real) if isinstance(t, torch.Tensor))

    def as_fake(self, tree: Any) -> Any:
        """``tree`` with every real tensor replaced by its fake (the one FakeTensorMode itself would make)."""
        if isinstance(tree, torch.Tensor):
            return tree if isinstance(tree, self.fake_type) else self.fake_mode.from_tensor(tree)
        if isinstance(tree, list):
            return [self.as_fake(t) for t in tree]
        if isinstance(tree, tuple):
            return tuple(self.as_fake(t) for t in tree)
        if isinstance(tree, dict):
            return {k: self.as_fake(v) for k, v in tree.items()}
        return tree

    def is_born(self, tensor: torch.Tensor) -> bool:
        return _address(tensor) in self.born

    def born_from(self, real: Any) -> Any:
        """Remember the real tensors a folded op made: capture-local values, not the function's state."""
        for t in _leaves(real):
            if isinstance(t, torch.Tensor):
                self.keep.append(t)
                self.born.add(_address(t))
        return real

    def shadows(self, tree: Any) -> Optional[Any]:
        """``tree`` with every tensor replaced by its shadow; None when one has none."""
        missing = []

        def swap(t: Any) -> Any:
            if isinstance(t, (list, tuple)):
                return type(t)(swap(u) for u in t) if isinstance(t, list) else tuple(swap(u) for u in t)
            if isinstance(t, dict):
                return {k: swap(v) for k, v in t.items()}
            if not isinstance(t, torch.Tensor):
                return t
            value = self.slot.get(id(t))
            if value is not None and self.meta[value.id].storage in self.unknown:
                missing.append(t)
                return None
            if id(t) in self.shadow:
                return self.shadow[id(t)]
            if not isinstance(t, self.fake_type):
                if value is None and not self.is_born(t):
                    self._constant(t, "a constant")  # what folded values were computed from: watched like any constant
                return self._private(t)
            missing.append(t)
            return None

        swapped = swap(tree)
        return None if missing else swapped

    def _private(self, tensor: torch.Tensor) -> torch.Tensor:
        """A constant's shadow: a view of a private copy of its storage (the caller's tensor is never written);
        a tensor made while capturing is its own."""
        if self.is_born(tensor) and _address(tensor) not in self.storage_index:
            return tensor
        with _disable_current_modes():
            storage = tensor.untyped_storage()
            key = _address(tensor)
            if key not in self.shadow_storages:
                self.shadow_storages[key] = storage.clone()
            copy = torch.empty(0, dtype=tensor.dtype, device=tensor.device).set_(
                self.shadow_storages[key], tensor.storage_offset(), tensor.shape, tensor.stride())
        self.shadow[id(tensor)] = copy
        return copy

    def known_masks(self, func: Any, args: Any) -> Optional[tuple]:
        """``args`` of an indexing op with every boolean mask that is a constant replaced by its integer indices."""
        if func.overloadpacket.__name__ not in ("index", "index_put", "index_put_") or len(args) < 2:
            return None
        indices, changed = [], False
        for index in args[1]:
            if isinstance(index, torch.Tensor) and index.dtype in (torch.bool, torch.uint8):
                known = self.shadows(index)
                if known is None:
                    return None
                with _disable_current_modes():
                    indices.extend(known.nonzero(as_tuple=True))
                changed = True
            else:
                indices.append(index)
        return (args[0], indices) + tuple(args[2:]) if changed else None

    def run_real(self, func: Any, shadow_args: Any) -> Any:
        with _disable_current_modes():
            args, kwargs = shadow_args
            return func(*args, **kwargs)

    def attach(self, out: Any, real: Any) -> None:
        """Pair every fake tensor of an op's result with the real tensor at the same place."""
        if isinstance(out, torch.Tensor) and isinstance(real, torch.Tensor):
            self.shadow[id(out)] = real
        elif isinstance(out, (list, tuple)) and isinstance(real, (list, tuple)):
            for o, r in zip(out, real):
                self.attach(o, r)

    def forget(self, writes: Sequence[Value]) -> None:
        """An op the shadows did not follow wrote here: these storages' values are unknown from now on."""
        for v in writes:
            self.unknown.add(self.meta[v.id].storage)

    def result(self, out: Any) -> Any:
        if isinstance(out, torch.Tensor):
            return self.new_value(out, out)
        if isinstance(out, (list, tuple)):
            return type(out)(self.result(o) for o in out) if isinstance(out, list) else tuple(self.result(o) for o in out)
        return out


def _all_meta(tensors: Sequence[torch.Tensor]) -> bool:
    return bool(tensors) and all(t.device.type == "meta" for t in tensors)


_MUTATED: Dict[Any, Tuple[Tuple[int, str, bool], ...]] = {}


def _written(func: Any, args: Any, kwargs: Mapping[str, Any]) -> List[Any]:
    """The arguments an operation mutates, by its schema (``Tensor(a!)``)."""
    mutated = _MUTATED.get(func)
    if mutated is None:
        schema = getattr(func, "_schema", None)
        arguments = schema.arguments if schema is not None else ()
        mutated = _MUTATED[func] = tuple((i, a.name, a.kwarg_only) for i, a in enumerate(arguments)
                                         if a.alias_info is not None and a.alias_info.is_write)
    written = []
    for i, name, kwarg_only in mutated:
        if kwarg_only or i >= len(args):
            if name in kwargs:
                written.append(kwargs[name])
        else:
            written.append(args[i])
    return written


def flat_tensors(tree: Any) -> List[torch.Tensor]:
    """The tensors of an aten call's arguments or result, however nested in lists and tuples.

    Example:
        >>> [tuple(t.shape) for t in flat_tensors((torch.ones(1), [torch.ones(2), 3], "x"))]
        [(1,), (2,)]
    """
    return [t for t in _leaves(tree) if isinstance(t, torch.Tensor)]


def written_tensors(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any]) -> List[torch.Tensor]:
    """The tensors an aten operation mutates, by its schema (``Tensor(a!)``: in-place and ``out=`` arguments).

    Example:
        >>> x = torch.zeros(2)
        >>> [t is x for t in written_tensors(torch.ops.aten.add_.Tensor, (x, torch.ones(2)), {})]
        [True]
    """
    return flat_tensors(_written(func, args, kwargs))


@contextlib.contextmanager
def module_scopes(stack: List[Any], label: Callable[[nn.Module], Optional[Any]]) -> Iterator[None]:
    """While active, ``stack`` holds ``label(module)`` for every module whose ``forward`` is running in this
    thread (outermost first); a module labelled None is left out.

    Example:
        >>> stack, seen = [], []
        >>> class Probe(torch.nn.Module):
        ...     def forward(self, x):
        ...         seen.append(list(stack))
        ...         return x
        >>> with module_scopes(stack, lambda m: type(m).__name__):
        ...     _ = torch.nn.Sequential(Probe())(torch.ones(1))
        >>> seen
        [['Sequential', 'Probe']]
    """
    thread, pushed = threading.get_ident(), []

    def enter(module: nn.Module, _args: Any) -> None:
        name = label(module) if threading.get_ident() == thread else None
        pushed.append(name is not None)
        if name is not None:
            stack.append(name)

    def leave(module: nn.Module, _args: Any, _out: Any) -> None:
        if threading.get_ident() == thread and pushed and pushed.pop() and stack:
            stack.pop()

    handles = [nn.modules.module.register_module_forward_pre_hook(enter), nn.modules.module.register_module_forward_hook(leave)]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


_DATA_DEPENDENT = ("DataDependentOutputException", "DynamicOutputShapeException")
_UNKNOWN_VALUES = frozenset({"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "empty_permuted",
                             "resize_", "set_"})


class _Recorder(DispatchMode):
    """Records every op on the capture's tensors; ops on known constants also run for real (their shadows).

    A value computed only from constants, Python literals and deterministic factories has a real *shadow*
    (the same value, computed the same way), so an op that needs values — a boolean mask, ``nonzero``,
    ``float(t)`` — can be answered for it: the answer is a constant, the same in every replay. Values that
    depend on the inputs, on random or uninitialised memory, or on a write the shadows did not follow have none.
    """

    def __init__(self, state: _State) -> None:
        super().__init__()
        self.state = state

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # noqa: D105 (torch's protocol)
        kwargs = kwargs or {}
        st = self.state
        name = f"{getattr(func, 'namespace', '?')}.{func.overloadpacket.__name__}"
        if st.failure is not None:
            raise st.failure
        tensors = _flat_tensors(args, kwargs)
        if _all_meta(tensors):
            return func(*args, **kwargs)  # a shape pass on the meta device: no value exists there to record
        if func.overloadpacket.__name__ in ("lift_fresh", "lift_fresh_copy") and not isinstance(args[0], st.fake_type):
            return st.born_from(args[0])  # torch.tensor(data): new memory filled from Python values, a constant
        mutated = _written(func, args, kwargs)
        known = (func.overloadpacket.__name__ not in _UNKNOWN_VALUES and st.known(tensors)
                 and torch.Tag.nondeterministic_seeded not in getattr(func, "tags", ()))
        shadow_args = st.shadows((tuple(args), dict(kwargs))) if known else None
        if shadow_args is not None and st.local(_flat_tensors(mutated, {})):
            real = st.run_real(func, shadow_args)
            if st.fresh(real, shadow_args) or mutated:
                return st.born_from(real)  # a constant computed from constants: it enters the record as a constant
        ref_args, ref_kwargs = st.refer(tuple(args), name), st.refer(dict(kwargs), name)
        writes = tuple(v for v in _leaves(st.refer(mutated, name)) if isinstance(v, Value)) if mutated else ()
        try:
            # real tensors go in as their fakes: torch would run an op whose inputs are all real for real, and write
            # into the function's own tensors
            out = func(*st.as_fake(tuple(args)), **st.as_fake(dict(kwargs)))
            real = st.run_real(func, shadow_args) if shadow_args is not None else None
        except Exception as err:
            if type(err).__name__ not in _DATA_DEPENDENT:
                raise st.fail(f"{name} failed on fake tensors: {first_line(err, with_type=True)}", name) from err
            indexed = st.known_masks(func, args) if shadow_args is None else None
            if indexed is not None:  # boolean masks that are constants: the same op with their integer indices
                return self.__torch_dispatch__(func, types, indexed, kwargs)
            if shadow_args is None:
                raise st.fail(f"{name} needs a tensor's value (a Python branch on it, or a shape that depends on it), "
                              "which a record cannot follow", name) from err
            real = st.run_real(func, shadow_args)  # a constant's value: the same in every replay
            if not isinstance(real, torch.Tensor):
                return real
            with _disable_current_modes():
                out = st.fake_mode.from_tensor(real)
        result = st.result(out)
        node = Node(func, ref_args, ref_kwargs, result, writes, tuple(st.scope))
        if real is not None:
            st.attach(out, real)
        else:
            st.forget(writes)
        if writes or node.outputs():  # not a metadata query (prim.device, ...): nothing that holds values
            st.nodes.append(node)
        return out


class _Guard(TorchFunctionMode):
    """Refuses Tensor methods that read values outside the dispatcher on fake tensors, and notes every error."""

    def __init__(self, state: _State) -> None:
        super().__init__()
        self.state = state

    def __torch_function__(self, func, types, args=(), kwargs=None):  # noqa: D105 (torch's protocol)
        FakeTensor = self.state.fake_type  # noqa: N806 (a class)
        kwargs = kwargs or {}
        name = getattr(func, "__name__", "")
        if name in READS_VALUES and any(isinstance(t, FakeTensor) for t in _leaves((args, kwargs))):
            raise self.state.fail(f"Tensor.{name} reads a tensor's values outside torch's operations, where nothing can be "
                                  "recorded", f"Tensor.{name}")
        before = self.state.failure
        try:
            return func(*args, **kwargs)
        except Exception as err:
            fake = any(isinstance(t, FakeTensor) for t in _leaves((args, kwargs)))
            failure = self.state.failure
            if fake and failure is None:
                self.state.fail(f"{getattr(func, '__qualname__', name)} failed on fake tensors: {first_line(err, with_type=True)}", name)
            elif fake and before is None and failure is not None and failure.op == "aten._local_scalar_dense":
                # say which call read the value: `float(t)`, `t.item()`, `t.tolist()`, `if t: ...`
                self.state.failure = CaptureError(f"Tensor.{name} reads a tensor's value into Python "
                                                  "(aten._local_scalar_dense), where nothing can be recorded", failure.op)
            raise


@contextlib.contextmanager
def _module_conversion(state: _State) -> Iterator[None]:
    """``module.to(dtype)`` while capturing: parameters are rebound to converted ones.

    torch converts a fake parameter by ``swap_tensors``, which fails on fake tensors (FakeTensorMode keeps a
    weak reference to each); the capture thread rebinds each parameter to its conversion instead (a tied
    parameter stays tied), other threads are unaffected.
    """
    original = nn.Module._apply

    def _apply(module: nn.Module, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> nn.Module:
        if threading.get_ident() != state.thread:
            return original(module, fn, recurse)
        converted: Dict[int, Any] = {}

        def convert(m: nn.Module, deep: bool) -> None:
            for child in m.children() if deep else ():
                convert(child, True)
            for key, param in m._parameters.items():
                if param is not None:
                    if id(param) not in converted:
                        with torch.no_grad():
                            applied = fn(param)
                        converted[id(param)] = param if applied is param else nn.Parameter(applied, param.requires_grad)
                    m._parameters[key] = converted[id(param)]
            for key, buf in m._buffers.items():
                if buf is not None:
                    m._buffers[key] = fn(buf)

        convert(module, recurse)
        return module

    nn.Module._apply = _apply  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module._apply = original  # type: ignore[method-assign]


def _scopes(state: _State) -> Any:
    """Track the modules whose forward is running (names from ``state.names``, else the class name)."""
    return module_scopes(state.scope, lambda module: state.names.get(id(module), type(module).__name__))


def capture(fn: Callable[..., Any], inputs: Sequence[torch.Tensor], *, names: Optional[Mapping[int, str]] = None) -> Record:
    """Run ``fn(*inputs)`` once on fake tensors and return its closed :class:`Record`; :class:`CaptureError` if it is not one.

    ``inputs`` give shapes, dtypes and devices (their values are not read). ``names`` maps ``id(module)`` to a
    name for the scopes of the record (default: class names). Real tensors the function uses (parameters,
    buffers, closure tensors) are constants, copied when first used.

    Example:
        >>> conv = torch.nn.Conv1d(1, 1, 2, bias=False)
        >>> rec = capture(conv, [torch.zeros(1, 1, 4)], names={id(conv): "conv"})
        >>> [(n.name, n.scope) for n in rec.nodes], len(rec.constants)
        ([('aten.convolution', ('conv',))], 1)
        >>> try:
        ...     capture(lambda x: x.clone().apply_(lambda v: v), [torch.zeros(2)])
        ... except CaptureError as err:
        ...     print(err)
        Tensor.apply_ reads a tensor's values outside torch's operations, where nothing can be recorded
    """
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    fake_mode = FakeTensorMode(allow_non_fake_inputs=True)
    state = _State(fake_mode, dict(names or {}))
    fakes = []
    values = []
    for t in inputs:
        if not isinstance(t, torch.Tensor):
            raise CaptureError(f"inputs must be tensors, got {type(t).__name__}")
        # a fresh tensor per input, so inputs never alias one another in the record
        fake = fake_mode.from_tensor(torch.empty_strided(tuple(t.shape), tuple(t.stride()), dtype=t.dtype, device=t.device))
        fakes.append(fake)
        values.append(state.new_value(fake, fake))
    try:
        with warnings.catch_warnings(), _scopes(state), _module_conversion(state), _Guard(state), fake_mode, _Recorder(state):
            warnings.simplefilter("ignore")
            out = fn(*fakes)
        output = _output(state, out)
    except CaptureError as err:
        raise state.failure or err from None
    except Exception as err:
        raise state.failure or CaptureError(f"the function failed on fake tensors: {first_line(err, with_type=True)}") from err
    if state.failure is not None:
        raise state.failure
    del FakeTensor
    written = {state.meta[v.id].storage for node in state.nodes for v in node.writes}
    constant_storage = {}
    for c in state.constants:
        constant_storage.setdefault(c.storage, set()).add(state.meta[c.value.id].storage)
    mutable = tuple(bool(constant_storage.get(i, set()) & written) for i in range(len(state.storages)))
    return Record(tuple(values), tuple(state.nodes), output, tuple(state.meta), tuple(state.constants), tuple(state.storages), mutable)


def _output(state: _State, out: Any) -> Any:
    if isinstance(out, torch.Tensor):
        value = state.slot.get(id(out))
        if value is None:
            from torch._subclasses.fake_tensor import FakeTensor

            if isinstance(out, FakeTensor):
                raise state.fail("the function returned a tensor computed outside the capture (in another thread or under a "
                                 "disabled dispatch mode)")
            with _disable_current_modes():
                return state._constant(out, "the output")
        return value
    if isinstance(out, (list, tuple)):
        return type(out)(_output(state, o) for o in out) if isinstance(out, list) else tuple(_output(state, o) for o in out)
    if isinstance(out, dict):
        return {k: _output(state, v) for k, v in out.items()}
    return out
