"""What makes a site's layers compute something other than their attributes say: read before a rule touches them.

A rule rebuilds a site from its layers' attributes (a conv's weight, stride, padding...), so it is only right
when calling the layer computes exactly what those attributes describe. Anything that changes the call is a
reason the site is not rewritten, said in the model's terms:

- a subclass of a layer a rule reads (``nn.Conv2d``, ``nn.BatchNorm2d``, ``nn.PixelShuffle``, foldconv's forms)
  that overrides ``forward`` (or ``_conv_forward``): timm's ``StdConv2d`` standardises its weight, ``Conv2dSame``
  pads dynamically, ``BatchNormAct2d`` adds an activation;
- a forward hook or pre-hook on a layer of the site (pruning and the hook-based ``torch.nn.utils.weight_norm`` /
  ``spectral_norm`` are pre-hooks), and a backward hook (the rewritten model would not call it: it trains
  differently);
- a hook registered for every module (``torch.nn.modules.module.register_module_forward_hook`` and friends): it
  would see the rewritten model's modules, which are other modules called another number of times;
- the model reading a parameter or buffer of the site's layers directly (an fx ``get_attr`` node: a decoder tied
  to an encoder's weight), which the replacement does not have.

Parametrisations (``torch.nn.utils.parametrize``: the current ``weight_norm``, ``spectral_norm``, ``orthogonal``)
are not hazards: the rewrite keeps them (:mod:`foldconv.surgery.params`).

Example:
    >>> import torch
    >>> conv = torch.nn.Conv2d(3, 4, 3)
    >>> handle = conv.register_forward_hook(lambda module, inputs, output: output * 2)
    >>> module_hazard("conv1", conv)
    'forward hook on conv1 (<lambda>)'
    >>> handle.remove(); module_hazard("conv1", conv)
    ''
"""
from __future__ import annotations

from typing import Iterable, Optional, Sequence, Tuple

import torch.fx as fx
import torch.nn.modules.module as torch_module
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .._validate import CONV_TRANSPOSE_TYPES, CONV_TYPES
from ..equivalences import SpaceToDepthConv, SubPixelConv
from ..layout import DepthToSpace, SpaceToDepth
from .periodic import PeriodicBias

__all__ = ["READ_BY_ATTRIBUTES", "module_hazard", "site_hazard", "global_hazard", "graph_reads", "inlined_hazard"]

#: Layers a rule rebuilds from their attributes: a subclass that overrides one of :data:`_CALLS` computes
#: something else.
READ_BY_ATTRIBUTES: Tuple[type, ...] = CONV_TYPES + CONV_TRANSPOSE_TYPES + (
    _BatchNorm, nn.PixelShuffle, nn.PixelUnshuffle, DepthToSpace, SpaceToDepth, SpaceToDepthConv, SubPixelConv, PeriodicBias,
)
_CALLS = ("forward", "_conv_forward", "_check_input_dim")
_HOOKS = (
    ("_forward_pre_hooks", "forward pre-hook"), ("_forward_hooks", "forward hook"),
    ("_backward_pre_hooks", "backward pre-hook"), ("_backward_hooks", "backward hook"),
)
_GLOBAL_HOOKS = (
    ("_global_forward_pre_hooks", "register_module_forward_pre_hook"), ("_global_forward_hooks", "register_module_forward_hook"),
    ("_global_backward_pre_hooks", "register_module_full_backward_pre_hook"),
    ("_global_backward_hooks", "register_module_full_backward_hook"),
)


def _base(module: nn.Module) -> Optional[type]:
    """The first class of the module's MRO that is one of them or a torch subclass of one, when the module is one of
    :data:`READ_BY_ATTRIBUTES` (None otherwise): what a rule reads it as."""
    if not isinstance(module, READ_BY_ATTRIBUTES):
        return None
    for cls in type(module).__mro__:
        if cls in READ_BY_ATTRIBUTES or (cls.__module__.startswith("torch.") and issubclass(cls, READ_BY_ATTRIBUTES)):
            return cls
    return None


def _hook_name(hook: object) -> str:
    """What a hook is, for a message: torch's weight_norm / spectral_norm / pruning hooks by name."""
    kind = type(hook)
    where = kind.__module__ or ""
    if where.startswith("torch.nn.utils."):
        family = where.rsplit(".", 1)[-1]
        return f"{family} ({kind.__name__}: the hook-based form; torch.nn.utils.parametrizations keeps it through a rewrite)"
    return getattr(hook, "__qualname__", None) or getattr(hook, "__name__", None) or kind.__name__


