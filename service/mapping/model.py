"""Loaded mappings as immutable objects the rules query (no file or YAML knowledge here)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


def normalize_code(code: str) -> str:
    """Codes compare without dots and case ('C77.5' == 'c775'), as ICD-10 flavours require."""
    return code.strip().replace(".", "").casefold()


def codings_of(concept: Any) -> Iterator[tuple[str, str]]:
    """(system, code) pairs of a raw CodeableConcept (or Coding) dict; tolerant of junk."""
    if not isinstance(concept, dict):
        return
    codings = concept.get("coding") if "coding" in concept else [concept]
    for coding in codings or []:
        if isinstance(coding, dict):
            system, code = coding.get("system"), coding.get("code")
            if isinstance(system, str) and isinstance(code, str):
                yield system, code


def texts_of(concept: Any) -> list[str]:
    """The human words of a CodeableConcept: its text and its codings' displays."""
    if not isinstance(concept, dict):
        return []
    texts = [concept["text"]] if isinstance(concept.get("text"), str) else []
    for coding in concept.get("coding") or []:
        if isinstance(coding, dict) and isinstance(coding.get("display"), str):
            texts.append(coding["display"])
    return texts


@dataclass(frozen=True)
class ValueSet:
    """A named concept: exact codes and code prefixes, each for a set of system URIs."""

    name: str
    description: str
    exact: frozenset[tuple[str, str]]
    prefixes: tuple[tuple[frozenset[str], str], ...] = ()
    # the exact codes as written in the mapping file (for server searches by `code`)
    search_codes: tuple[tuple[str, str], ...] = ()

    def contains(self, system: str, code: str) -> bool:
        normalized = normalize_code(code)
        if (system, normalized) in self.exact:
            return True
        return any(system in systems and normalized.startswith(p) for systems, p in self.prefixes)

    def matches(self, concept: Any) -> bool:
        """True when any coding of the raw CodeableConcept belongs to this value set."""
        return any(self.contains(system, code) for system, code in codings_of(concept))

    def exact_pairs(self) -> frozenset[tuple[str, str]]:
        return self.exact


def word_pattern(phrases: Iterable[str]) -> re.Pattern[str] | None:
    """One case-insensitive regex matching any phrase on word boundaries."""
    escaped = sorted({re.escape(p.lower()) for p in phrases if p.strip()}, key=len, reverse=True)
    if not escaped:
        return None
    return re.compile(r"(?<![a-z0-9])(?:" + "|".join(escaped) + r")(?![a-z0-9])")


@dataclass(frozen=True)
class TermList:
    """Words that recognise a malignancy by name where no listed code matches."""

    include: re.Pattern[str] | None
    exclude: re.Pattern[str] | None
    skin: re.Pattern[str] | None


@dataclass(frozen=True)
class DrugEntry:
    """One drug (or combination, or ATC class) the rules recognise."""

    key: str
    label: str
    classes: frozenset[str]
    depot: bool
    rxnorm: frozenset[str]
    atc: frozenset[str]
    names: tuple[str, ...]


@dataclass(frozen=True)
class MedicationCatalogue:
    drugs: tuple[DrugEntry, ...]
    rxnorm_systems: frozenset[str]
    atc_systems: frozenset[str]
    atc_prefixes: tuple[tuple[str, DrugEntry], ...]
    name_patterns: tuple[tuple[re.Pattern[str], DrugEntry], ...] = field(default=())


@dataclass(frozen=True)
class Parameters:
    rules_version: str
    study_id: str
    study_identifier_system: str
    study_identifier_aliases: tuple[str, ...]
    study_title: str
    canonical_base: str
    imaging_window_days: int
    testosterone_window_days: int
    performance_window_days: int
    castrate_ng_dl: float
    max_progressive_lesions: int
    min_node_short_axis_mm: float
    min_visceral_diameter_mm: float
    default_depot_months: int
    allowed_depot_months: frozenset[int]
    docetaxel_cycle_days: int
    observation_statuses_used: frozenset[str]


@dataclass(frozen=True)
class LesionMaps:
    """What the lesion mapping files add beside their value sets (criteria.md §4): the organ or
    node region of each site code, the spinal site codes, modality words, length units."""

    regions: dict[str, ValueSet] = field(default_factory=dict)
    spinal: ValueSet = field(default_factory=lambda: ValueSet("spinal-site", "", frozenset()))
    names: dict[str, re.Pattern[str]] = field(default_factory=dict)
    length_units_mm: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class NearMissConcept:
    """Words that make an unmapped record look like data a criterion needs (a near miss)."""

    name: str
    kind: str  # "observation" or "medication"
    what: str  # "total testosterone"
    criteria: tuple[str, ...]
    pattern: re.Pattern[str] | None
    exclude: re.Pattern[str] | None
    # the phrases `pattern` was made of (lower case): the NDJSON prefilter keeps lines that
    # contain one, so that near misses are seen from an export as from a file
    phrases: tuple[str, ...] = ()


@dataclass(frozen=True)
class NearMisses:
    """mappings/near-misses.yaml (issue 11 item 10): near-miss patterns, and blinded-drug words."""

    concepts: tuple[NearMissConcept, ...] = ()
    blinded: re.Pattern[str] | None = None
    version: str = "none"


@dataclass(frozen=True)
class Mappings:
    """Everything in mappings/, as the engine needs it."""

    valuesets: dict[str, ValueSet]
    procedure_names: dict[str, re.Pattern[str]]
    malignancy_terms: TermList
    medications: MedicationCatalogue
    unit_factors: dict[str, float]
    unit_labels: dict[str, str]
    parameters: Parameters
    codesystem: dict[str, Any]
    versions: dict[str, str]
    near_misses: NearMisses = field(default_factory=NearMisses)
    lesion_maps: LesionMaps = field(default_factory=LesionMaps)

    def vs(self, name: str) -> ValueSet:
        return self.valuesets[name]
