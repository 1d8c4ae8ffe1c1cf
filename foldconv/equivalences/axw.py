"""A convolution as ``conv(X) = sum_ab A_ab X W_ab`` (convolution as matrix products).

``X`` is one sample as a ``pixels x channels`` matrix (``rearrange(x, "c ... -> (...) c")``). For every kernel
tap ``ab`` the spatial aggregation matrix ``A_ab`` (``out_pixels x in_pixels``, entries 0/1) picks, for each
output pixel, the input pixel that tap reads -- ``i*S + a*d - P`` per axis, mapped back into the image by the
padding mode (zeros: no pixel, a zero row; circular: modulo; reflect: mirror without the edge; replicate:
clamp) -- and the channel mixing matrix ``W_ab = weight[:, :, a, b]^T`` (``C_in x C_out``, the dense
block-diagonal form of a grouped weight) mixes channels. Special cases are patterns of ``A`` and ``W``:

* 1x1 conv, stride 1, no padding: one term, ``A = I``: a Linear layer over channels, ``Y = X W``.
* grouped conv: every ``W_ab`` block-diagonal with ``groups`` blocks; depthwise: every ``W_ab`` diagonal.
* dilation ``d``: ``A_ab`` is the stride-1 selection shifted by ``d*(a, b)`` instead of ``(a, b)``.
* stride ``S``: ``A_ab`` keeps every ``S``-th row of the stride-1 ``A_ab``.
* transposed conv: ``A_ab`` is the transpose of the matching conv's ``A_ab`` (its adjoint), ``W_ab`` the
  transposed weight's tap ``weight[:, :, a, b]`` (``C_in x C_out`` as stored).
"""
from __future__ import annotations

import itertools
import math
import numbers
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple

import einops
import torch
from torch import nn

from .._validate import (
    CONV_TRANSPOSE_TYPES,
    CONV_TYPES,
    SPATIAL_NAMES,
    conv_transpose_output_size,
    per_axis_ints,
    require_allocation,
    require_int,
)
from ..errors import fold_error
from ..fold import expand_groups
from ..padding import PADDING_MODES, padded_source
from ..specs import ConvSpec

__all__ = ["AXWTerm", "AXWFactors", "axis_selection", "axw_factors"]



def axis_selection(in_size: int, out_size: int, *, stride: int = 1, shift: int = 0, padding_mode: str = "zeros") -> torch.Tensor:
    """The 0/1 matrix ``(out_size, in_size)`` of one axis: row ``i`` picks input ``i*stride + shift`` (mapped by the mode).

    Example:
        >>> axis_selection(4, 4, shift=-1).tolist()[0], axis_selection(4, 4, shift=-1, padding_mode="reflect").tolist()[0]
        ([0.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0])
    """
    if padding_mode not in PADDING_MODES:
        raise fold_error("padding_mode", padding_mode, f"must be one of {PADDING_MODES}")
    in_size, out_size = require_int(in_size, "in_size", 1), require_int(out_size, "out_size", 1)
    stride = require_int(stride, "stride", 1)
    if isinstance(shift, bool) or not isinstance(shift, numbers.Integral):
        raise fold_error("shift", shift, "must be an integer (the input index of output 0)")
    sources = [padded_source(i * stride + shift, in_size, padding_mode) for i in range(out_size)]
    keep = torch.tensor([src is not None for src in sources], dtype=torch.bool)
    u = torch.tensor([src if src is not None else 0 for src in sources], dtype=torch.long)
    a = torch.zeros(out_size, in_size, dtype=torch.float64)
    rows = torch.arange(out_size)[keep]
    a[rows, u[keep]] = 1.0
    return a


@dataclass(frozen=True)
class AXWTerm:
    """One kernel tap: ``offset`` (kernel index per axis), ``A`` (out_pixels x in_pixels), ``W`` (C_in x C_out)."""

    offset: Tuple[int, ...]
    A: torch.Tensor
    W: torch.Tensor


