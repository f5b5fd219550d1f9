"""What the store hands back: plain values (dataclasses and TypedDicts), never ORM rows.

Why apart: the API's schemas, the CLI and the runtime read these shapes; they need not import
SQLAlchemy sessions or the queue machinery to do so. `RunInfo.of` is the only place an ORM
`Run` becomes a value.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import date, datetime
from typing import Any, NamedTuple, TypedDict

from service.store.models import Run, WritebackEntry

__all__ = [
    "Attrition",
    "ChangeItem",
    "CriterionAttrition",
    "OutboxEntry",
    "Progress",
    "Recorded",
    "RunInfo",
    "RunResultItem",
    "WritebackSummary",
]


def _iso(value: date | None) -> str | None:
    return value.isoformat() if value is not None else None


@dataclass(frozen=True)
class RunInfo:
    id: str
    kind: str
    spec: Any
    as_of: date
    write_back: bool
    status: str
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    error: str | None
    counts: dict[str, int] | None
    look_back: bool = False  # as_of before the service's date: results are never current

    @classmethod
    def of(cls, run: Run) -> RunInfo:
        values = {field.name: getattr(run, field.name) for field in fields(cls)}
        values["look_back"] = bool(run.look_back)
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: dates and times as ISO 8601 text (the fields in their declared order)."""
        values = {field.name: getattr(self, field.name) for field in fields(self)}
        for name in ("as_of", "created_at", "started_at", "finished_at"):
            values[name] = _iso(values[name])
        return values


class Progress(TypedDict):
    """Patients of a run by state, and the results found so far by status."""

    total: int
    pending: int
    in_progress: int
    done: int
    failed: int
    candidate: int
    ineligible: int


class RunResultItem(TypedDict):
    position: int
    patient: str
    state: str
    error: str | None
    result_id: int | None
    result: dict[str, Any] | None


class ChangeItem(TypedDict):
    """One change of a patient's decision. `previous_status` None: the patient's first result;
    `changed_criteria`: ids whose result or reason changed (all for the first result; None on
    changes recorded before issue 14); `trigger`/`source`: why the screen ran and where its
    data came from (None when not said)."""

    seq: int
    result_id: int
    patient: str
    study: str
    previous_status: str | None
    status: str
    changed_criteria: list[str] | None
    trigger: str | None
    source: str | None
    as_of: str
    fingerprint: str
    created_at: str
    result: dict[str, Any]
    disposition: dict[str, Any] | None  # the coordinators' (code, by, at) at the entry's time


CriterionAttrition = TypedDict(
    "CriterionAttrition",
    {
        "id": str,
        "kind": str,
        "met": int,
        "not-met": int,
        "unknown": int,
        "manual": int,
        # patients this criterion alone rules out
        "ruled_out": int,
        # patients still eligible after this criterion and every one before it (the funnel)
        "left": int,
    },
)


class WritebackSummary(TypedDict):
    """A run's write-backs by outbox state; `last_error`: why the newest failing one failed."""

    pending: int
    done: int
    failed: int
    skipped: int
    last_error: str | None


class Attrition(TypedDict):
    screened: int
    candidate: int
    ineligible: int
    failed: int
    criteria: list[CriterionAttrition]


@dataclass(frozen=True)
class OutboxEntry:
    """A write-back to do: the result to write and how often it was tried already."""

    id: int
    patient_id: str
    study: str
    result_id: int
    fingerprint: str
    attempts: int
    result: dict[str, Any]

    @classmethod
    def of(cls, entry: WritebackEntry, result: dict[str, Any]) -> OutboxEntry:
        """The entry as taken from the outbox, with the result it is to write."""
        names = [field.name for field in fields(cls) if field.name != "result"]
        return cls(**{name: getattr(entry, name) for name in names}, result=result)


class Recorded(NamedTuple):
    result_id: int
    changed: bool
    # False for a look back: stored, but not the patient's current result (never written back)
    current: bool = True
