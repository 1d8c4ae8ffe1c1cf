"""The aten-level record of a model for the receptive-field analysis: every model that runs, whatever torch.fx can trace.

:func:`record_aten` runs the model once under a dispatch mode (:class:`foldconv.capture.DispatchMode`) and
writes the aten operations that read the network's input, directly or through earlier ones, into a
``torch.fx`` graph of ``call_function`` nodes (target: the ``OpOverload``), which the analysis walks with
the aten rules (:mod:`~.rules_aten`) exactly as it walks a module-level trace. Python control flow is
followed as it ran: a branch on a shape takes the branch of the given shape.

Where it runs: a model whose parameters are on the meta device runs on a meta input (shapes only, no
memory, no arithmetic); a model with real weights runs on a real input (small positive values), so that
control flow that reads a value works and the graph can be replayed for gradient measurements and checks
(:func:`~.empirical.check_receptive_field`). Operations on constants alone (parameters, index tables,
masks) are not in the graph: their results are constants (``get_attr`` nodes holding the tensors), as
are the results of operations whose values do not depend on their input's values (``zeros_like``...).

Views and writes: an in-place operation gives its tensor a new node; a tensor that shares memory with one
written since (a view written through, a buffer filled by ``copy_``) is read through ``aliased(x, *writes)``,
which links the writes with a conservative whole-axis hull (``exact=False``).
"""
from __future__ import annotations

import operator
from typing import Any, Dict, List, Optional, Sequence, Tuple

import torch
import torch.fx as fx
from torch import nn

from ... import tracing
from ...capture import Observer, flat_tensors, module_scopes, written_tensors
from ...errors import FoldError, first_line
from .trace import TensorShape, UnsupportedOpError, summarise

__all__ = ["aliased", "record_aten", "select_output", "VALUE_FREE"]

#: aten ops whose results do not depend on the values of their tensor inputs (only on shapes and dtypes).
VALUE_FREE = frozenset({
    "empty_like", "zeros_like", "ones_like", "full_like", "rand_like", "randn_like", "randint_like", "new_zeros",
    "new_ones", "new_empty", "new_full", "new_empty_strided", "empty_strided", "scalar_tensor", "_efficientzerotensor",
    "sym_size", "sym_stride", "sym_numel", "sym_storage_offset",
})
_SPLITS = frozenset({"split", "split_with_sizes", "unsafe_split", "unsafe_split_with_sizes", "unbind", "chunk"})


def aliased(x: torch.Tensor, *writes: Any) -> torch.Tensor:
    """``x`` read after ``writes`` changed memory it shares (the writes are links of the graph, not values).

    Example:
        >>> aliased(torch.ones(2), torch.zeros(1)).tolist()
        [1.0, 1.0]
    """
    return x


def select_output(out: Any, output: Any) -> Any:
    """The tensor of a model's output that the analysis follows: ``output`` is a key (a mapping such as a Hugging
    Face ``ModelOutput``, or an attribute), an index (a tuple), or None (the output itself, else its first tensor).

    Example:
        >>> select_output({"logits": torch.ones(1), "hidden": torch.zeros(2)}, "hidden").shape
        torch.Size([2])
        >>> select_output((torch.ones(3), 1), None).shape
        torch.Size([3])
    """
    if output is None:
        if isinstance(out, torch.Tensor):
            return out
        values = list(out.values()) if hasattr(out, "values") and callable(out.values) else list(out) if isinstance(out, (tuple, list)) else []
        for v in values:
            if isinstance(v, torch.Tensor):
                return v
        raise FoldError(f"output=None: the model returned {type(out).__name__} with no tensor to follow; pass output=<key>",
                        param="output", value=None, rule="must name a tensor of the model's output")
    if isinstance(output, int) and not isinstance(output, bool) and isinstance(out, (tuple, list)):
        if -len(out) <= output < len(out) and isinstance(out[output], torch.Tensor):
            return out[output]
    elif isinstance(output, str):
        found = out.get(output) if hasattr(out, "get") else getattr(out, output, None)
        if isinstance(found, torch.Tensor):
            return found
    keys = list(out.keys()) if hasattr(out, "keys") else f"{len(out)} items" if isinstance(out, (tuple, list)) else type(out).__name__
    raise FoldError(f"output={output!r}: is not a tensor of the model's output (it has {keys})", param="output", value=output,
                    rule="must name a tensor of the model's output")


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage()._cdata


