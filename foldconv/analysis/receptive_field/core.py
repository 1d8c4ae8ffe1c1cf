"""Analytic receptive fields of any ``torch.fx``-traceable model, in the coordinates of the network's input.

``receptive_field(model, input_shape)`` traces the model, runs it once on meta tensors (no memory, no
arithmetic) to learn every node's shape, and gives every node, per spatial axis, the receptive-field size
``r``, the effective stride (jump) ``j`` and the effective padding ``P`` of Araujo, Norris & Sim
(Distill 2019): output index ``i`` of the node reads the input pixels ``[i*j - P, i*j - P + r - 1]``.

Layout ops move features off the input grid: depth-to-space / pixel shuffle by ``r`` divides the jump by
``r`` (``fractions.Fraction``), space-to-depth multiplies it. A node whose boxes are not of the affine form
above is reported ``aligned=False``; its ``rf`` is then the largest exact box and ``jump`` the geometric
(fractional) stride. Exact boxes for any node and index come from :meth:`RFReport.box`, which pulls the
index back through the graph (``clip=True`` also clips at every layer's border, giving the exact support of
the gradient). Derivations: ``paper_notes/receptive_fields.md``.
"""
from __future__ import annotations

import math
import operator
import re
import warnings
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ...errors import FoldError, fold_error
from ...layout import DepthToSpace, SpaceToDepth, depth_to_space, space_to_depth
from .geometry import IDENTITY, Adaptive, AxisMap, Broadcast, Local, Regroup, Resample, Transposed, Whole

__all__ = [
    "AxisRF",
    "NodeRF",
    "RFReport",
    "RFAlignmentWarning",
    "UnsupportedOpError",
    "receptive_field",
    "trace_model",
    "register_rf_rule",
]


class RFAlignmentWarning(UserWarning):
    """Merged paths see regions with different centres or different strides (Araujo et al.'s alignment)."""


class UnsupportedOpError(FoldError):
    """The analyzer has no receptive-field rule for an op (or cannot trace the model)."""


@dataclass(frozen=True)
class AxisRF:
    """Receptive field of one node along one spatial axis, in input pixels.

    ``aligned``: every output ``i`` reads exactly ``[i*box_jump - padding, ... + rf - 1]`` with integers.
    ``jump`` is the geometric effective stride (a Fraction after depth-to-space / upsampling);
    ``constant``: every output of the node reads the same box (after global pooling, SE gates, linear).
    ``exact``: False where a reshape merged this axis with others and the box is a conservative hull.
    """

    rf: int
    jump: Fraction
    padding: int
    aligned: bool = True
    constant: bool = False
    exact: bool = True
    box_jump: int = 1


@dataclass
class NodeRF:
    """A traced node, its shape and its per-axis receptive fields."""

    name: str
    op: str
    shape: Tuple[int, ...]
    axes: Tuple[AxisRF, ...]
    notes: Tuple[str, ...] = ()

    @property
    def rf(self) -> Tuple[int, ...]:
        return tuple(a.rf for a in self.axes)

    @property
    def jump(self) -> Tuple[Fraction, ...]:
        return tuple(a.jump for a in self.axes)

    @property
    def padding(self) -> Tuple[int, ...]:
        return tuple(a.padding for a in self.axes)

    @property
    def aligned(self) -> bool:
        return all(a.aligned for a in self.axes)

    @property
    def exact(self) -> bool:
        return all(a.exact for a in self.axes)


# --------------------------------------------------------------------------------------------- internals


@dataclass
class _Geom:
    """How a node is computed from its tensor inputs: one AxisMap per axis per input, and the output layout."""

    links: List[Tuple[fx.Node, Tuple[AxisMap, ...]]]
    dims: Tuple[Optional[int], ...]
    merged: Tuple[bool, ...]
    exact: Tuple[bool, ...]
    note: str = ""
    measured: bool = False


@dataclass
class _Rec:
    node: fx.Node
    geom: Optional[_Geom]
    shape: Tuple[int, ...]
    r: List[int] = field(default_factory=list)
    bj: List[int] = field(default_factory=list)
    p: List[int] = field(default_factory=list)
    j: List[Fraction] = field(default_factory=list)
    aligned: List[bool] = field(default_factory=list)

    def n(self, axis: int) -> int:
        d = self.geom.dims[axis]
        if d is None or self.geom.merged[axis]:
            return 1
        return int(self.shape[d])

    def local(self, axis: int) -> bool:
        return self.geom.dims[axis] is not None and not self.geom.merged[axis]


_RULES: Dict[Any, Callable] = {}


def register_rf_rule(target: Any, rule: Optional[Callable] = None):
    """Register a receptive-field rule for a module class, a function or a method name.

    A rule is ``rule(ctx, node) -> _Geom``; see the built-in rules in this module (``_pointwise`` keeps
    the layout, ``ctx.spatial(node, src, {dim: AxisMap})`` applies per-dim maps). Usable as a decorator.

    Example:
        >>> class Gate(torch.nn.Module):
        ...     def forward(self, x):
        ...         return x * 2
        >>> _ = register_rf_rule(Gate, lambda ctx, node: ctx.pointwise(node))
    """

    def deco(fn):
        _RULES[target] = fn
        return fn

    return deco(rule) if rule is not None else deco


def _leaf_types() -> Tuple[type, ...]:
    types: List[type] = [DepthToSpace, SpaceToDepth]
    try:
        from einops.layers.torch import Rearrange

        types.append(Rearrange)
    except ImportError:  # einops is a dependency, but the analyzer itself does not need it
        pass
    return tuple(types)


class _Tracer(fx.Tracer):
    def __init__(self, leaf_modules: Sequence[type] = ()):
        super().__init__(autowrap_functions=(depth_to_space, space_to_depth))
        self._leaves = _leaf_types() + tuple(leaf_modules) + tuple(t for t in _RULES if isinstance(t, type))

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, self._leaves):
            return True
        return super().is_leaf_module(m, qualname)


