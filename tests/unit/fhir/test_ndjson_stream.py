"""NdjsonStream: the same screens as LocalSource, from raw bytes, in bounded memory.

Every shortcut of the partition (type and subject read from bytes, Observations dropped by code
undecoded) must be exact: each test below puts a line where the bytes could mislead and checks
that the stream places it as LocalSource does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from service.fhir.local_source import LocalSource, SourceError
from service.fhir.ndjson_stream import LineFilter, NdjsonStream
from service.fhir.record import PatientRecord
from service.mapping import Mappings
from service.screening.engine import Screener
from service.screening.prefilter import line_filter
from tests.builders import (
    LOINC,
    RXNORM,
    concept,
    medication_statement,
    observation,
    patient,
    total_testosterone,
)
from tests.conftest import AS_OF, FIXTURES, SYNTHEA
from tests.ndjson_export import bundles_to_ndjson


def _lines(folder: Path, name: str, *lines: str | dict[str, Any]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    text = "".join((line if isinstance(line, str) else json.dumps(line)) + "\n" for line in lines)
    with (folder / name).open("a", encoding="utf-8") as handle:
        handle.write(text)


def _content(records: list[PatientRecord]) -> dict[str, Any]:
    """Records as comparable data: the Patient and each type's resources, order-free."""
    return {
        r.patient_id: (
            r.patient,
            {t: sorted(json.dumps(x, sort_keys=True) for x in xs) for t, xs in r.resources.items()},
        )
        for r in records
    }


def _screens(screener: Screener, records: list[PatientRecord]) -> dict[str, str]:
    return {
        r.patient_id: json.dumps(screener.screen(r, AS_OF).to_dict(), sort_keys=True)
        for r in records
    }


def test_fixtures_and_synthea_screen_exactly_as_local_source(
    tmp_path: Path, mappings: Mappings, screener: Screener
) -> None:
    bundles = sorted(p for p in FIXTURES.glob("*.json") if not p.name.endswith(".expected.json"))
    folder = bundles_to_ndjson([*bundles, *sorted(SYNTHEA.glob("*.json"))], tmp_path / "export")
    expected = _screens(screener, list(LocalSource(folder).records()))
    stream = NdjsonStream(folder, line_filter(mappings), bucket_bytes=200_000)
    streamed = list(stream.records())
    assert len(streamed) == len(expected) > 140
    assert _screens(screener, streamed) == expected
    # and the Bundles themselves agree (the export changed only the form)
    assert _screens(screener, list(LocalSource(FIXTURES).records())) == {
        k: v for k, v in expected.items() if k.startswith("fx-")
    }


def test_without_code_selection_the_records_equal_local_sources(tmp_path: Path) -> None:
    folder = bundles_to_ndjson(sorted(SYNTHEA.glob("*.json")), tmp_path / "export")
    streamed = list(NdjsonStream(folder, LineFilter(), bucket_bytes=100_000).records())
    assert _content(streamed) == _content(list(LocalSource(folder).records()))


