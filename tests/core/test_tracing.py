"""foldconv.tracing: fx graphs with the leaves asked for, node values on meta or real tensors, quiet one-line errors."""
from __future__ import annotations

import pytest
import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from foldconv import FoldError, depth_to_space, tracing
from helpers import raises_fold_error


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 8, 3, padding=1)
        self.act = nn.Sequential(nn.ReLU())

    def forward(self, x):
        return self.act(self.conv(x)) + x.repeat(1, 2, 1, 1)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = Block()
        self.b = Block()
        self.head = nn.Conv2d(4, 16, 1)

    def forward(self, x):
        return depth_to_space(self.head(self.a(x)[:, :4] + self.b(x)[:, 4:]), 2)


def _calls(gm: fx.GraphModule):
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]


def test_leaves_by_class_by_name_and_by_predicate():
    net = Net()
    assert _calls(tracing.trace(net)) == ["a.conv", "a.act.0", "b.conv", "b.act.0", "head"]
    assert _calls(tracing.trace(net, leaves=[Block])) == ["a", "b", "head"]
    assert _calls(tracing.trace(net, leaves=["b"])) == ["a.conv", "a.act.0", "b", "head"]
    assert _calls(tracing.trace(net, leaves=[lambda m: isinstance(m, nn.Sequential)])) == ["a.conv", "a.act", "b.conv", "b.act", "head"]
    # foldconv's layout functions are recorded as calls, not traced into (they validate their input)
    targets = [n.target for n in tracing.trace(net).graph.nodes if n.op == "call_function"]
    assert depth_to_space in targets
    raises_fold_error("leaves", tracing.trace, net, leaves=[3])
    raises_fold_error("leaves", tracing.trace, net, leaves=Block)
    raises_fold_error("model", tracing.trace, "net")


class Branchy(nn.Module):
    def forward(self, x):
        return x if bool(x.sum() > 0) else -x


def test_a_model_fx_cannot_trace_is_one_fold_error_naming_the_model():
    err = raises_fold_error("model", tracing.trace, Branchy())
    assert err.rule.startswith("torch.fx cannot trace it: TraceError: ") and err.__cause__ is not None


def test_timm_notrace_modules_are_kept_whole_when_the_plain_trace_fails(monkeypatch):
    class Wrapper(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = Branchy()

        def forward(self, x):
            return self.inner(x) * 2

    raises_fold_error("model", tracing.trace, Wrapper())
    monkeypatch.setattr(tracing, "_timm_notrace", lambda: ((Branchy,), ()))
    assert _calls(tracing.trace(Wrapper())) == ["inner"]


def test_node_values_on_meta_on_real_tensors_and_shapes():
    net = Net()
    gm = tracing.trace(net)
    meta = tracing.node_values(gm, (2, 4, 6, 6))
    assert all(v.is_meta for v in meta.values() if isinstance(v, torch.Tensor))
    shapes = tracing.node_shapes(meta)
    assert shapes["a_conv"] == (2, 8, 6, 6) and shapes["output"] == (2, 4, 12, 12)
    real = tracing.node_values(gm, (2, 4, 6, 6), on="real")
    assert tracing.node_shapes(real) == shapes and not any(v.is_meta for v in real.values() if isinstance(v, torch.Tensor))
    assert torch.equal(real[next(n for n in gm.graph.nodes if n.op == "placeholder")], torch.zeros(2, 4, 6, 6))
    raises_fold_error("on", tracing.node_values, gm, (2, 4, 6, 6), on="cuda")
    raises_fold_error("gm", tracing.node_values, net, (2, 4, 6, 6))


class ReadsAValue(nn.Module):
    """A leaf that reads a tensor value: it has no meta run."""

    def forward(self, x):
        return x * float(x.abs().sum() + 1)


def test_auto_runs_on_real_tensors_when_meta_cannot():
    gm = tracing.trace(nn.Sequential(nn.Conv2d(1, 2, 3), ReadsAValue()), leaves=[ReadsAValue])
    with pytest.raises(FoldError) as meta:
        tracing.node_values(gm, (1, 1, 5, 5), on="meta")
    assert meta.value.param == "input_shape"
    assert tracing.node_shapes(tracing.node_values(gm, (1, 1, 5, 5), on="auto"))["output"] == (1, 2, 3, 3)


def test_a_shape_the_model_cannot_run_on_prints_nothing_and_names_the_shape(capfd):
    gm = tracing.trace(nn.Sequential(nn.Conv2d(3, 4, 3)))
    with pytest.raises(RuntimeError):  # what torch.fx's ShapeProp does: the whole traceback on stderr first
        ShapeProp(gm).propagate(torch.zeros(1, 5, 8, 8))
    assert "Traceback" in capfd.readouterr().err
    err = raises_fold_error("input_shape", tracing.node_values, gm, (1, 5, 8, 8), on="auto")
    assert err.value == (1, 5, 8, 8) and "the model cannot run on it: RuntimeError: " in err.rule and "\n" not in err.rule
    assert "While executing" not in str(err.__cause__)  # fx's note is not appended to torch's message
    out, printed = capfd.readouterr()
    assert out == "" and printed == ""


def test_a_fold_error_inside_the_model_passes_through_unchanged():
    class D2S(nn.Module):
        def forward(self, x):
            return depth_to_space(x, 2)

    gm = tracing.trace(nn.Sequential(nn.Conv2d(3, 3, 1), D2S()))
    with pytest.raises(FoldError) as info:
        tracing.node_values(gm, (1, 3, 4, 4), on="real")
    assert info.value.param != "input_shape" and "While executing" not in str(info.value)


def test_train_modes_and_weights_are_left_as_they_were():
    net = Net().train()
    net.b.eval()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    modes = [m.training for m in net.modules()]
    gm = tracing.trace(net)
    for on in ("meta", "real"):
        tracing.node_values(gm, (1, 4, 4, 4), on=on)
        tracing.module_inputs(net, (1, 4, 4, 4), on=on)
    assert [m.training for m in net.modules()] == modes
    assert all(torch.equal(before[k], v) and not v.is_meta for k, v in net.state_dict().items())


def test_module_inputs_records_every_call():
    shared = nn.Conv2d(4, 4, 3, padding=1)
    net = nn.Sequential(shared, nn.MaxPool2d(2), shared)
    calls = tracing.module_inputs(net, (1, 4, 8, 8))
    assert calls["0"] == calls["2"] == ((1, 4, 8, 8), (1, 4, 4, 4)) and calls["1"] == ((1, 4, 8, 8),)
    assert tracing.module_inputs(net, (1, 4, 8, 8), paths=["1"], on="real") == {"1": ((1, 4, 8, 8),)}
    raises_fold_error("input_shape", tracing.module_inputs, net, (1, 3, 8, 8))


@pytest.mark.parametrize("shape", ["1x3x8x8", (1, 3, 0, 8), (1, 3, 8.0, 8), (True, 3, 8, 8), torch.zeros(1, 3), None, (8,)])
def test_bad_input_shapes(shape):
    raises_fold_error("input_shape", tracing.validate_input_shape, shape)


def test_input_shape_ranks_and_param():
    assert tracing.validate_input_shape([1, 3, 8], ranks=(3,)) == (1, 3, 8)
    with pytest.raises(FoldError) as info:
        tracing.validate_input_shape((1, 3, 8), param="shape", ranks=(4, 5))
    assert info.value.param == "shape" and "4 or 5 entries" in info.value.rule
