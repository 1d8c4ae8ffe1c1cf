"""D2L's ladder: the folded weight's gradient is the fold of the gradient (SHIFT-4; training itself: the shift
app's, tests/experiments/test_shift_training.py); Kaiming init and fan-in (SHIFT-5)."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from foldconv import fold_conv, fold_weight
from foldconv.analysis.shift import LocallyConnected2d, kaiming_bound, ladder_models, parameter_count
from foldconv.layout import depth_to_space
from helpers import integer_conv


@pytest.mark.claim("SHIFT-4")
def test_gradient_of_folded_weight_is_fold_of_gradient_exactly():
    conv = integer_conv(8, 3, 3, stride=2, padding=1, seed=4, bound=3)
    folded = fold_conv(conv, 2)
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(-3, 4, (2, 8, 6, 6), generator=gen).double()
    g = torch.randint(-3, 4, conv(x).shape, generator=gen).double()
    (conv(x) * g).sum().backward()
    (folded(depth_to_space(x, 2)) * g).sum().backward()
    assert torch.equal(fold_weight(conv.weight.grad, 2).weight, folded.weight.grad)
    assert torch.equal(conv.bias.grad, folded.bias.grad)
    assert not torch.equal(fold_weight(conv.weight.grad, 2, "dcr").weight, folded.weight.grad)  # mutant: another order


@pytest.mark.claim("SHIFT-5")
@pytest.mark.parametrize("c,r,k", [(16, 4, 3), (256, 16, 3), (4, 2, 5), (18, 3, 1)])
def test_fan_in_is_kept_and_fan_out_grows_by_r_squared(c, r, k):
    conv = nn.Conv2d(c, 8, k, device="meta")
    big = nn.Conv2d(c // (r * r), 8, r * k, stride=r, device="meta")
    fin, fout = nn.init._calculate_fan_in_and_fan_out(conv.weight)
    fin_f, fout_f = nn.init._calculate_fan_in_and_fan_out(big.weight)
    assert fin == fin_f == c * k * k and fout_f == r * r * fout
    assert kaiming_bound(conv) == kaiming_bound(big) == pytest.approx(1 / math.sqrt(fin))
    assert kaiming_bound(big, mode="fan_out") == pytest.approx(kaiming_bound(conv, mode="fan_out") / r)


@pytest.mark.claim("SHIFT-5")
def test_default_init_bounds_agree_and_folded_init_is_a_permutation():
    torch.manual_seed(0)
    conv = nn.Conv2d(16, 8, 3, padding=1)
    own = nn.Conv2d(1, 8, 12, stride=4, padding=4)  # the folded shape with its own default init
    folded = fold_conv(conv, 4)
    bound = kaiming_bound(conv)
    assert own.weight.abs().max() <= bound and conv.weight.abs().max() <= bound
    assert own.weight.abs().max() > 0.9 * bound and own.bias.abs().max() <= bound  # same bound is used, not a smaller one
    assert torch.equal(conv.weight.flatten().sort().values, folded.weight.flatten().sort().values)
    assert not torch.equal(own.weight, folded.weight)


def test_ladder_parameter_counts_and_shapes():
    rungs = ladder_models(image_size=32, r=4, channels=16, kernel=3, seed=0)
    counts = {k: parameter_count(m) for k, m in rungs.items()}
    head = 16 * 64 * 10 + 10
    assert counts == {"fc": 1024 * 1024 + 1024 + head, "local": 64 * 16 * 145 + head, "conv": 16 * 16 * 9 + 16 + head,
                      "folded": 16 * 16 * 9 + 16 + head}
    x = torch.rand(2, 1, 32, 32)
    assert {tuple(m(x).shape) for m in rungs.values()} == {(2, 10)}
    assert torch.allclose(rungs["conv"](x), rungs["folded"](x), atol=1e-5)


def test_locally_connected_with_shared_weights_is_the_conv():
    conv = integer_conv(2, 3, 3, stride=2, padding=1, seed=0, bound=3)
    lc = LocallyConnected2d(2, 3, (6, 6), kernel_size=3, stride=2, padding=1).double()
    with torch.no_grad():
        lc.weight.copy_(conv.weight.reshape(1, 3, 18).expand_as(lc.weight))
        lc.bias.copy_(conv.bias.expand_as(lc.bias))
    x = torch.randint(-3, 4, (2, 2, 6, 6)).double()
    assert torch.equal(lc(x), conv(x))
    with torch.no_grad():
        lc.weight[4, 1, 7] += 1  # position (1, 1), channel 1: only that output moves
    diff = (lc(x) != conv(x)).nonzero()[:, 1:].unique(dim=0).tolist()
    assert diff in ([], [[1, 1, 1]])
