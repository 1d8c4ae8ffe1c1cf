"""Receptive fields of a conv and of its fold, side by side: folded-map pixels vs input pixels.

The seed's intuition clash: a 3x3 conv over 256 channels is a 48x48 conv with stride 16 on the folded map
(``fold_conv``), yet it still sees only 3x3 pixels of the original grid. Both statements are receptive
fields, in different coordinates: on the folded map one pixel is 1/16 of an original pixel
(``depth_to_space`` divides the jump by ``r``), so 48 folded pixels are 3 original pixels.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Sequence

from torch import nn

from ...errors import fold_error
from ...fold import fold_conv
from ...layout import DepthToSpace, IntOrTuple, Order
from .core import receptive_field

__all__ = ["FoldedRF", "folded_receptive_field"]


@dataclass
class FoldedRF:
    """Rows: the conv on its input, the folded conv in folded coordinates, the folded conv in input pixels,
    and the depth-to-space output (jump ``1/r``: not on the input grid)."""

    rows: List[Dict[str, Any]]

    @property
    def consistent(self) -> bool:
        """The folded conv, measured in input pixels, has exactly the original conv's field."""
        orig, _, back = self.rows[0], self.rows[1], self.rows[2]
        return all(orig[k] == back[k] for k in ("rf", "jump", "padding")) and back["aligned"]


def folded_receptive_field(conv: nn.Module, r: IntOrTuple, order: Order = "crd", input_size: Sequence[int] = (8, 8)) -> FoldedRF:
    """Receptive field of ``conv`` and of ``fold_conv(conv, r, order)`` in folded and in input coordinates.

    Example:
        >>> import torch
        >>> t = folded_receptive_field(torch.nn.Conv2d(256, 8, 3, padding=1), 16, input_size=(4, 4))
        >>> [(row["coordinates"], row["rf"], row["jump"][0]) for row in t.rows]
        [('input pixels', (3, 3), '1'), ('folded-map pixels', (48, 48), '16'), ('input pixels', (3, 3), '1'), ('input pixels', (1, 1), '1/16')]
        >>> t.consistent
        True
    """
    if not isinstance(conv, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        raise fold_error("conv", type(conv).__name__, "must be an nn.Conv1d, nn.Conv2d or nn.Conv3d")
    dims = len(conv.kernel_size)
    size = tuple(input_size)
    if len(size) != dims:
        raise fold_error("input_size", tuple(input_size), f"needs {dims} spatial sizes for a {dims}-d conv")
    big = fold_conv(conv, r, order)
    rs = big.fold_plan.fold.r
    g = big.in_channels
    rows = []

    def row(form, coords, report, kernel):
        rec = report.output
        return {
            "form": form,
            "coordinates": coords,
            "kernel": tuple(kernel),
            "rf": rec.rf,
            "jump": tuple(str(j) for j in rec.jump),
            "padding": rec.padding,
            "aligned": rec.aligned,
        }

    orig = receptive_field(conv, (1, conv.in_channels) + size)
    rows.append(row(f"conv {conv.in_channels}ch", "input pixels", orig, conv.kernel_size))
    folded_size = tuple(s * f for s, f in zip(size, rs))
    alone = receptive_field(big, (1, g) + folded_size)
    rows.append(row(f"fold_conv r={rs[0] if len(set(rs)) == 1 else rs} on folded map", "folded-map pixels", alone, big.kernel_size))
    chain = receptive_field(nn.Sequential(DepthToSpace(rs, order, dims), big), (1, conv.in_channels) + size)
    rows.append(row("depth_to_space + fold_conv", "input pixels", chain, big.kernel_size))
    d2s = list(chain.nodes.values())[1]
    rows.append({
        "form": "depth_to_space output", "coordinates": "input pixels", "kernel": None, "rf": d2s.rf,
        "jump": tuple(str(j) for j in d2s.jump), "padding": d2s.padding, "aligned": d2s.aligned,
    })
    return FoldedRF(rows)

