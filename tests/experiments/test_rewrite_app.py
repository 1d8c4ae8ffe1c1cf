"""The rewrite Hydra app end to end: YOLOv5's stem and ESPCN rewritten, verified, exported and timed (tiny
min_run_time) in a fresh interpreter, every file written and read back; the figures readable; a rewrite that is
not verified exits 1 with everything written; a bad override exits 2 with one line and writes nothing."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_png_text_fits import text_problems

from app_harness import run_in_process
from foldconv.experiments.io import read_csv
from foldconv.experiments.rewrite_plots import sites_figure, timings_figure
from helpers import ROOT

FILES = {f"{stem}.{ext}" for stem in ("sites", "models", "onnx", "timings", "checks") for ext in ("csv", "md")} | {
    "sites.png", "timings.png", "summary.md", "index.md"}


def written(path: Path) -> set:
    return {p.name for p in path.iterdir() if p.suffix in (".csv", ".md", ".png")} if path.exists() else set()


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("rewrite")
    proc = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "rewrite.py"), "models=[yolov5_stem,espcn]", "size=test", "min_run_time=0.01",
         "threads=1", f"hydra.run.dir={out}"], capture_output=True, text=True, cwd=ROOT, timeout=900)
    return out, proc


@pytest.mark.claim("REAL-6")
def test_the_app_writes_every_file_with_exact_site_verdicts(run):
    out, proc = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert written(out) == FILES
    sites = read_csv(out / "sites.csv")
    forward = [r for r in sites if r["step"] == "rewrite" and r["applied"] == "True"]
    assert {r["model"] for r in forward} == {"yolov5_stem", "espcn"}
    assert all(r["verdict"] == "equivalent" and r["exact"] == "True" for r in forward), forward
    focus = next(r for r in forward if r["model"] == "yolov5_stem")
    assert focus["pattern"] == "slice+cat+Conv2d (Focus)" and focus["after"] == "Conv2d(3->32, k=(6, 6), s=(2, 2), p=(2, 2))"
    assert focus["params before"] == focus["params after"] == "3456"
    assert not [k for k in focus if "ONNX" in k]  # the ops are the whole model's: onnx.md, not a site's row
    assert {r["model"] for r in sites if r["step"] == "round trip" and r["applied"] == "True"} == {"yolov5_stem", "espcn"}
    models = read_csv(out / "models.csv")
    assert len(models) == 4 and all(r["ok"] == "True" for r in models)
    onnx = {(r["model"], r["form"]): r for r in read_csv(out / "onnx.csv")}
    assert all(r["ok"] == "True" for r in onnx.values()) and len(onnx) == 4
    assert "ConvTranspose" in onnx["espcn", "rewritten"]["ops"] and "DepthToSpace" in onnx["espcn", "original"]["ops"]
    stem = onnx["yolov5_stem", "rewritten"]
    assert "-Concat" in stem["change vs original"] and "-Slice" in stem["change vs original"]
    assert "-Concat, -Slice x6: the own steps of site focus.conv.conv" in stem["why the ops changed"], stem["why the ops changed"]
    assert "end fit" not in stem["why the ops changed"]  # no space-to-depth site here: nothing about its Pad/Slice
    # the files themselves, with dynamic axes: each ran at another size too
    assert {p.name for p in out.glob("*.onnx")} == {f"{m}.{f}.onnx" for m in ("yolov5_stem", "espcn") for f in ("original", "rewritten")}
    assert all(r["dynamic"] == "True" and r["other sizes"] for r in onnx.values())
    timings = read_csv(out / "timings.csv")
    for model in ("yolov5_stem", "espcn"):
        forms = {r["form"]: r for r in timings if r["model"] == model}
        assert forms["original"]["speedup"] == "1.0"
        assert any(f.startswith("rewritten (") and r["verified"] == "True" for f, r in forms.items()), forms
        assert any(f.startswith("optimize: ") for f in forms)
        for r in forms.values():  # interval around the speedup, and "inconclusive" exactly when it holds 1.0
            if r["speedup low"] not in ("", "nan"):
                low, mid, high = float(r["speedup low"]), float(r["speedup"]), float(r["speedup high"])
                assert low <= mid <= high
                assert (r["inconclusive"] == "True") == (low <= 1.0 <= high), r
        assert all(r["machine"] for r in forms.values() if r["form"] != "optimize: not run")
    summary = (out / "summary.md").read_text()
    assert "yolov5_stem" in summary and "espcn" in summary and "FAILED" not in summary
    assert "sites.md" in (out / "index.md").read_text()
    checks = read_csv(out / "checks.csv")  # per model: the rewrite, its round trip, two ONNX forms
    assert len(checks) == 8 and all(r["ok"] == "True" for r in checks) and {r["subject"] for r in checks} == {"yolov5_stem", "espcn"}


def rows_of(out: Path, name: str) -> list:
    def value(key, v):
        if v in ("True", "False"):
            return v == "True"
        if key.startswith(("speedup", "median", "IQR")):
            return float(v) if v not in ("",) else float("nan")
        return int(v) if v.lstrip("-").isdigit() else v
    return [{k: value(k, v) for k, v in r.items()} for r in read_csv(out / name)]


def test_the_figures_are_readable(run):
    out, proc = run
    assert proc.returncode == 0, proc.stderr[-3000:]
    sites = rows_of(out, "sites.csv")
    timings = rows_of(out, "timings.csv")
    assert not text_problems(sites_figure(sites))
    assert not text_problems(timings_figure(timings, machine=str(timings[0]["machine"])))
    many = [dict(sites[0], location=f"layer{i}.conv") for i in range(30)]  # a model with many sites
    assert not text_problems(sites_figure(many))


@pytest.mark.claim("REAL-6")
def test_a_rewrite_that_is_not_verified_exits_1_with_outputs_written(tmp_path, monkeypatch, capsys):
    """Mutation check of the app: its rewrite is made wrong (one weight changed after the rewrite, the report then
    redone by the checker), and the app must notice."""
    import torch

    from foldconv import check_equivalence, surgery
    from foldconv.experiments import rewrite as app

    real = surgery.rewrite

    def broken(model, shape, rules, **kw):
        new, report = real(model, shape, rules, **kw)
        conv = next(m for m in new.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)))
        with torch.no_grad():
            conv.weight.view(-1)[0] += 1.0
        import dataclasses

        return new, dataclasses.replace(report, verification=check_equivalence(model, new, shape))

    class Surgery:
        def __getattr__(self, name):
            return broken if name == "rewrite" else getattr(surgery, name)

    monkeypatch.setattr(app, "_surgery", lambda: Surgery())
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process("rewrite", ["model=espcn", "size=test", "timing=false", "onnx=false", "round_trip=false"], capsys)
    assert code == 1 and "CLAIM FAILED: 1 of 1 check(s) failed: espcn: the rewrite is verified (" in err, err
    assert {"sites.csv", "models.csv", "summary.md", "index.md", "checks.csv"} <= written(tmp_path)
    assert "FAILED" in (tmp_path / "summary.md").read_text()


def test_rules_override_and_its_round_trip_restricted_to_the_sites_it_rewrote(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process("rewrite", ["model=yolov5_stem", "size=test", "rules=[strided_to_spd]", "timing=false"], capsys)
    assert code == 0, err
    rows = [(r["step"], r["rule"], r["location"], r["applied"]) for r in read_csv(tmp_path / "sites.csv")]
    # the only strided conv is down.conv (Focus's conv has stride 1); back: spd_to_strided at that site only
    assert rows == [("rewrite", "strided_to_spd", "down.conv", "True"), ("round trip", "spd_to_strided", "down.conv", "True")]
    assert written(tmp_path) == FILES - {"timings.csv", "timings.md", "timings.png"}
    assert "strided_to_spd: 1 of 1 site(s) applied" in out


def test_a_real_model_with_its_own_rule_list_round_trips(tmp_path, monkeypatch, capsys):
    """ESPCN's sub-pixel conv becomes a transposed conv and a periodic bias in a container at the site; the round trip
    of an explicit rule list finds the transposed conv inside it (it used to name the container: "names no site")."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process("rewrite", ["model=espcn", "rules=[subpixel_to_transposed]", "size=test", "timing=false", "onnx=false"], capsys)
    assert code == 0, err
    rows = [(r["step"], r["rule"], r["location"], r["applied"]) for r in read_csv(tmp_path / "sites.csv")]
    assert rows == [("rewrite", "subpixel_to_transposed", "subpixel.0", "True"), ("round trip", "transposed_to_subpixel", "subpixel.0.0", "True")]
    assert all(r["ok"] == "True" for r in read_csv(tmp_path / "checks.csv"))


