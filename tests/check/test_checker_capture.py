"""Exact verdicts are sound by construction: pairs that differ only where small integers cannot see it.

Each candidate below agrees with its reference on every integer draw in [-1024, 1024] but is a different
function: it narrows a value through an argument (``dtype=``, an ``out=`` buffer, an integer dtype), reads the
bits of its input (``view(dtype)``), or computes where a dispatch mode cannot see it (``Tensor.apply_``,
``map_``, another thread, a disabled dispatch mode) — in a plain function, inside a ``derived()`` build, and
next to an allow-listed random op. None of them may be called "equivalent (exact)"; the reason names the op
and the argument. The true equivalences next to them stay exact.
"""
from __future__ import annotations

import ctypes
import threading

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import _disable_current_modes

from foldconv import Verdict, depth_to_space, fold_conv
from foldconv.check import check_equivalence, derived

pytestmark = pytest.mark.claim("EQ-7")

SHAPE = (2, 3, 4)
LIMIT = 2048.0  # every draw is below it; the candidates differ from the identity at or above it


def _no_proof(report, *fragments):
    assert not report.exact and report.false_equivalent_bound is None, report.summary()
    for fragment in fragments:
        assert fragment in report.reason, report.reason


def _keep_small(v: float) -> float:
    return v if abs(v) < LIMIT else 0.0


# --- family 1: narrowing hidden in an argument --------------------------------------------------------------

def _sum_half(x):
    return x.sum(-1, keepdim=True, dtype=torch.float16).double()


def _cumsum_half(x):
    return x.cumsum(-1, dtype=torch.float16).double()


def _sum_int16(x):
    return x.sum(-1, keepdim=True, dtype=torch.int16).double()  # wraps above 32767, truncates fractions


def _add_out_half(x):
    buf = torch.empty(x.shape, dtype=torch.float16)
    torch.add(x, 0, out=buf)
    return buf.double()


def _cat_out_half(x):
    buf = torch.empty(x.shape, dtype=torch.float16)
    torch.cat([x], out=buf)
    return buf.double()


@pytest.mark.parametrize("candidate,shape,fragment", [
    (_sum_half, (2, 3, 1), "dtype=torch.float16"),
    (_cumsum_half, (2, 3, 2), "dtype=torch.float16"),
    (_sum_int16, (2, 3, 1), "dtype=torch.int16"),
    (_add_out_half, SHAPE, "out= buffer of torch.float16"),
    (_cat_out_half, SHAPE, "out= buffer of torch.float16"),
])
def test_narrowing_in_an_argument_is_not_exact(candidate, shape, fragment):
    reference = (lambda x: x.cumsum(-1)) if candidate is _cumsum_half else (lambda x: x.sum(-1, keepdim=True))
    if candidate in (_add_out_half, _cat_out_half):
        reference = (lambda x: x)  # noqa: E731
    big = torch.full(shape, 3001.0, dtype=torch.float64) + 0.5
    assert not torch.equal(reference(big), candidate(big))  # a differing pair
    _no_proof(check_equivalence(reference, candidate, shape, dtypes=()), fragment)


def _narrowing_build(m: nn.Conv2d) -> nn.Conv2d:
    c = nn.Conv2d(2, 2, 3).double()
    buf = torch.empty(m.weight.shape, dtype=torch.float16)
    torch.mul(m.weight, 1, out=buf)  # weights below 2048 survive float16
    with torch.no_grad():
        c.weight.copy_(buf)
        c.bias.copy_(m.bias)
    return c


def test_narrowing_inside_a_derived_build_is_not_exact():
    _no_proof(check_equivalence(nn.Conv2d(2, 2, 3), derived(_narrowing_build), (1, 2, 5, 5), dtypes=()), "out= buffer of torch.float16")


# --- family 2: reading the bits ----------------------------------------------------------------------------

