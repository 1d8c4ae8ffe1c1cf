"""The counter on the whole torchvision classification zoo, on meta tensors (COUNT-1, COUNT-2).

One pass over the 80 models (about 20 s on 2 cores) serves every test here: each model is built on
meta the way its DEFAULT weights were measured, and counted under FlopCounterMode at the weights' crop size.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from foldconv.analysis.counting.zoo import classification_models, meta_model, published_figures, validate_zoo
from foldconv.analysis.counting import count
from foldconv.errors import FoldError


@pytest.fixture(scope="module")
def zoo():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return {row["model"]: row for row in validate_zoo()}


def test_zoo_is_the_whole_classification_zoo(zoo):
    assert len(zoo) == len(classification_models()) >= 80
    assert {"resnet50", "vit_b_16", "swin_t", "maxvit_t", "regnet_y_128gf", "efficientnet_b7"} <= set(zoo)


@pytest.mark.claim("COUNT-1")
def test_zoo_macs_equal_flop_counter_per_op_and_params_equal_numel(zoo):
    bad = {name: (row["macs"], row["flop_counter_macs"]) for name, row in zoo.items() if not row["macs_ok"]}
    assert not bad, f"MACs differ from FlopCounterMode/2: {bad}"
    bad = {name: (row["params"], row["numel"]) for name, row in zoo.items() if not row["params_ok"]}
    assert not bad, f"parameters differ from sum(numel): {bad}"


@pytest.mark.claim("COUNT-2")
def test_zoo_reproduces_published_figures(zoo):
    bad = {n: (r["params"], r["published_params"]) for n, r in zoo.items() if not r["published_params_ok"]}
    assert not bad, f"parameters differ from torchvision's published num_params: {bad}"
    bad = {n: (r["gmacs"], r["published_gmacs"]) for n, r in zoo.items() if not r["published_gmacs_ok"]}
    assert not bad, f"GMACs differ from torchvision's published _ops: {bad}"
    assert (zoo["resnet50"]["params"], zoo["resnet50"]["macs"]) == (25_557_032, 4_089_184_256)


@pytest.mark.claim("COUNT-2")
def test_published_check_can_fail():
    # GoogLeNet built with its auxiliary heads is not the model the published figure describes.
    figures = published_figures("googlenet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = meta_model("googlenet", aux_logits=True, init_weights=False)
    assert count(model, figures["input_shape"]).params != figures["num_params"]


def test_meta_model_builds_regnet_without_memory():
    model = meta_model("regnet_y_400mf")  # its builder computes with torch ops, so torch.device("meta") fails
    assert all(p.device.type == "meta" for p in model.parameters())
    assert torch.empty(0).device.type == "cpu"  # the patch on register_parameter is gone
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"


def test_unknown_model_name():
    with pytest.raises(FoldError, match="name='resnet51': is not a torchvision model name"):
        meta_model("resnet51")
