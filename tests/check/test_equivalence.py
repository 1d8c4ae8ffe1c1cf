"""The exact checker: mutation sensitivity, non-finite values, shapes, bounds, dtypes, errors."""
from __future__ import annotations

import itertools

import pytest
import torch
from torch import nn

from foldconv import FoldError, Verdict, check_equivalence, check_fold, depth_to_space, derived, fold_conv
from foldconv.check import no_tf32
from helpers import integer_conv


def to_folded(x):
    return depth_to_space(x, 2)


@pytest.mark.claim("EQ-1")
def test_every_single_weight_change_flips_the_verdict():
    conv = integer_conv(4, 2, 2, padding=1)
    big = fold_conv(conv, 2)
    shape = (1, 4, 3, 3)
    assert check_equivalence(conv, big, shape, input_transform=to_folded).verdict is Verdict.EQUIVALENT
    for index in itertools.product(*(range(n) for n in big.weight.shape)):
        mutant = fold_conv(conv, 2)
        with torch.no_grad():
            mutant.weight[index] += 1
        report = check_equivalence(conv, mutant, shape, input_transform=to_folded, dtypes=())
        assert report.verdict is Verdict.NOT_EQUIVALENT and report.exact, index
        assert report.first_mismatch is not None and report.first_mismatch[1] == index[0]
        x = report.counterexample
        assert x.shape == shape
        ref, cand = conv(x), mutant(to_folded(x))
        assert ref[report.first_mismatch] != cand[report.first_mismatch]
        flat = int(torch.tensor(report.first_mismatch) @ torch.tensor(ref.stride()))
        assert torch.equal(ref.flatten()[:flat], cand.flatten()[:flat])  # nothing differs earlier
    mutant = fold_conv(conv, 2)
    with torch.no_grad():
        mutant.bias[1] -= 1
    assert check_equivalence(conv, mutant, shape, input_transform=to_folded).verdict is Verdict.NOT_EQUIVALENT


@pytest.mark.claim("EQ-1")
def test_first_mismatch_is_the_first_in_row_major_order():
    conv = integer_conv(4, 1, 1, bias=False)
    big = fold_conv(conv, 2)
    with torch.no_grad():
        big.weight[0, 0, 1, 1] += 3  # only channel 3 changes: output (b, 0, h, w) differs by 3 * x[b, 3, h, w]
    report = check_equivalence(conv, big, (2, 4, 2, 3), input_transform=to_folded)
    nonzero = torch.nonzero(report.counterexample[:, 3] != 0)  # rows of (b, h, w), row-major order
    b, h, w = (int(v) for v in nonzero[0])
    assert report.first_mismatch == (b, 0, h, w)


@pytest.mark.claim("EQ-1")
def test_first_mismatch_skips_equal_leading_elements():
    """A difference planted at known places: the report names the first one in row-major order, exactly."""
    plant = torch.zeros(2, 3, 4, dtype=torch.float64)
    plant[1, 0, 0] = plant[0, 2, 1] = plant[0, 2, 3] = 1
    report = check_equivalence(lambda x: x, lambda x: x + plant, (2, 3, 4))
    assert report.verdict is Verdict.NOT_EQUIVALENT and report.exact
    assert report.first_mismatch == (0, 2, 1)


@pytest.mark.claim("EQ-1")
def test_derived_candidate_mutation_is_caught_for_resampled_weights():
    def broken(m):
        big = fold_conv(m, 2)
        with torch.no_grad():
            big.weight[0, 0, 0, 0] *= 2
        return big

    conv = torch.nn.Conv2d(4, 2, 3)
    assert check_equivalence(conv, derived(broken), (1, 4, 5, 5), input_transform=to_folded).verdict is Verdict.NOT_EQUIVALENT
    good = check_equivalence(conv, derived(lambda m: fold_conv(m, 2)), (1, 4, 5, 5), input_transform=to_folded)
    assert good.verdict is Verdict.EQUIVALENT and good.degree == 2
    assert good.false_equivalent_bound == pytest.approx((2 / 2049) ** 3)


@pytest.mark.claim("EQ-2")
def test_nan_and_inf_never_compare_equal():
    nan = lambda x: x * float("nan")  # noqa: E731
    inf = lambda x: x * 0 + float("inf")  # noqa: E731
    for f in (nan, inf):
        report = check_equivalence(f, f, (1, 2, 3))
        assert report.verdict is Verdict.NOT_EQUIVALENT
        assert "non-finite" in report.reason


@pytest.mark.claim("EQ-2")
def test_different_shapes_are_reported_as_such():
    conv = torch.nn.Conv2d(4, 2, 3).double()
    report = check_equivalence(conv, torch.nn.Conv2d(1, 2, 6, stride=1).double(), (1, 4, 5, 5), input_transform=to_folded)
    assert report.verdict is Verdict.SHAPES_DIFFER
    assert report.reference_shape == (1, 2, 3, 3) and report.candidate_shape == (1, 2, 5, 5)
    assert not report


