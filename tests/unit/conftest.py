"""Store fixtures for the unit tests on a SQLite file: the embedded default, no server needed."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from service.store.repository import Store, create_store
from tests.unit.store.helpers import Clock

StoreFactory = Callable[[], Store]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def database_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite3'}"


@pytest.fixture
def reopen(database_url: str, clock: Clock) -> Iterator[StoreFactory]:
    """Open another Store on the same database, as a restarted service would."""
    opened: list[Store] = []

    def open_store() -> Store:
        store = create_store(database_url, clock=clock)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


@pytest.fixture
def store(reopen: StoreFactory) -> Store:
    store = reopen()
    store.migrate()
    return store
