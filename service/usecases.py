"""What a caller can ask of the running service, one method per question.

Why this module: the API's views used to reach through the runtime into the store
(`runtime().store.run_results(...)`, `.attrition`, `.run_writebacks`, `.latest_result`...), so
each view knew the store's method names, its paging and its error types, and caught the errors
it knew of in a try/except of its own. Here each use case is one method that raises domain
errors (this module's, the runtime's and the store's); the API maps them to HTTP statuses in
one table (service/api/error_map.py). Nothing here knows HTTP: no Flask, no statuses, no URLs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from service.errors import SourceUnavailable
from service.fhir.cohort_search import check_cohort_search
from service.fhir.errors import FhirError
from service.fhir.record import PatientRecord
from service.report import Tiers
from service.runtime import Runtime, ScreenOutcome
from service.screening.result import ScreenResult
from service.store import ChangeItem, RunInfo, RunResultItem, Store

TIERS_PAGE = 500  # results read per page when a run's tiers are counted (bounded memory)


class RunNotFound(LookupError):
    """No run with this id."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"no run {run_id}")


class RunFinished(Exception):
    """The run has already finished: it cannot be cancelled."""

    def __init__(self, run_id: str) -> None:
        super().__init__(f"run {run_id} has already finished")


class NoResult(LookupError):
    """No result stored for this patient (and this study)."""

    def __init__(self, patient_ref: str) -> None:
        super().__init__(f"no result stored for {patient_ref}")


class UnsupportedPopulation(Exception):
    """A run's population cannot be read from this source (a search or Group without a FHIR
    server), or write-back was asked without one. Its own type because the same
    `SourceUnavailable` means "the FHIR server failed" when one patient is screened."""


class ScreeningService:
    """The use cases over one `Runtime`: screens, runs, results, the changes feed, health."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    @property
    def _store(self) -> Store:
        return self.runtime.store

    # -- one patient ------------------------------------------------------------------------

    def screen(self, patient_id: str, as_of: date | None, write_back: bool) -> ScreenOutcome:
        """Screen one patient now as of `as_of` (default the service's date) and store it.
        NotFound, SourceUnavailable (the FHIR server failed), InvalidAsOf (after today)."""
        as_of = as_of or self.runtime.today()
        with self.runtime.interactive:  # re-screens take nothing new meanwhile
            return self.runtime.screen_patient(patient_id, as_of, write_back)

    def screen_record(self, patient_id: str, record: PatientRecord | None) -> ScreenResult:
        """Screen as of the service's date (MEDCARE_TODAY) without storing: the record given
        (a CDS Hooks prefetch), else the patient read from the configured source."""
        with self.runtime.interactive:  # re-screens take nothing new meanwhile
            if record is None:
                record = self.runtime.source.record(patient_id)
            return self.runtime.screener.screen(record, self.runtime.today())

    def latest_result(self, patient_id: str) -> dict[str, Any]:
        """The latest stored result of a patient for this study (NoResult without one)."""
        reference = f"Patient/{patient_id}"
        study = self.runtime.mappings.parameters.study_id
        result = self._store.latest_result(reference, study)
        if result is None:
            raise NoResult(reference)
        return result

    # -- runs --------------------------------------------------------------------------------

    def start_run(self, kind: str, spec: Any, as_of: date | None, write_back: bool) -> RunInfo:
        """Queue a run over `spec` (ids, a Patient search or a Group id). A search may use only
        the allow-listed cohort parameters (SearchNotAllowed); InvalidAsOf after today or for
        a look back with write-back; UnsupportedPopulation when the source cannot list it."""
        if kind == "search":
            check_cohort_search(spec, self.runtime.settings.run_search_params)
        try:
            as_of = as_of or self.runtime.today()
            return self.runtime.start_run(kind, spec, as_of, write_back)
        except SourceUnavailable as exc:
            raise UnsupportedPopulation(str(exc)) from exc

    def run(self, run_id: str) -> RunInfo:
        run = self._store.get_run(run_id)
        if run is None:
            raise RunNotFound(run_id)
        return run

    def run_status(self, run: RunInfo) -> dict[str, Any]:
        """The run with its progress and its write-backs by outbox state."""
        data = run.to_dict()
        data["progress"] = self._store.run_progress(run.id)
        data["writebacks"] = self._store.run_writebacks(run.id)
        return data

    def run_results(
        self, run_id: str, cursor: str | None, limit: int
    ) -> tuple[Sequence[RunResultItem], str | None]:
        """One page of the run's patients in list order (BadCursor for a foreign cursor)."""
        self.run(run_id)
        return self._store.run_results(run_id, cursor, limit)

    def run_summary(self, run_id: str) -> dict[str, Any]:
        """Attrition per criterion, and the funnel in tiers (issue 12 item 10)."""
        self.run(run_id)
        summary = dict(self._store.attrition(run_id))
        summary["tiers"] = self.run_tiers(run_id).to_dict()
        return summary

    def run_tiers(self, run_id: str) -> Tiers:
        """Tiers over every screened patient of the run, read page by page (bounded memory)."""
        tiers = Tiers()
        cursor = None
        while True:
            items, cursor = self._store.run_results(run_id, cursor, TIERS_PAGE)
            for item in items:
                if item["result"] is not None:
                    tiers.add_body(item["result"])
            if cursor is None:
                return tiers

    def cancel_run(self, run_id: str) -> RunInfo:
        """Cancel a queued or running run (RunFinished when it is over); screened patients
        keep their results."""
        self.run(run_id)
        if not self.runtime.cancel_run(run_id):
            raise RunFinished(run_id)
        return self.run(run_id)

    # -- the changes feed, health, metrics ---------------------------------------------------

    def changes(self, cursor: str | None, limit: int) -> tuple[Sequence[ChangeItem], str]:
        """Changed results after `cursor` (BadCursor for a foreign cursor)."""
        return self._store.changes(cursor, limit)

    def database_answers(self) -> bool:
        return self._store.ping()

    @property
    def has_fhir_server(self) -> bool:
        return self.runtime.client is not None

    def fhir_server_answers(self) -> bool:
        """The FHIR server answers a fresh CapabilityStatement request (False without one)."""
        client = self.runtime.client
        if client is None:
            return False
        try:
            client.capabilities(refresh=True)
            return True
        except FhirError:
            return False

    def outbox_counts(self) -> dict[str, int]:
        return self._store.outbox_counts()
