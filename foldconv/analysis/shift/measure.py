"""Measured shift equivariance on real inputs: per-stage feature-map error under small input shifts, and the
consistency metric of Zhang (2019, "Making convolutional networks shift-invariant again", antialiased-cnns).

Conventions. An input shift ``s`` (per axis, input pixels) means the crop ``images[..., s:s+H]`` against
``images[..., 0:H]``: content moves by ``-s``, so an equivariant stage with rate ``q`` (own pixels per input
pixel, :attr:`AxisShift.rate`) gives ``y1[i] = y0[i + s*q]``. "Shifting back" reads ``y0`` at ``i + s*q``
by linear interpolation when ``s*q`` is fractional (exact slicing when it is an integer); ``border`` input
pixels (converted to own pixels, rounded up) are cropped on both sides, or, with ``border="rf"`` (the
default), exactly the positions whose computation reads padding in either pass are dropped: the unit ``i``
of an aligned stage reads ``[i*jump - P, i*jump - P + rf - 1]`` (rf, box jump and effective padding ``P`` of
its receptive field), and it is kept only when that box, and the boxes of the units of ``y0`` it is compared
with, lie inside the crop. Where the period divides the shift, the error over those positions is exactly 0
(:attr:`StageError.exact`); a crop shorter than :func:`min_clean_length` (the field, plus the padding and alignment
of the first clean unit, plus the shift) keeps no position. The error is
``||y1 - shifted y0|| / ||shifted y0||`` over what remains; an invariant stage (rate 0: global pooling and
after) reads the whole crop, borders included: it is compared without a shift, and has no period on a
finite crop.

Example:
    >>> import torch
    >>> from foldconv.analysis.shift import shift_equivariance
    >>> torch.manual_seed(0) is not None
    True
    >>> net = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, stride=2), torch.nn.ReLU())
    >>> rep = shift_equivariance(net, (1, 1, 32, 32))
    >>> net = net.double()
    >>> images = torch.randn(2, 1, 40, 40, dtype=torch.float64)
    >>> errs = stage_errors(net, rep, ["0"], images, input_size=(32, 32), shifts=[(0, 1), (0, 2)])
    >>> [(e.shift, e.exact, e.error == 0.0, e.positions) for e in errs]
    [((0, 1), False, False, 210), ((0, 2), True, True, 210)]
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ... import tracing
from ..._validate import per_axis_ints, require_int
from ...errors import fold_error
from ..receptive_field import AxisRF
from .analytic import NodeShift, ShiftReport

__all__ = [
    "StageError", "Consistency", "read_shifted", "equivariance_error", "clean_positions", "min_clean_length", "stage_errors", "consistency", "consistency_pair", "crops",
    "RF_BORDER", "phase_boxes", "phase_positions",
]

#: The ``border`` of :func:`stage_errors` that drops exactly the positions whose computation reads padding.
RF_BORDER = "rf"


@dataclass(frozen=True)
class StageError:
    """Equivariance error of one stage (a module's output) under one input shift, over ``positions`` output
    positions. ``exact``: the theory says the error is 0 here (the stage is local, its period divides the
    shift on every axis, and the compared positions read no padding); ``global_``: the stage reads the whole
    crop along some axis (after global pooling), so it has no period on a finite crop."""

    stage: str
    depth: int
    jump: Tuple[Fraction, ...]
    period: Tuple[Optional[int], ...]
    shift: Tuple[int, ...]
    error: float
    positions: int
    exact: bool = False
    global_: bool = False


@dataclass(frozen=True)
class Consistency:
    """Zhang's consistency: the fraction of ``pairs`` of differently shifted crops whose argmax agrees;
    ``classes``: the distinct argmax values seen; ``outputs``: how many classes the argmax is taken over."""

    agree: int
    pairs: int
    classes: int = 0
    outputs: int = 0

    @property
    def value(self) -> float:
        return self.agree / self.pairs if self.pairs else float("nan")


def read_shifted(y: torch.Tensor, offsets: Sequence[float]) -> torch.Tensor:
    """``y`` read at ``i + offset`` along its last ``len(offsets)`` axes (offsets >= 0), linearly interpolated
    between neighbours; each axis shrinks by ``ceil(offset)``.

    Example:
        >>> read_shifted(torch.tensor([0., 2., 4., 6.]), [0.5]).tolist()
        [1.0, 3.0, 5.0]
    """
    dims = len(offsets)
    for k, t in enumerate(offsets):
        if t < 0:
            raise fold_error("offsets", tuple(offsets), "must be >= 0 (shift the crop the other way)")
        axis = y.dim() - dims + k
        n = y.shape[axis]
        lo, frac = int(math.floor(t)), float(t) - math.floor(t)
        m = n - math.ceil(t)
        if m <= 0:
            return y.narrow(axis, 0, 0)
        base = y.narrow(axis, lo, m)
        y = base if frac == 0 else (1 - frac) * base + frac * y.narrow(axis, lo + 1, m)
    return y


def clean_positions(axis: AxisRF, length: int, offset: Fraction) -> Tuple[int, int]:
    """``(lo, hi)``: the positions ``lo <= i < hi`` of a stage, along one axis of an input crop ``length``
    pixels long, whose unit reads no padding and is compared with units of the unshifted pass (at ``i + offset``,
    own pixels; both neighbours when fractional) that read none either. ``axis`` is the stage's
    :class:`~foldconv.analysis.receptive_field.AxisRF`: unit ``i`` of an aligned stage reads
    ``[i*box_jump - padding, i*box_jump - padding + rf - 1]``; a padded position of any layer inside it
    would reach outside ``[0, length - 1]``. An unaligned axis keeps the positions ``rf`` input pixels away
    from both ends (a conservative bound).

    Example:
        >>> from foldconv.analysis.receptive_field import AxisRF
        >>> clean_positions(AxisRF(rf=7, jump=Fraction(2), padding=3, box_jump=2), 32, Fraction(1))  # resnet's conv1
        (2, 14)
    """
    step, pad, rf = _box_terms(axis, offset)
    lo = math.ceil(Fraction(pad) / step)
    last = math.floor(Fraction(length - rf + pad) / step)  # the last unit whose box ends inside the crop
    return lo, max(lo, last - math.ceil(offset) + 1)


def min_clean_length(axis: AxisRF, offset: Fraction) -> int:
    """The shortest crop (input pixels along this axis) on which :func:`clean_positions` keeps a position:
    the first unit that reads no padding, ``ceil(offset)`` units on, must still read only crop pixels. It
    exceeds the field itself by the padding and alignment of the first clean unit and by the shift.

    Example:
        >>> from foldconv.analysis.receptive_field import AxisRF
        >>> layer1 = AxisRF(rf=43, jump=Fraction(4), padding=21, box_jump=4)  # resnet18's layer1
        >>> min_clean_length(layer1, Fraction(0)), min_clean_length(layer1, Fraction(8))  # unshifted; shifted by 32 px
        (46, 78)
        >>> clean_positions(layer1, 77, Fraction(8)), clean_positions(layer1, 78, Fraction(8))
        ((6, 6), (6, 7))
    """
    step, pad, rf = _box_terms(axis, offset)
    lo = math.ceil(Fraction(pad) / step)
    return math.ceil((lo + math.ceil(offset)) * step + rf - pad)


def _box_terms(axis: AxisRF, offset: Fraction) -> Tuple[Fraction, int, int]:
    """(step, padding, extent) of the boxes :func:`clean_positions` keeps inside the crop."""
    if offset < 0:
        raise fold_error("offset", offset, "must be >= 0 (shift the crop the other way)")
    if axis.aligned and axis.box_jump >= 1:
        return Fraction(axis.box_jump), axis.padding, axis.rf
    return max(axis.jump, Fraction(1, 10**6)), axis.rf, 3 * axis.rf  # rf px from both ends


def equivariance_error(
    y0: torch.Tensor, y1: torch.Tensor, shift: Sequence[int], rate: Sequence[Fraction], *, border: int = 0,
    keep: Optional[Sequence[Tuple[int, int]]] = None,
) -> Tuple[float, int]:
    """Relative error of ``y1`` (output on the input shifted by ``shift``) against ``y0`` shifted back, with
    ``rate`` own pixels per input pixel per spatial axis (the trailing axes of ``y``); returns the error and
    the number of positions compared (nan and 0 when the crop leaves none). ``border`` input pixels are
    cropped on both sides, or ``keep`` gives per axis the positions ``[lo, hi)`` of ``y1`` compared
    (:func:`clean_positions`).

    Example:
        >>> y0 = torch.arange(10.).reshape(1, 10)
        >>> equivariance_error(y0, y0 + 1, (2,), (Fraction(1, 2),))
        (0.0, 9)
        >>> equivariance_error(y0, y0 + 1, (2,), (Fraction(1, 2),), keep=[(2, 5)])
        (0.0, 3)
    """
    dims = len(rate)
    if keep is not None and len(keep) != dims:
        raise fold_error("keep", keep, f"must give one (lo, hi) range per spatial axis ({dims})")
    for y in (y0, y1):  # a Hugging Face ModelOutput, a tuple: which of its tensors to compare is the caller's choice
        if not isinstance(y, torch.Tensor):
            raise fold_error("model output", type(y).__name__, "must be one tensor (a feature map or logits) to measure shifts on; "
                                                        "wrap a model that returns a mapping or tuple so that it returns the tensor you mean "
                                                        "(e.g. its last_hidden_state)")
    if any(q == 0 for q in rate):  # read the whole axis: invariant
        ref, got = y0, y1
    else:
        offsets = [float(s * q) for s, q in zip(shift, rate)]
        ref = read_shifted(y0, offsets)
        got = y1[(Ellipsis,) + tuple(slice(0, n) for n in ref.shape[y0.dim() - dims:])]
        if keep is None:
            crop = [math.ceil(border * q) for q in rate]
            index = tuple(slice(c, n - c) for c, n in zip(crop, ref.shape[y0.dim() - dims:]))
        else:
            index = tuple(slice(max(0, lo), max(0, lo, hi)) for lo, hi in keep)
        ref, got = ref[(Ellipsis,) + index], got[(Ellipsis,) + index]
    positions = math.prod(ref.shape[ref.dim() - dims:]) if ref.dim() >= dims else 1
    if ref.numel() == 0:
        return float("nan"), 0
    norm = float(ref.double().norm())
    diff = float((got.double() - ref.double()).norm())
    return (diff / norm if norm > 0 else diff), int(positions)


def _crop_dims(input_size: Any, images: torch.Tensor) -> int:
    """How many trailing axes of ``images`` a crop of ``input_size`` spans (one size per axis, at most all but C)."""
    if not isinstance(input_size, Sequence) or isinstance(input_size, str) or not 1 <= len(input_size) < images.dim():
        raise fold_error("input_size", input_size, f"must give one size per spatial axis of images of shape {tuple(images.shape)}")
    return len(input_size)


def _check_memory(model: nn.Module, images: torch.Tensor, size: Sequence[int], what: str) -> None:
    """Two forward passes of the model on crops of ``size`` of all the images, against the allocation limit."""
    shape = tuple(images.shape[: images.dim() - len(size)]) + tuple(size)
    tracing.require_run_memory(model, shape, copies=2, bytes_per_element=images.element_size(), what=what, param="input_size")


def _crop(images: torch.Tensor, start: Sequence[int], size: Sequence[int]) -> torch.Tensor:
    return images[(Ellipsis,) + tuple(slice(a, a + n) for a, n in zip(start, size))]


def stage_errors(
    model: nn.Module,
    report: ShiftReport,
    stages: Sequence[str],
    images: torch.Tensor,
    *,
    input_size: Sequence[int],
    shifts: Sequence[Sequence[int]],
    border: Union[int, str] = RF_BORDER,
) -> List[StageError]:
    """Equivariance error of the outputs of the modules ``stages`` (dotted names, in depth order) of
    ``model`` under every shift of ``shifts``, on crops of ``input_size`` (spatial) of ``images`` (N, C, *spatial).

    ``report`` (:func:`shift_equivariance` of a model with the same stages, e.g. ``model`` itself or the
    model it was rewritten from) gives each stage's rate, period and receptive field. ``border``: ``"rf"``
    compares only the positions that read no padding in either pass (:func:`clean_positions`), so that
    the error is exactly 0 wherever the period divides the shift; an int crops that many input pixels on
    both sides instead. Runs in ``torch.no_grad``.
    """
    if border != RF_BORDER:
        border = require_int(border, "border", 0)
    size = per_axis_ints(input_size, _crop_dims(input_size, images), "input_size", 1)
    dims = len(size)
    modules = dict(model.named_modules())
    missing = [s for s in stages if s not in modules]
    if missing:
        raise fold_error("stages", missing, "must name modules of the model")
    for s in shifts:
        if len(s) != dims or any(v < 0 or v + n > m for v, n, m in zip(s, size, images.shape[-dims:])):
            raise fold_error("shifts", tuple(s), f"must be {dims} non-negative ints with shift + size <= the image size {tuple(images.shape[-dims:])}")
    _check_memory(model, images, size, "the unshifted and one shifted pass, with the stages' maps kept")
    captured: Dict[str, torch.Tensor] = {}
    hooks = [modules[s].register_forward_hook(lambda _m, _i, out, name=s: captured.__setitem__(name, out)) for s in stages]
    try:
        with torch.no_grad():
            model(_crop(images, (0,) * dims, size))
            base = dict(captured)
            result = []
            for s in shifts:
                model(_crop(images, s, size))
                for depth, name in enumerate(stages):
                    info = report.stage(name)
                    rate = [a.rate if a.rate is not None else Fraction(0) for a in info.axes]
                    keep = _keep(report, info, size, s, rate) if border == RF_BORDER else None
                    err, n = equivariance_error(base[name], captured[name], tuple(s), rate, border=border if isinstance(border, int) else 0, keep=keep)
                    if _is_global(info) and n:  # the whole map was compared: count the stage's positions, not its channels
                        n = math.prod(report.rf[info.name].positions)
                    result.append(StageError(name, depth, info.jump, info.period, tuple(int(v) for v in s), err, n,
                                             exact=_exact(report, info, s, n, border, size), global_=_is_global(info)))
    finally:
        for h in hooks:
            h.remove()
    return result


def _is_global(info: NodeShift) -> bool:
    """The stage reads the whole crop along some axis (own period 0): no period on a finite crop."""
    return any(a.own_period == 0 for a in info.axes)


def _keep(report: ShiftReport, info: NodeShift, size: Sequence[int], shift: Sequence[int], rate: Sequence[Fraction]):
    if _is_global(info) or any(q == 0 for q in rate):
        return None
    axes = report.rf[info.name].axes
    keep = []
    for a, (axis, n, s, q) in enumerate(zip(axes, size, shift, rate)):
        phased = None if axis.aligned else phase_positions(report, info, a, n, s * q)
        keep.append(phased if phased is not None else clean_positions(axis, n, s * q))
    return keep


def phase_boxes(report: ShiftReport, info: NodeShift, axis: int) -> Optional[List[Tuple[int, int]]]:
    """The input boxes (Araujo's coordinates, padding included) that the units ``0 .. own_period - 1`` of an
    unaligned stage read along ``axis``, when every later unit reads one of them moved by whole periods (unit
    ``i + own_period`` reads box ``i`` moved by ``period`` input pixels); None otherwise. A sub-pixel
    (pixel-shuffle) stage is such a stage: its ``r`` phases read the same box, which moves one input pixel per
    ``r`` units, so no single integer box jump describes it and the receptive-field report calls it unaligned.

    Example:
        >>> from foldconv.analysis.shift import shift_equivariance
        >>> net = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.PixelShuffle(2))
        >>> report = shift_equivariance(net, (1, 1, 8, 8))
        >>> phase_boxes(report, report.stage("1"), 0)
        [(-1, 1), (-1, 1)]
    """
    a, rf = info.axes[axis], report.rf[info.name]
    q, p = a.own_period, a.period
    n = rf.shape[2 + axis]
    if not q or not p or n < 2 * q or not rf.axes[axis].exact:
        return None
    centre = [m // 2 for m in rf.shape[2:]]

    def box(i: int) -> Tuple[int, int]:
        return tuple(report.rf.box(info.name, tuple(centre[:axis] + [i] + centre[axis + 1:]), clip=False)[axis])

    boxes = [box(i) for i in range(q)]
    if any(box(i + q) != (lo + p, hi + p) for i, (lo, hi) in enumerate(boxes)):
        return None
    return boxes


def phase_positions(report: ShiftReport, info: NodeShift, axis: int, length: int, offset: Fraction) -> Optional[Tuple[int, int]]:
    """:func:`clean_positions` of an unaligned stage whose units read periodic boxes (:func:`phase_boxes`),
    exactly: the units ``lo <= i < hi`` whose box, and that of unit ``i + offset`` of the unshifted pass,
    lie inside ``[0, length - 1]``; None when the boxes are not periodic, ``offset`` is fractional, the report
    was made for another crop length, or the clean units are not one run."""
    boxes = phase_boxes(report, info, axis)
    if boxes is None or offset.denominator != 1 or report.rf.input_shape[2 + axis] != length:
        return None
    q, p, n, off = len(boxes), info.axes[axis].period, report.rf[info.name].shape[2 + axis], int(offset)

    def clean(i: int) -> bool:
        lo, hi = boxes[i % q]
        return 0 <= lo + (i // q) * p and hi + (i // q) * p <= length - 1

    kept = [i for i in range(max(0, n - off)) if clean(i) and clean(i + off)]
    if not kept:
        return (0, 0)
    if kept[-1] - kept[0] + 1 != len(kept):
        return None
    return kept[0], kept[-1] + 1


def _exact(report: ShiftReport, info: NodeShift, shift: Sequence[int], positions: int, border: Union[int, str], size: Sequence[int]) -> bool:
    """What the theory says: error 0 at the compared positions (local, aligned, period divides the shift,
    no padding read)."""
    if border != RF_BORDER or positions == 0 or _is_global(info):
        return False
    for k, (a, n, s) in enumerate(zip(report.rf[info.name].axes, size, shift)):
        rate = info.axes[k].rate
        if not a.aligned and (rate is None or phase_positions(report, info, k, n, s * rate) is None):
            return False  # kept by the conservative bound (no periodic boxes): no exact claim
    return all(a.period is not None and a.own_period and s % a.period == 0 for a, s in zip(info.axes, shift))


def crops(images: torch.Tensor, input_size: Sequence[int], count: int, *, generator: torch.Generator) -> torch.Tensor:
    """``count`` random crops of spatial size ``input_size`` (seeded by ``generator``) of one image ``(C, *spatial)``.

    Example:
        >>> crops(torch.zeros(3, 10, 12), (4, 4), 5, generator=torch.Generator().manual_seed(0)).shape
        torch.Size([5, 3, 4, 4])
    """
    size = per_axis_ints(input_size, _crop_dims(input_size, images), "input_size", 1)
    dims = len(size)
    room = [m - n for m, n in zip(images.shape[-dims:], size)]
    if any(r < 0 for r in room):
        raise fold_error("input_size", size, f"must fit in the image {tuple(images.shape[-dims:])}")
    starts = [torch.randint(0, r + 1, (count,), generator=generator).tolist() for r in room]
    return torch.stack([_crop(images, [st[k] for st in starts], size) for k in range(count)])


def consistency(model: nn.Module, images: torch.Tensor, *, input_size: Sequence[int], max_shift: int, generator: torch.Generator,
                center: bool = False) -> Consistency:
    """Zhang's consistency: for every image (N, C, *spatial; at least ``input_size + max_shift``), two crops at
    independent random offsets in ``[0, max_shift]`` per axis; how often the argmax of the outputs agrees.

    ``center``: take the argmax of the outputs minus their mean over all ``2N`` crops. A randomly initialised
    classifier answers nearly one class for every input (consistency 1 by default); centring asks which class
    an input moves the output towards. ``classes`` counts the distinct argmax values seen, ``outputs`` the
    classes the argmax is taken over.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 3))
        >>> consistency(net, torch.ones(4, 1, 9, 9), input_size=(6, 6), max_shift=3, generator=torch.Generator().manual_seed(0))
        Consistency(agree=4, pairs=4, classes=1, outputs=3)
    """
    return consistency_pair(model, images, input_size=input_size, max_shift=max_shift, generator=generator)[1 if center else 0]


def consistency_pair(model: nn.Module, images: torch.Tensor, *, input_size: Sequence[int], max_shift: int,
                     generator: torch.Generator) -> Tuple[Consistency, Consistency]:
    """:func:`consistency` of the plain and of the centred argmax, from the same two passes.

    Example:
        >>> net = torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(1, 3))
        >>> plain, centred = consistency_pair(net, torch.ones(4, 1, 9, 9), input_size=(6, 6), max_shift=3,
        ...                                   generator=torch.Generator().manual_seed(0))
        >>> plain.value, centred.pairs
        (1.0, 4)
    """
    size = per_axis_ints(input_size, _crop_dims(input_size, images), "input_size", 1)
    max_shift = require_int(max_shift, "max_shift", 0)
    dims = len(size)
    if any(n + max_shift > m for n, m in zip(size, images.shape[-dims:])):
        raise fold_error("max_shift", max_shift, f"input_size + max_shift must fit in the images {tuple(images.shape[-dims:])}")
    _check_memory(model, images, size, "two passes over every image's crops")
    offsets = torch.randint(0, max_shift + 1, (2, images.shape[0], dims), generator=generator).tolist()
    with torch.no_grad():
        outs = [model(torch.stack([_crop(img, off, size) for img, off in zip(images, offsets[k])])) for k in range(2)]
    mean = torch.cat(outs).mean(dim=0, keepdim=True)
    result = []
    for pair in (outs, [o - mean for o in outs]):
        a, b = pair[0].argmax(dim=1), pair[1].argmax(dim=1)
        result.append(Consistency(int((a == b).sum()), int(images.shape[0]), int(torch.cat([a, b]).unique().numel()), int(outs[0].shape[1])))
    return result[0], result[1]
