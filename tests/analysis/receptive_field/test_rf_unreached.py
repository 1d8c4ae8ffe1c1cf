"""Outputs no input reaches: a strided, dilated transposed conv leaves some outputs to its bias alone (the
gradient of such an output with respect to the input is zero). Their receptive field is empty: ``box`` and
``support`` are None there, and everywhere else the box is the hull of the gradient's non-zero pattern."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from foldconv.analysis.receptive_field import receptive_field
from helpers import examples


def _measured(model: nn.Module, shape, index):
    """The hull of the float64 gradient support of one output position (all-ones weights: no cancellation)."""
    x = torch.ones(shape, dtype=torch.float64, requires_grad=True)
    y = model(x)
    (g,) = torch.autograd.grad(y[(0, slice(None)) + tuple(index)].sum(), x)
    nz = g[0].abs().sum(0).nonzero()
    if len(nz) == 0:
        return None
    return tuple((int(nz[:, a].min()), int(nz[:, a].max())) for a in range(nz.shape[1]))


@st.composite
def transposed(draw):
    dims = draw(st.sampled_from([1, 2]))
    k = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    s = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    d = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    p = tuple(draw(st.integers(0, dd * (kk - 1))) for kk, dd in zip(k, d))
    op = tuple(draw(st.integers(0, max(ss, dd) - 1)) for ss, dd in zip(s, d))
    size = tuple(draw(st.integers(1, 5)) for _ in range(dims))
    cls = (nn.ConvTranspose1d, nn.ConvTranspose2d)[dims - 1]
    try:
        conv = cls(1, 1, k, stride=s, padding=p, output_padding=op, dilation=d, bias=False)
        out = conv(torch.zeros((1, 1) + size))
    except RuntimeError:  # output_padding torch refuses, an empty output
        conv, out = None, None
    if conv is None or out.numel() == 0:
        conv = cls(1, 1, k, stride=s, dilation=d, bias=False)
    return conv, (1, 1) + size


@pytest.mark.claim("RF-2")
@settings(max_examples=examples(30))
@given(transposed())
def test_box_is_none_exactly_where_no_input_reaches_and_the_gradient_hull_elsewhere(case):
    conv, shape = case
    model = nn.Sequential(conv).double()
    with torch.no_grad():
        conv.weight.fill_(1.0)
    report = receptive_field(model, shape)
    out_shape = model(torch.zeros(shape, dtype=torch.float64)).shape[2:]
    for index in torch.cartesian_prod(*(torch.arange(n) for n in out_shape)).reshape(-1, len(out_shape)).tolist():
        measured = _measured(model, shape, index)
        assert report.box(index=tuple(index)) == measured, (conv, shape, index)
        assert (report.support(index=tuple(index)) is None) == (measured is None), (conv, shape, index)


@pytest.mark.claim("RF-2")
def test_the_reported_strided_dilated_transposed_conv():
    conv = nn.ConvTranspose1d(1, 1, 2, stride=2, dilation=3, bias=False)  # input i reaches outputs 2i and 2i + 3
    report = receptive_field(nn.Sequential(conv), (1, 1, 3))
    assert [report.box(index=(o,)) for o in range(8)] == [((0, 0),), None, ((1, 1),), ((0, 0),), ((2, 2),), ((1, 1),), None, ((2, 2),)]
