"""Bad input to the counting API ends in a FoldError that names the parameter (never a raw torch or Python error)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from foldconv.analysis.counting import (
    OpCost,
    compare_fold,
    count,
    dense_equivalent,
    fc_params,
    fold_matrix,
    fold_options,
    foldable_layers,
    op_cost,
    operator_nonzeros,
    parameter_ladder,
    register_op_cost,
)
from foldconv.analysis.counting.dense import axis_pairs
from foldconv.errors import FoldError
from foldconv.models import meta_model
from foldconv.specs import ConvSpec
from helpers import raises_fold_error

LINEAR = nn.Linear(2, 2)
CONV = nn.Conv2d(4, 4, 3)
SPEC = ConvSpec.make(2, 4, 4, 3)


def report():
    return count(nn.Sequential(nn.Conv2d(4, 4, 3)), (1, 4, 8, 8))


class DataDependent(nn.Module):
    def forward(self, x):
        return x * float(x.sum())


raises = raises_fold_error


@pytest.mark.parametrize(
    "shape",
    [(), (1, 0, 3), (1, -2), "abc", b"ab", 2.5, None, 3, (1.0, 2), (True, 2), (1, 2.5), [(1, 2), (1, -1)], [()], [[]],
     [(1, 2), "ab"], torch.ones(1, 2), {"a": 1}],
    ids=repr,
)
def test_count_bad_input_shape(shape):
    raises("input_shape", count, LINEAR, shape)


@pytest.mark.parametrize(
    "shape, torch_says",
    [
        ((1, 3), "cannot be multiplied|same reduction dim"),  # wrong feature count
        ((1, 2, 2), None),  # Conv2d on a 3-D input with the wrong channel count
        ((1, 4, 2, 2), "Kernel size can't be greater than actual input size|Output size is too small"),  # torch 2.14 | 2.11
        ((1, 3, 8, 8), "channel"),
        ([(1, 4, 8, 8), (1, 4, 8, 8)], None),  # two inputs to a one-input model
    ],
)
def test_model_that_fails_on_the_shape_names_input_shape_with_torchs_message(shape, torch_says):
    model = LINEAR if len(shape) == 2 and isinstance(shape[0], int) else CONV
    err = raises("input_shape", count, model, shape)
    assert f"{type(model).__name__} cannot run on it: " in str(err)
    if torch_says:
        assert __import__("re").search(torch_says, str(err)), str(err)
    assert "\n" not in str(err)


def test_model_that_needs_data_names_the_model():
    err = raises("model", count, DataDependent(), (1, 2), fallback="error")
    assert "cannot run on meta tensors" in str(err) and "item()" in str(err)


@pytest.mark.parametrize("model", ["resnet", None, torch.ones(2), nn.Linear], ids=repr)
def test_count_bad_model(model):
    raises("model", count, model, (1, 2))


@pytest.mark.parametrize("dtype", [torch.int32, torch.bool, "float16", float, 16])
def test_count_bad_dtype(dtype):
    raises("dtype", count, LINEAR, (1, 2), dtype=dtype)


def test_count_bad_name():
    raises("name", count, LINEAR, (1, 2), name=3)


def test_count_arguments_after_the_shape_are_keyword_only():
    with pytest.raises(TypeError):
        count(LINEAR, (1, 2), torch.float16)


@pytest.mark.parametrize("view", ["nope", "", None, 3, "Layers"])
def test_bad_view_names(view):
    rep = count(LINEAR, (1, 2))
    raises("view", rep.rows, view)
    raises("view", rep.table, view)


@pytest.mark.parametrize("depth", [0, -1, True, 1.5, "1"])
def test_bad_module_depth(depth):
    raises("depth", count(LINEAR, (1, 2)).rows, "module", depth=depth)


@pytest.mark.parametrize("name", ["x", "", None, 0])
def test_unknown_layer_name(name):
    raises("name", count(LINEAR, (1, 2)).layer, name)


@pytest.mark.parametrize("rs", [(0,), (2, 0), ((2, 0),), (2.5,), ("x",), (True,), ((2, 2, 2, 2),), (), 2, "24", None])
def test_bad_fold_factors(rs):
    raises("rs", fold_options, SPEC, (8, 8), rs=rs)
    raises("rs", foldable_layers, report(), rs=rs)


@pytest.mark.parametrize("order", ["bad", "", "c rh", ("c", "rh", "rh"), 3, None])
def test_bad_fold_order(order):
    raises("order", fold_options, SPEC, (8, 8), order=order)
    raises("order", foldable_layers, report(), order=order)
    raises("order", compare_fold, CONV, (1, 4, 8, 8), r=2, order=order)


@pytest.mark.parametrize("r", [0, -2, (2, 0), 2.0, "2y", True, None, (2, 2, 2, 2)])
def test_bad_single_r(r):
    raises("r", compare_fold, CONV, (1, 4, 8, 8), r=r)


@pytest.mark.parametrize("size", [(8,), (8, 8, 8), (8.5, 8), (0, 8), (2, 2), 8, "88", None, (True, 8)])
def test_bad_spatial_input_size(size):
    raises("input_size", fold_options, SPEC, size)
    raises("input_size", dense_equivalent, SPEC, size)
    raises("input_size", operator_nonzeros, SPEC, size)


@pytest.mark.parametrize("spec", [CONV, None, "Conv2d(4->4)", (4, 4, 3)], ids=repr)
def test_a_spec_is_required(spec):
    raises("spec", fold_options, spec, (8, 8))
    raises("spec", dense_equivalent, spec, (8, 8))


@pytest.mark.parametrize(
    "conv, shape, param",
    [
        (LINEAR, (1, 2), "conv"),
        (nn.ConvTranspose2d(4, 4, 3), (1, 4, 8, 8), "conv"),
        (CONV, (1, 4, 8), "input_shape"),
        (CONV, (1, 3, 8, 8), "input_shape"),
        (CONV, [(1, 4, 8, 8), (1, 4, 8, 8)], "input_shape"),
        (CONV, (1, 4, 2, 2), "input_shape"),
        (nn.Conv2d(3, 4, 3), (1, 3, 8, 8), "in_channels"),  # 3 channels cannot fold with r=2: an error here
    ],
    ids=["linear", "transposed", "short", "channels", "two", "small", "unfoldable"],
)
def test_compare_fold_bad_inputs(conv, shape, param):
    raises(param, compare_fold, conv, shape, r=2)


@pytest.mark.parametrize(
    "call",
    [
        lambda: fc_params((0, 3), (2,)),
        lambda: fc_params((1, 3), ()),
        lambda: fc_params((1, 3), (2,), bias="no"),
        lambda: axis_pairs(5, 3, stride=0),
        lambda: axis_pairs(5, 3, padding=-1),
        lambda: axis_pairs(5, 3, mode="reflekt"),
        lambda: axis_pairs(2, 5),
        lambda: parameter_ladder(0, 10, 1),
        lambda: parameter_ladder(10, 10, -1),
        lambda: parameter_ladder(10, 10, 1, hidden=0),
        lambda: parameter_ladder(10, 10, 1, in_channels=1.5),
        lambda: foldable_layers("report"),
        lambda: fold_matrix([{"layer": "x"}]),
        lambda: meta_model("resnet51"),
        lambda: meta_model("resnet18", no_such_argument=1),
        lambda: register_op_cost("mm", lambda i, o: OpCost()),
        lambda: register_op_cost(torch.ops.aten.mm, "free"),
        lambda: op_cost(torch.ops.aten.sort.default, (torch.empty(2, device="meta"),), {}, None),
    ],
    ids=[
        "fc_input_shape", "fc_output_shape", "fc_bias", "stride", "padding", "mode", "n", "height", "delta", "hidden", "in_channels", "report",
        "options", "meta_model_name",
        "meta_model_kwargs", "op_name", "handle", "no_rule",
    ],
)
def test_other_bad_inputs(call):
    with pytest.raises(FoldError) as info:
        call()
    assert info.value.param and str(info.value).startswith(f"{info.value.param}=")


def test_a_broken_cost_rule_is_named():
    raises("op", count, nn.ReLU(), (1, 2), op_costs={torch.ops.aten.relu: lambda inputs, outputs: 1 / 0})
    assert count(nn.ReLU(), (1, 2)).flops == 2
