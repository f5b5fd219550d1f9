"""Representation 1: a lesion-count observation gives [n, n] (made on PET: [0, n])."""

from __future__ import annotations

from service.fhir.dates import FhirDay
from service.screening.context import Context, most_recent_first
from service.screening.facts import ClinicalFact
from service.screening.imaging import Modality, modality_of
from service.screening.lesions.model import COUNT, Progression, Source


def from_counts(
    ctx: Context, progression: Progression, counts: list[ClinicalFact]
) -> Source | None:
    for fact in most_recent_first(counts):
        exact, lower = _count_value(fact.resource)
        if exact is None and lower is None:
            progression.notes.append(
                f"a lesion-count observation on {fact.day} has no usable count"
            )
            continue
        modality = modality_of(ctx, fact)
        for component in fact.resource.get("component") or []:
            if ctx.mappings.vs("lesion-count-intracranial").matches(component.get("code")):
                n = _count_value(component)[0] or _count_value(component)[1] or 0
                if n:
                    progression.intracranial.append(
                        f"{n} progressive intracranial lesion{'s' if n != 1 else ''} in the "
                        f"lesion count of {fact.day}"
                    )
        low, high = (exact, exact) if exact is not None else (lower or 0, None)
        what = (
            f"lesion count of {exact}" if exact is not None else f"lesion count of at least {lower}"
        )
        on = _on(fact.day, modality)
        if modality.pet:
            progression.possible.append(
                f"the {what} was made on PET ({modality.name}): its lesions are possible only"
            )
            low = 0
        certain_day = fact.day.earliest if fact.day and low >= 1 else None
        return Source(
            COUNT, low, high, fact.day, f"{what} {on}", [fact.evidence],
            pet_only=modality.pet, progression_day=certain_day, modality=modality.name,
        )  # fmt: skip
    return None


def _count_value(holder: dict[str, object]) -> tuple[int | None, int | None]:
    """(exact, lower bound) from valueInteger, or valueQuantity with an optional comparator."""
    value = holder.get("valueInteger")
    if isinstance(value, int) and not isinstance(value, bool):
        return value, None
    quantity = holder.get("valueQuantity")
    if isinstance(quantity, dict) and isinstance(quantity.get("value"), int | float):
        number = int(quantity["value"])
        comparator = quantity.get("comparator")
        if comparator == ">=":
            return None, number
        if comparator == ">":
            return None, number + 1
        if comparator is None:
            return number, None
    return None, None


def _on(day: FhirDay | None, modality: Modality) -> str:
    how = modality.name or "imaging, modality not stated"
    return f"on {day} ({how})" if day else f"({how}, no date)"
