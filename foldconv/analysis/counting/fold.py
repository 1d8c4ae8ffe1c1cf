"""The fold view of costs: counts before and after :func:`foldconv.fold.fold_conv`, side by side.

Folding a conv over ``G·prod(r)`` channels into a conv over ``G`` channels on ``depth_to_space(x, r)``
keeps the parameters and the MACs (``C_out·(C_in/groups)·∏K`` per output position, and the output grid
is unchanged); what changes is the kernel (``r·K``), the stride (``r·S``) and the input shape
(``(G, r·H, r·W)``). Two plans do change the costs: groups that do not survive the fold become fewer
groups with a block-diagonal weight (``groups / folded groups``× the parameters; a depthwise conv with
``r = 2`` keeps a quarter of its groups), and dilation becomes a zero-filled dense kernel. :func:`fold_options` says which ``r`` fold a conv and at what cost; :func:`foldable_layers`
does it for every conv of a counted model; :func:`compare_fold` puts the counts of a conv and of its fold side
by side (it counts meta copies: nothing real is allocated). A whole model is folded by
:func:`foldconv.surgery.fold_model` (and compared by :func:`foldconv.surgery.compare_model_fold`), which reuses
:class:`Comparison` and :func:`meta_copy` from here.

A malformed request (``r=0``, an unknown ``order``) is a FoldError before anything is counted; a conv
that cannot fold with a valid ``r`` is an answer (``foldable=False`` and the reason), not an error.

Example:
    >>> from foldconv.specs import ConvSpec
    >>> (option,) = fold_options(ConvSpec.make(2, 256, 64, 3, padding=1), (32, 32), rs=(16,))
    >>> option.folded, option.folded_input_shape, option.params == option.folded_params
    ('Conv2d(1->64, k=(48, 48), s=(16, 16), p=(16, 16))', (1, 1, 512, 512), True)
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
from torch import nn

from ..._validate import require_conv
from ...errors import FoldError, fold_error
from ...fold import FoldPlan, fold_conv, plan_fold
from ...layout import IntOrTuple, Order, normalize_order
from ...specs import ConvSpec, FoldSpec
from .counter import ShapeLike, count, normalize_input_shapes
from .dense import dense_equivalent, validate_input_size
from .report import CountReport

__all__ = [
    "DEFAULT_RS",
    "validate_fold_request",
    "FoldOption",
    "fold_options",
    "foldable_layers",
    "fold_matrix",
    "Compared",
    "Comparison",
    "FoldComparison",
    "compare_fold",
    "meta_copy",
]

DEFAULT_RS: Tuple[IntOrTuple, ...] = (2, 4, 8, 16)
Shape = Tuple[int, ...]


_R_RULE = "must be an integer >= 1 or one integer >= 1 per spatial axis (1-3 axes)"


def _check_fold(r: Any, order: Any, *, r_param: str = "r", order_param: str = "order") -> None:
    """FoldError unless ``r`` is a valid fold factor and ``order`` a valid order for some number of dims."""
    try:
        FoldSpec.make(r, "crd")
    except FoldError as err:
        raise fold_error(r_param, r, _R_RULE) from err
    rule = ""
    for dims in (2, 1, 3):
        try:
            normalize_order(order, dims)
            return
        except FoldError as err:
            rule = rule or (err.rule or str(err))
    raise fold_error(order_param, order, rule)


def validate_fold_request(rs: Sequence[IntOrTuple], order: Order = "crd", *, r_param: str = "rs", order_param: str = "order") -> None:
    """A FoldError (naming ``r_param`` or ``order_param``) unless every ``r`` and the ``order`` could fold some conv.

    Each ``r`` is an integer >= 1 or one per spatial axis (1-3 of them); ``order`` an alias
    (``crd``/``dcr``/``focus``) or an einops axis permutation for some number of spatial dims.

    Example:
        >>> validate_fold_request([2, (2, 4)], "dcr")
        >>> validate_fold_request([2, 0])
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: rs=[2, 0]: every entry must be an integer >= 1 or one integer >= 1 per spatial axis (1-3 axes); 0 is not
    """
    if isinstance(rs, (str, bytes)) or not isinstance(rs, Sequence) or len(rs) == 0:
        raise fold_error(r_param, rs, "must be a non-empty list of fold factors (each an integer or one per spatial axis)")
    for r in rs:
        try:
            _check_fold(r, order, order_param=order_param)
        except FoldError as err:
            if err.param != "r":
                raise
            raise fold_error(r_param, rs, f"every entry {_R_RULE}; {r!r} is not") from err


@dataclass(frozen=True)
class FoldOption:
    """Whether one conv folds with one ``r``, into what, and its costs before and after (MACs per sample).

    ``cost_neutral``: parameters and MACs unchanged (no group or dilation expansion). An impossible fold
    has ``foldable=False``, the FoldError message as ``reason`` and no ``folded_*`` values.
    """

    layer: str
    r: Optional[IntOrTuple]
    conv: str
    foldable: bool
    reason: str
    input_shape: Optional[Shape] = None
    kernel_size: Optional[Shape] = None
    params: Optional[int] = None
    macs: Optional[int] = None
    folded: Optional[str] = None
    folded_input_shape: Optional[Shape] = None
    folded_kernel_size: Optional[Shape] = None
    folded_params: Optional[int] = None
    folded_macs: Optional[int] = None
    plan: Optional[FoldPlan] = field(default=None, repr=False, compare=False)

    @property
    def cost_neutral(self) -> bool:
        return self.foldable and self.folded_params == self.params and self.folded_macs == self.macs

    def row(self) -> Dict[str, Any]:
        """The table row (``plan`` left out)."""
        row = {k: getattr(self, k) for k in self.__dataclass_fields__ if k != "plan"}
        row["cost_neutral"] = self.cost_neutral
        return row


def _options(layer: str, spec: ConvSpec, size: Shape, rs: Sequence[IntOrTuple], order: Order) -> List[FoldOption]:
    base = {
        "layer": layer,
        "conv": spec.describe(),
        "input_shape": (1, spec.in_channels) + size,
        "kernel_size": spec.kernel_size,
        "params": spec.params,
        "macs": spec.macs(size),
    }
    options = []
    for r in rs:
        try:
            fold = FoldSpec.make(r, order, spec.dims)
            plan = plan_fold(spec, fold)
        except FoldError as exc:  # this conv cannot fold with this r: an answer, not an error
            options.append(FoldOption(r=r, foldable=False, reason=str(exc), **base))
            continue
        folded_size = tuple(n * f for n, f in zip(size, fold.r))
        options.append(
            FoldOption(
                r=r,
                foldable=True,
                reason="; ".join(plan.notes),
                folded=plan.result.describe(),
                folded_input_shape=(1, plan.result.in_channels) + folded_size,
                folded_kernel_size=plan.result.kernel_size,
                folded_params=plan.result.params,
                folded_macs=plan.result.macs(folded_size),
                plan=plan,
                **base,
            )
        )
    return options


def fold_options(
    spec: ConvSpec, input_size: Sequence[int], *, rs: Sequence[IntOrTuple] = DEFAULT_RS, order: Order = "crd"
) -> List[FoldOption]:
    """For each ``r``: does ``spec`` fold on spatial size ``input_size``, into what, and what it costs.

    Example:
        >>> options = fold_options(ConvSpec.make(2, 12, 8, 3), (8, 8), rs=(2, 4))
        >>> [(o.r, o.foldable, o.cost_neutral) for o in options]
        [(2, True, True), (4, False, False)]
        >>> options[1].reason
        'in_channels=12: must be a multiple of prod(r)=16 (r=(4, 4)) to fold'
    """
    size = validate_input_size(spec, input_size)
    validate_fold_request(rs, order)
    return _options("", spec, size, rs, order)


def foldable_layers(report: CountReport, *, rs: Sequence[IntOrTuple] = DEFAULT_RS, order: Order = "crd") -> List[FoldOption]:
    """:func:`fold_options` for every ``nn.Conv1d/2d/3d`` of a counted model, at the input it saw.

    Example:
        >>> from foldconv.analysis.counting import count
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 4, 1))
        >>> [(o.layer, o.r, o.foldable) for o in foldable_layers(count(net, (1, 3, 8, 8)), rs=(2, 4))]
        [('0', 2, False), ('0', 4, False), ('1', 2, True), ('1', 4, True)]
    """
    if not isinstance(report, CountReport):
        raise fold_error("report", type(report).__name__, "must be a CountReport (from count(model, input_shape))")
    validate_fold_request(rs, order)
    options: List[FoldOption] = []
    for layer, module in report.conv_layers():
        try:
            spec = ConvSpec.from_module(module)
        except FoldError as exc:
            options.append(FoldOption(layer=layer.name, r=None, conv=type(module).__name__, foldable=False, reason=str(exc)))
            continue
        options.extend(_options(layer.name, spec, tuple(layer.input_shape[2:]), rs, order))
    return options


def fold_matrix(options: Sequence[FoldOption]) -> List[Dict[str, Any]]:
    """Pivot :func:`foldable_layers` to one row per layer and a column ``r=<r>`` per factor:
    ``yes`` (same costs), ``yes*`` (holds, costs change: group or dilation expansion) or ``no``.

    Example:
        >>> fold_matrix(fold_options(ConvSpec.make(2, 16, 4, 3), (8, 8), rs=(2, 4, 8)))
        [{'layer': '', 'conv': 'Conv2d(16->4, k=(3, 3), s=(1, 1), p=(0, 0))', 'r=2': 'yes', 'r=4': 'yes', 'r=8': 'no'}]
    """
    table: Dict[str, Dict[str, Any]] = {}
    for option in options:
        if not isinstance(option, FoldOption):
            raise fold_error("options", type(option).__name__, "must hold FoldOption results of fold_options/foldable_layers")
        entry = table.setdefault(option.layer, {"layer": option.layer, "conv": option.conv})
        entry[f"r={option.r}"] = "no" if not option.foldable else ("yes" if option.cost_neutral else "yes*")
    return list(table.values())


@dataclass(frozen=True)
class Compared:
    """One quantity measured on the original and on the folded form."""

    quantity: str
    original: Any
    folded: Any

    @property
    def equal(self) -> bool:
        return self.original == self.folded


@dataclass(frozen=True)
class Comparison:
    """Counts of an original and of its folded form, and chosen quantities side by side."""

    original: CountReport
    folded: CountReport
    quantities: Tuple[Compared, ...]

    def quantity(self, name: str) -> Compared:
        """The comparison of one quantity by name (``params``, ``macs``, ...)."""
        for q in self.quantities:
            if q.quantity == name:
                return q
        raise fold_error("name", name, f"must be one of {[q.quantity for q in self.quantities]}")

    @property
    def keeps_costs(self) -> bool:
        """Parameters and MACs are the same before and after."""
        return self.quantity("params").equal and self.quantity("macs").equal

    def rows(self) -> List[Dict[str, Any]]:
        """One table row per quantity: ``quantity``, ``original``, ``folded``, ``equal``."""
        return [{"quantity": q.quantity, "original": q.original, "folded": q.folded, "equal": q.equal} for q in self.quantities]


@dataclass(frozen=True)
class FoldComparison(Comparison):
    """:func:`compare_fold`'s result: both counts, the plan, and the quantities side by side."""

    plan: Optional[FoldPlan] = None


