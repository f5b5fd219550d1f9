"""The API as an integration engine and a dashboard meet it (Flask test client)."""

from __future__ import annotations

import time
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.api import create_app
from service.runtime import Runtime
from tests.api.conftest import AUTH, make_settings
from tests.contract.contract_schema import check_contract


def _error(body: dict[str, Any], status: int) -> dict[str, Any]:
    """Every error has the one documented shape."""
    assert set(body) == {"error"}
    assert body["error"]["status"] == status and body["error"]["code"] and body["error"]["message"]
    return dict(body["error"])


def _wait_done(client: FlaskClient, url: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = client.get(url, headers=AUTH).get_json()
        if run["status"] in ("done", "failed", "cancelled"):
            return dict(run)
        time.sleep(0.05)
    raise AssertionError(f"run {url} did not finish")


def test_screen_one_patient(client: FlaskClient) -> None:
    response = client.post(
        "/v1/screen", json={"patient": "fx-base", "as_of": "2026-11-26"}, headers=AUTH
    )
    assert response.status_code == 200
    body = response.get_json()
    check_contract(body["result"])
    assert (
        body["result"]["status"] == "candidate"
        and body["changed"] is True
        and body["write_back"] is None
    )
    again = client.post(
        "/v1/screen", json={"patient": "fx-base", "as_of": "2026-11-26"}, headers=AUTH
    )
    assert again.get_json()["changed"] is False


def test_unknown_patient_is_404(client: FlaskClient) -> None:
    response = client.post("/v1/screen", json={"patient": "nobody"}, headers=AUTH)
    assert _error(response.get_json(), 404)["code"] == "patient-not-found"


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"patient": "a b"},
        {"patient": "fx-base", "as_of": "26/11/2026"},
        {"patient": "x", "extra": 1},
    ],
)
def test_invalid_bodies_get_the_error_shape(client: FlaskClient, body: dict[str, Any]) -> None:
    response = client.post("/v1/screen", json=body, headers=AUTH)
    assert response.status_code == 422
    error = _error(response.get_json(), 422)
    assert error["details"]["fields"]


def test_write_back_without_a_server_is_refused(client: FlaskClient) -> None:
    response = client.post(
        "/v1/screen", json={"patient": "fx-base", "write_back": True}, headers=AUTH
    )
    assert _error(response.get_json(), 502)["message"].startswith("write-back needs a FHIR server")


def test_latest_result(client: FlaskClient) -> None:
    assert client.get("/v1/patients/fx-base/result", headers=AUTH).status_code == 404
    client.post("/v1/screen", json={"patient": "fx-base", "as_of": "2026-11-26"}, headers=AUTH)
    response = client.get("/v1/patients/fx-base/result", headers=AUTH)
    assert response.status_code == 200 and response.get_json()["patient"] == "Patient/fx-base"


def test_run_over_a_list_polled_to_the_end(client: FlaskClient) -> None:
    patients = ["fx-base", "fx-age-17", "fx-deceased-boolean", "fx-missing"]
    started = client.post("/v1/runs", json={"patients": [p.removeprefix("fx-") and p for p in patients], "as_of": "2026-11-26"}, headers=AUTH)  # fmt: skip
    assert started.status_code == 202
    location = started.headers["Location"]
    run = _wait_done(client, location)
    assert run["status"] == "done"
    assert (
        run["progress"]["total"] == 4
        and run["progress"]["done"] == 3
        and run["progress"]["failed"] == 1
    )
    assert run["progress"]["candidate"] == 1 and run["progress"]["ineligible"] == 2
    # results paged by cursor, in list order, the failure with its reason
    seen: list[dict[str, Any]] = []
    url = run["links"]["results"] + "?limit=3"
    while url:
        page = client.get(url, headers=AUTH).get_json()
        seen.extend(page["items"])
        url = (
            run["links"]["results"] + f"?limit=3&cursor={page['next_cursor']}"
            if page["next_cursor"]
            else ""
        )
    assert [i["patient"] for i in seen] == [f"Patient/{p}" for p in patients]
    failed = seen[-1]
    assert (
        failed["state"] == "failed" and failed["error"] == "Patient/fx-missing is not in the source"
    )
    summary = client.get(run["links"]["summary"], headers=AUTH).get_json()
    histology = next(c for c in summary["criteria"] if c["id"] == "histology")
    assert histology["met"] == 3 and "not-met" in histology and "unknown" in histology
    assert summary["screened"] == 3 and summary["failed"] == 1
    cancel = client.post(run["links"]["cancel"], headers=AUTH)
    assert _error(cancel.get_json(), 409)["code"] == "run-finished"


