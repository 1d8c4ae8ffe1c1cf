"""A convolution is a fully-connected layer with translation invariance and locality (D2L).

Any linear (affine) map of one sample ``(1, C, *S)`` is a matrix ``M`` (plus a bias): :func:`dense_operator`
materialises it by applying the map to the standard basis. For images, ``M`` read as the tensor
``W[o, i, j, c, k, l]`` is D2L's 4th-order weight (with channels); re-indexing the input position as an offset
from the output position, ``V[o, i, j, c, a, b] = W[o, i, j, c, i*S + a, j*S + b]`` (D2L uses ``S = 1``),
gives :class:`OffsetTensor`. A conv is the FC layer whose ``V`` does not depend on ``(i, j)`` (translation
invariance) and vanishes outside a window ``|a|, |b| <= Delta`` (locality); both checks return the entries
that break them, so a position-dependent or non-local operator is located, not just rejected.

The folded big conv (``foldconv.fold_conv``) has exactly the original's matrix with its columns permuted by
the input layout change (:func:`layout_permutation`); rows are unchanged. As a map on the folded grid it is
translation invariant only for input shifts that are multiples of ``r*S`` (:func:`shift_violations`).
D2L's ladder in parameter counts is a count: :func:`foldconv.analysis.counting.parameter_ladder`.
"""
from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Callable, List, Sequence, Tuple, Union

import einops
import torch
from torch import nn

from .._validate import per_axis_ints, require_allocation
from ..errors import fold_error

__all__ = [
    "DenseOperator",
    "OffsetTensor",
    "dense_operator",
    "offset_tensor",
    "layout_permutation",
    "shift_violations",
]


def _names(prefix: str, n: int) -> List[str]:
    return [f"{prefix}{i}" for i in range(n)]


@dataclass(frozen=True)
class DenseOperator:
    """The matrix of an affine map on one sample: ``flatten(f(x)) = matrix @ flatten(x) + bias``.

    ``input_shape``/``output_shape`` are the full shapes of one sample, ``(1, C, *S)``; flattening is
    row-major (channel, then spatial axes in order).
    """

    matrix: torch.Tensor
    bias: torch.Tensor
    input_shape: Tuple[int, ...]
    output_shape: Tuple[int, ...]

    @property
    def params(self) -> int:
        """Free parameters of a fully-connected layer with this shape: every matrix entry and every bias."""
        return self.matrix.numel() + self.bias.numel()

    def as_tensor(self) -> torch.Tensor:
        """D2L's weight tensor ``W[o, *out_pos, c, *in_pos]`` (shape ``output_shape[1:] + input_shape[1:]``).

        Example:
            >>> op = dense_operator(torch.nn.Conv2d(1, 1, 3, bias=False), (1, 1, 4, 4))
            >>> tuple(op.as_tensor().shape)
            (1, 2, 2, 1, 4, 4)
        """
        outs, ins = _names("o", len(self.output_shape) - 1), _names("i", len(self.input_shape) - 1)
        sizes = dict(zip(outs, self.output_shape[1:]), **dict(zip(ins, self.input_shape[1:])))
        return einops.rearrange(self.matrix, f"({' '.join(outs)}) ({' '.join(ins)}) -> {' '.join(outs + ins)}", **sizes)

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """Run the operator as a fully-connected layer on a batch ``(B, *input_shape[1:])``.

        Example:
            >>> op = dense_operator(torch.nn.Conv1d(1, 2, 1), (1, 1, 3))
            >>> op.apply(torch.zeros(5, 1, 3)).shape
            torch.Size([5, 2, 3])
        """
        if not isinstance(x, torch.Tensor) or tuple(x.shape[1:]) != tuple(self.input_shape[1:]):
            raise fold_error("x.shape", tuple(getattr(x, "shape", ())), f"must be (B, *{tuple(self.input_shape[1:])}), the operator's sample shape")
        ins, outs = _names("i", len(self.input_shape) - 1), _names("o", len(self.output_shape) - 1)
        flat = einops.rearrange(x, f"b {' '.join(ins)} -> b ({' '.join(ins)})")
        y = flat.to(self.matrix.dtype) @ self.matrix.T + self.bias
        return einops.rearrange(y, f"b ({' '.join(outs)}) -> b {' '.join(outs)}", **dict(zip(outs, self.output_shape[1:])))