def _tricky_lines() -> list[str | dict[str, Any]]:
    lab = total_testosterone(30, "ng/dL")
    statement = medication_statement(concept(RXNORM, "752899"))
    contained = medication_statement(concept(RXNORM, "752899"))
    contained["contained"] = [{"resourceType": "Medication", "id": "c1", "code": {"text": "x"}}]
    return [
        # keys in an unusual order and spaces around colons
        '{"subject" : {"reference" : "Patient/t1"}, "code": {"coding": [{"system": "'
        + LOINC
        + '", "code" : "2986-8"}]}, "status":"final", "effectiveDateTime":"2026-11-02",'
        ' "valueQuantity":{"value":20,"unit":"ng/dL","system":"http://unitsofmeasure.org",'
        '"code":"ng/dL"}, "id":"spaced", "resourceType" : "Observation"}',
        # an escaped slash in the reference, a \\u escape in the code: decoded, never guessed
        json.dumps({**lab, "id": "esc-ref"}).replace("Patient/t1", "Patient\\/t1"),
        json.dumps({**lab, "id": "esc-code"}).replace('"2986-8"', '"2986\\u002d8"'),
        # a code that only normalising (stripping) makes a listed one: an escaped newline, and
        # a raw no-break space (not ASCII); the regex cannot decide these, the decoder does
        json.dumps({**lab, "id": "esc-newline"}).replace('"2986-8"', '"2986-8\\n"'),
        json.dumps({**lab, "id": "nbsp"}, ensure_ascii=False).replace('"2986-8"', '"\u00a02986-8"'),
        # a code with dots and capitals that normalises to a listed one
        {**lab, "id": "dotted", "code": concept(LOINC, " 2986.-8. ")},
        # a subject with a nested element before its reference
        {
            **lab,
            "id": "nested",
            "subject": {"identifier": {"value": "x"}, "reference": "Patient/t1"},
        },
        # a contained resource before the resource's own type: two resourceType keys
        {"contained": [{"resourceType": "Encounter", "id": "x"}], **statement, "id": "enc-first"},
        {**contained, "id": "contained"},
        # another patient's reference nested before the subject (not FHIR, but JSON): placed
        # by the top-level subject; and one nested reference with no subject: dropped
        {"focus": [{"patient": {"reference": "Patient/t2"}}], **lab, "id": "two-holders"},
        {
            "extension": [{"url": "u", "patient": {"reference": "Patient/t1"}}],
            **{k: v for k, v in lab.items() if k != "subject"},
            "id": "nested-only",
        },
        # a subject that is a Group, and one with no subject at all: LocalSource drops both
        {**lab, "id": "group", "subject": {"reference": "Group/g1"}},
        {k: v for k, v in {**lab, "id": "orphan"}.items() if k != "subject"},
        # an absolute reference with a history version
        {
            **lab,
            "id": "absolute",
            "subject": {"reference": "https://x.org/fhir/Patient/t1/_history/3"},
        },
        # an irrelevant Observation (vital sign) and a type no rule reads
        observation(concept(LOINC, "8867-4"), "2026-11-01", id="pulse"),
        {"resourceType": "Encounter", "id": "e1", "subject": {"reference": "Patient/t1"}},
    ]


def test_lines_where_the_bytes_could_mislead_are_placed_as_local_source_places_them(
    tmp_path: Path, mappings: Mappings, screener: Screener
) -> None:
    _lines(tmp_path, "Patient.ndjson", patient(), patient(id="t2"))
    _lines(tmp_path, "Mixed.ndjson", *_tricky_lines())
    local = list(LocalSource(tmp_path).records())
    everything = list(NdjsonStream(tmp_path, LineFilter()).records())
    assert _content(everything) == _content(local)
    selected = NdjsonStream(tmp_path, line_filter(mappings)).records()
    (t1, _t2) = sorted(selected, key=lambda r: r.patient_id)
    kept = {r["id"] for r in t1.of_type("Observation")}
    assert kept == {
        "spaced", "esc-ref", "esc-code", "esc-newline", "nbsp", "dotted", "nested", "absolute",
        "two-holders",
    }  # fmt: skip
    assert _screens(screener, [t1]) == _screens(screener, [local[0]])


def test_a_bad_line_that_could_matter_is_reported_with_file_and_line(tmp_path: Path) -> None:
    _lines(tmp_path, "Patient.ndjson", patient())
    _lines(
        tmp_path,
        "Observation.ndjson",
        total_testosterone(20, "ng/dL"),
        '{"resourceType": "Observation", "code": {"coding": [{"code": "2986-8"}]}, broken',
        "[1, 2]",
        '{"resourceType": "Observation", "code": {"coding": [{"code": "8867-4"}]}, broken',
    )
    stream = NdjsonStream(tmp_path, line_filter_for_tests())
    (record,) = stream.records()
    assert len(record.of_type("Observation")) == 1
    assert stream.problems == [
        f"{tmp_path / 'Observation.ndjson'} line 2: not valid JSON (Expecting property name "
        "enclosed in double quotes), skipped",
        f"{tmp_path / 'Observation.ndjson'} line 3: not a FHIR resource, skipped",
    ]  # line 4 is a pulse rate: never decoded, so its defect is not reported


