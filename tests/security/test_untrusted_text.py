"""Text from servers, files and requests reaches terminals, logs, EHR cards and parsers as
itself, never as control (issue 10 item 14): ids with control characters are refused or shown
escaped, CDS card Markdown carries no raw HTML, API bodies with duplicate keys are refused.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient

from service.api import create_app
from service.api.views.cds import card, markdown_text
from service.cli import main
from service.fhir.local_source import LocalSource
from service.mapping import load_mappings
from service.runtime import Runtime
from service.screening.engine import Screener
from service.screening.result import Status
from tests.api.conftest import AUTH, make_settings
from tests.conftest import FIXTURES
from tests.ndjson_export import bundles_to_ndjson
from tests.reliability.conftest import Medplum
from tests.reliability.faultproxy import Fault, FaultProxy, Request

AS_OF = "2026-11-26"
FORGED = "medcare-screen: error: forged line"
HOSTILE_ID = f"fx-evil\x1b[2J\n{FORGED}"
ESCAPED_ID = "fx-evil\\x1b[2J\\nmedcare-screen: error: forged line"


def _raw_control(text: str) -> list[str]:
    """Control characters other than the newlines that end our own lines."""
    return [c for c in text if not c.isprintable() and c != "\n"]


@pytest.fixture
def api(tmp_path: Path) -> Any:
    settings = make_settings(tmp_path)
    runtime = Runtime(settings)
    try:
        yield create_app(settings, runtime).test_client()
    finally:
        runtime.close()


def test_an_id_with_a_trailing_newline_is_not_an_id(api: FlaskClient) -> None:
    for body in ({"patient": "fx-base\n"}, {"patients": ["fx-base\n"]},
                 {"search": "Patient?_id=fx-base\n"}, {"group": "g\n"}):  # fmt: skip
        url = "/v1/screen" if "patient" in body else "/v1/runs"
        response = api.post(url, json={**body, "as_of": AS_OF}, headers=AUTH)
        assert response.status_code == 422, (body, response.get_json())
    assert api.post("/v1/screen", json={"patient": "fx-base"}, headers=AUTH).status_code == 200


def _hostile_bundle(tmp_path: Path) -> Path:
    bundle = json.loads((FIXTURES / "base.json").read_text())
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            resource["id"] = HOSTILE_ID
        else:
            resource["subject"] = {"reference": f"Patient/{HOSTILE_ID}"}
            resource["id"] = "x" + resource["id"]
    folder = tmp_path / "files"
    folder.mkdir()
    (folder / "hostile.json").write_text(json.dumps(bundle))
    (folder / "base.json").write_text((FIXTURES / "base.json").read_text())
    return folder


@pytest.mark.parametrize("form", ["bundles", "ndjson"])
def test_patient_ids_with_control_characters_from_files_are_skipped_and_shown_escaped(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], form: str
) -> None:
    folder = _hostile_bundle(tmp_path)
    if form == "ndjson":
        folder = bundles_to_ndjson(sorted(folder.glob("*.json")), tmp_path / "export")
    code = main(["screen", "--source", str(folder), "--as-of", AS_OF, "--format", "json",
                 "--no-store"])  # fmt: skip
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [json.loads(line)["patient"] for line in captured.out.splitlines()] == [
        "Patient/fx-base"
    ]
    assert FORGED not in captured.err.splitlines() and not _raw_control(captured.err)
    assert f"Patient/{ESCAPED_ID}: not a FHIR id, skipped" in captured.err


def test_patient_ids_with_control_characters_from_a_server_are_skipped_and_shown_escaped(
    medplum: Medplum,
    proxy: FaultProxy,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    def hostile_ids(payload: bytes, _request: Request) -> bytes:
        bundle = json.loads(payload)
        bundle.setdefault("entry", []).append(
            {"resource": {"resourceType": "Patient", "id": HOSTILE_ID}}
        )
        return json.dumps(bundle).encode()

    fault = proxy.add(
        Fault("transform", fn=hostile_ids, match=lambda r: r.path.startswith("/fhir/Patient?"))
    )
    code = main(["screen", "--fhir-base", proxy.base_url + "/fhir", "--search",
                 "Patient?_id=fx-base", "--as-of", AS_OF, "--format", "json", "--no-store"])  # fmt: skip
    captured = capsys.readouterr()
    assert fault.applied == 1
    assert code == 0, captured.err
    assert [json.loads(line)["patient"] for line in captured.out.splitlines()] == [
        "Patient/fx-base"
    ]
    logged = captured.err + "\n" + "\n".join(r.getMessage() for r in caplog.records)
    assert FORGED not in logged.splitlines() and not _raw_control(logged)
    assert f"Patient/{ESCAPED_ID}: not a FHIR id, skipped" in logged
    assert not any(HOSTILE_ID in seen.path for seen in proxy.seen)  # never asked for


def test_cds_card_markdown_carries_no_raw_html_from_resource_ids() -> None:
    """An invalid Condition id is quoted in the reason of the criterion it was read for."""
    record = LocalSource(FIXTURES / "base.json").record("fx-base")
    condition = next(c for c in record.of_type("Condition") if c["id"] == "fx-base-pca")
    condition["id"] = '<script>alert("x")</script>[link](javascript:alert(1))'
    result = Screener(load_mappings()).screen(record, __import__("datetime").date(2026, 11, 26))
    assert result.status is Status.CANDIDATE
    reasons = " ".join(c.reason for c in result.criteria)
    assert "<script>" in reasons  # what the card must not pass on as HTML
    detail = card(result)["detail"]
    assert "<script>" not in detail and "</script>" not in detail and "](" not in detail
    assert "&lt;script&gt;alert" in detail
    assert markdown_text("a\nb <i>*c*</i> [d](e)") == (
        "a b &lt;i&gt;\\*c\\*&lt;/i&gt; \\[d\\]\\(e\\)"
    )


def test_api_bodies_with_duplicate_keys_are_refused_naming_the_key(api: FlaskClient) -> None:
    body = '{"patient": "fx-base", "as_of": "2026-11-26", "patient": "fx-age-17"}'
    response = api.post("/v1/screen", data=body,
                        headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 400
    error = response.get_json()["error"]
    assert error["code"] == "duplicate-key"
    assert error["message"] == (
        "the request body is refused: the key 'patient' appears twice in one object"
    )
    nested = '{"patients": ["fx-base"], "options": {"a": 1, "a": 2}}'
    response = api.post("/v1/runs", data=nested,
                        headers={**AUTH, "Content-Type": "application/json"})  # fmt: skip
    assert response.status_code == 400 and "'a'" in response.get_json()["error"]["message"]
    unauthenticated = api.post(
        "/v1/screen", data=body, headers={"Content-Type": "application/json"}
    )
    assert unauthenticated.status_code == 401
