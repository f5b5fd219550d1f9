"""The store on a real PostgreSQL: the same behaviours as on SQLite, plus real concurrency.

The server is started once for this module (tests/integration/postgres.py); each test gets
a database of its own. The concurrency tests are the reason this file exists: row locks,
`FOR UPDATE SKIP LOCKED` and commit order only mean something with a server that runs
transactions in parallel.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from sqlalchemy import inspect, select
from sqlalchemy.orm import Session

from service.store.models import StoredResult
from service.store.repository import Recorded, Store, create_store
from tests.integration.postgres import (
    SUPERUSER,
    PostgresFailed,
    PostgresServer,
    find_bin_dir,
    running_postgres,
)
from tests.unit.store import test_store_claims_and_look_backs as claims
from tests.unit.store import test_store_core as core
from tests.unit.store.helpers import AS_OF, STUDY, Clock, body, save
from tests.unit.store.test_store_schema import TABLES, schema_differences

StoreFactory = Callable[[], Store]

# -- fixtures --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def template(postgres: PostgresServer) -> str:
    """The server's database, migrated once: each test copies it (faster than migrating)."""
    store = create_store(postgres.url)
    store.migrate()
    store.close()  # CREATE DATABASE ... TEMPLATE needs the template without connections
    return postgres.url.rsplit("/", 1)[1]


@pytest.fixture
def database_url(postgres: PostgresServer, template: str) -> Iterator[str]:
    """A migrated database of this test's own; dropped afterwards."""
    with _database(postgres, template) as url:
        yield url


@pytest.fixture
def empty_database_url(postgres: PostgresServer) -> Iterator[str]:
    """An empty database, for the migration tests."""
    with _database(postgres, "template0") as url:
        yield url


@contextmanager
def _database(postgres: PostgresServer, template: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}"
    with _admin(postgres) as admin:
        # FILE_COPY (PostgreSQL 15+) copies a small database 4x faster than the default
        copy = " STRATEGY FILE_COPY" if admin.info.server_version >= 150000 else ""
        admin.execute(f"CREATE DATABASE {name} TEMPLATE {template}{copy}")
    try:
        yield postgres.url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with _admin(postgres) as admin:
            admin.execute(f"DROP DATABASE {name} WITH (FORCE)")


def _admin(postgres: PostgresServer) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(
        host="127.0.0.1", port=postgres.port, user=SUPERUSER, dbname="postgres", autocommit=True
    )


@pytest.fixture
def clock() -> Clock:
    return Clock()


@contextmanager
def _stores(url: str, clock: Clock) -> Iterator[StoreFactory]:
    opened: list[Store] = []

    def open_store() -> Store:
        store = create_store(url, clock=clock, pool_size=6, max_overflow=2)
        opened.append(store)
        return store

    try:
        yield open_store
    finally:
        for store in opened:
            store.close()


@pytest.fixture
def reopen(database_url: str, clock: Clock) -> Iterator[StoreFactory]:
    """Stores on this test's database: each one is what a (re)started service opens."""
    with _stores(database_url, clock) as open_store:
        yield open_store


@pytest.fixture
def reopen_empty(empty_database_url: str, clock: Clock) -> Iterator[StoreFactory]:
    with _stores(empty_database_url, clock) as open_store:
        yield open_store


@pytest.fixture
def store(reopen: StoreFactory) -> Store:
    store = reopen()
    store.migrate()
    return store


# -- the behaviours of tests/unit/store (core, claims and look backs), on PostgreSQL ---------

# Every test of the two SQLite modules, by name, bound to this module's fixtures; one of them
# needs an empty database and is wrapped below (the later definition replaces it).
globals().update(
    (name, test)
    for module in (core, claims)
    for name, test in vars(module).items()
    if name.startswith("test_")
)


def test_claims_from_before_the_lease_migration_count_as_expired(
    reopen_empty: StoreFactory, clock: Clock
) -> None:
    claims.test_claims_from_before_the_lease_migration_count_as_expired(reopen_empty, clock)


def test_every_core_behaviour_runs_on_postgres_too() -> None:
    for module in (core, claims):
        tests = {name for name in vars(module) if name.startswith("test_")}
        assert tests - set(globals()) == set(), module.__name__


def test_a_machine_without_postgresql_fails_with_the_install_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MEDCARE_PG_BIN", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(PostgresFailed, match=r"apt-get install -y postgresql"):
        find_bin_dir(tmp_path)


# -- schema ----------------------------------------------------------------------------------


def test_migrate_creates_the_schema_idempotently_as_the_models_say(
    reopen_empty: StoreFactory,
) -> None:
    store = reopen_empty()
    assert not store.ping()
    store.migrate()
    store.migrate()
    assert set(inspect(store.engine).get_table_names()) == TABLES
    assert schema_differences(store.engine) == []
    assert store.ping()


