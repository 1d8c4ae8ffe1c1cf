"""The installed command (issue 14.7) and the one model spelling of every app (issue 14.1).

``python -m foldconv <command>`` runs the same entry point as the installed ``foldconv`` script
(``[project.scripts]``), from a directory outside the repository: the configs must come from the package.
Custom models: ``model._target_=custom_model.make_net model.width=8`` (tests/experiments/custom_model.py on
PYTHONPATH) in every app that takes a model; a misspelt name is one line with close matches, exit 2.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from app_harness import run_in_process
from helpers import ROOT

HERE = Path(__file__).resolve().parent


def foldconv(*args: str, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    """``python -m foldconv args...`` in ``cwd``; foldconv and tests/experiments (custom_model) importable."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]))
    return subprocess.run([sys.executable, "-m", "foldconv", *args], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


def test_entry_point_is_declared_and_configs_ship_as_package_data():
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["foldconv"] == "foldconv_launcher:main"  # checks for a shadowing folder, then the CLI
    assert "foldconv_launcher" in project["tool"]["setuptools"]["py-modules"]
    from foldconv.experiments.app import CONFIG_DIR

    # one source of truth: the top-level configs/; the package reaches it through the link foldconv/configs,
    # whose files a build copies into the wheel as package data
    link = ROOT / "foldconv" / "configs"
    assert link.is_symlink() and link.resolve() == (ROOT / "configs").resolve()
    assert CONFIG_DIR == link.absolute() and CONFIG_DIR.resolve() == (ROOT / "configs").resolve()
    patterns = project["tool"]["setuptools"]["package-data"]["foldconv"]
    shipped = {p.resolve() for pattern in patterns for p in (ROOT / "foldconv").glob(pattern)}
    configs = {p.resolve() for p in (ROOT / "configs").rglob("*.yaml")}
    assert configs and configs <= shipped, sorted(str(p) for p in configs - shipped)


def test_sweep_runs_from_outside_the_repository(tmp_path):
    out = tmp_path / "run"
    done = foldconv("sweep", "fold.r=2", "grid.dims=[1]", "grid.following=[]", "plots=false", "progress=false",
                    f"hydra.run.dir={out}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / "results.csv").is_file() and (out / "summary.md").is_file()
    assert "No CUDA runtime" not in done.stderr


@pytest.mark.parametrize("command, own, foreign", [
    ("sweep", ["grid:", "grid=quick", "shard:", "foldconv sweep"], ["example:", "erf_samples"]),
    ("rf", ["erf_samples:", "check_size:", "foldconv rf", "model._target_="], ["grid:", "grid=quick", "example:"]),
    ("operators", ["example:", "foldconv operators"], ["grid:", "grid=quick", "erf_samples"]),
])
def test_help_lists_the_apps_own_options_only(tmp_path, command, own, foreign):
    done = foldconv(command, "--help", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    for text in own:
        assert text in done.stdout, text
    for text in foreign:
        assert text not in done.stdout, text


def test_unknown_command_is_one_line_with_a_suggestion(tmp_path):
    done = foldconv("flod", cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == "foldconv: error: command='flod': is not a foldconv command; did you mean fold?"


CUSTOM = ["model._target_=custom_model.make_net", "model.width=8"]


@pytest.mark.parametrize("command, args, written, evidence", [
    # the head is Linear(8, 10): 90 parameters, so model.width=8 reached make_net
    ("count", ["input_shape=[1,3,32,32]", "plot=false", "d2l_table=false"], "make_net_layers.csv", '"(1,8)","(1,10)",90'),
    ("rf", ["input_shape=[1,3,32,32]", "check_size=16", "erf_samples=1", "fold.r=0"], "layers.csv", "body"),
    ("shift", ["ladder.enabled=false", "crop=32", "pairs=2", "images=[camera]", "max_shift=4", "shifts=[1]"],
     "consistency.csv", "make_net"),
])
def test_every_model_app_takes_a_custom_target_with_kwargs(tmp_path, command, args, written, evidence):
    out = tmp_path / "run"
    done = foldconv(command, *CUSTOM, *args, f"hydra.run.dir={out}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (out / written).is_file(), sorted(p.name for p in out.iterdir())
    assert evidence in (out / written).read_text()
    assert "make_net" in done.stdout


@pytest.mark.parametrize("app", ["count", "receptive_field", "shift"])
def test_a_misspelt_model_name_suggests_close_matches(app, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(app, ["model=resnet181"], capsys)
    assert code == 2
    assert err.strip() == f"{app}: error: model='resnet181': is not a torchvision model or a registered architecture; did you mean resnet18, resnet101, resnet152?"
    assert not any(tmp_path.iterdir())


def test_a_timm_model_without_timm_says_how_to_get_it(tmp_path, monkeypatch, capsys):
    try:
        import timm  # noqa: F401
    except ImportError:
        monkeypatch.chdir(tmp_path)
        code, _, err = run_in_process("receptive_field", ["model=timm:resnet18d"], capsys)
        assert code == 2 and err.strip().endswith("needs timm, which is not installed (pip install timm)")
    else:
        pytest.skip("timm is installed")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_on_a_machine_without_it_is_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process("fold_conv", ["device=cuda"], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1 and "device='cuda'" in err and "CUDA" in err


def test_every_app_in_the_readme_table_has_a_measured_time():
    import re

    from foldconv.experiments.cli import COMMANDS

    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `foldconv (\w+)`[^|]*\|[^|]*\| (.*) \|$", readme, re.M)}
    assert sorted(rows) == sorted(COMMANDS), sorted(rows)  # every app has a row
    for command, time in rows.items():
        assert re.search(r"\d+(\.\d+)? ?(s|min|h)\b", time), (command, time)  # a number with its unit
        assert "estimated" not in time and "not re-timed" not in time, (command, time)  # measured, not guessed
    assert "on 2 cores" in readme
