"""What we write conforms to our own profiles, as the HAPI peer's validator judges it.

The HAPI peer holds profiles/ (loaded by the `loaded_peer` fixture) and validates every write:
a ResearchSubject naming our profile in meta.profile is checked against it, and refused with 422
when it does not conform. So every write-back against HAPI in the integration tests is a
conformance test; the tests here make that explicit and show the check is real.
"""

from __future__ import annotations

import copy
from datetime import date
from typing import Any

import pytest
import requests

from service.fhir.client import FhirClient
from service.fhir.errors import FhirError
from service.fhir.server_source import ServerSource
from service.mapping import Mappings
from service.screening.engine import Screener
from service.writeback import subject_identifier
from service.writeback.extensions import RESEARCH_SUBJECT_PROFILE, RULES_VERSION, extension_url
from service.writeback.subject import build_research_subject
from service.writeback.writer import ResultWriter
from tests.integration.conftest import LoadedPeer
from tests.integration.helpers import cloned_fixture

AS_OF = date(2026, 11, 26)
pytestmark = pytest.mark.parametrize("fhir_peer", ["hapi"], indirect=True)


def _profile_url(mappings: Mappings) -> str:
    return extension_url(mappings.parameters.canonical_base, RESEARCH_SUBJECT_PROFILE)


def _errors(outcome: dict[str, Any]) -> list[str]:
    return [
        str(issue.get("diagnostics"))
        for issue in outcome.get("issue", [])
        if issue.get("severity") in ("error", "fatal")
    ]


def test_hapi_holds_every_profile(loaded_peer: LoadedPeer, mappings: Mappings) -> None:
    client = FhirClient(loaded_peer.base_url)
    found = list(client.search("StructureDefinition", [("url", _profile_url(mappings))]))
    assert [d["type"] for d in found] == ["ResearchSubject"]


def test_a_written_subject_validates_against_the_profile(
    loaded_peer: LoadedPeer, mappings: Mappings, screener: Screener
) -> None:
    client = FhirClient(loaded_peer.base_url)
    client.transaction(cloned_fixture("base", "prof-candidate"))
    result = screener.screen(ServerSource(client, mappings).record("prof-candidate"), AS_OF)
    outcome = ResultWriter(client, mappings.parameters).write(result)
    assert outcome.outcome == "written"

    identifier = subject_identifier(mappings.parameters, "Patient/prof-candidate")
    (subject,) = client.search("ResearchSubject", [("identifier", identifier.token())])
    assert subject["meta"]["profile"] == [_profile_url(mappings)]
    # $validate with the profile named explicitly: no error, whatever meta.profile says
    response = requests.post(
        f"{loaded_peer.base_url}/ResearchSubject/$validate",
        params={"profile": _profile_url(mappings)},
        json=subject,
        headers={"Content-Type": "application/fhir+json"},
        timeout=60,
    )
    assert response.status_code == 200, response.text[:2000]
    assert _errors(response.json()) == []


def test_hapi_refuses_a_subject_that_breaks_the_profile(
    loaded_peer: LoadedPeer, mappings: Mappings, screener: Screener
) -> None:
    """Without the rules-version extension (1..1 in the profile) the write is refused: the
    validator really checks our profile, so the test above means something."""
    client = FhirClient(loaded_peer.base_url)
    client.transaction(cloned_fixture("base", "prof-broken"))
    result = screener.screen(ServerSource(client, mappings).record("prof-broken"), AS_OF)
    study = client.create(
        _study(), if_none_exist="identifier=https://clinicaltrials.gov|NCT06585007"
    ).resource
    assert study is not None
    subject = build_research_subject(result, mappings.parameters, f"ResearchStudy/{study['id']}")
    broken = copy.deepcopy(subject)
    rules = extension_url(mappings.parameters.canonical_base, RULES_VERSION)
    broken["extension"] = [e for e in broken["extension"] if e["url"] != rules]

    with pytest.raises(FhirError) as refused:
        client.create(broken)
    assert refused.value.status == 422
    assert "rules-version" in str(refused.value)

    written = client.create(subject)  # the same subject with the extension is accepted
    assert written.resource["meta"]["profile"] == [_profile_url(mappings)]


def _study() -> dict[str, Any]:
    return {
        "resourceType": "ResearchStudy",
        "status": "active",
        "identifier": [{"system": "https://clinicaltrials.gov", "value": "NCT06585007"}],
    }
