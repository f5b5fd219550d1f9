"""Stable identifiers: re-screening finds the same ResearchSubject, never makes a second one."""

from __future__ import annotations

import uuid
from dataclasses import replace

import pytest

from service.mapping.model import Parameters
from service.writeback.identifiers import (
    conditional_url,
    patient_id,
    study_identifier,
    subject_identifier,
    urn_uuid,
)


def test_subject_identifier_is_derived_from_study_and_patient_ids_only(params: Parameters) -> None:
    identifier = subject_identifier(params, "Patient/123")
    assert identifier.system == "https://medcare-screen.org/fhir/NamingSystem/research-subject"
    assert identifier.value == "NCT06585007:123"
    assert identifier == subject_identifier(params, "Patient/123/_history/7")
    assert identifier.to_fhir() == {"system": identifier.system, "value": "NCT06585007:123"}


def test_subject_identifier_follows_the_configured_canonical_base(params: Parameters) -> None:
    site = replace(params, canonical_base="https://fhir.example.org/medcare/")
    identifier = subject_identifier(site, "Patient/a-1.b")
    assert identifier.system == "https://fhir.example.org/medcare/NamingSystem/research-subject"
    assert identifier.value == "NCT06585007:a-1.b"


@pytest.mark.parametrize(
    ("reference", "expected"),
    [
        ("Patient/123", "123"),
        ("Patient/123/_history/2", "123"),
        ("https://fhir.example.org/r4/Patient/abc-9", "abc-9"),
    ],
)
def test_patient_id(reference: str, expected: str) -> None:
    assert patient_id(reference) == expected


@pytest.mark.parametrize(
    "reference", ["123", "Observation/1", "Patient/", "Patient/a|b", "Patient/a b"]
)
def test_patient_id_rejects_what_is_not_a_patient_reference(reference: str) -> None:
    with pytest.raises(ValueError, match="not a Patient reference"):
        patient_id(reference)


def test_study_identifier(params: Parameters) -> None:
    assert study_identifier(params).token() == "https://clinicaltrials.gov|NCT06585007"


def test_conditional_url_is_readable_and_encodes_the_unsafe(params: Parameters) -> None:
    identifier = subject_identifier(params, "Patient/123")
    assert (
        conditional_url("ResearchSubject", identifier)
        == "ResearchSubject?identifier=https://medcare-screen.org/fhir/NamingSystem/research-subject|NCT06585007:123"
    )
    odd = replace(params, canonical_base="https://x.org/a b&c")
    url = conditional_url("ResearchSubject", subject_identifier(odd, "Patient/1"))
    assert (
        url
        == "ResearchSubject?identifier=https://x.org/a%20b%26c/NamingSystem/research-subject|NCT06585007:1"
    )


def test_urn_uuid_is_deterministic_and_distinct(params: Parameters) -> None:
    first = urn_uuid(subject_identifier(params, "Patient/123"))
    assert first == urn_uuid(subject_identifier(params, "Patient/123"))
    assert first != urn_uuid(subject_identifier(params, "Patient/124"))
    assert first.startswith("urn:uuid:")
    assert uuid.UUID(first.removeprefix("urn:uuid:")).version == 5
