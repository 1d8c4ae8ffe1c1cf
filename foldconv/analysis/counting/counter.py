"""The counting engine: one pass on meta tensors under a dispatch mode, priced by the op table.

:func:`count` runs the model once on ``device="meta"`` tensors (shapes and dtypes, no storage), so it
costs no memory and works for any model size. A model with real weights keeps them: while it runs, its
parameters and buffers are swapped for meta stand-ins (one per tensor object, so ties survive) and put
back afterwards. A ``TorchDispatchMode`` sees every aten op (functional calls and custom
``torch.library`` ops too), prices it with the table in :mod:`~foldconv.analysis.counting.ops` (where
the MAC and FLOP conventions are fixed) and charges it to the innermost module running at that moment.
An op without a cost rule is listed in ``CountReport.unsupported_ops`` with its call count and layers,
never counted as a silent zero.

Conventions beyond the op table:

- **Parameters** are counted once per ``nn.Parameter`` object: a tied weight is charged to the first
  module that owns it (``named_modules`` order) and shows as ``shared`` in the others; trainable means
  ``requires_grad``. The total equals ``sum(p.numel() for p in model.parameters())``.
- **Activations** are the elements of the tensors a layer's ops create: views and in-place ops create
  none (an in-place ReLU shows 0), uninitialised scratch (``aten.empty*``) is not counted. Bytes use each
  tensor's own dtype (max-pool indices are int64) and are also given per dtype. That total is what one
  forward pass writes; the *peak* live bytes are ``peak_activation_bytes`` (see
  :mod:`~foldconv.analysis.counting.memory` for what is counted).
- **Weight bytes** are parameter elements × element size; buffers (running statistics) are separate.
- The model runs in eval mode (restored afterwards), under ``torch.no_grad()`` unless ``backward=True``
  (then autograd records and the backward pass is counted too: :mod:`~foldconv.analysis.counting.backward`).
- **Data-dependent models** (``.item()``, a Python ``if`` on a tensor, ``nonzero`` without a meta
  kernel) cannot run on meta; with ``fallback="real"`` (the default) the model then runs on real CPU
  tensors of the same shapes (meta weights replaced by seeded random ones), and the report says so
  (``device="cpu"``, ``fallback_reason``, and a line of the summary); the figures are then those of
  that one input.

Speed: meta results are remembered instead of running torch's meta kernels again (several are Python
decompositions taking about a millisecond a call): :mod:`~foldconv.analysis.counting.meta_cache`. A recurrent
layer of torch's own (``LSTM``, ``GRU``, ``RNN``) runs on meta as a few ops per time step and layer; its
whole-sequence call, met again with the same signature and cost table (the model counted again), adds what it
added the first time (op counts, FLOPs, activations, the rise of live bytes) and returns outputs of the same
shapes, without running those ops. While another dispatch mode is active (``FlopCounterMode`` around ``count``)
every kernel runs and nothing is taken from memory, so it sees every op.

Example:
    >>> import torch
    >>> rep = count(torch.nn.Conv2d(256, 64, 3, padding=1), (1, 256, 32, 32))
    >>> rep.params, rep.macs, rep.macs == 256 * 64 * 9 * 32 * 32
    (147520, 150994944, True)
"""
from __future__ import annotations

import contextlib
from collections import Counter
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.nn.modules.module import register_module_forward_hook, register_module_forward_pre_hook
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import _disable_current_modes, _get_current_dispatch_mode_stack
from torch.utils._pytree import tree_flatten

from ...capture import DispatchMode
from ...errors import FoldError, fold_error
from ...registry import Registry
from ..fallback import validate_fallback
from . import meta_cache
from .backward import GraphOwners, loss_of
from .inputs import (
    InputLike,
    input_leaves,
    input_specs,
    meta_like,
    model_inputs,
    normalize_input_shapes,
    real_like,
    tensor_attributes,
)
from .memory import LiveBytes, owned_tensors
from .ops import OP_COSTS, Handle, OpInfo, bind_inputs, first_tensor, op_info, zero_cost
from .report import CountReport, LayerCount, UnsupportedOp

__all__ = ["count", "normalize_input_shapes", "ShapeLike"]

Shape = Tuple[int, ...]
ShapeLike = Union[Sequence[int], Sequence[Sequence[int]]]  # what normalize_input_shapes takes
_ROOT = CountReport.ROOT
_UNSEEN = object()

