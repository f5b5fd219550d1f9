"""Read and validate mappings/ into a Mappings object; every failure names the file and entry."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml
from marshmallow import Schema, ValidationError

from service.mapping.model import (
    DrugEntry,
    LesionMaps,
    Mappings,
    MedicationCatalogue,
    Parameters,
    TermList,
    ValueSet,
    normalize_code,
    word_pattern,
)
from service.mapping.near_misses import load_near_misses
from service.mapping.schemas import (
    LesionMapFileSchema,
    MedicationsFileSchema,
    ParametersFileSchema,
    UnitsFileSchema,
    ValueSetsFileSchema,
)

DEFAULT_MAPPINGS_DIR = Path(__file__).resolve().parents[2] / "mappings"

# Concepts the rules look up by name; a mappings folder without one of them cannot screen.
REQUIRED_CONCEPTS = (
    "testosterone-total", "testosterone-not-total", "ecog", "karnofsky",
    "ecog-0", "ecog-1", "ecog-2", "ecog-3", "ecog-4", "ecog-5",
    "prostate-cancer", "prostate-other-histology", "histology-adenocarcinoma",
    "histology-excluded", "histology-observation", "not-prostate-primary",
    "lesion-count", "lesion-count-intracranial", "imaging-lesion", "lesion-size",
    "lesion-new", "lesion-progressive", "lesion-stable", "lesion-regressing",
    "disease-status", "disease-worsened",
    "site-local", "site-regional-node", "site-nonregional-node", "site-bone", "site-visceral",
    "site-intracranial", "site-unclear-cns", "site-unspecified",
    "spinal-metastasis", "spinal-complication",
    "malignancy-primary", "skin-keratinocyte-carcinoma", "in-situ", "history-of-malignancy",
    "radical-prostatectomy", "prostatectomy-generic", "brachytherapy", "external-beam-rt",
    "rt-target-prostate", "orchiectomy-bilateral",
    "radionuclide-therapy-specific", "radionuclide-therapy-generic",
)  # fmt: skip


class MappingError(Exception):
    """An invalid mapping file; the message names the file and the entry at fault."""


def load_mappings(directory: Path | None = None) -> Mappings:
    """Load every mapping file from `directory`, else the bundled mappings/ (the settings'
    MEDCARE_MAPPINGS_DIR reaches here through service/compose.py)."""
    folder = directory or DEFAULT_MAPPINGS_DIR
    valuesets_doc = _load(folder / "valuesets.yaml", ValueSetsFileSchema())
    medications_doc = _load(folder / "medications.yaml", MedicationsFileSchema())
    units_doc = _load(folder / "units.yaml", UnitsFileSchema())
    parameters_doc = _load(folder / "parameters.yaml", ParametersFileSchema())
    codesystem = _load_codesystem(folder / "codesystem-screening.json")

    valuesets = _build_valuesets(folder / "valuesets.yaml", valuesets_doc)
    lesion_maps, lesion_versions = _load_lesion_maps(folder, valuesets)
    near_misses = load_near_misses(folder)
    terms = valuesets_doc["malignancy_terms"]
    return Mappings(
        valuesets=valuesets,
        procedure_names={
            key: pattern
            for key, names in (valuesets_doc.get("procedure_names") or {}).items()
            if (pattern := word_pattern(names)) is not None
        },
        malignancy_terms=TermList(
            include=word_pattern(terms["include_terms"]),
            exclude=word_pattern(terms["exclude_terms"]),
            skin=word_pattern(terms["skin"]),
        ),
        medications=_build_catalogue(folder / "medications.yaml", medications_doc),
        unit_factors={unit.casefold(): factor for unit, factor in units_doc["factors"].items()},
        unit_labels={unit.casefold(): unit for unit in units_doc["factors"]},
        parameters=_build_parameters(parameters_doc),
        near_misses=near_misses,
        codesystem=codesystem,
        versions={
            "valuesets": valuesets_doc["header"]["version"],
            "medications": medications_doc["header"]["version"],
            "units": units_doc["header"]["version"],
            "parameters": parameters_doc["header"]["version"],
            "codesystem": str(codesystem.get("version")),
            "near-misses": near_misses.version,
            **lesion_versions,
        },
        lesion_maps=lesion_maps,
    )


# Aliases a mapping file may use. The bundled files use none; each alias stands for a whole
# anchored node, so a few kilobytes of nested aliases ("billion laughs": 110 KB) expand to
# billions of nodes: 48 s and 1.2 GB at every start before this bound.
MAX_ALIASES = 16


class _BoundedLoader(yaml.SafeLoader):
    """yaml.safe_load's loader, refusing a document with more than MAX_ALIASES aliases."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.aliases_seen = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases_seen += 1
            if self.aliases_seen > MAX_ALIASES:
                mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
                raise yaml.composer.ComposerError(
                    None, None, f"more than {MAX_ALIASES} aliases (*name)", mark
                )
        return super().compose_node(parent, index)


