"""The coordinators' worklist: one page of current results, filtered and sorted in the database.

Why here and read-only: the worklist must stay fast with 10,000 patients, so filtering, sorting,
counting and paging happen in SQL over `latest_results` (the current result of each patient,
never a look back) and only one page of result bodies is read. When the result last changed is
the time of the result that drew the current change number (`latest_results.change_seq`): an
unchanged re-screen moves `as_of` but not that time. The current disposition (issue 15 item 3)
is each patient's newest disposition entry in `review_entries`, joined in SQL (a grouped
subquery on the table's unique key) so its filter and sort page in the database too; a patient
nobody has decided on yet reads as `new`, the disposition every candidate starts with.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any, Literal

from sqlalchemy import ColumnElement, Select, and_, func, select
from sqlalchemy.orm import aliased

from service.store.base import StoreBase, aware, check_limit
from service.store.models import (
    LatestResult,
    ResultStatus,
    ReviewEntry,
    ReviewKind,
    StoredResult,
)

SORTS = ("changed", "patient", "status", "disposition")
UNDECIDED = "new"  # the disposition of a patient with no disposition entry
Missing = Literal["any", "some", "none"]
STATUSES = tuple(status.value for status in ResultStatus)


@dataclass(frozen=True)
class WorklistQuery:
    """What a coordinator asked for: filters, sort and the page (offset/limit).

    `missing`: "some" keeps results with missing data, "none" those without; `changed_since`
    keeps results whose decision changed after that instant (also "new since my last visit");
    `disposition` keeps patients whose current disposition has that code (`new` includes
    those with none recorded). The codes are the use cases' (service/dispositions.py).
    """

    study: str
    status: str | None = None
    disposition: str | None = None
    missing: Missing = "any"
    changed_since: datetime | None = None
    sort: str = "changed"
    descending: bool = True
    offset: int = 0
    limit: int = 50

    def __post_init__(self) -> None:
        check_limit(self.limit)
        if self.offset < 0:
            raise ValueError("offset must not be negative")
        if self.sort not in SORTS:
            raise ValueError(f"sort must be one of {', '.join(SORTS)}")
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"status must be one of {', '.join(STATUSES)}")
        if self.missing not in ("any", "some", "none"):
            raise ValueError("missing must be any, some or none")
        if self.changed_since is not None:
            aware(self.changed_since, "changed_since")


@dataclass(frozen=True)
class WorklistRow:
    """One patient's current result as the worklist shows it (ids, no names)."""

    patient: str
    status: str
    patient_type: int | None
    as_of: date
    changed_at: datetime
    missing_data: tuple[str, ...] = ()
    needs_review: tuple[str, ...] = ()
    disposition: str = UNDECIDED

    @classmethod
    def from_row(cls, patient: str, status: str, as_of: date, changed_at: datetime,
                 body: dict[str, Any], disposition: str) -> WorklistRow:  # fmt: skip
        patient_type = body.get("patient_type")
        return cls(
            patient=patient,
            status=status,
            patient_type=patient_type if isinstance(patient_type, int) else None,
            as_of=as_of,
            changed_at=changed_at,
            missing_data=tuple(str(m) for m in body.get("missing_data") or ()),
            needs_review=tuple(str(n) for n in body.get("needs_review") or ()),
            disposition=disposition,
        )


@dataclass(frozen=True)
class WorklistPage:
    rows: list[WorklistRow]
    total: int  # results matching the filters, over all pages
    offset: int
    limit: int
    counts: dict[str, int] = field(default_factory=dict)  # current results per status

    @property
    def has_next(self) -> bool:
        return self.offset + len(self.rows) < self.total


class WorklistStore(StoreBase):
    """Read-only paged queries over the current results (see the module docstring)."""

    def worklist(self, query: WorklistQuery) -> WorklistPage:
        current, changed = aliased(StoredResult), aliased(StoredResult)
        changed_at = changed.created_at
        decided, disposition = self._current_disposition(query.study)
        base = (
            select(LatestResult.patient_id)
            .join(current, current.id == LatestResult.result_id)
            .join(changed, changed.change_seq == LatestResult.change_seq)
            .outerjoin(decided, decided.c.patient_id == LatestResult.patient_id)
            .outerjoin(
                disposition,
                and_(
                    disposition.patient_id == decided.c.patient_id,
                    disposition.study == query.study,
                    disposition.version == decided.c.version,
                ),
            )
            .where(LatestResult.study == query.study)
        )
        code = func.coalesce(disposition.code, UNDECIDED)
        if query.status is not None:
            base = base.where(current.status == query.status)
        if query.disposition is not None:
            base = base.where(code == query.disposition)
        if query.missing != "any":
            count = self._missing_count(current)
            base = base.where(count > 0 if query.missing == "some" else count == 0)
        if query.changed_since is not None:
            base = base.where(changed_at > query.changed_since)
        order = {"changed": changed_at, "patient": LatestResult.patient_id,
                 "status": current.status, "disposition": code}[query.sort]  # fmt: skip
        ordering = order.desc() if query.descending else order.asc()
        page: Select[Any] = (
            base.with_only_columns(
                LatestResult.patient_id,
                current.status,
                current.as_of,
                changed_at,
                current.body,
                code,
            )
            .order_by(ordering, LatestResult.patient_id)
            .offset(query.offset)
            .limit(query.limit)
        )
        with self._read() as session:
            total = session.scalar(select(func.count()).select_from(base.subquery())) or 0
            rows = [WorklistRow.from_row(*row) for row in session.execute(page).all()]
            counts = self._status_counts(session, query.study)
        return WorklistPage(rows, int(total), query.offset, query.limit, counts)

    @staticmethod
    def _current_disposition(study: str) -> tuple[Any, Any]:
        """Each patient's newest disposition entry: (patient, its version) grouped, and the
        entries aliased to be joined on that (patient, study, version), the table's unique key."""
        decided = (
            select(ReviewEntry.patient_id, func.max(ReviewEntry.version).label("version"))
            .where(ReviewEntry.study == study, ReviewEntry.kind == ReviewKind.DISPOSITION)
            .group_by(ReviewEntry.patient_id)
            .subquery("decided")
        )
        return decided, aliased(ReviewEntry)

    def _missing_count(self, current: Any) -> ColumnElement[int]:
        """How many items the result's `missing_data` has (0 when absent), in either dialect."""
        if self._postgres:
            length = func.jsonb_array_length(current.body["missing_data"])
        else:
            length = func.json_array_length(current.body, "$.missing_data")
        return func.coalesce(length, 0)

    @staticmethod
    def _status_counts(session: Any, study: str) -> dict[str, int]:
        rows = session.execute(
            select(StoredResult.status, func.count())
            .join(LatestResult, LatestResult.result_id == StoredResult.id)
            .where(LatestResult.study == study)
            .group_by(StoredResult.status)
        ).all()
        return {str(status): int(n) for status, n in rows}
