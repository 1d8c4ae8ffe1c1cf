"""Gradient measurements of receptive fields: the positive copy, the graph capture, the support hull, and
the measured record of a node without an analytic rule (the ``fallback="real"`` of the analysis).

To make "non-zero gradient" mean "depends on", the model is copied and given positive weights
(``U(0.5, 1.5)/fan_in``, zero biases, unit norm scales) and a small positive input in float64: every
activation stays positive and small, so no ReLU is dead, no ReLU6/hard-sigmoid saturates and no sum
cancels. Max pooling passes gradient only to the arg-max (sparse support), so for this measurement every
max pooling is replaced by average pooling of the same geometry (kernel, stride, padding, ceil_mode,
``count_include_pad=True``): same window, dense gradient.
"""
from __future__ import annotations

import copy
from dataclasses import replace
from fractions import Fraction
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ... import tracing
from ..._validate import require_int
from ...errors import fold_error
from .geometry import Geometry, Record
from .pullback import Box

__all__ = ["positive_copy", "GraphCapture", "positive_input", "unit_sum", "support_hull", "measure_node"]

_MAX2AVG = {nn.MaxPool1d: F.avg_pool1d, nn.MaxPool2d: F.avg_pool2d, nn.MaxPool3d: F.avg_pool3d}
_FMAX2AVG = {F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d, F.max_pool3d: F.avg_pool3d}
_AMAX2AVG = {
    nn.AdaptiveMaxPool1d: F.adaptive_avg_pool1d,
    nn.AdaptiveMaxPool2d: F.adaptive_avg_pool2d,
    nn.AdaptiveMaxPool3d: F.adaptive_avg_pool3d,
}

_ATEN_MAX = {f"max_pool{n}d{tail}": f for n, f in ((1, F.avg_pool1d), (2, F.avg_pool2d), (3, F.avg_pool3d)) for tail in ("", "_with_indices")}
_ATEN_AMAX = {"adaptive_max_pool1d": F.adaptive_avg_pool1d, "adaptive_max_pool2d": F.adaptive_avg_pool2d,
              "adaptive_max_pool3d": F.adaptive_avg_pool3d}


class GraphCapture(fx.Interpreter):
    """Runs a GraphModule and keeps the outputs of the nodes called ``names``; with ``avg_for_max``
    every (undilated) max pooling runs as the average pooling of the same window."""

    def __init__(self, gm: fx.GraphModule, names: Sequence[str], *, avg_for_max: bool):
        super().__init__(gm)
        self.names, self.avg_for_max = set(names), avg_for_max
        self.kept: Dict[str, Any] = {}

    def run_node(self, n):
        out = super().run_node(n)
        if n.name in self.names:
            self.kept[n.name] = out
        return out

    def call_module(self, target, args, kwargs):
        m = self.fetch_attr(target)
        if self.avg_for_max:
            dilation = m.dilation if hasattr(m, "dilation") else 1
            if type(m) in _MAX2AVG and max(dilation if isinstance(dilation, (tuple, list)) else (dilation,)) == 1 and not m.return_indices:
                return _MAX2AVG[type(m)](args[0], m.kernel_size, m.stride, m.padding, m.ceil_mode, True)
            if type(m) in _AMAX2AVG and not m.return_indices:
                return _AMAX2AVG[type(m)](args[0], m.output_size)
        return super().call_module(target, args, kwargs)

    def call_function(self, target, args, kwargs):
        packet = getattr(target, "overloadpacket", None)
        if packet is not None:  # an aten graph (analysis/receptive_field/aten.py)
            return self._call_aten(target, packet, args, kwargs)
        if self.avg_for_max and target in _FMAX2AVG:
            x, k = args[0], args[1] if len(args) > 1 else kwargs["kernel_size"]
            s = args[2] if len(args) > 2 else kwargs.get("stride")
            p = args[3] if len(args) > 3 else kwargs.get("padding", 0)
            ceil = kwargs.get("ceil_mode", args[5] if len(args) > 5 else False)
            return _FMAX2AVG[target](x, k, s, p, ceil, True)
        return super().call_function(target, args, kwargs)

    def _call_aten(self, target, packet, args, kwargs):
        if "dtype" in kwargs and isinstance(kwargs["dtype"], torch.dtype) and kwargs["dtype"].is_floating_point:
            kwargs = dict(kwargs, dtype=torch.float64)  # the measurement runs in float64: a cast must not undo it
        name = packet.__name__
        if self.avg_for_max and name in _ATEN_MAX:
            # max_poolNd_with_indices(x, kernel, stride, padding, dilation, ceil_mode): undilated, the average of the window
            x, k = args[0], args[1]
            s, p = (args[2] if len(args) > 2 else []) or k, args[3] if len(args) > 3 else 0
            d, ceil = args[4] if len(args) > 4 else 1, bool(args[5]) if len(args) > 5 else False
            if max(d if isinstance(d, (tuple, list)) else (d,)) == 1:
                out = _ATEN_MAX[name](x, k, s, p, ceil, True)
                return out if "indices" not in name else (out, None)
        if self.avg_for_max and name in _ATEN_AMAX:
            return _ATEN_AMAX[name](args[0], args[1]), None
        return super().call_function(target, args, kwargs)

    def output_of(self, name: str) -> torch.Tensor:
        """The kept (first tensor) output of node ``name``."""
        out = self.kept[name]
        return out[0] if isinstance(out, (tuple, list)) else out