def _sample_shape(input_shape: Sequence[int], param: str = "input_shape") -> Tuple[int, ...]:
    """``(1, C, *S)`` validated: one sample, every size >= 1."""
    if isinstance(input_shape, (str, torch.Tensor)) or not isinstance(input_shape, Sequence):
        raise fold_error(param, input_shape, "must be the full shape (1, C, *spatial) of one sample")
    shape = per_axis_ints(tuple(input_shape), len(input_shape), param, 1) if len(input_shape) else ()
    if len(shape) < 2 or shape[0] != 1:
        raise fold_error(param, tuple(input_shape), "must be the full shape (1, C, *spatial) of one sample, sizes >= 1")
    return shape


def _operator_bytes(fn: Callable[[torch.Tensor], torch.Tensor], shape: Tuple[int, ...], dtype: torch.dtype) -> int:
    """What :func:`dense_operator` allocates: the ``n x n`` identity batch, the ``n x m`` image and the matrix;
    ``m`` (the output entries) read from one run on meta tensors, taken as ``n`` when the map cannot run there."""
    n = math.prod(shape)
    m = n
    try:
        probe = copy.deepcopy(fn).to(device="meta", dtype=dtype) if isinstance(fn, nn.Module) else fn
        with torch.no_grad():
            out = probe(torch.empty((1,) + shape, device="meta", dtype=dtype))
        m = out.numel() if isinstance(out, torch.Tensor) else n
    except Exception:  # noqa: BLE001 (a function without a meta path: the output taken as large as the input)
        pass
    return torch.empty((), dtype=dtype).element_size() * n * (n + 2 * m)


def dense_operator(
    fn: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int], *, dtype: torch.dtype = torch.float64
) -> DenseOperator:
    """Materialise the matrix of an affine map (a conv, a folded conv, a layout change...) on one sample.

    Column ``q`` is ``f(e_q) - f(0)``; the bias is ``f(0)``. Modules are copied and run in ``dtype``, so with
    integer-valued weights the matrix is exact. The cost is one batch of ``prod(input_shape)`` inputs.

    Args:
        fn: a module or a function mapping a batch ``(B, C, *S)`` to a batch ``(B, ...)``, affine in its input.
        input_shape: the shape of one sample, ``(1, C, *spatial)``, every size >= 1.
        dtype: the dtype the matrix is computed in (default ``torch.float64``).

    Returns:
        A :class:`~foldconv.equivalences.dense.DenseOperator`: ``matrix`` (outputs x inputs), ``bias``,
        ``input_shape``, ``output_shape``; ``apply(x)`` and ``as_tensor()``.

    Raises:
        FoldError: naming ``fn`` (not callable, or not batch to batch) or ``input_shape`` (malformed, refused by
        ``fn`` or above foldconv's allocation limit).

    Example:
        >>> conv = torch.nn.Conv1d(1, 1, 2, bias=False)
        >>> with torch.no_grad():
        ...     _ = conv.weight.copy_(torch.tensor([[[1., 2.]]]))
        >>> dense_operator(conv, (1, 1, 3)).matrix.tolist()
        [[1.0, 2.0, 0.0], [0.0, 1.0, 2.0]]
    """
    shape = _sample_shape(input_shape)[1:]
    n = math.prod(shape)
    if not callable(fn):
        raise fold_error("fn", type(fn).__name__, "must be a module or a function of a batch (B, C, *S)")
    require_allocation(_operator_bytes(fn, shape, dtype), param="input_shape", value=(1,) + shape,
                     what=f"a dense operator on {n:,} input entries (the identity batch, its image and the matrix)")
    if isinstance(fn, nn.Module):
        fn = copy.deepcopy(fn).to(dtype)
    ins = _names("i", len(shape))
    eye = torch.eye(n, dtype=dtype)
    basis = einops.rearrange(eye, f"n ({' '.join(ins)}) -> n {' '.join(ins)}", **dict(zip(ins, shape)))
    try:
        with torch.no_grad():
            zero = fn(torch.zeros((1,) + shape, dtype=dtype))
            out = fn(basis)
    except RuntimeError as err:  # torch's shape errors: the map does not take this input shape
        raise fold_error("input_shape", (1,) + shape, f"is not accepted by fn: {str(err).splitlines()[0]}") from None
    if not isinstance(out, torch.Tensor) or out.dim() < 1 or out.shape[0] != n or not isinstance(zero, torch.Tensor):
        raise fold_error("fn", getattr(fn, "__name__", type(fn).__name__), "must map a batch (B, C, *S) to a batch (B, ...)")
    out_shape = tuple(out.shape[1:])
    outs = _names("o", len(out_shape))
    columns = einops.rearrange(out - zero, f"n {' '.join(outs)} -> ({' '.join(outs)}) n")
    bias = einops.rearrange(zero, f"1 {' '.join(outs)} -> ({' '.join(outs)})")
    return DenseOperator(columns, bias, (1,) + shape, (1,) + out_shape)


