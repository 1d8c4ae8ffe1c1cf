"""Tracing a model with torch.fx and learning what every node computes on one example input.

The one home of module-level graphs in foldconv (model surgery, stage folding, the receptive-field analysis):

- :func:`trace`: the fx graph of a model, with the modules named in ``leaves`` (classes, qualified module names
  or predicates) kept as single calls, foldconv's ``depth_to_space`` / ``space_to_depth`` functions recorded as
  calls (they validate their input, which a Proxy is not), and, for a model timm built, timm's own "notrace"
  modules and functions kept whole when the plain trace fails.
- :func:`node_values`: every node's value from one eval-mode run on an example input: on meta tensors (no
  memory, no arithmetic), on real zeros, or on meta and then on real tensors when a leaf has no meta kernel.
  torch.fx's ``ShapeProp`` prints the whole traceback of a failing node to stderr before raising; these runs
  print nothing and raise one FoldError naming ``input_shape`` and the first line of what torch said.
- :func:`node_shapes`: the tensor shapes of those values, by node name.
- :func:`module_inputs`: the input shapes every submodule is called with (forward hooks), for a model fx cannot
  trace.
- :func:`validate_input_shape`: the rule for a full input shape ``(N, C, *spatial)``.
- :func:`forward_elements` and :func:`require_run_memory`: what one forward pass on an input shape allocates,
  counted on meta tensors, and the memory guard (:func:`foldconv._validate.require_allocation`) every entry point
  that runs a model on a user-given shape applies before it allocates anything.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.PixelUnshuffle(2), torch.nn.Conv2d(12, 4, 3))
    >>> gm = trace(net, leaves=[torch.nn.PixelUnshuffle])
    >>> shapes = node_shapes(node_values(gm, (1, 3, 8, 8)))
    >>> [(n.target, shapes[n.name]) for n in gm.graph.nodes if n.op == "call_module"]
    [('0', (1, 12, 4, 4)), ('1', (1, 4, 2, 2))]
"""
from __future__ import annotations

import math
import numbers
import sys
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import torch
import torch.fx as fx
from torch import nn

from ._validate import require_allocation
from .capture import DispatchMode
from .errors import FoldError, first_line, fold_error
from .layout import depth_to_space, space_to_depth

__all__ = [
    "Leaf", "Shape", "RUN_ON", "trace", "node_values", "node_shapes", "module_inputs", "validate_input_shape", "require_batch_axis",
    "UNMEASURED_FACTOR", "forward_elements", "module_device", "module_dtype", "require_run_memory",
]

Shape = Tuple[int, ...]
#: A leaf: a module class (its instances), a qualified module name ("layer1.0"), or a predicate on the module.
Leaf = Union[type, str, Callable[[nn.Module], bool]]
#: Where :func:`node_values` and :func:`module_inputs` run: meta tensors, real zeros, or meta then real.
RUN_ON = ("meta", "real", "auto")
_LAYOUT_FUNCTIONS = (depth_to_space, space_to_depth)


def validate_input_shape(input_shape: Any, *, param: str = "input_shape", ranks: Sequence[int] = range(2, 6)) -> Shape:
    """``input_shape`` as a tuple of ints: a full input shape ``(N, C, *spatial)`` whose length is one of ``ranks``.

    Example:
        >>> validate_input_shape([1, 3, 8, 8])
        (1, 3, 8, 8)
        >>> validate_input_shape("1x3x8x8")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: input_shape='1x3x8x8': must be the full input shape (N, C, *spatial) as integers >= 1, e.g. (1, 3, 64, 64)
    """
    rule = "must be the full input shape (N, C, *spatial) as integers >= 1, e.g. (1, 3, 64, 64)"
    if isinstance(input_shape, (str, bytes, torch.Tensor)) or not isinstance(input_shape, Sequence):
        raise fold_error(param, input_shape, rule)
    if any(isinstance(s, bool) or not isinstance(s, numbers.Integral) or s < 1 for s in input_shape):
        raise fold_error(param, tuple(input_shape), rule)
    if len(input_shape) not in ranks:
        raise fold_error(param, tuple(input_shape), f"must have {' or '.join(str(r) for r in ranks)} entries (N, C, *spatial), not {len(input_shape)}")
    return tuple(int(s) for s in input_shape)


