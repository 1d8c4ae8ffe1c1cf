"""The sweep app: its outputs are deterministic, multirun and shards work, a killed run resumes, a native crash
costs one point. The library's grid and oracle are tested in tests/sweep/."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT
from foldconv.errors import FoldError
from foldconv.experiments.io import read_csv
from foldconv.experiments.sweep import aggregate, summarize
from foldconv.sweep import COLUMNS, Grid, Point, columns, points, run_sweep


def quick_grid() -> Grid:
    """The grid of configs/grid/quick.yaml, read through the same schema the app uses (Grid itself)."""
    from omegaconf import OmegaConf

    return Grid(**OmegaConf.to_container(OmegaConf.load(ROOT / "configs" / "grid" / "quick.yaml")))


def test_the_quick_preset_is_grids_default():
    assert quick_grid() == Grid()


@pytest.fixture(scope="module")
def sweep_rows():
    """Rows of every section and outcome (the whole quick grid's are checked in tests/sweep/test_grid.py)."""
    return run_sweep(points(Grid(dims=(1, 2), r=(2, (2, 1)))))


def run_app(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "sweep.py"), *args], capture_output=True, text=True, cwd=cwd, timeout=600)


@pytest.mark.claim("RULE-11")
def test_app_end_to_end_and_deterministic(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    first = run_app(f"hydra.run.dir={a}", "progress=false")
    assert first.returncode == 0, first.stderr
    for name in ("results.csv", "summary.md", "heatmap_modes.png", "heatmap_errors.png", "outcomes.png", "outcomes_by_r.png"):
        assert (a / name).stat().st_size > 0, name
    second = run_app(f"hydra.run.dir={b}", "progress=false", "plots=false")
    assert second.returncode == 0, second.stderr
    assert (a / "results.csv").read_bytes() == (b / "results.csv").read_bytes()
    rows = read_csv(a / "results.csv")
    assert list(rows[0]) == COLUMNS
    summary = (a / "summary.md").read_text()
    assert summary.splitlines()[2] == f"{len(rows):,} configurations: every prediction agrees with the exact observation."
    assert "**holds with conditions**: " in summary and "## Remedies" in summary  # defined, with its remedies
    index = (a / "index.md").read_text()
    for name in ("results.csv", "summary.md", "heatmap_modes.png", "heatmap_errors.png", "outcomes.png", "outcomes_by_r.png",
                 "results.config.json"):
        assert f"[{name}]({name}): " in index, name


def test_csv_round_trips(tmp_path, sweep_rows):
    from foldconv.experiments.io import write_csv

    path = write_csv(sweep_rows, tmp_path / "r.csv", COLUMNS)
    back = read_csv(path)
    assert len(back) == len(sweep_rows)
    for row, original in zip(back[:200], sweep_rows[:200]):
        for key in ("predicted", "observed", "reason", "rule", "section", "padding_mode", "order"):
            assert row[key] == str(original[key])
        for key in ("rel_err_float32", "density"):
            if original.get(key) is not None:
                assert float(row[key]) == original[key]  # repr round-trips floats exactly
    assert summarize(back) == summarize([{k: str(v) for k, v in r.items()} for r in sweep_rows])


# The app with the worker's runner replaced (tests/experiments/sweep_runners.py, on the worker's path).
_WITH_RUNNER = (
    "import runpy, sys\n"
    "sys.path.insert(0, {tests!r})\n"
    "import foldconv.experiments.sweep.isolate as isolate\n"
    "isolate.RUNNER = sys.argv.pop(1)\n"
    "sys.argv = ['sweep.py'] + sys.argv[1:]\n"
    "runpy.run_path({script!r}, run_name='__main__')\n"
).format(tests=str(ROOT / "tests" / "experiments"), script=str(ROOT / "scripts" / "sweep.py"))


@pytest.mark.claim("RULE-11")
def test_a_disagreement_exits_non_zero_after_writing(tmp_path):
    args = [f"hydra.run.dir={tmp_path}", "progress=false", "plots=false", "grid.following=[]", "grid.dims=[1]"]
    proc = subprocess.run([sys.executable, "-c", _WITH_RUNNER, "sweep_runners:lying", *args], capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 1
    assert "CLAIM FAILED" in proc.stderr
    summary = (tmp_path / "summary.md").read_text().splitlines()
    assert (tmp_path / "results.csv").exists() and " disagree" in summary[2] and summary[6] == "## Disagreements"  # the answer first


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
    from foldconv.experiments.records import write_marker

    job = root / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("fold:\n  r: '2'\n" + (f"shard:\n  index: {shard[0]}\n  count: {shard[1]}\n" if shard else ""))
    if results:
        write_csv([{"section": "theorem", "r": 2, "job_number": number, "agree": True}], job / "results.csv")
        write_marker(job, app="sweep", status="ok")


def _fake_record(root: Path, task) -> None:
    """The multirun.yaml Hydra writes before a multirun's first job: its overrides name the jobs."""
    from omegaconf import OmegaConf

    root.mkdir(parents=True, exist_ok=True)
    OmegaConf.save({"hydra": {"job": {"name": "sweep"}, "overrides": {"task": list(task), "hydra": []}}}, root / "multirun.yaml")


@pytest.mark.parametrize(
    "task,jobs,message",
    [
        (["fold.r=2,3"], [dict(number=0), dict(number=1, results=False)], "job 1 (fold.r=3) started but wrote no results.csv"),
        (["fold.r=2,3,4"], [dict(number=0), dict(number=2)], "job 1 (fold.r=3) never started"),
        (["shard.count=3", "shard.index=0,2"], [dict(number=0, shard=(0, 3)), dict(number=1, shard=(2, 3))], "shard index(es) [1] of shard.count=3 are missing"),
    ],
)
def test_aggregate_refuses_an_incomplete_multirun(tmp_path, task, jobs, message):
    from foldconv.experiments.sweep import multirun_results

    _fake_record(tmp_path, task)
    for job in jobs:
        _fake_job(tmp_path, **job)
    with pytest.raises(FoldError) as info:
        multirun_results(tmp_path)
    assert info.value.param == "input" and message in str(info.value)


def test_aggregate_app_exits_non_zero_on_a_crashed_job(tmp_path):
    multirun = tmp_path / "multirun"
    _fake_record(multirun, ["fold.r=2,3"])
    _fake_job(multirun, 0)
    _fake_job(multirun, 1, results=False)
    out = tmp_path / "agg"
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / "aggregate.py"), f"input={multirun}", f"hydra.run.dir={out}", "plots=false"],
                          capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "job 1 (fold.r=3) started but wrote no results.csv" in lines[0]
    assert not (out / "results.csv").exists()


