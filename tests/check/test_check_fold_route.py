"""check_fold's structural route: the same verdicts as the captured check, and every broken fold caught.

A plain ``nn.ConvNd`` is checked by :mod:`foldconv.check.structural` (the placement ``fold_conv`` makes, read off
a probe, and all trials in one grouped conv per side); anything else by the captured check of
:func:`foldconv.check.check_equivalence`. Both must agree on every configuration, and the structural route
must flip on a wrong placement, a wrong spec or a hooked conv.
"""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from foldconv import FoldError, Verdict, depth_to_space, fold_conv
from foldconv.check import check_equivalence, check_fold, derived, structural
from helpers import examples

pytestmark = pytest.mark.claim("EQ-8")

CONVS = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}


@st.composite
def folds(draw):
    dims = draw(st.sampled_from((1, 2, 2, 3)))
    r = draw(st.sampled_from((2, 3))) if dims < 3 else 2
    order = draw(st.sampled_from(("crd", "dcr", "focus")))
    groups = draw(st.sampled_from((1, 2)))
    cin = groups * r**dims * draw(st.integers(1, 2))
    k, s, d = draw(st.integers(1, 3)), draw(st.integers(1, 2)), draw(st.integers(1, 2))
    p = draw(st.integers(0, 1))
    mode = draw(st.sampled_from(("zeros", "zeros", "circular")))
    conv = CONVS[dims](cin, groups * draw(st.integers(1, 2)), k, s, p, d, groups, padding_mode=mode)
    return conv, r, order


@settings(max_examples=examples(6), deadline=None)
@given(folds())
def test_the_structural_route_agrees_with_the_captured_check(case):
    conv, r, order = case
    assert structural.plain_conv(conv)
    fast = check_fold(conv, r, order, input_size=6, dtypes=())
    slow = check_equivalence(conv, derived(lambda m: fold_conv(m, r, order)), (2, conv.in_channels) + (6,) * (conv.weight.dim() - 2),
                             input_transform=lambda x: depth_to_space(x, r, order, dims=conv.weight.dim() - 2), dtypes=())
    assert fast.verdict is slow.verdict is Verdict.EQUIVALENT and fast.exact and slow.exact, (fast.summary(), slow.summary())
    assert fast.degree == slow.degree == 2 and fast.false_equivalent_bound == slow.false_equivalent_bound
    assert fast.reference_shape == slow.reference_shape and fast.float64_max_rel < 1e-12


def _broken(monkeypatch, change):
    real = structural._fold_map

    def patched(spec, fold):
        return change(real(spec, fold))

    monkeypatch.setattr(structural, "_fold_map", patched)


def test_a_wrong_placement_is_caught(monkeypatch):
    conv = nn.Conv2d(8, 4, 3, padding=1)
    assert check_fold(conv, 2).exact

    def swap(fmap):
        index = fmap.index.clone()
        placed = (index != index.max()).nonzero().flatten()
        index[placed[0]], index[placed[1]] = index[placed[1]].clone(), index[placed[0]].clone()
        return structural._FoldMap(fmap.spec, index)

    _broken(monkeypatch, swap)
    report = check_fold(conv, 2, dtypes=())
    assert report.verdict is Verdict.NOT_EQUIVALENT and report.exact and report.first_mismatch is not None, report.summary()
    assert report.counterexample.shape == (2, 8, 8, 8)


def test_a_wrong_folded_spec_is_caught(monkeypatch):
    conv = nn.Conv2d(8, 4, 3, padding=1)
    _broken(monkeypatch, lambda fmap: structural._FoldMap(fmap.spec.replace(padding=1), fmap.index))
    report = check_fold(conv, 2, dtypes=())
    assert report.verdict in (Verdict.NOT_EQUIVALENT, Verdict.SHAPES_DIFFER) and not report.ok, report.summary()


def test_what_is_not_a_plain_conv_takes_the_captured_route():
    hooked = nn.Conv2d(8, 4, 3, padding=1)
    hooked.register_forward_hook(lambda module, args, out: out * 2)
    report = check_fold(hooked, 2, dtypes=())
    assert not structural.plain_conv(hooked) and report.verdict is Verdict.NOT_EQUIVALENT and report.exact

    class Scaled(nn.Conv2d):  # a subclass with its own forward (timm's StdConv2d is one)
        def forward(self, x):
            return super().forward(x) * 3

    report = check_fold(Scaled(8, 4, 3, padding=1), 2, dtypes=())
    assert report.verdict is Verdict.NOT_EQUIVALENT and report.exact, report.summary()
    normed = nn.utils.parametrizations.weight_norm(nn.Conv2d(8, 4, 3, padding=1))
    assert not structural.plain_conv(normed)
    assert not check_fold(normed, 2, dtypes=()).exact  # the norm divides: sampled, and equal by sampling
    assert check_fold(normed, 2, dtypes=()).ok


def test_the_route_reports_like_the_checker():
    conv = nn.Conv2d(16, 4, 3, stride=2, padding=1, padding_mode="circular")
    report = check_fold(conv, 2, "dcr", dtypes=("float32", "bfloat16"), trials=4, exact_range=64, seed=3)
    assert report.ok and report.exact and report.trials == 4 and report.exact_range == 64
    assert report.false_equivalent_bound == pytest.approx((2 / 129) ** 4)
    assert set(report.errors) == {"float32", "bfloat16"} and report.errors["bfloat16"].cand_vs_float64 > 1e-4
    assert check_fold(conv, 2, "dcr", seed=3).float64_max_abs == check_fold(conv, 2, "dcr", seed=3).float64_max_abs
    with pytest.raises(FoldError, match="input_size"):
        check_fold(nn.Conv2d(4, 4, 5), 2, input_size=2)
    huge = check_fold(nn.Conv2d(256, 1, 3), 2, exact_range=2**20, input_size=4, batch=1, dtypes=(), trials=1)
    assert huge.ok  # fan-in * R**2 passes 2**51: not the structural route, whose bound would not hold


def test_a_changed_fold_conv_is_seen_even_after_its_placement_was_remembered(monkeypatch):
    import foldconv.fold

    conv = nn.Conv2d(8, 4, 3, padding=1)
    assert check_fold(conv, 2, dtypes=()).ok  # the placement of this configuration is now remembered
    real = foldconv.fold.fold_conv

    def off_by_one(module, *args, **kwargs):
        folded = real(module, *args, **kwargs)
        with torch.no_grad():
            folded.weight[0, 0, 0, 0] += 1
        return folded

    monkeypatch.setattr(foldconv.fold, "fold_conv", off_by_one)
    report = check_fold(conv, 2, dtypes=())
    assert report.verdict is Verdict.NOT_EQUIVALENT and report.exact, report.summary()
