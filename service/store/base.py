"""What every part of the store shares: the engine's sessions, the clock, the service's day,
this Store's owner id and the lease lengths.

Why one base: the store is split by concern (runs, claims, results, reports, outbox, schema),
and each concern is a class over this base; `Store` is all of them together. Every public
method is one short transaction opened here, so a worker that dies leaves the database
consistent.

The clock may be the service's `Clock` (service/clock.py) or, as before, a callable returning
an aware datetime; `today` pins the service's date either way (MEDCARE_TODAY, tests).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from service.clock import Clock, system_now
from service.store.engine import WRITE_OPTION
from service.store.errors import InvalidAsOf
from service.store.leases import new_owner_id
from service.store.queue import DEFAULT_CLAIM_LEASE, DEFAULT_OUTBOX_LEASE

MAX_ERROR_CHARS = 1000
MAX_PAGE = 1000

ClockLike = Clock | Callable[[], datetime]


def short(text_: str) -> str:
    """Errors and reasons are kept to MAX_ERROR_CHARS (ids and causes only, no patient data)."""
    return text_ if len(text_) <= MAX_ERROR_CHARS else text_[: MAX_ERROR_CHARS - 1] + "…"


def aware(value: datetime, name: str) -> datetime:
    """`value` itself; ValueError naming `name` when it has no time zone (its zone would be a
    guess, and the store compares instants)."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value


def check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")


class StoreBase:
    """Sessions, clock and identity shared by the store's concern classes.

    Thread-safe: each call opens its own session from the engine's pool. `clock` returns the
    current aware time (a `Clock`, or a callable; tests pass a fixed one). `today` fixes the
    service's date (MEDCARE_TODAY); by default it is the `Clock`'s pinned day, else the clock's
    date in the process's time zone. `owner` names this Store in the claims it makes (one
    Store per service process); `claim_lease` is how long a claim lives without a heartbeat,
    `outbox_lease` how long a taken write-back stays with its writer (service.store.queue).
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: ClockLike = system_now,
        today: date | None = None,
        claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
        owner: str | None = None,
        outbox_lease: timedelta = DEFAULT_OUTBOX_LEASE,
    ) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        if isinstance(clock, Clock):
            today = today if today is not None else clock.pinned_today
            clock = clock.source
        self._clock: Callable[[], datetime] = clock
        self._today = today
        self._postgres = engine.dialect.name == "postgresql"
        self.claim_lease = claim_lease
        self.outbox_lease = outbox_lease
        self.owner = owner or new_owner_id()

    def _now(self) -> datetime:
        return aware(self._clock(), "the clock's time").astimezone(UTC)

    def today(self) -> date:
        """The service's date: screens as of it are current, later ones are refused."""
        if self._today is not None:
            return self._today
        return aware(self._clock(), "the clock's time").astimezone().date()

    def check_as_of(self, as_of: date) -> bool:
        """True when a screen as of `as_of` is a look back (before today); InvalidAsOf when it
        is after today."""
        today = self.today()
        if as_of > today:
            raise InvalidAsOf(
                f"as_of {as_of.isoformat()} is after today ({today.isoformat()}): "
                "a screen cannot be as of a day that has not come yet"
            )
        return as_of < today

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Close the pooled connections (at shutdown, or before a test deletes the file)."""
        self._engine.dispose()

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    def _insert(self, model: type[Any]) -> Any:
        """A dialect INSERT that supports ON CONFLICT DO NOTHING on both databases."""
        return (postgresql.insert if self._postgres else sqlite.insert)(model)
