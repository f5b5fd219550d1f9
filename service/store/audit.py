"""The audit log: every look at patient data, append-only (issue 15 item 7).

Why a table of its own and no update or delete method: a privacy officer must be able to trust
that what was seen is still listed. Each row says who looked, when (the service's clock), what
kind of look it was, which patients (ids only), the HTTP outcome and the client's address; never
the data itself. Rows are read back by time range for the export, paged by their id.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import JSON, Index, Integer, String, select
from sqlalchemy.orm import Mapped, mapped_column

from service.store.base import StoreBase
from service.store.models import Base, BigId, UTCDateTime

ACTOR_LENGTH = 255
ACTION_LENGTH = 32
ADDRESS_LENGTH = 64  # an IPv6 address with zone fits
MAX_AUDIT_PAGE = 1000


class AuditRow(Base):
    """One look: who, when, which action, which patients, the HTTP status, from where."""

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(BigId, primary_key=True, autoincrement=True)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime)
    actor: Mapped[str] = mapped_column(String(ACTOR_LENGTH))
    action: Mapped[str] = mapped_column(String(ACTION_LENGTH))
    patients: Mapped[list[str]] = mapped_column(JSON)
    outcome: Mapped[int] = mapped_column(Integer)
    client: Mapped[str | None] = mapped_column(String(ADDRESS_LENGTH))

    __table_args__ = (Index("ix_audit_log_recorded_at", "recorded_at"),)


@dataclass(frozen=True)
class AuditEntry:
    id: int
    recorded_at: datetime
    actor: str
    action: str
    patients: tuple[str, ...]
    outcome: int
    client: str | None


class AuditStore(StoreBase):
    """Append and read the audit log over the shared sessions."""

    def record_access(
        self, actor: str, action: str, patients: list[str], outcome: int, client: str | None
    ) -> AuditEntry:
        """Append one entry stamped with the store's clock."""
        with self._write() as session:
            row = AuditRow(
                recorded_at=self._now(), actor=actor[:ACTOR_LENGTH], action=action,
                patients=list(patients), outcome=outcome,
                client=client[:ADDRESS_LENGTH] if client else None,
            )  # fmt: skip
            session.add(row)
            session.flush()
            return _entry(row)

    def audit_entries(
        self, since: datetime, until: datetime, *, after: int = 0, limit: int = MAX_AUDIT_PAGE
    ) -> list[AuditEntry]:
        """Entries recorded in [since, until), oldest first, after entry id `after` (paging)."""
        query = (
            select(AuditRow)
            .where(AuditRow.recorded_at >= since, AuditRow.recorded_at < until)
            .where(AuditRow.id > after)
            .order_by(AuditRow.id)
            .limit(max(1, min(limit, MAX_AUDIT_PAGE)))
        )
        with self._read() as session:
            return [_entry(row) for row in session.scalars(query)]


def _entry(row: AuditRow) -> AuditEntry:
    return AuditEntry(row.id, row.recorded_at, row.actor, row.action, tuple(row.patients),
                      row.outcome, row.client)  # fmt: skip
