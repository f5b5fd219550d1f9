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


# -- the behaviours of tests/unit/store/test_store_core.py, on PostgreSQL --------------------

test_create_get_and_list_runs = core.test_create_get_and_list_runs
test_create_run_refuses_unknown_kind_and_datetime_as_of = (
    core.test_create_run_refuses_unknown_kind_and_datetime_as_of
)
test_add_run_patients_is_idempotent_and_keeps_list_order = (
    core.test_add_run_patients_is_idempotent_and_keeps_list_order
)
test_add_run_patients_refuses_finished_and_unknown_runs = (
    core.test_add_run_patients_refuses_finished_and_unknown_runs
)
test_status_transitions_stamp_times_and_final_is_final = (
    core.test_status_transitions_stamp_times_and_final_is_final
)
test_cancel_stops_claims_and_keeps_what_was_done = (
    core.test_cancel_stops_claims_and_keeps_what_was_done
)
test_complete_run_only_when_no_patient_is_left = core.test_complete_run_only_when_no_patient_is_left
test_claim_pending_in_list_order_once_and_only_while_running = (
    core.test_claim_pending_in_list_order_once_and_only_while_running
)
test_first_result_is_a_change_same_content_is_not = (
    core.test_first_result_is_a_change_same_content_is_not
)
test_changed_content_gets_the_next_change_seq = core.test_changed_content_gets_the_next_change_seq
test_record_marks_the_run_patient_done_with_its_result = (
    core.test_record_marks_the_run_patient_done_with_its_result
)
test_record_for_a_patient_not_in_the_run_stores_nothing = (
    core.test_record_for_a_patient_not_in_the_run_stores_nothing
)
test_failed_patient_is_recorded_with_its_reason_and_the_run_goes_on = (
    core.test_failed_patient_is_recorded_with_its_reason_and_the_run_goes_on
)
test_run_results_pages_by_cursor_in_list_order = core.test_run_results_pages_by_cursor_in_list_order
test_run_results_refuses_bad_and_foreign_cursors = (
    core.test_run_results_refuses_bad_and_foreign_cursors
)
test_attrition_counts_per_criterion_from_stored_results = (
    core.test_attrition_counts_per_criterion_from_stored_results
)
test_a_run_survives_a_restart_and_resumes = core.test_a_run_survives_a_restart_and_resumes
test_resume_gives_up_on_a_patient_interrupted_too_often = (
    core.test_resume_gives_up_on_a_patient_interrupted_too_often
)
test_resume_with_a_lease_leaves_fresh_claims_alone = (
    core.test_resume_with_a_lease_leaves_fresh_claims_alone
)
test_latest_result_per_patient_and_study = core.test_latest_result_per_patient_and_study
test_changes_feed_pages_once_each_and_waits_at_the_end = (
    core.test_changes_feed_pages_once_each_and_waits_at_the_end
)
test_changes_head_starts_after_what_exists = core.test_changes_head_starts_after_what_exists
test_changes_refuses_a_malformed_cursor = core.test_changes_refuses_a_malformed_cursor
test_write_back_is_queued_with_the_result_when_the_run_asks = (
    core.test_write_back_is_queued_with_the_result_when_the_run_asks
)
test_an_older_result_never_overwrites_a_newer_one_on_the_server = (
    core.test_an_older_result_never_overwrites_a_newer_one_on_the_server
)
test_newer_result_supersedes_a_pending_write_back = (
    core.test_newer_result_supersedes_a_pending_write_back
)
test_failed_write_back_is_retried_when_due_then_given_up = (
    core.test_failed_write_back_is_retried_when_due_then_given_up
)
test_a_writer_that_dies_gets_its_entry_back_after_the_lease = (
    core.test_a_writer_that_dies_gets_its_entry_back_after_the_lease
)
test_ping_and_schema_revision = core.test_ping_and_schema_revision
test_progress_of_an_unknown_run = core.test_progress_of_an_unknown_run
test_record_refuses_a_missing_or_oversized_fingerprint = (
    core.test_record_refuses_a_missing_or_oversized_fingerprint
)
test_queued_runs_are_resumed_too = core.test_queued_runs_are_resumed_too
test_enqueue_checks_the_result = core.test_enqueue_checks_the_result
test_record_refuses_a_result_of_another_patient_without_quoting_it = (
    core.test_record_refuses_a_result_of_another_patient_without_quoting_it
)


# -- claims with owners and leases, look backs (issue 10 items 9 and 11) ----------------------

test_a_screen_after_today_is_refused_and_nothing_is_stored = (
    claims.test_a_screen_after_today_is_refused_and_nothing_is_stored
)
test_a_look_back_never_replaces_the_current_result_nor_is_a_change_nor_written = (
    claims.test_a_look_back_never_replaces_the_current_result_nor_is_a_change_nor_written
)
test_a_look_back_run_keeps_its_results_with_the_run_only = (
    claims.test_a_look_back_run_keeps_its_results_with_the_run_only
)
test_a_run_of_today_stays_current_past_midnight_but_never_goes_back = (
    claims.test_a_run_of_today_stays_current_past_midnight_but_never_goes_back
)
test_today_can_be_fixed_for_tests_and_demos = claims.test_today_can_be_fixed_for_tests_and_demos
test_a_live_claim_of_another_process_is_left_alone_until_its_lease_runs_out = (
    claims.test_a_live_claim_of_another_process_is_left_alone_until_its_lease_runs_out
)
test_only_the_claim_owner_records_so_a_patient_is_recorded_once = (
    claims.test_only_the_claim_owner_records_so_a_patient_is_recorded_once
)
test_claims_of_a_dead_owner_are_taken_back_at_once = (
    claims.test_claims_of_a_dead_owner_are_taken_back_at_once
)
test_owners_alive_or_elsewhere_are_never_judged_dead = (
    claims.test_owners_alive_or_elsewhere_are_never_judged_dead
)
test_a_graceful_stop_gives_its_claims_back_at_once = (
    claims.test_a_graceful_stop_gives_its_claims_back_at_once
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
        assert list(pool.map(start, stores)) == ["0002", "0002"]


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
