"""The integer-exact kernel (foldconv.check.exact) and the polynomial allow-list (foldconv.check.ops)."""
from __future__ import annotations

import pytest
import torch

from foldconv import Verdict
from foldconv.check.exact import (
    EXACT_LIMIT,
    combine,
    compare,
    false_equivalent_bound,
    first_mismatch,
    integer_valued,
    integers,
    relative_error,
    within_exact_limit,
)
from foldconv.check.ops import POLYNOMIAL_OPS, OpRecorder


def test_integers_are_uniform_integer_valued_float64_and_seeded():
    a = integers((4000,), torch.Generator().manual_seed(5), 2)
    assert a.dtype == torch.float64 and integer_valued(a)
    assert set(a.tolist()) == {-2.0, -1.0, 0.0, 1.0, 2.0}
    assert torch.equal(a, integers((4000,), torch.Generator().manual_seed(5), 2))


def test_compare_orders_its_verdicts():
    x = torch.arange(6.0).view(2, 3)
    assert compare(x, x.clone()) is Verdict.EQUIVALENT
    assert compare(x, x + 1) is Verdict.NOT_EQUIVALENT
    assert compare(x, x.t()) is Verdict.SHAPES_DIFFER
    assert compare(None, x) is Verdict.INVALID and compare(x, None) is Verdict.INVALID
    nan = torch.full((2,), float("nan"))
    assert compare(nan, nan.clone()) is Verdict.NOT_EQUIVALENT
    ordered = [Verdict.EQUIVALENT, Verdict.NOT_EQUIVALENT, Verdict.SHAPES_DIFFER, Verdict.INVALID]
    for i, v in enumerate(ordered):
        assert combine(ordered[: i + 1]) is v and combine(reversed(ordered[: i + 1])) is v


def test_first_mismatch_is_exact_and_respects_the_tolerance():
    a = torch.zeros(2, 3, 4)
    b = a.clone()
    b[1, 0, 2], b[0, 2, 3] = 5.0, 0.5
    assert first_mismatch(a, b) == (0, 2, 3)
    assert first_mismatch(a, b, tol=1.0) == (1, 0, 2)
    assert first_mismatch(a, b, tol=10.0) is None
    b[0, 0, 1] = float("nan")
    assert first_mismatch(a, b, tol=10.0) == (0, 0, 1)


def test_relative_error_is_the_one_definition():
    ref = torch.tensor([[1.0, -4.0], [2.0, 0.0]])
    assert relative_error(ref + torch.tensor([[0.0, 0.0], [0.5, 0.0]]), ref) == 0.5 / 4.0
    assert relative_error(torch.tensor([0.25]), torch.tensor([0.0])) == 0.25  # all-zero reference: absolute
    assert relative_error(torch.empty(0), torch.empty(0)) == 0.0
    assert relative_error(torch.tensor([1.0], dtype=torch.bfloat16), torch.tensor([1.0])) == 0.0
    assert relative_error(torch.tensor([float("inf")]), torch.tensor([1.0])) != relative_error(torch.tensor([1.0]), torch.tensor([1.0]))


def test_exactness_limits():
    big = torch.tensor([EXACT_LIMIT - 1, -EXACT_LIMIT], dtype=torch.float64)
    assert within_exact_limit(big[:1]) and not within_exact_limit(big[1:])
    assert not integer_valued(torch.tensor([0.5])) and not integer_valued(torch.tensor([float("nan")]))
    assert false_equivalent_bound(1, 1024, 2) == pytest.approx((1 / 2049) ** 2)
    assert false_equivalent_bound(5000, 1024, 3) == 1.0  # a degree above N makes the bound vacuous, never > 1


def test_the_recorder_sees_what_runs_below_autograd():
    conv = torch.nn.Conv2d(2, 2, 3, padding=1, padding_mode="circular").double()
    with OpRecorder() as rec, torch.no_grad():
        conv(torch.ones(1, 2, 4, 4, dtype=torch.float64))
    assert "aten.convolution" in rec.ran and not rec.refused
    with OpRecorder() as rec:
        torch.nn.functional.hardtanh(torch.ones(3)).sum().item()
    assert rec.refused == {"aten.hardtanh", "aten._local_scalar_dense"}
    with OpRecorder() as rec:
        torch.ones(3).double().to(torch.int64)
    assert rec.refused == {"aten._to_copy"}  # float64 -> int64 rounds; int -> float64 (the first copy) does not


@pytest.mark.parametrize("op", ["relu", "clamp", "hardtanh", "threshold", "where", "div", "max", "maximum", "abs", "sign",
                                "gt", "floor", "round", "sigmoid", "exp", "native_batch_norm", "max_pool2d", "avg_pool2d"])
def test_piecewise_and_dividing_ops_are_not_on_the_allow_list(op):
    assert op not in POLYNOMIAL_OPS
