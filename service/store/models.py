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
