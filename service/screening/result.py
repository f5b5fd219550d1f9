"""The output contract of a screen (criteria.md §7), the same for every interface."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from enum import Enum, StrEnum
from typing import Any

from service.screening.decision import Decision, Evidence, Kind, Result, rules_out
from service.screening.registry import REGISTRY

__all__ = [
    "CRITERIA",
    "CRITERION_KINDS",
    "CriterionResult",
    "Decision",
    "Evidence",
    "Kind",
    "Result",
    "ScreenResult",
    "Status",
]


class Status(StrEnum):
    CANDIDATE = "candidate"
    INELIGIBLE = "ineligible"


# Every criterion of criteria.md §3, in §3 order, as declared in the registry. Ids are stable:
# stored results and the FHIR write-back use them.
CRITERIA: tuple[tuple[str, Kind], ...] = tuple((c.id, c.kind) for c in REGISTRY)
CRITERION_KINDS: dict[str, Kind] = dict(CRITERIA)


@dataclass(frozen=True)
class CriterionResult:
    id: str
    kind: Kind
    result: Result
    reason: str
    evidence: tuple[Evidence, ...] = ()

    def rules_out(self) -> bool:
        """True when this criterion alone makes the patient ineligible (criteria.md §2)."""
        return rules_out(self.kind, self.result)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CriterionResult:
        return cls(
            id=data["id"],
            kind=Kind(data["kind"]),
            result=Result(data["result"]),
            reason=data["reason"],
            evidence=tuple(Evidence(e["reference"], e["summary"]) for e in data["evidence"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind.value,
            "result": self.result.value,
            "reason": self.reason,
            "evidence": [e.to_dict() for e in self.evidence],
        }


@dataclass(frozen=True)
class ScreenResult:
    patient: str
    study: str
    as_of: str
    status: Status
    patient_type: int | None
    strata: dict[str, str | None]
    needs_review: tuple[str, ...]
    missing_data: tuple[str, ...]
    criteria: tuple[CriterionResult, ...]
    rules_version: str
    software_version: str
    notes: tuple[str, ...] = field(default=())

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ScreenResult:
        """The inverse of `to_dict` (for results read back from the store's outbox)."""
        values = {
            f.name: _FROM_JSON.get(f.name, _as_is)(data[f.name])
            for f in fields(cls)
            if f.name != "notes"
        }
        return cls(**values, notes=tuple(data.get("notes", ())))

    def criterion(self, criterion_id: str) -> CriterionResult:
        return next(c for c in self.criteria if c.id == criterion_id)

    def to_dict(self) -> dict[str, Any]:
        """The JSON of criteria.md §7, its keys in field order; `notes` only when there are."""
        data = {f.name: _to_json(getattr(self, f.name)) for f in fields(self)}
        if not self.notes:
            del data["notes"]
        return data


def _to_json(value: Any) -> Any:
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, CriterionResult):
        return value.to_dict()
    if isinstance(value, tuple):
        return [_to_json(item) for item in value]
    if isinstance(value, dict):
        return dict(value)
    return value


def _as_is(value: Any) -> Any:
    return value


# How the fields that are not plain JSON values are read back (the inverse of _to_json).
_FROM_JSON: dict[str, Callable[[Any], Any]] = {
    "status": Status,
    "strata": dict,
    "needs_review": tuple,
    "missing_data": tuple,
    "criteria": lambda items: tuple(CriterionResult.from_dict(c) for c in items),
}
