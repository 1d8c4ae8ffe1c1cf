"""What the rf app's outputs say: the headline is the last spatial layer (not a post-pool "global" unit), the
gradient check runs at a size where that layer's boxes are not the whole image, the ERF is drawn for it, the
rf_jump plot labels every power of two, and input_shape is parsed as count parses it."""
from __future__ import annotations

import pytest
import torch

from foldconv import FoldError
from foldconv.analysis.receptive_field import receptive_field
from foldconv.experiments import receptive_field as experiment
from foldconv.experiments.counting import CountExperiment
from foldconv.experiments.receptive_field import (
    FoldTable,
    RFExperiment,
    auto_check_size,
    last_spatial,
    rf_jump_figure,
    run_receptive_field,
)
from foldconv.models import build_model

MAKE_NET = {"_target_": "custom_model.make_net", "width": 2}


@pytest.fixture(scope="module")
def resnet18():
    return build_model("resnet18", meta=True)


def test_the_headline_is_the_last_spatial_layer(resnet18):
    report = receptive_field(resnet18, (1, 3, 224, 224))
    assert last_spatial(report) == "layer4_1_relu_1"
    line = experiment._headline("resnet18", report)
    assert line.startswith("resnet18: last spatial layer layer4_1_relu_1 (1, 512, 7, 7): rf (435, 435), jump (32, 32), padding (217, 217)")
    assert "the output fc reads the whole input (global)" in line and "rf (627" not in line
    small = receptive_field(resnet18, (1, 3, 32, 32))  # layer4 is 1x1 there: its units all read the same box
    assert last_spatial(small) == "layer3_1_relu_1"


def test_the_check_size_comes_from_the_rf_so_deep_boxes_are_not_the_whole_image(resnet18):
    report = receptive_field(resnet18, (1, 3, 224, 224))
    size = auto_check_size(report)
    assert size == (512, 512)
    at = receptive_field(resnet18, (1, 3) + size)
    assert not experiment._whole_image(at, last_spatial(at))
    # the old fixed 64 px: the deep boxes were the whole image, the check could not tell a wrong rf from the image size
    assert experiment._whole_image(receptive_field(resnet18, (1, 3, 64, 64)), "layer4_1_relu_1")
    huge = receptive_field(torch.nn.Sequential(*[torch.nn.Conv2d(1, 1, 9) for _ in range(200)]), (1, 1, 1700, 1700))
    assert auto_check_size(huge)[0] ** 2 <= experiment.MAX_CHECK_ELEMENTS


def test_the_run_checks_and_draws_the_last_spatial_layer(tmp_path, monkeypatch):
    drawn = []
    real = experiment.erf_figure
    monkeypatch.setattr(experiment, "erf_figure", lambda erf, box, target, **kw: drawn.append(target) or real(erf, box, target, **kw))
    e = RFExperiment(model=MAKE_NET, input_shape=[1, 3, 16, 16], erf_samples=1, fold=FoldTable(r=0))
    result = run_receptive_field(e, tmp_path)
    assert result.answer.startswith("make_net: last spatial layer body ") and result.ok
    assert drawn == ["body"]
    assert ("check at (32, 32) (check_size=auto: the rf of body, (7, 7), plus two jumps (2, 2), at least 32 px, rounded up to a multiple of the jump, "
            "so that its boxes are not the whole image; larger than input_shape's (16, 16); the centre box of body is inside it)") in result.text
    checked = (tmp_path / "check.md").read_text()
    assert "| body |" in checked


def test_rf_jump_ticks_are_every_power_of_two():
    net = torch.nn.Sequential(*[torch.nn.Conv2d(1, 1, 3, stride=2 if k % 2 else 1, padding=1) for k in range(8)])
    fig = rf_jump_figure(receptive_field(net, (1, 1, 64, 64)), "chain")
    fig.canvas.draw()
    rf_ax, jump_ax = fig.axes
    assert [t.get_text() for t in jump_ax.get_yticklabels()] == ["1", "2", "4", "8", "16"]
    assert {"2", "4", "8", "16", "32"} <= {t.get_text() for t in rf_ax.get_yticklabels()}


@pytest.mark.parametrize("spelling", [[1, 3, 16, 16], (2, 3, 8, 12), [[1, 3, 16, 16]]])
def test_input_shape_is_parsed_as_count_parses_it(spelling):
    conv = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3}
    assert RFExperiment(model=conv, input_shape=spelling).input_shape == CountExperiment(model=conv, input_shape=spelling).input_shape


@pytest.mark.parametrize("bad", [[1, 3, 0, 8], "1x3x8x8", [[1, 3, 8, 8], [1, 3, 8, 8]]])
def test_a_bad_input_shape_is_refused_by_both(bad):
    conv = {"_target_": "torch.nn.Conv2d", "in_channels": 3, "out_channels": 4, "kernel_size": 3}
    for make in (RFExperiment, CountExperiment):
        with pytest.raises(FoldError) as info:
            make(model=conv, input_shape=bad)
        assert info.value.param == "input_shape"


def test_the_headline_marks_a_last_spatial_layer_that_reads_the_whole_input_as_global():
    """At 32 px every unit of resnet18's last spatial layer (layer3: layer4 is 1x1) reads the whole input: the headline
    says so, as layers.md does."""
    import torchvision

    from foldconv.analysis.receptive_field import receptive_field
    from foldconv.experiments.receptive_field import _headline

    report = receptive_field(torchvision.models.resnet18(), (1, 3, 32, 32))
    line = _headline("resnet18", report)
    assert "last spatial layer layer3" in line and "(global)" in line.split("; the output")[0], line


def test_the_erf_unit_is_the_one_centred_nearest_the_input_centre_and_its_erf_peaks_there():
    # resnet18's 4x4 layer4 at 112 px centres its units at -0.5, 31.5, 63.5, 95.5 (+/- 0.5): the middle index
    # (n - 1) // 2 = 1 drew an ERF in the top-left quadrant under a title saying "centre unit"
    rep = receptive_field(build_model("resnet18", meta=True), (1, 3, 112, 112))
    unit, centre = experiment.erf_unit(rep, "layer4_1_relu_1")
    assert rep.center("layer4_1_relu_1") == (1, 1) and unit == (2, 2)
    assert all(abs(c - 55.5) <= 16 for c in centre)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 1, 3, stride=2, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(1, 1, 5, stride=2, padding=0))
    rep = receptive_field(net, (1, 1, 24, 24))
    unit, centre = experiment.erf_unit(rep, rep.output_name)
    erf = experiment.effective_receptive_field(net, (1, 1, 24, 24), index=unit, samples=4, report=rep)
    peak = divmod(int(erf.argmax()), erf.shape[1])
    assert all(abs(p - c) <= 4 for p, c in zip(peak, centre)), (unit, centre, peak)
    assert all(abs(c - 11.5) <= 2 for c in centre)
