"""StructureDefinitions (FHIR R4) for our extensions and the ResearchSubject profile that uses them.

The files in profiles/ are this module's output for the default canonical base, so the code and
the documentation of an extension cannot drift apart (a unit test compares them). The profile
(`medcare-research-subject`) is what every written ResearchSubject names in `meta.profile`, so a
server that holds these definitions (the HAPI peer in the integration tests) validates what we
write against them. A site with its own canonical base publishes definitions under it with:

    python -m service.writeback.profiles OUT_DIR --base https://fhir.example.org
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from service.writeback import extensions as ext
from service.writeback.extensions import (
    DEFAULT_CANONICAL_BASE,
    DEFINITIONS,
    RESEARCH_SUBJECT_PROFILE,
    ExtensionDefinition,
    Part,
    extension_url,
)
from service.writeback.narrative import XHTML_NS, text

EXTENSION_BASE = "http://hl7.org/fhir/StructureDefinition/Extension"
RESEARCH_SUBJECT_BASE = "http://hl7.org/fhir/StructureDefinition/ResearchSubject"
# The extensions every written ResearchSubject carries (subject.result_extensions writes them
# for every result); the others are absent when they have nothing to say.
REQUIRED_EXTENSIONS = frozenset(
    {ext.FINGERPRINT, ext.SCREENING_DATE, ext.RULES_VERSION, ext.SOFTWARE_VERSION, ext.CRITERION}
)
JSON = dict[str, Any]


def _value_element(element_id: str, value_type: str, short: str | None = None) -> JSON:
    element: JSON = {
        "id": f"{element_id}.value[x]",
        "path": "Extension.extension.value[x]" if ":" in element_id else "Extension.value[x]",
        "min": 1,
        "type": [{"code": value_type}],
    }
    if short:
        element["short"] = short
    return element


def _part_elements(part: Part) -> list[JSON]:
    """The slice of Extension.extension for one sub-extension: cardinality, url, value type."""
    slice_id = f"Extension.extension:{part.url}"
    return [
        {
            "id": slice_id,
            "path": "Extension.extension",
            "sliceName": part.url,
            "short": part.short,
            "definition": part.definition,
            "min": part.min,
            "max": part.max,
        },
        {"id": f"{slice_id}.extension", "path": "Extension.extension.extension", "max": "0"},
        {"id": f"{slice_id}.url", "path": "Extension.extension.url", "fixedUri": part.url},
        _value_element(slice_id, part.value_type),
    ]


def _narrative(definition: ExtensionDefinition, url: str) -> str:
    """A short human summary (validators flag resources without narrative, dom-6)."""
    value = (
        definition.value_type
        and f"value{definition.value_type[0].upper()}{definition.value_type[1:]}"
    )
    shape = value or "sub-extensions " + ", ".join(
        f"{p.url} (value{p.value_type[0].upper()}{p.value_type[1:]}, {p.min}..{p.max})"
        for p in definition.parts
    )
    cardinality = "0..*" if definition.repeats else "0..1"
    return (
        f'<div xmlns="{XHTML_NS}"><p><b>{text(definition.title)}</b> ({text(url)}), '
        f"on ResearchSubject, {cardinality}: {text(shape)}.</p>"
        f"<p>{text(definition.definition)}</p></div>"
    )


def structure_definition(definition: ExtensionDefinition, canonical_base: str) -> JSON:
    """One extension's StructureDefinition: a constraint on Extension, in ResearchSubject."""
    url = extension_url(canonical_base, definition.id)
    elements: list[JSON] = [
        {
            "id": "Extension",
            "path": "Extension",
            "short": definition.title,
            "definition": definition.definition,
            "min": 0,
            "max": "*" if definition.repeats else "1",
        }
    ]
    if definition.parts:
        elements.append(
            {
                "id": "Extension.extension",
                "path": "Extension.extension",
                "slicing": {
                    "discriminator": [{"type": "value", "path": "url"}],
                    "ordered": False,
                    "rules": "open",
                },
                "min": 1,
            }
        )
        for part in definition.parts:
            elements += _part_elements(part)
        elements += [
            {"id": "Extension.url", "path": "Extension.url", "fixedUri": url},
            {"id": "Extension.value[x]", "path": "Extension.value[x]", "max": "0"},
        ]
    else:
        assert definition.value_type is not None, definition.id
        elements += [
            {"id": "Extension.extension", "path": "Extension.extension", "max": "0"},
            {"id": "Extension.url", "path": "Extension.url", "fixedUri": url},
            _value_element("Extension", definition.value_type),
        ]
    return {
        "resourceType": "StructureDefinition",
        "id": definition.id,
        "text": {"status": "generated", "div": _narrative(definition, url)},
        "url": url,
        "name": definition.name,
        "title": definition.title,
        "status": "draft",
        "publisher": "MEDCARE Screen",
        "description": definition.definition,
        "fhirVersion": "4.0.1",
        "kind": "complex-type",
        "abstract": False,
        "context": [{"type": "element", "expression": "ResearchSubject"}],
        "type": "Extension",
        "baseDefinition": EXTENSION_BASE,
        "derivation": "constraint",
        "differential": {"element": elements},
    }


