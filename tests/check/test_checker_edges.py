"""Edges of the exact verdict found by an adversarial review: complex and meta modules, ``out=`` buffers that are
also read, bounds too weak to prove anything, and what a random op is said to do."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from foldconv import check_equivalence, check_fold, rewrite
from foldconv.errors import FoldError

pytestmark = pytest.mark.claim("EQ-7")


def test_a_complex_module_is_refused_not_checked_on_its_real_part():
    a = nn.Conv2d(1, 1, 3, bias=False).to(torch.complex64)
    with torch.no_grad():
        a.weight.copy_(torch.randint(-3, 4, a.weight.shape).to(torch.complex64))
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.weight.imag.fill_(5)
    with pytest.raises(FoldError, match=r"reference=.*complex tensor \(weight: torch.complex64\).*imaginary part"):
        check_equivalence(a, b, (1, 1, 5, 5))
    with pytest.raises(FoldError, match=r"conv=.*complex"):
        check_fold(nn.Conv2d(4, 1, 3).to(torch.complex64), 2)


@pytest.mark.parametrize("call", [
    lambda m: check_equivalence(m, m, (1, 1, 5, 5)),
    lambda m: check_fold(m, 1),
    lambda m: rewrite(nn.Sequential(m), (1, 1, 8, 8), ["strided_to_spd"]),
], ids=["check_equivalence", "check_fold", "rewrite"])
def test_a_meta_module_is_a_fold_error_naming_it(call):
    with pytest.raises(FoldError, match="meta device"):
        call(nn.Conv2d(1, 1, 3, stride=2, device="meta"))


def _square_in_place(x):
    y = x.clone()
    torch.mul(y, x, out=y)  # y is read and written: x**2
    return y


def _cube_out(x):
    y = torch.empty_like(x)
    torch.mul(x, x, out=y)
    torch.mul(y, x, out=y)
    return y


def test_an_out_buffer_that_is_also_read_keeps_its_degree():
    assert check_equivalence(_square_in_place, lambda x: x * x, (1, 1, 4, 4), dtypes=()).degree == 2
    report = check_equivalence(lambda x: x.clone(), _cube_out, (1, 1, 4, 4), dtypes=(), exact_range=1, trials=10)
    assert report.degree == 3 and not report.ok, report.summary()  # x**3 = x on every draw from {-1, 0, 1}


def test_a_bound_too_weak_to_prove_anything_gives_a_sampled_verdict():
    weak = check_equivalence(lambda x: x * x * x, lambda x: x * x * x, (1, 1, 4, 4), dtypes=(), exact_range=1)
    assert weak.ok and not weak.exact and "prove too little" in weak.reason, weak.summary()
    strong = check_equivalence(lambda x: x * x * x, lambda x: x * x * x, (1, 1, 4, 4), dtypes=())
    assert strong.ok and strong.exact and strong.false_equivalent_bound <= 1e-3


def test_a_random_op_is_said_to_draw_random_numbers():
    report = check_equivalence(lambda x: x, lambda x: x if torch.rand(1) < 2 else -x, (1, 1, 3, 3), dtypes=())
    assert not report.exact and "draws random numbers (aten.rand)" in report.reason, report.reason
    assert "ran on a value computed from" not in report.reason