_SPATIAL_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


def require_batch_axis(model: nn.Module, input_shape: Sequence[int], *, param: str = "input_shape", label: str = "the model") -> None:
    """FoldError naming ``param`` when ``input_shape`` has one entry fewer than the model's first convolution needs
    (N, C and its spatial axes): torch runs such a conv on an unbatched ``(C, *spatial)`` input, so ``[1, 32, 32]``
    for a 2-D model would run and be analysed as 32 channels of a 1-D signal.

    Example:
        >>> require_batch_axis(nn.Sequential(nn.Conv2d(1, 4, 3)), [1, 32, 32], label="net")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: input_shape=[1, 32, 32]: must be a full tensor shape with the batch axis first; did you mean [1, 1, 32, 32]? (net's first layer 0, a Conv2d, takes (N, C=1) and 2 spatial axes)
        >>> require_batch_axis(nn.Sequential(nn.Conv2d(1, 4, 3)), [1, 1, 32, 32])
    """
    found = next(((name, m) for name, m in model.named_modules() if isinstance(m, _SPATIAL_LAYERS)), None)
    if found is None or isinstance(input_shape, (str, bytes)) or not isinstance(input_shape, Sequence):
        return
    name, layer = found
    dims = len(layer.kernel_size)
    if len(input_shape) == dims + 1:
        takes = f"({label}'s first layer {name}, a {type(layer).__name__}, takes (N, C={layer.in_channels}) and {dims} spatial axes)"
        if input_shape[0] == layer.in_channels:  # (C, *spatial): the batch axis forgotten
            raise fold_error(param, list(input_shape), f"must be a full tensor shape with the batch axis first; did you mean "
                                                       f"{[1, *input_shape]}? {takes}")
        raise fold_error(param, list(input_shape), f"must be a full tensor shape (N, C, and {dims} spatial axes), e.g. "
                                                   f"{[1, layer.in_channels, *[input_shape[-1]] * dims]} {takes}")


def _split_leaves(leaves: Any) -> Tuple[Tuple[type, ...], frozenset, Tuple[Callable[[nn.Module], bool], ...]]:
    rule = "must be a sequence of nn.Module classes, qualified module names or predicates module -> bool"
    if isinstance(leaves, (str, type)) or not isinstance(leaves, Iterable):
        raise fold_error("leaves", leaves, rule)
    classes, names, predicates = [], [], []
    for leaf in leaves:
        if isinstance(leaf, type) and issubclass(leaf, nn.Module):
            classes.append(leaf)
        elif isinstance(leaf, str):
            names.append(leaf)
        elif callable(leaf) and not isinstance(leaf, type):
            predicates.append(leaf)
        else:
            raise fold_error("leaves", leaf, rule)
    return tuple(classes), frozenset(names), tuple(predicates)


class _Tracer(fx.Tracer):
    """fx's tracer, with the given leaves kept as single calls (and fx's own: torch.nn's layers)."""

    def __init__(self, leaves: Any, functions: Sequence[Callable[..., Any]] = ()) -> None:
        super().__init__(autowrap_functions=_LAYOUT_FUNCTIONS + tuple(functions))
        self.classes, self.names, self.predicates = _split_leaves(leaves)

    def is_leaf_module(self, m: nn.Module, module_qualified_name: str) -> bool:  # noqa: D102 (fx's protocol)
        if module_qualified_name in self.names or isinstance(m, self.classes) or any(p(m) for p in self.predicates):
            return True
        return super().is_leaf_module(m, module_qualified_name)


def _timm_notrace() -> Tuple[Tuple[type, ...], Tuple[Callable[..., Any], ...]]:
    """timm's own "notrace" modules and functions (what timm's feature extractor keeps whole), when timm is
    imported already (a model timm built); empty otherwise, so timm stays optional."""
    if "timm" not in sys.modules:
        return (), ()
    try:
        from timm.models._features_fx import get_notrace_functions, get_notrace_modules
    except ImportError:
        return (), ()
    return tuple(get_notrace_modules()), tuple(f for f in get_notrace_functions() if callable(f))


