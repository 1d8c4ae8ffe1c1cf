"""Records that refuse to lie: a multirun's jobs come from its own record (multirun.yaml), each job is complete only
with the completion marker its app writes last, and a merge refuses anything less, naming every job (never
started, cut mid-rows, cut mid-plots, results.csv truncated afterwards) and the command that resumes them all.
Ctrl-C on a parallel multirun prints one line per job and that command, no traceback."""
from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app_harness import run_in_process
from foldconv.errors import FoldError
from foldconv.experiments.io import read_csv, write_csv
from foldconv.experiments.records import (
    MARKER,
    interrupted_multirun,
    job_problem,
    multirun_jobs,
    require_complete,
    resume_command,
    write_marker,
)
from helpers import ROOT

SMALL = ["plots=false", "progress=false", "grid.following=[relu]", "grid.dims=[1]"]  # 142 points for fold.r=2 (28 strided_spd), 114 for 3 and 4


def _record(root: Path, task, hydra=("hydra/launcher=parallel", "hydra.mode=MULTIRUN")) -> None:
    from omegaconf import OmegaConf

    root.mkdir(parents=True, exist_ok=True)
    OmegaConf.save({"hydra": {"job": {"name": "sweep"}, "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper", "params": None},
                              "overrides": {"task": list(task), "hydra": list(hydra)}}}, root / "multirun.yaml")


def _job(root: Path, number: int, rows: int = 3, *, finished: bool = True) -> Path:
    job = root / str(number)
    (job / ".hydra").mkdir(parents=True)
    (job / ".hydra" / "config.yaml").write_text("fold:\n  r: '2'\n")
    write_csv([{"section": "theorem", "r": 2, "k": k, "agree": True} for k in range(rows)], job / "results.csv")
    if finished:
        write_marker(job, app="sweep", status="ok")
    return job


def test_the_job_list_is_the_sweepers_own_expansion(tmp_path):
    _record(tmp_path, ["fold.r=2,3", "shard.count=2", "shard.index=range(2)", "plots=false"])
    jobs = multirun_jobs(tmp_path)
    assert [j.overrides for j in jobs] == [  # Hydra's order: the product of the sweeps, the last one fastest
        ("fold.r=2", "shard.count=2", "shard.index=0", "plots=False"), ("fold.r=2", "shard.count=2", "shard.index=1", "plots=False"),
        ("fold.r=3", "shard.count=2", "shard.index=0", "plots=False"), ("fold.r=3", "shard.count=2", "shard.index=1", "plots=False"),
    ]
    assert [j.path for j in jobs] == [tmp_path / str(i) for i in range(4)]
    command = shlex.split(resume_command(tmp_path))
    assert command[:3] == ["foldconv", "sweep", "-m"] and "shard.index=range(2)" in command and "hydra/launcher=parallel" in command
    assert "hydra.mode=MULTIRUN" not in command and command[-1] == f"hydra.sweep.dir={tmp_path.resolve()}"


@pytest.mark.parametrize("damage, named", [
    ("jobs_never_started", ["job 2 (fold.r=4) never started", "job 3 (fold.r=5) never started"]),
    ("middle_job_missing", ["job 1 (fold.r=3) never started"]),
    ("cut_mid_rows", ["job 1 (fold.r=3) cut at 2 rows (no completion marker)"]),
    ("marker_deleted", ["job 3 (fold.r=5) cut at 3 rows (no completion marker)"]),
    ("csv_truncated", ["job 0 (fold.r=2) results.csv was changed after the job finished (1 row now, 3 rows when it finished): truncated"]),
    ("csv_deleted", ["job 2 (fold.r=4) results.csv was deleted after the job finished"]),
    ("no_rows_yet", ["job 1 (fold.r=3) started but wrote no results.csv"]),
])
def test_a_merge_refuses_every_kind_of_incomplete_job_and_names_each(tmp_path, damage, named):
    root = tmp_path / "multirun"
    _record(root, ["fold.r=2,3,4,5"])
    for number in range(4):
        _job(root, number)
    require_complete(root)  # the intact multirun merges
    if damage == "jobs_never_started":
        for number in (2, 3):
            __import__("shutil").rmtree(root / str(number))
    elif damage == "middle_job_missing":
        __import__("shutil").rmtree(root / "1")
    elif damage == "cut_mid_rows":
        __import__("shutil").rmtree(root / "1")
        _job(root, 1, rows=2, finished=False)
    elif damage == "marker_deleted":
        (root / "3" / MARKER).unlink()
    elif damage == "csv_truncated":
        path = root / "0" / "results.csv"
        path.write_text("".join(path.read_text().splitlines(keepends=True)[:2]))
    elif damage == "csv_deleted":
        (root / "2" / "results.csv").unlink()
    elif damage == "no_rows_yet":
        for name in ("results.csv", MARKER):
            (root / "1" / name).unlink()
    with pytest.raises(FoldError) as info:
        require_complete(root)
    message = str(info.value)
    assert info.value.param == "input" and "of its 4 jobs are incomplete" in message
    for text in named:
        assert text in message
    assert len(re.findall(r"job \d+ \(", message)) == len(named), message  # only the damaged jobs
    assert message.endswith(f"resume the whole multirun with: {resume_command(root)}")


