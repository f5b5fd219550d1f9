"""The store's schema and health: Alembic migrations configured in code, the revision the
database is at, and the readiness ping.

Why apart: start-up and readiness are not runs or results; the service migrates once at start
and the health check pings often, over the same sessions as everything else.
"""

from __future__ import annotations

import logging
from functools import cache
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from service.store.base import StoreBase

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Key of the PostgreSQL advisory lock that keeps two starting services from migrating at once.
MIGRATION_LOCK_KEY = 0x4D454443  # "MEDC"


def alembic_config() -> Config:
    """Alembic configured in code: the service needs no alembic.ini to migrate."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@cache
def head_revision() -> str | None:
    """The newest migration revision this code ships (read from disk once)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


class SchemaStore(StoreBase):
    """Migrations and health over the shared engine (see the module docstring)."""

    def migrate(self) -> None:
        """Bring the schema to the newest revision (Alembic `upgrade head`); idempotent.

        Runs at service start-up. On PostgreSQL an advisory lock held for the transaction
        makes a second instance starting at the same time wait instead of racing.
        """
        config = alembic_config()
        with self._write_engine.begin() as connection:
            if self._postgres:
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY}
                )
            config.attributes["connection"] = connection
            command.upgrade(config, "head")

    def schema_revision(self) -> str | None:
        """The Alembic revision the database is at (None before the first migration)."""
        with self._engine.connect() as connection:
            if not self._engine.dialect.has_table(connection, "alembic_version"):
                return None
            value = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
            return str(value) if value is not None else None

    def ping(self) -> bool:
        """Readiness: the database answers and its schema is at the newest revision."""
        try:
            return self.schema_revision() == head_revision()
        except SQLAlchemyError as error:
            log.warning("store ping failed: %s", type(error).__name__)
            return False
