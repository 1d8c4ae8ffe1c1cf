"""count(): ops without a cost rule (custom ops too), example inputs and (shape, dtype) specs, the real-tensor
fallback for data-dependent models, backward FLOPs/MACs and peak activation memory (COUNT-7..COUNT-11)."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from foldconv.analysis.counting import OP_COSTS, CountReport, OpCost, count, register_op_cost
from foldconv.errors import FoldError
from foldconv.models import meta_model
from helpers import raises_fold_error as raises

ROOT = CountReport.ROOT

# ------------------------------------------------------------------------------------ custom ops


@torch.library.custom_op("foldconv_test::matmul", mutates_args=())
def custom_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a @ b


@custom_matmul.register_fake
def _(a, b):
    return a.new_empty(a.shape[0], b.shape[1])


class CustomNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.randn(4, 6))
        self.head = nn.Linear(6, 2)

    def forward(self, x):
        return self.head(custom_matmul(custom_matmul(x, self.w), torch.ones(6, 6)))


@pytest.mark.claim("COUNT-7")
def test_a_custom_op_without_a_rule_is_reported_then_counted_once_it_has_one():
    rep = count(CustomNet(), (3, 4))
    (op,) = rep.unsupported_ops
    assert (op.op, op.calls, op.layers) == ("foldconv_test::matmul", 2, (ROOT,))
    assert not rep.complete and "foldconv_test::matmul x2" in rep.summary() and "foldconv_test::matmul" in repr(rep)
    assert rep.macs == 3 * 6 * 2  # only the head: the custom op's MACs are left out, and said so
    assert {r["op"]: r["cost_rule"] for r in rep.rows("op")}["foldconv_test::matmul"] is False

    @register_op_cost(custom_matmul)
    def matmul_cost(inputs, outputs):
        a, b = inputs
        return OpCost(macs=a.shape[0] * a.shape[1] * b.shape[1])

    try:
        rep = count(CustomNet(), (3, 4))
        assert rep.complete and rep.macs == 3 * 4 * 6 + 3 * 6 * 6 + 3 * 6 * 2
        # the same figure as the aten matmul it wraps, measured by FlopCounterMode on real tensors
        with FlopCounterMode(display=False) as fc:
            x, w = torch.randn(3, 4), torch.randn(4, 6)
            (x @ w) @ torch.ones(6, 6)
        assert rep.macs - 3 * 6 * 2 == fc.get_total_flops() // 2
    finally:
        assert OP_COSTS.unregister(torch.ops.foldconv_test.matmul) is matmul_cost
    assert not count(CustomNet(), (3, 4)).complete


def _matmul_cost(inputs, outputs):
    a, b = inputs
    return OpCost(macs=a.shape[0] * a.shape[1] * b.shape[1])


@pytest.mark.claim("COUNT-7")
@pytest.mark.parametrize("key", [custom_matmul, torch.ops.foldconv_test.matmul, torch.ops.foldconv_test.matmul.default,
                                 "foldconv_test::matmul"], ids=["custom_op", "packet", "overload", "name"])
def test_a_custom_op_is_priced_for_one_call_without_touching_the_table(key):
    rep = count(CustomNet(), (3, 4), op_costs={key: _matmul_cost})
    assert rep.complete and rep.macs == 3 * 4 * 6 + 3 * 6 * 6 + 3 * 6 * 2
    # the table is as it was: the next call without op_costs reports the op again
    assert OP_COSTS.find(custom_matmul) is None and "foldconv_test::matmul" not in OP_COSTS
    (op,) = count(CustomNet(), (3, 4)).unsupported_ops
    assert op.op == "foldconv_test::matmul"


def test_a_per_call_cost_beats_a_built_in_rule_for_that_call_only():
    builtin = OP_COSTS.find(torch.ops.aten.relu)
    tenfold = {torch.ops.aten.relu: lambda inputs, outputs: OpCost(0, 10 * outputs[0].numel())}
    assert count(nn.ReLU(), (2, 3), op_costs=tenfold).flops == 60
    assert count(nn.ReLU(), (2, 3)).flops == 6 and OP_COSTS.find(torch.ops.aten.relu) is builtin
    # the backward pass of the same count is priced by the same per-call rules (dW = grad^T x is an mm too)
    one = {torch.ops.aten.mm: lambda inputs, outputs: OpCost(macs=1)}
    train = count(nn.Linear(4, 3, bias=False), (2, 4), backward=True, op_costs=one)
    assert (train.macs, train.backward_macs) == (1, 1)
    assert count(nn.Linear(4, 3, bias=False), (2, 4), backward=True).backward_macs == 2 * 4 * 3


def test_the_cost_table_refuses_a_second_rule_for_an_op_unless_replace():
    builtin = OP_COSTS.find(torch.ops.aten.relu)
    for key in (torch.ops.aten.relu, torch.ops.aten.relu.default, "aten::relu"):  # one op, however it is named
        err = raises("op", register_op_cost, key, lambda inputs, outputs: OpCost())
        assert "registered already" in str(err)
    assert OP_COSTS.find(torch.ops.aten.relu) is builtin
    free = register_op_cost(torch.ops.aten.relu, lambda inputs, outputs: OpCost(), replace=True)
    try:
        assert OP_COSTS.find("aten::relu") is free and count(nn.ReLU(), (2, 3)).flops == 0
    finally:
        register_op_cost(torch.ops.aten.relu, builtin, replace=True)
    assert count(nn.ReLU(), (2, 3)).flops == 6
    assert raises("op", OP_COSTS.unregister, torch.ops.aten.sort)  # nothing to remove


@pytest.mark.parametrize(
    "op_costs",
    [[(torch.ops.aten.mm, _matmul_cost)], {"mm": _matmul_cost}, {3: _matmul_cost}, {torch.ops.aten.mm: "free"}, "mm"],
    ids=["a list of pairs", "a name without namespace", "not an op", "not callable", "a string"],
)
def test_bad_op_costs_name_the_parameter(op_costs):
    raises("op_costs", count, nn.Linear(5, 2), (2, 5), op_costs=op_costs)


def test_register_op_cost_rejects_what_is_not_an_op():
    raises("op", register_op_cost, "matmul")  # a name needs its namespace: "foldconv_test::matmul"
    raises("op", register_op_cost, custom_matmul.__wrapped__ if hasattr(custom_matmul, "__wrapped__") else 3)
    raises("op", register_op_cost, 3, lambda inputs, outputs: OpCost())
    raises("handle", register_op_cost, custom_matmul, "free")
    assert "foldconv_test::matmul" not in OP_COSTS


def test_unsupported_ops_name_calls_and_layers():
    class Sorter(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

        def forward(self, x):
            return self.b(self.a(x).sort(-1).values).sort(-1).values

    class Wrap(nn.Module):  # sort inside two children: charged to each
        def __init__(self):
            super().__init__()
            self.s = nn.ModuleList([SortOnly(), SortOnly()])

        def forward(self, x):
            return self.s[1](self.s[0](x))

    class SortOnly(nn.Module):
        def forward(self, x):
            return x.sort(-1).values

    (op,) = count(Sorter(), (2, 4)).unsupported_ops
    assert (op.op, op.calls, op.layers) == ("sort", 2, (ROOT,))
    (op,) = count(Wrap(), (2, 4)).unsupported_ops
    assert (op.op, op.calls, op.layers) == ("sort", 2, ("s.0", "s.1"))


# -------------------------------------------------------------------------------------- inputs


class Tagger(nn.Module):
    """Token ids and a bool mask, as a text model takes them."""

    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(50, 8)
        self.fc = nn.Linear(8, 3)

    def forward(self, ids, mask=None):
        h = self.fc(self.emb(ids))
        return h if mask is None else h.masked_fill(~mask[..., None], 0.0)


def _real_macs(model, *args, **kwargs) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(*args, **kwargs)
    return fc.get_total_flops() // 2


@pytest.mark.claim("COUNT-8")
def test_integer_and_bool_inputs_by_spec_and_by_example():
    model = Tagger()
    ids, mask = torch.randint(0, 50, (2, 5)), torch.rand(2, 5) > 0.5
    truth = _real_macs(model, ids, mask)
    assert truth == 2 * 5 * 8 * 3
    by_spec = count(model, [((2, 5), torch.long), ((2, 5), torch.bool)])
    by_args = count(model, examples=(ids, mask))
    by_kwargs = count(model, examples={"ids": ids, "mask": mask})
    for rep in (by_spec, by_args, by_kwargs):
        assert rep.macs == truth and rep.complete and rep.device == "meta"
        assert rep.input_shapes == ((2, 5), (2, 5)) and rep.input_dtypes == ("int64", "bool")
        assert rep.params == sum(p.numel() for p in model.parameters())
    assert by_spec.layer("emb").activation_bytes == 2 * 5 * 8 * 4
    assert "((2, 5), int64)" in by_spec.summary()
    one = count(model, ((2, 5), torch.long))
    assert one.macs == truth and one.input_shapes == ((2, 5),)
    assert count(model, examples=ids).macs == truth
    # an InputSpec says the same, and shapes still work for float models
    from foldconv.analysis.counting import InputSpec

    assert count(model, InputSpec((2, 5), torch.long)).macs == truth
    assert count(nn.Linear(3, 2), (4, 3)).macs == 24


def test_examples_keep_their_dtype_and_layout_and_nested_structure():
    class Pair(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)

        def forward(self, inputs, scale=1.0):
            return self.conv(inputs["image"]) * scale + inputs["bias"][0]

    x = torch.randn(1, 3, 8, 8).to(memory_format=torch.channels_last)
    rep = count(Pair(), examples=({"image": x, "bias": [torch.zeros(1, 4, 6, 6)]}, 2.0))
    assert rep.macs == 4 * 3 * 9 * 36 and rep.input_shapes == ((1, 3, 8, 8), (1, 4, 6, 6))
    assert count(Pair(), examples=({"image": x, "bias": [torch.zeros(1, 4, 6, 6)]},), dtype=torch.float16).layer("conv").activation_bytes == 2 * 4 * 36


@pytest.mark.parametrize(
    "kwargs, param",
    [
        ({"input_shape": (2, 5), "examples": torch.zeros(2, 5)}, "examples"),
        ({}, "input_shape"),
        ({"examples": 3}, "examples"),
        ({"examples": "ids"}, "examples"),
        ({"examples": (1, 2.0)}, "examples"),
        ({"examples": {1: torch.zeros(2)}}, "examples"),
        ({"examples": torch.zeros(2, 5).to_sparse()}, "examples"),
        ({"input_shape": ((2, 5), "lnog")}, "input_shape"),
        ({"input_shape": ((2, 0), torch.long)}, "input_shape"),
        ({"input_shape": [((2, 5), torch.long), "x"]}, "input_shape"),
        ({"input_shape": ((2.5, 5), torch.long)}, "input_shape"),
        ({"input_shape": (2, 5), "fallback": "gpu"}, "fallback"),
        ({"input_shape": (2, 5), "fallback": None}, "fallback"),
        ({"input_shape": (2, 5), "fallback": "cpu"}, "fallback"),  # the vocabulary is "real" | "error"
        ({"input_shape": (2, 5), "backward": 1}, "backward"),
        ({"input_shape": ((2, 5), torch.long), "backward": True}, "backward"),  # nothing requires grad
        ({"examples": torch.zeros(2, 5, dtype=torch.long), "dtype": torch.int32}, "dtype"),
    ],
    ids=repr,
)
def test_bad_inputs_name_the_parameter(kwargs, param):
    model = nn.Sequential(nn.Embedding(50, 8)).requires_grad_(False) if kwargs.get("backward") is True else Tagger()
    raises(param, count, model, **kwargs)


def test_a_model_that_cannot_take_the_examples_names_examples():
    err = raises("examples", count, nn.Linear(3, 2), examples=torch.zeros(2, 4))
    assert "Linear cannot run on it" in str(err)
    err = raises("input_shape", count, Tagger(), ((2, 5), torch.float32))  # embedding needs integer ids
    assert "but got torch.float32 instead" in str(err)  # count's own check: older torch's meta kernel has none


# ------------------------------------------------------------------------------ data-dependent


class NonZero(nn.Module):
    """Selects the rows whose first feature is positive (``nonzero`` has no meta kernel)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        rows = (x[:, 0] > 0).nonzero()[:, 0]
        return self.fc(x[rows])


