"""Each audit entry as a FHIR R4 AuditEvent on the HAPI peer (issue 15 item 7): with
MEDCARE_AUDIT_FHIR on, a screen and a read of a patient's result each leave an AuditEvent
naming the patient, which HAPI accepted (it parses and checks what it stores)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from service.api import create_app
from service.runtime import Runtime
from tests.api.conftest import AUTH, make_settings
from tests.integration.conftest import LoadedPeer

pytestmark = [
    pytest.mark.parametrize("fhir_peer", ["hapi"], indirect=True),
    pytest.mark.timeout(300),
]


def test_a_screen_and_a_read_become_audit_events_on_the_server(
    loaded_peer: LoadedPeer, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, fhir_base_url=loaded_peer.base_url, audit_fhir=True)
    runtime = Runtime(settings, start_workers=False)
    app = create_app(settings, runtime)
    client = app.test_client()
    try:
        screened = client.post("/v1/screen", json={"patient": "fx-base"}, headers=AUTH)
        assert screened.status_code == 200, screened.get_json()
        assert client.get("/v1/patients/fx-base/result", headers=AUTH).status_code == 200
        app.extensions["medcare_audit_sink"].join()
        counters = app.extensions["medcare_audit_counters"]
        assert (counters.fhir_written, counters.fhir_failures) == (2, 0)
    finally:
        runtime.close()
    found = requests.get(
        f"{loaded_peer.base_url.rstrip('/')}/AuditEvent",
        params={"entity": "Patient/fx-base", "_count": "50"},
        timeout=30,
    ).json()
    events = [entry["resource"] for entry in found.get("entry", [])]
    assert {event["action"] for event in events} == {"E", "R"}  # the screen, the read
    for event in events:
        assert event["type"]["code"] == "rest" and event["subtype"][0]["code"] == "110110"
        assert event["source"]["observer"]["display"] == "MEDCARE Screen"
        assert event["agent"][0]["who"]["display"].startswith("api-token:")
