"""The running service: settings turned into a source, an engine, a store and background workers.

The HTTP layer calls this module and nothing deeper; the CLI's `serve` builds it once. It owns
the two kinds of background work:

- run execution: a run's patient list is kept in the store, patients are claimed in small
  batches and screened on a bounded thread pool sharing one HTTP connection pool; a patient
  that fails is recorded with its reason and the run goes on; a run interrupted by a restart
  is resumed from the store at start-up;
- the write-back outbox: results to write are queued in the same transaction that stores them,
  and a worker writes them to the FHIR server, retrying with backoff while it is down.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from service.config import Settings
from service.fhir.auth import auth_from_env
from service.fhir.client import FhirClient
from service.fhir.errors import FhirError, FhirNetworkError
from service.fhir.local_source import LocalSource, SourceError
from service.fhir.record import PatientRecord
from service.fhir.server_source import ServerSource
from service.mapping import Mappings, load_mappings
from service.screening.engine import Screener
from service.screening.result import ScreenResult
from service.store import RunInfo, Store, create_store
from service.writeback.fingerprint import fingerprint
from service.writeback.writer import ResultWriter, WriteOutcome

log = logging.getLogger("medcare_screen.runtime")

CLAIM_BATCH = 8
OUTBOX_INTERVAL_S = 2.0
OUTBOX_MAX_BACKOFF_S = 600.0


class SourceUnavailable(Exception):
    """The patient source could not give a patient (the message names the request)."""


class NotFound(Exception):
    """The patient is not known to the source."""


@dataclass(frozen=True)
class ScreenOutcome:
    result: dict[str, Any]
    changed: bool
    write_back: str | None  # None (not asked), "written", "unchanged", "skip-...", "queued"


class PatientSourceAdapter:
    """One interface over a local folder and a FHIR server, for ids, searches and Groups."""

    def __init__(self, settings: Settings, mappings: Mappings, client: FhirClient | None) -> None:
        self.client = client
        self.local = None if client else LocalSource(settings.source_path)
        self.server = ServerSource(client, mappings) if client else None

    @property
    def is_server(self) -> bool:
        return self.server is not None

    def record(self, patient_id: str) -> PatientRecord:
        try:
            if self.server is not None:
                return self.server.record(patient_id)
            assert self.local is not None
            return self.local.record(patient_id)
        except SourceError as exc:
            raise NotFound(f"Patient/{patient_id} is not in the source") from exc
        except FhirError as exc:
            if exc.status in (404, 410):
                raise NotFound(f"Patient/{patient_id} is not known to the FHIR server") from exc
            raise SourceUnavailable(str(exc)) from exc

    def patient_ids(self, kind: str, spec: Any) -> Iterator[str]:
        if kind == "ids":
            yield from spec
        elif self.server is not None:
            yield from self.server.patient_ids(
                search=spec if kind == "search" else None, group=spec if kind == "group" else None
            )
        elif kind == "search" and str(spec).strip() in ("Patient", "Patient?"):
            assert self.local is not None
            yield from self.local.patient_ids()
        else:
            raise SourceUnavailable(
                "searches other than 'Patient' and Groups need a FHIR server (MEDCARE_FHIR_BASE_URL)"
            )


class Runtime:
    """Everything the API needs, built once from Settings."""

    def __init__(
        self, settings: Settings, *, store: Store | None = None, start_workers: bool = True
    ) -> None:
        self.settings = settings
        self.mappings = load_mappings(settings.mappings_dir)
        self.screener = Screener(self.mappings)
        self.client = (
            FhirClient(
                settings.fhir_base_url,
                auth_from_env(settings.extra.get("env") or _environ()),
                verify=settings.tls_ca_bundle or settings.tls_verify,
                pool_size=settings.http_pool_size,
            )
            if settings.fhir_base_url
            else None
        )
        self.source = PatientSourceAdapter(settings, self.mappings, self.client)
        self.writer = (
            ResultWriter(
                self.client, self.mappings.parameters, write_ineligible=settings.write_ineligible
            )
            if self.client
            else None
        )
        self.store = store or create_store(settings.database_url, pool_size=settings.db_pool_size)
        self.store.migrate()
        self._patients = ThreadPoolExecutor(settings.run_concurrency, thread_name_prefix="screen")
        self._runs = ThreadPoolExecutor(2, thread_name_prefix="run")
        self._stop = threading.Event()
        self._outbox_thread: threading.Thread | None = None
        if start_workers:
            self.start_workers()

    # -- lifecycle --------------------------------------------------------------------------

    def start_workers(self) -> None:
        for run in self.store.interrupted_runs():
            log.info("resuming run %s", run.id)
            self._runs.submit(self._execute_run, run.id)
        if self.writer is not None and self._outbox_thread is None:
            self._outbox_thread = threading.Thread(
                target=self._outbox_loop, name="outbox", daemon=True
            )
            self._outbox_thread.start()

    def close(self) -> None:
        self._stop.set()
        self._runs.shutdown(wait=True, cancel_futures=True)
        self._patients.shutdown(wait=True, cancel_futures=True)
        if self._outbox_thread is not None:
            self._outbox_thread.join(timeout=10)
        if self.client is not None:
            self.client.close()
        self.store.close()

    def ready(self) -> dict[str, bool]:
        checks = {"database": self.store.ping()}
        if self.client is not None:
            try:
                self.client.capabilities(refresh=True)
                checks["fhir_server"] = True
            except FhirError:
                checks["fhir_server"] = False
        return checks

    # -- one patient now ---------------------------------------------------------------------

    def screen_patient(self, patient_id: str, as_of: date, write_back: bool) -> ScreenOutcome:
        if write_back and self.writer is None:
            raise SourceUnavailable("write-back needs a FHIR server (MEDCARE_FHIR_BASE_URL)")
        result = self.screener.screen(self.source.record(patient_id), as_of)
        # the outbox entry is queued in the same transaction, so a write that fails now is kept
        recorded = self.store.record_patient_result(
            None, result.patient, result.to_dict(), fingerprint(result), write_back=write_back
        )
        outcome = None
        if write_back:
            outcome = self._write_now(result)
        return ScreenOutcome(result.to_dict(), recorded.changed, outcome)

    def _write_now(self, result: ScreenResult) -> str:
        """Try the write at once; on failure the queued outbox entry will retry it."""
        assert self.writer is not None
        try:
            written: WriteOutcome = self.writer.write(result)
        except FhirError as exc:
            log.warning(
                "write-back for %s deferred to the outbox (%s)", result.patient, type(exc).__name__
            )
            return "queued"
        self._settle_outbox(result.patient)
        return written.outcome

    def _settle_outbox(self, patient: str) -> None:
        for entry in self.store.due_writebacks(limit=50):
            if entry.patient_id == patient:
                self.store.mark_writeback_done(entry.id)

    # -- runs --------------------------------------------------------------------------------

    def start_run(self, kind: str, spec: Any, as_of: date, write_back: bool) -> RunInfo:
        if write_back and self.writer is None:
            raise SourceUnavailable("write-back needs a FHIR server (MEDCARE_FHIR_BASE_URL)")
        if kind in ("search", "group") and not self.source.is_server:
            list(self.source.patient_ids(kind, spec))  # raises for what local files cannot do
        # the store keys patients by reference ("Patient/123"), as results name them
        ids = [_ref(i) for i in dict.fromkeys(spec)] if kind == "ids" else []
        run = self.store.create_run(kind, spec, as_of, write_back=write_back, patient_ids=ids)
        self._runs.submit(self._execute_run, run.id)
        return run

    def cancel_run(self, run_id: str) -> bool:
        return self.store.cancel_run(run_id)

    def _execute_run(self, run_id: str) -> None:
        try:
            self._run(run_id)
        except Exception as exc:  # the run fails with its reason; the service goes on
            log.error("run %s failed (%s)", run_id, type(exc).__name__)
            self.store.set_run_status(run_id, "failed", error=_safe_error(exc))

    def _run(self, run_id: str) -> None:
        run = self.store.get_run(run_id)
        if run is None or run.status in ("done", "failed", "cancelled"):
            return
        self.store.set_run_status(run_id, "running")
        if run.kind in ("search", "group") and self.store.run_progress(run_id)["total"] == 0:
            self.store.add_run_patients(
                run_id, (_ref(i) for i in self.source.patient_ids(run.kind, run.spec))
            )
        while not self._stop.is_set():
            current = self.store.get_run(run_id)
            if current is None or current.status != "running":
                return  # cancelled
            batch = self.store.claim_pending(run_id, CLAIM_BATCH)
            if not batch:
                self.store.complete_run(run_id)
                return
            list(self._patients.map(lambda pid: self._screen_in_run(run, pid), batch))

    def _screen_in_run(self, run: RunInfo, reference: str) -> None:
        try:
            result = self.screener.screen(self.source.record(_id(reference)), run.as_of)
        except (NotFound, SourceUnavailable) as exc:
            self.store.record_patient_failure(run.id, reference, _safe_error(exc))
            return
        except Exception as exc:  # a bug for one patient must not stop the run
            log.error("%s failed in run %s (%s)", reference, run.id, type(exc).__name__)
            self.store.record_patient_failure(
                run.id, reference, f"internal error ({type(exc).__name__})"
            )
            return
        self.store.record_patient_result(
            run.id, result.patient, result.to_dict(), fingerprint(result)
        )

    # -- outbox ------------------------------------------------------------------------------

    def _outbox_loop(self) -> None:
        while not self._stop.wait(OUTBOX_INTERVAL_S):
            try:
                self.drain_outbox()
            except Exception as exc:  # keep the worker alive; the entries stay queued
                log.error("outbox pass failed (%s)", type(exc).__name__)

    def drain_outbox(self, now: datetime | None = None) -> int:
        """Write every due entry once; returns how many were written or settled."""
        assert self.writer is not None
        settled = 0
        for entry in self.store.due_writebacks(now or datetime.now(UTC), limit=50):
            try:
                self.writer.write(ScreenResult.from_dict(entry.result))
            except FhirError as exc:
                delay = min(OUTBOX_MAX_BACKOFF_S, 5.0 * 2 ** min(entry.attempts, 8))
                permanent = (
                    not isinstance(exc, FhirNetworkError)
                    and exc.status is not None
                    and exc.status < 500
                )
                retry_at = (
                    None
                    if permanent and entry.attempts >= 5
                    else datetime.now(UTC) + timedelta(seconds=delay)
                )
                self.store.mark_writeback_failed(entry.id, _safe_error(exc), retry_at)
                continue
            self.store.mark_writeback_done(entry.id)
            settled += 1
        return settled


def _safe_error(exc: BaseException) -> str:
    """An error text for the store and API: our exceptions carry ids and server words only."""
    text = (
        str(exc) if isinstance(exc, FhirError | NotFound | SourceUnavailable | SourceError) else ""
    )
    return (text or type(exc).__name__)[:500]


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)


def _ref(patient_id: str) -> str:
    return patient_id if patient_id.startswith("Patient/") else f"Patient/{patient_id}"


def _id(reference: str) -> str:
    return reference.removeprefix("Patient/")
