"""Tracing a model with ``torch.fx`` and learning every node's shape from one run on meta tensors.

The run on meta tensors needs no memory and does no arithmetic; a tensor value is summarised by its
shape (:class:`TensorShape`), everything else (ints, shapes as data, tuples) is kept as it is, because
rules read arguments such as ``x.view(n, -1)`` from it.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, Sequence, Tuple

import torch
import torch.fx as fx
from torch import nn

from ...errors import FoldError, fold_error
from ...layout import depth_to_space, space_to_depth
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


class _Tracer(fx.Tracer):
    def __init__(self, leaf_modules: Sequence[type] = (), autowrap: Sequence[Any] = ()):
        super().__init__(autowrap_functions=(depth_to_space, space_to_depth) + tuple(autowrap))
        self._leaves = leaf_types() + tuple(leaf_modules)

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if isinstance(m, self._leaves):
            return True
        return super().is_leaf_module(m, qualname)


def _timm_notrace() -> Tuple[Tuple[type, ...], Tuple[Any, ...]]:
    """timm's own "notrace" modules and functions (what timm's feature extractor keeps whole), when the
    model comes from an already imported timm; empty otherwise (timm stays optional)."""
    if "timm" not in sys.modules:
        return (), ()
    try:
        from timm.models._features_fx import get_notrace_functions, get_notrace_modules
    except ImportError:
        return (), ()
    return tuple(get_notrace_modules()), tuple(f for f in get_notrace_functions() if callable(f))


def trace_model(model: nn.Module, *, leaf_modules: Sequence[type] = ()) -> fx.GraphModule:
    """Trace ``model`` in eval mode, keeping modules with a registered rule (foldconv's layout modules,
    einops ``Rearrange``) and ``leaf_modules`` as single nodes.

    Raises :class:`UnsupportedOpError` naming the model when ``torch.fx`` cannot trace it.

    Example:
        >>> from foldconv.layout import DepthToSpace
        >>> gm = trace_model(torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3), DepthToSpace(1)))
        >>> [n.op for n in gm.graph.nodes]
        ['placeholder', 'call_module', 'call_module', 'output']
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    if isinstance(leaf_modules, (str, type)) or not isinstance(leaf_modules, Sequence) or not all(
        isinstance(t, type) and issubclass(t, nn.Module) for t in leaf_modules
    ):
        raise fold_error("leaf_modules", leaf_modules, "must be a sequence of nn.Module classes")
    modes = {m: m.training for m in model.modules()}
    model.eval()  # control flow on self.training (aux heads) must take the inference branch
    try:
        try:
            tracer = _Tracer(leaf_modules)
            graph = tracer.trace(model)
        except Exception:
            leaves, functions = _timm_notrace()
            if not leaves and not functions:
                raise
            # a timm model: trace again keeping timm's untraceable layers whole (they need rules, or are named)
            tracer = _Tracer(tuple(leaf_modules) + leaves, functions)
            graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types (TraceError, TypeError, AttributeError...)
        raise UnsupportedOpError(
            f"model={type(model).__name__!r}: torch.fx cannot trace it ({type(exc).__name__}: {exc}); "
            "pass fallback='empirical' or make the data-dependent part a leaf module",
            param="model", value=type(model).__name__, rule="must be traceable by torch.fx",
        ) from exc
    finally:
        for m, t in modes.items():
            m.training = t
    return fx.GraphModule(tracer.root, graph, type(model).__name__)


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


class _Recorder(fx.Interpreter):
    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=False)


class _MetaRunner(nn.Module):
    def __init__(self, gm: fx.GraphModule):
        super().__init__()
        self.gm = gm

    def forward(self, x):
        rec = _Recorder(self.gm)
        rec.run(x)
        return {n: summarise(v) for n, v in rec.env.items()}


def _input_dtype(gm: fx.GraphModule) -> torch.dtype:
    """The dtype a float input must have to run the model: that of its first floating parameter or buffer
    (a float64 model refuses float32 input), else torch's default."""
    for t in list(gm.parameters()) + list(gm.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def meta_values(gm: fx.GraphModule, input_shape: Tuple[int, ...]) -> Dict[fx.Node, Any]:
    """Every node's (summarised) value from one eval-mode run on a meta tensor of ``input_shape``.

    Example:
        >>> gm = trace_model(torch.nn.Conv2d(3, 8, 3, stride=2))
        >>> [tuple(v) for n, v in meta_values(gm, (1, 3, 9, 9)).items() if n.op in ("placeholder", "call_function")]
        [(1, 3, 9, 9), (1, 8, 4, 4)]
    """
    state = {f"gm.{k}": torch.empty_like(v, device="meta") for k, v in gm.named_parameters(remove_duplicate=False)}
    state.update({f"gm.{k}": torch.empty_like(v, device="meta") for k, v in gm.named_buffers(remove_duplicate=False)})
    x = torch.empty(input_shape, device="meta", dtype=_input_dtype(gm))
    modes = {m: m.training for m in gm.modules()}
    gm.eval()
    try:
        with torch.no_grad():
            return torch.func.functional_call(_MetaRunner(gm), state, (x,), strict=False)
    except FoldError:
        raise
    except Exception as exc:
        raise UnsupportedOpError(
            f"input_shape={tuple(input_shape)!r}: the model cannot run on it ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); check the channels and the input size, "
            "or the model has data-dependent ops",
            param="input_shape", value=tuple(input_shape), rule="the model must run on a tensor of this shape",
        ) from exc
    finally:
        for m, t in modes.items():
            m.training = t


def real_values(gm: fx.GraphModule, input_shape: Tuple[int, ...]) -> Dict[fx.Node, Any]:
    """Like :func:`meta_values`, by a real run on zeros (for graphs whose leaves cannot run on meta)."""
    try:
        with torch.no_grad():
            rec = _Recorder(gm)
            rec.run(torch.zeros(input_shape, dtype=_input_dtype(gm)))
    except Exception as exc:
        raise UnsupportedOpError(
            f"input_shape={tuple(input_shape)!r}: the model cannot run on it ({type(exc).__name__}: {exc})",
            param="input_shape", value=tuple(input_shape), rule="the model must run on a tensor of this shape",
        ) from exc
    return {n: summarise(v) for n, v in rec.env.items()}


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
        return getattr(node.target, "__name__", str(node.target))
    return str(node.target)