def test_two_services_starting_at_once_migrate_one_after_the_other(
    reopen_empty: StoreFactory,
) -> None:
    stores = [reopen_empty(), reopen_empty()]
    barrier = threading.Barrier(len(stores))

    def start(store: Store) -> str | None:
        barrier.wait()
        store.migrate()
        return store.schema_revision()

    with ThreadPoolExecutor(len(stores)) as pool:
        assert list(pool.map(start, stores)) == ["0006", "0006"]


def test_results_are_jsonb_on_postgres(store: Store) -> None:
    with store.engine.connect() as connection:
        column = {c["name"]: c for c in inspect(connection).get_columns("results")}["body"]
    assert type(column["type"]).__name__ == "JSONB"


# -- concurrency -----------------------------------------------------------------------------


def test_two_workers_never_claim_the_same_patient(reopen: StoreFactory) -> None:
    """Two service processes (two Stores, two pools) drain one run at the same time."""
    first, second = reopen(), reopen()
    patients = [f"p{i:03d}" for i in range(120)]
    run = first.create_run("ids", {"ids": patients}, AS_OF, patient_ids=patients)
    first.set_run_status(run.id, "running")
    barrier = threading.Barrier(2)

    def drain(store: Store) -> list[str]:
        mine: list[str] = []
        barrier.wait()
        while batch := store.claim_pending(run.id, 4):
            mine += batch
            for patient in batch:
                save(store, run.id, body(patient))
        return mine

    with ThreadPoolExecutor(2) as pool:
        got_first, got_second = pool.map(drain, [first, second])

    assert not set(got_first) & set(got_second)
    assert sorted(got_first + got_second) == patients
    assert got_first and got_second  # both really worked
    assert first.complete_run(run.id)
    assert first.run_progress(run.id)["done"] == len(patients)


def test_changes_feed_is_exactly_once_with_concurrent_writers(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Writers record results in parallel while a poller pages the feed.

    After drawing a change number each writer sleeps a little before COMMIT, which is where a
    plain sequence would let a later number commit first; the poller must still see every
    change exactly once and in order.
    """
    writers, patients_each, rounds = 4, 25, 3
    draw = Store._next_change_seq

    def slow_draw(session: Session) -> int:
        seq = draw(session)
        time.sleep(random.uniform(0, 0.003))
        return seq

    monkeypatch.setattr(Store, "_next_change_seq", staticmethod(slow_draw))
    writing = threading.Event()
    writing.set()

    def write(worker: int) -> list[Recorded]:
        recorded = []
        # rounds 0 and 1 have the same content (round 1 is no change), round 2 differs
        for round_ in range(rounds):
            for i in range(patients_each):
                patient = f"w{worker}-p{i}"
                reason = "first reading" if round_ < 2 else "second reading"
                recorded.append(save(store, None, body(patient, reason=reason)))
        return recorded

    seen: list[tuple[int, int]] = []
    pages = 0

    def poll() -> None:
        nonlocal pages
        cursor: str | None = None
        while True:
            still_writing = writing.is_set()
            items, cursor = store.changes(cursor, limit=7)
            seen.extend((item["seq"], item["result_id"]) for item in items)
            pages += bool(items)
            if not items and not still_writing:
                return

    poller = threading.Thread(target=poll)
    poller.start()
    with ThreadPoolExecutor(writers) as pool:
        recorded = [r for part in pool.map(write, range(writers)) for r in part]
    writing.clear()
    poller.join(timeout=60)
    assert not poller.is_alive()

    changed = {r.result_id for r in recorded if r.changed}
    assert len(changed) == writers * patients_each * 2  # rounds 0 and 2
    seqs = [seq for seq, _ in seen]
    assert seqs == list(range(1, len(changed) + 1))  # in order, no gap, no repeat
    assert {result_id for _, result_id in seen} == changed
    assert pages > 1
    with store.engine.connect() as connection:
        in_db = set(
            connection.scalars(select(StoredResult.id).where(StoredResult.change_seq.is_not(None)))
        )
    assert in_db == changed


def test_same_patient_recorded_twice_at_once_is_one_change(store: Store) -> None:
    """Two workers record the first result of a new patient at the same moment."""
    for i in range(15):
        patient = f"race-{i}"
        barrier = threading.Barrier(2)

        def record(_: int, patient: str = patient, barrier: threading.Barrier = barrier) -> bool:
            barrier.wait()
            return save(store, None, body(patient)).changed

        with ThreadPoolExecutor(2) as pool:
            outcomes = sorted(pool.map(record, range(2)))
        assert outcomes == [False, True]
        assert store.latest_result(patient, STUDY) == body(patient)
    items, _ = store.changes(limit=100)
    assert len(items) == 15
