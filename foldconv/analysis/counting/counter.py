"""Parameters, MACs, FLOPs and memory of a model, per layer and in total, counted on meta tensors.

:func:`count` runs the model once on ``device="meta"`` tensors (shapes and dtypes, no storage), so it
costs no memory and works for any model size. A model with real weights keeps them: while it runs, its
parameters and buffers are swapped for meta stand-ins (one per tensor object, so ties survive) and put
back afterwards. A ``TorchDispatchMode`` sees every aten op (functional calls too) and charges it to the
innermost module running at that moment.

Conventions (the numbers are only as meaningful as these, so they are fixed here and nowhere else):

- **MAC** = one multiply-add of a matrix product or a convolution: aten ``mm``, ``addmm``, ``bmm``,
  ``baddbmm``, ``mv``, ``addmv``, ``dot``, ``_scaled_mm``, ``convolution`` (and its backend variants) and
  fused scaled-dot-product attention, which counts as its two matrix products ``Q·Kᵀ`` and ``P·V``
  (softmax is not a MAC). Unfused attention (torchvision's ViT, Swin and MaxViT on meta tensors) reaches
  the dispatcher as ``bmm``, so it is counted the same way. For every op that
  ``torch.utils.flop_counter.FlopCounterMode`` knows, MACs are exactly its FLOPs / 2.
- **Bias** is not a MAC: it costs 1 FLOP per output element (conv, ``addmm``, ``baddbmm``).
- **FLOPs** = 2·MACs + elementwise FLOPs, where: arithmetic and activations (add, mul, ReLU, GELU,
  SiLU, sigmoid, ...) cost 1 per output element; batch norm 2 per element (inference: one scale, one
  shift); layer/group norm 5 per element (mean, centre, variance, normalise, affine); softmax 3 per
  element (exp, sum, divide); max/avg pooling one per window element per output (compare or add);
  adaptive pooling and reductions (mean, sum, amax) one per input element. Data movement (views,
  copies, ``cat``, pad, permute, index, masked_fill) costs 0.
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

import math
import numbers
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from ...errors import FoldError, fold_error
from ..._tables import markdown_table

__all__ = [
    "LayerCount",
    "CountReport",
    "count",
    "op_cost",
    "MAC_OPS",
    "ROOT",
    "normalize_input_shapes",
]

ROOT = "(root)"
Shape = Tuple[int, ...]
ShapeLike = Union[Sequence[int], Sequence[Sequence[int]]]

_CONV_OPS = {
    "convolution",
    "_convolution",
    "convolution_overrideable",
    "_slow_conv2d_forward",
    "cudnn_convolution",
    "mkldnn_convolution",
    "slow_conv3d_forward",
    "slow_conv_dilated2d",
    "slow_conv_dilated3d",
    "thnn_conv2d",
}
# Attention ops whose q/k/v are laid out (B, H, L, E) or (B, L, H, E).
_SDPA_BHLE = {
    "_scaled_dot_product_flash_attention",
    "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention",
    "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_fused_attention_overrideable",
}
_SDPA_BLHE = {"_flash_attention_forward", "_efficient_attention_forward"}
MAC_OPS = frozenset(
    {"mm", "addmm", "bmm", "baddbmm", "mv", "addmv", "dot", "_scaled_mm"} | _CONV_OPS | _SDPA_BHLE | _SDPA_BLHE
)

_ONE_PER_ELEMENT = {
    "add", "sub", "rsub", "mul", "div", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "pow", "reciprocal",
    "relu", "relu6", "hardtanh", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
    "leaky_relu", "elu", "mish", "softplus", "clamp", "clamp_min", "clamp_max", "maximum", "minimum",
    "where", "erf", "lerp", "addcmul", "addcdiv", "prelu", "_prelu_kernel", "glu",
}
_BATCH_NORM = {
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "cudnn_batch_norm", "miopen_batch_norm", "batch_norm",
}
_OTHER_NORM = {"native_layer_norm", "native_group_norm", "_fused_rms_norm"}
_SOFTMAX = {"_softmax", "softmax", "_safe_softmax", "_log_softmax", "log_softmax"}
_WINDOW_POOL = {
    "max_pool1d", "max_pool2d", "max_pool3d", "max_pool2d_with_indices", "max_pool3d_with_indices",
    "avg_pool1d", "avg_pool2d", "avg_pool3d",
}
_INPUT_REDUCE = {
    "mean", "sum", "amax", "amin", "max", "min", "var", "std", "var_mean", "std_mean", "logsumexp",
    "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d", "adaptive_max_pool2d",
    "adaptive_max_pool3d",
}
_SCRATCH = {"empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided"}


def tree_leaves(tree: Any) -> List[Any]:
    """Leaves of a pytree (torch < 2.2 has no ``tree_leaves``; ``tree_flatten`` exists in every 2.x)."""
    return tree_flatten(tree)[0]


def _numel(t: Any) -> int:
    return t.numel() if isinstance(t, torch.Tensor) else 0


def _first_tensor(out: Any) -> Optional[torch.Tensor]:
    for leaf in tree_leaves(out):
        if isinstance(leaf, torch.Tensor):
            return leaf
    return None


def _conv_macs(args: Sequence[Any], out: Any, name: str) -> int:
    x, w = args[0], args[1]
    transposed = bool(args[6]) if name in ("convolution", "_convolution", "convolution_overrideable") else False
    y = _first_tensor(out)
    # A transposed conv does its work at every *input* position, a plain one at every output position.
    spatial = x.shape[2:] if transposed else y.shape[2:]
    return x.shape[0] * math.prod(w.shape) * math.prod(spatial)


def _attention_macs(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads_second: bool) -> int:
    if heads_second:  # (B, H, L, E)
        b, h, lq, e = q.shape
        s, ev = k.shape[-2], v.shape[-1]
    else:  # (B, L, H, E)
        b, lq, h, e = q.shape
        s, ev = k.shape[1], v.shape[-1]
    return b * h * lq * s * e + b * h * lq * s * ev


def _window(args: Sequence[Any], dims: int) -> int:
    kernel = list(args[1]) if len(args) > 1 else [1]
    if len(kernel) == 1:
        kernel = kernel * dims
    return math.prod(kernel)


def op_cost(func: Any, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> Tuple[int, int]:
    """``(macs, elementwise_flops)`` of one aten op call, by the module's conventions.

    ``flops`` of the call is ``2 * macs + elementwise_flops``.

    Example:
        >>> a, b = torch.empty(4, 5, device="meta"), torch.empty(5, 6, device="meta")
        >>> op_cost(torch.ops.aten.mm.default, (a, b), {}, torch.mm(a, b))
        (120, 0)
        >>> bias = torch.empty(6, device="meta")
        >>> op_cost(torch.ops.aten.addmm.default, (bias, a, b), {}, torch.addmm(bias, a, b))
        (120, 24)
    """
    name = func.overloadpacket.__name__
    y = _first_tensor(out)
    n_out = _numel(y)
    if name in _CONV_OPS:
        bias = args[2] if len(args) > 2 and name in ("convolution", "_convolution", "convolution_overrideable") else None
        if name == "_slow_conv2d_forward":
            bias = args[3] if len(args) > 3 else kwargs.get("bias")
        return _conv_macs(args, out, name), (n_out if isinstance(bias, torch.Tensor) else 0)
    if name in ("mm", "_scaled_mm"):
        a, b = args[0], args[1]
        return a.shape[0] * a.shape[1] * b.shape[1], 0
    if name == "addmm":
        a, b = args[1], args[2]
        return a.shape[0] * a.shape[1] * b.shape[1], (n_out if kwargs.get("beta", 1) != 0 else 0)
    if name == "bmm":
        a, b = args[0], args[1]
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], 0
    if name == "baddbmm":
        a, b = args[1], args[2]
        return a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2], (n_out if kwargs.get("beta", 1) != 0 else 0)
    if name == "mv":
        return args[0].shape[0] * args[0].shape[1], 0
    if name == "addmv":
        return args[1].shape[0] * args[1].shape[1], n_out
    if name == "dot":
        return args[0].shape[0], 0
    if name in _SDPA_BHLE:
        return _attention_macs(args[0], args[1], args[2], True), 0
    if name in _SDPA_BLHE:
        return _attention_macs(args[0], args[1], args[2], False), 0
    base = name[:-1] if name.endswith("_") and not name.startswith("_") else name
    if base in _ONE_PER_ELEMENT:
        return 0, n_out
    if base in _BATCH_NORM:
        return 0, 2 * n_out
    if base in _OTHER_NORM:
        return 0, 5 * n_out
    if base in _SOFTMAX:
        return 0, 3 * n_out
    if base in _WINDOW_POOL:
        dims = max(y.dim() - 2, 1) if y is not None else 1
        return 0, n_out * _window(args, dims)
    if base in _INPUT_REDUCE:
        return 0, _numel(args[0])
    return 0, 0


@dataclass
class LayerCount:
    """Counts of one module: its own parameters and the ops it ran itself (not those of its children).

    A container's row holds only the ops in its own ``forward`` (residual adds, flatten, functional
    calls); its children have their own rows. ``calls`` is how often it ran; MACs, FLOPs and activations
    are summed over calls, ``input_shape``/``output_shape`` are from the first call.
    """

    name: str
    type: str
    leaf: bool
    calls: int = 0
    params: int = 0
    trainable: int = 0
    frozen: int = 0
    shared: int = 0
    weight_bytes: int = 0
    buffer_bytes: int = 0
    macs: int = 0
    elementwise_flops: int = 0
    activation_elements: int = 0
    activation_bytes: int = 0
    output_elements: int = 0
    input_shape: Optional[Shape] = None
    output_shape: Optional[Shape] = None
    activation_bytes_by_dtype: Dict[str, int] = field(default_factory=dict)
    op_calls: Dict[str, int] = field(default_factory=dict)
    op_macs: Dict[str, int] = field(default_factory=dict)
    op_flops: Dict[str, int] = field(default_factory=dict)

    @property
    def flops(self) -> int:
        """``2 * macs + elementwise_flops``."""
        return 2 * self.macs + self.elementwise_flops

    def row(self) -> Dict[str, Any]:
        """The table row (flat, printable)."""
        return {
            "layer": self.name,
            "type": self.type,
            "calls": self.calls,
            "input_shape": self.input_shape,
            "output_shape": self.output_shape,
            "params": self.params,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "shared": self.shared,
            "macs": self.macs,
            "flops": self.flops,
            "activation_elements": self.activation_elements,
            "activation_bytes": self.activation_bytes,
            "weight_bytes": self.weight_bytes,
            "buffer_bytes": self.buffer_bytes,
        }


_SUMMED = (
    "calls", "params", "trainable", "frozen", "shared", "macs", "flops", "activation_elements",
    "activation_bytes", "weight_bytes", "buffer_bytes",
)


def _group(rows: Iterable[Dict[str, Any]], key: str, label: str) -> List[Dict[str, Any]]:
    groups: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        g = groups.setdefault(row[key], {label: row[key], "layers": 0, **{k: 0 for k in _SUMMED}})
        g["layers"] += 1
        for k in _SUMMED:
            g[k] += row[k]
    return list(groups.values())


@dataclass
class CountReport:
    """What :func:`count` found: one :class:`LayerCount` per module that owns parameters or ran ops.

    Example:
        >>> m = torch.nn.Sequential(torch.nn.Linear(10, 20), torch.nn.ReLU(), torch.nn.Linear(20, 2))
        >>> rep = count(m, (4, 10))
        >>> rep.params == sum(p.numel() for p in m.parameters()), rep.macs
        (True, 960)
        >>> [r["type"] for r in rep.by_type()]
        ['Linear', 'ReLU']
    """

    model: str
    input_shapes: Tuple[Shape, ...]
    layers: List[LayerCount]
    params: int
    trainable: int
    frozen: int
    weight_bytes: int
    buffer_bytes: int
    modules: Dict[str, nn.Module] = field(default_factory=dict, repr=False, compare=False)

    @property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @property
    def flops(self) -> int:
        """``2 * macs + elementwise FLOPs`` (see the module docstring for what an elementwise FLOP is)."""
        return sum(layer.flops for layer in self.layers)

    @property
    def activation_elements(self) -> int:
        return sum(layer.activation_elements for layer in self.layers)

    @property
    def activation_bytes(self) -> int:
        return sum(layer.activation_bytes for layer in self.layers)

    @property
    def activation_bytes_by_dtype(self) -> Dict[str, int]:
        total: Counter = Counter()
        for layer in self.layers:
            total.update(layer.activation_bytes_by_dtype)
        return dict(sorted(total.items()))

    @property
    def macs_by_op(self) -> Dict[str, int]:
        """MACs per aten op (``convolution``, ``addmm``, ``bmm``, ...), the view FlopCounterMode gives."""
        total: Counter = Counter()
        for layer in self.layers:
            total.update(layer.op_macs)
        return {k: v for k, v in sorted(total.items()) if v}

    def layer(self, name: str) -> LayerCount:
        """The row of one module by its qualified name (``ROOT`` for the model itself)."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise fold_error("name", name, f"is not a counted layer of {self.model}")

    def conv_layers(self) -> Iterable[Tuple[LayerCount, nn.Module]]:
        """``(row, module)`` for every ``nn.Conv1d/2d/3d`` that ran (so its input shape is known), in order."""
        for layer in self.layers:
            module = self.modules.get(layer.name)
            if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Conv3d)) and layer.input_shape is not None:
                yield layer, module

    def totals(self) -> Dict[str, Any]:
        """One summary row for the whole model."""
        return {
            "model": self.model,
            "input_shape": self.input_shapes[0] if len(self.input_shapes) == 1 else self.input_shapes,
            "params": self.params,
            "trainable": self.trainable,
            "frozen": self.frozen,
            "macs": self.macs,
            "flops": self.flops,
            "activation_elements": self.activation_elements,
            "activation_bytes": self.activation_bytes,
            "weight_bytes": self.weight_bytes,
            "buffer_bytes": self.buffer_bytes,
        }

    def rows(self) -> List[Dict[str, Any]]:
        """Per-layer rows in execution order (modules that never ran but own parameters come last)."""
        return [layer.row() for layer in self.layers]

    def by_module(self, depth: int = 1) -> List[Dict[str, Any]]:
        """Rows summed over every module subtree at ``depth`` (``depth=1``: ``layer1``, ``layer2``, ...).

        Example:
            >>> m = torch.nn.Sequential(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()))
            >>> [(r["module"], r["macs"]) for r in count(m, (1, 2)).by_module(1)]
            [('0', 6)]
        """
        if isinstance(depth, bool) or not isinstance(depth, numbers.Integral) or depth < 1:
            raise fold_error("depth", depth, "must be an integer >= 1")
        rows = []
        for row in self.rows():
            parts = row["layer"].split(".")
            rows.append({**row, "module": row["layer"] if row["layer"] == ROOT else ".".join(parts[:depth])})
        return _group(rows, "module", "module")

    def by_type(self) -> List[Dict[str, Any]]:
        """Rows summed per module class (Conv2d, BatchNorm2d, ...)."""
        return _group(self.rows(), "type", "type")

    def by_op(self) -> List[Dict[str, Any]]:
        """Calls, MACs and FLOPs per aten op, summed over the model."""
        calls: Counter = Counter()
        macs: Counter = Counter()
        flops: Counter = Counter()
        for layer in self.layers:
            calls.update(layer.op_calls)
            macs.update(layer.op_macs)
            flops.update(layer.op_flops)
        order = sorted(calls, key=lambda op: (-flops[op], op))
        return [{"op": op, "calls": calls[op], "macs": macs[op], "flops": flops[op]} for op in order]

    def table(self, view: str = "layers", fmt: str = "markdown", depth: int = 1) -> Union[str, List[Dict[str, Any]]]:
        """Render a view (``layers``, ``module``, ``type``, ``op``, ``total``) as Markdown text or rows.

        Example:
            >>> print(count(torch.nn.Linear(3, 2), (1, 3)).table("total"))
            | model | input_shape | params | trainable | frozen | macs | flops | activation_elements | activation_bytes | weight_bytes | buffer_bytes |
            |---|---|---|---|---|---|---|---|---|---|---|
            | Linear | (1,3) | 8 | 8 | 0 | 6 | 14 | 2 | 8 | 32 | 0 |
        """
        views = {
            "layers": self.rows,
            "module": lambda: self.by_module(depth),
            "type": self.by_type,
            "op": self.by_op,
            "total": lambda: [self.totals()],
        }
        if view not in views:
            raise fold_error("view", view, f"must be one of {sorted(views)}")
        if fmt not in ("markdown", "rows"):
            raise fold_error("fmt", fmt, "must be 'markdown' or 'rows'")
        rows = views[view]()
        return markdown_table(rows) if fmt == "markdown" else rows


