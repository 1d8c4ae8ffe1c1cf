"""Where the rewrite rules apply: model-level patterns found in an fx graph, or among modules when fx fails.

The model a rule looks at is a :class:`Context`: traced with :func:`foldconv.tracing.trace`, the layers rules
rewrite kept whole (:func:`is_surgery_leaf`: convs, transposed convs, layout modules and foldconv's composite
forms, so a rewrite sees each as one call; foldconv's ``depth_to_space`` / ``space_to_depth`` functions are
recorded as calls too), with the shape at every node (:func:`foldconv.tracing.node_values`). A model that does
not trace (data-dependent control flow, for instance) is described module by module instead, with the input
shapes forward hooks see (:func:`foldconv.tracing.module_inputs`), and the caller says so in its report.

A :class:`Match` is one site: the fx nodes (or module paths) it covers, the node feeding it and the node
whose value it produces, the main conv's path (its ``location``) and the shape of its input. Finders:

- :func:`focus_slices`: YOLOv5's ``torch.cat([x[..., a::r, b::r] for every (a, b)], 1)`` in ANY slice order,
  then a conv. The slice order becomes a channel order (``"focus"`` = ``"rw rh c"``, ``"dcr"`` = ``"rh rw c"``)
  or, for the other orders, ``"focus"`` plus a permutation of the conv's input channels.
- :func:`layout_then_conv`: a space-to-depth module (:func:`foldconv.layout.layout_module`: foldconv's,
  ``nn.PixelUnshuffle``, timm's) or ``F.pixel_unshuffle``, then a conv.
- :func:`conv_then_layout`: a conv, optionally a BatchNorm, then a depth-to-space module or ``F.pixel_shuffle``.
- :func:`modules_where`: single modules (strided convs, transposed convs, foldconv's composite forms, a stage).

Each finder works on a :class:`Context`: the traced graph, or (``traced is None``) the module tree with the
shapes forward hooks saw; ``nn.Sequential`` neighbours stand in for graph edges there.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 16, 3, padding=1), torch.nn.PixelShuffle(2))
    >>> ctx = Context.build(net, (1, 3, 8, 8))
    >>> [(m.pattern, m.location) for m in conv_then_layout(ctx)]
    [('Conv2d+PixelShuffle (sub-pixel)', '0')]
"""
from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
import torch.nn.functional as F
from torch import nn

from .. import layout, tracing
from .._validate import CONV_TRANSPOSE_TYPES, CONV_TYPES
from ..equivalences import SpaceToDepthConv, SubPixelConv
from ..errors import FoldError, fold_error
from ..layout import LayoutModule, layout_module, normalize_order

__all__ = [
    "Match", "Context", "Traced", "is_surgery_leaf", "focus_slices", "layout_then_conv", "conv_then_layout", "modules_where",
    "conv_then_bn",
]

Shape = Tuple[int, ...]
_UNSHUFFLE_FNS = (F.pixel_unshuffle, torch.pixel_unshuffle)
_SHUFFLE_FNS = (F.pixel_shuffle, torch.pixel_shuffle)
_BN_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def is_surgery_leaf(module: nn.Module) -> bool:
    """Layers a rule rewrites as a whole: convs, transposed convs, layout modules and foldconv's composite forms.

    Example:
        >>> is_surgery_leaf(torch.nn.PixelShuffle(2)), is_surgery_leaf(torch.nn.Sequential())
        (True, False)
    """
    if isinstance(module, CONV_TYPES + CONV_TRANSPOSE_TYPES + (SpaceToDepthConv, SubPixelConv)):
        return True
    return layout_module(module) is not None


@dataclass
class Traced:
    """A traced model: ``root`` (the module traced), its fx ``graph`` and the output shape of every node.

    Example:
        >>> ctx = Context.build(torch.nn.Conv2d(3, 4, 3, stride=2), (1, 3, 9, 9))
        >>> ctx.traced.shape(ctx.traced.node("output"))
        (1, 4, 4, 4)
    """

    root: nn.Module
    graph: fx.Graph
    shapes: Dict[str, Shape] = field(default_factory=dict)

    def shape(self, node: fx.Node) -> Optional[Shape]:
        """The tensor shape a node produced on the example input (None for non-tensor values)."""
        return self.shapes.get(node.name)

    def node(self, name: str) -> fx.Node:
        """The node called ``name``."""
        for n in self.graph.nodes:
            if n.name == name:
                return n
        raise fold_error("node", name, "is not a node of the traced graph")

    def calls(self, target: str) -> int:
        """How many call_module nodes call the module at path ``target`` (a shared module is called several times)."""
        return sum(1 for n in self.graph.nodes if n.op == "call_module" and n.target == target)


