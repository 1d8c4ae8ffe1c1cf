"""The sweep's grid and oracle: the whole quick grid agrees, points are deterministic, edge factors run to the end."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from foldconv.predict import following_examples
from foldconv.sweep import Grid, Point, columns, points, run_sweep

SECTIONS = {"theorem", "modes", "dilation", "groups", "orders", "folded_stride", "following", "space_to_depth", "strided_spd",
            "invalid"}


@pytest.fixture(scope="module")
def quick_rows():
    return run_sweep(points(Grid()))  # Grid's defaults are the app's grid=quick preset (tests/experiments/test_sweep.py)


@pytest.mark.claim("RULE-10")
def test_every_quick_grid_prediction_agrees(quick_rows):
    bad = [r for r in quick_rows if not r["agree"]]
    assert not bad, bad[:3]
    assert len(quick_rows) > 900


def test_quick_grid_covers_every_rule_and_outcome(quick_rows):
    assert {r["section"] for r in quick_rows} == SECTIONS
    assert {r["observed"] for r in quick_rows} == {"holds", "holds with conditions", "fails", "invalid"}
    rules = {code for r in quick_rows for code in r["rule"].split("+")}
    expected = {"FOLD-1", "FOLD-3", "FOLD-4", "FOLD-6", "FOLD-7", "FOLD-8", "FOLD-9", "SPD-1"} | {f"RULE-{i}" for i in range(1, 9)} | {"invalid-input"}
    assert expected <= rules, expected - rules
    assert set(following_examples()) <= {r["following"] for r in quick_rows}
    literal = {r["observed_literal"] for r in quick_rows}
    assert literal == {"equivalent", "not equivalent", "output shapes differ", "invalid"}


def test_points_are_deterministic_and_r_override_restricts():
    g = Grid()
    # Deterministic means the same order in another process (other hash seed), not just twice in this one.
    code = "from foldconv.sweep import Grid, points; print('\\n'.join(p.key() for p in points(Grid())))"
    env = {**__import__("os").environ, "PYTHONHASHSEED": "12345"}
    other = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert other.stdout.splitlines() == [p.key() for p in points(g)]
    only = points(g, [4])
    assert {p.r for p in only if p.section != "invalid"} == {4}
    # Pinned: a seed must not depend on the process (e.g. Python's salted hash()).
    assert (Point("theorem", 2, 2).seed(), Point("theorem", 2, 3).seed()) == (3104566314, 3249143522)


def test_points_are_unique_and_keys_name_every_field():
    pts = points(Grid())
    assert len(set(pts)) == len(pts) == len({p.key() for p in pts})
    assert Point("theorem", 2, (2, 1)).key().split("|")[:3] == ["section=theorem", "dims=2", "r=(2, 1)"]


def test_orders_of_another_dimensionality_are_skipped_not_fatal():
    grid = Grid(dims=(1, 2, 3), r=(2,), kernel=(3,), stride=(1,), padding=(1,), dilation=(1,), groups=(1,), folded_channels=(1,),
                padding_modes=("zeros",), orders=("crd", "c rw rh"), input_orders=("same", "rh c rw"), folded_strides=(0,),
                following=(), s2d_sizes=(), invalid=False, product=True)
    pts = points(grid)
    assert {(p.dims, p.order) for p in pts} == {(1, "crd"), (2, "crd"), (3, "crd"), (2, "c rw rh")}
    assert all(p.input_order in ("same", "rh c rw") for p in pts if p.dims == 2)
    assert all(p.input_order == "same" for p in pts if p.dims != 2)
    assert all(r["agree"] for r in run_sweep(pts, ()))


def test_r16_runs_to_the_end_and_circular_space_to_depth_is_invalid():
    """fold.r=16: circular padding of 16 on an 8-pixel map wraps more than once; torch refuses the original."""
    rows = run_sweep(points(Grid(dims=(1, 2)), [16]), ())
    assert rows and all(r["agree"] for r in rows), [r for r in rows if not r["agree"]][:2]
    s2d = [r for r in rows if r["section"] == "space_to_depth" and r["padding_mode"] == "circular"]
    assert s2d and all(r["observed"] == "invalid" == r["predicted"] for r in s2d)


@pytest.mark.parametrize("r", [5, 6, 8])
def test_pools_larger_than_the_map_agree(r):
    rows = run_sweep(points(Grid(dims=(2,), following=("avgpool_r", "maxpool_r"), s2d_sizes=()), [r]), ())
    pools = [row for row in rows if row["section"] == "following"]
    assert pools and all(row["agree"] for row in rows)
    assert {row["observed"] for row in pools} == {"invalid"}  # a kernel of r > 4 on the 4-pixel map


def test_float64_errors_fill_their_own_column():
    rows = run_sweep(points(Grid(dims=(1,), r=(2,), following=(), s2d_sizes=(), invalid=False)), ["float64"])
    assert [c for c in rows[0] if c.startswith("rel_err")] == ["rel_err_float64"] == [c for c in columns(["float64"]) if c.startswith("rel_err")]
    theorem = [r for r in rows if r["section"] == "theorem"]
    assert theorem and all(0 <= r["rel_err_float64"] < 1e-14 for r in theorem)


@pytest.mark.claim("SPD-1")
def test_strided_spd_covers_the_grids_convs_and_the_standard_strided_forms(quick_rows):
    """The space-to-depth rows test the convs models actually replace (3x3 s2 p1, 1x1 s2 p0, 7x7 s2 p3) and every
    kernel x stride > 1 x padding of the grid, not only big convs whose kernel is whole blocks."""
    from foldconv.sweep.grid import STRIDED_FORMS

    rows = [r for r in quick_rows if r["section"] == "strided_spd"]
    convs = {(r["kernel"], r["stride"], r["padding"]) for r in rows}
    g = Grid()
    assert set(STRIDED_FORMS) | {(k, s, p) for k in g.kernel for s in g.stride for p in g.padding if s > 1} == convs
    assert {r["size"] for r in rows} == set(g.s2d_sizes) and {r["padding_mode"] for r in rows} == {"zeros", "circular"}
    assert all(r["agree"] and r["observed"] in ("holds", "holds with conditions") for r in rows)
    stem = next(r for r in rows if (r["kernel"], r["stride"], r["padding"], r["size"], r["padding_mode"]) == (3, 2, 1, 9, "zeros"))
    assert stem["observed"] == "holds with conditions" and stem["observed_literal"] == "invalid" and stem["rule"] == "SPD-1"
    assert "zero-pad the kernel at its end from 3 to 4 taps" in stem["conditions"] and "pad the input by 1" in stem["conditions"]
    whole = [r for r in rows if r["kernel"] == 2 and r["padding"] == 0 and r["size"] == 8]
    assert whole and all(r["observed"] == "holds" for r in whole)  # whole blocks on a divisible map: literally


def test_strided_spd_oracle_catches_a_wrong_small_conv(monkeypatch):
    """Mutation: a changed weight of the space-to-depth form flips the observation to fails, against the prediction."""
    from foldconv.sweep import observe

    def off_by_one(w, *args, **kwargs):
        folded = unfold(w, *args, **kwargs)
        folded.weight[(0,) * folded.weight.dim()] += 1
        return folded

    unfold = observe.unfold_weight
    monkeypatch.setattr(observe, "unfold_weight", off_by_one)
    row = run_sweep([Point("strided_spd", 2, 2, kernel=3, stride=2, padding=1, size=9)], ())[0]
    assert (row["predicted"], row["observed"], row["agree"]) == ("holds with conditions", "fails", False)
