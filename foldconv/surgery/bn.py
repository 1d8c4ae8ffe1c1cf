"""Fold an eval-mode BatchNorm into the conv before it: ``bn(conv(x))`` as one conv.

``bn(y) = (y - mean) / sqrt(var + eps) * gamma + beta`` per channel, so with ``s = gamma * rsqrt(var + eps)`` the
conv gets ``w * s`` (per output channel) and bias ``(b - mean) * s + beta``. The arithmetic is written exactly
as ``torch.nn.utils.fusion.fuse_conv_bn_weights`` writes it (rsqrt, then the products in the same order), so
the folded weights agree with torch's bit for bit (tests/surgery/test_bn.py). Only an eval-mode BatchNorm
with running statistics is a fixed affine map; a training-mode one normalises with batch statistics and
cannot be folded.

Example:
    >>> import torch
    >>> conv, bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4).eval()
    >>> fused = fold_bn(conv, bn)
    >>> x = torch.randn(1, 3, 6, 6)
    >>> torch.allclose(fused(x), bn(conv(x)), atol=1e-6)
    True
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from .._validate import CONV_TYPES, require_conv
from ..errors import fold_error

__all__ = ["fold_bn"]


def fold_bn(conv: nn.Module, bn: nn.Module) -> nn.Module:
    """A new conv computing ``bn(conv(x))`` for an eval-mode BatchNorm with running statistics (inputs unchanged).

    The new conv always has a bias; its training mode is the conv's.

    Example:
        >>> fold_bn(torch.nn.Conv1d(2, 3, 3, bias=False), torch.nn.BatchNorm1d(3).eval()).bias.shape
        torch.Size([3])
    """
    dims = require_conv(conv)
    if not isinstance(bn, _BatchNorm):
        raise fold_error("bn", type(bn).__name__, "must be an nn.BatchNorm1d, 2d or 3d")
    if bn.training:
        raise fold_error("bn.training", True, "must be False: a training-mode BatchNorm normalises with batch statistics, not a fixed affine map")
    if bn.running_mean is None or bn.running_var is None:
        raise fold_error("bn.track_running_stats", False, "must be True: without running statistics BatchNorm always uses batch statistics")
    if bn.num_features != conv.out_channels:
        raise fold_error("bn.num_features", bn.num_features, f"must equal the conv's out_channels={conv.out_channels}")
    if not isinstance(conv, CONV_TYPES[dims - 1]):
        raise fold_error("conv", type(conv).__name__, "must be a plain nn.ConvNd")
    weight = conv.weight.detach()
    dtype = weight.dtype
    mean, var = bn.running_mean.detach(), bn.running_var.detach()
    gamma = bn.weight.detach() if bn.weight is not None else torch.ones_like(mean)
    beta = bn.bias.detach() if bn.bias is not None else torch.zeros_like(mean)
    bias = conv.bias.detach() if conv.bias is not None else torch.zeros_like(mean)
    rsqrt = torch.rsqrt(var + bn.eps)
    shape = (-1,) + (1,) * (weight.dim() - 1)
    new_weight = (weight * (gamma * rsqrt).reshape(shape)).to(dtype=dtype)
    new_bias = ((bias - mean) * rsqrt * gamma + beta).to(dtype=dtype)
    fused = copy.deepcopy(conv)
    with torch.no_grad():
        fused.weight = nn.Parameter(new_weight, conv.weight.requires_grad)
        fused.bias = nn.Parameter(new_bias, conv.weight.requires_grad)
    return fused.train(conv.training)
