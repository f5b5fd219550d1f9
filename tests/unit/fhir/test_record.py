"""PatientRecord admits only this patient's resources (criteria.md §3), whatever the source."""

from __future__ import annotations

from typing import Any

from service.fhir.record import FOREIGN_IDS_LISTED, PatientRecord


def _condition(cid: str, subject: str | None) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "Condition", "id": cid}
    if subject is not None:
        resource["subject"] = {"reference": subject}
    return resource


def test_resources_naming_this_patient_in_any_form_are_kept() -> None:
    record = PatientRecord("p1")
    record.aliases.add("urn:uuid:1234")
    record.add({"resourceType": "Patient", "id": "p1"})
    for cid, subject in (("a", "Patient/p1"), ("b", "https://x.org/fhir/Patient/p1/_history/3"),
                         ("c", "urn:uuid:1234")):  # fmt: skip
        record.add(_condition(cid, subject))
    record.add({"resourceType": "Medication", "id": "m1"})  # about no patient: shared, kept
    assert [c["id"] for c in record.of_type("Condition")] == ["a", "b", "c"]
    assert record.patient is not None and "Medication/m1" in record.medications
    assert record.foreign == [] and record.problems == []


def test_other_patients_resources_are_set_aside_and_counted_in_one_note() -> None:
    record = PatientRecord("p1")
    record.add({"resourceType": "Patient", "id": "p2"})
    record.add(_condition("x", "Patient/p2"))
    record.add(_condition("y", None))  # names no patient at all
    record.add(
        {"resourceType": "MedicationRequest", "id": "r", "subject": {"reference": "Group/g"}}
    )
    for number in range(FOREIGN_IDS_LISTED):
        record.add(_condition(f"z{number}", "Patient/p10"))
    assert record.patient is None
    assert record.of_type("Condition") == [] and record.of_type("MedicationRequest") == []
    assert len(record.foreign) == 4 + FOREIGN_IDS_LISTED
    assert len(record.problems) == 1
    note = record.problems[0]
    assert note.startswith(f"{4 + FOREIGN_IDS_LISTED} resource(s) sent for this patient")
    assert "Patient/p2, Condition/x, Condition/y, MedicationRequest/r" in note
    assert note.endswith("(+4 more)")
    assert "p10" not in note  # the other patient's id is not repeated in this patient's result
