"""The sweep: the whole quick grid agrees, the app writes its outputs deterministically, multirun works."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from foldconv.errors import FoldError
from foldconv.experiments.io import read_csv
from foldconv.experiments.sweep import COLUMNS, Grid, Point, aggregate, columns, points, run_sweep, summarize
from foldconv.predict import following_examples

SECTIONS = {"theorem", "modes", "dilation", "groups", "orders", "folded_stride", "following", "space_to_depth", "invalid"}


def quick_grid() -> Grid:
    """The grid of configs/grid/quick.yaml, read through the same schema the app uses (Grid itself)."""
    from omegaconf import OmegaConf

    return Grid(**OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "grid" / "quick.yaml")))


def test_the_quick_preset_is_grids_default():
    assert quick_grid() == Grid()


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
    assert set(following_examples()) <= {r["following"] for r in quick_rows}
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
        "import runpy, sys, foldconv.experiments.sweep.run as S\n"
        "from foldconv.predict import Outcome\n"
        "S.observed_outcome = lambda observation: Outcome.FAILS\n"
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
                following=(), s2d_sizes=(), invalid=False, product=True)
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


# ----------------------------------------------------------------------------------------------------------
# Issue 10 (11, 12): every grid value is checked before the run; every accepted r runs to the end.


def _config(**overrides):
    """A SweepConfig through the app's own path: the registered schema, overrides, instantiate."""
    from omegaconf import OmegaConf

    from foldconv.experiments.app import instantiate, structured
    from foldconv.experiments.sweep import SweepConfig

    cfg = structured(SweepConfig)
    for key, value in overrides.items():
        OmegaConf.update(cfg, key, value, merge=False)
    return instantiate(cfg)


@pytest.mark.parametrize(
    "key,value,param,named",
    [
        ("grid.padding_modes", ["zeros", "reflekt"], "grid.padding_modes", "'reflekt' is not one of ('zeros', 'circular', 'reflect', 'replicate')"),
        ("grid.orders", ["xyz"], "grid.orders", "'xyz' is not a channel order"),
        ("grid.orders", ["crd", "xyz"], "grid.orders", "'xyz'"),
        ("grid.input_orders", ["same", "abc"], "grid.input_orders", "'abc'"),
        ("grid.following", ["relu", "softmax2"], "grid.following", "'softmax2' is not one of"),
        ("grid.r", [2, "0"], "grid.r", "integer >= 1"),
        ("grid.dims", [2, 4], "grid.dims", "1, 2 or 3"),
        ("grid.kernel", [0], "grid.kernel", "0 is not an integer >= 1"),
        ("fold.r", "0", "fold.r", "integer >= 1"),
        ("dtypes", ["float32", "int8"], "dtypes", "floating dtype"),
        ("shard.index", 3, "shard.index", "shard.count=1"),
    ],
)
def test_bad_grid_values_are_refused_before_the_run(key, value, param, named):
    with pytest.raises(FoldError) as info:
        _config(**{key: value})
    assert info.value.param == param
    assert named in str(info.value) and str(info.value).startswith(f"{param}=")


def test_a_bad_override_exits_2_with_one_line_and_writes_nothing(tmp_path):
    proc = run_app(f"hydra.run.dir={tmp_path}", "grid.padding_modes=[zeros,reflekt]", "progress=false")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "grid.padding_modes" in lines[0] and "reflekt" in lines[0] and "replicate" in lines[0], lines
    assert not (tmp_path / "results.csv").exists() and not (tmp_path / "summary.md").exists()
    orders = run_app(f"hydra.run.dir={tmp_path}", "grid.orders=[crd,xyz]", "progress=false")
    assert orders.returncode == 2 and "grid.orders" in orders.stderr and not (tmp_path / "results.csv").exists()


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


def test_float64_errors_fill_their_own_column(tmp_path):
    from foldconv.experiments.sweep import write_sweep_outputs

    rows = run_sweep(points(Grid(dims=(1,), r=(2,), following=(), s2d_sizes=(), invalid=False)), ["float64"])
    assert [c for c in rows[0] if c.startswith("rel_err")] == ["rel_err_float64"]
    theorem = [r for r in rows if r["section"] == "theorem"]
    assert theorem and all(0 <= r["rel_err_float64"] < 1e-14 for r in theorem)
    header = read_csv(write_sweep_outputs(rows, tmp_path, plots=False)["csv"])[0]
    assert [c for c in header if c.startswith("rel_err")] == ["rel_err_float64"] == [c for c in columns(["float64"]) if c.startswith("rel_err")]


def _fake_job(root: Path, number: int, *, results: bool = True, shard=None) -> None:
    from foldconv.experiments.io import write_csv

    job = root / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("fold:\n  r: '2'\n" + (f"shard:\n  index: {shard[0]}\n  count: {shard[1]}\n" if shard else ""))
    if results:
        write_csv([{"section": "theorem", "r": 2, "job_number": number, "agree": True}], job / "results.csv")


@pytest.mark.parametrize(
    "jobs,message",
    [
        ([dict(number=0), dict(number=1, results=False)], "job 1 has no results.csv"),
        ([dict(number=0), dict(number=2)], "job folder(s) [1] are missing"),
        ([dict(number=0, shard=(0, 3)), dict(number=1, shard=(2, 3))], "shard index(es) [1] of shard.count=3 are missing"),
    ],
)
def test_aggregate_refuses_an_incomplete_multirun(tmp_path, jobs, message):
    from foldconv.experiments.sweep import multirun_results

    for job in jobs:
        _fake_job(tmp_path, **job)
    with pytest.raises(FoldError) as info:
        multirun_results(tmp_path)
    assert info.value.param == "input" and message in str(info.value)


def test_aggregate_app_exits_non_zero_on_a_crashed_job(tmp_path):
    multirun = tmp_path / "multirun"
    _fake_job(multirun, 0)
    _fake_job(multirun, 1, results=False)
    out = tmp_path / "agg"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate.py"), f"input={multirun}", f"hydra.run.dir={out}", "plots=false"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "job 1 has no results.csv" in lines[0]
    assert not (out / "results.csv").exists()
