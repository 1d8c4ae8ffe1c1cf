"""Bad overrides end the apps with exit status 2 and ONE line on stderr naming the parameter (issue 10.11).

Most cases run the app in this process (app_harness: Hydra's compose + the script's main), a few in a fresh
interpreter, where the whole stderr must be that one line: no Hydra traceback, no warning, no log. Either way
the run directory must hold nothing that looks like a result.
"""
from __future__ import annotations

import pytest

from app_harness import run_in_process
from helpers import run_script

RESULT_FILES = (
    "report.md", "costs.csv", "costs.md", "operators.png", "checks.csv", "shifts.csv", "parameters.csv",
    "results.csv", "summary.md", "counts.csv", "kernel.png", "speed.csv",
)

FOLD_CONV = [
    ("fold.r=0", "fold.r=0"),
    ("fold.r=2x", "fold.r='2x'"),
    ("fold.r=2x2x2", "fold.r=(2, 2, 2)"),
    ("fold.r=[2,0]", "fold.r="),
    ("fold.order=xyz", "fold.order='xyz'"),
    ("conv.in_channels=0", "conv.in_channels=0"),
    ("conv.groups=3", "conv.groups=3"),
    ("conv.kernel_size=0", "conv.kernel_size=0"),
    ("conv.kernel_size=[3,3,3]", "conv.kernel_size="),
    ("conv.stride=abc", "conv.stride='abc'"),
    ("conv.padding=-1", "conv.padding=-1"),
    ("conv.padding_mode=reflekt", "conv.padding_mode='reflekt'"),
    ("conv.dims=4", "conv.dims=4"),
    ("input_size=[2,2] conv.padding=0", "input_size=(2, 2)"),
    ("input_size=[14,14,14]", "input_size="),
    ("input_size=0", "input_size=0"),
    ("input_size=100000", "input_size=(100000, 100000)"),
    ("dtypes=[float33]", "dtypes="),
    ("trials=0", "trials=0"),
    ("batch=0", "batch=0"),
    ("seed=-1", "seed=-1"),
    ("min_run_time=0", "min_run_time=0"),
    ("device=gpu7", "device='gpu7'"),
    ("rounds=0", "rounds=0"),
    ("threads=0", "threads=0"),
    ("picture_channel=256", "picture_channel=256"),
    ("conv.in_channels=512 picture_folded_channel=2", "picture_folded_channel=2"),
]

OPERATORS = [
    ("example.r=0", "example.r=0"),
    ("example.r=abc", "example.r='abc'"),
    ("example.r=[2,2,2]", "example.r="),
    ("example.order=xyz", "example.order='xyz'"),
    ("example.input_size=[100,100]", "example.input_size=(100, 100)"),
    ("example.kernel_size=5 example.padding=0 example.input_size=[3,3]", "example.input_size=(3, 3)"),
    ("example.stride=[1,2,3]", "example.stride="),
    ("example.padding=-1", "example.padding=-1"),
    ("example.in_channels=0", "example.in_channels=0"),
    ("example.in_channels=6", "example.in_channels=6"),
    ("example.in_channels=8 example.groups=3", "example.groups=3"),
    ("example.weight_range=0", "example.weight_range=0"),
    ("example.seed=-1", "example.seed=-1"),
    ("ladder.delta=-1", "ladder.delta=-1"),
    ("ladder.height=0", "ladder.height=0"),
    ("dpi=0", "dpi=0"),
]

# The other apps, used read-only here (their own tests live beside them).
OTHER_APPS = [
    ("count", "fold_order=bad", "fold_order='bad'"),
    ("count", "fold_r=[0]", "fold_r=[0]"),
    ("sweep", "fold.r=0", "fold.r="),
    ("sweep", "grid.orders=[xyz]", "grid.orders="),
    ("sweep", "grid.padding_modes=[zeros,reflekt]", "grid.padding_modes="),
    ("aggregate", "input=/nonexistent", "input='/nonexistent'"),
]

CASES = [("fold_conv", *case) for case in FOLD_CONV] + [("operators", *case) for case in OPERATORS] + OTHER_APPS


def assert_one_line_error(app: str, code: int, err: str, param: str) -> None:
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{app}: error: {param}"), lines[0]
    assert "Traceback" not in err and "HYDRA_FULL_ERROR" not in err


def assert_nothing_written(directory) -> None:
    left = [name for name in RESULT_FILES if (directory / name).exists()]
    assert not left, left


@pytest.mark.parametrize("app, overrides, param", CASES, ids=[f"{a}:{o}" for a, o, _ in CASES])
def test_bad_override_exits_2_with_one_line(app, overrides, param, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process(app, overrides.split(), capsys)
    assert_one_line_error(app, code, err, param)
    assert_nothing_written(tmp_path)


SUBPROCESS_CASES = [
    ("fold_conv", "fold.r=0", "fold.r=0"),
    ("fold_conv", "conv.groups=3", "conv.groups=3"),
    ("fold_conv", "dtypes=[float33]", "dtypes="),
    ("operators", "example.r=2x0", "example.r=(2, 0)"),
    ("operators", "ladder.delta=-1", "ladder.delta=-1"),
]


@pytest.mark.parametrize("app, override, param", SUBPROCESS_CASES, ids=[f"{a}:{o}" for a, o, _ in SUBPROCESS_CASES])
def test_bad_override_on_the_command_line(app, override, param, tmp_path):
    proc = run_script(app, override, run_dir=tmp_path)
    assert_one_line_error(app, proc.returncode, proc.stderr, param)
    assert_nothing_written(tmp_path)


def test_good_overrides_still_run_in_process(tmp_path, monkeypatch, capsys):
    """The harness can pass: the same machinery with valid overrides exits 0 and writes the results."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process(
        "fold_conv", ["conv.in_channels=32", "conv.out_channels=2", "fold.r=2x4", "input_size=[4,3]", "timing=false"], capsys
    )
    assert code == 0, err
    assert "equivalent (exact)" in out and (tmp_path / "summary.md").exists()
    code, _, err = run_in_process("operators", ["example.r=2x1", "example.input_size=[3,3]"], capsys)
    assert code == 0, err
    assert (tmp_path / "operators.png").exists()
