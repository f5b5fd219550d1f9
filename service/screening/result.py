"""The output contract of a screen (criteria.md §7), the same for every interface."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Result(StrEnum):
    MET = "met"
    NOT_MET = "not-met"
    UNKNOWN = "unknown"
    MANUAL = "manual"


class Kind(StrEnum):
    INCLUSION = "inclusion"
    EXCLUSION = "exclusion"
    INFORMATIONAL = "informational"


class Status(StrEnum):
    CANDIDATE = "candidate"
    INELIGIBLE = "ineligible"


# Every criterion of criteria.md §3, in §3 order. Ids are stable: stored results and the FHIR
# write-back use them.
CRITERIA: tuple[tuple[str, Kind], ...] = (
    ("consent", Kind.INCLUSION),
    ("histology", Kind.INCLUSION),
    ("oligoprogression", Kind.INCLUSION),
    ("systemic-therapy", Kind.INCLUSION),
    ("castrate-testosterone", Kind.INCLUSION),
    ("primary-treated", Kind.INFORMATIONAL),
    ("performance-status", Kind.INCLUSION),
    ("age", Kind.INCLUSION),
    ("sex", Kind.INCLUSION),
    ("compliance", Kind.INCLUSION),
    ("tumour-board", Kind.INCLUSION),
    ("excluded-histology", Kind.EXCLUSION),
    ("testosterone-above-castrate", Kind.EXCLUSION),
    ("polyprogression", Kind.EXCLUSION),
    ("other-malignancy", Kind.EXCLUSION),
    ("sbrt-contraindicated", Kind.EXCLUSION),
    ("spinal-lesion", Kind.EXCLUSION),
    ("prior-excluded-therapy", Kind.EXCLUSION),
    ("progression-on-docetaxel", Kind.EXCLUSION),
    ("unable-to-consent", Kind.EXCLUSION),
    ("deceased", Kind.EXCLUSION),
)
CRITERION_KINDS: dict[str, Kind] = dict(CRITERIA)


@dataclass(frozen=True)
class Evidence:
    """A resource version a decision rests on, with a one-line summary for people."""

    reference: str
    summary: str

    def to_dict(self) -> dict[str, str]:
        return {"reference": self.reference, "summary": self.summary}

    @property
    def order_key(self) -> str:
        """The reference without its version: to order evidence the same whatever the source
        (a server adds '/_history/N', which would sort 'met-bone-icd' before 'met-bone')."""
        return self.reference.partition("/_history/")[0]


@dataclass(frozen=True)
class Decision:
    """What a criterion function returns: the result, the reason and the evidence."""

    result: Result
    reason: str
    evidence: tuple[Evidence, ...] = ()
    patient_type: int | None = None  # only systemic-therapy sets it


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
