"""Small builders for FHIR R4 test resources, so a unit test states only what matters to it."""

from __future__ import annotations

from itertools import count
from typing import Any

from service.codesystems import CONDITION_CLINICAL, ICD10_CM, LOINC, SNOMED, UCUM
from service.codesystems import RXNORM as RXNORM  # re-exported: tests import it from here
from service.fhir.record import PatientRecord

# the short names the tests import (service/codesystems.py has the URIs)
SCT = SNOMED
ICD10CM = ICD10_CM
ICDO3 = "http://terminology.hl7.org/CodeSystem/icd-o-3"
SCREENING = "https://medcare-screen.org/fhir/CodeSystem/screening"
PATIENT_ID = "t1"
_ids = count(1)


def concept(system: str, code: str, display: str | None = None) -> dict[str, Any]:
    coding: dict[str, Any] = {"system": system, "code": code}
    if display:
        coding["display"] = display
    return {"coding": [coding]}


def patient(**fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "id": PATIENT_ID,
        "gender": "male",
        "birthDate": "1950-03-14",
        **fields,
    }


def _subject() -> dict[str, str]:
    return {"reference": f"Patient/{PATIENT_ID}"}


def observation(code: dict[str, Any], day: str, **fields: Any) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{next(_ids)}",
        "status": "final",
        "code": code,
        "subject": _subject(),
        "effectiveDateTime": day,
        **fields,
    }


def total_testosterone(
    value: float, unit: str, day: str = "2026-11-01", **fields: Any
) -> dict[str, Any]:
    quantity = {"value": value, "unit": unit, "system": UCUM, "code": unit}
    return observation(concept(LOINC, "2986-8"), day, valueQuantity=quantity, **fields)


def condition(
    code: dict[str, Any], onset: str = "2015-06-01", status: str | None = "active", **fields: Any
) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Condition",
        "id": f"cond-{next(_ids)}",
        "code": code,
        "subject": _subject(),
        "onsetDateTime": onset,
        **fields,
    }
    if status:
        resource["clinicalStatus"] = concept(CONDITION_CLINICAL, status)
    return resource


def medication_statement(
    code: dict[str, Any], status: str = "active", **fields: Any
) -> dict[str, Any]:
    coded = ("medicationCodeableConcept", code)
    return _of_patient("MedicationStatement", f"ms-{next(_ids)}", status, coded, **fields)


def medication_administration(
    resource_id: str, code: dict[str, Any], day: str, status: str = "completed"
) -> dict[str, Any]:
    """A MedicationAdministration of `code` on `day`. The id is the caller's: tests that check
    an order among same-day evidence choose theirs (the engine breaks ties by reference)."""
    coded = ("medicationCodeableConcept", code)
    return _of_patient(
        "MedicationAdministration", resource_id, status, coded, effectiveDateTime=day
    )


def procedure(
    code: dict[str, Any], day: str, status: str = "completed", **fields: Any
) -> dict[str, Any]:
    procedure_id = f"proc-{next(_ids)}"
    return _of_patient(
        "Procedure", procedure_id, status, ("code", code), performedDateTime=day, **fields
    )


def _of_patient(
    resource_type: str,
    resource_id: str,
    status: str,
    coded: tuple[str, dict[str, Any]],
    **rest: Any,
) -> dict[str, Any]:
    """A resource of the test patient: type, id, status, what it is (`coded`: the element and
    its concept), subject, then `rest`, in that order as the builders always wrote them."""
    element, code = coded
    return {
        "resourceType": resource_type,
        "id": resource_id,
        "status": status,
        element: code,
        "subject": _subject(),
        **rest,
    }


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    """A searchset Bundle of `resources` (all matches), with a next link when `next_url` is given:
    one page of a search as a FHIR server answers it."""
    bundle: dict[str, Any] = {
        "resourceType": "Bundle",
        "type": "searchset",
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }
    if next_url:
        bundle["link"] = [{"relation": "next", "url": next_url}]
    return bundle


def record(*resources: dict[str, Any], with_patient: bool = True) -> PatientRecord:
    result = PatientRecord(PATIENT_ID)
    if with_patient:
        result.add(patient())
    for resource in resources:
        result.add(resource)
    return result
