"""Partial FHIR dates as day ranges."""

from __future__ import annotations

from datetime import date

import pytest

from service.fhir.dates import add_months, parse_fhir_day


def test_full_date_and_datetime_keep_their_own_calendar_day() -> None:
    day = parse_fhir_day("2026-10-30T23:30:00+01:00")
    assert day is not None and day.earliest == day.latest == date(2026, 10, 30)


@pytest.mark.parametrize(
    ("text", "earliest", "latest"),
    [
        ("1950", date(1950, 1, 1), date(1950, 12, 31)),
        ("1952-02", date(1952, 2, 1), date(1952, 2, 29)),
    ],
)
def test_partial_dates_are_ranges(text: str, earliest: date, latest: date) -> None:
    day = parse_fhir_day(text)
    assert day is not None and (day.earliest, day.latest) == (earliest, latest) and str(day) == text


@pytest.mark.parametrize("text", [None, 12, "", "yesterday", "2026-13-01", "2026-02-30"])
def test_unreadable_dates_are_none(text: object) -> None:
    assert parse_fhir_day(text) is None


def test_add_months_clamps_to_month_end() -> None:
    assert add_months(date(2026, 8, 31), 3) == date(2026, 11, 30)
    assert add_months(date(2026, 11, 15), 3) == date(2027, 2, 15)
