"""A bias that repeats with period ``r``: what a sub-pixel conv's bias becomes after depth-to-space.

A sub-pixel conv (conv with ``O*prod(r)`` outputs, then ``depth_to_space(r, order)``) adds bias ``b[(o, rho)]`` to
output pixel ``i*r + rho`` of channel ``o``. A transposed conv has one bias per channel, so a sub-pixel conv
whose bias differs between the ``prod(r)`` sub-pixels of a channel (any trained ESPCN) is a bias-free transposed
conv followed by this periodic bias: ``depth_to_space`` of the bias vector is one ``r``-block, tiled over the map.

Example:
    >>> import torch
    >>> add = PeriodicBias(torch.arange(4.0), 2)
    >>> add(torch.zeros(1, 1, 2, 4))[0, 0].tolist()
    [[0.0, 1.0, 0.0, 1.0], [2.0, 3.0, 2.0, 3.0]]
"""
from __future__ import annotations

import math

import torch
from torch import nn

from .._validate import require_input, traced_input
from ..errors import fold_error
from ..layout import IntOrTuple, Order, depth_to_space
from ..specs import FoldSpec

__all__ = ["PeriodicBias"]


class PeriodicBias(nn.Module):
    """Add ``bias`` (``O*prod(r)`` values in the sub-pixel channel order ``order``) with period ``r`` per axis.

    Spatial sizes of the input must be multiples of ``r``; ``dims`` is ``len(r)`` (2 for an int).

    Example:
        >>> PeriodicBias(torch.zeros(8), 2)(torch.ones(1, 2, 4, 6)).shape
        torch.Size([1, 2, 4, 6])
    """

    def __init__(self, bias: torch.Tensor, r: IntOrTuple, order: Order = "crd"):
        super().__init__()
        dims = len(r) if isinstance(r, tuple) else 2
        fold = FoldSpec.coerce(r, dims, order, param="r")
        if not isinstance(bias, torch.Tensor) or bias.dim() != 1 or bias.numel() % fold.block:
            raise fold_error("bias", getattr(bias, "shape", bias), f"must be a vector of O*prod(r) values, prod(r)={fold.block}")
        self.bias = nn.Parameter(bias.detach().clone())
        self.r, self.order, self.dims = fold.r, fold.order, fold.dims
        # Where each entry of the (C, *r) block comes from in the bias vector: the block is a gather of the bias, so
        # that forward reads no size (a traced export then runs at every input size, without TracerWarnings)
        ids = torch.arange(bias.numel(), dtype=torch.float64).reshape((1, -1) + (1,) * fold.dims)
        self.register_buffer("block_index", depth_to_space(ids, fold.r, fold.order, dims=fold.dims)[0].long(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dims = self.dims
        if not traced_input(x):  # validated in eager mode; a trace (fx, ONNX export) must not bake the sizes in
            size = require_input(x, dims, channels=self.bias.numel() // math.prod(self.r))
            if any(n % f for n, f in zip(size, self.r)):
                raise fold_error("x.shape", tuple(x.shape), f"spatial sizes must be multiples of r={self.r}")
        block = self.bias[self.block_index]  # (C, *r)
        # Each spatial axis n split into (n/r, r) with -1 for the unknown part, the (C, 1, r, 1, r, ...) block added,
        # the axes joined again: no size is read, so the export runs at every size.
        y = x
        for a in reversed(range(dims)):
            y = y.unflatten(-(2 * (dims - a) - 1), (-1, self.r[a]))
        y = y + block.reshape((block.shape[0],) + sum(((1, f) for f in self.r), ()))
        for a in range(dims):
            y = y.flatten(-(2 * (dims - a)), -(2 * (dims - a)) + 1)
        return y

    def extra_repr(self) -> str:
        return f"channels={self.bias.numel() // math.prod(self.r)}, r={self.r}, order={' '.join(self.order)!r}"

