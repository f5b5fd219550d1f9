"""Criterion inputs: what the record says, already filtered to what was knowable at `as_of`.

Facts keep the validated raw resource beside the few fields every rule needs (date, status, the
value sets its code matched), so a rule reads details (values, components, body sites) directly
without another model layer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from service.fhir.dates import FhirDay
from service.mapping.model import DrugEntry
from service.screening.decision import Evidence

Resource = dict[str, Any]


@dataclass(frozen=True)
class ClinicalFact:
    """An Observation, Condition or Procedure whose code matched at least one value set."""

    resource_type: str
    evidence: Evidence
    day: FhirDay | None
    status: str | None
    concepts: frozenset[str]
    resource: Resource
    label: str

    def has(self, concept: str) -> bool:
        return concept in self.concepts

    @property
    def dated(self) -> str:
        """' (2026-10-30)' after a name in a reason, or '' when the fact has no date."""
        return f" ({self.day})" if self.day else ""


@dataclass(frozen=True)
class DrugMatch:
    drug: DrugEntry
    matched_by: str  # "RxNorm", "ATC", "ATC class" or "name"
    matched_text: str

    def describe(self) -> str:
        if self.matched_by.endswith("name"):
            how = self.matched_by.replace("name", "recognised by name")
            return f"{self.drug.label} ({how}: {self.matched_text!r})"
        return f"{self.drug.label} ({self.matched_by} {self.matched_text})"


@dataclass(frozen=True)
class MedicationFact:
    """One MedicationStatement / MedicationRequest / MedicationAdministration of a listed drug."""

    resource_type: str
    evidence: Evidence
    status: str | None
    drugs: tuple[DrugMatch, ...]
    product_text: str
    start: FhirDay | None
    end: FhirDay | None
    asserted: FhirDay | None
    stated_depot_months: int | None
    status_reason: str | None = None  # the words of statusReason, e.g. "disease progression"

    @property
    def is_administration(self) -> bool:
        return self.resource_type == "MedicationAdministration"

    def has_class(self, drug_class: str) -> bool:
        return any(drug_class in m.drug.classes for m in self.drugs)

    def matches_of(self, drug_class: str) -> tuple[DrugMatch, ...]:
        return tuple(m for m in self.drugs if drug_class in m.drug.classes)


@dataclass(frozen=True)
class Unreadable:
    """A resource that looked relevant (by its code) but does not conform to FHIR R4."""

    reference: str
    concepts: frozenset[str]
    problem: str


@dataclass(frozen=True)
class Demographics:
    reference: str
    gender: str | None
    birth: FhirDay | None
    birth_text: str | None
    deceased_flag: bool | None
    deceased_day: FhirDay | None
    problem: str | None = None


@dataclass(frozen=True)
class NearMiss:
    """A record no mapping matched that looks like data a criterion needs (issue 11 item 10):
    named in that criterion's reason, never used to decide."""

    concept: str  # the near-miss concept ("testosterone-total", "blinded-drug", ...)
    resource_type: str
    evidence: Evidence
    text: str  # the words that looked like it ("Testosteron totaal")
    local_code: str | None  # "LAB123"
    day: FhirDay | None
    status: str | None


@dataclass
class PatientFacts:
    patient: Demographics
    observations: list[ClinicalFact] = field(default_factory=list)
    conditions: list[ClinicalFact] = field(default_factory=list)
    procedures: list[ClinicalFact] = field(default_factory=list)
    medications: list[MedicationFact] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)
    near_misses: list[NearMiss] = field(default_factory=list)
    # references ignored with the reason ("entered-in-error", "dated after as_of", ...), by concept
    ignored: list[tuple[str, frozenset[str], str]] = field(default_factory=list)

    def observations_of(self, concept: str) -> list[ClinicalFact]:
        return [f for f in self.observations if f.has(concept)]

    def conditions_of(self, concept: str) -> list[ClinicalFact]:
        return [f for f in self.conditions if f.has(concept)]

    def procedures_of(self, concept: str) -> list[ClinicalFact]:
        return [f for f in self.procedures if f.has(concept)]

    def medications_of(self, drug_class: str) -> list[MedicationFact]:
        return [m for m in self.medications if m.has_class(drug_class)]

    def ignored_for(self, concepts: set[str]) -> list[tuple[str, str]]:
        return [(ref, why) for ref, c, why in self.ignored if c & concepts]
