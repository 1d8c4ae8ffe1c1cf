"""Sub-pixel convolution is a transposed convolution (Shi et al. 2016), and ICNR is nearest-neighbour resize.

Derivation (paper_notes/subpixel.md), per axis, factor ``r``, low-resolution (LR) kernel ``K``, padding ``P``.
The sub-pixel conv computes ``y[(o,rho), i] = sum_{c,k} w[(o,rho), c, k] x[c, i + k - P]`` and
``z[o, i*r + rho] = y[(o,rho), i]`` (``depth_to_space(r, order)``). A transposed conv with stride ``r``,
kernel ``Kt`` and padding ``Pt`` computes ``out[o, n] = sum_{c,m,kappa: m*r + kappa - Pt = n} wt[c, o, kappa] x[c, m]``.
With ``m = i + k - P`` and ``n = i*r + rho`` the tap is ``kappa = rho + r*(K-1-k) + Pt - r*(K-1-P)``, so with
``Pt = r*(K-1-P)`` and ``Kt = r*K`` the map ``(k, rho) -> kappa = r*(K-1-k) + rho`` is a bijection::

    wt[c, o, r*(K-1-k) + rho] = w[(o, rho), c, k]      (flip the kernel, then depth-to-space it)

Both sides have ``r*(N + 2P - K + 1)`` outputs, so ``output_padding = 0``. Conditions: ``P <= K-1`` and a
sub-pixel bias that is constant over ``rho`` (a transposed conv has one bias per output channel).

Backwards, a transposed conv with any ``Kt``, ``Pt = r*a + b`` (``0 <= b < r``) and ``output_padding`` is a
sub-pixel conv with ``K = ceil(Kt/r)`` (kernel zero-padded at its end), ``P = K-1-a`` (``+1`` when
``output_padding > b``; ``0`` when ``a > K-1``), followed by a crop of a fixed number of rows at each end;
the crop is empty exactly when ``Kt % r == 0``, ``b == 0``, ``a <= K-1`` and ``output_padding == 0``.

ICNR (Aitken et al. 2017) gives all ``r**d`` sub-pixel kernels of an output channel the same LR kernel ``w0``:
``z[o, i*r + rho] = conv(x, w0)[o, i]``, i.e. the sub-pixel conv is ``nearest_upsample(conv(x, w0), r)``.
Nearest upsampling followed by any stride-1 conv is also a sub-pixel conv (:func:`upsample_conv_to_subpixel`),
with LR weight ``w_lr[(o,rho), c, j] = sum_{k: floor((rho + k - P_h)/r) = j} w_hr[o, c, k]``.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence, Tuple

import einops
import torch
import torch.nn.functional as F
from torch import nn

from .._validate import (
    CONV_TRANSPOSE_TYPES,
    CONV_TYPES,
    FACTOR_NAMES,
    SPATIAL_NAMES,
    IntOrTuple,
    per_axis_ints,
    require_conv,
    require_input,
    require_numel,
    traced_input,
)
from ..errors import FoldError, fold_error
from ..fold import expand_dilation, expand_groups, groups_aligned
from ..layout import Order, depth_to_space, layout_module
from ..specs import ConvSpec, FoldSpec
from .flags import copy_requires_grad

__all__ = [
    "SubPixelConv",
    "subpixel_to_transposed",
    "transposed_to_subpixel",
    "icnr_weight",
    "icnr_",
    "upsample_conv_to_subpixel",
]

_K = {dims: tuple("k" + name for name in names) for dims, names in SPATIAL_NAMES.items()}  # kernel axes kh, kw, ...


def _packed(order: Tuple[str, ...]) -> str:
    """The LR channel axis ``(o rh rw)`` in the given order (``c`` of the order is the output channel)."""
    return "(" + " ".join("o" if a == "c" else a for a in order) + ")"


def _subpixel(
    packed: torch.Tensor,
    source: nn.Module,
    groups: int,
    fold: FoldSpec,
    *,
    padding: IntOrTuple = 0,
    crop: Sequence[Tuple[int, int]],
    input_pad: Optional[Sequence[Tuple[int, int]]] = None,
) -> SubPixelConv:
    """The sub-pixel conv holding the dense ``packed`` kernel (rows ``(o, sub-pixel)`` in ``fold.order``): grouped
    again when ``groups`` is aligned with the fold, the source's bias repeated per sub-pixel, the source's mode."""
    new_groups = groups if groups_aligned(packed.shape[0], groups, fold) else 1
    weight = _compress_groups(packed, new_groups)
    spec = ConvSpec.make(
        fold.dims, source.in_channels, weight.shape[0], tuple(weight.shape[2:]), padding=padding, groups=new_groups,
        bias=source.bias is not None,
    )
    f = FACTOR_NAMES[fold.dims]
    bias = None if source.bias is None else einops.repeat(source.bias.detach(), f"o -> {_packed(fold.order)}", **dict(zip(f, fold.r)))
    module = copy_requires_grad(spec.to_module(weight=weight, bias=bias), source)
    return SubPixelConv(module, fold.r, fold.order, crop=crop, input_pad=input_pad).train(source.training)


def _compress_groups(dense: torch.Tensor, groups: int) -> torch.Tensor:
    """Inverse of expand_groups: keep the diagonal blocks of a block-diagonal ``(A, B, *K)`` weight."""
    if groups == 1:
        return dense
    blocks = einops.rearrange(dense, "(g a) (h b) ... -> g h a b ...", g=groups, h=groups)
    diag = torch.diagonal(blocks, dim1=0, dim2=1)
    return einops.rearrange(diag, "a b ... g -> (g a) b ...")


def _pairs(value: Optional[Sequence[Tuple[int, int]]], dims: int, param: str) -> Tuple[Tuple[int, int], ...]:
    """One ``(start, end)`` pair of integers >= 0 per spatial axis (None: no rows)."""
    if value is None:
        return ((0, 0),) * dims
    rule = f"needs one (start, end) pair of integers >= 0 per spatial axis ({dims})"
    if isinstance(value, (str, torch.Tensor)) or not isinstance(value, Sequence) or len(value) != dims:
        raise fold_error(param, value, rule)
    try:
        return tuple(per_axis_ints(tuple(pair), 2, param, 0) for pair in value)  # type: ignore[return-value]
    except (TypeError, FoldError):
        raise fold_error(param, value, rule) from None


class SubPixelConv(nn.Module):
    """Sub-pixel convolution: optional zero pad, LR conv with ``O*prod(r)`` outputs, ``depth_to_space(r, order)``,
    optional crop of ``(start, end)`` rows per axis.

    Example:
        >>> m = SubPixelConv(torch.nn.Conv2d(3, 2 * 4, 3, padding=1), 2)
        >>> m(torch.zeros(1, 3, 5, 5)).shape
        torch.Size([1, 2, 10, 10])
    """

    def __init__(
        self,
        conv: nn.Module,
        r: IntOrTuple,
        order: Order = "crd",
        *,
        crop: Optional[Sequence[Tuple[int, int]]] = None,
        input_pad: Optional[Sequence[Tuple[int, int]]] = None,
    ):
        super().__init__()
        dims = require_conv(conv)
        fold = FoldSpec.coerce(r, dims, order, param="r")
        self.conv = conv
        self.dims, self.r, self.order = dims, fold.r, fold.order
        if conv.out_channels % fold.block:
            raise fold_error("conv.out_channels", conv.out_channels, f"must be a multiple of prod(r)={fold.block}")
        self.crop = _pairs(crop, dims, "crop")
        self.input_pad = _pairs(input_pad, dims, "input_pad")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not traced_input(x):  # validated in eager mode; a trace (fx, ONNX export) must not bake the sizes in
            size = require_input(x, self.dims, channels=self.conv.in_channels)
            ConvSpec.from_module(self.conv).output_size(tuple(n + a + b for n, (a, b) in zip(size, self.input_pad)))
        if any(v for p in self.input_pad for v in p):
            x = F.pad(x, [v for p in reversed(self.input_pad) for v in p])
        z = depth_to_space(self.conv(x), self.r, self.order, dims=self.dims)
        if any(v for c in self.crop for v in c):
            # rows counted from each end, so that no size is read (the exported model runs at every size)
            z = z[(Ellipsis,) + tuple(slice(a, -b if b else None) for a, b in self.crop)]
        return z

    def extra_repr(self) -> str:
        return f"r={self.r}, order={' '.join(self.order)!r}, crop={self.crop}, input_pad={self.input_pad}"


def _split_subpixel(module: nn.Module, r: Optional[IntOrTuple], order: Optional[Order]) -> Tuple[nn.Module, Tuple[int, ...], Tuple[str, ...]]:
    if isinstance(module, SubPixelConv):
        if any(v for c in module.crop + module.input_pad for v in c):
            raise fold_error("module.crop", module.crop, "must be empty (and input_pad too) to convert to a transposed conv")
        return module.conv, module.r, module.order
    if isinstance(module, nn.Sequential):
        layout = layout_module(module[1]) if len(module) == 2 else None
        if layout is None or layout.kind != "depth_to_space" or not isinstance(module[0], CONV_TYPES):
            raise fold_error("module", type(module).__name__, "must be nn.Sequential(nn.ConvNd(...), depth-to-space) with "
                             "foldconv's DepthToSpace, nn.PixelShuffle or timm's DepthToSpace second")
        if r is not None or order is not None:
            raise fold_error("r", r, f"is read from the {type(module[1]).__name__} of the Sequential; leave r and order unset")
        return module[0], layout.r, layout.order
    if not isinstance(module, CONV_TYPES):
        raise fold_error("module", type(module).__name__, "must be a SubPixelConv, nn.Sequential(conv, DepthToSpace) or a conv")
    if r is None:
        raise fold_error("r", r, "is needed when the module is a bare conv (the depth-to-space factor)")
    fold = FoldSpec.coerce(r, len(module.kernel_size), order, param="r")
    return module, fold.r, fold.order


def subpixel_to_transposed(
    module: nn.Module, r: Optional[IntOrTuple] = None, order: Optional[Order] = None
) -> nn.Module:
    """The ``nn.ConvTransposeNd`` equal to a sub-pixel conv: stride ``r``, kernel ``r*K``, padding ``r*(K-1-P)``.

    ``module``: a :class:`SubPixelConv` without crop, ``nn.Sequential(conv, depth_to_space)`` whose second module
    is foldconv's ``DepthToSpace(r, order)``, ``nn.PixelShuffle(r)`` (order ``"crd"``) or timm's ``DepthToSpace``
    (order ``"dcr"``), read by :func:`foldconv.layout.layout_module`, or the LR conv itself with ``r`` and ``order``. The LR conv needs stride 1, zero padding ``P <= K-1``
    (dilated kernels count with their extent) and a bias constant over the ``prod(r)`` sub-pixels.

    Args:
        module: a :class:`SubPixelConv` without crop, ``nn.Sequential(conv, depth_to_space)`` or a bare LR conv.
        r: the depth-to-space factor, an int or one per axis; needed for a bare conv, unset otherwise.
        order: the depth-to-space channel order for a bare conv (default ``"crd"``); unset otherwise.

    Returns:
        A new ``nn.ConvTransposeNd`` (stride ``r``, kernel ``r*K``, padding ``r*(K-1-P)``, no output padding).

    Raises:
        FoldError: naming ``module`` (none of the forms), ``module.crop``, ``r``, or the LR conv's ``conv.stride``,
        ``conv.padding_mode``, ``conv.padding``, ``conv.out_channels`` or ``conv.bias`` that has no transposed form.

    Example:
        >>> conv = torch.nn.Conv2d(3, 8, 3, padding=1, bias=False)
        >>> t = subpixel_to_transposed(conv, 2)
        >>> t.kernel_size, t.stride, t.padding, t.output_padding
        ((6, 6), (2, 2), (2, 2), (0, 0))
        >>> espcn_tail = torch.nn.Sequential(conv, torch.nn.PixelShuffle(2))
        >>> torch.equal(subpixel_to_transposed(espcn_tail).weight, t.weight)
        True
    """
    conv, rs, names = _split_subpixel(module, r, order)
    spec = ConvSpec.from_module(conv)
    dims = spec.dims
    if len(rs) != dims:
        raise fold_error("r", rs, f"needs one factor per spatial axis of the conv ({dims})")
    fold = FoldSpec.make(rs, names, dims)
    if spec.stride != (1,) * dims:
        raise fold_error("conv.stride", spec.stride, "must be 1 on every axis (a sub-pixel conv runs at LR with stride 1)")
    if spec.padding_mode != "zeros":
        raise fold_error("conv.padding_mode", spec.padding_mode, "must be 'zeros' (a transposed conv only pads with zeros)")
    kernel = spec.effective_kernel
    if any(p > k - 1 for p, k in zip(spec.padding, kernel)):
        raise fold_error(
            "conv.padding", spec.padding, f"must be <= kernel extent - 1 = {tuple(k - 1 for k in kernel)}: the transposed padding r*(K-1-P) cannot be negative"
        )
    if spec.out_channels % fold.block:
        raise fold_error("conv.out_channels", spec.out_channels, f"must be a multiple of prod(r)={fold.block}")
    out_channels = spec.out_channels // fold.block
    w = expand_groups(expand_dilation(conv.weight.detach(), spec.dilation), spec.groups)
    k, f = _K[dims], FACTOR_NAMES[dims]
    flipped = torch.flip(w, dims=tuple(range(2, 2 + dims)))
    pattern = f"{_packed(fold.order)} c {' '.join(k)} -> c o {' '.join(f'({a} {b})' for a, b in zip(k, f))}"
    wt = einops.rearrange(flipped, pattern, **dict(zip(f, fold.r)))
    aligned = groups_aligned(spec.out_channels, spec.groups, fold)
    groups = spec.groups if aligned else 1
    wt = _compress_groups(wt, groups)
    bias = None
    if conv.bias is not None:
        per_pixel = einops.rearrange(conv.bias.detach(), f"{_packed(fold.order)} -> o ({' '.join(f)})", **dict(zip(f, fold.r)))
        if not torch.equal(per_pixel, per_pixel[:, :1].expand_as(per_pixel)):
            raise fold_error(
                "conv.bias", "varies over sub-pixels", "must be equal for the prod(r) sub-pixels of each output channel (a transposed conv has one bias per channel)"
            )
        bias = per_pixel[:, 0]
    tconv = CONV_TRANSPOSE_TYPES[dims - 1](
        spec.in_channels,
        out_channels,
        tuple(r_ * k_ for r_, k_ in zip(fold.r, kernel)),
        stride=fold.r,
        padding=tuple(r_ * (k_ - 1 - p) for r_, k_, p in zip(fold.r, kernel, spec.padding)),
        output_padding=0,
        groups=groups,
        bias=bias is not None,
        dtype=wt.dtype,
        device=wt.device,
    )
    with torch.no_grad():
        tconv.weight.copy_(wt)
        if bias is not None:
            tconv.bias.copy_(bias)
    return copy_requires_grad(tconv, conv).train(conv.training)


def transposed_to_subpixel(tconv: nn.Module, order: Order = "crd") -> SubPixelConv:
    """The sub-pixel conv (LR conv, ``depth_to_space(stride, order)``, fixed crop) equal to a transposed conv.

    ``K = ceil(Kt/r)`` with the kernel zero-padded at its end; the crop is empty exactly when ``Kt``
    and the padding are multiples of ``r``, ``padding <= r*(K-1)`` and ``output_padding == 0``.

    Args:
        tconv: an ``nn.ConvTranspose1d/2d/3d`` with zero padding given as numbers; its stride is ``r``.
        order: the depth-to-space channel order of the result, an alias or einops axes (default ``"crd"``).

    Returns:
        A :class:`SubPixelConv` equal to ``tconv`` at every input size: ``conv`` (the LR conv), ``r``,
        ``order`` and ``crop`` (``(start, end)`` rows per axis).

    Raises:
        FoldError: naming ``tconv`` (not a transposed conv), ``tconv.padding_mode``, ``tconv.padding`` or ``order``.

    Example:
        >>> t = torch.nn.ConvTranspose2d(8, 3, 4, stride=2, padding=1)
        >>> s = transposed_to_subpixel(t)
        >>> s.conv.kernel_size, s.conv.padding, s.crop
        ((2, 2), (1, 1), ((1, 1), (1, 1)))
    """
    if not isinstance(tconv, CONV_TRANSPOSE_TYPES):
        raise fold_error("tconv", type(tconv).__name__, "must be an nn.ConvTranspose1d, 2d or 3d")
    dims = len(tconv.kernel_size)
    if tconv.padding_mode != "zeros":
        raise fold_error("tconv.padding_mode", tconv.padding_mode, "must be 'zeros'")
    if isinstance(tconv.padding, str):
        raise fold_error("tconv.padding", tconv.padding, "must be explicit numbers")
    rs = tuple(tconv.stride)
    fold = FoldSpec.coerce(rs, dims, order)
    groups = tconv.groups
    extents = [d * (k_ - 1) + 1 for k_, d in zip(tconv.kernel_size, tconv.dilation)]
    require_numel((tconv.out_channels * fold.block, tconv.in_channels) + tuple(math.ceil(e / r_) for e, r_ in zip(extents, rs)),
                  "tconv", f"{type(tconv).__name__}(stride={rs})", what="the sub-pixel conv's weight")
    wt = expand_dilation(tconv.weight.detach(), tuple(tconv.dilation))
    extent = tuple(wt.shape[2:])
    q = tuple(math.ceil(e / r_) for e, r_ in zip(extent, rs))
    grow = [r_ * k_ - e for r_, k_, e in zip(rs, q, extent)]
    wt = F.pad(wt, [g for g in reversed(grow) for g in (0, g)])
    wt = expand_groups(wt, groups)
    k, f = _K[dims], FACTOR_NAMES[dims]
    pattern = f"c o {' '.join(f'({a} {b})' for a, b in zip(k, f))} -> {_packed(fold.order)} c {' '.join(k)}"
    w = torch.flip(einops.rearrange(wt, pattern, **dict(zip(f, fold.r))), dims=tuple(range(2, 2 + dims)))
    paddings, crops = [], []
    for r_, kq, e, pt, op in zip(rs, q, extent, tconv.padding, tconv.output_padding):
        a, b = divmod(pt, r_)
        if a > kq - 1:
            p, start = 0, pt - r_ * (kq - 1)
        else:
            p, start = kq - 1 - a, b
        if op > start:
            p, start = p + 1, start + r_
        # Rows of the sub-pixel output minus rows of the transposed output: independent of the input size.
        surplus = r_ * (2 * p - kq + 2) + 2 * pt - e - op
        paddings.append(p)
        crops.append((start, surplus - start))
    return _subpixel(w, tconv, groups, fold, padding=tuple(paddings), crop=crops)


def icnr_weight(weight: torch.Tensor, r: IntOrTuple, order: Order = "crd") -> torch.Tensor:
    """ICNR: the sub-pixel weight ``(O*prod(r), C, *K)`` whose ``prod(r)`` sub-kernels all equal ``weight``.

    With it the sub-pixel conv is ``nearest_upsample(conv(x, weight), r)`` exactly (Aitken et al. 2017).

    Example:
        >>> icnr_weight(torch.tensor([[[1., 2.]]]), 2).squeeze(1).tolist()
        [[1.0, 2.0], [1.0, 2.0]]
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (3, 4, 5):
        raise fold_error("weight", getattr(weight, "shape", weight), "must be a conv weight (O, C, *K) with 1-3 spatial dims")
    dims = weight.dim() - 2
    fold = FoldSpec.coerce(r, dims, order, param="r")
    f = FACTOR_NAMES[dims]
    return einops.repeat(weight, f"o c ... -> {_packed(fold.order)} c ...", **dict(zip(f, fold.r)))


