"""A daily re-screen of unchanged data keeps its fingerprint (nothing is rewritten)."""

from __future__ import annotations

from datetime import date

from service.fhir.local_source import LocalSource
from service.screening.engine import Screener
from service.writeback.fingerprint import fingerprint
from tests.conftest import FIXTURES


def test_same_data_next_day_same_fingerprint(screener: Screener) -> None:
    (record,) = LocalSource(FIXTURES / "base.json").records()
    today = screener.screen(record, date(2026, 11, 26))
    tomorrow = screener.screen(record, date(2026, 11, 27))
    assert "2026-11-26" in str(today.to_dict()["criteria"])  # reasons do quote the day
    assert fingerprint(today) == fingerprint(tomorrow)


def test_a_changed_result_changes_the_fingerprint(screener: Screener) -> None:
    (record,) = LocalSource(FIXTURES / "base.json").records()
    today = screener.screen(record, date(2026, 11, 26))
    much_later = screener.screen(record, date(2027, 3, 1))  # testosterone and ECOG now stale
    assert fingerprint(today) != fingerprint(much_later)
