"""paper_notes/claims.md and the tests agree: every claim has a marked test, every marked claim is listed, and
every claim's "where" column points at a note and section that exist (and that name the claim, where the note
names it at all)."""
from __future__ import annotations

import re
from pathlib import Path

from conftest import CLAIMS_FILE, registered_claims
from helpers import ROOT

MARK = re.compile(r"""mark\.claim\(\s*((?:["'][A-Z][A-Z0-9]*-\d+[a-z]?["']\s*,?\s*)+)\)""")
ID = re.compile(r"""["']([A-Z][A-Z0-9]*-\d+[a-z]?)["']""")
ROW = re.compile(r"^\|\s*([A-Z][A-Z0-9]*-\d+[a-z]?)\s*\|.*\|\s*([^|]*?)\s*\|\s*$", re.M)
REF = re.compile(r"(?:(?P<file>[\w./-]+\.md)\s*)?(?:§\s*(?P<first>\d+)(?:\s*[-–]\s*(?P<last>\d+))?)?")
DOCSTRING = re.compile(r"(?P<module>[\w.]+) docstring")
SECTION = re.compile(r"^## (\d+)\.", re.M)
NOTES = ROOT / "paper_notes"


def claims_with_tests() -> set:
    found = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        code = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        for group in MARK.findall(code):
            found.update(ID.findall(group))
    return found


def where_column(text: str) -> dict:
    """{claim ID: its "where" cell} for every claim row of claims.md."""
    return dict(ROW.findall(text))


def sections(path: Path) -> dict:
    """{N: text of the section headed "## N. ..."} of a note."""
    text = path.read_text()
    heads = list(SECTION.finditer(text))
    return {int(m.group(1)): text[m.start(): heads[i + 1].start() if i + 1 < len(heads) else len(text)] for i, m in enumerate(heads)}


def names_claim(text: str, claim: str) -> bool:
    """Whether ``text`` names ``claim``, alone ("RULE-3") or in a range ("RULE-1..7", "RULE-1-7")."""
    if re.search(rf"(?<![\w-]){re.escape(claim)}(?![\w])", text):
        return True
    prefix, number = claim.rsplit("-", 1)
    n = int(re.match(r"\d+", number).group())
    spans = re.findall(rf"(?<![\w-]){re.escape(prefix)}-(\d+)\s*(?:\.\.|–|-)\s*(?:{re.escape(prefix)}-)?(\d+)", text)
    return any(int(a) <= n <= int(b) for a, b in spans)


def where_problems(claim: str, where: str, notes: Path = NOTES, package: Path = ROOT / "foldconv") -> list:
    """What is wrong with one claim's "where" cell (empty when it points at notes and sections that exist)."""
    problems, cited, current = [], {}, None
    for part in (p.strip() for p in re.split(r"[;,]", where) if p.strip()):
        doc = DOCSTRING.fullmatch(part)
        if doc:
            stem = doc.group("module").split(".")[-1]
            if not any(package.rglob(f"{stem}.py")) and not (package / stem).is_dir():
                problems.append(f"{claim}: {part!r} names no module of foldconv")
            continue
        ref = REF.fullmatch(part)
        if not ref or not (ref.group("file") or ref.group("first")):
            problems.append(f"{claim}: cannot read {part!r} (write 'note.md §N', 'note.md §N-M' or 'module docstring')")
            continue
        current = ref.group("file") or current
        if current is None:
            problems.append(f"{claim}: {part!r} names a section but no note")
            continue
        path = notes / current
        if not path.is_file():
            problems.append(f"{claim}: {current} does not exist in {notes.name}/")
            continue
        numbered = sections(path)
        wanted = cited.setdefault(current, set())
        if ref.group("first"):
            first, last = int(ref.group("first")), int(ref.group("last") or ref.group("first"))
            missing = [n for n in range(first, last + 1) if n not in numbered]
            if missing:
                problems.append(f"{claim}: {current} has no section(s) §{missing} (it has §{sorted(numbered)})")
            wanted.update(n for n in range(first, last + 1) if n in numbered)
        else:
            wanted.update(numbered)
    if problems or not cited:
        return problems
    naming = {(f, n) for f in cited for n, text in sections(notes / f).items() if names_claim(text, claim)}
    if naming and not any((f, n) in naming for f, ns in cited.items() for n in ns):
        problems.append(f"{claim}: cited {where!r}, but the note names it in " + ", ".join(f"{f} §{n}" for f, n in sorted(naming)))
    return problems


def test_registry_is_not_empty():
    assert len(registered_claims()) >= 5


def test_every_claim_has_a_test():
    missing = sorted(registered_claims() - claims_with_tests())
    assert not missing, f"claims without a test marked @pytest.mark.claim(...): {missing}"


def test_every_marked_claim_is_registered():
    unknown = sorted(claims_with_tests() - registered_claims())
    assert not unknown, f"tests mark claims that paper_notes/claims.md does not list: {unknown}"


def test_every_claim_row_has_a_where_column():
    rows = where_column(CLAIMS_FILE.read_text())
    assert set(rows) == registered_claims(), sorted(registered_claims() ^ set(rows))
    assert all(rows.values()), [claim for claim, where in rows.items() if not where]


def test_where_column_points_at_existing_sections_that_name_the_claim():
    problems = [p for claim, where in where_column(CLAIMS_FILE.read_text()).items() for p in where_problems(claim, where)]
    assert not problems, "paper_notes/claims.md 'where' column:\n" + "\n".join(problems)


def test_where_check_can_fail(tmp_path):
    (tmp_path / "note.md").write_text("# Note\n\n## 1. Intro\n\ntext\n\n## 2. Rules (X-1..3)\n\nX-5 here.\n")
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "mod.py").write_text("")
    check = lambda claim, where: where_problems(claim, where, notes=tmp_path, package=package)  # noqa: E731
    assert check("X-2", "note.md §2") == check("X-5", "note.md §1-2") == check("Y-1", "note.md §1") == []
    assert check("X-1", "mod docstring") == check("X-5", "note.md §2; note.md §1") == []
    assert "names it in note.md §2" in check("X-2", "note.md §1")[0]
    assert "no section" in check("X-2", "note.md §3")[0]
    assert "does not exist" in check("X-2", "other.md §1")[0]
    assert "names no module" in check("X-2", "nomod docstring")[0]
    assert "cannot read" in check("X-2", "somewhere")[0]
    assert not names_claim("X-10 and X-1..3", "X-4") and names_claim("X-10 and X-1..3", "X-10")