def line_filter_for_tests() -> LineFilter:
    from service.mapping import load_mappings

    return line_filter(load_mappings())


def test_medication_references_resolve_across_files(tmp_path: Path) -> None:
    statement = medication_statement({}, medicationReference={"reference": "Medication/m1"})
    del statement["medicationCodeableConcept"]
    medication = {"resourceType": "Medication", "id": "m1", "code": concept(RXNORM, "752899")}
    _lines(tmp_path, "Patient.ndjson", patient())
    _lines(tmp_path, "MedicationStatement.ndjson", statement)
    _lines(tmp_path, "Medication.ndjson", medication)
    (record,) = NdjsonStream(tmp_path).records()
    assert record.resolve_medication("Medication/m1", statement) == medication


def test_many_buckets_and_the_scratch_space_is_removed(tmp_path: Path, screener: Screener) -> None:
    folder = bundles_to_ndjson(sorted(SYNTHEA.glob("*.json")), tmp_path / "export")
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    stream = NdjsonStream(folder, line_filter_for_tests(), bucket_bytes=20_000, scratch_dir=scratch)
    with stream.partitioned() as partition:
        assert len(partition.buckets) > 20
    records = list(stream.records())
    assert _screens(screener, records) == _screens(screener, list(LocalSource(folder).records()))
    assert list(scratch.iterdir()) == []


def test_small_source_keeps_the_patient_files_order(tmp_path: Path) -> None:
    _lines(tmp_path, "Patient.ndjson", *(patient(id=f"p{i}") for i in (3, 1, 2)))
    assert [r.patient_id for r in NdjsonStream(tmp_path).records()] == ["p3", "p1", "p2"]


def test_patient_filter_reads_only_those_and_reports_unknown_ids(tmp_path: Path) -> None:
    _lines(tmp_path, "Patient.ndjson", patient(), patient(id="t2"))
    _lines(tmp_path, "Observation.ndjson", total_testosterone(20, "ng/dL"))
    stream = NdjsonStream(tmp_path)
    assert [r.patient_id for r in stream.records(["t2", "zz"])] == ["t2"]
    assert stream.problems == [f"{tmp_path}: no Patient with id 'zz'"]


def test_a_patient_without_an_id_is_reported(tmp_path: Path) -> None:
    _lines(tmp_path, "Patient.ndjson", {"resourceType": "Patient"}, patient())
    stream = NdjsonStream(tmp_path)
    assert [r.patient_id for r in stream.records()] == ["t1"]
    assert stream.problems == [
        f"{tmp_path / 'Patient.ndjson'} line 1: Patient without an id, skipped"
    ]


def test_which_paths_it_handles(tmp_path: Path) -> None:
    _lines(tmp_path / "bulk", "Patient.ndjson", patient())
    (tmp_path / "mixed").mkdir()
    _lines(tmp_path / "mixed", "Patient.ndjson", patient())
    (tmp_path / "mixed" / "b.json").write_text("{}")
    assert NdjsonStream.handles(tmp_path / "bulk")
    assert NdjsonStream.handles(tmp_path / "bulk" / "Patient.ndjson")
    assert not NdjsonStream.handles(tmp_path / "mixed")
    assert not NdjsonStream.handles(FIXTURES)
    assert not NdjsonStream.handles(tmp_path / "nope")


def test_missing_path_and_empty_folder_are_source_errors(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file or folder"):
        list(NdjsonStream(tmp_path / "nope").records())
    with pytest.raises(SourceError, match=r"no \.ndjson files"):
        list(NdjsonStream(tmp_path).records())


def test_observation_codes_need_their_normalisation() -> None:
    with pytest.raises(ValueError, match="normalize"):
        LineFilter(observation_codes=frozenset({"2986-8"}))
