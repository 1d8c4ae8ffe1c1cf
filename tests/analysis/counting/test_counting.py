"""count(): conventions, views, errors, and agreement with FlopCounterMode on random layers (COUNT-3)."""
from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from foldconv.analysis.counting.zoo import validate_count
from foldconv.analysis.counting import ROOT, count, op_cost
from foldconv.errors import FoldError
from foldconv.experiments.counting import write_count_report


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
    transposed = draw(st.booleans()) and mode == "zeros"
    bias = draw(st.booleans())
    batch = draw(st.integers(1, 2))
    cls = (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d) if transposed else (nn.Conv1d, nn.Conv2d, nn.Conv3d)
    kwargs = {} if transposed else {"padding_mode": mode}
    conv = cls[dims - 1](cin, cout, k, stride=s, padding=p, dilation=d, groups=groups, bias=bias, device="meta", **kwargs)
    return conv, (batch, cin) + n


@pytest.mark.claim("COUNT-3")
@settings(max_examples=60)
@given(conv_cases())
def test_random_convs_match_flop_counter_and_numel(case):
    conv, shape = case
    row = validate_count(conv, shape)
    assert row["macs_ok"] and row["params_ok"], row
    assert row["macs"] > 0


@pytest.mark.claim("COUNT-3")
@settings(max_examples=30)
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
    row = validate_count(Block(), shape)
    assert row["macs_ok"] and row["params_ok"], row
    # Attention = 4 projections + Q·Kᵀ + P·V, then the Linear: all multiply-adds, nothing else.
    n = batch * length
    assert row["macs"] == 4 * n * dim * dim + 2 * batch * heads * length * length * head_dim + n * dim * 2 * dim


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
    for rows in (rep.by_module(1), rep.by_module(3), rep.by_type()):
        assert sum(r["params"] for r in rows) == rep.params
        assert sum(r["macs"] for r in rows) == rep.macs
        assert sum(r["activation_bytes"] for r in rows) == rep.activation_bytes
    assert sum(r["macs"] for r in rep.by_op()) == rep.macs
    assert {r["module"] for r in rep.by_module(1)} >= {"conv1", "layer1", "layer4", "fc"}
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


def test_report_writes_every_view(tmp_path):
    paths = write_count_report(count(nn.Linear(3, 2), (1, 3), name="fc"), tmp_path)
    for view in ("layers", "module", "type", "op", "total"):
        assert paths[f"{view}_csv"].exists() and paths[f"{view}_md"].exists()


@pytest.mark.parametrize(
    "shape, param",
    [((), "input_shape"), ((1, 0, 3), "input_shape"), ("abc", "input_shape"), ([(1, 2), (1, -1)], "input_shape")],
)
def test_bad_input_shape_is_a_fold_error(shape, param):
    with pytest.raises(FoldError) as info:
        count(nn.Linear(2, 2), shape)
    assert info.value.param == param and "input_shape=" in str(info.value)


def test_other_bad_inputs():
    with pytest.raises(FoldError, match="model='str': must be a torch.nn.Module"):
        count("resnet", (1, 3))
    with pytest.raises(FoldError, match="dtype=torch.int32"):
        count(nn.Linear(2, 2), (1, 2), dtype=torch.int32)
    with pytest.raises(FoldError, match=r"model='Linear': could not run on meta tensors of shape \(\(1, 3\),\)"):
        count(nn.Linear(2, 2), (1, 3))

    class DataDependent(nn.Module):
        def forward(self, x):
            return x * float(x.sum())

    with pytest.raises(FoldError, match="could not run on meta tensors"):
        count(DataDependent(), (1, 2))
    with pytest.raises(FoldError, match="view='nope'"):
        count(nn.Linear(2, 2), (1, 2)).table("nope")
    with pytest.raises(FoldError, match="name='x': is not a counted layer"):
        count(nn.Linear(2, 2), (1, 2)).layer("x")


def test_op_cost_ignores_data_movement():
    x = torch.empty(2, 3, device="meta")
    assert op_cost(torch.ops.aten.permute.default, (x, [1, 0]), {}, x.permute(1, 0)) == (0, 0)
    assert op_cost(torch.ops.aten.cat.default, ([x, x],), {}, torch.cat([x, x])) == (0, 0)


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