def _extension_slice(definition: ExtensionDefinition, canonical_base: str) -> JSON:
    return {
        "id": f"ResearchSubject.extension:{definition.id}",
        "path": "ResearchSubject.extension",
        "sliceName": definition.id,
        "short": definition.title,
        "min": 1 if definition.id in REQUIRED_EXTENSIONS else 0,
        "max": "*" if definition.repeats else "1",
        "type": [{"code": "Extension", "profile": [extension_url(canonical_base, definition.id)]}],
    }


def research_subject_profile(canonical_base: str) -> JSON:
    """The profile of the ResearchSubject we write: our extensions, narrative and identifier.

    `status` is left to R4's required binding: people take a subject further than our
    `candidate`/`ineligible` (subject.OUR_STATUSES), and such a subject must still conform.
    """
    url = extension_url(canonical_base, RESEARCH_SUBJECT_PROFILE)
    description = (
        "A ResearchSubject written by MEDCARE Screen: the pre-screen result of one patient for "
        "NCT06585007, machine-readable in extensions and human-readable in the narrative."
    )
    elements: list[JSON] = [
        {
            "id": "ResearchSubject",
            "path": "ResearchSubject",
            "short": "MEDCARE pre-screen result",
            "definition": description,
        },
        {"id": "ResearchSubject.text", "path": "ResearchSubject.text", "min": 1},
        {
            "id": "ResearchSubject.extension",
            "path": "ResearchSubject.extension",
            "slicing": {
                "discriminator": [{"type": "value", "path": "url"}],
                "ordered": False,
                "rules": "open",
            },
            "min": len(REQUIRED_EXTENSIONS),
        },
        *(_extension_slice(d, canonical_base) for d in DEFINITIONS),
        {"id": "ResearchSubject.identifier", "path": "ResearchSubject.identifier", "min": 1},
    ]
    return {
        "resourceType": "StructureDefinition",
        "id": RESEARCH_SUBJECT_PROFILE,
        "text": {
            "status": "generated",
            "div": f'<div xmlns="{XHTML_NS}"><p><b>MEDCARE ResearchSubject</b> ({text(url)})</p>'
            f"<p>{text(description)}</p></div>",
        },
        "url": url,
        "name": "MedcareResearchSubject",
        "title": "MEDCARE ResearchSubject",
        "status": "draft",
        "publisher": "MEDCARE Screen",
        "description": description,
        "fhirVersion": "4.0.1",
        "kind": "resource",
        "abstract": False,
        "type": "ResearchSubject",
        "baseDefinition": RESEARCH_SUBJECT_BASE,
        "derivation": "constraint",
        "differential": {"element": elements},
    }


def structure_definitions(canonical_base: str = DEFAULT_CANONICAL_BASE) -> list[JSON]:
    """Every definition in profiles/: the extensions, then the profile that uses them."""
    extensions = [structure_definition(d, canonical_base) for d in DEFINITIONS]
    return [*extensions, research_subject_profile(canonical_base)]


def render(resource: JSON) -> str:
    """The file text: 2-space JSON with a final newline, stable for diffs."""
    return json.dumps(resource, indent=2, ensure_ascii=False) + "\n"


def write_profiles(directory: Path, canonical_base: str = DEFAULT_CANONICAL_BASE) -> list[Path]:
    """Write StructureDefinition-<id>.json for every extension; returns the paths."""
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for resource in structure_definitions(canonical_base):
        path = directory / f"StructureDefinition-{resource['id']}.json"
        path.write_text(render(resource), encoding="utf-8")
        paths.append(path)
    return paths


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("directory", type=Path)
    parser.add_argument("--base", default=DEFAULT_CANONICAL_BASE, help="canonical base URL")
    args = parser.parse_args(argv)
    for path in write_profiles(args.directory, args.base.rstrip("/")):
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