def test_non_polynomial_ops_fall_back_to_float64_tolerance():
    report = check_equivalence(torch.sigmoid, lambda x: 1 / (1 + torch.exp(-x)), (3, 4))
    assert report.verdict is Verdict.EQUIVALENT and report.exact is False and report.false_equivalent_bound is None
    assert "aten.sigmoid" in report.reason and "aten.exp" in report.non_polynomial_ops
    bad = check_equivalence(torch.sigmoid, lambda x: 1 / (1 + torch.exp(-x)) + 1e-6, (3, 4))
    assert bad.verdict is Verdict.NOT_EQUIVALENT and bad.counterexample is not None


def test_low_precision_errors_are_reported_per_dtype():
    report = check_fold(torch.nn.Conv2d(64, 8, 3, padding=1), 8, input_size=(4, 4), dtypes=(torch.float32, torch.bfloat16))
    assert set(report.errors) == {"float32", "bfloat16"}
    f32, bf16 = report.errors["float32"], report.errors["bfloat16"]
    assert 0 <= f32.max_rel < 1e-5
    assert 1e-4 < bf16.cand_vs_float64 < 0.5 and bf16.ref_vs_float64 > 1e-4  # bfloat16 rounding is visible
    assert report.float64_max_rel < 1e-12
    assert "bfloat16" in report.to_markdown()


def test_tf32_is_off_inside_and_restored():
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = True
    try:
        with no_tf32():
            assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.backends.cuda.matmul.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32 = before


def test_inputs_are_not_modified_and_runs_are_deterministic():
    conv = torch.nn.Conv2d(4, 2, 3)
    w = conv.weight.detach().clone()
    a = check_fold(conv, 2, seed=3)
    b = check_fold(conv, 2, seed=3)
    assert torch.equal(conv.weight, w) and conv.weight.dtype == torch.float32
    assert a.errors == b.errors and a.float64_max_abs == b.float64_max_abs


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(input_shape=(1, 0, 3)), "input_shape"),
        (dict(input_shape=(1, 4, 3, 3), trials=0), "trials=0"),
        (dict(input_shape=(1, 4, 3, 3), exact_range=0), "exact_range=0"),
    ],
)
def test_bad_arguments(kwargs, match):
    conv = torch.nn.Conv2d(4, 2, 1)
    with pytest.raises(FoldError, match=match):
        check_equivalence(conv, conv, **kwargs)
    with pytest.raises(FoldError, match="reference="):
        check_equivalence(lambda x: x, derived(lambda m: m), (1, 2))


# ----------------------------------------------------------------------------------------------------------
# Issue 10.1: an in-place side must not make the comparison vacuous.


@pytest.mark.claim("EQ-3")
def test_an_in_place_candidate_does_not_change_the_reference_input():
    report = check_equivalence(nn.Identity(), nn.ReLU(inplace=True), (1, 4, 3, 3))
    assert report.verdict is Verdict.NOT_EQUIVALENT, report.summary()
    x = report.counterexample
    assert x is not None and bool((x < 0).any())  # the input it names shows the difference


@pytest.mark.claim("EQ-3")
def test_an_in_place_reference_does_not_change_the_candidate_input():
    reference = nn.Sequential(nn.ReLU(inplace=True), nn.Conv2d(4, 2, 3))
    report = check_equivalence(reference, derived(lambda m: fold_conv(m[1], 2)), (1, 4, 6, 6), input_transform=to_folded)
    assert report.verdict is Verdict.NOT_EQUIVALENT, report.summary()
    fair = check_equivalence(reference, derived(lambda m: nn.Sequential(nn.ReLU(), fold_conv(m[1], 2))), (1, 4, 6, 6), input_transform=to_folded)
    assert fair.verdict is Verdict.EQUIVALENT  # the same in-place op on both sides is fine


@pytest.mark.claim("EQ-3")
def test_outputs_are_copied_before_the_other_side_runs():
    """A side that returns (and later mutates) one stored tensor: both outputs alias unless copied."""
    state = torch.zeros(3, dtype=torch.float64)

    def accumulate(x):
        state.add_(x.sum())
        return state

    report = check_equivalence(accumulate, accumulate, (3,))
    assert report.verdict is Verdict.NOT_EQUIVALENT, report.summary()


def test_the_callers_tensors_and_modules_are_untouched():
    conv = torch.nn.Conv2d(4, 2, 3)
    relu = nn.ReLU(inplace=True)
    before = conv.weight.detach().clone()
    check_equivalence(nn.Sequential(relu, conv), nn.Sequential(relu, conv), (1, 4, 5, 5))
    assert torch.equal(conv.weight, before) and conv.weight.dtype == torch.float32


# ----------------------------------------------------------------------------------------------------------
# Issue 10.2: exactness comes from the ops that ran (the polynomial allow-list), not from integer outputs.


@pytest.mark.claim("EQ-4")
def test_a_clamp_with_huge_bounds_is_not_called_exact():
    report = check_equivalence(nn.Hardtanh(-1e9, 1e9), nn.Identity(), (1, 4, 3, 3))
    assert report.exact is False and report.false_equivalent_bound is None
    assert report.non_polynomial_ops == ("aten.hardtanh",) and "aten.hardtanh" in report.summary()
    assert "P(false equivalent)" not in report.summary()


