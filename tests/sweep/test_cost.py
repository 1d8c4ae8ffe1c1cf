"""Shards deal whole blocks of points; the calibration runs a spread of blocks first; the cost model fits them."""
from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foldconv.sweep import Grid, Point, iter_points, points
from foldconv.sweep.cost import BLOCK, CostModel, calibration, in_shard, shard, shared_work, work


@given(st.integers(0, 300), st.integers(1, 7), st.integers(1, 9))
def test_shards_partition_the_points_in_whole_blocks(n, count, block):
    pts = [Point("theorem", 1, 2, size=i + 1) for i in range(n)]
    parts = [shard(pts, i, count, block=block) for i in range(count)]
    assert sorted(p.size for part in parts for p in part) == [p.size for p in pts]  # each point once
    for i, part in enumerate(parts):
        starts = {(p.size - 1) // block for p in part}
        assert all(b % count == i for b in starts)  # whole blocks, dealt round-robin
        assert [p.size for p in part] == sorted(p.size for p in part)  # in grid order


def test_a_shard_of_the_stream_builds_only_its_own_points():
    grid = Grid(dims=(1, 2), following=(), s2d_sizes=(), invalid=False)
    everything = points(grid)
    for index in range(3):
        assert list(iter_points(grid, select=in_shard(index, 3, block=BLOCK))) == shard(everything, index, 3)


@given(st.integers(0, 400), st.integers(2, 12), st.integers(1, 9))
def test_calibration_runs_spread_blocks_first_and_loses_nothing(n, blocks, block):
    pts = [Point("theorem", 1, 2, size=i + 1) for i in range(n)]
    first, rest = calibration(pts, blocks=blocks, block=block)
    assert sorted(p.size for p in first + rest) == [p.size for p in pts]
    assert first == sorted(first, key=lambda p: p.size) and rest == sorted(rest, key=lambda p: p.size)
    chunks = -(-n // block)
    if chunks > blocks:
        assert len({(p.size - 1) // block for p in first}) == blocks
        assert first[0] is pts[0] and first[-1] is pts[-1]  # both ends of the grid are timed
    else:
        assert rest == []


def test_the_cost_model_recovers_per_point_and_per_work_costs():
    pts = points(Grid(dims=(2,), following=(), s2d_sizes=(), invalid=False))
    blocks = [pts[i:i + BLOCK] for i in range(0, len(pts), BLOCK)]
    truth = CostModel(2e-4, 3e-9)
    model = CostModel.fit([(b, truth.seconds(b)) for b in blocks[::3]])
    assert model.per_point == pytest.approx(2e-4) and model.per_work == pytest.approx(3e-9)
    assert model.seconds(pts) == pytest.approx(truth.seconds(pts))
    flat = CostModel.fit([(b, 1e-3 * len(b)) for b in blocks[::3]])  # time per point only: no negative work cost
    assert flat.per_work == 0 and flat.seconds(pts) == pytest.approx(1e-3 * len(pts))


def test_work_counts_the_dilated_kernel_the_merged_groups_and_the_output_pixels():
    p = Point("theorem", 2, 2, in_channels=8, out_channels=2, kernel=3, size=8)  # 6 x 6 outputs, 8 * 9 products each
    assert work(p) == 2 * 2 * (72 + 72 + 2 * 72) * 36  # the original, the literal fold, the library's form (exact, errors)
    dilated = Point("theorem", 2, 2, in_channels=8, out_channels=2, kernel=3, dilation=2, size=8)  # 4 x 4 outputs
    assert work(dilated) == 2 * 2 * (72 + 72 + 2 * 8 * 25) * 16
    grouped = Point("theorem", 2, 2, in_channels=8, out_channels=8, kernel=3, groups=4, size=8)
    # 2 channels per group; the fold keeps gcd(8 / 4, 4) = 2 groups, so the folded conv sums 4 channels per output
    assert work(grouped) == 2 * 8 * (18 + 18 + 2 * 36) * 36
    scattered = Point("theorem", 2, 2, "dcr", in_channels=8, out_channels=8, kernel=3, groups=4, size=8)
    assert work(scattered) == 2 * 8 * (18 + 18 + 2 * 72) * 36  # a non-channel-major order folds to a dense conv
    strided = Point("theorem", 2, 2, in_channels=8, out_channels=2, kernel=3, stride=2, size=8)  # 3 x 3 outputs
    assert work(strided) == work(p) * 9 / 36
    shape_differs = Point("folded_stride", 2, 2, in_channels=8, out_channels=2, kernel=3, size=8, folded_stride=1)
    assert work(shape_differs) == 2 * 2 * (72 + 2 * 72) * 36  # torch's meta shapes decide the literal form
    assert work(Point("following", 2, 2, in_channels=8, size=8, following="relu")) == 0


def test_shared_work_counts_what_neighbours_share_once():
    a = Point("product", 2, 2, "crd", in_channels=8, out_channels=2, kernel=3, size=8)
    b = Point("product", 2, 2, "crd", "dcr", in_channels=8, out_channels=2, kernel=3, size=8)  # same conv and fold
    c = Point("product", 2, 2, "dcr", in_channels=8, out_channels=2, kernel=3, size=8)  # same conv, another fold
    d = Point("product", 2, 2, "crd", in_channels=8, out_channels=2, kernel=3, size=9)  # another conv
    literal = 2 * 2 * 72 * 36
    assert shared_work([a, b, c, d]) == [work(a), literal, literal + 2 * literal, work(d)]
    assert shared_work([b]) == [work(b)]  # alone, a point pays for everything


def test_each_dimensionality_with_enough_blocks_gets_its_own_fit():
    flat, deep = [Point("theorem", 1, 2, size=5)] * 8, [Point("theorem", 3, 2, in_channels=8, size=8)] * 8
    timed = [(flat, 8e-3)] * 3 + [(deep, 0.8)] * 3
    model = CostModel.fit(timed)
    assert set(model.by_dims) == {1, 3}
    assert model.seconds(flat) == pytest.approx(8e-3) and model.seconds(deep) == pytest.approx(0.8)
    assert set(CostModel.fit(timed[:2] + timed[3:]).by_dims) == {3}  # two 1-D blocks: the fit of all blocks
