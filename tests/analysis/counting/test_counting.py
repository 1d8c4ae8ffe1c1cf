"""count(): conventions, views, the op table, and agreement with FlopCounterMode on random layers (COUNT-3, COUNT-6)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from foldconv.analysis.counting import OP_COSTS, CountReport, OpCost, count, op_cost, register_op_cost
from foldconv.analysis.counting.zoo import validate_count
from helpers import examples

ROOT = CountReport.ROOT


def _flop_counter_real(model: nn.Module, shape) -> int:
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.randn(shape))
    return fc.get_total_flops()


@st.composite
def conv_cases(draw):
    dims = draw(st.integers(1, 3))
    groups = draw(st.sampled_from([1, 2, 3]))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    k = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    s = tuple(draw(st.integers(1, 3)) for _ in range(dims))
    d = tuple(draw(st.integers(1, 2)) for _ in range(dims))
    p = tuple(draw(st.integers(0, 2)) for _ in range(dims))
    n = tuple(draw(st.integers(d_ * (k_ - 1) + 1, 9)) for k_, d_ in zip(k, d))
    mode = draw(st.sampled_from(["zeros", "circular", "reflect", "replicate"]))
    if mode in ("reflect", "circular"):  # torch: reflect needs p < n, circular p <= n
        p = tuple(min(p_, n_ - 1) for p_, n_ in zip(p, n))
    # A transposed conv needs a non-empty output: (n-1)s - 2p + d(k-1) + 1 >= 1 on every axis.
    transposed = draw(st.booleans()) and mode == "zeros" and all(
        (n_ - 1) * s_ - 2 * p_ + d_ * (k_ - 1) >= 0 for n_, s_, p_, d_, k_ in zip(n, s, p, d, k)
    )
    bias = draw(st.booleans())
    batch = draw(st.integers(1, 2))
    cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d) if transposed else (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    kwargs = {} if transposed else {"padding_mode": mode}
    conv = cls[dims - 1](cin, cout, k, stride=s, padding=p, dilation=d, groups=groups, bias=bias, device="meta", **kwargs)
    return conv, (batch, cin) + n


@pytest.mark.claim("COUNT-3")
@settings(max_examples=examples(60))
@given(conv_cases())
def test_random_convs_match_flop_counter_and_numel(case):
    conv, shape = case
    v = validate_count(conv, shape)
    assert v.macs_ok and v.params_ok and v.report.complete, v
    assert v.macs > 0


@pytest.mark.claim("COUNT-3")
@settings(max_examples=examples(30))
@given(
    st.integers(1, 3), st.integers(1, 6), st.integers(1, 6), st.integers(1, 5), st.booleans(), st.booleans()
)
def test_random_linear_and_attention_match_flop_counter(batch, length, heads, head_dim, bias, batch_first):
    dim = heads * head_dim
    mha = nn.MultiheadAttention(dim, heads, bias=bias, batch_first=batch_first, device="meta")

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.attn, self.fc = mha, nn.Linear(dim, 2 * dim, bias=bias, device="meta")

        def forward(self, x):
            return self.fc(self.attn(x, x, x, need_weights=False)[0])

    shape = (batch, length, dim) if batch_first else (length, batch, dim)
    v = validate_count(Block(), shape)
    assert v.macs_ok and v.params_ok and v.report.complete, v
    # Attention = 4 projections + Q·Kᵀ + P·V, then the Linear: all multiply-adds, nothing else.
    n = batch * length
    assert v.macs == 4 * n * dim * dim + 2 * batch * heads * length * length * head_dim + n * dim * 2 * dim


@pytest.mark.claim("COUNT-3")
def test_meta_count_equals_flop_counter_on_real_tensors():
    import torchvision

    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    shape = (1, 3, 64, 64)
    assert 2 * count(net, shape).macs == _flop_counter_real(net, shape)


@pytest.mark.claim("COUNT-3")
def test_tied_weights_are_counted_once():
    emb = nn.Embedding(50, 8)
    head = nn.Linear(8, 50, bias=False)
    head.weight = emb.weight  # weight tying, as in language models

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head = emb, head
            self.again = head  # the same module under a second name

        def forward(self, x):
            return self.again(self.head(self.emb(x)).softmax(-1)[..., :8])

    model = Tied()
    x_shape = (2, 5)

    class Wrapper(nn.Module):  # count() feeds floating inputs; token ids are made here
        def __init__(self):
            super().__init__()
            self.inner = model

        def forward(self, x):
            return self.inner(x.long())

    rep = count(Wrapper(), x_shape)
    assert rep.params == sum(p.numel() for p in model.parameters()) == 400
    assert rep.layer("inner.emb").params == 400
    assert rep.layer("inner.head").params == 0 and rep.layer("inner.head").shared == 400
    assert rep.layer("inner.head").calls == 2  # called as head and as again
    assert rep.macs == 2 * 5 * 8 * 50 + 2 * 5 * 8 * 50


def test_frozen_and_trainable_split():
    net = nn.Sequential(nn.Linear(4, 4), nn.Linear(4, 2))
    net[0].requires_grad_(False)
    rep = count(net, (1, 4))
    assert (rep.trainable, rep.frozen, rep.params) == (10, 20, 30)


def test_bias_norm_pool_activation_conventions():
    net = nn.Sequential(nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64, 3))
    rep = count(net, (1, 2, 8, 8))
    conv, bn, relu, pool, fc = (rep.layer(n) for n in ("0", "1", "2", "3", "5"))
    assert conv.macs == 4 * 2 * 9 * 64 and conv.flops == 2 * conv.macs + 4 * 64  # bias: 1 per output
    assert (bn.macs, bn.flops) == (0, 2 * 4 * 64)
    assert (relu.macs, relu.flops) == (0, 4 * 64)
    assert (pool.macs, pool.flops) == (0, 4 * 16 * 4)  # one per window element per output
    assert fc.macs == 64 * 3 and fc.flops == 2 * 64 * 3 + 3
    assert rep.flops == sum(layer.flops for layer in rep.layers)
    # max-pool indices are int64 activations
    assert rep.activation_bytes_by_dtype["int64"] == 4 * 16 * 8


def test_dtype_changes_bytes_not_counts():
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU())
    r32, r16 = count(net, (1, 3, 16, 16)), count(net, (1, 3, 16, 16), dtype=torch.float16)
    assert r32.macs == r16.macs and r32.params == r16.params
    assert r32.weight_bytes == 2 * r16.weight_bytes == 4 * 224
    # conv output + ReLU output (not in place)
    assert r32.activation_bytes == 2 * r16.activation_bytes == 2 * 4 * 8 * 14 * 14
    assert r16.activation_bytes_by_dtype == {"float16": 2 * 2 * 8 * 14 * 14}


def test_views_sum_to_totals():
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.resnet18()
    rep = count(net, (2, 3, 64, 64))
    for rows in (rep.rows("module", depth=1), rep.rows("module", depth=3), rep.rows("type")):
        assert sum(r["params"] for r in rows) == rep.params
        assert sum(r["macs"] for r in rows) == rep.macs
        assert sum(r["activation_bytes"] for r in rows) == rep.activation_bytes
    assert sum(r["macs"] for r in rep.rows("op")) == rep.macs
    assert {r["module"] for r in rep.rows("module")} >= {"conv1", "layer1", "layer4", "fc"}
    assert rep.rows("total")[0]["macs"] == rep.macs
    assert rep.macs == 2 * count(net, (1, 3, 64, 64)).macs  # batch is linear
    md = rep.table("type")
    assert md.splitlines()[0].startswith("| type | layers |")


def test_model_is_left_untouched():
    net = nn.Sequential(nn.Linear(3, 3), nn.Dropout(0.5))
    net.train()
    weight = net[0].weight.detach().clone()
    count(net, (1, 3))
    assert net.training and net[1].training
    assert net[0].weight.device.type == "cpu" and torch.equal(net[0].weight, weight)
    assert not net[0]._forward_hooks and not net[0]._forward_pre_hooks


def test_op_cost_ignores_data_movement():
    x = torch.empty(2, 3, device="meta")
    assert op_cost(torch.ops.aten.permute.default, (x, [1, 0]), {}, x.permute(1, 0)) == OpCost(0, 0)
    assert op_cost(torch.ops.aten.cat.default, ([x, x],), {}, torch.cat([x, x])) == OpCost(0, 0)


def test_addmm_with_beta_zero_has_no_bias_flops():
    a, b, c = (torch.empty(4, 5, device="meta"), torch.empty(5, 6, device="meta"), torch.empty(6, device="meta"))
    out = torch.addmm(c, a, b, beta=0)
    assert op_cost(torch.ops.aten.addmm.default, (c, a, b), {"beta": 0}, out) == OpCost(120, 0)
    assert op_cost(torch.ops.aten.addmm.default, (c, a, b), {}, out) == OpCost(120, 24)


class Sorter(nn.Module):
    """Runs one op the table has no rule for (sort), twice, in a child and at the root."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return self.fc(x).sort(-1).values.sort(-1).values


