"""check_fold for a plain ``nn.ConvNd``: a structural proof, confirmed by all trials in one grouped conv per side.

Why the fold of a plain conv needs no capture: :func:`foldconv.fold.fold_conv` returns a plain ``nn.ConvNd`` of
the spec :func:`foldconv.fold.plan_fold` computes (kernel ``r*K``, stride ``r*S``, padding ``r*P``) whose weight is
:func:`foldconv.fold.fold_weight` of the original — a fixed placement of each original weight into the folded
kernel, zeros elsewhere — and its input is ``depth_to_space(x)``, a fixed permutation of ``x``. The two maps are
the same bijection between (input pixel, kernel tap) pairs of the original and of the folded conv, so every
output of the folded conv is the original's sum of the same products in another order (paper_notes/fold.md §1):
a polynomial identity of degree 2 in (weights, input) that holds for all weights. The trials confirm that the
code implements it for this configuration: ``trials`` independent integer draws of input, weights and bias,
evaluated exactly in float64 (the analytic bound ``fan_in * R**2 + R`` on every partial sum is checked first),
and compared with ``torch.equal``; a wrong placement would be a non-zero polynomial of degree 2 that the draws
miss with probability at most ``(2 / (2R + 1))**trials``. All trials and the unit-normal sample with the given
weights run as blocks of one grouped conv per side, and the weights are folded once for all of them.

The route applies only when the conv's forward is torch's own (exact class ``nn.Conv1d/2d/3d``, no hooks, no
instance override, plain ``nn.Parameter`` weights): anything else goes through the captured check.

Example:
    >>> import torch
    >>> from foldconv.specs import ConvSpec, FoldSpec
    >>> from foldconv.check.options import check_options
    >>> conv = torch.nn.Conv2d(8, 4, 3)
    >>> plain_conv(conv), plain_conv(torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv2d(8, 4, 3)))
    (True, False)
    >>> spec = ConvSpec.from_module(conv)
    >>> check_plain_fold(conv, spec, FoldSpec.make(2, "crd", 2), (2, 8, 6, 6), check_options(dtypes=())).summary()
    'equivalent (exact), P(false equivalent) <= 9.3e-10'
"""
from __future__ import annotations

import math
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import FoldError, first_line, fold_error
from ..fold import fold_weight, plan_fold
from ..layout import depth_to_space
from ..specs import ConvSpec, FoldSpec
from .exact import EXACT_LIMIT, false_equivalent_bound, first_mismatch, integer_valued, max_abs, relative_error
from .options import CheckOptions, dtype_name, no_tf32
from .report import EquivalenceReport, ErrorStats
from .verdict import Verdict

__all__ = ["plain_conv", "check_plain_fold"]

_PLAIN = (nn.Conv1d, nn.Conv2d, nn.Conv3d)
_CONV: Dict[int, Callable[..., torch.Tensor]] = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}
#: The degree of a conv's output in (input, weights): products of one weight and one input, plus the bias.
DEGREE = 2


def plain_conv(conv: nn.Module) -> bool:
    """Is ``conv`` an ``nn.Conv1d/2d/3d`` whose call is torch's own forward, with plain parameter weights?

    Subclasses (timm's ``StdConv2d``), parametrisations (``weight_norm``), forward hooks (the module's or
    global ones) and an instance ``forward`` all change what the call computes, so they are not plain.

    Example:
        >>> conv = torch.nn.Conv1d(2, 2, 3)
        >>> before = plain_conv(conv)
        >>> _ = conv.register_forward_hook(lambda m, i, o: o * 2)
        >>> before, plain_conv(conv)
        (True, False)
    """
    if type(conv) not in _PLAIN or conv._forward_hooks or conv._forward_pre_hooks:
        return False
    module_globals = nn.modules.module
    if getattr(module_globals, "_global_forward_hooks", None) or getattr(module_globals, "_global_forward_pre_hooks", None):
        return False
    if "forward" in vars(conv) or "_conv_forward" in vars(conv):
        return False
    tensors = [conv.weight] + ([] if conv.bias is None else [conv.bias])
    return all(type(t) is nn.Parameter and t.is_floating_point() for t in tensors)


def _conv(spec: ConvSpec, x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], blocks: int) -> torch.Tensor:
    """``spec``'s convolution, as ``nn.ConvNd.forward`` computes it, on ``blocks`` independent stacked copies."""
    padding = spec.padding
    if spec.padding_mode != "zeros":
        pad = tuple(p for size in reversed(spec.padding) for p in (size, size))
        x = F.pad(x, pad, mode=spec.padding_mode)
        padding = (0,) * spec.dims
    return _CONV[spec.dims](x, weight, bias, spec.stride, padding, spec.dilation, spec.groups * blocks)


def _stack_channels(t: torch.Tensor) -> torch.Tensor:
    """(blocks, B, C, *S) -> (B, blocks*C, *S): each block becomes a group of channels."""
    return t.transpose(0, 1).reshape((t.shape[1], t.shape[0] * t.shape[2]) + tuple(t.shape[3:]))


