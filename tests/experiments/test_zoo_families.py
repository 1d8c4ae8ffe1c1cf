"""The zoo's fast tier (issue 12, item 5): one timm model per family, measured at its default input size, and
the coverage regression check against the last committed summary; plus the zoo app's pure parts.

The tier and its committed figures live in paper_notes/zoo/timm_fast_tier.json (the cheapest model of each
family in the last full run that builds on meta in under a second: summary.fast_tier). A percentage below
the committed one, or a model that lost a status it had (params exact, MACs = FlopCounterMode, RF analysed,
analytic = empirical), fails. After an improvement, rewrite the committed figures with
``FOLDCONV_ZOO_UPDATE=1 pytest tests/experiments/test_zoo_families.py -k fast_tier`` and commit them.
"""
from __future__ import annotations

import json
import os

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foldconv.errors import FoldError
from helpers import ROOT

FAST_TIER = ROOT / "paper_notes" / "zoo" / "timm_fast_tier.json"


@pytest.fixture(scope="module")
def tier_rows():
    pytest.importorskip("timm")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from foldconv.experiments.zoo.measure import measure_model

    committed = json.loads(FAST_TIER.read_text())
    rows = [measure_model("timm", m, check_max_macs=committed["check_max_macs"], time_limit_s=120).as_row() for m in committed["models"]]
    return committed, rows


def test_fast_tier_coverage_does_not_drop_below_the_committed_summary(tier_rows):
    from foldconv.experiments.zoo.summary import COVERAGE_KEYS, coverage, coverage_record, regressions

    committed, rows = tier_rows
    if os.environ.get("FOLDCONV_ZOO_UPDATE"):
        record = {**committed, **coverage_record(rows, zoo="timm")}  # keeps the tier's settings and its excluded families
        FAST_TIER.write_text(json.dumps(record, indent=1) + "\n")
        pytest.skip("rewrote the committed fast-tier figures")
    now = coverage(rows).percentages()
    dropped = {k: (committed["coverage"][k], now[k]) for k in COVERAGE_KEYS
               if committed["coverage"][k] is not None and (now[k] is None or now[k] < committed["coverage"][k])}
    assert not dropped, f"coverage dropped (committed, now): {dropped}"
    assert not regressions(committed["models"], rows)
    families = [r["family"] for r in rows]
    assert len(set(families)) == len(families) == len(committed["models"])  # one model per family


def test_fast_tier_rows_are_consistent(tier_rows):
    committed, rows = tier_rows
    for r in rows:
        assert r["build"] == "meta", r  # the tier is chosen among meta builds
        if r["params_ok"]:
            assert r["params"] == r["numel"]
        assert (r["rf_status"] in ("exact", "inexact")) != bool(r["rf_blocker"]), r


@given(st.lists(st.text(min_size=1, max_size=4), unique=True, max_size=30), st.integers(1, 7))
def test_shards_partition_the_models_and_differ_by_at_most_one(names, count):
    from foldconv.experiments.zoo.run import shard_of

    shards = [shard_of(names, index=k, count=count) for k in range(count)]
    assert sorted(sum(shards, [])) == sorted(names)
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("index, count", [(2, 2), (-1, 2), (0, 0), (True, 2)])
def test_bad_shards_are_fold_errors(index, count):
    from foldconv.experiments.zoo.run import shard_of

    with pytest.raises(FoldError, match="shard"):
        shard_of(["a"], index=index, count=count)


def test_rf_blockers_name_the_op_or_the_step():
    from foldconv.analysis.receptive_field import UnsupportedOpError
    from foldconv.experiments.zoo.measure import rf_blocker

    no_rule = UnsupportedOpError("model='M': op='roll' (node 'r', call_function roll) has no receptive-field rule; pass", param="model", value="roll")
    trace = UnsupportedOpError("model='M': torch.fx cannot trace it (TraceError: symbolically traced variables cannot be used as inputs to control flow); pass fallback", param="model", value="M")
    failed = UnsupportedOpError("model='M': op='einsum' (node 'e'): its receptive-field rule failed (ValueError: x); pass", param="model", value="einsum")
    assert rf_blocker(no_rule) == "roll"
    assert rf_blocker(trace) == "fx trace: TraceError: symbolically traced variables cannot be used as inputs to control flow"
    assert rf_blocker(failed) == "einsum (rule failed)"


def test_coverage_and_blockers_count_models_not_rows_of_ops():
    from foldconv.experiments.zoo.summary import blockers, coverage

    rows = [
        {"model": "a", "build": "meta", "params": "1", "params_ok": "True", "macs_ok": "True", "rf_status": "exact", "check": "ok", "unsupported_ops": "", "errors": ""},
        {"model": "b", "build": "meta", "params": "1", "params_ok": "True", "macs_ok": "False", "macs_diff_ops": "mm", "rf_status": "unsupported",
         "rf_blocker": "roll", "check": "skipped", "unsupported_ops": "eye", "errors": ""},
        {"model": "c", "build": "cpu", "params": "1", "params_ok": "False", "macs_ok": "True", "rf_status": "unsupported", "rf_blocker": "roll",
         "check": "mismatch", "unsupported_ops": "eye", "errors": ""},
        {"model": "d", "build": "failed", "errors": "build: RuntimeError: no"},
    ]
    c = coverage(rows)
    assert (c.models, c.built, c.built_on_meta, c.params_exact, c.macs_exact, c.rf_analysed, c.checked, c.check_ok) == (4, 3, 2, 2, 2, 1, 2, 1)
    assert (c.built_pct, c.params_exact_pct, c.rf_analysed_pct, c.check_ok_pct) == (75.0, 66.67, 33.33, 50.0)
    ranked = blockers(rows)
    assert ranked["rf"] == [("roll", 2, "b")]
    assert ranked["count_unsupported"] == [("eye", 2, "b")]
    assert ranked["macs_differ"] == [("mm", 1, "b")]
    assert ranked["build"][0][1:] == (1, "c") or ranked["build"][0][1:] == (1, "d")
    assert [w for w, n, m in ranked["check"]] == ["mismatch"]


def test_zoo_figures_text_fits(monkeypatch, tmp_path):
    from test_png_text_fits import text_problems

    from foldconv.experiments.zoo import summary

    seen = []

    def check(fig, path, dpi=120):
        problems = text_problems(fig)
        assert not problems, f"{path}: " + "; ".join(problems)
        seen.append(path.name)
        return path

    monkeypatch.setattr(summary, "save_figure", check)
    rows = [{"model": f"m{k}", "build": "meta", "params": "1", "params_ok": "True", "macs": str(100 + (k % 3)), "flop_counter_macs": "100",
             "macs_ok": str(k % 3 == 0), "rf_status": "exact" if k % 2 else "unsupported", "check": "ok" if k % 4 == 1 else "skipped",
             "t_build": "0.1", "t_count": str(0.01 * (k + 1)), "t_rf": "0.5", "t_check": "2" if k % 4 == 1 else ""} for k in range(40)]
    summary.plot_zoo(rows, tmp_path, zoo="timm")
    assert seen == ["coverage.png", "macs_ratio.png", "time.png"]