@pytest.mark.claim("COUNT-6")
def test_an_op_without_a_rule_is_listed_not_priced_as_zero():
    rep = count(Sorter(), (2, 4))
    assert not rep.complete
    (op,) = rep.unsupported_ops
    assert (op.op, op.calls, op.layers) == ("sort", 2, ("(root)",))
    assert "sort" in repr(rep) and "sort x2" in rep.summary()
    ops = {row["op"]: row for row in rep.rows("op")}
    assert ops["sort"]["cost_rule"] is False and ops["addmm"]["cost_rule"] is True
    assert rep.rows("total")[0]["unsupported_ops"] == "sort"


@pytest.mark.claim("COUNT-6")
def test_register_op_cost_prices_a_new_op_and_can_be_undone():
    rule = lambda inputs, outputs: OpCost(0, 7 * inputs[0].numel())  # noqa: E731
    assert register_op_cost(torch.ops.aten.sort, rule) is rule
    try:
        rep = count(Sorter(), (2, 4))
        assert rep.complete and rep.layer(ROOT).elementwise_flops == 2 * 7 * 8
    finally:
        assert OP_COSTS.unregister(torch.ops.aten.sort) is rule
    assert OP_COSTS.find(torch.ops.aten.sort) is None and not count(Sorter(), (2, 4)).complete


