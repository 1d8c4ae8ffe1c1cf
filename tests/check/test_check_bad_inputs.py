"""Bad inputs to the checker and the sweep's grid: each is a FoldError naming the parameter, never a torch error.

Every case asserts the exception type, ``err.param`` and that the message starts with ``<param>=<value>``.
"""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from foldconv import check_equivalence, check_fold, derived
from foldconv.check import as_float_dtype
from foldconv.sweep import Grid, Point, fold_factor, points, run_point
from helpers import raises_fold_error

CONV = nn.Conv2d(4, 2, 3)
SHAPE = (1, 4, 8, 8)


def _eq(*args, **kwargs):
    return lambda: check_equivalence(*args, **kwargs)


def _fold(*args, **kwargs):
    return lambda: check_fold(*args, **kwargs)


CASES = [
    # check_equivalence: the input shape
    ("input_shape", _eq(CONV, CONV, (1, 4, 8.7, 8))),
    ("input_shape", _eq(CONV, CONV, 5)),
    ("input_shape", _eq(CONV, CONV, "1,4,8,8")),
    ("input_shape", _eq(CONV, CONV, torch.tensor(SHAPE))),
    ("input_shape", _eq(CONV, CONV, (True, 4, 8, 8))),
    ("input_shape", _eq(CONV, CONV, ())),
    ("input_shape", _eq(CONV, CONV, (1, 4, -8, 8))),
    ("input_shape", _eq(CONV, CONV, (1, 3, 8, 8))),  # wrong channel count: torch's message, as a FoldError
    ("input_shape", _eq(CONV, CONV, (1, 4, 2, 2))),  # smaller than the kernel
    ("input_shape", _eq(CONV, CONV, (4, 8))),  # wrong rank
    # check_equivalence: the numbers
    ("trials", _eq(CONV, CONV, SHAPE, trials=2.5)),
    ("trials", _eq(CONV, CONV, SHAPE, trials=0)),
    ("trials", _eq(CONV, CONV, SHAPE, trials=True)),
    ("exact_range", _eq(CONV, CONV, SHAPE, exact_range=2**21)),
    ("exact_range", _eq(CONV, CONV, SHAPE, exact_range=1.5)),
    ("degree", _eq(CONV, CONV, SHAPE, degree=0)),
    ("rtol", _eq(CONV, CONV, SHAPE, rtol=-1)),
    ("rtol", _eq(CONV, CONV, SHAPE, rtol=math.nan)),
    ("rtol", _eq(CONV, CONV, SHAPE, rtol="1e-9")),
    # found by H8's adversarial pass: resource guards and an unchecked device
    ("trials", _eq(CONV, CONV, SHAPE, trials=10**12)),
    ("input_shape", _eq(CONV, CONV, (10**6, 4, 10**4, 10**4))),
    ("device", _eq(CONV, CONV, SHAPE, device=1.5)),
    ("device", _eq(CONV, CONV, SHAPE, device="gpu")),
    ("device", _eq(CONV, CONV, SHAPE, device=True)),
    ("device", _eq(CONV, CONV, SHAPE, device=-1)),
    ("input_size", _fold(nn.Conv2d(4, 2, 3), 2, input_size=10**12)),
    ("batch", _fold(nn.Conv2d(4, 2, 3), 2, batch=10**9)),
    ("seed", _eq(CONV, CONV, SHAPE, seed=-1)),
    ("seed", _eq(CONV, CONV, SHAPE, seed=1.5)),
    ("dtypes", _eq(CONV, CONV, SHAPE, dtypes=("int32",))),
    ("dtypes", _eq(CONV, CONV, SHAPE, dtypes=(torch.int64,))),
    ("dtypes", _eq(CONV, CONV, SHAPE, dtypes=("cuda",))),
    ("dtypes", _eq(CONV, CONV, SHAPE, dtypes=5)),
    # check_equivalence: the callables
    ("reference", _eq(5, CONV, SHAPE)),
    ("candidate", _eq(CONV, None, SHAPE)),
    ("input_transform", _eq(CONV, CONV, SHAPE, input_transform=3)),
    ("output_transform", _eq(CONV, CONV, SHAPE, output_transform="x")),
    ("reference", _eq(lambda x: x, derived(lambda m: m), (1, 2))),
    ("build", lambda: derived(5)),
    ("candidate", _eq(CONV, derived(lambda m: 5), SHAPE)),
    ("candidate", _eq(CONV, nn.Conv2d(3, 2, 3), SHAPE)),  # the candidate cannot run on the input
    ("input_transform", _eq(CONV, CONV, SHAPE, input_transform=lambda x: x.view(7, -1))),
    ("output_transform", _eq(CONV, CONV, SHAPE, output_transform=lambda y: y[:, 9])),
    ("reference", _eq(lambda x: (x, x), lambda x: x, (1, 2))),
    ("candidate", _eq(lambda x: x, lambda x: [x], (1, 2))),
    # check_fold
    ("conv", _fold(nn.Linear(4, 2), 2)),
    ("r", _fold(CONV, 0)),
    ("order", _fold(CONV, 2, "xyz")),
    ("input_size", _fold(CONV, 2, input_size=(0, 8))),
    ("input_size", _fold(CONV, 2, input_size=(8, 8, 8))),
    ("input_size", _fold(CONV, 2, input_size=8.5)),
    ("input_size", _fold(CONV, 2, input_size=(1, 1))),  # smaller than the kernel: named as the caller spelt it
    ("batch", _fold(CONV, 2, batch=0)),
    ("in_channels", _fold(nn.Conv2d(6, 2, 3), 2)),
    ("trials", _fold(CONV, 2, trials=0)),
    ("dtypes", _fold(CONV, 2, dtypes=["int8"])),
    ("bogus", _fold(CONV, 2, bogus=1)),
    ("dtype", lambda: as_float_dtype("float8")),
    # the sweep's grid
    ("padding_modes", lambda: Grid(padding_modes=("zeros", "reflekt"))),
    ("orders", lambda: Grid(orders=("xyz",))),
    ("orders", lambda: Grid(orders=("crd", "c rh rh"))),
    ("input_orders", lambda: Grid(input_orders=("same", "bogus"))),
    ("following", lambda: Grid(following=("relu", "softmax2"))),
    ("following", lambda: Grid(following="relu")),
    ("dims", lambda: Grid(dims=(2, 4))),
    ("r", lambda: Grid(r=(2, 0))),
    ("r", lambda: Grid(r=("2x0",))),
    ("r", lambda: Grid(r=(1.5,))),
    ("r", lambda: Grid(r=("2x2x2x2",))),
    ("kernel", lambda: Grid(kernel=(0,))),
    ("stride", lambda: Grid(stride=(1, True))),
    ("padding", lambda: Grid(padding=(-1,))),
    ("dilation", lambda: Grid(dilation=(0,))),
    ("groups", lambda: Grid(groups=(-1,))),
    ("folded_channels", lambda: Grid(folded_channels=(0,))),
    ("folded_strides", lambda: Grid(folded_strides=(-2,))),
    ("s2d_sizes", lambda: Grid(s2d_sizes=(0,))),
    ("out_channels", lambda: Grid(out_channels=0)),
    ("extra", lambda: Grid(extra=-1)),
    ("product", lambda: Grid(product="yes")),
    ("fold.r", lambda: points(Grid(), ["abc"])),
    ("fold.r", lambda: fold_factor(0, "fold.r")),
    ("dtypes", lambda: run_point(Point("theorem", 1, 2, in_channels=2, size=5), ["int8"])),
]


@pytest.mark.parametrize("param,call", CASES, ids=[f"{i}-{p}" for i, (p, _) in enumerate(CASES)])
def test_bad_input_is_a_fold_error_naming_the_parameter(param, call):
    raises_fold_error(param, call)


def test_the_catalogue_is_large_enough():
    assert len(CASES) >= 25


def test_dtype_names_are_accepted():
    report = check_equivalence(CONV, CONV, SHAPE, dtypes=("float32", "torch.bfloat16", torch.float16))
    assert set(report.errors) == {"float32", "bfloat16", "float16"}
