"""The equivalence phase diagram: predict every point of a grid, observe it exactly, and compare.

A grid is a set of *sections*, each varying a few axes over their value lists while the others stay at
their first value (or, with ``product=True``, the full Cartesian product of the conv axes — cluster-sized):

============== ==============================================================================
section        varies
============== ==============================================================================
theorem        dims x r x kernel x stride x padding x folded channels G
modes          dims x r x padding_mode x stride x padding
dilation       r x dilation x kernel x padding
groups         r x groups x order x G
orders         r x order x input_order x G
folded_stride  r x stride x folded_stride
following      r x order x following layer
space_to_depth r x map size x kernel x padding_mode (the unfold direction)
invalid        malformed requests (r < 1, non-integer r, unknown order, empty input)
============== ==============================================================================

Each point is observed with exact integer-valued float64 arithmetic (two trials, weights and inputs in
[-1024, 1024]; false "equivalent" probability <= 1e-6 per point) and its float32/bfloat16 errors are
measured on unit-normal data. The prediction (:mod:`foldconv.rules`) never sees a tensor.
"""
from __future__ import annotations

import itertools
import math
import zlib
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import einops
import torch
import torch.nn.functional as F
from torch import nn

from ...errors import FoldError
from ...fold import fold_weight, plan_fold, unfold_weight
from ...layout import depth_to_space, fold_channel_map, normalize_order, space_to_depth
from ...predict.rules import Literal, Outcome, Prediction, fold_following, predict_fold, predict_following, predict_space_to_depth
from ...specs import ConvSpec, FoldSpec

__all__ = ["parse_r", "Grid", "Point", "points", "run_point", "run_sweep", "FOLLOWING", "make_following", "observe_outcome"]

EXACT_RANGE = 1024
TRIALS = 2
_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def parse_r(value: Any) -> Any:
    """A fold factor from config text: ``2`` -> 2, ``"2x3"`` -> (2, 3).

    Example:
        >>> parse_r("4"), parse_r("2x1"), parse_r(3)
        (4, (2, 1), 3)
    """
    if isinstance(value, str):
        text = value.strip().lower()
        try:
            if "x" in text:
                return tuple(int(v) for v in text.split("x"))
            return int(text)
        except ValueError:
            raise FoldError(f"r={value!r}: must be an integer or per-axis factors like '2x3'", param="r", value=value) from None
    return value


@dataclass(frozen=True)
class Grid:
    """Axis values of a sweep; see the module docstring for how sections combine them."""

    name: str = "quick"
    dims: Tuple[int, ...] = (1, 2, 3)
    r: Tuple[Any, ...] = (1, 2, 3, 4)
    kernel: Tuple[int, ...] = (1, 2, 3)
    stride: Tuple[int, ...] = (1, 2)
    padding: Tuple[int, ...] = (0, 1)
    dilation: Tuple[int, ...] = (1, 2)
    groups: Tuple[int, ...] = (1, 2, 0)  # 0 = depthwise
    folded_channels: Tuple[int, ...] = (1, 2)
    out_channels: int = 2
    padding_modes: Tuple[str, ...] = ("zeros", "circular", "reflect", "replicate")
    orders: Tuple[str, ...] = ("crd", "dcr", "focus")
    input_orders: Tuple[str, ...] = ("same", "crd", "dcr")
    folded_strides: Tuple[int, ...] = (0, 1)  # 0 = r*S, the theorem's stride
    following: Tuple[str, ...] = ()
    s2d_sizes: Tuple[int, ...] = (8, 9)
    extra: int = 3  # spatial size = effective kernel + extra
    product: bool = False
    invalid: bool = True


@dataclass(frozen=True)
class Point:
    """One configuration of the sweep (all fields are plain data, written as CSV columns)."""

    section: str
    dims: int
    r: Any
    order: str = "crd"
    input_order: str = "same"
    in_channels: int = 1
    out_channels: int = 2
    kernel: int = 3
    stride: int = 1
    padding: int = 0
    dilation: int = 1
    groups: int = 1
    padding_mode: str = "zeros"
    folded_stride: int = 0
    size: int = 6
    following: str = "none"
    batch: int = 2

    def key(self) -> str:
        return "|".join(f"{k}={v}" for k, v in asdict(self).items())

    def seed(self) -> int:
        return zlib.crc32(self.key().encode())


