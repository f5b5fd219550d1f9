"""Re-screens: the worker that takes due patients from the re-screen queue and screens them.

Why a room of its own: the queue (service.store.rescreen) is filled by whatever notices a
change (a subscription, a sweep, a schedule); this worker empties it, in `serve`'s processes
(the embedded default) or in `medcare-screen worker` processes apart from HTTP, any number of
them on one database. A patient is screened exactly as a request screens it (the same source,
engine and recording call), as of the service's date: the result becomes the current one, and
its write-back is queued when the service writes back.

Interactive requests come first. `POST /v1/screen` and CDS Hooks run on the request threads;
the worker has its own small pool (`concurrency`, MEDCARE_RESCREEN_CONCURRENCY) and takes no
new patient while this process screens one interactively (`InFlight`, which the runtime holds
around each interactive screen): what the worker holds it finishes, what it has not taken
waits in the queue, where another process may take it. So a burst of re-screens delays a
request by at most the screens already under way, never by the queue's length.

Leases as for runs: a heartbeat renews this process's claims, the claims of a process that
stopped come back when their lease ends, and a graceful stop gives them back at once.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Protocol

from service.errors import NotFound, safe_error
from service.fhir.record import PatientRecord
from service.screening.engine import Screener
from service.store import Store
from service.store.rescreen import RescreenTask
from service.work.outage import DATABASE_DOWN, give_back
from service.writeback.fingerprint import fingerprint

log = logging.getLogger("medcare_screen.runtime.rescreen")

# How often an idle worker looks for due patients (a read; it writes only to take).
POLL_S = 0.5
# A screen that failed (the FHIR server away, an error) is tried again after each of these
# pauses; after the last, the patient leaves the queue until the next change, sweep or
# scheduled re-screen brings it back.
RETRY_DELAYS = (timedelta(seconds=10), timedelta(seconds=60), timedelta(minutes=5))
# The heartbeat renews claims, and takes back those of stopped processes, this often as a
# share of the lease.
HEARTBEAT_SHARE = 1 / 3


class RecordSource(Protocol):
    """The patient's record by id (NotFound when the source has no such patient), and where
    the data comes from as the changes feed names it (service.runtime.source_label)."""

    label: str | None

    def record(self, patient_id: str) -> PatientRecord: ...


class InFlight:
    """How many interactive screens this process runs now; the worker takes nothing new while
    any does. Used as a context manager around each interactive screen."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count = 0

    def __enter__(self) -> InFlight:
        with self._lock:
            self._count += 1
        return self

    def __exit__(self, *_exc: object) -> None:
        with self._lock:
            self._count -= 1

    @property
    def busy(self) -> bool:
        return self._count > 0


