"""Following-layer rules for pooling (RULE-6) and upsampling (RULE-7), registered on import.

Both hold when they act only along axes with ``r = 1``. A pool whose kernel equals its stride and divides
``r`` on every folded axis reduces whole sub-blocks of fold blocks, i.e. channels: it equals a reduction over
channel groups of the unfolded map (:class:`ChannelGroupReduce`), refolded with ``r/k`` (HOLDS_IF). Any other
window or resampling along a folded axis mixes positions and channels.

Example:
    >>> from foldconv.predict import following_rule
    >>> type(following_rule(nn.MaxPool2d(2))).__name__
    'PoolRule'
"""
from __future__ import annotations

import copy
import math
from typing import Sequence, Tuple

import einops
import torch
from torch import nn

from .._validate import SPATIAL_NAMES
from ..check import Verdict
from ..errors import fold_error
from ..layout import fold_channel_map
from ..specs import FoldSpec
from .following import FollowingRule, register_following_rule
from .outcome import Outcome, Prediction, fails, holds

__all__ = ["ChannelGroupReduce", "PoolRule", "UpsampleRule"]



def _per_axis(value, dims: int) -> Tuple:
    """A layer attribute (``kernel_size``, ``stride``...) that is one value or one per axis, as one per axis."""
    return tuple(value) if isinstance(value, (tuple, list)) else (value,) * dims

class ChannelGroupReduce(nn.Module):
    """Mean, max or sum over the channel groups of the unfolded map that a pool with kernel ``k`` (= stride,
    dividing ``r``) on the folded map reduces, refolded with ``r/k``: ``pool(depth_to_space(y)) == this(y)``.

    Example:
        >>> from foldconv import depth_to_space
        >>> y = torch.randn(2, 8, 3, 3)
        >>> torch.equal(ChannelGroupReduce(FoldSpec.make(2), (2, 2), "max")(y), nn.MaxPool2d(2)(depth_to_space(y, 2)))
        True
    """

    def __init__(self, fold: FoldSpec, kernel: Sequence[int], kind: str):
        super().__init__()
        if kind not in ("mean", "max", "sum"):
            raise fold_error("kind", kind, "must be 'mean', 'max' or 'sum'")
        if len(kernel) != fold.dims or any(f % k for f, k in zip(fold.r, kernel)):
            raise fold_error("kernel", tuple(kernel), f"must divide r={fold.r} on every axis")
        self.fold, self.kernel, self.kind = fold, tuple(kernel), kind
        spatial = SPATIAL_NAMES[fold.dims]
        self.pattern = (f"b g {' '.join(f'(i{a} k{a})' for a in range(fold.dims))} {' '.join(spatial)} -> "
                        f"b g {' '.join(f'({s} i{a})' for a, s in enumerate(spatial))} ({' '.join(f'k{a}' for a in range(fold.dims))})")

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        cmap = fold_channel_map(y.shape[1], self.fold.r, self.fold.order, dims=self.fold.dims).to(y.device)
        grouped = einops.rearrange(y[:, cmap], self.pattern, **{f"k{a}": k for a, k in enumerate(self.kernel)})
        if self.kind == "max":
            return grouped.amax(-1)
        return grouped.mean(-1) if self.kind == "mean" else grouped.sum(-1)

    def extra_repr(self) -> str:
        return f"r={self.fold.r}, order={self.fold.order_string!r}, kernel={self.kernel}, kind={self.kind!r}"


def _pool_out(n: int, k: int, s: int, p: int, d: int, ceil: bool) -> int:
    """torch's pooling output size (``ceil_mode`` drops a last window that starts in the right padding)."""
    out = (n + 2 * p - d * (k - 1) - 1 + (s - 1 if ceil else 0)) // s + 1
    if ceil and (out - 1) * s >= n + p:
        out -= 1
    return out


