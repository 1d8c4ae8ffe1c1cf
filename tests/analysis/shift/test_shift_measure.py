"""Measured equivariance and consistency: a model and its space-to-depth rewrite give the same numbers
(SHIFT-3); at a stage's period the error is float noise, at one pixel it is not."""
from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as hs
from torch import nn

from foldconv.analysis.shift import (
    clean_positions,
    consistency,
    consistency_pair,
    crops,
    equivariance_error,
    min_clean_length,
    read_shifted,
    shift_equivariance,
    stage_errors,
)
from foldconv.equivalences import strided_to_spd
from foldconv.errors import FoldError
from foldconv.models import build_model


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


def resnet18_errors(crop, shifts, border="rf", images=2, seed=0):
    import torchvision

    torch.manual_seed(seed)
    net = torchvision.models.resnet18().eval()
    report = shift_equivariance(net, (1, 3, crop, crop))
    stages = ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4", "avgpool", "fc"]
    imgs = torch.randn(images, 3, crop + 32, crop + 32, generator=torch.Generator().manual_seed(seed))
    return report, stage_errors(net, report, stages, imgs, input_size=(crop, crop), shifts=shifts, border=border)


@pytest.mark.claim("SHIFT-1", "SHIFT-3")
def test_resnet18_at_32px_the_error_is_exactly_0_wherever_the_period_divides_the_shift():
    shifts = [(0, 2), (0, 4), (0, 16), (4, 4)]
    report, errs = resnet18_errors(32, shifts)
    divides = [e for e in errs if not e.global_ and all(s % p == 0 for s, p in zip(e.shift, e.period))]
    measured = [e for e in divides if e.positions]
    assert {e.stage for e in measured} == {"conv1", "bn1", "relu", "maxpool"} and all(e.exact for e in measured)
    assert all(e.error == 0.0 for e in measured), [(e.stage, e.shift, e.error) for e in measured]
    for e in divides:  # the others keep no position: every unit's field is wider than the crop minus the shift
        if not e.positions:
            assert report.rf[report.stage(e.stage).name].rf[1] > 32 - e.shift[1], e
    # a shift the period does not divide is not claimed, and is measurably not equivariant
    assert all(not e.exact and e.error > 1e-3 for e in errs if e.stage == "maxpool" and e.shift == (0, 2))
    # the global stages (after global pooling) read the borders: never claimed exact, no period
    assert all(e.global_ and not e.exact for e in errs if e.stage in ("layer4", "avgpool", "fc"))
    # the old fixed 8-pixel border leaves border effects drawn as non-equivariance at the same shifts
    _, fixed = resnet18_errors(32, [(0, 4)], border=8)
    assert [e.error > 1e-2 and e.positions > 0 for e in fixed if e.stage in ("layer1", "layer2")] == [True, True]


@pytest.mark.claim("SHIFT-1")
def test_deep_stages_are_exact_where_the_crop_leaves_them_a_clean_position():
    _, errs = resnet18_errors(256, [(0, 32), (32, 32)], images=1)
    by = {(e.stage, e.shift): e for e in errs}
    for shift in [(0, 32), (32, 32)]:
        for st in ("conv1", "maxpool", "layer1", "layer2", "layer3"):
            e = by[(st, shift)]
            assert e.exact and e.positions > 0 and e.error == 0.0, e
        assert by[("layer4", shift)].positions == 0  # rf 435 > 256: nothing to measure, nothing drawn


def test_clean_positions_follow_the_receptive_field():
    from foldconv.analysis.receptive_field import AxisRF

    conv1 = AxisRF(rf=7, jump=Fraction(2), padding=3, box_jump=2)
    assert clean_positions(conv1, 32, Fraction(0)) == (2, 15)  # units 2..14 read [1, 7] .. [25, 31]
    assert clean_positions(conv1, 32, Fraction(8)) == (2, 7)
    assert clean_positions(conv1, 32, Fraction(1, 2)) == (2, 14)  # a fractional offset reads two neighbours
    lo, hi = clean_positions(AxisRF(rf=435, jump=Fraction(32), padding=217, box_jump=32), 256, Fraction(1))
    assert hi <= lo
    with pytest.raises(FoldError, match="offset="):
        clean_positions(conv1, 32, Fraction(-1))


