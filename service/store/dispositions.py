"""Coordinators' entries about a patient (issue 15 item 3): dispositions and manual answers.

Why a concern of its own, over a table of its own: what people decide must survive every
automatic screen, so nothing in the results' code path reads or writes `review_entries`. The
table is append-only; the current disposition and answers are derived from it, and the
version (1, 2, 3... per patient and study) is the ETag a writer must name. Adding an entry
checks the expected version and inserts the next one in one transaction; the unique key
(patient, study, version) refuses a concurrent writer that read the same version, so the
second of two people is told instead of overwriting the first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError

from service.store.base import StoreBase, check_limit, short
from service.store.models import ReviewEntry, StoredResult

MAX_HISTORY = 200


@dataclass(frozen=True)
class Entry:
    """One stored entry (see `ReviewEntry`)."""

    version: int
    kind: str
    criterion: str | None
    code: str
    reason: str | None
    note: str | None
    author: str
    recorded_at: datetime


@dataclass(frozen=True)
class ResultChange:
    """One change of a patient's automatic result: what it became, from what, and why."""

    seq: int
    status: str
    previous_status: str | None
    changed_criteria: list[str] | None
    trigger: str | None
    as_of: str
    recorded_at: datetime


class VersionConflict(Exception):
    """The review moved on since the writer read it: `current` is its newest entry (None:
    the writer named a version that never existed)."""

    def __init__(self, expected: int, current: Entry | None) -> None:
        self.expected = expected
        self.current = current
        super().__init__(f"version {expected} is not the current one")


def _entry(row: ReviewEntry) -> Entry:
    return Entry(row.version, row.kind, row.criterion, row.code, row.reason, row.note,
                 row.author, row.recorded_at)  # fmt: skip


class ReviewStore(StoreBase):
    """The review entries over the shared sessions (see the module docstring)."""

    def review_entries(self, patient: str, study: str) -> list[Entry]:
        """Every entry for the patient, newest first (the current ones derive from these)."""
        query = (
            select(ReviewEntry)
            .where(ReviewEntry.patient_id == patient, ReviewEntry.study == study)
            .order_by(ReviewEntry.version.desc())
        )
        with self._read() as session:
            return [_entry(row) for row in session.scalars(query)]

    def add_review_entry(
        self,
        patient: str,
        study: str,
        expected_version: int,
        *,
        kind: str,
        code: str,
        author: str,
        criterion: str | None = None,
        reason: str | None = None,
        note: str | None = None,
    ) -> Entry:
        """Append an entry as version `expected_version + 1`; VersionConflict (with the newest
        entry) when `expected_version` is not the patient's current version."""
        try:
            with self._write() as session:
                current = session.scalar(
                    select(func.max(ReviewEntry.version)).where(
                        ReviewEntry.patient_id == patient, ReviewEntry.study == study
                    )
                )
                if (current or 0) != expected_version:
                    raise VersionConflict(expected_version, None)
                row = ReviewEntry(
                    patient_id=patient, study=study, version=expected_version + 1, kind=kind,
                    criterion=criterion, code=code, reason=reason, note=note,
                    author=short(author), recorded_at=self._now(),
                )  # fmt: skip
                session.add(row)
                session.flush()
                return _entry(row)
        except (VersionConflict, IntegrityError):
            entries = self.review_entries(patient, study)
            raise VersionConflict(expected_version, entries[0] if entries else None) from None

    def result_changes(
        self, patient: str, study: str, limit: int = MAX_HISTORY
    ) -> list[ResultChange]:
        """The changes of the patient's current automatic result, newest first (results that
        changed nothing and look backs have no change number and are left out)."""
        check_limit(limit)
        query = (
            select(StoredResult)
            .where(
                StoredResult.patient_id == patient,
                StoredResult.study == study,
                StoredResult.change_seq.is_not(None),
            )
            .order_by(StoredResult.change_seq.desc())
            .limit(limit)
        )
        with self._read() as session:
            return [
                ResultChange(
                    row.change_seq or 0,
                    row.status,
                    row.previous_status,
                    row.changed_criteria,
                    row.trigger,
                    row.as_of.isoformat(),
                    row.created_at,
                )
                for row in session.scalars(query)
            ]