def _fold_rows(weights: torch.Tensor, spec: ConvSpec, fold: FoldSpec) -> Tuple[torch.Tensor, int]:
    """Fold (blocks, O, C/g, *K) weights at once; returns the (blocks*O, C'/g', *rK) weight and ``g'``.

    Rows are interleaved so that each of the ``g`` groups holds its rows of every block (the fold places a row
    by its group alone), folded once, and put back block-major.
    """
    blocks, out = weights.shape[0], spec.out_channels
    g = spec.groups
    rows = weights.reshape((blocks, g, out // g) + tuple(weights.shape[2:])).transpose(0, 1).reshape((blocks * out,) + tuple(weights.shape[2:]))
    folded = fold_weight(rows, fold.r, fold.order, groups=g, dilation=spec.dilation)
    w = folded.weight
    w = w.reshape((g, blocks, out // g) + tuple(w.shape[1:])).transpose(0, 1).reshape((blocks * out,) + tuple(w.shape[1:]))
    return w.contiguous(), folded.groups


def check_plain_fold(conv: nn.Module, spec: ConvSpec, fold: FoldSpec, input_shape: Tuple[int, ...], options: CheckOptions) -> Optional[EquivalenceReport]:
    """The fold of a plain conv (:func:`plain_conv`) checked for all weights; None when this route cannot decide.

    None (the caller then runs the captured check) when the integer sums could leave float64's exact integers
    for this ``exact_range``, or the convolution did not compute integers. ``input_shape`` is the full shape of
    the original's input; FoldError ``input_size`` when the original cannot run on it.
    """
    plan = plan_fold(spec, fold)
    folded = plan.result
    trials, bound = options.trials, options.exact_range
    fan_in = spec.in_channels // spec.groups * math.prod(spec.kernel_size)
    if fan_in * bound * bound + bound >= EXACT_LIMIT:
        return None
    device = options.device
    gen = torch.Generator().manual_seed(options.seed)
    wshape = spec.weight_shape
    with no_tf32(), torch.no_grad():
        draws = torch.randint(-bound, bound + 1, (trials,) + input_shape, generator=gen, dtype=torch.int64)
        wdraws = torch.randint(-bound, bound + 1, (trials,) + wshape, generator=gen, dtype=torch.int64)
        bdraws = torch.randint(-bound, bound + 1, (trials, spec.out_channels), generator=gen, dtype=torch.int64)
        sample = torch.randn(input_shape, generator=gen, dtype=torch.float64).to(device)
        weight = conv.weight.detach().to(device=device, dtype=torch.float64)
        bias = None if conv.bias is None else conv.bias.detach().to(device=device, dtype=torch.float64)
        # blocks 0..trials-1: integer draws; block `trials`: the given weights on the unit-normal sample
        x = torch.cat([draws.to(device=device, dtype=torch.float64), sample[None]])
        w = torch.cat([wdraws.to(device=device, dtype=torch.float64), weight[None]])
        b = None
        if bias is not None:
            b = torch.cat([bdraws.to(device=device, dtype=torch.float64), bias[None]]).reshape(-1)
        blocks = trials + 1
        try:
            y_ref = _conv(spec, _stack_channels(x), w.reshape((-1,) + wshape[1:]), b, blocks)
        except RuntimeError as err:
            raise fold_error("input_size", input_shape[2:], f"the reference cannot run on it: {first_line(err)}") from err
        try:
            fw, fgroups = _fold_rows(w, spec, fold)
        except FoldError:
            return None  # the stacked weight is over the size limit: one fold per trial (the captured check)
        if fgroups != folded.groups:
            return None
        xf = depth_to_space(x, fold.r, fold.order, dims=spec.dims)
        y_cand = _conv(folded, _stack_channels(xf), fw, b, blocks)
        if y_ref.shape != y_cand.shape:
            return EquivalenceReport(Verdict.SHAPES_DIFFER, True, tuple(y_ref.shape), tuple(y_cand.shape),
                                     reason=f"reference {tuple(y_ref.shape)} vs candidate {tuple(y_cand.shape)}")
        out = spec.out_channels
        refs = y_ref.reshape((y_ref.shape[0], blocks, out) + tuple(y_ref.shape[2:])).transpose(0, 1)
        cands = y_cand.reshape((y_cand.shape[0], blocks, out) + tuple(y_cand.shape[2:])).transpose(0, 1)
        if not integer_valued(refs[:trials]):
            return None
        verdict, first, counter = Verdict.EQUIVALENT, None, None
        if not torch.equal(refs[:trials], cands[:trials]):
            for t in range(trials):
                first = first_mismatch(refs[t], cands[t])
                if first is not None:
                    verdict, counter = Verdict.NOT_EQUIVALENT, draws[t].to(torch.float64)
                    break
        y64, c64 = refs[trials], cands[trials]
        diff = max_abs(y64 - c64) if bool(torch.isfinite(y64 - c64).all()) else float("nan")
        errors = {dtype_name(d): _dtype_errors(spec, folded, fold, conv, sample, y64, d) for d in options.dtypes}
    degree = max(options.degree or 1, DEGREE)
    return EquivalenceReport(
        verdict=verdict, exact=True, reference_shape=tuple(y64.shape), candidate_shape=tuple(c64.shape), trials=trials,
        exact_range=bound, degree=degree, false_equivalent_bound=false_equivalent_bound(degree, bound, trials),
        float64_max_abs=diff, float64_max_rel=relative_error(c64, y64), errors=errors, first_mismatch=first,
        counterexample=counter,
    )


def _dtype_errors(spec: ConvSpec, folded: ConvSpec, fold: FoldSpec, conv: nn.Module, x: torch.Tensor, y64: torch.Tensor,
                  dtype: torch.dtype) -> ErrorStats:
    """Both forms in ``dtype`` on the unit-normal sample, with the given weights (cast to ``dtype``)."""
    weight = conv.weight.detach().to(device=x.device, dtype=dtype)
    bias = None if conv.bias is None else conv.bias.detach().to(device=x.device, dtype=dtype)
    xd = x.to(dtype)
    yr = _conv(spec, xd, weight, bias, 1)
    fw = fold_weight(weight, fold.r, fold.order, groups=spec.groups, dilation=spec.dilation).weight
    yc = _conv(folded, depth_to_space(xd, fold.r, fold.order, dims=spec.dims), fw, bias, 1)
    return ErrorStats.measure(dtype_name(dtype), yr, yc, y64)
