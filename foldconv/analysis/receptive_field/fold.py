"""Receptive fields of a conv and of its fold, side by side: folded-map pixels vs input pixels.

The motivating question's intuition clash: a 3x3 conv over 256 channels is a 48x48 conv with stride 16 on
the folded map (``fold_conv``), yet it still sees only 3x3 pixels of the original grid. Both statements are
receptive fields, in different coordinates: on the folded map one pixel is 1/16 of an original pixel
(``depth_to_space`` divides the jump by ``r``), so 48 folded pixels are 3 original pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Optional, Sequence, Tuple

from torch import nn

from ..._validate import conv_output_size, per_axis_ints, require_conv
from ...errors import FoldError, fold_error
from ...fold import fold_conv, plan_fold
from ...layout import DepthToSpace, IntOrTuple, Order
from ...specs import ConvSpec, FoldSpec
from .analyse import receptive_field
from .report import NodeRF

__all__ = ["RFRow", "FoldedRF", "folded_receptive_field"]


@dataclass(frozen=True)
class RFRow:
    """One form's output receptive field, in the stated coordinates (``kernel`` None for a layout op)."""

    form: str
    coordinates: str
    kernel: Optional[Tuple[int, ...]]
    rf: Tuple[int, ...]
    jump: Tuple[Fraction, ...]
    padding: Tuple[int, ...]
    aligned: bool

    @classmethod
    def of(cls, form: str, coordinates: str, node: NodeRF, kernel: Optional[Sequence[int]]) -> RFRow:
        return cls(form, coordinates, tuple(kernel) if kernel is not None else None, node.rf, node.jump, node.padding, node.aligned)


@dataclass(frozen=True)
class FoldedRF:
    """The conv on its input (``original``), the folded conv in folded-map pixels (``folded``), the folded
    conv behind ``depth_to_space`` in input pixels (``unfolded``), and the ``depth_to_space`` output itself
    (jump ``1/r``: not on the input grid)."""

    original: RFRow
    folded: RFRow
    unfolded: RFRow
    depth_to_space: RFRow

    @property
    def rows(self) -> Tuple[RFRow, ...]:
        return (self.original, self.folded, self.unfolded, self.depth_to_space)

    @property
    def ok(self) -> bool:
        """The folded conv, measured in input pixels, has exactly the original conv's field."""
        o, u = self.original, self.unfolded
        return (o.rf, o.jump, o.padding) == (u.rf, u.jump, u.padding) and u.aligned

    def __bool__(self) -> bool:
        return self.ok


def folded_receptive_field(conv: nn.Module, r: IntOrTuple, *, order: Order = "crd", input_size: Optional[IntOrTuple] = None) -> FoldedRF:
    """Receptive field of ``conv`` and of ``fold_conv(conv, r, order)`` in folded and in input coordinates,
    on an input of spatial size ``input_size`` (default 8 per axis).

    Example:
        >>> import torch
        >>> t = folded_receptive_field(torch.nn.Conv2d(256, 8, 3, padding=1), 16, input_size=(4, 4))
        >>> [(row.coordinates, row.rf, str(row.jump[0])) for row in t.rows]
        [('input pixels', (3, 3), '1'), ('folded-map pixels', (48, 48), '16'), ('input pixels', (3, 3), '1'), ('input pixels', (1, 1), '1/16')]
        >>> t.ok
        True
    """
    dims = require_conv(conv)
    size = per_axis_ints(8 if input_size is None else input_size, dims, "input_size", 1)
    spec = ConvSpec.from_module(conv)
    rs = plan_fold(spec, FoldSpec.make(r, order, dims)).fold.r
    if min(conv_output_size(size, spec.kernel_size, spec.stride, spec.padding, spec.dilation)) < 1:
        raise fold_error("input_size", size, f"is smaller than the conv's dilated kernel {spec.kernel_size} with padding {spec.padding}")
    big = fold_conv(conv, rs, order)
    try:
        orig = receptive_field(conv, (1, conv.in_channels) + size)
        alone = receptive_field(big, (1, big.in_channels) + tuple(s * f for s, f in zip(size, rs)))
        chain = receptive_field(nn.Sequential(DepthToSpace(rs, order), big), (1, conv.in_channels) + size)
    except FoldError as err:
        if err.param == "input_shape":  # the conv cannot run on it (padding wider than the input, say)
            raise fold_error("input_size", size, f"the conv cannot run on it: {err}") from err
        raise
    label = rs[0] if len(set(rs)) == 1 else rs
    return FoldedRF(
        RFRow.of(f"conv {conv.in_channels}ch", "input pixels", orig.output, conv.kernel_size),
        RFRow.of(f"fold_conv r={label} on folded map", "folded-map pixels", alone.output, big.kernel_size),
        RFRow.of("depth_to_space + fold_conv", "input pixels", chain.output, big.kernel_size),
        RFRow.of("depth_to_space output", "input pixels", list(chain.nodes.values())[1], None),
    )
