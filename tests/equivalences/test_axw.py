"""Conv as sum_ab A_ab X W_ab (AXW-1, AXW-2): every layer's output reproduced exactly from its factors."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from foldconv import FoldError, check_equivalence, derived
from foldconv.equivalences.axw import axis_selection, axw_factors
from helpers import examples

CONV = {1: torch.nn.Conv1d, 2: torch.nn.Conv2d, 3: torch.nn.Conv3d}
TCONV = {1: torch.nn.ConvTranspose1d, 2: torch.nn.ConvTranspose2d, 3: torch.nn.ConvTranspose3d}


@st.composite
def layers(draw):
    dims = draw(st.sampled_from([1, 2, 2, 3]))
    ax = lambda lo, hi: tuple(draw(st.integers(lo, hi)) for _ in range(dims))  # noqa: E731
    kernel, stride, dilation = ax(1, 3), ax(1, 2), ax(1, 2)
    groups = draw(st.sampled_from([1, 2]))
    size = ax(4, 5 if dims == 3 else 6)
    if draw(st.booleans()):
        padding = tuple(draw(st.integers(0, min(2, n - 1))) for n in size)
        mode = draw(st.sampled_from(["zeros", "circular", "reflect", "replicate"]))
        layer = CONV[dims](2 * groups, 2 * groups, kernel, stride, padding, dilation, groups, draw(st.booleans()), mode)
    else:
        padding = tuple(draw(st.integers(0, d * (k - 1))) for k, d in zip(kernel, dilation))
        output_padding = tuple(draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation))
        layer = TCONV[dims](2 * groups, 2 * groups, kernel, stride, padding, output_padding, groups, draw(st.booleans()), dilation)
    return layer, size


@pytest.mark.claim("AXW-1")
@settings(max_examples=examples(40))
@given(layers())
def test_every_conv_and_transposed_conv_is_a_sum_of_AXW(case):
    layer, size = case
    try:
        layer.double()(torch.zeros((1, layer.in_channels) + size, dtype=torch.float64))
    except RuntimeError:  # torch refuses this size (empty output): nothing to compare
        return
    report = check_equivalence(layer, derived(lambda m: axw_factors(m, size).apply), (2, layer.in_channels) + size, dtypes=())
    assert report.exact and report.ok, report.summary()


@pytest.mark.claim("AXW-1")
def test_changed_factor_flips_verdict():
    conv = torch.nn.Conv2d(2, 3, 3, padding=1).double()
    with torch.no_grad():
        conv.weight.copy_(torch.randint(-3, 4, conv.weight.shape))
        conv.bias.copy_(torch.randint(-3, 4, conv.bias.shape))
    f = axw_factors(conv, (4, 4))
    assert check_equivalence(conv, f.apply, (2, 2, 4, 4)).ok
    f.terms[4].A[5, 5] = 0  # the centre tap forgets one pixel
    report = check_equivalence(conv, f.apply, (2, 2, 4, 4))
    assert report.exact and not report.ok


@pytest.mark.claim("AXW-2")
def test_1x1_conv_is_linear_over_channels():
    conv = torch.nn.Conv2d(5, 7, 1).double()
    f = axw_factors(conv, (3, 4))
    assert len(f.terms) == 1 and torch.equal(f.terms[0].A, torch.eye(12, dtype=torch.float64))
    linear = torch.nn.Linear(5, 7).double()
    with torch.no_grad():
        linear.weight.copy_(conv.weight[:, :, 0, 0])
        linear.bias.copy_(conv.bias)
    x = torch.randn(2, 5, 3, 4, dtype=torch.float64)
    assert torch.equal(f.terms[0].W, linear.weight.T)
    via_linear = linear(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    assert torch.allclose(conv(x), via_linear, rtol=0, atol=1e-12)
    assert torch.allclose(f.apply(x), conv(x), rtol=0, atol=1e-12)
    # A strided or padded 1x1 conv is no longer A = I.
    assert not torch.equal(axw_factors(torch.nn.Conv2d(5, 7, 1, stride=2), (4, 4)).terms[0].A, torch.eye(16, dtype=torch.float64)[:4])


@pytest.mark.claim("AXW-2")
def test_grouped_and_depthwise_are_block_diagonal_and_diagonal_W():
    grouped = axw_factors(torch.nn.Conv2d(8, 4, 3, groups=4), (5, 5))
    assert grouped.channel_blocks() == 4
    depthwise = axw_factors(torch.nn.Conv2d(6, 6, 3, groups=6), (5, 5))
    assert depthwise.channel_blocks() == 6
    assert all(torch.equal(t.W, torch.diag(torch.diagonal(t.W))) for t in depthwise.terms)
    assert axw_factors(torch.nn.Conv2d(6, 6, 3), (5, 5)).channel_blocks() == 1


@pytest.mark.claim("AXW-2")
def test_dilation_shifts_A_and_stride_subsamples_its_rows():
    n = 9
    plain = axw_factors(torch.nn.Conv1d(1, 1, 3, padding=2), (n,))
    dilated = axw_factors(torch.nn.Conv1d(1, 1, 3, padding=2, dilation=2), (n,))
    for a in range(3):
        assert torch.equal(dilated.terms[a].A, axis_selection(n, n, shift=2 * a - 2))
        assert torch.equal(plain.terms[a].A, axis_selection(n, n + 2, shift=a - 2))
    strided = axw_factors(torch.nn.Conv2d(1, 1, 3, stride=2, padding=1), (6, 6))
    dense = axw_factors(torch.nn.Conv2d(1, 1, 3, padding=1), (6, 6))
    rows = torch.tensor([i * 6 + j for i in range(0, 6, 2) for j in range(0, 6, 2)])
    for s_term, d_term in zip(strided.terms, dense.terms):
        assert torch.equal(s_term.A, d_term.A[rows])


@pytest.mark.claim("AXW-2")
def test_transposed_conv_uses_the_transposed_selections():
    size = (3, 4)
    tconv = torch.nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)
    conv = torch.nn.Conv2d(3, 2, 3, stride=2, padding=1)
    out = tuple(axw_factors(tconv, size).output_shape[2:])
    assert out == (6, 8)
    t_terms, c_terms = axw_factors(tconv, size).terms, axw_factors(conv, out).terms
    assert tuple(axw_factors(conv, out).output_shape[2:]) == size
    for t, c in zip(t_terms, c_terms):
        assert torch.equal(t.A, c.A.T)
        assert torch.equal(t.W, tconv.weight.detach()[:, :, t.offset[0], t.offset[1]].double())


def test_error_paths():
    with pytest.raises(FoldError, match="module="):
        axw_factors(torch.nn.Linear(2, 2), (3,))
    with pytest.raises(FoldError, match="padding_mode="):
        axis_selection(4, 4, shift=-1, padding_mode="mirror")
    with pytest.raises(FoldError, match="input_size="):
        axw_factors(torch.nn.Conv2d(1, 1, 5), (3, 3))
    with pytest.raises(FoldError, match="input_size="):
        axw_factors(torch.nn.ConvTranspose2d(1, 1, 3), (3,))
    with pytest.raises(FoldError, match="x.shape="):
        axw_factors(torch.nn.Conv2d(1, 1, 3), (4, 4)).apply(torch.zeros(1, 1, 5, 5))