def test_the_resume_command_starts_the_app_the_way_this_process_was_started(tmp_path, monkeypatch):
    _record(tmp_path, ["fold.r=2,3"])
    monkeypatch.setattr(sys, "argv", ["foldconv sweep"])
    assert shlex.split(resume_command(tmp_path))[:3] == ["foldconv", "sweep", "-m"]
    for script in ("sweep.py", "aggregate.py"):  # the sweep itself, or the aggregate run on its multirun
        monkeypatch.setattr(sys, "argv", [f"scripts/{script}"])
        monkeypatch.chdir(ROOT)
        assert shlex.split(resume_command(tmp_path))[:3] == ["python", "scripts/sweep.py", "-m"]
    monkeypatch.setattr(sys, "argv", [str(tmp_path / "other.py")])  # not one of the project's scripts
    assert shlex.split(resume_command(tmp_path))[:2] == ["foldconv", "sweep"]


def test_a_directory_without_the_multirun_record_is_refused(tmp_path):
    _job(tmp_path, 0)
    with pytest.raises(FoldError, match="has no multirun.yaml"):
        require_complete(tmp_path)


def test_the_aggregate_app_refuses_in_one_line_and_writes_nothing(tmp_path, monkeypatch, capsys):
    root = tmp_path / "multirun"
    _record(root, ["fold.r=2,3,4"])
    _job(root, 0)
    _job(root, 1, finished=False)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    code, _, err = run_in_process("aggregate", [f"input={root}", "plots=false"], capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("aggregate: error: input=")
    assert "job 1 (fold.r=3) cut at 3 rows" in lines[0] and "job 2 (fold.r=4) never started" in lines[0]
    assert "every prediction agrees" not in err and not (out / "results.csv").exists() and not (out / MARKER).exists()


@pytest.mark.parametrize("earlier", [False, True])
def test_a_refused_request_leaves_no_run_directory_behind(tmp_path, monkeypatch, capsys, earlier):
    """Hydra writes .hydra/ and the app's log before the app can refuse: a refused request removes them (a folder
    that looks like a result), unless the directory holds something else (an earlier run's outputs)."""
    from foldconv.experiments import cli

    root = tmp_path / "multirun"
    _record(root, ["fold.r=2,3"])
    _job(root, 0)
    out = tmp_path / "out"
    if earlier:
        out.mkdir()
        (out / "results.csv").write_text("a\n1\n")
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit) as stop:
        cli.main(["aggregate", f"input={root}", "plots=false", f"hydra.run.dir={out}"])
    assert stop.value.code == 2 and "job 1 (fold.r=3) never started" in capsys.readouterr().err
    assert ({p.name for p in out.iterdir()} >= {"results.csv", ".hydra"}) if earlier else not out.exists()


