"""GET /v1/reports/funnel.svg and /v1/reports/screening-log.csv (issue 15 item 5): the same
reports as the command line, over the current results the API has screened."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from service.api import create_app
from service.api.security import token_digest
from service.cli import main
from service.runtime import Runtime
from tests.api.conftest import AUTH, make_settings

PATIENTS = ("fx-base", "fx-age-17", "fx-deceased-boolean")


def _screen(client: FlaskClient) -> None:
    for patient in PATIENTS:
        screen = {"patient": patient, "as_of": "2026-11-26"}
        assert client.post("/v1/screen", json=screen, headers=AUTH).status_code == 200
    answer = client.put(
        "/v1/patients/fx-age-17/disposition",
        json={"code": "not-eligible", "reason": "age"},
        headers={**AUTH, "If-Match": '"0"'},
    )
    assert answer.status_code == 200


def test_the_funnel_is_an_svg_of_the_current_results(client: FlaskClient) -> None:
    _screen(client)
    response = client.get("/v1/reports/funnel.svg", headers=AUTH)
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    root = ET.fromstring(response.get_data(as_text=True))
    steps = root.findall("{http://www.w3.org/2000/svg}g")
    assert steps[0].get("data-left") == "3"
    assert client.get("/v1/reports/funnel.svg").status_code == 401


def test_the_screening_log_for_the_sponsor_and_the_site(client: FlaskClient) -> None:
    _screen(client)
    sponsor = client.get("/v1/reports/screening-log.csv?audience=sponsor", headers=AUTH)
    assert sponsor.status_code == 200 and sponsor.mimetype == "text/csv"
    assert "screening-log-sponsor.csv" in sponsor.headers["Content-Disposition"]
    text = sponsor.get_data(as_text=True)
    assert not any(patient in text for patient in PATIENTS)
    assert not re.search(r"\d{4}-\d{2}-\d{2}", text)
    assert client.get("/v1/reports/screening-log.csv", headers=AUTH).get_data() == text.encode()
    site = client.get("/v1/reports/screening-log.csv?audience=site", headers=AUTH)
    rows = list(csv.reader(io.StringIO(site.get_data(as_text=True))))
    lines = {row[1]: row for row in rows[1 : rows.index([])]}
    assert set(lines) == {f"Patient/{p}" for p in PATIENTS}
    assert (
        lines["Patient/fx-age-17"][6] == "not-eligible" and lines["Patient/fx-age-17"][9] == "age"
    )
    bad = client.get("/v1/reports/screening-log.csv?audience=everyone", headers=AUTH)
    assert bad.status_code == 400 and bad.get_json()["error"]["code"] == "invalid-audience"


def test_both_are_in_the_openapi_document(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    assert "image/svg+xml" in paths["/v1/reports/funnel.svg"]["get"]["responses"]["200"]["content"]
    log = paths["/v1/reports/screening-log.csv"]["get"]
    assert [p["name"] for p in log["parameters"]] == ["audience"]
    assert "403" in log["responses"]


def test_the_command_line_writes_the_same_reports(
    client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    _screen(client)
    monkeypatch.setenv("MEDCARE_DATABASE_URL", f"sqlite:///{tmp_path / 'api.sqlite3'}")
    api = client.get("/v1/reports/screening-log.csv?audience=sponsor", headers=AUTH).get_data()
    assert main(["report", "screening-log", "--output", str(tmp_path / "log.csv")]) == 0
    assert (tmp_path / "log.csv").read_bytes() == api
    assert main(["report", "screening-log", "--audience", "site"]) == 0
    assert "Patient/fx-age-17" in capsys.readouterr().out
    assert main(["report", "funnel"]) == 0
    assert (
        capsys.readouterr().out.encode()
        == client.get("/v1/reports/funnel.svg", headers=AUTH).get_data()
    )


def test_the_identified_log_needs_the_review_permission(tmp_path: Path) -> None:
    reader = "reader-token-" + "r" * 20
    settings = make_settings(tmp_path, api_token_hashes=(f"{token_digest(reader)}:medcare.read",))
    runtime = Runtime(settings)
    try:
        client = create_app(settings, runtime).test_client()
        headers = {"Authorization": f"Bearer {reader}"}
        site = client.get("/v1/reports/screening-log.csv?audience=site", headers=headers)
        assert site.status_code == 403
        assert site.get_json()["error"]["details"]["missing"] == ["medcare.review"]
        sponsor = client.get("/v1/reports/screening-log.csv?audience=sponsor", headers=headers)
        assert sponsor.status_code == 200
        assert client.get("/v1/reports/funnel.svg", headers=headers).status_code == 200
    finally:
        runtime.close()
