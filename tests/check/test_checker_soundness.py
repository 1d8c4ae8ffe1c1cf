"""Ways to make the checker say "equivalent (exact)" wrongly, each closed (issue 10, found by adversarial use).

Every candidate here agrees with its reference on all the integer draws but is a different function (or the
stated bound is too small), so a checker that trusts integer outputs alone would print a false proof.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from foldconv.check import check_equivalence, check_fold, derived
from foldconv.check.ops import OpRecorder

pytestmark = pytest.mark.claim("EQ-6")

SHAPE = (1, 2, 5, 5)
MAGIC = 1.5 * 2.0**52  # adding then subtracting it rounds a float64 to the nearest integer


def _round_by_magic(x):
    return (x + MAGIC) - MAGIC  # add and sub only: both on the allow-list


def _is_not_a_proof(report, fragment):
    assert not report.exact and report.false_equivalent_bound is None, report.summary()
    assert fragment in report.reason, report.reason


def test_rounding_through_huge_intermediates_is_not_exact():
    report = check_equivalence(nn.Identity(), _round_by_magic, SHAPE)
    _is_not_a_proof(report, "aten.add")
    assert not report.ok  # the unit-normal sample shows the difference


def test_a_non_integer_scalar_factor_is_not_exact():
    report = check_equivalence(nn.Identity(), lambda x: (x * 3) * (1 / 3), SHAPE)
    _is_not_a_proof(report, "non-integer scalar")


def test_a_fused_sum_that_can_reach_2_53_is_not_exact():
    # Integer inputs, weights and outputs, but the conv's internal sum (2**45 * x, then - 2**45 * x) passes 2**53.
    weight = torch.tensor([2.0**45, -(2.0**45)], dtype=torch.float64).reshape(1, 2, 1)
    report = check_equivalence(lambda x: nn.functional.conv1d(torch.cat([x, x], 1), weight.to(x.dtype)), lambda x: x * 0, (1, 1, 6))
    _is_not_a_proof(report, "2**53")


@pytest.mark.parametrize("escape", [
    lambda x: torch.from_numpy(np.round(x.numpy())),
    lambda x: torch.tensor(x.tolist(), dtype=x.dtype).round(),
    lambda x: torch.as_tensor(np.asarray(x)),
])
def test_values_taken_out_of_torch_are_not_exact(escape):
    report = check_equivalence(nn.Identity(), escape, SHAPE)
    _is_not_a_proof(report, "Tensor.")


def test_escaping_a_constant_keeps_the_verdict_exact():
    table = torch.arange(4.0, dtype=torch.float64)
    report = check_equivalence(nn.Identity(), lambda x: x + torch.tensor(table.tolist(), dtype=x.dtype)[0], SHAPE)
    assert report.ok and report.exact, report.summary()


def _rounded_copy(m: nn.Conv2d) -> nn.Conv2d:
    c = nn.Conv2d(2, 2, 3).double()
    with torch.no_grad():
        c.weight.copy_(m.weight.round())  # identical on integer weights, not on real ones
        c.bias.copy_(m.bias)
    return c


def test_a_derived_build_that_rounds_the_weights_is_not_exact():
    report = check_equivalence(nn.Conv2d(2, 2, 3), derived(_rounded_copy), SHAPE)
    _is_not_a_proof(report, "aten.round")


def test_the_degree_is_inferred_from_what_ran():
    stack = nn.Sequential(nn.Conv2d(2, 2, 3), nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1))
    report = check_equivalence(stack, derived(lambda m: m), (1, 2, 6, 6))
    assert report.exact and report.degree == 4  # three resampled layers and the input
    assert report.false_equivalent_bound == pytest.approx((4 / 2049) ** 3)
    assert check_equivalence(stack, derived(lambda m: m), (1, 2, 6, 6), degree=7).degree == 7  # larger is kept
    assert check_fold(nn.Conv2d(8, 4, 3), 2).degree == 2
    fixed = nn.Conv2d(2, 2, 3)
    with torch.no_grad():
        fixed.weight.copy_(torch.arange(36.0).reshape(2, 2, 3, 3) - 18)
        fixed.bias.copy_(torch.tensor([1.0, -2.0]))
    assert check_equivalence(fixed, fixed, SHAPE).degree == 1  # fixed integer weights: linear in the input


def test_the_recorder_degree_follows_products_sums_views_and_writes():
    x, w = torch.ones(2, 3, dtype=torch.float64), torch.ones(3, 3, dtype=torch.float64)
    with OpRecorder(sources=[x, w]) as rec:
        y = x @ w           # 2
        z = (y * x + 1).t()  # 3, a view
        buf = torch.zeros(3, 2, dtype=torch.float64)
        buf.copy_(z)         # an in-place write: 3
    assert (rec.degree(y), rec.degree(z), rec.degree(buf), rec.degree(torch.ones(1))) == (2, 3, 3, 0)


class _Counter(nn.Module):
    """Returns x on its first four calls, something else from the fifth: p(n) = (n-1)(n-2)(n-3)(n-4)."""

    def __init__(self):
        super().__init__()
        self.register_buffer("n", torch.ones(()))

    def forward(self, x):
        n = self.n
        out = x + (n - 1) * (n - 2) * (n - 3) * (n - 4)
        self.n.copy_(n + 1)
        return out


def test_state_that_changes_in_forward_is_not_exact_and_is_put_back():
    ref = _Counter()
    report = check_equivalence(ref, nn.Identity(), SHAPE)
    _is_not_a_proof(report, "changes its parameters or buffers")
    assert float(ref.n) == 1.0  # the caller's module is untouched
    bn = nn.BatchNorm2d(2).train()
    report = check_equivalence(bn, derived(lambda m: m), SHAPE)
    assert not report.exact and bool(report)  # train-mode BatchNorm compared with itself, from the given state
    assert bn.num_batches_tracked.item() == 0


def test_complex_outputs_are_a_fold_error():
    from foldconv.errors import FoldError

    with pytest.raises(FoldError, match="candidate"):
        check_equivalence(nn.Identity(), lambda x: x * (1 + 0j), SHAPE)


def test_the_sound_cases_stay_exact():
    # the fold itself, padding and layout ops, a candidate returning its (copied) input object
    assert check_fold(nn.Conv2d(8, 4, 3, groups=2, dilation=2, padding=2, padding_mode="circular"), 2).exact
    assert check_fold(nn.Conv2d(64, 8, 3, stride=2), 4, exact_range=2**20).exact
    assert check_equivalence(nn.Identity(), lambda x: x, SHAPE).exact


def test_off_list_ops_on_constants_only_do_not_demote_but_random_ones_do():
    mask = torch.arange(25.0).reshape(5, 5)
    report = check_equivalence(nn.Identity(), lambda x: x + ((mask.to(x.dtype) // 4) == 7).to(x.dtype), SHAPE)
    assert report.ok and report.exact, report.summary()
    report = check_equivalence(nn.Identity(), lambda x: x * torch.bernoulli(torch.ones_like(x[:1, :1])), SHAPE)
    _is_not_a_proof(report, "bernoulli")
    _is_not_a_proof(check_equivalence(nn.Identity(), lambda x: x.clamp(-1e9, 1e9), SHAPE), "aten.clamp")