# ----------------------------------------------------------------------------------------------------------
# Following layers, by name.


def _tied(values: torch.Tensor, fold: FoldSpec, channels: int) -> torch.Tensor:
    """Per-channel values made equal within each fold block (first channel's value wins)."""
    cmap = fold_channel_map(channels, fold.r, fold.order, fold.dims).flatten(1)
    out = values.clone()
    out[cmap] = values[cmap[:, :1]].expand_as(cmap)
    return out


def make_following(name: str, channels: int, fold: FoldSpec, gen: torch.Generator) -> nn.Module:
    """Build the following layer ``name`` for ``channels`` channels, with seeded non-trivial parameters.

    Example:
        >>> g = torch.Generator().manual_seed(0)
        >>> type(make_following("bn_eval_tied", 8, FoldSpec.make(2), g)).__name__
        'BatchNorm2d'
    """
    dims = fold.dims
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[dims]
    avg = {1: nn.AvgPool1d, 2: nn.AvgPool2d, 3: nn.AvgPool3d}[dims]
    mx = {1: nn.MaxPool1d, 2: nn.MaxPool2d, 3: nn.MaxPool3d}[dims]
    drop = {1: nn.Dropout1d, 2: nn.Dropout2d, 3: nn.Dropout3d}[dims]
    rmax = max(fold.r)
    if name in ("relu", "gelu", "leaky_relu", "sigmoid"):
        return {"relu": nn.ReLU(), "gelu": nn.GELU(), "leaky_relu": nn.LeakyReLU(0.125), "sigmoid": nn.Sigmoid()}[name]
    if name.startswith("bn_"):
        layer = bn(channels).double()
        with torch.no_grad():
            for t in (layer.weight, layer.bias, layer.running_mean):
                t.copy_(torch.randn(channels, generator=gen, dtype=torch.float64))
            layer.running_var.copy_(torch.rand(channels, generator=gen, dtype=torch.float64) + 0.5)
            if name == "bn_eval_tied":
                for t in (layer.weight, layer.bias, layer.running_mean, layer.running_var):
                    t.copy_(_tied(t, fold, channels))
        return layer.train(name == "bn_train")
    if name.startswith("groupnorm"):
        groups = channels // fold.block if name == "groupnorm_aligned" else channels
        layer = nn.GroupNorm(groups, channels).double()
        with torch.no_grad():
            layer.weight.copy_(_tied(torch.randn(channels, generator=gen, dtype=torch.float64), fold, channels))
            layer.bias.copy_(_tied(torch.randn(channels, generator=gen, dtype=torch.float64), fold, channels))
        return layer
    if name == "layernorm":
        return nn.LayerNorm((channels,) + (4,) * dims).double()  # shape fixed by the sweep's following size
    if name == "dropout_train":
        return drop(0.5).train()
    if name == "dropout_eval":
        return drop(0.5).eval()
    if name == "avgpool_r":
        return avg(rmax, rmax)
    if name == "maxpool_r":
        return mx(rmax, rmax)
    if name == "avgpool_3s1":
        return avg(3, 1, 1)
    if name == "maxpool_2s1":
        return mx(2, 1)
    if name == "upsample2":
        return nn.Upsample(scale_factor=2, mode="nearest")
    raise FoldError(f"following={name!r}: unknown layer name; choose from {FOLLOWING}", param="following", value=name)


FOLLOWING = (
    "relu", "gelu", "leaky_relu", "sigmoid", "bn_eval_tied", "bn_eval_untied", "bn_train", "groupnorm_aligned",
    "groupnorm_per_channel", "layernorm", "dropout_eval", "dropout_train", "avgpool_r", "maxpool_r", "avgpool_3s1",
    "maxpool_2s1", "upsample2",
)


# ----------------------------------------------------------------------------------------------------------
# Grid expansion.