class PoolRule(FollowingRule):
    """Avg/max pooling (RULE-6): identity along folded axes holds; kernel = stride dividing ``r`` there is a
    reduction over channel groups (HOLDS_IF); any other window straddles fold blocks."""

    examples = ("avgpool_r", "maxpool_r", "avgpool_3s1", "maxpool_2s1", "maxpool_dilated", "maxpool_unfolded_axes")
    _TYPES = ((nn.AvgPool1d, 1), (nn.AvgPool2d, 2), (nn.AvgPool3d, 3), (nn.MaxPool1d, 1), (nn.MaxPool2d, 2), (nn.MaxPool3d, 3))

    def dims(self, layer):
        return next(d for c, d in self._TYPES if isinstance(layer, c))

    @staticmethod
    def _axes(layer, dims):
        k = _per_axis(layer.kernel_size, dims)
        s = _per_axis(layer.stride if layer.stride else layer.kernel_size, dims)
        d = _per_axis(getattr(layer, "dilation", 1), dims)
        return k, s, _per_axis(layer.padding, dims), d

    def validate(self, layer, fold, *, channels, input_size):
        k, s, p, d = self._axes(layer, fold.dims)
        if getattr(layer, "return_indices", False):
            raise fold_error("layer", repr(layer), "returns indices, which index other positions on the folded map; use return_indices=False")
        if any(2 * pp > dd * (kk - 1) + 1 for kk, pp, dd in zip(k, p, d)):
            raise fold_error("layer", repr(layer), "padding must be at most half of the effective kernel size (torch refuses it)")
        if input_size is not None:
            out = tuple(_pool_out(n, *a, layer.ceil_mode) for n, *a in zip(input_size, k, s, p, d))
            if any(o < 1 for o in out):
                raise fold_error("input_size", input_size, f"gives {type(layer).__name__} an empty output {out}")

    def _reduces_groups(self, layer, fold) -> bool:
        k, s, p, d = self._axes(layer, fold.dims)
        folded = [a for a in range(fold.dims) if fold.r[a] > 1]
        return all(k[a] == s[a] and p[a] == 0 and fold.r[a] % k[a] == 0 and (d[a] == 1 or k[a] == 1) for a in folded) and any(k[a] > 1 for a in folded)

    def predict(self, layer, fold, *, channels, input_size=None):
        name, dims = type(layer).__name__, fold.dims
        k, s, p, d = self._axes(layer, dims)
        folded = [a for a in range(dims) if fold.r[a] > 1]
        if all(k[a] == 1 and s[a] == 1 and p[a] == 0 for a in folded):
            return holds(f"{name} acts only along axes with r = 1 (kernel 1, stride 1, no padding on folded axes {folded})", "RULE-6")
        literal = Verdict.NOT_EQUIVALENT
        if input_size is not None:
            orig = tuple(_pool_out(n, *a, layer.ceil_mode) * f for n, f, *a in zip(input_size, fold.r, k, s, p, d))
            lit = tuple(_pool_out(n * f, *a, layer.ceil_mode) for n, f, *a in zip(input_size, fold.r, k, s, p, d))
            literal = Verdict.SHAPES_DIFFER if orig != lit else literal
        if self._reduces_groups(layer, fold):
            kind = "max" if "Max" in name else ("sum, divided by divisor_override," if getattr(layer, "divisor_override", None) else "mean")
            ratio = tuple(fold.r[a] // k[a] if a in folded else 1 for a in range(dims))
            return Prediction(Outcome.HOLDS_IF, literal, reasons=(
                f"{name}(kernel={k}, stride={s}) on the folded map reduces whole sub-blocks of each fold block, never the original neighbourhood",),
                conditions=(f"it equals the {kind} over each group of {math.prod(k[a] for a in folded)} channels of the unfolded map, "
                            f"refolded with r/k={ratio}" + (" and pooled along the r = 1 axes" if len(folded) < dims else ""),),
                codes=("RULE-6",))
        dilated = [a for a in folded if d[a] > 1 and k[a] > 1]
        why = f"dilation {d} spreads its windows over other fold blocks" if dilated else "windows straddle fold blocks"
        return fails(literal, f"{name}(kernel={k}, stride={s}, padding={p}, dilation={d}): {why}: they mix pixels of different "
                      "positions and channels", "RULE-6")

    def conditioned(self, layer, fold, *, channels):
        if not self._reduces_groups(layer, fold):
            return super().conditioned(layer, fold, channels=channels)
        k, s, p, d = self._axes(layer, fold.dims)
        folded = [a for a in range(fold.dims) if fold.r[a] > 1]
        avg = isinstance(layer, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d))
        divisor = getattr(layer, "divisor_override", None)  # AvgPool1d has none
        kind = "max" if not avg else ("sum" if divisor else "mean")
        reduce = ChannelGroupReduce(fold, tuple(k[a] if a in folded else 1 for a in range(fold.dims)), kind)
        rest = [a for a in range(fold.dims) if a not in folded]
        if all(k[a] == 1 and s[a] == 1 and p[a] == 0 for a in rest) and not (avg and divisor):
            return reduce
        one = lambda values, fill: tuple(fill if a in folded else values[a] for a in range(fold.dims))
        args = dict(kernel_size=one(k, 1), stride=one(s, 1), padding=one(p, 0), ceil_mode=layer.ceil_mode)
        if avg:
            args.update(count_include_pad=layer.count_include_pad, **({"divisor_override": divisor} if divisor else {}))
        else:
            args.update(dilation=one(d, 1))
        return nn.Sequential(reduce, type(layer)(**args))

    def example(self, name, channels, fold, generator):
        dims, rmax = fold.dims, max(fold.r)
        avg = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims]
        mx = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
        return {
            "avgpool_r": lambda: avg(rmax, rmax), "maxpool_r": lambda: mx(rmax, rmax), "avgpool_3s1": lambda: avg(3, 1, 1),
            "maxpool_2s1": lambda: mx(2, 1), "maxpool_dilated": lambda: mx(2, 2, dilation=2),
            "maxpool_unfolded_axes": lambda: mx(tuple(2 if f == 1 else 1 for f in fold.r)),
        }[name]()


