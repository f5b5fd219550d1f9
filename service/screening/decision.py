"""What a criterion function returns (a Decision: result, reason, evidence) and its words.

Kept apart from the output contract (result.py) so that the criteria, which result.py lists
through the registry, do not import the module that imports them.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Result(StrEnum):
    MET = "met"
    NOT_MET = "not-met"
    UNKNOWN = "unknown"
    MANUAL = "manual"


class Kind(StrEnum):
    INCLUSION = "inclusion"
    EXCLUSION = "exclusion"
    INFORMATIONAL = "informational"


def rules_out(kind: Kind, result: Result) -> bool:
    """True when a criterion of this kind with this result alone makes the patient ineligible
    (criteria.md §2): an inclusion not met, or an exclusion met."""
    return (kind is Kind.INCLUSION and result is Result.NOT_MET) or (
        kind is Kind.EXCLUSION and result is Result.MET
    )


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
