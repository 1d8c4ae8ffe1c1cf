"""The README's Python example runs and prints what the README says it prints."""
from __future__ import annotations

import contextlib
import io
import re
from pathlib import Path

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


def test_every_readme_python_block_runs_and_prints_its_comments():
    """Each ``print(...)  # value`` line of every README block prints ``value`` (explanatory comments after a ';')."""
    text = (ROOT / "README.md").read_text()
    blocks = _python_blocks(text)
    assert len(blocks) >= 3
    for block in blocks:
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            exec(compile(block, "README.md", "exec"), {})
        printed = iter(out.getvalue().splitlines())
        for line in block.splitlines():
            if not line.startswith("print("):
                continue
            shown = next(printed)
            if "#" in line:
                claim = line.split("#", 1)[1].split(";")[0].split(":")[0].strip()
                if claim.startswith(("(", "True", "False", "equivalent")):
                    assert shown.startswith(claim), f"README says {claim!r}, the code prints {shown!r}"