_EMBEDDING = torch.ops.aten.embedding.default
_SCRATCH = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
_KEYS = (("macs", "elementwise_flops"), ("backward_macs", "backward_elementwise_flops"))  # forward, backward


# --------------------------------------------------------------------------------------- the mode


class _Row:
    """A layer's counts while the model runs (frozen into a LayerCount afterwards). Plain dicts, and op
    tables made on a layer's first op: every module gets a row on every count, most never run an op."""

    __slots__ = ("name", "module", "ints", "input_shape", "output_shape", "by_dtype", "ops")

    def __init__(self, name: str, module: nn.Module) -> None:
        self.name = name
        self.module = module
        self.ints: Dict[str, int] = {}
        self.input_shape: Optional[Shape] = None
        self.output_shape: Optional[Shape] = None
        self.by_dtype: Dict[str, int] = {}
        # forward and backward: (op -> calls, op -> MACs, op -> FLOPs), made when needed
        self.ops: List[Optional[Tuple[Dict[str, int], Dict[str, int], Dict[str, int]]]] = [None, None]

    def add(self, key: str, value: int) -> None:
        ints = self.ints
        ints[key] = ints.get(key, 0) + value

    def op_tables(self, backward: bool) -> Tuple[Dict[str, int], Dict[str, int], Dict[str, int]]:
        tables = self.ops[backward]
        if tables is None:
            tables = self.ops[backward] = ({}, {}, {})
        return tables

    @property
    def ran_ops(self) -> bool:
        return self.ops[0] is not None or self.ops[1] is not None

    def freeze(self) -> LayerCount:
        (calls, macs, flops), (b_calls, b_macs, b_flops) = (t or ({}, {}, {}) for t in self.ops)
        return LayerCount(
            name=self.name,
            type=type(self.module).__name__,
            leaf=not self.module._modules,
            **self.ints,
            input_shape=self.input_shape,
            output_shape=self.output_shape,
            activation_bytes_by_dtype=self.by_dtype,
            op_calls=calls,
            op_macs=macs,
            op_flops=flops,
            backward_op_calls=b_calls,
            backward_op_macs=b_macs,
            backward_op_flops=b_flops,
        )


class _CountMode(DispatchMode):
    def __init__(self, types: Dict[str, nn.Module], live: LiveBytes, owners: Optional[GraphOwners], costs: Registry[Handle]) -> None:
        super().__init__()
        self.types = types
        self.costs = costs
        # each overload's cost rule, looked up once per count (a count may bring rules of its own)
        self.handles: Dict[Any, Optional[Handle]] = {}
        self.live = live
        self.owners = owners
        self.in_backward = False
        # An outer mode (FlopCounterMode checking us) must see every op, so it disables the cache.
        self.cache = not _get_current_dispatch_mode_stack()
        self.stack: List[str] = []
        self.rows: Dict[str, _Row] = {}
        self.unsupported: Dict[str, Tuple[int, Dict[str, None]]] = {}

    def row(self, name: str) -> _Row:
        row = self.rows.get(name)
        if row is None:
            row = self.rows[name] = _Row(name, self.types[name])
        return row

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is _EMBEDDING and len(args) > 1 and isinstance(args[1], torch.Tensor) and args[1].is_floating_point():
            # torch 2.14's kernel refuses float ids; older torch's kernel for shapes only does not
            raise RuntimeError(
                f"Expected tensor for argument #1 'indices' to have one of the following scalar types: Long, Int; "
                f"but got {args[1].dtype} instead"
            )
        info = op_info(func)
        out = meta_cache.call(func, args, kwargs, info, cache=self.cache)
        name = info.name
        handle = self.handles.get(func, _UNSEEN)
        if handle is _UNSEEN:
            handle = self.handles[func] = self.costs.find(func)
        if self.stack:
            where = self.stack[-1]
        elif self.in_backward and self.owners is not None:
            where = self.owners.running() or _ROOT
        else:
            where = _ROOT
        row = self.rows.get(where) or self.row(where)
        calls, op_macs, op_flops = row.ops[self.in_backward] or row.op_tables(self.in_backward)
        calls[name] = calls.get(name, 0) + 1
        outputs = tuple(out) if info.multiple else (out,)
        if handle is None:
            count, layers = self.unsupported.get(name, (0, {}))
            layers[where] = None
            self.unsupported[name] = (count + 1, layers)
        else:
            if handle is zero_cost:  # views, copies, constructors: nothing to bind or price
                macs = elementwise = 0
            else:
                try:
                    cost = handle(bind_inputs(func, args, kwargs), outputs)
                    macs, elementwise = int(cost.macs), int(cost.elementwise_flops)
                except Exception as exc:  # a registered rule that breaks is named, not a raw traceback
                    raise fold_error("op", name, f"its cost rule failed: {type(exc).__name__}: {exc}") from exc
            op_macs[name] = op_macs.get(name, 0) + macs
            op_flops[name] = op_flops.get(name, 0) + 2 * macs + elementwise
            mac_key, flop_key = _KEYS[self.in_backward]
            ints = row.ints
            ints[mac_key] = ints.get(mac_key, 0) + macs
            ints[flop_key] = ints.get(flop_key, 0) + elementwise
        self._new_tensors(row, info, name, outputs)
        return out

    def _new_tensors(self, row: _Row, info: OpInfo, name: str, outputs: Tuple[Any, ...]) -> None:
        written = not self.in_backward and name not in _SCRATCH
        for fresh, value in zip(info.fresh, outputs):
            if not fresh:  # a view or an in-place result creates no new tensor
                continue
            for t in (value,) if isinstance(value, torch.Tensor) else tree_flatten(value)[0]:
                if isinstance(t, torch.Tensor):
                    self.live.add(t)
                    if written:
                        numel = t.numel()
                        nbytes = numel * t.element_size()
                        ints = row.ints
                        ints["activation_elements"] = ints.get("activation_elements", 0) + numel
                        ints["activation_bytes"] = ints.get("activation_bytes", 0) + nbytes
                        by_dtype, dtype = row.by_dtype, _dtype_name(t.dtype)
                        by_dtype[dtype] = by_dtype.get(dtype, 0) + nbytes


