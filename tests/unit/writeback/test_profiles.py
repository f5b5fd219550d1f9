"""profiles/: valid R4 StructureDefinitions, generated from the code, describing what we write."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from fhir.resources.R4B.structuredefinition import StructureDefinition

from service.mapping import Mappings
from service.writeback.extensions import (
    DEFAULT_CANONICAL_BASE,
    DEFINITIONS,
    RESEARCH_SUBJECT_PROFILE,
    extension_url,
)
from service.writeback.profiles import (
    REQUIRED_EXTENSIONS,
    render,
    structure_definitions,
    write_profiles,
)
from service.writeback.subject import build_research_subject
from tests.conftest import REPO
from tests.unit.writeback.sample import ineligible_result, make_result

PROFILES = REPO / "profiles"
PROFILE_FILE = PROFILES / f"StructureDefinition-{RESEARCH_SUBJECT_PROFILE}.json"
FILES = sorted(p for p in PROFILES.glob("StructureDefinition-*.json") if p != PROFILE_FILE)


def _load(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def test_one_file_per_extension_and_the_subject_profile() -> None:
    assert [p.name for p in FILES] == sorted(
        f"StructureDefinition-{d.id}.json" for d in DEFINITIONS
    )
    assert PROFILE_FILE.is_file()


def test_subject_profile_constrains_research_subject_with_every_extension() -> None:
    data = _load(PROFILE_FILE)
    parsed = StructureDefinition.model_validate(data)
    assert parsed.model_dump(mode="json", exclude_none=True) == data
    assert (data["kind"], data["type"], data["derivation"], data["fhirVersion"]) == (
        "resource",
        "ResearchSubject",
        "constraint",
        "4.0.1",
    )
    assert data["baseDefinition"] == "http://hl7.org/fhir/StructureDefinition/ResearchSubject"
    slices = {e["sliceName"]: e for e in data["differential"]["element"] if e.get("sliceName")}
    assert set(slices) == {d.id for d in DEFINITIONS}
    for definition in DEFINITIONS:
        element = slices[definition.id]
        assert element["type"] == [
            {"code": "Extension", "profile": [extension_url(DEFAULT_CANONICAL_BASE, definition.id)]}
        ]
        assert element["min"] == (1 if definition.id in REQUIRED_EXTENSIONS else 0)
        assert element["max"] == ("*" if definition.repeats else "1")


@pytest.mark.parametrize(
    "result", [make_result(), ineligible_result()], ids=["candidate", "ineligible"]
)
def test_what_we_write_names_the_profile_and_has_its_required_extensions(
    result: Any, mappings: Mappings
) -> None:
    profile = _load(PROFILE_FILE)
    subject = build_research_subject(result, mappings.parameters, "ResearchStudy/5")
    assert subject["meta"]["profile"] == [profile["url"]]
    written = {e["url"] for e in subject["extension"]}
    for extension_id in REQUIRED_EXTENSIONS:
        assert extension_url(mappings.parameters.canonical_base, extension_id) in written


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.stem)
def test_profile_is_a_valid_r4_extension_definition(path: Path) -> None:
    data = _load(path)
    parsed = StructureDefinition.model_validate(data)
    assert parsed.model_dump(mode="json", exclude_none=True) == data
    assert data["url"] == f"https://medcare-screen.org/fhir/StructureDefinition/{data['id']}"
    assert data["fhirVersion"] == "4.0.1"
    assert (data["kind"], data["type"], data["derivation"]) == (
        "complex-type",
        "Extension",
        "constraint",
    )
    assert data["baseDefinition"] == "http://hl7.org/fhir/StructureDefinition/Extension"
    assert data["context"] == [{"type": "element", "expression": "ResearchSubject"}]
    elements = {e["id"]: e for e in data["differential"]["element"]}
    assert elements["Extension.url"]["fixedUri"] == data["url"]
    assert ET.fromstring(data["text"]["div"]).tag == "{http://www.w3.org/1999/xhtml}div"
    assert all(e["id"].startswith("Extension") for e in elements.values())


def test_files_are_the_generated_definitions() -> None:
    """Edit extensions.py and regenerate (python -m service.writeback.profiles profiles)."""
    for resource in structure_definitions():
        path = PROFILES / f"StructureDefinition-{resource['id']}.json"
        assert path.read_text(encoding="utf-8") == render(resource), path.name


def test_generator_takes_another_canonical_base(tmp_path: Path) -> None:
    paths = write_profiles(tmp_path, "https://fhir.example.org/medcare")
    assert len(paths) == len(DEFINITIONS) + 1  # the extensions and the ResearchSubject profile
    for path in paths:
        data = _load(path)
        StructureDefinition.model_validate(data)
        assert data["url"].startswith("https://fhir.example.org/medcare/StructureDefinition/")


def test_readme_lists_every_profile() -> None:
    readme = (PROFILES / "README.md").read_text(encoding="utf-8")
    for definition_id in [*(d.id for d in DEFINITIONS), RESEARCH_SUBJECT_PROFILE]:
        assert f"StructureDefinition-{definition_id}.json" in readme
        assert f"{DEFAULT_CANONICAL_BASE}/StructureDefinition/{definition_id}" in readme


def test_default_base_is_the_bundled_setting(mappings: Mappings) -> None:
    assert mappings.parameters.canonical_base == DEFAULT_CANONICAL_BASE


def _conforms(extension: dict[str, Any], elements: dict[str, dict[str, Any]], prefix: str) -> None:
    """A light check of one extension against a differential: value type or sub-extensions."""
    value = elements[f"{prefix}.value[x]"]
    values = [k for k in extension if k.startswith("value")]
    if value.get("max") == "0":
        assert not values, extension
        parts = extension["extension"]
        for part in parts:
            slice_id = f"Extension.extension:{part['url']}"
            assert slice_id in elements, f"no slice for {part['url']}"
            _conforms(part, elements, slice_id)
        for element_id, element in elements.items():
            if element.get("sliceName"):
                count = sum(1 for p in parts if p["url"] == element["sliceName"])
                assert count >= element["min"], element_id
                assert element["max"] == "*" or count <= int(element["max"]), element_id
    else:
        [type_code] = [t["code"] for t in value["type"]]
        assert values == [f"value{type_code[0].upper()}{type_code[1:]}"], extension
        assert "extension" not in extension


@pytest.mark.parametrize(
    "result", [make_result(), ineligible_result()], ids=["candidate", "ineligible"]
)
def test_what_we_write_matches_the_profiles(result: Any, mappings: Mappings) -> None:
    definitions = {d["url"]: d for d in (_load(p) for p in FILES)}
    subject = build_research_subject(result, mappings.parameters, "ResearchStudy/5")
    counts: dict[str, int] = {}
    for extension in subject["extension"]:
        definition = definitions[extension["url"]]
        elements = {e["id"]: e for e in definition["differential"]["element"]}
        _conforms(extension, elements, "Extension")
        counts[extension["url"]] = counts.get(extension["url"], 0) + 1
    for url, count in counts.items():
        root = definitions[url]["differential"]["element"][0]
        assert root["max"] == "*" or count <= int(root["max"]), url
