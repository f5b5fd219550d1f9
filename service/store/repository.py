"""The store: runs, their patients, results, the changes feed and the write-back outbox.

One `Store` wraps one SQLAlchemy Engine (one connection pool) shared by the HTTP request
threads and the screening workers. Every public method is one short transaction, so a worker
that dies leaves the database consistent and a restarted service can pick up where it was:

* a run is `queued` → `running` → `done` | `failed` | `cancelled`;
* each of its patients is `pending` → `claimed` (a worker has it) → `done` | `failed`;
* a claim names its owner (this Store's `owner`: host, pid, token) and a lease end; the owner
  renews its leases by a heartbeat (`renew_claims`), and only a claim whose lease ran out, or
  whose owner is known dead (service.store.leases), goes back to pending
  (`requeue_expired_claims`, also run by `interrupted_runs()` at start-up). A result or failure
  is recorded only by the claim's owner, so a patient is never recorded twice;
* after a restart, `interrupted_runs()` lists the runs still queued or running; the workers
  then claim again.

Results are kept forever (one row per screen); `latest_results` points at the newest one per
patient and study. A result whose content (fingerprint) differs from the previous latest one
gets a change sequence number, and the changes feed lists results by that number. Only a
current result does either: a look back (as_of before the service's date, `today()`) is kept
with its run and nothing else (fhir-contract.md "What the current result is").

Errors and reasons stored here carry ids and short reasons only, never patient data; callers
pass reasons of that kind and the store cuts them to MAX_ERROR_CHARS.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple, TypedDict
from uuid import uuid4

from alembic import command
from alembic.config import Config
from alembic.script import ScriptDirectory
from sqlalchemy import (
    CTE,
    ColumnElement,
    Engine,
    Select,
    and_,
    exists,
    func,
    insert,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from service.store import cursors
from service.store.cursors import BadCursor
from service.store.engine import (
    DEFAULT_BUSY_TIMEOUT_S,
    DEFAULT_MAX_OVERFLOW,
    DEFAULT_POOL_SIZE,
    DEFAULT_POOL_TIMEOUT_S,
    DEFAULT_URL,
    WRITE_OPTION,
    make_engine,
)
from service.store.leases import new_owner_id
from service.store.models import (
    ACTIVE_RUN_STATUSES,
    FINAL_RUN_STATUSES,
    FINGERPRINT_LENGTH,
    PATIENT_ID_LENGTH,
    ChangeCounter,
    LatestResult,
    OutboxState,
    PatientState,
    ResultStatus,
    Run,
    RunKind,
    RunPatient,
    RunStatus,
    StoredResult,
    WritebackEntry,
)

__all__ = [
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
    "WritebackSummary",
    "create_store",
]

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Key of the PostgreSQL advisory lock that keeps two starting services from migrating at once.
MIGRATION_LOCK_KEY = 0x4D454443  # "MEDC"
MAX_ERROR_CHARS = 1000
MAX_PAGE = 1000
INSERT_CHUNK = 500
DEFAULT_LEASE = timedelta(minutes=5)
# A run's claim lives this long without a heartbeat; the owner renews it about every third
# of it (service.runtime), so only an owner that stopped (killed, hung) loses its patients.
DEFAULT_CLAIM_LEASE = timedelta(seconds=60)
RESULT_ORDER = ("met", "not-met", "unknown", "manual")


class StoreError(Exception):
    """Base of the store's own errors (database errors stay SQLAlchemy's)."""


class NotFound(StoreError, LookupError):
    """A run, a patient of a run or an outbox entry that does not exist."""


class RunStateError(StoreError):
    """An operation the run's status does not allow (adding patients to a finished run)."""


class InvalidResult(StoreError, ValueError):
    """A result dict that is not a §7 result for the patient it is recorded for."""


class InvalidAsOf(StoreError, ValueError):
    """An as_of after the service's date: a screen of a day that has not come yet."""


class ClaimLost(StoreError):
    """This process no longer holds the patient's claim (its lease ran out and another
    process took the patient): the outcome is not recorded, the other process records its own."""


