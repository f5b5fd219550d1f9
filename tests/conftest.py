"""Shared test fixtures: the bundled mappings, one Screener, and the fixed screening day (today)."""

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


@pytest.fixture(autouse=True)
def _results_database(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The CLI stores results (SQLite by default): each test gets its own file, not var/."""
    monkeypatch.setenv("MEDCARE_DATABASE_URL", f"sqlite:///{tmp_path / 'results.sqlite3'}")
    # The fixtures are written for AS_OF: on that day their screens are current results, not look
    # backs (fhir-contract.md "What the current result is"). Reaches `serve` subprocesses too.
    monkeypatch.setenv("MEDCARE_TODAY", AS_OF.isoformat())