def module_hazard(path: str, module: nn.Module) -> str:
    """Why calling ``module`` (at ``path``) may not compute what its attributes say ("" when nothing does).

    Example:
        >>> import torch
        >>> class Scaled(torch.nn.Conv2d):
        ...     def forward(self, x):
        ...         return 2 * super().forward(x)
        >>> module_hazard("stem", Scaled(3, 4, 3))
        'Conv2d subclass Scaled overrides forward (at stem)'
    """
    base = _base(module)
    if base is not None and type(module) is not base:
        for name in _CALLS:
            mine, theirs = getattr(type(module), name, None), getattr(base, name, None)
            if mine is not theirs:
                return f"{base.__name__} subclass {type(module).__name__} overrides {name} (at {path or 'the model'})"
    for attr, what in _HOOKS:
        hooks = getattr(module, attr, None) or {}
        for hook in hooks.values():
            return f"{what} on {path or 'the model'} ({_hook_name(hook)})"
    return ""


def site_hazard(model: nn.Module, paths: Iterable[str]) -> str:
    """The first hazard of the layers at ``paths`` and every module inside them ("" when none).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3))
        >>> site_hazard(net, ["0"])
        ''
    """
    for path in paths:
        for inner, module in model.get_submodule(path).named_modules():
            found = module_hazard(f"{path}.{inner}" if inner and path else inner or path, module)
            if found:
                return found
    return ""


def global_hazard() -> str:
    """A hook registered for every module, with the torch function that registered it ("" when none).

    Example:
        >>> import torch
        >>> global_hazard()
        ''
    """
    for attr, how in _GLOBAL_HOOKS:
        hooks = getattr(torch_module, attr, None) or {}
        if hooks:
            hook = next(iter(hooks.values()))
            return (f"a hook for every module is registered ({_hook_name(hook)}, torch.nn.modules.module.{how}): the "
                    "rewritten model's modules are other modules, called another number of times")
    return ""


def graph_reads(graph: Optional[fx.Graph], paths: Sequence[str]) -> str:
    """A ``get_attr`` node of the traced graph that reads a parameter, buffer or submodule of the layers at
    ``paths`` outside their calls ("" when none): the replacement does not have it.

    Example:
        >>> import torch
        >>> class Tied(torch.nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.enc = torch.nn.Conv2d(1, 4, 2, stride=2)
        ...     def forward(self, x):
        ...         return torch.nn.functional.conv_transpose2d(self.enc(x), self.enc.weight, stride=2)
        >>> graph_reads(torch.fx.symbolic_trace(Tied()).graph, ["enc"])
        'the model reads enc.weight directly (not only by calling enc)'
    """
    if graph is None:
        return ""
    for node in graph.nodes:
        if node.op != "get_attr":
            continue
        target = str(node.target)
        for path in paths:
            if target == path or target.startswith(f"{path}.") or not path:
                return f"the model reads {target} directly (not only by calling {path or 'the model'})"
    return ""


def inlined_hazard(model: nn.Module, graph: Optional[fx.Graph]) -> str:
    """A hook on a module the traced graph runs inline (the model itself, a container traced through): a
    rewritten GraphModule would not call it ("" when none, or when nothing was traced).

    Example:
        >>> import torch
        >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 1))
        >>> _ = net.register_forward_hook(lambda module, inputs, output: output + 1)
        >>> inlined_hazard(net, torch.fx.symbolic_trace(net).graph)
        'forward hook on the model (<lambda>), which the traced graph runs inline: a rewritten GraphModule would not call it'
    """
    if graph is None:
        return ""
    called = {str(node.target) for node in graph.nodes if node.op == "call_module"}
    for path, module in model.named_modules():
        if path in called or any(path.startswith(f"{c}.") for c in called):
            continue
        for attr, what in _HOOKS:
            hooks = getattr(module, attr, None) or {}
            for hook in hooks.values():
                return (f"{what} on {path or 'the model'} ({_hook_name(hook)}), which the traced graph runs inline: "
                        "a rewritten GraphModule would not call it")
    return ""
