"""The outbox's retry timing comes from the injected clock: a test fixes time and reads the
retry dates it leads to (service/work/outbox.py)."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import Any, cast

import pytest

from service.clock import Clock
from service.fhir.errors import FhirError, FhirNetworkError
from service.store import OutboxEntry, Store
from service.work.outbox import Outbox, is_permanent, retry_delay
from service.writeback.writer import ResultWriter

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=UTC)


class _Store:
    """The store methods the outbox calls, recording what it was told."""

    def __init__(self, entries: list[OutboxEntry]) -> None:
        self.entries = entries
        self.failed: list[tuple[int, str, datetime | None]] = []
        self.done: list[int] = []

    def due_writebacks(self, now: datetime | None = None, limit: int = 50, **_: Any) -> Any:
        return list(self.entries)

    def mark_writeback_failed(self, entry_id: int, error: str, retry_at: datetime | None) -> bool:
        self.failed.append((entry_id, error, retry_at))
        return True

    def mark_writeback_done(self, entry_id: int) -> bool:
        self.done.append(entry_id)
        return True

    def review_entries(self, patient: str, study: str) -> list[Any]:
        return []  # no coordinator's disposition


class _Writer:
    def __init__(self, error: FhirError) -> None:
        self.error = error

    def write(self, result: Any, *_: Any) -> Any:
        raise self.error


def _entry(attempts: int) -> OutboxEntry:
    return OutboxEntry(
        id=7, patient_id="Patient/p1", study="S", result_id=1, fingerprint="f",
        attempts=attempts, result={},
    )  # fmt: skip


def _drain(error: FhirError, attempts: int, monkeypatch: pytest.MonkeyPatch) -> _Store:
    monkeypatch.setattr("service.work.outbox.ScreenResult.from_dict", lambda data: data)
    store = _Store([_entry(attempts)])
    outbox = Outbox(
        cast(Store, store),
        cast(ResultWriter, _Writer(error)),
        Clock(source=lambda: NOW),
        threading.Event(),
    )
    assert outbox.drain() == 0
    return store


def test_retry_delay_doubles_up_to_ten_minutes() -> None:
    assert [retry_delay(n).total_seconds() for n in (0, 1, 2, 6, 7, 20)] == [
        5.0, 10.0, 20.0, 320.0, 600.0, 600.0,
    ]  # fmt: skip


def test_a_server_that_is_down_is_retried_at_the_clocks_time_plus_the_backoff(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    down = FhirNetworkError("connection failed", temporary=True)
    store = _drain(down, attempts=2, monkeypatch=monkeypatch)
    assert store.failed == [(7, str(down), NOW + timedelta(seconds=20))]
    assert not is_permanent(down)


def test_a_write_refused_as_wrong_is_given_up_after_five_attempts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    refused = FhirError("rejected", status=400)
    assert is_permanent(refused)
    assert _drain(refused, attempts=4, monkeypatch=monkeypatch).failed[0][2] == NOW + timedelta(
        seconds=80
    )
    assert _drain(refused, attempts=5, monkeypatch=monkeypatch).failed[0][2] is None