def _exponent_table() -> torch.Tensor:
    """1.0 for the top 16 bits of a float64 whose magnitude is below 2048 (biased exponent < 1034), else 0."""
    top = torch.arange(65536)
    return (((top // 16) % 2048) < 1034).double()


TABLE = _exponent_table()


def _small_mask(x: torch.Tensor) -> torch.Tensor:
    """1 where |x| < 2048, from bytes 6 and 7 of each float64 (bit-cast views, slicing, cat, index_select only)."""
    flat = x.reshape(-1)
    top = flat.view(torch.uint8).reshape(-1, 8)[:, 6:8]
    word = torch.cat([top, torch.zeros(flat.shape[0], 6, dtype=torch.uint8)], 1).reshape(-1).view(torch.int64)
    return torch.index_select(TABLE, 0, word).reshape(x.shape)


def _bitcast_threshold(x):
    return x * _small_mask(x)


def _bitcast_with_random(x):
    noise = torch.empty_like(x).normal_(0.0, 1.0) * 0  # an allow-listed random op on this side
    return x * _small_mask(x) + noise


@pytest.mark.parametrize("candidate", [_bitcast_threshold, _bitcast_with_random])
def test_bitcast_views_are_not_exact(candidate):
    big = torch.tensor([1.0, 3000.0, -5000.0], dtype=torch.float64)
    assert torch.equal(candidate(big), torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64))  # it thresholds
    _no_proof(check_equivalence(lambda x: x, candidate, SHAPE, dtypes=()), "reinterprets the bits")


def _bitcast_build(m: nn.Conv2d) -> nn.Conv2d:
    c = nn.Conv2d(2, 2, 3).double()
    with torch.no_grad():
        c.weight.copy_(_bitcast_threshold(m.weight))
        c.bias.copy_(m.bias)
    return c


def test_bitcast_inside_a_derived_build_is_not_exact():
    _no_proof(check_equivalence(nn.Conv2d(2, 2, 3), derived(_bitcast_build), (1, 2, 5, 5), dtypes=()), "reinterprets the bits")


# --- family 3: values computed where the recorder cannot see them ------------------------------------------

def _apply(x):
    y = x.clone()
    y.apply_(_keep_small)
    return y


def _map(x):
    y = x.clone()
    y.map_(x, lambda a, b: _keep_small(b))
    return y


def _threshold(x):
    return torch.where(x.abs() < LIMIT, x, torch.zeros_like(x))


def _in_thread(x):
    out = {}
    worker = threading.Thread(target=lambda: out.update(y=_threshold(x)))
    worker.start()
    worker.join()
    return out["y"]


def _modes_off(x):
    with _disable_current_modes():
        y = _threshold(x)
    return y * 1


@pytest.mark.parametrize("candidate,fragment", [
    (_apply, "Tensor.apply_"),
    (_map, "Tensor.map_"),
    (_in_thread, "outside the capture"),
    (_modes_off, "outside the capture"),
])
def test_values_computed_out_of_sight_are_not_exact(candidate, fragment):
    big = torch.tensor([1.0, 3000.0], dtype=torch.float64)
    assert candidate(big).tolist() == [1.0, 0.0]
    _no_proof(check_equivalence(lambda x: x, candidate, SHAPE, dtypes=()), fragment)


@pytest.mark.parametrize("hidden", [_apply, _in_thread, _modes_off])
def test_out_of_sight_inside_a_derived_build_is_not_exact(hidden):
    def build(m):
        c = nn.Conv2d(2, 2, 3).double()
        with torch.no_grad():
            c.weight.copy_(hidden(m.weight.detach()))
            c.bias.copy_(m.bias)
        return c

    _no_proof(check_equivalence(nn.Conv2d(2, 2, 3), derived(build), (1, 2, 5, 5), dtypes=()))


# --- what stays exact --------------------------------------------------------------------------------------

class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 3, padding=1, bias=False)

    def forward(self, x):
        out = self.conv(x)
        out += x  # torchvision's residual
        out.sub_(x).add_(x).mul_(2)
        return out


def _stage() -> nn.Module:
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(8, 8, 3, padding=1), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            out = self.b(self.a(x))
            out += x  # torchvision's residual, in place
            return out

    return nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), Block())