def positive_copy(module: nn.Module, *, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    """A float64 eval-mode copy with positive weights ``U(0.5, 1.5)/fan_in``, zero biases, unit scales.

    With a small positive input every activation is positive and small, so the gradient of a unit is
    non-zero exactly on the pixels it depends on (no dead ReLU, no saturation, no cancellation). The
    original's parameter values are never read (they may be on the meta device); its buffers are copied
    (normalisation statistics on the meta device become mean 0, variance 1; any other meta buffer is a FoldError).
    The copy's parameters do not require grad (only the input's gradient is measured).

    Example:
        >>> m = positive_copy(torch.nn.Conv2d(2, 3, 3))
        >>> bool((m.weight > 0).all()), m.weight.dtype
        (True, torch.float64)
    """
    if not isinstance(module, nn.Module):
        raise fold_error("module", type(module).__name__, "must be a torch.nn.Module")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise fold_error("dtype", dtype, "must be a floating-point torch.dtype")
    seed = require_int(seed, "seed", 0)
    # every parameter is overwritten: copy the module around fresh parameters instead of copying (and
    # converting) the old values, which also lets a model with parameters on the meta device be measured
    fresh = {id(p): nn.Parameter(torch.empty(p.shape, dtype=dtype), requires_grad=False) for p in module.parameters()}
    for owner, key, buffer in _meta_buffers(module):  # values that matter cannot be made up: refuse them by name
        fresh[id(buffer)] = _neutral_statistic(owner, key, buffer)
    m = copy.deepcopy(module, memo=dict(fresh)).to(dtype).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() >= 2:
                p.uniform_(0.5, 1.5, generator=g).div_(max(p[0].numel(), 1))
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)
    return m


def _meta_buffers(module: nn.Module) -> List[Tuple[nn.Module, str, torch.Tensor]]:
    return [(owner, key, b) for owner in module.modules() for key, b in owner._buffers.items() if b is not None and b.is_meta]


def _neutral_statistic(owner: nn.Module, key: str, buffer: torch.Tensor) -> torch.Tensor:
    """A normalisation layer's running statistics on the meta device have values that change no dependency:
    mean 0, variance 1, count 0. Any other meta buffer (an attention mask, a position index) is refused."""
    statistics = {"running_mean": 0.0, "running_var": 1.0, "num_batches_tracked": 0}
    if isinstance(owner, nn.modules.batchnorm._NormBase) and key in statistics:
        return torch.full(buffer.shape, statistics[key], dtype=buffer.dtype)
    raise fold_error(
        "module", type(owner).__name__,
        f"its buffer {key!r} is on the meta device and its values matter to a gradient measurement (a mask or an "
        "index, not a running statistic): build the model on the CPU to measure it",
    )


