"""Every app that takes a model takes the same spellings and labels a model the same way (foldconv.models is the one
resolver): a torchvision name, timm:<name>, a registered architecture, a ``_target_`` node with arguments, and in
Python a module instance. The configs are parsed as Hydra composes them (no subprocess); one command per spelling
kind then runs end to end.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from torch import nn

import foldconv.experiments.cli  # noqa: F401  (registers every app's structured config)
from foldconv.errors import FoldError
from foldconv.experiments.app import CONFIG_DIR, instantiate
from foldconv.experiments.counting import CountExperiment
from foldconv.experiments.receptive_field import RFExperiment
from foldconv.experiments.rewrite import RewriteExperiment
from foldconv.experiments.shift import ShiftExperiment
from helpers import ROOT

HERE = Path(__file__).resolve().parent
TARGET = {"_target_": "custom_model.make_net", "width": 8}

#: (spelling in Python, the same on the command line, its label)
SPELLINGS = {
    "torchvision": ("resnet18", ["model=resnet18"], "resnet18"),
    "timm": ("timm:resnet18d", ["model=timm:resnet18d"], "resnet18d"),
    "architecture": ("yolov5_stem", ["model=yolov5_stem"], "yolov5_stem"),
    "target": (TARGET, ["model._target_=custom_model.make_net", "model.width=8"], "make_net"),
}


def labels_in_python(model) -> dict:
    """The label each app's config gives ``model`` (in every field that takes one)."""
    rules = {"rules": ["strided_to_spd"], "input_shape": [1, 3, 64, 64]}
    return {
        "count model=": list(CountExperiment(model=model).targets),
        "count models=": [s.label for s in CountExperiment(models=[model]).models],
        "count targets=": [t.model.label for t in CountExperiment(models=[], targets={"t": {"model": model}}).targets.values()],
        "rf model=": [RFExperiment(model=model).model.label],
        "shift model=": list(ShiftExperiment(model=model).labels),
        "shift models=": list(ShiftExperiment(models=[model]).labels),
        "rewrite model=": list(RewriteExperiment(model=model, **rules).names()),
        "rewrite models=": list(RewriteExperiment(models=[model], **rules).names()),
    }


def app_config(app: str, overrides) -> object:
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return instantiate(compose(config_name=app, overrides=list(overrides)))


def labels_from_the_command_line(overrides) -> dict:
    rewrite = ["rules=[strided_to_spd]", "input_shape=[1,3,64,64]"]
    return {
        "count": list(app_config("count", overrides).targets),
        "receptive_field": [app_config("receptive_field", overrides).model.label],
        "shift": list(app_config("shift", overrides).labels),
        "rewrite": list(app_config("rewrite", [*overrides, *rewrite]).names()),
    }


@pytest.fixture(autouse=True)
def custom_model_importable(monkeypatch):
    monkeypatch.syspath_prepend(str(HERE))


@pytest.mark.parametrize("kind", sorted(SPELLINGS))
def test_every_app_labels_a_spelling_the_same_way(kind):
    if kind == "timm":
        pytest.importorskip("timm")
    spelling, overrides, label = SPELLINGS[kind]
    seen = labels_in_python(spelling)
    assert seen == {k: [label] for k in seen}, seen
    assert labels_from_the_command_line(overrides) == {app: [label] for app in ("count", "receptive_field", "shift", "rewrite")}


def test_a_module_instance_is_a_spelling_in_python():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU())
    seen = labels_in_python(net)
    assert seen == {k: ["Sequential"] for k in seen}


def test_shift_compares_a_list_of_any_models_labelled_by_name():
    e = ShiftExperiment(models=["resnet18", "resnet18+spd", "timm:resnet18d" if _has_timm() else "alexnet", TARGET, "resnet18_blur"])
    assert e.labels == ("resnet18", "resnet18+spd", "resnet18d" if _has_timm() else "alexnet", "make_net", "resnet18_blur")
    assert not any(label in ("get_model", "create_model") for label in e.labels)
    with pytest.raises(FoldError, match="models='alexnet\\+spd': is compared with its model 'alexnet'"):
        ShiftExperiment(models=["alexnet+spd"])
    with pytest.raises(FoldError, match="distinct labels"):
        ShiftExperiment(models=["resnet18", {"_target_": "torchvision.models.resnet18"}])


def test_a_misspelt_model_is_the_same_error_in_every_app():
    errors = set()
    for make in (lambda m: CountExperiment(model=m), lambda m: RFExperiment(model=m), lambda m: ShiftExperiment(model=m),
                 lambda m: RewriteExperiment(model=m, rules=["strided_to_spd"])):
        with pytest.raises(FoldError) as info:
            make("resnet181")
        errors.add(str(info.value))
    assert errors == {"model='resnet181': is not a torchvision model or a registered architecture; did you mean resnet18, resnet101, resnet152?"}


def _has_timm() -> bool:
    try:
        import timm  # noqa: F401
    except ImportError:
        return False
    return True


def foldconv(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE)]), HF_HUB_OFFLINE="1")
    return subprocess.run([sys.executable, "-m", "foldconv", *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=600)


@pytest.mark.parametrize("kind, command, evidence", [
    ("torchvision", ["rf", "model=resnet18", "input_shape=[1,3,32,32]", "check=false", "fold.r=0"], "resnet18: last spatial layer"),
    ("timm", ["count", "model=timm:resnet18d", "input_shape=[1,3,32,32]", "plot=false", "d2l_table=false", "fold_compare_r=null"],
     "resnet18d"),
    # a real model with a rule list of its own: the round trip finds the transposed conv inside what the rule wrote
    ("architecture", ["rewrite", "model=espcn", "rules=[subpixel_to_transposed]", "size=test", "timing=false", "onnx=false"],
     "- espcn (1, 1, 12, 12): subpixel_to_transposed: 1 of 1 site(s) applied"),
    ("target", ["rewrite", "model._target_=custom_model.make_net", "model.width=8", "rules=[strided_to_spd]",
                "input_shape=[1,3,32,32]", "timing=false", "onnx=false"], "- make_net (1, 3, 32, 32): strided_to_spd: 1 of 1 site(s)"),
])
def test_one_command_per_spelling_kind_runs_end_to_end(tmp_path, kind, command, evidence):
    if kind == "timm":
        pytest.importorskip("timm")
    done = foldconv(*command, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert evidence in done.stdout, done.stdout
    if command[0] == "rewrite":
        assert "back: 1 site(s), verified" in done.stdout, done.stdout
    index = (tmp_path / "run" / "index.md").read_text()
    assert "checks" in index and "FAILED" not in index
