"""Shared test fixtures: the bundled mappings, one Screener, and the fixed screening day."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from service.mapping import Mappings, load_mappings
from service.screening.engine import Screener

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
FIXTURES = REPO / "fixtures" / "patients"
SYNTHEA = SHARED / "external" / "synthea"
AS_OF = date(2026, 11, 26)


@pytest.fixture(scope="session")
def mappings() -> Mappings:
    return load_mappings()


@pytest.fixture(scope="session")
def screener(mappings: Mappings) -> Screener:
    return Screener(mappings)
