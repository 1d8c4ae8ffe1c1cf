"""The README's Python example runs and prints what the README says it prints."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_readme_example_runs_as_documented():
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Ten lines of Python\n\n```python\n(.*?)```", text, re.S).group(1)
    assert len([l for l in block.splitlines() if l.strip() and not l.startswith("#")]) <= 11
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(block, "README.md", "exec"), {})
    printed = out.getvalue().splitlines()
    documented = [m.group(1).strip() for m in re.finditer(r"#\s*(True|equivalent \(exact\).*|padding_mode=.*)$", block, re.M)]
    assert printed[0] == "True"
    assert printed[1] == documented[1]
    assert printed[2] == documented[2]


def _python_blocks(text: str):
    return re.findall(r"```python\n(.*?)```", text, re.S)


PAGES = ("README.md", "docs/tour.md", "docs/experiments.md", "docs/architecture.md", "docs/compatibility.md")


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_runs_and_prints_its_comments(page):
    """Each ``print(...)  # value`` line of every block of the README and docs/ prints ``value`` (explanatory
    comments after a ';')."""
    text = (ROOT / page).read_text()
    for block in _python_blocks(text):
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, page, "exec"), {})
        printed = iter(out.getvalue().splitlines())
        for line in block.splitlines():
            if not line.startswith("print("):
                continue
            shown = next(printed)
            if "#" in line:
                claim = line.split("#", 1)[1].split(";")[0].split(":")[0].strip()
                if claim.startswith(("(", "True", "False", "equivalent")):
                    assert shown.startswith(claim), f"{page} says {claim!r}, the code prints {shown!r}"


def test_the_tour_has_its_examples_and_the_readme_stays_a_front_page():
    assert len(_python_blocks((ROOT / "docs/tour.md").read_text())) >= 4
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 200
    for section in ("## Setup", "## Ten lines of Python", "## The apps", "## Reading order"):
        assert section in readme, section
    assert ".venv/bin/foldconv" in readme and "source .venv/bin/activate" in readme


def test_every_relative_link_of_the_readme_and_docs_resolves():
    for page in PAGES + tuple(str(p.relative_to(ROOT)) for p in sorted((ROOT / "paper_notes").glob("*.md"))):
        text = (ROOT / page).read_text()
        for target in re.findall(r"\]\(([^)#\s]+)", text):
            if target.startswith(("http://", "https://", "mailto:")):
                continue
            assert ((ROOT / page).parent / target).exists(), f"{page}: broken link {target}"

