"""A patient's FHIR data as the screener receives it, whatever the source (files or a server).

Resources stay raw dicts here: selecting by type and code on raw data before building any model
keeps a Synthea-sized record (thousands of resources) cheap to screen.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Resource = dict[str, Any]

# The resource types the rules read (fhir-contract.md "Reading").
CLINICAL_TYPES = (
    "Observation",
    "Condition",
    "MedicationStatement",
    "MedicationRequest",
    "MedicationAdministration",
    "Procedure",
)
# Types that are about one patient and must name ours to be used (criteria.md §3).
PATIENT_BOUND_TYPES = frozenset({"Patient", *CLINICAL_TYPES})
FOREIGN_IDS_LISTED = 5  # in the record's note; the rest are counted
# FHIR R4 `id`, matched against the whole string (`$` would accept a trailing newline).
FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")

# Resources about no patient that the patients' medication records reach by reference: a
# Medication, and a Substance named as a Medication's ingredient (criteria.md §4b, codes.md §7d).
# Both are kept for everyone and found by "Type/id" or fullUrl.
SHARED_TYPES = frozenset({"Medication", "Substance"})
# The clinical types that record a medication's use, each naming its Medication by reference.
MEDICATION_USE_TYPES = ("MedicationStatement", "MedicationRequest", "MedicationAdministration")
# Everything a patient's record is made of: the Patient, what the rules read, and what the
# medication records reach by reference. A source drops any other type unread.
KEPT_TYPES = frozenset({"Patient", *SHARED_TYPES, *CLINICAL_TYPES})


@dataclass
class PatientRecord:
    """One patient's resources, grouped by type, plus the Medications their references can reach.

    Only this patient's resources get in (criteria.md §3): whatever the source, a Patient with
    another id, or a clinical resource whose `subject`/`patient` names another patient (or no
    patient), is set aside in `foreign`, never used as evidence, and reported in `problems`
    (ids only): a server that ignores the `patient` search parameter, a CDS Hooks prefetch or a
    Bundle can all deliver other patients' data. `aliases` are the other references that name
    this patient (a Bundle's `urn:uuid:` fullUrl of its Patient).
    """

    patient_id: str
    patient: Resource | None = None
    resources: dict[str, list[Resource]] = field(default_factory=dict)
    medications: dict[str, Resource] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    foreign: list[Resource] = field(default_factory=list)
    aliases: set[str] = field(default_factory=set)
    _foreign_note: int | None = field(default=None, init=False, repr=False, compare=False)

    def of_type(self, resource_type: str) -> list[Resource]:
        return self.resources.get(resource_type, [])

    def add(self, resource: Resource, full_url: str | None = None) -> None:
        """Add a resource; Medications are indexed for reference resolution. A resource about
        another patient is set aside (see the class docstring)."""
        resource_type = resource.get("resourceType")
        if resource_type in PATIENT_BOUND_TYPES and not self.is_about_this_patient(resource):
            self._set_aside(resource)
        elif resource_type == "Patient":
            self.patient = resource
        elif resource_type in SHARED_TYPES:
            self.add_medication(resource, full_url)
        elif isinstance(resource_type, str):
            self.resources.setdefault(resource_type, []).append(resource)

    def add_medication(self, medication: Resource, full_url: str | None = None) -> None:
        index_medication(self.medications, medication, full_url)

    def is_about_this_patient(self, resource: Resource) -> bool:
        """True for this patient's Patient resource and for a resource whose subject/patient
        reference names this patient (by id, in any reference form, or by an alias)."""
        if resource.get("resourceType") == "Patient":
            return resource.get("id") == self.patient_id
        reference = subject_reference(resource)
        if reference is None:
            return False
        return reference in self.aliases or patient_id_of(reference) == self.patient_id

    def _set_aside(self, resource: Resource) -> None:
        """Keep a foreign resource out of the record; one note in `problems` counts them."""
        self.foreign.append(resource)
        listed = ", ".join(short_reference(r) for r in self.foreign[:FOREIGN_IDS_LISTED])
        more = len(self.foreign) - FOREIGN_IDS_LISTED
        note = (
            f"{len(self.foreign)} resource(s) sent for this patient name another patient "
            f"(or none) and were not used: {listed}" + (f" (+{more} more)" if more > 0 else "")
        )
        if self._foreign_note is None:
            self._foreign_note = len(self.problems)
            self.problems.append(note)
        else:
            self.problems[self._foreign_note] = note

    def resolve_medication(self, reference: str, container: Resource) -> Resource | None:
        """The Medication a `medicationReference.reference` points to: contained, or known here."""
        if reference.startswith("#"):
            listed = container.get("contained")
            for contained in listed if isinstance(listed, list) else []:
                if isinstance(contained, dict) and contained.get("id") == reference[1:]:
                    return contained
            return None
        if reference in self.medications:
            return self.medications[reference]
        tail = type_and_id(reference)
        return self.medications.get(tail) if tail else None

    def resource_count(self) -> int:
        return sum(len(items) for items in self.resources.values())


def index_medication(
    medications: dict[str, Resource], medication: Resource, full_url: str | None = None
) -> None:
    """File a Medication under every key a `medicationReference` may use to reach it."""
    for key in medication_keys(medication, full_url):
        medications[key] = medication


def medication_keys(medication: Resource, full_url: str | None) -> Iterable[str]:
    if full_url:
        yield full_url
    if isinstance(medication.get("id"), str):
        resource_type = medication.get("resourceType")
        kind = resource_type if resource_type in SHARED_TYPES else "Medication"
        yield f"{kind}/{medication['id']}"


def type_and_id(reference: str) -> str | None:
    """'Type/id' from a relative or absolute reference ('http://x/fhir/Patient/1/_history/2')."""
    parts = reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) >= 2 and parts[-2][:1].isupper():
        return f"{parts[-2]}/{parts[-1]}"
    return None


def patient_id_of(reference: str) -> str | None:
    """The id in a reference to a Patient ('Patient/1', 'https://x/fhir/Patient/1/_history/2')."""
    tail = type_and_id(reference)
    if tail and tail.startswith("Patient/"):
        return tail.split("/", 1)[1]
    return None


def versioned_reference(resource: Resource) -> str:
    """'Observation/77/_history/2' where the version is known, else 'Observation/77'; control
    characters in an invalid id are escaped (references end up in reasons, logs, terminals)."""
    resource_type = printable(str(resource.get("resourceType", "Resource")))
    resource_id = resource.get("id")
    if not isinstance(resource_id, str):
        return f"{resource_type}/(no id)"
    meta = resource.get("meta")
    version = meta.get("versionId") if isinstance(meta, dict) else None
    if isinstance(version, str) and version:
        return f"{resource_type}/{printable(resource_id)}/_history/{printable(version)}"
    return f"{resource_type}/{printable(resource_id)}"


def is_fhir_id(value: object) -> bool:
    """Whether `value` is a valid FHIR id (the whole string: 'fx-base\\n' is not)."""
    return isinstance(value, str) and FHIR_ID.fullmatch(value) is not None


def patient_id_problem(patient: Resource) -> str | None:
    """Why a Patient cannot be screened (no id, or an id that is not a FHIR id, shown escaped),
    or None: a source skips such a Patient and reports this rather than guess whose data it is."""
    patient_id = patient.get("id")
    if not isinstance(patient_id, str):
        return "Patient without an id, skipped"
    if not is_fhir_id(patient_id):
        return f"Patient/{printable(patient_id)}: not a FHIR id, skipped"
    return None


def printable(text: str) -> str:
    """`text` with non-printable characters escaped ('\\n', '\\x1b'): ids from servers and
    files reach terminals and logs, where a raw newline forges a log line and an escape
    sequence rewrites the screen."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode() for c in text)


def subject_patient_id(resource: Resource, aliases: dict[str, str] | None = None) -> str | None:
    """The id of the Patient a clinical resource is about, from its subject/patient reference;
    `aliases` map other references to ids (a Bundle's `urn:uuid:` fullUrls of its Patients)."""
    reference = subject_reference(resource)
    if reference is None:
        return None
    if aliases and reference in aliases:
        return aliases[reference]
    return patient_id_of(reference)


def short_reference(resource: Resource) -> str:
    """'Condition/9' of a resource (ids only: safe for notes and logs)."""
    resource_id = resource.get("id")
    shown = printable(resource_id) if isinstance(resource_id, str) else "(no id)"
    return f"{printable(str(resource.get('resourceType')))}/{shown}"


def subject_reference(resource: Resource) -> str | None:
    """The reference to the patient a clinical resource is about."""
    for key in ("subject", "patient"):
        value = resource.get(key)
        if isinstance(value, dict) and isinstance(value.get("reference"), str):
            return str(value["reference"])
    return None
