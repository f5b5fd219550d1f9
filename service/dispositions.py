"""What coordinators record about a patient (issue 15 items 3 and 4): a disposition, answers to
the criteria only people can decide, and the history of both next to the automatic result's.

Why apart from the screen: the engine decides from EHR data and is re-run at any time; what a
coordinator decided must never be erased or mixed into the criteria's results by that. So the
entries live in their own table (service/store/dispositions.py), are shown next to the result
under keys of their own, and each write names the version it was based on (an ETag): the
second of two people editing the same patient is told who changed it, and nothing is lost.
Texts here are safe to show: codes, versions and author ids, never a note's content.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from service.screening.criteria import manual
from service.screening.registry import REGISTRY
from service.screening.result import ScreenResult
from service.store import Store
from service.store.dispositions import Entry, VersionConflict
from service.store.models import ReviewKind
from service.writeback.fingerprint import fingerprint

MAX_NOTE_CHARS = 2000


class Disposition(StrEnum):
    NEW = "new"
    UNDER_REVIEW = "under-review"
    CONTACTED = "contacted"
    PRESENTED_TO_BOARD = "presented-to-board"
    ELIGIBLE = "eligible"
    NOT_ELIGIBLE = "not-eligible"  # a reason is required
    DEFERRED = "deferred"
    ENROLLED = "enrolled"
    DECLINED = "declined"


class Answer(StrEnum):
    MET = "met"
    NOT_MET = "not-met"


# The criteria of criteria.md §3 that always say `manual`, in §3 order: the ones people answer.
_MANUAL = {manual.CONSENT, manual.COMPLIANCE, manual.TUMOUR_BOARD,
           manual.SBRT_CONTRAINDICATED, manual.UNABLE_TO_CONSENT}  # fmt: skip
MANUAL_CRITERIA: tuple[str, ...] = tuple(c.id for c in REGISTRY if c in _MANUAL)


class InvalidEntry(ValueError):
    """An entry that cannot be kept; `field` names the offending field."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class UnknownCriterion(LookupError):
    def __init__(self, criterion: str) -> None:
        self.criterion = criterion
        super().__init__(
            f"{criterion!r} is not a manual criterion; these are: {', '.join(MANUAL_CRITERIA)}"
        )


class VersionRequired(Exception):
    """A write without the version it is based on (HTTP: If-Match missing)."""

    def __init__(self) -> None:
        super().__init__(
            "say which version you are changing (If-Match with the ETag of your last read)"
        )


class StaleVersion(Exception):
    """The review changed since the writer read it: the current version and who changed it."""

    def __init__(self, expected: int, version: int, author: str | None, at: datetime | None):
        self.expected, self.version, self.author, self.at = expected, version, author, at
        by = f" by {author} at {at.isoformat()}" if author and at else ""
        super().__init__(
            f"this patient's review changed since you read it: you had version {expected}, "
            f"the current version is {version}{by}; read it again and re-apply your change"
        )

    def details(self) -> dict[str, Any]:
        return {"current_version": self.version, "changed_by": self.author,
                "changed_at": self.at.isoformat() if self.at else None}  # fmt: skip


@dataclass(frozen=True)
class Review:
    """A patient's review now: its version (the ETag), the current disposition and answers
    (None / absent when never recorded), and every entry, newest first."""

    version: int
    disposition: Entry | None
    answers: dict[str, Entry]
    entries: list[Entry]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "disposition": entry_dict(self.disposition) if self.disposition else None,
            "manual_answers": {c: entry_dict(e) for c, e in self.answers.items()},
        }


def entry_dict(entry: Entry) -> dict[str, Any]:
    data: dict[str, Any] = {
        "version": entry.version,
        "kind": entry.kind,
        "code": entry.code,
        "reason": entry.reason,
        "note": entry.note,
        "by": entry.author,
        "at": entry.recorded_at.isoformat(),
    }
    if entry.criterion is not None:
        data["criterion"] = entry.criterion
    return data


def _note(value: str | None, field: str = "note") -> str | None:
    if value is not None and len(value) > MAX_NOTE_CHARS:
        raise InvalidEntry(field, f"{field} is {len(value)} characters; at most {MAX_NOTE_CHARS}")
    return value or None


def _code(value: str, allowed: type[StrEnum], field: str) -> str:
    if value not in allowed._value2member_map_:
        choices = ", ".join(m.value for m in allowed)
        raise InvalidEntry(field, f"{field} {value[:40]!r} is not one of: {choices}")
    return value


