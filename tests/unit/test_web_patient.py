"""The patient page through Flask's test client (issue 15 items 2 and 3): the result in full,
evidence linked to the FHIR server, the worklist's link to it, and the forms: recorded with
who and when, a stale form refused with the typed note kept, bad input told, CSRF checked."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from service.api import create_app
from service.runtime import Runtime
from tests.api.conftest import make_settings
from tests.unit.store.helpers import body, save
from tests.unit.test_web_pages import csrf_of
from tests.unit.test_web_pages import signed_in as signed_in_to_worklist

PAGE = "/patients/w-one"


@pytest.fixture
def dev_app(tmp_path: Path) -> Iterator[Flask]:
    settings = make_settings(
        tmp_path, environment="development", fhir_base_url="https://fhir.example.org/r4/"
    )
    runtime = Runtime(settings, start_workers=False)
    result = body("Patient/w-one")
    result["criteria"][1]["evidence"] = [{"reference": "Observation/77", "summary": "PSA"}]
    save(runtime.store, None, result)
    yield create_app(settings, runtime)
    runtime.close()


def signed_in(app: Flask) -> FlaskClient:
    """Signed in, with the patient page open (its forms carry the session's CSRF token)."""
    client = signed_in_to_worklist(app)
    assert client.get(PAGE).status_code == 200
    return client


def _version(page: str) -> str:
    found = re.search(r'name="version" value="(\d+)"', page)
    assert found is not None
    return found.group(1)


def _post(client: FlaskClient, path: str, **fields: str) -> TestResponse:
    return client.post(path, data={"csrf_token": csrf_of(client), **fields})


def test_the_page_shows_the_result_and_links_evidence(dev_app: Flask) -> None:
    client = signed_in(dev_app)
    assert 'href="/patients/w-one"' in client.get("/worklist").get_data(as_text=True)
    page = client.get(PAGE).get_data(as_text=True)
    assert "Patient w-one" in page and "Criteria (21)" in page
    assert 'href="https://fhir.example.org/r4/Observation/77"' in page
    assert "Strata" in page and "History" in page and "first screen" in page
    assert client.get("/patients/nobody").status_code == 404


def test_record_a_disposition_and_an_answer(dev_app: Flask) -> None:
    client = signed_in(dev_app)
    version = _version(client.get(PAGE).get_data(as_text=True))
    answer = _post(client, PAGE + "/disposition", code="contacted", note="phoned", version=version)
    assert answer.status_code == 303
    page = client.get(PAGE).get_data(as_text=True)
    assert "Contacted (dev-coordinator" in page and "phoned" in page
    _post(client, PAGE + "/manual/consent", answer="met", note="signed", version=_version(page))
    page = client.get(PAGE).get_data(as_text=True)
    assert "answered: Met" in page and "Version 2." in page


def test_a_stale_form_is_refused_and_keeps_the_typed_note(dev_app: Flask) -> None:
    client = signed_in(dev_app)
    _post(client, PAGE + "/disposition", code="under-review", version="0")
    stale = _post(client, PAGE + "/disposition", code="deferred", note="call in May", version="0")
    text = stale.get_data(as_text=True)
    assert stale.status_code == 409 and "Nothing of yours was recorded" in text
    assert "call in May" in text and "dev-coordinator" in text


def test_bad_input_and_a_forged_token_record_nothing(dev_app: Flask) -> None:
    client = signed_in(dev_app)
    missing = _post(client, PAGE + "/disposition", code="not-eligible", note="kept", version="0")
    text = missing.get_data(as_text=True)
    assert missing.status_code == 400 and "needs a reason" in text and "kept" in text
    long = _post(client, PAGE + "/manual/consent", answer="met", note="x" * 2001, version="0")
    assert long.status_code == 400
    forged = client.post(PAGE + "/disposition", data={"csrf_token": "forged", "code": "enrolled",
                                                      "version": "0"})  # fmt: skip
    assert forged.status_code == 400
    assert "Version 0." in client.get(PAGE).get_data(as_text=True)


def test_read_only_may_read_but_not_record(dev_app: Flask) -> None:
    client = signed_in(dev_app)
    with client.session_transaction() as session:
        session["user"] = {"sub": "r1", "name": "Reader", "role": "read-only"}
    page = client.get(PAGE).get_data(as_text=True)
    assert "Patient w-one" in page and "Record disposition" not in page
    refused = _post(client, PAGE + "/disposition", code="enrolled", version="0")
    assert refused.status_code == 403 and "does not allow" in refused.get_data(as_text=True)
    assert "Version 0." in client.get(PAGE).get_data(as_text=True)


def test_card_feedback_is_in_the_history_by_when_the_clinician_acted(tmp_path: Path) -> None:
    """The EHR names the patient by its bare id; accepted and overridden (with the offered
    reason's display) both show, with who, merged with the result changes by time."""
    settings = make_settings(tmp_path, environment="development")
    runtime = Runtime(settings, start_workers=False)
    save(runtime.store, None, body("Patient/w-one"))
    store, now = runtime.store, runtime.clock.now()
    store.issue_card("card-1", "w-one", "study", "candidate")
    store.record_card_feedback("card-1", "overridden", author="dr-who", reason_code="not-now",
                               comment="next visit", outcome_at=now + timedelta(hours=1))  # fmt: skip
    store.record_card_feedback("card-1", "accepted", author="dr-old",
                               outcome_at=now - timedelta(days=400))  # fmt: skip
    try:
        page = signed_in(create_app(settings, runtime)).get(PAGE).get_data(as_text=True)
    finally:
        runtime.close()
    overridden = page.index("EHR card overridden by dr-who: Not appropriate now (next visit)")
    accepted = page.index("EHR card accepted by dr-old")
    assert overridden < page.index("first screen") < accepted
