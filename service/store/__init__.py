"""Persistence of screening runs and results: SQLite by default, PostgreSQL by URL.

    store = create_store(url)   # None: the SQLite file of DEFAULT_URL
    store.migrate()             # Alembic upgrade head, at every start-up
    store.interrupted_runs()    # runs to resume after a restart

Modules: `models` (the tables), `migrations/` (Alembic, configured in code), `engine`
(engine set-up per database), `cursors` (opaque paging cursors), `repository` (the Store).
"""

from service.store.cursors import BadCursor
from service.store.engine import DEFAULT_URL, UnsupportedDatabase, make_engine
from service.store.repository import (
    Attrition,
    ChangeItem,
    ClaimLost,
    CriterionAttrition,
    InvalidAsOf,
    InvalidResult,
    NotFound,
    OutboxEntry,
    Progress,
    Recorded,
    RunInfo,
    RunResultItem,
    RunStateError,
    Store,
    StoreError,
    WritebackSummary,
    create_store,
)

__all__ = [
    "DEFAULT_URL",
    "Attrition",
    "BadCursor",
    "ChangeItem",
    "ClaimLost",
    "CriterionAttrition",
    "InvalidAsOf",
    "InvalidResult",
    "NotFound",
    "OutboxEntry",
    "Progress",
    "Recorded",
    "RunInfo",
    "RunResultItem",
    "RunStateError",
    "Store",
    "StoreError",
    "UnsupportedDatabase",
    "WritebackSummary",
    "create_store",
    "make_engine",
]
