"""The count range of progressive lesions (criteria.md §4) and the sources it is weighed from."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from service.fhir.dates import FhirDay
from service.screening.decision import Evidence
from service.screening.imaging import Castration

COUNT, FINDINGS, DISEASE_STATUS, CONDITIONS = "count", "findings", "disease-status", "conditions"
STATUS_AND_CONDITIONS = "disease-status-and-conditions"


@dataclass
class Source:
    """One representation's range, and what it rests on (for the reason and the conflict)."""

    kind: str
    low: int
    high: int | None  # None: open
    day: FhirDay | None  # date of the evidence (latest exam / count / status)
    text: str  # 'lesion count of 2 on 2026-11-10 (CT)'
    evidence: list[Evidence] = field(default_factory=list)
    pet_only: bool = False
    progression_day: date | None = None  # earliest certain progression in it
    modality: str | None = None


@dataclass
class Progression:
    """The count range of progressive extracranial lesions in the window, and its caveats."""

    representation: str | None = None  # the primary evidence
    low: int = 0
    high: int | None = 0
    sources: list[Source] = field(default_factory=list)
    conflict: list[Source] = field(default_factory=list)
    intracranial: list[str] = field(default_factory=list)  # progressive intracranial lesions
    possibly_intracranial: list[str] = field(default_factory=list)
    possible: list[str] = field(default_factory=list)  # possible lesions, with why
    set_aside: list[str] = field(default_factory=list)  # not lesions (size), with the value
    no_size: list[str] = field(default_factory=list)
    unconfirmed: list[str] = field(default_factory=list)
    unconfirmed_sites: int = 0  # regions only unconfirmed Conditions name (never decide)
    other_primary: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    evidence: list[Evidence] = field(default_factory=list)
    day: FhirDay | None = None  # the progression date (certain progression only)
    castration: Castration | None = None
    latest_outside_window: FhirDay | None = None
    outside_window_text: str | None = None

    @property
    def documented(self) -> bool:
        """Certain progression is documented in the window (it then has a progression date)."""
        return self.day is not None

    @property
    def exact(self) -> int | None:
        return self.low if self.high == self.low else None

    @property
    def primary(self) -> Source | None:
        return next((s for s in self.sources if s.kind == self.representation), None)

    def source(self) -> str:
        primary = self.primary
        return primary.text if primary else "no evidence"