def trace_model(model: nn.Module, leaf_modules: Sequence[type] = ()) -> fx.GraphModule:
    """Trace ``model`` in eval mode with foldconv's layout modules (and einops ``Rearrange``) kept as leaves.

    Raises :class:`UnsupportedOpError` naming the model when ``torch.fx`` cannot trace it.

    Example:
        >>> gm = trace_model(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), DepthToSpace(1)))
        >>> [n.op for n in gm.graph.nodes]
        ['placeholder', 'call_module', 'call_module', 'output']
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    modes = {m: m.training for m in model.modules()}
    model.eval()  # control flow on self.training (aux heads) must take the inference branch
    try:
        tracer = _Tracer(leaf_modules)
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, AttributeError...)
        raise UnsupportedOpError(
            f"model={type(model).__name__!r}: torch.fx cannot trace it ({type(exc).__name__}: {exc}); "
            "pass fallback='empirical' or make the data-dependent part a leaf module"
        ) from exc
    finally:
        for m, t in modes.items():
            m.training = t
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


class _Recorder(fx.Interpreter):
    def __init__(self, gm):
        super().__init__(gm, garbage_collect_values=False)


class _MetaRunner(nn.Module):
    def __init__(self, gm):
        super().__init__()
        self.gm = gm

    def forward(self, x):
        rec = _Recorder(self.gm)
        rec.run(x)
        return {n: _summarise(v) for n, v in rec.env.items()}


class _TShape(tuple):
    """The shape of a tensor value (plain tuples and torch.Size values are shapes *as data*)."""


def _summarise(v):
    if isinstance(v, torch.Tensor):
        return _TShape(v.shape)
    if isinstance(v, torch.Size):
        return tuple(v)
    if isinstance(v, (tuple, list)):
        return type(v)(_summarise(x) for x in v) if not hasattr(v, "_fields") else tuple(_summarise(x) for x in v)
    return v


def _meta_values(gm: fx.GraphModule, input_shape: Tuple[int, ...]) -> Dict[fx.Node, Any]:
    state = {f"gm.{k}": torch.empty_like(v, device="meta") for k, v in gm.named_parameters(remove_duplicate=False)}
    state.update({f"gm.{k}": torch.empty_like(v, device="meta") for k, v in gm.named_buffers(remove_duplicate=False)})
    runner = _MetaRunner(gm)
    x = torch.empty(input_shape, device="meta")
    modes = {m: m.training for m in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            return torch.func.functional_call(runner, state, (x,), strict=False)
    except FoldError:
        raise
    except Exception as exc:
        raise UnsupportedOpError(
            f"input_shape={tuple(input_shape)!r}: running the traced model on meta tensors failed "
            f"({type(exc).__name__}: {exc}); check the input size, or the model has data-dependent ops"
        ) from exc
    finally:
        for m, t in modes.items():
            m.training = t


def _is_shape(v) -> bool:
    return isinstance(v, _TShape)


def _has_tensor(v) -> bool:
    if _is_shape(v):
        return True
    if isinstance(v, (tuple, list)):
        return any(_has_tensor(x) for x in v)
    return False


def _op_name(gm: fx.GraphModule, node: fx.Node) -> str:
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)


class _Ctx:
    """What a rule sees: values of every node (shapes for tensors), the records of the inputs."""

    def __init__(self, gm, values, recs, naxes):
        self.gm, self.values, self.recs, self.naxes = gm, values, recs, naxes

    # -- helpers for rules
    def val(self, arg):
        return fx.node.map_arg(arg, lambda n: self.values.get(n))

    def shape(self, node) -> Tuple[int, ...]:
        return tuple(self.values[node])

    def module(self, node) -> nn.Module:
        return self.gm.get_submodule(node.target)

    def tensor_inputs(self, node) -> List[fx.Node]:
        found: List[fx.Node] = []
        fx.node.map_arg((node.args, node.kwargs), lambda n: found.append(n) if self.recs.get(n) and self.recs[n].geom else None)
        return list(dict.fromkeys(found))

    def arg(self, node, index: int, name: str, default=None):
        if len(node.args) > index:
            return self.val(node.args[index])
        return self.val(node.kwargs.get(name, default))

    def first(self, node) -> fx.Node:
        ins = self.tensor_inputs(node)
        if not ins:
            raise UnsupportedOpError(f"node={node.name!r}: has no tensor input")
        return ins[0]

    def spatial(self, node, src: fx.Node, per_dim: Mapping[int, AxisMap], mixes: Sequence[int] = (), keep_rank: bool = True) -> _Geom:
        """Same layout as ``src``; local axes at a dim in ``per_dim`` get that map, at a dim in ``mixes``
        they become whole (the op mixes along that dim)."""
        rec = self.recs[src]
        rank = len(rec.shape)
        per = {d % rank: m for d, m in per_dim.items()}
        mix = {d % rank for d in mixes}
        maps, dims, merged, exact = [], [], [], []
        for a in range(self.naxes):
            d, mg, ex = rec.geom.dims[a], rec.geom.merged[a], rec.geom.exact[a]
            if d is None:
                maps.append(IDENTITY); dims.append(None); merged.append(False); exact.append(ex)
            elif d in mix:
                maps.append(IDENTITY if mg else Whole(rec.shape[d])); dims.append(None); merged.append(False); exact.append(True)
            elif mg:
                maps.append(IDENTITY); dims.append(d); merged.append(True); exact.append(ex)
            else:
                maps.append(per.get(d, IDENTITY)); dims.append(d); merged.append(False); exact.append(ex)
        return _Geom([(src, tuple(maps))], tuple(dims), tuple(merged), tuple(exact))

    def pointwise(self, node, inputs: Optional[Sequence[fx.Node]] = None) -> _Geom:
        """Elementwise op over broadcast inputs (add, mul, activations...)."""
        inputs = list(inputs) if inputs is not None else self.tensor_inputs(node)
        out_shape = self.values[node]
        if not _is_shape(out_shape):
            out_shape = self.recs[inputs[0]].shape
        out_rank = len(out_shape)
        links, dims, merged, exact = [], [None] * self.naxes, [False] * self.naxes, [True] * self.naxes
        for src in inputs:
            rec = self.recs[src]
            shift = out_rank - len(rec.shape)
            maps = []
            for a in range(self.naxes):
                d = rec.geom.dims[a]
                exact[a] = exact[a] and rec.geom.exact[a]
                if d is None:
                    maps.append(IDENTITY)
                    continue
                e = d + shift
                if rec.geom.merged[a]:
                    maps.append(IDENTITY)
                    if dims[a] is None:
                        dims[a], merged[a] = e, True
                    continue
                if rec.shape[d] == 1 and out_shape[e] != 1:
                    maps.append(Broadcast())
                else:
                    maps.append(IDENTITY)
                if dims[a] is None or merged[a]:
                    dims[a], merged[a] = e, False
                elif dims[a] != e:
                    raise UnsupportedOpError(f"node={node.name!r}: inputs carry spatial axis {a} on different dims")
            links.append((src, tuple(maps)))
        for a in range(self.naxes):
            if dims[a] is not None and not merged[a]:
                # a local axis merged with broadcast copies: the others must use Broadcast only
                pass
        return _Geom(links, tuple(dims), tuple(merged), tuple(exact))

    def relayout(self, node, src: fx.Node, dim_map: Mapping[int, Optional[int]], merge_dims: Sequence[int] = ()) -> _Geom:
        """Pure re-indexing of dims (permute, view...): ``dim_map[in_dim] = out_dim``; axes on ``merge_dims``
        (input dims) get merged with other dims: conservative whole-axis boxes, exact=False."""
        rec = self.recs[src]
        maps, dims, merged, exact = [], [], [], []
        for a in range(self.naxes):
            d, mg, ex = rec.geom.dims[a], rec.geom.merged[a], rec.geom.exact[a]
            if d is None:
                maps.append(IDENTITY); dims.append(None); merged.append(False); exact.append(ex)
                continue
            out = dim_map.get(d)
            if d in merge_dims or mg:
                n = rec.shape[d]
                if not mg and n == 1:  # a size-1 axis is one position: dropping or merging it loses nothing
                    maps.append(IDENTITY if n == 1 else Whole(n)); dims.append(None); merged.append(False); exact.append(ex)
                else:
                    maps.append(IDENTITY if mg else Whole(n)); dims.append(out); merged.append(True); exact.append(ex and mg)
            else:
                maps.append(IDENTITY); dims.append(out); merged.append(False); exact.append(ex)
                if out is None:
                    raise UnsupportedOpError(f"node={node.name!r}: drops spatial dim {d} of size {rec.shape[d]}")
        return _Geom([(src, tuple(maps))], tuple(dims), tuple(merged), tuple(exact))


# --------------------------------------------------------------------------------------------- rules


def _tup(v, n):
    if isinstance(v, (tuple, list)):
        return tuple(int(x) for x in v)
    return (int(v),) * n


def _conv_padding(padding, kernel, dilation, n):
    if isinstance(padding, str):
        if padding == "valid":
            return (0,) * n
        return tuple((d * (k - 1)) // 2 for k, d in zip(kernel, dilation))  # torch puts the extra pixel right
    return _tup(padding, n)


def _conv_geom(ctx, node, src, kernel, stride, padding, dilation, mode="zeros", transposed=False):
    nd = len(kernel)
    stride, dilation = _tup(stride, nd), _tup(dilation, nd)
    padding = _conv_padding(padding, kernel, dilation, nd)
    per = {}
    for i in range(nd):
        k = dilation[i] * (kernel[i] - 1) + 1
        if transposed and stride[i] > 1:
            per[-nd + i] = Transposed(k, stride[i], padding[i])
        elif transposed:
            per[-nd + i] = Local(k, 1, k - 1 - padding[i])
        else:
            per[-nd + i] = Local(k, stride[i], padding[i], mode, dilation[i])
    return ctx.spatial(node, src, per, mixes=(-nd - 1,))


_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_TCONVS = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_MAXPOOL = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)
_AVGPOOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d)
_ADAPTIVE = (
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d,
    nn.AdaptiveMaxPool1d, nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d,
)
_POINTWISE_MODULES = (
    nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Hardswish,
    nn.Hardsigmoid, nn.Sigmoid, nn.Tanh, nn.Hardtanh, nn.Softplus, nn.Identity, nn.Dropout, nn.Dropout1d,
    nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d,
    nn.LocalResponseNorm, nn.ChannelShuffle, nn.SyncBatchNorm,
)
_PADS = {
    nn.ZeroPad1d: "zeros", nn.ZeroPad2d: "zeros", nn.ZeroPad3d: "zeros",
    nn.ConstantPad1d: "zeros", nn.ConstantPad2d: "zeros", nn.ConstantPad3d: "zeros",
    nn.ReflectionPad1d: "reflect", nn.ReflectionPad2d: "reflect", nn.ReflectionPad3d: "reflect",
    nn.ReplicationPad1d: "replicate", nn.ReplicationPad2d: "replicate", nn.ReplicationPad3d: "replicate",
    nn.CircularPad1d: "circular", nn.CircularPad2d: "circular", nn.CircularPad3d: "circular",
}


def _pool_geom(ctx, node, src, nd, kernel, stride, padding, dilation=1):
    kernel = _tup(kernel, nd)
    stride = _tup(stride if stride not in (None, ()) else kernel, nd)
    return _conv_geom(ctx, node, src, kernel, stride, _tup(padding, nd), _tup(dilation, nd))


def _adaptive_geom(ctx, node, src):
    in_shape, out_shape = ctx.recs[src].shape, ctx.values[node]
    if not _is_shape(out_shape):  # adaptive max pool with return_indices
        out_shape = out_shape[0]
    nd = sum(1 for a, b in zip(reversed(in_shape), reversed(out_shape)))  # filled below
    nd = len(in_shape) - 2 if len(in_shape) >= 3 else 1
    per = {}
    for i in range(1, nd + 1):
        n_in, n_out = in_shape[-i], out_shape[-i]
        per[-i] = Local(n_in // n_out, n_in // n_out, 0) if n_in % n_out == 0 else Adaptive(n_in, n_out)
    return ctx.spatial(node, src, per)


def _resample_geom(ctx, node, src, mode, align_corners):
    in_shape, out_shape = ctx.recs[src].shape, ctx.values[node]
    nd = len(in_shape) - 2
    per = {}
    for i in range(1, nd + 1):
        n_in, n_out = in_shape[-i], out_shape[-i]
        if n_in == n_out and mode != "bicubic":
            continue
        if mode == "nearest" and n_out % n_in == 0:
            per[-i] = Regroup(1, n_out // n_in)
        elif mode == "nearest" and n_in % n_out == 0:
            per[-i] = Local(1, n_in // n_out, 0)
        elif mode == "area":
            per[-i] = Local(n_in // n_out, n_in // n_out, 0) if n_in % n_out == 0 else Adaptive(n_in, n_out)
        else:
            per[-i] = Resample(n_in, n_out, mode, bool(align_corners))
    return ctx.spatial(node, src, per)


def _layout_geom(ctx, node, src, r, nd, to_space: bool):
    per = {-nd + i: (Regroup(1, f) if to_space else Local(f, f, 0)) for i, f in enumerate(r)}
    return ctx.spatial(node, src, per, mixes=(-nd - 1,) if not to_space else ())


def _mix_geom(ctx, node, src, dims):
    return ctx.spatial(node, src, {}, mixes=dims)


def _reduce_geom(ctx, node, src, dims, keepdim):
    rank = len(ctx.recs[src].shape)
    if dims is None:
        dims = list(range(rank))
    dims = [dims] if isinstance(dims, int) else list(dims)
    dims = sorted({d % rank for d in dims})
    g = ctx.spatial(node, src, {}, mixes=dims)
    if keepdim:
        return g
    remap = {}
    k = 0
    for d in range(rank):
        if d not in dims:
            remap[d] = k
            k += 1
    g.dims = tuple(None if d is None else remap.get(d) for d in g.dims)
    return g


def _reshape_groups(a: Sequence[int], b: Sequence[int]):
    """Pair groups of input dims and output dims with equal products (how a view regroups memory)."""
    groups, i, j = [], 0, 0
    while i < len(a) or j < len(b):
        gi, gj = [], []
        pi = pj = 1
        if i < len(a):
            pi *= a[i]; gi.append(i); i += 1
        if j < len(b):
            pj *= b[j]; gj.append(j); j += 1
        while pi != pj:
            if pi < pj and i < len(a):
                pi *= a[i]; gi.append(i); i += 1
            elif j < len(b):
                pj *= b[j]; gj.append(j); j += 1
            elif i < len(a):
                pi *= a[i]; gi.append(i); i += 1
            else:
                break
        groups.append((gi, gj))
    return groups


def _reshape_geom(ctx, node, src):
    in_shape, out_shape = ctx.recs[src].shape, tuple(ctx.values[node])
    dim_map: Dict[int, Optional[int]] = {}
    merge: List[int] = []
    for gi, gj in _reshape_groups(in_shape, out_shape):
        big_i = [d for d in gi if in_shape[d] != 1]
        big_j = [d for d in gj if out_shape[d] != 1]
        for d in gi:
            if len(big_i) == 1 and len(big_j) == 1 and d == big_i[0]:
                dim_map[d] = big_j[0]
            elif in_shape[d] == 1 and len(big_i) == 0 and gj:
                dim_map[d] = gj[0]
                if len(gj) != 1:
                    merge.append(d)
            else:
                dim_map[d] = (big_j or gj or [None])[0]
                merge.append(d)
    return ctx.relayout(node, src, dim_map, merge)


def _permute_geom(ctx, node, src, perm):
    rank = len(ctx.recs[src].shape)
    perm = [p % rank for p in perm]
    return ctx.relayout(node, src, {p: e for e, p in enumerate(perm)})


def _getitem_tensor(ctx, node, src, index):
    rec = ctx.recs[src]
    shape = rec.shape
    if not isinstance(index, tuple):
        index = (index,)
    consuming = sum(1 for x in index if x is not None and x is not Ellipsis)
    per, dim_map, drop = {}, {}, {}
    d = e = 0
    for x in index:
        if x is Ellipsis:
            for _ in range(len(shape) - consuming):
                dim_map[d] = e; d += 1; e += 1
        elif x is None:
            e += 1
        elif isinstance(x, slice):
            start, _, step = x.indices(shape[d])
            if (start, step) != (0, 1):
                per[d] = Local(1, step, -start)
            dim_map[d] = e; d += 1; e += 1
        elif isinstance(x, int):
            per[d] = Local(1, 0, -(x % shape[d]))
            drop[d] = True
            dim_map[d] = None; d += 1
        else:
            raise UnsupportedOpError(f"node={node.name!r}: advanced indexing {type(x).__name__} has no receptive-field rule")
    while d < len(shape):
        dim_map[d] = e; d += 1; e += 1
    g = ctx.spatial(node, src, per)
    dims = []
    for a, dd in enumerate(g.dims):
        dims.append(None if dd is None else dim_map.get(dd))
    g.dims = tuple(dims)
    g.merged = tuple(m and dd is not None for m, dd in zip(g.merged, g.dims))
    return g


def _cat_geom(ctx, node, inputs, dim):
    rank = len(ctx.values[node])
    for src in inputs:
        rec = ctx.recs[src]
        for a in range(ctx.naxes):
            if rec.local(a) and rec.geom.dims[a] == dim % rank and rec.shape[rec.geom.dims[a]] > 1:
                raise UnsupportedOpError(
                    f"node={node.name!r}: concatenation along spatial dim {dim} has no receptive-field rule"
                )
    return ctx.pointwise(node, inputs)


def _rearrange_geom(ctx, node, src, module):
    pattern = module.pattern
    lengths = dict(getattr(module, "axes_lengths", {}) or {})
    left, right = (s.strip() for s in pattern.split("->"))

    def parse(side):
        groups, cur = [], None
        for tok in re.findall(r"\(|\)|\.\.\.|\w+", side):
            if tok == "(":
                cur = []
            elif tok == ")":
                groups.append(cur); cur = None
            elif cur is not None:
                cur.append(tok)
            else:
                groups.append([tok])
        return groups

    lg, rg = parse(left), parse(right)
    in_shape, out_shape = ctx.recs[src].shape, tuple(ctx.values[node])

    def expand(groups, rank):
        out = []
        for g in groups:
            if g == ["..."]:
                out += [[f"...{i}"] for i in range(rank - len(groups) + 1)]
            elif "..." in g:
                raise UnsupportedOpError(f"pattern={pattern!r}: grouped ellipsis has no receptive-field rule")
            else:
                out.append(g)
        return out

    lg, rg = expand(lg, len(in_shape)), expand(rg, len(out_shape))
    sizes = dict(lengths)
    for g, n in zip(lg, in_shape):
        unknown = [x for x in g if x not in sizes]
        known = math.prod(sizes[x] for x in g if x in sizes)
        if len(unknown) == 1:
            sizes[unknown[0]] = n // known
    where = {x: (gi, pos) for gi, g in enumerate(rg) for pos, x in enumerate(g)}
    local_majors = {lg[ctx.recs[src].geom.dims[a]][0] for a in range(ctx.naxes) if ctx.recs[src].local(a)}
    per, dim_map, merge = {}, {}, []
    for d, g in enumerate(lg):
        e, pos = where[g[0]]
        dim_map[d] = e
        fi = math.prod(sizes[x] for x in g[1:])
        fo = math.prod(sizes[x] for x in rg[e][1:])
        if pos != 0 or any(x in local_majors for x in rg[e][1:]):
            merge.append(d)
        elif fi != 1 or fo != 1:
            per[d] = Regroup(fi, fo) if fo != 1 else Local(fi, fi, 0)
    g = ctx.spatial(node, src, per)
    relaid = ctx.relayout(node, src, dim_map, merge)
    maps = tuple(m2 if m2 is not IDENTITY else m1 for m1, m2 in zip(g.links[0][1], relaid.links[0][1]))
    return _Geom([(src, maps)], relaid.dims, relaid.merged, relaid.exact)


def _module_rule(ctx, node):
    m = ctx.module(node)
    for t in type(m).__mro__:
        if t in _RULES:
            return _RULES[t](ctx, node)
    src = ctx.first(node)
    if isinstance(m, _CONVS):
        return _conv_geom(ctx, node, src, m.kernel_size, m.stride, m.padding, m.dilation, m.padding_mode)
    if isinstance(m, _TCONVS):
        return _conv_geom(ctx, node, src, m.kernel_size, m.stride, m.padding, m.dilation, transposed=True)
    if isinstance(m, _MAXPOOL):
        nd = _MAXPOOL.index(type(m)) + 1
        return _pool_geom(ctx, node, src, nd, m.kernel_size, m.stride, m.padding, m.dilation)
    if isinstance(m, _AVGPOOL):
        nd = _AVGPOOL.index(type(m)) + 1
        return _pool_geom(ctx, node, src, nd, m.kernel_size, m.stride, m.padding)
    if isinstance(m, _ADAPTIVE):
        return _adaptive_geom(ctx, node, src)
    if isinstance(m, nn.Upsample):
        return _resample_geom(ctx, node, src, m.mode, m.align_corners)
    if isinstance(m, nn.PixelShuffle):
        return _layout_geom(ctx, node, src, (m.upscale_factor,) * 2, 2, True)
    if isinstance(m, nn.PixelUnshuffle):
        return _layout_geom(ctx, node, src, (m.downscale_factor,) * 2, 2, False)
    if isinstance(m, DepthToSpace):
        return _layout_geom(ctx, node, src, m.r, m.spatial_dims, True)
    if isinstance(m, SpaceToDepth):
        return _layout_geom(ctx, node, src, m.r, m.spatial_dims, False)
    if type(m) in _PADS:
        return _pad_geom(ctx, node, src, m.padding, _PADS[type(m)])
    if isinstance(m, _POINTWISE_MODULES):
        return ctx.pointwise(node, [src])
    if isinstance(m, nn.Linear):
        return _mix_geom(ctx, node, src, (-1,))
    if isinstance(m, nn.LayerNorm):
        return _mix_geom(ctx, node, src, tuple(range(-len(m.normalized_shape), 0)))
    if isinstance(m, (nn.GroupNorm, nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)):
        return _mix_geom(ctx, node, src, tuple(range(1, len(ctx.recs[src].shape))))
    if isinstance(m, (nn.Softmax, nn.LogSoftmax)):
        return _mix_geom(ctx, node, src, (m.dim if m.dim is not None else -1,))
    if isinstance(m, (nn.Flatten, nn.Unflatten)):
        return _reshape_geom(ctx, node, src)
    if isinstance(m, nn.MultiheadAttention):
        return _mix_geom(ctx, node, src, (1,) if m.batch_first else (0,))
    try:
        from einops.layers.torch import Rearrange

        if isinstance(m, Rearrange):
            return _rearrange_geom(ctx, node, src, m)
    except ImportError:
        pass
    return None


def _pad_geom(ctx, node, src, pad, mode):
    rank = len(ctx.recs[src].shape)
    pad = _tup(pad, 2 * (rank - 2)) if isinstance(pad, int) else tuple(pad)
    per = {}
    for i in range(len(pad) // 2):
        left = pad[2 * i]
        if left or pad[2 * i + 1]:
            per[-1 - i] = Local(1, 1, left, mode)
    return ctx.spatial(node, src, per)


_POINTWISE_FUNCS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.neg, operator.floordiv, operator.pow,
    operator.iadd, operator.imul, torch.add, torch.sub, torch.mul, torch.div, torch.where, torch.maximum,
    torch.minimum, torch.relu, torch.sigmoid, torch.tanh, torch.clamp, torch.exp, torch.abs, torch.neg,
    torch.sqrt, torch.rsqrt, torch.pow, torch.erf, torch.nn.functional.relu, F.relu6, F.gelu, F.silu, F.hardswish,
    F.hardsigmoid, F.sigmoid, F.tanh, F.leaky_relu, F.elu, F.mish, F.dropout, F.dropout2d, F.batch_norm,
    F.hardtanh, F.softplus, F.local_response_norm, torch.nn.functional.dropout1d, torch.nn.functional.dropout3d,
    torch.channel_shuffle, torch.native_channel_shuffle, torch.clone, torch.Tensor.contiguous,
}
_POINTWISE_METHODS = {
    "relu", "relu_", "sigmoid", "sigmoid_", "tanh", "add", "add_", "mul", "mul_", "sub", "div", "clamp", "clamp_",
    "contiguous", "clone", "float", "double", "half", "to", "type_as", "exp", "abs", "neg", "sqrt", "pow",
    "masked_fill", "detach", "requires_grad_", "hardswish",
}
_RESHAPE_METHODS = {"view", "reshape", "flatten", "squeeze", "unsqueeze", "view_as", "reshape_as", "unflatten"}
_RESHAPE_FUNCS = {torch.flatten, torch.reshape, torch.squeeze, torch.unsqueeze}
_REDUCE = {"mean", "sum", "amax", "amin", "max", "min", "std", "var", "prod", "logsumexp", "norm"}


def _function_rule(ctx, node):
    t = node.target
    if t in _RULES:
        return _RULES[t](ctx, node)
    ins = ctx.tensor_inputs(node)
    src = ins[0]
    if t is operator.getitem:
        base = ctx.values[node.args[0]]
        if _is_shape(base):
            return _getitem_tensor(ctx, node, node.args[0], ctx.val(node.args[1]))
        return ctx.pointwise(node, [node.args[0]])  # an element of a tuple (chunk, split, attention outputs)
    if t in _POINTWISE_FUNCS or getattr(t, "__name__", "") == "stochastic_depth":
        return ctx.pointwise(node, ins)
    if t in (torch.cat, torch.concat, getattr(torch, "concatenate", torch.cat)):
        return _cat_geom(ctx, node, ins, ctx.arg(node, 1, "dim", 0))
    if t in (F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d):
        w = ctx.values[node.args[1] if len(node.args) > 1 else node.kwargs["weight"]]
        kernel = tuple(w[2:])
        nd = len(kernel)
        tr = "transpose" in t.__name__
        stride = ctx.arg(node, 3, "stride", 1)
        padding = ctx.arg(node, 4, "padding", 0)
        dilation = ctx.arg(node, 6 if tr else 5, "dilation", 1)
        return _conv_geom(ctx, node, src, kernel, _tup(stride, nd), padding, _tup(dilation, nd), transposed=tr)
    pools = {
        F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3,
    }
    if t in pools:
        nd = pools[t]
        dil = ctx.arg(node, 4, "dilation", 1) if "max" in t.__name__ else 1
        return _pool_geom(ctx, node, src, nd, ctx.arg(node, 1, "kernel_size"), ctx.arg(node, 2, "stride"), ctx.arg(node, 3, "padding", 0), dil)
    if t in (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d, F.adaptive_max_pool1d, F.adaptive_max_pool2d, F.adaptive_max_pool3d):
        return _adaptive_geom(ctx, node, src)
    if t in (F.interpolate, F.upsample):
        return _resample_geom(ctx, node, src, ctx.arg(node, 3, "mode", "nearest"), ctx.arg(node, 4, "align_corners", False))
    if t in (F.pixel_shuffle, torch.pixel_shuffle):
        return _layout_geom(ctx, node, src, (ctx.arg(node, 1, "upscale_factor"),) * 2, 2, True)
    if t in (F.pixel_unshuffle, torch.pixel_unshuffle):
        return _layout_geom(ctx, node, src, (ctx.arg(node, 1, "downscale_factor"),) * 2, 2, False)
    if t in (depth_to_space, space_to_depth):
        r = ctx.arg(node, 1, "r")
        nd = ctx.arg(node, 3, "spatial_dims", None)
        nd = nd if nd is not None else (len(r) if isinstance(r, (tuple, list)) else 2)
        return _layout_geom(ctx, node, src, _tup(r, nd), nd, t is depth_to_space)
    if t is F.pad:
        return _pad_geom(ctx, node, src, ctx.arg(node, 1, "pad"), {"constant": "zeros"}.get(ctx.arg(node, 2, "mode", "constant"), ctx.arg(node, 2, "mode", "constant")))
    if t in _RESHAPE_FUNCS:
        return _reshape_geom(ctx, node, src)
    if t is torch.permute:
        return _permute_geom(ctx, node, src, ctx.arg(node, 1, "dims"))
    if t is torch.transpose:
        return _transpose_geom(ctx, node, src, ctx.arg(node, 1, "dim0"), ctx.arg(node, 2, "dim1"))
    if t in (F.linear,):
        return _mix_geom(ctx, node, src, (-1,))
    if t is F.layer_norm:
        return _mix_geom(ctx, node, src, tuple(range(-len(_tup(ctx.arg(node, 1, "normalized_shape"), 1)), 0)))
    if t in (F.softmax, torch.softmax, F.log_softmax, torch.log_softmax):
        return _mix_geom(ctx, node, src, (ctx.arg(node, 1, "dim", -1),))
    if t in (F.group_norm, F.instance_norm):
        return _mix_geom(ctx, node, src, tuple(range(1, len(ctx.recs[src].shape))))
    if t in (torch.mean, torch.sum, torch.amax, torch.amin):
        return _reduce_geom(ctx, node, src, ctx.arg(node, 1, "dim", None), ctx.arg(node, 2, "keepdim", False))
    if t in (torch.chunk, torch.split, torch.tensor_split):
        return _split_geom(ctx, node, src, ctx.arg(node, 2, "dim", 0))
    if t is torch.matmul or t is operator.matmul:
        return _matmul_geom(ctx, node, ins)
    if getattr(t, "__name__", "") == "_patch_merging_pad":  # torchvision Swin: zero pad at the end of H and W
        return ctx.pointwise(node, [src])
    if getattr(t, "__name__", "").startswith("shifted_window_attention"):
        # torchvision Swin: attention inside (cyclically shifted) windows of the (B, H, W, C) map. A window
        # that wraps around the border makes the hull the whole axis, so report that, flagged inexact.
        g = ctx.spatial(node, src, {}, mixes=(-3, -2))
        g.exact = tuple(False if d is None and ctx.recs[src].geom.dims[a] is not None else e
                        for a, (d, e) in enumerate(zip(g.dims, g.exact)))
        g.note = "shifted-window attention: conservative whole-axis hull"
        return g
    return None


def _transpose_geom(ctx, node, src, d0, d1):
    rank = len(ctx.recs[src].shape)
    perm = list(range(rank))
    perm[d0 % rank], perm[d1 % rank] = perm[d1 % rank], perm[d0 % rank]
    return _permute_geom(ctx, node, src, perm)


def _split_geom(ctx, node, src, dim):
    rec = ctx.recs[src]
    dim %= len(rec.shape)
    for a in range(ctx.naxes):
        if rec.local(a) and rec.geom.dims[a] == dim:
            raise UnsupportedOpError(f"node={node.name!r}: splitting along spatial dim {dim} has no receptive-field rule")
    return ctx.pointwise(node, [src])


def _matmul_geom(ctx, node, ins):
    if len(ins) == 1:
        return _mix_geom(ctx, node, ins[0], (-1,))
    a, b = ins[:2]
    ga = ctx.spatial(node, a, {}, mixes=(-1,))
    gb = ctx.spatial(node, b, {}, mixes=(-2,))
    # rows of the product follow a, columns follow b; a local axis may live on either
    dims, merged, exact = [], [], []
    for ax in range(ctx.naxes):
        da, db = ga.dims[ax], gb.dims[ax]
        dims.append(da if da is not None else db)
        merged.append(ga.merged[ax] if da is not None else gb.merged[ax])
        exact.append(ga.exact[ax] and gb.exact[ax])
    return _Geom(ga.links + gb.links, tuple(dims), tuple(merged), tuple(exact))


def _method_rule(ctx, node):
    t = node.target
    if t in _RULES:
        return _RULES[t](ctx, node)
    src = node.args[0]
    if t in _POINTWISE_METHODS:
        return ctx.pointwise(node, ctx.tensor_inputs(node))
    if t in _RESHAPE_METHODS:
        return _reshape_geom(ctx, node, src)
    if t == "permute":
        perm = ctx.val(node.args[1]) if len(node.args) == 2 and isinstance(ctx.val(node.args[1]), (tuple, list)) else ctx.val(node.args[1:])
        return _permute_geom(ctx, node, src, perm)
    if t == "transpose":
        return _transpose_geom(ctx, node, src, ctx.arg(node, 1, "dim0"), ctx.arg(node, 2, "dim1"))
    if t in _REDUCE:
        dims = ctx.arg(node, 1, "dim", None)
        return _reduce_geom(ctx, node, src, dims, ctx.arg(node, 2, "keepdim", False))
    if t in ("softmax", "log_softmax"):
        return _mix_geom(ctx, node, src, (ctx.arg(node, 1, "dim", -1),))
    if t in ("chunk", "split"):
        return _split_geom(ctx, node, src, ctx.arg(node, 2, "dim", 0))
    if t in ("expand", "expand_as"):
        return ctx.pointwise(node, [src])
    if t == "matmul":
        return _matmul_geom(ctx, node, ctx.tensor_inputs(node))
    return None


# --------------------------------------------------------------------------------------------- report


class RFReport:
    """Receptive fields of every node of a traced model; see :func:`receptive_field`."""

    def __init__(self, model_name, input_shape, recs, order, output, ops, warnings_, gm, fallback_nodes):
        self.model_name = model_name
        self.input_shape = tuple(input_shape)
        self._recs = recs
        self._order = order
        self._output = output
        self._ops = ops
        self.warnings: List[str] = warnings_
        self.graph_module = gm
        self.fallback_nodes: List[str] = fallback_nodes
        self.nodes: Dict[str, NodeRF] = {}
        for n in order:
            rec = recs[n]
            axes = []
            for a in range(len(rec.r)):
                axes.append(self._axis(rec, a))
            self.nodes[n.name] = NodeRF(n.name, ops[n], rec.shape, tuple(axes), (rec.geom.note,) if rec.geom.note else ())

    def _axis(self, rec, a) -> AxisRF:
        n = rec.n(a)
        constant = rec.aligned[a] and (rec.bj[a] == 0 or n == 1)
        return AxisRF(rec.r[a], rec.j[a], rec.p[a], rec.aligned[a], constant, rec.geom.exact[a], rec.bj[a] if rec.aligned[a] else 0)

    @property
    def output(self) -> NodeRF:
        """The record of the model's (first tensor) output."""
        return self.nodes[self._output.name]

    @property
    def spatial_size(self) -> Tuple[int, ...]:
        return self.input_shape[2:]

    def __getitem__(self, name: str) -> NodeRF:
        if name not in self.nodes:
            raise fold_error("node", name, f"is not a tensor node of the traced model; known: {list(self.nodes)[:8]}...")
        return self.nodes[name]

    def _node(self, name: Optional[str]) -> fx.Node:
        if name is None:
            return self._output
        self[name]
        return next(n for n in self._order if n.name == name)

    def center(self, node: Optional[str] = None) -> Tuple[int, ...]:
        """The centre output index of a node (per axis; 0 for axes that are no longer spatial)."""
        rec = self._recs[self._node(node)]
        return tuple((rec.n(a) - 1) // 2 for a in range(len(rec.r)))

    def box(self, node: Optional[str] = None, index: Optional[Sequence[int]] = None, clip: bool = True) -> Optional[Tuple[Tuple[int, int], ...]]:
        """Input box ``((lo, hi), ...)`` (inclusive, per axis) read by one output position of ``node``.

        ``clip=False``: Araujo's box ``[i*j - P, i*j - P + r - 1]`` (may reach into the padding).
        ``clip=True``: the exact hull of input pixels the unit depends on: the index is pulled back layer
        by layer and clipped at every layer's border, so it equals the support of the gradient for
        generic weights. ``None`` when the unit reads only padding. Default node: the output; default
        index: the centre.
        """
        target = self._node(node)
        rec = self._recs[target]
        naxes = len(rec.r)
        if index is None:
            index = self.center(node)
        index = tuple(int(i) for i in index)
        if len(index) != naxes:
            raise fold_error("index", index, f"needs one position per spatial axis ({naxes})")
        for a, i in enumerate(index):
            if not 0 <= i < rec.n(a):
                raise fold_error("index", index, f"position {i} of axis {a} is outside 0..{rec.n(a) - 1}")
        if not clip:
            out = []
            for a in range(naxes):
                if rec.aligned[a]:
                    lo = index[a] * rec.bj[a] - rec.p[a]
                    out.append((lo, lo + rec.r[a] - 1))
                else:
                    lo, hi = _unclipped(self._recs, rec, a, index[a], index[a])
                    out.append((int(lo), int(hi)))
            return tuple(out)
        return _clipped(self._recs, self._order, target, index)

    def rows(self, axes_names: Sequence[str] = ()) -> List[Dict[str, Any]]:
        """One dict per node (for :func:`foldconv.report.write_table`)."""
        names = list(axes_names) or _axis_names(len(self.spatial_size))
        rows = []
        for k, (name, node) in enumerate(self.nodes.items()):
            row: Dict[str, Any] = {"index": k, "node": name, "op": node.op, "shape": tuple(node.shape)}
            for ax, a in zip(names, node.axes):
                row[f"rf_{ax}"] = a.rf
                row[f"jump_{ax}"] = str(a.jump)
                row[f"padding_{ax}"] = a.padding
            row["aligned"] = node.aligned
            row["constant"] = all(a.constant for a in node.axes)
            row["exact"] = node.exact
            rows.append(row)
        return rows


def _axis_names(n: int) -> List[str]:
    return {1: ["w"], 2: ["h", "w"], 3: ["d", "h", "w"]}[n]


def _unclipped(recs, rec: _Rec, axis: int, a, b):
    lo = hi = None
    for src, maps in rec.geom.links:
        s = recs[src]
        if s.local(axis):
            pa, pb = maps[axis].pull(a, b)
        else:
            pa, pb = a * 0, b * 0
        if s.aligned[axis]:
            l = pa * s.bj[axis] - s.p[axis]
            h = pb * s.bj[axis] - s.p[axis] + s.r[axis] - 1
        else:
            l, h = _unclipped(recs, s, axis, pa, pb)
        lo = l if lo is None else np.minimum(lo, l)
        hi = h if hi is None else np.maximum(hi, h)
    return lo, hi


def _clipped(recs, order, target, index):
    pos = {n: k for k, n in enumerate(order)}
    env: Dict[fx.Node, List[List[int]]] = {target: [[i, i] for i in index]}
    result = None
    for n in reversed(order[: pos[target] + 1]):
        if n not in env:
            continue
        ivs = env.pop(n)
        rec = recs[n]
        empty = False
        for a, iv in enumerate(ivs):
            size = rec.n(a)
            iv[0], iv[1] = max(int(iv[0]), 0), min(int(iv[1]), size - 1)
            empty |= iv[0] > iv[1]
        if empty:
            continue
        if not rec.geom.links:
            if rec.geom.measured:  # an empirically measured node: its affine box, clipped to the input
                size = recs[order[0]].shape[2:]
                ivs = [[max(iv[0] * rec.bj[a] - rec.p[a], 0), min(iv[1] * rec.bj[a] - rec.p[a] + rec.r[a] - 1, size[a] - 1)]
                       for a, iv in enumerate(ivs)]
            found = tuple((iv[0], iv[1]) for iv in ivs)
            result = found if result is None else tuple((min(x[0], y[0]), max(x[1], y[1])) for x, y in zip(result, found))
            continue
        for src, maps in rec.geom.links:
            s = recs[src]
            pulled = []
            for a, iv in enumerate(ivs):
                if s.local(a):
                    lo, hi = maps[a].clip_pull(iv[0], iv[1], s.n(a))
                    pulled.append([int(lo), int(hi)])
                else:
                    pulled.append([0, 0])
            if src in env:
                env[src] = [[min(x[0], y[0]), max(x[1], y[1])] for x, y in zip(env[src], pulled)]
            else:
                env[src] = pulled
    return result


def _check_shape(input_shape) -> Tuple[int, ...]:
    if isinstance(input_shape, torch.Size):
        input_shape = tuple(input_shape)
    if not isinstance(input_shape, (tuple, list)) or not 3 <= len(input_shape) <= 5:
        raise fold_error("input_shape", input_shape, "must be (N, C, *spatial) with 1 to 3 spatial dims")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in input_shape):
        raise fold_error("input_shape", input_shape, "every entry must be an integer >= 1")
    return tuple(int(v) for v in input_shape)


