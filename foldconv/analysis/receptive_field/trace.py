"""Tracing a model with ``torch.fx`` and learning every node's shape from one run on meta tensors
(:mod:`foldconv.tracing`, with the receptive-field rules' leaves and errors).

The run on meta tensors needs no memory and does no arithmetic; a tensor value is summarised by its
shape (:class:`TensorShape`), everything else (ints, shapes as data, tuples) is kept as it is, because
rules read arguments such as ``x.view(n, -1)`` from it.
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple, Union

import torch
import torch.fx as fx
from torch import nn

from ... import tracing
from ...errors import FoldError, first_line, fold_error
from .registry import leaf_types

__all__ = [
    "UnsupportedOpError", "no_rule", "TensorShape", "trace_model", "summarise", "meta_values", "real_values", "is_shape", "has_tensor", "op_name",
]


class UnsupportedOpError(FoldError):
    """The analyzer has no receptive-field rule for an op of the model (or cannot trace or run it)."""


def no_rule(node: fx.Node, what: str) -> UnsupportedOpError:
    """The error of a rule that meets a case it does not cover: ``what`` names the case, the node is named.

    Example:
        >>> x = fx.Graph().placeholder("x")
        >>> no_rule(x, "an odd input").args[0]
        "node='x': an odd input has no receptive-field rule"
    """
    return UnsupportedOpError(f"node={node.name!r}: {what} has no receptive-field rule", param="model", value=node.name)


def trace_model(model: nn.Module, *, leaves: Sequence[Union[type, str]] = ()) -> fx.GraphModule:
    """Trace ``model`` in eval mode, keeping modules with a registered rule (foldconv's layout modules,
    einops ``Rearrange``) and ``leaves`` (module classes or qualified names) as single nodes (:func:`foldconv.tracing.trace`).

    Raises :class:`UnsupportedOpError` naming the model when ``torch.fx`` cannot trace it.

    Example:
        >>> from foldconv.layout import DepthToSpace
        >>> gm = trace_model(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), DepthToSpace(1)))
        >>> [n.op for n in gm.graph.nodes]
        ['placeholder', 'call_module', 'call_module', 'output']
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    if isinstance(leaves, (str, type)) or not isinstance(leaves, Sequence) or not all(
        (isinstance(t, type) and issubclass(t, nn.Module)) or (isinstance(t, str) and t) for t in leaves
    ):
        raise fold_error("leaves", leaves, "must be a sequence of nn.Module classes and/or qualified module names")
    modes = {m: m.training for m in model.modules()}
    model.eval()  # control flow on self.training (aux heads) must take the inference branch
    try:
        return tracing.trace(model, leaves=leaf_types() + tuple(leaves))
    except FoldError as exc:
        if exc.param != "model" or exc.__cause__ is None:
            raise
        cause = exc.__cause__
        raise UnsupportedOpError(
            f"model={type(model).__name__!r}: torch.fx cannot trace it ({first_line(cause, with_type=True)}); "
            "pass fallback='real' or make the data-dependent part a leaf module",
            param="model", value=type(model).__name__, rule="must be traceable by torch.fx",
        ) from cause
    finally:
        for m, t in modes.items():
            m.training = t


class TensorShape(tuple):
    """The shape of a tensor value (plain tuples and ``torch.Size`` values are shapes *as data*)."""


def summarise(value: Any) -> Any:
    """A node's value with every tensor replaced by its :class:`TensorShape`."""
    if isinstance(value, torch.Tensor):
        return TensorShape(value.shape)
    if isinstance(value, torch.Size):
        return tuple(value)
    if isinstance(value, (tuple, list)):
        items = [summarise(x) for x in value]
        return tuple(items) if hasattr(value, "_fields") or isinstance(value, tuple) else items
    return value


def _values(gm: fx.GraphModule, input_shape: Tuple[int, ...], on: str) -> Dict[fx.Node, Any]:
    try:
        values = tracing.node_values(gm, input_shape, on=on)
    except FoldError as exc:
        if exc.param != "input_shape" or exc.__cause__ is None:
            raise
        raise UnsupportedOpError(
            f"input_shape={tuple(input_shape)!r}: the model cannot run on it ({first_line(exc.__cause__, with_type=True)}); "
            "check the channels and the input size, or the model has data-dependent ops",
            param="input_shape", value=tuple(input_shape), rule="the model must run on a tensor of this shape",
        ) from exc.__cause__
    return {n: summarise(v) for n, v in values.items()}


def meta_values(gm: fx.GraphModule, input_shape: Tuple[int, ...]) -> Dict[fx.Node, Any]:
    """Every node's (summarised) value from one eval-mode run on a meta tensor of ``input_shape``.

    Example:
        >>> gm = trace_model(torch.nn.Conv2d(3, 8, 3, stride=2))
        >>> [tuple(v) for n, v in meta_values(gm, (1, 3, 9, 9)).items() if n.op in ("placeholder", "call_function")]
        [(1, 3, 9, 9), (1, 8, 4, 4)]
    """
    return _values(gm, input_shape, "meta")


def real_values(gm: fx.GraphModule, input_shape: Tuple[int, ...]) -> Dict[fx.Node, Any]:
    """Like :func:`meta_values`, by a real run on zeros (for graphs whose leaves cannot run on meta)."""
    return _values(gm, input_shape, "real")


def is_shape(value: Any) -> bool:
    """The summarised value is a tensor."""
    return isinstance(value, TensorShape)


def has_tensor(value: Any) -> bool:
    """The summarised value is a tensor or a tuple/list holding one."""
    if is_shape(value):
        return True
    if isinstance(value, (tuple, list)):
        return any(has_tensor(x) for x in value)
    return False


def op_name(gm: fx.GraphModule, node: fx.Node) -> str:
    """A readable name of what the node calls: the module class, the function or the method name."""
    if node.op == "call_module":
        return type(gm.get_submodule(node.target)).__name__
    if node.op == "call_function":
        packet = getattr(node.target, "overloadpacket", None)  # an aten op: aten.convolution
        return f"aten.{packet.__name__}" if packet is not None else getattr(node.target, "__name__", str(node.target))
    return str(node.target)