def compare_fold(conv: nn.Module, input_shape: ShapeLike, *, r: IntOrTuple, order: Order = "crd") -> FoldComparison:
    """Counts of ``conv`` on ``input_shape`` and of ``fold_conv(conv, r)`` on the folded input, side by side.

    Both are measured by :func:`~foldconv.analysis.counting.count` (on meta tensors) and by the dense view.

    Example:
        >>> conv = torch.nn.Conv2d(256, 256, 3, padding=1, device="meta")
        >>> cmp = compare_fold(conv, (1, 256, 32, 32), r=16)
        >>> cmp.quantity("kernel_size").folded, cmp.quantity("params").folded, cmp.keeps_costs
        ((48, 48), 590080, True)
    """
    dims = require_conv(conv)
    shapes = normalize_input_shapes(input_shape)
    if len(shapes) != 1 or len(shapes[0]) != dims + 2 or shapes[0][1] != conv.in_channels:
        raise fold_error("input_shape", input_shape, f"must be one (N, {conv.in_channels}, *{dims} spatial sizes) shape for {conv}")
    shape = shapes[0]
    _check_fold(r, order)
    spec = ConvSpec.from_module(conv)
    plan = plan_fold(spec, FoldSpec.make(r, order, dims))
    folded = fold_conv(conv, r, order)
    folded_shape = (shape[0], plan.result.in_channels) + tuple(n * f for n, f in zip(shape[2:], plan.fold.r))
    before, after = count(conv, shape), count(folded, folded_shape)
    d_before, d_after = dense_equivalent(spec, shape[2:]), dense_equivalent(plan.result, folded_shape[2:])
    pairs = [
        ("conv", spec.describe(), plan.result.describe()),
        ("input_shape", shape, folded_shape),
        ("output_shape", before.layers[0].output_shape, after.layers[0].output_shape),
        ("kernel_size", spec.kernel_size, plan.result.kernel_size),
        ("params", before.params, after.params),
        ("macs", before.macs, after.macs),
        ("flops", before.flops, after.flops),
        ("weight_bytes", before.weight_bytes, after.weight_bytes),
        ("activation_elements", before.activation_elements, after.activation_elements),
        ("dense_params", d_before.dense_params, d_after.dense_params),
        ("operator_nonzeros", d_before.operator_nonzeros, d_after.operator_nonzeros),
        ("density", d_before.density, d_after.density),
    ]
    return FoldComparison(before, after, tuple(Compared(*p) for p in pairs), plan)


def meta_copy(model: nn.Module) -> nn.Module:
    """A deep copy of ``model`` whose parameters and buffers are on meta (nothing real is copied).

    Example:
        >>> meta_copy(torch.nn.Linear(2, 3)).weight.device.type
        'meta'
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    memo: Dict[int, Any] = {}
    for p in model.parameters():
        memo[id(p)] = nn.Parameter(torch.empty_like(p, device="meta"), requires_grad=p.requires_grad)
    for b in model.buffers():
        memo[id(b)] = torch.empty_like(b, device="meta")
    return copy.deepcopy(model, memo)
