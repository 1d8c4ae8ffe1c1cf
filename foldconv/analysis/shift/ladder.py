"""D2L's ladder (section 7.1) as trainable layers on one image grid: fully connected, locally connected
(locality without weight sharing), a conv on the space-to-depth map, and that conv's fold on the image.

Every rung maps a ``(N, 1, r*n, r*n)`` image to ``(N, channels, n, n)`` features with the same windows
(``r*kernel`` pixels, stride ``r``, padding ``r*padding``), followed by the same head (ReLU, flatten,
linear). The conv rung is the motivating question's case 1 (a ``kernel`` x ``kernel`` conv over ``r*r``
channels of ``space_to_depth(image, r)``) and the folded rung its case 2 (``fold_conv``: one
``r*kernel`` x ``r*kernel`` conv with stride ``r`` on the image), initialised from the folded initial
weights: the same function, with the same parameters.

Training the two from the same start with any elementwise optimizer (SGD, momentum, Adam, weight decay)
gives the same trajectory: the folded weight is a permutation ``P`` of the original's entries, so the
gradient of the folded weight is ``P`` of the gradient (paper_notes/shift.md §3). The training loop is the
shift app's (``foldconv shift``, :mod:`foldconv.experiments.shift`).

Example:
    >>> rungs = ladder_models(image_size=16, r=4, channels=2, kernel=3, classes=3, seed=0)
    >>> [(name, parameter_count(m)) for name, m in rungs.items()]
    [('fc', 8323), ('local', 4739), ('conv', 389), ('folded', 389)]
"""
from __future__ import annotations

import copy
import math
from typing import Dict, Tuple

import einops
import torch
import torch.nn.functional as F
from torch import nn

from ..._validate import require_int
from ...errors import fold_error
from ...fold import fold_conv
from ...layout import SpaceToDepth

__all__ = ["LocallyConnected2d", "ladder_models", "parameter_count", "kaiming_bound"]


class LocallyConnected2d(nn.Module):
    """A conv without weight sharing: every output position has its own ``(out, in, k, k)`` weight and bias.

    Default init is a conv's (Kaiming uniform with ``a=sqrt(5)``, fan-in ``in*k*k``) per position.

    Example:
        >>> lc = LocallyConnected2d(1, 2, (8, 8), kernel_size=4, stride=4)
        >>> lc(torch.zeros(3, 1, 8, 8)).shape, lc.weight.shape
        (torch.Size([3, 2, 2, 2]), torch.Size([4, 2, 16]))
    """

    def __init__(self, in_channels: int, out_channels: int, input_size: Tuple[int, int], *, kernel_size: int, stride: int = 1, padding: int = 0):
        super().__init__()
        self.k, self.s, self.p = require_int(kernel_size, "kernel_size", 1), require_int(stride, "stride", 1), require_int(padding, "padding", 0)
        self.out_size = tuple((n + 2 * self.p - self.k) // self.s + 1 for n in input_size)
        if min(self.out_size) < 1:
            raise fold_error("input_size", tuple(input_size), f"is smaller than the kernel {self.k} with padding {self.p}")
        positions = math.prod(self.out_size)
        fan_in = in_channels * self.k * self.k
        bound = 1 / math.sqrt(fan_in)  # nn.Conv2d's default: kaiming_uniform(a=sqrt(5)) and its bias rule
        self.weight = nn.Parameter(torch.empty(positions, out_channels, fan_in).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(positions, out_channels).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cols = F.unfold(x, self.k, padding=self.p, stride=self.s)  # (N, C*k*k, L)
        out = torch.einsum("nkl,lok->nlo", cols, self.weight) + self.bias
        return einops.rearrange(out, "n (h w) o -> n o h w", h=self.out_size[0], w=self.out_size[1])


def parameter_count(model: nn.Module) -> int:
    """Number of parameter elements (shared parameters once).

    Example:
        >>> parameter_count(nn.Conv2d(4, 2, 3))
        74
    """
    return sum(p.numel() for p in model.parameters())


def _head(channels: int, n: int, classes: int) -> nn.Module:
    return nn.Sequential(nn.ReLU(), nn.Flatten(), nn.Linear(channels * n * n, classes))


def ladder_models(*, image_size: int = 32, r: int = 4, channels: int = 16, kernel: int = 3, classes: int = 10,
                  seed: int = 0, dtype: torch.dtype = torch.float32) -> Dict[str, nn.Module]:
    """The four rungs (fc, local, conv, folded), seeded; all heads start from the same weights and the
    folded rung from the folded weights of the conv rung (so conv and folded are the same function).

    ``image_size`` must be a multiple of ``r``; ``kernel`` is odd (padding ``kernel // 2`` keeps ``n = image_size / r``).

    Example:
        >>> rungs = ladder_models(image_size=8, r=2, channels=2, kernel=3, classes=3)
        >>> {name: parameter_count(m) for name, m in rungs.items()}
        {'fc': 2179, 'local': 1283, 'conv': 173, 'folded': 173}
    """
    r = require_int(r, "r", 1)
    image_size = require_int(image_size, "image_size", 1)
    kernel = require_int(kernel, "kernel", 1)
    if image_size % r:
        raise fold_error("image_size", image_size, f"must be a multiple of r={r}")
    if kernel % 2 == 0:
        raise fold_error("kernel", kernel, "must be odd (padding kernel // 2 keeps the map size)")
    n, pad = image_size // r, kernel // 2
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        head = _head(channels, n, classes)
        fc = nn.Sequential(nn.Flatten(), nn.Linear(image_size * image_size, channels * n * n),
                           nn.Unflatten(1, (channels, n, n)))
        local = LocallyConnected2d(1, channels, (image_size, image_size), kernel_size=r * kernel, stride=r, padding=r * pad)
        conv = nn.Conv2d(r * r, channels, kernel, padding=pad)
    finally:
        torch.random.set_rng_state(gen_state)
    rungs = {
        "fc": nn.Sequential(fc, copy.deepcopy(head)),
        "local": nn.Sequential(local, copy.deepcopy(head)),
        "conv": nn.Sequential(SpaceToDepth(r), conv, copy.deepcopy(head)),
        "folded": nn.Sequential(fold_conv(conv, r), copy.deepcopy(head)),
    }
    return {k: m.to(dtype) for k, m in rungs.items()}


def kaiming_bound(module: nn.Module, *, mode: str = "fan_in", a: float = math.sqrt(5)) -> float:
    """The bound of ``nn.init.kaiming_uniform_(weight, a, mode)`` for a conv (the default init has ``a=sqrt(5)``).

    Example:
        >>> kaiming_bound(torch.nn.Conv2d(16, 8, 3)) == kaiming_bound(torch.nn.Conv2d(1, 8, 12, stride=4))
        True
    """
    if mode not in ("fan_in", "fan_out"):
        raise fold_error("mode", mode, "must be 'fan_in' or 'fan_out'")
    fan_in, fan_out = nn.init._calculate_fan_in_and_fan_out(module.weight)
    gain = nn.init.calculate_gain("leaky_relu", a)
    return gain * math.sqrt(3.0 / (fan_in if mode == "fan_in" else fan_out))
