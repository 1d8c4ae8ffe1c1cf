"""The fold view of costs: counts before and after :func:`foldconv.fold.fold_conv`, side by side.

Folding a conv over ``G·prod(r)`` channels into a conv over ``G`` channels on ``depth_to_space(x, r)``
keeps the parameters and the MACs (``C_out·(C_in/groups)·∏K`` per output position, and the output grid
is unchanged); what changes is the kernel (``r·K``), the stride (``r·S``) and the input shape
(``(G, r·H, r·W)``). Two plans do change the costs: groups that are not aligned with the fold blocks
become a dense block-diagonal weight (``groups``× the parameters), and dilation becomes a zero-filled
dense kernel. :func:`fold_options` says which ``r`` fold a conv and at what cost; :func:`foldable_layers`
does it for every conv of a counted model; :func:`fold_model` builds the folded model (on meta) so the
counter can measure both.

Example:
    >>> from foldconv.specs import ConvSpec
    >>> rows = fold_options(ConvSpec.make(2, 256, 64, 3, padding=1), (32, 32), rs=(16,))
    >>> rows[0]["folded"], rows[0]["folded_input"], rows[0]["params"] == rows[0]["folded_params"]
    ('Conv2d(1->64, k=(48, 48), s=(16, 16), p=(16, 16))', (1,512,512), True)
"""
from __future__ import annotations

import copy
from typing import Any, Dict, List, Sequence, Tuple

import torch
from torch import nn

from ...errors import FoldError, fold_error
from ...fold import fold_conv, plan_fold
from ...layout import DepthToSpace, IntOrTuple, Order
from ...specs import ConvSpec, FoldSpec
from .dense import dense_equivalent
from .counter import CountReport, ShapeLike, count, normalize_input_shapes

__all__ = [
    "DEFAULT_RS",
    "fold_options",
    "foldable_layers",
    "fold_matrix",
    "compare_fold",
    "meta_copy",
    "fold_model",
    "compare_model_fold",
]

DEFAULT_RS: Tuple[int, ...] = (2, 4, 8, 16)
_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class _Tuple(tuple):
    """A tuple that prints like report.format_value writes it, so doctests read like the tables."""

    def __repr__(self) -> str:
        return "(" + ",".join(str(v) for v in self) + ")"


def fold_options(
    spec: ConvSpec, input_size: Sequence[int], rs: Sequence[IntOrTuple] = DEFAULT_RS, order: Order = "crd"
) -> List[Dict[str, Any]]:
    """For each ``r``: does ``spec`` fold, into what, and what it costs before and after.

    ``cost_neutral`` is True when parameters and MACs are unchanged (no group or dilation expansion).
    A fold that is impossible has ``foldable=False`` and the FoldError message as ``reason``.

    Example:
        >>> rows = fold_options(ConvSpec.make(2, 12, 8, 3), (8, 8), rs=(2, 4))
        >>> [(r["r"], r["foldable"]) for r in rows]
        [(2, True), (4, False)]
        >>> rows[1]["reason"]
        'in_channels=12: must be a multiple of prod(r)=16 (r=(4, 4)) to fold'
    """
    if not isinstance(spec, ConvSpec):
        raise fold_error("spec", type(spec).__name__, "must be a ConvSpec (ConvSpec.from_module(conv))")
    size = tuple(int(n) for n in input_size)
    macs = spec.macs(size)
    rows = []
    for r in rs:
        row: Dict[str, Any] = {
            "r": r,
            "conv": spec.describe(),
            "input": _Tuple((spec.in_channels,) + size),
            "kernel": _Tuple(spec.kernel_size),
            "params": spec.params,
            "macs": macs,
        }
        try:
            fold = FoldSpec.make(r, order, spec.dims)
            plan = plan_fold(spec, fold)
        except FoldError as exc:
            rows.append({**row, "foldable": False, "cost_neutral": False, "reason": str(exc)})
            continue
        folded_size = tuple(n * f for n, f in zip(size, fold.r))
        folded_macs = plan.result.macs(folded_size)
        rows.append(
            {
                **row,
                "foldable": True,
                "cost_neutral": plan.result.params == spec.params and folded_macs == macs,
                "reason": "; ".join(plan.notes),
                "folded": plan.result.describe(),
                "folded_input": _Tuple((plan.result.in_channels,) + folded_size),
                "folded_kernel": _Tuple(plan.result.kernel_size),
                "folded_params": plan.result.params,
                "folded_macs": folded_macs,
            }
        )
    return rows


