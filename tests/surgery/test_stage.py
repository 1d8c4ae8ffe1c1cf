"""fold_stage / unfold_stage: a whole stage in the space domain, exact, with the reasons and the round trip.

Exact verdicts: derived() resamples integer weights in every trial, so they hold for all weights. ReLU is not
polynomial (the checker samples it): the stage's exact check runs on its fx graph with ReLU as the identity (the
prediction engine's RULE-1 covers ReLU itself: elementwise, it commutes with the layout change), and the stage
with ReLU is checked by sampling.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.fx as fx
import torchvision
from torch import nn

from foldconv.check import Verdict, check_equivalence, derived
from foldconv.surgery.bn import fold_bn
from foldconv.surgery.stage import ACTIONS, FoldedStage, fold_stage, unfold_stage
from helpers import integer_tensor, integer_weights, raises_fold_error


def _bn_folded(stage: nn.Module) -> nn.Module:
    """A torchvision ResNet stage with every BatchNorm folded into the conv before it (eval mode)."""
    stage = copy.deepcopy(stage).eval()
    for block in stage:
        block.conv1, block.bn1 = fold_bn(block.conv1, block.bn1), nn.Identity()
        block.conv2, block.bn2 = fold_bn(block.conv2, block.bn2), nn.Identity()
        if block.downsample is not None:
            block.downsample = nn.Sequential(fold_bn(block.downsample[0], block.downsample[1]))
    return stage.double()


def _polynomial(stage: nn.Module) -> fx.GraphModule:
    """The stage's fx graph with every ReLU the identity: only convs, adds and layout ops remain."""
    stage = copy.deepcopy(stage)
    for name, module in list(stage.named_modules()):
        if isinstance(module, nn.ReLU):
            parent, _, leaf = name.rpartition(".")
            setattr(stage.get_submodule(parent) if parent else stage, leaf, nn.Identity())
    return fx.symbolic_trace(stage)


@pytest.fixture(scope="module")
def resnet18():
    torch.manual_seed(0)
    return torchvision.models.resnet18().eval()


def _exact(stage, r, shape, order="crd", **kwargs):
    build = derived(lambda m: fold_stage(m, r, input_shape=shape, order=order)[0])
    return check_equivalence(stage, build, shape, dtypes=(), **kwargs)


@pytest.mark.claim("STAGE-1")
@pytest.mark.parametrize("name, r, exact", [("layer1", 2, True), ("layer1", (2, 4), False), ("layer2", 2, True)])
def test_resnet18_stage_folds_exactly(resnet18, name, r, exact):
    stage = _bn_folded(getattr(resnet18, name))
    shape = (1, 64, 8, 8)
    folded, report = fold_stage(stage, r, input_shape=shape)
    convs = sum(isinstance(m, nn.Conv2d) for m in stage.modules())
    assert report.folded_layers == convs and {layer.action for layer in report.layers} == {"folded", "commuted"}
    # one DepthToSpace at the entry and after every conv, one SpaceToDepth at the exit: nothing else
    assert sorted(op.split("@")[0] for op in report.layout_ops) == ["DepthToSpace"] * (convs + 1) + ["SpaceToDepth"]
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():  # with its ReLUs, in float64
        torch.testing.assert_close(folded(x), stage(x), rtol=1e-12, atol=1e-12)
    if exact:  # (r=(2, 4) is proved on the conv chains below; each exact check here runs the stage 14 times)
        # degree 5 (four stacked convs): integers in [-64, 64] keep every sum exact, 6 trials bound a false verdict
        check = _exact(_polynomial(stage), r, shape, exact_range=64, trials=6)
        assert check.ok and check.exact and check.false_equivalent_bound < 1e-8, check.summary()


def _chain() -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.Conv2d(16, 16, 3, stride=2, padding=1), nn.Conv2d(16, 8, 1)).double()


@pytest.mark.claim("STAGE-1")
@pytest.mark.parametrize("r, order", [(2, "crd"), ((2, 4), "crd"), (2, "dcr")])
def test_plain_conv_chain_folds_exactly(r, order):
    shape = (2, 8, 8, 12)
    report = _exact(_chain(), r, shape, order)
    assert report.ok and report.exact and report.degree >= 4, report.summary()
    _, folded = fold_stage(_chain(), r, input_shape=shape, order=order)
    assert [layer.action for layer in folded.layers] == ["folded"] * 3
    assert folded.layers[1].after.startswith("Conv2d(") and folded.layers[1].before.startswith("Conv2d(16->16")