class Branch(nn.Module):
    """A Python ``if`` on a tensor value."""

    def __init__(self):
        super().__init__()
        self.big, self.small = nn.Linear(4, 8), nn.Linear(4, 2)

    def forward(self, x):
        return self.big(x) if x.sum() > 0 else self.small(x)


@pytest.mark.claim("COUNT-9")
def test_nonzero_model_falls_back_to_real_tensors_and_says_so():
    x = torch.tensor([[1.0, 0, 0, 0], [-1, 0, 0, 0], [2, 0, 0, 0], [3, 0, 0, 0], [-2, 0, 0, 0]])
    rep = count(NonZero(), examples=x)
    assert rep.device == "cpu" and "nonzero" in rep.fallback_reason
    assert "ran on real cpu tensors" in rep.summary() and "device='cpu'" in repr(rep)
    assert rep.macs == 3 * 4 * 3 == _real_macs(NonZero(), x)  # three rows selected
    assert rep.complete  # nonzero has a rule: one comparison per input element
    assert rep.layer("fc").input_shape == (3, 4)
    with pytest.raises(FoldError) as info:
        count(NonZero(), examples=x, fallback="error")
    assert info.value.param == "model" and "fallback='real'" in str(info.value)


@pytest.mark.claim("COUNT-9")
def test_branch_on_a_tensor_value_follows_the_data():
    up, down = count(Branch(), examples=torch.ones(2, 4)), count(Branch(), examples=-torch.ones(2, 4))
    assert up.device == down.device == "cpu" and "item()" in up.fallback_reason
    assert (up.macs, down.macs) == (2 * 4 * 8, 2 * 4 * 2)
    assert up.layer("big").calls == 1 and down.layer("small").calls == 1
    spec = count(Branch(), (2, 4))  # from a spec: seeded randn, either branch, always the same one
    assert spec.macs in (64, 16) and spec.macs == count(Branch(), (2, 4)).macs


