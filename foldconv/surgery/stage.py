"""Fold a stage, or a whole model: its activations live in the space domain, each conv acts there as its fold.

A folded stage computes exactly what the stage computes. It puts ``DepthToSpace(r)`` at its entry; each conv
becomes :func:`foldconv.fold.fold_conv` acting on the depth-to-space map, and its output goes back to the space
domain (``DepthToSpace`` of the conv's output, which needs ``out_channels`` a multiple of ``prod(r)``); a
following layer runs there when the prediction engine says it commutes with the layout change
(:func:`foldconv.predict.predict_following`: ReLU, eval BatchNorm with tied statistics, residual adds, ...; the
folded layer is :func:`foldconv.predict.fold_following`'s). A layer that does not commute ends the space domain
(``SpaceToDepth`` before it) and the report says why: the prediction's reason. ``SpaceToDepth`` at the exit.
Built on the torch.fx graph of the stage (:func:`foldconv.tracing.trace`), so residual connections work.

Written naively, every value of the stage lives in the space domain: ``DepthToSpace`` after each conv (and
after each layer kept in the original domain), ``SpaceToDepth`` before each layer that needs the original
domain and at the exit. Every ``DepthToSpace`` followed at once by a ``SpaceToDepth`` is the identity; the
folded stage does not run these pairs (a conv's output read in the original domain is read as it is), and
:attr:`FoldReport.cancelled_pairs` counts them. :attr:`FoldReport.layout_ops` lists what it does run.

This is the one way foldconv folds more than one conv: :func:`fold_model` is a whole model folded as one stage
(a model torch.fx cannot trace has each conv folded on its own), :func:`compare_model_fold` counts a model and
its fold side by side, and the rewrite rule ``fold_stage`` folds a named stage of a model. :func:`unfold_stage`
gives the stage back, bit-exact. Like every surgery function that changes a model, :func:`fold_stage` and
:func:`fold_model` return the new model and what happened: ``(model, FoldReport)``.

Example:
    >>> from torch import nn
    >>> stage = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    >>> folded, report = fold_stage(stage, 2, input_shape=(1, 4, 8, 8))
    >>> [(layer.name, layer.action) for layer in report.layers]
    [('0', 'folded'), ('1', 'commuted'), ('2', 'folded')]
    >>> report.layout_ops, report.cancelled_pairs
    (('DepthToSpace@input', 'DepthToSpace@0'), 1)
    >>> x = torch.randn(1, 4, 8, 8, dtype=torch.float64)
    >>> torch.allclose(folded.double()(x), stage.double()(x))
    True
    >>> back = unfold_stage(folded)
    >>> all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), stage.state_dict().values()))
    True
"""
from __future__ import annotations

import copy
import operator
from dataclasses import dataclass
from dataclasses import replace as dataclass_replace
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .. import tracing
from .._tables import markdown_table
from .._validate import CONV_TYPES, require_bool
from ..analysis.counting import count, meta_copy
from ..analysis.counting.fold import Compared, Comparison
from ..errors import FoldError, first_line, fold_error
from ..fold import fold_conv, plan_fold, unfold_weight
from ..layout import DepthToSpace, IntOrTuple, Order, SpaceToDepth, fold_channel_map, normalize_order, space_to_depth
from ..predict import Outcome, fold_following, following_rule, predict_fold, predict_following
from ..specs import ConvSpec, FoldSpec
from .bn import fold_bn as fold_conv_bn
from .hazards import module_hazard
from .patterns import Context, conv_then_bn

__all__ = [
    "ACTIONS", "StageLayer", "FoldReport", "FoldedStage", "fold_stage", "unfold_stage", "fold_model", "ModelFoldComparison",
    "compare_model_fold",
]

#: What happened to a layer: its fold runs in the space domain, it runs there unchanged in form, or it runs in
#: the original (depth) domain.
ACTIONS = ("folded", "commuted", "kept")

# Elementwise functions and tensor methods, with the module the prediction engine answers for.
_UNARY: Dict[Any, Callable[[], nn.Module]] = {
    torch.relu: nn.ReLU, F.relu: nn.ReLU, "relu": nn.ReLU, torch.sigmoid: nn.Sigmoid, "sigmoid": nn.Sigmoid,
    torch.tanh: nn.Tanh, "tanh": nn.Tanh, F.silu: nn.SiLU, F.gelu: nn.GELU, F.relu6: nn.ReLU6, F.hardswish: nn.Hardswish,
    F.hardsigmoid: nn.Hardsigmoid, F.leaky_relu: nn.LeakyReLU, F.elu: nn.ELU, F.mish: nn.Mish,
}
_BINARY = {operator.add, operator.sub, operator.mul, torch.add, torch.sub, torch.mul, "add", "sub", "mul"}
# In-place spellings run out of place in the folded graph: the space and depth forms of a value are different
# tensors, so an in-place update of one would not reach the other.
_OUT_OF_PLACE = {operator.iadd: operator.add, operator.isub: operator.sub, operator.imul: operator.mul,
                 "add_": "add", "sub_": "sub", "mul_": "mul", "relu_": "relu", "sigmoid_": "sigmoid", "tanh_": "tanh"}
_BINARY_REASON = "elementwise on maps of one shape: the layout change moves each element of every operand to the same place"


