"""/v1/patients/{id}/disposition, /manual/{criterion}, /history (issue 15 item 4): ETags,
If-Match, clear refusals that keep nothing, and the review shown with the latest result."""

from __future__ import annotations

from flask.testing import FlaskClient

from tests.api.conftest import AUTH

BASE = "/v1/patients/fx-base"


def _put(client: FlaskClient, path: str, body: dict[str, object], etag: str | None) -> object:
    headers = {**AUTH, **({"If-Match": etag} if etag is not None else {})}
    return client.put(BASE + path, json=body, headers=headers)


def test_record_a_disposition_with_the_etag_read(client: FlaskClient) -> None:
    read = client.get(BASE + "/disposition", headers=AUTH)
    assert read.status_code == 200 and read.headers["ETag"] == '"0"'
    assert read.get_json()["disposition"] is None and read.get_json()["manual_answers"] == {}
    put = _put(
        client, "/disposition", {"code": "contacted", "note": "phoned"}, read.headers["ETag"]
    )
    assert put.status_code == 200 and put.headers["ETag"] == '"1"'
    entry = put.get_json()["disposition"]
    assert entry["code"] == "contacted" and entry["note"] == "phoned" and entry["by"]
    assert client.get(BASE + "/disposition", headers=AUTH).get_json()["version"] == 1


def test_a_second_writer_is_told_who_changed_it_and_nothing_is_lost(client: FlaskClient) -> None:
    _put(client, "/disposition", {"code": "under-review"}, '"0"')
    stale = _put(client, "/disposition", {"code": "deferred"}, '"0"')
    assert stale.status_code == 412
    error = stale.get_json()["error"]
    assert error["code"] == "stale-version" and error["details"]["current_version"] == 1
    assert error["details"]["changed_by"] and "current version is 1" in error["message"]
    missing = _put(client, "/disposition", {"code": "deferred"}, None)
    assert missing.status_code == 428 and missing.get_json()["error"]["code"] == "if-match-required"
    current = client.get(BASE + "/disposition", headers=AUTH).get_json()
    assert current["version"] == 1 and current["disposition"]["code"] == "under-review"


def test_bad_input_is_400_naming_the_field(client: FlaskClient) -> None:
    for body, field in [
        ({"code": "perhaps"}, "code"),
        ({"code": "not-eligible"}, "reason"),
        ({"code": "contacted", "note": "x" * 2001}, "note"),
    ]:
        response = _put(client, "/disposition", body, '"0"')
        assert response.status_code == 400, body
        assert response.get_json()["error"]["details"]["field"] == field
    wrong = _put(client, "/manual/consent", {"answer": "yes"}, '"0"')
    assert wrong.status_code == 400 and wrong.get_json()["error"]["details"]["field"] == "answer"
    unknown = _put(client, "/manual/histology", {"answer": "met"}, '"0"')
    assert unknown.status_code == 404
    assert client.get(BASE + "/disposition", headers=AUTH).get_json()["version"] == 0


def test_manual_answers_and_history(client: FlaskClient) -> None:
    assert client.get(BASE + "/manual/consent", headers=AUTH).get_json()["answer"] is None
    put = _put(client, "/manual/consent", {"answer": "met", "note": "signed"}, '"0"')
    assert put.status_code == 200 and put.get_json()["answer"]["code"] == "met"
    read = client.get(BASE + "/manual/consent", headers=AUTH)
    assert read.headers["ETag"] == '"1"' and read.get_json()["answer"]["note"] == "signed"
    _put(client, "/disposition", {"code": "eligible"}, '"1"')
    items = client.get(BASE + "/history", headers=AUTH).get_json()["items"]
    assert [(i["type"], i["code"]) for i in items] == [
        ("disposition", "eligible"),
        ("manual", "met"),
    ]


def test_the_review_survives_a_rescreen_and_shows_with_the_result(client: FlaskClient) -> None:
    screen = {"patient": "fx-base", "as_of": "2026-11-26"}
    assert client.post("/v1/screen", json=screen, headers=AUTH).status_code == 200
    _put(client, "/disposition", {"code": "presented-to-board"}, '"0"')
    _put(client, "/manual/tumour-board", {"answer": "met"}, '"1"')
    assert client.post("/v1/screen", json=screen, headers=AUTH).status_code == 200
    result = client.get(BASE + "/result", headers=AUTH).get_json()
    assert result["disposition"]["code"] == "presented-to-board"
    assert result["manual_answers"]["tumour-board"]["code"] == "met"
    assert result["review_version"] == 2
    board = next(c for c in result["criteria"] if c["id"] == "tumour-board")
    assert board["result"] == "manual"  # the automatic result is never mixed with the answer
    history = client.get(BASE + "/history", headers=AUTH).get_json()["items"]
    assert [i["type"] for i in history] == ["manual", "disposition", "result"]


def test_the_operations_are_in_the_openapi_document(client: FlaskClient) -> None:
    spec = client.get("/openapi.json").get_json()
    operations = {
        op["operationId"]
        for path, item in spec["paths"].items()
        if path.startswith("/v1/patients/")
        for op in item.values()
        if isinstance(op, dict) and "operationId" in op
    }
    assert {"getDisposition", "putDisposition", "getManualAnswer", "putManualAnswer",
            "getPatientHistory"} <= operations  # fmt: skip
    put = spec["paths"]["/v1/patients/{patient_id}/disposition"]["put"]
    assert {"412", "428", "400"} <= set(put["responses"])