def normalize_input_shapes(input_shape: ShapeLike) -> Tuple[Shape, ...]:
    """One shape ``(N, C, H, W)`` or a sequence of shapes (one per positional input), validated.

    Example:
        >>> normalize_input_shapes((1, 3, 8, 8)), normalize_input_shapes([(2, 4), [2, 5]])
        (((1, 3, 8, 8),), ((2, 4), (2, 5)))
    """
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, Sequence) or isinstance(input_shape, str) or len(input_shape) == 0:
        raise fold_error("input_shape", input_shape, "must be a shape such as (1, 3, 224, 224) or a list of shapes")
    shapes = [input_shape] if all(isinstance(s, numbers.Integral) for s in input_shape) else list(input_shape)
    result = []
    for shape in shapes:
        if (
            not isinstance(shape, Sequence)
            or isinstance(shape, str)
            or not all(isinstance(s, numbers.Integral) and not isinstance(s, bool) and s >= 1 for s in shape)
        ):
            raise fold_error("input_shape", input_shape, "every shape must be a non-empty sequence of integers >= 1")
        result.append(tuple(int(s) for s in shape))
    return tuple(result)


class _State:
    def __init__(self) -> None:
        self.stack: List[str] = []
        self.rows: Dict[str, LayerCount] = {}
        self.order: List[str] = []

    def row(self, name: str, module: nn.Module) -> LayerCount:
        if name not in self.rows:
            self.rows[name] = LayerCount(name, type(module).__name__, leaf=not any(True for _ in module.children()))
            self.order.append(name)
        return self.rows[name]


