"""Every claim in paper_notes/claims.md has at least one test marked with it, and vice versa."""
from __future__ import annotations

import re

from conftest import ROOT, registered_claims

MARK = re.compile(r"""mark\.claim\(\s*((?:["'][A-Z][A-Z0-9]*-\d+[a-z]?["']\s*,?\s*)+)\)""")
ID = re.compile(r"""["']([A-Z][A-Z0-9]*-\d+[a-z]?)["']""")


def claims_with_tests() -> set:
    found = set()
    for path in (ROOT / "tests").rglob("test_*.py"):
        for group in MARK.findall(path.read_text()):
            found.update(ID.findall(group))
    return found


def test_registry_is_not_empty():
    assert len(registered_claims()) >= 5


def test_every_claim_has_a_test():
    missing = sorted(registered_claims() - claims_with_tests())
    assert not missing, f"claims without a test marked @pytest.mark.claim(...): {missing}"


def test_every_marked_claim_is_registered():
    unknown = sorted(claims_with_tests() - registered_claims())
    assert not unknown, f"tests mark claims that paper_notes/claims.md does not list: {unknown}"