_DTYPE_NAMES: Dict[torch.dtype, str] = {}


def _dtype_name(dtype: torch.dtype) -> str:
    name = _DTYPE_NAMES.get(dtype)
    if name is None:
        name = _DTYPE_NAMES[dtype] = str(dtype).replace("torch.", "")
    return name


# --------------------------------------------------------------------------------------- helpers


def _shape_of(value: Any) -> Optional[Shape]:
    """The first tensor's shape; None for a nested (ragged) tensor, which has no single shape."""
    if isinstance(value, tuple) and value and isinstance(value[0], torch.Tensor):  # the usual (x,)
        value = value[0]
    t = value if isinstance(value, torch.Tensor) else first_tensor(value)
    return None if t is None or t.is_nested else tuple(t.shape)


@contextlib.contextmanager
def _math_path():
    """torch's fused inference paths off (``TransformerEncoder`` given a padding mask would pack the batch into
    nested tensors, ``MultiheadAttention`` would run one fused kernel): the model runs the composite ops that
    depend on shapes alone, the same on meta and on real tensors, on every device and in training."""
    mha = getattr(torch.backends, "mha", None)
    enabled = getattr(mha, "get_fastpath_enabled", None)
    if enabled is None:  # older torch: no switch (then the fused path needs real tensors and is not taken on meta)
        yield
        return
    before = enabled()
    mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        mha.set_fastpath_enabled(before)


def _meta_as_is(t: torch.Tensor, dtype: Optional[torch.dtype]) -> bool:
    """A meta parameter or buffer already of the dtype to count at runs as it is: a model built on meta
    needs no stand-ins (a copy would only cost time)."""
    return t.is_meta and (dtype is None or not t.is_floating_point() or t.dtype == dtype)


def _reason(exc: Exception, limit: int = 160) -> str:
    line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {line if len(line) <= limit else line[:limit - 3] + '...'}"


def _needs_data(exc: Exception) -> bool:
    """The meta run failed because the model needs values (``.item()``, ``nonzero``), not because of shapes."""
    return "meta" in str(exc).lower() or isinstance(exc, NotImplementedError)


