"""A CDS Hooks prefetch turned into a patient record, or refused as incomplete.

A prefetched search Bundle may be one page of several (a `next` link): screening that page
alone gave verdicts from a cut list (an ADT order on page 2 unseen). Following the link is not
an option: its URL comes from the request, and the FHIR base URL never does (a hostile
`fhirServer` must not make the service call it). So a paged prefetch is not used at all, and
the view reads the whole record from the service's own configured source instead.
"""

from __future__ import annotations

from typing import Any

from service.api.errors import ApiError
from service.fhir.record import PatientRecord


def paged_keys(prefetch: dict[str, Any]) -> list[str]:
    """The prefetch keys whose Bundle has more pages (a `next` link)."""
    return [
        key
        for key, bundle in prefetch.items()
        if isinstance(bundle, dict)
        and bundle.get("resourceType") == "Bundle"
        and any(
            isinstance(link, dict) and link.get("relation") == "next"
            for link in bundle.get("link") or []
        )
    ]


def record_from_prefetch(
    patient_id: str, prefetch: dict[str, Any], expected: list[str]
) -> PatientRecord | None:
    """A record from prefetched data, or None when any template was not prefetched or a
    Bundle is only its first page (then the caller reads the patient itself)."""
    if not prefetch or any(prefetch.get(key) is None for key in expected):
        return None
    if paged_keys({key: prefetch[key] for key in expected}):
        return None
    record = PatientRecord(patient_id)
    patient = prefetch["patient"]
    if (
        not isinstance(patient, dict)
        or patient.get("resourceType") != "Patient"
        or patient.get("id") != patient_id
    ):
        raise ApiError(400, "bad-prefetch", "prefetch 'patient' is not this Patient")
    record.add(patient)
    for key in expected:
        if key == "patient":
            continue
        bundle = prefetch[key]
        if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
            raise ApiError(400, "bad-prefetch", f"prefetch {key!r} is not a Bundle")
        for entry in bundle.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and isinstance(resource.get("resourceType"), str):
                record.add(resource, entry.get("fullUrl"))
    return record