def points(grid: Grid, r_override: Optional[Sequence[Any]] = None) -> List[Point]:
    """All points of a grid, deduplicated, in a deterministic order.

    Example:
        >>> len(points(Grid(dims=(2,), r=(2,), kernel=(3,), stride=(1,), padding=(0,), folded_channels=(1,),
        ...     padding_modes=("zeros",), orders=("crd",), input_orders=("same",), folded_strides=(0,),
        ...     dilation=(1,), groups=(1,), s2d_sizes=(), invalid=False))) >= 1
        True
    """
    rs = tuple(r_override) if r_override else grid.r
    out: Dict[str, Point] = {}

    def add(p: Point) -> None:
        out.setdefault(p.key(), p)

    def block(r: Any, dims: int) -> int:
        return math.prod(r) if isinstance(r, tuple) else int(r) ** dims

    def fits(r: Any, dims: int) -> bool:
        return not isinstance(r, tuple) or len(r) == dims

    def order_ok(order: str, dims: int) -> bool:
        # A grid may list orders of one dimensionality ("c rw rh"); they apply only to points of that one.
        try:
            normalize_order(order, dims)
            return True
        except FoldError:
            return False

    def conv_point(section: str, dims: int, r: Any, G: int, k: int, s: int, pad: int, d: int, g: int, mode: str, order: str, x_order: str, fs: int) -> None:
        if not fits(r, dims) or not order_ok(order, dims) or not (x_order == "same" or order_ok(x_order, dims)):
            return
        R = block(r, dims)
        cin = G * R * (g if g > 0 else 1)
        groups = g if g > 0 else cin  # depthwise
        cout = grid.out_channels * groups if groups > 1 else grid.out_channels
        size = d * (k - 1) + 1 + grid.extra
        if mode != "zeros":
            size = max(size, pad + 1)
        add(Point(section, dims, r, order, x_order, cin, cout, k, s, pad, d, groups, mode, fs, size))

    D = (2,) if 2 in grid.dims else grid.dims[:1]
    if grid.product:
        for dims, r, G, k, s, pad, d, g, mode, order, xo, fs in itertools.product(
            grid.dims, rs, grid.folded_channels, grid.kernel, grid.stride, grid.padding, grid.dilation, grid.groups,
            grid.padding_modes, grid.orders, grid.input_orders, grid.folded_strides,
        ):
            conv_point("product", dims, r, G, k, s, pad, d, g, mode, order, xo, fs)
    else:
        for dims, r, k, s, pad, G in itertools.product(grid.dims, rs, grid.kernel, grid.stride, grid.padding, grid.folded_channels):
            conv_point("theorem", dims, r, G, k, s, pad, 1, 1, "zeros", "crd", "same", 0)
        for dims, r, mode, s, pad in itertools.product(grid.dims, rs, grid.padding_modes, grid.stride, grid.padding):
            conv_point("modes", dims, r, 1, 3, s, pad, 1, 1, mode, "crd", "same", 0)
        for dims, r, d, k, pad in itertools.product(D, rs, grid.dilation, grid.kernel, grid.padding):
            conv_point("dilation", dims, r, 1, k, 1, pad, d, 1, "zeros", "crd", "same", 0)
        for dims, r, g, order, G in itertools.product(D, rs, grid.groups, grid.orders, grid.folded_channels):
            conv_point("groups", dims, r, G, 3, 1, 1, 1, g, "zeros", order, "same", 0)
        for dims, r, order, xo, G in itertools.product(D, rs, grid.orders, grid.input_orders, grid.folded_channels):
            conv_point("orders", dims, r, G, 3, 1, 1, 1, 1, "zeros", order, xo, 0)
        for dims, r, s, fs in itertools.product(D, rs, grid.stride, grid.folded_strides):
            conv_point("folded_stride", dims, r, 1, 3, s, 1, 1, 1, "zeros", "crd", "same", fs)
    for dims, r, order, name in itertools.product(D, rs, grid.orders, grid.following):
        if not fits(r, dims) or not order_ok(order, dims):
            continue
        R = block(r, dims)
        add(Point("following", dims, r, order, "same", 2 * R, 4 * R, 1, 1, 0, 1, 1, "zeros", 0, 4, name, 4))
    for dims, r, n, k, mode in itertools.product(D, rs, grid.s2d_sizes, grid.kernel, ("zeros", "circular")):
        if isinstance(r, tuple):
            continue  # the unfold-direction section uses square factors
        rr = r
        pad = rr
        if n + 2 * pad >= k * rr:  # a non-empty output
            add(Point("space_to_depth", dims, r, "crd", "same", 1, 2, k * rr, rr, pad, 1, 1, mode, 0, n))
    if grid.invalid:
        for r, order, size in ((0, "crd", 6), (-1, "crd", 6), (1.5, "crd", 6), (2, "c rh rh", 6), (2, "xyz", 6), (2, "crd", 0)):
            add(Point("invalid", 2, r, order, "same", 4, 2, 3, 1, 0, 1, 1, "zeros", 0, size))
        add(Point("invalid", 2, 2, "crd", "same", 6, 2, 3, 1, 0, 1, 1, "zeros", 0, 6))  # channels not divisible
    return list(out.values())


