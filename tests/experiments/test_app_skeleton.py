"""The one app skeleton (foldconv.experiments.app): config -> run -> checks -> write. One Check type, checks.{csv,md}
and index.md written by the skeleton, ClaimFailed naming the failed checks, the success line."""
from __future__ import annotations

import pytest

from foldconv.errors import FoldError
from foldconv.experiments.app import AppResult, Check, ClaimFailed, conclude, parse_r
from foldconv.experiments.io import read_csv


def result(*checks: Check, files=None) -> AppResult:
    return AppResult("Demo", "the answer", checks, {"table.md": "a table"} if files is None else files, "what it prints")


def test_a_run_whose_checks_hold_writes_them_and_its_index(tmp_path):
    (tmp_path / "table.md").write_text("# t")
    line = conclude(result(Check.equal("sum", 4, 2 + 2, subject="arithmetic", claim="X-1"), Check("holds", True)), tmp_path)
    assert line == f"what it prints\n\nwritten to {tmp_path}"
    rows = read_csv(tmp_path / "checks.csv")
    assert [(r["subject"], r["check"], r["expected"], r["observed"], r["ok"], r["claim"]) for r in rows] == [
        ("arithmetic", "sum", "4", "4", "True", "X-1"), ("", "holds", "", "", "True", "")]
    assert "detail" not in rows[0]  # a column empty in every row is left out
    index = (tmp_path / "index.md").read_text().splitlines()
    assert index[:3] == ["# Demo", "", "the answer; all 2 checks hold."]
    assert "- [table.md](table.md): a table" in index and any(line.startswith("- [checks.md](checks.md): ") for line in index)


def test_a_failed_check_writes_everything_then_names_it(tmp_path):
    checks = (Check.equal("sum", 5, 2 + 2, subject="arithmetic"), Check("rewrite verified", False, subject="espcn", detail="differs"),
              Check("fine", True))
    with pytest.raises(ClaimFailed) as info:
        conclude(result(*checks), tmp_path)
    assert str(info.value).startswith("2 of 3 check(s) failed: arithmetic: sum (expected 5, observed 4); espcn: rewrite verified (differs)")
    assert [r["ok"] for r in read_csv(tmp_path / "checks.csv")] == ["False", "False", "True"]
    assert "2 of 3 checks FAILED (checks.md)" in (tmp_path / "index.md").read_text()


def test_a_run_without_checks_and_one_that_writes_its_own_index(tmp_path):
    assert conclude(AppResult("Demo", "nothing to check"), tmp_path).startswith("nothing to check\n")
    assert not (tmp_path / "checks.csv").exists() and (tmp_path / "index.md").exists()
    own = tmp_path / "own"
    own.mkdir()
    (own / "index.md").write_text("mine")
    conclude(AppResult("Demo", "x", files=None), own)
    assert (own / "index.md").read_text() == "mine"


def test_check_and_result_refuse_what_they_are_not():
    with pytest.raises(FoldError, match="ok='yes'"):
        Check("x", "yes")  # type: ignore[arg-type]
    with pytest.raises(FoldError, match="result='str'"):
        conclude("done", ".")  # type: ignore[arg-type]
    assert not Check.equal("x", [1], (1,)) and bool(Check.equal("x", (1,), (1,)))


def test_parse_r_is_the_apps_fold_factor_syntax():
    assert parse_r("2x1x1") == (2, 1, 1) and parse_r(4) == 4 and parse_r([2, 1]) == (2, 1)
    with pytest.raises(FoldError, match="r="):
        parse_r("2y")
