"""How a site reads in the report: spec text of its layers before and after, and its parameters and MACs.

Example:
    >>> import torch
    >>> describe(torch.nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1))
    'ConvTranspose2d(8->3, k=(4, 4), s=(2, 2), p=(1, 1))'
    >>> site_costs(torch.nn.Conv2d(3, 4, 3), (1, 3, 8, 8))
    (112, 3888)
"""
from __future__ import annotations

import operator
from typing import Optional, Sequence, Tuple

from torch import nn

from .._validate import CONV_TRANSPOSE_TYPES, CONV_TYPES
from ..analysis.counting import count
from ..equivalences import SpaceToDepthConv, SubPixelConv, spd_alignment
from ..layout import layout_module
from ..specs import ConvSpec
from .patterns import Context, Match
from .stage import FoldedStage

__all__ = ["describe", "describe_site", "site_costs"]

_LAYOUT_FNS = ("pixel_shuffle", "pixel_unshuffle", "depth_to_space", "space_to_depth")


def _layout_text(name: str, r: Tuple[int, ...], order: Tuple[str, ...]) -> str:
    return f"{name}(r={tuple(r)}, order={' '.join(order)!r})"


def _spd_text(module: SpaceToDepthConv, input_shape: Optional[Sequence[int]]) -> str:
    """Every step a ``SpaceToDepthConv`` runs, in order: the source's padding made explicit, the cut or zero
    extension of the end that space-to-depth needs (its lengths when the input shape is known), the layout op,
    the conv, and the crop of a trailing output the extension created."""
    source, r = module.source, module.r
    size = tuple(input_shape[-module.dims:]) if input_shape is not None else None
    steps = []
    if module.mode == "explicit":
        if any(source.padding):
            mode = "" if source.padding_mode == "zeros" else f", {source.padding_mode}"
            steps.append(f"pad{tuple(source.padding)}{mode}")
        if size is None:
            steps.append(f"cut or zero-extend the end to a multiple of r={tuple(r)}")
        else:
            axes = spd_alignment(source, size)
            if any(a.adjust for a in axes):
                verb = "cut" if all(a.adjust <= 0 for a in axes) else "cut or zero-extend" if any(a.adjust < 0 for a in axes) else "zero-extend"
                steps.append(f"{verb} the end to {tuple(a.length for a in axes)}")
    elif size is None:
        steps.append(f"zero-extend the end to a multiple of r={tuple(r)}")
    elif any(n % s for n, s in zip(size, r)):
        steps.append(f"zero-extend the end to {tuple(n + (-n) % s for n, s in zip(size, r))}")
    steps += [_layout_text("SpaceToDepth", r, module.order), describe(module.conv)]
    if module.mode == "inner":
        if size is None:
            steps.append("keep the strided conv's output positions")
        else:
            outputs = tuple(a.outputs for a in spd_alignment(source, size))
            folded = ConvSpec.from_module(module.conv).output_size(tuple(-(-n // s) for n, s in zip(size, r)))
            if folded != outputs:
                steps.append(f"crop to {outputs}")
    return " + ".join(steps)


def describe(module: nn.Module, input_shape: Optional[Sequence[int]] = None) -> str:
    """One line for a layer: a conv's spec, a layout module's factors and order, a composite's parts (an
    ``nn.Sequential``'s children joined with " + "); a layer that runs several steps names every one of them
    (``input_shape``, when given, makes input-dependent steps exact).

    Example:
        >>> import torch
        >>> describe(torch.nn.PixelShuffle(2))
        "PixelShuffle(r=(2, 2), order='c rh rw')"
        >>> describe(torch.nn.Sequential(torch.nn.ConvTranspose2d(4, 1, 6, stride=3), torch.nn.Tanh()))
        'ConvTranspose2d(4->1, k=(6, 6), s=(3, 3), p=(0, 0)) + Tanh'
        >>> from foldconv.equivalences import strided_to_spd
        >>> describe(strided_to_spd(torch.nn.Conv2d(3, 8, 7, stride=2, padding=3), padding="explicit"), (1, 3, 32, 32))
        "pad(3, 3) + SpaceToDepth(r=(2, 2), order='c rh rw') + Conv2d(12->8, k=(4, 4), s=(1, 1), p=(0, 0))"
    """
    if isinstance(module, CONV_TYPES):
        return ConvSpec.from_module(module).describe()
    if isinstance(module, CONV_TRANSPOSE_TYPES):
        text = (f"{type(module).__name__}({module.in_channels}->{module.out_channels}, k={tuple(module.kernel_size)}, "
                f"s={tuple(module.stride)}, p={tuple(module.padding)}")
        if any(module.output_padding):
            text += f", op={tuple(module.output_padding)}"
        if module.groups != 1:
            text += f", groups={module.groups}"
        return text + ")"
    if isinstance(module, SpaceToDepthConv):
        return _spd_text(module, input_shape)
    if isinstance(module, SubPixelConv):
        crop = f" + crop{module.crop}" if any(v for c in module.crop for v in c) else ""
        pad = f"pad{module.input_pad} + " if any(v for c in module.input_pad for v in c) else ""
        return f"{pad}{describe(module.conv)} + {_layout_text('DepthToSpace', module.r, module.order)}{crop}"
    info = layout_module(module)
    if info is not None:
        return _layout_text(type(module).__name__, info.r, info.order)
    if isinstance(module, FoldedStage):
        return f"FoldedStage of {module.report.summary()}"
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return f"{type(module).__name__}({module.num_features})"
    if isinstance(module, nn.Sequential) and len(module):  # a replacement made of layers reads as its layers
        return " + ".join(describe(child, input_shape if k == 0 else None) for k, child in enumerate(module))
    return type(module).__name__


def describe_site(ctx: Context, match: Match, replacement: Optional[nn.Module] = None) -> str:
    """The site's layers in order (``replacement``: describe it instead), joined with " + ", each with every step it
    runs on the site's input."""
    if replacement is not None:
        return describe(replacement, match.input_shape)
    if ctx.traced is None or not match.nodes:
        return " + ".join(describe(ctx.module(p), match.input_shape if k == 0 else None) for k, p in enumerate(match.modules))
    parts = []
    slices = 0
    for node in ctx.traced.graph.nodes:
        if node.name not in match.nodes:
            continue
        if node.op == "call_module":
            parts.append(describe(ctx.module(str(node.target)), None if parts or slices else match.input_shape))
        elif node.target is operator.getitem:
            slices += 1
        elif node.op == "call_function" and match.layout is not None and getattr(node.target, "__name__", "") in _LAYOUT_FNS:
            parts.append(_layout_text(node.target.__name__, match.layout.r, match.layout.order))
        else:
            name = getattr(node.target, "__name__", str(node.target))
            if slices and name in ("cat", "concat", "concatenate"):
                step = match.layout.r[0] if match.layout is not None else 2
                parts.append(f"{slices} slices x[..., a::{step}, b::{step}] + cat")
                slices = 0
            else:
                parts.append(name)
    return " + ".join(parts)


def site_costs(module: nn.Module, input_shape: Sequence[int]) -> Tuple[int, int]:
    """Parameters and MACs of ``module`` on one input of ``input_shape`` (foldconv.analysis.counting, on meta)."""
    try:
        report = count(module, tuple(input_shape))
    except Exception:  # noqa: BLE001 (a cost the counter cannot run is reported as parameters only)
        return sum(p.numel() for p in module.parameters()), 0
    return int(report.params), int(report.macs)
