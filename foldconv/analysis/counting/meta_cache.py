"""Meta results without the meta kernel: the counter's speed.

On meta tensors an op's result (shapes, strides, dtypes) depends only on the shapes, strides, offsets and
dtypes of its tensor arguments and on its other arguments. Several of torch's meta kernels are Python
decompositions (batch norm, hardswish, hardsigmoid, ...) taking about a millisecond a call, far more than
the counting itself, so :func:`call` remembers results:

- **exact**: per op and argument signature, for ops whose results are new tensors (rebuilt with
  ``torch.empty_strided``) or in-place results (the input itself, when the kernel left its shape alone);
- **per shape class**, for ops whose result has the input's own layout whatever its size: elementwise ops
  (activations, ``relu_``, ``hardswish_``, ``mul``, ...) and batch norm; and for ``convolution``, whose
  output shape is the output-size formula and whose layout (contiguous or channels-last) is the one its
  kernel chose the first time for that class (input rank, dtype, layout and size-1 axes; weight; the rest
  of the arguments). The key keeps the rank,
  dtype, layout class (standard contiguous or channels-last strides) and which axes have size 1, of the
  input and of every other operand; an operand that does not broadcast into the input (or a batch-norm
  statistic that is not a ``(C,)`` vector) goes to the kernel, which raises. Each recipe was checked against the kernel's
  own result when it was stored, except the **known rules** below.

Known rules (the cold cache's speed: a first kernel run per class costs more than a small model's whole
count): an elementwise op of :data:`_UNARY` on a floating input of standard layout, whose tensor operands
have the input's dtype and broadcast into it, each of standard contiguous layout or of the input's own
layout, and whose other arguments are plain numbers, gives a new tensor with the input's shape, strides
and dtype (its in-place form gives the input itself). This is what torch's elementwise stride rule gives
on such inputs; ``tests/analysis/counting/test_meta_cache.py`` checks it against the kernels over ranks 1
to 5, every size-1 pattern, both layouts and four dtypes. (A contiguous input with a channels-last
operand of its own shape is left out: there the kernel may pick other strides for the size-1 axes.)
Inference batch norm (float32/float64, running statistics given) gives an output of the input's layout
and two fresh ``(C,)`` vectors; layer norm over the trailing axes of a standard-contiguous float32/float64
input gives an output of its strides and contiguous statistics; ``mean``/``sum`` over axes of a
standard-contiguous input give a standard-contiguous result; ``convolution`` of standard-contiguous operands
that cannot be read as channels-last gives a standard-contiguous result, and so do 2-D max, average and
adaptive average pooling of such an input (their output-size formulas); softmax and log-softmax of a
standard-contiguous float32/float64 input give a fresh tensor of its strides; ``mm`` and ``addmm`` on operands the formula accepts give a fresh
standard-contiguous matrix, and so does ``bmm`` whatever its operands' strides; ``cat``/``stack`` of
standard-contiguous operands and bilinear/bicubic upsampling of a standard-contiguous input give a fresh
standard-contiguous tensor; ``_safe_softmax`` is softmax. Several of these kernels are Python decompositions
whose first call imports ``torch._dynamo`` (a second or more) or sympy, which the known rules keep off the
counting path. An in-place elementwise op of :data:`_UNARY` returns its input itself, whatever its strides (a
slice of an LSTM's gates), when its input does not overlap itself and its operands broadcast into it in its
dtype without partially overlapping it; its out-of-place form on an input with no size-1 axis and distinct
strides (a slice, a transpose: attention's heads) gives a fresh tensor contiguous in the input's axis order,
since the input's strides decide torch's stride rule.

Views (``view``, ``transpose``, ``split``, ...) always run: they are C++ and cheap. Real tensors always
run. ``call(..., cache=False)`` runs the kernel (tests compare both ways on whole models).

Example:
    >>> import torch
    >>> f = torch.ops.aten.hardswish.default
    >>> a = call(f, (torch.empty(2, 8, 5, 5, device="meta"),), {})
    >>> b = call(f, (torch.empty(1, 8, 9, 9, device="meta"),), {})  # same shape class: no kernel run
    >>> b.shape, b.stride(), b.dtype
    (torch.Size([1, 8, 9, 9]), (648, 81, 9, 1), torch.float32)
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch

from .ops import OpInfo, op_info

__all__ = ["call", "clear", "signature", "RECORDS"]


class _NoCache(Exception):
    pass


_PLAIN = (bool, int, float, str, torch.dtype, torch.device, torch.memory_format, torch.layout, type(None))
_EXACT: Dict[Any, Any] = {}
_CLASS: Dict[Any, Any] = {}
_LIMIT = 200_000
#: What a whole recurrent layer cost, per signature of its call (filled by the counter, emptied by :func:`clear`).
RECORDS: Dict[Any, Any] = {}

# Ops whose outputs have the layout of their first argument whatever its size (checked on every store).
_UNARY = {
    "relu", "relu6", "hardtanh", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky_relu",
    "elu", "mish", "softplus", "clamp", "clamp_min", "clamp_max", "neg", "abs", "exp", "log", "sqrt", "rsqrt",
    "reciprocal", "erf", "mul", "div", "add", "sub", "pow", "threshold_backward",
}
_BATCH_NORM = {"native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"}
_CLASS_OPS = _UNARY | {name + "_" for name in _UNARY} | _BATCH_NORM


def clear() -> None:
    """Forget every remembered result (benchmarks measure a cold cache with it).

    Example:
        >>> clear()
    """
    _EXACT.clear()
    _CLASS.clear()
    _FORMULA.clear()
    RECORDS.clear()


def signature(value: Any) -> Optional[Any]:
    """What a meta result depends on: shapes, strides, offsets and dtypes of the tensors in ``value`` (a tuple or
    list of arguments), and its plain values; None when ``value`` holds anything else (a real tensor).

    Example:
        >>> signature((torch.empty(2, 3, device="meta"), 1.0))
        ((torch.Size([2, 3]), (3, 1), 0, torch.float32), (<class 'float'>, 1.0))
        >>> signature((torch.empty(2),)) is None
        True
    """
    try:
        return _sig(value)
    except _NoCache:
        return None


def _sig(value: Any) -> Any:
    if isinstance(value, torch.Tensor):
        if not value.is_meta or value.layout != torch.strided:
            raise _NoCache
        return (value.shape, value.stride(), value.storage_offset(), value.dtype)
    if isinstance(value, (tuple, list)):
        return tuple(_sig(v) for v in value)
    if isinstance(value, _PLAIN):
        return (value.__class__, value)  # 2 and 2.0 give different dtypes
    raise _NoCache


def _standard(shape: torch.Size, channels_last: bool) -> Tuple[int, ...]:
    dims = list(range(len(shape)))
    order = [0] + dims[2:] + [1] if channels_last else dims  # outermost to innermost
    strides = [0] * len(shape)
    step = 1
    for d in reversed(order):
        strides[d] = step
        step *= shape[d]
    return tuple(strides)


def _layout(x: torch.Tensor) -> Optional[str]:
    """"c" / "cl" when ``x`` has exactly the standard contiguous / channels-last strides, else None."""
    if x.storage_offset() != 0:
        return None
    exact = 1 not in x.shape  # with no size-1 axis, "contiguous" pins the strides down exactly
    if x.is_contiguous() and (exact or x.stride() == _standard(x.shape, False)):
        return "c"
    if x.dim() in (4, 5):
        channels_last = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        if x.is_contiguous(memory_format=channels_last) and (exact or x.stride() == _standard(x.shape, True)):
            return "cl"
    return None


def _class_key(func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any], batch_norm: bool) -> Optional[Tuple[Any, ...]]:
    x = args[0] if args else None
    if not isinstance(x, torch.Tensor) or not x.is_meta or kwargs:
        return None
    layout = _layout(x)
    if layout is None:
        return None
    rest = []
    shape = x.shape
    for a in args[1:]:
        if isinstance(a, torch.Tensor):
            if not a.is_meta:
                return None
            if batch_norm:  # weight, bias and statistics are (C,) vectors, or the kernel decides (and raises)
                if a.shape != shape[1:2]:
                    return None
                rest.append((a.dtype, a.stride()))
                continue
            other = a.shape  # an operand must broadcast *into* x, or the kernel decides (and raises)
            offset = len(shape) - len(other)
            if offset < 0 or any(o != 1 and o != shape[offset + i] for i, o in enumerate(other)):
                return None
            # then only which of its axes are 1 and its layout class matter, not its sizes
            other_layout = _layout(a)
            if other_layout is None:
                return None
            rest.append((tuple(o == 1 for o in other), other_layout, a.dtype))
        elif isinstance(a, _PLAIN):
            rest.append((a.__class__, a))
        else:
            return None
    return (func, x.dim(), x.dtype, layout, tuple(s == 1 for s in shape), tuple(rest))


def _main_operand(name: str, args: Tuple[Any, ...]) -> int:
    """1 when an out-of-place binary op's first operand broadcasts into its second (``scale * x``): then the
    class is that of the second, with the first as its operand; else 0."""
    if name not in _UNARY or len(args) != 2:
        return 0
    a, b = args
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)) or a.shape == b.shape or a.dim() > b.dim():
        return 0
    offset = b.dim() - a.dim()
    return int(all(s == 1 or s == b.shape[offset + i] for i, s in enumerate(a.shape)))


def _known_batch_norm(name: str, args: Tuple[Any, ...]) -> Optional[Tuple[Any, ...]]:
    """Inference batch norm (running statistics given) on float32/float64: the output has the input's layout,
    the two saved statistics are fresh ``(C,)`` vectors of its dtype (half precisions keep float32 ones:
    those go to the kernel)."""
    x = args[0]
    if x.dtype not in (torch.float32, torch.float64) or x.dim() < 2:
        return None
    if name == "native_batch_norm" and (len(args) != 8 or args[5] is not False):
        return None
    if name == "_native_batch_norm_legit_no_training" and len(args) != 7:
        return None
    if name == "_native_batch_norm_legit" or not all(isinstance(a, torch.Tensor) for a in args[3:5]):
        return None
    if any(isinstance(a, torch.Tensor) and a.dtype != x.dtype for a in args[1:5]):
        return None
    return (tuple, (("like", x.dtype), ("vector", False, x.dtype), ("vector", False, x.dtype)))


def _known_recipe(name: str, args: Tuple[Any, ...]) -> Optional[Tuple[Any, ...]]:
    """The recipe of an elementwise op or an inference batch norm on a class that :func:`_class_key`
    accepted, when a known rule covers it (else None: the kernel runs once and its result is checked)."""
    if name in _BATCH_NORM:
        return _known_batch_norm(name, args)
    if name not in _UNARY and name[:-1] not in _UNARY:
        return None
    x = args[0]
    dtype = x.dtype
    if not dtype.is_floating_point:
        return None
    for a in args[1:]:
        if isinstance(a, torch.Tensor):
            if a.dtype != dtype or (a.dim() == x.dim() and _layout(a) == "cl" and _layout(x) == "c"):
                return None
        elif isinstance(a, complex):
            return None
    return (None, ("self",)) if name.endswith("_") else (None, (("like", dtype),))


def _class_recipe(x: torch.Tensor, out: Any) -> Optional[Tuple[Any, ...]]:
    """Each output as "the input itself", "like the input" or "a fresh (C,) / (0,) vector", or None."""
    many = isinstance(out, (tuple, list))
    items = []
    for o in out if many else (out,):
        if not isinstance(o, torch.Tensor):
            return None
        if o is x:
            items.append("self")
        elif o.untyped_storage()._cdata == x.untyped_storage()._cdata:
            return None
        elif o.shape == x.shape and o.stride() == x.stride() and o.storage_offset() == 0:
            items.append(("like", o.dtype))
        elif x.dim() > 1 and o.dim() == 1 and o.shape[0] in (x.shape[1], 0):
            items.append(("vector", o.shape[0] == 0, o.dtype))
        else:
            return None
    return (type(out) if many else None, tuple(items))


def _class_rebuild(recipe: Tuple[Any, ...], x: torch.Tensor) -> Any:
    container, items = recipe
    outs = []
    for item in items:
        if item == "self":
            outs.append(x)
        elif item[0] == "like":
            outs.append(torch.empty_strided(x.shape, x.stride(), dtype=item[1], device="meta"))
        else:
            outs.append(torch.empty(0 if item[1] else x.shape[1], dtype=item[2], device="meta"))
    return outs[0] if container is None else container(outs)


def _storages(args: Tuple[Any, ...]) -> set:
    return {a.untyped_storage()._cdata for a in args if isinstance(a, torch.Tensor)}


def _recipe(info: OpInfo, args: Tuple[Any, ...], arg_sigs: Tuple[Any, ...], out: Any) -> Optional[Tuple[Any, ...]]:
    many = isinstance(out, (tuple, list))
    inputs = _storages(args)
    items = []
    for i, o in enumerate(out if many else (out,)):
        if o is None:
            items.append(None)
            continue
        if not isinstance(o, torch.Tensor) or not o.is_meta:  # factories called with device="cpu" stay real
            return None
        shared = o.untyped_storage()._cdata in inputs  # _unsafe_view: "fresh" by its schema, yet a view
        if info.fresh[min(i, len(info.fresh) - 1)] and o.storage_offset() == 0 and not shared:
            items.append((tuple(o.shape), o.stride(), o.dtype))
            continue
        j = next((j for j, a in enumerate(args) if a is o), None)
        if j is None or _sig(o) != arg_sigs[j]:  # a view, or an in-place op that changed its input's shape
            return None
        items.append(j)
    return (type(out) if many else None, tuple(items))


def _rebuild(recipe: Tuple[Any, ...], args: Tuple[Any, ...]) -> Any:
    container, items = recipe
    outs = [
        None if item is None
        else args[item] if isinstance(item, int)
        else torch.empty_strided(item[0], item[1], dtype=item[2], device="meta")
        for item in items
    ]
    return outs[0] if container is None else container(outs)


# ------------------------------------------------- convolution, reductions, matmuls: per layout class
# The result's shape comes from the op's output-size formula; its layout (standard contiguous or
# channels-last) is the one the kernel chose the first time for the class, and checked then.
_FORMULA: Dict[Any, str] = {}


def _conv_key(args: Tuple[Any, ...]) -> Optional[Tuple[Any, ...]]:
    """aten.convolution(x, w, bias, stride, padding, dilation, transposed, output_padding, groups): the key
    of its layout class (ranks, dtypes, layouts and size-1 axes of x and w; bias or not), or None where the
    kernel must run: arguments it would refuse (channels that do not fit the weight, a bias of another
    length, non-positive strides, ...) go to it, so it raises its own error."""
    if len(args) != 9:
        return None
    x, w, bias = args[0], args[1], args[2]
    if not (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and x.is_meta and w.is_meta) or x.dim() < 3:
        return None
    layout, w_layout = _layout(x), _layout(w)
    stride, padding, dilation, transposed, output_padding, groups = args[3:]
    spatial = x.dim() - 2
    if layout is None or w_layout is None or w.dim() != x.dim() or not isinstance(groups, int) or groups < 1:
        return None
    if not all(isinstance(a, (list, tuple)) and len(a) == spatial for a in (stride, padding, dilation, output_padding)):
        return None
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0 or min(output_padding) < 0:
        return None
    cin = w.shape[0] if transposed else w.shape[1] * groups
    cout = w.shape[1] * groups if transposed else w.shape[0]
    if x.shape[1] != cin or cin == 0 or cout == 0 or w.shape[0] % groups:
        return None
    if transposed and any(op >= max(s, d) for op, s, d in zip(output_padding, stride, dilation)):
        return None
    if bias is not None and not (isinstance(bias, torch.Tensor) and bias.is_meta and tuple(bias.shape) == (cout,)):
        return None
    return (x.dim(), x.dtype, layout, tuple(s == 1 for s in x.shape), w_layout, w.dtype, tuple(s == 1 for s in w.shape),
            None if bias is None else bias.dtype, bool(transposed))


def _conv_shape(x: torch.Tensor, w: torch.Tensor, args: Tuple[Any, ...]) -> Optional[Tuple[int, ...]]:
    stride, padding, dilation, transposed, output_padding = args[3], args[4], args[5], bool(args[6]), args[7]
    spatial = []
    for i, size in enumerate(x.shape[2:]):
        k = dilation[i] * (w.shape[2 + i] - 1) + 1
        if transposed:
            out = (size - 1) * stride[i] - 2 * padding[i] + k + output_padding[i]
        else:
            out = (size + 2 * padding[i] - k) // stride[i] + 1
        if out < 1:
            return None  # the kernel raises its own error
        spatial.append(out)
    return (x.shape[0], w.shape[1] * args[8] if transposed else w.shape[0], *spatial)


def _conv_formula(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[Tuple[Any, Tuple[int, ...], torch.dtype]]:
    key = None if kwargs else _conv_key(args)
    shape = None if key is None else _conv_shape(args[0], args[1], args)
    return None if shape is None else (key, shape, args[0].dtype)


def _reduction_formula(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[Tuple[Any, Tuple[int, ...], torch.dtype]]:
    """mean.dim / sum.dim_IntList(x, dims, keepdim=False, *, dtype=None) on a floating x of standard layout."""
    if not 2 <= len(args) <= 3 or set(kwargs) - {"dtype"}:
        return None
    x, dims, keepdim = args[0], args[1], (args[2] if len(args) == 3 else False)
    out_dtype = kwargs.get("dtype") or (x.dtype if isinstance(x, torch.Tensor) else None)
    if not (isinstance(x, torch.Tensor) and x.is_meta and x.dtype.is_floating_point and x.dim() > 0):
        return None
    if not (isinstance(out_dtype, torch.dtype) and out_dtype.is_floating_point and isinstance(keepdim, bool)):
        return None
    if not (isinstance(dims, (list, tuple)) and dims and all(isinstance(d, int) and -x.dim() <= d < x.dim() for d in dims)):
        return None
    axes = tuple(sorted(d % x.dim() for d in dims))
    layout = _layout(x)
    if layout is None or len(set(axes)) != len(axes):
        return None
    shape = tuple(1 if i in axes else s for i, s in enumerate(x.shape) if keepdim or i not in axes)
    return (x.dim(), x.dtype, layout, tuple(s == 1 for s in x.shape), axes, keepdim, out_dtype), shape, out_dtype


def _matrix(t: Any) -> Optional[str]:
    """"c" / "t" for a 2-D meta tensor with standard contiguous / transposed-contiguous strides (``w.t()``),
    "s" for any other strides or offset (a slice of a larger matrix: the result is fresh all the same)."""
    if not (isinstance(t, torch.Tensor) and t.is_meta and t.dim() == 2):
        return None
    rows, cols = t.shape
    if t.storage_offset() == 0 and t.stride() == (cols, 1):
        return "c"
    return "t" if t.storage_offset() == 0 and t.stride() == (1, rows) else "s"


def _matmul_formula(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[Tuple[Any, Tuple[int, ...], torch.dtype]]:
    """mm(a, b) / addmm(bias, a, b, *, beta, alpha) with 2-D operands of one floating dtype."""
    bias, (a, b) = (None, args) if len(args) == 2 else (args[0], args[1:3]) if len(args) == 3 else (None, (None, None))
    if set(kwargs) - {"beta", "alpha"} or (len(args) == 2 and kwargs) or not all(isinstance(v, (int, float)) for v in kwargs.values()):
        return None
    a_class, b_class = _matrix(a), _matrix(b)
    if a_class is None or b_class is None or a.dtype != b.dtype or not a.dtype.is_floating_point or a.shape[1] != b.shape[0]:
        return None
    shape = (a.shape[0], b.shape[1])
    bias_class = None
    if len(args) == 3:  # the bias must broadcast into the result, or the kernel decides (and raises)
        if not (isinstance(bias, torch.Tensor) and bias.is_meta and bias.dtype == a.dtype and bias.dim() <= 2):
            return None
        offset = 2 - bias.dim()
        if any(s != 1 and s != shape[offset + i] for i, s in enumerate(bias.shape)) or _layout(bias) is None:
            return None
        bias_class = (bias.dim(), tuple(s == 1 for s in bias.shape))
    sizes = tuple(s == 1 for s in (*a.shape, b.shape[1]))
    return (len(args), a.dtype, a_class, b_class, sizes, bias_class, tuple(sorted(kwargs.items()))), shape, a.dtype


def _bmm_formula(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[Tuple[Any, Tuple[int, ...], torch.dtype]]:
    """bmm(a, b) of 3-D meta operands of one floating dtype whose sizes fit, whatever their strides (attention's
    transposed heads)."""
    if kwargs or len(args) != 2:
        return None
    a, b = args
    if not all(isinstance(t, torch.Tensor) and t.is_meta and t.layout == torch.strided and t.dim() == 3 for t in (a, b)):
        return None
    if a.dtype != b.dtype or not a.dtype.is_floating_point or a.shape[0] != b.shape[0] or a.shape[2] != b.shape[1]:
        return None
    return (a.dtype,), (a.shape[0], a.shape[1], b.shape[2]), a.dtype


# Matmuls whose result is a fresh standard-contiguous matrix whatever the operands' classes (torch's meta
# kernel for addmm is a Python decomposition whose first call costs about a second): no kernel run needed.
# A reduction of a standard-contiguous input gives a standard-contiguous result too.
_KNOWN_LAYOUT = {torch.ops.aten.mm.default: "c", torch.ops.aten.addmm.default: "c", torch.ops.aten.bmm.default: "c"}
_REDUCTIONS = (torch.ops.aten.mean.dim, torch.ops.aten.sum.dim_IntList)
_CONVOLUTION = torch.ops.aten.convolution.default


def _channels_last_like(*tensors: torch.Tensor) -> bool:
    """Whether torch's memory-format suggestion reads one of these 4-D/5-D tensors as channels-last (size-1 axes
    can make standard strides ambiguous); the test c10 applies (``is_channels_last_strides_2d/3d``)."""
    for t in tensors:
        if t.dim() not in (4, 5):
            continue
        sizes, strides = t.shape, t.stride()
        order = (1, 3, 2, 0) if t.dim() == 4 else (1, 4, 3, 2, 0)
        least, like = 0, True
        for d in order:
            if sizes[d] == 0 or strides[d] < least or (d == 0 and least == strides[1]):
                like = False
                break
            least = strides[d] * (sizes[d] if sizes[d] > 1 else 1)
        if like:
            return True
    return False


def _known_layout(func: Any, args: Tuple[Any, ...]) -> Optional[str]:
    if func in _REDUCTIONS:
        return "c" if _layout(args[0]) == "c" else None
    if func is _CONVOLUTION:  # neither operand suggests channels-last: torch keeps the standard layout
        return "c" if _layout(args[0]) == "c" and _layout(args[1]) == "c" and not _channels_last_like(args[0], args[1]) else None
    return _KNOWN_LAYOUT.get(func)

_FORMULAS = {
    torch.ops.aten.convolution.default: _conv_formula,
    torch.ops.aten.mean.dim: _reduction_formula,
    torch.ops.aten.sum.dim_IntList: _reduction_formula,
    torch.ops.aten.mm.default: _matmul_formula,
    torch.ops.aten.addmm.default: _matmul_formula,
    torch.ops.aten.bmm.default: _bmm_formula,
}


def _by_formula(func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """``func``'s result from its output-size formula and the layout its kernel chose for the class."""
    found = _FORMULAS[func](args, kwargs)
    if found is None:
        return func(*args, **kwargs)
    key, shape, dtype = found
    key = (func, key)
    layout = _FORMULA.get(key) or _known_layout(func, args)
    if layout is not None:
        return torch.empty_strided(shape, _standard(torch.Size(shape), layout == "cl"), dtype=dtype, device="meta")
    out = func(*args, **kwargs)
    if isinstance(out, torch.Tensor) and tuple(out.shape) == shape and out.dtype == dtype and len(_FORMULA) < _LIMIT:
        out_layout = _layout(out)
        if out_layout is not None:
            _FORMULA[key] = out_layout
    return out