def test_fallback_on_a_meta_model_leaves_it_on_meta_and_a_real_model_untouched():
    with torch.device("meta"):
        model = NonZero()
    rep = count(model, (6, 4), backward=True)
    assert rep.device == "cpu" and model.fc.weight.device.type == "meta"
    real = Branch()
    before = {k: v.clone() for k, v in real.state_dict().items()}
    count(real, examples=torch.ones(2, 4), backward=True)
    assert all(torch.equal(before[k], v) for k, v in real.state_dict().items())
    assert all(p.grad is None for p in real.parameters())


@pytest.mark.slow
def test_fasterrcnn_counts_on_real_tensors():
    import torchvision

    with torch.device("meta"):
        model = torchvision.models.detection.fasterrcnn_mobilenet_v3_large_320_fpn(weights=None, weights_backbone=None)
    anchors = model.rpn.anchor_generator.cell_anchors
    rep = count(model, (1, 3, 320, 320))
    assert rep.device == "cpu" and "nonzero" in rep.fallback_reason
    assert rep.params == sum(p.numel() for p in model.parameters()) and rep.complete
    assert model.rpn.anchor_generator.cell_anchors is anchors  # the forward's replacement was undone
    backbone = rep.layer("backbone.body.0.0")
    assert backbone.macs == 16 * 3 * 9 * 160 * 160  # first conv: 3->16, 3x3, stride 2 on 320x320


