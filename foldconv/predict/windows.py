"""Integer verdicts of the literal fold: channel maps in closed form, window index maps per axis.

Nothing here builds a tensor, and nothing grows with the channel count or the input size:

- a channel order is a mixed-radix number, so ``channel(c, i) = c*stride_c + sum_a i_a*stride_a`` and two
  channel maps agree on the whole block ``[0, G) x [0, r)`` exactly when their strides agree on every axis of
  size > 1 (:func:`pairs_own_channels`);
- on one spatial axis, an output whose windows (original and literal) lie inside the input reads the same
  pixels iff ``i*(S' - r*S) == P' - r*P`` (and ``d == 1`` when ``r > 1``), so the interior is decided by one
  equation and only the outputs that touch padding are enumerated (:func:`literal_by_windows`): the cost is
  ``O(dims * (P/S + P'/S' + 2) * r*K)``, independent of the input size.

Example:
    >>> pairs_own_channels(8, 2, FoldSpec.make(2, "crd"), ("c", "rh", "rw"))
    True
    >>> pairs_own_channels(8, 2, FoldSpec.make(2, "dcr"), ("rh", "rw", "c"))
    False
"""
from __future__ import annotations

import itertools
import math
from typing import Dict, FrozenSet, Sequence, Set, Tuple

from .._validate import FACTOR_NAMES, conv_output_size
from ..check import Verdict
from ..padding import padded_source
from ..specs import ConvSpec, FoldSpec

__all__ = [
    "order_strides",
    "pairs_own_channels",
    "orders_equivalent",
    "folded_output_alignment",
    "literal_by_windows",
]


def order_strides(order: Sequence[str], sizes: Dict[str, int]) -> Dict[str, int]:
    """Stride of every axis of a channel order read as a mixed-radix number (the last axis varies fastest).

    Example:
        >>> order_strides(("c", "rh", "rw"), {"c": 3, "rh": 2, "rw": 2})
        {'rw': 1, 'rh': 2, 'c': 4}
    """
    strides, step = {}, 1
    for name in reversed(tuple(order)):
        strides[name] = step
        step *= sizes[name]
    return strides


def _sizes(fold: FoldSpec, folded_channels: int) -> Dict[str, int]:
    return {"c": folded_channels, **dict(zip(FACTOR_NAMES[fold.dims], fold.r))}


def pairs_own_channels(in_channels: int, groups: int, fold: FoldSpec, input_order: Sequence[str]) -> bool:
    """Does the literal fold pair every weight with its own channel, in every folded group?

    The literal folds each group's weight (``in_channels/groups`` channels, order ``fold.order``) and the
    input (all channels, ``input_order``); folded channel ``f`` is in folded group ``f // Gw`` with
    ``Gw = in_channels / (groups*prod(r))``. Both sides name channel
    ``group*in_channels/groups + weight_map(f mod Gw, i)`` for every folded channel and sub-pixel exactly when
    the strides agree (callers check the divisibility first).

    Example:
        >>> pairs_own_channels(4, 2, FoldSpec.make(2, "rw c", 1), ("c", "rw"))  # an order undoing another
        True
    """
    R = fold.block
    G, Gw = in_channels // R, in_channels // (groups * R)
    x = order_strides(input_order, _sizes(fold, G))
    w = order_strides(fold.order, _sizes(fold, Gw))
    if any(f > 1 and x[name] != w[name] for name, f in zip(FACTOR_NAMES[fold.dims], fold.r)):
        return False
    if Gw > 1 and x["c"] != w["c"]:
        return False
    return groups == 1 or Gw * x["c"] == in_channels // groups


def orders_equivalent(a: Sequence[str], b: Sequence[str], *, r: Sequence[int], channels: int) -> bool:
    """Do two channel orders give the same channel map for these factors? (Size-1 factors don't count.)

    Example:
        >>> orders_equivalent(("c", "rh", "rw"), ("rh", "rw", "c"), r=(2, 2), channels=4)  # G = 1
        True
        >>> orders_equivalent(("c", "rh", "rw"), ("rh", "rw", "c"), r=(2, 2), channels=8)
        False
    """
    sizes = dict(zip(FACTOR_NAMES[len(r)], r))
    sizes["c"] = channels // math.prod(r)
    strip = lambda order: tuple(n for n in order if sizes[n] > 1)
    return strip(a) == strip(b)


