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
  own result when it was stored.

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

__all__ = ["call", "clear"]


class _NoCache(Exception):
    pass


_PLAIN = (bool, int, float, str, torch.dtype, torch.device, torch.memory_format, torch.layout, type(None))
_EXACT: Dict[Any, Any] = {}
_CLASS: Dict[Any, Any] = {}
_LIMIT = 200_000

# Ops whose outputs have the layout of their first argument whatever its size (checked on every store).
_UNARY = {
    "relu", "relu6", "hardtanh", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid", "leaky_relu",
    "elu", "mish", "softplus", "clamp", "clamp_min", "clamp_max", "neg", "abs", "exp", "log", "sqrt", "rsqrt",
    "reciprocal", "erf", "mul", "div", "add", "sub", "pow", "threshold_backward",
}
_BATCH_NORM = {"native_batch_norm", "_native_batch_norm_legit_no_training", "_native_batch_norm_legit"}
_CLASS_OPS = _UNARY | {name + "_" for name in _UNARY} | _BATCH_NORM


_CONVOLUTION = torch.ops.aten.convolution.default


def clear() -> None:
    """Forget every remembered result (benchmarks measure a cold cache with it).

    Example:
        >>> clear()
    """
    _EXACT.clear()
    _CLASS.clear()
    _CONV.clear()


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


# ------------------------------------------------------------------------ convolution, per shape class
_CONV: Dict[Any, str] = {}


def _conv_key(args: Tuple[Any, ...]) -> Optional[Tuple[Any, ...]]:
    """aten.convolution(x, w, bias, stride, padding, dilation, transposed, output_padding, groups): the key
    without x's spatial sizes, and only when x's channels fit the weight (else the kernel raises)."""
    if len(args) != 9:
        return None
    x, w, bias = args[0], args[1], args[2]
    if not (isinstance(x, torch.Tensor) and isinstance(w, torch.Tensor) and x.is_meta and w.is_meta) or x.dim() < 3:
        return None
    layout, w_layout = _layout(x), _layout(w)
    transposed, groups = bool(args[6]), args[8]
    if layout is None or w_layout is None or x.shape[1] != (w.shape[0] if transposed else w.shape[1] * groups):
        return None
    bias_sig = None if bias is None else (bias.shape, bias.dtype)
    rest = tuple(tuple(a) if isinstance(a, (list, tuple)) else a for a in args[3:])
    return (x.dim(), x.dtype, layout, tuple(s == 1 for s in x.shape), w.shape, w_layout, w.dtype, bias_sig, rest)


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


def _conv(func: Any, args: Tuple[Any, ...]) -> Any:
    """A convolution's result from its output-size formula and the layout its kernel chose for the class."""
    key = _conv_key(args)
    shape = None if key is None else _conv_shape(args[0], args[1], args)
    layout = _CONV.get(key) if shape is not None else None
    if layout is not None:
        return torch.empty_strided(shape, _standard(torch.Size(shape), layout == "cl"), dtype=args[0].dtype, device="meta")
    out = func(*args)
    if shape is not None and tuple(out.shape) == shape and out.dtype == args[0].dtype and len(_CONV) < _LIMIT:
        out_layout = _layout(out)
        if out_layout is not None:
            _CONV[key] = out_layout
    return out


def call(func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any], info: Optional[OpInfo] = None, *, cache: bool = True) -> Any:
    """``func(*args, **kwargs)``, or the same result rebuilt from memory (meta tensors only; see above).

    Example:
        >>> x = torch.empty(3, 4, device="meta")
        >>> call(torch.ops.aten.mm.default, (x, x.t()), {}).shape
        torch.Size([3, 3])
    """
    info = info or op_info(func)
    if not (cache and info.cacheable):
        return func(*args, **kwargs)
    if func is _CONVOLUTION and not kwargs:
        return _conv(func, args)
    class_key = _class_key(func, args, kwargs, info.name in _BATCH_NORM) if info.name in _CLASS_OPS else None
    if class_key is not None:
        recipe = _CLASS.get(class_key)
        if recipe is not None:
            return _class_rebuild(recipe, args[0])
    try:
        arg_sigs = tuple(_sig(a) for a in args)
        key = (func, arg_sigs, tuple((k, _sig(v)) for k, v in kwargs.items()) if kwargs else ())
    except _NoCache:
        return func(*args, **kwargs)
    recipe = _EXACT.get(key)
    if recipe is not None:
        return _rebuild(recipe, args)
    out = func(*args, **kwargs)
    if len(_EXACT) + len(_CLASS) < _LIMIT:
        recipe = _class_recipe(args[0], out) if class_key is not None else None
        if recipe is not None:
            _CLASS[class_key] = recipe
        else:
            recipe = _recipe(info, args, arg_sigs, out)
            if recipe is not None:
                _EXACT[key] = recipe
    return out