# ------------------------------------------------------------------------------------ backward


def _flop_counter_backward(model: nn.Module, shape) -> int:
    x = torch.empty(shape, device="meta")
    model.eval()
    with FlopCounterMode(display=False) as fc:
        out = model(x)
        torch.autograd.grad(out.sum(), [p for p in model.parameters() if p.requires_grad])
    return fc.get_total_flops() // 2


def _conv_net(groups: int = 1) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1, groups=groups), nn.GELU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.LayerNorm(8), nn.Linear(8, 4), nn.Softmax(-1),
    )


@pytest.mark.claim("COUNT-10")
def test_backward_macs_equal_flop_counter_and_the_hand_count():
    model = _conv_net()
    rep = count(model, (2, 3, 8, 8), backward=True)
    assert rep.complete and rep.backward
    total = _flop_counter_backward(_conv_net().to("meta"), (2, 3, 8, 8))
    assert rep.macs + rep.backward_macs == total
    conv1, conv2, fc = (rep.layer(n) for n in ("0", "4", "9"))
    # The first conv's input needs no gradient: only its weight gradient; later layers both.
    assert conv1.backward_macs == conv1.macs == 2 * 8 * 3 * 9 * 64
    assert conv2.backward_macs == 2 * conv2.macs == 2 * 2 * 8 * 8 * 9 * 16
    assert fc.backward_macs == 2 * fc.macs == 2 * 2 * 8 * 4
    assert rep.backward_macs == sum(layer.backward_macs for layer in rep.layers)
    assert rep.training_macs == rep.macs + rep.backward_macs
    assert rep.backward_macs_by_op == {"convolution_backward": conv1.backward_macs + conv2.backward_macs, "mm": fc.backward_macs}
    # elementwise backward ops are charged to their layers too
    assert rep.layer("2").backward_flops == 2 * 2 * 8 * 64  # threshold_backward: 2 per element
    assert rep.layer("1").backward_flops == 4 * 2 * 8 * 64  # batch norm backward: twice its forward's 2
    # an example input that requires grad adds the first conv's input gradient
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    assert count(model, examples=x, backward=True).layer("0").backward_macs == 2 * conv1.macs
    assert count(model, (2, 3, 8, 8)).macs == rep.macs and not count(model, (2, 3, 8, 8)).backward


