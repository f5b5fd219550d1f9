"""CDS Hooks 2.0 as EHRs send it (issue 15 item 8): context fields, unknown patients, paged
prefetch, the card's Markdown, its link and override reasons, the feedback endpoint, and no
card for a patient with no prostate cancer diagnosis."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from markdown_it import MarkdownIt

from service.api import create_app
from service.api.cds_cards import OVERRIDE_SYSTEM
from service.api.deps import runtime
from service.config import settings_from_env
from service.fhir.local_source import LocalSource
from service.runtime import Runtime
from tests.api.conftest import CDS_URL, make_settings
from tests.conftest import FIXTURES
from tests.integration.jwks import Issuer, jwks_server

AUDIENCE = "https://medcare.example.org" + CDS_URL
WEB = "https://medcare.example.org/web"
PATIENT = "fx-base"
TYPES = {
    "observations": "Observation", "condition": "Condition",
    "medicationStatement": "MedicationStatement", "medicationRequest": "MedicationRequest",
    "medicationAdministration": "MedicationAdministration", "procedure": "Procedure",
}  # fmt: skip


@contextmanager
def _app(tmp_path: Path, **overrides: object) -> Iterator[tuple[FlaskClient, Issuer]]:
    with jwks_server() as ehr:
        settings = make_settings(
            tmp_path, environment="development", cds_issuers=((ehr.issuer, ehr.jwks_url),),
            cds_audience=AUDIENCE, **overrides,
        )  # fmt: skip
        runtime = Runtime(settings)
        try:
            yield create_app(settings, runtime).test_client(), ehr
        finally:
            runtime.close()


@pytest.fixture
def cds(tmp_path: Path) -> Iterator[tuple[FlaskClient, Issuer]]:
    with _app(tmp_path, web_base_url=WEB + "/") as pair:
        yield pair


def _call(client: FlaskClient, ehr: Issuer, patient: str = PATIENT, **extra: Any) -> dict[str, Any]:
    context = {"patientId": patient, "userId": "Practitioner/1", **extra.pop("context", {})}
    body = {"hook": "patient-view", "hookInstance": "h1", "context": context, **extra}
    response = client.post(
        CDS_URL, json=body, headers={"Authorization": f"Bearer {ehr.token(AUDIENCE)}"}
    )
    assert response.status_code == 200, response.get_json()
    answer: dict[str, Any] = response.get_json()
    return answer


def _prefetch(patient: str, *, keep: frozenset[str] = frozenset(TYPES)) -> dict[str, Any]:
    """Every template answered from the fixture files; types not in `keep` left empty."""
    record = LocalSource(FIXTURES).record(patient)
    prefetch: dict[str, Any] = {"patient": record.patient}
    for key, resource_type in TYPES.items():
        resources = record.of_type(resource_type) if key in keep else []
        prefetch[key] = {"resourceType": "Bundle", "type": "searchset",
                         "entry": [{"resource": r} for r in resources]}  # fmt: skip
    return prefetch


def test_a_2_0_context_with_encounter_id_is_accepted(cds: tuple[FlaskClient, Issuer]) -> None:
    cards = _call(*cds, context={"encounterId": "enc-1", "appContext": "x"})["cards"]
    assert cards[0]["summary"].startswith("MEDCARE trial: candidate")


def test_an_unknown_patient_gets_no_card_not_404(cds: tuple[FlaskClient, Issuer]) -> None:
    assert _call(*cds, patient="no-such-patient") == {"cards": []}


def test_a_paged_prefetch_bundle_is_not_screened_as_if_complete(
    cds: tuple[FlaskClient, Issuer],
) -> None:
    """The Conditions' first page is empty with a `next` link: screened as it stands, the
    patient would have no prostate cancer; the service reads the whole record instead."""
    prefetch = _prefetch(PATIENT, keep=frozenset(TYPES) - {"condition"})
    prefetch["condition"]["link"] = [
        {"relation": "next", "url": "https://ehr.example.org/fhir/Condition?page=2"}
    ]
    cards = _call(*cds, prefetch=prefetch)["cards"]
    assert cards[0]["summary"] == _call(*cds)["cards"][0]["summary"]
    assert cards[0]["summary"].startswith("MEDCARE trial: candidate")


def test_no_card_without_a_prostate_cancer_diagnosis_unless_configured(tmp_path: Path) -> None:
    prefetch = _prefetch(PATIENT, keep=frozenset(TYPES) - {"condition"})
    with _app(tmp_path) as (client, ehr):
        assert _call(client, ehr, prefetch=prefetch) == {"cards": []}
    with _app(tmp_path, cds_require_diagnosis=False) as (client, ehr):
        cards = _call(client, ehr, prefetch=prefetch)["cards"]
    assert cards[0]["summary"].startswith("MEDCARE trial: not eligible (histology")
    assert "links" not in cards[0]  # no MEDCARE_WEB_BASE_URL: no link to a page


def test_the_card_markdown_closes_outside_the_last_list(cds: tuple[FlaskClient, Issuer]) -> None:
    prefetch = _prefetch(PATIENT, keep=frozenset({"condition", "procedure"}))
    detail = _call(*cds, prefetch=prefetch)["cards"][0]["detail"]
    html = MarkdownIt("commonmark").render(detail)
    assert "<li>systemic-therapy" in html  # a list item to review
    closing = "<p><strong>Always checked by a person:</strong> consent"
    assert closing in html and html.rstrip().endswith("</p>")
    assert "<p><strong>Needs review:</strong></p>\n<ul>" in html
    assert html.count("<p>") == detail.count("\n\n") + 1 - html.count("<ul>")


def test_the_card_links_to_the_patient_page_and_offers_override_reasons(
    cds: tuple[FlaskClient, Issuer],
) -> None:
    card = _call(*cds)["cards"][0]
    assert card["links"] == [
        {"label": "Open the MEDCARE pre-screen", "url": f"{WEB}/patients/{PATIENT}",
         "type": "absolute"}
    ]  # fmt: skip
    codes = [reason["code"] for reason in card["overrideReasons"]]
    assert {"not-interested", "not-now", "already-screened"} <= set(codes)
    assert all(reason["system"] == OVERRIDE_SYSTEM for reason in card["overrideReasons"])
    assert len(card["uuid"]) == 36 and card["uuid"] != _call(*cds)["cards"][0]["uuid"]


def _feedback(client: FlaskClient, ehr: Issuer, *entries: dict[str, Any], audience: str) -> Any:
    return client.post(
        CDS_URL + "/feedback", json={"feedback": list(entries)},
        headers={"Authorization": f"Bearer {ehr.token(audience, sub='ehr-client-7')}"},
    )  # fmt: skip


def test_feedback_is_recorded_per_card_with_who_and_why(
    cds: tuple[FlaskClient, Issuer], caplog: pytest.LogCaptureFixture
) -> None:
    client, ehr = cds
    card = _call(client, ehr)["cards"][0]
    accepted = {"card": card["uuid"], "outcome": "accepted",
                "outcomeTimestamp": "2026-11-26T10:00:00Z"}  # fmt: skip
    overridden = {"card": card["uuid"], "outcome": "overridden",
                  "outcomeTimestamp": "2026-11-26T10:01:00+01:00",
                  "overrideReason": {"reason": card["overrideReasons"][1],
                                     "userComment": "Mr X is on holiday"}}  # fmt: skip
    feedback_audience = AUDIENCE + "/feedback"
    with caplog.at_level(logging.INFO, logger="medcare.cds.feedback"):
        response = _feedback(client, ehr, accepted, overridden, audience=feedback_audience)
    assert response.status_code == 200, response.get_json()
    assert response.get_json() == {}
    lines = [r.getMessage() for r in caplog.records if r.name == "medcare.cds.feedback"]
    assert lines == [
        f"cds feedback card={card['uuid']} patient={PATIENT} outcome=accepted reason=None "
        "author=ehr-client-7",
        f"cds feedback card={card['uuid']} patient={PATIENT} outcome=overridden reason=not-now "
        "author=ehr-client-7",
    ]  # free text never in the log
    kept = _runtime(client).store.card_feedback(PATIENT)  # newest first, like the history
    assert [(f.outcome, f.reason_code, f.comment, f.author) for f in kept] == [
        ("overridden", "not-now", "Mr X is on holiday", "ehr-client-7"),
        ("accepted", None, None, "ehr-client-7"),
    ]
    assert kept[0].outcome_at == datetime(2026, 11, 26, 9, 1, tzinfo=UTC)
    assert kept[0].card == card["uuid"]
    stranger = {**accepted, "card": "6f1c7c1e-2b7e-4a7b-9c1e-0d6c1f2a3b4c"}
    with caplog.at_level(logging.INFO, logger="medcare.cds.feedback"):
        assert _feedback(client, ehr, stranger, audience=feedback_audience).status_code == 200
    assert "patient=None outcome=accepted" in caplog.records[-1].getMessage()  # kept, no patient
    assert len(_runtime(client).store.card_feedback(PATIENT)) == 2


def test_the_settings_read_their_variables() -> None:
    env = {"MEDCARE_CDS_REQUIRE_DIAGNOSIS": "false", "MEDCARE_WEB_BASE_URL": WEB}
    settings = settings_from_env(env)
    assert settings.cds_require_diagnosis is False and settings.web_base_url == WEB
    assert settings_from_env({}).cds_require_diagnosis is True


def _runtime(client: FlaskClient) -> Runtime:
    with client.application.app_context():
        return runtime()


def test_feedback_is_authenticated_and_checked(cds: tuple[FlaskClient, Issuer]) -> None:
    client, ehr = cds
    entry = {"card": "6f1c7c1e-2b7e-4a7b-9c1e-0d6c1f2a3b4c", "outcome": "overridden",
             "outcomeTimestamp": "2026-11-26T10:00:00Z",
             "overrideReason": {"reason": {"system": OVERRIDE_SYSTEM, "code": "bored"}}}  # fmt: skip
    assert client.post(CDS_URL + "/feedback", json={"feedback": [entry]}).status_code == 401
    # a token for the hook's URL is not one for the feedback endpoint
    assert _feedback(client, ehr, entry, audience=AUDIENCE).status_code == 401
    refused = _feedback(client, ehr, entry, audience=AUDIENCE + "/feedback")
    assert refused.status_code == 422
    assert "overrideReason" in str(refused.get_json())
    for bad in ({**entry, "card": "not-a-uuid"}, {**entry, "outcome": "ignored"},
                {"card": entry["card"], "outcome": "accepted"}):  # fmt: skip
        assert _feedback(client, ehr, bad, audience=AUDIENCE + "/feedback").status_code == 422
