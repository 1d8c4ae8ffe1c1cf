"""Every app's run directory holds what the docs promise: ``summary.md`` starting with the run's answer, and an
``index.md`` that lists it and lists no empty file (the Hydra log of an app that logged nothing).

Each app runs in this process (app_harness) on a small request; the apps' own tests check their contents.
"""
from __future__ import annotations

import pytest

from app_harness import run_in_process
from foldconv.experiments.records import MARKER

CUSTOM = ["model._target_=custom_model.make_net", "model.width=8"]
SMALL_SWEEP = ["plots=false", "progress=false", "grid.following=[relu]", "grid.dims=[1]", "isolate=false"]

APPS = [
    ("fold_conv", ["conv.in_channels=16", "conv.out_channels=2", "fold.r=2", "input_size=[5,5]", "timing=false", "picture=false"]),
    ("operators", ["example.r=2x1"]),
    ("sweep", ["fold.r=2", *SMALL_SWEEP]),
    ("count", [*CUSTOM, "input_shape=[1,3,32,32]", "plot=false", "d2l_table=false"]),
    ("receptive_field", [*CUSTOM, "input_shape=[1,3,32,32]", "check_size=16", "erf_samples=1", "fold.r=0"]),
    ("shift", [*CUSTOM, "ladder.enabled=false", "crop=32", "pairs=2", "images=[camera]", "max_shift=4", "shifts=[1]"]),
    ("rewrite", ["model=espcn", "size=test", "timing=false", "onnx=false", "round_trip=false"]),
    ("zoo", ["names=[test_resnet]", "check_max_macs=0", "progress=false", "plots=false"]),
]


def check_run_dir(out, answer_line: str) -> None:
    summary = (out / "summary.md").read_text().splitlines()
    assert summary[0].startswith("# ") and summary[1] == "" and summary[2].strip(), summary[:4]
    index = (out / "index.md").read_text()
    assert "- [summary.md](summary.md)" in index
    assert answer_line in index
    listed = [line.split("](", 1)[0][3:] for line in index.splitlines() if line.startswith("- [")]
    empty = [name for name in listed if (out / name).is_file() and not (out / name).stat().st_size]
    assert not empty, empty


@pytest.mark.parametrize("app, overrides", APPS, ids=[a for a, _ in APPS])
def test_every_app_writes_summary_and_index(app, overrides, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / f"{app}.log").write_text("")  # what Hydra leaves when the app logged nothing
    code, out, err = run_in_process(app, overrides, capsys)
    assert code == 0, err[-2000:]
    assert (tmp_path / MARKER).exists()
    index = (tmp_path / "index.md").read_text().splitlines()
    check_run_dir(tmp_path, index[2])
    summary = (tmp_path / "summary.md").read_text().splitlines()
    # the answer first, as index.md has it (an app that states the checks' verdict on a line of its own may leave it out)
    assert summary[2] == index[2] or (index[2].startswith(summary[2]) and len(summary[2]) > 20), (summary[2], index[2])


def test_aggregate_writes_summary_and_index(tmp_path, monkeypatch, capsys):
    from omegaconf import OmegaConf

    root = tmp_path / "multirun"
    root.mkdir()
    OmegaConf.save({"hydra": {"job": {"name": "sweep"}, "sweeper": {"_target_": "hydra._internal.core_plugins.basic_sweeper.BasicSweeper",
                                                                    "params": None},
                              "overrides": {"task": ["fold.r=2,3", *SMALL_SWEEP], "hydra": ["hydra.mode=MULTIRUN"]}}},
                   root / "multirun.yaml")
    for number, r in enumerate((2, 3)):
        job = root / str(number)
        job.mkdir()
        monkeypatch.chdir(job)
        assert run_in_process("sweep", [f"fold.r={r}", *SMALL_SWEEP], capsys)[0] == 0
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.chdir(out)
    code, _, err = run_in_process("aggregate", [f"input={root}", "plots=false"], capsys)
    assert code == 0, err[-2000:]
    index = (out / "index.md").read_text().splitlines()
    check_run_dir(out, index[2])
    assert (out / "summary.md").read_text().splitlines()[2] == index[2]


def test_an_empty_shard_claims_no_agreement(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process("sweep", ["fold.r=2", *SMALL_SWEEP, "shard.count=1000", "shard.index=999"], capsys)
    assert code == 0, err[-2000:]
    for text in (out, (tmp_path / "summary.md").read_text(), (tmp_path / "index.md").read_text()):
        assert "0 configurations: nothing was predicted or observed" in text
        answer = [line for line in text.splitlines() if line.startswith("0 configurations")][0]
        assert "agree" not in answer, answer  # no 'every prediction agrees' about nothing
