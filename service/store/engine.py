"""Engines for the store: SQLite by default (a file, no server), PostgreSQL by URL.

SQLite needs care to behave under several threads:

* WAL journal, so readers do not wait for the writer and the writer does not wait for readers;
* `foreign_keys=ON` (off by default in SQLite) so the schema's references hold;
* a busy timeout, so a writer waits for the lock instead of failing at once;
* `check_same_thread=False`, because pooled connections move between worker threads;
* `BEGIN IMMEDIATE` for write transactions. The sqlite3 driver's own deferred BEGIN takes the
  write lock only at the first write; two transactions that both read first and then write
  deadlock on the upgrade, and SQLite reports that as "database is locked" without waiting
  for the busy timeout. Taking the write lock at BEGIN makes writers queue instead. Read
  transactions keep a plain BEGIN so they never wait for writers.

The database file holds patient results: it is created 0600 (and folders the store creates
0700), an existing one is narrowed to 0600, and SQLite gives its -wal, -shm and -journal files
the database file's permissions.

PostgreSQL goes through psycopg 3 (`postgresql://` URLs are pointed at it) with a pre-ping on
checkout, so a connection the server closed during a restart is replaced instead of failing a
request.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import StaticPool

# The embedded default: a file under var/ (git-ignored), relative to the working directory.
DEFAULT_URL = "sqlite:///var/medcare-screen.sqlite3"

# Execution option set on the engine used for write transactions (see module docstring).
WRITE_OPTION = "medcare_write"

DEFAULT_POOL_SIZE = 5
DEFAULT_MAX_OVERFLOW = 10
DEFAULT_POOL_TIMEOUT_S = 30.0
DEFAULT_BUSY_TIMEOUT_S = 30.0
# Recycle before typical firewall / server idle limits drop a pooled connection.
POOL_RECYCLE_S = 1800


class UnsupportedDatabase(ValueError):
    """A URL for a database the store does not support (only SQLite and PostgreSQL)."""


def engine_url(url: str | URL) -> URL:
    """Parse a URL; plain `postgresql://` and `postgres://` use psycopg 3, the driver we ship."""
    parsed = make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def make_engine(
    url: str | URL = DEFAULT_URL,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT_S,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S,
    echo: bool = False,
) -> Engine:
    """An Engine for `url` with the pool sized from the arguments.

    `pool_size + max_overflow` bounds the connections one process opens: size it to the
    number of screening workers plus the request threads of the HTTP service.
    """
    parsed = engine_url(url)
    backend = parsed.get_backend_name()
    # the pool both databases size the same way (an in-memory SQLite database has none)
    pool: dict[str, Any] = {
        "pool_size": pool_size,
        "max_overflow": max_overflow,
        "pool_timeout": pool_timeout,
    }
    if backend == "sqlite":
        return _sqlite_engine(parsed, pool, busy_timeout, echo)
    if backend == "postgresql":
        return create_engine(
            parsed, pool_pre_ping=True, pool_recycle=POOL_RECYCLE_S, echo=echo, **pool
        )
    raise UnsupportedDatabase(
        f"unsupported database {backend!r}: use a sqlite:/// or postgresql:// URL"
    )


def private_file(path: Path) -> None:
    """Create `path` (and the folders missing above it, 0700) as an empty 0600 file unless it
    exists; narrow an existing one, and its SQLite companions, to 0600 (what other users could
    read before stays theirs, but nothing new reaches them)."""
    missing = [folder for folder in [path.parent, *path.parent.parents] if not folder.exists()]
    for folder in reversed(missing):
        folder.mkdir(mode=0o700, exist_ok=True)
    os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
    for file in (path, *(Path(f"{path}{suffix}") for suffix in ("-wal", "-shm", "-journal"))):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & 0o700)
        except FileNotFoundError:
            continue
        except PermissionError:
            continue  # not our file: SQLite will say so if it cannot use it


def _is_memory(url: URL) -> bool:
    database = url.database or ""
    return database in ("", ":memory:") or url.query.get("mode") == "memory"


def _sqlite_engine(url: URL, pool: dict[str, Any], busy_timeout: float, echo: bool) -> Engine:
    connect_args: dict[str, Any] = {"check_same_thread": False, "timeout": busy_timeout}
    memory = _is_memory(url)
    if memory:
        # One shared connection: enough for tests and demos, no concurrency.
        engine = create_engine(url, connect_args=connect_args, poolclass=StaticPool, echo=echo)
    else:
        database = Path(url.database or "")
        if not url.query.get("uri"):
            private_file(database)
        engine = create_engine(url, connect_args=connect_args, echo=echo, **pool)
    busy_ms = int(busy_timeout * 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # The driver must not issue BEGIN itself: _on_begin does (see module docstring).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA foreign_keys = ON")
            cursor.execute(f"PRAGMA busy_timeout = {busy_ms}")
            if not memory:
                _use_wal(cursor, busy_timeout)
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get(WRITE_OPTION, False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


def _use_wal(cursor: Any, busy_timeout: float) -> None:
    """Put the database in WAL mode, waiting out a writer as the busy timeout promises.

    Changing the journal mode can answer "database is locked" at once, without the busy
    handler (for instance while another process recovers the WAL index): a gunicorn worker
    booting beside one that is writing then failed to start, and the arbiter shut the service
    down. The mode is persistent, so it is only set when it is not WAL yet, and a lock is
    waited out for up to `busy_timeout` seconds like any other.
    """
    deadline = time.monotonic() + busy_timeout
    pause = 0.01
    while True:
        try:
            (mode,) = cursor.execute("PRAGMA journal_mode").fetchone()
            if str(mode).lower() != "wal":
                cursor.execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.25)
