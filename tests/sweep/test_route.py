"""The sweep's own exact route gives the verdicts of the plain route (each trial through the library's public
functions, nothing cached or shared) and of check_fold, on runs of consecutive points of the full grid."""
from __future__ import annotations

import random

import pytest
import torch

from foldconv.check import Verdict, check_fold
from foldconv.specs import ConvSpec
from foldconv.sweep import Grid, observe_fold_plainly, observe_point, points, run_point, single_thread
from foldconv.sweep.cost import work

# The full grid's conv axes (the app's grid=full preset). A run of the sweep fixes the slow axes and varies the
# fold (orders, input orders, folded strides): 48 consecutive points that share their conv's draws.
SLOW = dict(dims=(1, 2, 3), r=(1, 2, 3, (2, 1)), folded_channels=(1, 2, 3), kernel=(1, 2, 3, 5), stride=(1, 2, 3), padding=(0, 1, 2),
            dilation=(1, 2, 3), groups=(1, 2, 4, 0), padding_modes=("zeros", "circular", "reflect", "replicate"))
FAST = dict(input_orders=("same", "crd", "dcr", "focus"), folded_strides=(0, 1, 2), following=(), s2d_sizes=(), product=True, invalid=False)


def runs(count: int, seed: int = 0):
    """``count`` runs of the full grid, their slow axes drawn at random (small convolutions only)."""
    rng, out = random.Random(seed), []
    while len(out) < count:
        axes = {k: (rng.choice(v),) for k, v in SLOW.items()}
        if axes["dims"] == (1,) and axes["r"] == ((2, 1),):
            continue
        orders = ("crd", "dcr", "focus") + (("c rw rh",) if axes["dims"] == (2,) else ())
        pts = points(Grid(orders=orders, **axes, **FAST))
        if pts and work(pts[0]) <= 2e5:  # a few milliseconds a point, in the plain route too
            out.append(pts)
    return [p for run in out for p in run]


@pytest.fixture(autouse=True)
def one_thread():
    with single_thread():  # as the sweep runs: small convs on a busy machine crawl with a thread pool
        yield


@pytest.fixture(scope="module")
def sample():
    return runs(12)


def test_the_sample_covers_every_verdict(sample):
    seen = {(obs.literal, obs.conditioned) for obs in (observe_point(p)[1] for p in sample)}
    assert {lit for lit, _ in seen} >= {Verdict.EQUIVALENT, Verdict.NOT_EQUIVALENT, Verdict.SHAPES_DIFFER}
    assert {cond for _, cond in seen} >= {Verdict.EQUIVALENT, Verdict.INVALID}


def test_verdicts_equal_the_plain_routes(sample):
    differ = []
    for p in sample:
        _, fast = observe_point(p)
        plain = observe_fold_plainly(p)
        if (fast.valid, fast.literal, fast.conditioned) != (plain.valid, plain.literal, plain.conditioned):
            differ.append((p, (fast.literal, fast.conditioned), (plain.literal, plain.conditioned)))
    assert not differ, differ[:3]
    assert all(run_point(p, ())["agree"] for p in sample)


def test_a_point_observed_alone_or_after_its_neighbours_is_the_same(sample):
    """Draws depend on the conv, not on what ran before: a resumed or re-sharded run writes the same rows."""
    in_order = [run_point(p) for p in sample[:96]]
    alone = []
    for p in reversed(sample[:96]):
        run_point(sample[-1])  # something else in between: the shared draws are another conv's
        alone.append(run_point(p))
    assert in_order == alone[::-1]


def test_the_library_forms_verdicts_equal_check_folds(sample):
    """check_fold proves fold_conv on its own integer draws; the sweep's "conditioned" verdict must agree."""
    seen = set()
    for p in sample:
        key = (p.dims, p.r, p.order, p.in_channels, p.out_channels, p.kernel, p.stride, p.padding, p.dilation, p.groups, p.padding_mode, p.size)
        if key in seen or len(seen) >= 24:
            continue
        _, obs = observe_point(p)
        if not obs.valid or obs.conditioned is Verdict.INVALID:
            continue
        seen.add(key)
        spec = ConvSpec.make(p.dims, p.in_channels, p.out_channels, p.kernel, stride=p.stride, padding=p.padding, dilation=p.dilation,
                             groups=p.groups, padding_mode=p.padding_mode)
        report = check_fold(spec.to_module(dtype=torch.float64), p.r, p.order, input_size=(p.size,) * p.dims, trials=2, dtypes=())
        assert report.verdict is obs.conditioned, (p, report.verdict, obs.conditioned)
    assert len(seen) >= 12
