"""The running service: settings turned into a source, an engine, a store and background work.

The HTTP layer calls this module and nothing deeper; the CLI's `serve` builds it once. `Runtime`
is a facade: it screens one patient now itself, and hands the background work to the rooms of
service.work: run execution (`RunExecutor`: claims, heartbeat, resume after a restart), the
write-back outbox (`Outbox`) and riding out database outages (`outage`). The domain errors live
in service.errors and are re-exported here for the callers that import them from this module.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from service.clock import SYSTEM_CLOCK, Clock
from service.config import Settings
from service.errors import (
    WRITE_BACK_NEEDS_SERVER,
    DatabaseUnavailable,
    NotFound,
    SourceUnavailable,
    Stopping,
)
from service.fhir.auth import auth_from_env
from service.fhir.client import FhirClient
from service.fhir.errors import FhirError
from service.fhir.local_source import LocalSource, SourceError
from service.fhir.record import PatientRecord
from service.fhir.server_source import ServerSource
from service.mapping import Mappings, load_mappings
from service.screening.engine import Screener
from service.store import RunInfo, Store, create_store
from service.work.outbox import Outbox
from service.work.runs import RunExecutor
from service.writeback.fingerprint import fingerprint
from service.writeback.writer import ResultWriter

__all__ = [
    "DatabaseUnavailable",
    "NotFound",
    "PatientSourceAdapter",
    "Runtime",
    "ScreenOutcome",
    "SourceUnavailable",
    "Stopping",
]

log = logging.getLogger("medcare_screen.runtime")


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
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        start_workers: bool = True,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.mappings = load_mappings(settings.mappings_dir)
        self.screener = Screener(self.mappings)
        self.client = (
            FhirClient(
                settings.fhir_base_url,
                auth_from_env(settings.extra.get("env") or _environ()),
                verify=settings.tls_ca_bundle or settings.tls_verify,
                pool_size=settings.http_pool_size,
                batch=settings.fhir_batch,
                max_answer_bytes=settings.fhir_max_answer_bytes,
                deadline_s=settings.fhir_deadline_s,
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
        self.store = store or create_store(
            settings.database_url,
            pool_size=settings.db_pool_size,
            today=settings.today,
            claim_lease=timedelta(seconds=settings.claim_lease_s),
        )
        self.store.migrate()
        self._stop = threading.Event()
        self.runs = RunExecutor(
            self.store,
            self.source,
            self.screener,
            concurrency=settings.run_concurrency,
            stop=self._stop,
        )
        self.outbox = (
            Outbox(self.store, self.writer, self.clock, self._stop) if self.writer else None
        )
        if start_workers:
            self.start_workers()

    # -- lifecycle --------------------------------------------------------------------------

    def start_workers(self) -> None:
        """Resume the runs a restart interrupted, and start the outbox worker (when there is a
        FHIR server to write to)."""
        self.runs.resume_interrupted()
        if self.outbox is not None:
            self.outbox.start()

    def close(self) -> None:
        self._stop.set()
        self.runs.close()
        if self.outbox is not None:
            self.outbox.join()
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

    def today(self) -> date:
        """The service's date (the store's: its clock, or MEDCARE_TODAY)."""
        return self.store.today()

    def screen_patient(self, patient_id: str, as_of: date, write_back: bool) -> ScreenOutcome:
        """Screen now and store the result. As of today it is the current result (and written
        back when asked); as of an earlier day it is a look back: returned and stored, but
        never current and never written back (`write_back` "skip-look-back"). After today:
        InvalidAsOf."""
        look_back = self.store.check_as_of(as_of)
        if write_back and self.outbox is None:
            raise SourceUnavailable(WRITE_BACK_NEEDS_SERVER)
        result = self.screener.screen(self.source.record(patient_id), as_of)
        # the outbox entry is queued in the same transaction, so a write that fails now is kept
        recorded = self.store.record_patient_result(
            None,
            result.patient,
            result.to_dict(),
            fingerprint(result),
            write_back=write_back and not look_back,
        )
        outcome = None
        if write_back:
            assert self.outbox is not None
            outcome = self.outbox.write_now(result) if recorded.current else "skip-look-back"
        return ScreenOutcome(result.to_dict(), recorded.changed, outcome)

    # -- runs and the outbox -----------------------------------------------------------------

    def start_run(self, kind: str, spec: Any, as_of: date, write_back: bool) -> RunInfo:
        """A run as of today or of an earlier day (a look back); see RunExecutor.start."""
        return self.runs.start(
            kind, spec, as_of, write_back, can_write_back=self.outbox is not None
        )

    def cancel_run(self, run_id: str) -> bool:
        return self.store.cancel_run(run_id)

    def drain_outbox(self, now: datetime | None = None) -> int:
        """Write every due entry once; returns how many were written or settled."""
        assert self.outbox is not None
        return self.outbox.drain(now)


def _environ() -> dict[str, str]:
    import os

    return dict(os.environ)