@pytest.mark.claim("COUNT-10")
def test_grouped_conv_backward_differs_from_flop_counter_by_its_weight_gradient_term():
    g = 4
    rep = count(_conv_net(groups=g), (2, 3, 8, 8), backward=True)
    total = _flop_counter_backward(_conv_net(groups=g).to("meta"), (2, 3, 8, 8))
    grouped = rep.layer("4").macs  # one forward = its weight-gradient MACs
    assert total - (rep.macs + rep.backward_macs) == (g - 1) * grouped


@pytest.mark.claim("COUNT-10")
def test_backward_on_torchvision_models_equals_flop_counter_where_no_conv_is_grouped():
    for name, shape in (("resnet18", (1, 3, 64, 64)), ("vit_b_32", (1, 3, 224, 224))):
        rep = count(meta_model(name), shape, backward=True)
        assert rep.complete, rep.unsupported_ops
        assert rep.macs + rep.backward_macs == _flop_counter_backward(meta_model(name), shape)


# -------------------------------------------------------------------------------------- memory


@pytest.mark.claim("COUNT-11")
@pytest.mark.parametrize("n", [1, 3, 5])
def test_peak_memory_of_an_mlp_by_hand(n):
    mlp = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 2))
    inference = count(mlp, (n, 4))
    # fc1's output and the ReLU's output are alive together; the final (n, 2) output comes after fc1's died
    assert inference.peak_activation_bytes == 2 * (n * 8 * 4)
    train = count(mlp, (n, 4), backward=True)
    assert train.peak_activation_bytes == 2 * (n * 8 * 4)
    # kept for backward: the ReLU output (fc2 and ReLU's backward need it) and the output; fc1's output died
    assert train.saved_activation_bytes == n * 8 * 4 + n * 2 * 4
    # Two candidate peaks in backward. At ReLU's backward: saved + fc2's input gradient, weight and bias
    # gradients + ReLU's input gradient. At fc1's backward (fc2's input gradient and the ReLU output now
    # freed): output + fc2's weight and bias gradients + ReLU's input gradient + fc1's weight and bias gradients.
    at_relu = (n * 8 * 4 + n * 2 * 4) + n * 8 * 4 + 2 * 8 * 4 + 2 * 4 + n * 8 * 4  # 104 n + 72
    at_fc1 = n * 2 * 4 + 2 * 8 * 4 + 2 * 4 + n * 8 * 4 + 8 * 4 * 4 + 8 * 4  # 40 n + 232
    assert train.peak_training_bytes == max(at_relu, at_fc1)
    assert (at_relu > at_fc1) == (n > 2)  # n = 1 peaks at fc1's backward, n = 3 and 5 at ReLU's


