"""The drug concepts a Medication stands for when its own code says nothing (criteria.md §4b).

Hospitals (and the German MII medication profile, where `Medication.code` is optional) often
send a Medication whose only drug identity is its ingredients: `ingredient.itemCodeableConcept`,
or `ingredient.itemReference` to a Medication or Substance contained in the same resource or
known to the record (codes.md §7d). Each ingredient is a concept to recognise on its own, so a
combination product is each of its drugs at once (niraparib/abiraterone is a PARP inhibitor
and an ARTA).
"""

from __future__ import annotations

from typing import Any

from service.fhir.record import PatientRecord, Resource

MAX_DEPTH = 3  # a Medication whose ingredient is a Medication whose ingredient is ...: bounded


def ingredient_concepts(
    medication: Resource, record: PatientRecord, container: Resource, depth: int = 0
) -> list[Any]:
    """Every ingredient CodeableConcept of `medication`, following item references."""
    found: list[Any] = []
    ingredients = medication.get("ingredient")
    for ingredient in ingredients if isinstance(ingredients, list) else []:
        if not isinstance(ingredient, dict):
            continue
        if isinstance(ingredient.get("itemCodeableConcept"), dict):
            found.append(ingredient["itemCodeableConcept"])
            continue
        item = ingredient.get("itemReference")
        reference = item.get("reference") if isinstance(item, dict) else None
        if not isinstance(reference, str) or depth >= MAX_DEPTH:
            continue
        # a contained item lives in the Medication (or in the resource that contains both)
        target = _contained(medication, reference) or record.resolve_medication(
            reference, container
        )
        if target is None:
            if isinstance(item, dict) and isinstance(item.get("display"), str):
                found.append({"text": item["display"]})
            continue
        if isinstance(target.get("code"), dict):
            found.append(target["code"])
        if target.get("resourceType") == "Medication":
            found.extend(ingredient_concepts(target, record, container, depth + 1))
    return found


def _contained(holder: Resource, reference: str) -> Resource | None:
    if not reference.startswith("#"):
        return None
    listed = holder.get("contained")
    for contained in listed if isinstance(listed, list) else []:
        if isinstance(contained, dict) and contained.get("id") == reference[1:]:
            return contained
    return None