def test_consistency_pair_is_the_plain_and_the_centred_consistency():
    net = small_net()
    images = torch.randn(6, 3, 40, 40, generator=torch.Generator().manual_seed(3))
    kw = dict(input_size=(32, 32), max_shift=8)
    plain, centred = consistency_pair(net, images, generator=torch.Generator().manual_seed(1), **kw)
    assert plain == consistency(net, images, generator=torch.Generator().manual_seed(1), **kw)
    assert centred == consistency(net, images, generator=torch.Generator().manual_seed(1), center=True, **kw)
    assert plain.outputs == 5 and plain.pairs == 6


@settings(max_examples=200, deadline=None)
@given(rf=hs.integers(1, 60), pad=hs.integers(0, 40), jump=hs.integers(1, 8), offset=hs.fractions(0, 12, max_denominator=4),
       aligned=hs.booleans())
def test_min_clean_length_is_the_shortest_crop_that_keeps_a_position(rf, pad, jump, offset, aligned):
    from foldconv.analysis.receptive_field import AxisRF

    axis = AxisRF(rf=rf, jump=Fraction(jump), padding=min(pad, rf - 1), aligned=aligned, box_jump=jump if aligned else 0)
    need = min_clean_length(axis, offset)
    lo, hi = clean_positions(axis, need, offset)
    assert hi > lo  # that crop keeps a position
    lo, hi = clean_positions(axis, need - 1, offset)
    assert hi <= lo  # one pixel less keeps none


def test_resnet18_layer1_needs_more_than_its_field_under_a_shift():
    # rf 43 at jump 4: measurable on a 64 px crop unshifted, not under a 32 px shift (the walkthrough's case)
    report = shift_equivariance(build_model("resnet18", meta=True), (1, 3, 64, 64))
    info = report.stage("layer1")
    axis = report.rf[info.name].axes[1]
    assert axis.rf == 43 < 64
    assert min_clean_length(axis, Fraction(0)) <= 64 < min_clean_length(axis, 32 * info.axes[1].rate)


@pytest.mark.claim("SHIFT-1")
def test_a_sub_pixel_stage_whose_period_divides_the_shift_is_checked_exactly_and_its_border_is_tight():
    from foldconv.analysis.shift import phase_boxes, phase_positions

    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 9, 5, padding=2), nn.ReLU(), nn.Conv2d(9, 9, 3, padding=1), nn.PixelShuffle(3)).double().eval()
    for conv in (net[0], net[2]):
        nn.init.uniform_(conv.bias, 0.5, 1.0)  # zero padding then differs from the image: a border unit shows it
    crop = 24
    report = shift_equivariance(net, (1, 1, crop, crop))
    info = report.stage("3")
    assert not report.rf[info.name].aligned and [(a.period, a.own_period) for a in info.axes] == [(1, 3), (1, 3)]
    assert phase_boxes(report, info, 1) == [(-3, 3)] * 3  # the 3 phases read one box, moving 1 px per 3 units
    imgs = torch.randn(2, 1, crop + 4, crop + 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    errs = stage_errors(net, report, ["3"], imgs, input_size=(crop, crop), shifts=[(0, 1), (0, 2)])
    assert all(e.exact and e.positions > 0 and e.error == 0.0 for e in errs), errs
    # tight: one more unit on either side reads padding, and the error is no longer 0
    lo, hi = phase_positions(report, info, 1, crop, Fraction(3))
    assert (lo, hi) == (9, 3 * crop - 12)
    captured = {}
    net[3].register_forward_hook(lambda _m, _i, out: captured.setdefault(len(captured), out))
    with torch.no_grad():
        net(imgs[..., :crop, :crop])
        net(imgs[..., :crop, 1:crop + 1])
    rows = phase_positions(report, info, 0, crop, Fraction(0))
    rate = (Fraction(3), Fraction(3))
    assert equivariance_error(captured[0], captured[1], (0, 1), rate, keep=[rows, (lo, hi)])[0] == 0.0
    assert equivariance_error(captured[0], captured[1], (0, 1), rate, keep=[rows, (lo - 1, hi)])[0] > 0
    assert equivariance_error(captured[0], captured[1], (0, 1), rate, keep=[rows, (lo, hi + 1)])[0] > 0


def test_a_model_output_that_is_not_a_tensor_is_named_not_a_deep_attribute_error():
    y = torch.zeros(1, 2, 8, 8)
    with pytest.raises(FoldError) as info:
        equivariance_error({"last_hidden_state": y}, y, (1, 1), (Fraction(1), Fraction(1)))
    assert info.value.param == "model output" and "must be one tensor" in str(info.value)