def folded_output_alignment(out_len: int, folded_out_len: int, *, r: int, stride: int, folded_stride: int) -> Tuple[int, int]:
    """For a folded stride ``S'``: (#original outputs that appear in the folded output, #original outputs).

    Folded output ``i`` equals original output ``j`` exactly when ``i*S' == j*r*S``: ``j`` must be a multiple
    of ``m = S'/gcd(r*S, S')`` and ``j*r*S/S'`` a folded index.

    Example:
        >>> folded_output_alignment(5, 9, r=2, stride=1, folded_stride=1)  # every original output, at even i
        (5, 5)
        >>> folded_output_alignment(5, 3, r=2, stride=1, folded_stride=3)  # j = 0, 3
        (2, 5)
    """
    step = r * stride
    m = folded_stride // math.gcd(step, folded_stride)
    by_range = -(-out_len // m)
    by_folded = -(-(folded_out_len * folded_stride) // (m * step))
    return min(by_range, by_folded), out_len


Taps = FrozenSet[Tuple[int, int, int, int]]


def _taps(i: int, n: int, k: int, s: int, p: int, d: int, mode: str, f: int, S2: int, P2: int) -> Tuple[Taps, Taps]:
    """Output ``i``'s (kernel tap, weight sub-pixel, input row, input sub-pixel) pairs, original and literal.

    Zero-padding taps are dropped; other modes read the pixel :func:`foldconv.padding.padded_source` names.
    """
    orig = set()
    for t in range(k):
        src = padded_source(i * s - p + t * d, n, mode)
        if src is not None:
            orig.update((t, sub, src, sub) for sub in range(f))
    lit = set()
    for t2 in range(f * k):
        src = padded_source(i * S2 - P2 + t2 * d, n * f, mode)
        if src is not None:
            lit.add((t2 // f, t2 % f, src // f, src % f))
    return frozenset(orig), frozenset(lit)


Kind = Tuple[bool, bool, bool]  # (reads the same pairs, original window all zero padding, literal all zero padding)


def _axis_kinds(n: int, k: int, s: int, p: int, d: int, mode: str, f: int, out_len: int, S2: int, P2: int) -> Set[Kind]:
    """The kinds of outputs on one axis (whose literal output length equals ``out_len``)."""
    # Outputs whose windows (both forms) lie inside the input: i >= lo and i <= hi.
    lo = max(0, -(-p // s), -(-P2 // S2))
    hi = min(out_len - 1, (n - 1 + p - (k - 1) * d) // s, (n * f - 1 + P2 - (f * k - 1) * d) // S2)
    kinds: Set[Kind] = set()
    if lo <= hi:
        # Per (tap t, sub-pixel u): the literal reads folded row i*S' - P' + (t*r + u)*d, which is sub-pixel u
        # of original row i*S - P + t*d iff i*(S' - r*S) - (P' - r*P) + u*(d - 1) == 0 for every u < r.
        contiguous = f == 1 or d == 1
        slope, offset = S2 - f * s, P2 - f * p
        if slope == 0:
            kinds.add((contiguous and offset == 0, False, False))
        else:
            i0, rem = divmod(offset, slope)
            hit = contiguous and rem == 0 and lo <= i0 <= hi
            if hit:
                kinds.add((True, False, False))
            if not hit or hi > lo:
                kinds.add((False, False, False))
    border = itertools.chain(range(0, min(lo, out_len)), range(max(hi + 1, lo), out_len)) if lo <= hi else range(out_len)
    for i in border:
        o, l = _taps(i, n, k, s, p, d, mode, f, S2, P2)
        kinds.add((o == l and bool(o), not o, not l))
    return kinds


def literal_by_windows(
    spec: ConvSpec, fold: FoldSpec, input_size: Sequence[int], stride_f: Sequence[int], padding_f: Sequence[int], *, channels_ok: bool
) -> Verdict:
    """Exact verdict of a literal fold whose output shape equals the original's (integers only, no tensors).

    An output equals the original's when, on every axis, both read the same (weight tap, input pixel) pairs
    and the channel maps pair every weight with its own channel, or when each side has some axis whose window
    lies entirely in zero padding (both are then the bias). Outputs are products of per-axis outputs, so the
    set of per-axis kinds decides.

    Example:
        >>> spec = ConvSpec.make(2, 4, 2, 3, padding=1)
        >>> literal_by_windows(spec, FoldSpec.make(2), (4096, 4096), (2, 2), (2, 2), channels_ok=True).value
        'equivalent'
    """
    out = conv_output_size(input_size, spec.kernel_size, spec.stride, spec.padding, spec.dilation)
    per_axis = [
        _axis_kinds(input_size[a], spec.kernel_size[a], spec.stride[a], spec.padding[a], spec.dilation[a], spec.padding_mode,
                    fold.r[a], out[a], stride_f[a], padding_f[a])
        for a in range(spec.dims)
    ]
    for combo in itertools.product(*per_axis):
        if any(c[1] for c in combo) and any(c[2] for c in combo):
            continue  # both sides read only zero padding here: both are the bias
        if not (channels_ok and all(c[0] for c in combo)):
            return Verdict.NOT_EQUIVALENT
    return Verdict.EQUIVALENT
