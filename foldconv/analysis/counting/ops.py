"""What one aten op costs: an fvcore-style table ``{op: handle(inputs, outputs) -> OpCost}``.

Every op the counter sees is looked up in :data:`OP_COSTS` by its qualified name (``"aten::mm"``: the
packet ``torch.ops.aten.mm`` covers ``mm.default`` and ``mm.out``). An op with no entry is *unsupported*:
the counter lists it on the report (``CountReport.unsupported_ops``) instead of charging it a silent zero.
:func:`register_op_cost` adds a rule to the table (a second rule for an op needs ``replace=True``;
``OP_COSTS.unregister(op)`` removes one), and ``count(model, shape, op_costs={op: handle})`` prices ops for
one call without touching it. Ops that cost nothing (views, layout changes, copies, constructors) are
registered here as zero-cost explicitly, so "no rule" and "costs nothing" are never confused.

A handle receives ``inputs``, the op's arguments in schema order with keyword arguments and defaults
filled in, and ``outputs``, its returns as a tuple, and returns an :class:`OpCost`.

Conventions (the numbers are only as meaningful as these, so they are fixed here and nowhere else):

- **MAC** = one multiply-add of a matrix product or a convolution: aten ``mm``, ``addmm``, ``bmm``,
  ``baddbmm``, ``mv``, ``addmv``, ``dot``, ``_scaled_mm``, ``convolution`` (and its backend variants) and
  fused scaled-dot-product attention, which counts as its two matrix products ``Q·Kᵀ`` and ``P·V``
  (softmax is not a MAC). Unfused attention (torchvision's ViT, Swin and MaxViT on meta tensors) reaches
  the dispatcher as ``bmm``, so it is counted the same way. For every op that
  ``torch.utils.flop_counter.FlopCounterMode`` knows, MACs are exactly its FLOPs / 2. A transposed conv
  does its work at every *input* position.
- **Bias** is not a MAC: it costs 1 FLOP per output element (conv, ``addmm``, ``baddbmm``, ``addmv``).
- **FLOPs** = 2·MACs + elementwise FLOPs, where: arithmetic, comparisons and activations (add, mul, eq,
  ReLU, GELU, SiLU, sigmoid, ...) cost 1 per output element; batch norm 2 per element (inference: one
  scale, one shift); layer/group/RMS norm 5 per element (mean, centre, variance, normalise, affine);
  softmax 3 per element (exp, sum, divide); max/avg pooling one per window element per output (compare
  or add); linear interpolation one per tap per output element (bilinear 4, trilinear 8, bicubic 16);
  adaptive pooling, reductions (mean, sum, amax, vector norm), ``nonzero``, ``topk`` and torchvision's
  ``nms`` one per input element, as ``col2im`` (``nn.Fold`` adds overlapping patches; ``im2col`` only copies);
  torchvision's ``roi_align`` 4 per sampling point per output element.
  Data movement (views, copies, ``cat``, pad, permute, index, masked_fill, nearest upsampling, ``eye``,
  ``.item()``) and constructors (random ones too) cost 0.

Example:
    >>> a, b = torch.empty(4, 5, device="meta"), torch.empty(5, 6, device="meta")
    >>> op_cost(torch.ops.aten.mm.default, (a, b), {}, torch.mm(a, b))
    OpCost(macs=120, elementwise_flops=0)
    >>> bias = torch.empty(6, device="meta")
    >>> op_cost(torch.ops.aten.addmm.default, (bias, a, b), {}, torch.addmm(bias, a, b)).flops
    264
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import torch
from torch._ops import OpOverload, OpOverloadPacket
from torch.utils._pytree import tree_flatten

from ...errors import fold_error
from ...registry import Registry

__all__ = [
    "OpCost", "Handle", "MAC_OPS", "OP_COSTS", "register_op_cost", "op_cost", "op_name", "bind_inputs",
    "first_tensor", "first_numel", "OpInfo", "op_info", "per_output", "per_input", "window_rule", "zero_cost", "register_aten",
]


@dataclass(frozen=True)
class OpCost:
    """The cost of one op call: multiply-adds and elementwise FLOPs (``flops = 2 * macs + elementwise``).

    Example:
        >>> OpCost(macs=10, elementwise_flops=3).flops
        23
    """

    macs: int = 0
    elementwise_flops: int = 0

    @property
    def flops(self) -> int:
        return 2 * self.macs + self.elementwise_flops


Handle = Callable[[Sequence[Any], Sequence[Any]], OpCost]
ZERO = OpCost()


def first_tensor(value: Any) -> Optional[torch.Tensor]:
    """The first tensor in a pytree (an op's outputs, a module's arguments), or None.

    Example:
        >>> first_tensor((1, [torch.zeros(2)])).shape
        torch.Size([2])
    """
    if isinstance(value, torch.Tensor):
        return value
    if isinstance(value, (tuple, list)) and value and isinstance(value[0], torch.Tensor):  # an op's (out,)
        return value[0]
    for leaf in tree_flatten(value)[0]:
        if isinstance(leaf, torch.Tensor):
            return leaf
    return None


def first_numel(value: Any) -> int:
    """The number of elements of the first tensor in a pytree (0 when there is none).

    Example:
        >>> first_numel((torch.zeros(2, 3), torch.zeros(5)))
        6
    """
    t = first_tensor(value)
    return t.numel() if t is not None else 0


def _packet(op: Any) -> OpOverloadPacket:
    if isinstance(op, OpOverload):
        return op.overloadpacket
    if isinstance(op, OpOverloadPacket):
        return op
    overload = getattr(op, "_opoverload", None)  # a torch.library.custom_op (CustomOpDef)
    if isinstance(overload, OpOverload):
        return overload.overloadpacket
    raise fold_error("op", op, _OP_RULE)


_OP_RULE = ("must be an op such as torch.ops.aten.mm or torch.ops.mylib.myop (a packet or overload), "
            "a torch.library.custom_op, or (for the cost table) a qualified name 'namespace::name'")


def _qualified(op: Any) -> str:
    """The table's key of an op: its qualified name (``"aten::mm"``); a name ``"namespace::op"`` is taken as it is,
    so ops of libraries that are not loaded yet (torchvision's) can have a rule."""
    if isinstance(op, str):
        space, _, name = op.partition("::")
        if space.strip() and name.strip() and "::" not in name:
            return op
        raise fold_error("op", op, _OP_RULE)
    return _packet(op)._qualified_op_name


def _check_handle(op: Any, handle: Any) -> None:
    if not callable(handle):
        raise fold_error("handle", handle, "must be a callable handle(inputs, outputs) -> OpCost")


#: The cost of every op the counter can price: ``qualified op name -> handle(inputs, outputs) -> OpCost``.
OP_COSTS: Registry[Handle] = Registry("op", normalize=_qualified, check_value=_check_handle, param="op_costs")


def op_name(op: Any) -> str:
    """How reports name an op: aten ops by their short name (``mm``), others qualified (``mylib::myop``).

    Example:
        >>> op_name(torch.ops.aten.mm.default), op_name(torch.ops.aten.convolution)
        ('mm', 'convolution')
    """
    packet = _packet(op)
    qualified = packet._qualified_op_name
    return packet.__name__ if qualified.startswith("aten::") else qualified


def register_op_cost(op: Any, handle: Optional[Handle] = None, *, replace: bool = False) -> Any:
    """Give ``op`` (``torch.ops.aten.upsample_bilinear2d``, an overload, a ``torch.library.custom_op`` or a
    qualified name ``"mylib::op"``) a cost rule in :data:`OP_COSTS`; without ``handle``, a decorator.

    ``handle(inputs, outputs)`` returns an :class:`OpCost`; ``inputs`` are the op's arguments in schema
    order (keyword arguments and defaults filled in), ``outputs`` its returns as a tuple. An op that has a
    rule already is a FoldError unless ``replace=True``; ``OP_COSTS.unregister(op)`` removes a rule (the op is
    reported as unsupported again). To price an op for one count only: ``count(..., op_costs={op: handle})``.

    Example:
        >>> @torch.library.custom_op("doc_example::matmul", mutates_args=())
        ... def matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        ...     return a @ b
        >>> @matmul.register_fake
        ... def _(a, b):
        ...     return a.new_empty(a.shape[0], b.shape[1])
        >>> @register_op_cost(matmul)
        ... def matmul_cost(inputs, outputs):
        ...     a, b = inputs
        ...     return OpCost(macs=a.shape[0] * a.shape[1] * b.shape[1])
        >>> from foldconv.analysis.counting import count
        >>> class Net(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.w = torch.nn.Parameter(torch.ones(4, 6))
        ...     def forward(self, x):
        ...         return matmul(x, self.w)
        >>> rep = count(Net(), (3, 4))
        >>> rep.macs, rep.complete
        (72, True)
        >>> OP_COSTS.unregister(matmul) is matmul_cost  # removed again: now it is reported
        True
        >>> count(Net(), (3, 4)).unsupported_ops
        (UnsupportedOp(op='doc_example::matmul', calls=1, layers=('(root)',)),)
    """
    if handle is None:
        return OP_COSTS.register(op, replace=replace)
    return OP_COSTS.register(op, handle, replace=replace)


@dataclass(frozen=True)
class OpInfo:
    """What the counter needs of an overload, looked up once (per-call schema lookups are the counter's main
    Python cost): its report name, whether it returns several values, which returns are fresh tensors (not
    views or in-place results), and whether its meta results may be cached. (Its cost rule is looked up once
    per count: a count may bring rules of its own.)"""

    name: str
    multiple: bool
    fresh: Tuple[bool, ...]
    cacheable: bool


_INFO: Dict[OpOverload, OpInfo] = {}
_NOT_CACHEABLE = {"set_", "resize_", "resize_as_", "_local_scalar_dense", "item"}


def op_info(func: OpOverload) -> OpInfo:
    """The cached :class:`OpInfo` of an overload.

    Example:
        >>> info = op_info(torch.ops.aten.max_pool2d_with_indices.default)
        >>> info.name, info.multiple, info.fresh
        ('max_pool2d_with_indices', True, (True, True))
    """
    info = _INFO.get(func)
    if info is None:
        returns = func._schema.returns
        name = op_name(func)
        tags = set(func.tags)
        info = OpInfo(
            name=name,
            multiple=len(returns) > 1,
            fresh=tuple(r.alias_info is None for r in returns),
            cacheable=name not in _NOT_CACHEABLE
            and torch.Tag.inplace_view not in tags
            and torch.Tag.data_dependent_output not in tags
            and torch.Tag.dynamic_output_shape not in tags,
        )
        _INFO[func] = info
    return info


_SCHEMAS: Dict[OpOverload, Tuple[Tuple[str, bool, Any], ...]] = {}


def bind_inputs(func: OpOverload, args: Sequence[Any], kwargs: Mapping[str, Any]) -> Tuple[Any, ...]:
    """The op's arguments in schema order: positional ones, then keyword arguments or defaults (None if neither).

    Example:
        >>> a = torch.empty(2, 2, device="meta")
        >>> bind_inputs(torch.ops.aten.addmm.default, (a, a, a), {"beta": 0})[3:]
        (0, 1)
    """
    schema = _SCHEMAS.get(func)
    if schema is None:
        schema = tuple(
            (a.name, a.has_default_value(), a.default_value if a.has_default_value() else None)
            for a in func._schema.arguments
        )
        _SCHEMAS[func] = schema
    if len(args) >= len(schema):
        return tuple(args)
    rest = schema[len(args):]
    return tuple(args) + tuple(kwargs[name] if name in kwargs else default for name, _, default in rest)


def _outputs(func: OpOverload, out: Any) -> Tuple[Any, ...]:
    return tuple(out) if isinstance(out, (tuple, list)) and len(func._schema.returns) > 1 else (out,)


def op_cost(func: OpOverload, args: Sequence[Any], kwargs: Mapping[str, Any], out: Any) -> OpCost:
    """The cost of one call of ``func`` by its rule; a FoldError naming ``op`` when it has none.

    Example:
        >>> x = torch.empty(2, 3, device="meta")
        >>> op_cost(torch.ops.aten.permute.default, (x, [1, 0]), {}, x.permute(1, 0))
        OpCost(macs=0, elementwise_flops=0)
    """
    if not isinstance(func, OpOverload):
        raise fold_error("func", func, "must be an OpOverload such as torch.ops.aten.mm.default")
    handle = OP_COSTS.find(func)
    if handle is None:
        raise fold_error("op", func.overloadpacket.__name__, "has no cost rule (register one with register_op_cost)")
    return handle(bind_inputs(func, args, kwargs), _outputs(func, out))


# ---------------------------------------------------------------------------------------------- rules


def _conv_rule(packet: OpOverloadPacket) -> Handle:
    names = [a.name for a in packet.default._schema.arguments]
    bias_at = names.index("bias") if "bias" in names else None
    transposed_at = names.index("transposed") if "transposed" in names else None

    def handle(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
        x, w, y = inputs[0], inputs[1], first_tensor(outputs)
        transposed = transposed_at is not None and bool(inputs[transposed_at])
        # A transposed conv does its work at every *input* position, a plain one at every output position.
        spatial = x.shape[2:] if transposed else y.shape[2:]
        bias = bias_at is not None and isinstance(inputs[bias_at], torch.Tensor)
        return OpCost(x.shape[0] * math.prod(w.shape) * math.prod(spatial), y.numel() if bias else 0)

    return handle


def _matmul_rule(a_at: int, b_at: int, batched: bool, beta_at: Optional[int]) -> Handle:
    def handle(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
        a, b = inputs[a_at], inputs[b_at]
        macs = a.shape[0] * a.shape[1] * a.shape[2] * b.shape[2] if batched else a.shape[0] * a.shape[1] * b.shape[1]
        adds = beta_at is not None and inputs[beta_at] != 0  # beta = 0 drops the added (bias) term
        return OpCost(macs, first_numel(outputs) if adds else 0)

    return handle


def _mv(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
    return OpCost(inputs[0].shape[0] * inputs[0].shape[1])


def _addmv(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
    return OpCost(inputs[1].shape[0] * inputs[1].shape[1], first_numel(outputs) if inputs[3] != 0 else 0)


def _dot(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
    return OpCost(inputs[0].shape[0])


def _attention_rule(heads_second: bool) -> Handle:
    def handle(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
        q, k, v = inputs[0], inputs[1], inputs[2]
        if heads_second:  # (B, H, L, E)
            b, h, lq, e = q.shape
            s = k.shape[-2]
        else:  # (B, L, H, E)
            b, lq, h, e = q.shape
            s = k.shape[1]
        return OpCost(b * h * lq * s * e + b * h * lq * s * v.shape[-1])

    return handle


def per_output(factor: int) -> Handle:
    """The rule "``factor`` elementwise FLOPs per element of the (first) output".

    Example:
        >>> per_output(3)((), (torch.empty(2, 5, device="meta"),))
        OpCost(macs=0, elementwise_flops=30)
    """
    def handle(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
        return OpCost(0, factor * first_numel(outputs))

    return handle


def per_input(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
    """The rule "one elementwise FLOP per element of the first input" (reductions, comparisons with every input)."""
    return OpCost(0, first_numel(inputs[0]))


def window_rule(dims: int) -> Handle:
    """The rule of a ``dims``-d window op (pooling): one FLOP per window element per output element; the
    kernel size is the op's second argument (one int or one per axis).

    Example:
        >>> window_rule(2)((None, [3, 3]), (torch.empty(1, 1, 4, 4, device="meta"),))
        OpCost(macs=0, elementwise_flops=144)
    """
    def handle(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
        kernel = [inputs[1]] if isinstance(inputs[1], int) else list(inputs[1])
        if len(kernel) == 1:
            kernel = kernel * dims
        return OpCost(0, first_numel(outputs) * math.prod(kernel))

    return handle


def zero_cost(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
    """The rule of ops that only move data or make tensors: they cost nothing (and are not unsupported)."""
    return ZERO


def register_aten(names: Iterable[str], handle: Handle, *, inplace: bool = False, replace: bool = False) -> List[str]:
    """Register ``handle`` for every named aten op this torch has (and, with ``inplace``, its ``name_`` in-place
    twin); returns the names registered. How the built-in rules are written.

    Example:
        >>> register_aten(["sort"], per_input)
        ['sort']
        >>> _ = OP_COSTS.unregister("aten::sort")
    """
    found = []
    for name in names:
        for variant in (name, name + "_") if inplace else (name,):
            packet = getattr(torch.ops.aten, variant, None)
            if packet is not None:
                OP_COSTS.register(packet, handle, replace=replace)
                found.append(variant)
    return found


_CONV_OPS = (
    "convolution", "_convolution", "convolution_overrideable", "_slow_conv2d_forward", "cudnn_convolution",
    "mkldnn_convolution", "slow_conv3d_forward", "slow_conv_dilated2d", "slow_conv_dilated3d", "thnn_conv2d",
)
# Attention ops whose q/k/v are laid out (B, H, L, E), and those laid out (B, L, H, E).
_SDPA_BHLE = (
    "_scaled_dot_product_flash_attention", "_scaled_dot_product_efficient_attention",
    "_scaled_dot_product_cudnn_attention", "_scaled_dot_product_flash_attention_for_cpu",
    "_scaled_dot_product_fused_attention_overrideable",
)
_SDPA_BLHE = ("_flash_attention_forward", "_efficient_attention_forward")
_ONE_PER_ELEMENT = (
    "add", "sub", "rsub", "mul", "div", "neg", "abs", "exp", "log", "sqrt", "rsqrt", "pow", "reciprocal",
    "relu", "relu6", "hardtanh", "gelu", "silu", "sigmoid", "tanh", "hardswish", "hardsigmoid",
    "leaky_relu", "elu", "mish", "softplus", "clamp", "clamp_min", "clamp_max", "maximum", "minimum",
    "where", "erf", "lerp", "addcmul", "addcdiv", "prelu", "_prelu_kernel", "glu",
    "eq", "ne", "lt", "le", "gt", "ge", "logical_not", "logical_and", "logical_or", "bitwise_not",
    "sin", "cos", "tan", "asin", "acos", "atan", "atan2", "sinh", "cosh", "asinh", "acosh", "atanh", "exp2",
    "expm1", "log2", "log10", "log1p", "square", "floor", "ceil", "round", "trunc", "frac", "remainder", "fmod",
    "floor_divide", "hypot", "logical_xor", "bitwise_and", "bitwise_or", "bitwise_xor", "isnan", "isinf",
    "nan_to_num", "sign", "sgn", "signbit", "logit", "log_sigmoid_forward", "softshrink", "hardshrink", "celu",
    "selu", "rrelu_with_noise", "threshold", "sinc", "xlogy", "special_xlog1py",
)
# Interpolation: one FLOP per tap per output element (as pooling: one per window element).
_INTERPOLATE = {
    "upsample_linear1d": 2, "upsample_bilinear2d": 4, "_upsample_bilinear2d_aa": 4, "upsample_trilinear3d": 8,
    "upsample_bicubic2d": 16, "_upsample_bicubic2d_aa": 16, "grid_sampler_2d": 4, "grid_sampler_3d": 8,
}
_BATCH_NORM = (
    "native_batch_norm", "_native_batch_norm_legit", "_native_batch_norm_legit_no_training",
    "cudnn_batch_norm", "miopen_batch_norm", "batch_norm",
)
_OTHER_NORM = ("native_layer_norm", "native_group_norm", "_fused_rms_norm")
_SOFTMAX = ("_softmax", "softmax", "_safe_softmax", "_log_softmax", "log_softmax")
_WINDOW_POOL = {
    "max_pool1d": 1, "max_pool2d": 2, "max_pool3d": 3, "max_pool2d_with_indices": 2, "max_pool3d_with_indices": 3,
    "avg_pool1d": 1, "avg_pool2d": 2, "avg_pool3d": 3,
}
_INPUT_REDUCE = (
    "mean", "sum", "amax", "amin", "max", "min", "var", "std", "var_mean", "std_mean", "logsumexp",
    "linalg_vector_norm", "norm", "all", "any", "_adaptive_avg_pool2d", "_adaptive_avg_pool3d", "adaptive_avg_pool1d",
    "adaptive_max_pool2d", "adaptive_max_pool3d",
)
# Cost nothing: views and layout changes, copies and casts, padding, indexing and gathering, nearest
# upsampling, constructors and scratch (aten.empty*). (index_put, a scatter that may accumulate, is priced
# with the scatter-type ops in backward.py: 1 per element of its first input.)
_DATA_MOVEMENT = (
    "view", "_unsafe_view", "_reshape_alias", "reshape", "alias", "as_strided", "as_strided_", "expand", "permute",
    "transpose", "transpose_", "t", "t_", "squeeze", "squeeze_", "unsqueeze", "unsqueeze_", "select", "slice",
    "split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "unbind", "diagonal", "unfold", "detach", "view_as_real", "view_as_complex",
    "clone", "copy", "copy_", "_to_copy", "lift_fresh", "lift_fresh_copy", "cat", "stack", "constant_pad_nd",
    "reflection_pad1d", "reflection_pad2d", "reflection_pad3d", "replication_pad1d", "replication_pad2d",
    "replication_pad3d", "index", "_unsafe_index", "index_select", "gather", "masked_fill", "masked_fill_",
    "slice_scatter", "select_scatter", "roll", "flip", "repeat",
    "pixel_shuffle", "pixel_unshuffle", "channel_shuffle", "native_channel_shuffle", "embedding",
    "upsample_nearest1d", "upsample_nearest2d", "upsample_nearest3d", "_upsample_nearest_exact1d",
    "_upsample_nearest_exact2d", "_upsample_nearest_exact3d",
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "ones",
    "ones_like", "full", "full_like", "new_zeros", "new_ones", "new_full", "arange", "scalar_tensor",
    "fill", "fill_", "zero", "zero_", "eye", "tril", "triu", "tril_", "triu_", "_local_scalar_dense", "is_nonzero",
    "linspace", "logspace", "randn", "rand", "randint", "randperm", "bernoulli", "bernoulli_",
    "normal", "normal_", "uniform_", "new_tensor", "_assert_async", "_assert_scalar", "sym_constrain_range_for_size",
)

for _name in _CONV_OPS:
    _conv = getattr(torch.ops.aten, _name, None)
    if _conv is not None:
        OP_COSTS.register(_conv, _conv_rule(_conv))
register_aten(["mm", "_scaled_mm"], _matmul_rule(0, 1, False, None))
register_aten(["addmm"], _matmul_rule(1, 2, False, 3))
register_aten(["bmm"], _matmul_rule(0, 1, True, None))
register_aten(["baddbmm"], _matmul_rule(1, 2, True, 3))
register_aten(["mv"], _mv)
register_aten(["addmv"], _addmv)
register_aten(["dot"], _dot)
register_aten(_SDPA_BHLE, _attention_rule(True))
register_aten(_SDPA_BLHE, _attention_rule(False))
register_aten(_ONE_PER_ELEMENT, per_output(1), inplace=True)
register_aten(_BATCH_NORM, per_output(2))
register_aten(_OTHER_NORM, per_output(5))
register_aten(_SOFTMAX, per_output(3))
for _name, _dims in _WINDOW_POOL.items():
    register_aten([_name], window_rule(_dims))
for _name, _taps in _INTERPOLATE.items():
    register_aten([_name], per_output(_taps))
# nonzero / argwhere: one comparison with zero per input element (the index list is data movement);
# topk and torchvision's nms: one comparison per input element too.
register_aten(["nonzero", "nonzero_static", "argwhere", "topk"], per_input)
# nn.Unfold / nn.Fold: im2col only copies; col2im adds the overlapping patches (one add per input element).
register_aten(["im2col"], zero_cost)
register_aten(["col2im"], per_input)


def _roi_align(inputs: Sequence[Any], outputs: Sequence[Any]) -> OpCost:
    # One bilinear sample (4 taps) per sampling point per output element; adaptive sampling
    # (sampling_ratio <= 0: data-dependent) is counted as one point per bin.
    points = max(int(inputs[5]), 1) ** 2
    return OpCost(0, 4 * points * first_numel(outputs))


# torchvision's ops by name: torchvision need not be loaded
OP_COSTS.register("torchvision::roi_align", _roi_align)
OP_COSTS.register("torchvision::nms", per_input)
register_aten(_INPUT_REDUCE, per_input)
register_aten(_DATA_MOVEMENT, zero_cost)

MAC_OPS = frozenset(
    name for name in _CONV_OPS + _SDPA_BHLE + _SDPA_BLHE + ("mm", "_scaled_mm", "addmm", "bmm", "baddbmm", "mv", "addmv", "dot")
    if f"aten::{name}" in OP_COSTS
)
