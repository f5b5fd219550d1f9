"""What to read for one patient, worked out once from mappings/ (fhir-contract.md "Reading").

Three readers ask the same question in their own words: the server source searches a FHIR server,
a CDS Hooks client is told what to prefetch, and the NDJSON partition drops lines undecoded. The
answer is one ReadPlan: the resource types the rules read, the Observation codes of the value sets
they select Observations by (as written in mappings/, since a server compares tokens as it stores
them, and normalised, as the extractor compares them), the near-miss phrases that keep an unmapped
Observation, and the `_include` that brings each medication use's Medication along.

Only the plan's shape is shared: the server's code list is sorted and without repeats, while the
CDS prefetch keeps the value sets' order, exactly as those readers were written before the plan.
"""

from __future__ import annotations

from dataclasses import dataclass
from threading import Lock
from typing import Final, Protocol

from service.codesystems import LOINC
from service.fhir.record import CLINICAL_TYPES, KEPT_TYPES, MEDICATION_USE_TYPES
from service.mapping.model import Mappings, ValueSet
from service.screening.concepts import OBSERVATION_CONCEPTS

# Value sets whose codes select the Observations to read (everything the rules read by code).
OBSERVATION_VALUE_SETS: Final = OBSERVATION_CONCEPTS
CdsPrefetch = dict[str, str]


class HasValueSets(Protocol):
    """Enough of Mappings to choose codes by (tests pass a stand-in with other value sets)."""

    def vs(self, name: str) -> ValueSet: ...


@dataclass(frozen=True)
class TypeRead:
    """One resource type of a patient's record, as a search by patient reads it."""

    resource_type: str
    codes: tuple[tuple[str, str], ...] | None = None  # Observation: (system, code) to ask for
    include: str | None = None  # e.g. 'MedicationRequest:medication'


@dataclass(frozen=True)
class ReadPlan:
    """What to read for a patient; build it with `read_plan(mappings)`."""

    reads: tuple[TypeRead, ...]  # one per type in CLINICAL_TYPES, in that order
    # per Observation value set, its codes as written in mappings/ (the CDS prefetch's order)
    codes_by_value_set: tuple[tuple[str, tuple[tuple[str, str], ...]], ...]
    # the normalised codes the extractor selects Observations by; None when a value set
    # matches by prefix (then no Observation can be ruled out by its code)
    match_codes: frozenset[str] | None
    near_miss_phrases: tuple[str, ...]  # of Observation near misses, lower case
    kept_types: frozenset[str] = KEPT_TYPES

    @classmethod
    def build(cls, mappings: Mappings) -> ReadPlan:
        search_codes = tuple(observation_search_codes(mappings))
        reads = tuple(
            TypeRead(
                resource_type,
                codes=search_codes if resource_type == "Observation" else None,
                include=(
                    f"{resource_type}:medication" if resource_type in MEDICATION_USE_TYPES else None
                ),
            )
            for resource_type in CLINICAL_TYPES
        )
        by_value_set = tuple(
            (name, tuple(mappings.vs(name).search_codes)) for name in OBSERVATION_VALUE_SETS
        )
        phrases = {
            phrase
            for concept in mappings.near_misses.concepts
            if concept.kind == "observation"
            for phrase in concept.phrases
        }
        return cls(reads, by_value_set, observation_match_codes(mappings), tuple(sorted(phrases)))

    def searches(self, patient_id: str, page_size: int) -> list[tuple[str, list[tuple[str, str]]]]:
        """(resource type, search parameters) for every search of one patient's record."""
        planned: list[tuple[str, list[tuple[str, str]]]] = []
        for read in self.reads:
            params = [("patient", patient_id)]
            if read.codes is not None:
                params.append(("code", token_list(read.codes)))
            if read.include is not None:
                params.append(("_include", read.include))
            planned.append((read.resource_type, [*params, ("_count", str(page_size))]))
        return planned


_plans: dict[int, tuple[Mappings, ReadPlan]] = {}
_plans_lock = Lock()


def read_plan(mappings: Mappings) -> ReadPlan:
    """The plan of these mappings, built on first use and then reused (the CDS service asks for
    it on every call)."""
    with _plans_lock:
        hit = _plans.get(id(mappings))
        if hit is not None and hit[0] is mappings:
            return hit[1]
        plan = ReadPlan.build(mappings)
        if len(_plans) >= 8:  # tests load many Mappings; a service has one
            _plans.clear()
        _plans[id(mappings)] = (mappings, plan)
        return plan


def cds_prefetch_templates(plan: ReadPlan) -> CdsPrefetch:
    """CDS Hooks prefetch that gives the service everything it reads, so a prefetching EHR costs
    no calls: the Patient, the Observations by code, and one search per other type read."""
    codes = [pair for _name, pairs in plan.codes_by_value_set for pair in pairs]
    templates = {
        "patient": "Patient/{{context.patientId}}",
        "observations": "Observation?patient={{context.patientId}}&code=" + token_list(codes),
    }
    for read in plan.reads:
        if read.resource_type == "Observation":
            continue
        include = f"&_include={read.include}" if read.include else ""
        key = read.resource_type[0].lower() + read.resource_type[1:]
        templates[key] = f"{read.resource_type}?patient={{{{context.patientId}}}}{include}"
    return templates


def token_list(pairs: tuple[tuple[str, str], ...] | list[tuple[str, str]]) -> str:
    """'system|code,system|code': a token search's value for any of these codes."""
    return ",".join(f"{system}|{code}" for system, code in pairs)


def observation_search_codes(mappings: HasValueSets) -> list[tuple[str, str]]:
    """Every exact (system, code) of the Observation value sets, as a server must be sent them."""
    pairs: set[tuple[str, str]] = set()
    for name in OBSERVATION_VALUE_SETS:
        pairs.update(search_pairs(mappings.vs(name)))
    return sorted(pairs)


def observation_match_codes(mappings: HasValueSets) -> frozenset[str] | None:
    """The normalised codes of every Observation value set; None when one matches by prefix."""
    codes: set[str] = set()
    for name in OBSERVATION_VALUE_SETS:
        valueset = mappings.vs(name)
        if valueset.prefixes:
            return None
        codes.update(code for _system, code in valueset.exact_pairs())
    return frozenset(codes)


def search_pairs(value_set: ValueSet) -> frozenset[tuple[str, str]]:
    """(system, code) as written in mappings/, because a token search compares codes as the
    server stores them, not normalised for matching (no dots, case-folded) as `exact` holds them.

    A value set built without `search_codes` (made in code rather than loaded) falls back to
    the normalised codes in their canonical case: LOINC codes are upper case ('LA9622-7'); the
    other systems searched for Observations (SNOMED CT, the screening code system) are digits or
    lower case already.
    """
    if value_set.search_codes:
        return frozenset(value_set.search_codes)
    return frozenset(
        (system, code.upper() if system == LOINC else code)
        for system, code in value_set.exact_pairs()
    )