@dataclass(frozen=True)
class Match:
    """One site: what it covers, where its input comes from, and what a rule needs to rebuild it.

    ``modules``: module paths in call order; ``nodes``: fx node names in graph order (empty on the module
    path); ``input`` / ``output``: the fx node feeding the site and the one whose value it produces;
    ``conv``: the main layer's path (= ``location``); ``layout``: the layout op's kind, factors and order;
    ``channel_perm``: the conv weight's input channels in that order (None: already in it); ``bn``: the
    path of a BatchNorm inside the site; ``problem``: why the site cannot be rewritten ("" when it can);
    ``variant``: a choice a rule made from the model's own weights (:attr:`Rule.decide`), so that its build, replayed
    on other weights, builds the same structure.
    """

    pattern: str
    location: str
    input_shape: Shape
    modules: Tuple[str, ...]
    nodes: Tuple[str, ...] = ()
    input: str = ""
    output: str = ""
    layout: Optional[LayoutModule] = None
    channel_perm: Optional[Tuple[int, ...]] = None
    bn: str = ""
    problem: str = ""
    variant: str = ""


@dataclass
class Context:
    """The model a rule looks at: traced (``traced``) or, when fx failed, its modules and their input shapes.

    ``leaves``: what the trace keeps whole besides :func:`is_surgery_leaf` layers (:data:`foldconv.tracing.Leaf`
    entries: classes, module paths, predicates); ``fallback_reason``: why fx could not trace the model.
    """

    model: nn.Module
    input_shape: Shape
    traced: Optional[Traced]
    fallback_reason: str = ""
    module_inputs: Dict[str, Shape] = field(default_factory=dict)
    leaves: Tuple[tracing.Leaf, ...] = ()

    @classmethod
    def build(cls, model: nn.Module, input_shape: Sequence[int], *, leaves: Sequence[tracing.Leaf] = ()) -> Context:
        """Trace ``model``, or describe its modules (with the reason) when fx cannot trace it.

        A model that cannot run on ``input_shape`` is a FoldError naming ``input_shape``.
        """
        shape = tracing.validate_input_shape(input_shape)
        kept = (is_surgery_leaf,) + tuple(leaves)
        try:
            gm = tracing.trace(model, leaves=kept)
        except FoldError as err:
            if err.param != "model":
                raise
            calls = tracing.module_inputs(model, shape)
            return cls(model, shape, None, err.rule, {path: shapes[0] for path, shapes in calls.items()}, tuple(leaves))
        shapes = tracing.node_shapes(tracing.node_values(gm, shape, on="auto"))
        return cls(model, shape, Traced(model, gm.graph, shapes), leaves=tuple(leaves))

    def is_leaf(self, path: str, module: nn.Module) -> bool:
        """Whether the trace keeps the module at ``path`` whole (a rule sees it as one layer)."""
        classes = tuple(leaf for leaf in self.leaves if isinstance(leaf, type))
        return (is_surgery_leaf(module) or path in self.leaves or isinstance(module, classes)
                or any(leaf(module) for leaf in self.leaves if callable(leaf) and not isinstance(leaf, type)))

    def module(self, path: str) -> nn.Module:
        """The submodule at ``path``."""
        return self.model.get_submodule(path)

    def node_module(self, node: fx.Node) -> Optional[nn.Module]:
        """The module a call_module node calls, None for other nodes."""
        return self.module(str(node.target)) if node.op == "call_module" else None

    def shared(self, paths: Sequence[str]) -> str:
        """Why a site built on these modules cannot be replaced: a module called more than once ("" otherwise)."""
        if self.traced is None:
            return ""
        for path in paths:
            calls = self.traced.calls(path)
            if calls != 1:
                return f"module {path!r} is called {calls} times; replacing it would change the other calls"
        return ""