def _known_layer_norm(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """native_layer_norm(x, normalized_shape, weight, bias, eps) on a float32/float64 x of standard contiguous
    layout: the output has x's strides, mean and rstd are fresh contiguous tensors of x's leading shape with
    size-1 normalized axes (None where another case: the kernel runs)."""
    if kwargs or len(args) != 5:
        return None
    x, normalized, weight, bias, eps = args
    if not (isinstance(x, torch.Tensor) and x.is_meta and x.dtype in (torch.float32, torch.float64)):
        return None
    if not (isinstance(normalized, (list, tuple)) and 0 < len(normalized) <= x.dim() and isinstance(eps, (int, float))):
        return None
    k = len(normalized)
    if tuple(normalized) != tuple(x.shape[x.dim() - k:]) or _layout(x) != "c":
        return None
    for t in (weight, bias):
        if t is not None and not (isinstance(t, torch.Tensor) and t.is_meta and t.dtype == x.dtype and tuple(t.shape) == tuple(normalized)):
            return None
    stats = (*x.shape[:x.dim() - k], *([1] * k))
    return (
        torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta"),
        torch.empty(stats, dtype=x.dtype, device="meta"),
        torch.empty(stats, dtype=x.dtype, device="meta"),
    )


_LAYER_NORM = torch.ops.aten.native_layer_norm.default
_MAX_POOL = torch.ops.aten.max_pool2d_with_indices.default
_AVG_POOL = torch.ops.aten.avg_pool2d.default
_ADAPTIVE_AVG = torch.ops.aten._adaptive_avg_pool2d.default


def _pair(value: Any, default: Any) -> Optional[Tuple[int, int]]:
    if isinstance(value, (list, tuple)) and len(value) == 0 and default is not None:
        return default
    if isinstance(value, int) and not isinstance(value, bool):
        return (value, value)
    if isinstance(value, (list, tuple)) and len(value) in (1, 2) and all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        return (value[0], value[-1])
    return None


def _pooled(size: int, k: int, pad: int, stride: int, dilation: int, ceil: bool) -> int:
    """torch's pooling_output_shape."""
    span = size + 2 * pad - dilation * (k - 1) - 1 + (stride - 1 if ceil else 0)
    out = span // stride + 1
    if ceil and (out - 1) * stride >= size + pad:
        out -= 1
    return out


_SOFTMAX = (torch.ops.aten._softmax.default, torch.ops.aten._log_softmax.default)
_SAFE_SOFTMAX = torch.ops.aten._safe_softmax.default


def _known_softmax(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[torch.Tensor]:
    """_softmax / _log_softmax(x, dim, half_to_float=False) of a float32/float64 meta input of standard contiguous
    layout: a fresh tensor of its shape and strides."""
    if kwargs or len(args) != 3 or args[2] is not False:
        return None
    x, dim = args[0], args[1]
    if not (isinstance(x, torch.Tensor) and x.is_meta and x.dtype in (torch.float32, torch.float64) and x.dim() > 0):
        return None
    if not (isinstance(dim, int) and -x.dim() <= dim < x.dim()) or _layout(x) != "c":
        return None
    return torch.empty_strided(x.shape, x.stride(), dtype=x.dtype, device="meta")


def _known_safe_softmax(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[torch.Tensor]:
    """_safe_softmax(x, dim, dtype=None) (attention's softmax that gives 0 on fully masked rows): as softmax."""
    if kwargs or len(args) not in (2, 3) or (len(args) == 3 and args[2] is not None):
        return None
    return _known_softmax((args[0], args[1], False), {})


def _known_pool(func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """max_pool2d_with_indices / avg_pool2d / _adaptive_avg_pool2d of a 4-D floating meta input of standard
    layout that torch cannot read as channels-last, with arguments its kernel accepts: fresh standard-contiguous
    results of the output-size formula (max pooling's indices int64). None otherwise (the kernel runs)."""
    x = args[0] if args else None
    if kwargs or not (isinstance(x, torch.Tensor) and x.is_meta and x.dim() == 4 and x.dtype.is_floating_point):
        return None
    if _layout(x) != "c" or _channels_last_like(x) or 0 in x.shape:
        return None
    n, c, h, w = x.shape
    if func is _ADAPTIVE_AVG:
        size = _pair(args[1], None) if len(args) == 2 else None
        if size is None or min(size) < 1:
            return None
        return torch.empty((n, c, *size), dtype=x.dtype, device="meta")
    if func is _MAX_POOL:
        if not 2 <= len(args) <= 6:
            return None
        k = _pair(args[1], None)
        stride = _pair(args[2], k) if len(args) > 2 else k
        pad = _pair(args[3], None) if len(args) > 3 else (0, 0)
        dilation = _pair(args[4], None) if len(args) > 4 else (1, 1)
        ceil = args[5] if len(args) > 5 else False
    else:
        if not 2 <= len(args) <= 7 or (len(args) > 6 and args[6] is not None):
            return None
        k = _pair(args[1], None)
        stride = _pair(args[2], k) if len(args) > 2 else k
        pad = _pair(args[3], None) if len(args) > 3 else (0, 0)
        dilation, ceil = (1, 1), args[4] if len(args) > 4 else False
        if len(args) > 5 and not isinstance(args[5], bool):
            return None
    if None in (k, stride, pad, dilation) or not isinstance(ceil, bool):
        return None
    if min(k) < 1 or min(stride) < 1 or min(dilation) < 1 or min(pad) < 0 or any(p > kk // 2 for p, kk in zip(pad, k)):
        return None
    out = tuple(_pooled(size, kk, p, s_, d, ceil) for size, kk, p, s_, d in zip((h, w), k, pad, stride, dilation))
    if min(out) < 1:
        return None
    result = torch.empty((n, c, *out), dtype=x.dtype, device="meta")
    if func is _MAX_POOL:
        return result, torch.empty((n, c, *out), dtype=torch.int64, device="meta")
    return result


def _no_overlap(x: torch.Tensor) -> bool:
    """No two elements of ``x`` share memory (sufficient test: each axis steps past the others' extent)."""
    extent = 0
    for stride, size in sorted((st, s) for s, st in zip(x.shape, x.stride()) if s > 1):
        if stride <= extent:
            return False
        extent += (size - 1) * stride
    return True


def _row_major(t: torch.Tensor) -> bool:
    """The strides of ``t``'s axes longer than 1 strictly decrease from the first axis to the last."""
    strides = [st for size, st in zip(t.shape, t.stride()) if size > 1]
    return all(a > b for a, b in zip(strides, strides[1:])) and (not strides or strides[-1] > 0)


def _known_elementwise(name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[torch.Tensor]:
    """An out-of-place elementwise op of :data:`_UNARY` on a floating, non-overlapping meta input with no size-1
    axis and distinct positive strides (a slice, a padded view, a transpose), whose tensor operands have its dtype
    and broadcast into it: the input is the first operand torch's stride rule consults and its strides decide
    every pair of axes, so the result is a fresh tensor of the input's shape and dtype, contiguous in the input's
    axis order (standard contiguous for a slice). None where another case (then the other rules or the kernel)."""
    if kwargs or name not in _UNARY or not args:
        return None
    x = args[0]
    if not (isinstance(x, torch.Tensor) and x.is_meta and x.layout == torch.strided and x.dtype.is_floating_point):
        return None
    strides = x.stride()
    if 1 in x.shape or 0 in x.shape or min(strides, default=1) < 1 or len(set(strides)) != len(strides) or not _no_overlap(x):
        return None
    for a in args[1:]:
        if isinstance(a, torch.Tensor):
            offset = x.dim() - a.dim()
            if not a.is_meta or a.layout != torch.strided or a.dtype != x.dtype or offset < 0:
                return None
            if any(o != 1 and o != x.shape[offset + i] for i, o in enumerate(a.shape)):
                return None
        elif not isinstance(a, (bool, int, float)):
            return None
    out, step = [0] * x.dim(), 1
    for d in sorted(range(x.dim()), key=strides.__getitem__):  # innermost first
        out[d] = step
        step *= x.shape[d]
    return torch.empty_strided(x.shape, out, dtype=x.dtype, device="meta")


def _standard_operands(tensors: Any) -> Optional[torch.Size]:
    """The shape of the first of ``tensors`` when all are non-empty meta tensors of one dtype and rank, of
    standard contiguous layout that torch's memory-format suggestion does not read as channels-last; else None."""
    if not isinstance(tensors, (list, tuple)) or not tensors or not isinstance(tensors[0], torch.Tensor):
        return None
    first = tensors[0]
    for t in tensors:
        if not (isinstance(t, torch.Tensor) and t.is_meta and t.layout == torch.strided and t.dtype == first.dtype):
            return None
        if t.dim() != first.dim() or t.dim() == 0 or 0 in t.shape or _layout(t) != "c" or _channels_last_like(t):
            return None
    return first.shape


def _known_cat(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[torch.Tensor]:
    """cat(tensors, dim=0) of :func:`_standard_operands` whose sizes agree but along ``dim``: every input suggests
    the contiguous format, so the result is a fresh standard-contiguous tensor."""
    if kwargs or not 1 <= len(args) <= 2:
        return None
    shape, dim = _standard_operands(args[0]), args[1] if len(args) == 2 else 0
    if shape is None or type(dim) is not int or not -len(shape) <= dim < len(shape):
        return None
    dim %= len(shape)
    if any(t.shape[:dim] != shape[:dim] or t.shape[dim + 1:] != shape[dim + 1:] for t in args[0]):
        return None
    total = sum(t.shape[dim] for t in args[0])
    return torch.empty((*shape[:dim], total, *shape[dim + 1:]), dtype=args[0][0].dtype, device="meta")


def _known_stack(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[torch.Tensor]:
    """stack(tensors, dim=0) of :func:`_standard_operands` of one shape: a fresh standard-contiguous tensor."""
    if kwargs or not 1 <= len(args) <= 2:
        return None
    shape, dim = _standard_operands(args[0]), args[1] if len(args) == 2 else 0
    if shape is None or type(dim) is not int or not -len(shape) - 1 <= dim <= len(shape):
        return None
    if any(t.shape != shape for t in args[0]):
        return None
    dim %= len(shape) + 1
    return torch.empty((*shape[:dim], len(args[0]), *shape[dim:]), dtype=args[0][0].dtype, device="meta")


def _known_upsample(args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Optional[torch.Tensor]:
    """upsample_bilinear2d / upsample_bicubic2d(x, output_size, align_corners, scales_h=None, scales_w=None) of a
    4-D floating meta input of :func:`_standard_operands` layout, to a positive size: a fresh standard-contiguous
    ``(N, C, *output_size)`` tensor of its dtype (torch's decomposition interpolates, then makes the result
    contiguous in the input's suggested format)."""
    if kwargs or not 3 <= len(args) <= 5 or _standard_operands(args[:1]) is None:
        return None
    x, size, align = args[0], args[1], args[2]
    if x.dim() != 4 or not x.dtype.is_floating_point or not isinstance(align, bool):
        return None
    if not (isinstance(size, (list, tuple)) and len(size) == 2 and all(type(s) is int and s > 0 for s in size)):
        return None
    if not all(s is None or (type(s) is float and s > 0) for s in args[3:]):
        return None
    return torch.empty((*x.shape[:2], *size), dtype=x.dtype, device="meta")


def _meet(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Two tensors of one storage that torch could find partially overlapping: both dense (torch tells nothing
    about others) and their memory ranges intersect. Disjoint slices of one buffer (an LSTM's gates) do not meet."""
    def dense_range(t: torch.Tensor) -> Optional[Tuple[int, int]]:
        last = t.storage_offset() + sum((s - 1) * st for s, st in zip(t.shape, t.stride()))
        return (t.storage_offset(), last) if last - t.storage_offset() + 1 == t.numel() and _no_overlap(t) else None
    ra, rb = dense_range(a), dense_range(b)
    return ra is not None and rb is not None and ra[0] <= rb[1] and rb[0] <= ra[1]


def _known_in_place(name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> bool:
    """An in-place elementwise op returns its first argument itself, whatever its strides (a slice of a larger
    tensor), when nothing it gets could make the kernel refuse: a floating, non-overlapping meta input, tensor
    operands of its dtype that broadcast into it and do not share its memory, plain numbers otherwise."""
    if kwargs or not name.endswith("_") or name[:-1] not in _UNARY or not args:
        return False
    x = args[0]
    if not (isinstance(x, torch.Tensor) and x.is_meta and x.layout == torch.strided and x.dtype.is_floating_point):
        return False
    if not _no_overlap(x):
        return False
    storage = x.untyped_storage()._cdata
    for a in args[1:]:
        if isinstance(a, torch.Tensor):
            offset = x.dim() - a.dim()
            if not a.is_meta or a.dtype != x.dtype or offset < 0 or (a.untyped_storage()._cdata == storage and _meet(a, x)):
                return False
            if any(o != 1 and o != x.shape[offset + i] for i, o in enumerate(a.shape)):
                return False
        elif not isinstance(a, (bool, int, float)):
            return False
    return True


#: Ops whose results a known rule builds (None from the rule: another case, the kernel runs).
_KNOWN = {
    _LAYER_NORM: _known_layer_norm,
    **{f: _known_softmax for f in _SOFTMAX},
    _SAFE_SOFTMAX: _known_safe_softmax,
    **{f: (lambda args, kwargs, f=f: _known_pool(f, args, kwargs)) for f in (_MAX_POOL, _AVG_POOL, _ADAPTIVE_AVG)},
    torch.ops.aten.cat.default: _known_cat,
    torch.ops.aten.stack.default: _known_stack,
    torch.ops.aten.upsample_bilinear2d.default: _known_upsample,
    torch.ops.aten.upsample_bicubic2d.default: _known_upsample,
}


def call(func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any], info: Optional[OpInfo] = None, *, cache: bool = True) -> Any:
    """``func(*args, **kwargs)``, or the same result rebuilt from memory (meta tensors only; see above).

    A result met before with the same argument signature is rebuilt from its recipe at once (a model counted
    again, a recurrent layer's time steps); otherwise the formulas and known rules, then the class recipes,
    then the kernel, and the result's recipe is remembered.

    Example:
        >>> x = torch.empty(3, 4, device="meta")
        >>> call(torch.ops.aten.mm.default, (x, x.t()), {}).shape
        torch.Size([3, 3])
    """
    info = info or op_info(func)
    if not (cache and info.cacheable):
        return func(*args, **kwargs)
    try:
        arg_sigs: Optional[Tuple[Any, ...]] = tuple(_sig(a) for a in args)
        key = (func, arg_sigs, tuple((k, _sig(v)) for k, v in kwargs.items()) if kwargs else ())
    except _NoCache:
        arg_sigs = key = None
    if key is not None:
        recipe = _EXACT.get(key)
        if recipe is not None:
            return _rebuild(recipe, args)
    out = _by_rule(func, info, args, kwargs)
    if out is _NO_RULE:
        return _by_kernel(func, info, args, kwargs, arg_sigs, key)
    if key is not None and len(_EXACT) + len(_CLASS) < _LIMIT:
        recipe = _recipe(info, args, arg_sigs, out)
        if recipe is not None:
            _EXACT[key] = recipe
    return out


_NO_RULE = object()


def _by_rule(func: Any, info: OpInfo, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Any:
    """The result from a formula, a known rule or a stored class recipe, or :data:`_NO_RULE`."""
    if func in _FORMULAS:
        return _by_formula(func, args, kwargs)
    if _known_in_place(info.name, args, kwargs):
        return args[0]
    known = _KNOWN.get(func)
    if known is not None:
        out = known(args, kwargs)
        if out is not None:
            return out
    if info.name not in _CLASS_OPS:
        out = _known_elementwise(info.name, args, kwargs)  # None unless an out-of-place op of _UNARY
        return _NO_RULE if out is None else out
    class_key, main = _class_of(func, info, args, kwargs)
    if class_key is None:
        out = _known_elementwise(info.name, args, kwargs)
        return _NO_RULE if out is None else out
    recipe = _CLASS.get(class_key)
    if recipe is None and main == 0:
        recipe = _known_recipe(info.name, args)
        if recipe is not None and len(_EXACT) + len(_CLASS) < _LIMIT:
            _CLASS[class_key] = recipe
    return _NO_RULE if recipe is None else _class_rebuild(recipe, args[main])


def _class_of(func: Any, info: OpInfo, args: Tuple[Any, ...], kwargs: Dict[str, Any]) -> Tuple[Optional[Tuple[Any, ...]], int]:
    """The shape-class key of an op of :data:`_CLASS_OPS` (None: no class) and which argument is its main operand."""
    main = _main_operand(info.name, args)
    ordered = args if main == 0 else (args[1], args[0], *args[2:])
    class_key = _class_key(func, ordered, kwargs, info.name in _BATCH_NORM)
    if class_key is not None and main:
        class_key = (class_key, "swapped")
    return class_key, main


def _by_kernel(func: Any, info: OpInfo, args: Tuple[Any, ...], kwargs: Dict[str, Any], arg_sigs: Any, key: Any) -> Any:
    """Run the kernel; remember its result per class (an op of :data:`_CLASS_OPS`) or per signature."""
    out = func(*args, **kwargs)
    if key is None or len(_EXACT) + len(_CLASS) >= _LIMIT:
        return out
    class_key, main = _class_of(func, info, args, kwargs) if info.name in _CLASS_OPS else (None, 0)
    recipe = _class_recipe(args[main], out) if class_key is not None else None
    if recipe is not None:
        _CLASS[class_key] = recipe
    else:
        recipe = _recipe(info, args, arg_sigs, out)
        if recipe is not None:
            _EXACT[key] = recipe
    return out