def trace(model: nn.Module, *, leaves: Iterable[Leaf] = ()) -> fx.GraphModule:
    """The torch.fx graph of ``model`` (in its current train/eval mode), with ``leaves`` kept as single calls.

    ``leaves``: module classes, qualified module names (``"layer1"``) and predicates ``module -> bool``; torch.nn's
    layers are leaves too (fx's rule). foldconv's ``depth_to_space`` / ``space_to_depth`` are recorded as calls.
    When the trace fails on a model timm built, it is retried with timm's "notrace" modules and functions kept
    whole. A model fx cannot trace is a FoldError naming ``model``, with fx's reason (the exception is chained).

    Example:
        >>> gm = trace(torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3), torch.nn.ReLU()))
        >>> [(n.op, str(n.target)) for n in gm.graph.nodes]
        [('placeholder', 'input'), ('call_module', '0'), ('call_module', '1'), ('output', 'output')]
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    leaves = tuple(leaves) if isinstance(leaves, Iterable) and not isinstance(leaves, (str, type)) else leaves
    tracer = _Tracer(leaves)
    try:
        try:
            graph = tracer.trace(model)
        except Exception:
            timm_leaves, timm_functions = _timm_notrace()
            if not timm_leaves and not timm_functions:
                raise
            tracer = _Tracer(leaves + timm_leaves, timm_functions)
            graph = tracer.trace(model)
    except Exception as err:  # noqa: BLE001 (fx raises many types: TraceError, TypeError; a module that checks its input, a FoldError)
        raise fold_error("model", type(model).__name__, f"torch.fx cannot trace it: {first_line(err, with_type=True)}") from err
    return fx.GraphModule(tracer.root, graph, class_name=type(model).__name__)


def module_dtype(module: nn.Module) -> torch.dtype:
    """The dtype a float input needs to run the module: its first floating parameter's or buffer's (a float64
    model refuses float32 input), else torch's default.

    Example:
        >>> module_dtype(torch.nn.Linear(2, 2).double()), module_dtype(torch.nn.ReLU())
        (torch.float64, torch.float32)
    """
    return next((t.dtype for t in _tensors(module) if t.is_floating_point()), torch.get_default_dtype())


def _tensors(module: nn.Module) -> Iterator[torch.Tensor]:
    yield from module.parameters()
    yield from module.buffers()


def module_device(module: nn.Module) -> torch.device:
    """Where a module's tensors live: the device of its first parameter or buffer (cpu for a module without any).

    Example:
        >>> module_device(torch.nn.Linear(2, 2)), module_device(torch.nn.Linear(2, 2, device="meta")), module_device(torch.nn.ReLU())
        (device(type='cpu'), device(type='meta'), device(type='cpu'))
    """
    if not isinstance(module, nn.Module):
        raise fold_error("module", type(module).__name__, "must be a torch.nn.Module")
    return next((t.device for t in _tensors(module)), torch.device("cpu"))


class _Interpreter(fx.Interpreter):
    """Runs every node and keeps every value; quiet: no traceback is printed and no message is rewritten."""

    def __init__(self, gm: fx.GraphModule):
        super().__init__(gm, garbage_collect_values=False)
        self.extra_traceback = False  # fx would append the node and its stack to the exception's message


class _Call(nn.Module):
    """``fn(module, x)`` as a module whose parameters are ``module``'s, for torch.func.functional_call."""

    def __init__(self, module: nn.Module, fn: Callable[[nn.Module, torch.Tensor], Any]):
        super().__init__()
        self.module = module
        self.fn = fn

    def forward(self, x: torch.Tensor) -> Any:
        return self.fn(self.module, x)


def _run(module: nn.Module, shape: Shape, fn: Callable[[nn.Module, torch.Tensor], Any], on: str) -> Any:
    """``fn(module, x)`` in eval mode without grad, on meta stand-ins for every parameter and buffer
    (``on="meta"``) or on the module's own tensors and a zero input (``"real"``); train modes are restored."""
    modes = {m: m.training for m in module.modules()}
    module.eval()
    try:
        with torch.no_grad():
            if on == "real":
                return fn(module, torch.zeros(shape, dtype=module_dtype(module), device=module_device(module)))
            call = _Call(module, fn)
            state = {f"module.{k}": torch.empty_like(v, device="meta") for k, v in module.named_parameters(remove_duplicate=False)}
            state.update({f"module.{k}": torch.empty_like(v, device="meta") for k, v in module.named_buffers(remove_duplicate=False)})
            x = torch.empty(shape, device="meta", dtype=module_dtype(module))
            return torch.func.functional_call(call, state, (x,), strict=False)
    finally:
        for m, training in modes.items():
            m.training = training


