"""fold_model: a whole model folded as one stage, a real runnable model equal to the original; compare_model_fold
counts both (COUNT-5, STAGE-5).

The small net is checked exactly with derived (resampled) weights; resnet18 at each folded site exactly
(integer-valued float64 data and weights, compared with torch.equal) and as a whole in float64 (its ReLU,
BatchNorm and max-pooling are not polynomial).
"""
from __future__ import annotations

import copy
import math
from collections import Counter

import pytest
import torch
import torchvision
from torch import nn

from foldconv import depth_to_space, fold_conv
from foldconv.check import Verdict, check_equivalence, derived
from foldconv.models import meta_model
from foldconv.surgery import FoldedStage, compare_model_fold, fold_model
from helpers import integer_tensor, integer_weights, raises_fold_error


def _net() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.Conv2d(16, 4, 1)).double()


SHAPE = (2, 4, 8, 8)


@pytest.mark.claim("STAGE-5")
def test_small_net_folded_model_is_exactly_the_net():
    net = _net()
    folded, report = fold_model(net, 2, input_shape=SHAPE)
    assert report.folded_layers == 3 and report.traced
    assert all(p.device.type == "cpu" and p.dtype == torch.float64 for p in folded.parameters())
    check = check_equivalence(net, derived(lambda m: fold_model(m, 2, input_shape=SHAPE)[0]), SHAPE, dtypes=())
    assert check.ok and check.exact, check.summary()
    # and it is the model that runs: a changed folded weight flips the exact verdict
    mutated = integer_weights(copy.deepcopy(net))
    model, _ = fold_model(mutated, 2, input_shape=SHAPE)
    with torch.no_grad():
        model.body.get_submodule("1").weight[0, 0, 0, 0] += 1
    bad = check_equivalence(mutated, model, SHAPE, dtypes=())
    assert bad.verdict is Verdict.NOT_EQUIVALENT and bad.exact


def test_input_model_is_not_modified_and_meta_stays_meta():
    net = _net()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    fold_model(net, 2, input_shape=SHAPE)
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert all(isinstance(m, nn.Conv2d) for m in net)
    with torch.device("meta"):
        meta = nn.Sequential(nn.Conv2d(4, 8, 3))
    folded, _ = fold_model(meta, 2, input_shape=(1, 4, 8, 8))
    assert folded.body.get_submodule("0").weight.device.type == "meta"


@pytest.mark.claim("STAGE-5")
def test_resnet18_folded_model_runs_and_equals_the_original():
    torch.manual_seed(0)
    net = integer_weights(torchvision.models.resnet18()).eval()
    shape = (1, 3, 64, 64)
    folded, report = fold_model(net, 2, input_shape=shape)
    folded_convs = [layer.name for layer in report.layers if layer.action == "folded"]
    assert len(folded_convs) == 19 and isinstance(folded, FoldedStage)
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
    for name in folded_convs:  # each folded conv on the depth-to-space map is the conv it replaces, exactly
        xi = integer_tensor(sites[name], seed=len(name))
        with torch.no_grad():
            assert torch.equal(folded.body.get_submodule(name)(depth_to_space(xi, 2)), net.get_submodule(name)(xi)), name
    with torch.no_grad():  # the whole model (BatchNorm divides, ReLU and max-pooling clip): float64 agreement
        torch.testing.assert_close(folded(x), y, rtol=1e-10, atol=1e-10 * float(y.abs().max()))


def test_folded_model_computes_the_same_function():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 4, 3, stride=2, padding=1)).double()
    folded, report = fold_model(net, 2, input_shape=(1, 3, 8, 8))
    assert [layer.action for layer in report.layers if layer.kind == "Conv2d"] == ["kept", "folded"] and report.folded_layers == 1
    assert torch.equal(folded.body.get_submodule("2").weight, fold_conv(net[2], 2).weight)
    x = torch.randn(1, 3, 8, 8, dtype=torch.float64)
    assert torch.allclose(net(x), folded(x))


def test_cost_neutral_only_keeps_expanding_folds_out():
    net = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3, dilation=2))
    _, kept = fold_model(net, 2, input_shape=(1, 8, 12, 12))
    assert [layer.action for layer in kept.layers] == ["kept", "kept"]
    assert all("changes the costs" in layer.reason for layer in kept.layers)
    _, expanded = fold_model(net, 2, input_shape=(1, 8, 12, 12), cost_neutral_only=False)
    assert [layer.action for layer in expanded.layers] == ["folded", "folded"]


