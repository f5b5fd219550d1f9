"""The changes feed and the write-back follow the DECISION, on the HAPI peer (issue 14 item 4;
fhir-contract.md "What the current result is").

A phone-number edit makes a new Patient version that the age criterion cites as evidence; it
decides nothing, so it makes no feed entry and no new ResearchSubject version. Switching the
service from the fixture files to the server that holds the same patients makes entries only
for the patients whose decision differs (before issue 14 every patient got one: the evidence
references carry server versions).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.runtime import Runtime
from service.screening.result import ScreenResult
from service.writeback import subject_identifier
from service.writeback.fingerprint import canonical_json, fingerprint
from tests.conftest import FIXTURES
from tests.integration.conftest import LoadedPeer
from tests.integration.helpers import cloned_fixture

pytestmark = pytest.mark.parametrize("fhir_peer", ["hapi"], indirect=True)

AS_OF = date(2026, 11, 26)
STUDY = "NCT06585007"


def _runtime(tmp_path: Path, **source: Any) -> Runtime:
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'feed.sqlite3'}", today=AS_OF)
    return Runtime(settings.with_overrides(**source), start_workers=False)


@pytest.fixture
def on_server(loaded_peer: LoadedPeer, tmp_path: Path) -> Iterator[Runtime]:
    runtime = _runtime(tmp_path, fhir_base_url=loaded_peer.base_url)
    yield runtime
    runtime.close()


def _feed(runtime: Runtime) -> list[Any]:
    return list(runtime.store.changes(limit=1000)[0])


def _subject(runtime: Runtime, patient_id: str) -> dict[str, Any]:
    assert runtime.client is not None
    identifier = subject_identifier(runtime.mappings.parameters, f"Patient/{patient_id}")
    (subject,) = runtime.client.search("ResearchSubject", [("identifier", identifier.token())])
    return dict(subject)


def test_a_phone_number_edit_is_no_change(on_server: Runtime) -> None:
    client = on_server.client
    assert client is not None
    client.transaction(cloned_fixture("base", "feed-phone"))
    first = on_server.screen_patient("feed-phone", AS_OF, True)
    assert (first.changed, first.write_back) == (True, "written")
    written = _subject(on_server, "feed-phone")["meta"]["versionId"]
    entries = len(_feed(on_server))

    patient = dict(client.read("Patient", "feed-phone"))
    before = patient["meta"]["versionId"]
    patient["telecom"] = [{"system": "phone", "value": "+41 44 555 01 02", "use": "mobile"}]
    client.update(patient)
    assert client.read("Patient", "feed-phone")["meta"]["versionId"] != before

    again = on_server.screen_patient("feed-phone", AS_OF, True)
    assert (again.changed, again.write_back) == (False, "unchanged")
    assert len(_feed(on_server)) == entries
    assert _subject(on_server, "feed-phone")["meta"]["versionId"] == written
    # the screen is still the current result: it cites the new Patient version
    latest = on_server.store.latest_result("Patient/feed-phone", STUDY)
    assert latest == again.result and latest != first.result


def _screened(runtime: Runtime, patient_id: str) -> ScreenResult:
    """Screen as POST /v1/screen does (stored, trigger "request"); the result."""
    return ScreenResult.from_dict(runtime.screen_patient(patient_id, AS_OF, False).result)


def _old_fingerprint(result: ScreenResult) -> str:
    """The fingerprint before issue 14: the whole result but as_of and the release (evidence
    versions included), for the before/after figure."""
    content = {k: v for k, v in result.to_dict().items() if k not in ("as_of", "software_version")}
    return hashlib.sha256(canonical_json(content)).hexdigest()


def test_switching_from_files_to_the_server_makes_entries_only_for_changed_decisions(
    loaded_peer: LoadedPeer, on_server: Runtime, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    patients = [f"fx-{case}" for case in loaded_peer.cases]
    on_files = _runtime(tmp_path, source_path=FIXTURES)
    try:
        from_files = {p: _screened(on_files, p) for p in patients}
    finally:
        on_files.close()
    seen = len(_feed(on_server))
    assert seen == len(patients)

    from_server = {p: _screened(on_server, p) for p in patients}
    entries = _feed(on_server)[seen:]

    decided_otherwise = {
        f"Patient/{p}"
        for p in patients
        if fingerprint(from_files[p]) != fingerprint(from_server[p])
    }
    status_differs = {
        f"Patient/{p}" for p in patients if from_files[p].status != from_server[p].status
    }
    old_rule = sum(
        _old_fingerprint(from_files[p]) != _old_fingerprint(from_server[p]) for p in patients
    )
    assert {e["patient"] for e in entries} == decided_otherwise
    assert len(entries) == len(decided_otherwise)
    assert status_differs <= decided_otherwise
    for entry in entries:
        assert (entry["trigger"], entry["source"]) == ("request", loaded_peer.base_url)
        assert entry["previous_status"] is not None and entry["changed_criteria"] is not None
    assert len(entries) < old_rule
    with capsys.disabled():
        print(
            "\nfeed figures: "
            + json.dumps(
                {
                    "patients": len(patients),
                    "entries_files_to_server": len(entries),
                    "status_changed": len(status_differs),
                    "entries_by_the_old_rule": old_rule,
                    "changed_criteria": sorted({c for e in entries for c in e["changed_criteria"]}),
                }
            )
        )