class UpsampleRule(FollowingRule):
    """Upsampling by ``s != 1`` along a folded axis interleaves copies inside fold blocks (RULE-7); along axes with
    ``r = 1`` only it holds."""

    examples = ("upsample2", "upsample_unfolded_axes")

    def validate(self, layer, fold, *, channels, input_size):
        for attr in ("scale_factor", "size"):
            value = getattr(layer, attr)
            if isinstance(value, (tuple, list)) and len(value) != fold.dims:
                raise fold_error("fold", fold.r, f"has {fold.dims} factor(s) but Upsample's {attr}={tuple(value)} has {len(value)}")

    def predict(self, layer, fold, *, channels, input_size=None):
        dims = fold.dims
        folded = [a for a in range(dims) if fold.r[a] > 1]
        if layer.size is not None:
            target = _per_axis(layer.size, dims)
            if input_size is not None and all(target[a] == input_size[a] for a in folded):
                return holds(f"Upsample(size={layer.size}) keeps the size of folded axes {folded}: it acts only along axes with r = 1", "RULE-7")
            return fails(Verdict.NOT_EQUIVALENT, f"Upsample(size={layer.size}) resamples folded axes {folded}: rows h*r+i go to other "
                          "rows than the fold of the resampled map (unless the size is unchanged there: give input_size)", "RULE-7")
        scales = tuple(float(x) for x in _per_axis(layer.scale_factor, dims))
        if all(scales[a] == 1.0 for a in folded):
            return holds(f"Upsample(scale={layer.scale_factor}) has scale 1 on folded axes {folded}: it acts only along axes with r = 1", "RULE-7")
        literal = Verdict.NOT_EQUIVALENT
        if input_size is not None:
            orig = tuple(math.floor(n * sc) * f for n, sc, f in zip(input_size, scales, fold.r))
            lit = tuple(math.floor(n * f * sc) for n, sc, f in zip(input_size, scales, fold.r))
            literal = Verdict.SHAPES_DIFFER if orig != lit else literal
        return fails(literal, f"Upsample({layer.mode}, scale={layer.scale_factor}) on the folded map interleaves copies inside fold "
                      "blocks: rows h*r+i go to (h*r+i)*s+t, not (h*s+t)*r+i", "RULE-7")

    def fold(self, layer, fold, *, channels):
        if layer.size is None:
            return copy.deepcopy(layer)
        size = tuple(n * f for n, f in zip(_per_axis(layer.size, fold.dims), fold.r))
        return nn.Upsample(size=size, mode=layer.mode, align_corners=layer.align_corners)

    def example(self, name, channels, fold, generator):
        if name == "upsample2":
            return nn.Upsample(scale_factor=2, mode="nearest")
        return nn.Upsample(scale_factor=tuple(2.0 if f == 1 else 1.0 for f in fold.r), mode="nearest")


register_following_rule(tuple(c for c, _ in PoolRule._TYPES), PoolRule())
register_following_rule(nn.Upsample, UpsampleRule())
