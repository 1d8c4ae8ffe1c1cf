"""Fold a whole stage: its activations live in the space domain, each conv acts there as its fold.

A folded stage computes exactly what the stage computes. It puts ``DepthToSpace(r)`` at its entry; each conv
becomes :func:`foldconv.fold.fold_conv` acting on the depth-to-space map, and its output goes back to the space
domain (``DepthToSpace`` of the conv's output, which needs ``out_channels`` a multiple of ``prod(r)``); a
following layer runs there when the prediction engine says it commutes with the layout change
(:func:`foldconv.predict.predict_following`: ReLU, eval BatchNorm with tied statistics, residual adds, ...; the
folded layer is :func:`foldconv.predict.fold_following`'s). A layer that does not commute ends the space domain
(``SpaceToDepth`` before it) and :attr:`FoldedStage.layers` says why: the prediction's reason. ``SpaceToDepth``
at the exit. Built on the torch.fx graph of the stage, so residual connections work.

Written naively, every value of the stage lives in the space domain: ``DepthToSpace`` after each conv (and
after each layer kept in the original domain), ``SpaceToDepth`` before each layer that needs the original
domain and at the exit. Every ``DepthToSpace`` followed at once by a ``SpaceToDepth`` is the identity; the
folded stage does not run these pairs (a conv's output read in the original domain is read as it is), and
:attr:`FoldedStage.cancelled_pairs` counts them. :attr:`FoldedStage.layout_ops` lists what it does run.

:func:`unfold_stage` (in :mod:`foldconv.surgery.stage_unfold`, re-exported here) gives the stage back, bit-exact.

Example:
    >>> from torch import nn
    >>> stage = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, padding=1))
    >>> folded = fold_stage(stage, 2, input_shape=(1, 4, 8, 8))
    >>> [(layer.name, layer.action) for layer in folded.layers]
    [('0', 'folded'), ('1', 'commuted'), ('2', 'folded')]
    >>> folded.layout_ops, folded.cancelled_pairs
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
import numbers
import operator
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .._validate import CONV_TYPES
from ..analysis.counting import meta_copy
from ..errors import FoldError, fold_error
from ..fold import fold_conv, plan_fold
from ..layout import DepthToSpace, IntOrTuple, Order, SpaceToDepth
from ..predict import Outcome, fold_following, following_rule, predict_fold, predict_following
from ..specs import ConvSpec, FoldSpec
from .stage_unfold import unfold_stage

__all__ = ["ACTIONS", "StageLayer", "FoldedStage", "fold_stage", "unfold_stage"]

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
    it holds, or why it does not); ``before``/``after``: the conv specs of a folded conv.
    """

    name: str
    node: str
    kind: str
    action: str
    reason: str
    before: str = ""
    after: str = ""

    def row(self) -> Dict[str, Any]:
        """The table row."""
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


class FoldedStage(nn.Module):
    """A stage whose activations live in the space domain (:func:`fold_stage`); runnable, with real weights.

    ``body`` is the torch.fx GraphModule that runs; ``layers`` says per layer what happened and why;
    ``layout_ops`` names the DepthToSpace/SpaceToDepth it runs (``"DepthToSpace@<layer>"`` converts that layer's
    output, ``@input`` the stage's input); ``cancelled_pairs`` counts the conversion pairs it does not run.
    :func:`unfold_stage` gives the original stage back.
    """

    def __init__(self, body: fx.GraphModule, *, fold: FoldSpec, input_shape: Tuple[int, ...], layers: Tuple[StageLayer, ...],
                 layout_ops: Tuple[str, ...], cancelled_pairs: int, structure: nn.Module,
                 origin: Dict[str, Tuple[str, str, int]], attrs: Tuple[str, ...]):
        super().__init__()
        self.body = body
        self.fold = fold
        self.r, self.order, self.dims = fold.r, fold.order, fold.dims
        self.input_shape = input_shape
        self.layers = layers
        self.layout_ops = layout_ops
        self.cancelled_pairs = cancelled_pairs
        # The original stage's structure on meta (no storage), outside the module tree so that it is neither
        # a parameter of the folded stage nor moved by .to(): unfold_stage fills it from the folded weights.
        object.__setattr__(self, "_structure", structure)
        object.__setattr__(self, "_origin", dict(origin))
        object.__setattr__(self, "_attrs", tuple(attrs))

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.body(*args, **kwargs)

    @property
    def folded_layers(self) -> int:
        """How many convs run as their fold."""
        return sum(layer.action == "folded" for layer in self.layers)

    def rows(self) -> List[Dict[str, Any]]:
        """One table row per layer."""
        return [layer.row() for layer in self.layers]

    def summary(self) -> str:
        """One line: factors, what happened, conversions.

        Example:
            >>> fold_stage(nn.Sequential(nn.Conv2d(4, 4, 1)), 2, input_shape=(1, 4, 2, 2)).summary()
            "r=(2, 2) order='c rh rw': 1 folded, 0 commuted, 0 kept; 1 layout op(s), 1 cancelled pair(s)"
        """
        counts = {a: sum(layer.action == a for layer in self.layers) for a in ACTIONS}
        return (f"r={self.r} order={' '.join(self.order)!r}: {counts['folded']} folded, {counts['commuted']} commuted, "
                f"{counts['kept']} kept; {len(self.layout_ops)} layout op(s), {self.cancelled_pairs} cancelled pair(s)")

    def extra_repr(self) -> str:
        return f"r={self.r}, order={' '.join(self.order)!r}, input_shape={self.input_shape}"


