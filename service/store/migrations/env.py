"""Alembic environment of the store.

`Store.migrate()` runs it with an open connection in `config.attributes["connection"]`; the
`alembic` command line (with `service/store/alembic.ini`) runs it with `-x url=...`, or with the
default SQLite file when no URL is given.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from service.store.engine import DEFAULT_URL, make_engine
from service.store.models import Base

config = context.config
TARGET_METADATA = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=TARGET_METADATA,
        compare_type=True,
        # SQLite cannot ALTER most things: later revisions use batch mode there.
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    url = context.get_x_argument(as_dictionary=True).get("url", DEFAULT_URL)
    engine = make_engine(url)
    with engine.connect() as own_connection:
        _configure(own_connection)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (--sql) migrations are not supported: run against a database")
run_migrations_online()
