"""Sends a screen result to the FHIR server: the pure builders of this package, through FhirClient.

Order of work for one patient: find (or create, once) the ResearchStudy; read the current
ResearchSubject by its stable identifier; `plan_write` decides; when it says write, one
transaction carries the ResearchSubject (conditional update: never a duplicate) and its
Provenance, so the server never holds one without the other. Re-running after a failure is
safe: if the earlier transaction did land, the stored fingerprint now matches and nothing is
written twice.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.fhir.client import FhirClient, parse_location, parse_status
from service.fhir.errors import FhirError
from service.mapping.model import Parameters
from service.screening.result import ScreenResult
from service.writeback.identifiers import subject_identifier
from service.writeback.study import (
    build_research_study,
    pick_study,
    study_if_none_exist,
    study_search_params,
)
from service.writeback.transaction import build_transaction, plan_write

log = logging.getLogger("medcare_screen.writeback")


@dataclass(frozen=True)
class WriteOutcome:
    """What happened for one patient: written, unchanged, or skipped (and why)."""

    outcome: str  # "written" | "unchanged" | "skip-ineligible" | "skip-managed"
    reason: str
    fingerprint: str
    subject: str | None = None  # "ResearchSubject/12/_history/3" when written
    provenance: str | None = None

    @property
    def written(self) -> bool:
        return self.outcome == "written"


class ResultWriter:
    """Writes results for one study to one FHIR server; safe to share between threads."""

    def __init__(
        self,
        client: FhirClient,
        params: Parameters,
        *,
        write_ineligible: bool = False,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self.client = client
        self.params = params
        self.write_ineligible = write_ineligible
        self.clock = clock
        self._study: str | None = None
        self._lock = threading.Lock()

    def study_reference(self) -> str:
        """'ResearchStudy/<id>': found by identifier (any accepted system) or created once."""
        with self._lock:
            if self._study is None:
                self._study = self._find_or_create_study()
            return self._study

    def _find_or_create_study(self) -> str:
        found = list(self.client.search("ResearchStudy", study_search_params(self.params)))
        study = pick_study({"entry": [{"resource": r} for r in found]}, self.params)
        if study is not None and isinstance(study.get("id"), str):
            return f"ResearchStudy/{study['id']}"
        created = self.client.create(
            build_research_study(self.params), if_none_exist=study_if_none_exist(self.params)
        )
        study_id = (created.resource or {}).get("id")
        if not study_id and created.location:
            location = parse_location(created.location)
            study_id = location.id if location else None
        if not study_id:
            raise FhirError(
                "the server did not return the ResearchStudy's id", request="POST ResearchStudy"
            )
        return f"ResearchStudy/{study_id}"

    def existing_subject(self, result: ScreenResult) -> dict[str, Any] | None:
        identifier = subject_identifier(self.params, result.patient)
        found = list(
            self.client.search(
                "ResearchSubject", [("identifier", identifier.token())], patient=result.patient
            )
        )
        if len(found) > 1:
            # conditional update would refuse to choose; a person must merge them
            raise FhirError(
                f"{len(found)} ResearchSubjects carry the identifier {identifier.token()}",
                request="GET ResearchSubject?identifier=...",
                patient=result.patient,
            )
        return found[0] if found else None

    def write(
        self,
        result: ScreenResult,
        disposition: str | None = None,
        set_by_people: Collection[str] = (),
    ) -> WriteOutcome:
        """Write `result` with the coordinators' current `disposition`; `set_by_people` are the
        statuses their recorded dispositions map to (transaction.plan_write)."""
        decision = plan_write(
            result,
            self.existing_subject(result),
            self.write_ineligible,
            canonical_base=self.params.canonical_base,
            disposition=disposition,
            set_by_people=set_by_people,
        )
        if not decision.should_write:
            return WriteOutcome(decision.outcome, decision.reason, decision.fingerprint)
        bundle = build_transaction(
            result, self.params, self.study_reference(), self.clock(), disposition
        )
        response = self.client.transaction(bundle, patient=result.patient)
        subject, provenance = (_entry_location(e) for e in _entries(response, 2))
        log.info("wrote %s for %s", subject, result.patient)
        return WriteOutcome("written", decision.reason, decision.fingerprint, subject, provenance)


def _entries(response: dict[str, Any], expected: int) -> list[dict[str, Any]]:
    entries = [e for e in response.get("entry") or [] if isinstance(e, dict) and "response" in e]
    if len(entries) != expected:
        raise FhirError(f"transaction response has {len(entries)} entries, expected {expected}")
    return entries


def _entry_location(entry: dict[str, Any]) -> str | None:
    response = entry.get("response") or {}
    status = parse_status(str(response.get("status", "")))
    if status is None or not 200 <= status < 300:
        raise FhirError(f"transaction entry answered {response.get('status')!r}")
    location = parse_location(response.get("location") or "")
    if location is None:
        return None
    base = f"{location.resource_type}/{location.id}"
    return f"{base}/_history/{location.version_id}" if location.version_id else base