def receptive_field(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    fallback: str = "error",
    leaf_modules: Sequence[type] = (),
) -> RFReport:
    """Analytic receptive field, effective stride and effective padding of every node of ``model``.

    ``input_shape`` is ``(N, C, *spatial)``. Nodes are traced with ``torch.fx``; shapes come from one run
    on meta tensors. An op without a rule raises :class:`UnsupportedOpError` naming it, unless
    ``fallback="empirical"``: then that node's field is measured from gradients (see
    :mod:`foldconv.analysis.receptive_field.empirical`) and the analysis continues from it.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.MaxPool2d(2),
        ...                           torch.nn.Conv2d(8, 8, 3, padding=1))
        >>> rf = receptive_field(net, (1, 3, 32, 32))
        >>> out = rf.output
        >>> out.rf, out.jump, out.padding
        ((8, 8), (Fraction(2, 1), Fraction(2, 1)), (3, 3))
        >>> rf.box(index=(0, 0), clip=False), rf.box(index=(0, 0))
        (((-3, 4), (-3, 4)), ((0, 4), (0, 4)))
    """
    if fallback not in ("error", "empirical"):
        raise fold_error("fallback", fallback, "must be 'error' or 'empirical'")
    shape = _check_shape(input_shape)
    try:
        gm = trace_model(model, leaf_modules)
    except UnsupportedOpError:
        if fallback == "empirical":
            from .empirical import _untraceable_report

            return _untraceable_report(model, shape)
        raise
    values = _meta_values(gm, shape)
    return _analyse(gm, values, shape, fallback, type(model).__name__)


