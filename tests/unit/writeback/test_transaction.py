"""The transaction Bundle and the planner that decides whether to send it."""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import pytest
from fhir.resources.R4B.bundle import Bundle

from service.mapping.model import Parameters
from service.screening.result import Status
from service.writeback.fingerprint import fingerprint
from service.writeback.subject import build_research_subject
from service.writeback.transaction import build_transaction, plan_write
from tests.unit.writeback.sample import ineligible_result, make_result, with_criterion

NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
STUDY = "ResearchStudy/5"
BASE = "https://medcare-screen.org/fhir"


def test_transaction_shape(params: Parameters) -> None:
    bundle = build_transaction(make_result(), params, STUDY, NOW)
    Bundle.model_validate(bundle)
    assert bundle["type"] == "transaction"
    subject_entry, provenance_entry = bundle["entry"]
    assert subject_entry["request"] == {
        "method": "PUT",
        "url": "ResearchSubject?identifier=https://medcare-screen.org/fhir/NamingSystem/research-subject|NCT06585007:123",
    }
    assert subject_entry["fullUrl"].startswith("urn:uuid:")
    assert subject_entry["resource"] == build_research_subject(make_result(), params, STUDY)
    assert provenance_entry["request"] == {"method": "POST", "url": "Provenance"}
    assert provenance_entry["fullUrl"].startswith("urn:uuid:")
    assert provenance_entry["fullUrl"] != subject_entry["fullUrl"]
    provenance = provenance_entry["resource"]
    assert provenance["target"] == [{"reference": subject_entry["fullUrl"]}]
    whats = [e["what"]["reference"] for e in provenance["entity"]]
    assert "Observation/77/_history/2" in whats and "Patient/123" in whats
    assert len(whats) == len(set(whats)) == 6


def test_transaction_is_reproducible(params: Parameters) -> None:
    first = json.dumps(build_transaction(make_result(), params, STUDY, NOW))
    assert first == json.dumps(build_transaction(make_result(), params, STUDY, NOW))
    later = build_transaction(make_result(), params, STUDY, NOW.replace(hour=10))
    assert later["entry"][0]["fullUrl"] == json.loads(first)["entry"][0]["fullUrl"]
    assert later["entry"][1]["fullUrl"] != json.loads(first)["entry"][1]["fullUrl"]


def test_same_subject_same_placeholder_across_results(params: Parameters) -> None:
    """The subject's fullUrl depends on its identifier only, not on the result."""
    a = build_transaction(make_result(), params, STUDY, NOW)
    b = build_transaction(ineligible_result(), params, STUDY, NOW)
    assert a["entry"][0]["fullUrl"] == b["entry"][0]["fullUrl"]
    assert a["entry"][0]["request"] == b["entry"][0]["request"]


def _stored(result: Any, params: Parameters, status: str | None = None) -> dict[str, Any]:
    subject = build_research_subject(result, params, STUDY) | {"id": "42"}
    if status:
        subject["status"] = status
    return subject


def test_plan_new_candidate_is_written() -> None:
    decision = plan_write(make_result(), None, False, canonical_base=BASE)
    assert decision.outcome == "write" and decision.should_write
    assert decision.fingerprint == fingerprint(make_result())


def test_plan_new_ineligible_is_skipped_unless_configured() -> None:
    decision = plan_write(ineligible_result(), None, False, canonical_base=BASE)
    assert decision.outcome == "skip-ineligible" and not decision.should_write
    assert plan_write(ineligible_result(), None, True, canonical_base=BASE).outcome == "write"


@pytest.mark.parametrize("write_ineligible", [False, True])
def test_plan_unchanged_result_is_not_written(params: Parameters, write_ineligible: bool) -> None:
    for result in (make_result(), ineligible_result()):
        stored = _stored(result, params)
        decision = plan_write(result, stored, write_ineligible, canonical_base=BASE)
        assert decision.outcome == "unchanged" and not decision.should_write
        # a later daily screen with the same content is still unchanged
        later = replace(result, as_of="2026-12-03", software_version="0.2.0")
        assert (
            plan_write(later, stored, write_ineligible, canonical_base=BASE).outcome == "unchanged"
        )


def test_plan_candidate_who_became_ineligible_is_updated(params: Parameters) -> None:
    stored = _stored(make_result(), params)
    decision = plan_write(ineligible_result(), stored, False, canonical_base=BASE)
    assert decision.outcome == "write"


def test_plan_changed_reason_is_written(params: Parameters) -> None:
    stored = _stored(make_result(), params)
    changed = with_criterion(make_result(), "age", reason="Aged 75 on 2026-11-26.")
    assert plan_write(changed, stored, False, canonical_base=BASE).outcome == "write"


def test_plan_subject_without_our_fingerprint_is_written(params: Parameters) -> None:
    stored = _stored(make_result(), params)
    stored["extension"] = []
    assert plan_write(make_result(), stored, False, canonical_base=BASE).outcome == "write"
    # stored under another canonical base: rewrite under the configured one
    site = replace(params, canonical_base="https://fhir.example.org/medcare")
    assert (
        plan_write(make_result(), _stored(make_result(), site), False, canonical_base=BASE).outcome
        == "write"
    )


@pytest.mark.parametrize("status", ["eligible", "on-study", "withdrawn", "screening"])
def test_plan_leaves_subjects_taken_further_by_people_alone(
    params: Parameters, status: str
) -> None:
    stored = _stored(make_result(), params, status=status)
    for result in (make_result(), ineligible_result()):
        decision = plan_write(result, stored, True, canonical_base=BASE)
        assert decision.outcome == "skip-managed" and not decision.should_write
        assert status in decision.reason


def test_plan_ineligible_stored_as_ineligible_and_now_candidate(params: Parameters) -> None:
    stored = _stored(ineligible_result(), params)
    assert stored["status"] == Status.INELIGIBLE.value
    assert plan_write(make_result(), stored, False, canonical_base=BASE).outcome == "write"
