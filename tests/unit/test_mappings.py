"""mappings/: loaded at start-up, invalid files named with their entry, local codes as data."""

from __future__ import annotations

import shutil
from datetime import date
from pathlib import Path

import pytest

from service.mapping import MappingError, load_mappings
from service.mapping.load import DEFAULT_MAPPINGS_DIR
from service.screening.engine import Screener
from service.screening.result import Result
from tests.builders import concept, observation, record, total_testosterone


@pytest.fixture
def mappings_copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(DEFAULT_MAPPINGS_DIR, target)
    return target


def test_every_file_carries_source_and_version() -> None:
    mappings = load_mappings()
    assert set(mappings.versions) == {
        "valuesets",
        "medications",
        "units",
        "parameters",
        "codesystem",
        "body-sites",
        "lesion-sizes",
        "imaging-methods",
        "near-misses",
    }
    assert all(mappings.versions.values())
    assert mappings.codesystem["url"] == "https://medcare-screen.org/fhir/CodeSystem/screening"


def test_codesystem_defines_the_codes_of_criteria_md_section_4() -> None:
    codes = {c["code"] for c in load_mappings().codesystem["concept"]}
    assert {"progressive-lesion-count", "progressive-intracranial-lesion-count", "imaging-lesion",
            "new", "progressive", "stable", "regressing"} <= codes  # fmt: skip


def test_molar_testosterone_loinc_is_included() -> None:
    assert load_mappings().vs("testosterone-total").contains("http://loinc.org", "14913-8")


def test_invalid_yaml_names_the_file_and_line(mappings_copy: Path) -> None:
    path = mappings_copy / "units.yaml"
    path.write_text(path.read_text() + "\n  broken: [unclosed\n")
    with pytest.raises(MappingError, match=r"units\.yaml: line \d+ not valid YAML"):
        load_mappings(mappings_copy)


def test_invalid_entry_names_the_file_and_entry(mappings_copy: Path) -> None:
    path = mappings_copy / "valuesets.yaml"
    text = path.read_text().replace(
        "{system: loinc, code: 2986-8,", "{system: lonic, code: 2986-8,", 1
    )
    path.write_text(text)
    with pytest.raises(MappingError) as error:
        load_mappings(mappings_copy)
    assert "valuesets.yaml" in str(error.value)
    assert "concepts.testosterone-total.codes.0.system" in str(error.value)
    assert "lonic" in str(error.value)


def test_entry_with_neither_code_nor_prefix_is_refused(mappings_copy: Path) -> None:
    path = mappings_copy / "valuesets.yaml"
    path.write_text(
        path.read_text().replace("{system: loinc, code: 89243-0,", "{system: loinc,", 1)
    )
    with pytest.raises(
        MappingError, match=r"concepts\.karnofsky\.codes\.0.*exactly one of 'code' or 'prefix'"
    ):
        load_mappings(mappings_copy)


def test_unknown_drug_class_is_refused(mappings_copy: Path) -> None:
    path = mappings_copy / "medications.yaml"
    path.write_text(path.read_text().replace("classes: [arta]", "classes: [artaa]", 1))
    with pytest.raises(
        MappingError, match=r"medications\.yaml: drugs\.abiraterone\.classes: unknown class"
    ):
        load_mappings(mappings_copy)


def test_bad_parameter_value_is_refused(mappings_copy: Path) -> None:
    path = mappings_copy / "parameters.yaml"
    path.write_text(path.read_text().replace("imaging: 42", "imaging: -1"))
    with pytest.raises(MappingError, match=r"parameters\.yaml: windows_days\.imaging"):
        load_mappings(mappings_copy)


def test_missing_file_is_named(mappings_copy: Path) -> None:
    (mappings_copy / "medications.yaml").unlink()
    with pytest.raises(MappingError, match=r"medications\.yaml: file not found"):
        load_mappings(mappings_copy)


def test_a_local_code_is_added_by_editing_data(mappings_copy: Path) -> None:
    """A hospital maps its own lesion-count form field without touching code (criteria.md §4)."""
    local = concept("urn:oid:1.2.3.4.5", "RAD-PROG-N", "Progressive lesions (radiology form)")
    fact = observation(local, "2026-11-10", valueInteger=2)
    # medcare-2: progression counts under castration (criteria.md §4), shown here by testosterone
    castrate = total_testosterone(20, "ng/dL", day="2026-11-01")
    as_of = date(2026, 11, 26)
    before = Screener(load_mappings(mappings_copy)).screen(record(fact, castrate), as_of)
    assert before.criterion("oligoprogression").result is Result.UNKNOWN

    path = mappings_copy / "valuesets.yaml"
    path.write_text(
        path.read_text().replace(
            "      - {system: screening, code: progressive-lesion-count}",
            "      - {system: screening, code: progressive-lesion-count}\n"
            "      - {system: 'urn:oid:1.2.3.4.5', code: RAD-PROG-N, display: Local radiology form}",
        )
    )
    after = Screener(load_mappings(mappings_copy)).screen(record(fact, castrate), as_of)
    assert after.criterion("oligoprogression").result is Result.MET
    assert "2 progressive extracranial lesions" in after.criterion("oligoprogression").reason


def test_thresholds_are_parameters(mappings_copy: Path) -> None:
    path = mappings_copy / "parameters.yaml"
    path.write_text(
        path.read_text().replace("max_progressive_lesions: 3", "max_progressive_lesions: 5")
    )
    code = concept(
        "https://medcare-screen.org/fhir/CodeSystem/screening", "progressive-lesion-count"
    )
    result = Screener(load_mappings(mappings_copy)).screen(
        record(
            observation(code, "2026-11-10", valueInteger=5),
            total_testosterone(20, "ng/dL", day="2026-11-01"),  # castration established (§4)
        ),
        date(2026, 11, 26),
    )
    assert result.criterion("oligoprogression").result is Result.MET
    assert result.criterion("polyprogression").result is Result.NOT_MET
