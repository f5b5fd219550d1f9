"""The write-back outbox: results waiting to be written to the FHIR server.

An entry is queued in the same transaction as its result (service.store.results), so a crash
can never keep a result and lose its write-back. At most one entry per patient and study is
pending: a newer result supersedes a pending older one (`skipped`), and nothing is queued
when the server has this content or a newer result already. Writers take due entries through
the shared queue mechanism (service.store.queue: an attempt counted, a lease on the entry's
due time) and settle them as done, or failed with a retry time or for good.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import and_, insert, select
from sqlalchemy.orm import Session

from service.store.base import StoreBase, aware, check_limit, short
from service.store.errors import NotFound
from service.store.latest import lock_latest
from service.store.models import LatestResult, OutboxState, StoredResult, WritebackEntry
from service.store.queue import WorkQueue
from service.store.types import OutboxEntry

PENDING = WritebackEntry.state == OutboxState.PENDING.value

# The outbox's queue: a pending entry waits until its due time; taking it moves the due time
# a lease ahead, which is all that keeps a second writer off it.
ENTRIES = WorkQueue(WritebackEntry, WritebackEntry.id, PENDING, WritebackEntry.next_attempt_at)


class OutboxStore(StoreBase):
    """The outbox over the shared sessions (see the module docstring)."""

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
            lock_latest(session, patient_id, row.study)
            return self._enqueue(session, patient_id, row.study, result_id, fingerprint)

    def enqueue_review_writeback(
        self, patient_id: str, study: str, written_fingerprint: Callable[[dict[str, Any]], str]
    ) -> int | None:
        """Queue the patient's current result again because what is written with it changed
        (a coordinator's disposition): `written_fingerprint(body)` is the fingerprint the
        write-back will carry. Only for a patient whose results go to the FHIR server (an
        outbox entry exists in any state); None otherwise or when nothing new is needed.

        The same rules as a screen's entry (`_enqueue`): an equal pending or written
        fingerprint queues nothing, so an unchanged disposition writes nothing.
        """
        with self._write() as session:
            of_patient = and_(
                WritebackEntry.patient_id == patient_id, WritebackEntry.study == study
            )
            if session.scalar(select(WritebackEntry.id).where(of_patient).limit(1)) is None:
                return None
            lock_latest(session, patient_id, study)
            current = session.execute(
                select(StoredResult.id, StoredResult.body)
                .join(LatestResult, LatestResult.result_id == StoredResult.id)
                .where(LatestResult.patient_id == patient_id, LatestResult.study == study)
            ).first()
            if current is None:
                return None
            fingerprint = written_fingerprint(current.body)
            return self._enqueue(session, patient_id, study, int(current.id), fingerprint)

    def _enqueue(
        self, session: Session, patient_id: str, study: str, result_id: int, fingerprint: str
    ) -> int | None:
        now = self._now()
        of_patient = and_(WritebackEntry.patient_id == patient_id, WritebackEntry.study == study)
        pending = session.execute(
            select(WritebackEntry.id, WritebackEntry.result_id, WritebackEntry.fingerprint)
            .where(of_patient, PENDING)
            .with_for_update()
        ).first()
        if pending is not None and (
            pending.result_id >= result_id or pending.fingerprint == fingerprint
        ):
            return int(pending.id)  # this content, or a newer result, is queued already
        written = session.execute(
            select(
                WritebackEntry.result_id,
                WritebackEntry.fingerprint,
                StoredResult.fingerprint.label("decision"),
            )
            .join(StoredResult, StoredResult.id == WritebackEntry.result_id)
            .where(of_patient, WritebackEntry.state == OutboxState.DONE.value)
            # the last one written: a disposition writes the same result again (a later id)
            .order_by(WritebackEntry.result_id.desc(), WritebackEntry.id.desc())
            .limit(1)
        ).first()
        if written is not None and written.result_id > result_id:
            return None  # a newer result is on the server: never overwrite it with an older one
        if pending is not None:
            ENTRIES.settle(
                session,
                WritebackEntry.id == pending.id,
                state=OutboxState.SKIPPED.value,
                last_error=f"superseded by result {result_id}",
                updated_at=now,
            )
        if written is not None and written.fingerprint == fingerprint:
            return None  # the server has this content already
        if pending is None and written is not None and written.decision == fingerprint:
            # the server has this decision, written with a disposition (whose entry carried
            # the written fingerprint): a later disposition queues its own entry, so nothing
            # newer waits to be written
            return None
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
        lease: timedelta | None = None,
        patient_id: str | None = None,
    ) -> list[OutboxEntry]:
        """Take up to `limit` pending entries that are due, oldest due first (only those of
        `patient_id` when given).

        Taking an entry counts an attempt and moves its due time `lease` (default: this
        Store's `outbox_lease`) ahead, so another writer does not take it while this one works
        on it; if this writer dies, the entry is due again when the lease ends. Follow with
        mark_writeback_done / _failed.
        """
        check_limit(limit)
        now = aware(now, "now").astimezone(UTC) if now is not None else self._now()
        due = [WritebackEntry.next_attempt_at <= now]
        if patient_id is not None:
            due.append(WritebackEntry.patient_id == patient_id)
        order = (WritebackEntry.next_attempt_at, WritebackEntry.id)
        with self._write() as session:
            taken = [
                entry_id
                for (entry_id,) in ENTRIES.take(
                    session,
                    now=now,
                    lease=self.outbox_lease if lease is None else lease,
                    limit=limit,
                    where=due,
                    order_by=order,
                    returning=[WritebackEntry.id],
                )
            ]
            if not taken:
                return []
            rows = session.execute(
                select(WritebackEntry, StoredResult.body)
                .join(StoredResult, StoredResult.id == WritebackEntry.result_id)
                .where(WritebackEntry.id.in_(taken))
                .order_by(*order)
            ).all()
            return [OutboxEntry.of(entry, body) for entry, body in rows]

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
        values: dict[str, Any] = {"last_error": short(error)}
        if next_attempt_at is None:
            values["state"] = OutboxState.FAILED.value
        else:
            values["next_attempt_at"] = aware(next_attempt_at, "next_attempt_at")
        return self._settle(entry_id, values)

    def _settle(self, entry_id: int, values: dict[str, Any]) -> bool:
        with self._write() as session:
            if ENTRIES.settle(
                session, WritebackEntry.id == entry_id, PENDING, updated_at=self._now(), **values
            ):
                return True
            if session.get(WritebackEntry, entry_id) is None:
                raise NotFound(f"outbox entry {entry_id} not found")
            return False
