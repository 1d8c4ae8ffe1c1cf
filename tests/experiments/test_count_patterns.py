"""The count app's fold view names the model-level patterns: YOLOv5's slices + cat + conv is
one 6x6 stride-2 conv, ESPCN's conv + PixelShuffle is a transposed conv; a model without such a pattern keeps
the view as it was (no extra column)."""
from __future__ import annotations

import torch
from torch import nn

from foldconv.analysis.counting import count
from foldconv.experiments.counting import CountExperiment, CountJob, run_count, run_count_jobs, write_count_report
from foldconv.experiments.io import read_csv
from foldconv.experiments.rewrite import REAL_MODELS


def fold_view(tmp_path, label, model, shape):
    run_count_jobs([CountJob(label, model, shape)], tmp_path, fold_rs=(2,), fold_compare_r=None, plot=False)
    return {r["layer"]: r for r in read_csv(tmp_path / f"{label}_fold.csv")}


def test_focus_and_sub_pixel_patterns_are_named_in_the_fold_view(tmp_path):
    yolo = fold_view(tmp_path / "yolo", "yolo", REAL_MODELS["yolov5_stem"].build(), (1, 3, 32, 32))
    assert yolo["focus.conv.conv"]["model-level pattern"] == "slice+cat+Conv2d (Focus) = Conv2d(3->32, k=(6, 6), s=(2, 2), p=(2, 2))"
    assert yolo["down.conv"]["model-level pattern"] == ""  # a strided conv alone is no model-level pattern
    tied = REAL_MODELS["espcn"].build(icnr=True)  # ICNR: the r^2 biases of a channel are equal
    espcn = fold_view(tmp_path / "espcn", "espcn", tied, (1, 1, 8, 8))
    assert espcn["subpixel.0"]["model-level pattern"] == "Conv2d+PixelShuffle (sub-pixel) = ConvTranspose2d(32->1, k=(9, 9), s=(3, 3), p=(3, 3))"
    free = REAL_MODELS["espcn"].build()  # free sub-pixel biases: a transposed conv and a periodic bias
    text = fold_view(tmp_path / "free", "espcn", free, (1, 1, 8, 8))["subpixel.0"]["model-level pattern"]
    assert text.startswith("Conv2d+PixelShuffle (sub-pixel) = "), text


def test_a_model_without_patterns_keeps_its_fold_view(tmp_path):
    net = torch.nn.Sequential(torch.nn.Conv2d(4, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv2d(8, 4, 1))
    view = fold_view(tmp_path, "plain", net, (1, 4, 8, 8))
    assert set(view["0"]) == {"layer", "conv", "r=2"}


def test_the_count_app_names_patterns_of_a_meta_built_model(tmp_path):
    target = {"model": {"_target_": "foldconv.models.ESPCN"}, "input_shape": [1, 1, 8, 8]}
    exp = CountExperiment(models=[], targets={"espcn": target}, fold_r=[2], fold_compare_r=None, plot=False, d2l_table=False)
    assert run_count(exp, tmp_path).ok
    row = {r["layer"]: r for r in read_csv(tmp_path / "espcn_fold.csv")}["subpixel.0"]
    assert row["model-level pattern"] == ("Conv2d+PixelShuffle (sub-pixel): not one layer here (it depends on the weights, "
                                          "and these are on the meta device)")


def test_report_writes_every_view(tmp_path):
    paths = write_count_report(count(nn.Linear(3, 2), (1, 3), name="fc"), tmp_path, stem="fc")
    for view in ("layers", "module", "type", "op", "total"):
        assert paths[f"{view}_csv"].exists() and paths[f"{view}_md"].exists()