def _conv_name(module: nn.Module) -> str:
    return type(module).__name__


def _only_user(node: fx.Node) -> Optional[fx.Node]:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def _layout_of_node(ctx: Context, node: fx.Node, kind: str) -> Optional[Tuple[LayoutModule, str]]:
    """The layout op a node computes (kind, factors, order) and its display name, or None."""
    if node.op == "call_module":
        info = layout_module(ctx.module(str(node.target)))
        if info is not None and info.kind == kind:
            return info, type(ctx.module(str(node.target))).__name__
        return None
    if node.op != "call_function":
        return None
    fns = _UNSHUFFLE_FNS if kind == "space_to_depth" else _SHUFFLE_FNS
    if node.target in fns:
        factor = node.args[1] if len(node.args) > 1 else next(iter(node.kwargs.values()), None)
        if isinstance(factor, int) and factor >= 1:
            return LayoutModule(kind, (factor, factor), normalize_order("crd", 2)), node.target.__name__
    if node.target is (layout.space_to_depth if kind == "space_to_depth" else layout.depth_to_space):
        # foldconv's own function: read its factors, order and dims exactly as a module built from them would
        r = node.args[1] if len(node.args) > 1 else node.kwargs.get("r")
        order = node.args[2] if len(node.args) > 2 else node.kwargs.get("order", "crd")
        try:
            info = layout.layout_module(layout.SpaceToDepth(r, order, dims=node.kwargs.get("dims")))
        except (FoldError, TypeError):
            return None  # factors computed at run time: not a site
        return LayoutModule(kind, info.r, info.order), node.target.__name__
    return None


def _in_shape(ctx: Context, node: fx.Node) -> Shape:
    return ctx.traced.shape(node) or () if ctx.traced is not None else ()


def _sequential_neighbours(ctx: Context, length: int) -> List[Tuple[str, ...]]:
    """Paths of ``length`` consecutive children of every nn.Sequential (the module path's stand-in for edges)."""
    runs = []
    for path, module in ctx.model.named_modules():
        if isinstance(module, nn.Sequential):
            names = [f"{path}.{n}" if path else n for n, _ in module.named_children()]
            runs.extend(tuple(names[i:i + length]) for i in range(len(names) - length + 1))
    return runs


def _slice_offset(index: object, rank: int) -> Optional[Tuple[int, int, int]]:
    """``(a, b, step)`` of ``x[..., a::step, b::step]`` (or ``x[:, :, a::step, b::step]`` on a 4-d x), else None."""
    if not isinstance(index, tuple):
        return None
    if len(index) == 3 and index[0] is Ellipsis:
        spatial = index[1:]
    elif len(index) == rank and rank == 4 and all(s == slice(None) for s in index[:2]):
        spatial = index[2:]
    else:
        return None
    if not all(isinstance(s, slice) and s.stop is None for s in spatial):
        return None
    steps = {s.step for s in spatial}
    if len(steps) != 1:
        return None
    step = steps.pop()
    starts = tuple(0 if s.start is None else s.start for s in spatial)
    if not isinstance(step, int) or step < 2 or not all(isinstance(a, int) and 0 <= a < step for a in starts):
        return None
    return starts[0], starts[1], step


def _slice_order(offsets: Sequence[Tuple[int, int]], r: int, channels: int) -> Tuple[Tuple[str, ...], Optional[Tuple[int, ...]]]:
    """The channel order a slice order is (``"focus"`` or ``"dcr"``), or ``"focus"`` with the permutation that
    puts the conv's input channels in it: ``perm[focus channel] = concatenated channel``."""
    k_of = {ab: k for k, ab in enumerate(offsets)}
    if all(k_of[(a, b)] == b * r + a for a, b in offsets):
        return normalize_order("focus", 2), None
    if all(k_of[(a, b)] == a * r + b for a, b in offsets):
        return normalize_order("dcr", 2), None
    perm = [0] * (r * r * channels)
    for (a, b), k in k_of.items():
        for c in range(channels):
            perm[(b * r + a) * channels + c] = k * channels + c
    return normalize_order("focus", 2), tuple(perm)