def _attempts(module: nn.Module, input_shape: Any, on: Any, fn: Callable[[nn.Module, torch.Tensor], Any], what: str) -> Any:
    shape = validate_input_shape(input_shape, ranks=range(1, 64))
    if on not in RUN_ON:
        raise fold_error("on", on, f"must be one of {', '.join(RUN_ON)}")
    order = ("meta", "real") if on == "auto" else (on,)
    for attempt, where in enumerate(order, 1):
        try:
            return _run(module, shape, fn, where)
        except FoldError:
            raise
        except Exception as err:  # noqa: BLE001 (torch's refusal becomes a FoldError naming the shape)
            if attempt < len(order):
                continue  # an op without a meta kernel, or one that reads values: try real tensors
            raise fold_error("input_shape", shape, f"the {what} cannot run on it: {first_line(err, with_type=True)}") from err
    return None


def node_values(gm: fx.GraphModule, input_shape: Sequence[int], *, on: str = "meta") -> Dict[fx.Node, Any]:
    """Every node's value (the output node's included) from one eval-mode run of ``gm`` on ``input_shape``.

    ``on``: ``"meta"`` (meta tensors stand in for every parameter, buffer and the input: no memory, no
    arithmetic; the values are meta tensors), ``"real"`` (the module's own tensors and a zero input in its
    dtype, on its device) or ``"auto"`` (meta, then real when meta fails: an op without a meta kernel, a leaf
    that reads values). A model that cannot run on the shape is a FoldError naming ``input_shape`` with the first
    line of torch's message (chained); a FoldError raised inside the model passes through unchanged. Nothing is
    printed. The train modes are restored; nothing else of ``gm`` changes.

    Example:
        >>> gm = trace(torch.nn.Conv2d(3, 8, 3, stride=2))
        >>> [tuple(v.shape) for n, v in node_values(gm, (1, 3, 9, 9)).items() if n.op == "call_function"]
        [(1, 8, 4, 4)]
        >>> node_values(gm, (1, 4, 9, 9), on="real")
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: input_shape=(1, 4, 9, 9): the model cannot run on it: RuntimeError: Given groups=1, ...
    """
    if not isinstance(gm, fx.GraphModule):
        raise fold_error("gm", type(gm).__name__, "must be a torch.fx.GraphModule (from foldconv.tracing.trace)")

    def run(module: nn.Module, x: torch.Tensor) -> Dict[fx.Node, Any]:
        interpreter = _Interpreter(module)
        interpreter.run(x)
        return dict(interpreter.env)

    return _attempts(gm, input_shape, on, run, "model")


def node_shapes(values: Dict[fx.Node, Any]) -> Dict[str, Shape]:
    """The shape of every tensor value of :func:`node_values`, by node name (other values are left out).

    Example:
        >>> gm = trace(torch.nn.Sequential(torch.nn.Linear(4, 2)))
        >>> node_shapes(node_values(gm, (3, 4)))
        {'input_1': (3, 4), '_0': (3, 2), 'output': (3, 2)}
    """
    return {node.name: tuple(int(s) for s in value.shape) for node, value in values.items() if isinstance(value, torch.Tensor)}


