"""The re-screen queue: one row per patient whose data changed or whose result may have aged,
waiting for a screen or being screened (issue 14, "one job per patient at a time").

Why one row per patient: an infusion day writes dozens of resources for one patient, each of
them noticed by a subscription, a sweep or both. Every change merges into the patient's row
(`enqueue`): the triggers are collected, and the row is due a short coalescing delay after
the FIRST change, so a burst becomes one screen that is not postponed for ever by a patient
whose data keeps changing. A change that comes while the patient is being screened sets
`again`: that screen may have read the data before the change, so when it ends the row goes
back to pending (`finish`) instead of away.

Workers take due rows through the store's one lease mechanism (service.store.queue, as a
run's patients): an owner, a lease renewed by a heartbeat, an attempt counted. A worker that
dies loses its rows when the lease ends (`requeue_expired_rescreens`).

`first_enqueued_at` is the oldest change no screen has started to cover: set by the first
change of a pending row, and again by the first change that arrives while the row is
claimed (the screen under way covers the older ones). The queue's age metric reads it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session

from service.store.base import StoreBase, check_limit, short
from service.store.leases import owner_is_dead
from service.store.models import RescreenJob, RescreenState, Trigger
from service.store.queue import WorkQueue

# A burst of changes for one patient within this delay of the first becomes one screen.
DEFAULT_COALESCE = timedelta(seconds=2)
# Patients per statement when a cohort's thousands are enqueued at once.
ENQUEUE_CHUNK = 500

PENDING = RescreenJob.state == RescreenState.PENDING.value
CLAIMED = RescreenJob.state == RescreenState.CLAIMED.value
TRIGGERS = frozenset(trigger.value for trigger in Trigger)

# The re-screen queue: pending rows wait, claimed rows are held by `claimed_by` until
# `lease_expires_at`.
JOBS = WorkQueue(
    RescreenJob, RescreenJob.patient_id, PENDING, RescreenJob.lease_expires_at,
    owner=RescreenJob.claimed_by, taken=CLAIMED,
)  # fmt: skip

NO_CLAIM: dict[str, Any] = {"claimed_by": None, "lease_expires_at": None}


@dataclass(frozen=True)
class RescreenTask:
    """A patient taken for a re-screen: why (the triggers merged, the newest source), since
    when a change waits, and how often it was taken already."""

    patient_id: str
    triggers: tuple[str, ...]
    source: str | None
    first_enqueued_at: datetime
    attempts: int

    @property
    def trigger(self) -> str:
        """The one trigger a result names: the first that noticed the change."""
        return self.triggers[0]


def reference(patient_id: str) -> str:
    """A patient as results name it ("Patient/<id>"), so one patient is one row however a
    caller spells it."""
    return patient_id if patient_id.startswith("Patient/") else f"Patient/{patient_id}"


def _checked_trigger(trigger: str) -> str:
    if trigger not in TRIGGERS:
        raise ValueError(f"unknown trigger {trigger!r} (one of {sorted(TRIGGERS)})")
    return trigger


def _delete(session: Session, *where: ColumnElement[bool]) -> bool:
    """Delete the rows `where` holds; whether there was one."""
    deleted = delete(RescreenJob).where(*where).returning(RescreenJob.patient_id)
    return bool(session.scalars(deleted).all())


class RescreenStore(StoreBase):
    """The re-screen queue over the shared sessions (see the module docstring)."""

    def enqueue(
        self,
        patient_ids: Iterable[str],
        trigger: str,
        source: str | None = None,
        *,
        delay: timedelta = DEFAULT_COALESCE,
    ) -> int:
        """Queue each patient for a re-screen, merging into the row it may have already.

        A new row is due `delay` from now; a pending row keeps its due time (the burst
        coalesces on the first change) and gains `trigger`; a claimed row is marked `again`
        (due `delay` after the first change that came during its screen). `source` (a
        subscription id, a resource type, a cohort: ids only) replaces the row's. Patients are
        ids or references; rows are keyed by reference ("Patient/<id>", as results are).
        Returns how many patients got a new row.
        """
        _checked_trigger(trigger)
        wanted = sorted(
            {reference(patient_id) for patient_id in patient_ids}
        )  # one lock order: no deadlock between two enqueuers
        now = self._now()
        created = 0
        with self._write() as session:
            for start in range(0, len(wanted), ENQUEUE_CHUNK):
                chunk = wanted[start : start + ENQUEUE_CHUNK]
                created += self._merge(session, chunk, trigger, source, now, now + delay)
        return created

    def _merge(
        self,
        session: Session,
        patient_ids: list[str],
        trigger: str,
        source: str | None,
        now: datetime,
        due_at: datetime,
    ) -> int:
        new_rows = [
            {
                "patient_id": patient_id,
                "state": RescreenState.PENDING.value,
                "due_at": due_at,
                "first_enqueued_at": now,
                "last_enqueued_at": now,
                "triggers": [trigger],
                "source": source,
                "again": False,
                "attempts": 0,
                "updated_at": now,
            }
            for patient_id in patient_ids
        ]
        inserted = session.scalars(
            self._insert(RescreenJob)
            .values(new_rows)
            .on_conflict_do_nothing(index_elements=[RescreenJob.patient_id])
            .returning(RescreenJob.patient_id)
        ).all()
        existing = [p for p in patient_ids if p not in set(inserted)]
        if not existing:
            return len(inserted)
        of_existing = RescreenJob.patient_id.in_(existing)
        rows = session.execute(
            select(RescreenJob.patient_id, RescreenJob.triggers)
            .where(of_existing)
            .order_by(RescreenJob.patient_id)
            .with_for_update()
        ).all()
        session.execute(
            update(RescreenJob)
            .where(of_existing)
            .values(last_enqueued_at=now, source=source, updated_at=now)
        )
        # the first change during a screen: the row runs again after it, due after a delay
        session.execute(
            update(RescreenJob)
            .where(of_existing, CLAIMED, RescreenJob.again.is_(False))
            .values(again=True, due_at=due_at, first_enqueued_at=now)
        )
        for patient_id, triggers in rows:
            if trigger not in triggers:
                session.execute(
                    update(RescreenJob)
                    .where(RescreenJob.patient_id == patient_id)
                    .values(triggers=[*triggers, trigger])
                )
        return len(inserted)

    def release_rescreens(
        self, patient_ids: Iterable[str], *, delay: timedelta = DEFAULT_COALESCE
    ) -> int:
        """Make the rows of these patients that are held back (due later than `delay` from
        now, as a sweep holds what it queues until it has read every page) due `delay` from
        now; sooner only, never later. Returns how many rows moved."""
        wanted = sorted({reference(patient_id) for patient_id in patient_ids})
        due_at = self._now() + delay
        moved = 0
        with self._write() as session:
            for start in range(0, len(wanted), ENQUEUE_CHUNK):
                held = and_(
                    RescreenJob.patient_id.in_(wanted[start : start + ENQUEUE_CHUNK]),
                    RescreenJob.due_at > due_at,
                )
                moved += len(JOBS.settle(session, held, due_at=due_at))
        return moved

    def take_rescreens(self, limit: int) -> list[RescreenTask]:
        """Take up to `limit` due patients for this Store's worker (oldest due first).

        Each is claimed by this Store (`owner`) for `claim_lease` (renew with
        `renew_rescreens`), its `again` cleared: the screen about to start covers every
        change so far. Follow with `finish_rescreen` or `fail_rescreen`.
        """
        check_limit(limit)
        now = self._now()
        with self._write() as session:
            rows = JOBS.take(
                session,
                now=now,
                lease=self.claim_lease,
                limit=limit,
                where=[RescreenJob.due_at <= now],
                order_by=[RescreenJob.due_at, RescreenJob.patient_id],
                owner=self.owner,
                values={"state": RescreenState.CLAIMED.value, "again": False},
                returning=[
                    RescreenJob.patient_id,
                    RescreenJob.triggers,
                    RescreenJob.source,
                    RescreenJob.first_enqueued_at,
                    RescreenJob.attempts,
                    RescreenJob.due_at,
                ],
            )
        ordered = sorted(rows, key=lambda row: (row.due_at, row.patient_id))
        return [
            RescreenTask(row.patient_id, tuple(row.triggers), row.source,
                         row.first_enqueued_at, row.attempts)
            for row in ordered
        ]  # fmt: skip

    def any_due(self) -> bool:
        """Whether some patient is due (a read: an idle worker polls with it, and takes, which
        writes, only when there is something to take)."""
        due = and_(PENDING, RescreenJob.due_at <= self._now())
        with self._read() as session:
            return session.scalar(select(RescreenJob.patient_id).where(due).limit(1)) is not None

    def finish_rescreen(self, patient_id: str) -> bool:
        """The patient was screened: its row goes, or back to pending when a change came
        during the screen (`again`). False when this Store no longer held it (its lease ran
        out and another worker took it)."""
        mine = (RescreenJob.patient_id == patient_id, *JOBS.held_by(self.owner))
        with self._write() as session:  # the common case first: no change came meanwhile
            if _delete(session, *mine, RescreenJob.again.is_(False)):
                return True
            again = {**self._back_to_pending(), "attempts": 0}
            return bool(JOBS.settle(session, *mine, RescreenJob.again.is_(True), **again))

    def fail_rescreen(self, patient_id: str, error: str, retry_in: timedelta | None) -> bool:
        """The screen failed (`error`: ids and causes only). The row is due again in
        `retry_in`, or, when None, goes unless a change came meanwhile: the next change, sweep
        or scheduled re-screen queues the patient again. False when this Store no longer
        held it."""
        mine = (RescreenJob.patient_id == patient_id, *JOBS.held_by(self.owner))
        values = {**self._back_to_pending(), "last_error": short(error)}
        with self._write() as session:
            if retry_in is not None:
                values["due_at"] = self._now() + retry_in
                return bool(JOBS.settle(session, *mine, **values))
            if JOBS.settle(session, *mine, RescreenJob.again.is_(True), **values):
                return True
            return _delete(session, *mine)

    def _back_to_pending(self) -> dict[str, Any]:
        return {
            "state": RescreenState.PENDING.value,
            "again": False,
            "updated_at": self._now(),
            **NO_CLAIM,
        }

    def renew_rescreens(self) -> int:
        """The heartbeat: move the lease end of every re-screen this Store holds
        `claim_lease` ahead. Returns how many it holds."""
        until = self._now() + self.claim_lease
        with self._write() as session:
            return len(JOBS.settle(session, *JOBS.held_by(self.owner), lease_expires_at=until))

    def release_own_rescreens(self) -> int:
        """At a graceful stop: the re-screens this Store holds go back to pending, due now,
        for another worker to take at once. Returns how many."""
        with self._write() as session:
            return len(JOBS.settle(session, *JOBS.held_by(self.owner), **self._back_to_pending()))

    def requeue_expired_rescreens(self) -> int:
        """Claimed rows whose lease ran out, or whose owner is known dead, go back to pending.
        Returns how many."""
        now = self._now()
        with self._read() as session:
            owners = set(session.scalars(select(RescreenJob.claimed_by).distinct().where(CLAIMED)))
        if not owners:
            return 0
        dead = [o for o in owners if o is not None and o != self.owner and owner_is_dead(o)]
        gone: list[ColumnElement[bool]] = JOBS.expired(now)
        if dead:
            gone.append(RescreenJob.claimed_by.in_(dead))
        with self._write() as session:
            return len(JOBS.settle(session, CLAIMED, or_(*gone), **self._back_to_pending()))

    def depth(self, state: str | None = None) -> int:
        """How many patients wait for a re-screen or are being screened (`state`: only
        those pending, or only those claimed)."""
        query = select(func.count()).select_from(RescreenJob)
        if state is not None:
            query = query.where(RescreenJob.state == RescreenState(state).value)
        with self._read() as session:
            return int(session.scalar(query) or 0)

    def oldest_pending_age(self) -> timedelta | None:
        """How long the oldest change that no screen has started to cover has waited (None
        when there is none): pending rows, and claimed rows a change came to meanwhile."""
        waiting = or_(PENDING, and_(CLAIMED, RescreenJob.again.is_(True)))
        with self._read() as session:
            oldest = session.scalar(select(func.min(RescreenJob.first_enqueued_at)).where(waiting))
        if oldest is None:
            return None
        return max(self._now() - oldest, timedelta(0))
