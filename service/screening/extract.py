"""FHIR record -> PatientFacts: select by code on raw data, validate only what a rule will read.

Everything dated after `as_of`, entered in error, or refuted is set aside here (with the reason
kept, so reasons can mention it) and never reaches a rule: a screen "as of" a past date sees
only what was knowable then (criteria.md §3).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from typing import Any

from service.fhir.dates import parse_fhir_day
from service.fhir.models import UnreadableResource, validate_resource
from service.fhir.record import PatientRecord, Resource, versioned_reference
from service.mapping.model import Mappings, codings_of, normalize_code, texts_of
from service.screening.concepts import (
    CONDITION_CONCEPTS,
    OBSERVATION_CONCEPTS,
    PROCEDURE_CONCEPTS,
    ConceptIndex,
    malignancy_by_name,
)
from service.screening.decision import Evidence
from service.screening.elements import (
    clinical_day,
    concept_label,
    ignored_because,
    medication_period,
    stated_depot_months,
    status_of,
    status_reason,
)
from service.screening.facts import (
    ClinicalFact,
    Demographics,
    DrugMatch,
    MedicationFact,
    PatientFacts,
    Unreadable,
)
from service.screening.ingredients import ingredient_concepts
from service.screening.nearmiss import near_misses_of

MEDICATION_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationAdministration")
MEDICATION_CONCEPT = "medication"
PATIENT_CONCEPT = "patient"
REQUEST_INTENTS_USED = {"order", "plan", "original-order"}
RECOGNISED_CACHE_SIZE = 4096


@contextmanager
def _unreadable_if_malformed(
    facts: PatientFacts, resource: Resource, concepts: tuple[str, ...]
) -> Iterator[None]:
    """The safety net under extraction: a resource malformed in a way the checks before it did
    not catch (an element of the wrong JSON type read before validation) is recorded as
    unreadable for every concept of its kind, so the criteria that read it say so (and never
    rule the patient out on it) instead of the screen failing."""
    try:
        yield
    except (AttributeError, TypeError, ValueError, KeyError, IndexError) as exc:
        resource_id = resource.get("id")
        reference = f"{resource.get('resourceType')}/{resource_id if isinstance(resource_id, str) else '(no id)'}"
        facts.unreadable.append(
            Unreadable(reference, frozenset(concepts), f"malformed ({type(exc).__name__})")
        )


class FactExtractor:
    """Built once per Mappings; turns each PatientRecord into PatientFacts for one `as_of`."""

    def __init__(self, mappings: Mappings) -> None:
        self.mappings = mappings
        self.observation_index = ConceptIndex.build(mappings, OBSERVATION_CONCEPTS)
        self.condition_index = ConceptIndex.build(mappings, CONDITION_CONCEPTS)
        self.procedure_index = ConceptIndex.build(mappings, PROCEDURE_CONCEPTS)
        self._recognised_cache: dict[tuple[Any, ...], tuple[DrugMatch, ...]] = {}
        catalogue = mappings.medications
        self._rxnorm: dict[str, list[Any]] = {}
        self._atc: dict[str, list[Any]] = {}
        for drug in catalogue.drugs:
            for code in drug.rxnorm:
                self._rxnorm.setdefault(code, []).append(drug)
            for code in drug.atc:
                self._atc.setdefault(code, []).append(drug)

    def extract(self, record: PatientRecord, as_of: date) -> PatientFacts:
        facts = PatientFacts(patient=self._demographics(record))
        for resource in record.of_type("Observation"):
            with _unreadable_if_malformed(facts, resource, OBSERVATION_CONCEPTS):
                self._clinical(
                    facts, facts.observations, resource, as_of, self._observation_concepts
                )
        for resource in record.of_type("Condition"):
            with _unreadable_if_malformed(facts, resource, CONDITION_CONCEPTS):
                self._clinical(facts, facts.conditions, resource, as_of, self._condition_concepts)
        for resource in record.of_type("Procedure"):
            with _unreadable_if_malformed(facts, resource, PROCEDURE_CONCEPTS):
                self._clinical(facts, facts.procedures, resource, as_of, self._procedure_concepts)
        for resource_type in MEDICATION_TYPES:
            for resource in record.of_type(resource_type):
                with _unreadable_if_malformed(facts, resource, (MEDICATION_CONCEPT,)):
                    self._medication(facts, record, resource, as_of)
        for resource in record.foreign:
            self._not_this_patient(facts, resource)
        return facts

    def _not_this_patient(self, facts: PatientFacts, resource: Resource) -> None:
        """A resource about another patient is never evidence (criteria.md §3); the criteria it
        would have informed say it was not used, so a person can see the source's fault."""
        kind = resource.get("resourceType")
        concepts: frozenset[str] = frozenset()
        with contextlib.suppress(AttributeError, TypeError, ValueError, KeyError, IndexError):
            if kind == "Patient":
                concepts = frozenset({PATIENT_CONCEPT})
            elif kind == "Observation":
                concepts = self._observation_concepts(resource)
            elif kind == "Condition":
                concepts = self._condition_concepts(resource)
            elif kind == "Procedure":
                concepts = self._procedure_concepts(resource)
            elif kind in MEDICATION_TYPES:
                drugs = self._recognise(resource.get("medicationCodeableConcept"))
                concepts = frozenset(c for d in drugs for c in d.drug.classes) or frozenset(
                    {MEDICATION_CONCEPT}
                )
        if concepts:
            reference = versioned_reference(resource)
            facts.ignored.append((reference, concepts, "names another patient"))

    # -- patient ---------------------------------------------------------------------------

    def _demographics(self, record: PatientRecord) -> Demographics:
        reference = f"Patient/{record.patient_id}"
        patient = record.patient
        if patient is None:
            return Demographics(reference, None, None, None, None, None, "no Patient resource")
        reference = versioned_reference(patient)
        try:
            validate_resource(patient)
        except UnreadableResource as exc:
            return Demographics(reference, None, None, None, None, None, f"unreadable: {exc}")
        birth_text = patient.get("birthDate")
        deceased_flag = patient.get("deceasedBoolean")
        return Demographics(
            reference=reference,
            gender=patient.get("gender"),
            birth=parse_fhir_day(birth_text),
            birth_text=birth_text if isinstance(birth_text, str) else None,
            deceased_flag=deceased_flag if isinstance(deceased_flag, bool) else None,
            deceased_day=parse_fhir_day(patient.get("deceasedDateTime")),
        )

    # -- observations, conditions, procedures ----------------------------------------------

    def _observation_concepts(self, resource: Resource) -> frozenset[str]:
        return self.observation_index.concepts_of(resource.get("code"))

    def _condition_concepts(self, resource: Resource) -> frozenset[str]:
        code = resource.get("code")
        found = self.condition_index.concepts_of(code)
        return found or malignancy_by_name(self.mappings, code)

    def _procedure_concepts(self, resource: Resource) -> frozenset[str]:
        code = resource.get("code")
        found = set(self.procedure_index.concepts_of(code))
        words = " ".join(texts_of(code)).casefold()
        for concept, pattern in self.mappings.procedure_names.items():
            if concept not in found and words and pattern.search(words):
                found.add(concept)
        return frozenset(found)

    def _clinical(
        self,
        facts: PatientFacts,
        target: list[ClinicalFact],
        resource: Resource,
        as_of: date,
        concepts_of: Any,
    ) -> None:
        concepts: frozenset[str] = concepts_of(resource)
        if not concepts:
            if target is facts.observations and self.mappings.near_misses.concepts:
                facts.near_misses.extend(near_misses_of(self.mappings, resource, as_of))
            return
        reference = versioned_reference(resource)
        try:
            validate_resource(resource)
        except UnreadableResource as exc:
            facts.unreadable.append(Unreadable(reference, concepts, str(exc)))
            return
        why_ignored = ignored_because(resource, as_of)
        if why_ignored:
            facts.ignored.append((reference, concepts, why_ignored))
            return
        day = clinical_day(resource)
        label = concept_label(resource.get("code"))
        summary = f"{label}, {day}" if day else label
        target.append(
            ClinicalFact(
                resource_type=resource["resourceType"],
                evidence=Evidence(reference, summary),
                day=day,
                status=status_of(resource),
                concepts=concepts,
                resource=resource,
                label=label,
            )
        )

    # -- medications -----------------------------------------------------------------------

    def _medication(
        self, facts: PatientFacts, record: PatientRecord, resource: Resource, as_of: date
    ) -> None:
        concept = resource.get("medicationCodeableConcept")
        reference_problem = None
        reference_element = resource.get("medicationReference")
        med_ref = (
            reference_element.get("reference") if isinstance(reference_element, dict) else None
        )
        medication = None
        if concept is None and isinstance(med_ref, str):
            medication = record.resolve_medication(med_ref, resource)
            if medication is None:
                reference_problem = f"Medication {med_ref} could not be resolved"
            else:
                concept = medication.get("code")
        drugs = self._recognise(concept)
        if not drugs and medication is not None:  # ingredient-only Medication (§4b, medcare-2)
            drugs = self._by_ingredient(medication, record, resource)
            if concept_label(concept) == "(no code)":  # name the product by its ingredients
                concept = {"text": " + ".join(m.drug.label for m in drugs)}
        reference = versioned_reference(resource)
        if not drugs:
            if reference_problem:
                facts.unreadable.append(
                    Unreadable(reference, frozenset({MEDICATION_CONCEPT}), reference_problem)
                )
            elif self.mappings.near_misses.concepts:
                facts.near_misses.extend(near_misses_of(self.mappings, resource, as_of, concept))
            return
        classes = frozenset(c for d in drugs for c in d.drug.classes)
        try:
            validate_resource(resource)
        except UnreadableResource as exc:
            facts.unreadable.append(Unreadable(reference, classes, str(exc)))
            return
        status = resource.get("status") if isinstance(resource.get("status"), str) else None
        if resource.get("doNotPerform") is True:  # an order NOT to give it (criteria.md §4b)
            status = "do-not-perform"
        if status == "entered-in-error":
            facts.ignored.append((reference, classes, "entered in error"))
            return
        intent = resource.get("intent")
        if resource["resourceType"] == "MedicationRequest" and intent not in REQUEST_INTENTS_USED:
            facts.ignored.append((reference, classes, f"request intent {intent!r} not used"))
            return
        start, end, asserted = medication_period(resource)
        if start is not None and start.earliest > as_of:
            facts.ignored.append((reference, classes, f"dated after as_of ({start})"))
            return
        product = concept_label(concept)
        when = f", from {start}" if start else ""
        facts.medications.append(
            MedicationFact(
                resource_type=resource["resourceType"],
                evidence=Evidence(
                    reference, f"{product} ({resource['resourceType']}, {status}{when})"
                ),
                status=status,
                drugs=drugs,
                product_text=product,
                start=start,
                end=end,
                asserted=asserted,
                stated_depot_months=stated_depot_months(concept, self.mappings),
                status_reason=status_reason(resource),
            )
        )

    def _by_ingredient(
        self, medication: Resource, record: PatientRecord, container: Resource
    ) -> tuple[DrugMatch, ...]:
        """Each recognised ingredient of a Medication without a recognised code, once."""
        matches: dict[str, DrugMatch] = {}
        for item in ingredient_concepts(medication, record, container):
            for match in self._recognise(item):
                how = f"ingredient, {match.matched_by}"
                matches.setdefault(match.drug.key, DrugMatch(match.drug, how, match.matched_text))
        return tuple(sorted(matches.values(), key=lambda m: m.drug.key))

    def _recognise(self, concept: Any) -> tuple[DrugMatch, ...]:
        """_recognised, remembered per distinct concept: a chart repeats the same few products
        (a chronic drug is prescribed every visit), and matching names runs one regular
        expression per listed drug. The key holds everything _recognised reads."""
        key = (tuple(codings_of(concept)), tuple(texts_of(concept)))
        found = self._recognised_cache.get(key)
        if found is None:
            if len(self._recognised_cache) >= RECOGNISED_CACHE_SIZE:
                self._recognised_cache.clear()  # bounded: memory stays flat over a population
            found = self._recognised_cache[key] = self._recognised(concept)
        return found

    def _recognised(self, concept: Any) -> tuple[DrugMatch, ...]:
        """Drugs in a medication concept: listed codes first, then names (criteria.md §4b)."""
        catalogue = self.mappings.medications
        matches: dict[str, DrugMatch] = {}
        for system, code in codings_of(concept):
            normalized = normalize_code(code)
            if system in catalogue.rxnorm_systems:
                for drug in self._rxnorm.get(normalized, []):
                    matches.setdefault(drug.key, DrugMatch(drug, "RxNorm", code))
            elif system in catalogue.atc_systems:
                for drug in self._atc.get(normalized, []):
                    matches.setdefault(drug.key, DrugMatch(drug, "ATC", code))
                if not matches:
                    for prefix, drug in catalogue.atc_prefixes:
                        if normalized.startswith(prefix):
                            matches.setdefault(drug.key, DrugMatch(drug, "ATC class", code))
        if matches:
            return tuple(sorted(matches.values(), key=lambda m: m.drug.key))
        text = " ".join(texts_of(concept))
        words = text.lower()  # lower(), not casefold(): keeps offsets, so the original is shown
        for pattern, drug in catalogue.name_patterns if words else ():
            found = pattern.search(words)
            if found:
                original = text[found.start() : found.end()]
                matches.setdefault(drug.key, DrugMatch(drug, "name", original))
        return tuple(sorted(matches.values(), key=lambda m: m.drug.key))