class RescreenWorker:
    """Takes due patients and screens them on a pool of its own; `start` runs it on a thread
    (with the heartbeat), `run_once` takes and screens one batch in the caller's thread."""

    def __init__(
        self,
        store: Store,
        source: RecordSource,
        screener: Screener,
        *,
        stop: threading.Event,
        concurrency: int = 2,
        write_back: bool = False,
        interactive: InFlight | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.screener = screener
        self.write_back = write_back
        self.interactive = interactive or InFlight()
        self._stop = stop
        self._concurrency = concurrency
        self._free = threading.Semaphore(concurrency)
        self._wake = threading.Event()  # a thread came free: take again without waiting
        self._pool = ThreadPoolExecutor(concurrency, thread_name_prefix="rescreen")
        self._thread: threading.Thread | None = None
        self.taken = 0  # patients this worker took (bench and tests read it)

    # -- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        """Run the worker on a thread of its own until `stop` is set."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="rescreen", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Stop (`stop` must be set): finish the screens under way, give back what is left."""
        if self._thread is not None:
            self._thread.join(timeout=30)
        self._pool.shutdown(wait=True, cancel_futures=True)
        if not self.taken:
            return
        give_back(self.store.release_own_rescreens, "queued patients", log)

    # -- the loop ----------------------------------------------------------------------------

    def _loop(self) -> None:
        beat_every = self.store.claim_lease.total_seconds() * HEARTBEAT_SHARE
        next_beat = 0.0
        while not self._stop.is_set():
            try:
                if time.monotonic() >= next_beat:
                    self._heartbeat()
                    next_beat = time.monotonic() + beat_every
                if not self._take_and_submit():
                    self._wake.wait(POLL_S)
                    self._wake.clear()
            except DATABASE_DOWN as exc:
                log.warning("re-screen queue unavailable (%s)", type(exc).__name__)
                self._stop.wait(POLL_S * 10)
            except Exception as exc:  # the worker must outlive one bad turn
                log.error("re-screen loop error (%s)", type(exc).__name__)
                self._stop.wait(POLL_S * 10)

    def _heartbeat(self) -> None:
        self.store.renew_rescreens()
        requeued = self.store.requeue_expired_rescreens()
        if requeued:
            log.info("took back %d re-screens of stopped processes", requeued)

    def _take_and_submit(self) -> int:
        """Take as many due patients as there are free threads (none while an interactive
        screen runs) and screen them in the background. Returns how many were taken."""
        if self.interactive.busy:
            return 0
        free = 0
        while free < self._concurrency and self._free.acquire(blocking=False):
            free += 1
        tasks = self.store.take_rescreens(free) if free and self.store.any_due() else []
        for _ in range(free - len(tasks)):
            self._free.release()
        self.taken += len(tasks)
        for task in tasks:
            self._pool.submit(self._screen_and_free, task)
        return len(tasks)

    def _screen_and_free(self, task: RescreenTask) -> None:
        try:
            self.screen(task)
        finally:
            self._free.release()
            self._wake.set()

    def run_once(self, limit: int | None = None) -> int:
        """Take up to `limit` (default: the pool's size) due patients and screen them, in the
        caller's thread, one after the other. Returns how many were taken."""
        tasks = self.store.take_rescreens(limit or self._concurrency)
        self.taken += len(tasks)
        for task in tasks:
            self.screen(task)
        return len(tasks)

    # -- one patient -------------------------------------------------------------------------

    def screen(self, task: RescreenTask) -> None:
        """Screen a taken patient as of the service's date, record the result as a request
        would, and settle the queue row; a failure is retried later or given up (logged with
        the patient's id and the cause's type only)."""
        reference = task.patient_id
        try:
            try:
                result = self.screener.screen(
                    self.source.record(reference.removeprefix("Patient/")), self.store.today()
                )
                self.store.record_patient_result(
                    None,
                    result.patient,
                    result.to_dict(),
                    fingerprint(result),
                    write_back=self.write_back,
                    trigger=task.trigger,
                    source=self.source.label,
                )
            except DATABASE_DOWN:
                raise
            except NotFound as exc:
                log.info("%s: not screened again (%s)", reference, safe_error(exc))
                self.store.fail_rescreen(reference, safe_error(exc), None)
                return
            except Exception as exc:
                retry = _retry_after(task.attempts)
                log.warning(
                    "%s: re-screen failed (%s); %s", reference, type(exc).__name__,
                    f"again in {retry.total_seconds():.0f} s" if retry else "given up",
                )  # fmt: skip
                self.store.fail_rescreen(reference, safe_error(exc), retry)
                return
            self.store.finish_rescreen(reference)
        except DATABASE_DOWN as exc:
            # not settled: the row stays claimed and comes back when its lease ends
            log.warning("%s: re-screen not settled (%s)", reference, type(exc).__name__)


def _retry_after(attempts: int) -> timedelta | None:
    """The pause before the next try after `attempts` failed ones; None: give up."""
    return RETRY_DELAYS[attempts - 1] if attempts <= len(RETRY_DELAYS) else None
