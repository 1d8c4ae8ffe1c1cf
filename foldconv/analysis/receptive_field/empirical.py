"""Empirical receptive fields from gradients, and the check that analytic and empirical supports agree.

Two measurements:

* **support** (:func:`empirical_box`): the gradient of one output position (summed over channels) with
  respect to the input; its non-zero hull is the receptive field. To make "non-zero" mean "depends on",
  the model is copied and given positive weights (``U(0.5, 1.5)/fan_in``, zero biases, unit norm scales)
  and a small positive input in float64: every activation stays positive and small, so no ReLU is dead, no
  ReLU6/hard-sigmoid saturates and no sum cancels. Max pooling passes gradient only to the arg-max
  (sparse support), so for this measurement every max pooling is replaced by average pooling of the same
  geometry (kernel, stride, padding, ceil_mode, ``count_include_pad=True``): same window, dense gradient.
* **effective receptive field** (:func:`effective_receptive_field`, Luo et al. 2016): the mean over random
  inputs and random (re-initialised) weights of ``|d y_centre / d x|``. The real max pooling is kept there:
  averaging over inputs spreads the arg-max, as in the paper.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from ...errors import fold_error
from .core import RFReport, _Geom, _Rec, _summarise, receptive_field, trace_model

__all__ = [
    "RFCheck",
    "empirical_box",
    "empirical_boxes",
    "effective_receptive_field",
    "check_receptive_field",
    "positive_copy",
]

Box = Tuple[Tuple[int, int], ...]

_MAX2AVG = {nn.MaxPool1d: F.avg_pool1d, nn.MaxPool2d: F.avg_pool2d, nn.MaxPool3d: F.avg_pool3d}
_FMAX2AVG = {F.max_pool1d: F.avg_pool1d, F.max_pool2d: F.avg_pool2d, F.max_pool3d: F.avg_pool3d}
_AMAX2AVG = {
    nn.AdaptiveMaxPool1d: F.adaptive_avg_pool1d,
    nn.AdaptiveMaxPool2d: F.adaptive_avg_pool2d,
    nn.AdaptiveMaxPool3d: F.adaptive_avg_pool3d,
}


class _Capture(fx.Interpreter):
    """Runs a GraphModule, keeps the outputs of some nodes, optionally with max pooling made average."""

    def __init__(self, gm, names, avg_for_max):
        super().__init__(gm)
        self.names, self.avg_for_max, self.kept = set(names), avg_for_max, {}

    def run_node(self, n):
        out = super().run_node(n)
        if n.name in self.names:
            self.kept[n.name] = out
        return out

    def call_module(self, target, args, kwargs):
        m = self.fetch_attr(target)
        if self.avg_for_max:
            if type(m) in _MAX2AVG and _single(m.dilation) == 1 and not m.return_indices:
                return _MAX2AVG[type(m)](args[0], m.kernel_size, m.stride, m.padding, m.ceil_mode, True)
            if type(m) in _AMAX2AVG and not m.return_indices:
                return _AMAX2AVG[type(m)](args[0], m.output_size)
        return super().call_module(target, args, kwargs)

    def call_function(self, target, args, kwargs):
        if self.avg_for_max and target in _FMAX2AVG:
            x, k = args[0], args[1] if len(args) > 1 else kwargs["kernel_size"]
            s = args[2] if len(args) > 2 else kwargs.get("stride")
            p = args[3] if len(args) > 3 else kwargs.get("padding", 0)
            ceil = kwargs.get("ceil_mode", args[5] if len(args) > 5 else False)
            return _FMAX2AVG[target](x, k, s, p, ceil, True)
        return super().call_function(target, args, kwargs)


def _single(v):
    return max(v) if isinstance(v, (tuple, list)) else v


def positive_copy(module: nn.Module, dtype: torch.dtype = torch.float64, seed: int = 0) -> nn.Module:
    """A float64 eval-mode copy with positive weights ``U(0.5, 1.5)/fan_in``, zero biases, unit scales.

    With a small positive input every activation is positive and small, so the gradient of a unit is
    non-zero exactly on the pixels it depends on (no dead ReLU, no saturation, no cancellation).

    Example:
        >>> m = positive_copy(torch.nn.Conv2d(2, 3, 3))
        >>> bool((m.weight > 0).all()), m.weight.dtype
        (True, torch.float64)
    """
    m = copy.deepcopy(module).to(dtype).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() >= 2:
                fan_in = max(p[0].numel(), 1)
                p.copy_((torch.rand(p.shape, generator=g, dtype=torch.float64) + 0.5) / fan_in)
            elif name.endswith("bias"):
                p.zero_()
            else:
                p.fill_(1.0)
    return m


def _unit(out: torch.Tensor, dims: Sequence[Optional[int]], index: Sequence[int]) -> torch.Tensor:
    sel: List[Any] = [slice(None)] * out.dim()
    for d, i in zip(dims, index):
        if d is not None:
            sel[d] = i
    unit = out[tuple(sel)]
    # unequal positive channel weights: a plain sum of a LayerNorm/softmax output is constant (zero gradient)
    g = torch.Generator().manual_seed(1234)
    w = torch.rand(unit.shape, generator=g, dtype=torch.float64).to(unit.dtype) + 0.5
    return (unit * w).sum()


def _hull(grad: torch.Tensor, naxes: int) -> Optional[Box]:
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


def _node_dims(report: RFReport, name: str) -> Tuple[Optional[int], ...]:
    rec = next(r for n, r in report._recs.items() if n.name == name)
    return tuple(rec.geom.dims[a] if rec.local(a) else None for a in range(len(report.spatial_size)))


def empirical_boxes(
    model: nn.Module,
    input_shape: Sequence[int],
    queries: Sequence[Tuple[Optional[str], Sequence[int]]],
    report: Optional[RFReport] = None,
    seed: int = 0,
) -> List[Optional[Box]]:
    """Gradient-support boxes for several ``(node name or None for the output, index)`` queries, one forward.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.MaxPool2d(2))
        >>> empirical_boxes(net, (1, 1, 8, 8), [(None, (0, 0)), (None, (3, 3))])
        [((0, 2), (0, 2)), ((5, 7), (5, 7))]
    """
    report = report if report is not None else receptive_field(model, input_shape)
    gm = positive_copy(report.graph_module, seed=seed)
    naxes = len(report.spatial_size)
    names = [q[0] if q[0] is not None else report.output.name for q in queries]
    shape = (1,) + tuple(report.input_shape[1:])
    g = torch.Generator().manual_seed(seed)
    x = ((torch.rand(shape, generator=g, dtype=torch.float64) + 0.5) * 1e-3).requires_grad_(True)
    cap = _Capture(gm, names, avg_for_max=True)
    cap.run(x)
    boxes = []
    for k, (name, (_, index)) in enumerate(zip(names, queries)):
        out = cap.kept[name]
        if isinstance(out, (tuple, list)):
            out = out[0]
        y = _unit(out, _node_dims(report, name), index)
        (grad,) = torch.autograd.grad(y, x, retain_graph=k < len(queries) - 1, allow_unused=True)
        boxes.append(None if grad is None else _hull(grad[0], naxes))
    return boxes


def empirical_box(model: nn.Module, input_shape: Sequence[int], node: Optional[str] = None, index: Optional[Sequence[int]] = None, seed: int = 0) -> Optional[Box]:
    """Gradient-support box of one output position (default: the centre of the model's output).

    Example:
        >>> empirical_box(torch.nn.Conv2d(1, 1, 5, padding=2), (1, 1, 9, 9))
        ((2, 6), (2, 6))
    """
    report = receptive_field(model, input_shape, fallback="empirical")  # only the layout is needed here
    index = tuple(index) if index is not None else report.center(node)
    return empirical_boxes(model, input_shape, [(node, index)], report, seed)[0]


def effective_receptive_field(
    model: nn.Module,
    input_shape: Sequence[int],
    node: Optional[str] = None,
    index: Optional[Sequence[int]] = None,
    samples: int = 8,
    seed: int = 0,
    report: Optional[RFReport] = None,
) -> np.ndarray:
    """Luo et al.'s effective receptive field: mean over random inputs and weights of ``|dy/dx|``.

    ``y`` is the sum over channels at ``index`` (default: the centre) of ``node`` (default: the output);
    weights are re-drawn with each module's ``reset_parameters`` for every sample. Returns the map over the
    input's spatial axes (summed over input channels), float64, not normalised.

    Example:
        >>> erf = effective_receptive_field(torch.nn.Conv2d(1, 1, 3, padding=1), (1, 1, 7, 7), samples=2)
        >>> erf.shape, int((erf > 0).sum())
        ((7, 7), 9)
    """
    if samples < 1:
        raise fold_error("samples", samples, "must be >= 1")
    report = report if report is not None else receptive_field(model, input_shape)
    name = node if node is not None else report.output.name
    index = tuple(index) if index is not None else report.center(node)
    dims = _node_dims(report, name)
    gm = copy.deepcopy(report.graph_module).to(torch.float64).eval()
    shape = (1,) + tuple(report.input_shape[1:])
    total = torch.zeros(shape[2:], dtype=torch.float64)
    for s in range(samples):
        torch.manual_seed(seed + s)
        with torch.no_grad():
            for m in gm.modules():
                if hasattr(m, "reset_parameters") and m is not gm:
                    m.reset_parameters()
        x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
        cap = _Capture(gm, [name], avg_for_max=False)
        cap.run(x)
        out = cap.kept[name]
        out = out[0] if isinstance(out, (tuple, list)) else out
        (grad,) = torch.autograd.grad(_unit(out, dims, index), x, allow_unused=True)
        if grad is not None:
            total += grad[0].abs().sum(0)
    return (total / samples).numpy()


@dataclass
class RFCheck:
    """Analytic (clipped) boxes against gradient-support boxes; ``ok`` when every row matches."""

    model: str
    rows: List[Dict[str, Any]]

    @property
    def ok(self) -> bool:
        return all(r["match"] for r in self.rows)

    @property
    def mismatches(self) -> List[Dict[str, Any]]:
        return [r for r in self.rows if not r["match"]]


def default_check_nodes(report: RFReport, max_nodes: int = 6) -> List[str]:
    """Evenly spaced exact nodes with at least one spatial axis, plus the output."""
    recs = {n.name: r for n, r in report._recs.items() if r.geom is not None}
    cands = [
        name for name, node in report.nodes.items()
        if name in recs and node.exact and any(recs[name].local(a) for a in range(len(node.axes))) and node.op != "input"
        and name not in report.fallback_nodes
    ]
    picked = [cands[round(k * (len(cands) - 1) / max(max_nodes - 2, 1))] for k in range(max_nodes - 1)] if cands else []
    out = report.output.name
    return list(dict.fromkeys(picked + ([out] if report.output.exact else [])))


def check_receptive_field(
    model: nn.Module,
    input_shape: Sequence[int],
    nodes: Optional[Sequence[str]] = None,
    max_nodes: int = 6,
    report: Optional[RFReport] = None,
    seed: int = 0,
) -> RFCheck:
    """Compare :meth:`RFReport.box` (``clip=True``) with the gradient support, at the first, centre and
    last position of each checked node.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, dilation=2))
        >>> check_receptive_field(net, (1, 1, 21, 21)).ok
        True
    """
    report = report if report is not None else receptive_field(model, input_shape)
    nodes = list(nodes) if nodes is not None else default_check_nodes(report, max_nodes)
    queries, meta = [], []
    for name in nodes:
        node = report[name]
        rec = next(r for n, r in report._recs.items() if n.name == name)
        sizes = [rec.n(a) for a in range(len(node.axes))]
        for label, idx in (("first", [0] * len(sizes)), ("centre", [(n - 1) // 2 for n in sizes]), ("last", [n - 1 for n in sizes])):
            if (name, tuple(idx)) in [(q[0], tuple(q[1])) for q in queries]:
                continue
            queries.append((name, tuple(idx)))
            meta.append((name, label, tuple(idx)))
    measured = empirical_boxes(model, input_shape, queries, report, seed)
    rows = []
    for (name, label, idx), emp in zip(meta, measured):
        ana = report.box(name, idx, clip=True)
        rows.append({"node": name, "op": report[name].op, "position": label, "index": idx, "analytic": ana, "empirical": emp, "match": ana == emp})
    return RFCheck(report.model_name, rows)


# ------------------------------------------------------------------------------ fallback for unknown ops


def _fallback_node(gm, recs, node, shape, naxes) -> _Rec:
    """Measure one node's receptive field from gradients (its op has no analytic rule)."""
    ins = [n for n in node.all_input_nodes if n in recs and recs[n].geom is not None]
    first = recs[ins[0]] if ins else None
    out_shape = None
    pgm = positive_copy(gm)
    x = ((torch.rand((1,) + tuple(shape[1:]), dtype=torch.float64) + 0.5) * 1e-3).requires_grad_(True)
    cap = _Capture(pgm, [node.name], avg_for_max=True)
    cap.run(x)
    out = cap.kept[node.name]
    out = out[0] if isinstance(out, (tuple, list)) else out
    out_shape = tuple(out.shape)
    if first is not None and len(first.shape) == len(out_shape):
        dims = tuple(first.geom.dims[a] if first.local(a) else None for a in range(naxes))
    elif len(out_shape) == len(shape):
        dims = tuple(range(2, 2 + naxes))
    else:
        dims = (None,) * naxes
    dims = tuple(d if d is not None and d < len(out_shape) and out_shape[d] > 0 else None for d in dims)
    rec = _Rec(node, _Geom([], dims, (False,) * naxes, (False,) * naxes, note="measured empirically (no analytic rule)", measured=True), out_shape)
    for a in range(naxes):
        d = dims[a]
        n = out_shape[d] if d is not None else 1
        c = (n - 1) // 2
        def box(i):
            sel: List[Any] = [slice(None)] * out.dim()
            sel[d] = i
            y = out[tuple(sel)].sum()
            (g,) = torch.autograd.grad(y, x, retain_graph=True)
            return _hull(g[0], naxes)[a]
        if d is None:
            (g,) = torch.autograd.grad(out.sum(), x, retain_graph=True)
            lo, hi = _hull(g[0], naxes)[a]
            rec.r.append(hi - lo + 1); rec.bj.append(0); rec.p.append(-lo); rec.j.append(Fraction(shape[2 + a])); rec.aligned.append(True)
            continue
        lo0, hi0 = box(c)
        step = box(c + 1)[0] - lo0 if n > 1 else 0
        rec.r.append(hi0 - lo0 + 1); rec.bj.append(step); rec.p.append(c * step - lo0)
        rec.j.append(Fraction(step if step else shape[2 + a] // max(n, 1))); rec.aligned.append(True)
    return rec


def _untraceable_report(model: nn.Module, shape: Tuple[int, ...]) -> RFReport:
    """Report for a model torch.fx cannot trace: the whole model is one empirically measured node."""
    from .core import _analyse

    class _Whole(nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.model = inner

        def forward(self, x):
            return self.model(x)

    wrapper = _Whole(model)
    gm = trace_model(wrapper, leaf_modules=(type(model),))
    with torch.no_grad():
        rec = fx.Interpreter(gm, garbage_collect_values=False)
        rec.run(torch.zeros(shape))
        values = {n: _summarise(v) for n, v in rec.env.items()}
    return _analyse(gm, values, shape, "empirical", type(model).__name__)
