"""Tracing for surgery: a torch.fx graph whose leaves are the layers rules rewrite, with the shape at every node.

Layout modules (anything :func:`foldconv.layout.layout_module` recognises: foldconv's, ``nn.PixelShuffle`` /
``nn.PixelUnshuffle``, timm's), convs, and foldconv's composite forms (``SpaceToDepthConv``, ``SubPixelConv``, a
folded stage) stay leaves, so a rewrite sees them as one call; foldconv's ``depth_to_space`` / ``space_to_depth``
functions, called through a module-level name, are recorded as calls too. A model that does not trace (data-dependent
control flow, for instance) is described module by module instead (:func:`module_shapes`), and the caller
says so in its report.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.PixelUnshuffle(2), torch.nn.Conv2d(12, 4, 3))
    >>> traced = trace(net, (1, 3, 8, 8))
    >>> [(n.target, traced.shape(n)) for n in traced.graph.nodes if n.op == "call_module"]
    [('0', (1, 12, 4, 4)), ('1', (1, 4, 2, 2))]
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Collection, Dict, Optional, Sequence, Tuple

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from .._validate import CONV_TRANSPOSE_TYPES, CONV_TYPES
from ..equivalences import SpaceToDepthConv, SubPixelConv
from ..errors import FoldError, fold_error
from ..layout import depth_to_space, layout_module, space_to_depth

__all__ = ["Traced", "SurgeryTracer", "trace", "module_shapes", "is_surgery_leaf", "first_line"]

Shape = Tuple[int, ...]


def first_line(err: BaseException) -> str:
    """The first line of an exception's message (or its type name), for one-line reasons."""
    return (str(err).strip().splitlines() or [type(err).__name__])[0]


def is_surgery_leaf(module: nn.Module) -> bool:
    """Layers a rule rewrites as a whole: convs, transposed convs, layout modules and foldconv's composite forms.

    Example:
        >>> is_surgery_leaf(torch.nn.PixelShuffle(2)), is_surgery_leaf(torch.nn.Sequential())
        (True, False)
    """
    if isinstance(module, CONV_TYPES + CONV_TRANSPOSE_TYPES + (SpaceToDepthConv, SubPixelConv)):
        return True
    if type(module).__name__ == "FoldedStage":  # helper module of surgery.stage, matched by name to avoid a cycle
        return True
    return layout_module(module) is not None


class SurgeryTracer(fx.Tracer):
    """An fx tracer that keeps :func:`is_surgery_leaf` modules (and the paths in ``leaves``) as single calls, and
    foldconv's ``depth_to_space`` / ``space_to_depth`` functions as single function calls."""

    def __init__(self, leaves: Collection[str] = ()) -> None:
        # foldconv's layout functions validate their input, which a Proxy is not: they are recorded as calls
        super().__init__(autowrap_functions=(depth_to_space, space_to_depth))
        self.extra_leaves = frozenset(leaves)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:  # noqa: D102 (fx's protocol)
        if module_qualified_name in self.extra_leaves or is_surgery_leaf(m):
            return True
        return super().is_leaf_module(m, module_qualified_name)


@dataclass
class Traced:
    """A traced model: ``root`` (the module traced), its fx ``graph`` and the output shape of every node."""

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


def _example_input(shape: Sequence[int], device: Any, dtype: torch.dtype) -> torch.Tensor:
    return torch.zeros(tuple(shape), device=device, dtype=dtype)


def _model_dtype(model: nn.Module) -> torch.dtype:
    for t in list(model.parameters()) + list(model.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def _propagate(module: nn.Module, shape: Shape, run: Any) -> Any:
    """Run ``run(copy, x)`` on a meta copy of ``module``; on a small real CPU copy when meta tensors fail."""
    dtype = _model_dtype(module)
    try:
        meta = copy.deepcopy(module).to("meta").eval()
        return run(meta, _example_input(shape, "meta", dtype))
    except Exception:  # noqa: BLE001 (some ops have no meta kernel or read values: try real tensors)
        real = copy.deepcopy(module).to("cpu").eval()
        return run(real, _example_input(shape, "cpu", dtype))


def trace(model: nn.Module, example_input_shape: Sequence[int], *, leaves: Collection[str] = ()) -> Traced:
    """Trace ``model`` with :class:`SurgeryTracer` and record every node's output shape on the example input.

    Raises a FoldError naming ``model`` when fx cannot trace it (the caller then falls back to modules), and one
    naming ``example_input_shape`` when the model cannot run on that shape.

    Example:
        >>> traced = trace(torch.nn.Conv2d(3, 4, 3, stride=2), (1, 3, 9, 9))
        >>> traced.shape(traced.node("output"))
        (1, 4, 4, 4)
    """
    try:
        graph = SurgeryTracer(leaves).trace(model)
    except Exception as err:  # noqa: BLE001 (fx raises many types: the reason goes into the report)
        raise fold_error("model", type(model).__name__, f"torch.fx cannot trace it: {type(err).__name__}: {first_line(err)}") from err
    gm = fx.GraphModule(model, graph)

    def run(module: nn.Module, x: torch.Tensor) -> Dict[str, Shape]:
        with torch.no_grad():
            ShapeProp(module).propagate(x)
        found: Dict[str, Shape] = {}
        for node in module.graph.nodes:
            meta = node.meta.get("tensor_meta")
            if meta is not None and hasattr(meta, "shape"):
                found[node.name] = tuple(int(s) for s in meta.shape)
        return found

    try:
        shapes = _propagate(gm, tuple(example_input_shape), run)
    except FoldError:
        raise
    except Exception as err:  # noqa: BLE001 (torch's refusal becomes a FoldError naming the shape)
        raise fold_error("example_input_shape", tuple(example_input_shape), f"the model cannot run on it: {first_line(err)}") from err
    return Traced(model, graph, shapes)


def module_shapes(model: nn.Module, example_input_shape: Sequence[int]) -> Dict[str, Shape]:
    """Input shape of every submodule (by path) on the example input, from forward hooks (the fallback path).

    A module called more than once keeps its first call's shape.

    Example:
        >>> module_shapes(torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3)), (1, 3, 8, 8))["0"]
        (1, 3, 8, 8)
    """

    def run(module: nn.Module, x: torch.Tensor) -> Dict[str, Shape]:
        found: Dict[str, Shape] = {}
        handles = []
        for path, sub in module.named_modules():
            def hook(_m: nn.Module, args: Tuple[Any, ...], path: str = path) -> None:
                if args and isinstance(args[0], torch.Tensor):
                    found.setdefault(path, tuple(int(s) for s in args[0].shape))
            handles.append(sub.register_forward_pre_hook(hook))
        try:
            with torch.no_grad():
                module(x)
        finally:
            for h in handles:
                h.remove()
        return found

    try:
        return _propagate(model, tuple(example_input_shape), run)
    except Exception as err:  # noqa: BLE001
        raise fold_error("example_input_shape", tuple(example_input_shape), f"the model cannot run on it: {first_line(err)}") from err
