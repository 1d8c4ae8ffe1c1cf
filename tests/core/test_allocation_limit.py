"""The memory guard: every entry point that allocates from a user-given shape estimates first and refuses above
foldconv's allocation limit with a FoldError naming the shape and the limit, before allocating anything large.

A dispatch mode watches every tensor an op creates off the meta device: a refused call must never create one above
the limit. Lowering the limit (foldconv.allocation_limit) must make each entry point refuse a modest shape the same
way: an estimate below what the call really allocates would show up there as a large tensor before the error.
"""
from __future__ import annotations

from typing import Any, Callable, Dict

import pytest
import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import foldconv
from foldconv import _validate
from foldconv.analysis.receptive_field import (
    check_receptive_field,
    effective_receptive_field,
    empirical_box,
    empirical_boxes,
    empirical_support,
    receptive_field,
)
from foldconv.analysis.shift import shift_equivariance
from foldconv.analysis.shift.measure import consistency, stage_errors
from foldconv.check import check_equivalence, check_fold
from foldconv.equivalences import (
    axw_factors,
    dense_operator,
    layout_permutation,
    strided_to_spd,
    transposed_to_subpixel,
    upsample_conv_to_subpixel,
)
from foldconv.errors import FoldError
from foldconv.fold import fold_conv
from foldconv.layout import depth_to_space
from foldconv.surgery import benchmark_forms, export_onnx, find_sites, fold_model, fold_stage, optimize, rewrite
from foldconv.tracing import forward_elements, require_run_memory

HUGE = (1, 3, 10**5, 10**5)


class Largest(TorchDispatchMode):
    """The bytes of the largest storage any op returned off the meta device (a view of one element holds 4 bytes)."""

    def __init__(self) -> None:
        super().__init__()
        self.most = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and not t.is_meta:
                self.most = max(self.most, t.untyped_storage().nbytes())
        return out


def _net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1))