class _Graph:
    """The graph being written: tensors (by id, kept alive) to nodes, constants to ``get_attr`` nodes."""

    def __init__(self, originals: Dict[int, Tuple[str, torch.Tensor]]) -> None:
        self.graph = fx.Graph()
        self.root = nn.Module()
        self.values: Dict[fx.Node, Any] = {}
        self.node: Dict[int, fx.Node] = {}
        self.born: Dict[int, int] = {}  # id(tensor) -> number of writes to its storage when it got its node
        self.writes: Dict[int, List[fx.Node]] = {}  # storage -> the tracked writes into it, in order
        self.constants: Dict[int, fx.Node] = {}
        self.keep: List[Any] = []
        self.originals = originals
        self.reads: Dict[Tuple[int, int], fx.Node] = {}
        self.scope: List[Tuple[str, type]] = []  # the named modules whose forward is running (module_scopes)
        self.module_names: Dict[int, str] = {}

    def scoped(self, node: fx.Node) -> None:
        """Name the modules whose forward was running, as torch.fx does (``node.meta["nn_module_stack"]``)."""
        if self.scope:
            node.meta["nn_module_stack"] = {name: (name, kind) for name, kind in self.scope}

    def bind(self, t: torch.Tensor, node: fx.Node) -> None:
        self.node[id(t)] = node
        self.born[id(t)] = len(self.writes.get(_storage(t), ()))
        self.keep.append(t)
        self.values[node] = TensorShape(t.shape)

    def tracked(self, t: torch.Tensor) -> bool:
        return id(t) in self.node or bool(self.writes.get(_storage(t)))

    def constant(self, t: torch.Tensor) -> fx.Node:
        node = self.constants.get(id(t))
        if node is None and t._base is not None and id(t) not in self.originals:
            # a view of a constant stays a view of it, so that a write through one is seen by the other on replay
            base = self.constant(t._base)
            node = self.constants[id(t)] = self.graph.call_function(
                torch.ops.aten.as_strided.default, (base, list(t.shape), list(t.stride()), t.storage_offset()))
            self.values[node] = TensorShape(t.shape)
            self.keep.append(t)
        if node is None:
            name, tensor = self.originals.get(id(t), (f"const{len(self.constants)}", t))
            name = name.replace(".", "_")
            while hasattr(self.root, name):
                name += "_"
            if isinstance(tensor, nn.Parameter) or (tensor.is_floating_point() and tensor.dim() >= 2):
                # a weight made in forward (a transposed linear weight, a position table) is one too: the positive
                # copy of a gradient measurement redraws parameters, not buffers
                self.root.register_parameter(name, tensor if isinstance(tensor, nn.Parameter) else nn.Parameter(tensor, requires_grad=False))
            else:
                self.root.register_buffer(name, tensor)
            node = self.constants[id(t)] = self.graph.get_attr(name)
            self.values[node] = TensorShape(t.shape)
            self.keep.append(t)
        return node

    def read(self, t: torch.Tensor) -> fx.Node:
        base = self.node.get(id(t))
        writes = self.writes.get(_storage(t), [])
        later = writes[self.born.get(id(t), 0):] if base is not None else writes
        if base is None:
            base = self.constant(t)
        if not later:
            return base
        key = (id(t), len(writes))
        node = self.reads.get(key)
        if node is None:
            node = self.reads[key] = self.graph.call_function(aliased, (base, *later))
            self.values[node] = TensorShape(t.shape)
        return node

    def arg(self, x: Any) -> Any:
        if isinstance(x, torch.Tensor):
            return self.read(x)
        if isinstance(x, list):
            return [self.arg(v) for v in x]
        if isinstance(x, tuple):
            return tuple(self.arg(v) for v in x)
        return x

    def add(self, func: Any, args: Tuple[Any, ...], kwargs: Dict[str, Any], out: Any) -> None:
        name = func.overloadpacket.__name__
        if name in VALUE_FREE or not flat_tensors(out) or not any(self.tracked(t) for t in flat_tensors((args, kwargs))):
            return
        fargs, fkwargs = self.arg(args), {k: self.arg(v) for k, v in kwargs.items()}
        if name in _SPLITS and isinstance(out, (list, tuple)):
            self._split(name, args, kwargs, fargs[0], out)
            return
        node = self.graph.call_function(func, tuple(fargs), fkwargs)
        self.scoped(node)
        written = written_tensors(func, args, kwargs)
        if isinstance(out, torch.Tensor):
            self.bind(out, node)
        else:
            self.values[node] = summarise(out)
            for i, o in enumerate(out):
                if isinstance(o, torch.Tensor):
                    item = self.graph.call_function(operator.getitem, (node, i))
                    self.scoped(item)
                    self.bind(o, item)
        for w in written:
            if not isinstance(out, torch.Tensor) or w is not out:
                self.bind(w, node if isinstance(out, torch.Tensor) else self.node.get(id(out[0]), node))
            self.writes.setdefault(_storage(w), []).append(self.node[id(w)])
            self.born[id(w)] = len(self.writes[_storage(w)])

    def _split(self, name: str, args: Tuple[Any, ...], kwargs: Dict[str, Any], src: fx.Node, out: Sequence[torch.Tensor]) -> None:
        """A split as one slice (``unbind``: one select) per piece: exact, and each piece a node of its own."""
        x = args[0]
        dim = kwargs.get("dim", args[1] if name == "unbind" and len(args) > 1 else args[2] if len(args) > 2 else 0)
        dim %= x.dim()
        start = 0
        for i, piece in enumerate(out):
            if name == "unbind":
                node = self.graph.call_function(torch.ops.aten.select.int, (src, dim, i))
            else:
                size = piece.shape[dim]
                node = self.graph.call_function(torch.ops.aten.slice.Tensor, (src, dim, start, start + size))
                start += size
            self.scoped(node)
            self.bind(piece, node)