def focus_slices(ctx: Context) -> List[Match]:
    """YOLOv5 Focus: ``r*r`` strided slices ``x[..., a::r, b::r]`` concatenated on channels, then a 2-D conv."""
    if ctx.traced is None:
        return []
    found = []
    for cat in ctx.traced.graph.nodes:
        if cat.op != "call_function" or cat.target not in (torch.cat, torch.concat, torch.concatenate):
            continue
        parts = cat.args[0] if cat.args else cat.kwargs.get("tensors")
        dim = cat.args[1] if len(cat.args) > 1 else cat.kwargs.get("dim", 0)
        if dim not in (1, -3) or not isinstance(parts, (list, tuple)) or len(parts) < 4:
            continue
        if not all(isinstance(p, fx.Node) and p.op == "call_function" and p.target is operator.getitem for p in parts):
            continue
        source = parts[0].args[0]
        shape = _in_shape(ctx, source)
        if len(shape) != 4 or any(p.args[0] is not source or len(p.users) != 1 for p in parts):
            continue
        offsets = [_slice_offset(p.args[1], 4) for p in parts]
        if any(o is None for o in offsets) or len({o[2] for o in offsets}) != 1:
            continue
        r = offsets[0][2]
        pairs = [(a, b) for a, b, _ in offsets]
        if len(parts) != r * r or len(set(pairs)) != r * r:
            continue
        conv = _only_user(cat)
        module = ctx.node_module(conv) if conv is not None else None
        if not isinstance(module, nn.Conv2d):
            continue
        order, perm = _slice_order(pairs, r, shape[1])
        path = str(conv.target)
        found.append(Match(
            pattern=f"slice+cat+{_conv_name(module)} (Focus)", location=path, input_shape=shape, modules=(path,),
            nodes=tuple(p.name for p in parts) + (cat.name, conv.name), input=source.name, output=conv.name,
            layout=LayoutModule("space_to_depth", (r, r), order), channel_perm=perm, problem=ctx.shared([path]),
        ))
    return found


def layout_then_conv(ctx: Context) -> List[Match]:
    """A space-to-depth module or ``F.pixel_unshuffle`` followed by a conv (its only user)."""
    found = []
    if ctx.traced is not None:
        for node in ctx.traced.graph.nodes:
            got = _layout_of_node(ctx, node, "space_to_depth")
            conv = _only_user(node) if got is not None else None
            module = ctx.node_module(conv) if conv is not None else None
            if not isinstance(module, CONV_TYPES):
                continue
            info, name = got
            paths = ((str(node.target),) if node.op == "call_module" else ()) + (str(conv.target),)
            found.append(Match(
                pattern=f"{name}+{_conv_name(module)} (space-to-depth)", location=str(conv.target),
                input_shape=_in_shape(ctx, node.args[0]), modules=paths, nodes=(node.name, conv.name),
                input=node.args[0].name, output=conv.name, layout=info, problem=ctx.shared(paths),
            ))
        return found
    for first, second in _sequential_neighbours(ctx, 2):
        info, module = layout_module(ctx.module(first)), ctx.module(second)
        if info is None or info.kind != "space_to_depth" or not isinstance(module, CONV_TYPES) or first not in ctx.module_inputs:
            continue
        found.append(Match(
            pattern=f"{type(ctx.module(first)).__name__}+{_conv_name(module)} (space-to-depth)", location=second,
            input_shape=ctx.module_inputs[first], modules=(first, second), layout=info,
        ))
    return found


