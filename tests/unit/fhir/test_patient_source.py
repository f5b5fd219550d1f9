"""The one patient-source protocol: files, an NDJSON stream and a server all satisfy it, and
files answer populations the way the protocol says (everyone, ids, never a search or a Group)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.fhir.client import FhirClient
from service.fhir.local_source import LocalSource
from service.fhir.ndjson_stream import NdjsonStream
from service.fhir.server_source import ServerSource
from service.fhir.source import NeedsServer, PatientNotInSource, PatientSource, SourceError
from service.mapping import Mappings
from tests.builders import patient, total_testosterone


def _export(folder: Path) -> Path:
    folder.mkdir()
    lines = [patient(id="a"), patient(id="b"), total_testosterone(20, "ng/dL")]
    (folder / "x.ndjson").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def test_the_three_sources_are_patient_sources(
    tmp_path: Path, client: FhirClient, mappings: Mappings
) -> None:
    sources = [LocalSource(tmp_path), NdjsonStream(tmp_path), ServerSource(client, mappings)]
    assert all(isinstance(source, PatientSource) for source in sources)
    assert [source.is_server for source in sources] == [False, False, True]


@pytest.mark.parametrize("kind", [LocalSource, NdjsonStream])
def test_files_answer_every_patient_and_ids_but_not_searches(
    tmp_path: Path, kind: type[LocalSource] | type[NdjsonStream]
) -> None:
    source = kind(_export(tmp_path / "export"))
    assert sorted(source.patient_ids()) == ["a", "b"]
    assert sorted(source.patient_ids(search="Patient?")) == ["a", "b"]
    assert source.patient_ids(ids=["b", "b", "x\n"]) == ["b"]
    with pytest.raises(NeedsServer, match="MEDCARE_FHIR_BASE_URL"):
        source.patient_ids(search="Patient?gender=male")
    with pytest.raises(NeedsServer):
        source.patient_ids(group="g1")
    assert source.record("b").patient_id == "b"
    with pytest.raises(PatientNotInSource, match="no Patient with id 'zz'"):
        source.record("zz")
    assert issubclass(PatientNotInSource, SourceError)
    assert source.problems == []


def test_a_server_needs_the_ids_of_its_records(client: FhirClient, mappings: Mappings) -> None:
    with pytest.raises(ValueError):
        list(ServerSource(client, mappings).records())