def _analyse(gm, values, shape, fallback, model_name) -> RFReport:
    naxes = len(shape) - 2
    recs: Dict[fx.Node, _Rec] = {}
    ctx = _Ctx(gm, values, recs, naxes)
    order: List[fx.Node] = []
    ops: Dict[fx.Node, str] = {}
    warns: List[str] = []
    fallback_nodes: List[str] = []
    output = None
    input_seen = False
    for node in gm.graph.nodes:
        value = values.get(node)
        if node.op == "output":
            found: List[fx.Node] = []
            fx.node.map_arg(node.args, lambda n: found.append(n) if n in recs and recs[n].geom else None)
            if not found:
                raise UnsupportedOpError(f"model={model_name!r}: its output does not depend on the input tensor")
            output = found[0]
            continue
        if node.op == "placeholder" and not input_seen and _is_shape(value):
            input_seen = True
            geom = _Geom([], tuple(range(2, 2 + naxes)), (False,) * naxes, (True,) * naxes)
            rec = _Rec(node, geom, tuple(value), [1] * naxes, [1] * naxes, [0] * naxes, [Fraction(1)] * naxes, [True] * naxes)
            recs[node] = rec
            order.append(node)
            ops[node] = "input"
            continue
        if node.op in ("placeholder", "get_attr") or not _has_tensor(value):
            recs[node] = _Rec(node, None, ())
            continue
        ins = ctx.tensor_inputs(node)
        if not ins:
            recs[node] = _Rec(node, None, ())  # a constant made inside forward (zeros, class token...)
            continue
        shape_v = tuple(value) if _is_shape(value) else recs[ins[0]].shape
        recs[node] = _Rec(node, None, shape_v)
        geom = None
        if all(not recs[s].local(a) and not recs[s].geom.merged[a] for s in ins for a in range(naxes)):
            # every input is already spatially global: whatever the op does, it reads the union
            geom = _Geom([(s, (IDENTITY,) * naxes) for s in ins], (None,) * naxes, (False,) * naxes,
                         tuple(all(recs[s].geom.exact[a] for s in ins) for a in range(naxes)))
        else:
            try:
                if node.op == "call_module":
                    geom = _module_rule(ctx, node)
                elif node.op == "call_function":
                    geom = _function_rule(ctx, node)
                elif node.op == "call_method":
                    geom = _method_rule(ctx, node)
            except UnsupportedOpError:
                if fallback != "empirical":
                    raise
                geom = None
            except Exception as exc:  # a rule met arguments it does not understand: name the op, keep the cause
                if fallback != "empirical":
                    raise UnsupportedOpError(
                        f"op={_op_name(gm, node)!r} (node {node.name!r}): its receptive-field rule failed "
                        f"({type(exc).__name__}: {exc}); pass fallback='empirical'"
                    ) from exc
                geom = None
        ops[node] = _op_name(gm, node)
        if geom is None:
            if fallback != "empirical":
                raise UnsupportedOpError(
                    f"op={ops[node]!r} (node {node.name!r}, {node.op} {node.target!r}) has no receptive-field rule; "
                    "pass fallback='empirical' or register one with register_rf_rule"
                )
            from .empirical import _fallback_node

            recs[node] = _fallback_node(gm, recs, node, shape, naxes)
            fallback_nodes.append(node.name)
            order.append(node)
            continue
        rec = recs[node]
        rec.geom = geom
        _summarise_node(recs, rec, naxes, warns, ops[node])
        order.append(node)
    for w in warns:
        warnings.warn(w, RFAlignmentWarning, stacklevel=3)
    return RFReport(model_name, shape, recs, order, output, ops, warns, gm, fallback_nodes)