def conv_then_layout(ctx: Context, *, with_bn: bool = True) -> List[Match]:
    """A conv, optionally a BatchNorm (each the only user of the one before), then a depth-to-space op."""
    found = []
    if ctx.traced is not None:
        for node in ctx.traced.graph.nodes:
            module = ctx.node_module(node)
            if not isinstance(module, CONV_TYPES):
                continue
            chain, nxt = [node], _only_user(node)
            if with_bn and nxt is not None and isinstance(ctx.node_module(nxt), _BN_TYPES):
                chain.append(nxt)
                nxt = _only_user(nxt)
            got = _layout_of_node(ctx, nxt, "depth_to_space") if nxt is not None else None
            if got is None:
                continue
            info, name = got
            chain.append(nxt)
            paths = tuple(str(n.target) for n in chain if n.op == "call_module")
            bn = str(chain[1].target) if len(chain) == 3 else ""
            middle = f"+{type(ctx.module(bn)).__name__}" if bn else ""
            found.append(Match(
                pattern=f"{_conv_name(module)}{middle}+{name} (sub-pixel)", location=str(node.target),
                input_shape=_in_shape(ctx, node.args[0]), modules=paths, nodes=tuple(n.name for n in chain),
                input=node.args[0].name, output=nxt.name, layout=info, bn=bn, problem=ctx.shared(paths),
            ))
        return found
    runs = _sequential_neighbours(ctx, 2) + (_sequential_neighbours(ctx, 3) if with_bn else [])
    for run in runs:
        mods = [ctx.module(p) for p in run]
        info = layout_module(mods[-1])
        if info is None or info.kind != "depth_to_space" or not isinstance(mods[0], CONV_TYPES) or run[0] not in ctx.module_inputs:
            continue
        if len(run) == 3 and not isinstance(mods[1], _BN_TYPES):
            continue
        middle = f"+{type(mods[1]).__name__}" if len(run) == 3 else ""
        found.append(Match(
            pattern=f"{_conv_name(mods[0])}{middle}+{type(mods[-1]).__name__} (sub-pixel)", location=run[0],
            input_shape=ctx.module_inputs[run[0]], modules=run, layout=info, bn=run[1] if len(run) == 3 else "",
        ))
    return found


def conv_then_bn(ctx: Context) -> List[Match]:
    """A conv whose only user is a BatchNorm (the pair BN folding merges)."""
    found = []
    if ctx.traced is not None:
        for node in ctx.traced.graph.nodes:
            conv, bn = ctx.node_module(node), None
            nxt = _only_user(node) if isinstance(conv, CONV_TYPES) else None
            bn = ctx.node_module(nxt) if nxt is not None else None
            if not isinstance(bn, _BN_TYPES):
                continue
            paths = (str(node.target), str(nxt.target))
            found.append(Match(
                pattern=f"{_conv_name(conv)}+{type(bn).__name__}", location=paths[0], input_shape=_in_shape(ctx, node.args[0]),
                modules=paths, nodes=(node.name, nxt.name), input=node.args[0].name, output=nxt.name, bn=paths[1],
                problem=ctx.shared(paths),
            ))
        return found
    for first, second in _sequential_neighbours(ctx, 2):
        conv, bn = ctx.module(first), ctx.module(second)
        if isinstance(conv, CONV_TYPES) and isinstance(bn, _BN_TYPES) and first in ctx.module_inputs:
            found.append(Match(
                pattern=f"{_conv_name(conv)}+{type(bn).__name__}", location=first, input_shape=ctx.module_inputs[first],
                modules=(first, second), bn=second,
            ))
    return found


def modules_where(ctx: Context, accept: Callable[[str, nn.Module], bool], pattern: Callable[[nn.Module], str]) -> List[Match]:
    """Every module ``accept(path, module)`` picks, as a one-module site named ``pattern(module)``."""
    found = []
    if ctx.traced is not None:
        seen = set()
        for node in ctx.traced.graph.nodes:
            if node.op != "call_module" or node.target in seen:
                continue
            path, module = str(node.target), ctx.module(str(node.target))
            if not accept(path, module):
                continue
            seen.add(path)
            found.append(Match(
                pattern=pattern(module), location=path, input_shape=_in_shape(ctx, node.args[0]) if node.args else (),
                modules=(path,), nodes=(node.name,), input=node.args[0].name if node.args else "", output=node.name,
                problem=ctx.shared([path]) or ("" if len(node.args) == 1 and not node.kwargs else "the module takes more than one input"),
            ))
        return found
    inside: List[str] = []  # composite forms are one layer here too: their inner convs are not sites
    for path, module in ctx.model.named_modules():
        if any(path.startswith(prefix + ".") for prefix in inside):
            continue
        if path and ctx.is_leaf(path, module) and not isinstance(module, CONV_TYPES):
            inside.append(path)
        if path and accept(path, module) and path in ctx.module_inputs:
            found.append(Match(pattern=pattern(module), location=path, input_shape=ctx.module_inputs[path], modules=(path,)))
    return found
