"""Dense-equivalent costs: analytic operator nonzeros against the explicit operator, D2L numbers (COUNT-4)."""
from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foldconv.analysis.counting import count
from foldconv.analysis.counting.dense import (
    axis_pairs,
    dense_equivalent,
    dense_equivalents,
    fc_params,
    parameter_ladder,
)
from foldconv.specs import ConvSpec
from helpers import examples


def explicit_operator(spec: ConvSpec, size) -> torch.Tensor:
    """The conv's matrix, column by column: the conv applied to every basis input (all-ones weights,
    so touched entries are positive and nothing cancels)."""
    conv = spec.replace(bias=False).to_module(dtype=torch.float64)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        n_in = spec.in_channels * math.prod(size)
        basis = torch.eye(n_in, dtype=torch.float64).reshape((n_in, spec.in_channels) + tuple(size))
        return conv(basis).reshape(n_in, -1).T


@st.composite
def specs(draw):
    dims = draw(st.integers(1, 2))
    groups = draw(st.sampled_from([1, 2]))
    cin, cout = groups * draw(st.integers(1, 2)), groups * draw(st.integers(1, 2))
    k = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    d = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    n = tuple(draw(st.integers(dd * (kk - 1) + 1, 7)) for kk, dd in zip(k, d))
    mode = draw(st.sampled_from(["zeros", "circular", "reflect", "replicate"]))
    p = tuple(draw(st.integers(0, 4)) for _ in range(dims))
    if mode in ("reflect", "circular"):
        p = tuple(min(pp, nn_ - 1) for pp, nn_ in zip(p, n))
    s = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    spec = ConvSpec.make(dims, cin, cout, k, stride=s, padding=p, dilation=d, groups=groups, padding_mode=mode)
    return spec, n


@pytest.mark.claim("COUNT-4")
@settings(max_examples=examples(80))
@given(specs())
def test_analytic_nonzeros_equal_explicit_operator(case):
    spec, size = case
    op = explicit_operator(spec, size)
    d = dense_equivalent(spec, size)
    assert d.operator_nonzeros == int((op != 0).sum())
    assert d.operator_entries == op.numel()
    assert d.dense_params == op.numel() + op.shape[0]  # + one bias per output element
    assert d.distinct_weights == math.prod(spec.weight_shape)
    assert d.local_params == d.operator_nonzeros + op.shape[0]


@pytest.mark.claim("COUNT-4")
def test_d2l_numbers():
    assert fc_params((1, 1000, 1000), (1000,), bias=False) == 10**9
    rows = parameter_ladder(1000, 1000, 10, hidden=1000)
    assert [row.params for row in rows] == [10**9, 10**12, 20890**2, 1999**2, 441]
    question = dense_equivalent(ConvSpec.make(2, 256, 256, 3, padding=1), (32, 32))
    assert question.conv_params == 590_080 and question.dense_params == (256 * 1024) ** 2 + 256 * 1024
    assert question.operator_nonzeros == 256 * 256 * 94 * 94  # 32*3-2 touched pairs per axis


@pytest.mark.claim("FC-4")
def test_the_d2l_ladder_each_principle_alone_then_both():
    rows = parameter_ladder(1000, 1000, 10, hidden=1000)
    assert [(row.local, row.shared) for row in rows] == [(False, False), (False, False), (True, False), (False, True), (True, True)]
    assert 100 <= rows[-1].params < 1000  # "a few hundred"
    assert all(a.params > b.params for a, b in zip(rows[1:], rows[2:]))  # each principle cuts, both cut most
    # Channels multiply the image-to-map rungs; locality alone is the operator's nonzeros, counted explicitly.
    small = parameter_ladder(6, 6, 1, in_channels=3, out_channels=4)
    assert [row.params for row in small] == [36**2 * 12, 12 * (6 * 3 - 2) ** 2, 11**2 * 12, 4 * 3 * 9]  # no hidden-vector rung
    spec = ConvSpec.make(2, 3, 4, 3, padding=1, bias=False)
    assert small[1].params == int((explicit_operator(spec, (6, 6)) != 0).sum())


def test_axis_pairs_zero_padding_closed_form():
    # Every (output, tap) pair lands inside when there is no padding.
    assert axis_pairs(10, 3) == 8 * 3
    assert axis_pairs(10, 3, stride=2, padding=1, dilation=2, mode="zeros") == sum(
        1 for j in range((10 + 2 - 4 - 1) // 2 + 1) for t in range(3) if 0 <= 2 * j - 1 + 2 * t < 10
    )


def test_dense_rows_of_a_model():
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.resnet18()
    rows = {row["layer"]: row for row in dense_equivalents(count(net, (1, 3, 224, 224)))}
    assert len(rows) == 20  # 17 convs on the main path + 3 downsample projections
    stem = rows["conv1"]
    assert stem["conv_params"] == 9408 and stem["dense_params"] == 3 * 224 * 224 * 64 * 112 * 112
    assert 0 < stem["density"] < 1e-3
