"""The built-in following-layer rules for pointwise, normalisation and dropout layers (RULE-1..5).

Registered in :mod:`foldconv.predict.following` on import; pooling and upsampling are in
:mod:`foldconv.predict.resample`.

Each rule states when ``fold_following(L)(depth_to_space(y)) == depth_to_space(L(y))``:

- elementwise layers, PReLU with one slope, plain Dropout (RULE-1, RULE-5): always;
- per-channel parameters (eval BatchNorm, affine GroupNorm, per-channel PReLU; RULE-1, RULE-2, RULE-4): when
  they are equal within every fold block; statistics (train BatchNorm, GroupNorm, LayerNorm; RULE-3, RULE-4):
  when every normalised set of elements is a union of fold blocks;
- channel-wise dropout (RULE-5): only in eval mode.

Example:
    >>> from foldconv.predict import following_rule
    >>> type(following_rule(nn.BatchNorm3d(4))).__name__
    'BatchNormRule'
"""
from __future__ import annotations

import copy
from typing import Optional, Sequence, Tuple

import torch
from torch import nn

from ..check import Verdict
from ..errors import fold_error
from ..fold import groups_aligned
from ..layout import depth_to_space, fold_channel_map
from ..specs import FoldSpec
from ..tracing import module_device, module_dtype
from .following import FollowingRule, register_following_rule
from .outcome import fails, holds

__all__ = ["ElementwiseRule", "PReLURule", "GLURule", "BatchNormRule", "GroupNormRule", "LayerNormRule", "DropoutRule"]

Size = Optional[Tuple[int, ...]]


def _first_channels(channels: int, fold: FoldSpec) -> torch.Tensor:
    """The first original channel of every fold block (the one whose parameters the folded layer takes)."""
    return fold_channel_map(channels, fold.r, fold.order, dims=fold.dims).flatten(1)[:, 0]


def _untied(values: Sequence[Optional[torch.Tensor]], fold: FoldSpec, channels: int) -> Tuple[int, ...]:
    """Folded channels whose fold block holds unequal per-channel values (in any of ``values``)."""
    cmap = fold_channel_map(channels, fold.r, fold.order, dims=fold.dims).flatten(1)
    differ = torch.zeros(cmap.shape[0], dtype=torch.bool)
    for v in values:
        if v is not None:
            blocks = v.detach()[cmap]
            differ |= (blocks != blocks[:, :1]).any(dim=1).cpu()
    return tuple(int(i) for i in torch.nonzero(differ).flatten())


def _tied(values: torch.Tensor, fold: FoldSpec, channels: int) -> torch.Tensor:
    """Per-channel values made equal within each fold block (the first channel's value wins)."""
    cmap = fold_channel_map(channels, fold.r, fold.order, dims=fold.dims).flatten(1)
    out = values.clone()
    out[cmap] = values[cmap[:, :1]].expand_as(cmap)
    return out


def _randn(channels: int, gen: torch.Generator) -> torch.Tensor:
    return torch.randn(channels, generator=gen, dtype=torch.float64)


def _check_features(layer: nn.Module, attr: str, channels: int) -> None:
    if getattr(layer, attr) != channels:
        raise fold_error("channels", channels, f"must equal {type(layer).__name__}'s {attr}={getattr(layer, attr)}")


# ----------------------------------------------------------------------------------------------------------
# Elementwise layers and per-channel parameters.


class ElementwiseRule(FollowingRule):
    """Elementwise layers commute with any permutation of elements (RULE-1)."""

    examples = ("relu", "gelu", "leaky_relu", "sigmoid", "hardshrink", "softshrink", "tanhshrink", "logsigmoid",
                "softsign", "threshold", "rrelu_eval")

    def predict(self, layer, fold, *, channels, input_size=None):
        extra = ""
        if isinstance(layer, nn.RReLU) and layer.training:
            extra = " (in train mode its slopes are drawn independently per element: the same law on both maps)"
        return holds(f"{type(layer).__name__} is elementwise: it commutes with any permutation of elements{extra}", "RULE-1")

    def example(self, name, channels, fold, generator):
        return {
            "relu": nn.ReLU, "gelu": nn.GELU, "leaky_relu": lambda: nn.LeakyReLU(0.125), "sigmoid": nn.Sigmoid,
            "hardshrink": lambda: nn.Hardshrink(0.5), "softshrink": lambda: nn.Softshrink(0.5), "tanhshrink": nn.Tanhshrink,
            "logsigmoid": nn.LogSigmoid, "softsign": nn.Softsign, "threshold": lambda: nn.Threshold(0.25, -2.0),
            "rrelu_eval": lambda: nn.RReLU().eval(),
        }[name]()