@pytest.mark.claim("COUNT-6")
def test_every_op_of_common_layers_has_a_rule():
    net = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1, padding_mode="reflect"), nn.BatchNorm2d(8), nn.ReLU(inplace=True),
        nn.MaxPool2d(2), nn.Conv2d(8, 8, 3, groups=2, dilation=2, padding=2, padding_mode="circular"), nn.GELU(),
        nn.Upsample(scale_factor=2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.LayerNorm(8), nn.Dropout(0.1),
        nn.Linear(8, 4), nn.Softmax(-1),
    )
    rep = count(net, (2, 3, 16, 16))
    assert rep.unsupported_ops == ()


def test_repr_is_short():
    import torchvision

    with torch.device("meta"):
        net = torchvision.models.resnet18()
    rep = count(net, (1, 3, 64, 64))
    assert len(repr(rep)) < 200 and len(str(rep).splitlines()) == 3
    assert repr(rep).startswith("CountReport(model='ResNet', input_shape=(1, 3, 64, 64)")


def test_report_is_frozen():
    import dataclasses

    rep = count(nn.Linear(2, 2), (1, 2))
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.params = 0
    with pytest.raises(dataclasses.FrozenInstanceError):
        rep.layers[0].macs = 0


def test_root_ops_are_charged_to_root():
    class Residual(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x):
            return x + self.fc(x)

    rep = count(Residual(), (1, 4))
    assert rep.layer(ROOT).flops == 4 and rep.layer(ROOT).macs == 0


def test_tied_weights_stay_tied_and_real_after_counting():
    emb = nn.Embedding(50, 8)
    head = nn.Linear(8, 50, bias=False)
    head.weight = emb.weight

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.head, self.again = emb, head, head

        def forward(self, x):
            return self.again(self.emb(x.long()))

    count(Tied(), (2, 5))
    assert head.weight is emb.weight and emb.weight.device.type == "cpu"
