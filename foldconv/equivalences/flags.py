"""What a converted layer keeps of its source besides the function: which of its tensors train.

Every conversion builds new tensors from the source's (a weight re-laid out, a bias repeated per sub-pixel); a
fresh ``nn.Parameter`` trains by default, so a frozen source (``requires_grad=False``: a frozen backbone) would
come back trainable. :func:`copy_requires_grad` gives each new tensor the flag of the tensor it was built from.

Example:
    >>> import torch
    >>> old, new = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(3, 4, 3)
    >>> _ = old.weight.requires_grad_(False)
    >>> new = copy_requires_grad(new, old)
    >>> new.weight.requires_grad, new.bias.requires_grad
    (False, True)
"""
from __future__ import annotations

from typing import Mapping, Optional, TypeVar

from torch import nn

__all__ = ["copy_requires_grad"]

M = TypeVar("M", bound=nn.Module)


def copy_requires_grad(new: M, source: nn.Module, names: Optional[Mapping[str, str]] = None) -> M:
    """``new`` with ``requires_grad`` of each tensor named in ``names`` (new name -> source name; default the
    weight and bias of both) set from the source's tensor; a tensor either side lacks is left alone.

    Example:
        >>> import torch
        >>> conv = torch.nn.Conv2d(1, 1, 1, bias=False).requires_grad_(False)
        >>> copy_requires_grad(torch.nn.Conv2d(1, 1, 1), conv).weight.requires_grad
        False
    """
    for mine, theirs in (names or {"weight": "weight", "bias": "bias"}).items():
        target, origin = getattr(new, mine, None), getattr(source, theirs, None)
        if isinstance(target, nn.Parameter) and origin is not None:
            target.requires_grad_(bool(origin.requires_grad))
    return new
