"""The store: runs, their patients, results, the changes feed and the write-back outbox.

One `Store` wraps one SQLAlchemy Engine (one connection pool) shared by the HTTP request
threads and the screening workers. Every public method is one short transaction, so a worker
that dies leaves the database consistent and a restarted service can pick up where it was:

* a run is `queued` → `running` → `done` | `failed` | `cancelled` (service.store.runs);
* each of its patients is `pending` → `claimed` (a worker has it) → `done` | `failed`, with an
  owner and a lease renewed by a heartbeat (service.store.claims, over the one queue
  mechanism of service.store.queue that the outbox uses too);
* after a restart, `interrupted_runs()` lists the runs still queued or running, their claims
  that nobody holds any more back to pending; the workers then claim again;
* results are kept forever, the current one per patient and study is pointed at, and a
  changed current result gets a change number for the feed (service.store.results);
* a write-back is queued with its result in the same transaction (service.store.outbox);
* reports (progress, a run's results, attrition, write-backs) only read (service.store.reports).

`Store` is those concerns together, one class each over `StoreBase` (the sessions, the clock
and this Store's owner id); callers use `Store` and do not need to know the split.

Errors and reasons stored here carry ids and short reasons only, never patient data; callers
pass reasons of that kind and the store cuts them to MAX_ERROR_CHARS.
"""

from __future__ import annotations

from datetime import date, timedelta

from sqlalchemy.engine import URL

from service.clock import system_now
from service.store.audit import AuditStore
from service.store.base import MAX_ERROR_CHARS, MAX_PAGE, ClockLike
from service.store.cds_feedback import CdsFeedbackStore
from service.store.cohorts import CohortStore
from service.store.cursors import BadCursor
from service.store.dispositions import ReviewStore
from service.store.engine import (
    DEFAULT_BUSY_TIMEOUT_S,
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    DEFAULT_POOL_TIMEOUT_S,
    DEFAULT_URL,
    UnsupportedDatabase,
    make_engine,
)
from service.store.errors import (
    ClaimLost,
    InvalidAsOf,
    InvalidResult,
    NotFound,
    RunStateError,
    StoreError,
)
from service.store.population_report import PopulationReportStore
from service.store.queue import DEFAULT_CLAIM_LEASE, DEFAULT_OUTBOX_LEASE
from service.store.reports import ReportStore
from service.store.rescreen import RescreenStore
from service.store.results import ResultStore
from service.store.runs import RunStore
from service.store.schedule_fires import ScheduleFireStore
from service.store.schema import SchemaStore, alembic_config, head_revision
from service.store.types import (
    Attrition,
    ChangeItem,
    CriterionAttrition,
    OutboxEntry,
    Progress,
    Recorded,
    RunInfo,
    RunResultItem,
    WritebackSummary,
)
from service.store.watermarks import WatermarkStore
from service.store.worklist import WorklistStore

__all__ = [
    "DEFAULT_CLAIM_LEASE",
    "DEFAULT_OUTBOX_LEASE",
    "DEFAULT_URL",
    "MAX_ERROR_CHARS",
    "MAX_PAGE",
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
    "alembic_config",
    "create_store",
    "head_revision",
    "make_engine",
]


class Store(
    RunStore, ResultStore, ReportStore, SchemaStore, RescreenStore, CohortStore,
    WatermarkStore, ScheduleFireStore, WorklistStore, ReviewStore, CdsFeedbackStore, AuditStore,
    PopulationReportStore,
):  # fmt: skip
    """Persistence of screening runs and results over one SQLAlchemy Engine: every concern
    of the store in one object (see the module docstring; constructor in `StoreBase`)."""


def create_store(
    url: str | URL | None = None,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT_S,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S,
    clock: ClockLike = system_now,
    today: date | None = None,
    claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
    outbox_lease: timedelta = DEFAULT_OUTBOX_LEASE,
) -> Store:
    """A Store on `url` (default: the SQLite file of DEFAULT_URL). Call `migrate()` next.

    `clock` is the service's `Clock` (service/clock.py) or a callable giving the aware time."""
    engine = make_engine(
        url or DEFAULT_URL,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        busy_timeout=busy_timeout,
    )
    return Store(
        engine, clock=clock, today=today, claim_lease=claim_lease, outbox_lease=outbox_lease
    )