class PReLURule(FollowingRule):
    """PReLU: one slope is elementwise; per-channel slopes must be equal within every fold block (RULE-1)."""

    examples = ("prelu_1", "prelu_tied", "prelu_untied")

    def validate(self, layer, fold, *, channels, input_size):
        if layer.num_parameters not in (1, channels):
            raise fold_error("channels", channels, f"must equal PReLU's num_parameters={layer.num_parameters} (or use one slope)")

    def predict(self, layer, fold, *, channels, input_size=None):
        if layer.num_parameters == 1:
            return holds("PReLU with one slope is elementwise", "RULE-1")
        differing = _untied([layer.weight], fold, channels)
        if differing:
            return fails(Verdict.NOT_EQUIVALENT, f"PReLU slopes differ within the fold blocks of folded channels {list(differing)}", "RULE-1")
        return holds("per-channel PReLU slopes are equal within every fold block: one slope per folded channel", "RULE-1")

    def fold(self, layer, fold, *, channels):
        if layer.num_parameters == 1:
            return copy.deepcopy(layer)
        new = nn.PReLU(channels // fold.block).to(dtype=module_dtype(layer), device=layer.weight.device)
        with torch.no_grad():
            new.weight.copy_(layer.weight[_first_channels(channels, fold)])
        return new

    def example(self, name, channels, fold, generator):
        if name == "prelu_1":
            return nn.PReLU(1).double()
        layer = nn.PReLU(channels).double()
        with torch.no_grad():
            w = _randn(channels, generator)
            layer.weight.copy_(_tied(w, fold, channels) if name == "prelu_tied" else w)
        return layer


class BatchNormRule(FollowingRule):
    """Eval BatchNorm is a per-channel affine map (RULE-2); batch statistics pool a block's channels (RULE-3)."""

    examples = ("bn_eval_tied", "bn_eval_untied", "bn_train", "bn_eval_batch_stats")

    _DIMS = ((nn.BatchNorm1d, 1), (nn.BatchNorm2d, 2), (nn.BatchNorm3d, 3))

    def dims(self, layer):
        return next(d for c, d in self._DIMS if isinstance(layer, c))

    def validate(self, layer, fold, *, channels, input_size):
        _check_features(layer, "num_features", channels)

    def predict(self, layer, fold, *, channels, input_size=None):
        name, R = type(layer).__name__, fold.block
        if layer.training or layer.running_mean is None:
            why = "in train mode" if layer.training else "with track_running_stats=False"
            return fails(Verdict.NOT_EQUIVALENT, f"{name} {why} normalises each folded channel with batch statistics pooled "
                          f"over its {R} source channels", "RULE-3")
        differing = _untied([layer.running_mean, layer.running_var, layer.weight, layer.bias], fold, channels)
        if differing:
            return fails(Verdict.NOT_EQUIVALENT, "BatchNorm statistics or affine parameters differ within the fold blocks "
                          f"of folded channels {list(differing)}", "RULE-2")
        return holds("eval-mode BatchNorm with equal parameters within every fold block is a per-folded-channel affine map", "RULE-2")

    def fold(self, layer, fold, *, channels):
        new = type(layer)(channels // fold.block, eps=layer.eps, momentum=layer.momentum, affine=layer.affine,
                          track_running_stats=layer.running_mean is not None)
        new = new.to(dtype=module_dtype(layer), device=module_device(layer))
        first = _first_channels(channels, fold)
        with torch.no_grad():
            for attr in ("running_mean", "running_var", "weight", "bias"):
                if getattr(layer, attr) is not None:
                    getattr(new, attr).copy_(getattr(layer, attr)[first])
        return new.train(layer.training)

    def example(self, name, channels, fold, generator):
        bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[fold.dims]
        if name == "bn_eval_batch_stats":
            return bn(channels, track_running_stats=False).double().eval()
        layer = bn(channels).double()
        with torch.no_grad():
            for t in (layer.weight, layer.bias, layer.running_mean):
                t.copy_(_randn(channels, generator))
            layer.running_var.copy_(torch.rand(channels, generator=generator, dtype=torch.float64) + 0.5)
            if name == "bn_eval_tied":
                for t in (layer.weight, layer.bias, layer.running_mean, layer.running_var):
                    t.copy_(_tied(t, fold, channels))
        return layer.train(name == "bn_train")


class GroupNormRule(FollowingRule):
    """GroupNorm holds iff every group is a union of fold blocks with tied affine parameters (RULE-4)."""

    examples = ("groupnorm_aligned", "groupnorm_per_channel")

    def validate(self, layer, fold, *, channels, input_size):
        _check_features(layer, "num_channels", channels)

    def predict(self, layer, fold, *, channels, input_size=None):
        g, R = layer.num_groups, fold.block
        if (channels // R) % g or not groups_aligned(channels, g, fold):
            literal = Verdict.INVALID if (channels // R) % g else Verdict.NOT_EQUIVALENT
            return fails(literal, f"GroupNorm groups ({g} of {channels // g} channels) are not unions of fold blocks in order "
                          f"{fold.order_string!r}: statistics are pooled over other elements", "RULE-4")
        differing = _untied([layer.weight, layer.bias], fold, channels) if layer.affine else ()
        if differing:
            return fails(Verdict.NOT_EQUIVALENT, f"GroupNorm affine parameters differ within fold blocks of folded channels {list(differing)}", "RULE-4")
        return holds("each GroupNorm group is a union of fold blocks: same elements, same statistics", "RULE-4")

    def fold(self, layer, fold, *, channels):
        folded = channels // fold.block
        if folded % layer.num_groups:
            raise fold_error("layer", f"GroupNorm({layer.num_groups}, {channels})",
                             f"cannot run on the {folded} folded channels (not divisible by num_groups)")
        new = nn.GroupNorm(layer.num_groups, folded, eps=layer.eps, affine=layer.affine).to(dtype=module_dtype(layer), device=module_device(layer))
        if layer.affine:
            first = _first_channels(channels, fold)
            with torch.no_grad():
                new.weight.copy_(layer.weight[first])
                new.bias.copy_(layer.bias[first])
        return new

    def example(self, name, channels, fold, generator):
        groups = channels // fold.block if name == "groupnorm_aligned" else channels
        layer = nn.GroupNorm(groups, channels).double()
        with torch.no_grad():
            layer.weight.copy_(_tied(_randn(channels, generator), fold, channels))
            layer.bias.copy_(_tied(_randn(channels, generator), fold, channels))
        return layer


class LayerNormRule(FollowingRule):
    """LayerNorm over ``(C, *spatial)`` (and the batch axis) holds with folded affine parameters; over trailing
    spatial axes only it holds iff those axes have ``r = 1`` (RULE-4)."""

    examples = ("layernorm", "layernorm_no_bias", "layernorm_last_axis")

    def validate(self, layer, fold, *, channels, input_size):
        shape, dims = tuple(layer.normalized_shape), fold.dims
        if len(shape) > dims + 2:
            raise fold_error("layer", f"LayerNorm({shape})", f"normalises more axes than a (N, C, *spatial) map with {dims} spatial dims has")
        if len(shape) >= dims + 1 and shape[-dims - 1] != channels:
            raise fold_error("channels", channels, f"must equal the channel entry {shape[-dims - 1]} of LayerNorm's normalized_shape {shape}")
        covered = shape[-dims:] if len(shape) >= dims else shape
        if input_size is not None and tuple(input_size[len(input_size) - len(covered):]) != covered:
            raise fold_error("input_size", input_size, f"does not end with LayerNorm's normalized_shape {shape}")

    def predict(self, layer, fold, *, channels, input_size=None):
        shape, dims = tuple(layer.normalized_shape), fold.dims
        if len(shape) >= dims + 1:
            return holds("LayerNorm over (C, *spatial) sees the same elements in any layout; its affine parameters are folded too", "RULE-4")
        folded_axes = [a for a in range(dims - len(shape), dims) if fold.r[a] > 1]
        if not folded_axes:
            return holds(f"LayerNorm over {shape} normalises along axes the fold does not touch (r = 1)", "RULE-4")
        return fails(Verdict.INVALID, f"LayerNorm over {shape} excludes the channel axis and folded axes {folded_axes}: the folded "
                      "map's sizes no longer match, and its rows mix channels", "RULE-4")

    def fold(self, layer, fold, *, channels):
        shape, dims = tuple(layer.normalized_shape), fold.dims
        if len(shape) < dims + 1:
            return copy.deepcopy(layer)
        lead, spatial = shape[: -dims - 1], shape[-dims:]
        folded_shape = lead + (channels // fold.block,) + tuple(n * f for n, f in zip(spatial, fold.r))
        new = nn.LayerNorm(folded_shape, eps=layer.eps, elementwise_affine=layer.elementwise_affine, bias=layer.bias is not None)
        new = new.to(dtype=module_dtype(layer), device=module_device(layer))
        with torch.no_grad():
            for attr in ("weight", "bias"):
                if getattr(layer, attr) is not None:
                    getattr(new, attr).copy_(depth_to_space(getattr(layer, attr), fold.r, fold.order, dims=dims))
        return new

    def example(self, name, channels, fold, generator):
        size = (4,) * fold.dims  # the sweep's following-layer map size
        shape = (4,) if name == "layernorm_last_axis" else (channels,) + size
        layer = nn.LayerNorm(shape, bias=name != "layernorm_no_bias").double()
        with torch.no_grad():
            layer.weight.copy_(torch.randn(shape, generator=generator, dtype=torch.float64))
        return layer


class DropoutRule(FollowingRule):
    """Dropout: eval is the identity; element-wise masks commute (in law); channel-wise masks do not (RULE-5)."""

    examples = ("dropout_eval", "dropout_train", "dropout_plain_eval")
    _DIMS = ((nn.Dropout1d, 1), (nn.Dropout2d, 2), (nn.Dropout3d, 3))

    def dims(self, layer):
        return next((d for c, d in self._DIMS if isinstance(layer, c)), None)

    def predict(self, layer, fold, *, channels, input_size=None):
        name = type(layer).__name__
        if not layer.training or layer.p in (0, 1):
            return holds(f"{name} in eval mode (or with p in {{0, 1}}) is deterministic and elementwise", "RULE-5")
        if isinstance(layer, (nn.Dropout, nn.AlphaDropout)):
            return holds(f"{name} drops every element independently: the fold of the original's mask is a mask the folded "
                          f"{name} draws with the same probability (equal in law; samples depend on the RNG)", "RULE-5")
        return fails(Verdict.NOT_EQUIVALENT, f"{name} on the folded map drops whole fold blocks ({fold.block} source channels at "
                      "once); on the original it drops channels independently", "RULE-5")

    def example(self, name, channels, fold, generator):
        if name == "dropout_plain_eval":
            return nn.Dropout(0.5).eval()
        drop = {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}[fold.dims](0.5)
        return drop.train(name == "dropout_train")


class GLURule(FollowingRule):
    """GLU multiplies one half of an axis by the sigmoid of the other (RULE-1): along the batch or a spatial axis the
    halves stay paired under the fold; along channels, folded channel ``f + G/2`` must hold channel ``c + C/2`` for
    every channel ``c`` of folded channel ``f``, i.e. ``G`` even and a channel-major order."""

    examples = ("glu_channels",)

    def validate(self, layer, fold, *, channels, input_size):
        axis = layer.dim % (fold.dims + 2)
        size = None if axis == 0 else (channels if axis == 1 else (input_size[axis - 2] if input_size is not None else None))
        if size is not None and size % 2:
            raise fold_error("channels" if axis == 1 else "input_size", size if axis == 1 else input_size,
                             f"must be even along GLU's dim={layer.dim} (it halves that axis)")

    def predict(self, layer, fold, *, channels, input_size=None):
        axis = layer.dim % (fold.dims + 2)
        if axis != 1:
            return holds(f"GLU(dim={layer.dim}) pairs the two halves of an axis the fold keeps in step", "RULE-1")
        G = channels // fold.block
        if G % 2:
            return fails(Verdict.INVALID, f"GLU over channels needs an even number of folded channels, not {G}", "RULE-1")
        if not groups_aligned(channels, 2, fold):
            return fails(Verdict.NOT_EQUIVALENT, f"GLU over channels in order {fold.order_string!r}: the folded halves pair "
                          "other channels than c and c + C/2", "RULE-1")
        return holds("GLU over channels: each folded half holds the fold blocks of one original half, in step", "RULE-1")

    def example(self, name, channels, fold, generator):
        return nn.GLU(dim=1)


_ELEMENTWISE = (
    nn.ReLU, nn.ReLU6, nn.GELU, nn.SiLU, nn.Sigmoid, nn.Tanh, nn.LeakyReLU, nn.ELU, nn.Hardswish, nn.Hardsigmoid, nn.Mish,
    nn.Softplus, nn.Identity, nn.Hardtanh, nn.CELU, nn.SELU, nn.Hardshrink, nn.Softshrink, nn.Tanhshrink, nn.LogSigmoid,
    nn.Softsign, nn.Threshold, nn.RReLU,
)
register_following_rule(_ELEMENTWISE, ElementwiseRule())
register_following_rule(nn.PReLU, PReLURule())
register_following_rule(nn.GLU, GLURule())
register_following_rule((nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d), BatchNormRule())
register_following_rule(nn.GroupNorm, GroupNormRule())
register_following_rule(nn.LayerNorm, LayerNormRule())
register_following_rule((nn.Dropout, nn.AlphaDropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.FeatureAlphaDropout), DropoutRule())