def test_a_run_cut_while_drawing_redoes_its_outputs_and_index_on_resume(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    args = ["fold.r=2", "isolate=false", *SMALL]
    code, out, err = run_in_process("sweep", args, capsys)
    assert code == 0, err
    assert job_problem(tmp_path) is None
    rows = (tmp_path / "results.csv").read_bytes()
    for name in ("summary.md", "index.md", MARKER):  # every row written, then cut before the outputs were all there
        (tmp_path / name).unlink()
    assert job_problem(tmp_path) == "all 142 rows written, cut before its outputs were finished (no completion marker)"
    (tmp_path / "results.csv").write_bytes(b"".join(rows.splitlines(keepends=True)[:-2]))  # cut mid-rows: of how many
    assert job_problem(tmp_path) == "cut at 140 rows of 142 (no completion marker)"
    (tmp_path / "results.csv").write_bytes(rows)
    code, out, err = run_in_process("sweep", args, capsys)
    assert code == 0, err
    assert "0 computed now" in out and (tmp_path / "results.csv").read_bytes() == rows
    assert (tmp_path / "summary.md").exists() and "summary.md" in (tmp_path / "index.md").read_text()
    assert job_problem(tmp_path) is None


def test_a_refused_request_leaves_a_finished_run_finished(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_in_process("sweep", ["fold.r=2", "isolate=false", *SMALL], capsys)[0] == 0
    code, _, err = run_in_process("sweep", ["fold.r=3", "isolate=false", *SMALL], capsys)  # another config here: refused
    assert code == 2 and "different config" in err
    assert job_problem(tmp_path) is None


def test_ctrl_c_on_a_parallel_multirun_prints_a_line_per_job_and_the_command_that_resumes_it(tmp_path):
    root = tmp_path / "multirun"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    args = ["-m", "fold.r=2,3,4", "hydra/launcher=parallel", f"hydra.sweep.dir={root}", *SMALL]
    proc = subprocess.Popen([sys.executable, "-m", "foldconv", "sweep", *args], cwd=tmp_path, env=env, start_new_session=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as typed in a terminal
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 300
    first = [root / str(i) / "results.csv" for i in (0, 1)]
    while time.monotonic() < deadline and proc.poll() is None:
        if all(p.exists() and len(p.read_bytes().splitlines()) > 3 for p in first):
            break
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    os.killpg(proc.pid, signal.SIGINT)  # what Ctrl-C sends: every process of the group
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert [line.split(":")[1].split("(")[0].strip() for line in lines[:3]] == ["job 0", "job 1", "job 2"], lines
    assert "job 2 (fold.r=4" in lines[2] and "never started" in lines[2]
    command = lines[3].split(" with: ", 1)[1]
    assert len(lines) == 4 and command == resume_command(root)
    with pytest.raises(FoldError, match="job 2 .* never started"):
        require_complete(root)
    resumed = subprocess.run([sys.executable, "-m", "foldconv", *shlex.split(command)[1:]], cwd=tmp_path, env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert [len(read_csv(j.path / "results.csv")) for j in require_complete(root)] == [142, 114, 114]
    assert interrupted_multirun(root)[:3] == [f"interrupted: job {i} ({' '.join(j.overrides)}): finished" for i, j in enumerate(multirun_jobs(root))]


def test_the_index_lists_only_files_that_hold_something(tmp_path):
    from foldconv.experiments.io import write_index

    (tmp_path / "app.log").write_text("")  # Hydra's log of an app that logged nothing
    (tmp_path / "notes.log").write_text("a warning\n")
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "summary.md").write_text("# the answer\n")
    index = write_index(tmp_path, {"*.log": "the app's log", "summary.md": "the answer"}, title="Demo").read_text()
    assert "- [notes.log](notes.log): the app's log" in index and "- [summary.md](summary.md): the answer" in index
    assert "app.log" not in index and "empty.csv" not in index


COUNT_CONV = ["model._target_=torch.nn.Conv2d", "+model.in_channels=4", "+model.out_channels=2", "+model.kernel_size=3",
              "input_shape=[1,4,8,8]", "fold_r=[2]", "d2l_table=false", "~expect"]


def test_a_run_cut_while_drawing_never_leaves_a_summary_that_looks_complete(tmp_path, monkeypatch, capsys):
    from foldconv.experiments import counting
    from foldconv.experiments.app import INCOMPLETE

    monkeypatch.chdir(tmp_path)
    assert run_in_process("count", COUNT_CONV, capsys)[0] == 0
    assert INCOMPLETE not in (tmp_path / "summary.md").read_text()
    real = counting.plot_comparison

    def cut(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(counting, "plot_comparison", cut)  # the rerun is cut while drawing: the old summary must not stand
    code, _, err = run_in_process("count", COUNT_CONV, capsys)
    assert code == 130 and err.startswith("interrupted: "), err
    summary = (tmp_path / "summary.md").read_text()
    assert INCOMPLETE in summary and f"hydra.run.dir={tmp_path}" in summary and job_problem(tmp_path) is not None
    monkeypatch.setattr(counting, "plot_comparison", real)
    assert run_in_process("count", COUNT_CONV, capsys)[0] == 0  # the resume redoes the plots, the summary and the index
    assert INCOMPLETE not in (tmp_path / "summary.md").read_text() and (tmp_path / "comparison.png").exists()
    assert (tmp_path / MARKER).exists()


def test_a_sweep_cut_while_drawing_keeps_the_summary_that_says_it_is_incomplete(tmp_path, monkeypatch, capsys):
    from foldconv.experiments.app import INCOMPLETE
    from foldconv.experiments.sweep import summary as sweep_summary

    monkeypatch.chdir(tmp_path)
    args = ["fold.r=2", "isolate=false", "plots=true", *SMALL[1:]]

    def cut(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(sweep_summary, "plot_outcomes_by_r", cut)  # every row in, cut at the last figure
    code, _, err = run_in_process("sweep", args, capsys)
    assert code == 130, err
    assert INCOMPLETE in (tmp_path / "summary.md").read_text() and job_problem(tmp_path) is not None
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    assert run_in_process("sweep", args, capsys)[0] == 0  # the resume draws every figure, then the summary
    assert INCOMPLETE not in (tmp_path / "summary.md").read_text() and (tmp_path / "outcomes_by_r.png").exists()
    assert job_problem(tmp_path) is None


def test_the_zoo_writes_its_summary_after_its_plots(tmp_path, monkeypatch):
    from foldconv.experiments.zoo import main as zoo_main

    (tmp_path / "summary.md").write_text("in progress\n")

    def cut(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(zoo_main, "plot_zoo", cut)
    row = {"model": "m", "status": "ok"}
    with pytest.raises(KeyboardInterrupt):
        zoo_main.write_zoo_outputs([row], tmp_path, zoo="timm", title="t")
    assert (tmp_path / "summary.md").read_text() == "in progress\n"


def test_a_refused_request_keeps_a_run_directory_that_existed_before(tmp_path, monkeypatch, capsys):
    from foldconv.experiments import cli

    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit) as stop:
        cli.main(["aggregate", f"input={tmp_path / 'missing'}", f"hydra.run.dir={out}"])
    assert stop.value.code == 2 and out.is_dir() and not list(out.iterdir())
