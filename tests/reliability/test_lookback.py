"""Look-backs never change the present (issue 10 item 9, fhir-contract.md "What the current
result is"), against a real FHIR server (the Medplum peer) that holds the ResearchSubject.

`{"as_of": "0001-01-01", "write_back": true}` used to rewrite the patient's ResearchSubject and
replace the latest result; an older `as_of` also turned an ineligible patient back into a
candidate. Now a look back is screened and returned (and kept), but the server, the latest
result, the changes feed and the outbox never see it; a day after today is refused.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.api import create_app
from service.runtime import Runtime
from service.store import InvalidAsOf
from tests.conftest import FIXTURES
from tests.reliability import harness
from tests.reliability.conftest import Medplum

pytestmark = pytest.mark.timeout(120)
STUDY = "NCT06585007"


def _expected(patient: str) -> str:
    return str(json.loads((FIXTURES / f"{patient[3:]}.expected.json").read_text())["status"])


@pytest.fixture
def runtime(medplum: Medplum, sqlite_url: str) -> Iterator[Runtime]:
    """The service on the peer, its date fixed at the fixtures' day (MEDCARE_TODAY)."""
    rt = Runtime(
        harness.settings_for(medplum.base_url, sqlite_url, today=harness.AS_OF),
        start_workers=False,
    )
    yield rt
    rt.close()


@pytest.fixture
def client(runtime: Runtime) -> FlaskClient:
    return create_app(runtime.settings, runtime).test_client()


def _subject(medplum: Medplum, patient: str) -> dict[str, Any]:
    (subject,) = harness.subjects_of(medplum.base_url, patient, STUDY)
    return dict(subject)


def test_a_look_back_with_write_back_changes_nothing_on_the_server_or_in_the_store(
    runtime: Runtime, client: FlaskClient, medplum: Medplum
) -> None:
    patient = next(p for p in medplum.patients[10:] if _expected(p) == "candidate")
    harness.forget_subjects(medplum.base_url, [patient])
    now = client.post("/v1/screen", json={"patient": patient, "write_back": True},
                      headers=harness.AUTH).get_json()  # fmt: skip
    assert (now["result"]["as_of"], now["write_back"]) == ("2026-11-26", "written")
    before = _subject(medplum, patient)
    feed_before = client.get("/v1/changes", headers=harness.AUTH).get_json()["items"]

    looked = client.post(
        "/v1/screen",
        json={"patient": patient, "as_of": "0001-01-01", "write_back": True},
        headers=harness.AUTH,
    )
    assert looked.status_code == 200, looked.text
    body = looked.get_json()
    # screened as of then (nothing was known: the patient is not a candidate then) and returned
    assert body["result"]["as_of"] == "0001-01-01" and body["result"]["status"] == "ineligible"
    assert (body["write_back"], body["changed"]) == ("skip-look-back", False)
    after = _subject(medplum, patient)
    assert after["meta"]["versionId"] == before["meta"]["versionId"]
    assert after["status"] == before["status"]
    latest = client.get(f"/v1/patients/{patient}/result", headers=harness.AUTH).get_json()
    # the coordinators' entries ride beside the automatic result (issue 15), which is unchanged
    review = {"disposition", "manual_answers", "review_version"}
    assert {key: value for key, value in latest.items() if key not in review} == now["result"]
    assert client.get("/v1/changes", headers=harness.AUTH).get_json()["items"] == feed_before
    assert runtime.store.outbox_counts()["pending"] == 0
    assert runtime.drain_outbox() == 0


def test_an_older_look_back_never_turns_an_ineligible_patient_back_into_a_candidate(
    runtime: Runtime, medplum: Medplum
) -> None:
    """The second half of the report: ineligible now (deceased), candidate a year ago."""
    patient = "fx-deceased-boolean"
    assert patient in medplum.patients
    now = runtime.screen_patient(patient, harness.AS_OF, False)
    assert now.result["status"] == "ineligible"
    for day in (harness.AS_OF - timedelta(days=1), date(2020, 1, 1)):
        looked = runtime.screen_patient(patient, day, True)
        assert (looked.write_back, looked.changed) == ("skip-look-back", False)
    assert runtime.store.latest_result(f"Patient/{patient}", STUDY) == now.result
    assert [i["as_of"] for i in runtime.store.changes()[0]] == ["2026-11-26"]


