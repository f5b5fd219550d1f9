"""Stable identifiers: the same study and patient always name the same ResearchSubject.

Re-screening must update the ResearchSubject written last time, never make a second one, so its
identifier is derived from ids alone (no patient data): the study id and the FHIR Patient id.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from urllib.parse import quote

from service.mapping.model import Parameters

# FHIR R4 `id`: what a Patient id may be. Anything else is not a reference we made.
_FHIR_ID = re.compile(r"[A-Za-z0-9\-.]{1,64}")
SUBJECT_NAMING_SYSTEM = "NamingSystem/research-subject"


@dataclass(frozen=True)
class Identifier:
    system: str
    value: str

    def token(self) -> str:
        """`system|value`, as a token search and a conditional URL want it."""
        return f"{self.system}|{self.value}"

    def to_fhir(self) -> dict[str, str]:
        return {"system": self.system, "value": self.value}


def patient_id(patient_reference: str) -> str:
    """The logical id of `Patient/123` (or `Patient/123/_history/4`, or an absolute URL).

    Raises ValueError for anything that is not a Patient reference, rather than minting an
    identifier from junk that would never match the next screen.
    """
    parts = patient_reference.split("/")
    if "_history" in parts:
        parts = parts[: parts.index("_history")]
    if len(parts) < 2 or parts[-2] != "Patient" or not _FHIR_ID.fullmatch(parts[-1]):
        raise ValueError(f"not a Patient reference: {patient_reference!r}")
    return parts[-1]


def subject_identifier_system(canonical_base: str) -> str:
    """The identifier system of our ResearchSubjects: `<base>/NamingSystem/research-subject`."""
    return f"{canonical_base.rstrip('/')}/{SUBJECT_NAMING_SYSTEM}"


def subject_identifier(params: Parameters, patient_reference: str) -> Identifier:
    """The ResearchSubject identifier for (study, patient): `NCT06585007:123`.

    The separator is `:` because `|`, `,` and `$` are special in FHIR token searches (they would
    need escaping in the conditional URL) and a FHIR id cannot contain `:`, so the value splits
    back unambiguously on its last `:`.
    """
    system = subject_identifier_system(params.canonical_base)
    return Identifier(system, f"{params.study_id}:{patient_id(patient_reference)}")


def study_identifier(params: Parameters) -> Identifier:
    """The ClinicalTrials.gov identifier of the study (system https://clinicaltrials.gov)."""
    return Identifier(params.study_identifier_system, params.study_id)


def conditional_url(resource_type: str, identifier: Identifier) -> str:
    """`ResearchSubject?identifier=system|value`, percent-encoding only what must be.

    `:`, `/` and `|` stay readable (servers accept them in a query), everything else that is
    not URL-safe is encoded, so an unusual canonical base cannot break the request.
    """
    return f"{resource_type}?identifier={quote(identifier.token(), safe=':/|')}"


def urn_uuid(identifier: Identifier) -> str:
    """A deterministic `urn:uuid:` fullUrl for the resource with this identifier.

    uuid5 of the token: the same subject gets the same placeholder in every transaction, which
    keeps Bundles reproducible byte for byte (placeholders are local to one Bundle anyway).
    """
    return f"urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, identifier.token())}"