def _run_error(model: nn.Module, what: Tuple[str, Any], exc: Exception, *, on_meta: bool) -> FoldError:
    """One clear FoldError for a model that fails: torch's own first line, and which input was at fault."""
    if on_meta and _needs_data(exc):
        return fold_error(
            "model", type(model).__name__,
            f"cannot run on meta tensors (it needs data; fallback='real' runs it on real CPU tensors): {_reason(exc)}",
        )
    return fold_error(what[0], what[1], f"{type(model).__name__} cannot run on it: {_reason(exc)}")


# torch's recurrent layers call one of these for their whole sequence; on meta tensors it runs as a few ops per time
# step and layer (thousands for a long sequence), each through the counting mode.
_RECURRENT_MODULES = (nn.LSTM, nn.GRU, nn.RNN)
_RECURRENT_CALLS = {torch._VF.lstm, torch._VF.gru, torch._VF.rnn_tanh, torch._VF.rnn_relu}


@dataclass(frozen=True)
class _Record:
    """What one recurrent call added to its layer's row, the rise of live bytes above where it started, and its
    outputs (shape, strides, dtype): enough to add the same again without running it."""

    tables: Tuple[Tuple[Tuple[str, int], ...], ...]  # op calls, MACs, FLOPs: (op, increment)
    ints: Tuple[Tuple[str, int], ...]
    by_dtype: Tuple[Tuple[str, int], ...]
    peak_rise: int
    outputs: Tuple[Tuple[Tuple[int, ...], Tuple[int, ...], torch.dtype], ...]


def _increments(after: Dict[str, int], before: Dict[str, int]) -> Tuple[Tuple[str, int], ...]:
    return tuple((key, value - before.get(key, 0)) for key, value in after.items())


def _add(table: Dict[str, int], increments: Tuple[Tuple[str, int], ...]) -> None:
    for key, value in increments:
        table[key] = table.get(key, 0) + value


class _Recurrent(TorchFunctionMode):
    """Active only inside a recurrent layer of torch's own (LSTM, GRU, RNN): its whole-sequence call, met before
    with the same signature (a model counted again), adds what it added then instead of running its ops again."""

    def __init__(self, run: _Run) -> None:
        super().__init__()
        self.run = run

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _RECURRENT_CALLS:
            return func(*args, **kwargs)
        return self.run.recurrent(func, args, kwargs)


