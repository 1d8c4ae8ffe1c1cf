"""The counting engine: one forward pass on meta tensors under a dispatch mode, priced by the op table.

:func:`count` runs the model once on ``device="meta"`` tensors (shapes and dtypes, no storage), so it
costs no memory and works for any model size. A model with real weights keeps them: while it runs, its
parameters and buffers are swapped for meta stand-ins (one per tensor object, so ties survive) and put
back afterwards. A ``TorchDispatchMode`` sees every aten op (functional calls too), prices it with the
table in :mod:`~foldconv.analysis.counting.ops` (where the MAC and FLOP conventions are fixed) and
charges it to the innermost module running at that moment. An op without a cost rule is listed in
``CountReport.unsupported_ops`` with its call count, never counted as a silent zero.

Conventions beyond the op table:

- **Parameters** are counted once per ``nn.Parameter`` object: a tied weight is charged to the first
  module that owns it (``named_modules`` order) and shows as ``shared`` in the others; trainable means
  ``requires_grad``. The total equals ``sum(p.numel() for p in model.parameters())``.
- **Activations** are the elements of the tensors a layer's ops create: views and in-place ops create
  none (an in-place ReLU shows 0), uninitialised scratch (``aten.empty*``) is not counted. Bytes use each
  tensor's own dtype (max-pool indices are int64) and are also given per dtype. The total is what one
  forward pass writes, not the peak memory.
- **Weight bytes** are parameter elements × element size; buffers (running statistics) are separate.
- The model runs in eval mode (restored afterwards) under ``torch.no_grad()``.

Example:
    >>> import torch
    >>> rep = count(torch.nn.Conv2d(256, 64, 3, padding=1), (1, 256, 32, 32))
    >>> rep.params, rep.macs, rep.macs == 256 * 64 * 9 * 32 * 32
    (147520, 150994944, True)
"""
from __future__ import annotations

import numbers
from collections import Counter
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ...errors import FoldError, fold_error
from .ops import bind_inputs, first_tensor, op_handle
from .report import ROOT, CountReport, LayerCount, UnsupportedOp

__all__ = ["count", "normalize_input_shapes", "ShapeLike"]

Shape = Tuple[int, ...]
ShapeLike = Union[Sequence[int], Sequence[Sequence[int]]]

_SCRATCH = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}
_SHAPE_RULE = "must be a shape such as (1, 3, 224, 224) (batch axis included) or a list of such shapes"


def _is_int(value: Any) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def normalize_input_shapes(input_shape: ShapeLike) -> Tuple[Shape, ...]:
    """One full input shape ``(N, C, H, W)`` or a sequence of them (one per positional input), validated.

    Example:
        >>> normalize_input_shapes((1, 3, 8, 8)), normalize_input_shapes([(2, 4), [2, 5]])
        (((1, 3, 8, 8),), ((2, 4), (2, 5)))
    """
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, (str, bytes)) or len(input_shape) == 0:
        raise fold_error("input_shape", input_shape, _SHAPE_RULE)
    shapes = [input_shape] if all(_is_int(s) for s in input_shape) else list(input_shape)
    result = []
    for shape in shapes:
        if isinstance(shape, torch.Size):
            shape = tuple(shape)
        if (
            not isinstance(shape, Sequence)
            or isinstance(shape, (str, bytes))
            or len(shape) == 0
            or not all(_is_int(s) and s >= 1 for s in shape)
        ):
            raise fold_error("input_shape", input_shape, "every shape must be a non-empty sequence of integers >= 1")
        result.append(tuple(int(s) for s in shape))
    return tuple(result)


class _Row:
    """A layer's counts while the model runs (frozen into a LayerCount afterwards)."""

    def __init__(self, name: str, module: nn.Module) -> None:
        self.fields: Dict[str, Any] = {"name": name, "type": type(module).__name__, "leaf": not any(True for _ in module.children())}
        self.ints: Counter = Counter()
        self.shapes: Dict[str, Optional[Shape]] = {"input_shape": None, "output_shape": None}
        self.by_dtype: Counter = Counter()
        self.op_calls: Counter = Counter()
        self.op_macs: Counter = Counter()
        self.op_flops: Counter = Counter()

    def freeze(self) -> LayerCount:
        return LayerCount(
            **self.fields,
            **self.ints,
            **self.shapes,
            activation_bytes_by_dtype=dict(self.by_dtype),
            op_calls=dict(self.op_calls),
            op_macs=dict(self.op_macs),
            op_flops=dict(self.op_flops),
        )