def test_run_over_all_local_patients_by_search(client: FlaskClient) -> None:
    started = client.post(
        "/v1/runs", json={"search": "Patient", "as_of": "2026-11-26"}, headers=AUTH
    )
    run = _wait_done(client, started.headers["Location"], timeout=120)
    assert run["status"] == "done" and run["progress"]["done"] == run["progress"]["total"] > 100


def test_searches_need_a_server(client: FlaskClient) -> None:
    response = client.post("/v1/runs", json={"search": "Patient?gender=male"}, headers=AUTH)
    assert _error(response.get_json(), 400)["code"] == "unsupported-population"
    response = client.post("/v1/runs", json={"patients": ["a"], "group": "g"}, headers=AUTH)
    assert response.status_code == 422


def test_changes_feed_sees_every_change_exactly_once(client: FlaskClient, tmp_path: Path) -> None:
    screens = [("fx-base", "2026-11-26"), ("fx-age-17", "2026-11-26"), ("fx-base", "2026-11-26"),
               ("fx-base", "2026-11-25")]  # fmt: skip
    for patient, as_of in screens:
        client.post("/v1/screen", json={"patient": patient, "as_of": as_of}, headers=AUTH)
    # months later, on the same database (the service's today moved on)
    later = make_settings(tmp_path, today=date(2027, 3, 1))
    runtime = Runtime(later)
    try:
        create_app(later, runtime).test_client().post(
            "/v1/screen", json={"patient": "fx-base", "as_of": "2027-03-01"}, headers=AUTH
        )
    finally:
        runtime.close()
    seen = []
    cursor = None
    for _ in range(10):
        query = "?limit=1" + (f"&cursor={cursor}" if cursor else "")
        page = client.get(f"/v1/changes{query}", headers=AUTH).get_json()
        seen.extend((i["seq"], i["patient"], i["as_of"]) for i in page["items"])
        cursor = page["next_cursor"]
        if not page["items"]:
            break
    # the same screen again is not a change, nor is a look back at a day earlier (never in the
    # feed); months later (testosterone and performance status now stale) it is
    assert seen == [
        (1, "Patient/fx-base", "2026-11-26"),
        (2, "Patient/fx-age-17", "2026-11-26"),
        (3, "Patient/fx-base", "2027-03-01"),
    ]
    bad = client.get("/v1/changes?cursor=not-a-cursor", headers=AUTH)
    assert _error(bad.get_json(), 400)["code"] == "bad-cursor"


@pytest.mark.parametrize(
    ("method", "path"),
    [("post", "/v1/screen"), ("get", "/v1/patients/fx-base/result"), ("get", "/v1/changes"),
     ("post", "/v1/runs"), ("get", "/v1/runs/abc"), ("get", "/v1/runs/abc/results"),
     ("get", "/v1/runs/abc/summary"), ("post", "/v1/runs/abc/cancel")],
)  # fmt: skip
@pytest.mark.parametrize(
    "headers", [{}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic dXNlcjpwdw=="}]
)
def test_patient_data_needs_authentication(
    client: FlaskClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = getattr(client, method)(path, headers=headers, json={"patient": "fx-base"})
    assert response.status_code == 401
    assert _error(response.get_json(), 401)["code"] == "unauthorized"
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert "wrong" not in response.get_data(as_text=True)


def test_public_endpoints(client: FlaskClient) -> None:
    assert client.get("/health/live").status_code == 200
    ready = client.get("/health/ready").get_json()
    assert ready == {"status": "ok", "checks": {"database": True}}
    spec = client.get("/openapi.json").get_json()
    assert (
        spec["openapi"].startswith("3.")
        and "/v1/screen" in spec["paths"]
        and "/v1/changes" in spec["paths"]
    )
    assert "Error" in spec["components"]["schemas"]
    assert client.get("/docs").status_code == 200
    client.post("/v1/screen", json={"patient": "fx-base"}, headers=AUTH)
    metrics = client.get("/metrics").get_data(as_text=True)
    assert (
        'medcare_http_requests_total{endpoint="screen.screen_now",method="POST",status="200"}'
        in metrics
    )
    assert "fx-base" not in metrics


def test_unknown_route_method_and_size(client: FlaskClient) -> None:
    assert _error(client.get("/v1/nothing", headers=AUTH).get_json(), 404)["code"] == "not-found"
    assert (
        _error(client.get("/v1/screen", headers=AUTH).get_json(), 405)["code"]
        == "method-not-allowed"
    )
    big = client.post(
        "/v1/screen", data="x" * 2_000_000, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert _error(big.get_json(), 413)["code"] == "request-too-large"
