"""The Provenance: which software and rules, when, and every resource version used."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta, timezone

import pytest
from fhir.resources.R4B.provenance import Provenance

from service.screening.result import Evidence
from service.writeback.provenance import HAPI_AUTO_VERSION, build_provenance, source_entities
from tests.unit.writeback.sample import (
    ADT,
    DIAGNOSIS,
    ECOG,
    PSMA,
    TESTOSTERONE,
    extension_problems,
    make_result,
    with_criterion,
)

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
TARGET = "urn:uuid:5d0c7e4f-1c57-5a3e-9a59-3f1f1b5f2a10"


def test_provenance_is_valid_r4_and_stable() -> None:
    provenance = build_provenance(make_result(), TARGET, NOW)
    parsed = Provenance.model_validate(provenance)
    assert parsed.model_dump(mode="json", exclude_none=True) == provenance
    assert json.dumps(provenance) == json.dumps(build_provenance(make_result(), TARGET, NOW))
    assert extension_problems(provenance) == []


def test_target_recorded_and_agent() -> None:
    provenance = build_provenance(make_result(), TARGET, NOW)
    assert provenance["target"] == [{"reference": TARGET}]
    assert provenance["meta"]["extension"] == [
        {"url": HAPI_AUTO_VERSION, "valueString": "target"},
        {"url": HAPI_AUTO_VERSION, "valueString": "entity.what"},
    ]
    assert provenance["recorded"] == "2026-11-26T09:30:00Z"
    [agent] = provenance["agent"]
    assert agent["type"]["coding"] == [
        {
            "system": "http://terminology.hl7.org/CodeSystem/provenance-participant-type",
            "code": "assembler",
            "display": "Assembler",
        }
    ]
    assert agent["who"] == {"type": "Device", "display": "MEDCARE Screen 0.1.0, rules medcare-2"}


def test_recorded_keeps_the_given_offset_and_needs_one() -> None:
    cet = datetime(2026, 11, 26, 10, 30, tzinfo=timezone(timedelta(hours=1)))
    assert build_provenance(make_result(), TARGET, cet)["recorded"] == "2026-11-26T10:30:00+01:00"
    with pytest.raises(ValueError, match="time zone"):
        build_provenance(make_result(), TARGET, datetime(2026, 11, 26, 9, 30))


def test_entities_are_every_evidence_version_once_sorted_plus_the_patient() -> None:
    entities = source_entities(make_result())
    whats = [e["what"]["reference"] for e in entities]
    expected = {e.reference for e in (ADT, DIAGNOSIS, ECOG, PSMA, TESTOSTERONE)} | {"Patient/123"}
    assert whats == sorted(expected)  # TESTOSTERONE and PSMA are used twice, listed once
    assert {e["role"] for e in entities} == {"source"}
    by_reference = {e["what"]["reference"]: e["what"] for e in entities}
    assert by_reference["Observation/77/_history/2"]["display"] == TESTOSTERONE.summary
    assert "display" not in by_reference["Patient/123"]


def test_a_versioned_patient_in_the_evidence_stands_for_the_patient() -> None:
    result = with_criterion(
        make_result(), "age", evidence=(Evidence("Patient/123/_history/4", "Born 1951"),)
    )
    whats = [e["what"]["reference"] for e in source_entities(result)]
    assert "Patient/123/_history/4" in whats and "Patient/123" not in whats


def test_first_non_empty_summary_is_the_display() -> None:
    result = with_criterion(
        make_result(), "consent", evidence=(Evidence("Observation/77/_history/2", ""),)
    )
    by_reference = {e["what"]["reference"]: e["what"] for e in source_entities(result)}
    assert by_reference["Observation/77/_history/2"]["display"] == TESTOSTERONE.summary


def test_narrative_is_xhtml() -> None:
    div = build_provenance(make_result(), TARGET, NOW)["text"]["div"]
    root = ET.fromstring(div)
    assert root.tag == "{http://www.w3.org/1999/xhtml}div"
    assert "MEDCARE Screen 0.1.0, rules medcare-2" in "".join(root.itertext())
