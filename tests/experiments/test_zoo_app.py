"""The zoo app (issue 12, item 1): shards as a multirun, the merge refusing missing shards or interrupted
jobs, a killed run resumed without re-measuring, and bad requests in one line.

Three of timm's own test models (tiny, 160 x 160) keep it fast: test_resnet and test_efficientnet are
analysed and gradient-checked; test_vit is a transformer.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from app_harness import run_in_process
from foldconv.experiments.io import read_csv
from helpers import ROOT

pytest.importorskip("timm")

MODELS = ["test_resnet", "test_vit", "test_efficientnet"]
NAMES = f"names=[{','.join(MODELS)}]"
QUIET = ["progress=false", "plots=false"]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}

# The real app with every model it measures recorded, and a pause before each model after the first (so the
# test can kill it between two models, with the first row written).
_RECORDING = (
    "import os, runpy, sys, time\n"
    "import foldconv.experiments.zoo.run as R\n"
    "real = R.measure_model\n"
    "def recorded(zoo, name, **kw):\n"
    "    if os.path.exists(os.environ['ZOO_RECORD']):\n"
    "        time.sleep(float(os.environ['ZOO_SLEEP']))\n"
    "    with open(os.environ['ZOO_RECORD'], 'a') as f:\n"
    "        f.write(name + '\\n')\n"
    "    return real(zoo, name, **kw)\n"
    "R.measure_model = recorded\n"
    "sys.argv = ['zoo.py'] + sys.argv[1:]\n"
    f"runpy.run_path({str(ROOT / 'scripts' / 'zoo.py')!r}, run_name='__main__')\n"
)


def _app(args, record: Path, sleep: float = 0.0) -> subprocess.Popen:
    env = {**ENV, "ZOO_RECORD": str(record), "ZOO_SLEEP": str(sleep)}
    return subprocess.Popen([sys.executable, "-c", _RECORDING, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.fixture(scope="module")
def multirun(tmp_path_factory) -> Path:
    """``-m shard.count=2 shard.index=0,1`` over the three models (Hydra's basic launcher: one process)."""
    root = tmp_path_factory.mktemp("zoo") / "multirun"
    proc = _app(["-m", NAMES, "shard.count=2", "shard.index=0,1", f"hydra.sweep.dir={root}", *QUIET], root.parent / "record.txt")
    out, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    return root


def test_shards_split_the_models_and_merge_into_every_model(multirun, tmp_path, monkeypatch, capsys):
    shards = [[r["model"] for r in read_csv(multirun / str(k) / "results.csv")] for k in (0, 1)]
    assert sorted(shards[0] + shards[1]) == sorted(MODELS) and not set(shards[0]) & set(shards[1])
    assert sorted(shards[0]) == sorted(MODELS)[0::2]  # shard k holds every 2nd model of the sorted list from k
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process("zoo", [f"merge={multirun}", *QUIET], capsys)
    assert code == 0, err
    merged = {r["model"]: r for r in read_csv(tmp_path / "results.csv")}
    assert sorted(merged) == sorted(MODELS)
    assert merged["test_resnet"]["rf_status"] == "exact" and merged["test_resnet"]["check"] == "ok"  # a gradient check ran
    for row in merged.values():  # either analysed or the blocker named (which ops block changes as rules are added)
        assert row["params_ok"] == "True" and row["macs_ok"] == "True", row
        assert (row["rf_status"] in ("exact", "inexact")) != bool(row["rf_blocker"]), row
    analysed = sum(r["rf_status"] in ("exact", "inexact") for r in merged.values())
    summary = (tmp_path / "summary.md").read_text()
    assert f"| RF analysed without fallback | {analysed} / 3 ({100 * analysed / 3:.1f} %) |" in summary
    assert "3 of 3 models built" in out
    tier = json.loads((tmp_path / "fast_tier.json").read_text())  # one model per family, with its exact figures
    families = {r["family"] for r in merged.values()}
    assert sorted(m["family"] for m in tier["models"].values()) == sorted(families)
    for name, figures in tier["models"].items():
        assert (figures["params"], figures["macs"]) == (int(merged[name]["params"]), int(merged[name]["macs"]))


@pytest.mark.parametrize("damage, message", [
    ("drop_shard", "job 1 (names=[test_resnet,test_vit,test_efficientnet] shard.count=2 shard.index=1 progress=False plots=False) never started"),
    ("drop_row", "results.csv was changed after the job finished (1 row now, 2 rows when it finished): truncated or edited"),
])
def test_merge_refuses_a_missing_shard_or_an_interrupted_job(multirun, tmp_path, monkeypatch, capsys, damage, message):
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(multirun, broken)
    if damage == "drop_shard":
        shutil.rmtree(broken / "1")
    else:
        path = broken / "0" / "results.csv"
        lines = path.read_text().splitlines(keepends=True)
        path.write_text("".join(lines[:-1]))
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    monkeypatch.chdir(out_dir)
    code, out, err = run_in_process("zoo", [f"merge={broken}", *QUIET], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zoo: error: input=") and message in lines[0], lines
    assert not (out_dir / "results.csv").exists()


def test_a_killed_run_keeps_its_rows_and_a_rerun_measures_only_the_rest(tmp_path, monkeypatch, capsys):
    import foldconv.experiments.zoo.run as zoo_run

    run = tmp_path / "run"
    args = [NAMES, "check_max_macs=0", *QUIET]
    first = _app([*args, f"hydra.run.dir={run}"], tmp_path / "first.txt", sleep=120)  # killed in the pause before its 2nd model
    csv_path = run / "results.csv"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None and not (csv_path.exists() and len(csv_path.read_bytes().splitlines()) >= 2):
        time.sleep(0.05)
    assert first.poll() is None, first.communicate()
    first.send_signal(signal.SIGKILL)
    first.wait(timeout=30)
    saved = read_csv(csv_path)
    assert len(saved) == 1 and csv_path.read_bytes().endswith(b"\n")  # one complete row, written the moment it finished
    kept = csv_path.read_bytes()

    remeasured = []
    real = zoo_run.measure_model
    monkeypatch.setattr(zoo_run, "measure_model", lambda zoo, name, **kw: remeasured.append(name) or real(zoo, name, **kw))
    monkeypatch.chdir(run)  # the same run directory: the rerun resumes
    code, out, err = run_in_process("zoo", args, capsys)
    assert code == 0, err
    assert "3 timm models (1 already in results.csv, resuming; 2 to run)" in err  # a status line: stderr
    assert sorted(remeasured) == sorted(set(MODELS) - {saved[0]["model"]}), remeasured
    assert csv_path.read_bytes().startswith(kept)  # the saved row is untouched
    assert sorted(r["model"] for r in read_csv(csv_path)) == sorted(MODELS)


@pytest.mark.parametrize("override, message", [
    ("zoo=keras", "zoo='keras': must be one of ('torchvision', 'timm')"),
    ("names=[no_such_model*]", "names=['no_such_model*']: match no model of the timm zoo"),
    ("names=[resnet5O]", "names=['resnet5O']: match no model of the timm zoo; did you mean resnet50"),  # as model names get
    ("names=[resnet50,resnet5O]", "resnet5O matches no model of the timm zoo; did you mean resnet50"),  # never silently dropped
    ("shard.index=3", "shard.index=3"),
])
def test_bad_requests_are_one_line(tmp_path, monkeypatch, capsys, override, message):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process("zoo", [override, *QUIET], capsys)
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], lines
