"""Errors that say what the user typed: a misspelt option key gets its close matches in every app, the error line
starts with the command typed, a fold factor that does not divide the channels is worded (and exits) one way,
and a folder named foldconv shadowing the install is named instead of a traceback."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

from app_harness import run_in_process
from foldconv.errors import FoldError
from foldconv.experiments import cli
from foldconv.fold import require_foldable
from foldconv.predict import Outcome, predict_fold
from foldconv.specs import FoldSpec
from foldconv.sweep import Point, run_point
from helpers import ROOT

# (command, a key of its config, the same key misspelt): every app, top-level and nested keys, Hydra's own
MISSPELT = [
    ("fold", "fold.r", "fold.R"),
    ("fold", "conv.kernel_size", "conv.kernal_size"),
    ("operators", "example.r", "example.R"),
    ("sweep", "grid.kernel", "grid.kernal"),
    ("aggregate", "plots", "plot"),
    ("count", "model", "modle"),
    ("rf", "model", "Model"),
    ("shift", "model", "modell"),
    ("rewrite", "model", "mdoel"),
    ("zoo", "check_size", "check_sise"),
    ("rf", "hydra.run.dir", "hydra.run.dirr"),
]


def test_every_app_is_in_the_table():
    assert {command for command, _, _ in MISSPELT} == set(cli.COMMANDS)


@pytest.mark.parametrize("command, key, typo", MISSPELT)
def test_a_misspelt_key_gets_its_close_match_and_the_command_typed(command, key, typo, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))  # the CLI sets sys.argv for Hydra: restored after the test
    with pytest.raises(SystemExit) as stop:
        cli.main([command, f"{typo}=2"])
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"{command}: error: ") and lines[0].endswith("?"), lines[0]
    assert lines[0].rsplit("did you mean ", 1)[1].rstrip("?").split(" or ")[0] == key, lines[0]  # the closest first
    # the option path as typed, with its value, never the class behind the config (FoldSpec, RFExperiment)
    assert lines[0] == f"{command}: error: {typo}=2: not an option; did you mean {lines[0].rsplit('did you mean ', 1)[1]}", lines[0]


@pytest.mark.parametrize("override", ["fold.R=2", "+fold.R=2"])
def test_an_unknown_key_is_worded_one_way_however_it_is_typed(override, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit):
        cli.main(["fold", override])
    assert capsys.readouterr().err.strip() == "fold: error: fold.R=2: not an option; did you mean fold.r?"


def test_an_override_omegaconf_cannot_apply_is_one_line_not_a_traceback(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit) as stop:
        cli.main(["count", "models.x=1"])  # a list indexed by a name
    lines = capsys.readouterr().err.strip().splitlines()
    assert stop.value.code == 2 and len(lines) == 1 and lines[0].startswith("count: error: ") and "models.x=1" in lines[0], lines


def test_a_far_off_key_gets_no_false_suggestion(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    with pytest.raises(SystemExit):
        cli.main(["count", "xyzzy=3"])
    line = capsys.readouterr().err.strip()
    assert line.startswith("count: error: ") and "xyzzy" in line and "did you mean" not in line
    assert "not an option (one of " in line and "input_shape" in line and "CountExperiment" not in line  # the options, not a class


def test_an_added_key_that_no_dataclass_reads_gets_its_close_match(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process("fold_conv", ["+fold.R=2"], capsys)
    assert code == 2 and err.strip().endswith("did you mean fold.r?") and not list(tmp_path.iterdir())


def test_a_fold_factor_that_does_not_divide_the_channels_is_one_error_everywhere(tmp_path, monkeypatch, capsys):
    with pytest.raises(FoldError) as info:
        require_foldable(6, FoldSpec.make(2))
    wording = str(info.value)
    assert wording == "in_channels=6: must be a multiple of prod(r)=4 (r=(2, 2)) to fold"
    prediction = predict_fold(torch.nn.Conv2d(6, 8, 3, padding=1), 2)
    assert (prediction.outcome, prediction.reason, prediction.codes) == (Outcome.INVALID, wording, ("FOLD-3",))
    row = run_point(Point("invalid", 2, 2, "crd", "same", 6, 2, 3, 1, 0, 1, 1, "zeros", 0, 6), ())
    assert (row["predicted"], row["observed"], row["agree"], row["reason"]) == ("invalid", "invalid", True, wording)
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process("fold_conv", ["conv.in_channels=6", "fold.r=2", "timing=false"], capsys)
    assert (code, err.strip()) == (2, f"fold_conv: error: conv.{wording}") and not list(tmp_path.iterdir())
    code, _, err = run_in_process("fold_conv", ["conv.in_channels=8", "fold.r=2", "timing=false"], capsys)
    assert code == 0, err  # 8 channels fill two blocks: the same request with a fitting r runs


def test_a_folder_named_foldconv_shadowing_the_install_is_named(tmp_path):
    shadow = tmp_path / "foldconv"
    shadow.mkdir()
    (shadow / "__init__.py").write_text("")
    launch = "import foldconv_launcher; foldconv_launcher.main()"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(ROOT)])}  # the shadow comes first
    proc = subprocess.run([sys.executable, "-c", launch, "rf", "--help"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith("foldconv: error: 'import foldconv' finds ") and str(shadow) in lines[0] and "shadows the installed package" in lines[0]
    env["PYTHONPATH"] = str(ROOT)  # without the shadow the same command runs
    ok = subprocess.run([sys.executable, "-c", launch, "rf", "--help"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0 and "foldconv rf" in ok.stdout, ok.stderr


def _rule(command, override, capsys):
    with pytest.raises(SystemExit) as stop:
        cli.main([command, override])
    line = capsys.readouterr().err.strip()
    assert stop.value.code == 2 and len(line.splitlines()) == 1, line
    return line.split(": ", 3)[-1]  # "<command>: error: <param>=<value>: <rule>"


@pytest.mark.parametrize("command, key, values, rule", [
    ("fold", "fold.r", ["0", "1.5", "-1", "[2,0]", "[2,1.5]", "two"], "must be an integer >= 1 or one per spatial axis"),
    ("operators", "example.r", ["0", "1.5", "x"], "must be an integer >= 1 or one per spatial axis"),
    ("count", "fold_compare_r", ["0", "1.5", "two"], "must be an integer >= 1 or one per spatial axis, or null (no comparison)"),
    ("count", "fold_r", ["[0]", "[1.5]", "[2,x]"], "every entry must be an integer >= 1 or one per spatial axis"),
    ("rf", "fold.r", ["-1", "1.5", "0x2"], "must be an integer >= 1 or one per spatial axis, or 0 (no fold table)"),
    ("rf", "check_size", ["0", "-3", "abc"], "must be 'auto' (from the receptive field), a spatial size >= 1, or null (input_shape itself)"),
    # a value of the wrong type (refused by OmegaConf before the app's dataclass) is worded by the dataclass's own rule
    ("rf", "check_nodes", ["0", "1.5", "abc"], "must be an integer >= 1"),
    ("fold", "conv.groups", ["0", "1.5"], "must be an integer >= 1"),
    ("zoo", "time_limit_s", ["0", "-1", "abc"], "must be a number of seconds > 0"),
])
def test_one_rule_is_worded_one_way_whatever_broke_it(command, key, values, rule, capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    assert {_rule(command, f"{key}={v}", capsys) for v in values} == {rule}