def foldable_layers(
    report: CountReport, rs: Sequence[IntOrTuple] = DEFAULT_RS, order: Order = "crd"
) -> List[Dict[str, Any]]:
    """:func:`fold_options` for every ``nn.Conv1d/2d/3d`` of a counted model, at the input it saw.

    Example:
        >>> from foldconv.analysis.counting import count
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 4, 1))
        >>> rows = foldable_layers(count(net, (1, 3, 8, 8)), rs=(2, 4))
        >>> [(r["layer"], r["r"], r["foldable"]) for r in rows]
        [('0', 2, False), ('0', 4, False), ('1', 2, True), ('1', 4, True)]
    """
    rows = []
    for layer, module in report.conv_layers():
        try:
            spec = ConvSpec.from_module(module)
        except FoldError as exc:
            rows.append({"layer": layer.name, "r": None, "foldable": False, "cost_neutral": False, "reason": str(exc)})
            continue
        for row in fold_options(spec, layer.input_shape[2:], rs, order):
            rows.append({"layer": layer.name, **row})
    return rows


def fold_matrix(rows: Sequence[Dict[str, Any]]) -> List[Dict[str, Any]]:
    """Pivot :func:`foldable_layers` rows to one row per layer and a column ``r=<r>`` per factor:
    ``yes`` (same costs), ``yes*`` (holds, costs change: group or dilation expansion) or ``no``.

    Example:
        >>> spec = ConvSpec.make(2, 16, 4, 3)
        >>> fold_matrix([{"layer": "c", **row} for row in fold_options(spec, (8, 8), rs=(2, 4, 8))])
        [{'layer': 'c', 'conv': 'Conv2d(16->4, k=(3, 3), s=(1, 1), p=(0, 0))', 'r=2': 'yes', 'r=4': 'yes', 'r=8': 'no'}]
    """
    table: Dict[str, Dict[str, Any]] = {}
    for row in rows:
        entry = table.setdefault(row["layer"], {"layer": row["layer"], "conv": row.get("conv", "")})
        verdict = "no" if not row["foldable"] else ("yes" if row["cost_neutral"] else "yes*")
        entry[f"r={row['r']}"] = verdict
    return list(table.values())