@pytest.mark.claim("STAGE-2")
def test_out_channels_not_a_multiple_end_the_space_domain_and_stay_exact():
    stage = nn.Sequential(nn.Conv2d(8, 6, 3, padding=1), nn.Conv2d(6, 8, 1), nn.Conv2d(8, 4, 3, padding=1)).double()
    shape = (1, 8, 6, 6)
    _, folded = fold_stage(stage, 2, input_shape=shape)
    first, second, third = folded.layers
    assert first.action == "folded" and "out_channels=6 is not a multiple of prod(r)=4" in first.reason
    assert second.action == "kept" and "in_channels=6: must be a multiple of prod(r)=4" in second.reason
    assert third.action == "folded"
    report = _exact(stage, 2, shape)
    assert report.ok and report.exact, report.summary()


def _bn(channels: int, tied: bool) -> nn.BatchNorm2d:
    bn = nn.BatchNorm2d(channels).double().eval()
    values = torch.arange(channels, dtype=torch.float64)
    with torch.no_grad():
        for t in (bn.weight, bn.bias, bn.running_mean):
            t.copy_(values // 4 + 1 if tied else values + 1)  # crd order, r=2: channels 4g..4g+3 form a fold block
        bn.running_var.fill_(4.0)
    return bn


@pytest.mark.claim("STAGE-2", "STAGE-3")
@pytest.mark.parametrize("tied", [True, False])
def test_batchnorm_commutes_only_with_tied_statistics(tied):
    stage = nn.Sequential(integer_weights(nn.Conv2d(4, 8, 3, padding=1)), _bn(8, tied), nn.ReLU(),
                          integer_weights(nn.Conv2d(8, 4, 3, padding=1), seed=1))
    shape = (1, 4, 6, 6)
    module, folded = fold_stage(stage, 2, input_shape=shape)
    actions = [layer.action for layer in folded.layers]
    if tied:
        assert actions == ["folded", "commuted", "commuted", "folded"]
        # entry, after conv 0; conv 3's output meets the exit: its DepthToSpace/SpaceToDepth pair is cancelled
        assert folded.layout_ops == ("DepthToSpace@input", "DepthToSpace@0") and folded.cancelled_pairs == 1
    else:
        assert actions == ["folded", "kept", "commuted", "folded"]
        assert folded.layers[1].reason.startswith("fails: BatchNorm statistics or affine parameters differ")
        # the BatchNorm reads conv 0's output as it is (a second cancelled pair); ReLU's input goes back to space
        assert folded.layout_ops == ("DepthToSpace@input", "DepthToSpace@1") and folded.cancelled_pairs == 2
    report = check_equivalence(stage, module, shape, dtypes=())
    assert report.ok and report.float64_max_abs < 1e-9, report.summary()


@pytest.mark.claim("STAGE-3")
def test_cancelled_pairs_counted_on_a_chain():
    _, folded = fold_stage(_chain(), 2, input_shape=(1, 8, 8, 8))
    # entry + after each of the first two convs; the last conv's output leaves as it is
    assert len(folded.layout_ops) == 3 and folded.cancelled_pairs == 1
    assert not any(op.startswith("SpaceToDepth") for op in folded.layout_ops)
    assert "1 cancelled pair(s)" in folded.summary()


@pytest.mark.claim("STAGE-4")
@pytest.mark.parametrize("case", ["resnet_layer2_with_bn", "tied_bn", "chain_dcr"])
def test_unfold_gives_the_original_back_bit_exactly(resnet18, case):
    if case == "resnet_layer2_with_bn":
        stage, shape, r, order = copy.deepcopy(resnet18.layer2), (1, 64, 8, 8), 2, "crd"
    elif case == "tied_bn":
        stage, shape, r, order = nn.Sequential(nn.Conv2d(4, 8, 3), _bn(8, True), nn.ReLU()), (1, 4, 6, 6), 2, "crd"
    else:
        stage, shape, r, order = _chain(), (1, 8, 8, 8), (2, 4), "dcr"
    back = unfold_stage(fold_stage(stage, r, input_shape=shape, order=order)[0])
    assert repr(back) == repr(stage) and type(back) is type(stage)
    assert list(back.state_dict()) == list(stage.state_dict())
    for (key, a), b in zip(back.state_dict().items(), stage.state_dict().values()):
        assert a.dtype == b.dtype and torch.equal(a, b), key
    assert [m.training for m in back.modules()] == [m.training for m in stage.modules()]


@pytest.mark.claim("STAGE-4")
def test_unfold_follows_a_changed_folded_weight():
    stage = _chain()
    folded, _ = fold_stage(stage, 2, input_shape=(1, 8, 8, 8))
    with torch.no_grad():
        folded.body.get_submodule("1").weight.mul_(2)
    assert torch.equal(unfold_stage(folded)[1].weight, 2 * stage[1].weight)


@pytest.mark.claim("STAGE-1")
def test_mutation_flips_the_verdict():
    stage = integer_weights(_chain())
    shape = (1, 8, 8, 8)
    folded, _ = fold_stage(stage, 2, input_shape=shape)
    good = check_equivalence(stage, folded, shape, dtypes=())
    assert good.ok and good.exact, good.summary()
    with torch.no_grad():
        folded.body.get_submodule("1").weight[0, 0, 0, 0] += 1
    bad = check_equivalence(stage, folded, shape, dtypes=())
    assert bad.verdict is Verdict.NOT_EQUIVALENT and bad.exact, bad.summary()


def test_folded_stage_is_real_and_runnable():
    stage = _chain().float()
    folded, report = fold_stage(stage, 2, input_shape=(1, 8, 8, 8))
    assert isinstance(folded, FoldedStage) and folded.report is report and all(p.device.type == "cpu" for p in folded.parameters())
    x = integer_tensor((3, 8, 4, 10)).float()  # another batch and size than input_shape: it is a plain module
    assert torch.equal(folded(x), stage(x)) or torch.allclose(folded(x), stage(x), atol=1e-3)
    assert sum(p.numel() for p in folded.parameters()) == sum(p.numel() for p in stage.parameters())
    assert {row["action"] for row in report.rows()} <= set(ACTIONS) and "| name | node |" in report.to_markdown()


def test_layers_without_a_rule_and_functions_are_kept_with_a_reason():
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(4, 4, 3, padding=1)
            self.pool = nn.AdaptiveAvgPool2d(2)
            self.linear = nn.Linear(16, 3)
            self.gamma = nn.Parameter(torch.arange(4.0).reshape(4, 1, 1))  # a layer scale: read by get_attr

        def forward(self, x):
            y = torch.relu(self.conv(x)) * 2 + x
            return self.linear(torch.flatten(self.pool(y * self.gamma), 1))

    block = Block().double()
    folded, report = fold_stage(block, 2, input_shape=(2, 4, 6, 6))
    actions = {layer.name: (layer.action, layer.reason) for layer in report.layers}
    assert actions["conv"][0] == "folded" and actions["relu"][0] == "commuted" and actions["add"][0] == "commuted"
    assert actions["mul"][0] == "commuted"
    assert actions["pool"][0] == "kept" and actions["linear"][0] == "kept"
    assert "no following-layer rule" in actions["linear"][1] and "not known to commute" in actions["flatten"][1]
    assert actions["mul_1"][0] == "kept" and "broadcasts" in actions["mul_1"][1]
    x = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    torch.testing.assert_close(folded(x), block(x), rtol=1e-12, atol=1e-12)
    back = unfold_stage(folded)
    assert all(torch.equal(a, b) for a, b in zip(back.state_dict().values(), block.state_dict().values()))
    assert list(back.state_dict()) == list(block.state_dict())


def test_bad_requests_are_fold_errors():
    raises_fold_error("stage", fold_stage, "layer1", 2, input_shape=(1, 4, 4, 4))
    raises_fold_error("input_shape", fold_stage, _chain(), 2, input_shape=(8, 8))
    raises_fold_error("input_shape", fold_stage, _chain(), 2, input_shape=(1, 3, 8, 8))  # the stage cannot run on it
    raises_fold_error("r", fold_stage, _chain(), 0, input_shape=(1, 8, 8, 8))
    raises_fold_error("order", fold_stage, _chain(), 2, input_shape=(1, 8, 8, 8), order="xyz")
    folded, _ = fold_stage(_chain(), 2, input_shape=(1, 8, 8, 8))
    raises_fold_error("stage", fold_stage, folded, 2, input_shape=(1, 8, 8, 8))
    raises_fold_error("fold_bn", fold_stage, _chain(), 2, input_shape=(1, 8, 8, 8), fold_bn="yes")
    raises_fold_error("cost_neutral_only", fold_stage, _chain(), 2, input_shape=(1, 8, 8, 8), cost_neutral_only=None)
    raises_fold_error("folded", unfold_stage, _chain())

    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    raises_fold_error("stage", fold_stage, Branchy(), 2, input_shape=(1, 4, 4, 4))


@pytest.mark.claim("STAGE-2")
def test_fold_bn_folds_each_eval_batchnorm_into_its_conv_first():
    stage = nn.Sequential(integer_weights(nn.Conv2d(4, 8, 3, padding=1)), _bn(8, tied=False), nn.ReLU(),
                          integer_weights(nn.Conv2d(8, 4, 3, padding=1), seed=1))
    shape = (1, 4, 6, 6)
    _, kept = fold_stage(stage, 2, input_shape=shape)
    folded, report = fold_stage(stage, 2, input_shape=shape, fold_bn=True)
    assert [layer.action for layer in kept.layers][1] == "kept"
    assert [(layer.kind, layer.action) for layer in report.layers] == [
        ("Conv2d", "folded"), ("BatchNorm2d folded into 0", "commuted"), ("ReLU", "commuted"), ("Conv2d", "folded")]
    assert isinstance(stage[1], nn.BatchNorm2d)  # the input stage is not modified
    check = check_equivalence(stage, folded, shape, dtypes=())
    assert check.ok and check.float64_max_abs < 1e-9, check.summary()
    back = unfold_stage(folded)  # the stage it folded: the BatchNorm is inside the conv now
    assert isinstance(back[1], nn.Identity) and torch.allclose(back[0].bias, fold_bn(stage[0], stage[1]).bias)


@pytest.mark.claim("STAGE-1")
def test_cost_neutral_only_keeps_group_and_dilation_expansions_out():
    stage = nn.Sequential(nn.Conv2d(8, 8, 3, groups=8), nn.Conv2d(8, 8, 3, dilation=2)).double()
    shape = (1, 8, 12, 12)
    _, kept = fold_stage(stage, 2, input_shape=shape)
    assert [layer.action for layer in kept.layers] == ["kept", "kept"]
    assert all("changes the costs" in layer.reason for layer in kept.layers)
    folded, report = fold_stage(stage, 2, input_shape=shape, cost_neutral_only=False)
    assert [layer.action for layer in report.layers] == ["folded", "folded"]
    assert "holds with conditions" in report.layers[0].reason and "groups" in report.layers[0].reason
    assert sum(p.numel() for p in folded.parameters()) > sum(p.numel() for p in stage.parameters())
    check = _exact(stage, 2, shape)  # the exact check folds the default way; check the expanded folds too:
    assert check.ok and check.exact
    expanded = check_equivalence(stage, derived(lambda m: fold_stage(m, 2, input_shape=shape, cost_neutral_only=False)[0]),
                                 shape, dtypes=())
    assert expanded.ok and expanded.exact, expanded.summary()


@pytest.mark.claim("STAGE-1")
def test_a_stage_that_is_one_conv_is_its_fold():
    conv = integer_weights(nn.Conv2d(8, 4, 3, stride=2, padding=1))
    shape = (1, 8, 8, 8)
    folded, report = fold_stage(conv, 2, input_shape=shape)
    assert [(layer.name, layer.action) for layer in report.layers] == [("0", "folded")]
    assert report.layout_ops == ("DepthToSpace@input",) and report.model == "Conv2d"
    check = check_equivalence(conv, derived(lambda m: fold_stage(m, 2, input_shape=shape)[0]), shape, dtypes=())
    assert check.ok and check.exact, check.summary()
    back = unfold_stage(folded)
    assert type(back) is nn.Conv2d and torch.equal(back.weight, conv.weight) and torch.equal(back.bias, conv.bias)


def test_a_stage_on_meta_folds_and_keeps_what_needs_values():
    with torch.device("meta"):
        stage = nn.Sequential(nn.Conv2d(4, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 4, 1)).eval()
    folded, report = fold_stage(stage, 2, input_shape=(1, 4, 8, 8))
    assert [layer.action for layer in report.layers] == ["folded", "kept", "commuted", "folded"]
    assert "on meta" in report.layers[1].reason and all(p.is_meta for p in folded.parameters())
    assert folded(torch.empty(1, 4, 8, 8, device="meta")).shape == (1, 4, 8, 8)
