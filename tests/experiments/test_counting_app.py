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
        assert name == "index.md" or name.startswith(".") or f"[{name}]({name}): " in index, name  # .complete.json: the run's record


def test_app_exits_1_when_a_check_fails(tmp_path):
    result = run(tmp_path, "models=[resnet18]", "input_shape=[1,3,32,32]", "~targets", "+expect.resnet18.params=1",
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


def test_the_fold_view_says_why_activations_rise(tmp_path):
    """Folding keeps every layer's output; the rise is the layout layers' writes and the in-place layers that the
    folded model runs out of place."""
    from foldconv.experiments.counting import CountJob, run_count_jobs
    from foldconv.models import meta_model

    run = run_count_jobs([CountJob("resnet18", meta_model("resnet18"), (1, 3, 64, 64))], tmp_path, fold_rs=(2,),
                         plot=False, check_flop_counter=False)
    assert run.ok
    rows = {row["quantity"]: row for row in read_csv(tmp_path / "resnet18_fold_model.csv")}
    elements = rows["activation_elements"]
    rise = int(elements["folded"]) - int(elements["original"])
    # Independent of the note: the layout layers, each counted as its output written twice (copy + reshape), and
    # the outputs of torchvision's in-place ReLUs and `+=`, which the folded model writes
    from foldconv.surgery import compare_model_fold

    cmp = compare_model_fold(meta_model("resnet18"), (1, 3, 64, 64), r=2)
    layout = [layer for layer in cmp.folded.layers if layer.type in ("DepthToSpace", "SpaceToDepth")]
    written = 2 * sum(layer.output_elements for layer in layout)
    assert len(layout) == len(cmp.report.layout_ops) and 0 < written < rise
    assert elements["note"].startswith(f"+{rise:,} = {written:,} written by the {len(layout)} DepthToSpace/SpaceToDepth layer(s)")
    assert rows["params"]["note"] == "" and rows["macs"]["equal"] == "True"
    assert "DepthToSpace" in (tmp_path / "resnet18_fold_model.md").read_text()
    # where both appear, the title and the note give the same number of layout layers, and say it is r's
    title = (tmp_path / "resnet18_fold_model.md").read_text().splitlines()[0]
    assert f"with r=2, which adds {len(layout)} DepthToSpace/SpaceToDepth layer(s) (both counts are for r=2" in title, title


def test_tilde_clears_the_default_targets_and_expectations(tmp_path):
    """`expect={}` merges into the defaults (Hydra); `~expect` / `~targets` is the documented spelling that clears."""
    result = run(tmp_path, "models=[resnet18]", "input_shape=[1,3,32,32]", "~targets", "~expect", "plot=false",
                 "d2l_table=false", "fold_r=[2]", "fold_compare_r=null", "check_flop_counter=false")
    assert result.returncode == 0, result.stderr[-3000:]
    assert [row["model"] for row in read_csv(tmp_path / "comparison.csv")] == ["resnet18"]
    assert not [row for row in read_csv(tmp_path / "checks.csv") if row["check"].startswith("expect")]
    assert "note: expect" not in result.stdout
    merged = run(tmp_path / "merged", "models=[resnet18]", "expect={}", "--cfg", "job")
    assert merged.returncode == 0 and "resnet50:" in merged.stdout  # the merge this spelling avoids


def test_a_rerun_in_the_same_dir_recomputes_nothing(tmp_path, monkeypatch):
    """Each model is saved as it finishes (models.csv); a rerun skips the finished ones, a killed run resumes."""
    import torch

    from foldconv.errors import FoldError
    from foldconv.experiments import counting

    def jobs():
        return [counting.CountJob(f"c{n}", torch.nn.Conv2d(4, n, 3), (1, 4, 8, 8), expect={"params": n * 37}) for n in (2, 3, 5)]

    calls, real = [], counting._measure

    def conclude(run):  # the app's end: the skeleton writes checks.csv and index.md
        from foldconv.experiments.app import conclude as skeleton

        return skeleton(counting.count_result(run), tmp_path)

    def measure(job, *args):
        calls.append(job.label)
        if job.label == "c3" and len(calls) == 2:
            raise KeyboardInterrupt  # killed during the second model
        return real(job, *args)

    monkeypatch.setattr(counting, "_measure", measure)
    kw = dict(fold_rs=(2,), plot=False)
    with pytest.raises(KeyboardInterrupt):
        counting.run_count_jobs(jobs(), tmp_path, **kw)
    assert (tmp_path / "c2_total.csv").exists() and [r["model"] for r in read_csv(tmp_path / "models.csv")] == ["c2"]
    lines = []
    first = counting.run_count_jobs(jobs(), tmp_path, log=lines.append, **kw)  # resumes: c2 not recounted
    assert calls == ["c2", "c3", "c3", "c5"] and first.ok and first.resumed == ("c2",)
    assert lines and lines[0].startswith("3 models (1 already counted in ") and "for the 2 to count" in lines[0]
    conclude(first)
    checks = read_csv(tmp_path / "checks.csv")
    again = counting.run_count_jobs(jobs(), tmp_path, log=lines.append, **kw)
    conclude(again)
    assert calls == ["c2", "c3", "c3", "c5"], "a complete run recomputes nothing"
    assert again.ok and again.reports == () and again.resumed == ("c2", "c3", "c5") and "nothing left" in lines[-1]
    assert read_csv(tmp_path / "checks.csv") == checks and len(checks) == 3 * 5
    assert [r["model"] for r in read_csv(tmp_path / "comparison.csv")] == ["c2", "c3", "c5"]
    assert read_csv(tmp_path / "comparison.csv")[0]["input_shape"] == "(1,4,8,8)"
    with pytest.raises(FoldError, match=r"^out_dir=.*different config"):
        counting.run_count_jobs(jobs(), tmp_path, fold_rs=(4,), plot=False)


def test_format_json_prints_a_document_a_program_can_parse(tmp_path):
    """`foldconv count format=json | jq`: stdout is the JSON document alone; where it was written goes to stderr."""
    import json

    result = run(tmp_path, "models=[resnet18]", "input_shape=[1,3,32,32]", "format=json")
    assert result.returncode == 0, result.stderr[-3000:]
    document = json.loads(result.stdout)
    assert document["models"][0]["totals"]["params"] == 11689512
    assert f"written to {tmp_path}" in result.stderr


def test_a_shape_without_its_batch_axis_is_named_as_the_input_shapes_error_and_leaves_no_record(tmp_path):
    from foldconv.errors import FoldError
    from foldconv.experiments.counting import CountExperiment, run_count

    e = CountExperiment(model="resnet18", input_shape=[3, 32, 32], plot=False, d2l_table=False, fold_compare_r=None)
    with pytest.raises(FoldError) as info:
        run_count(e, tmp_path)
    assert info.value.param == "input_shape" and "batch axis" in str(info.value) and "did you mean [1, 3, 32, 32]?" in str(info.value)
    assert "ResNet cannot run" not in str(info.value)  # not the model's fault
    assert not (tmp_path / "models.csv").exists() and not (tmp_path / "models.config.json").exists()  # a rerun is not blocked
    with pytest.raises(FoldError) as wrong_channels:  # a shape the batch axis does not explain still blames nothing else
        run_count(CountExperiment(model="resnet18", input_shape=[1, 4, 32, 32], plot=False, d2l_table=False), tmp_path)
    assert "did you mean" not in str(wrong_channels.value)
    with pytest.raises(FoldError) as unbatched:  # torch runs ESPCN's Conv2d on [1, 12, 12] unbatched: caught before it counts
        run_count(CountExperiment(model="espcn", input_shape=[1, 12, 12], plot=False, d2l_table=False, fold_compare_r=None), tmp_path)
    assert unbatched.value.param == "input_shape" and "did you mean [1, 1, 12, 12]?" in str(unbatched.value), str(unbatched.value)


def test_notes_are_only_about_what_ran_and_a_likely_typo_in_expect(tmp_path):
    import torch

    from foldconv.experiments.counting import CountJob, count_result, run_count_jobs

    run = run_count_jobs([CountJob("tiny", torch.nn.Conv2d(4, 2, 3), (1, 4, 8, 8))], tmp_path, fold_rs=(2,), plot=False)
    defaults = {"resnet50": {"params": 25557032}, "motivating_conv": {"params": 590080}}  # models `model=` replaced
    assert "note" not in count_result(run, expect=defaults).text
    text = count_result(run, expect={**defaults, "tinny": {"params": 74}}).text
    assert "note: expect.tinny names no counted model (did you mean tiny?): not checked" in text and "resnet50" not in text


def test_a_model_without_a_conv_says_why_it_has_no_fold_view(tmp_path):
    import torch

    from foldconv.experiments.counting import CountJob, count_result, run_count_jobs

    gen = torch.nn.Sequential(torch.nn.ConvTranspose2d(8, 4, 4, stride=2, padding=1), torch.nn.ReLU())
    run = run_count_jobs([CountJob("gen", gen, (1, 8, 4, 4))], tmp_path / "a", fold_rs=(2,), plot=False)
    text = count_result(run).text
    assert "note: gen has no Conv1d/2d/3d layer, so no fold view" in text and "ConvTranspose2d" in text
    assert not (tmp_path / "a" / "gen_fold.md").exists()
    run = run_count_jobs([CountJob("conv", torch.nn.Conv2d(4, 2, 3), (1, 4, 8, 8))], tmp_path / "b", fold_rs=(2,), plot=False)
    assert "no fold view" not in count_result(run).text


def test_the_fold_check_and_table_name_the_convs_they_leave_out(tmp_path):
    import torch

    from foldconv.experiments.counting import CountJob, run_count_jobs

    net = torch.nn.Sequential(torch.nn.Conv2d(4, 4, 3, padding=1), torch.nn.Conv2d(4, 4, 3, padding=2, dilation=2))
    run = run_count_jobs([CountJob("net", net, (1, 4, 8, 8))], tmp_path, fold_rs=(2,), fold_compare_r=2, plot=False)
    (check,) = [c for c in run.checks if "keeps params and macs" in c.name]
    assert "(the 1 of 2 convs whose fold is cost-neutral)" in check.name  # the dilated conv's fold changes its costs
    assert "the other 1 are left as they are" in (tmp_path / "net_fold_model.md").read_text()
