"""Unfold a folded stage: the original stage back from a :class:`foldconv.surgery.stage.FoldedStage`, bit-exact.

Folded convs give their weights back with :func:`foldconv.fold.unfold_weight` (a permutation); commuted layers
with per-channel parameters take each folded channel's value for its ``prod(r)`` channels, and folding the rebuilt
layers again must give the folded stage's layers back bit for bit; kept layers are copied. Split from
:mod:`foldconv.surgery.stage` (which re-exports :func:`unfold_stage`); this module reads that one only when called.

Example:
    >>> from torch import nn
    >>> from foldconv.surgery.stage import fold_stage
    >>> stage = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
    >>> torch.equal(unfold_stage(fold_stage(stage, 2, input_shape=(1, 4, 6, 6)))[0].weight, stage[0].weight)
    True
"""
from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from ..errors import fold_error
from ..fold import unfold_weight
from ..layout import fold_channel_map, space_to_depth
from ..predict import fold_following
from ..specs import FoldSpec

if TYPE_CHECKING:
    from .stage import FoldedStage

__all__ = ["unfold_stage"]


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


def _check_commuted(folded: FoldedStage, rebuilt: nn.Module) -> None:
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
    layers with per-channel parameters take each folded channel's value for its ``prod(r)`` channels, kept
    layers are copied. A stage whose folded weights were changed unfolds to the stage they now stand for.

    Example:
        >>> from torch import nn
        >>> from foldconv.surgery.stage import fold_stage
        >>> stage = nn.Sequential(nn.Conv2d(4, 4, 3, padding=1), nn.ReLU())
        >>> back = unfold_stage(fold_stage(stage, 2, input_shape=(1, 4, 6, 6)))
        >>> torch.equal(back[0].weight, stage[0].weight), type(back[1]).__name__
        (True, 'ReLU')
    """
    from .stage import FoldedStage  # stage imports this module (it re-exports unfold_stage)

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
    _check_commuted(folded, rebuilt)
    return rebuilt