def _load(path: Path, schema: Schema) -> dict[str, Any]:
    try:
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=_BoundedLoader)
    except FileNotFoundError as exc:
        raise MappingError(f"{path}: file not found") from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise MappingError(
            f"{path}:{where} not valid YAML ({getattr(exc, 'problem', exc)})"
        ) from exc
    if not isinstance(raw, dict):
        raise MappingError(f"{path}: expected a mapping at the top level")
    try:
        loaded: dict[str, Any] = schema.load(raw)
    except ValidationError as exc:
        raise MappingError(f"{path}: {_first_error(exc.messages)}") from exc
    return loaded


def _first_error(messages: Any, path: str = "") -> str:
    """Flatten marshmallow's nested messages to 'concepts.ecog.codes.2.system: message'."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            if key == "value":  # marshmallow's marker for a Dict field's value: not a real key
                return _first_error(value, path)
            return _first_error(value, f"{path}.{key}" if path else str(key))
    if isinstance(messages, list) and messages:
        if all(isinstance(m, str) for m in messages):
            return f"{path}: {'; '.join(messages)}"
        return _first_error(messages[0], path)
    return f"{path}: {messages}"


def _build_valuesets(path: Path, doc: dict[str, Any]) -> dict[str, ValueSet]:
    aliases: dict[str, list[str]] = doc["systems"]
    result: dict[str, ValueSet] = {}
    for name, concept in doc["concepts"].items():
        exact: set[tuple[str, str]] = set()
        originals: list[tuple[str, str]] = []
        prefixes: list[tuple[frozenset[str], str]] = []
        for index, entry in enumerate(concept["codes"]):
            systems = _systems(path, aliases, entry["system"], f"concepts.{name}.codes.{index}")
            if "code" in entry:
                exact.update((system, normalize_code(entry["code"])) for system in systems)
                originals.extend((system, entry["code"]) for system in systems)
            else:
                prefixes.append((frozenset(systems), normalize_code(entry["prefix"])))
        result[name] = ValueSet(
            name, concept["description"], frozenset(exact), tuple(prefixes), tuple(originals)
        )
    missing = [name for name in REQUIRED_CONCEPTS if name not in result]
    if missing:
        raise MappingError(f"{path}: concepts: missing required concept(s) {', '.join(missing)}")
    return result


LESION_MAP_FILES = ("body-sites", "lesion-sizes", "imaging-methods")


def _load_lesion_maps(
    folder: Path, valuesets: dict[str, ValueSet]
) -> tuple[LesionMaps, dict[str, str]]:
    """The lesion mapping files (criteria.md §4): their concepts join the value sets (a name may
    not repeat one), their `region` / `spinal` marks become value sets of their own."""
    regions: dict[str, tuple[set[tuple[str, str]], list[tuple[frozenset[str], str]]]] = {}
    spinal_exact: set[tuple[str, str]] = set()
    spinal_prefixes: list[tuple[frozenset[str], str]] = []
    names: dict[str, Any] = {}
    units: dict[str, float] = {}
    versions: dict[str, str] = {}
    for stem in LESION_MAP_FILES:
        path = folder / f"{stem}.yaml"
        doc = _load(path, LesionMapFileSchema())
        versions[stem] = doc["header"]["version"]
        for name, concept in doc["concepts"].items():
            if name in valuesets:
                raise MappingError(f"{path}: concepts.{name}: already defined elsewhere")
            exact: set[tuple[str, str]] = set()
            originals: list[tuple[str, str]] = []
            prefixes: list[tuple[frozenset[str], str]] = []
            for index, entry in enumerate(concept["codes"]):
                where = f"concepts.{name}.codes.{index}"
                systems = _systems(path, doc["systems"], entry["system"], where)
                code = normalize_code(entry.get("code") or entry["prefix"])
                region = (
                    regions.setdefault(entry["region"], (set(), [])) if "region" in entry else None
                )
                if "code" in entry:
                    pairs = {(system, code) for system in systems}
                    exact |= pairs
                    originals.extend((system, entry["code"]) for system in systems)
                    if region is not None:
                        region[0].update(pairs)
                    if entry["spinal"]:
                        spinal_exact |= pairs
                else:
                    prefixes.append((frozenset(systems), code))
                    if region is not None:
                        region[1].append((frozenset(systems), code))
                    if entry["spinal"]:
                        spinal_prefixes.append((frozenset(systems), code))
            valuesets[name] = ValueSet(
                name, concept["description"], frozenset(exact), tuple(prefixes), tuple(originals)
            )
        for name, phrases in doc["names"].items():
            if (pattern := word_pattern(phrases)) is not None:
                names[name] = pattern
        units.update(doc["length_units_mm"])
    maps = LesionMaps(
        regions={
            key: ValueSet(f"region:{key}", key, frozenset(exact), tuple(prefixes))
            for key, (exact, prefixes) in regions.items()
        },
        spinal=ValueSet(
            "spinal-site", "spinal sites", frozenset(spinal_exact), tuple(spinal_prefixes)
        ),
        names=names,
        length_units_mm=units,
    )
    return maps, versions


def _systems(path: Path, aliases: dict[str, list[str]], system: str, where: str) -> list[str]:
    if system in aliases:
        return aliases[system]
    if system.startswith(("http://", "https://", "urn:")):
        return [system]
    raise MappingError(
        f"{path}: {where}.system: unknown system alias {system!r} (known: {', '.join(aliases)})"
    )


def _build_catalogue(path: Path, doc: dict[str, Any]) -> MedicationCatalogue:
    drugs = []
    for key, drug in doc["drugs"].items():
        names = tuple(drug["names"])
        drugs.append(
            DrugEntry(
                key=key,
                label=key,
                classes=frozenset(drug["classes"]),
                depot=drug["depot"],
                rxnorm=frozenset(normalize_code(c) for c in drug["rxnorm"]),
                atc=frozenset(normalize_code(c) for c in drug["atc"]),
                names=names,
            )
        )
    prefixes = []
    for prefix, entry in doc["atc_class_prefixes"].items():
        drug = DrugEntry(
            key=f"atc-class-{prefix}",
            label=entry["label"],
            classes=frozenset(entry["classes"]),
            depot=entry["depot"],
            rxnorm=frozenset(),
            atc=frozenset(),
            names=(),
        )
        prefixes.append((normalize_code(prefix), drug))
    name_patterns = tuple(
        (pattern, drug) for drug in drugs if (pattern := word_pattern(drug.names)) is not None
    )
    systems = doc["systems"]
    if "rxnorm" not in systems or "atc" not in systems:
        raise MappingError(f"{path}: systems: both 'rxnorm' and 'atc' must be given")
    return MedicationCatalogue(
        drugs=tuple(drugs),
        rxnorm_systems=frozenset(systems["rxnorm"]),
        atc_systems=frozenset(systems["atc"]),
        atc_prefixes=tuple(prefixes),
        name_patterns=name_patterns,
    )


def _build_parameters(doc: dict[str, Any]) -> Parameters:
    windows, thresholds, medication = doc["windows_days"], doc["thresholds"], doc["medication"]
    study = doc["study"]
    return Parameters(
        rules_version=doc["rules_version"],
        study_id=study["id"],
        study_identifier_system=study["identifier_system"],
        study_identifier_aliases=tuple(study["identifier_system_aliases"]),
        study_title=study["title"].strip(),
        canonical_base=doc["canonical_base"].rstrip("/"),
        imaging_window_days=windows["imaging"],
        testosterone_window_days=windows["testosterone"],
        performance_window_days=windows["performance_status"],
        castrate_ng_dl=thresholds["castrate_testosterone_ng_dl"],
        max_progressive_lesions=thresholds["max_progressive_lesions"],
        min_node_short_axis_mm=thresholds["min_node_short_axis_mm"],
        min_visceral_diameter_mm=thresholds["min_visceral_diameter_mm"],
        default_depot_months=medication["default_depot_months"],
        allowed_depot_months=frozenset(medication["allowed_depot_months"]),
        docetaxel_cycle_days=medication["docetaxel_cycle_days"],
        observation_statuses_used=frozenset(doc["observation_statuses_used"]),
    )


def _load_codesystem(path: Path) -> dict[str, Any]:
    try:
        resource = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise MappingError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise MappingError(f"{path}: line {exc.lineno}: not valid JSON ({exc.msg})") from exc
    if not isinstance(resource, dict) or resource.get("resourceType") != "CodeSystem":
        raise MappingError(f"{path}: expected a FHIR CodeSystem resource")
    from service.fhir.models import UnreadableResource, validate_resource

    try:
        validate_resource(resource)
    except UnreadableResource as exc:
        raise MappingError(f"{path}: not a valid FHIR CodeSystem ({exc})") from exc
    return resource