class _CountMode(TorchDispatchMode):
    def __init__(self, state: _State, types: Dict[str, nn.Module]):
        super().__init__()
        self.state = state
        self.types = types

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        name = func.overloadpacket.__name__
        where = self.state.stack[-1] if self.state.stack else ROOT
        row = self.state.row(where, self.types[where])
        macs, elementwise = op_cost(func, args, kwargs, out)
        row.op_calls[name] = row.op_calls.get(name, 0) + 1
        row.op_macs[name] = row.op_macs.get(name, 0) + macs
        row.op_flops[name] = row.op_flops.get(name, 0) + 2 * macs + elementwise
        row.macs += macs
        row.elementwise_flops += elementwise
        if name not in _SCRATCH:
            returns = func._schema.returns
            outs = out if isinstance(out, (tuple, list)) and len(returns) > 1 else (out,)
            for ret, value in zip(returns, outs):
                if ret.alias_info is not None:  # a view or an in-place result creates no new tensor
                    continue
                for t in tree_leaves(value):
                    if isinstance(t, torch.Tensor):
                        nbytes = t.numel() * t.element_size()
                        row.activation_elements += t.numel()
                        row.activation_bytes += nbytes
                        key = str(t.dtype).replace("torch.", "")
                        row.activation_bytes_by_dtype[key] = row.activation_bytes_by_dtype.get(key, 0) + nbytes
        return out


