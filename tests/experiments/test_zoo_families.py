"""The zoo's fast tier: one timm model per family, measured at its default input size and held
to its committed figures; plus the zoo app's pure parts.

The tier and its figures live in tests/data/timm_fast_tier.json: written by the zoo app (``fast_tier.json``)
from the last full run, it holds, for every timm family, the quickest model to measure among those built on meta
in under a second (summary.fast_tier), with its statuses (params exact, MACs = FlopCounterMode, RF analysed,
analytic = empirical) and its exact params and MACs. Each model is a test of its own (marked ``zoo``: `make test`
runs them, spread over the workers; `make check`, the inner loop, leaves them out): a model that lost a status,
or whose params or MACs changed, fails. Coverage cannot drop without one of them failing. After a full run
that improves on it, copy that run's fast_tier.json over the committed one (paper_notes/zoo.md, section 3).
"""
from __future__ import annotations

import json
import os
from collections import Counter

import pytest
from hypothesis import given
from hypothesis import strategies as st

from foldconv.errors import FoldError
from helpers import ROOT

FAST_TIER = ROOT / "tests" / "data" / "timm_fast_tier.json"
COMMITTED = ROOT / "tests" / "data" / "timm_coverage.json"
TIER = json.loads(FAST_TIER.read_text())


@pytest.mark.zoo
@pytest.mark.parametrize("name", sorted(TIER["models"]))
def test_each_timm_family_keeps_its_committed_figures(name):
    pytest.importorskip("timm")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from foldconv.experiments.zoo.measure import measure_model
    from foldconv.experiments.zoo.summary import regressions

    committed = TIER["models"][name]
    row = measure_model("timm", name, check_max_macs=TIER["check_max_macs"], time_limit_s=TIER["time_limit_s"]).as_row()
    assert row["build"] == "meta", row  # the tier is chosen among meta builds
    assert not regressions({name: committed}, [row]), row
    assert row["params"] == committed["params"] == row["numel"]
    if committed["macs"] is not None:  # MACs equal FlopCounterMode's there, and must stay the same
        assert row["macs"] == committed["macs"]
    assert (row["rf_status"] in ("exact", "inexact")) != bool(row["rf_blocker"]), row


def test_the_committed_figures_were_made_with_the_installed_timm():
    """Models and their figures change between timm releases: on another timm the tier fails here, saying how to
    re-baseline, rather than skipping (a skipped tier would hold nothing)."""
    timm = pytest.importorskip("timm")
    assert timm.__version__ == TIER["timm"], (
        f"tests/data/timm_fast_tier.json was committed with timm {TIER['timm']}, this is timm {timm.__version__}: pin "
        f"timm=={TIER['timm']} in constraints.txt, or re-baseline: run the whole timm zoo (paper_notes/zoo.md, section 3) "
        "and copy its fast_tier.json and coverage.json over tests/data/timm_fast_tier.json and tests/data/timm_coverage.json")


def test_the_fast_tier_holds_every_timm_family_once_and_its_coverage_is_that_of_its_models():
    """The committed tier against the committed whole-zoo summary: every family is in it (one model each) or
    named as left out with why; the tier's figures are those of its models, all from the same run."""
    from foldconv.experiments.zoo.summary import COVERAGE_KEYS

    zoo = json.loads(COMMITTED.read_text())
    families = {m["family"] for m in zoo["models"].values()}
    tier_families = Counter(m["family"] for m in TIER["models"].values())
    assert max(tier_families.values()) == 1
    assert set(tier_families) | set(TIER["excluded_families"]) == families
    assert not set(tier_families) & set(TIER["excluded_families"])
    for name, status in TIER["models"].items():  # the same run: the same statuses as the whole-zoo summary
        assert zoo["models"][name] == {k: status[k] for k in zoo["models"][name]}, name
    models = TIER["models"].values()
    c = TIER["coverage"]
    assert c["models"] == len(TIER["models"])
    assert c["params_exact"] == sum(m["params_ok"] for m in models)
    assert c["macs_exact"] == sum(m["macs_ok"] for m in models) == sum(m["macs"] is not None for m in models)
    assert c["rf_analysed"] == sum(m["rf_analysed"] for m in models)
    assert c["check_ok"] == sum(m["check_ok"] is True for m in models)
    assert c["checked"] == sum(m["check_ok"] is not None for m in models)  # None: not checked, never a failure
    assert all(c[k] is None or 0 <= c[k] <= 100 for k in COVERAGE_KEYS)
    assert (TIER["zoo"], TIER["torch"], TIER["timm"]) == (zoo["zoo"], zoo["torch"], zoo["timm"])


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