def test_as_of_after_today_is_refused_naming_as_of(
    runtime: Runtime, client: FlaskClient, medplum: Medplum
) -> None:
    tomorrow = (harness.AS_OF + timedelta(days=1)).isoformat()
    for path, body in (
        ("/v1/screen", {"patient": medplum.patients[0], "as_of": tomorrow}),
        ("/v1/runs", {"patients": medplum.patients[:2], "as_of": tomorrow}),
    ):
        response = client.post(path, json=body, headers=harness.AUTH)
        assert response.status_code == 400, response.text
        error = response.get_json()
        assert "invalid-as-of" in json.dumps(error) and f"as_of {tomorrow}" in json.dumps(error)
    with pytest.raises(InvalidAsOf):
        runtime.screen_patient(medplum.patients[0], harness.AS_OF + timedelta(days=1), False)
    assert runtime.store.list_runs() == []
    assert runtime.store.changes()[0] == []


def test_a_look_back_run_keeps_its_results_and_leaves_the_present_alone(
    runtime: Runtime, client: FlaskClient, medplum: Medplum
) -> None:
    patients = medplum.patients[:3]
    for patient in patients:
        runtime.screen_patient(patient, harness.AS_OF, False)
    current = {p: runtime.store.latest_result(f"Patient/{p}", STUDY) for p in patients}
    refused = client.post("/v1/runs", json={"patients": patients, "as_of": "2025-01-01",
                                            "write_back": True}, headers=harness.AUTH)  # fmt: skip
    assert refused.status_code == 400 and "write_back" in refused.text
    started = client.post("/v1/runs", json={"patients": patients, "as_of": "2025-01-01"},
                          headers=harness.AUTH)  # fmt: skip
    assert started.status_code == 202, started.text
    run_id = started.get_json()["id"]
    runtime.runs.submit(run_id)
    run = harness.wait_run(runtime, run_id, 60)
    assert run["status"] == "done" and run["look_back"] is True
    items = harness.run_items(runtime.store, run_id)
    assert [i["result"]["as_of"] for i in items] == ["2025-01-01"] * 3
    assert {p: runtime.store.latest_result(f"Patient/{p}", STUDY) for p in patients} == current
    assert {i["as_of"] for i in runtime.store.changes()[0]} == {"2026-11-26"}


def test_the_cli_refuses_a_day_after_today_and_the_write_back_of_a_look_back(
    medplum: Medplum, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    from service.cli import main

    monkeypatch.setenv("MEDCARE_TODAY", harness.AS_OF.isoformat())
    monkeypatch.setenv("MEDCARE_FHIR_AUTH", "none")
    base = ["screen", "--fhir-base", medplum.base_url, "--patient", medplum.patients[0]]
    assert main([*base, "--as-of", "2026-11-27"]) == 2
    assert "--as-of 2026-11-27 is after today (2026-11-26)" in capsys.readouterr().err
    assert main([*base, "--as-of", "0001-01-01", "--write-back"]) == 2
    err = capsys.readouterr().err
    assert "--write-back" in err and "look back" in err


def test_the_cli_refuses_a_day_after_today_without_a_server(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from service.cli import main

    monkeypatch.delenv("MEDCARE_TODAY", raising=False)
    tomorrow = date.today() + timedelta(days=1)
    assert main(["screen", "--patient", "fx-base", "--as-of", tomorrow.isoformat()]) == 2
    err = capsys.readouterr().err
    assert f"--as-of {tomorrow.isoformat()} is after today" in err and "Traceback" not in err
