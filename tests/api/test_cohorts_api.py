"""/v1/cohorts (issue 14 item 1): define, read, replace, refresh and remove cohorts; their
permissions (401 without credentials, 403 without the permission), 404, 409 and 400s; and
the operationIds a client generator names its methods by.

The app reads the fixture files: a list cohort works, a search or a Group needs a FHIR
server (tests/integration/test_cohorts_hapi.py resolves one on HAPI).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.api import create_app
from service.api.security import token_digest
from service.runtime import Runtime
from tests.api.conftest import AUTH, TOKEN, make_settings

READER = "reader-token-" + "r" * 20
READ_ONLY = {"Authorization": f"Bearer {READER}"}
PROSTATE = "Patient?_has:Condition:patient:code=http://snomed.info/sct|399068003&gender=male"
FEW = {"name": "few", "patients": ["fx-base", "fx-dose-overlap"]}


@pytest.fixture
def app(tmp_path: Path) -> Iterator[Flask]:
    settings = make_settings(
        tmp_path,
        api_token_hashes=(token_digest(TOKEN), f"{token_digest(READER)}:medcare.read"),
        embedded_worker=False,
    )
    runtime = Runtime(settings)
    yield create_app(settings, runtime)
    runtime.close()


def _runtime(app: Flask) -> Runtime:
    found = app.extensions["medcare_runtime"]
    assert isinstance(found, Runtime)
    return found


def _error(response: Any) -> str:
    code: str = response.get_json()["error"]["code"]
    return code


OPERATIONS = [
    ("get", "/v1/cohorts", None),
    ("post", "/v1/cohorts", FEW),
    ("get", "/v1/cohorts/few", None),
    ("put", "/v1/cohorts/few", {"patients": ["fx-base"]}),
    ("post", "/v1/cohorts/few/refresh", None),
    ("delete", "/v1/cohorts/few", None),
]


def test_every_operation_needs_credentials(client: FlaskClient) -> None:
    for method, path, body in OPERATIONS:
        response = getattr(client, method)(path, json=body)
        assert response.status_code == 401, (method, path)
        assert response.headers["WWW-Authenticate"].startswith("Bearer")


def test_changing_cohorts_needs_the_screen_permission(client: FlaskClient) -> None:
    assert client.post("/v1/cohorts", json=FEW, headers=AUTH).status_code == 201
    for method, path, body in OPERATIONS:
        response = getattr(client, method)(path, json=body, headers=READ_ONLY)
        if method == "get":
            assert response.status_code == 200, (method, path)
        else:
            assert response.status_code == 403, (method, path)
            assert response.get_json()["error"]["details"]["missing"] == ["medcare.screen"]
    assert client.get("/v1/cohorts/few", headers=AUTH).get_json()["patients"] == FEW["patients"]


def test_a_list_cohort_is_defined_read_and_removed(app: Flask, client: FlaskClient) -> None:
    created = client.post("/v1/cohorts", json=FEW, headers=AUTH)
    assert created.status_code == 201
    body = created.get_json()
    assert created.headers["Location"] == body["links"]["self"] == "/v1/cohorts/few"
    assert body["kind"] == "list" and body["patients"] == FEW["patients"]
    assert body["schedule"] == "0 2 * * *" and body["members"] == 2
    assert body["refreshed_at"] is not None and "search" not in body
    store = _runtime(app).store
    assert store.in_population("fx-base") and not store.in_population("fx-other")
    assert store.depth() == 2  # the joiners are queued for a screen

    listed = client.get("/v1/cohorts", headers=AUTH).get_json()["items"]
    assert [c["name"] for c in listed] == ["few"]
    assert client.get("/v1/cohorts/few", headers=AUTH).get_json() == body

    refreshed = client.post("/v1/cohorts/few/refresh", headers=AUTH)
    assert refreshed.status_code == 200 and refreshed.get_json()["members"] == 2

    replaced = client.put(
        "/v1/cohorts/few", json={"patients": ["fx-base"], "schedule": "0 6 * * 1"}, headers=AUTH
    )
    assert replaced.status_code == 200
    assert (replaced.get_json()["members"], replaced.get_json()["schedule"]) == (1, "0 6 * * 1")
    assert not store.in_population("fx-dose-overlap")

    removed = client.delete("/v1/cohorts/few", headers=AUTH)
    assert removed.status_code == 200 and removed.get_json()["name"] == "few"
    assert client.get("/v1/cohorts/few", headers=AUTH).status_code == 404
    assert store.population_ids() == []


def test_a_name_is_taken_once(client: FlaskClient) -> None:
    assert client.post("/v1/cohorts", json=FEW, headers=AUTH).status_code == 201
    again = client.post("/v1/cohorts", json={**FEW, "patients": ["fx-base"]}, headers=AUTH)
    assert again.status_code == 409 and _error(again) == "cohort-exists"
    assert client.get("/v1/cohorts/few", headers=AUTH).get_json()["members"] == 2


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("get", "/v1/cohorts/nope", None),
        ("put", "/v1/cohorts/nope", {"patients": ["fx-base"]}),
        ("post", "/v1/cohorts/nope/refresh", None),
        ("delete", "/v1/cohorts/nope", None),
    ],
)
def test_an_unknown_cohort_is_404(
    client: FlaskClient, method: str, path: str, body: dict[str, Any] | None
) -> None:
    response = getattr(client, method)(path, json=body, headers=AUTH)
    assert response.status_code == 404 and _error(response) == "cohort-not-found"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"name": "x", "search": "Patient?family=Smith"}, 400, "search-not-allowed"),
        ({"name": "x", "search": PROSTATE}, 400, "invalid-cohort"),  # no FHIR server here
        ({"name": "x", "group": "registry"}, 400, "invalid-cohort"),
        ({"name": "x", "patients": ["fx-base"], "schedule": "every night"}, 400, "invalid-cohort"),
        ({"name": "x", "patients": ["fx-base"], "group": "g"}, 422, None),
        ({"name": "x y", "patients": ["fx-base"]}, 422, None),
        ({"patients": ["fx-base"]}, 422, None),
        ({"name": "x", "patients": ["not an id"]}, 422, None),
        ({"name": "x", "search": "Observation?code=1"}, 422, None),
    ],
)
def test_a_definition_that_cannot_be_kept_is_refused(
    client: FlaskClient, body: dict[str, Any], status: int, code: str | None
) -> None:
    response = client.post("/v1/cohorts", json=body, headers=AUTH)
    assert response.status_code == status, response.get_json()
    if code is not None:
        assert _error(response) == code
    assert client.get("/v1/cohorts", headers=AUTH).get_json()["items"] == []


def test_openapi_names_each_cohort_operation(client: FlaskClient) -> None:
    paths = client.get("/openapi.json").get_json()["paths"]
    ids = {
        (method, path): operation.get("operationId")
        for path, item in paths.items()
        if path.startswith("/v1/cohorts")
        for method, operation in item.items()
        if method in ("get", "post", "put", "delete")
    }
    assert ids == {
        ("get", "/v1/cohorts"): "listCohorts",
        ("post", "/v1/cohorts"): "createCohort",
        ("get", "/v1/cohorts/{name}"): "getCohort",
        ("put", "/v1/cohorts/{name}"): "replaceCohort",
        ("delete", "/v1/cohorts/{name}"): "deleteCohort",
        ("post", "/v1/cohorts/{name}/refresh"): "refreshCohort",
    }
    create = paths["/v1/cohorts"]["post"]["responses"]
    assert {"201", "400", "401", "403", "409"} <= set(create)