class _Run:
    """One pass of the model under the counting mode (forward, and backward when asked)."""

    def __init__(self, types: Dict[str, nn.Module], names: Dict[nn.Module, str], backward: bool, costs: Registry[Handle]) -> None:
        self.names = names
        self.backward = backward
        self.live = LiveBytes()
        self.owners = GraphOwners() if backward else None
        self.mode = _CountMode(types, self.live, self.owners, costs)
        self.forward_peak = 0
        self.saved: Optional[int] = None
        self.training_peak: Optional[int] = None
        # recurrent calls are remembered for the table of built-in costs only (its version in the key), forward only
        self.replays = not backward and costs is OP_COSTS
        self.recurrent_modes: List[Tuple[nn.Module, _Recurrent]] = []

    def pre_hook(self, module: nn.Module, args: Tuple[Any, ...]) -> None:
        mode, qualified = self.mode, self.names.get(module)
        if qualified is None:  # not a module of the model (the hooks are global)
            return
        if self.owners is not None:  # what the parent built since its last child belongs to the parent
            self.owners.claim(args, mode.stack[-1] if mode.stack else _ROOT)
        row = mode.rows.get(qualified) or mode.row(qualified)
        row.add("calls", 1)
        if row.input_shape is None:
            row.input_shape = _shape_of(args)
        mode.stack.append(qualified)
        if self.replays and mode.cache and type(module) in _RECURRENT_MODULES:
            recurrent = _Recurrent(self)
            recurrent.__enter__()
            self.recurrent_modes.append((module, recurrent))

    def post_hook(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
        mode, qualified = self.mode, self.names.get(module)
        if qualified is None:
            return
        if mode.stack and mode.stack[-1] == qualified:
            mode.stack.pop()
        if self.recurrent_modes and self.recurrent_modes[-1][0] is module:
            self.recurrent_modes.pop()[1].__exit__(None, None, None)
        if self.owners is not None:
            self.owners.claim(output, qualified)
        row = mode.rows[qualified]
        if row.output_shape is None:
            row.output_shape = _shape_of(output)
        if isinstance(output, torch.Tensor):
            row.add("output_elements", output.numel())
        else:
            row.add("output_elements", sum(t.numel() for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor)))

    def recurrent(self, func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
        """A recurrent layer's whole-sequence call: added again from its record, or run and recorded (when what it
        adds is its row's counts and its outputs alone)."""
        mode, live = self.mode, self.live
        signature = meta_cache.signature(tuple(args))
        key = None if signature is None or kwargs else (func, signature, torch.is_grad_enabled(), OP_COSTS.version)
        row = mode.row(mode.stack[-1] if mode.stack else _ROOT)
        record = meta_cache.RECORDS.get(key) if key is not None else None
        if record is not None:
            for table, increments in zip(row.op_tables(False), record.tables):
                _add(table, increments)
            _add(row.ints, record.ints)
            _add(row.by_dtype, record.by_dtype)
            live.peak = max(live.peak, live.live + record.peak_rise)
            with _disable_current_modes():  # made here, not by the model: no op of its
                outputs = tuple(torch.empty_strided(shape, stride, dtype=dtype, device="meta") for shape, stride, dtype in record.outputs)
            for t in outputs:
                live.add(t)
            return outputs
        tables = [dict(t) for t in row.op_tables(False)]
        ints, by_dtype, unsupported = dict(row.ints), dict(row.by_dtype), dict(mode.unsupported)
        rows, start, peak = len(mode.rows), live.live, live.peak
        live.peak = start
        out = func(*args, **kwargs)
        rise, live.peak = live.peak - start, max(peak, live.peak)
        if key is None or not isinstance(out, tuple) or len(mode.rows) != rows or mode.unsupported != unsupported:
            return out
        storages, outputs = set(), []
        for t in out:
            if not (isinstance(t, torch.Tensor) and t.is_meta and t.storage_offset() == 0):
                return out
            storage = t.untyped_storage()
            extent = 1 + sum((size - 1) * stride for size, stride in zip(t.shape, t.stride())) if t.numel() else 0
            if storage._cdata in storages or storage.nbytes() != extent * t.element_size():
                return out  # a view of a larger storage, or two outputs sharing one: rebuilt, they would differ
            storages.add(storage._cdata)
            outputs.append((tuple(t.shape), t.stride(), t.dtype))
        if live.live - start != sum(t.untyped_storage().nbytes() for t in out) or len(meta_cache.RECORDS) >= 10_000:
            return out  # something besides the outputs stayed alive (or enough is remembered)
        meta_cache.RECORDS[key] = _Record(
            tables=tuple(_increments(after, before) for after, before in zip(row.op_tables(False), tables)),
            ints=_increments(row.ints, ints), by_dtype=_increments(row.by_dtype, by_dtype), peak_rise=rise,
            outputs=tuple(outputs),
        )
        return out

    def __call__(self, model: nn.Module, args: Tuple[Any, ...], kwargs: Dict[str, Any], leaves: List[torch.Tensor]) -> None:
        mode = self.mode
        with (torch.enable_grad() if self.backward else torch.no_grad()), _math_path():
            with mode:
                try:
                    out = model(*args, **kwargs)
                finally:  # a layer that raised leaves its mode behind
                    while self.recurrent_modes:
                        self.recurrent_modes.pop()[1].__exit__(None, None, None)
            self.forward_peak = self.live.peak
            if not self.backward:
                return
            self.owners.claim(out, _ROOT)  # type: ignore[union-attr]
            self.saved = self.live.live
            loss = loss_of(out)  # outside the mode: the loss is not part of the model
            seed = torch.ones_like(loss)
            wrt = [t for t in leaves if t.requires_grad and t.is_floating_point()]
            mode.in_backward = True
            with mode:
                grads = torch.autograd.grad(loss, wrt, seed, allow_unused=True)
            self.training_peak = self.live.peak
            del grads, out, loss


def count(
    model: nn.Module,
    input_shape: Optional[InputLike] = None,
    *,
    examples: Any = None,
    dtype: Optional[torch.dtype] = None,
    backward: bool = False,
    fallback: str = "real",
    name: Optional[str] = None,
    op_costs: Optional[Mapping[Any, Handle]] = None,
) -> CountReport:
    """Count parameters, MACs, FLOPs, activations and peak memory of ``model`` on meta tensors.

    Say what goes in with one of (see :mod:`~foldconv.analysis.counting.inputs`):

    - ``input_shape``: the full input shape, batch axis included, e.g. ``(1, 3, 224, 224)``; a list of
      shapes for several positional inputs; ``(shape, dtype)`` specs for non-float inputs, e.g. token
      ids ``((1, 16), torch.long)``;
    - ``examples``: example tensors: one tensor, a tuple of positional arguments (tensors or tuples /
      dicts of them) or a dict of keyword arguments. Only their shapes, dtypes and strides are used,
      unless the model needs data (below).

    ``dtype`` casts floating parameters, buffers and inputs (for bytes at another precision); by default
    parameters keep theirs, examples theirs, and shapes take the first floating parameter's dtype.
    ``backward=True`` also counts the backward pass of ``loss = out.sum()`` (per layer and in total) and
    the memory it needs (:mod:`~foldconv.analysis.counting.backward`). ``fallback``: when the model cannot
    run on meta because it needs data, ``"real"`` runs it on real CPU tensors of the same shapes and says so
    on the report; ``"error"`` raises a FoldError naming ``model``. A model that cannot run on the given
    inputs raises a FoldError naming ``input_shape`` (or ``examples``) with torch's message. The model
    itself is not modified. ``op_costs``: cost rules ``{op: handle(inputs, outputs) -> OpCost}`` for this
    count only (a ``torch.library`` custom op, or a different price for a built-in one), consulted before
    the table :data:`~foldconv.analysis.counting.ops.OP_COSTS`, which stays as it is. Conventions: see the
    module docstring.

    Args:
        model: the network, with real or meta weights (left as it was).
        input_shape: the input's full shape (batch included), a list of shapes, or ``(shape, dtype)`` specs.
        examples: example inputs instead of ``input_shape``.
        dtype: a floating dtype to count parameters, buffers and inputs at.
        backward: also count the backward pass of ``out.sum()``.
        fallback: ``"real"`` or ``"error"``, for a model that cannot run on meta tensors.
        name: the model's label on the report (default: its class name).
        op_costs: per-call cost rules ``{op, overload, custom op or "ns::name": handle}``.

    Returns:
        A :class:`CountReport`: totals, per-layer rows and views, the ops it could not price.

    Raises:
        FoldError: naming ``model`` (not a module, or needs data under ``fallback="error"``), ``input_shape`` or
        ``examples`` (malformed, or the model cannot run on them), ``dtype``, ``backward``, ``fallback``, ``name``
        or ``op_costs``.

    Example:
        >>> import torchvision
        >>> with torch.device("meta"):
        ...     net = torchvision.models.resnet18()
        >>> rep = count(net, (1, 3, 224, 224))
        >>> rep.params, rep.macs, rep.unsupported_ops
        (11689512, 1814073344, ())
        >>> rep.layer("conv1").macs, rep.layer("conv1").output_shape
        (118013952, (1, 64, 112, 112))
        >>> emb = torch.nn.Sequential(torch.nn.Embedding(100, 8), torch.nn.Linear(8, 2))
        >>> count(emb, ((4, 16), torch.long)).macs
        1024
        >>> count(emb, examples=torch.randint(0, 100, (4, 16))).macs
        1024
        >>> class Sort(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x.sort(-1).values
        >>> count(Sort(), (2, 8)).unsupported_ops[0].op
        'sort'
        >>> from foldconv.analysis.counting import OpCost
        >>> count(Sort(), (2, 8), op_costs={torch.ops.aten.sort: lambda inputs, outputs: OpCost(0, 3 * inputs[0].numel())}).flops
        48
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise fold_error("dtype", dtype, "must be a floating torch.dtype such as torch.float16")
    if not isinstance(backward, bool):
        raise fold_error("backward", backward, "must be True or False")
    validate_fallback(fallback)
    costs = OP_COSTS.with_overrides(op_costs)
    if name is not None and not isinstance(name, str):
        raise fold_error("name", name, "must be a string (the model's label) or None")
    if input_shape is not None:
        input_specs(input_shape)  # validated before anything runs

    names: Dict[nn.Module, str] = {}
    for qualified, module in model.named_modules():
        names.setdefault(module, qualified or _ROOT)
    types = {n: m for m, n in names.items()}
    owned = owned_tensors(names, dtype)
    # One stand-in per tensor object, so tied weights stay tied while the model runs on meta.
    # (torch.func.functional_call is not used: with a module registered under two names it restores
    # the wrong tensor and leaves a meta weight behind.)
    originals: Dict[int, torch.Tensor] = {}
    swaps: List[Tuple[Dict[str, Any], str, torch.Tensor]] = []
    for module in names:
        for slots in (module._parameters, module._buffers):
            for key, tensor in slots.items():
                if tensor is not None:
                    originals.setdefault(id(tensor), tensor)
                    swaps.append((slots, key, tensor))
    input_dtype = dtype
    if input_dtype is None and examples is None:
        input_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    what = ("input_shape", input_shape) if examples is None else ("examples", type(examples).__name__)

    def run(real: bool) -> _Run:
        generator = torch.Generator().manual_seed(0)
        stand_ins = {
            i: real_like(t, dtype, generator) if real else t if _meta_as_is(t, dtype) else meta_like(t, dtype)
            for i, t in originals.items()
        }
        args, kwargs = model_inputs(input_shape, examples=examples, dtype=input_dtype, real=real)
        leaves = list(stand_ins.values()) + list(input_leaves(args, kwargs))
        attributes = tensor_attributes(names, generator if real else None)
        runner = _Run(types, names, backward, costs)
        training = {m: True for m in names if m.training}  # eval() only when needed: it recurses through every module
        # Two global hooks (they ignore modules outside the model) cost less than two per module.
        handles = [register_module_forward_pre_hook(runner.pre_hook), register_module_forward_hook(runner.post_hook)]
        try:
            if training:
                model.eval()
            for slots, key, tensor in swaps:
                slots[key] = stand_ins[id(tensor)]
            for module, attribute, _, real_value in attributes:
                module.__dict__[attribute] = real_value
            runner(model, args, kwargs, leaves)
        finally:
            for module, attribute, value, _ in attributes:
                module.__dict__[attribute] = value
            for slots, key, tensor in swaps:
                slots[key] = tensor
            for handle in handles:
                handle.remove()
            for module, flag in training.items():
                module.training = flag  # per module: train() would recurse into every child again
        return runner

    reason = None
    try:
        runner = run(real=False)
    except FoldError:
        raise
    except Exception as exc:  # a model that cannot run gets one clear message, or a run on real tensors
        if fallback == "error" or not _needs_data(exc):
            raise _run_error(model, what, exc, on_meta=True) from exc
        reason = _reason(exc)
    if reason is not None:
        try:
            runner = run(real=True)
        except FoldError:
            raise
        except Exception as exc:
            raise _run_error(model, what, exc, on_meta=False) from exc

    mode = runner.mode
    for qualified, counts in owned.items():
        row = mode.row(qualified)
        for key, value in counts.items():
            row.add(key, value)
    # Rows that did nothing and own nothing (pure containers) would only add noise.
    layers = tuple(
        row.freeze() for row in mode.rows.values() if not row.module._modules or row.ran_ops or row.name in owned
    )
    totals = sum(owned.values(), Counter())
    unsupported = tuple(
        UnsupportedOp(op, calls, tuple(layers_)) for op, (calls, layers_) in sorted(mode.unsupported.items())
    )
    specs = input_specs(input_shape) if examples is None else None
    leaves = input_leaves(*model_inputs(input_shape, examples=examples, dtype=input_dtype))
    return CountReport(
        model=name or type(model).__name__,
        input_shapes=tuple(tuple(t.shape) for t in leaves) if specs is None else tuple(s.shape for s in specs),
        input_dtypes=tuple(str(t.dtype).replace("torch.", "") for t in leaves),
        layers=layers,
        params=totals["params"],
        trainable=totals["trainable"],
        frozen=totals["frozen"],
        weight_bytes=totals["weight_bytes"],
        buffer_bytes=totals["buffer_bytes"],
        unsupported_ops=unsupported,
        device="meta" if reason is None else "cpu",
        fallback_reason=reason,
        backward=backward,
        peak_activation_bytes=runner.forward_peak,
        saved_activation_bytes=runner.saved,
        peak_training_bytes=runner.training_peak,
        modules=types,
        output_shapes={row.name: row.output_shape for row in mode.rows.values() if row.ints.get("calls")},
    )
