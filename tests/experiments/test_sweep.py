"""The sweep: the whole quick grid agrees, the app writes its outputs deterministically, multirun works."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from foldconv.experiments.io import read_csv
from foldconv.experiments.sweep.core import FOLLOWING, Grid, Point, parse_r, points, run_sweep
from foldconv.experiments.sweep.summary import COLUMNS, aggregate, summarize

from conftest import ROOT
SECTIONS = {"theorem", "modes", "dilation", "groups", "orders", "folded_stride", "following", "space_to_depth", "invalid"}


def quick_grid() -> Grid:
    """The grid of configs/grid/quick.yaml, read through the same schema the app uses."""
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "configs" / "grid" / "quick.yaml")
    fields = {k: (tuple(parse_r(x) for x in v) if k == "r" else tuple(v)) if OmegaConf.is_list(v) else v for k, v in cfg.items()}
    return Grid(**fields)


@pytest.fixture(scope="module")
def quick_rows():
    return run_sweep(points(quick_grid()))


@pytest.mark.claim("RULE-10")
def test_every_quick_grid_prediction_agrees(quick_rows):
    bad = [r for r in quick_rows if not r["agree"]]
    assert not bad, bad[:3]
    assert len(quick_rows) > 900


def test_quick_grid_covers_every_rule_and_outcome(quick_rows):
    assert {r["section"] for r in quick_rows} == SECTIONS
    assert {r["observed"] for r in quick_rows} == {"holds", "holds with conditions", "fails", "invalid"}
    rules = {code for r in quick_rows for code in r["rule"].split("+")}
    expected = {"FOLD-1", "FOLD-3", "FOLD-4", "FOLD-6", "FOLD-7", "FOLD-8", "FOLD-9"} | {f"RULE-{i}" for i in range(1, 9)} | {"invalid-input"}
    assert expected <= rules, expected - rules
    assert set(FOLLOWING) <= {r["following"] for r in quick_rows}
    literal = {r["observed_literal"] for r in quick_rows}
    assert literal == {"equivalent", "not equivalent", "output shapes differ", "invalid"}


def run_app(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.claim("RULE-11")
def test_app_end_to_end_and_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    first = run_app(f"hydra.run.dir={a}", "progress=false")
    assert first.returncode == 0, first.stderr
    for name in ("results.csv", "summary.md", "heatmap_modes.png", "heatmap_errors.png", "outcomes.png"):
        assert (a / name).stat().st_size > 0, name
    second = run_app(f"hydra.run.dir={b}", "progress=false", "plots=false")
    assert second.returncode == 0, second.stderr
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()
    rows = read_csv(a / "results.csv")
    assert list(rows[0]) == COLUMNS
    assert "0 disagree" in (a / "summary.md").read_text()


def test_csv_round_trips(tmp_path, quick_rows):
    from foldconv.experiments.io import write_csv

    path = write_csv(quick_rows, tmp_path / "r.csv", COLUMNS)
    back = read_csv(path)
    assert len(back) == len(quick_rows)
    for row, original in zip(back[:200], quick_rows[:200]):
        for key in ("predicted", "observed", "reason", "rule", "section", "padding_mode", "order"):
            assert row[key] == str(original[key])
        for key in ("rel_err_float32", "density"):
            if original.get(key) is not None:
                assert float(row[key]) == original[key]  # repr round-trips floats exactly
    assert summarize(back) == summarize([{k: str(v) for k, v in r.items()} for r in quick_rows])


@pytest.mark.claim("RULE-11")
def test_a_disagreement_exits_non_zero_after_writing(tmp_path):
    code = (
        "import runpy, sys, foldconv.experiments.sweep.core as S\n"
        "from foldconv.predict.rules import Outcome\n"
        "S.observe_outcome = lambda literal, conditioned: Outcome.FAILS\n"
        f"sys.argv = ['sweep.py', 'hydra.run.dir={tmp_path}', 'progress=false', 'plots=false', 'grid.following=[]', 'grid.dims=[1]']\n"
        f"runpy.run_path({str(ROOT / 'scripts' / 'sweep.py')!r}, run_name='__main__')\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1
    assert "CLAIM FAILED" in proc.stderr
    assert (tmp_path / "results.csv").exists() and "disagree" in (tmp_path / "summary.md").read_text()


def test_multirun_through_joblib_and_aggregate(tmp_path):
    sweep_dir = tmp_path / "multirun"
    proc = run_app("-m", "fold.r=2,4", "hydra/launcher=parallel", f"hydra.sweep.dir={sweep_dir}", "plots=false", "progress=false",
                   "grid.following=[relu]", "grid.dims=[2]")
    assert proc.returncode == 0, proc.stderr
    jobs = sorted(sweep_dir.glob("*/results.csv"))
    assert len(jobs) == 2
    rs = [{r["r"] for r in read_csv(p) if r["section"] != "invalid"} for p in jobs]
    assert rs == [{"2"}, {"4"}]
    out = tmp_path / "agg"
    agg = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate.py"), f"input={sweep_dir}", f"hydra.run.dir={out}", "plots=false"],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert agg.returncode == 0, agg.stderr
    merged = read_csv(out / "results.csv")
    assert {r["job"] for r in merged} == {"0", "1"}
    assert len(merged) == len(aggregate(jobs))
    assert len(merged) < sum(len(read_csv(p)) for p in jobs)  # shared invalid points are kept once


def test_structured_config_rejects_typos(tmp_path):
    proc = run_app(f"hydra.run.dir={tmp_path}", "grid.kernal=[3]")
    assert proc.returncode != 0 and "kernal" in proc.stderr


def test_points_are_deterministic_and_r_override_restricts():
    g = quick_grid()
    assert [p.key() for p in points(g)] == [p.key() for p in points(g)]
    only = points(g, [4])
    assert {p.r for p in only if p.section != "invalid"} == {4}
    assert Point("theorem", 2, 2).seed() == Point("theorem", 2, 2).seed() != Point("theorem", 2, 3).seed()


def test_orders_of_another_dimensionality_are_skipped_not_fatal():
    grid = Grid(dims=(1, 2, 3), r=(2,), kernel=(3,), stride=(1,), padding=(1,), dilation=(1,), groups=(1,), folded_channels=(1,),
                padding_modes=("zeros",), orders=("crd", "c rw rh"), input_orders=("same", "rh c rw"), folded_strides=(0,),
                s2d_sizes=(), invalid=False, product=True)
    pts = points(grid)
    assert {(p.dims, p.order) for p in pts} == {(1, "crd"), (2, "crd"), (3, "crd"), (2, "c rw rh")}
    assert all(p.input_order in ("same", "rh c rw") for p in pts if p.dims == 2)
    assert all(p.input_order == "same" for p in pts if p.dims != 2)
    assert all(r["agree"] for r in run_sweep(pts, ()))


def test_shards_partition_the_grid(tmp_path):
    sweep_dir = tmp_path / "shards"
    base = ["plots=false", "progress=false", "grid.following=[relu]", "grid.dims=[1]", "fold.r=2"]
    proc = run_app("-m", "shard.count=2", "shard.index=0,1", f"hydra.sweep.dir={sweep_dir}", *base)
    assert proc.returncode == 0, proc.stderr
    whole = run_app(f"hydra.run.dir={tmp_path / 'whole'}", *base)
    assert whole.returncode == 0, whole.stderr
    key = lambda r: tuple(v for k, v in r.items() if not k.startswith("rel_err"))  # noqa: E731
    parts = [read_csv(p) for p in sorted(sweep_dir.glob("*/results.csv"))]
    assert len(parts) == 2 and all(parts)
    assert sorted(map(key, parts[0] + parts[1])) == sorted(map(key, read_csv(tmp_path / "whole" / "results.csv")))
    bad = run_app(f"hydra.run.dir={tmp_path / 'bad'}", "shard.index=2", "shard.count=2")
    assert bad.returncode == 2 and "shard.index=2" in bad.stderr
