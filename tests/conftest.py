"""Shared test configuration: the claims registry and hypothesis profiles."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[1]
CLAIMS_FILE = ROOT / "paper_notes" / "claims.md"
CLAIM_ROW = re.compile(r"^\|\s*([A-Z][A-Z0-9]*-\d+[a-z]?)\s*\|", re.M)

settings.register_profile("ci", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("dev", deadline=None, suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


def registered_claims() -> set:
    """Claim IDs listed in paper_notes/claims.md (first cell of a table row)."""
    return set(CLAIM_ROW.findall(CLAIMS_FILE.read_text()))


def pytest_collection_modifyitems(config, items):
    known = registered_claims()
    for item in items:
        for mark in item.iter_markers("claim"):
            for claim_id in mark.args:
                if claim_id not in known:
                    raise pytest.UsageError(
                        f"{item.nodeid} is marked claim({claim_id!r}), which paper_notes/claims.md does not list"
                    )
