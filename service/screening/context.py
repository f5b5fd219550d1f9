"""What every criterion function receives: the facts, the mappings and the day of the screen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import TYPE_CHECKING

from service.fhir.dates import FhirDay
from service.mapping.model import Mappings, Parameters
from service.screening.facts import ClinicalFact, PatientFacts

if TYPE_CHECKING:  # the findings' own modules read the Context: named for the types only
    from service.screening.criteria.histology import HistologyFinding
    from service.screening.criteria.testosterone import TestosteroneFinding
    from service.screening.lesions.metastases import Metastases
    from service.screening.lesions.model import Progression


@dataclass
class Context:
    facts: PatientFacts
    mappings: Mappings
    as_of: date
    # Findings more than one criterion reads, each worked out once per screen by the function
    # that owns it (find_histology, find_progression, find_testosterone, find_metastases) and
    # kept here, typed, so mypy checks what one criterion hands another.
    histology: HistologyFinding | None = None
    progression: Progression | None = None
    testosterone: TestosteroneFinding | None = None
    metastases: Metastases | None = None

    @property
    def params(self) -> Parameters:
        return self.mappings.parameters

    def window_start(self, days: int) -> date:
        return self.as_of - timedelta(days=days)

    def in_window(self, day: FhirDay | None, days: int) -> bool:
        """Inside the inclusive window counting back `days` days from as_of."""
        return day is not None and self.window_start(days) <= day.earliest <= self.as_of


def most_recent_first(facts: list[ClinicalFact]) -> list[ClinicalFact]:
    """Newest first; undated last; ties broken by reference so results are deterministic."""
    return sorted(
        facts,
        key=lambda f: (f.day.earliest if f.day else date.min, f.evidence.order_key),
        reverse=True,
    )


def fmt_number(value: float) -> str:
    """20 -> '20', 1.2 -> '1.2', 34.61 -> '34.61' (no float noise such as 34.610000000000003)."""
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.6g}" if abs(value) < 1e6 else f"{value:.1f}"


def join_names(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]
