"""The one zoo runner (foldconv zoo) in process, on two small torchvision models: each row written as the model
finishes and a rerun resuming it, a different config refused, the gradient check at ``check_size``, and the published
figures of torchvision's weights checked."""
from __future__ import annotations

import pytest

from foldconv.errors import FoldError
from foldconv.experiments.io import read_csv
from foldconv.experiments.zoo import run as zoo_run
from foldconv.experiments.zoo.main import zoo_checks

NAMES = ["alexnet", "squeezenet1_1"]
SETTINGS = dict(names=NAMES, check_size=48, check_max_macs=10**9, time_limit_s=None, progress=None)


def test_rows_are_written_as_models_finish_a_rerun_resumes_and_another_config_is_refused(tmp_path, monkeypatch):
    real, measured = zoo_run.measure_model, []

    def killed_after_the_first(zoo, name, **kw):
        measured.append(name)
        if len(measured) == 2 and stop:
            raise KeyboardInterrupt("killed")
        return real(zoo, name, **kw)

    monkeypatch.setattr(zoo_run, "measure_model", killed_after_the_first)
    stop = True
    with pytest.raises(KeyboardInterrupt):
        zoo_run.run_zoo("torchvision", tmp_path, **SETTINGS)
    kept = read_csv(tmp_path / "results.csv")
    assert [r["model"] for r in kept] == measured[:1]  # the finished model is kept
    stop, measured[:] = False, []
    lines = []
    rows = zoo_run.run_zoo("torchvision", tmp_path, log=lines.append, **SETTINGS)
    assert measured == [n for n in NAMES if n != kept[0]["model"]] and sorted(r["model"] for r in rows) == NAMES
    assert lines == ["2 torchvision models (1 already in results.csv, resuming; 1 to run)"]
    by_name = {r["model"]: r for r in rows}
    squeeze = by_name["squeezenet1_1"]
    assert (squeeze["check_shape"], squeeze["check"], squeeze["published"]) == ("(1, 3, 48, 48)", "ok", "ok")
    assert by_name["alexnet"]["published"] == "ok" and by_name["alexnet"]["params_ok"] == "True"
    assert [(c.subject, c.claim, c.ok) for c in zoo_checks(rows) if c.subject == "squeezenet1_1"] == [
        ("squeezenet1_1", "RF-2", True), ("squeezenet1_1", "COUNT-2", True)]
    with pytest.raises(FoldError, match="different config"):
        zoo_run.run_zoo("torchvision", tmp_path, **{**SETTINGS, "check_size": 64})


def test_a_disagreement_or_a_published_figure_that_differs_is_a_failed_check():
    rows = [{"model": "a", "check": "mismatch", "check_shape": "(1, 3, 64, 64)", "published": "differs: params 1 vs published 2"},
            {"model": "b", "check": "unaffordable", "published": ""}]
    checks = zoo_checks(rows)
    assert [(c.subject, c.claim, c.ok) for c in checks] == [("a", "RF-2", False), ("a", "COUNT-2", False)]
    assert checks[1].detail == "differs: params 1 vs published 2"


def test_the_time_limit_counts_cpu_time_not_waiting():
    """A model's time limit is CPU time of the measuring process: busy work hits it, waiting (a loaded machine)
    does not."""
    import time

    from foldconv.experiments.zoo.measure import StageTimeout, time_limit

    with time_limit(0.05):
        time.sleep(0.2)
    with pytest.raises(StageTimeout, match="timeout after 0.05 s"):
        with time_limit(0.05):
            while True:
                sum(range(1000))


def test_a_model_whose_check_did_not_run_is_not_checked_not_a_failed_check():
    from foldconv.experiments.zoo.summary import coverage_record

    rows = [{"model": m, "build": "meta", "check": check} for m, check in (("a", "ok"), ("b", "mismatch"), ("c", "unaffordable"), ("d", ""))]
    record = coverage_record(rows, zoo="torchvision")
    assert {m: s["check_ok"] for m, s in record["models"].items()} == {"a": True, "b": False, "c": None, "d": None}
    assert (record["coverage"]["checked"], record["coverage"]["check_ok"]) == (2, 1)


def test_a_row_marks_an_output_that_reads_the_whole_input_as_global():
    import torch

    from foldconv.experiments.zoo.measure import Built, _rf_stage

    net = torch.nn.Sequential(torch.nn.Conv2d(1, 2, 3, stride=2, padding=1), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(),
                              torch.nn.Linear(2, 2))
    fields, _ = _rf_stage(Built("torchvision", "net", net, (1, 1, 16, 16), "meta"))
    # after the global pool, rf and jump describe no window: both carry the marker (a jump of 16 > 3 looked like one)
    assert fields["rf"] == "(17 (global), 17 (global))" and fields["jump"] == "(16 (global), 16 (global))", fields
    fields, _ = _rf_stage(Built("torchvision", "conv", torch.nn.Conv2d(1, 2, 3, stride=4), (1, 1, 16, 16), "meta"))
    assert fields["rf"] == "(3, 3)" and fields["jump"] == "(4, 4)"
