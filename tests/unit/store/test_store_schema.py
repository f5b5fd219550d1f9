"""Schema, migrations and engine set-up of the store on SQLite (the embedded default)."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Engine, Integer, MetaData, inspect, text

from service.screening.engine import Screener
from service.store.engine import UnsupportedDatabase, engine_url, make_engine
from service.store.models import Base
from service.store.repository import Store, create_store
from tests.builders import record
from tests.conftest import AS_OF
from tests.unit.store.helpers import Clock, body, save

TABLES = {
    "alembic_version",
    "audit_log",
    "cds_cards",
    "cds_feedback",
    "change_counter",
    "cohort_members",
    "cohorts",
    "latest_results",
    "rescreen_queue",
    "results",
    "review_entries",
    "run_patients",
    "runs",
    "schedule_fires",
    "watermarks",
    "writeback_outbox",
}


def schema_differences(engine: Engine, metadata: MetaData = Base.metadata) -> list[object]:
    """What Alembic's autogenerate would change: [] when models and database agree."""
    with engine.connect() as connection:
        context = MigrationContext.configure(
            connection, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, metadata))


def test_migrate_on_an_empty_database_creates_the_schema_idempotently(
    database_url: str, clock: Clock
) -> None:
    store = create_store(database_url, clock=clock)
    assert not store.ping()
    assert store.schema_revision() is None
    store.migrate()
    store.migrate()
    assert set(inspect(store.engine).get_table_names()) == TABLES
    assert store.ping()
    assert store.schema_revision() == "0006"
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT id, value FROM change_counter")).all() == [(1, 0)]
    store.close()


def test_models_and_migrated_schema_do_not_differ(store: Store) -> None:
    assert schema_differences(store.engine) == []


def test_the_comparison_would_see_a_difference(store: Store) -> None:
    drifted = MetaData()
    for table in Base.metadata.sorted_tables:
        table.to_metadata(drifted)
    drifted.tables["runs"].append_column(Column("priority", Integer))
    assert [diff[0] for diff in schema_differences(store.engine, drifted)] == ["add_column"]  # type: ignore[index]


def test_sqlite_runs_with_wal_foreign_keys_and_a_busy_timeout(store: Store) -> None:
    with store.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() == 30000


def test_default_store_is_a_sqlite_file_under_var(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = create_store()
    store.migrate()
    assert (tmp_path / "var" / "medcare-screen.sqlite3").is_file()
    store.close()


def test_in_memory_sqlite_works_for_quick_tests() -> None:
    store = create_store("sqlite://", today=AS_OF)
    store.migrate()
    assert save(store, None, body("p1")).changed
    store.close()


def test_postgres_urls_use_psycopg_3_and_other_databases_are_refused() -> None:
    assert engine_url("postgresql://u@db/medcare").drivername == "postgresql+psycopg"
    assert engine_url("postgres://u@db/medcare").drivername == "postgresql+psycopg"
    assert engine_url("sqlite:///x.db").drivername == "sqlite"
    engine = make_engine("postgresql://u@db.invalid/medcare", pool_size=3, max_overflow=1)
    assert engine.pool.size() == 3  # type: ignore[attr-defined]
    engine.dispose()
    with pytest.raises(UnsupportedDatabase, match="mysql"):
        make_engine("mysql://u@db/medcare")


def test_a_real_screen_result_round_trips_unchanged(
    store: Store, screener: Screener, clock: Clock
) -> None:
    result = screener.screen(record(), AS_OF).to_dict()
    recorded = save(store, None, result)
    assert recorded.changed
    assert store.latest_result(result["patient"], result["study"]) == result
    # the same decision a day later is no change: as_of is not content
    next_day = {**result, "as_of": "2026-11-27"}
    clock.advance(days=1)
    assert not save(store, None, next_day).changed