@dataclass(frozen=True)
class OffsetTensor:
    """D2L's ``V[o, *i, c, *a] = W[o, *i, c, *(i*S + a)]`` with a mask of the entries inside the input.

    ``offsets[t]`` lists the offset values of spatial axis ``t`` (``a`` runs from ``-(n_out-1)*S`` to ``n-1``).
    """

    values: torch.Tensor
    valid: torch.Tensor
    offsets: Tuple[torch.Tensor, ...]
    stride: Tuple[int, ...]

    @property
    def dims(self) -> int:
        return len(self.offsets)

    def translation_violations(self) -> torch.Tensor:
        """Entries where ``V`` changes between neighbouring output positions: rows ``(o, *i, c, *a)``.

        Empty exactly when ``V[o, *i, c, *a]`` is the same for every output position ``i`` at which the offset
        lands inside the input (for a fixed offset those positions form a box, so neighbours suffice).
        Offsets are reported as values, not indices.

        Example:
            >>> v = offset_tensor(dense_operator(torch.nn.Conv2d(1, 1, 3, padding=1), (1, 1, 4, 4)))
            >>> v.translation_violations().shape[0]
            0
        """
        dims = self.dims
        bad = []
        for t in range(dims):
            axis = 1 + t
            n = self.values.shape[axis]
            if n < 2:
                continue
            a = self.values.narrow(axis, 0, n - 1)
            b = self.values.narrow(axis, 1, n - 1)
            ma = self.valid.narrow(t, 0, n - 1)
            mb = self.valid.narrow(t, 1, n - 1)
            both = einops.rearrange(ma & mb, "... -> 1 ...")
            both = both.unsqueeze(1 + dims)  # align with the channel axis c of values (o, *i, c, *a)
            differ = (a != b) & both
            bad.append(torch.nonzero(differ))
        if not bad:
            return torch.zeros((0, 2 + 2 * dims), dtype=torch.int64)
        rows = torch.unique(torch.cat(bad), dim=0)
        return self._offset_values(rows)

    def locality_violations(self, delta: Union[int, Sequence[int]]) -> torch.Tensor:
        """Non-zero entries with ``|a_t| > delta_t`` on some axis: rows ``(o, *i, c, *a)`` (offsets as values).

        Example:
            >>> v = offset_tensor(dense_operator(torch.nn.Conv2d(1, 1, 3, padding=1), (1, 1, 4, 4)))
            >>> v.locality_violations(1).shape[0], v.locality_violations(0).shape[0] > 0
            (0, True)
        """
        dims = self.dims
        deltas = per_axis_ints(delta, dims, "delta", 0)
        far = torch.zeros(self.valid.shape[dims:], dtype=torch.bool)
        for t, (values, d) in enumerate(zip(self.offsets, deltas)):
            shape = [1] * dims
            shape[t] = -1
            far = far | (values.abs() > d).reshape(shape)
        outside = self.valid & far  # broadcast over output positions
        outside = einops.rearrange(outside, "... -> 1 ...").unsqueeze(1 + dims)
        rows = torch.nonzero((self.values != 0) & outside)
        return self._offset_values(rows)

    def _offset_values(self, rows: torch.Tensor) -> torch.Tensor:
        rows = rows.clone()
        for t, values in enumerate(self.offsets):
            col = 2 + self.dims + t
            rows[:, col] = values[rows[:, col]]
        return rows


