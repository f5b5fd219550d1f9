"""What the store reports about runs: progress, a run's results page by page, the attrition
funnel, and the write-backs by outbox state.

Read-only: every method here is one read transaction; nothing here changes a row. `progress`
is also what a run keeps as its `counts` when it reaches a final status (service.store.runs).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import Any

from sqlalchemy import Select, and_, func, select
from sqlalchemy.orm import Session

from service.store import cursors
from service.store.base import StoreBase, check_limit
from service.store.errors import NotFound
from service.store.models import (
    OutboxState,
    PatientState,
    ResultStatus,
    Run,
    RunPatient,
    StoredResult,
    WritebackEntry,
)
from service.store.types import (
    Attrition,
    CriterionAttrition,
    Progress,
    RunResultItem,
    WritebackSummary,
)

RESULT_ORDER = ("met", "not-met", "unknown", "manual")
DONE = RunPatient.state == PatientState.DONE.value


def require_run(session: Session, run_id: str) -> None:
    """NotFound when there is no run `run_id` (a report of no run is an error, not zeros)."""
    if session.get(Run, run_id) is None:
        raise NotFound(f"run {run_id} not found")


def progress(session: Session, run_id: str) -> Progress:
    """Patient counts by state and result counts by status (`in_progress` = claimed)."""
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
        .where(RunPatient.run_id == run_id, DONE)
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


def funnel(bodies: Iterable[dict[str, Any]], failed: int) -> Attrition:
    """The attrition of §7 result bodies (in list order): per criterion, in the order the
    results list them, how many were met / not-met / unknown / manual, how many it alone
    rules out, and how many patients are left after it and all before it."""
    totals: dict[str, Counter[str]] = {}
    kinds: dict[str, str] = {}
    ruled_out_by: list[set[str]] = []
    screened = candidate = 0
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
        failed=failed,
        criteria=criteria,
    )


def _by_state(session: Session, query: Select[str, int]) -> dict[str, int]:
    """Outbox entries counted by state (`query` selects state, count): every state present,
    zeros included."""
    counts = dict.fromkeys((s.value for s in OutboxState), 0)
    for state, count in session.execute(query.group_by(WritebackEntry.state)):
        counts[state] = count
    return counts


class ReportStore(StoreBase):
    """The reports over the shared sessions (see the module docstring)."""

    def run_progress(self, run_id: str) -> Progress:
        """Patient counts by state and result counts by status (`in_progress` = claimed)."""
        with self._read() as session:
            require_run(session, run_id)
            return progress(session, run_id)

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
        check_limit(limit)
        after = 0 if cursor is None else cursors.decode(cursor, cursors.RUN_RESULTS_TAG, run_id)
        query = (
            select(RunPatient, StoredResult.body)
            .outerjoin(StoredResult, StoredResult.id == RunPatient.result_id)
            .where(RunPatient.run_id == run_id, RunPatient.position > after)
            .order_by(RunPatient.position)
            .limit(limit + 1)
        )
        if status is not None:
            query = query.where(DONE, StoredResult.status == status)
        with self._read() as session:
            require_run(session, run_id)
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

        The same funnel as the command line's summary (see `funnel`).
        """
        with self._read() as session:
            require_run(session, run_id)
            failed = session.scalar(
                select(func.count()).where(
                    RunPatient.run_id == run_id, RunPatient.state == PatientState.FAILED.value
                )
            )
            bodies = session.scalars(
                select(StoredResult.body)
                .join(RunPatient, RunPatient.result_id == StoredResult.id)
                .where(RunPatient.run_id == run_id, DONE)
                .order_by(RunPatient.position)
                .execution_options(yield_per=500)
            )
            return funnel(bodies, failed or 0)

    def run_writebacks(self, run_id: str) -> WritebackSummary:
        """The write-backs of a run's results by outbox state, with the newest error of one
        still pending (being retried) or given up, so a run shows why its writes did not land."""
        of_run = and_(StoredResult.id == WritebackEntry.result_id, StoredResult.run_id == run_id)
        with self._read() as session:
            counts = _by_state(
                session, select(WritebackEntry.state, func.count()).join(StoredResult, of_run)
            )
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
        with self._read() as session:
            return _by_state(session, select(WritebackEntry.state, func.count()))
