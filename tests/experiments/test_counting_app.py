"""scripts/count.py: writes its tables and plots into the Hydra run dir, and fails loudly."""
from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import ROOT
from foldconv.experiments.io import read_csv

SCRIPT = ROOT / "scripts" / "count.py"


def run(tmp_path, *overrides):
    return subprocess.run(
        [sys.executable, str(SCRIPT), f"hydra.run.dir={tmp_path}", *overrides],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )


def outputs(tmp_path):
    """Files the app wrote (Hydra's own log and config folder left out)."""
    return sorted(p.name for p in tmp_path.iterdir() if p.name not in {".hydra", "count.log"}) if tmp_path.exists() else []


def test_app_writes_tables_and_plots(tmp_path):
    result = run(
        tmp_path, "models=[resnet18,mobilenet_v3_small]", "input_shape=[1,3,64,64]",
        "+expect.resnet18.params=11689512",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for stem in ("comparison", "checks", "d2l_dense", "resnet18_layers", "resnet18_type", "resnet18_op",
                 "resnet18_module", "resnet18_dense", "resnet18_fold", "resnet18_fold_model",
                 "motivating_conv_fold_compare_r16"):
        assert (tmp_path / f"{stem}.csv").exists() and (tmp_path / f"{stem}.md").exists(), stem
    for png in ("comparison.png", "resnet18_layers.png", "mobilenet_v3_small_layers.png"):
        assert (tmp_path / png).stat().st_size > 1000
    checks = read_csv(tmp_path / "checks.csv")
    assert checks and all(row["ok"] == "True" for row in checks)
    assert {row["check"] for row in checks} >= {"every op has a cost rule", "expect params", "macs == FlopCounterMode/2"}
    models = [row["model"] for row in read_csv(tmp_path / "comparison.csv")]
    assert models == ["resnet18", "mobilenet_v3_small", "motivating_conv"]
    index = (tmp_path / "index.md").read_text()
    assert index.splitlines()[2].startswith("3 model(s) counted; all ") and index.splitlines()[2].endswith(" checks hold.")
    for name in outputs(tmp_path):  # every file written, each on its own line with what it holds
        assert name == "index.md" or f"[{name}]({name}): " in index, name


def test_app_exits_1_when_a_check_fails(tmp_path):
    result = run(tmp_path, "models=[resnet18]", "input_shape=[1,3,32,32]", "targets={}", "+expect.resnet18.params=1",
                 "plot=false")
    assert result.returncode == 1
    assert "CLAIM FAILED" in result.stderr
    failed = [row for row in read_csv(tmp_path / "checks.csv") if row["ok"] == "False"]
    assert [row["check"] for row in failed] == ["expect params"]


def test_a_custom_model_by_target(tmp_path):
    """The documented spelling for a custom model: +targets.<label>.model._target_=<callable>."""
    result = run(tmp_path, "models=[]", "+targets.mine.model._target_=torchvision.models.alexnet", "plot=false",
                 "d2l_table=false", "fold_r=[2]")
    assert result.returncode == 0, result.stderr[-3000:]
    totals = {row["model"]: row for row in read_csv(tmp_path / "comparison.csv")}
    assert totals["mine"]["params"] == "61100840" and totals["mine"]["input_shape"] == "(1,3,224,224)"
    assert (tmp_path / "mine_fold.md").exists()


@pytest.mark.parametrize(
    "override, param",
    [
        ("fold_order=bad", "fold_order"),
        ("fold_r=[0]", "fold_r"),
        ("fold_r=[2,abc]", "fold_r"),
        ("fold_compare_r=0", "fold_compare_r"),
        ("models=[resnet51]", "models"),
        ("input_shape=[1,0,3]", "input_shape"),
        ("+expect.resnet50.parms=3", "expect.resnet50"),
        ("+targets.mine.model._target_=torchvision.models.no_such_model", "targets.mine.model._target_"),
        ("+targets.mine.input_shape=[1,3,8,8]", "targets.mine.model"),
        ("targets.motivating_conv.input_shape=[1,3,32,32]", "input_shape"),
    ],
)
def test_a_bad_override_exits_2_with_one_line_and_writes_nothing(tmp_path, override, param):
    result = run(tmp_path, "models=[resnet18]", "input_shape=[1,3,32,32]", override)
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("count: error: ") and f"{param}=" in lines[0], lines
    assert outputs(tmp_path) == []


def test_app_rejects_unknown_keys(tmp_path):
    result = run(tmp_path, "modles=[resnet18]")
    assert result.returncode != 0 and "modles" in result.stderr


@pytest.mark.parametrize(
    "fields, param",
    [
        ({"models": None}, "models"),
        ({"models": ["resnet51"]}, "models"),
        ({"models": ["vit_b_16_no"], "published": True}, "models"),
        ({"targets": 3}, "targets"),
        ({"targets": {"a": 3}}, "targets.a"),
        ({"targets": {"a": {"model": {"in_channels": 3}}}}, "targets.a.model"),
        ({"targets": {"a": {"model": {"_target_": "torch.nn.ReLU"}, "input_shape": [0]}}}, "targets.a.input_shape"),
        ({"expect": {"a": 3}}, "expect.a"),
        ({"expect": {"a": {"params": 2.5}}}, "expect.a.params"),
        ({"fold_r": 2}, "fold_r"),
        ({"fold_r": []}, "fold_r"),
        ({"fold_r": ["2y"]}, "fold_r"),
        ({"fold_order": "c rh"}, "fold_order"),
        ({"fold_compare_r": -1}, "fold_compare_r"),
        ({"plot": "yes"}, "plot"),
        ({"input_shape": [[1, 2], [3, 4]]}, "input_shape"),
    ],
)
def test_experiment_config_is_validated_in_process(fields, param):
    from foldconv.errors import FoldError
    from foldconv.experiments.counting import CountExperiment

    with pytest.raises(FoldError) as info:
        CountExperiment(**fields)
    assert info.value.param == param and str(info.value).startswith(f"{param}="), str(info.value)


def test_a_target_that_builds_no_module_is_named(tmp_path):
    from foldconv.errors import FoldError
    from foldconv.experiments.counting import CountExperiment, run_count

    exp = CountExperiment(models=[], targets={"t": {"model": {"_target_": "builtins.dict"}}})
    with pytest.raises(FoldError, match=r"^targets\.t\.model\._target_='builtins\.dict': built a dict"):
        run_count(exp, tmp_path)
    assert outputs(tmp_path) == []
