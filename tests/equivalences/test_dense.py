"""Conv as a constrained fully-connected layer (FC-1..4): dense operators, D2L's V, permutations, shifts."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foldconv import ConvSpec, FoldError, depth_to_space, fold_conv
from foldconv.equivalences.dense import (
    DenseOperator,
    dense_operator,
    layout_permutation,
    offset_tensor,
    shift_violations,
)
from helpers import examples, integer_weights


@pytest.mark.claim("FC-1")
@pytest.mark.parametrize("stride,padding", [(1, 1), (1, 0), (2, 1)])
def test_dense_operator_reproduces_conv_and_d2l_reindexing(stride, padding):
    conv = integer_weights(torch.nn.Conv2d(2, 3, 3, stride=stride, padding=padding))
    op = dense_operator(conv, (1, 2, 5, 6))
    x = torch.randint(-9, 10, (4, 2, 5, 6)).double()
    assert torch.equal(op.apply(x), conv(x))
    W = op.as_tensor()  # W[o, i, j, c, k, l]
    o, i, j, c = 1, 1, 2, 0
    k, l = i * stride - padding + 1, j * stride - padding + 2
    assert W[o, i, j, c, k, l] == conv.weight[o, c, 1, 2]
    assert torch.equal(W[o, i, j, c, k - 1 : k + 2, l - 2 : l + 1], conv.weight[o, c])  # the window is the kernel
    assert W[o, i, j, c].abs().sum() == conv.weight[o, c].abs().sum()  # nothing outside it
    v = offset_tensor(op, stride)
    assert v.translation_violations().shape[0] == 0
    delta = max(padding, 2 - padding)
    assert v.locality_violations(delta).shape[0] == 0
    assert v.locality_violations(delta - 1).shape[0] > 0  # the kernel really reaches Delta
    # V[a, b] is the kernel: offset a = k - i*S = tap - P
    i0 = (1, 1)
    tap = v.values[o, i0[0], i0[1], c]
    centre = [int((v.offsets[t] == 0).nonzero()) for t in range(2)]
    assert tap[centre[0] - padding + 0, centre[1] - padding + 2] == conv.weight[o, c, 0, 2]


@pytest.mark.claim("FC-1")
def test_violations_locate_a_position_dependent_or_far_entry():
    conv = integer_weights(torch.nn.Conv2d(1, 1, 3, padding=1, bias=False))
    op = dense_operator(conv, (1, 1, 5, 5))
    W = op.as_tensor().clone()
    W[0, 2, 3, 0, 1, 3] += 1  # output (2,3), input (1,3): offset (-1, 0), inside the window
    W[0, 0, 0, 0, 4, 4] = 5  # output (0,0), input (4,4): offset (4, 4), outside any 3x3 window
    bad = DenseOperator(W.reshape(25, 25), op.bias, op.input_shape, op.output_shape)
    v = offset_tensor(bad)
    far = v.locality_violations(1)
    assert far.tolist() == [[0, 0, 0, 0, 4, 4]]
    rows = {tuple(r) for r in v.translation_violations().tolist()}
    # The changed entry differs from its neighbours at the same offset; a pair is reported at its first
    # member. Offset (4, 4) is inside the image only for output (0, 0): no neighbour to compare, locality only.
    assert rows == {(0, 1, 3, 0, -1, 0), (0, 2, 3, 0, -1, 0), (0, 2, 2, 0, -1, 0)}
    assert offset_tensor(op).translation_violations().shape[0] == 0


@pytest.mark.claim("FC-2")
@settings(max_examples=examples(25))
@given(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 2), st.integers(0, 1), st.sampled_from(["crd", "dcr", "focus"]), st.integers(1, 2)
)
def test_folded_conv_matrix_is_original_with_permuted_columns(r, k, s, p, order, g):
    conv = integer_weights(torch.nn.Conv2d(g * r * r, 2, k, stride=s, padding=p), seed=r * 10 + k)
    n = max(k, 2) + 1
    shape = (1, g * r * r, n, n + 1)
    big = fold_conv(conv, r, order)
    original = dense_operator(conv, shape)
    folded = dense_operator(big, (1, g, r * n, r * (n + 1)))
    perm = layout_permutation(lambda x: depth_to_space(x, r, order), shape)
    assert torch.equal(folded.matrix, original.matrix[:, perm])
    assert torch.equal(folded.bias, original.bias)
    if r > 1 and g * r * r > 1:
        other = "dcr" if order != "dcr" else "crd"
        wrong = layout_permutation(lambda x: depth_to_space(x, r, other), shape)
        if not torch.equal(wrong, perm):
            assert not torch.equal(folded.matrix, original.matrix[:, wrong])


@pytest.mark.claim("FC-3")
@pytest.mark.parametrize("r,s", [(2, 1), (3, 1), (2, 2)])
def test_folded_conv_is_shift_invariant_only_for_multiples_of_r_times_s(r, s):
    conv = integer_weights(torch.nn.Conv1d(r, 1, 3, stride=s, padding=1, bias=False), seed=r + s)
    n = 8
    original = dense_operator(conv, (1, r, n))
    folded = dense_operator(fold_conv(conv, (r,)), (1, 1, r * n))
    assert shift_violations(original, (s,), (1,)) == 0
    assert shift_violations(folded, (r * s,), (1,)) == 0
    assert shift_violations(folded, (2 * r * s,), (2,)) == 0
    n_out = folded.output_shape[2]
    for delta in range(1, r * s):
        for out_shift in range(n_out):
            assert shift_violations(folded, (delta,), (out_shift,)) > 0, (delta, out_shift)


@pytest.mark.claim("FC-4")
def test_real_operator_counts():
    """The ladder's rungs in numbers are a count (tests/analysis/counting/test_count_dense.py); here, a real operator."""
    conv = torch.nn.Conv2d(3, 4, 3, padding=1)
    op = dense_operator(conv, (1, 3, 6, 6))
    assert op.matrix.numel() == (3 * 36) * (4 * 36)
    assert ConvSpec.from_module(conv).params == 4 * 3 * 9 + 4
    assert op.params == 3 * 36 * 4 * 36 + 4 * 36


def test_error_paths():
    with pytest.raises(FoldError, match="input_shape="):
        dense_operator(torch.nn.Conv2d(1, 1, 1), (1, 0, 3))
    with pytest.raises(FoldError, match="input_shape="):
        dense_operator(torch.nn.Conv2d(1, 1, 1), (1, 1, 200, 200))
    op = dense_operator(torch.nn.Conv2d(1, 1, 3), (1, 1, 4, 4))
    with pytest.raises(FoldError, match="stride="):
        offset_tensor(op, 0)
    with pytest.raises(FoldError, match="delta="):
        offset_tensor(op).locality_violations(-1)
    with pytest.raises(FoldError, match="out_shift="):
        shift_violations(op, (1, 1), (5, 0))
    with pytest.raises(FoldError, match="layout="):
        layout_permutation(lambda x: x[..., :1], (1, 1, 2, 2))
    with pytest.raises(FoldError, match="op.input_shape="):
        offset_tensor(dense_operator(torch.nn.Flatten(), (1, 1, 2, 2)))