class _CountMode(TorchDispatchMode):
    def __init__(self, types: Dict[str, nn.Module]):
        super().__init__()
        self.types = types
        self.stack: List[str] = []
        self.rows: Dict[str, _Row] = {}
        self.unsupported: Dict[str, Tuple[int, Dict[str, None]]] = {}

    def row(self, name: str) -> _Row:
        if name not in self.rows:
            self.rows[name] = _Row(name, self.types[name])
        return self.rows[name]

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        where = self.stack[-1] if self.stack else ROOT
        row = self.row(where)
        row.op_calls[name] += 1
        handle = op_handle(func)
        if handle is None:
            calls, layers = self.unsupported.get(name, (0, {}))
            layers[where] = None
            self.unsupported[name] = (calls + 1, layers)
        else:
            returns = func._schema.returns
            outputs = tuple(out) if isinstance(out, (tuple, list)) and len(returns) > 1 else (out,)
            try:
                cost = handle(bind_inputs(func, args, kwargs), outputs)
                macs, elementwise = int(cost.macs), int(cost.elementwise_flops)
            except Exception as exc:  # a registered rule that breaks is named, not a raw traceback
                raise fold_error("op", name, f"its cost rule failed: {type(exc).__name__}: {exc}") from exc
            row.op_macs[name] += macs
            row.op_flops[name] += 2 * macs + elementwise
            row.ints["macs"] += macs
            row.ints["elementwise_flops"] += elementwise
        if name not in _SCRATCH:
            self._activations(row, func, out)
        return out

    @staticmethod
    def _activations(row: _Row, func: Any, out: Any) -> None:
        returns = func._schema.returns
        outs = out if isinstance(out, (tuple, list)) and len(returns) > 1 else (out,)
        for ret, value in zip(returns, outs):
            if ret.alias_info is not None:  # a view or an in-place result creates no new tensor
                continue
            for t in tree_flatten(value)[0]:
                if isinstance(t, torch.Tensor):
                    nbytes = t.numel() * t.element_size()
                    row.ints["activation_elements"] += t.numel()
                    row.ints["activation_bytes"] += nbytes
                    row.by_dtype[str(t.dtype).replace("torch.", "")] += nbytes


def _shape_of(value: Any) -> Optional[Shape]:
    t = first_tensor(value)
    return tuple(t.shape) if t is not None else None


