"""FHIR date and dateTime values as the day ranges they can mean.

A FHIR date may be partial ("1950", "1950-04"). Rules compare days against `as_of`, so a value is
kept as the earliest and latest day it can denote; a rule then decides only when every possible
day gives the same answer (criteria.md §1: ambiguous data never rules a patient out).
The calendar day is the one written in the value (its own time zone), not converted to UTC:
a result dated "2026-10-30T23:30:00+01:00" was taken on 30 October where it was taken.
"""

from __future__ import annotations

import calendar
import re
from dataclasses import dataclass
from datetime import date

from dateutil.relativedelta import relativedelta

_DATE_RE = re.compile(r"^(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")


@dataclass(frozen=True, order=True)
class FhirDay:
    """The range of calendar days a FHIR date/dateTime can denote, and its original text."""

    earliest: date
    latest: date
    text: str

    @property
    def is_exact(self) -> bool:
        return self.earliest == self.latest

    def __str__(self) -> str:
        return self.earliest.isoformat() if self.is_exact else self.text


def parse_fhir_day(value: object) -> FhirDay | None:
    """Parse a FHIR date or dateTime; None for absent or unreadable values."""
    if not isinstance(value, str):
        return None
    match = _DATE_RE.match(value.strip())
    if not match:
        return None
    year_s, month_s, day_s = match.groups()
    try:
        year = int(year_s)
        if month_s is None:
            return FhirDay(date(year, 1, 1), date(year, 12, 31), year_s)
        month = int(month_s)
        if day_s is None:
            last = calendar.monthrange(year, month)[1]
            return FhirDay(date(year, month, 1), date(year, month, last), f"{year_s}-{month_s}")
        day = date(year, month, int(day_s))
    except ValueError:
        return None
    return FhirDay(day, day, day.isoformat())


def add_months(day: date, months: int) -> date:
    """The same day-of-month `months` later (or earlier), clamped to the month's end
    (31 August + 3 months is 30 November): how depot durations and "N calendar months before"
    windows count (criteria.md §3)."""
    result: date = day + relativedelta(months=months)
    return result
