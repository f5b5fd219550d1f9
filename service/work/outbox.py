"""The write-back outbox: results queued for the FHIR server, written now or later, once.

Why a room of its own: a result to write is queued in the same transaction that stores it
(service.store), so a write the server refuses for now is never lost; this module decides when
each queued entry is written and how long to wait after a failure. A screen that asks for a
write-back tries it at once (`write_now`); a worker thread writes whatever is still due
(`drain`), backing off while the server is down and giving up on a write the server keeps
refusing as wrong (a 4xx, five times). Every time comes from the injected clock.
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

from service.clock import Clock
from service.errors import safe_error
from service.fhir.errors import FhirError, FhirNetworkError
from service.screening.result import ScreenResult
from service.store import OutboxEntry, Store
from service.store.models import ReviewKind
from service.writeback.fingerprint import fingerprint
from service.writeback.subject import people_statuses
from service.writeback.writer import ResultWriter, WriteOutcome

log = logging.getLogger("medcare_screen.runtime.outbox")

OUTBOX_INTERVAL_S = 2.0  # how often the worker looks for due entries
OUTBOX_BATCH = 50  # entries taken per pass
OUTBOX_MAX_BACKOFF_S = 600.0
PERMANENT_ATTEMPTS = 5  # a write refused as wrong (4xx) this often is given up


def retry_delay(attempts: int) -> timedelta:
    """Exponential backoff after `attempts` failed writes: 5 s, 10 s, ... at most 10 minutes."""
    return timedelta(seconds=min(OUTBOX_MAX_BACKOFF_S, 5.0 * 2 ** min(attempts, 8)))


def is_permanent(exc: FhirError) -> bool:
    """The server answered that the write is wrong (4xx): trying again will not help for long."""
    return not isinstance(exc, FhirNetworkError) and exc.status is not None and exc.status < 500


class Outbox:
    """Writes the store's queued write-backs with one writer; `start` runs the worker thread,
    which ends when `stop` is set."""

    def __init__(
        self, store: Store, writer: ResultWriter, clock: Clock, stop: threading.Event
    ) -> None:
        self.store = store
        self.writer = writer
        self.clock = clock
        self._stop = stop
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="outbox", daemon=True)
            self._thread.start()

    def join(self, timeout: float = 10) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _loop(self) -> None:
        while not self._stop.wait(OUTBOX_INTERVAL_S):
            try:
                self.drain()
            except Exception as exc:  # keep the worker alive; the entries stay queued
                log.error("outbox pass failed (%s)", type(exc).__name__)

    def drain(self, now: datetime | None = None) -> int:
        """Write every entry due at `now` (default: the clock's) once; returns how many were
        written or settled."""
        settled = 0
        for entry in self.store.due_writebacks(now or self.clock.now(), limit=OUTBOX_BATCH):
            try:
                self._write(ScreenResult.from_dict(entry.result), entry.patient_id, entry.study)
            except FhirError as exc:
                self._failed(entry, exc)
                continue
            self.store.mark_writeback_done(entry.id)
            settled += 1
        return settled

    def _people(self, patient: str, study: str) -> tuple[str | None, frozenset[str]]:
        """The coordinators' current disposition of the patient (None: never recorded) and the
        statuses every disposition recorded for them maps to, read at the time of the write,
        so the write carries what people decided last (service.dispositions)."""
        entries = self.store.review_entries(patient, study)
        codes = [e.code for e in entries if e.kind == ReviewKind.DISPOSITION]
        return (codes[0] if codes else None), people_statuses(codes)

    def _write(self, result: ScreenResult, patient: str, study: str) -> WriteOutcome:
        disposition, set_by_people = self._people(patient, study)
        return self.writer.write(result, disposition, set_by_people)

    def _failed(self, entry: OutboxEntry, exc: FhirError) -> None:
        give_up = is_permanent(exc) and entry.attempts >= PERMANENT_ATTEMPTS
        retry_at = None if give_up else self.clock.now() + retry_delay(entry.attempts)
        self.store.mark_writeback_failed(entry.id, safe_error(exc), retry_at)

    def write_now(self, result: ScreenResult) -> str:
        """Try the write at once; on failure the queued outbox entry will retry it.

        This patient's queued entry is taken first (and only it: other patients' entries stay
        due for the outbox worker), so the worker does not write the same patient meanwhile.
        """
        taken = self.store.due_writebacks(limit=1, patient_id=result.patient)
        disposition, _ = self._people(result.patient, result.study)
        # an entry queued by the screen carries the decision's fingerprint, one queued by a
        # disposition the written one (service.dispositions): either is this write
        current = {fingerprint(result), fingerprint(result, disposition)}
        try:
            written: WriteOutcome = self._write(result, result.patient, result.study)
        except FhirError as exc:
            log.warning(
                "write-back for %s deferred to the outbox (%s)", result.patient, type(exc).__name__
            )
            retry_at = self.clock.now() + timedelta(seconds=OUTBOX_INTERVAL_S)
            for entry in taken:
                self.store.mark_writeback_failed(entry.id, safe_error(exc), retry_at)
            return "queued"
        for entry in taken:
            if entry.fingerprint in current:
                self.store.mark_writeback_done(entry.id)
            else:  # a newer result was queued meanwhile: the outbox writes that one
                self.store.mark_writeback_failed(entry.id, "not written yet", self.clock.now())
        return written.outcome