# ----------------------------------------------------------------------------------------------------------
# Observation.


def _conv(x, w, b, stride, padding, dilation, groups, mode, dims):
    if mode != "zeros" and any(p > 0 for p in padding):
        pads = [q for p in reversed(padding) for q in (p, p)]
        x = F.pad(x, pads, mode=mode)
        padding = (0,) * dims
    return _CONV[dims](x, w, b, stride, padding, dilation, groups)


def _ints(shape, gen):
    return torch.randint(-EXACT_RANGE, EXACT_RANGE + 1, shape, generator=gen).to(torch.float64)


def _same(a: Optional[torch.Tensor], b: Optional[torch.Tensor]) -> Literal:
    if a is None or b is None:
        return Literal.INVALID
    if a.shape != b.shape:
        return Literal.SHAPES_DIFFER
    return Literal.EQUIVALENT if torch.equal(a, b) else Literal.NOT_EQUIVALENT


def _combine(verdicts: Iterable[Literal]) -> Literal:
    verdicts = list(verdicts)
    for v in (Literal.INVALID, Literal.SHAPES_DIFFER, Literal.NOT_EQUIVALENT):
        if v in verdicts:
            return v
    return Literal.EQUIVALENT


def observe_outcome(literal: Literal, conditioned: Literal) -> Outcome:
    """Outcome from what was measured: the literal form, then the library's conditioned form."""
    if literal is Literal.EQUIVALENT:
        return Outcome.HOLDS
    if conditioned is Literal.EQUIVALENT:
        return Outcome.HOLDS_IF
    return Outcome.FAILS