def test_any_model_with_rules_of_its_own(tmp_path, monkeypatch, capsys):
    """model._target_=... (its --help offers it) and a torchvision name are rewritten like the real models; without
    rules, or without an input shape for a _target_, the request is refused in one line."""
    monkeypatch.chdir(tmp_path)
    code, out, err = run_in_process("rewrite", ["model._target_=torchvision.models.resnet18", "rules=[strided_to_spd]",
                                                "input_shape=[1,3,32,32]", "timing=false", "onnx=false"], capsys)
    assert code == 0, err
    assert "- resnet18 (1, 3, 32, 32): strided_to_spd:" in out and "back:" in out
    for overrides, named in ((["model=alexnet"], "rules=None: must be given for alexnet"),
                             (["model._target_=torchvision.models.alexnet", "rules=[strided_to_spd]"], "input_shape=None: must be given for alexnet")):
        code, _, err = run_in_process("rewrite", overrides, capsys)
        assert code == 2 and named in err, err


@pytest.mark.parametrize("overrides, named", [
    (["model=yolo"], "model='yolo'"),
    (["models=[espcn,resnet19]"], "models='resnet19'"),
    (["rules=[fold]"], "rules='fold'"),
    (["rules=[{fold_stage:3}]"], "rules.fold_stage=3"),
    (["model=all", "input_shape=[1,3,64,64]"], "input_shape="),
    (["input_shape=[1,3]"], "input_shape="),
    (["model=espcn", "input_shape=[1,32,32]", "timing=false"], "input_shape=[1, 32, 32]: must be a full tensor shape with the batch axis first; did you mean [1, 1, 32, 32]?"),
    (["size=huge"], "size='huge'"),
    (["forms=[fastest]"], "forms='fastest'"),
    (["min_run_time=0"], "min_run_time=0"),
    (["device=gpu7"], "device='gpu7'"),
    (["seed=-1"], "seed=-1"),
])
def test_bad_override_exits_2_with_one_line_and_no_outputs(tmp_path, monkeypatch, capsys, overrides, named):
    monkeypatch.chdir(tmp_path)
    code, _, err = run_in_process("rewrite", overrides, capsys)
    lines = err.strip().splitlines()
    assert code == 2 and len(lines) == 1 and lines[0].startswith("rewrite: error: ") and named in lines[0], err
    assert written(tmp_path) == set()