def parse_version(if_match: str | None) -> int:
    """The version an If-Match header names (`"3"`, `W/"3"`); VersionRequired when absent, a
    version nobody had (-1, always stale) when unreadable."""
    if not if_match or not if_match.strip():
        raise VersionRequired()
    text = if_match.strip().removeprefix("W/").strip('"')
    return int(text) if text.isdigit() else -1


def etag(version: int) -> str:
    return f'"{version}"'


class Reviews:
    """The use cases over one store and study (the API views and the web page call these)."""

    def __init__(self, store: Store, study: str) -> None:
        self._store = store
        self._study = study

    def review(self, patient_id: str) -> Review:
        entries = self._store.review_entries(_reference(patient_id), self._study)
        disposition = next((e for e in entries if e.kind == ReviewKind.DISPOSITION), None)
        answers: dict[str, Entry] = {}
        for entry in entries:
            if entry.kind == ReviewKind.MANUAL and entry.criterion is not None:
                answers.setdefault(entry.criterion, entry)
        ordered = {c: answers[c] for c in MANUAL_CRITERIA if c in answers}
        return Review(entries[0].version if entries else 0, disposition, ordered, entries)

    def check_criterion(self, criterion: str) -> None:
        """UnknownCriterion unless `criterion` is one of MANUAL_CRITERIA."""
        if criterion not in MANUAL_CRITERIA:
            raise UnknownCriterion(criterion)

    def set_disposition(
        self, patient_id: str, version: int, *, code: str, author: str,
        reason: str | None = None, note: str | None = None,
    ) -> Review:  # fmt: skip
        """Record a disposition based on `version`; a not-eligible one needs a reason."""
        _code(code, Disposition, "code")
        reason = _note(reason, "reason")
        if code == Disposition.NOT_ELIGIBLE and not (reason and reason.strip()):
            raise InvalidEntry("reason", "not-eligible needs a reason")
        review = self._add(patient_id, version, ReviewKind.DISPOSITION, code, author,
                           reason=reason, note=_note(note))  # fmt: skip
        self._queue_writeback(patient_id, code)
        return review

    def _queue_writeback(self, patient_id: str, code: str) -> None:
        """The hook after recording a disposition: it sets ResearchSubject.status, so the
        patient's current result is queued for writing again with it (the written fingerprint
        covers the disposition: a new one queues exactly one entry, the same one none). Only
        for a patient whose results are written back; the outbox writes it."""

        def written(body: dict[str, Any]) -> str:
            return fingerprint(ScreenResult.from_dict(body), code)

        self._store.enqueue_review_writeback(_reference(patient_id), self._study, written)

    def answer(
        self, patient_id: str, criterion: str, version: int, *, answer: str, author: str,
        note: str | None = None,
    ) -> Review:  # fmt: skip
        """Record the answer to a manual criterion based on `version`."""
        self.check_criterion(criterion)
        _code(answer, Answer, "answer")
        return self._add(patient_id, version, ReviewKind.MANUAL, answer, author,
                         criterion=criterion, note=_note(note))  # fmt: skip

    def history(self, patient_id: str) -> list[dict[str, Any]]:
        """The automatic result's changes and the coordinators' entries, newest first."""
        reference = _reference(patient_id)
        items: list[tuple[datetime, dict[str, Any]]] = []
        for change in self._store.result_changes(reference, self._study):
            items.append((change.recorded_at, {
                "type": "result", "at": change.recorded_at.isoformat(), "seq": change.seq,
                "status": change.status, "previous_status": change.previous_status,
                "changed_criteria": change.changed_criteria, "trigger": change.trigger,
                "as_of": change.as_of,
            }))  # fmt: skip
        for entry in self._store.review_entries(reference, self._study):
            items.append((entry.recorded_at, {"type": entry.kind, **entry_dict(entry)}))
        items.sort(key=lambda item: item[0], reverse=True)
        return [data for _, data in items]

    def _add(self, patient_id: str, version: int, kind: str, code: str, author: str,
             **fields: str | None) -> Review:  # fmt: skip
        try:
            self._store.add_review_entry(_reference(patient_id), self._study, version,
                                         kind=kind, code=code, author=author, **fields)  # fmt: skip
        except VersionConflict as conflict:
            current = conflict.current
            raise StaleVersion(
                version,
                current.version if current else 0,
                current.author if current else None,
                current.recorded_at if current else None,
            ) from None
        return self.review(patient_id)


def _reference(patient_id: str) -> str:
    return patient_id if patient_id.startswith("Patient/") else f"Patient/{patient_id}"
