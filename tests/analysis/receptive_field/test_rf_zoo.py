"""Analytic receptive fields equal the measured gradient supports on the torchvision classification zoo.

Every model is analysed at its own input size; every model the float64 gradient check can afford
(<= 100M parameters, a 64 px input) is also measured. The models left out are listed here, with the
reason, and the test fails if the list changes: a model cannot drop out of the check silently.

Models are built with their parameters on the meta device and their buffers real: the analysis reads only
shapes, and the gradient check measures a positive copy that replaces every parameter (``positive_copy``)
but keeps the buffers (batch-norm statistics, Swin's position indices). So no time goes into initialising
weights that are never read, and the check measures exactly what it measured on an initialised model.
"""
from __future__ import annotations

import contextlib
import warnings
from typing import Iterator

import pytest
import torch
import torchvision
from torch import nn

from foldconv.analysis import UnsupportedOpError, check_receptive_field, receptive_field

SIZE = 64
MAX_PARAMS = 100_000_000
NOT_MEASURED = {
    # reason: the float64 copy and its gradients are too big for a unit test (> 100M parameters)
    **{m: "params" for m in ("vgg11", "vgg11_bn", "vgg13", "vgg13_bn", "vgg16", "vgg16_bn", "vgg19", "vgg19_bn",
                             "convnext_large", "efficientnet_v2_l", "regnet_x_32gf", "regnet_y_32gf", "regnet_y_128gf",
                             "wide_resnet101_2")},
    # reason: the model needs a larger input than 64 px
    # (maxvit_t: its 7x7 windows need a multiple of 224's feature sizes; it analyses, with einsum and swapaxes rules)
    **{m: "input" for m in ("vit_b_16", "vit_b_32", "vit_h_14", "vit_l_16", "vit_l_32", "inception_v3", "maxvit_t")},
}


@contextlib.contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Modules built inside get their parameters on the meta device (initialisers then cost nothing)."""
    register = nn.Module.register_parameter

    def on_meta(module: nn.Module, name: str, param) -> None:
        if param is not None and param.device.type != "meta":
            param = nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        register(module, name, param)

    nn.Module.register_parameter = on_meta  # type: ignore[method-assign]
    try:
        yield
    finally:
        nn.Module.register_parameter = register  # type: ignore[method-assign]


def build(name: str) -> nn.Module:
    with parameters_on_meta():
        return torchvision.models.get_model(name, weights=None)


def test_parameters_on_meta_keeps_buffers_and_the_check():
    net = build("resnet18")
    assert net.conv1.weight.device.type == "meta" and net.bn1.running_var.device.type == "cpu"
    assert bool((net.bn1.running_var == 1).all())
    torch.manual_seed(0)
    real = torchvision.models.get_model("resnet18", weights=None)
    a, b = (check_receptive_field(m, (1, 3, 48, 48), max_nodes=4) for m in (net, real))
    assert a.ok and a.rows == b.rows


@pytest.mark.slow
@pytest.mark.claim("RF-2")
def test_analytic_equals_empirical_on_the_zoo():
    names = torchvision.models.list_models(module=torchvision.models)
    measured, skipped, failures = [], {}, []
    for name in names:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = build(name)
            size = 299 if name == "inception_v3" else 224
            try:
                receptive_field(model, (1, 3, size, size))  # every model is analysed at its own size
            except UnsupportedOpError:
                skipped[name] = "einsum"
                continue
            if name.startswith("vit") or name in ("inception_v3", "maxvit_t"):
                skipped[name] = "input"
                continue
            if sum(p.numel() for p in model.parameters()) > MAX_PARAMS:
                skipped[name] = "params"
                continue
            check = check_receptive_field(model, (1, 3, SIZE, SIZE), max_nodes=4)
        measured.append(name)
        if not check.ok:
            failures.append((name, check.mismatches[:2]))
    assert skipped == NOT_MEASURED
    assert len(measured) == len(names) - len(NOT_MEASURED) >= 55
    assert not failures, failures