def _summarise_node(recs, rec: _Rec, naxes: int, warns: List[str], opname: str) -> None:
    links = rec.geom.links
    for a in range(naxes):
        srcs = [(recs[s], maps[a]) for s, maps in links]
        jumps = [m.jump(s.j[a]) if s.local(a) else s.j[a] for s, m in srcs]
        locals_ = [j for (s, m), j in zip(srcs, jumps) if s.local(a) and not isinstance(m, Broadcast)]
        rec.j.append(min(locals_) if locals_ else max(jumps))
        ok = all(s.aligned[a] and (m.integral or not s.local(a)) for s, m in srcs)
        if ok:
            triples = [m.rec(s.r[a], s.bj[a], s.p[a]) if s.local(a) else (s.r[a], s.bj[a], s.p[a]) for s, m in srcs]
            bjs = {t[1] for t in triples}
            if len(bjs) == 1:
                lo0 = min(-t[2] for t in triples)
                hi0 = max(-t[2] + t[0] - 1 for t in triples)
                centres = {Fraction(2 * -t[2] + t[0] - 1, 2) for t in triples}
                if len(centres) > 1 and bjs != {0}:
                    warns.append(
                        f"node {rec.node.name!r} ({opname}) merges paths whose receptive fields have different centres "
                        f"on axis {a} (sizes/paddings {[(t[0], t[2]) for t in triples]}): the union is reported, "
                        "but its units are not centred on their inputs (Araujo et al.: misaligned paths)"
                    )
                rec.r.append(hi0 - lo0 + 1); rec.bj.append(bjs.pop()); rec.p.append(-lo0); rec.aligned.append(True)
                if not rec.geom.exact[a] and len(links) > 1 and any(
                    s.geom.exact[a] and not s.geom.merged[a] and (-t[2], t[0] - t[2] - 1) == (lo0, hi0)
                    for (s, _), t in zip(srcs, triples)
                ):  # an exact path already covers the union: the conservative paths add nothing
                    ex = list(rec.geom.exact); ex[a] = True; rec.geom.exact = tuple(ex)
                continue
        # exact evaluation over every output position of this node
        n = rec.n(a)
        idx = np.arange(n, dtype=np.int64)
        lo, hi = _unclipped(recs, _Partial(rec, a, len(rec.r)), a, idx, idx)
        lo, hi = np.broadcast_to(lo, idx.shape), np.broadcast_to(hi, idx.shape)
        sizes = hi - lo + 1
        step = int(lo[1] - lo[0]) if n > 1 else None
        affine = (n == 1 or (np.all(lo == lo[0] + step * idx) and np.all(sizes == sizes[0])))
        on_grid = affine and (n > 1 or rec.j[a].denominator == 1)
        if len(links) > 1 and not on_grid:
            warns.append(
                f"node {rec.node.name!r} ({opname}) merges paths with different effective strides on axis {a}: "
                "its receptive field varies with the output position (reported: the largest)"
            )
        rec.r.append(int(sizes.max())); rec.p.append(int(-lo[0])); rec.aligned.append(bool(on_grid))
        rec.bj.append(step if (on_grid and n > 1) else (int(rec.j[a]) if on_grid else 0))


class _Partial:
    """A view of a record while its own summary is being computed (only links are needed)."""

    def __init__(self, rec, axis, filled):
        self.geom = rec.geom