def compare_fold(
    conv: nn.Module, r: IntOrTuple, input_shape: ShapeLike, order: Order = "crd"
) -> List[Dict[str, Any]]:
    """Counts of ``conv`` on ``input_shape`` and of ``fold_conv(conv, r)`` on the folded input, side by side.

    Both are measured by :func:`~foldconv.analysis.counting.count` (on meta tensors) and by the dense view.

    Example:
        >>> conv = torch.nn.Conv2d(256, 256, 3, padding=1, device="meta")
        >>> rows = {row["quantity"]: row for row in compare_fold(conv, 16, (1, 256, 32, 32))}
        >>> rows["kernel"]["original"], rows["kernel"]["folded"]
        ((3,3), (48,48))
        >>> rows["params"]["folded"], rows["params"]["equal"], rows["macs"]["original"], rows["macs"]["equal"]
        (590080, True, 603979776, True)
    """
    shapes = normalize_input_shapes(input_shape)
    if len(shapes) != 1 or len(shapes[0]) != len(getattr(conv, "kernel_size", ())) + 2:
        raise fold_error("input_shape", input_shape, "must be one (N, C, *spatial) shape matching the conv")
    shape = shapes[0]
    folded = fold_conv(conv, r, order)
    plan = folded.fold_plan
    folded_shape = (shape[0], plan.result.in_channels) + tuple(n * f for n, f in zip(shape[2:], plan.fold.r))
    before, after = count(conv, shape), count(folded, folded_shape)
    d_before = dense_equivalent(plan.source, shape[2:])
    d_after = dense_equivalent(plan.result, folded_shape[2:])
    pairs = [
        ("conv", plan.source.describe(), plan.result.describe()),
        ("input_shape", _Tuple(shape), _Tuple(folded_shape)),
        ("output_shape", _Tuple(before.layers[0].output_shape), _Tuple(after.layers[0].output_shape)),
        ("kernel", _Tuple(plan.source.kernel_size), _Tuple(plan.result.kernel_size)),
        ("params", before.params, after.params),
        ("macs", before.macs, after.macs),
        ("flops", before.flops, after.flops),
        ("weight_bytes", before.weight_bytes, after.weight_bytes),
        ("activation_elements", before.activation_elements, after.activation_elements),
        ("dense_params", d_before.dense_params, d_after.dense_params),
        ("operator_nonzeros", d_before.operator_nonzeros, d_after.operator_nonzeros),
        ("density", d_before.density, d_after.density),
    ]
    return [{"quantity": q, "original": a, "folded": b, "equal": a == b} for q, a, b in pairs]


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are on meta (nothing real is copied).

    Example:
        >>> meta_copy(torch.nn.Linear(2, 3)).weight.device.type
        'meta'
    """
    memo: Dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)


def fold_model(
    model: nn.Module, r: IntOrTuple, order: Order = "crd", cost_neutral_only: bool = True
) -> Tuple[nn.Module, List[Dict[str, Any]]]:
    """A meta copy of ``model`` with every foldable conv replaced by ``DepthToSpace(r) -> fold_conv(conv, r)``.

    The folded model computes the same function (each conv folds its own input; residual paths are
    untouched). With ``cost_neutral_only`` only folds that keep parameters and MACs are applied. Returns
    the model and one row per conv: folded or not, and why.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 4, 1))
        >>> folded, rows = fold_model(net, 2)
        >>> [(row["layer"], row["folded"]) for row in rows], type(folded[1]).__name__
        ([('0', False), ('1', True)], 'Sequential')
    """
    copied = meta_copy(model)
    replaced: Dict[int, nn.Module] = {}
    rows: List[Dict[str, Any]] = []
    for parent_name, parent in list(copied.named_modules()):
        for child_name, child in list(parent._modules.items()):
            if not isinstance(child, _CONVS):
                continue
            name = f"{parent_name}.{child_name}" if parent_name else child_name
            if id(child) not in replaced:
                try:
                    spec = ConvSpec.from_module(child)
                    plan = plan_fold(spec, FoldSpec.make(r, order, spec.dims))
                    if cost_neutral_only and (plan.dense_groups or plan.dilation_expanded):
                        raise fold_error("r", r, "folds only with a group or dilation expansion, which changes the costs")
                    replaced[id(child)] = nn.Sequential(DepthToSpace(r, order, spec.dims), fold_conv(child, r, order))
                    rows.append({"layer": name, "folded": True, "reason": ""})
                except FoldError as exc:
                    replaced[id(child)] = child
                    rows.append({"layer": name, "folded": False, "reason": str(exc)})
            parent._modules[child_name] = replaced[id(child)]
    return copied, rows


def compare_model_fold(
    model: nn.Module, input_shape: ShapeLike, r: IntOrTuple, order: Order = "crd", cost_neutral_only: bool = True
) -> Dict[str, Any]:
    """Count ``model`` and :func:`fold_model` of it; totals side by side, plus the per-conv fold rows.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 4, 1))
        >>> out = compare_model_fold(net, (1, 3, 8, 8), 2)
        >>> [(row["quantity"], row["equal"]) for row in out["totals"][:2]], out["folded_layers"]
        ([('params', True), ('macs', True)], 1)
    """
    before = count(model, input_shape)
    folded, rows = fold_model(model, r, order, cost_neutral_only)
    after = count(folded, input_shape, name=f"{before.model} folded r={r}")
    totals = [
        {"quantity": q, "original": getattr(before, q), "folded": getattr(after, q), "equal": getattr(before, q) == getattr(after, q)}
        for q in ("params", "macs", "flops", "weight_bytes", "activation_elements", "activation_bytes")
    ]
    return {
        "before": before,
        "after": after,
        "totals": totals,
        "layers": rows,
        "folded_layers": sum(row["folded"] for row in rows),
    }