def _fold_point(p: Point, dtypes: Sequence[torch.dtype]) -> Tuple[Prediction, Dict[str, Any]]:
    spec = ConvSpec.make(p.dims, p.in_channels, p.out_channels, p.kernel, p.stride, p.padding, p.dilation, p.groups, True, p.padding_mode)
    fold = FoldSpec.make(p.r, p.order, p.dims)
    x_order = fold.order if p.input_order == "same" else normalize_order(p.input_order, p.dims)
    fstride = (p.folded_stride,) * p.dims if p.folded_stride else None
    size = (p.size,) * p.dims
    pred = predict_fold(spec, fold, input_order=x_order, folded_stride=fstride, input_size=size)
    gen = torch.Generator().manual_seed(p.seed())
    stride_f = fstride or tuple(f * s for f, s in zip(fold.r, spec.stride))
    padding_f = tuple(f * q for f, q in zip(fold.r, spec.padding))
    try:
        plan = plan_fold(spec, fold)
    except FoldError:
        plan = None
    lit, cond = [], []
    for _ in range(TRIALS):
        w, b = _ints(spec.weight_shape, gen), _ints((spec.out_channels,), gen)
        x = _ints((p.batch, spec.in_channels) + size, gen)
        ref = _conv(x, w, b, spec.stride, spec.padding, spec.dilation, spec.groups, spec.padding_mode, p.dims)
        try:
            y = _conv(depth_to_space(x, fold.r, x_order, p.dims), depth_to_space(w, fold.r, fold.order, p.dims), b,
                      stride_f, padding_f, spec.dilation, spec.groups, spec.padding_mode, p.dims)
        except (RuntimeError, FoldError):
            y = None
        lit.append(_same(ref, y))
        if plan is not None:
            fw = fold_weight(w, fold.r, fold.order, spec.groups, spec.dilation)
            yc = _conv(depth_to_space(x, fold.r, fold.order, p.dims), fw.weight, b, plan.result.stride, plan.result.padding,
                       (1,) * p.dims, fw.groups, spec.padding_mode, p.dims)
            cond.append(_same(ref, yc))
        else:
            cond.append(Literal.INVALID)
    literal, conditioned = _combine(lit), _combine(cond)
    errors = {}
    if plan is not None:
        w = torch.randn(spec.weight_shape, generator=gen, dtype=torch.float64)
        b = torch.randn(spec.out_channels, generator=gen, dtype=torch.float64)
        x = torch.randn((p.batch, spec.in_channels) + size, generator=gen, dtype=torch.float64)
        ref = _conv(x, w, b, spec.stride, spec.padding, spec.dilation, spec.groups, spec.padding_mode, p.dims)
        fw = fold_weight(w, fold.r, fold.order, spec.groups, spec.dilation)
        scale = float(ref.abs().max())
        for dt in dtypes:
            yc = _conv(depth_to_space(x, fold.r, fold.order, p.dims).to(dt), fw.weight.to(dt), b.to(dt), plan.result.stride,
                       plan.result.padding, (1,) * p.dims, fw.groups, spec.padding_mode, p.dims)
            errors[f"rel_err_{str(dt).replace('torch.', '')}"] = float((yc.double() - ref).abs().max()) / scale
    return pred, {"observed_literal": literal, "observed_conditioned": conditioned, **errors}


def _group_reduce(y: torch.Tensor, fold: FoldSpec, k: Tuple[int, ...], kind: str) -> torch.Tensor:
    """Reduce each group of prod(k) channels of ``y`` that a k-pool on the folded map would see, refolded."""
    cmap = fold_channel_map(y.shape[1], fold.r, fold.order, fold.dims)  # (G, *r)
    gathered = y[:, cmap]  # (B, G, *r, *S)
    if fold.dims == 2:
        pattern = "b g (i a) (j c) h w -> b g (h i) (w j) (a c)"
        lengths = dict(a=k[0], c=k[1])
    elif fold.dims == 1:
        pattern = "b g (i a) w -> b g (w i) a"
        lengths = dict(a=k[0])
    else:
        pattern = "b g (i a) (j c) (l e) d h w -> b g (d i) (h j) (w l) (a c e)"
        lengths = dict(a=k[0], c=k[1], e=k[2])
    arranged = einops.rearrange(gathered, pattern, **lengths)
    return arranged.mean(-1) if kind == "mean" else arranged.amax(-1)


_BLOCKS = {
    1: "b g i w -> b g i w",
    2: "b g i j h w -> b g (i j) h w",
    3: "b g i j l d h w -> b g (i j l) d h w",
}