@dataclass(frozen=True)
class StageLayer:
    """One layer (fx node) of a folded stage and what happened to it.

    ``name``: the module path (the fx node's name for a function); ``node``: the fx node's name; ``kind``: the
    module type or function name; ``action``: one of :data:`ACTIONS`; ``reason``: the prediction's reason (why
    it holds, or why it does not); ``before``/``after``: the conv specs of a folded conv; ``input_shape``: the
    full shape of the layer's (first) input in the original stage, () when it is not a tensor.
    """

    name: str
    node: str
    kind: str
    action: str
    reason: str
    before: str = ""
    after: str = ""
    input_shape: Tuple[int, ...] = ()

    def row(self) -> Dict[str, Any]:
        """The table row."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class FoldReport:
    """What :func:`fold_stage` or :func:`fold_model` did: one :class:`StageLayer` per layer, the layout ops run.

    ``layout_ops`` names the DepthToSpace/SpaceToDepth the folded model runs (``"DepthToSpace@<layer>"`` converts
    that layer's output, ``@input`` the stage's input); ``cancelled_pairs`` counts the conversion pairs it does not
    run. ``traced``: torch.fx traced the model (False: :func:`fold_model` folded each conv on its own, and
    ``fallback_reason`` says why). ``fused_batchnorms``: ``(BatchNorm path, conv path)`` of each eval-mode BatchNorm
    folded into its conv before the fold (``fold_bn=True``): a change to the model besides the fold, which
    :meth:`summary` states.

    Example:
        >>> _, report = fold_stage(nn.Sequential(nn.Conv2d(4, 4, 1)), 2, input_shape=(1, 4, 2, 2))
        >>> report.summary()
        "Sequential: r=(2, 2) order='c rh rw': 1 folded, 0 commuted, 0 kept; 1 layout op(s), 1 cancelled pair(s)"
    """

    model: str
    input_shape: Tuple[int, ...]
    r: Tuple[int, ...]
    order: Tuple[str, ...]
    layers: Tuple[StageLayer, ...]
    layout_ops: Tuple[str, ...]
    cancelled_pairs: int
    traced: bool = True
    fallback_reason: str = ""
    fused_batchnorms: Tuple[Tuple[str, str], ...] = ()

    @property
    def folded_layers(self) -> int:
        """How many convs run as their fold."""
        return sum(layer.action == "folded" for layer in self.layers)

    def rows(self) -> List[Dict[str, Any]]:
        """One table row per layer."""
        return [layer.row() for layer in self.layers]

    def summary(self) -> str:
        """One line: factors, what happened, conversions (and how the model was read when fx could not trace it)."""
        counts = {a: sum(layer.action == a for layer in self.layers) for a in ACTIONS}
        text = (f"{self.model}: r={self.r} order={' '.join(self.order)!r}: {counts['folded']} folded, {counts['commuted']} "
                f"commuted, {counts['kept']} kept; {len(self.layout_ops)} layout op(s), {self.cancelled_pairs} cancelled pair(s)")
        if self.fused_batchnorms:  # a change to the model besides the fold itself: said wherever the fold is
            text += f"; {self.describe_fused()}"
        return text if self.traced else f"{text}; each conv folded on its own ({self.fallback_reason})"

    def describe_fused(self) -> str:
        """``"first folded 2 eval-mode BatchNorm(s) into the conv before each: bn1 into conv1, bn2 into conv2"``, or ""."""
        if not self.fused_batchnorms:
            return ""
        pairs = ", ".join(f"{bn} into {conv}" for bn, conv in self.fused_batchnorms)
        return f"first folded {len(self.fused_batchnorms)} eval-mode BatchNorm(s) into the conv before each: {pairs}"

    def to_markdown(self) -> str:
        """The summary line and the per-layer table."""
        return self.summary() + "\n\n" + markdown_table(self.rows())


class FoldedStage(nn.Module):
    """A stage whose activations live in the space domain (:func:`fold_stage`); runnable, with real weights.

    ``body`` is the torch.fx GraphModule that runs; ``report`` says per layer what happened and why.
    :func:`unfold_stage` gives the original stage back.
    """

    def __init__(self, body: fx.GraphModule, *, fold: FoldSpec, input_shape: Tuple[int, ...], report: FoldReport,
                 structure: nn.Module, origin: Dict[str, Tuple[str, str, int]], attrs: Tuple[str, ...], wrapped: bool):
        super().__init__()
        self.body = body
        self.fold = fold
        self.input_shape = input_shape
        self.report = report
        # The original stage's structure on meta (no storage), outside the module tree so that it is neither
        # a parameter of the folded stage nor moved by .to(): unfold_stage fills it from the folded weights.
        object.__setattr__(self, "_structure", structure)
        object.__setattr__(self, "_origin", dict(origin))
        object.__setattr__(self, "_attrs", tuple(attrs))
        object.__setattr__(self, "_wrapped", wrapped)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.body(*args, **kwargs)

    def extra_repr(self) -> str:
        return f"r={self.fold.r}, order={' '.join(self.fold.order)!r}, input_shape={self.input_shape}"


def _trace(stage: nn.Module, input_shape: Tuple[int, ...]) -> Tuple[fx.GraphModule, Dict[str, Tuple[int, ...]]]:
    """The fx graph of the stage and every node's output shape, from a pass on meta tensors (no data touched)."""
    try:
        traced = tracing.trace(stage)
    except FoldError as err:
        if err.param != "model" or err.__cause__ is None:
            raise
        raise fold_error("stage", type(stage).__name__, f"does not trace with torch.fx ({first_line(err.__cause__, with_type=True)}); "
                         "fold its traceable parts") from err.__cause__
    inputs = [n for n in traced.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise fold_error("stage", type(stage).__name__, f"must take one input tensor; its forward takes {len(inputs)}")
    return traced, tracing.node_shapes(tracing.node_values(traced, input_shape, on="meta"))


def _fold_batchnorms(stage: nn.Module, input_shape: Tuple[int, ...]) -> Tuple[nn.Module, Tuple[Tuple[str, str, str], ...]]:
    """A copy of ``stage`` with every eval-mode BatchNorm that is the only user of a conv folded into it (the
    BatchNorm's place kept as an identity), and ``(BatchNorm path, its type, conv path)`` of each one folded; a pair
    that cannot be folded (a training-mode BatchNorm, a module called twice) is left as it is."""
    work = copy.deepcopy(stage)
    fused_pairs = []
    for match in conv_then_bn(Context.build(work, input_shape)):
        if match.problem:
            continue
        bn = work.get_submodule(match.bn)
        try:
            fused = fold_conv_bn(work.get_submodule(match.location), bn)
        except FoldError:
            continue
        work.set_submodule(match.location, fused)
        work.set_submodule(match.bn, nn.Identity())
        fused_pairs.append((match.bn, type(bn).__name__, match.location))
    return work, tuple(fused_pairs)


def _on_meta(module: nn.Module) -> bool:
    return any(t.is_meta for t in list(module.parameters()) + list(module.buffers()))


def _owner(root: nn.Module, path: str) -> nn.Module:
    """The submodule of ``root`` at ``path``, creating empty modules on the way (the folded graph's namespace)."""
    for part in filter(None, path.split(".")):
        if not hasattr(root, part):
            root.add_module(part, nn.Module())
        root = getattr(root, part)
    return root


def _set_module(root: nn.Module, path: str, module: nn.Module) -> None:
    parent, _, name = path.rpartition(".")
    _owner(root, parent).add_module(name, module)


def _no_inplace(module: nn.Module) -> nn.Module:
    for m in module.modules():
        if getattr(m, "inplace", False) is True:
            m.inplace = False
    return module


class _Builder:
    """Walks the stage's fx graph once, building the folded graph and the per-layer record."""

    def __init__(self, stage: nn.Module, traced: fx.GraphModule, shapes: Dict[str, Tuple[int, ...]], fold: FoldSpec, *,
                 cost_neutral_only: bool):
        self.stage, self.traced, self.shapes, self.fold = stage, traced, shapes, fold
        self.cost_neutral_only = cost_neutral_only
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.space: Dict[fx.Node, fx.Node] = {}
        self.depth: Dict[fx.Node, fx.Node] = {}
        self.natural: Dict[fx.Node, str] = {}
        self.layers: List[StageLayer] = []
        self.layout_ops: List[str] = []
        self.cancelled = 0
        self.paths: Dict[Tuple[str, str], str] = {}
        self.origin: Dict[str, Tuple[str, str, int]] = {}
        self.attrs: Set[str] = set()

    # -- values -----------------------------------------------------------------------------------------
    def shape(self, node: Any) -> Optional[Tuple[int, ...]]:
        """The node's shape when it is a feature map ``(N, C, *spatial)`` of the stage's dims, else None."""
        shape = self.shapes.get(node.name) if isinstance(node, fx.Node) else None
        return shape if shape is not None and len(shape) == self.fold.dims + 2 else None

    def foldable(self, node: Any) -> bool:
        shape = self.shape(node)
        return shape is not None and shape[1] % self.fold.block == 0

    def get(self, node: fx.Node, form: str) -> fx.Node:
        """The node's value in ``form`` ("space" or "depth"), converting (once) when it is not there yet."""
        have, other = (self.space, self.depth) if form == "space" else (self.depth, self.space)
        if node in have:
            if form == "depth" and self.natural.get(node) == "depth" and self.foldable(node):
                self.cancelled += 1  # the all-space form converts this value into space and straight back here
            return have[node]
        cls = DepthToSpace if form == "space" else SpaceToDepth
        label = "input" if node.op == "placeholder" else (node.target if node.op == "call_module" else node.name)
        name = f"{cls.__name__}@{label}"
        path = f"{'d2s' if form == 'space' else 's2d'}_{node.name}"
        _set_module(self.root, path, cls(self.fold.r, self.fold.order, dims=self.fold.dims))
        have[node] = self.graph.call_module(path, (other[node],))
        self.layout_ops.append(name)
        return have[node]

    def args(self, node: fx.Node, form: str) -> Tuple[Any, Dict[str, Any]]:
        def convert(n: fx.Node) -> fx.Node:
            return self.get(n, form) if self.shape(n) is not None else self.get(n, "depth")

        return fx.node.map_arg(node.args, convert), fx.node.map_arg(node.kwargs, convert)

    # -- records ----------------------------------------------------------------------------------------
    def place(self, node: fx.Node, module: nn.Module, action: str, channels: int) -> str:
        """Put ``module`` in the folded graph's root under the node's module path (suffixed when a shared module
        is treated two ways) and remember where each original module went, for unfold_stage."""
        key = (node.target, action)
        if key not in self.paths:
            taken = set(self.paths.values())
            path = node.target if node.target not in taken else f"{node.target}_{action}"
            self.paths[key] = path
            _set_module(self.root, path, module)
            self.origin.setdefault(node.target, (action, path, channels))
        return self.paths[key]

    def record(self, node: fx.Node, kind: str, action: str, reason: str, before: str = "", after: str = "") -> None:
        name = node.target if node.op == "call_module" else node.name
        first = next((a for a in node.args if isinstance(a, fx.Node)), None)
        shape = tuple(self.shapes.get(first.name) or ()) if first is not None else ()
        self.layers.append(StageLayer(name, node.name, kind, action, reason, before, after, shape))

    def emit(self, node: fx.Node, op: str, target: Any, form: str) -> None:
        args, kwargs = self.args(node, form)
        if kwargs.get("inplace") is True:
            kwargs = {**kwargs, "inplace": False}
        out = self.graph.create_node(op, target, args, kwargs, name=node.name)
        (self.space if form == "space" else self.depth)[node] = out
        self.natural[node] = form

    # -- nodes ------------------------------------------------------------------------------------------
    def placeholder(self, node: fx.Node) -> None:
        self.depth[node] = self.graph.placeholder(node.target)
        self.natural[node] = "depth"

    def get_attr(self, node: fx.Node) -> None:
        parent, _, name = node.target.rpartition(".")
        value, owner = getattr(self.stage.get_submodule(parent), name), _owner(self.root, parent)
        if isinstance(value, nn.Parameter):
            owner.register_parameter(name, nn.Parameter(value.detach().clone(), requires_grad=value.requires_grad))
        elif isinstance(value, torch.Tensor):
            owner.register_buffer(name, value.detach().clone())
        else:
            setattr(owner, name, copy.deepcopy(value))
        self.attrs.add(node.target)
        self.depth[node] = self.graph.get_attr(node.target)
        self.natural[node] = "depth"

    def keep_module(self, node: fx.Node, module: nn.Module, reason: str) -> None:
        shape = self.shape(node.args[0]) if node.args else None
        path = self.place(node, _no_inplace(copy.deepcopy(module)), "kept", shape[1] if shape else 0)
        self.emit(node, "call_module", path, "depth")
        self.record(node, type(module).__name__, "kept", reason)

    def conv(self, node: fx.Node, conv: nn.Module) -> None:
        hazard = module_hazard(str(node.target), conv)
        if hazard:  # its fold would drop the hook or the subclass's own forward
            return self.keep_module(node, conv, hazard)
        spec = ConvSpec.from_module(conv)
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        shape = self.shape(source)
        if shape is None:
            return self.keep_module(node, conv, "its input is not one feature map of the stage's dims")
        prediction = predict_fold(conv, self.fold, input_size=shape[2:])
        conditions = f" (an equivalent form needs: {'; '.join(prediction.conditions)})" if prediction.conditions else ""
        if prediction.outcome not in (Outcome.HOLDS, Outcome.HOLDS_IF):
            return self.keep_module(node, conv, f"{prediction.outcome.value}: {prediction.reason}{conditions}")
        # HOLDS_IF: fold_conv's plan makes the changes the conditions name (a group or dilation expansion)
        plan = plan_fold(spec, self.fold)
        if self.cost_neutral_only and plan.result.params != spec.params:
            return self.keep_module(node, conv, f"folds only with a group or dilation expansion, which changes the costs{conditions}")
        reason = prediction.reason if prediction.outcome is Outcome.HOLDS else f"{prediction.outcome.value}: {'; '.join(prediction.conditions)}"
        path = self.place(node, fold_conv(conv, self.fold), "folded", spec.in_channels)
        self.emit(node, "call_module", path, "space")
        # The folded conv's output is the original conv's output: the depth domain.
        self.depth[node] = self.space.pop(node)
        self.natural[node] = "depth"
        if spec.out_channels % self.fold.block:
            reason += (f"; its output stays in the original domain: out_channels={spec.out_channels} is not a multiple "
                       f"of prod(r)={self.fold.block}")
        self.record(node, type(conv).__name__, "folded", reason, spec.describe(), plan.result.describe())

    def following(self, node: fx.Node, layer: nn.Module) -> None:
        hazard = module_hazard(str(node.target), layer)
        if hazard:
            return self.keep_module(node, layer, hazard)
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        shape = self.shape(source)
        if shape is None:
            return self.keep_module(node, layer, "its input is not one feature map of the stage's dims")
        if shape[1] % self.fold.block:
            return self.keep_module(node, layer, f"its input has {shape[1]} channels, not a multiple of prod(r)="
                                    f"{self.fold.block}: that map cannot be in the space domain")
        try:
            prediction = predict_following(layer, self.fold, shape[1], input_size=shape[2:])
        except (NotImplementedError, RuntimeError):
            if not _on_meta(layer):
                raise
            return self.keep_module(node, layer, "its parameters are on meta: whether it commutes depends on their values")
        if prediction.outcome is not Outcome.HOLDS:
            return self.keep_module(node, layer, f"{prediction.outcome.value}: {prediction.reason}")
        path = self.place(node, _no_inplace(fold_following(layer, self.fold, shape[1])), "commuted", shape[1])
        self.emit(node, "call_module", path, "space")
        self.record(node, type(layer).__name__, "commuted", prediction.reason)

    def function(self, node: fx.Node) -> None:
        target = _OUT_OF_PLACE.get(node.target, node.target)
        kind = target if isinstance(target, str) else getattr(target, "__name__", str(target))
        tensors = [a for a in node.all_input_nodes]
        out_shape = self.shape(node)
        reason = ""
        if target in _UNARY and tensors and node.args and node.args[0] is tensors[0] and len(tensors) == 1:
            if not self.foldable(tensors[0]):
                reason = "its input is not a feature map whose channels are a multiple of prod(r)"
            else:
                prediction = predict_following(_UNARY[target](), self.fold, self.shape(tensors[0])[1])
                if prediction.outcome is Outcome.HOLDS:
                    self.emit(node, node.op, target, "space")
                    return self.record(node, kind, "commuted", prediction.reason)
                reason = f"{prediction.outcome.value}: {prediction.reason}"
        elif target in _BINARY and tensors:
            if out_shape is not None and all(self.shape(t) == out_shape for t in tensors) and self.foldable(node):
                self.emit(node, node.op, target, "space")
                return self.record(node, kind, "commuted", _BINARY_REASON)
            reason = "broadcasts, or its operands are not feature maps whose channels are a multiple of prod(r)"
        else:
            reason = f"{kind} is not known to commute with the layout change (no prediction rule for it)"
        self.emit(node, node.op, target, "depth")
        self.record(node, kind, "kept", reason)

    def build(self) -> None:
        for node in self.traced.graph.nodes:
            if node.op == "placeholder":
                self.placeholder(node)
            elif node.op == "get_attr":
                self.get_attr(node)
            elif node.op == "call_module":
                module = self.stage.get_submodule(node.target)
                if isinstance(module, CONV_TYPES):
                    self.conv(node, module)
                else:
                    try:
                        following_rule(module)
                    except FoldError as err:
                        self.keep_module(node, module, str(err))
                        continue
                    self.following(node, module)
            elif node.op in ("call_function", "call_method"):
                self.function(node)
            elif node.op == "output":
                self.graph.output(fx.node.map_arg(node.args[0], lambda n: self.get(n, "depth")))


def _validated(stage: Any, r: Any, input_shape: Any, order: Any, fold_bn: Any, cost_neutral_only: Any, param: str):
    if not isinstance(stage, nn.Module):
        raise fold_error(param, type(stage).__name__, "must be an nn.Module")
    if isinstance(stage, FoldedStage):
        raise fold_error(param, "FoldedStage", "is folded already; unfold_stage gives the original back")
    shape = tracing.validate_input_shape(input_shape, ranks=(3, 4, 5))
    normalize_order(order, len(shape) - 2)  # None is not an order here (FoldSpec.coerce would take the default)
    fold = FoldSpec.coerce(r, len(shape) - 2, order, param="r")
    return shape, fold, require_bool(fold_bn, "fold_bn"), require_bool(cost_neutral_only, "cost_neutral_only")


def _fold(stage: nn.Module, shape: Tuple[int, ...], fold: FoldSpec, *, fold_bn: bool, cost_neutral_only: bool) -> Tuple[FoldedStage, FoldReport]:
    # A stage that is one layer (a conv) is traced as a one-layer Sequential: fx would trace into its forward.
    wrapped = fx.Tracer().is_leaf_module(stage, "")
    root = nn.Sequential(stage) if wrapped else stage
    fused: Tuple[Tuple[str, str, str], ...] = ()
    if fold_bn:
        root, fused = _fold_batchnorms(root, shape)
    traced, shapes = _trace(root, shape)
    builder = _Builder(root, traced, shapes, fold, cost_neutral_only=cost_neutral_only)
    builder.build()
    body = fx.GraphModule(builder.root, builder.graph, class_name="FoldedStageBody")
    body.graph.lint()
    into = {bn: (kind, conv) for bn, kind, conv in fused}
    layers = tuple(  # a BatchNorm folded into its conv is an identity now: its row says what it was and where it went
        dataclass_replace(layer, kind=f"{into[layer.name][0]} folded into {into[layer.name][1]}", reason=(
            f"eval-mode {into[layer.name][0]} folded into the conv before it ({into[layer.name][1]}: its weight and bias "
            f"scaled and shifted by the running statistics and affine parameters) before the fold; its place is the "
            f"identity, which commutes with any permutation of elements")) if layer.name in into and layer.kind == "Identity" else layer
        for layer in builder.layers)
    report = FoldReport(type(stage).__name__, shape, fold.r, fold.order, layers, tuple(builder.layout_ops),
                        builder.cancelled, fused_batchnorms=tuple((bn, conv) for bn, _, conv in fused))
    folded = FoldedStage(body, fold=fold, input_shape=shape, report=report, structure=meta_copy(root), origin=builder.origin,
                         attrs=tuple(sorted(builder.attrs)), wrapped=wrapped)
    folded.training = body.training = stage.training  # not .train(): each layer keeps its own mode
    return folded, report


def fold_stage(stage: nn.Module, r: IntOrTuple, *, input_shape: Sequence[int], order: Order = "crd", fold_bn: bool = False,
               cost_neutral_only: bool = True) -> Tuple[FoldedStage, FoldReport]:
    """The stage with its activations in the space domain (a real, runnable module equal to ``stage``) and the report.

    ``input_shape`` is the full shape of the stage's input (its spatial dims are the fold's); ``r`` an int
    (every spatial axis) or one factor per axis; ``order`` the channel order of every DepthToSpace, SpaceToDepth
    and folded weight. Every conv whose fold holds (:func:`foldconv.predict.predict_fold`) runs as its fold; with
    ``cost_neutral_only`` (the default) only folds that keep the parameters and MACs (no group or dilation
    expansion). Every module or elementwise function the prediction engine says commutes runs in the space
    domain; the rest run in the original domain, and :attr:`FoldReport.layers` says why. Eval-mode BatchNorm with
    per-channel statistics does not commute: ``fold_bn=True`` folds each one that follows a conv into it first
    (:func:`foldconv.surgery.bn.fold_bn`). The stage is traced with torch.fx (a FoldError when it does not trace);
    a stage that is one layer (a conv) is folded as ``nn.Sequential(stage)``, its layer named ``"0"``. The input
    stage is not modified.

    Args:
        stage: the stage (``nn.Module`` that torch.fx traces, or one conv); it is not modified.
        r: the fold factor, an int (every spatial axis) or one factor per axis.
        input_shape: the full input shape ``(N, C, *spatial)`` with 1 to 3 spatial dims (keyword only).
        order: the channel order of every layout op and folded weight, an alias or einops axes (default ``"crd"``).
        fold_bn: fold each eval-mode BatchNorm that follows a conv into it first (default False).
        cost_neutral_only: fold only convs whose fold keeps the parameters and MACs (default True).

    Returns:
        ``(folded, report)``: a :class:`FoldedStage` equal to ``stage`` and a :class:`FoldReport`: ``layers`` (per
        layer ``name``, ``action`` -- folded, commuted or kept -- and ``reason``), ``layout_ops``, ``folded_layers``.

    Raises:
        FoldError: naming ``stage`` (not a module, folded already, or not traceable), ``r``, ``input_shape``,
        ``order``, ``fold_bn`` or ``cost_neutral_only``.

    Example:
        >>> from torch import nn
        >>> stage = nn.Sequential(nn.Conv2d(8, 6, 1), nn.ReLU())
        >>> folded, report = fold_stage(stage, 2, input_shape=(1, 8, 4, 4))
        >>> [layer.action for layer in report.layers], report.layers[1].reason[:40]
        (['folded', 'kept'], 'its input has 6 channels, not a multiple')
    """
    shape, fold, fold_bn, cost_neutral_only = _validated(stage, r, input_shape, order, fold_bn, cost_neutral_only, "stage")
    return _fold(stage, shape, fold, fold_bn=fold_bn, cost_neutral_only=cost_neutral_only)


def fold_model(model: nn.Module, r: IntOrTuple, *, input_shape: Sequence[int], order: Order = "crd", fold_bn: bool = False,
               cost_neutral_only: bool = True) -> Tuple[nn.Module, FoldReport]:
    """The whole model folded as one stage (:func:`fold_stage`), and the report.

    A real, runnable copy: the model's weights (folded where a conv folds) on the model's device, in its dtype and
    training mode; a model on meta gives a meta copy (what :func:`compare_model_fold` counts). It computes the same
    function, so "is the folded model faster?" is one call to time it. A model torch.fx cannot trace has each conv
    folded on its own instead (``DepthToSpace`` then the folded conv, in place; ``report.traced`` is False and
    says why). The input model is not modified.

    Args:
        model: the network (``nn.Module``, real or meta weights); it is not modified.
        r: the fold factor, an int (every spatial axis) or one factor per axis.
        input_shape: the full input shape ``(N, C, *spatial)`` with 1 to 3 spatial dims (keyword only).
        order: the channel order of every layout op and folded weight, an alias or einops axes (default ``"crd"``).
        fold_bn: fold each eval-mode BatchNorm that follows a conv into it first (default False).
        cost_neutral_only: fold only convs whose fold keeps the parameters and MACs (default True).

    Returns:
        ``(folded_model, report)``: the folded copy and a :class:`FoldReport`: ``layers`` (per layer ``name``,
        ``action`` and ``reason``), ``layout_ops``, ``folded_layers``, ``traced`` and ``fallback_reason``.

    Raises:
        FoldError: naming ``model`` (not a module, or a FoldedStage), ``r``, ``input_shape``, ``order``,
        ``fold_bn`` or ``cost_neutral_only``.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 4, 1))
        >>> folded, report = fold_model(net, 2, input_shape=(1, 3, 8, 8))
        >>> [(layer.name, layer.action) for layer in report.layers]
        [('0', 'kept'), ('1', 'folded')]
        >>> x = torch.randn(1, 3, 8, 8)
        >>> torch.allclose(folded(x), net(x), atol=1e-5)
        True
    """
    shape, fold, fold_bn, cost_neutral_only = _validated(model, r, input_shape, order, fold_bn, cost_neutral_only, "model")
    try:
        tracing.trace(model)
    except FoldError as err:
        if err.param != "model":
            raise
        return _fold_each_conv(model, shape, fold, err.rule, fold_bn=fold_bn, cost_neutral_only=cost_neutral_only)
    return _fold(model, shape, fold, fold_bn=fold_bn, cost_neutral_only=cost_neutral_only)


def _fold_each_conv(model: nn.Module, shape: Tuple[int, ...], fold: FoldSpec, why: str, *, fold_bn: bool,
                    cost_neutral_only: bool) -> Tuple[nn.Module, FoldReport]:
    """Every conv of a model fx cannot trace replaced by its own folded stage, at the input its first call sees."""
    if not _on_meta(model):  # the input shapes are read from one run, on real tensors when meta ones fail
        tracing.require_run_memory(model, shape, copies=1, what="running the model once to read its layers' inputs")
    copied, fused = _fold_batchnorms(model, shape) if fold_bn else (copy.deepcopy(model), ())
    calls = tracing.module_inputs(copied, shape)
    replaced: Dict[int, nn.Module] = {}
    layers: List[StageLayer] = []
    layout_ops: List[str] = []
    convs = [(path, m) for path, m in copied.named_modules(remove_duplicate=False) if path and isinstance(m, CONV_TYPES)]
    for path, conv in convs:
        if id(conv) not in replaced:  # a conv shared by two paths is folded once, at its first path
            replaced[id(conv)] = conv
            if path not in calls or len(calls[path][0]) != fold.dims + 2:
                layers.append(StageLayer(path, "", type(conv).__name__, "kept", "the model never calls it on a feature map of the fold's dims",
                                         input_shape=tuple(calls[path][0]) if path in calls else ()))
                continue
            if module_hazard(path, conv):
                layers.append(StageLayer(path, "", type(conv).__name__, "kept", module_hazard(path, conv), input_shape=tuple(calls[path][0])))
                continue
            folded, report = _fold(conv, calls[path][0], fold, fold_bn=False, cost_neutral_only=cost_neutral_only)
            layers.append(dataclass_replace(report.layers[0], name=path))
            if report.folded_layers:
                replaced[id(conv)] = folded
                layout_ops += [f"{op}:{path}" for op in report.layout_ops]
        copied.set_submodule(path, replaced[id(conv)])
    report = FoldReport(type(model).__name__, shape, fold.r, fold.order, tuple(layers), tuple(layout_ops), 0, traced=False,
                        fallback_reason=why, fused_batchnorms=tuple((bn, conv) for bn, _, conv in fused))
    return copied, report


def _expand(folded: torch.Tensor, channels: int, fold: FoldSpec) -> torch.Tensor:
    """Per-channel values from per-folded-channel ones: channel ``c`` takes its folded channel's value."""
    owner = torch.empty(channels, dtype=torch.long)
    blocks = fold_channel_map(channels, fold.r, fold.order, dims=fold.dims).reshape(channels // fold.block, -1)
    for g, members in enumerate(blocks):
        owner[members] = g
    return folded[owner.to(folded.device)]


def _unfold_tensor(value: torch.Tensor, target: torch.Size, channels: int, fold: FoldSpec) -> Optional[torch.Tensor]:
    """The original tensor of shape ``target`` behind a commuted layer's tensor, when its shape says how."""
    if value.shape == target:
        return value.detach().clone()
    if len(target) >= 1 and target[0] == channels and tuple(value.shape) == (channels // fold.block,) + tuple(target[1:]):
        return _expand(value.detach(), channels, fold)
    if len(target) == fold.dims + 1 and value.dim() == fold.dims + 1:
        return space_to_depth(value.detach(), fold.r, fold.order, dims=fold.dims).clone()
    return None


def _recover(folded: FoldedStage, module_path: str, name: str, target: torch.Tensor) -> Optional[torch.Tensor]:
    action, path, channels = folded._origin[module_path]
    module = folded.body.get_submodule(path)
    value = getattr(module, name)
    if action == "kept" or value is None:
        return None if value is None else value.detach().clone()
    if action == "folded":
        if name == "weight":
            return unfold_weight(value.detach(), folded.fold, groups=module.groups).weight.clone()
        return value.detach().clone()
    return _unfold_tensor(value, target.shape, channels, folded.fold)


def _validate_commuted(folded: FoldedStage, rebuilt: nn.Module) -> None:
    """Folding the rebuilt originals of commuted layers must give the folded stage's layers back, bit for bit."""
    for module_path, (action, path, channels) in folded._origin.items():
        if action != "commuted":
            continue
        again = fold_following(rebuilt.get_submodule(module_path), folded.fold, channels)
        current = folded.body.get_submodule(path)
        for (key, a), (_, b) in zip(again.state_dict().items(), current.state_dict().items()):
            if a.shape != b.shape or not torch.equal(a.to(b), b):
                raise fold_error("folded", path, f"its {key} is not the fold of any {type(again).__name__} "
                                 "(parameters that must be equal within fold blocks differ): it has no unfolded form")


def unfold_stage(folded: FoldedStage) -> nn.Module:
    """The original stage of a :func:`fold_stage` result, with the folded stage's weights unfolded (bit-exact).

    Folded convs give their weights back with :func:`foldconv.fold.unfold_weight` (a permutation), commuted
    layers with per-channel parameters take each folded channel's value for its ``prod(r)`` channels (and folding
    the rebuilt layers again must give the folded stage's layers back bit for bit), kept layers are copied. A
    stage whose folded weights were changed unfolds to the stage they now stand for; a stage folded with
    ``fold_bn=True`` unfolds to its convs with the BatchNorms folded in.

    Example:
        >>> from torch import nn
        >>> stage = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        >>> back = unfold_stage(fold_stage(stage, 2, input_shape=(1, 4, 6, 6))[0])
        >>> torch.equal(back[0].weight, stage[0].weight), type(back[1]).__name__
        (True, 'ReLU')
    """
    if not isinstance(folded, FoldedStage):
        raise fold_error("folded", type(folded).__name__, "must be a FoldedStage (from fold_stage)")
    rebuilt = copy.deepcopy(folded._structure)
    missing = []
    for module_path, module in rebuilt.named_modules():
        for kind, tensors in (("param", module._parameters), ("buffer", module._buffers)):
            for name, target in list(tensors.items()):
                if target is None:
                    continue
                qualified = f"{module_path}.{name}" if module_path else name
                value = None
                if qualified in folded._attrs:
                    value = getattr(folded.body.get_submodule(module_path), name).detach().clone()
                elif module_path in folded._origin:
                    value = _recover(folded, module_path, name, target)
                if value is None or value.shape != target.shape:
                    missing.append(qualified)
                    continue
                tensors[name] = nn.Parameter(value, requires_grad=target.requires_grad) if kind == "param" else value
    if missing:
        raise fold_error("folded", type(folded._structure).__name__, f"cannot give back {', '.join(missing[:5])}"
                         f"{' ...' if len(missing) > 5 else ''}: the folded stage never runs the module(s) holding them")
    _validate_commuted(folded, rebuilt)
    return rebuilt[0] if folded._wrapped else rebuilt


@dataclass(frozen=True)
class ModelFoldComparison(Comparison):
    """:func:`compare_model_fold`'s result: both counts, the totals side by side, and the fold's report."""

    report: Optional[FoldReport] = None

    @property
    def folded_layers(self) -> int:
        return self.report.folded_layers if self.report is not None else 0

    @property
    def layout_elements(self) -> int:
        """Activation elements the folded model's DepthToSpace and SpaceToDepth layers write.

        Every other layer keeps its output (a fold keeps the output grid, a commuted layer writes the same number
        of elements in the space domain), so with no in-place layers the folded total is the original plus this;
        a layer that runs in place in the model (an in-place ReLU, ``+=``) runs out of place in the folded one and
        writes its output too. Each layout layer writes its rearranged input twice in the count: the copy
        ``einops.rearrange`` makes (``aten.clone`` of the permuted view) and the reshape of that copy
        (``aten._unsafe_view``, whose schema declares no alias, so the counter counts it as a new tensor); nothing
        where the rearrangement is a pure view (a 1x1 input).
        """
        return sum(layer.activation_elements for layer in self.folded.layers if layer.type in _LAYOUT_TYPES)

    def rows(self) -> List[Dict[str, Any]]:
        """As :meth:`Comparison.rows`, plus a ``note`` that says why activations change.

        Example:
            >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 4, 1))
            >>> row = compare_model_fold(net, (1, 3, 8, 8), r=2).rows()[4]
            >>> row["quantity"], row["original"], row["folded"], row["note"][:45]
            ('activation_elements', 720, 1872, '+1,152 = 1,152 written by the 1 DepthToSpace/')
        """
        layout = [layer for layer in self.folded.layers if layer.type in _LAYOUT_TYPES]
        notes = {}
        for quantity, attr in (("activation_elements", "activation_elements"), ("activation_bytes", "activation_bytes")):
            rise = getattr(self.folded, attr) - getattr(self.original, attr)
            written = sum(getattr(layer, attr) for layer in layout)
            text = (f"+{rise:,} = {written:,} written by the {len(layout)} DepthToSpace/SpaceToDepth layer(s) of the folded model "
                    "(each writes its rearranged input: a copy, plus its reshape, which the counter also counts; nothing "
                    "where the rearrangement is a view, as on a 1x1 input)")
            if rise != written:
                text += (f" + {rise - written:,} written by layers that run in place in the model (an in-place ReLU, "
                         "`+=`) and out of place in the folded one, where a value's two forms are different tensors")
            notes[quantity] = text + "; every other layer keeps its output"
        return [{**row, "note": "" if row["equal"] else notes.get(row["quantity"], "")} for row in super().rows()]


_LAYOUT_TYPES = ("DepthToSpace", "SpaceToDepth")


def compare_model_fold(model: nn.Module, input_shape: Sequence[int], *, r: IntOrTuple, order: Order = "crd",
                       cost_neutral_only: bool = True) -> ModelFoldComparison:
    """Count ``model`` and :func:`fold_model` of it (:func:`foldconv.analysis.counting.count`); totals side by side.

    Both are counted on meta copies: the counter never needs the weights, and a large model is not copied for
    real. Whether a BatchNorm commutes depends on its statistics, which a meta copy has not: it runs in the
    original domain (the costs are the same in both domains).

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3), torch.nn.Conv2d(16, 4, 1))
        >>> cmp = compare_model_fold(net, (1, 3, 8, 8), r=2)
        >>> cmp.keeps_costs, cmp.folded_layers
        (True, 1)
    """
    folded, report = fold_model(meta_copy(model), r, input_shape=input_shape, order=order, cost_neutral_only=cost_neutral_only)
    before = count(model, tuple(input_shape))
    after = count(folded, tuple(input_shape), name=f"{before.model} folded r={r}")
    quantities = tuple(
        Compared(q, getattr(before, q), getattr(after, q))
        for q in ("params", "macs", "flops", "weight_bytes", "activation_elements", "activation_bytes")
    )
    return ModelFoldComparison(before, after, quantities, report)