def _shape_of(value: Any) -> Optional[Shape]:
    t = _first_tensor(value)
    return tuple(t.shape) if t is not None else None


def _meta_like(t: torch.Tensor, dtype: Optional[torch.dtype]) -> torch.Tensor:
    target = dtype if (dtype is not None and t.is_floating_point()) else t.dtype
    meta = torch.empty_like(t, device="meta", dtype=target)
    if isinstance(t, nn.Parameter):
        meta = nn.Parameter(meta, requires_grad=t.requires_grad)
    return meta


def count(
    model: nn.Module,
    input_shape: ShapeLike,
    dtype: Optional[torch.dtype] = None,
    name: Optional[str] = None,
) -> CountReport:
    """Count parameters, MACs, FLOPs, activations and weight bytes of ``model`` on meta tensors.

    ``input_shape`` includes the batch axis, e.g. ``(1, 3, 224, 224)``; give a list of shapes for a
    model with several positional inputs. ``dtype`` casts floating parameters, buffers and inputs (for
    bytes at another precision); by default parameters keep theirs and inputs take the first floating
    parameter's dtype. The model itself is not modified. Conventions: see the module docstring.

    Example:
        >>> import torchvision
        >>> with torch.device("meta"):
        ...     net = torchvision.models.resnet18()
        >>> rep = count(net, (1, 3, 224, 224))
        >>> rep.params, rep.macs
        (11689512, 1814073344)
        >>> rep.layer("conv1").macs, rep.layer("conv1").output_shape
        (118013952, (1, 64, 112, 112))
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    shapes = normalize_input_shapes(input_shape)
    if dtype is not None and not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        raise fold_error("dtype", dtype, "must be a floating torch.dtype such as torch.float16")

    names: Dict[nn.Module, str] = {}
    for qualified, module in model.named_modules():
        names.setdefault(module, qualified or ROOT)
    types = {n: m for m, n in names.items()}

    # Parameters and buffers are charged once per object, to the first module that owns them.
    state = _State()
    seen: set = set()
    params = trainable = frozen = weight_bytes = 0
    owned: Dict[str, Tuple[int, int, int, int, int, int]] = {}
    for module, qualified in names.items():
        p_all = p_train = p_frozen = p_shared = p_bytes = 0
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                p_shared += p.numel()
                continue
            seen.add(id(p))
            p_all += p.numel()
            p_bytes += p.numel() * (dtype.itemsize if dtype is not None and p.is_floating_point() else p.element_size())
            if p.requires_grad:
                p_train += p.numel()
            else:
                p_frozen += p.numel()
        b_bytes = 0
        for b in module.buffers(recurse=False):
            if id(b) in seen:
                continue
            seen.add(id(b))
            b_bytes += b.numel() * (dtype.itemsize if dtype is not None and b.is_floating_point() else b.element_size())
        if p_all or p_shared or b_bytes:
            owned[qualified] = (p_all, p_train, p_frozen, p_shared, p_bytes, b_bytes)
        params += p_all
        trainable += p_train
        frozen += p_frozen
        weight_bytes += p_bytes

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

    def pre_hook(module: nn.Module, args: Tuple[Any, ...]) -> None:
        qualified = names.get(module, ROOT)
        row = state.row(qualified, module)
        row.calls += 1
        if row.input_shape is None:
            row.input_shape = _shape_of(args)
        state.stack.append(qualified)

    def post_hook(module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
        qualified = names.get(module, ROOT)
        if state.stack and state.stack[-1] == qualified:
            state.stack.pop()
        row = state.rows[qualified]
        if row.output_shape is None:
            row.output_shape = _shape_of(output)
        row.output_elements += sum(t.numel() for t in tree_leaves(output) if isinstance(t, torch.Tensor))

    handles = []
    training = {m: m.training for m in names}
    try:
        for module in names:
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
        model.eval()
        for slots, key, tensor in swaps:
            slots[key] = stand_ins[id(tensor)]
        with torch.no_grad(), _CountMode(state, types):
            model(*inputs)
    except FoldError:
        raise
    except Exception as exc:  # a model that cannot run on meta tensors gets one clear message
        raise fold_error(
            "model", type(model).__name__, f"could not run on meta tensors of shape {shapes}: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        for slots, key, tensor in swaps:
            slots[key] = tensor
        for handle in handles:
            handle.remove()
        for module, flag in training.items():
            module.train(flag)

    for qualified, (p_all, p_train, p_frozen, p_shared, p_bytes, b_bytes) in owned.items():
        row = state.row(qualified, types[qualified])
        row.params, row.trainable, row.frozen, row.shared = p_all, p_train, p_frozen, p_shared
        row.weight_bytes, row.buffer_bytes = p_bytes, b_bytes

    # Rows that did nothing and own nothing (pure containers) would only add noise.
    layers = [
        state.rows[n]
        for n in state.order
        if state.rows[n].params or state.rows[n].shared or state.rows[n].buffer_bytes or state.rows[n].op_calls or state.rows[n].leaf
    ]
    return CountReport(
        model=name or type(model).__name__,
        input_shapes=shapes,
        layers=layers,
        params=params,
        trainable=trainable,
        frozen=frozen,
        weight_bytes=weight_bytes,
        buffer_bytes=sum(layer.buffer_bytes for layer in layers),
        modules=types,
    )
