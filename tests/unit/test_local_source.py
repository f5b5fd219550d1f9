"""Local sources: Bundles of any type, folders, NDJSON; grouping and reference resolution."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.fhir.local_source import LocalSource, SourceError
from tests.builders import RXNORM, concept, medication_statement, patient, total_testosterone


def _bundle(kind: str, entries: list[tuple[dict[str, Any], str | None]]) -> dict[str, Any]:
    bundle: dict[str, Any] = {"resourceType": "Bundle", "type": kind, "entry": []}
    for resource, full_url in entries:
        entry: dict[str, Any] = {"resource": resource}
        if full_url:
            entry["fullUrl"] = full_url
        bundle["entry"].append(entry)
    return bundle


def _write(path: Path, document: Any) -> Path:
    path.write_text(json.dumps(document))
    return path


@pytest.mark.parametrize("kind", ["collection", "searchset", "transaction", "batch"])
def test_a_bundle_of_any_type_is_read(tmp_path: Path, kind: str) -> None:
    lab = total_testosterone(20, "ng/dL")
    file = _write(tmp_path / "b.json", _bundle(kind, [(patient(), None), (lab, None)]))
    records = list(LocalSource(file).records())
    assert [r.patient_id for r in records] == ["t1"]
    assert records[0].of_type("Observation") == [lab]


def test_urn_uuid_references_resolve_by_full_url(tmp_path: Path) -> None:
    pat = patient(id="p-uuid")
    lab = total_testosterone(20, "ng/dL", subject={"reference": "urn:uuid:aaaa"})
    file = _write(
        tmp_path / "t.json", _bundle("transaction", [(pat, "urn:uuid:aaaa"), (lab, None)])
    )
    (record,) = LocalSource(file).records()
    assert record.patient_id == "p-uuid" and len(record.of_type("Observation")) == 1


def test_absolute_references_resolve_by_type_and_id(tmp_path: Path) -> None:
    lab = total_testosterone(
        20, "ng/dL", subject={"reference": "https://ehr.example/fhir/Patient/t1"}
    )
    file = _write(tmp_path / "s.json", _bundle("searchset", [(patient(), None), (lab, None)]))
    (record,) = LocalSource(file).records()
    assert len(record.of_type("Observation")) == 1


def test_medication_reference_resolves_across_files_and_contained(tmp_path: Path) -> None:
    medication = {"resourceType": "Medication", "id": "m1", "code": concept(RXNORM, "752899")}
    statement = medication_statement({}, medicationReference={"reference": "Medication/m1"})
    del statement["medicationCodeableConcept"]
    contained = medication_statement({}, medicationReference={"reference": "#c"})
    del contained["medicationCodeableConcept"]
    contained["contained"] = [
        {"resourceType": "Medication", "id": "c", "code": concept(RXNORM, "828749")}
    ]
    _write(
        tmp_path / "a.json",
        _bundle("collection", [(patient(), None), (statement, None), (contained, None)]),
    )
    _write(tmp_path / "b.json", _bundle("collection", [(medication, None)]))
    (record,) = LocalSource(tmp_path).records()
    assert record.resolve_medication("Medication/m1", statement) == medication
    assert record.resolve_medication("#c", contained) == contained["contained"][0]
    assert record.resolve_medication("Medication/missing", statement) is None


def test_ndjson_folder_groups_resources_by_patient(tmp_path: Path) -> None:
    other = patient(id="t2")
    (tmp_path / "Patient.ndjson").write_text(
        json.dumps(patient()) + "\n" + json.dumps(other) + "\n"
    )
    lab = total_testosterone(20, "ng/dL", subject={"reference": "Patient/t2"})
    (tmp_path / "Observation.ndjson").write_text(json.dumps(lab) + "\n")
    records = {r.patient_id: r for r in LocalSource(tmp_path).records()}
    assert set(records) == {"t1", "t2"}
    assert (
        records["t2"].of_type("Observation") == [lab] and records["t1"].of_type("Observation") == []
    )


def test_a_bad_ndjson_line_is_skipped_and_reported(tmp_path: Path) -> None:
    (tmp_path / "Patient.ndjson").write_text(json.dumps(patient()) + "\n{not json\n[1, 2]\n")
    source = LocalSource(tmp_path)
    assert [r.patient_id for r in source.records()] == ["t1"]
    assert any("Patient.ndjson line 2: not valid JSON" in p for p in source.problems)
    assert any("Patient.ndjson line 3: not a FHIR resource" in p for p in source.problems)


def test_unreadable_json_file_names_file_and_line(tmp_path: Path) -> None:
    file = tmp_path / "broken.json"
    file.write_text('{"resourceType": "Bundle",\n "entry": [\n')
    with pytest.raises(SourceError, match=r"broken\.json: line \d+ column \d+: not valid JSON"):
        list(LocalSource(file).records())


def test_json_that_is_not_fhir_is_refused(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match=r"x\.json: not a FHIR resource or Bundle"):
        list(LocalSource(_write(tmp_path / "x.json", [1, 2])).records())


def test_missing_path_and_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        list(LocalSource(tmp_path / "nope").records())
    with pytest.raises(SourceError, match=r"no \.json or \.ndjson files"):
        list(LocalSource(tmp_path).records())


def test_patient_filter_and_unknown_ids_reported(tmp_path: Path) -> None:
    file = _write(
        tmp_path / "b.json", _bundle("collection", [(patient(), None), (patient(id="t2"), None)])
    )
    source = LocalSource(file)
    assert [r.patient_id for r in source.records(["t2", "zz"])] == ["t2"]
    assert any("no Patient with id 'zz'" in p for p in source.problems)
