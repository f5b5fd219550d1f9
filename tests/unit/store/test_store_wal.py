"""SQLite's WAL switch waits out a lock instead of failing a booting worker."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from service.store.engine import _use_wal


class _Cursor:
    """A cursor whose journal-mode pragmas answer 'database is locked' `locked` times."""

    def __init__(self, locked: int, mode: str = "delete") -> None:
        self.locked = locked
        self.mode = mode
        self.statements: list[str] = []

    def execute(self, sql: str) -> _Cursor:
        self.statements.append(sql)
        if self.locked > 0:
            self.locked -= 1
            raise sqlite3.OperationalError("database is locked")
        if sql == "PRAGMA journal_mode = WAL":
            self.mode = "wal"
        return self

    def fetchone(self) -> tuple[Any]:
        return (self.mode,)


def test_a_lock_while_switching_to_wal_is_waited_out() -> None:
    cursor = _Cursor(locked=3)
    _use_wal(cursor, busy_timeout=5.0)
    assert cursor.mode == "wal"
    assert cursor.statements[-1] == "PRAGMA journal_mode = WAL"


def test_a_database_already_in_wal_is_not_switched_again() -> None:
    cursor = _Cursor(locked=0, mode="wal")
    _use_wal(cursor, busy_timeout=5.0)
    assert cursor.statements == ["PRAGMA journal_mode"]


def test_a_lock_that_outlasts_the_busy_timeout_is_raised() -> None:
    cursor = _Cursor(locked=10**6)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        _use_wal(cursor, busy_timeout=0.05)


def test_other_errors_are_not_retried() -> None:
    class Broken(_Cursor):
        def execute(self, sql: str) -> _Cursor:
            self.statements.append(sql)
            raise sqlite3.OperationalError("disk I/O error")

    cursor = Broken(locked=0)
    with pytest.raises(sqlite3.OperationalError, match="disk I/O"):
        _use_wal(cursor, busy_timeout=5.0)
    assert len(cursor.statements) == 1
