"""The counter on the whole torchvision classification zoo, on meta tensors (COUNT-1, COUNT-2, COUNT-6).

One pass over the 80 models (about 20 s on 2 cores) serves every test here: each model is built on
meta the way its DEFAULT weights were measured, and counted under FlopCounterMode at the weights' crop size.
"""
from __future__ import annotations

import warnings

import pytest
import torch

from foldconv.analysis.counting import count
from foldconv.analysis.counting.zoo import classification_models, meta_model, published_figures, validate_zoo
from foldconv.errors import FoldError

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def zoo():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        return {v.model: v for v in validate_zoo()}


def test_zoo_is_the_whole_classification_zoo(zoo):
    assert len(zoo) == len(classification_models()) >= 80
    assert {"resnet50", "vit_b_16", "swin_t", "maxvit_t", "regnet_y_128gf", "efficientnet_b7"} <= set(zoo)


@pytest.mark.claim("COUNT-1")
def test_zoo_macs_equal_flop_counter_per_op_and_params_equal_numel(zoo):
    bad = {name: (v.macs, v.flop_counter_macs) for name, v in zoo.items() if not v.macs_ok}
    assert not bad, f"MACs differ from FlopCounterMode/2: {bad}"
    bad = {name: (v.params, v.numel) for name, v in zoo.items() if not v.params_ok}
    assert not bad, f"parameters differ from sum(numel): {bad}"


@pytest.mark.claim("COUNT-2")
def test_zoo_reproduces_published_figures(zoo):
    bad = {n: (v.params, v.published.num_params) for n, v in zoo.items() if not v.published_params_ok}
    assert not bad, f"parameters differ from torchvision's published num_params: {bad}"
    bad = {n: (v.gmacs, v.published.gmacs) for n, v in zoo.items() if not v.published_gmacs_ok}
    assert not bad, f"GMACs differ from torchvision's published _ops: {bad}"
    assert (zoo["resnet50"].params, zoo["resnet50"].macs) == (25_557_032, 4_089_184_256)
    assert all(v.ok for v in zoo.values())


@pytest.mark.claim("COUNT-6")
def test_every_op_of_the_zoo_has_a_cost_rule(zoo):
    bad = {n: [(op.op, op.calls) for op in v.report.unsupported_ops] for n, v in zoo.items() if not v.report.complete}
    assert not bad, f"ops without a cost rule: {bad}"


@pytest.mark.claim("COUNT-2")
def test_published_check_can_fail():
    # GoogLeNet built with its auxiliary heads is not the model the published figure describes.
    figures = published_figures("googlenet")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        model = meta_model("googlenet", aux_logits=True, init_weights=False)
    assert count(model, figures.input_shape).params != figures.num_params


def test_meta_model_builds_regnet_without_memory():
    model = meta_model("regnet_y_400mf")  # its builder computes with torch ops, so torch.device("meta") fails
    assert all(p.device.type == "meta" for p in model.parameters())
    assert torch.empty(0).device.type == "cpu"  # the patch on register_parameter is gone
    assert torch.nn.Linear(2, 2).weight.device.type == "cpu"


def test_unknown_model_name():
    with pytest.raises(FoldError, match="name='resnet51': is not a torchvision model name"):
        meta_model("resnet51")
