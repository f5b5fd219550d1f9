"""The coordinators' disposition reaches the ResearchSubject on the HAPI peer (issue 15 item 3).

A candidate is screened with write-back; a coordinator records 'contacted', and the outbox
writes the mapped status (screening) once. A re-screen with the same decision writes nothing
and keeps it; a re-screen whose decision changed writes the new result but never sets the
status back to candidate: people's word wins over the automatic one.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.config import Settings
from service.dispositions import Reviews
from service.fhir.client import FhirClient
from service.runtime import Runtime
from service.writeback import subject_identifier
from tests.integration.conftest import load_profiles
from tests.integration.helpers import cloned_fixture
from tests.integration.peers import Peer

pytestmark = pytest.mark.parametrize("fhir_peer", ["hapi"], indirect=True)

AS_OF = date(2026, 11, 26)
STUDY = "NCT06585007"
PATIENT = "disp-contacted"


@pytest.fixture
def runtime(fhir_peer: Peer, tmp_path: Path) -> Iterator[Runtime]:
    client = FhirClient(fhir_peer.base_url)
    load_profiles(client)  # HAPI validates what we write against them
    client.transaction(cloned_fixture("base", PATIENT))
    settings = Settings(database_url=f"sqlite:///{tmp_path / 'disp.sqlite3'}", today=AS_OF)
    runtime = Runtime(settings.with_overrides(fhir_base_url=fhir_peer.base_url),
                      start_workers=False)  # fmt: skip
    yield runtime
    runtime.close()


def _subject(runtime: Runtime) -> dict[str, Any]:
    assert runtime.client is not None
    identifier = subject_identifier(runtime.mappings.parameters, f"Patient/{PATIENT}")
    (subject,) = runtime.client.search("ResearchSubject", [("identifier", identifier.token())])
    return dict(subject)


def test_a_disposition_is_written_once_and_never_set_back_by_a_screen(runtime: Runtime) -> None:
    first = runtime.screen_patient(PATIENT, AS_OF, True)
    assert (first.result["status"], first.write_back) == ("candidate", "written")
    assert _subject(runtime)["status"] == "candidate"

    Reviews(runtime.store, STUDY).set_disposition(PATIENT, 0, code="contacted", author="alice")
    assert runtime.drain_outbox() == 1
    subject = _subject(runtime)
    assert subject["status"] == "screening"
    assert runtime.drain_outbox() == 0  # written once

    again = runtime.screen_patient(PATIENT, AS_OF, True)
    assert (again.changed, again.write_back) == (False, "unchanged")
    assert _subject(runtime)["meta"]["versionId"] == subject["meta"]["versionId"]
    assert _subject(runtime)["status"] == "screening"

    # a changed decision (the age the reason quotes) is written, still not as candidate
    assert runtime.client is not None
    patient = dict(runtime.client.read("Patient", PATIENT))
    patient["birthDate"] = "1949-03-14"
    runtime.client.update(patient)
    changed = runtime.screen_patient(PATIENT, AS_OF, True)
    assert (changed.changed, changed.result["status"]) == (True, "candidate")
    assert changed.write_back == "written"
    rewritten = _subject(runtime)
    assert rewritten["meta"]["versionId"] != subject["meta"]["versionId"]
    assert rewritten["status"] == "screening"
    disposition = runtime.store.changes()[0][-1]["disposition"]
    assert disposition is not None and disposition["code"] == "contacted"