def module_inputs(model: nn.Module, input_shape: Sequence[int], *, paths: Optional[Iterable[str]] = None,
                  on: str = "auto") -> Dict[str, Tuple[Shape, ...]]:
    """The shape of the first tensor argument of every call of every submodule (or of those at ``paths``), by
    path, in call order, from forward hooks on one eval-mode run (``on`` as in :func:`node_values`). For models
    fx cannot trace; a module that is never called is left out.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU())
        >>> module_inputs(net, (1, 3, 8, 8))
        {'': ((1, 3, 8, 8),), '0': ((1, 3, 8, 8),), '1': ((1, 4, 6, 6),)}
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    wanted = None if paths is None else set(paths)

    def run(module: nn.Module, x: torch.Tensor) -> Dict[str, Tuple[Shape, ...]]:
        seen: Dict[str, List[Shape]] = {}
        handles = []
        for path, sub in module.named_modules(remove_duplicate=False):
            if wanted is not None and path not in wanted:
                continue

            def hook(_m: nn.Module, args: Tuple[Any, ...], path: str = path) -> None:
                first = args[0] if args else None
                if isinstance(first, torch.Tensor):
                    seen.setdefault(path, []).append(tuple(int(s) for s in first.shape))

            handles.append(sub.register_forward_pre_hook(hook))
        try:
            module(x)
        finally:
            for handle in handles:
                handle.remove()
        return {path: tuple(shapes) for path, shapes in seen.items()}

    return _attempts(model, input_shape, on, run, "model")


#: A model that cannot run on meta tensors (an op without a meta kernel, a branch on a value) is estimated at this
#: many input sizes for one forward pass: what a conv net widening 3 channels to 64 at full resolution, with a
#: few of its maps alive, holds.
UNMEASURED_FACTOR = 64


class _Allocations(DispatchMode):
    """Counts the elements of every new tensor an op returns (views and in-place results share storage: not counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.elements = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        returns = getattr(getattr(func, "_schema", None), "returns", ())
        values = out if isinstance(out, (tuple, list)) else (out,)
        for ret, value in zip(returns, values):
            if isinstance(value, torch.Tensor) and getattr(ret, "alias_info", None) is None:
                self.elements += value.numel()
        return out


def forward_elements(model: nn.Module, input_shape: Sequence[int]) -> int:
    """The elements one eval-mode forward pass of ``model`` on ``input_shape`` allocates: the input and every new
    tensor an op returns, none freed (an upper bound of the peak, and what a backward pass keeps alive), counted
    on meta tensors (nothing is allocated). A model that cannot run on meta is estimated at
    :data:`UNMEASURED_FACTOR` input sizes.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(inplace=True))
        >>> forward_elements(net, (1, 3, 10**5, 10**5)) == 3 * 10**10 + 8 * 10**10
        True
    """
    shape = validate_input_shape(input_shape, ranks=range(1, 64))
    counter = _Allocations()

    def run(module: nn.Module, x: torch.Tensor) -> Any:
        with counter:
            return module(x)

    try:
        _run(model, shape, run, "meta")
    except Exception:  # noqa: BLE001 (an op without a meta kernel, a value read: estimated from the input instead)
        return UNMEASURED_FACTOR * math.prod(shape)
    return math.prod(shape) + counter.elements


def require_run_memory(model: nn.Module, input_shape: Sequence[int], *, copies: float, bytes_per_element: int = 8,
                     what: str = "running the model", param: str = "input_shape") -> int:
    """The bytes ``copies`` forward passes of ``model`` on ``input_shape`` take (:func:`forward_elements` times
    ``bytes_per_element``: 8 for the float64 checks) plus the model's parameters and buffers; a FoldError naming
    ``param`` above foldconv's allocation limit (:data:`foldconv._validate.MAX_ALLOCATION_BYTES`). Returns them.

    Example:
        >>> require_run_memory(torch.nn.Conv2d(3, 8, 3), (1, 3, 10**5, 10**5), copies=2)
        Traceback (most recent call last):
        ...
        foldconv.errors.FoldError: input_shape=(1, 3, 100000, 100000): would allocate about 1.60 TiB for running the model, above foldconv's allocation limit of 8.00 GiB (MAX_ALLOCATION_BYTES; raise it with foldconv.allocation_limit(nbytes))
    """
    if not isinstance(model, nn.Module):
        raise fold_error("model", type(model).__name__, "must be a torch.nn.Module")
    shape = validate_input_shape(input_shape, param=param, ranks=range(1, 64))
    weights = sum(t.numel() for t in _tensors(model)) * bytes_per_element
    nbytes = copies * forward_elements(model, shape) * bytes_per_element + weights
    return require_allocation(nbytes, param=param, value=shape, what=what)
