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
from datetime import date, datetime
from typing import Any

from service.clock import Clock
from service.compose import compose, make_store
from service.config import Settings
from service.errors import (
    WRITE_BACK_NEEDS_SERVER,
    DatabaseUnavailable,
    NotFound,
    SourceUnavailable,
    Stopping,
)
from service.fhir.errors import FhirError
from service.fhir.record import PatientRecord
from service.fhir.source import NeedsServer, PatientSource, SourceError
from service.store import RunInfo, Store
from service.work.outbox import Outbox
from service.work.rescreen import InFlight, RescreenWorker
from service.work.runs import RunExecutor
from service.work.scheduler import scheduler_of
from service.writeback.fingerprint import fingerprint

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
    """The configured source (service/compose.py) as runs and the API use it: a patient the
    source does not have is NotFound, a server that failed is SourceUnavailable, and a run's
    population is its kind ("ids", "search", "group") and spec."""

    def __init__(self, source: PatientSource, label: str | None = None) -> None:
        self.source = source
        # where the data comes from, as the changes feed names it (`source_label`)
        self.label = label

    @property
    def is_server(self) -> bool:
        return self.source.is_server

    def record(self, patient_id: str) -> PatientRecord:
        try:
            return self.source.record(patient_id)
        except SourceError as exc:
            raise NotFound(f"Patient/{patient_id} is not in the source") from exc
        except FhirError as exc:
            if exc.status in (404, 410):
                raise NotFound(f"Patient/{patient_id} is not known to the FHIR server") from exc
            raise SourceUnavailable(str(exc)) from exc

    def patient_ids(self, kind: str, spec: Any) -> Iterator[str]:
        if kind == "ids":
            yield from spec
            return
        try:
            yield from self.source.patient_ids(
                search=spec if kind == "search" else None, group=spec if kind == "group" else None
            )
        except NeedsServer as exc:
            raise SourceUnavailable(str(exc)) from exc


def source_label(settings: Settings) -> str:
    """The source a result's data came from, as the changes feed says it: the FHIR server's
    base URL, else 'files:<MEDCARE_SOURCE_PATH>' (switching between them is a visible event)."""
    return settings.fhir.base_url or f"files:{settings.screening.source_path}"


class Runtime:
    """Everything the API needs, built once from Settings."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        start_workers: bool = True,
        clock: Clock | None = None,
    ) -> None:
        self.settings = settings
        parts = compose(settings)
        self.clock = clock or parts.clock
        self.mappings = parts.mappings
        self.screener = parts.screener
        self.client = parts.client
        self.source = PatientSourceAdapter(parts.source, label=source_label(settings))
        self.writer = parts.writer
        self.store = store or make_store(settings, migrate=False)
        self.store.migrate()
        self._stop = threading.Event()
        self.runs = RunExecutor(
            self.store,
            self.source,
            self.screener,
            concurrency=settings.run_concurrency,
            stop=self._stop,
            source_label=self.source.label,
        )
        self.outbox = (
            Outbox(self.store, self.writer, self.clock, self._stop) if self.writer else None
        )
        self.interactive = InFlight()  # screens asked for now: re-screens wait for them
        self.rescreens = RescreenWorker(
            self.store, self.source, self.screener, stop=self._stop,
            concurrency=settings.rescreen_concurrency, interactive=self.interactive,
            write_back=settings.write_back and self.outbox is not None,
        )  # fmt: skip
        self.scheduler = scheduler_of(self, self._stop)  # sweeps and cohort re-screens
        if start_workers:
            self.start_workers()

    # -- lifecycle --------------------------------------------------------------------------

    def start_workers(self) -> None:
        """Resume the runs a restart interrupted, and start the outbox worker (when there is a
        FHIR server to write to)."""
        self.runs.resume_interrupted()
        if self.outbox is not None:
            self.outbox.start()
        if self.settings.embedded_worker:
            self.rescreens.start()
            self.scheduler.start()

    def close(self) -> None:
        self._stop.set()
        self.runs.close()
        self.rescreens.close()
        self.scheduler.close()
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

    def screen_patient(
        self, patient_id: str, as_of: date, write_back: bool, *, trigger: str = "request"
    ) -> ScreenOutcome:
        """Screen now and store the result. As of today it is the current result (and written
        back when asked); as of an earlier day it is a look back: returned and stored, but
        never current and never written back (`write_back` "skip-look-back"). After today:
        InvalidAsOf. `trigger` is why (the changes feed says it): "request" for POST
        /v1/screen; a re-screen passes "subscription", "sweep" or "schedule"."""
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
            trigger=trigger,
            source=self.source.label,
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
