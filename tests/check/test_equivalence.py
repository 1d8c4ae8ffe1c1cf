"""The exact checker: mutation sensitivity, non-finite values, shapes, bounds, dtypes, errors."""
from __future__ import annotations

import itertools

import pytest
import torch

from foldconv import FoldError, Verdict, check_equivalence, check_fold, depth_to_space, derived, fold_conv, no_tf32


def integer_conv(*args, seed=0, **kwargs):
    conv = torch.nn.Conv2d(*args, **kwargs).double()
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in conv.parameters():
            p.copy_(torch.randint(-7, 8, p.shape, generator=gen).double())
    return conv


def to_folded(x):
    return depth_to_space(x, 2)


@pytest.mark.claim("EQ-1")
def test_every_single_weight_change_flips_the_verdict():
    conv = integer_conv(4, 2, 2, padding=1)
    big = fold_conv(conv, 2)
    shape = (1, 4, 3, 3)
    assert check_equivalence(conv, big, shape, to_folded).verdict is Verdict.EQUIVALENT
    for index in itertools.product(*(range(n) for n in big.weight.shape)):
        mutant = fold_conv(conv, 2)
        with torch.no_grad():
            mutant.weight[index] += 1
        report = check_equivalence(conv, mutant, shape, to_folded, dtypes=())
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
    assert check_equivalence(conv, mutant, shape, to_folded).verdict is Verdict.NOT_EQUIVALENT


@pytest.mark.claim("EQ-1")
def test_first_mismatch_is_the_first_in_row_major_order():
    conv = integer_conv(4, 1, 1, bias=False)
    big = fold_conv(conv, 2)
    with torch.no_grad():
        big.weight[0, 0, 1, 1] += 3  # only channel 3 changes; every output position differs
    report = check_equivalence(conv, big, (2, 4, 2, 3), to_folded)
    assert report.first_mismatch == (0, 0, 0, 0) or report.counterexample[0, 3, 0, 0] == 0


@pytest.mark.claim("EQ-1")
def test_derived_candidate_mutation_is_caught_for_resampled_weights():
    def broken(m):
        big = fold_conv(m, 2)
        with torch.no_grad():
            big.weight[0, 0, 0, 0] *= 2
        return big

    conv = torch.nn.Conv2d(4, 2, 3)
    assert check_equivalence(conv, derived(broken), (1, 4, 5, 5), to_folded).verdict is Verdict.NOT_EQUIVALENT
    good = check_equivalence(conv, derived(lambda m: fold_conv(m, 2)), (1, 4, 5, 5), to_folded)
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
    report = check_equivalence(conv, torch.nn.Conv2d(1, 2, 6, stride=1).double(), (1, 4, 5, 5), to_folded)
    assert report.verdict is Verdict.SHAPES_DIFFER
    assert report.reference_shape == (1, 2, 3, 3) and report.candidate_shape == (1, 2, 5, 5)
    assert not report


def test_non_polynomial_ops_fall_back_to_float64_tolerance():
    report = check_equivalence(torch.sigmoid, lambda x: 1 / (1 + torch.exp(-x)), (3, 4))
    assert report.verdict is Verdict.EQUIVALENT and report.exact is False
    assert "integer" in report.reason
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