def icnr_(
    weight: torch.Tensor,
    r: IntOrTuple,
    order: Order = "crd",
    *,
    init: Callable[[torch.Tensor], object] = nn.init.kaiming_normal_,
) -> torch.Tensor:
    """Initialise a sub-pixel conv weight in place with ICNR: ``init`` on one LR kernel, copied to all sub-pixels.

    Example:
        >>> conv = torch.nn.Conv2d(3, 2 * 4, 3, padding=1)
        >>> _ = icnr_(conv.weight, 2)
        >>> torch.equal(conv.weight[0], conv.weight[1])  # crd order: channels (o, rh, rw)
        True
    """
    if not isinstance(weight, torch.Tensor) or weight.dim() not in (3, 4, 5):
        raise fold_error("weight", getattr(weight, "shape", weight), "must be a conv weight (O*prod(r), C, *K)")
    dims = weight.dim() - 2
    fold = FoldSpec.coerce(r, dims, order, param="r")
    if weight.shape[0] % fold.block:
        raise fold_error("weight.shape", tuple(weight.shape), f"out channels must be a multiple of prod(r)={fold.block}")
    base = weight.new_empty((weight.shape[0] // fold.block,) + tuple(weight.shape[1:]))
    init(base)
    with torch.no_grad():
        weight.copy_(icnr_weight(base, fold.r, fold.order))
    return weight


def upsample_conv_to_subpixel(conv: nn.Module, r: IntOrTuple, order: Order = "crd") -> SubPixelConv:
    """The sub-pixel conv equal to ``conv(nearest_upsample(x, r))`` for a stride-1 zero-padded conv.

    Per axis the LR kernel spans offsets ``floor(-P/r) .. floor((r-2+Ke-P)/r)``; the module zero-pads ``x``,
    runs the LR conv, shuffles and crops the rows past the HR conv's output.

    Example:
        >>> conv = torch.nn.Conv2d(3, 4, 3, padding=1, dtype=torch.float64)  # float64: the LR weight sums taps
        >>> s = upsample_conv_to_subpixel(conv, 2)
        >>> s.conv.kernel_size, s.conv.out_channels, s.input_pad, s.crop
        ((3, 3), 16, ((1, 1), (1, 1)), ((0, 0), (0, 0)))
        >>> x = torch.randn(1, 3, 5, 4, dtype=torch.float64)
        >>> up = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
        >>> torch.allclose(s(x), conv(up))
        True
    """
    spec = ConvSpec.from_module(conv)
    dims = spec.dims
    fold = FoldSpec.coerce(r, dims, order, param="r")
    if spec.stride != (1,) * dims:
        raise fold_error("conv.stride", spec.stride, "must be 1 on every axis")
    if spec.padding_mode != "zeros":
        raise fold_error("conv.padding_mode", spec.padding_mode, "must be 'zeros' (other modes pad the upsampled map, not x)")
    taps = (math.ceil((r_ - 1 + ke) / r_) + 1 for r_, ke in zip(fold.r, spec.effective_kernel))  # at most, per axis
    require_numel((spec.out_channels * fold.block, spec.in_channels) + tuple(taps), "r", fold.r, what="the sub-pixel conv's weight")
    w = expand_groups(expand_dilation(conv.weight.detach(), spec.dilation), spec.groups)
    pads, crops, selections = [], [], []
    for r_, ke, p in zip(fold.r, spec.effective_kernel, spec.padding):
        jmin, jmax = (-p) // r_, (r_ - 2 + ke - p) // r_
        right = max(0, jmax + math.ceil((2 * p - ke + 1) / r_))
        pads.append((-jmin, right))
        crops.append((0, r_ * (right - jmax) - (2 * p - ke + 1)))
        rho = torch.arange(r_).reshape(r_, 1, 1)
        j = torch.arange(jmax - jmin + 1).reshape(1, -1, 1)
        taps = torch.arange(ke).reshape(1, 1, ke)
        selections.append(((rho + taps - p).div(r_, rounding_mode="floor") - jmin == j).to(w.dtype))
    letters = "xyz"[:dims]
    spec_in = "oc" + letters
    spec_sel = [f"{'uvw'[i]}{'ijk'[i]}{letters[i]}" for i in range(dims)]
    spec_out = "oc" + "uvw"[:dims] + "ijk"[:dims]
    lr = torch.einsum(f"{spec_in},{','.join(spec_sel)}->{spec_out}", w, *selections)
    k, f = _K[dims], FACTOR_NAMES[dims]
    lr = einops.rearrange(lr, f"o c {' '.join(f)} {' '.join(k)} -> {_packed(fold.order)} c {' '.join(k)}")
    return _subpixel(lr, conv, spec.groups, fold, crop=crops, input_pad=pads)
