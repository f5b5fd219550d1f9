"""A run's patients as a work queue: claims with an owner and a lease, the heartbeat, release,
requeue of claims nobody holds any more, and a patient's outcome.

Each patient of a run is `pending` → `claimed` (a worker has it) → `done` | `failed`. A claim
names its owner (this Store's `owner`: host, pid, token) and a lease end; the owner renews its
leases by a heartbeat (`renew_claims`), and only a claim whose lease ran out, or whose owner is
known dead (service.store.leases), goes back to pending (`requeue_expired_claims`). A result or
failure is recorded only by the claim's owner, so a patient is never recorded twice. The queue
mechanism itself (take, lease, settle) is service.store.queue's, shared with the outbox.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, exists, or_, select
from sqlalchemy.orm import Session

from service.store.base import StoreBase, aware, check_limit, short
from service.store.errors import ClaimLost, NotFound
from service.store.models import (
    ACTIVE_RUN_STATUSES,
    PatientState,
    Run,
    RunPatient,
    RunStatus,
)
from service.store.queue import WorkQueue

log = logging.getLogger(__name__)

CLAIMED = RunPatient.state == PatientState.CLAIMED.value
PENDING = RunPatient.state == PatientState.PENDING.value

# The run patients' queue: pending rows wait, claimed rows are held by `claimed_by` until
# `lease_expires_at`.
PATIENTS = WorkQueue(
    RunPatient, RunPatient.patient_id, PENDING, RunPatient.lease_expires_at,
    owner=RunPatient.claimed_by, taken=CLAIMED,
)  # fmt: skip

# What a patient row holds once no worker has it (released, requeued or settled): one spelling,
# so every way out of `claimed` clears the same columns.
NO_CLAIM: Mapping[str, None] = {"claimed_at": None, "claimed_by": None, "lease_expires_at": None}


def active_runs() -> Select[str]:
    """The ids of the runs still queued or running (a subquery)."""
    return select(Run.id).where(Run.status.in_(ACTIVE_RUN_STATUSES))


class ClaimStore(StoreBase):
    """The run patients' queue over the shared sessions (see the module docstring)."""

    def claim_pending(self, run_id: str, limit: int) -> list[str]:
        """Claim up to `limit` pending patients of a running run for one worker (list order).

        One UPDATE statement (`WorkQueue.take`): concurrent workers get disjoint patients
        without waiting for each other. Nothing is claimed unless the run is `running`, which
        is how a cancel stops the workers. The claims are this Store's (`owner`), leased for
        `claim_lease` (see `renew_claims`).
        """
        check_limit(limit)
        now = self._now()
        of_run = RunPatient.run_id == run_id
        with self._write() as session:
            rows = PATIENTS.take(
                session,
                now=now,
                lease=self.claim_lease,
                limit=limit,
                where=[of_run],
                order_by=[RunPatient.position],
                also=[
                    of_run,
                    exists().where(Run.id == run_id, Run.status == RunStatus.RUNNING.value),
                ],
                owner=self.owner,
                values={"state": PatientState.CLAIMED.value, "claimed_at": now},
                returning=[RunPatient.patient_id, RunPatient.position],
            )
        return [patient_id for patient_id, _ in sorted(rows, key=lambda row: row[1])]

    def renew_claims(self) -> int:
        """The heartbeat: move the lease end of every claim this Store holds `claim_lease`
        ahead. Returns how many claims it holds."""
        now = self._now()
        with self._write() as session:
            renewed = PATIENTS.settle(
                session, *PATIENTS.held_by(self.owner), lease_expires_at=now + self.claim_lease
            )
        return len(renewed)

    def release_own_claims(self) -> int:
        """At a graceful stop: give every claim this Store holds back (pending), so another
        process takes them at once instead of after the lease. Returns how many."""
        return self._release_own_to_pending()

    def release_claims(self, run_id: str, patient_ids: Iterable[str]) -> int:
        """Give claimed patients of a run back (pending) without an outcome: the worker that
        claimed them could not record them. Returns how many were still claimed."""
        wanted = list(dict.fromkeys(patient_ids))
        if not wanted:
            return 0
        return self._release_own_to_pending(
            RunPatient.run_id == run_id, RunPatient.patient_id.in_(wanted)
        )

    def _release_own_to_pending(self, *narrowed_to: ColumnElement[bool]) -> int:
        """Put the patients this Store has claimed (narrowed by `narrowed_to`) back to pending,
        lease and owner cleared, so any worker may claim them again. One statement for both
        the graceful stop and a worker that could not record, so the two cannot drift apart on
        what a released claim looks like. Returns how many were released."""
        with self._write() as session:
            released = PATIENTS.settle(
                session,
                *narrowed_to,
                *PATIENTS.held_by(self.owner),
                state=PatientState.PENDING.value,
                updated_at=self._now(),
                **NO_CLAIM,
            )
        return len(released)

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
            aware(stale_before, "stale_before")
        now = self._now()
        dead = [owner for owner in dict.fromkeys(dead_owners) if owner != self.owner]
        active = active_runs()
        if run_id is not None:
            active = active.where(Run.id == run_id)
        gone = PATIENTS.expired(now)
        if dead:
            gone.append(RunPatient.claimed_by.in_(dead))
        if stale_before is not None:
            gone.append(RunPatient.claimed_at < stale_before)
        claimed = and_(RunPatient.run_id.in_(active), CLAIMED, or_(*gone))
        with self._write() as session:
            if max_attempts is not None:
                PATIENTS.settle(
                    session,
                    claimed,
                    RunPatient.attempts >= max_attempts,
                    state=PatientState.FAILED.value,
                    error=f"screening was interrupted {max_attempts} times; given up",
                    updated_at=now,
                    **NO_CLAIM,
                )
            requeued = PATIENTS.settle(
                session, claimed, state=PatientState.PENDING.value, updated_at=now, **NO_CLAIM
            )
        if requeued:
            log.info("re-queued %d interrupted patients", len(requeued))
        return len(requeued)

    def claim_owners(self, run_id: str | None = None) -> set[str]:
        """The owners of the live claims of active runs (to find the dead ones among them)."""
        query = (
            select(RunPatient.claimed_by)
            .distinct()
            .where(
                CLAIMED, RunPatient.claimed_by.is_not(None), RunPatient.run_id.in_(active_runs())
            )
        )
        if run_id is not None:
            query = query.where(RunPatient.run_id == run_id)
        with self._read() as session:
            return {owner for owner in session.scalars(query) if owner is not None}

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
                {"state": PatientState.FAILED.value, "error": short(reason)},
            )

    def _settle_patient(
        self, session: Session, run_id: str, patient_id: str, values: dict[str, Any]
    ) -> None:
        """Give a run's patient its outcome if this Store may (the patient is pending, or
        claimed by this Store); ClaimLost when another process holds or settled it."""
        mine = or_(
            PENDING,
            and_(*PATIENTS.held_by(self.owner)),
            # claims made before migration 0002 have no owner
            and_(CLAIMED, RunPatient.claimed_by.is_(None)),
        )
        the_patient = (RunPatient.run_id == run_id, RunPatient.patient_id == patient_id)
        marked = PATIENTS.settle(
            session, *the_patient, mine, updated_at=self._now(), **NO_CLAIM, **values
        )
        if marked:
            return
        held = session.scalar(select(RunPatient.state).where(*the_patient))
        if held is None:
            raise NotFound(f"patient {patient_id} is not in run {run_id}")
        raise ClaimLost(
            f"patient {patient_id} of run {run_id} is {held} by another process: not recorded"
        )
