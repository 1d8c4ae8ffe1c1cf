"""Random conv configurations through rewrite: strided <-> SPD and transposed <-> sub-pixel round trips are exact."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from foldconv import Verdict
from foldconv.surgery import rewrite
from helpers import examples, integer_tensor, integer_weights


@st.composite
def strided_convs(draw):
    dims = draw(st.sampled_from([1, 2]))
    k = tuple(draw(st.integers(1, 4)) for _ in range(dims))
    s = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    if all(v == 1 for v in s):
        s = (2,) + s[1:]
    p = tuple(draw(st.integers(0, kk // 2 + 1)) for kk in k)
    d = tuple(draw(st.sampled_from([1, 1, 2])) for _ in range(dims))
    groups = draw(st.sampled_from([1, 2]))
    size = tuple(draw(st.integers(max(kk * dd, 4), 9)) for kk, dd in zip(k, d))
    conv = (nn.Conv1d, nn.Conv2d)[dims - 1](2 * groups, 2, k, stride=s, padding=p, dilation=d, groups=groups,
                                            bias=draw(st.booleans()))
    order = draw(st.sampled_from(["crd", "dcr", "focus"]))
    return conv, (1, 2 * groups) + size, order


@pytest.mark.claim("SURGERY-2")
@settings(max_examples=examples(8))
@given(strided_convs())
def test_strided_to_spd_then_spd_to_strided_through_rewrite(case):
    conv, shape, order = case
    model = integer_weights(nn.Sequential(conv))
    new, report = rewrite(model, shape, [("strided_to_spd", {"order": order}), "spd_to_strided"])
    first, second = report.sites
    assert first.applied and first.exact and first.verdict is Verdict.EQUIVALENT
    # back to one conv unless the SPD form zero-extends the input's end (then it says why)
    assert second.verdict is Verdict.EQUIVALENT or (not second.applied and "zero-extends" in second.reason)
    assert report.ok and report.verification.exact
    x = integer_tensor(shape)
    assert torch.equal(new(x), model(x))  # integer weights and data in float64: bit for bit


@st.composite
def transposed_convs(draw):
    dims = draw(st.sampled_from([1, 2]))
    s = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    k = tuple(draw(st.integers(1, 5)) for _ in range(dims))
    p = tuple(draw(st.integers(0, kk - 1)) for kk in k)
    op = tuple(draw(st.integers(0, ss - 1)) for ss in s)
    size = tuple(draw(st.integers(2, 5)) for _ in range(dims))
    conv = (nn.ConvTranspose1d, nn.ConvTranspose2d)[dims - 1](3, 2, k, stride=s, padding=p, output_padding=op,
                                                              bias=draw(st.booleans()))
    return conv, (1, 3) + size


@pytest.mark.claim("SURGERY-3")
@settings(max_examples=examples(8))
@given(transposed_convs())
def test_transposed_to_subpixel_then_back_through_rewrite(case):
    tconv, shape = case
    model = integer_weights(nn.Sequential(tconv))
    new, report = rewrite(model, shape, ["transposed_to_subpixel", "subpixel_to_transposed"])
    first, second = report.sites
    assert first.applied and first.exact and first.verdict is Verdict.EQUIVALENT
    assert second.applied or second.reason  # a crop that is no padding/output_padding says so
    assert report.ok
    x = integer_tensor(shape)
    assert torch.equal(new(x), model(x))  # integer weights and data in float64: bit for bit