def _true_pairs():
    """(reference, derived build, input shape, input transform): equivalences the project proves, for all weights."""
    from foldconv.equivalences.axw import axw_factors
    from foldconv.equivalences.space_to_depth import conv_to_focus, strided_to_spd
    from foldconv.equivalences.subpixel import SubPixelConv, subpixel_to_transposed, transposed_to_subpixel
    from foldconv.surgery.stage import fold_stage

    return {
        "fold_conv dcr": (nn.Conv2d(8, 4, 3, padding=1), lambda m: fold_conv(m, 2, "dcr"), (1, 8, 6, 6),
                          lambda x: depth_to_space(x, 2, "dcr")),
        "strided_to_spd": (nn.Conv2d(3, 4, 3, stride=2, padding=1), strided_to_spd, (1, 3, 8, 8), None),
        "conv_to_focus": (nn.Conv2d(3, 4, 6, 2, 2), conv_to_focus, (1, 3, 8, 8), None),
        "transposed_to_subpixel": (nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1), transposed_to_subpixel, (1, 4, 5, 5), None),
        "subpixel_to_transposed": (SubPixelConv(nn.Conv2d(2, 8, 3, padding=1, bias=False), 2, "crd"), subpixel_to_transposed,
                                   (1, 2, 5, 5), None),
        "dense AXW": (nn.Conv2d(2, 3, 3, padding=1), lambda m: axw_factors(m, (4, 4)).apply, (2, 2, 4, 4), None),
        "fold_stage with a residual": (_stage(), lambda m: fold_stage(m, 2, input_shape=(1, 8, 6, 6))[0], (1, 8, 6, 6), None),
        "in-place residual": (_Residual(), lambda m: m, (1, 3, 5, 5), None),
    }


def _mutant(build):
    """The same build with one weight of what it returns changed by one."""
    def changed(m):
        out = build(m)
        with torch.no_grad():
            if isinstance(out, nn.Module):
                p = next(q for q in out.parameters() if q.is_floating_point())
            else:  # a bound method: the AXW factors' first weight matrix
                p = out.__self__.terms[0].W
            p[(0,) * p.dim()] += 1
        return out
    return changed


@pytest.mark.parametrize("name", list(_true_pairs()))
def test_true_equivalences_stay_exact_and_mutants_flip(name):
    reference, build, shape, transform = _true_pairs()[name]
    report = check_equivalence(reference, derived(build), shape, input_transform=transform, dtypes=())
    assert report.ok and report.exact and report.false_equivalent_bound is not None, report.summary()
    mutant = check_equivalence(reference, derived(_mutant(build)), shape, input_transform=transform, dtypes=())
    assert mutant.verdict is Verdict.NOT_EQUIVALENT and mutant.exact, mutant.summary()


def test_constants_and_in_place_arithmetic_stay_exact():
    table = torch.arange(6.0).reshape(2, 3)  # constants and ops on them (a Python branch on a constant too)
    report = check_equivalence(lambda x: x + table.sum(), lambda x: x + (15 if float(table.sum()) == 15 else 0), (2, 3))
    assert report.ok and report.exact, report.summary()
    mask = torch.tensor([True, False, True])
    report = check_equivalence(lambda x: x[..., [0, 2]], lambda x: x[..., mask], (2, 3))  # a boolean mask that is a constant
    assert report.ok and report.exact, report.summary()


def test_a_counter_kept_in_a_closure_tensor_is_not_exact():
    count = torch.zeros(1, dtype=torch.float64)

    def changes_on_call_1000(x):
        ctypes.c_double.from_address(count.data_ptr()).value += 1  # outside torch's operations: no record sees it
        return x + (count >= 1000).double() * 5

    report = check_equivalence(lambda x: x, changes_on_call_1000, SHAPE, dtypes=())
    _no_proof(report, "changes a tensor it keeps")
    assert report.ok  # equal on every call made: a sampled verdict, without the bound