def _meta_like(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    target = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
    meta = torch.empty_like(t, device="meta", dtype=target)
    if isinstance(t, nn.Parameter):
        meta = nn.Parameter(meta, requires_grad=t.requires_grad)
    return meta


def _owned(names: Dict[nn.Module, str], dtype: Optional[torch.dtype]) -> Dict[str, Counter]:
    """Parameters and buffers per module, each tensor object charged once, to the first module owning it."""
    seen: set = set()
    owned: Dict[str, Counter] = {}

    def nbytes(t: torch.Tensor) -> int:
        return t.numel() * (dtype.itemsize if dtype is not None and t.is_floating_point() else t.element_size())

    for module, qualified in names.items():
        c: Counter = Counter()
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                c["shared"] += p.numel()
                continue
            seen.add(id(p))
            c["params"] += p.numel()
            c["weight_bytes"] += nbytes(p)
            c["trainable" if p.requires_grad else "frozen"] += p.numel()
        for b in module.buffers(recurse=False):
            if id(b) not in seen:
                seen.add(id(b))
                c["buffer_bytes"] += nbytes(b)
        if c:
            owned[qualified] = c
    return owned


def _run_error(model: nn.Module, shapes: Tuple[Shape, ...], exc: Exception) -> FoldError:
    """One clear FoldError for a model that fails: torch's own first line, and which input was at fault."""
    message = (str(exc).strip().splitlines() or [""])[0]
    reason = f"{type(exc).__name__}: {message}"
    if "meta" in message.lower() or isinstance(exc, NotImplementedError):  # needs data (.item(), ...)
        return fold_error("model", type(model).__name__, f"cannot run on meta tensors (it needs data): {reason}")
    shape = shapes[0] if len(shapes) == 1 else shapes
    return fold_error("input_shape", shape, f"{type(model).__name__} cannot run on it: {reason}")


def count(
    model: nn.Module,
    input_shape: ShapeLike,
    *,
    dtype: Optional[torch.dtype] = None,
    name: Optional[str] = None,
) -> CountReport:
    """Count parameters, MACs, FLOPs, activations and weight bytes of ``model`` on meta tensors.

    ``input_shape`` is the full input shape, batch axis included, e.g. ``(1, 3, 224, 224)``; give a list
    of shapes for a model with several positional inputs. ``dtype`` casts floating parameters, buffers and
    inputs (for bytes at another precision); by default parameters keep theirs and inputs take the first
    floating parameter's dtype. The model itself is not modified. A model that cannot run on the shape
    raises a FoldError naming ``input_shape`` with torch's message. Conventions: see the module docstring.

    Example:
        >>> import torchvision
        >>> with torch.device("meta"):
        ...     net = torchvision.models.resnet18()
        >>> rep = count(net, (1, 3, 224, 224))
        >>> rep.params, rep.macs, rep.unsupported_ops
        (11689512, 1814073344, ())
        >>> rep.layer("conv1").macs, rep.layer("conv1").output_shape
        (118013952, (1, 64, 112, 112))
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    shapes = normalize_input_shapes(input_shape)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise fold_error("dtype", dtype, "must be a floating torch.dtype such as torch.float16")
    if name is not None and not isinstance(name, str):
        raise fold_error("name", name, "must be a string (the model's label) or None")

    names: Dict[nn.Module, str] = {}
    for qualified, module in model.named_modules():
        names.setdefault(module, qualified or ROOT)
    types = {n: m for m, n in names.items()}
    owned = _owned(names, dtype)

    # One meta stand-in per tensor object, so tied weights stay tied while the model runs on meta.
    # (torch.func.functional_call is not used: with a module registered under two names it restores
    # the wrong tensor and leaves a meta weight behind.)
    stand_ins: Dict[int, torch.Tensor] = {}
    swaps: List[Tuple[Dict[str, Any], str, torch.Tensor]] = []
    for module in names:
        for slots in (module._parameters, module._buffers):
            for key, tensor in slots.items():
                if tensor is not None:
                    stand_ins.setdefault(id(tensor), _meta_like(tensor, dtype))
                    swaps.append((slots, key, tensor))
    input_dtype = dtype
    if input_dtype is None:
        input_dtype = next((p.dtype for p in model.parameters() if p.is_floating_point()), torch.float32)
    inputs = tuple(torch.empty(shape, device="meta", dtype=input_dtype) for shape in shapes)
    mode = _CountMode(types)

    def pre_hook(module: nn.Module, args: Tuple[Any, ...]) -> None:
        qualified = names.get(module, ROOT)
        row = mode.row(qualified)
        row.ints["calls"] += 1
        if row.shapes["input_shape"] is None:
            row.shapes["input_shape"] = _shape_of(args)
        mode.stack.append(qualified)

    def post_hook(module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
        qualified = names.get(module, ROOT)
        if mode.stack and mode.stack[-1] == qualified:
            mode.stack.pop()
        row = mode.rows[qualified]
        if row.shapes["output_shape"] is None:
            row.shapes["output_shape"] = _shape_of(output)
        row.ints["output_elements"] += sum(t.numel() for t in tree_flatten(output)[0] if isinstance(t, torch.Tensor))

    handles = []
    training = {m: m.training for m in names}
    try:
        for module in names:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
        model.eval()
        for slots, key, tensor in swaps:
            slots[key] = stand_ins[id(tensor)]
        with torch.no_grad(), mode:
            model(*inputs)
    except FoldError:
        raise
    except Exception as exc:  # a model that cannot run gets one clear message
        raise _run_error(model, shapes, exc) from exc
    finally:
        for slots, key, tensor in swaps:
            slots[key] = tensor
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.train(flag)

    for qualified, counts in owned.items():
        mode.row(qualified).ints.update(counts)
    # Rows that did nothing and own nothing (pure containers) would only add noise.
    layers = tuple(
        row.freeze() for row in mode.rows.values() if row.fields["leaf"] or row.op_calls or row.fields["name"] in owned
    )
    totals = sum(owned.values(), Counter())
    unsupported = tuple(
        UnsupportedOp(op, calls, tuple(layers_)) for op, (calls, layers_) in sorted(mode.unsupported.items())
    )
    return CountReport(
        model=name or type(model).__name__,
        input_shapes=shapes,
        layers=layers,
        params=totals["params"],
        trainable=totals["trainable"],
        frozen=totals["frozen"],
        weight_bytes=totals["weight_bytes"],
        buffer_bytes=totals["buffer_bytes"],
        unsupported_ops=unsupported,
        modules=types,
    )