def _stand_ins(model: nn.Module) -> Tuple[List[Tuple[Dict[str, Any], str, torch.Tensor]], Dict[int, Tuple[str, torch.Tensor]]]:
    """Every parameter and buffer slot of the model, and each tensor's qualified name (tied tensors: the first)."""
    slots, names = [], {}
    for qualified, module in model.named_modules():
        for table in (module._parameters, module._buffers):
            for key, tensor in table.items():
                if tensor is not None:
                    slots.append((table, key, tensor))
                    names.setdefault(id(tensor), (f"{qualified}.{key}" if qualified else key, tensor))
    return slots, names


def record_aten(model: nn.Module, input_shape: Tuple[int, ...], *, output: Any = None, real: Optional[bool] = None) -> Tuple[fx.GraphModule, Dict[fx.Node, Any], bool]:
    """The aten-level graph of ``model`` on an input of ``input_shape``: ``(graph module, node values, real)``.

    ``real``: run on real tensors (None: when the model's parameters and buffers are all real, else on meta).
    The model runs in eval mode and is left as it was. :class:`~.trace.UnsupportedOpError` when it cannot run.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU())
        >>> gm, values, real = record_aten(net, (1, 1, 8, 8))
        >>> [str(n.target) for n in gm.graph.nodes if n.op == "call_function"], real
        (['aten.convolution.default', 'aten.relu.default'], True)
    """
    slots, names = _stand_ins(model)
    on_meta = any(t.is_meta for _, _, t in slots)
    if real is None:
        real = not on_meta
    if real and on_meta:
        raise UnsupportedOpError(f"model={type(model).__name__!r}: has parameters on the meta device, so it cannot run on real "
                                 "tensors; build it on the CPU", param="model", value=type(model).__name__)
    dtype = next((t.dtype for _, _, t in slots if t.is_floating_point()), torch.float32)
    if real:
        tracing.require_run_memory(model, input_shape, copies=1, what="recording the model's aten operations on real tensors")
        g = torch.Generator().manual_seed(0)
        x = (torch.rand(input_shape, generator=g, dtype=torch.float64) + 0.5).to(dtype)
        originals = dict(names)
        swaps: List[Tuple[Dict[str, Any], str, torch.Tensor]] = []
    else:
        x = torch.empty(input_shape, dtype=dtype, device="meta")
        stand = {}
        for _, _, t in slots:
            if id(t) not in stand:
                s = t if t.is_meta else torch.empty_like(t, device="meta")
                stand[id(t)] = nn.Parameter(s, t.requires_grad) if isinstance(t, nn.Parameter) and not isinstance(s, nn.Parameter) else s
        originals = {id(stand[i]): (n, stand[i]) for i, (n, _) in names.items()}
        swaps = [(table, key, stand[id(t)]) for table, key, t in slots]
    graph = _Graph(originals)
    graph.module_names = {id(m): name for name, m in model.named_modules() if name}
    placeholder = graph.graph.placeholder("x")
    graph.bind(x, placeholder)
    modes = {m: m.training for m in model.modules()}
    saved = [(table, key, table[key]) for table, key, _ in swaps]
    try:
        model.eval()
        for table, key, t in swaps:
            table[key] = t
        label = graph.module_names.get
        with torch.no_grad(), module_scopes(graph.scope, lambda m: (label(id(m)), type(m)) if label(id(m)) else None), Observer(graph.add):
            out = model(x)
        chosen = select_output(out, output)
    except (FoldError, UnsupportedOpError):
        raise
    except Exception as exc:
        raise UnsupportedOpError(
            f"input_shape={tuple(input_shape)!r}: the model cannot run on it ({first_line(exc, with_type=True)}) on "
            f"{'real' if real else 'meta'} tensors; check the channels and the input size",
            param="input_shape", value=tuple(input_shape), rule="the model must run on a tensor of this shape",
        ) from exc
    finally:
        for table, key, t in saved:
            table[key] = t
        for m, t in modes.items():
            m.training = t
    if not isinstance(chosen, torch.Tensor) or not graph.tracked(chosen):
        raise UnsupportedOpError(f"model={type(model).__name__!r}: its output does not depend on the input tensor",
                                 param="model", value=type(model).__name__)
    graph.graph.output(graph.read(chosen))
    for node in reversed(list(graph.graph.nodes)):  # unread results (a pooling's indices, a norm's statistics)
        if node.target is operator.getitem and not node.users:
            graph.graph.erase_node(node)
            del graph.values[node]
    gm = fx.GraphModule(graph.root, graph.graph, class_name=type(model).__name__)
    node_map = {n.name: n for n in gm.graph.nodes}
    values = {node_map[n.name]: v for n, v in graph.values.items() if n.name in node_map}
    values[node_map["x"]] = TensorShape(input_shape)
    return gm, values, real