class Branchy(nn.Module):
    """fx cannot trace it (a branch on a value): the paths that measure on real tensors."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x) if bool(x.sum() >= 0) else -self.conv(x)


class Cumulative(nn.Module):
    """An op without a receptive-field rule: ``fallback="real"`` measures it from gradients."""

    def forward(self, x):
        return torch.cumsum(x, dim=-1)


def _images(shape) -> torch.Tensor:
    return torch.zeros(1, 1, 1, 1).expand(*shape)  # no memory: a view of one element


def _entry_points(shape) -> Dict[str, Callable[[], Any]]:
    spatial = shape[2:]
    rf = receptive_field(_net(), shape)  # analytic, on meta: any size
    return {
        "rewrite": lambda: rewrite(_net(), shape, ["strided_to_spd"]),
        "rewrite unverified": lambda: rewrite(_net(), shape, ["strided_to_spd"], verify=False),
        "find_sites": lambda: find_sites(_net(), shape, ["strided_to_spd"]),
        "benchmark_forms": lambda: benchmark_forms(nn.Conv2d(3, 8, 3, stride=2), shape, compile=False, min_run_time=0.01),
        "optimize": lambda: optimize(_net(), shape, min_run_time=0.01),
        "export_onnx": lambda: export_onnx(_net(), shape),
        "fold_model (untraceable)": lambda: fold_model(Branchy(), 2, input_shape=(1, 12) + spatial),
        "check_receptive_field": lambda: check_receptive_field(_net(), shape, report=rf),
        "effective_receptive_field": lambda: effective_receptive_field(_net(), shape, samples=1),
        "empirical_box": lambda: empirical_box(_net(), shape),
        "empirical_boxes": lambda: empirical_boxes(_net(), shape, [(None, (0, 0))], report=rf),
        "empirical_support": lambda: empirical_support(_net(), shape),
        "receptive_field fallback=real": lambda: receptive_field(nn.Sequential(nn.Conv2d(3, 3, 3), Cumulative()), shape, fallback="real"),
        "receptive_field untraceable": lambda: receptive_field(Branchy(), shape, fallback="real"),
        "stage_errors": lambda: stage_errors(_net(), shift_equivariance(_net(), shape), ["0"], _images(shape), input_size=spatial,
                                             shifts=[(0, 0)]),
        "consistency": lambda: consistency(_net(), _images(shape), input_size=spatial, max_shift=0, generator=torch.Generator()),
        "dense_operator": lambda: dense_operator(nn.Conv2d(3, 8, 3), shape),
        "axw_factors": lambda: axw_factors(nn.Conv2d(3, 8, 3), spatial),
        "check_equivalence": lambda: check_equivalence(_net(), _net(), shape),
        "check_equivalence (callables)": lambda: check_equivalence(lambda x: 2 * x, lambda x: x + x, shape),
        "check_fold": lambda: check_fold(nn.Conv2d(12, 8, 3), 2, input_size=spatial, batch=1),
        "layout_permutation": lambda: layout_permutation(lambda x: depth_to_space(x, 1), shape),
    }


def _refused_without_allocating(call: Callable[[], Any], limit: int) -> FoldError:
    watch = Largest()
    with watch, pytest.raises(FoldError) as info:
        call()
    assert watch.most <= limit, f"allocated {watch.most} bytes before refusing"
    assert "allocation limit" in str(info.value) and "MAX_ALLOCATION_BYTES" in str(info.value), str(info.value)
    return info.value


@pytest.mark.claim("GUARD-1")
@pytest.mark.parametrize("name", sorted(_entry_points((1, 3, 8, 8))))
def test_every_entry_point_refuses_an_absurd_shape_before_allocating(name):
    err = _refused_without_allocating(_entry_points(HUGE)[name], 2**26)
    assert err.param in ("input_shape", "input_size"), err


@pytest.mark.claim("GUARD-1")
@pytest.mark.parametrize("name", sorted(_entry_points((1, 3, 8, 8))))
def test_a_lower_limit_is_kept_too_each_estimate_covers_what_the_call_allocates(name):
    # a modest shape, a limit far below what the call needs: the estimate must see it before any tensor does
    shape = (1, 3, 64, 64) if name not in ("dense_operator", "axw_factors") else (1, 3, 24, 24)
    with foldconv.allocation_limit(2**16):
        _refused_without_allocating(_entry_points(shape)[name], 2**16)


@pytest.mark.claim("GUARD-1")
def test_the_reported_examples_and_what_stays_allowed():
    net = _net()
    with pytest.raises(FoldError, match=r"input_shape=\(1, 3, 100000, 100000\): would allocate about .* TiB"):
        rewrite(net, HUGE, ["strided_to_spd"])
    with pytest.raises(FoldError, match=r"input_shape=\(1, 3, 30000, 30000\): would allocate about .* GiB for the gradient"):
        check_receptive_field(net, (1, 3, 30000, 30000))
    # what allocates nothing stays allowed at any size: the analytic receptive field, a stage fold on meta shapes
    assert receptive_field(net, HUGE).output.rf == (7, 7)
    folded, report = fold_stage(nn.Sequential(nn.Conv2d(4, 4, 3, padding=1)), 2, input_shape=(1, 4, 10**5, 10**5))
    assert report.folded_layers == 1
    # the limit is one setting, restored after the block; the error names it
    before = _validate.MAX_ALLOCATION_BYTES
    with foldconv.allocation_limit(2**50):
        assert _validate.MAX_ALLOCATION_BYTES == 2**50
        assert require_run_memory(nn.Conv2d(3, 8, 3), HUGE, copies=1) > 2**39
    assert _validate.MAX_ALLOCATION_BYTES == before == 8 * 2**30
    with pytest.raises(FoldError, match="nbytes"):
        with foldconv.allocation_limit(0):
            pass


def test_forward_elements_counts_new_tensors_on_meta_and_estimates_what_cannot_run_there():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(inplace=True), nn.Flatten())
    # the input, the conv's output; the in-place ReLU and the view allocate nothing
    assert forward_elements(net, (2, 3, 5, 5)) == 2 * 3 * 25 + 2 * 8 * 25
    assert forward_elements(Branchy(), (1, 3, 10, 10)) == 64 * 300  # a value read on meta: 64 input sizes


_BIG_BUILDS = {  # a tiny input, a module whose rewritten form's weight is huge (16M entries)
    "fold_conv (dilation)": lambda: fold_conv(nn.Conv2d(4, 1, 3, dilation=2000), 2),
    "strided_to_spd": lambda: strided_to_spd(nn.Conv2d(1, 1, 1, stride=4000)),
    "transposed_to_subpixel": lambda: transposed_to_subpixel(nn.ConvTranspose2d(1, 1, 1, stride=4000)),
    "upsample_conv_to_subpixel": lambda: upsample_conv_to_subpixel(nn.Conv2d(1, 1, 1), 4000),
}


@pytest.mark.claim("GUARD-1")
@pytest.mark.parametrize("name", sorted(_BIG_BUILDS))
def test_a_form_whose_weight_is_too_large_is_refused_before_it_is_built(name):
    with foldconv.allocation_limit(16 * 2**20):
        _refused_without_allocating(_BIG_BUILDS[name], 16 * 2**20)


@pytest.mark.claim("GUARD-1")
@pytest.mark.parametrize("layer, shape, rule", [
    (nn.ConvTranspose2d(1, 1, 1, stride=4000), (1, 1, 1, 1), "transposed_to_subpixel"),
    (nn.Conv2d(1, 1, 1, stride=4000), (1, 1, 4000, 4), "strided_to_spd"),
])
def test_rewrite_leaves_a_site_whose_form_is_too_large_with_the_reason(layer, shape, rule):
    watch = Largest()
    with foldconv.allocation_limit(16 * 2**20), watch:
        new, report = rewrite(nn.Sequential(layer).eval(), shape, [rule])
    assert watch.most <= 16 * 2**20, f"allocated {watch.most} bytes"
    (site,) = report.sites
    assert not site.applied and "allocation limit" in site.reason, site.reason
    assert isinstance(new[0], type(layer))