@dataclass(frozen=True)
class AXWFactors:
    """``conv(X) = sum_t A_t X W_t + 1 b^T`` for one layer on one input size.

    ``input_shape``/``output_shape``: the full shapes ``(1, C, *S)`` of one sample.
    """

    terms: Tuple[AXWTerm, ...]
    bias: Optional[torch.Tensor]
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Reproduce the layer's output ``(B, C_out, *S_out)`` from the factors.

        Example:
            >>> conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
            >>> x = torch.randn(1, 2, 4, 5, dtype=torch.float64)
            >>> torch.allclose(axw_factors(conv, (4, 5)).apply(x), conv(x))
            True
        """
        dims = len(self.input_shape) - 2
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != tuple(self.input_shape[1:]):
            raise fold_error(
                "x.shape", tuple(getattr(x, "shape", ())), f"must be (B, *{self.input_shape[1:]}), the shape the factors were built for"
            )
        X = einops.rearrange(x, "b c ... -> b (...) c")
        Y = sum(torch.einsum("mn,bnc,co->bmo", t.A.to(X.dtype), X, t.W.to(X.dtype)) for t in self.terms)
        if self.bias is not None:
            Y = Y + self.bias.to(Y.dtype)
        names = SPATIAL_NAMES[dims]
        return einops.rearrange(Y, f"b ({' '.join(names)}) o -> b o {' '.join(names)}", **dict(zip(names, self.output_shape[2:])))

    def channel_blocks(self) -> int:
        """The largest ``g`` such that every ``W`` is block-diagonal with ``g`` equal blocks (1 = dense)."""
        c, o = self.terms[0].W.shape
        best = 1
        for g in range(1, math.gcd(c, o) + 1):
            if c % g or o % g:
                continue
            mask = torch.block_diag(*[torch.ones(c // g, o // g, dtype=torch.bool)] * g)
            if all(not bool(t.W[~mask].any()) for t in self.terms):
                best = g
        return best


def axw_factors(module: nn.Module, input_size: Sequence[int]) -> AXWFactors:
    """The per-tap factors ``A_ab`` and ``W_ab`` of an ``nn.ConvNd`` or ``nn.ConvTransposeNd`` on one input size.

    Example:
        >>> f = axw_factors(torch.nn.Conv2d(4, 8, 1, bias=False), (3, 3))
        >>> len(f.terms), torch.equal(f.terms[0].A, torch.eye(9, dtype=torch.float64)), tuple(f.terms[0].W.shape)
        (1, True, (4, 8))
    """
    if isinstance(module, CONV_TYPES):
        spec = ConvSpec.from_module(module)
        size = per_axis_ints(input_size, spec.dims, "input_size", 1)
        out = spec.output_size(size)
        _check_terms(module, size, out)
        weight = expand_groups(module.weight.detach(), spec.groups)  # (O, C, *K)
        terms = []
        for tap in itertools.product(*(range(k) for k in spec.kernel_size)):
            mats = [
                axis_selection(n, m, stride=s, shift=t * d - p, padding_mode=spec.padding_mode)
                for n, m, s, t, d, p in zip(size, out, spec.stride, tap, spec.dilation, spec.padding)
            ]
            terms.append(AXWTerm(tap, _kron(mats), weight[(slice(None), slice(None)) + tap].T.to(torch.float64)))
        bias = module.bias.detach().to(torch.float64) if module.bias is not None else None
        return AXWFactors(tuple(terms), bias, (1, spec.in_channels) + size, (1, spec.out_channels) + out)
    if isinstance(module, CONV_TRANSPOSE_TYPES):
        size = per_axis_ints(input_size, len(module.kernel_size), "input_size", 1)
        if module.padding_mode != "zeros" or isinstance(module.padding, str):
            raise fold_error("module.padding", module.padding, "must be explicit numbers with padding_mode 'zeros'")
        out = conv_transpose_output_size(size, module.kernel_size, module.stride, module.padding, module.dilation, module.output_padding)
        if any(o < 1 for o in out):
            raise fold_error("input_size", size, f"gives an empty output {out}")
        _check_terms(module, size, out)
        weight = expand_groups(module.weight.detach(), module.groups)  # (C_in, O, *K)
        terms = []
        for tap in itertools.product(*(range(k) for k in module.kernel_size)):
            # The adjoint of the conv that maps the transposed conv's output grid back onto its input grid.
            mats = [
                axis_selection(o, n, stride=s, shift=t * d - p).T.contiguous()
                for n, o, s, t, d, p in zip(size, out, module.stride, tap, module.dilation, module.padding)
            ]
            terms.append(AXWTerm(tap, _kron(mats), weight[(slice(None), slice(None)) + tap].to(torch.float64)))
        bias = module.bias.detach().to(torch.float64) if module.bias is not None else None
        return AXWFactors(tuple(terms), bias, (1, module.in_channels) + size, (1, module.out_channels) + out)
    raise fold_error("module", type(module).__name__, "must be an nn.Conv1d/2d/3d or nn.ConvTranspose1d/2d/3d")


def _check_terms(module: nn.Module, size: Sequence[int], out: Sequence[int]) -> None:
    """Every tap's selection matrix is ``prod(out) x prod(size)`` in float64: refused above the allocation limit."""
    taps = math.prod(module.kernel_size)
    require_allocation(8 * taps * math.prod(out) * math.prod(size), param="input_size", value=tuple(size),
                     what=f"{taps} selection matrices of {math.prod(out):,} x {math.prod(size):,}")


def _kron(mats: Sequence[torch.Tensor]) -> torch.Tensor:
    """Selection over row-major flattened pixels: the Kronecker product of the per-axis selections."""
    result = mats[0]
    for m in mats[1:]:
        result = torch.kron(result, m)
    return result
