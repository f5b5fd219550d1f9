"""Deep nesting is bad input, not a crash (issue 10 item 7).

Python's json raises RecursionError near 1,000 levels and fhir.resources validation near 300;
one such line used to stop a whole screen with a traceback, and an API body gave a 500. Now a
deep NDJSON line is a warning with its file and line (the screen goes on, exit 0), a deep Bundle
file is unusable input named in one line (exit 2), a deep body is a 400, and a deep resource
that reaches the engine is unreadable for the criteria it informs.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.cli import main
from service.fhir.local_source import LocalSource
from service.fhir.record import PatientRecord
from service.mapping import load_mappings
from service.screening.engine import Screener
from service.screening.result import Result
from tests.api.conftest import AUTH, CDS_URL, cds_app
from tests.conftest import FIXTURES
from tests.ndjson_export import bundles_to_ndjson
from tests.reliability import harness

AS_OF = "2026-11-26"
LEVELS = 5_000
DEEP = "[" * LEVELS + "]" * LEVELS


def _deep_condition_line() -> str:
    return (
        '{"resourceType":"Condition","id":"deep","subject":{"reference":"Patient/fx-base"},'
        f'"note":{DEEP}}}\n'
    )


def _screen(source: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    code = main(["screen", "--source", str(source), "--as-of", AS_OF, "--format", "json",
                 "--no-store", *extra])  # fmt: skip
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize("workers", ["1", "2"])
def test_a_deep_ndjson_line_is_a_warning_with_its_line_and_the_screen_goes_on(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], workers: str
) -> None:
    export = bundles_to_ndjson([FIXTURES / "base.json"], tmp_path / "export")
    conditions = export / "Condition.ndjson"
    before = conditions.read_text().count("\n")
    with conditions.open("a") as appended:
        appended.write(_deep_condition_line())
    code, out, err = _screen(export, capsys, "--workers", workers)
    assert code == 0, err
    assert "Traceback" not in err and "RecursionError" not in err
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["candidate"]
    expected = f"{conditions} line {before + 1}: nested more than 100 levels deep, skipped"
    assert f"medcare-screen: warning: {expected}" in err.splitlines(), err
    harness.record("bad input: NDJSON line nested 5,000 levels", exit=code, screened=1,
                   workers=int(workers), warning=expected.split(": ", 1)[1])  # fmt: skip


def test_a_deep_ndjson_line_next_to_bundles_is_a_warning_too(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "mixed"  # Bundles and NDJSON: read by LocalSource, not the stream
    folder.mkdir()
    (folder / "base.json").write_text((FIXTURES / "base.json").read_text())
    medication = '{"resourceType": "Medication", "id": "m-extra"}\n'  # one good line at least
    (folder / "extra.ndjson").write_text(_deep_condition_line() + medication)
    code, out, err = _screen(folder, capsys)
    assert code == 0, err
    assert [json.loads(line)["status"] for line in out.splitlines()] == ["candidate"]
    expected = f"{folder / 'extra.ndjson'} line 1: nested more than 100 levels deep, skipped"
    assert f"medcare-screen: warning: {expected}" in err.splitlines(), err


def test_a_deep_bundle_file_is_unusable_input_named_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = json.loads((FIXTURES / "base.json").read_text())
    text = json.dumps(bundle)[:-1] + f', "meta": {{"tag": {DEEP}}}}}'
    deep = tmp_path / "deep.json"
    deep.write_text(text)
    code, _out, err = _screen(deep, capsys)
    assert code == 2
    assert err.splitlines() == [
        f"medcare-screen: error: {deep}: not a FHIR resource or Bundle "
        "(nested more than 100 levels deep)"
    ]
    with pytest.raises(Exception, match="nested more than 100 levels deep"):
        LocalSource(deep).patient_ids()


def _nested_extension(levels: int) -> dict[str, Any]:
    extension: dict[str, Any] = {"url": "http://example.org/e", "valueString": "x"}
    for _ in range(levels):
        extension = {"url": "http://example.org/e", "extension": [extension]}
    return extension


def test_a_deep_resource_from_a_server_is_unreadable_not_a_crash() -> None:
    """A server answer is decoded by the client (with its own depth limit); whatever reaches the
    engine, validation must not raise RecursionError: 150 nested extensions did."""
    bundle = json.loads((FIXTURES / "base.json").read_text())
    record = PatientRecord("fx-base")
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Condition" and resource["id"] == "fx-base-pca":
            resource = {**resource, "extension": [_nested_extension(400)]}
        record.add(resource)
    result = Screener(load_mappings()).screen(record, date.fromisoformat(AS_OF))
    histology = next(c for c in result.criteria if c.id == "histology")
    assert histology.result is Result.UNKNOWN
    assert "Condition/fx-base-pca" in histology.reason and "nested too deeply" in histology.reason


@pytest.fixture
def api(tmp_path: Path) -> Any:
    with cds_app(tmp_path) as app:
        yield app


def _post(client: FlaskClient, url: str, body: str, headers: dict[str, str]) -> Any:
    return client.post(url, data=body, headers={**headers, "Content-Type": "application/json"})


def test_a_deep_api_body_is_a_400_not_a_500(api: Any) -> None:
    client, ehr, audience = api
    body = '{"patient": "fx-base", "as_of": "2026-11-26", "x": ' + DEEP + "}"
    response = _post(client, "/v1/screen", body, AUTH)
    assert response.status_code == 400, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "malformed-json"
    assert error["message"] == "the request body is nested more than 100 levels deep"
    assert _post(client, "/v1/runs", body, AUTH).status_code == 400
    assert _post(client, "/v1/screen", body, {}).status_code == 401  # credentials first
    cds = json.dumps({"hook": "patient-view", "hookInstance": "h",
                      "context": {"patientId": "fx-base"}})[:-1] + f', "prefetch": {DEEP}}}'  # fmt: skip
    assert _post(client, CDS_URL, cds, {}).status_code == 401  # the EHR's JWT first
    token = {"Authorization": f"Bearer {ehr.token(audience)}"}
    answer = _post(client, CDS_URL, cds, token)
    assert answer.status_code == 400 and answer.get_json()["error"]["code"] == "malformed-json"
    harness.record("bad input: API body nested 5,000 levels", status=400,
                   endpoints=["/v1/screen", "/v1/runs", CDS_URL])  # fmt: skip
