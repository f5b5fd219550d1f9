"""The tables of the store, as SQLAlchemy 2.0 typed ORM classes.

The initial Alembic revision (`migrations/versions/0001_initial.py`) is written by hand from
these classes; a test compares both with Alembic's `compare_metadata`, so they cannot drift.

States and kinds are plain strings with CHECK constraints rather than database enums: a new
state is then one migration that swaps a constraint, the same on SQLite and PostgreSQL.
Times are stored in UTC and always come back timezone-aware (`UTCDateTime`), also on SQLite,
which has no time zones.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    Dialect,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
    text,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

# Stable constraint names: Alembic needs them to alter or drop a constraint later, and SQLite's
# batch mode needs them to recreate a table.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# Patient ids are FHIR ids (64 characters at most) or file-local ids; leave room for the latter.
PATIENT_ID_LENGTH = 255
# Room for prefixed digests such as "sha256:<64 hex>" (service.writeback.fingerprint).
FINGERPRINT_LENGTH = 128
STATE_LENGTH = 16
# A claim's owner: "<host>/<pid>/<random>" (service.store.leases.new_owner_id).
OWNER_LENGTH = 64

# 64-bit keys on PostgreSQL; on SQLite only INTEGER PRIMARY KEY is the auto-numbered rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")
# JSONB on PostgreSQL: compact, and indexable should the API ever filter on body fields.
JsonDocument = JSON().with_variant(postgresql.JSONB(), "postgresql")


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that goes in as an aware datetime and comes out aware, in UTC.

    PostgreSQL keeps `timestamptz`; SQLite keeps text without an offset, so the offset is
    normalised to UTC on the way in and put back on the way out. A naive datetime is refused:
    its zone would be a guess.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime: the store keeps aware times only")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# States and kinds: each value is its member's name in lower case (StrEnum's own rule for
# names given as text), the text the CHECK constraints below allow.
RunKind = StrEnum("RunKind", "IDS SEARCH GROUP FILE")
RunStatus = StrEnum("RunStatus", "QUEUED RUNNING DONE FAILED CANCELLED")
# Where one patient of a run stands; `claimed` means a worker is screening it now.
PatientState = StrEnum("PatientState", "PENDING CLAIMED DONE FAILED")
OutboxState = StrEnum("OutboxState", "PENDING DONE FAILED SKIPPED")
ResultStatus = StrEnum("ResultStatus", "CANDIDATE INELIGIBLE")
# A patient waiting for a re-screen (`pending`, not before its due time) or being screened.
RescreenState = StrEnum("RescreenState", "PENDING CLAIMED")
# What made the service screen a patient (issue 14): kept with the queue row and the result.
Trigger = StrEnum("Trigger", "SUBSCRIPTION SWEEP SCHEDULE REQUEST")
# A cohort is a FHIR search, a FHIR Group, or a list of patient ids.
CohortKind = StrEnum("CohortKind", "SEARCH GROUP LIST")
# A cohort's re-screen schedule when none is given: nightly at 02:00 (cron, service time zone).
DEFAULT_COHORT_SCHEDULE = "0 2 * * *"

ACTIVE_RUN_STATUSES: tuple[str, ...] = (RunStatus.QUEUED.value, RunStatus.RUNNING.value)
FINAL_RUN_STATUSES: tuple[str, ...] = (
    RunStatus.DONE.value,
    RunStatus.FAILED.value,
    RunStatus.CANCELLED.value,
)


def _one_of(column: str, values: type[StrEnum]) -> str:
    return f"{column} IN ({', '.join(repr(v.value) for v in values)})"


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Run(Base):
    """A screening run: what to screen (kind + spec), on which day, and how far it got.

    `counts` is a snapshot of the progress taken when the run reaches a final status, so a
    finished run reports its numbers without counting its patients again.
    """

    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    kind: Mapped[str] = mapped_column(String(STATE_LENGTH))
    spec: Mapped[Any] = mapped_column(JsonDocument)
    as_of: Mapped[date] = mapped_column(Date)
    write_back: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(STATE_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    error: Mapped[str | None] = mapped_column(Text)
    counts: Mapped[dict[str, int] | None] = mapped_column(JsonDocument)
    # as_of before the service's date when the run was asked for: its results never become
    # current (fhir-contract.md "What the current result is"); migration 0002
    look_back: Mapped[bool] = mapped_column(Boolean, server_default=false())

    __table_args__ = (
        CheckConstraint(_one_of("kind", RunKind), name="kind"),
        CheckConstraint(_one_of("status", RunStatus), name="status"),
        Index(None, "status"),
        Index(None, "created_at"),
    )


class RunPatient(Base):
    """One patient of a run, in the order the run lists them (`position`)."""

    __tablename__ = "run_patients"

    run_id: Mapped[str] = mapped_column(
        String(36), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True
    )
    patient_id: Mapped[str] = mapped_column(String(PATIENT_ID_LENGTH), primary_key=True)
    position: Mapped[int] = mapped_column(Integer)
    state: Mapped[str] = mapped_column(String(STATE_LENGTH))
    result_id: Mapped[int | None] = mapped_column(
        BigId, ForeignKey("results.id", ondelete="SET NULL")
    )
    error: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer)
    claimed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # who holds a claimed patient (Store owner id: host/pid/token) and until when; the holder
    # renews the lease while it is alive, others take the patient only after it (0002)
    claimed_by: Mapped[str | None] = mapped_column(String(OWNER_LENGTH))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_one_of("state", PatientState), name="state"),
        UniqueConstraint("run_id", "position"),
        # claim_pending and run_progress: the pending patients of a run in list order
        Index(None, "run_id", "state", "position"),
        Index(None, "result_id"),
        # expired leases
        Index(None, "state", "lease_expires_at"),
    )


class StoredResult(Base):
    """One screen result (the criteria.md §7 dict in `body`) with its content fingerprint.

    `change_seq` is set only when the content differs from the patient's previous latest
    result; it orders the changes feed (see `Store.record_patient_result`).
    """

    __tablename__ = "results"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    run_id: Mapped[str | None] = mapped_column(
        String(36), ForeignKey("runs.id", ondelete="SET NULL")
    )
    patient_id: Mapped[str] = mapped_column(String(PATIENT_ID_LENGTH))
    study: Mapped[str] = mapped_column(String(64))
    as_of: Mapped[date] = mapped_column(Date)
    status: Mapped[str] = mapped_column(String(STATE_LENGTH))
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    body: Mapped[dict[str, Any]] = mapped_column(JsonDocument)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    change_seq: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    # What changed against the patient's previous current result, and why the screen ran
    # (the changes feed says so; fhir-contract.md "What the current result is"); NULL on
    # results recorded before migration 0003 and on unchanged ones.
    previous_status: Mapped[str | None] = mapped_column(String(STATE_LENGTH))
    changed_criteria: Mapped[list[str] | None] = mapped_column(JsonDocument)
    trigger: Mapped[str | None] = mapped_column(String(STATE_LENGTH))
    source: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        CheckConstraint(_one_of("status", ResultStatus), name="status"),
        Index(None, "patient_id", "study", "id"),
        Index(None, "run_id"),
    )


class LatestResult(Base):
    """The newest result of each patient for each study, and the fingerprint it has.

    Its row is also the lock that serialises two workers recording the same patient.
    `change_seq` is the sequence number of the change that produced the current content; it
    is NULL only inside the recording transaction, before the sequence number is drawn.
    """

    __tablename__ = "latest_results"

    patient_id: Mapped[str] = mapped_column(String(PATIENT_ID_LENGTH), primary_key=True)
    study: Mapped[str] = mapped_column(String(64), primary_key=True)
    result_id: Mapped[int] = mapped_column(BigId, ForeignKey("results.id"))
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    change_seq: Mapped[int | None] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (Index(None, "result_id"),)


class WritebackEntry(Base):
    """A result waiting to be written to the FHIR server (the transactional outbox).

    At most one entry per patient and study is pending (a partial unique index): a newer
    result supersedes a pending older one, which becomes `skipped`.
    """

    __tablename__ = "writeback_outbox"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(String(PATIENT_ID_LENGTH))
    study: Mapped[str] = mapped_column(String(64))
    result_id: Mapped[int] = mapped_column(BigId, ForeignKey("results.id"))
    fingerprint: Mapped[str] = mapped_column(String(FINGERPRINT_LENGTH))
    state: Mapped[str] = mapped_column(String(STATE_LENGTH))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_one_of("state", OutboxState), name="state"),
        Index(
            "uq_writeback_outbox_pending_patient",
            "patient_id",
            "study",
            unique=True,
            sqlite_where=text("state = 'pending'"),
            postgresql_where=text("state = 'pending'"),
        ),
        # due_writebacks: pending entries by due time
        Index(None, "state", "next_attempt_at"),
        Index(None, "patient_id", "study", "id"),
        Index(None, "result_id"),
    )


class ChangeCounter(Base):
    """A single row holding the last change sequence number handed out.

    Drawing a number is `UPDATE ... SET value = value + 1 RETURNING value` inside the recording
    transaction: the row lock makes writers of changes take numbers in commit order, which is
    what makes the changes feed exactly-once (see `Store.record_patient_result`).
    """

    __tablename__ = "change_counter"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    value: Mapped[int] = mapped_column(BigInteger)

    __table_args__ = (CheckConstraint("id = 1", name="single_row"),)


class RescreenJob(Base):
    """One patient waiting to be screened again, or being screened (issue 14): one row per
    patient, so a burst of changes for one patient is one screen.

    A change for a waiting patient merges into its row (the triggers, the newest source);
    `due_at` holds the screen back a short coalescing delay after the first change. A change
    for a patient being screened sets `again`: the screen may have read the data before the
    change, so the row goes back to pending when the screen ends instead of being deleted.
    `first_enqueued_at` is the oldest change not yet screened (the queue's age metric). Taking
    a row is the one lease mechanism of service.store.queue (owner, lease end, attempts).
    """

    __tablename__ = "rescreen_queue"

    patient_id: Mapped[str] = mapped_column(String(PATIENT_ID_LENGTH), primary_key=True)
    state: Mapped[str] = mapped_column(String(STATE_LENGTH))
    due_at: Mapped[datetime] = mapped_column(UTCDateTime)
    first_enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_enqueued_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # distinct Trigger values merged into this row, in the order they first came
    triggers: Mapped[list[str]] = mapped_column(JsonDocument)
    source: Mapped[str | None] = mapped_column(Text)
    again: Mapped[bool] = mapped_column(Boolean, server_default=false())
    attempts: Mapped[int] = mapped_column(Integer)
    claimed_by: Mapped[str | None] = mapped_column(String(OWNER_LENGTH))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_one_of("state", RescreenState), name="state"),
        # take: the pending rows that are due, oldest due first
        Index(None, "state", "due_at"),
        # expired leases
        Index(None, "state", "lease_expires_at"),
    )


class Cohort(Base):
    """A named screening population: a FHIR search, a Group or a list of ids (`spec`), and
    the cron schedule on which all its members are screened again (windows expire without
    new data)."""

    __tablename__ = "cohorts"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    kind: Mapped[str] = mapped_column(String(STATE_LENGTH))
    spec: Mapped[Any] = mapped_column(JsonDocument)
    schedule: Mapped[str] = mapped_column(
        String(120), server_default=text(repr(DEFAULT_COHORT_SCHEDULE))
    )
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (CheckConstraint(_one_of("kind", CohortKind), name="kind"),)


class CohortMember(Base):
    """A patient a cohort holds, as of its last refresh: the screening population is every
    patient some cohort holds."""

    __tablename__ = "cohort_members"

    cohort: Mapped[str] = mapped_column(
        String(64), ForeignKey("cohorts.name", ondelete="CASCADE"), primary_key=True
    )
    patient_id: Mapped[str] = mapped_column(String(PATIENT_ID_LENGTH), primary_key=True)
    refreshed_at: Mapped[datetime] = mapped_column(UTCDateTime)

    # "is this patient in some cohort": by patient
    __table_args__ = (Index(None, "patient_id"),)


class Watermark(Base):
    """How far the incremental sweep of one resource type got: `last_updated` is the newest
    `meta.lastUpdated` seen, on the FHIR server's clock (the next sweep asks for
    `_lastUpdated=gt` it, less a skew allowance); `swept_at` is when, on the service's clock
    (readiness: a sweep that has not run for too long)."""

    __tablename__ = "watermarks"

    resource_type: Mapped[str] = mapped_column(String(64), primary_key=True)
    last_updated: Mapped[datetime | None] = mapped_column(UTCDateTime)
    swept_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_error: Mapped[str | None] = mapped_column(Text)


class ScheduleFire(Base):
    """A scheduled job's firing: inserting the row (job, fire time) is how a job fires once
    across every worker and replica on one database; a second insert conflicts and that
    process skips the firing."""

    __tablename__ = "schedule_fires"

    job: Mapped[str] = mapped_column(String(128), primary_key=True)
    fire_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    fired_by: Mapped[str | None] = mapped_column(String(OWNER_LENGTH))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


# What a coordinator's entry records (issue 15 item 3): a disposition, or an answer to one of
# the criteria only people can decide (criteria.md `manual`).
ReviewKind = StrEnum("ReviewKind", "DISPOSITION MANUAL")


class ReviewEntry(Base):
    """One entry a person made about a patient: a disposition, or a manual criterion's answer.

    Kept apart from the results (a re-screen never touches this table) and append-only: the
    current disposition and answers are each kind's newest entry, the rest is the history.
    `version` numbers a patient's entries 1, 2, 3...; it is the ETag of the patient's review,
    and its unique key is what refuses the second of two people writing from the same version
    (no lost update, on SQLite and PostgreSQL alike). `author` is the signed-in person's or
    the API caller's subject id; `note` is free text, kept here and never in logs.
    """

    __tablename__ = "review_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    patient_id: Mapped[str] = mapped_column(String(PATIENT_ID_LENGTH))
    study: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    kind: Mapped[str] = mapped_column(String(STATE_LENGTH))
    # the manual criterion answered (kind manual); NULL for a disposition
    criterion: Mapped[str | None] = mapped_column(String(64))
    # the disposition's code, or the answer (met / not-met)
    code: Mapped[str] = mapped_column(String(32))
    reason: Mapped[str | None] = mapped_column(Text)
    note: Mapped[str | None] = mapped_column(Text)
    author: Mapped[str] = mapped_column(String(255))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)

    __table_args__ = (
        CheckConstraint(_one_of("kind", ReviewKind), name="kind"),
        UniqueConstraint("patient_id", "study", "version"),
    )