def _check_input_shape(input_shape: Any) -> Tuple[int, ...]:
    rule = "must be the full input shape (N, C, *spatial) with 1-3 spatial dims, every size an integer >= 1"
    if isinstance(input_shape, (str, bytes, torch.Tensor)) or not isinstance(input_shape, Sequence):
        raise fold_error("input_shape", input_shape, rule)
    if not 3 <= len(input_shape) <= 5 or any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in input_shape):
        raise fold_error("input_shape", tuple(input_shape), rule)
    return tuple(int(s) for s in input_shape)


def _trace(stage: nn.Module, input_shape: Tuple[int, ...]) -> fx.GraphModule:
    """The fx graph of the stage with every node's output shape, from a pass on a meta copy (no data touched)."""
    meta = meta_copy(stage)
    try:
        traced = fx.symbolic_trace(meta)
    except Exception as err:  # torch.fx raises many types (TraceError, TypeError, NotImplementedError...)
        raise fold_error("stage", type(stage).__name__, f"does not trace with torch.fx ({type(err).__name__}: "
                         f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); fold its traceable parts") from err
    inputs = [n for n in traced.graph.nodes if n.op == "placeholder"]
    if len(inputs) != 1:
        raise fold_error("stage", type(stage).__name__, f"must take one input tensor; its forward takes {len(inputs)}")
    dtype = next((t.dtype for t in stage.parameters() if t.is_floating_point()), torch.float32)
    try:
        ShapeProp(traced).propagate(torch.empty(input_shape, device="meta", dtype=dtype))
    except Exception as err:
        raise fold_error("input_shape", input_shape, f"the stage cannot run on it: {str(err).strip().splitlines()[0]}") from err
    return traced


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

    def __init__(self, stage: nn.Module, traced: fx.GraphModule, fold: FoldSpec):
        self.stage, self.traced, self.fold = stage, traced, fold
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
        meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
        shape = getattr(meta, "shape", None)
        return tuple(shape) if shape is not None and len(shape) == self.fold.dims + 2 else None

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
        self.layers.append(StageLayer(name, node.name, kind, action, reason, before, after))

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
        spec = ConvSpec.from_module(conv)
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        shape = self.shape(source)
        if shape is None:
            return self.keep_module(node, conv, "its input is not one feature map of the stage's dims")
        prediction = predict_fold(conv, self.fold, input_size=shape[2:])
        reason = prediction.reason
        if prediction.outcome is not Outcome.HOLDS:
            conditions = f" (an equivalent form needs: {'; '.join(prediction.conditions)})" if prediction.conditions else ""
            return self.keep_module(node, conv, f"{prediction.outcome.value}: {reason}{conditions}")
        plan = plan_fold(spec, self.fold)
        if plan.result.params != spec.params:
            return self.keep_module(node, conv, "folds only with a group or dilation expansion, which changes the costs")
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
        source = node.args[0] if len(node.args) == 1 and not node.kwargs else None
        shape = self.shape(source)
        if shape is None:
            return self.keep_module(node, layer, "its input is not one feature map of the stage's dims")
        if shape[1] % self.fold.block:
            return self.keep_module(node, layer, f"its input has {shape[1]} channels, not a multiple of prod(r)="
                                    f"{self.fold.block}: that map cannot be in the space domain")
        prediction = predict_following(layer, self.fold, shape[1], input_size=shape[2:])
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


def fold_stage(stage: nn.Module, r: IntOrTuple, *, input_shape: Sequence[int], order: Order = "crd") -> FoldedStage:
    """The stage with its activations in the space domain: a real, runnable module equal to ``stage``.

    ``input_shape`` is the full shape of the stage's input (its spatial dims are the fold's); ``r`` an int
    (every spatial axis) or one factor per axis; ``order`` the channel order of every DepthToSpace, SpaceToDepth
    and folded weight. Every conv whose fold holds (:func:`foldconv.predict.predict_fold`) and keeps its
    costs runs as its fold; every module or elementwise function the prediction engine says commutes runs in
    the space domain; the rest run in the original domain, and :attr:`FoldedStage.layers` says why. The stage is
    traced with torch.fx (FoldError when it does not trace). Eval-mode BatchNorm with per-channel statistics
    does not commute: fold it into the preceding conv first (:func:`foldconv.surgery.bn.fold_bn`; the rewrite
    rule ``fold_stage`` does it with ``fold_bn=True``).

    Example:
        >>> from torch import nn
        >>> stage = nn.Sequential(nn.Conv2d(8, 6, 1), nn.ReLU())
        >>> folded = fold_stage(stage, 2, input_shape=(1, 8, 4, 4))
        >>> [layer.action for layer in folded.layers], folded.layers[1].reason[:40]
        (['folded', 'kept'], 'its input has 6 channels, not a multiple')
    """
    if not isinstance(stage, nn.Module):
        raise fold_error("stage", type(stage).__name__, "must be an nn.Module")
    if isinstance(stage, FoldedStage):
        raise fold_error("stage", "FoldedStage", "is folded already; unfold_stage gives the original back")
    shape = _check_input_shape(input_shape)
    dims = len(shape) - 2
    fold = FoldSpec.coerce(r, dims, order, param="r")
    traced = _trace(stage, shape)
    builder = _Builder(stage, traced, fold)
    builder.build()
    body = fx.GraphModule(builder.root, builder.graph, class_name="FoldedStageBody")
    body.graph.lint()
    folded = FoldedStage(body, fold=fold, input_shape=shape, layers=tuple(builder.layers),
                         layout_ops=tuple(builder.layout_ops), cancelled_pairs=builder.cancelled,
                         structure=meta_copy(stage), origin=builder.origin, attrs=tuple(sorted(builder.attrs)))
    folded.training = body.training = stage.training  # not .train(): each layer keeps its own mode
    return folded