# ----------------------------------------------------------------------------------------------------------
# Issue 14: rows are written as they finish; a killed run resumes; a different config is refused.

SMALL = ["plots=false", "progress=false", "grid.following=[relu]", "grid.dims=[1]", "fold.r=2"]  # 142 points

def _recording_app(args, record: Path, sleep: float) -> subprocess.Popen:
    import os

    env = {**os.environ, "SWEEP_RECORD": str(record), "SWEEP_SLEEP": str(sleep)}
    return subprocess.Popen([sys.executable, "-c", _WITH_RUNNER, "sweep_runners:recorded", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _point_keys(path: Path) -> list:
    return ["|".join(row[c] for c in Point.__dataclass_fields__) for row in read_csv(path)]


def test_a_killed_sweep_keeps_its_rows_and_a_rerun_resumes_without_recomputing(tmp_path):
    import signal
    import time

    whole, killed = tmp_path / "whole", tmp_path / "killed"
    first = _recording_app([f"hydra.run.dir={killed}", *SMALL], tmp_path / "first.txt", sleep=0.03)
    csv_path = killed / "results.csv"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and first.poll() is None:
        if csv_path.exists() and len(csv_path.read_bytes().splitlines()) >= 16:  # header + 15 rows
            break
        time.sleep(0.01)
    assert first.poll() is None, first.communicate()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    saved = _point_keys(csv_path)  # a valid CSV of complete rows, right after the kill
    assert 15 <= len(saved) < 142
    assert csv_path.read_bytes().endswith(b"\n")
    from foldconv.experiments.sweep import run_sweep_app  # the uninterrupted run (in this process: faster)

    run_sweep_app(_config(**{"grid.following": ["relu"], "grid.dims": [1], "fold.r": "2", "plots": False, "progress": False}), whole, log=lambda line: None)

    rerun = _recording_app([f"hydra.run.dir={killed}", *SMALL], tmp_path / "second.txt", sleep=0)
    out, err = rerun.communicate(timeout=120)
    assert rerun.returncode == 0, err
    assert f"142 configurations ({len(saved)} already in results.csv, resuming; {142 - len(saved)} to run)" in err  # a status line: stderr
    assert csv_path.read_bytes() == (whole / "results.csv").read_bytes()  # byte for byte the uninterrupted run
    assert (killed / "summary.md").read_text() == (whole / "summary.md").read_text()
    recomputed = (tmp_path / "second.txt").read_text().splitlines()
    assert not set(recomputed) & set(saved), "the rerun recomputed rows it had"
    assert sorted(recomputed) == sorted(set(_point_keys(csv_path)) - set(saved))


def test_resuming_with_a_different_config_is_refused_in_one_line(tmp_path, capsys):
    from foldconv.experiments.app import finish
    from foldconv.experiments.sweep import run_sweep_app

    small = dict(plots=False, progress=False, isolate=False)  # resuming is the point here, not the worker
    done = run_sweep_app(_config(**{"grid.following": ["relu"], "grid.dims": [1], "fold.r": "2", **small}), tmp_path, log=lambda line: None)
    assert done.startswith("142 configurations; all 142")  # 28 of them strided_spd (1-D: 7 convs x 2 sizes x 2 modes)
    before = (tmp_path / "results.csv").read_bytes()
    again = run_sweep_app(_config(**{"grid.following": ["relu"], "grid.dims": [1], "fold.r": "2", **small}), tmp_path, log=print)
    assert "142 configurations, all already in results.csv: nothing left to compute" in capsys.readouterr().out and "0 computed now" in again
    other = _config(**{"grid.following": ["relu"], "grid.dims": [1], "fold.r": "3", **small})
    with pytest.raises(SystemExit) as stop:
        finish(lambda: run_sweep_app(other, tmp_path), name="sweep")
    assert stop.value.code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sweep: error: hydra.run.dir='{tmp_path}': holds results.csv of a different config")
    assert "fold.r: 2 there, 3 now" in lines[0], lines
    assert (tmp_path / "results.csv").read_bytes() == before


def test_row_log_survives_a_crash_mid_write(tmp_path, monkeypatch):
    """A crash inside a row's write leaves a torn line; reopening cuts it and keeps every complete row."""
    import os

    from foldconv.experiments import io

    path = tmp_path / "results.csv"
    log = io.RowLog(path, ["k", "v"], key=["k"], config={"n": 1})
    for k in range(3):
        log.append({"k": k, "v": k / 3})
    real_write = os.write

    def torn(fd, data):  # the process dies after half of the line reached the file
        real_write(fd, bytes(data)[: len(data) // 2])
        raise KeyboardInterrupt("killed mid-write")

    monkeypatch.setattr(io.os, "write", torn)
    with pytest.raises(KeyboardInterrupt):
        log.append({"k": 3, "v": 1.0})
    monkeypatch.undo()
    assert not path.read_bytes().endswith(b"\n")  # the torn state a crash leaves
    log = io.RowLog(path, ["k", "v"], key=["k"], config={"n": 1})
    assert log.done == {("0",), ("1",), ("2",)} and path.read_bytes().endswith(b"\n")
    log.append({"k": 3, "v": 1.0})
    log.close()
    assert [r["k"] for r in read_csv(path)] == ["0", "1", "2", "3"] and read_csv(path)[1]["v"] == repr(1 / 3)


def test_atomic_writes_leave_the_old_file_or_the_new_one(tmp_path, monkeypatch):
    from foldconv.experiments import io

    path = io.write_atomic(tmp_path / "summary.md", "old\n")

    def crash(*args):
        raise KeyboardInterrupt("killed before the rename")

    monkeypatch.setattr(io.os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        io.write_markdown("new", path)
    with pytest.raises(KeyboardInterrupt):  # a new log: no results.csv at all rather than one without a header
        io.RowLog(tmp_path / "results.csv", ["k"], key=["k"], config={})
    monkeypatch.undo()
    assert path.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["summary.md"]
    with pytest.raises(FoldError, match="without results.config.json"):  # a CSV the log did not write is not resumed
        (tmp_path / "results.csv").write_text("k\n1\n")
        io.RowLog(tmp_path / "results.csv", ["k"], key=["k"], config={})


# ----------------------------------------------------------------------------------------------------------
# A native crash (heap corruption, segfault: no Python handler runs) costs the point, not the run.


@pytest.mark.app  # starts worker processes
def test_a_native_crash_costs_one_point_and_a_resume_skips_it(tmp_path):
    from sweep_runners import CRASHING

    from foldconv.experiments.app import ClaimFailed
    from foldconv.experiments.sweep import run_sweep_app

    small = {"grid.following": [], "grid.dims": [1], "fold.r": "2", "grid.s2d_sizes": [], "grid.invalid": False, "plots": False, "progress": False}
    lines = []
    with pytest.raises(ClaimFailed, match=r"1 of \d+ configuration\(s\) crashed the worker"):
        run_sweep_app(_config(**small), tmp_path, log=lines.append, runner="sweep_runners:crash_on_one")
    rows = read_csv(tmp_path / "results.csv")
    expected = points(Grid(dims=(1,), following=(), s2d_sizes=(), invalid=False), [2])
    assert len(rows) == len(expected)  # the run went on to its end
    lost = [r for r in rows if r["observed"] == "crashed"]
    assert len(lost) == 1 and all(lost[0][k] == str(v) for k, v in CRASHING.items()), lost
    assert "SIGABRT" in lost[0]["reason"] and lost[0]["agree"] == "" and lost[0]["predicted"] == ""
    assert all(r["agree"] == "True" for r in rows if r is not lost[0])
    summary = (tmp_path / "summary.md").read_text()
    assert "1 crashed its worker process and was not observed" in summary.splitlines()[2] and "## Crashed: not observed" in summary
    # A resume finds the crashed point's row and does not run it (or anything) again.
    with pytest.raises(ClaimFailed):
        run_sweep_app(_config(**small), tmp_path, log=lines.append, runner="sweep_runners:crash_on_one")
    assert any("all already in results.csv: nothing left to compute" in line for line in lines), lines
    assert read_csv(tmp_path / "results.csv") == rows


@pytest.mark.app  # starts a worker process
def test_a_python_error_in_the_worker_is_raised_not_recorded(tmp_path):
    from foldconv.experiments.sweep.isolate import WorkerError, run_isolated

    with pytest.raises(WorkerError, match="ValueError: a bug in the runner at theorem"):
        list(run_isolated([Point("theorem", 1, 2, in_channels=2, size=5)], ["float32"], runner="sweep_runners:broken"))


def test_each_remedy_line_names_the_layer_and_size_of_the_rows_it_counts(sweep_rows):
    """RULE-6 covers average and max pooling: a header quoting the first row's reason described the average
    pooling rows only, above remedies of max pooling; each remedy now carries the reason of its own rows."""
    summary = summarize(sweep_rows)
    remedies = summary.split("## Remedies")[1].split("\n## ")[0]
    rule6 = [line for line in remedies.splitlines() if "*it equals the " in line]
    assert any("the mean over" in line for line in rule6) and any("the max over" in line for line in rule6)
    for line in rule6:
        kind = "AvgPool" if "the mean over" in line else "MaxPool"
        other = "MaxPool" if kind == "AvgPool" else "AvgPool"
        assert kind in line and other not in line, line
    header = next(line for line in remedies.splitlines() if line.startswith("- **RULE-6**"))
    assert "Pool" not in header, header
    for line in remedies.splitlines():  # RULE-8: the outputs kept are those of the reason quoted beside them
        if "*zero-pad the input to" in line and "keep the first" in line:
            kept = line.split("keep the first ")[1].split(" outputs")[0]
            assert f"keeping the first {kept} outputs" in line, line


def test_the_title_names_the_grid_actually_run(tmp_path):
    """A user overriding grid.* values ran a custom grid, not the preset: the title says which values changed."""
    from foldconv.experiments.sweep.main import describe_grid

    assert describe_grid(quick_grid()) == "grid=quick"
    assert describe_grid(Grid(kernel=(3,), stride=(2,))) == "custom grid (grid=quick with grid.kernel=[3] grid.stride=[2])"
    run = run_app(f"hydra.run.dir={tmp_path}", "progress=false", "plots=false", "grid.dims=[1]", "grid.r=[2]",
                  "grid.following=[]", "grid.kernel=[3]")
    assert run.returncode == 0, run.stderr
    for name in ("summary.md", "index.md"):
        first = (tmp_path / name).read_text().splitlines()[0]
        assert "grid=quick with grid.dims=[1] grid.r=[2] grid.kernel=[3] grid.following=[]" in first, first
        assert "grid=quick," not in first and not first.endswith("grid=quick")


def _section_rows(spec):
    return [{"section": s, "r": r, "kernel": 3, "observed": o, "predicted": o, "agree": "True", "rule": "X", "rel_err_bfloat16": 0.01}
            for s, r, o, n in spec for _ in range(n)]


def test_the_by_r_figure_compares_like_with_like():
    from foldconv.experiments.sweep.summary import by_r_pooling

    # an r=2 job alone ran strided_spd (stride-2 convs): pooled, r=2 would show 26 extra "holds with conditions"
    rows = _section_rows([("theorem", r, "holds with conditions", 33) for r in ("2", "3", "4")]
                         + [("strided_spd", "2", "holds with conditions", 26), ("invalid", "-1", "invalid", 1), ("invalid", "1.5", "invalid", 1)])
    rs, pooled, left = by_r_pooling(rows)
    assert rs == ["2", "3", "4"] and pooled == ["theorem"]  # the probes' r=-1, 1.5 are no fold factors
    assert left == {"strided_spd": "run at r=2 only", "invalid": "probes of invalid requests at r=-1, 1.5, not fold factors"}
    rs, pooled, left = by_r_pooling([row for row in rows if row["section"] != "strided_spd" or row["r"] != "2"] +
                                    _section_rows([("strided_spd", r, "holds", 1) for r in ("2", "3", "4")]))
    assert pooled == ["theorem", "strided_spd"] and list(left) == ["invalid"]  # run at every r: pooled like the others


def test_the_error_heatmap_names_its_floor_only_when_the_r1_row_was_run(tmp_path):
    from foldconv.experiments.sweep.main import sweep_files
    from foldconv.experiments.sweep.summary import error_floor

    without = _section_rows([("theorem", r, "holds", 1) for r in ("2", "3")])
    with_floor = without + _section_rows([("theorem", "1", "holds", 1)])
    assert error_floor(with_floor).startswith("the r=1 row") and sweep_files(with_floor)["heatmap_errors.png"].endswith("its floor")
    assert "r=1 row is" not in sweep_files(without)["heatmap_errors.png"] and error_floor(without).startswith("no r=1 row was run")