@pytest.mark.claim("COUNT-11")
def test_peak_memory_of_a_conv_net_by_hand_and_on_real_tensors():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 1))
    rep = count(net, (1, 3, 8, 8))
    assert rep.peak_activation_bytes == 2 * (4 * 64 * 4)  # conv output + ReLU output
    inplace = count(nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(4, 2, 1)), (1, 3, 8, 8))
    assert inplace.peak_activation_bytes == 4 * 64 * 4 + 2 * 64 * 4  # in place: the last conv's output is the second

    class Gate(nn.Module):  # the same net behind an .item(): runs on real CPU tensors
        def __init__(self):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net(x) if x.shape[0] * float(x.flatten()[0] * 0 + 1) > 0 else x

    for backward in (False, True):
        meta, real = count(net, (1, 3, 8, 8), backward=backward), count(Gate(), (1, 3, 8, 8), backward=backward)
        assert real.device == "cpu"
        assert (meta.peak_activation_bytes, meta.saved_activation_bytes, meta.peak_training_bytes) == (
            real.peak_activation_bytes, real.saved_activation_bytes, real.peak_training_bytes)


@pytest.mark.claim("COUNT-7")
def test_rules_for_the_ops_the_timm_zoo_and_detection_ran_without_one():
    import torch.nn.functional as F

    class Ops(nn.Module):
        def forward(self, x):  # x: (1, 2, 8, 8)
            y = F.interpolate(x, scale_factor=2, mode="bilinear")  # 2*16*16 outputs, 4 taps each
            z = F.interpolate(x, scale_factor=2, mode="bicubic")  # 16 taps each
            cols = F.unfold(x, 3)  # (1, 18, 36): a copy
            back = F.fold(cols, (8, 8), 3)  # adds 18*36 values
            k = x.flatten().topk(3).values  # 128 comparisons
            return y.sin() + z.cos(), back + torch.eye(8), k

    rep = count(Ops(), (1, 2, 8, 8))
    assert rep.complete
    flops = {r["op"]: r["flops"] for r in rep.rows("op")}
    out = 2 * 16 * 16
    assert (flops["upsample_bilinear2d"], flops["upsample_bicubic2d"]) == (4 * out, 16 * out)
    assert (flops["sin"], flops["cos"], flops["im2col"], flops["col2im"]) == (out, out, 0, 18 * 36)
    assert (flops["topk"], flops["eye"]) == (128, 0)


def test_validate_count_counts_in_two_passes_where_flop_counter_cannot_watch_counts_own():
    """CaiT passes its class token through blocks: FlopCounterMode's module tracker asserts inside count()'s
    no_grad pass. validate_count then compares against a separate forward with grad enabled, per op, and says so."""
    timm = pytest.importorskip("timm")
    from foldconv.analysis.counting import validate_count

    with torch.device("meta"):
        model = timm.create_model("cait_xxs24_224", pretrained=False)
    v = validate_count(model, (1, 3, 224, 224))
    assert v.passes == 2 and "Expected gradient function" in v.one_pass_failure
    assert v.macs_ok and v.params_ok and v.differing_ops == () and v.macs == 2_523_475_200