def _following_point(p: Point, dtypes: Sequence[torch.dtype]) -> Tuple[Prediction, Dict[str, Any]]:
    fold = FoldSpec.make(p.r, p.order, p.dims)
    gen = torch.Generator().manual_seed(p.seed())
    layer = make_following(p.following, p.out_channels, fold, gen)
    size = (p.size,) * p.dims
    pred = predict_following(layer, fold, p.out_channels, size)
    y = torch.randn((p.batch, p.out_channels) + size, generator=gen, dtype=torch.float64)
    literal, conditioned = Literal.INVALID, Literal.INVALID
    if p.following == "dropout_train":
        # The folded Dropout zeroes whole folded channels; the original's mask, folded, must be block-constant
        # for any folded dropout to produce it. With 8+ blocks per sample a mixed block appears w.p. ~1.
        torch.manual_seed(p.seed())
        ones = torch.ones((p.batch * 4, p.out_channels) + size, dtype=torch.float64)
        mask = (layer(ones) != 0).double()
        cmap = fold_channel_map(p.out_channels, fold.r, fold.order, p.dims)
        blocks = einops.rearrange(mask[:, cmap], _BLOCKS[p.dims])  # (B, G, R, *S)
        uniform = bool((blocks == blocks[:, :, :1]).all())
        literal = Literal.EQUIVALENT if uniform else Literal.NOT_EQUIVALENT
    else:
        try:
            folded_layer = fold_following(layer, fold, p.out_channels)
            with torch.no_grad():
                lhs = folded_layer(depth_to_space(y, fold.r, fold.order, p.dims))
                rhs = depth_to_space(layer(y), fold.r, fold.order, p.dims)
            if lhs.shape != rhs.shape:
                literal = Literal.SHAPES_DIFFER
            else:
                literal = Literal.EQUIVALENT if torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12) else Literal.NOT_EQUIVALENT
        except (RuntimeError, FoldError, ValueError):
            literal = Literal.INVALID
        if isinstance(layer, (nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d)):
            k = layer.kernel_size if isinstance(layer.kernel_size, tuple) else (layer.kernel_size,) * p.dims
            s = layer.stride if isinstance(layer.stride, tuple) else (layer.stride,) * p.dims
            if k == s and all(f % kk == 0 for f, kk in zip(fold.r, k)) and not any(layer.padding if isinstance(layer.padding, tuple) else (layer.padding,)):
                kind = "mean" if "Avg" in type(layer).__name__ else "max"
                with torch.no_grad():
                    lhs = layer(depth_to_space(y, fold.r, fold.order, p.dims))
                    rhs = _group_reduce(y, fold, k, kind)
                conditioned = Literal.EQUIVALENT if lhs.shape == rhs.shape and torch.allclose(lhs, rhs, rtol=1e-12, atol=1e-12) else Literal.NOT_EQUIVALENT
    return pred, {"observed_literal": literal, "observed_conditioned": conditioned}