@pytest.mark.claim("EQ-4")
@pytest.mark.parametrize(
    "reference,candidate,op",
    [
        (lambda x: x, lambda x: torch.where(x.abs() > 1e6, torch.zeros_like(x), x), "aten.where"),  # differs only off the draws
        (torch.relu, lambda x: x.clamp(min=0), "aten.clamp"),
        (lambda x: x, lambda x: x if float(x.sum()) < 1e9 else -x, "aten._local_scalar_dense"),  # a Python branch on data
        (lambda x: x, lambda x: x.float().double(), "aten._to_copy"),  # rounding to float32
        (lambda x: x, lambda x: torch.maximum(x, x - 1), "aten.maximum"),
        (lambda x: 2 * x, lambda x: (4 * x) / 2, "aten.div"),
    ],
)
def test_non_polynomial_ops_never_claim_the_bound(reference, candidate, op):
    report = check_equivalence(reference, candidate, (2, 3, 4))
    assert report.exact is False and report.false_equivalent_bound is None, report.summary()
    assert op in report.non_polynomial_ops and op in report.reason


@pytest.mark.claim("EQ-4")
@pytest.mark.parametrize("mode", ["zeros", "circular"])
@pytest.mark.parametrize("r,order", [(2, "crd"), (3, "dcr"), ((2, 1), "focus")])
def test_fold_checks_stay_exact(mode, r, order):
    conv = torch.nn.Conv2d(2 * (r if isinstance(r, int) else 2) ** (2 if isinstance(r, int) else 1), 3, 3, padding=1, padding_mode=mode)
    report = check_fold(conv, r, order, input_size=(6, 6), dtypes=())
    assert report.ok and report.exact and report.non_polynomial_ops == (), report.summary()
    assert report.false_equivalent_bound == pytest.approx((2 / 2049) ** 3)


@pytest.mark.claim("EQ-4")
def test_polynomial_layout_and_product_ops_stay_exact():
    linear = torch.nn.Linear(6, 3)
    checks = [
        (lambda x: torch.nn.functional.pixel_shuffle(x, 2), lambda x: depth_to_space(x, 2), (1, 8, 3, 3)),
        (lambda x: x @ x.transpose(-1, -2), lambda x: torch.einsum("bij,bkj->bik", x, x), (2, 3, 4)),
        (lambda x: torch.nn.functional.pad(x, (1, 1)), lambda x: torch.cat([x[..., :1] * 0, x, x[..., :1] * 0], -1), (2, 3, 4)),
        (lambda x: x.sum((1, 2)), lambda x: x.flatten(1).sum(1), (2, 3, 4)),
        (lambda x: torch.roll(x, 1, -1).flip(-1), lambda x: torch.roll(x, 1, -1)[..., [3, 2, 1, 0]], (2, 3, 4)),
    ]
    for reference, candidate, shape in checks:
        report = check_equivalence(reference, candidate, shape, degree=2)
        assert report.ok and report.exact and report.false_equivalent_bound is not None, report.summary()
    report = check_equivalence(linear, derived(lambda m: (lambda x: x @ m.weight.T + m.bias)), (5, 6))
    assert report.ok and report.exact, report.summary()


class _Residual(torch.nn.Module):
    def __init__(self, inplace: bool, shift: float = 0.0):
        super().__init__()
        self.conv, self.inplace, self.shift = torch.nn.Conv2d(3, 3, 3, padding=1, bias=False), inplace, shift

    def forward(self, x):
        out = self.conv(x)
        if self.inplace:
            out += x  # torchvision's residual
            out.mul_(2)
            return out
        return (out + x) * 2 + self.shift


def test_in_place_arithmetic_keeps_the_exact_verdict():
    a, b = _Residual(True), _Residual(False)
    with torch.no_grad():
        a.conv.weight.copy_(torch.randint(-3, 4, a.conv.weight.shape))
        b.conv.weight.copy_(a.conv.weight)
    report = check_equivalence(a, b, (1, 3, 5, 5))
    assert report.verdict is Verdict.EQUIVALENT and report.exact, report.summary()
    b.shift = 1.0  # mutation: the verdict must flip
    assert check_equivalence(a, b, (1, 3, 5, 5)).verdict is Verdict.NOT_EQUIVALENT


@pytest.mark.parametrize("dtypes", [(), ("float32", "bfloat16")])
def test_bool_and_integer_outputs_get_an_answer(dtypes):
    same = check_equivalence(lambda x: x > 0, lambda x: 0 < x, (2, 3), dtypes=dtypes)
    assert same.ok and not same.exact and "aten.gt" in same.reason, same.summary()  # a comparison is not polynomial
    differ = check_equivalence(lambda x: x > 0, lambda x: x >= 0, (2, 3), dtypes=dtypes, exact_range=1)
    assert not differ.ok and differ.counterexample is not None, differ.summary()
    counts = check_equivalence(lambda x: (x > 0).sum(-1), lambda x: (x > 0).long().sum(-1), (2, 3), dtypes=dtypes)
    assert counts.ok and not counts.exact, counts.summary()