@dataclass(frozen=True)
class RunInfo:
    id: str
    kind: str
    spec: Any
    as_of: date
    write_back: bool
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    counts: dict[str, int] | None
    look_back: bool = False  # as_of before the service's date: results are never current

    @classmethod
    def of(cls, run: Run) -> RunInfo:
        return cls(
            id=run.id,
            kind=run.kind,
            spec=run.spec,
            as_of=run.as_of,
            write_back=run.write_back,
            status=run.status,
            created_at=run.created_at,
            started_at=run.started_at,
            finished_at=run.finished_at,
            error=run.error,
            counts=run.counts,
            look_back=bool(run.look_back),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: dates and times as ISO 8601 text."""
        return {
            "id": self.id,
            "kind": self.kind,
            "spec": self.spec,
            "as_of": self.as_of.isoformat(),
            "write_back": self.write_back,
            "status": self.status,
            "created_at": self.created_at.isoformat(),
            "started_at": _iso(self.started_at),
            "finished_at": _iso(self.finished_at),
            "error": self.error,
            "counts": self.counts,
            "look_back": self.look_back,
        }


class Progress(TypedDict):
    """Patients of a run by state, and the results found so far by status."""

    total: int
    pending: int
    in_progress: int
    done: int
    failed: int
    candidate: int
    ineligible: int


class RunResultItem(TypedDict):
    position: int
    patient: str
    state: str
    error: str | None
    result_id: int | None
    result: dict[str, Any] | None


class ChangeItem(TypedDict):
    seq: int
    result_id: int
    patient: str
    study: str
    status: str
    as_of: str
    fingerprint: str
    created_at: str
    result: dict[str, Any]


CriterionAttrition = TypedDict(
    "CriterionAttrition",
    {
        "id": str,
        "kind": str,
        "met": int,
        "not-met": int,
        "unknown": int,
        "manual": int,
        # patients this criterion alone rules out
        "ruled_out": int,
        # patients still eligible after this criterion and every one before it (the funnel)
        "left": int,
    },
)


class WritebackSummary(TypedDict):
    """A run's write-backs by outbox state; `last_error`: why the newest failing one failed."""

    pending: int
    done: int
    failed: int
    skipped: int
    last_error: str | None


class Attrition(TypedDict):
    screened: int
    candidate: int
    ineligible: int
    failed: int
    criteria: list[CriterionAttrition]


@dataclass(frozen=True)
class OutboxEntry:
    """A write-back to do: the result to write and how often it was tried already."""

    id: int
    patient_id: str
    study: str
    result_id: int
    fingerprint: str
    attempts: int
    result: dict[str, Any]


class Recorded(NamedTuple):
    result_id: int
    changed: bool
    # False for a look back: stored, but not the patient's current result (never written back)
    current: bool = True


# What a patient row holds once no worker has it (released, requeued or settled): one spelling,
# so every way out of `claimed` clears the same columns.
_NO_CLAIM: Mapping[str, None] = {"claimed_at": None, "claimed_by": None, "lease_expires_at": None}


def _utc_now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _short(text_: str) -> str:
    return text_ if len(text_) <= MAX_ERROR_CHARS else text_[: MAX_ERROR_CHARS - 1] + "…"


def _aware(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be timezone-aware")
    return value


def _check_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be between 1 and {MAX_PAGE}")


def _locked_batch(query: Select[Any]) -> CTE:
    """`query` as a materialised CTE that locks its rows, skipping rows others have locked.

    A queue's "take N" must select its batch once. Written as `WHERE id IN (SELECT ... LIMIT
    n FOR UPDATE SKIP LOCKED)`, PostgreSQL may run the subquery again for every row it
    updates, and each run skips the rows the statement has just locked itself, so the
    statement takes more than n rows. A MATERIALIZED CTE runs once. SQLite (which ignores
    FOR UPDATE) evaluates it the same way.
    """
    return query.with_for_update(skip_locked=True).cte("batch").prefix_with("MATERIALIZED")


def alembic_config() -> Config:
    """Alembic configured in code: the service needs no alembic.ini to migrate."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


@cache
def head_revision() -> str | None:
    """The newest migration revision this code ships (read from disk once)."""
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def create_store(
    url: str | URL | None = None,
    *,
    pool_size: int = DEFAULT_POOL_SIZE,
    max_overflow: int = DEFAULT_MAX_OVERFLOW,
    pool_timeout: float = DEFAULT_POOL_TIMEOUT_S,
    busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S,
    clock: Callable[[], datetime] = _utc_now,
    today: date | None = None,
    claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
) -> Store:
    """A Store on `url` (default: the SQLite file of DEFAULT_URL). Call `migrate()` next."""
    engine = make_engine(
        url or DEFAULT_URL,
        pool_size=pool_size,
        max_overflow=max_overflow,
        pool_timeout=pool_timeout,
        busy_timeout=busy_timeout,
    )
    return Store(engine, clock=clock, today=today, claim_lease=claim_lease)


class Store:
    """Persistence of screening runs and results over one SQLAlchemy Engine.

    Thread-safe: each call opens its own session from the engine's pool. `clock` returns the
    current aware time; tests pass a fixed one. `today` fixes the service's date (tests and
    demos screening fixtures of a given day, MEDCARE_TODAY); by default it is the clock's date
    in the process's time zone. `owner` names this Store in the claims it makes (one Store
    per service process); `claim_lease` is how long a claim lives without a heartbeat.
    """

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], datetime] = _utc_now,
        today: date | None = None,
        claim_lease: timedelta = DEFAULT_CLAIM_LEASE,
        owner: str | None = None,
    ) -> None:
        self._engine = engine
        self._write_engine = engine.execution_options(**{WRITE_OPTION: True})
        self._clock = clock
        self._today = today
        self._postgres = engine.dialect.name == "postgresql"
        self.claim_lease = claim_lease
        self.owner = owner or new_owner_id()

    def _now(self) -> datetime:
        return _aware(self._clock(), "the clock's time").astimezone(UTC)

    def today(self) -> date:
        """The service's date: screens as of it are current, later ones are refused."""
        if self._today is not None:
            return self._today
        return _aware(self._clock(), "the clock's time").astimezone().date()

    def check_as_of(self, as_of: date) -> bool:
        """True when a screen as of `as_of` is a look back (before today); InvalidAsOf when it
        is after today."""
        today = self.today()
        if as_of > today:
            raise InvalidAsOf(
                f"as_of {as_of.isoformat()} is after today ({today.isoformat()}): "
                "a screen cannot be as of a day that has not come yet"
            )
        return as_of < today

    @property
    def engine(self) -> Engine:
        return self._engine

    def close(self) -> None:
        """Close the pooled connections (at shutdown, or before a test deletes the file)."""
        self._engine.dispose()

    # -- schema and health ------------------------------------------------------------------

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

    # -- sessions ---------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
            yield session

    @contextmanager
    def _read(self) -> Iterator[Session]:
        with Session(self._engine, expire_on_commit=False) as session, session.begin():
            yield session

    def _insert(self, model: type[Any]) -> Any:
        """A dialect INSERT that supports ON CONFLICT DO NOTHING on both databases."""
        return (postgresql.insert if self._postgres else sqlite.insert)(model)

    # -- runs -------------------------------------------------------------------------------

    def create_run(
        self,
        kind: str,
        spec: Any,
        as_of: date,
        *,
        write_back: bool = False,
        patient_ids: Iterable[str] = (),
    ) -> RunInfo:
        """A new queued run; `patient_ids` (if known already) are added in the same transaction.

        `spec` is what the run screens, as JSON: the id list, the FHIR search string, the Group
        id or the file; the store keeps it so a resumed run can enumerate its patients again.
        """
        if kind not in {k.value for k in RunKind}:
            raise ValueError(f"unknown run kind {kind!r}")
        if isinstance(as_of, datetime) or not isinstance(as_of, date):
            raise ValueError("as_of must be a date")
        look_back = self.check_as_of(as_of)
        run = Run(
            id=str(uuid4()),
            kind=kind,
            spec=spec,
            as_of=as_of,
            write_back=write_back,
            status=RunStatus.QUEUED.value,
            created_at=self._now(),
            look_back=look_back,
        )
        with self._write() as session:
            session.add(run)
            session.flush()
            self._add_patients(session, run.id, patient_ids)
        return RunInfo.of(run)

    def get_run(self, run_id: str) -> RunInfo | None:
        with self._read() as session:
            run = session.get(Run, run_id)
            return RunInfo.of(run) if run is not None else None

    def list_runs(self, limit: int = 50, *, status: str | None = None) -> list[RunInfo]:
        """The newest runs first."""
        _check_limit(limit)
        query = select(Run).order_by(Run.created_at.desc(), Run.id.desc()).limit(limit)
        if status is not None:
            query = query.where(Run.status == status)
        with self._read() as session:
            return [RunInfo.of(run) for run in session.scalars(query)]

    def add_run_patients(self, run_id: str, patient_ids: Iterable[str]) -> int:
        """Append patients to a queued or running run; idempotent. Returns how many were new.

        Patients already in the run (or repeated in `patient_ids`) are ignored, so a run that
        enumerates a FHIR search page by page can replay pages after a restart.
        """
        with self._write() as session:
            return self._add_patients(session, run_id, patient_ids)

    def _add_patients(self, session: Session, run_id: str, patient_ids: Iterable[str]) -> int:
        # The run row lock serialises two adds to one run, so positions stay unique.
        run = session.scalars(select(Run).where(Run.id == run_id).with_for_update()).first()
        if run is None:
            raise NotFound(f"run {run_id} not found")
        wanted = list(dict.fromkeys(patient_ids))
        if not wanted:
            return 0
        if run.status not in ACTIVE_RUN_STATUSES:
            raise RunStateError(f"run {run_id} is {run.status}: it takes no more patients")
        for patient_id in wanted:
            if not isinstance(patient_id, str) or not 0 < len(patient_id) <= PATIENT_ID_LENGTH:
                raise ValueError(
                    f"a patient id must be text of 1 to {PATIENT_ID_LENGTH} characters"
                )
        position = session.scalar(
            select(func.max(RunPatient.position)).where(RunPatient.run_id == run_id)
        )
        next_position = (position or 0) + 1
        now = self._now()
        added = 0
        for start in range(0, len(wanted), INSERT_CHUNK):
            chunk = wanted[start : start + INSERT_CHUNK]
            present = set(
                session.scalars(
                    select(RunPatient.patient_id).where(
                        RunPatient.run_id == run_id, RunPatient.patient_id.in_(chunk)
                    )
                )
            )
            rows = []
            for patient_id in chunk:
                if patient_id in present:
                    continue
                rows.append(
                    {
                        "run_id": run_id,
                        "patient_id": patient_id,
                        "position": next_position,
                        "state": PatientState.PENDING.value,
                        "attempts": 0,
                        "updated_at": now,
                    }
                )
                next_position += 1
            if rows:
                session.execute(insert(RunPatient), rows)
                added += len(rows)
        return added

    def set_run_status(self, run_id: str, status: str, error: str | None = None) -> bool:
        """Move a run to `status`; False (and no change) when the run is final already.

        A final run stays final: a worker that finishes after the user cancelled cannot turn
        the run back into `done`. Entering `running` stamps `started_at` once; entering a final
        status stamps `finished_at` and keeps a snapshot of the progress in `counts`.
        """
        if status not in {s.value for s in RunStatus}:
            raise ValueError(f"unknown run status {status!r}")
        with self._write() as session:
            run = session.scalars(select(Run).where(Run.id == run_id).with_for_update()).first()
            if run is None:
                raise NotFound(f"run {run_id} not found")
            return self._transition(session, run, RunStatus(status), error)

    def _transition(self, session: Session, run: Run, status: RunStatus, error: str | None) -> bool:
        if run.status in FINAL_RUN_STATUSES or run.status == status:
            return False
        now = self._now()
        values: dict[str, Any] = {"status": status.value}
        if status is RunStatus.RUNNING and run.started_at is None:
            values["started_at"] = now
        if status in FINAL_RUN_STATUSES:
            values["finished_at"] = now
            values["counts"] = dict(self._progress(session, run.id))
        if error is not None:
            values["error"] = _short(error)
        session.execute(
            update(Run)
            .where(Run.id == run.id)
            .values(**values)
            .execution_options(synchronize_session=False)
        )
        return True

    def cancel_run(self, run_id: str) -> bool:
        """Cancel a queued or running run: no patient is claimed after this.

        Patients a worker holds now are still recorded when it finishes; pending ones stay
        pending (visible in the progress). False when the run was final already.
        """
        return self.set_run_status(run_id, RunStatus.CANCELLED.value)

    def complete_run(self, run_id: str) -> bool:
        """Mark a running run `done` if none of its patients is pending or claimed any more.

        Every worker can call it after its last patient; exactly one succeeds.
        """
        with self._write() as session:
            run = session.scalars(select(Run).where(Run.id == run_id).with_for_update()).first()
            if run is None:
                raise NotFound(f"run {run_id} not found")
            if run.status != RunStatus.RUNNING.value:
                return False
            open_patients = session.scalar(
                select(func.count()).where(
                    RunPatient.run_id == run_id,
                    RunPatient.state.in_([PatientState.PENDING.value, PatientState.CLAIMED.value]),
                )
            )
            if open_patients:
                return False
            return self._transition(session, run, RunStatus.DONE, None)

    def interrupted_runs(
        self,
        *,
        stale_before: datetime | None = None,
        max_attempts: int | None = 3,
        dead_owners: Iterable[str] = (),
    ) -> list[RunInfo]:
        """Runs to resume at start-up (queued or running, oldest first).

        Their claims that nobody holds any more go back to pending first (see
        `requeue_expired_claims`); live claims of other processes are left to them.
        """
        self.requeue_expired_claims(
            stale_before=stale_before, max_attempts=max_attempts, dead_owners=dead_owners
        )
        with self._read() as session:
            runs = session.scalars(
                select(Run)
                .where(Run.status.in_(ACTIVE_RUN_STATUSES))
                .order_by(Run.created_at, Run.id)
            )
            return [RunInfo.of(run) for run in runs]

    def requeue_expired_claims(
        self,
        run_id: str | None = None,
        *,
        stale_before: datetime | None = None,
        max_attempts: int | None = 3,
        dead_owners: Iterable[str] = (),
    ) -> int:
        """Put claims back to pending whose owner stopped: the lease ran out (no heartbeat for
        `claim_lease`), the owner is in `dead_owners`, or (`stale_before`) the claim is older
        than that. Claims without a lease (made before migration 0002) count as expired.

        Only active runs (`run_id`'s alone when given). A patient interrupted `max_attempts`
        times is marked failed instead, so one patient that brings the service down cannot do
        so forever. Returns how many went back to pending.
        """
        if stale_before is not None:
            _aware(stale_before, "stale_before")
        now = self._now()
        dead = [owner for owner in dict.fromkeys(dead_owners) if owner != self.owner]
        active = select(Run.id).where(Run.status.in_(ACTIVE_RUN_STATUSES))
        if run_id is not None:
            active = active.where(Run.id == run_id)
        gone = [RunPatient.lease_expires_at.is_(None), RunPatient.lease_expires_at <= now]
        if dead:
            gone.append(RunPatient.claimed_by.in_(dead))
        if stale_before is not None:
            gone.append(RunPatient.claimed_at < stale_before)
        claimed = and_(
            RunPatient.run_id.in_(active),
            RunPatient.state == PatientState.CLAIMED.value,
            or_(*gone),
        )
        with self._write() as session:
            if max_attempts is not None:
                session.execute(
                    update(RunPatient)
                    .where(claimed, RunPatient.attempts >= max_attempts)
                    .values(
                        state=PatientState.FAILED.value,
                        error=f"screening was interrupted {max_attempts} times; given up",
                        updated_at=now,
                        **_NO_CLAIM,
                    )
                    .execution_options(synchronize_session=False)
                )
            requeued = session.execute(
                update(RunPatient)
                .where(claimed)
                .values(state=PatientState.PENDING.value, updated_at=now, **_NO_CLAIM)
                .returning(RunPatient.run_id)
                .execution_options(synchronize_session=False)
            ).all()
        if requeued:
            log.info("re-queued %d interrupted patients", len(requeued))
        return len(requeued)

    def claim_owners(self, run_id: str | None = None) -> set[str]:
        """The owners of the live claims of active runs (to find the dead ones among them)."""
        query = (
            select(RunPatient.claimed_by)
            .distinct()
            .where(
                RunPatient.state == PatientState.CLAIMED.value,
                RunPatient.claimed_by.is_not(None),
                RunPatient.run_id.in_(select(Run.id).where(Run.status.in_(ACTIVE_RUN_STATUSES))),
            )
        )
        if run_id is not None:
            query = query.where(RunPatient.run_id == run_id)
        with self._read() as session:
            return {owner for owner in session.scalars(query) if owner is not None}

    def renew_claims(self) -> int:
        """The heartbeat: move the lease end of every claim this Store holds `claim_lease`
        ahead. Returns how many claims it holds."""
        now = self._now()
        with self._write() as session:
            renewed = session.execute(
                update(RunPatient)
                .where(
                    RunPatient.claimed_by == self.owner,
                    RunPatient.state == PatientState.CLAIMED.value,
                )
                .values(lease_expires_at=now + self.claim_lease)
                .returning(RunPatient.patient_id)
                .execution_options(synchronize_session=False)
            ).all()
        return len(renewed)

    def release_own_claims(self) -> int:
        """At a graceful stop: give every claim this Store holds back (pending), so another
        process takes them at once instead of after the lease. Returns how many."""
        return self._release_own_to_pending()

    def _release_own_to_pending(self, *narrowed_to: ColumnElement[bool]) -> int:
        """Put the patients this Store has claimed (narrowed by `narrowed_to`) back to pending,
        lease and owner cleared, so any worker may claim them again. One statement for both
        the graceful stop and a worker that could not record, so the two cannot drift apart on
        what a released claim looks like. Returns how many were released."""
        with self._write() as session:
            released = session.execute(
                update(RunPatient)
                .where(
                    *narrowed_to,
                    RunPatient.state == PatientState.CLAIMED.value,
                    RunPatient.claimed_by == self.owner,
                )
                .values(state=PatientState.PENDING.value, updated_at=self._now(), **_NO_CLAIM)
                .returning(RunPatient.patient_id)
                .execution_options(synchronize_session=False)
            ).all()
        return len(released)

    # -- patients of a run ------------------------------------------------------------------

    def claim_pending(self, run_id: str, limit: int) -> list[str]:
        """Claim up to `limit` pending patients of a running run for one worker (list order).

        One UPDATE statement: on PostgreSQL its batch takes the rows `FOR UPDATE SKIP LOCKED`
        (see `_locked_batch`), so concurrent workers get disjoint patients without waiting for
        each other; on SQLite the write transaction (BEGIN IMMEDIATE) serialises the claims. Nothing is
        claimed unless the run is `running`, which is how a cancel stops the workers. The
        claims are this Store's (`owner`), leased for `claim_lease` (see `renew_claims`).
        """
        _check_limit(limit)
        now = self._now()
        picked = _locked_batch(
            select(RunPatient.patient_id)
            .where(RunPatient.run_id == run_id, RunPatient.state == PatientState.PENDING.value)
            .order_by(RunPatient.position)
            .limit(limit)
        )
        running = exists().where(Run.id == run_id, Run.status == RunStatus.RUNNING.value)
        statement = (
            update(RunPatient)
            .where(
                RunPatient.run_id == run_id,
                RunPatient.patient_id == picked.c.patient_id,
                RunPatient.state == PatientState.PENDING.value,
                running,
            )
            .values(
                state=PatientState.CLAIMED.value,
                attempts=RunPatient.attempts + 1,
                claimed_at=now,
                claimed_by=self.owner,
                lease_expires_at=now + self.claim_lease,
                updated_at=now,
            )
            .returning(RunPatient.patient_id, RunPatient.position)
            .execution_options(synchronize_session=False)
        )
        with self._write() as session:
            rows = session.execute(statement).all()
        return [patient_id for patient_id, _ in sorted(rows, key=lambda row: row[1])]

    def record_patient_result(
        self,
        run_id: str | None,
        patient_id: str,
        result: Mapping[str, Any],
        fingerprint: str,
        *,
        write_back: bool | None = None,
    ) -> Recorded:
        """Store a §7 result and mark the run's patient done, in ONE transaction.

        `fingerprint` identifies the result's content (the project's is
        `service.writeback.fingerprint.fingerprint`); equal fingerprints mean "no change", so
        pass the same kind of fingerprint every time. `run_id` None records a result outside
        any run. With `write_back` (default: the run's `write_back`; False without a run) an
        outbox entry is queued in the same transaction, unless the FHIR server has or will
        get this content already: a crash can never keep a result and lose its write-back.
        Returns the new result's id and whether its content changed.

        Current or look back (fhir-contract.md "What the current result is"). A result whose
        as_of is after `today()` is refused (InvalidAsOf). A look back is only stored (with its
        run): it does not replace the latest result, draws no change number, queues no
        write-back, and comes back with `current` False. A look back is a result of a run
        asked for as of an earlier day (`runs.look_back`, decided when the run was created, so
        a run of today that goes on past midnight still gives current results), or, outside a
        run, a result as of a day before today; and any result older (by as_of) than the
        patient's current one, so a late or resumed screen never takes the present back.

        Claims. A run's patient is recorded only while it is pending or claimed by this Store;
        when another process has taken it (this Store's lease ran out) nothing is stored and
        ClaimLost is raised: that process records its own screen.

        Exactly-once changes feed. A changed result draws its `change_seq` from the single
        `change_counter` row with `UPDATE ... SET value = value + 1 RETURNING value`, as the
        transaction's last step before COMMIT. The row lock taken by that UPDATE is held until
        COMMIT, so the next writer of a change waits at the same UPDATE until this one has
        committed (or rolled back, which also rolls the counter back: no gaps). Numbers are
        therefore handed out in commit order, and when a reader can see seq N every seq below
        N is visible too (PostgreSQL marks a transaction committed before it releases its
        locks). A plain sequence would not do this: seq 11 could commit before seq 10, and a
        poller that saw 11 would skip 10 forever. Only changing writers queue at the counter,
        and only for one statement and the commit; unchanged results do not touch it.
        On SQLite all writers are serialised by the database lock anyway.

        Lock order, the same in every transaction so none can deadlock: the patient's
        `latest_results` row, its outbox rows, the run patient row, the counter last.
        """
        body = dict(result)
        study, as_of, status = self._validated(patient_id, body)
        if not isinstance(fingerprint, str) or not 0 < len(fingerprint) <= FINGERPRINT_LENGTH:
            raise InvalidResult(
                f"a fingerprint must be text of 1 to {FINGERPRINT_LENGTH} characters"
            )
        look_back = self.check_as_of(as_of)
        now = self._now()
        with self._write() as session:
            if run_id is not None:
                run = session.execute(
                    select(Run.write_back, Run.look_back).where(Run.id == run_id)
                ).first()
                if run is None:
                    raise NotFound(f"run {run_id} not found")
                look_back = bool(run.look_back)
                if write_back is None:
                    write_back = bool(run.write_back)
            if not look_back:
                current_as_of = self._current_as_of(session, patient_id, study)
                look_back = current_as_of is not None and as_of < current_as_of
            result_id: int = session.execute(
                insert(StoredResult)
                .values(
                    run_id=run_id,
                    patient_id=patient_id,
                    study=study,
                    as_of=as_of,
                    status=status,
                    fingerprint=fingerprint,
                    body=body,
                    created_at=now,
                )
                .returning(StoredResult.id)
            ).scalar_one()
            changed = not look_back and self._replace_latest(
                session, patient_id, study, result_id, fingerprint
            )
            if write_back and not look_back:
                self._enqueue(session, patient_id, study, result_id, fingerprint)
            if run_id is not None:
                self._settle_patient(
                    session,
                    run_id,
                    patient_id,
                    {"state": PatientState.DONE.value, "result_id": result_id, "error": None},
                )
            if changed:
                seq = self._next_change_seq(session)
                session.execute(
                    update(StoredResult)
                    .where(StoredResult.id == result_id)
                    .values(change_seq=seq)
                    .execution_options(synchronize_session=False)
                )
                session.execute(
                    update(LatestResult)
                    .where(LatestResult.patient_id == patient_id, LatestResult.study == study)
                    .values(change_seq=seq)
                    .execution_options(synchronize_session=False)
                )
        return Recorded(result_id, changed, not look_back)

    def _settle_patient(
        self, session: Session, run_id: str, patient_id: str, values: dict[str, Any]
    ) -> None:
        """Give a run's patient its outcome if this Store may (the patient is pending, or
        claimed by this Store); ClaimLost when another process holds or settled it."""
        mine = or_(
            RunPatient.state == PatientState.PENDING.value,
            and_(
                RunPatient.state == PatientState.CLAIMED.value,
                RunPatient.claimed_by == self.owner,
            ),
            # claims made before migration 0002 have no owner
            and_(RunPatient.state == PatientState.CLAIMED.value, RunPatient.claimed_by.is_(None)),
        )
        marked = session.execute(
            update(RunPatient)
            .where(RunPatient.run_id == run_id, RunPatient.patient_id == patient_id, mine)
            .values(updated_at=self._now(), **_NO_CLAIM, **values)
            .returning(RunPatient.patient_id)
            .execution_options(synchronize_session=False)
        ).first()
        if marked is not None:
            return
        held = session.scalar(
            select(RunPatient.state).where(
                RunPatient.run_id == run_id, RunPatient.patient_id == patient_id
            )
        )
        if held is None:
            raise NotFound(f"patient {patient_id} is not in run {run_id}")
        raise ClaimLost(
            f"patient {patient_id} of run {run_id} is {held} by another process: not recorded"
        )

    @staticmethod
    def _current_as_of(session: Session, patient_id: str, study: str) -> date | None:
        """The as_of of the patient's current result, its latest_results row locked (the
        first lock of the recording transaction, as in `_replace_latest`)."""
        result_id = session.scalar(
            select(LatestResult.result_id)
            .where(LatestResult.patient_id == patient_id, LatestResult.study == study)
            .with_for_update()
        )
        if result_id is None:
            return None
        return session.scalar(select(StoredResult.as_of).where(StoredResult.id == result_id))

    @staticmethod
    def _validated(patient_id: str, body: dict[str, Any]) -> tuple[str, date, str]:
        if body.get("patient") != patient_id:
            raise InvalidResult(f"the result is not for patient {patient_id}")
        study = body.get("study")
        if not isinstance(study, str) or not study:
            raise InvalidResult(f"the result of patient {patient_id} names no study")
        try:
            as_of = date.fromisoformat(str(body.get("as_of")))
        except ValueError as error:
            raise InvalidResult(f"the result of patient {patient_id} has no as_of date") from error
        status = body.get("status")
        if status not in {s.value for s in ResultStatus}:
            raise InvalidResult(f"the result of patient {patient_id} has no known status")
        return study, as_of, str(status)

    def _lock_latest(self, session: Session, patient_id: str, study: str) -> str | None:
        """Lock the patient's latest_results row; its fingerprint, or None if there is none."""
        return session.scalar(
            select(LatestResult.fingerprint)
            .where(LatestResult.patient_id == patient_id, LatestResult.study == study)
            .with_for_update()
        )

    def _replace_latest(
        self, session: Session, patient_id: str, study: str, result_id: int, fingerprint: str
    ) -> bool:
        """Point latest_results at `result_id`; True when the content differs from before."""
        previous = self._lock_latest(session, patient_id, study)
        if previous is None:
            # First result of this patient. Two workers may race here: ON CONFLICT DO NOTHING
            # waits for the other's insert to commit and then inserts nothing; lock that row.
            inserted = session.execute(
                self._insert(LatestResult)
                .values(
                    patient_id=patient_id,
                    study=study,
                    result_id=result_id,
                    fingerprint=fingerprint,
                    updated_at=self._now(),
                )
                .on_conflict_do_nothing(index_elements=["patient_id", "study"])
                .returning(LatestResult.patient_id)
            ).first()
            if inserted is not None:
                return True
            previous = self._lock_latest(session, patient_id, study)
        session.execute(
            update(LatestResult)
            .where(LatestResult.patient_id == patient_id, LatestResult.study == study)
            .values(result_id=result_id, fingerprint=fingerprint, updated_at=self._now())
            .execution_options(synchronize_session=False)
        )
        return previous != fingerprint

    @staticmethod
    def _next_change_seq(session: Session) -> int:
        seq = session.execute(
            update(ChangeCounter)
            .where(ChangeCounter.id == 1)
            .values(value=ChangeCounter.value + 1)
            .returning(ChangeCounter.value)
            .execution_options(synchronize_session=False)
        ).scalar_one_or_none()
        if seq is None:
            raise StoreError("change_counter has no row: run Store.migrate()")
        return seq

    def record_patient_failure(self, run_id: str, patient_id: str, reason: str) -> None:
        """Mark a patient of a run failed with `reason` (ids and causes only, no patient data).

        The run goes on; the reason is shown in the run's results. ClaimLost when another
        process holds the patient now (see `record_patient_result`).
        """
        with self._write() as session:
            self._settle_patient(
                session,
                run_id,
                patient_id,
                {"state": PatientState.FAILED.value, "error": _short(reason)},
            )

    def release_claims(self, run_id: str, patient_ids: Iterable[str]) -> int:
        """Give claimed patients of a run back (pending) without an outcome: the worker that
        claimed them could not record them. Returns how many were still claimed."""
        wanted = list(dict.fromkeys(patient_ids))
        if not wanted:
            return 0
        return self._release_own_to_pending(
            RunPatient.run_id == run_id, RunPatient.patient_id.in_(wanted)
        )

    # -- reading runs -----------------------------------------------------------------------

    def run_progress(self, run_id: str) -> Progress:
        """Patient counts by state and result counts by status (`in_progress` = claimed)."""
        with self._read() as session:
            if session.get(Run, run_id) is None:
                raise NotFound(f"run {run_id} not found")
            return self._progress(session, run_id)

    @staticmethod
    def _progress(session: Session, run_id: str) -> Progress:
        states: Counter[str] = Counter()
        for state, count in session.execute(
            select(RunPatient.state, func.count())
            .where(RunPatient.run_id == run_id)
            .group_by(RunPatient.state)
        ):
            states[state] = count
        statuses: Counter[str] = Counter()
        for status, count in session.execute(
            select(StoredResult.status, func.count())
            .join(RunPatient, RunPatient.result_id == StoredResult.id)
            .where(RunPatient.run_id == run_id, RunPatient.state == PatientState.DONE.value)
            .group_by(StoredResult.status)
        ):
            statuses[status] = count
        return Progress(
            total=sum(states.values()),
            pending=states[PatientState.PENDING.value],
            in_progress=states[PatientState.CLAIMED.value],
            done=states[PatientState.DONE.value],
            failed=states[PatientState.FAILED.value],
            candidate=statuses[ResultStatus.CANDIDATE.value],
            ineligible=statuses[ResultStatus.INELIGIBLE.value],
        )

    def run_results(
        self,
        run_id: str,
        cursor: str | None = None,
        limit: int = 100,
        *,
        status: str | None = None,
    ) -> tuple[list[RunResultItem], str | None]:
        """One page of a run's patients in list order, each with its state and result.

        `status` ("candidate"/"ineligible") keeps only patients done with that result. The
        cursor is opaque, bound to this run, and None when there is no further page. Patients
        added later get later positions, so paging never skips or repeats one.
        """
        _check_limit(limit)
        after = 0 if cursor is None else cursors.decode(cursor, cursors.RUN_RESULTS_TAG, run_id)
        query = (
            select(RunPatient, StoredResult.body)
            .outerjoin(StoredResult, StoredResult.id == RunPatient.result_id)
            .where(RunPatient.run_id == run_id, RunPatient.position > after)
            .order_by(RunPatient.position)
            .limit(limit + 1)
        )
        if status is not None:
            query = query.where(
                RunPatient.state == PatientState.DONE.value, StoredResult.status == status
            )
        with self._read() as session:
            if session.get(Run, run_id) is None:
                raise NotFound(f"run {run_id} not found")
            rows = session.execute(query).all()
        items = [
            RunResultItem(
                position=patient.position,
                patient=patient.patient_id,
                state=patient.state,
                error=patient.error,
                result_id=patient.result_id,
                result=body,
            )
            for patient, body in rows[:limit]
        ]
        more = len(rows) > limit
        next_cursor = (
            cursors.encode(cursors.RUN_RESULTS_TAG, run_id, items[-1]["position"]) if more else None
        )
        return items, next_cursor

    def attrition(self, run_id: str) -> Attrition:
        """Per criterion counts over the run's results, read from the stored bodies.

        The same funnel as the command line's summary: for each criterion (in the order the
        results list them) how many were met / not-met / unknown / manual, how many it alone
        rules out, and how many patients are left after it and all before it.
        """
        totals: dict[str, Counter[str]] = {}
        kinds: dict[str, str] = {}
        ruled_out_by: list[set[str]] = []
        screened = candidate = 0
        with self._read() as session:
            if session.get(Run, run_id) is None:
                raise NotFound(f"run {run_id} not found")
            failed = session.scalar(
                select(func.count()).where(
                    RunPatient.run_id == run_id, RunPatient.state == PatientState.FAILED.value
                )
            )
            bodies = session.scalars(
                select(StoredResult.body)
                .join(RunPatient, RunPatient.result_id == StoredResult.id)
                .where(RunPatient.run_id == run_id, RunPatient.state == PatientState.DONE.value)
                .order_by(RunPatient.position)
                .execution_options(yield_per=500)
            )
            for body in bodies:
                screened += 1
                candidate += body.get("status") == ResultStatus.CANDIDATE.value
                ruled_out: set[str] = set()
                for criterion in body.get("criteria", []):
                    criterion_id, kind = str(criterion["id"]), str(criterion["kind"])
                    outcome = str(criterion["result"])
                    totals.setdefault(criterion_id, Counter())[outcome] += 1
                    kinds.setdefault(criterion_id, kind)
                    if (kind == "inclusion" and outcome == "not-met") or (
                        kind == "exclusion" and outcome == "met"
                    ):
                        ruled_out.add(criterion_id)
                ruled_out_by.append(ruled_out)
        criteria: list[CriterionAttrition] = []
        remaining = list(range(len(ruled_out_by)))
        for criterion_id, counts in totals.items():
            remaining = [i for i in remaining if criterion_id not in ruled_out_by[i]]
            criteria.append(
                {
                    "id": criterion_id,
                    "kind": kinds[criterion_id],
                    "met": counts["met"],
                    "not-met": counts["not-met"],
                    "unknown": counts["unknown"],
                    "manual": counts["manual"],
                    "ruled_out": sum(1 for r in ruled_out_by if criterion_id in r),
                    "left": len(remaining),
                }
            )
        return Attrition(
            screened=screened,
            candidate=candidate,
            ineligible=screened - candidate,
            failed=failed or 0,
            criteria=criteria,
        )

    # -- latest results and the changes feed ------------------------------------------------

    def latest_result(self, patient_id: str, study: str) -> dict[str, Any] | None:
        """The §7 dict of the patient's newest result for `study`, or None."""
        with self._read() as session:
            return session.scalar(
                select(StoredResult.body)
                .join(LatestResult, LatestResult.result_id == StoredResult.id)
                .where(LatestResult.patient_id == patient_id, LatestResult.study == study)
            )

    def changes(self, cursor: str | None = None, limit: int = 100) -> tuple[list[ChangeItem], str]:
        """Results whose content changed, after `cursor`, in change order (exactly once).

        None starts at the beginning. The returned cursor is never None: an empty page means
        "nothing new yet, ask again with the same cursor". Because change numbers are handed
        out in commit order (see `record_patient_result`), a poller that follows the cursors
        sees every change once, in order, whatever the workers do concurrently.
        """
        _check_limit(limit)
        after = 0 if cursor is None else cursors.decode(cursor, cursors.CHANGES_TAG, "")
        with self._read() as session:
            rows = session.scalars(
                select(StoredResult)
                .where(StoredResult.change_seq > after)
                .order_by(StoredResult.change_seq)
                .limit(limit)
            ).all()
        items = [
            ChangeItem(
                seq=row.change_seq or 0,
                result_id=row.id,
                patient=row.patient_id,
                study=row.study,
                status=row.status,
                as_of=row.as_of.isoformat(),
                fingerprint=row.fingerprint,
                created_at=row.created_at.isoformat(),
                result=row.body,
            )
            for row in rows
        ]
        last = items[-1]["seq"] if items else after
        return items, cursors.encode(cursors.CHANGES_TAG, "", last)

    def changes_head(self) -> str:
        """A cursor at the newest change: a new poller that wants only future changes."""
        with self._read() as session:
            value = session.scalar(select(ChangeCounter.value).where(ChangeCounter.id == 1))
        return cursors.encode(cursors.CHANGES_TAG, "", value or 0)

    # -- write-back outbox ------------------------------------------------------------------

    def enqueue_writeback(self, patient_id: str, result_id: int, fingerprint: str) -> int | None:
        """Queue `result_id` for writing to the FHIR server; the pending entry's id or None.

        A newer result supersedes a pending older one (which becomes `skipped`). Nothing new
        is queued when the pending entry is newer or has the same content (its id is
        returned), nor when the server got this content or a newer result already (None).
        """
        with self._write() as session:
            row = session.execute(
                select(StoredResult.patient_id, StoredResult.study, StoredResult.fingerprint).where(
                    StoredResult.id == result_id
                )
            ).first()
            if row is None or row.patient_id != patient_id:
                raise NotFound(f"result {result_id} of patient {patient_id} not found")
            if row.fingerprint != fingerprint:
                raise ValueError(f"fingerprint does not match result {result_id}")
            # Serialise with record_patient_result for this patient (same first lock).
            self._lock_latest(session, patient_id, row.study)
            return self._enqueue(session, patient_id, row.study, result_id, fingerprint)

    def _enqueue(
        self, session: Session, patient_id: str, study: str, result_id: int, fingerprint: str
    ) -> int | None:
        now = self._now()
        of_patient = and_(WritebackEntry.patient_id == patient_id, WritebackEntry.study == study)
        pending = session.execute(
            select(WritebackEntry.id, WritebackEntry.result_id, WritebackEntry.fingerprint)
            .where(of_patient, WritebackEntry.state == OutboxState.PENDING.value)
            .with_for_update()
        ).first()
        if pending is not None and (
            pending.result_id >= result_id or pending.fingerprint == fingerprint
        ):
            return int(pending.id)  # this content, or a newer result, is queued already
        written = session.execute(
            select(WritebackEntry.result_id, WritebackEntry.fingerprint)
            .where(of_patient, WritebackEntry.state == OutboxState.DONE.value)
            .order_by(WritebackEntry.result_id.desc())
            .limit(1)
        ).first()
        if written is not None and written.result_id > result_id:
            return None  # a newer result is on the server: never overwrite it with an older one
        if pending is not None:
            session.execute(
                update(WritebackEntry)
                .where(WritebackEntry.id == pending.id)
                .values(
                    state=OutboxState.SKIPPED.value,
                    last_error=f"superseded by result {result_id}",
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            )
        if written is not None and written.fingerprint == fingerprint:
            return None  # the server has this content already
        return int(
            session.execute(
                insert(WritebackEntry)
                .values(
                    patient_id=patient_id,
                    study=study,
                    result_id=result_id,
                    fingerprint=fingerprint,
                    state=OutboxState.PENDING.value,
                    attempts=0,
                    next_attempt_at=now,
                    created_at=now,
                    updated_at=now,
                )
                .returning(WritebackEntry.id)
            ).scalar_one()
        )

    def due_writebacks(
        self,
        now: datetime | None = None,
        limit: int = 50,
        *,
        lease: timedelta = DEFAULT_LEASE,
        patient_id: str | None = None,
    ) -> list[OutboxEntry]:
        """Take up to `limit` pending entries that are due, oldest due first (only those of
        `patient_id` when given).

        Taking an entry counts an attempt and moves its due time `lease` ahead, so another
        writer does not take it while this one works on it; if this writer dies, the entry
        is due again when the lease ends. Follow with mark_writeback_done / _failed.
        """
        _check_limit(limit)
        now = _aware(now, "now").astimezone(UTC) if now is not None else self._now()
        conditions = [
            WritebackEntry.state == OutboxState.PENDING.value,
            WritebackEntry.next_attempt_at <= now,
        ]
        if patient_id is not None:
            conditions.append(WritebackEntry.patient_id == patient_id)
        due = _locked_batch(
            select(WritebackEntry.id)
            .where(*conditions)
            .order_by(WritebackEntry.next_attempt_at, WritebackEntry.id)
            .limit(limit)
        )
        with self._write() as session:
            taken = session.scalars(
                update(WritebackEntry)
                .where(
                    WritebackEntry.id == due.c.id, WritebackEntry.state == OutboxState.PENDING.value
                )
                .values(
                    attempts=WritebackEntry.attempts + 1,
                    next_attempt_at=now + lease,
                    updated_at=now,
                )
                .returning(WritebackEntry.id)
                .execution_options(synchronize_session=False)
            ).all()
            if not taken:
                return []
            rows = session.execute(
                select(WritebackEntry, StoredResult.body)
                .join(StoredResult, StoredResult.id == WritebackEntry.result_id)
                .where(WritebackEntry.id.in_(taken))
                .order_by(WritebackEntry.next_attempt_at, WritebackEntry.id)
            ).all()
            return [
                OutboxEntry(
                    id=entry.id,
                    patient_id=entry.patient_id,
                    study=entry.study,
                    result_id=entry.result_id,
                    fingerprint=entry.fingerprint,
                    attempts=entry.attempts,
                    result=body,
                )
                for entry, body in rows
            ]

    def mark_writeback_done(self, entry_id: int) -> bool:
        """The entry was written. False when it was no longer pending (superseded meanwhile)."""
        return self._settle(entry_id, {"state": OutboxState.DONE.value, "last_error": None})

    def mark_writeback_failed(
        self, entry_id: int, error: str, next_attempt_at: datetime | None
    ) -> bool:
        """The write failed: retry at `next_attempt_at`, or give up (`failed`) when None.

        `error` must carry no patient data (the FHIR errors' messages carry ids only).
        False when the entry was no longer pending.
        """
        values: dict[str, Any] = {"last_error": _short(error)}
        if next_attempt_at is None:
            values["state"] = OutboxState.FAILED.value
        else:
            values["next_attempt_at"] = _aware(next_attempt_at, "next_attempt_at")
        return self._settle(entry_id, values)

    def _settle(self, entry_id: int, values: dict[str, Any]) -> bool:
        with self._write() as session:
            changed = session.execute(
                update(WritebackEntry)
                .where(
                    WritebackEntry.id == entry_id, WritebackEntry.state == OutboxState.PENDING.value
                )
                .values(updated_at=self._now(), **values)
                .returning(WritebackEntry.id)
                .execution_options(synchronize_session=False)
            ).first()
            if changed is not None:
                return True
            if session.get(WritebackEntry, entry_id) is None:
                raise NotFound(f"outbox entry {entry_id} not found")
            return False

    def run_writebacks(self, run_id: str) -> WritebackSummary:
        """The write-backs of a run's results by outbox state, with the newest error of one
        still pending (being retried) or given up, so a run shows why its writes did not land."""
        counts = dict.fromkeys((s.value for s in OutboxState), 0)
        of_run = and_(StoredResult.id == WritebackEntry.result_id, StoredResult.run_id == run_id)
        with self._read() as session:
            for state, count in session.execute(
                select(WritebackEntry.state, func.count())
                .join(StoredResult, of_run)
                .group_by(WritebackEntry.state)
            ):
                counts[state] = count
            last_error = session.scalar(
                select(WritebackEntry.last_error)
                .join(StoredResult, of_run)
                .where(
                    WritebackEntry.last_error.is_not(None),
                    WritebackEntry.state.in_([OutboxState.PENDING.value, OutboxState.FAILED.value]),
                )
                .order_by(WritebackEntry.updated_at.desc(), WritebackEntry.id.desc())
                .limit(1)
            )
        return WritebackSummary(
            pending=counts[OutboxState.PENDING.value],
            done=counts[OutboxState.DONE.value],
            failed=counts[OutboxState.FAILED.value],
            skipped=counts[OutboxState.SKIPPED.value],
            last_error=last_error,
        )

    def outbox_counts(self) -> dict[str, int]:
        """Outbox entries by state (every state present, zeros included)."""
        counts = dict.fromkeys((s.value for s in OutboxState), 0)
        with self._read() as session:
            for state, count in session.execute(
                select(WritebackEntry.state, func.count()).group_by(WritebackEntry.state)
            ):
                counts[state] = count
        return counts
