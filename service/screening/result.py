"""The output contract of a screen (criteria.md §7), the same for every interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from service.screening.decision import Decision, Evidence, Kind, Result
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
        return (self.kind is Kind.INCLUSION and self.result is Result.NOT_MET) or (
            self.kind is Kind.EXCLUSION and self.result is Result.MET
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
        criteria = tuple(
            CriterionResult(
                id=c["id"],
                kind=Kind(c["kind"]),
                result=Result(c["result"]),
                reason=c["reason"],
                evidence=tuple(Evidence(e["reference"], e["summary"]) for e in c["evidence"]),
            )
            for c in data["criteria"]
        )
        return cls(
            patient=data["patient"],
            study=data["study"],
            as_of=data["as_of"],
            status=Status(data["status"]),
            patient_type=data["patient_type"],
            strata=dict(data["strata"]),
            needs_review=tuple(data["needs_review"]),
            missing_data=tuple(data["missing_data"]),
            criteria=criteria,
            rules_version=data["rules_version"],
            software_version=data["software_version"],
            notes=tuple(data.get("notes", ())),
        )

    def criterion(self, criterion_id: str) -> CriterionResult:
        return next(c for c in self.criteria if c.id == criterion_id)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "patient": self.patient,
            "study": self.study,
            "as_of": self.as_of,
            "status": self.status.value,
            "patient_type": self.patient_type,
            "strata": dict(self.strata),
            "needs_review": list(self.needs_review),
            "missing_data": list(self.missing_data),
            "criteria": [c.to_dict() for c in self.criteria],
            "rules_version": self.rules_version,
            "software_version": self.software_version,
        }
        if self.notes:
            data["notes"] = list(self.notes)
        return data