def offset_tensor(op: DenseOperator, stride: Union[int, Sequence[int]] = 1) -> OffsetTensor:
    """Re-index ``W[o, *i, c, *k]`` to ``V[o, *i, c, *a]`` with ``k = i*stride + a`` (D2L's ``k = i + a``).

    Example:
        >>> op = dense_operator(torch.nn.Conv1d(1, 1, 3, padding=1, bias=False), (1, 1, 5))
        >>> v = offset_tensor(op)
        >>> v.offsets[0].tolist(), tuple(v.values.shape)
        ([-4, -3, -2, -1, 0, 1, 2, 3, 4], (1, 5, 1, 9))
    """
    dims = _spatial_dims(op)
    strides = per_axis_ints(stride, dims, "stride", 1)
    n_in, n_out = op.input_shape[2:], op.output_shape[2:]
    spans = math.prod(n + (m - 1) * s for n, m, s in zip(n_in, n_out, strides))
    entries = op.output_shape[1] * op.input_shape[1] * math.prod(n_out) * spans
    require_allocation(3 * 8 * entries, param="op", value=f"DenseOperator{op.input_shape} -> {op.output_shape}",
                     what=f"an offset tensor of {entries:,} entries (gathered, masked and re-laid out)")
    w = op.as_tensor()  # (o, *i, c, *k)
    offsets = tuple(torch.arange(-(m - 1) * s, n) for n, m, s in zip(n_in, n_out, strides))
    positions, taps, valid = [], [], torch.ones((), dtype=torch.bool)
    for t in range(dims):
        shape = [1] * (2 * dims)
        shape[t] = -1
        i = torch.arange(n_out[t]).reshape(shape)
        shape = [1] * (2 * dims)
        shape[dims + t] = -1
        k = i * strides[t] + offsets[t].reshape(shape)
        inside = (k >= 0) & (k < n_in[t])
        valid = valid & inside
        positions.append(i)
        taps.append(k.clamp(0, n_in[t] - 1))
    gathered = w[(slice(None),) + tuple(positions) + (slice(None),) + tuple(taps)]  # (*i, *a, o, c)
    ins, offs = " ".join(_names("i", dims)), " ".join(_names("a", dims))
    values = einops.rearrange(gathered, f"{ins} {offs} o c -> o {ins} c {offs}")
    mask = einops.rearrange(valid, f"{ins} {offs} -> 1 {ins} 1 {offs}")
    values = values * mask  # entries outside the input are not part of the operator
    return OffsetTensor(values, valid, offsets, strides)


def _spatial_dims(op: DenseOperator) -> int:
    """Spatial dims of an operator between two ``(1, C, *S)`` maps with as many spatial axes."""
    if not isinstance(op, DenseOperator):
        raise fold_error("op", type(op).__name__, "must be a DenseOperator (dense_operator)")
    if len(op.input_shape) != len(op.output_shape) or len(op.input_shape) < 3:
        raise fold_error(
            "op.input_shape", op.input_shape, f"and output_shape={op.output_shape} must both be (1, C, *spatial) with the same number of spatial dims"
        )
    return len(op.input_shape) - 2


