"""One clock for the whole service: the current aware UTC time and the service's day.

Why: "now" and "today" decide which results are current (fhir-contract.md), when a claim's
lease ends and when an outbox entry is retried. Reading the system clock in many places made
them impossible to fix together in a test; everything now asks a `Clock`, built once by the
composition root and passed in. `today` may be pinned (MEDCARE_TODAY: demos and the test
suite screen the fixtures as of the day they were written for).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, date, datetime


def system_now() -> datetime:
    """The system's current time, aware, in UTC."""
    return datetime.now(UTC)


@dataclass(frozen=True)
class Clock:
    """`now()` is aware UTC time; `today()` is the pinned day, else the local date of `now()`."""

    source: Callable[[], datetime] = system_now
    pinned_today: date | None = None

    def now(self) -> datetime:
        value = self.source()
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError("the clock's time must carry a time zone")
        return value.astimezone(UTC)

    def today(self) -> date:
        if self.pinned_today is not None:
            return self.pinned_today
        return self.now().astimezone().date()


SYSTEM_CLOCK = Clock()
