"""Measured equivariance and consistency: a model and its space-to-depth rewrite give the same numbers
(SHIFT-3); at a stage's period the error is float noise, at one pixel it is not."""
from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import torch
from torch import nn

from foldconv.analysis.shift import consistency, crops, equivariance_error, read_shifted, shift_equivariance, stage_errors
from foldconv.equivalences import strided_to_spd
from foldconv.errors import FoldError


def small_net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3), nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5)).eval()


@pytest.mark.claim("SHIFT-3")
def test_rewrite_gives_the_same_errors_and_consistency():
    net = small_net()
    rewritten = copy.deepcopy(net)
    rewritten[0] = strided_to_spd(net[0])
    report = shift_equivariance(net, (1, 3, 64, 64))
    stages = [str(k) for k in range(len(net))]
    gen = torch.Generator().manual_seed(0)
    images = torch.randn(4, 3, 76, 76, generator=gen)
    shifts = [(0, 1), (1, 1), (0, 8)]
    a = stage_errors(net, report, stages, images, input_size=(64, 64), shifts=shifts, border=12)
    b = stage_errors(rewritten, report, stages, images, input_size=(64, 64), shifts=shifts, border=12)
    assert [(e.stage, e.shift, e.positions) for e in a] == [(e.stage, e.shift, e.positions) for e in b]
    assert max(abs(x.error - y.error) for x, y in zip(a, b)) < 1e-5
    by = {(e.stage, e.shift): e for e in a}
    assert report.stage("4").period == (8, 8)
    for st in ("0", "2", "4"):
        assert by[(st, (0, 8))].error < 1e-5  # 8 is a multiple of every period: exact up to float noise
        assert by[(st, (0, 1))].error > 1e-3  # strided: one pixel is not
    assert by[("1", (0, 2))].error < 1e-5 if ("1", (0, 2)) in by else True
    ca = consistency(net, images, input_size=(64, 64), max_shift=12, generator=torch.Generator().manual_seed(1))
    cb = consistency(rewritten, images, input_size=(64, 64), max_shift=12, generator=torch.Generator().manual_seed(1))
    assert ca == cb and ca.pairs == 4


def test_equivariance_error_of_an_exact_shift_is_zero_and_a_mutant_is_not():
    y0 = torch.arange(40.).reshape(1, 2, 20)
    assert equivariance_error(y0, y0 + 2, (4,), (Fraction(1, 2),)) == (0.0, 18)
    err, _ = equivariance_error(y0, y0 + 2, (4,), (Fraction(1, 4),))
    assert err > 0
    assert equivariance_error(y0, y0, (3,), (Fraction(0),)) == (0.0, 20)
    assert torch.equal(read_shifted(torch.arange(5.), [2]), torch.tensor([2., 3., 4.]))


def test_bad_inputs_are_fold_errors():
    net = small_net()
    report = shift_equivariance(net, (1, 3, 32, 32))
    images = torch.zeros(1, 3, 34, 34)
    with pytest.raises(FoldError, match="stages="):
        stage_errors(net, report, ["nope"], images, input_size=(32, 32), shifts=[(0, 1)])
    with pytest.raises(FoldError, match="shifts="):
        stage_errors(net, report, ["0"], images, input_size=(32, 32), shifts=[(0, 3)])
    with pytest.raises(FoldError, match="max_shift="):
        consistency(net, images, input_size=(32, 32), max_shift=5, generator=torch.Generator())
    with pytest.raises(FoldError, match="input_size="):
        crops(images[0], (40, 40), 1, generator=torch.Generator())
    # input sizes are validated, not truncated or taken as empty crops
    for bad in [(0, 32), (31.5, 32), 32, (32, 32, 32, 32)]:
        with pytest.raises(FoldError, match="input_size="):
            stage_errors(net, report, ["0"], images, input_size=bad, shifts=[(0, 1)])
        with pytest.raises(FoldError, match="input_size="):
            consistency(net, images, input_size=bad, max_shift=1, generator=torch.Generator())
    with pytest.raises(FoldError, match="max_shift="):
        consistency(net, images, input_size=(32, 32), max_shift=-1, generator=torch.Generator())
    with pytest.raises(FoldError, match="offsets="):
        read_shifted(images, [-1])
