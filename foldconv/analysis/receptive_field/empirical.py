"""Empirical receptive fields from gradients, and the check that analytic and empirical supports agree.

Two measurements:

* **support** (:func:`empirical_box`): the gradient of one output position (summed over channels) with
  respect to the input; its non-zero hull is the receptive field. The model is measured as a positive
  copy with max pooling made average pooling (:mod:`~foldconv.analysis.receptive_field.measure` says why),
  so the hull is exactly the set of pixels the unit depends on.
* **effective receptive field** (:func:`effective_receptive_field`, Luo et al. 2016): the mean over random
  inputs and random (re-initialised) weights of ``|d y_centre / d x|``. The real max pooling is kept there:
  averaging over inputs spreads the arg-max, as in the paper.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ... import tracing
from ..._validate import require_int
from ...errors import fold_error
from .analyse import RF_RANKS, Leaves, receptive_field
from .measure import GraphCapture, positive_copy, positive_input, support_hull, unit_sum
from .pullback import Box, Support
from .registry import Rule
from .report import RFReport

__all__ = ["BoxCheck", "RFCheck", "empirical_box", "empirical_boxes", "empirical_support", "effective_receptive_field", "check_receptive_field", "default_check_nodes"]

Query = Tuple[Optional[str], Sequence[int]]


def _report_for(model: nn.Module, input_shape: Sequence[int], report: Optional[RFReport], **kwargs) -> RFReport:
    """The given report (checked against ``input_shape``) or a fresh analysis (``kwargs``: those of
    :func:`receptive_field`: ``leaves``, ``rules``, ``fallback``)."""
    shape = tracing.validate_input_shape(input_shape, ranks=RF_RANKS)
    # every measurement here is a float64 forward pass kept for a backward one
    tracing.require_run_memory(model, shape, copies=2, what="the gradient measurement (float64 forward and backward)")
    if report is None:
        return receptive_field(model, shape, **kwargs)
    if not isinstance(report, RFReport):
        raise fold_error("report", type(report).__name__, "must be an RFReport from receptive_field, or None")
    if report.input_shape[1:] != shape[1:]:
        raise fold_error("report", report.input_shape, f"was made for another input shape than input_shape={shape}")
    return report


def empirical_boxes(
    model: nn.Module,
    input_shape: Sequence[int],
    queries: Sequence[Query],
    *,
    report: Optional[RFReport] = None,
    seed: int = 0,
    leaves: Leaves = (),
    rules: Optional[Mapping[Any, Rule]] = None,
) -> Tuple[Optional[Box], ...]:
    """Gradient-support boxes for several ``(node name or None for the output, index)`` queries, one forward.

    The nodes are those of ``report``, or of ``receptive_field(model, input_shape, leaves=leaves, rules=rules)``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, padding=1), torch.nn.MaxPool2d(2))
        >>> empirical_boxes(net, (1, 1, 8, 8), [(None, (0, 0)), (None, (3, 3))])
        (((0, 2), (0, 2)), ((5, 7), (5, 7)))
    """
    report = _report_for(model, input_shape, report, leaves=leaves, rules=rules)
    seed = require_int(seed, "seed", 0)
    if isinstance(queries, (str, bytes)) or not isinstance(queries, Sequence) or not all(
        isinstance(q, (tuple, list)) and len(q) == 2 for q in queries
    ):
        raise fold_error("queries", queries, "must be a sequence of (node name or None, index) pairs")
    checked = [(name if name is not None else report.output_name, report.checked_index(name, index)) for name, index in queries]
    gm = positive_copy(report.graph_module, seed=seed)
    x = positive_input(report.input_shape, seed)
    cap = GraphCapture(gm, [name for name, _ in checked], avg_for_max=True)
    cap.run(x)
    boxes = []
    for k, (name, index) in enumerate(checked):
        y = unit_sum(cap.output_of(name), report[name].dims, index)
        (grad,) = torch.autograd.grad(y, x, retain_graph=k < len(checked) - 1, allow_unused=True)
        boxes.append(None if grad is None else support_hull(grad[0], len(report.input_size)))
    return tuple(boxes)


def empirical_support(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    node: Optional[str] = None,
    index: Optional[Sequence[int]] = None,
    seed: int = 0,
    leaves: Leaves = (),
    rules: Optional[Mapping[Any, Rule]] = None,
) -> Optional[Support]:
    """Per input axis, the sorted pixels where the gradient of one unit (default: the centre of the output)
    is non-zero in some channel and at some position of the other axes: the measured counterpart of
    :meth:`RFReport.support`, holes included.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv1d(1, 1, 3, dilation=2), torch.nn.Conv1d(1, 1, 2, dilation=3))
        >>> empirical_support(net, (1, 1, 12), index=(0,))
        ((0, 2, 3, 4, 5, 7),)
    """
    report = _report_for(model, input_shape, None, fallback="real", leaves=leaves, rules=rules)  # only the layout is needed here
    name = node if node is not None else report.output_name
    index = report.checked_index(name, index)
    gm = positive_copy(report.graph_module, seed=seed)
    x = positive_input(report.input_shape, seed)
    cap = GraphCapture(gm, [name], avg_for_max=True)
    cap.run(x)
    (grad,) = torch.autograd.grad(unit_sum(cap.output_of(name), report[name].dims, index), x, allow_unused=True)
    if grad is None or not bool(grad.ne(0).any()):
        return None
    nz = grad[0].ne(0).flatten(0, grad.dim() - 2 - len(report.input_size)).any(0)
    naxes = nz.dim()
    return tuple(
        tuple(int(i) for i in torch.nonzero(nz.sum(tuple(d for d in range(naxes) if d != a)) > 0 if naxes > 1 else nz).flatten())
        for a in range(naxes)
    )


def empirical_box(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    node: Optional[str] = None,
    index: Optional[Sequence[int]] = None,
    seed: int = 0,
    leaves: Leaves = (),
    rules: Optional[Mapping[Any, Rule]] = None,
) -> Optional[Box]:
    """Gradient-support box of one output position (default: the centre of the model's output).

    Example:
        >>> empirical_box(torch.nn.Conv2d(1, 1, 5, padding=2), (1, 1, 9, 9))
        ((2, 6), (2, 6))
    """
    report = _report_for(model, input_shape, None, fallback="real", leaves=leaves, rules=rules)  # only the layout is needed here
    return empirical_boxes(model, input_shape, [(node, report.checked_index(node, index))], report=report, seed=seed)[0]


def effective_receptive_field(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    node: Optional[str] = None,
    index: Optional[Sequence[int]] = None,
    samples: int = 8,
    seed: int = 0,
    report: Optional[RFReport] = None,
    leaves: Leaves = (),
    rules: Optional[Mapping[Any, Rule]] = None,
) -> np.ndarray:
    """Luo et al.'s effective receptive field: mean over random inputs and weights of ``|dy/dx|``.

    ``y`` is the sum over channels at ``index`` (default: the centre) of ``node`` (default: the output);
    weights are re-drawn with each module's ``reset_parameters`` for every sample. Returns the map over the
    input's spatial axes (summed over input channels), float64, not normalised. Without ``report``, the nodes
    are those of ``receptive_field(model, input_shape, leaves=leaves, rules=rules)``.

    Example:
        >>> erf = effective_receptive_field(torch.nn.Conv2d(1, 1, 3, padding=1), (1, 1, 7, 7), samples=2)
        >>> erf.shape, int((erf > 0).sum())
        ((7, 7), 9)
    """
    samples = require_int(samples, "samples", 1)
    seed = require_int(seed, "seed", 0)
    report = _report_for(model, input_shape, report, leaves=leaves, rules=rules)
    name = node if node is not None else report.output_name
    index = report.checked_index(name, index)
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
        cap = GraphCapture(gm, [name], avg_for_max=False)
        cap.run(x)
        (grad,) = torch.autograd.grad(unit_sum(cap.output_of(name), report[name].dims, index), x, allow_unused=True)
        if grad is not None:
            total += grad[0].abs().sum(0)
    return (total / samples).numpy()


@dataclass(frozen=True)
class BoxCheck:
    """One compared position: the analytic (clipped) box and the gradient-support box."""

    node: str
    op: str
    position: str
    index: Tuple[int, ...]
    analytic: Optional[Box]
    empirical: Optional[Box]

    @property
    def ok(self) -> bool:
        return self.analytic == self.empirical

    def __bool__(self) -> bool:
        return self.ok


@dataclass(frozen=True)
class RFCheck:
    """Analytic (clipped) boxes against gradient-support boxes; ``ok`` (and ``bool``) when every row matches."""

    model: str
    rows: Tuple[BoxCheck, ...]

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rows)

    def __bool__(self) -> bool:
        return self.ok

    @property
    def mismatches(self) -> Tuple[BoxCheck, ...]:
        return tuple(r for r in self.rows if not r.ok)


def default_check_nodes(report: RFReport, max_nodes: int = 6) -> Tuple[str, ...]:
    """Evenly spaced exact nodes with at least one spatial axis, plus the output (when it is exact).

    Example:
        >>> net = torch.nn.Sequential(*[torch.nn.Conv1d(1, 1, 3) for _ in range(5)])
        >>> default_check_nodes(receptive_field(net, (1, 1, 20)), max_nodes=3)
        ('_0', '_4')
    """
    max_nodes = require_int(max_nodes, "max_nodes", 1)
    cands = [
        name for name, node in report.nodes.items()
        if node.exact and any(d is not None for d in node.dims) and node.op != "input" and name not in report.fallback_nodes
        and not any(d is None and n > 1 for d, n in zip(node.dims, node.positions))  # positions on digits of merged dims
    ]
    picked = [cands[round(k * (len(cands) - 1) / max(max_nodes - 2, 1))] for k in range(max_nodes - 1)] if cands else []
    return tuple(dict.fromkeys(picked + ([report.output_name] if report.output.exact else [])))


def check_receptive_field(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    nodes: Optional[Sequence[str]] = None,
    max_nodes: int = 6,
    report: Optional[RFReport] = None,
    seed: int = 0,
    leaves: Leaves = (),
    rules: Optional[Mapping[Any, Rule]] = None,
    output: Any = None,
    trace: str = "auto",
) -> RFCheck:
    """Compare :meth:`RFReport.box` (``clip=True``) with the gradient support, at the first, centre and
    last position of each checked node (default: :func:`default_check_nodes`). Without ``report``, the
    analysis is ``receptive_field(model, input_shape, leaves=leaves, rules=rules, output=output, trace=trace)``.

    Args:
        model: the network (real or meta weights; measured on a copy with positive weights).
        input_shape: ``(N, C, *spatial)`` with 1 to 3 spatial dims.
        nodes: node names of the analysis to check (default: :func:`default_check_nodes`).
        max_nodes: how many nodes the default picks, an int >= 1 (default 6).
        report: an :class:`RFReport` for this ``input_shape`` to check (default: a fresh analysis).
        seed: the seed of the positive weights and input, an int >= 0 (default 0).
        leaves: module classes and/or qualified module names kept as single nodes (without ``report``).
        rules: per-call receptive-field rules (without ``report``).
        output: the key or index of the output tensor to analyse (a mapping or tuple output; default None).
        trace: ``"auto"`` (default: torch.fx, else the aten record), ``"fx"`` or ``"aten"`` (without ``report``).

    Returns:
        An :class:`RFCheck` (truthy when every box matches): ``rows`` (per node and position the ``analytic``
        and ``empirical`` boxes) and ``mismatches``.

    Raises:
        FoldError: naming ``model``, ``input_shape`` (also above the allocation limit), ``nodes``, ``max_nodes``,
        ``report`` (another input shape), ``seed``, ``leaves`` or ``rules``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(4, 1, 3, dilation=2))
        >>> check_receptive_field(net, (1, 1, 21, 21)).ok
        True
    """
    max_nodes = require_int(max_nodes, "max_nodes", 1)
    report = _report_for(model, input_shape, report, leaves=leaves, rules=rules, output=output, trace=trace)
    if nodes is None:
        nodes = default_check_nodes(report, max_nodes)
    elif isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence) or not all(isinstance(n, str) and n in report.nodes for n in nodes):
        raise fold_error("nodes", nodes, f"must be a sequence of node names of the report (e.g. {list(report.nodes)[:4]})")
    queries, meta = [], []
    for name in nodes:
        sizes = report[name].positions
        for label, idx in (("first", tuple(0 for _ in sizes)), ("centre", report.center(name)), ("last", tuple(n - 1 for n in sizes))):
            if (name, idx) not in queries:
                queries.append((name, idx))
                meta.append(label)
    measured = empirical_boxes(model, input_shape, queries, report=report, seed=seed)
    rows = tuple(
        BoxCheck(name, report[name].op, label, idx, report.box(name, idx, clip=True), emp)
        for (name, idx), label, emp in zip(queries, meta, measured)
    )
    return RFCheck(report.model_name, rows)
