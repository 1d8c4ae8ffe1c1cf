"""check_fold for a plain ``nn.ConvNd``: a structural proof, confirmed by all trials in one grouped conv per side.

Why the fold of a plain conv needs no capture: :func:`foldconv.fold.fold_conv` returns a plain ``nn.ConvNd``
(kernel ``r*K``, stride ``r*S``, padding ``r*P``) whose weight is a fixed *placement* of the original's — zero
insertion for dilation, block-diagonal merging of groups, a permutation of kernel taps and channels: each
folded entry is zero or exactly one original entry — and its input is ``depth_to_space(x)``, a fixed
permutation of ``x``. The two maps are the same bijection between the (input pixel, kernel tap) pairs of the
original and of the folded conv, so every output of the folded conv is the original's sum of the same products
in another order (paper_notes/fold.md §1): an identity of polynomials of degree 2 in (weights, input) that
holds for all weights. The placement is read off once per configuration by folding a probe conv whose weights
are 1..n (distinct and exact in float64) with ``fold_conv`` itself, and checked to be one (every weight placed
exactly once, the bias kept); the trials then confirm the identity for this configuration: ``trials``
independent integer draws of input, weights and bias, evaluated exactly in float64 (the analytic bound
``fan_in * R**2 + R`` on every partial sum is checked first) and compared with ``torch.equal``. A wrong
placement or spec would be a non-zero polynomial of degree 2 that the draws miss with probability at most
``(2 / (2R + 1))**trials``. All trials and the unit-normal sample with the given weights run as blocks of one
grouped conv per side; nothing is validated per trial.

The route applies only when the conv's forward is torch's own (exact class ``nn.Conv1d/2d/3d``, no hooks, no
instance override, plain ``nn.Parameter`` weights): anything else goes through the captured check.

Example:
    >>> import torch
    >>> from foldconv.specs import ConvSpec, FoldSpec
    >>> from foldconv.check.options import validate_options
    >>> conv = torch.nn.Conv2d(8, 4, 3)
    >>> plain_conv(conv), plain_conv(torch.nn.utils.parametrizations.weight_norm(torch.nn.Conv2d(8, 4, 3)))
    (True, False)
    >>> spec = ConvSpec.from_module(conv)
    >>> check_plain_fold(conv, spec, FoldSpec.make(2, "crd", 2), (2, 8, 6, 6), validate_options(dtypes=())).summary()
    'equivalent (exact), P(false equivalent) <= 9.3e-10'
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .. import fold as fold_module
from ..errors import first_line, fold_error
from ..layout import depth_to_space
from ..specs import ConvSpec, FoldSpec
from .exact import EXACT_LIMIT, false_equivalent_bound, first_mismatch, max_abs, relative_error
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


@dataclass(frozen=True)
class _FoldMap:
    """What :func:`foldconv.fold.fold_conv` does to a conv of one configuration, read off a probe.

    ``spec``: the spec of the conv it returns; ``index``: for each element of the folded weight (flattened), the
    element of the original weight it holds, or ``numel`` for a structural zero.
    """

    spec: ConvSpec
    index: torch.Tensor


def _fold_map(spec: ConvSpec, fold: FoldSpec) -> Optional[_FoldMap]:
    """The placement of ``foldconv.fold.fold_conv`` as it is now (looked up at every call, remembered per function)."""
    return _fold_map_of(fold_module.fold_conv, spec, fold)


@functools.lru_cache(maxsize=256)
def _fold_map_of(fold_conv: Callable[..., nn.Module], spec: ConvSpec, fold: FoldSpec) -> Optional[_FoldMap]:
    """``fold_conv`` applied once to a probe conv whose weights are 1..n (distinct, exact in float64).

    The fold places weights (zero insertion for dilation, block-diagonal merging of groups, a permutation of the
    kernel): each folded entry is 0 or one original entry, so one probe with distinct entries reads the
    placement off exactly. None when what comes back is not a plain conv, not a placement of every weight
    exactly once, or does not keep the bias.
    """
    numel = math.prod(spec.weight_shape)
    probe_weight = torch.arange(1, numel + 1, dtype=torch.float64).reshape(spec.weight_shape)
    probe_bias = torch.arange(numel + 1, numel + spec.out_channels + 1, dtype=torch.float64) if spec.bias else None
    with torch.no_grad():
        folded = fold_conv(spec.to_module(weight=probe_weight, bias=probe_bias), fold)
    if not plain_conv(folded) or folded.weight.dtype != torch.float64:
        return None
    if (folded.bias is None) != (probe_bias is None) or (probe_bias is not None and not torch.equal(folded.bias.detach(), probe_bias)):
        return None
    entries = folded.weight.detach().reshape(-1)
    index = entries.long()
    placed = index[index != 0]
    if not torch.equal(entries, index.to(torch.float64)) or not torch.equal(placed.sort().values, torch.arange(1, numel + 1)):
        return None
    return _FoldMap(ConvSpec.from_module(folded), torch.where(index == 0, numel, index - 1))


def check_plain_fold(conv: nn.Module, spec: ConvSpec, fold: FoldSpec, input_shape: Tuple[int, ...], options: CheckOptions) -> Optional[EquivalenceReport]:
    """The fold of a plain conv (:func:`plain_conv`) checked for all weights; None when this route cannot decide.

    None (the caller then runs the captured check) when the integer sums could leave float64's exact integers
    for this ``exact_range``, when ``fold_conv`` does not return a plain conv with placed weights, or when the
    convolution did not compute integers. ``input_shape`` is the full shape of the original's input; FoldError
    ``input_size`` when the original cannot run on it.
    """
    trials, bound = options.trials, options.exact_range
    fan_in = spec.in_channels // spec.groups * math.prod(spec.kernel_size)
    if fan_in * bound * bound + bound >= EXACT_LIMIT:
        return None
    fmap = _fold_map(spec, fold)
    if fmap is None:
        return None
    folded = fmap.spec
    device, blocks = options.device, trials + 1
    batch, spatial = input_shape[0], input_shape[2:]
    wshape, out, numel = spec.weight_shape, spec.out_channels, math.prod(spec.weight_shape)
    gen = torch.Generator().manual_seed(options.seed)
    with no_tf32(), torch.no_grad():
        # Every block in one tensor, laid out so that stacking is a view: x (B, blocks, C, *S), w (blocks, n + 1)
        # (a zero column for the structural zeros). Blocks 0..trials-1 hold integer draws; the last block the
        # given weights on a unit-normal sample.
        nx, nw = batch * trials * spec.in_channels * math.prod(spatial), trials * numel
        draws = torch.randint(-bound, bound + 1, (nx + nw + trials * out,), generator=gen, dtype=torch.int64).to(device, torch.float64)
        x = torch.empty((batch, blocks, spec.in_channels) + spatial, dtype=torch.float64, device=device)
        x[:, :trials] = draws[:nx].view((batch, trials, spec.in_channels) + spatial)
        x[:, trials] = torch.randn((batch, spec.in_channels) + spatial, generator=gen, dtype=torch.float64).to(device)
        w = torch.zeros((blocks, numel + 1), dtype=torch.float64, device=device)
        w[:trials, :numel] = draws[nx:nx + nw].view(trials, numel)
        w[trials, :numel] = conv.weight.detach().reshape(-1)
        b = None
        if conv.bias is not None:
            b = torch.empty(blocks * out, dtype=torch.float64, device=device)
            b[:trials * out] = draws[nx + nw:]
            b[trials * out:] = conv.bias.detach()
        weight = w[:, :numel].reshape((blocks * out,) + wshape[1:])
        try:
            y_ref = _conv(spec, x.view((batch, blocks * spec.in_channels) + spatial), weight, b, blocks)
        except RuntimeError as err:
            raise fold_error("input_size", spatial, f"the reference cannot run on it: {first_line(err)}") from err
        fw = w.index_select(1, fmap.index.to(device)).view((blocks * out,) + folded.weight_shape[1:])
        xf = depth_to_space(x, fold.r, fold.order, dims=spec.dims)
        y_cand = _conv(folded, xf.reshape((batch, blocks * folded.in_channels) + tuple(xf.shape[3:])), fw, b, blocks)
        if y_ref.shape != y_cand.shape:
            return EquivalenceReport(Verdict.SHAPES_DIFFER, True, tuple(y_ref.shape), tuple(y_cand.shape),
                                     reason=f"reference {tuple(y_ref.shape)} vs candidate {tuple(y_cand.shape)}")
        split = trials * out
        refs, cands = y_ref[:, :split], y_cand[:, :split]
        if not torch.equal(refs, refs.round()):
            return None
        verdict, first, counter = Verdict.EQUIVALENT, None, None
        if not torch.equal(refs, cands):
            for t in range(trials):
                first = first_mismatch(refs[:, t * out:(t + 1) * out], cands[:, t * out:(t + 1) * out])
                if first is not None:
                    verdict, counter = Verdict.NOT_EQUIVALENT, x[:, t].cpu()
                    break
        y64, c64 = y_ref[:, split:], y_cand[:, split:]
        diff = max_abs(y64 - c64)
        errors = {dtype_name(d): _dtype_errors(spec, fmap, fold, conv, x[:, trials], y64, d) for d in options.dtypes}
    degree = max(options.degree or 1, DEGREE)
    return EquivalenceReport(
        verdict=verdict, exact=True, reference_shape=tuple(y64.shape), candidate_shape=tuple(c64.shape), trials=trials,
        exact_range=bound, degree=degree, false_equivalent_bound=false_equivalent_bound(degree, bound, trials),
        float64_max_abs=diff, float64_max_rel=relative_error(c64, y64), errors=errors, first_mismatch=first,
        counterexample=counter,
    )


def _dtype_errors(spec: ConvSpec, fmap: _FoldMap, fold: FoldSpec, conv: nn.Module, x: torch.Tensor, y64: torch.Tensor,
                  dtype: torch.dtype) -> ErrorStats:
    """Both forms in ``dtype`` on the unit-normal sample, with the given weights (cast to ``dtype``)."""
    weight = conv.weight.detach().to(device=x.device, dtype=dtype)
    bias = None if conv.bias is None else conv.bias.detach().to(device=x.device, dtype=dtype)
    xd = x.to(dtype)
    yr = _conv(spec, xd, weight, bias, 1)
    flat = torch.cat([weight.reshape(-1), weight.new_zeros(1)])
    fw = flat.index_select(0, fmap.index.to(x.device)).view(fmap.spec.weight_shape)
    yc = _conv(fmap.spec, depth_to_space(xd, fold.r, fold.order, dims=spec.dims), fw, bias, 1)
    return ErrorStats.measure(dtype_name(dtype), yr, yc, y64)