def _s2d_point(p: Point) -> Tuple[Prediction, Dict[str, Any]]:
    big = ConvSpec.make(p.dims, 1, p.out_channels, p.kernel, p.stride, p.padding, 1, 1, True, p.padding_mode)
    size = (p.size,) * p.dims
    sp = predict_space_to_depth(big, p.r, size)
    fold = FoldSpec.make(p.r, "crd", p.dims)
    literal_pred = Literal.EQUIVALENT if sp.divisible else Literal.INVALID
    conditions = []
    if not sp.divisible:
        conditions.append(f"crop to {sp.crop_to}: {'exact' if sp.crop_exact else 'not exact'}")
        conditions.append(f"pad to {sp.pad_to} and keep {sp.outputs} outputs: {'exact' if sp.pad_exact else 'not exact'}")
    pred = Prediction(sp.outcome, literal_pred, None, tuple(conditions), sp.reasons, ("RULE-8",))
    gen = torch.Generator().manual_seed(p.seed())
    w, b = _ints(big.weight_shape, gen), _ints((big.out_channels,), gen)
    x = _ints((p.batch, 1) + size, gen)
    ref = _conv(x, w, b, big.stride, big.padding, big.dilation, 1, big.padding_mode, p.dims)
    small = unfold_weight(w, fold.r, "crd")
    s_stride = tuple(s // f for s, f in zip(big.stride, fold.r))
    s_pad = tuple(q // f for q, f in zip(big.padding, fold.r))

    def unfolded(xx):
        return _conv(space_to_depth(xx, fold.r, "crd", p.dims), small.weight, b, s_stride, s_pad, (1,) * p.dims, 1, big.padding_mode, p.dims)

    try:
        literal = _same(ref, unfolded(x))
    except FoldError:
        literal = Literal.INVALID
    crop = x[(Ellipsis,) + tuple(slice(0, c) for c in sp.crop_to)]
    crop_ok = _same(ref, unfolded(crop)) is Literal.EQUIVALENT if all(c > 0 for c in sp.crop_to) else False
    padded = F.pad(x, [q for n, t in reversed(list(zip(size, sp.pad_to))) for q in (0, t - n)])
    pad_out = unfolded(padded)
    pad_ok = _same(ref, pad_out[(Ellipsis,) + tuple(slice(0, o) for o in sp.outputs)]) is Literal.EQUIVALENT
    conditioned = Literal.EQUIVALENT if (crop_ok or pad_ok) else Literal.NOT_EQUIVALENT
    agree_detail = (crop_ok == sp.crop_exact) and (pad_ok == sp.pad_exact)
    return pred, {"observed_literal": literal, "observed_conditioned": conditioned, "crop_exact": crop_ok, "pad_exact": pad_ok, "detail_agrees": agree_detail}


def _invalid_point(p: Point) -> Tuple[Prediction, Dict[str, Any]]:
    spec = ConvSpec.make(p.dims, p.in_channels, p.out_channels, p.kernel, p.stride, p.padding)
    size = (p.size,) * p.dims
    pred = predict_fold(spec, p.r, p.order, input_size=size)
    try:
        conv = spec.to_module(dtype=torch.float64)
        from ...check.equivalence import check_fold

        report = check_fold(conv, p.r, p.order, input_size=size, trials=1, dtypes=())
        literal = Literal(report.verdict.value)  # Verdict's values are a subset of Literal's
        observed = {"observed_literal": literal, "observed_conditioned": literal}
    except FoldError:
        observed = {"observed_literal": Literal.INVALID, "observed_conditioned": Literal.INVALID}
    return pred, observed


def run_point(p: Point, dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16)) -> Dict[str, Any]:
    """Predict and observe one point; returns one CSV row (inputs, prediction, observation, agreement).

    Example:
        >>> row = run_point(Point("theorem", 2, 2, in_channels=4, kernel=3, padding=1, size=5))
        >>> row["predicted"], row["observed"], row["agree"]
        ('holds', 'holds', True)
    """
    row: Dict[str, Any] = {k: (str(v) if isinstance(v, tuple) else v) for k, v in asdict(p).items()}
    if p.section == "invalid":
        pred, obs = _invalid_point(p)
    elif p.section == "following":
        pred, obs = _following_point(p, dtypes)
    elif p.section == "space_to_depth":
        pred, obs = _s2d_point(p)
    else:
        pred, obs = _fold_point(p, dtypes)
    if pred.outcome is Outcome.INVALID:
        observed = Outcome.INVALID if obs["observed_literal"] is Literal.INVALID else observe_outcome(obs["observed_literal"], obs["observed_conditioned"])
    else:
        observed = observe_outcome(obs["observed_literal"], obs["observed_conditioned"])
    agree = observed is pred.outcome and obs["observed_literal"] is pred.literal and obs.get("detail_agrees", True)
    row.update(
        predicted=pred.outcome.value,
        observed=observed.value,
        predicted_literal=pred.literal.value,
        observed_literal=obs["observed_literal"].value,
        observed_conditioned=obs["observed_conditioned"].value,
        agree=bool(agree),
        rule=pred.code,
        reason=pred.reason,
        conditions="; ".join(pred.conditions),
        folded=pred.folded.describe() if pred.folded is not None else "",
        density=pred.density,
    )
    for key in ("rel_err_float32", "rel_err_bfloat16", "rel_err_float16"):
        if key in obs:
            row[key] = obs[key]
    for key in ("crop_exact", "pad_exact"):
        if key in obs:
            row[key] = obs[key]
    return row


def run_sweep(
    pts: Sequence[Point],
    dtypes: Sequence[torch.dtype] = (torch.float32, torch.bfloat16),
    progress: Optional[Callable[[Iterable], Iterable]] = None,
) -> List[Dict[str, Any]]:
    """Run every point (single-threaded torch for small, deterministic convs); ``progress`` wraps the loop.

    Example:
        >>> rows = run_sweep([Point("theorem", 1, 2, in_channels=2, size=5)])
        >>> rows[0]["agree"]
        True
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        iterator = progress(pts) if progress else pts
        return [run_point(p, dtypes) for p in iterator]
    finally:
        torch.set_num_threads(threads)
