"""Screening from a real FHIR server gives exactly what screening the same files gives."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

from service.fhir.client import FhirClient
from service.fhir.local_source import LocalSource
from service.fhir.record import PatientRecord
from service.fhir.server_source import ServerSource
from service.mapping import Mappings
from service.mapping.model import normalize_code
from service.screening.engine import Screener
from service.screening.prefilter import observation_codes
from tests.conftest import FIXTURES
from tests.integration.conftest import LoadedPeer
from tests.integration.helpers import without_versions

AS_OF = date(2026, 11, 26)


def as_the_server_is_asked(record: PatientRecord, mappings: Mappings) -> PatientRecord:
    """The file record without the Observations a server is never asked for.

    fhir-contract.md: Observations are searched by the mapped codes only, so an unmapped local
    result (a near miss, criteria.md §7b) is read from files and NDJSON but not from a server.
    Everything else must be the same from both.
    """
    codes = observation_codes(mappings)
    if codes is None:  # a prefix rule: the server is asked for every Observation
        return record

    def asked(observation: dict[str, object]) -> bool:
        concept = observation.get("code")
        codings = concept.get("coding") if isinstance(concept, dict) else None
        return any(
            isinstance(c, dict) and isinstance(c.get("code"), str)
            and normalize_code(c["code"]) in codes
            for c in (codings if isinstance(codings, list) else [])
        )  # fmt: skip

    if "Observation" in record.resources:
        record.resources["Observation"] = [o for o in record.of_type("Observation") if asked(o)]
    return record


def test_every_fixture_screens_the_same_from_the_server(
    loaded_peer: LoadedPeer, screener: Screener, mappings: Mappings
) -> None:
    client = FhirClient(loaded_peer.base_url)
    source = ServerSource(client, mappings)
    local = LocalSource(FIXTURES)
    for case in loaded_peer.cases:
        patient_id = f"fx-{case}"
        from_server = screener.screen(source.record(patient_id), AS_OF).to_dict()
        from_files = screener.screen(
            as_the_server_is_asked(local.record(patient_id), mappings), AS_OF
        ).to_dict()
        assert without_versions(from_server) == from_files, case
        # the server's version ids reach the evidence (Provenance needs them)
        references = [e["reference"] for c in from_server["criteria"] for e in c["evidence"]]
        assert references and all("/_history/" in r for r in references), case


def test_reads_cost_one_request_per_patient_with_batch(
    loaded_peer: LoadedPeer, mappings: Mappings
) -> None:
    """fhir-contract.md: one batch per patient (plus paging); the figure is in the README."""
    client = FhirClient(loaded_peer.base_url)
    source = ServerSource(client, mappings)
    assert client.supports_batch()
    before = client.request_count
    cases = loaded_peer.cases[:20]
    for case in cases:
        source.record(f"fx-{case}")
    # no fixture needs paging, and every Medication is _included, so exactly one each
    assert client.request_count - before == len(cases)


def test_without_batch_the_reads_are_the_same(
    loaded_peer: LoadedPeer, screener: Screener, mappings: Mappings
) -> None:
    """MEDCARE_FHIR_BATCH=never: one search per type (for a server whose batch fails), the
    same records; the figure shows what the batch saves."""
    batched = ServerSource(FhirClient(loaded_peer.base_url), mappings)
    client = FhirClient(loaded_peer.base_url, batch="never")
    separate = ServerSource(client, mappings)
    cases = loaded_peer.cases[:5]
    before = client.request_count
    for case in cases:
        one = screener.screen(batched.record(f"fx-{case}"), AS_OF).to_dict()
        other = screener.screen(separate.record(f"fx-{case}"), AS_OF).to_dict()
        assert other == one, case
    assert client.request_count - before >= 6 * len(cases)  # Patient + a search per type


def test_population_by_search_and_by_group(loaded_peer: LoadedPeer, mappings: Mappings) -> None:
    client = FhirClient(loaded_peer.base_url)
    source = ServerSource(client, mappings)
    members = ["fx-base", "fx-age-17", "fx-deceased-boolean"]
    group = {
        "resourceType": "Group", "type": "person", "actual": True,
        "member": [{"entity": {"reference": f"Patient/{m}"}} for m in members],
    }  # fmt: skip
    created = client.create(group)
    assert created.resource is not None or created.location
    group_id = (created.resource or {}).get("id") or (created.location or "").split("/")[1]
    assert sorted(source.patient_ids(group=group_id)) == sorted(members)
    found = set(source.patient_ids(search="Patient?_count=50"))
    assert {f"fx-{c}" for c in loaded_peer.cases} <= found  # paging past 50 on both servers


def test_cli_screens_from_the_server(loaded_peer: LoadedPeer, tmp_path: Path) -> None:
    import subprocess
    import sys

    script = Path(sys.executable).with_name("medcare-screen")
    done = subprocess.run(
        [str(script), "screen", "--fhir-base", loaded_peer.base_url, "--patient", "fx-base",
         "--patient", "fx-testo-nmol-l", "--as-of", "2026-11-26", "--format", "json"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    results = [json.loads(line) for line in done.stdout.splitlines()]
    assert [r["patient"] for r in results] == ["Patient/fx-base", "Patient/fx-testo-nmol-l"]
    assert results[0]["status"] == "candidate"