def positive_input(input_shape: Sequence[int], seed: int = 0) -> torch.Tensor:
    """A small positive float64 input of batch 1 that requires grad (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    shape = (1,) + tuple(input_shape[1:])
    return ((torch.rand(shape, generator=g, dtype=torch.float64) + 0.5) * 1e-3).requires_grad_(True)


def unit_sum(out: torch.Tensor, dims: Sequence[Optional[int]], index: Sequence[int]) -> torch.Tensor:
    """The scalar whose gradient is measured: position ``index`` (along the tensor ``dims`` that carry the
    spatial axes) of ``out``, summed over the other dims with unequal positive weights."""
    sel: List[Any] = [slice(None)] * out.dim()
    for d, i in zip(dims, index):
        if d is not None:
            sel[d] = i
    unit = out[tuple(sel)]
    # unequal weights: a plain sum of a LayerNorm/softmax output is constant (zero gradient)
    g = torch.Generator().manual_seed(1234)
    w = torch.rand(unit.shape, generator=g, dtype=torch.float64).to(unit.dtype) + 0.5
    return (unit * w).sum()


def support_hull(grad: torch.Tensor, naxes: int) -> Optional[Box]:
    """Per spatial axis, the ``(first, last)`` index where the gradient (any channel) is non-zero."""
    nz = grad.ne(0)
    if not bool(nz.any()):
        return None
    spatial = nz.flatten(0, nz.dim() - naxes - 1).any(0) if nz.dim() > naxes else nz
    box = []
    for a in range(naxes):
        other = tuple(d for d in range(naxes) if d != a)
        line = spatial.sum(other) > 0 if other else spatial  # any() over several dims needs torch >= 2.2
        idx = torch.nonzero(line).flatten()
        box.append((int(idx.min()), int(idx.max())))
    return tuple(box)


def measure_node(gm: fx.GraphModule, records: Mapping[fx.Node, Record], node: fx.Node, input_shape: Tuple[int, ...], naxes: int) -> Record:
    """Measure one node's receptive field from gradients (its op has no analytic rule): the box of its
    centre position and the step to the next position give an affine (size, jump, padding) per axis."""
    ins = [n for n in node.all_input_nodes if n in records and records[n].geom is not None]
    first = records[ins[0]] if ins else None
    tracing.require_run_memory(gm, input_shape, copies=2, what=f"measuring node {node.name} from gradients (float64)")
    x = positive_input(input_shape)
    cap = GraphCapture(positive_copy(gm), [node.name], avg_for_max=True)
    cap.run(x)
    out = cap.output_of(node.name)
    out_shape = tuple(out.shape)
    if first is not None and len(first.shape) == len(out_shape):
        dims = tuple(first.geom.dims[a] if first.plain(a) else None for a in range(naxes))
    elif len(out_shape) == len(input_shape):
        dims = tuple(range(2, 2 + naxes))
    else:
        dims = (None,) * naxes
    dims = tuple(d if d is not None and d < len(out_shape) and out_shape[d] > 0 else None for d in dims)
    geom = Geometry((), dims, (False,) * naxes, (False,) * naxes, note="measured empirically (no analytic rule)", measured=True)
    rec = Record(node, geom, out_shape)

    whole = tuple((0, n - 1) for n in input_shape[2:])
    blind = []  # axes where a measured unit had no gradient at all: the whole axis, claimed as a hull only

    def hull(y: torch.Tensor) -> Box:
        # no gradient (a unit that does not depend on the input, or one whose gradient vanishes for these
        # weights): the whole input is the only safe box
        (g,) = torch.autograd.grad(y, x, retain_graph=True, allow_unused=True)
        box = support_hull(g[0], naxes) if g is not None else None
        if box is None:
            blind.append(True)
        return box if box is not None else whole

    for a in range(naxes):
        d = dims[a]
        if d is None:
            lo, hi = hull(out.sum())[a]
            rec.r.append(hi - lo + 1); rec.bj.append(0); rec.p.append(-lo)  # noqa: E702
            rec.j.append(Fraction(input_shape[2 + a])); rec.aligned.append(True)  # noqa: E702
            continue
        n = out_shape[d]
        c = (n - 1) // 2
        lo0, hi0 = hull(out.select(d, c).sum())[a]
        step = hull(out.select(d, c + 1).sum())[a][0] - lo0 if n > 1 else 0
        rec.r.append(hi0 - lo0 + 1); rec.bj.append(step); rec.p.append(c * step - lo0)  # noqa: E702
        rec.j.append(Fraction(step if step else input_shape[2 + a] // max(n, 1))); rec.aligned.append(True)  # noqa: E702
    rec.sup = [np.ones(r, dtype=bool) for r in rec.r]  # measured as a hull: no holes claimed
    if blind:
        rec.geom = replace(geom, note="measured empirically: a unit without gradient, reported as the whole input")
    return rec
