"""Every look at patient data is recorded (issue 15 item 7): who, when, which action, which
patients, the outcome and from where; GET /v1/audit exports it (JSON, CSV) and is recorded too."""

from __future__ import annotations

import csv
import io
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient

from service.api import create_app
from service.api.security import token_digest
from service.runtime import Runtime
from tests.api.conftest import AUTH, CDS_URL, TOKEN, cds_app, make_settings
from tests.api.test_api import _wait_done

ACTOR = f"api-token:{token_digest(TOKEN)[:8]}"
READER = "reader-token-" + "r" * 20


def _entries(app: Flask) -> list[Any]:
    runtime: Runtime = app.extensions["medcare_runtime"]
    now = runtime.clock.now()
    return runtime.store.audit_entries(now.replace(year=2000), now.replace(year=2100))


def _screen(client: FlaskClient, patient: str = "fx-base") -> None:
    screened = client.post("/v1/screen", json={"patient": patient}, headers=AUTH)
    assert screened.status_code == 200, screened.get_json()


def test_a_screen_and_a_read_are_recorded_with_who_what_whom_and_outcome(
    app: Flask, client: FlaskClient
) -> None:
    _screen(client)
    assert client.get("/v1/patients/fx-base/result", headers=AUTH).status_code == 200
    assert client.get("/v1/patients/nobody/result", headers=AUTH).status_code == 404
    assert client.get("/v1/patients/fx-base/result").status_code == 401
    screen, read, missing, refused = _entries(app)
    assert (screen.action, screen.patients, screen.outcome, screen.actor) == (
        "screen", ("fx-base",), 200, ACTOR,
    )  # fmt: skip
    assert (read.action, read.patients, read.outcome) == ("read-result", ("fx-base",), 200)
    assert (missing.patients, missing.outcome) == (("nobody",), 404)
    assert (refused.actor, refused.outcome) == ("unauthenticated", 401)
    assert read.client == "127.0.0.1" and read.recorded_at.tzinfo is not None


def test_the_changes_feed_names_each_patient_in_the_answer(app: Flask, client: FlaskClient) -> None:
    _screen(client, "fx-base")
    _screen(client, "fx-age-17")
    assert client.get("/v1/changes", headers=AUTH).status_code == 200
    changes = _entries(app)[-1]
    assert changes.action == "changes" and set(changes.patients) == {"fx-base", "fx-age-17"}


def test_health_and_the_openapi_document_are_not_looks(app: Flask, client: FlaskClient) -> None:
    client.get("/health/live")
    client.get("/openapi.json")
    assert _entries(app) == []


def test_forwarded_for_is_ignored_unless_a_trusted_proxy_is_configured(tmp_path: Path) -> None:
    forged = {**AUTH, "X-Forwarded-For": "10.9.9.9, 10.1.1.1"}
    for trusted, expected in ((False, "127.0.0.1"), (True, "10.1.1.1")):
        settings = make_settings(tmp_path / str(trusted), audit_trusted_proxy=trusted)
        runtime = Runtime(settings)
        app = create_app(settings, runtime)
        try:
            app.test_client().get("/v1/patients/fx-base/result", headers=forged)
            assert _entries(app)[-1].client == expected
        finally:
            runtime.close()


def test_export_json_and_csv_needs_the_audit_permission_and_is_recorded(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path, api_token_hashes=(token_digest(TOKEN), f"{token_digest(READER)}:medcare.read")
    )
    runtime = Runtime(settings)
    app = create_app(settings, runtime)
    client = app.test_client()
    try:
        _screen(client)
        reader = {"Authorization": f"Bearer {READER}"}
        denied = client.get("/v1/audit", headers=reader)
        assert (
            denied.status_code == 403 and "medcare.audit" in denied.get_json()["error"]["message"]
        )
        page = client.get("/v1/audit", headers=AUTH).get_json()
        assert [item["action"] for item in page["items"]] == ["screen", "export"]
        assert page["items"][0]["patients"] == ["fx-base"] and page["next_after"] is None
        one = client.get("/v1/audit?limit=1", headers=AUTH).get_json()
        assert len(one["items"]) == 1 and one["next_after"] == one["items"][0]["id"]
        later = client.get(f"/v1/audit?limit=1&after={one['next_after']}", headers=AUTH)
        assert later.get_json()["items"][0]["id"] > one["next_after"]
        text = client.get("/v1/audit?format=csv", headers=AUTH)
        assert text.status_code == 200 and text.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(text.get_data(as_text=True))))
        assert rows[0]["action"] == "screen" and rows[0]["patients"] == "fx-base"
        assert rows[0]["actor"] == ACTOR
        bad = client.get("/v1/audit?since=2026-12-02T00:00:00Z&until=2026-12-01T00:00:00Z",
                         headers=AUTH)  # fmt: skip
        assert bad.status_code == 422
        exports = [entry for entry in _entries(app) if entry.action == "export"]
        assert [entry.outcome for entry in exports] == [403, 200, 200, 200, 200, 422]
    finally:
        runtime.close()


def test_a_store_failure_never_fails_the_answer(app: Flask, client: FlaskClient) -> None:
    _screen(client)
    runtime: Runtime = app.extensions["medcare_runtime"]

    def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("database gone")

    runtime.store.record_access = broken  # type: ignore[method-assign]
    assert client.get("/v1/patients/fx-base/result", headers=AUTH).status_code == 200
    assert app.extensions["medcare_audit_counters"].store_failures == 1


def test_a_cds_call_is_recorded_with_the_ehr_subject(tmp_path: Path) -> None:
    with cds_app(tmp_path) as (client, ehr, audience):
        body = {"hook": "patient-view", "hookInstance": "h1",
                "context": {"patientId": "fx-base", "userId": "Practitioner/1"}}  # fmt: skip
        token = ehr.token(audience, sub="ehr-client-7")
        answer = client.post(CDS_URL, json=body, headers={"Authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        entry = _entries(client.application)[-1]
        assert (entry.action, entry.actor, entry.patients) == ("cds-card", "ehr-client-7",
                                                               ("fx-base",))  # fmt: skip


def test_taking_the_screening_log_is_recorded_as_an_export(app: Flask, client: FlaskClient) -> None:
    _screen(client)
    assert client.get("/v1/reports/screening-log.csv", headers=AUTH).status_code == 200
    assert client.get("/v1/reports/funnel.svg", headers=AUTH).status_code == 200
    actions = [entry.action for entry in _entries(app)]
    assert actions == ["screen", "export"]


def test_a_run_s_results_name_each_patient_and_its_status_is_no_look(
    app: Flask, client: FlaskClient
) -> None:
    started = client.post("/v1/runs", json={"patients": ["fx-base", "fx-age-17"]}, headers=AUTH)
    assert started.status_code == 202
    _wait_done(client, started.headers["Location"])
    assert client.get(started.headers["Location"] + "/results", headers=AUTH).status_code == 200
    looks = [entry for entry in _entries(app) if entry.action == "run-results"]
    assert len(looks) == 1 and set(looks[0].patients) == {"fx-base", "fx-age-17"}
    assert {entry.action for entry in _entries(app)} == {"run-results"}


def test_a_body_too_large_is_still_a_413_and_recorded_without_ids(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_request_bytes=100)
    runtime = Runtime(settings)
    app = create_app(settings, runtime)
    try:
        big = {"patient": "fx-base", "pad": "x" * 500}
        assert app.test_client().post("/v1/screen", json=big, headers=AUTH).status_code == 413
        entry = _entries(app)[-1]
        assert (entry.action, entry.patients, entry.outcome) == ("screen", (), 413)
    finally:
        runtime.close()
