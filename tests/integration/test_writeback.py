"""Write-back against real servers: ResearchSubject + Provenance, idempotent, never a duplicate."""

from __future__ import annotations

import subprocess
import sys
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from service.fhir.client import FhirClient
from service.fhir.errors import FhirError
from service.fhir.server_source import ServerSource
from service.mapping import Mappings
from service.screening.engine import Screener
from service.screening.result import ScreenResult
from service.writeback import read_result_from_subject, subject_identifier
from service.writeback.transaction import build_transaction
from service.writeback.writer import ResultWriter
from tests.integration.conftest import LoadedPeer
from tests.integration.helpers import cloned_fixture, without_versions

AS_OF = date(2026, 11, 26)


class Harness:
    def __init__(self, base_url: str, mappings: Mappings, screener: Screener) -> None:
        self.client = FhirClient(base_url)
        self.mappings = mappings
        self.source = ServerSource(self.client, mappings)
        self.screener = screener

    def load_clone(self, case: str, patient_id: str) -> None:
        self.client.transaction(cloned_fixture(case, patient_id))

    def screen(self, patient_id: str) -> ScreenResult:
        return self.screener.screen(self.source.record(patient_id), AS_OF)

    def writer(self, write_ineligible: bool = False) -> ResultWriter:
        return ResultWriter(
            self.client, self.mappings.parameters, write_ineligible=write_ineligible
        )

    def subjects(self, patient_id: str) -> list[dict[str, Any]]:
        identifier = subject_identifier(self.mappings.parameters, f"Patient/{patient_id}")
        return list(self.client.search("ResearchSubject", [("identifier", identifier.token())]))

    def provenances(self, subject_id: str) -> list[dict[str, Any]]:
        return list(self.client.search("Provenance", [("target", f"ResearchSubject/{subject_id}")]))


@pytest.fixture
def harness(loaded_peer: LoadedPeer, mappings: Mappings, screener: Screener) -> Harness:
    return Harness(loaded_peer.base_url, mappings, screener)


def test_candidate_is_written_and_reads_back(harness: Harness) -> None:
    harness.load_clone("base", "wb-candidate")
    result = harness.screen("wb-candidate")
    outcome = harness.writer().write(result)
    assert outcome.outcome == "written" and outcome.subject and outcome.provenance

    (subject,) = harness.subjects("wb-candidate")
    assert subject["status"] == "candidate"
    assert subject["individual"]["reference"].endswith("Patient/wb-candidate")
    assert subject["study"]["reference"].startswith("ResearchStudy/")
    assert subject["text"]["status"] == "generated"
    for criterion in result.criteria:
        assert criterion.id in subject["text"]["div"]
    stored = read_result_from_subject(subject, harness.mappings.parameters.canonical_base)
    # HAPI strips versions from references inside extensions; the Provenance keeps them
    assert without_versions(stored) == without_versions(result.to_dict())

    (provenance,) = harness.provenances(subject["id"])
    target = provenance["target"][0]["reference"]
    assert target.startswith(f"ResearchSubject/{subject['id']}")
    entities = {e["what"]["reference"] for e in provenance["entity"]}
    evidence = {e.reference for c in result.criteria for e in c.evidence}
    assert evidence and all("/_history/" in r for r in evidence)
    assert evidence <= entities


def test_unchanged_result_is_not_written_again(harness: Harness) -> None:
    harness.load_clone("base", "wb-unchanged")
    writer = harness.writer()
    assert writer.write(harness.screen("wb-unchanged")).outcome == "written"
    (first,) = harness.subjects("wb-unchanged")
    assert writer.write(harness.screen("wb-unchanged")).outcome == "unchanged"
    (second,) = harness.subjects("wb-unchanged")
    assert second["meta"]["versionId"] == first["meta"]["versionId"]
    assert len(harness.provenances(first["id"])) == 1


def test_a_candidate_who_dies_turns_the_same_subject_ineligible(harness: Harness) -> None:
    """A candidate who becomes ineligible is updated, not left behind as a stale candidate.

    (This used a testosterone of 80 ng/dL until medcare-2: a value above 50 on ADT after a
    castrate one in the window is now `unknown` (criteria.md §5), so death is the clear case.)
    """
    harness.load_clone("base", "wb-turns")
    writer = harness.writer()
    assert writer.write(harness.screen("wb-turns")).outcome == "written"
    (before,) = harness.subjects("wb-turns")
    patient = harness.client.read("Patient", "wb-turns")
    harness.client.update({**patient, "deceasedDateTime": "2026-11-25"})
    result = harness.screen("wb-turns")
    assert result.status.value == "ineligible"
    # ineligible patients are not written by default, but this one has a subject: it is updated
    assert writer.write(result).outcome == "written"
    (after,) = harness.subjects("wb-turns")  # still exactly one: no duplicate
    assert after["id"] == before["id"] and after["status"] == "ineligible"
    assert after["meta"]["versionId"] != before["meta"]["versionId"]
    assert len(harness.provenances(after["id"])) == 2


def test_ineligible_is_written_only_when_configured(harness: Harness) -> None:
    harness.load_clone("deceased-boolean", "wb-ineligible")
    result = harness.screen("wb-ineligible")
    assert result.status.value == "ineligible"
    assert harness.writer().write(result).outcome == "skip-ineligible"
    assert harness.subjects("wb-ineligible") == []
    assert harness.writer(write_ineligible=True).write(result).outcome == "written"
    (subject,) = harness.subjects("wb-ineligible")
    assert subject["status"] == "ineligible"


def test_rejected_transaction_leaves_nothing_half_written(harness: Harness) -> None:
    harness.load_clone("base", "wb-rejected")
    result = harness.screen("wb-rejected")
    writer = harness.writer()
    bundle = build_transaction(
        result, harness.mappings.parameters, writer.study_reference(), _now()
    )
    bundle["entry"][1]["resource"]["recorded"] = "not a timestamp"  # the server must refuse it
    with pytest.raises(FhirError) as error:
        harness.client.transaction(bundle, patient=result.patient)
    assert error.value.status is not None and 400 <= error.value.status < 500
    assert harness.subjects("wb-rejected") == []  # the ResearchSubject entry was rolled back


def test_cli_write_back(loaded_peer: LoadedPeer, harness: Harness) -> None:
    harness.load_clone("base", "wb-cli")
    script = Path(sys.executable).with_name("medcare-screen")
    command = [str(script), "screen", "--fhir-base", loaded_peer.base_url, "--patient", "wb-cli",
               "--as-of", "2026-11-26", "--write-back"]  # fmt: skip
    first = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert first.returncode == 0, first.stderr
    assert "Patient/wb-cli: write-back written" in first.stderr
    second = subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)
    assert "Patient/wb-cli: write-back unchanged" in second.stderr
    assert len(harness.subjects("wb-cli")) == 1


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 11, 26, 12, 0, tzinfo=UTC)
