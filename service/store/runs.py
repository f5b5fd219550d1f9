"""Runs and their patient lists: create, add patients, move a run through its statuses, list
the runs to resume after a restart.

A run is `queued` → `running` → `done` | `failed` | `cancelled`; a final run stays final. Its
patients are appended in list order (`position`), idempotently, so a run that enumerates a
FHIR search page by page can replay pages after a restart. Working through the patients is
the claims' business (service.store.claims).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date, datetime
from typing import Any
from uuid import uuid4

from sqlalchemy import func, insert, select, update
from sqlalchemy.orm import Session

from service.store.base import check_limit, short
from service.store.claims import ClaimStore
from service.store.errors import NotFound, RunStateError
from service.store.models import (
    ACTIVE_RUN_STATUSES,
    FINAL_RUN_STATUSES,
    PATIENT_ID_LENGTH,
    PatientState,
    Run,
    RunKind,
    RunPatient,
    RunStatus,
)
from service.store.reports import progress
from service.store.types import RunInfo

INSERT_CHUNK = 500


def locked_run(session: Session, run_id: str) -> Run:
    """The run, its row locked for the transaction (which serialises changes to one run);
    NotFound when there is none."""
    run = session.scalars(select(Run).where(Run.id == run_id).with_for_update()).first()
    if run is None:
        raise NotFound(f"run {run_id} not found")
    return run


class RunStore(ClaimStore):
    """Runs over the shared sessions; a claims store too, because resuming runs requeues the
    claims nobody holds any more."""

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
        check_limit(limit)
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
        run = locked_run(session, run_id)
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
            return self._transition(session, locked_run(session, run_id), RunStatus(status), error)

    def _transition(self, session: Session, run: Run, status: RunStatus, error: str | None) -> bool:
        if run.status in FINAL_RUN_STATUSES or run.status == status:
            return False
        now = self._now()
        values: dict[str, Any] = {"status": status.value}
        if status is RunStatus.RUNNING and run.started_at is None:
            values["started_at"] = now
        if status in FINAL_RUN_STATUSES:
            values["finished_at"] = now
            values["counts"] = dict(progress(session, run.id))
        if error is not None:
            values["error"] = short(error)
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
            run = locked_run(session, run_id)
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
