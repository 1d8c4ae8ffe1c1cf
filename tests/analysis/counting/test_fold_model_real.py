"""fold_model returns a real, runnable model equal to the original (issue 11, item 6): not a meta copy.

The small net is checked exactly with derived (resampled) weights; resnet18 at each folded site exactly
(integer-valued float64 data and weights, compared with torch.equal) and as a whole in float64 (its ReLU,
BatchNorm and max-pooling are not polynomial).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn

from foldconv.analysis.counting import compare_model_fold, fold_model
from foldconv.check import Verdict, check_equivalence, derived
from helpers import integer_tensor, integer_weights


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Conv2d(16, 4, 1)).double()


@pytest.mark.claim("STAGE-5")
def test_small_net_folded_model_is_exactly_the_net():
    net = _net()
    folded = fold_model(net, 2)
    assert folded.folded_layers == 3
    assert all(p.device.type == "cpu" and p.dtype == torch.float64 for p in folded.model.parameters())
    report = check_equivalence(net, derived(lambda m: fold_model(m, 2).model), (2, 4, 8, 8), dtypes=())
    assert report.ok and report.exact, report.summary()
    # and it is the model that runs: a changed folded weight flips the exact verdict
    mutated = integer_weights(copy.deepcopy(net))
    model = fold_model(mutated, 2).model
    with torch.no_grad():
        model[1][1].weight[0, 0, 0, 0] += 1
    bad = check_equivalence(mutated, model, (2, 4, 8, 8), dtypes=())
    assert bad.verdict is Verdict.NOT_EQUIVALENT and bad.exact


def test_input_model_is_not_modified_and_meta_stays_meta():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fold_model(net, 2)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(isinstance(m, nn.Conv2d) for m in net)
    with torch.device("meta"):
        meta = nn.Sequential(nn.Conv2d(4, 8, 3))
    assert fold_model(meta, 2).model[0][1].weight.device.type == "meta"


@pytest.mark.claim("STAGE-5")
def test_resnet18_folded_model_runs_and_equals_the_original():
    torch.manual_seed(0)
    net = integer_weights(torchvision.models.resnet18()).eval()
    shape = (1, 3, 64, 64)
    folded = fold_model(net, 2)
    assert folded.folded_layers == 19
    sites = {}

    def remember(name):
        def hook(module, inputs, output):
            sites[name] = tuple(inputs[0].shape)  # returns None: the output is left alone
        return hook

    hooks = [m.register_forward_hook(remember(name)) for name, m in net.named_modules() if isinstance(m, nn.Conv2d)]
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        y = net(x)
    for h in hooks:
        h.remove()
    for layer in folded.layers:
        if layer.folded:  # each folded site is the conv it replaces, exactly: integer data, integer weights
            xi = integer_tensor(sites[layer.layer], seed=len(layer.layer))
            with torch.no_grad():
                assert torch.equal(folded.model.get_submodule(layer.layer)(xi), net.get_submodule(layer.layer)(xi)), layer.layer
    with torch.no_grad():  # the whole model (BatchNorm divides, ReLU and max-pooling clip): float64 agreement
        torch.testing.assert_close(folded.model(x), y, rtol=1e-10, atol=1e-10 * float(y.abs().max()))


def test_compare_model_fold_counts_without_copying_real_weights():
    net = _net()
    cmp = compare_model_fold(net, (1, 4, 8, 8), r=2)
    assert cmp.keeps_costs and cmp.folded_layers == 3