def layout_permutation(layout: Callable[[torch.Tensor], torch.Tensor], input_shape: Sequence[int]) -> torch.Tensor:
    """The index permutation a layout change applies: ``flatten(layout(x)) == flatten(x)[perm]``.

    For a folded conv, ``dense(folded).matrix == dense(original).matrix[:, perm]`` with
    ``perm = layout_permutation(lambda x: depth_to_space(x, r, order), original_input_shape)``.

    Example:
        >>> from foldconv import depth_to_space
        >>> layout_permutation(lambda x: depth_to_space(x, 2), (1, 4, 1, 1)).tolist()
        [0, 1, 2, 3]
        >>> layout_permutation(lambda x: depth_to_space(x, 2), (1, 4, 1, 2)).tolist()
        [0, 2, 1, 3, 4, 6, 5, 7]
    """
    shape = _sample_shape(input_shape)[1:]
    require_allocation(3 * 8 * math.prod(shape), param="input_shape", value=(1,) + shape, what="the index permutation of a layout change")
    names = _names("i", len(shape))
    ids = einops.rearrange(torch.arange(math.prod(shape)), f"({' '.join(names)}) -> 1 {' '.join(names)}", **dict(zip(names, shape)))
    moved = layout(ids)
    perm = einops.rearrange(moved, "1 ... -> (...)")
    if perm.numel() != ids.numel() or not torch.equal(torch.sort(perm).values, torch.arange(perm.numel())):
        raise fold_error("layout", getattr(layout, "__name__", "layout"), "must be a permutation of its input's entries")
    return perm


def shift_violations(op: DenseOperator, in_shift: Sequence[int], out_shift: Sequence[int]) -> int:
    """How many entries break ``W[o, i + out_shift, c, k + in_shift] == W[o, i, c, k]`` (both in range).

    Zero means: shifting the input by ``in_shift`` shifts the output by ``out_shift`` (away from borders).
    A stride-``S`` conv has zero for ``in_shift = S*out_shift``; a conv folded by ``r`` only for multiples of
    ``r*S`` on the folded grid.

    Example:
        >>> op = dense_operator(torch.nn.Conv1d(1, 1, 3, stride=2), (1, 1, 9))
        >>> shift_violations(op, (2,), (1,)), shift_violations(op, (1,), (1,)) > 0
        (0, True)
    """
    dims = _spatial_dims(op)
    w = op.as_tensor()
    n_out, n_in = op.output_shape[2:], op.input_shape[2:]
    ins = per_axis_ints(in_shift, dims, "in_shift", -max(n_in) + 1)
    outs = per_axis_ints(out_shift, dims, "out_shift", 0)
    for t, (s_out, s_in) in enumerate(zip(outs, ins)):
        if s_out >= n_out[t]:
            raise fold_error("out_shift", outs, f"must be in [0, {n_out[t]}) on axis {t}")
        if abs(s_in) >= n_in[t]:
            raise fold_error("in_shift", ins, f"must satisfy |in_shift| < {n_in[t]} on axis {t}")
    lo_hi = list(zip(outs, ins))
    a_idx, b_idx = [slice(None)], [slice(None)]
    for (s_out, _), m in zip(lo_hi, n_out):
        a_idx.append(slice(0, m - s_out))
        b_idx.append(slice(s_out, m))
    a_idx.append(slice(None))
    b_idx.append(slice(None))
    for (_, s_in), n in zip(lo_hi, n_in):
        if s_in >= 0:
            a_idx.append(slice(0, n - s_in))
            b_idx.append(slice(s_in, n))
        else:
            a_idx.append(slice(-s_in, n))
            b_idx.append(slice(0, n + s_in))
    return int((w[tuple(a_idx)] != w[tuple(b_idx)]).sum())