class Branchy(nn.Module):
    """A branch on a tensor value: torch.fx cannot trace it."""

    def __init__(self):
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.body = nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x):
        y = self.body(self.stem(x))
        return self.head(y) if bool(y.sum() > 0) else self.head(-y)


@pytest.mark.claim("STAGE-5")
def test_a_model_fx_cannot_trace_has_each_conv_folded_on_its_own():
    net = integer_weights(Branchy()).double()
    shape = (1, 3, 8, 8)
    folded, report = fold_model(net, 2, input_shape=shape)
    assert not report.traced and "torch.fx cannot trace" in report.fallback_reason and "each conv folded on its own" in report.summary()
    assert [(layer.name, layer.action) for layer in report.layers] == [("stem", "kept"), ("body.0", "folded"), ("head", "folded")]
    assert isinstance(folded.body[0], FoldedStage) and isinstance(folded.stem, nn.Conv2d) and type(folded) is Branchy
    assert report.layout_ops == ("DepthToSpace@input:body.0", "DepthToSpace@input:head")
    x = integer_tensor(shape)
    assert torch.equal(folded(x), net(x))


@pytest.mark.claim("COUNT-5")
def test_folding_every_conv_of_a_model_keeps_its_totals():
    with torch.device("meta"):
        net = torchvision.models.resnet18()
    cmp = compare_model_fold(net, (1, 3, 64, 64), r=2)
    assert cmp.keeps_costs and cmp.quantity("flops").equal
    # The layout copies are new activations: the folded model writes more memory.
    elements = cmp.quantity("activation_elements")
    assert elements.folded > elements.original
    convs = [layer for layer in cmp.report.layers if layer.kind == "Conv2d"]
    assert cmp.folded_layers == 19 and [layer.name for layer in convs if layer.action != "folded"] == ["conv1"]
    assert cmp.original.macs == cmp.folded.macs and cmp.folded.complete


def test_the_activation_rise_is_the_layout_layers_and_the_in_place_layers_run_out_of_place():
    cmp = compare_model_fold(meta_model("resnet18"), (1, 3, 64, 64), r=2)
    before, after = Counter(), Counter()
    for layer in cmp.original.layers:
        before[layer.type] += layer.activation_elements
    for layer in cmp.folded.layers:
        after[layer.type] += layer.activation_elements
    rise = {kind: after[kind] - before[kind] for kind in set(before) | set(after) if after[kind] != before[kind]}
    # torchvision's ReLUs and `out += identity` run in place (no new activations); in the folded model out of place
    assert set(rise) == {"DepthToSpace", "SpaceToDepth", "ReLU", "FoldedStageBody"}, rise
    layout = rise["DepthToSpace"] + rise["SpaceToDepth"]
    assert layout == cmp.layout_elements > 0
    total = cmp.quantity("activation_elements")
    note = cmp.rows()[4]["note"]
    assert note.startswith(f"+{total.folded - total.original:,} = {layout:,} written by the ")
    assert f"+ {rise['ReLU'] + rise['FoldedStageBody']:,} written by layers that run in place" in note


def test_compare_model_fold_counts_without_copying_real_weights():
    cmp = compare_model_fold(_net(), (1, 4, 8, 8), r=2)
    assert cmp.keeps_costs and cmp.folded_layers == 3
    assert math.isclose(cmp.quantity("params").folded, sum(p.numel() for p in _net().parameters()))


@pytest.mark.parametrize("order", ["bad", "", "c rh", ("c", "rh", "rh"), 3, None])
def test_bad_fold_order(order):
    raises_fold_error("order", fold_model, _net(), 2, input_shape=SHAPE, order=order)


@pytest.mark.parametrize("r", [0, -2, (2, 0), 2.0, "2y", True, None, (2, 2, 2, 2)])
def test_bad_single_r(r):
    raises_fold_error("r", fold_model, _net(), r, input_shape=SHAPE)
    raises_fold_error("r", compare_model_fold, _net(), SHAPE, r=r)


def test_other_bad_inputs():
    raises_fold_error("cost_neutral_only", fold_model, _net(), 2, input_shape=SHAPE, cost_neutral_only="yes")
    raises_fold_error("model", fold_model, "net", 2, input_shape=SHAPE)
    raises_fold_error("cost_neutral_only", compare_model_fold, _net(), SHAPE, r=2, cost_neutral_only=None)
    raises_fold_error("input_shape", fold_model, _net(), 2, input_shape=(4, 8, 8, 8))
    raises_fold_error("input_shape", fold_model, _net(), 2, input_shape="1x4x8x8")
