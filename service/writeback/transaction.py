"""What to write for one screened patient, and the transaction Bundle that writes it.

The ResearchSubject and its Provenance go in one `transaction`, so a server never holds one
without the other. The subject is written by conditional update on its stable identifier, so the
first screen creates it and every later one updates the same resource.
"""

from __future__ import annotations

import uuid
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from service.mapping.model import Parameters
from service.screening.result import ScreenResult, Status
from service.writeback.fingerprint import NO_DISPOSITION, fingerprint
from service.writeback.identifiers import conditional_url, subject_identifier, urn_uuid
from service.writeback.provenance import build_provenance
from service.writeback.subject import OUR_STATUSES, build_research_subject, stored_fingerprint

Outcome = Literal["write", "unchanged", "skip-ineligible", "skip-managed"]


@dataclass(frozen=True)
class WriteDecision:
    """What to do for one patient, and why (the why goes to logs and the run summary)."""

    outcome: Outcome
    reason: str
    fingerprint: str

    @property
    def should_write(self) -> bool:
        return self.outcome == "write"


def plan_write(
    result: ScreenResult,
    existing_subject: Mapping[str, Any] | None,
    write_ineligible: bool,
    *,
    canonical_base: str,
    disposition: str | None = None,
    set_by_people: Collection[str] = (),
) -> WriteDecision:
    """Decide whether to write, given the ResearchSubject the server holds now (if any).

    - `skip-managed`: the stored subject has a status we did not write: neither an automatic
      one (OUR_STATUSES) nor one people set through us (`set_by_people`: the statuses of the
      dispositions recorded for this patient, subject.people_statuses). Another system has
      taken the patient further, and a conditional update would overwrite its work with a
      pre-screen. It is reported, not touched.
    - `unchanged`: the stored subject carries this result's fingerprint.
    - `skip-ineligible`: ineligible, nothing stored, ineligible patients are not written, and
      no coordinator recorded a disposition (people's word is always written).
    - `write` otherwise: new, or changed (a stored candidate who became ineligible is updated,
      never left behind as a stale candidate, whatever `write_ineligible` says).

    `disposition` is the coordinators' current one: it sets the status (subject_status, so an
    automatic screen never downgrades it) and is part of the written fingerprint, so a new
    disposition is written once and the same one again is `unchanged`.

    `canonical_base` is required: under a wrong base no stored fingerprint would be found and
    every patient would be rewritten on every run.
    """
    current = fingerprint(result, disposition)
    if existing_subject is not None:
        status = existing_subject.get("status")
        if status not in OUR_STATUSES and status not in set_by_people:
            return WriteDecision(
                "skip-managed",
                f"the stored ResearchSubject has status {status!r}, set outside the pre-screen",
                current,
            )
        if stored_fingerprint(existing_subject, canonical_base) == current:
            return WriteDecision("unchanged", "the stored result is the same", current)
        return WriteDecision("write", "the result changed since the last write", current)
    by_people = disposition is not None and disposition != NO_DISPOSITION
    if result.status is Status.INELIGIBLE and not write_ineligible and not by_people:
        return WriteDecision(
            "skip-ineligible", "ineligible, not written before, not configured to write", current
        )
    return WriteDecision("write", "no ResearchSubject stored yet", current)


def build_transaction(
    result: ScreenResult,
    params: Parameters,
    study_reference: str,
    now: datetime,
    disposition: str | None = None,
) -> dict[str, Any]:
    """The transaction: conditional PUT of the ResearchSubject, then POST of its Provenance.

    `study_reference` is the ResearchStudy as the server knows it (`ResearchStudy/5`); `now` is
    the Provenance's `recorded`. The Bundle is a pure function of its inputs: fullUrls are
    uuid5 values (the subject's from its identifier, the Provenance's from the subject, the
    fingerprint and `now`), so the same inputs give the same bytes.
    """
    identifier = subject_identifier(params, result.patient)
    subject_url = urn_uuid(identifier)
    provenance = build_provenance(result, subject_url, now)
    provenance_url = "urn:uuid:" + str(
        uuid.uuid5(
            uuid.NAMESPACE_URL,
            f"{subject_url}|{fingerprint(result, disposition)}|{provenance['recorded']}",
        )
    )
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": subject_url,
                "resource": build_research_subject(result, params, study_reference, disposition),
                "request": {"method": "PUT", "url": conditional_url("ResearchSubject", identifier)},
            },
            {
                "fullUrl": provenance_url,
                "resource": provenance,
                "request": {"method": "POST", "url": "Provenance"},
            },
        ],
    }
