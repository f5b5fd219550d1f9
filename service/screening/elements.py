"""What a FHIR resource says, read element by element, for the extractor (extract.py).

The clinically relevant day, the status, the label a person reads, a medication's period and
stated depot length: plain functions over the raw JSON, so the extractor can keep to selecting
and validating, and every reading of an element is in one place.
"""

from __future__ import annotations

import re
from datetime import date
from typing import Any

from service.fhir.dates import FhirDay, parse_fhir_day
from service.fhir.record import Resource
from service.mapping.model import Mappings, codings_of, texts_of

DEPOT_RE = re.compile(r"(\d+)[\s-]*(?:month|mo)\b", re.IGNORECASE)


def status_of(resource: Resource) -> str | None:
    if resource.get("resourceType") == "Condition":
        return first_code(resource.get("clinicalStatus"))
    status = resource.get("status")
    return status if isinstance(status, str) else None


def first_code(concept: Any) -> str | None:
    for _system, code in codings_of(concept):
        return code
    return None


def ignored_because(resource: Resource, as_of: date) -> str | None:
    if resource.get("status") == "entered-in-error":
        return "entered in error"
    if resource.get("resourceType") == "Condition":
        verification = first_code(resource.get("verificationStatus"))
        if verification in ("refuted", "entered-in-error"):
            return f"verification status {verification}"
        recorded = parse_fhir_day(resource.get("recordedDate"))
        if recorded is not None and recorded.earliest > as_of:
            return f"recorded after as_of ({recorded})"
    day = clinical_day(resource)
    if day is not None and day.earliest > as_of:
        return f"dated after as_of ({day})"
    return None


def clinical_day(resource: Resource) -> FhirDay | None:
    """The clinically relevant day: when measured, when the condition began, when performed."""
    resource_type = resource.get("resourceType")
    if resource_type == "Observation":
        candidates = [
            resource.get("effectiveDateTime"),
            (resource.get("effectivePeriod") or {}).get("start"),
            resource.get("effectiveInstant"),
            resource.get("issued"),
        ]
    elif resource_type == "Condition":
        candidates = [
            resource.get("onsetDateTime"),
            (resource.get("onsetPeriod") or {}).get("start"),
            resource.get("recordedDate"),
        ]
    else:
        candidates = [
            resource.get("performedDateTime"),
            (resource.get("performedPeriod") or {}).get("end"),
            (resource.get("performedPeriod") or {}).get("start"),
        ]
    for value in candidates:
        day = parse_fhir_day(value)
        if day is not None:
            return day
    return None


def medication_period(resource: Resource) -> tuple[FhirDay | None, FhirDay | None, FhirDay | None]:
    """(start, end, asserted) of a medication record (criteria.md §4b timing)."""
    resource_type = resource["resourceType"]
    start = end = asserted = None
    if resource_type in ("MedicationStatement", "MedicationAdministration"):
        period = resource.get("effectivePeriod") or {}
        start = parse_fhir_day(resource.get("effectiveDateTime")) or parse_fhir_day(
            period.get("start")
        )
        end = parse_fhir_day(period.get("end"))
        if resource_type == "MedicationStatement":
            asserted = parse_fhir_day(resource.get("dateAsserted"))
    else:
        start = parse_fhir_day(resource.get("authoredOn"))
    dosages = resource.get(
        "dosageInstruction" if resource_type == "MedicationRequest" else "dosage"
    )
    for dosage in dosages if isinstance(dosages, list) else []:
        bounds = ((dosage.get("timing") or {}).get("repeat") or {}).get("boundsPeriod") or {}
        start = parse_fhir_day(bounds.get("start")) or start
        end = parse_fhir_day(bounds.get("end")) or end
    return start, end, asserted


def status_reason(resource: Resource) -> str | None:
    """The words of `statusReason` (a CodeableConcept on requests, a list elsewhere)."""
    reason = resource.get("statusReason")
    concepts = reason if isinstance(reason, list) else [reason]
    words = [text for c in concepts for text in texts_of(c)]
    return "; ".join(dict.fromkeys(words)) or None


def stated_depot_months(concept: Any, mappings: Mappings) -> int | None:
    allowed = mappings.parameters.allowed_depot_months
    for text in texts_of(concept):
        for match in DEPOT_RE.finditer(text):
            months = int(match.group(1))
            if months in allowed:
                return months
    return None


def concept_label(concept: Any) -> str:
    """A short human label for a code: its text, else a display, else system|code."""
    if isinstance(concept, dict):
        if isinstance(concept.get("text"), str) and concept["text"].strip():
            return str(concept["text"]).strip()
        for coding in concept.get("coding") or []:
            if isinstance(coding, dict) and isinstance(coding.get("display"), str):
                return str(coding["display"]).strip()
        for system, code in codings_of(concept):
            return f"{system}|{code}"
    return "(no code)"
