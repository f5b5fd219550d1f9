"""Run execution: a run's patients claimed in small batches, screened, recorded, to the end.

Why a room of its own: this is the service's long work, and the part that must survive
everything a service of months meets. A run's patient list is kept in the store; patients are
claimed in small batches and screened on a bounded thread pool sharing one HTTP connection
pool; a patient that fails is recorded with its reason and the run goes on; a run interrupted
by a restart is resumed from the store at start-up. Claims are this process's (the store's
owner id) and leased: a heartbeat thread renews them, so several processes on one database
(gunicorn workers, replicas, a rolling restart) share a run and each patient is screened once;
the claims of a process that stopped beating (or is known dead) go to the others. Database
outages are ridden out by service.work.outage.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import date
from typing import Any, Protocol

from service.errors import (
    WRITE_BACK_NEEDS_SERVER,
    DatabaseUnavailable,
    NotFound,
    SourceUnavailable,
    Stopping,
    safe_error,
)
from service.fhir.errors import FhirNetworkError
from service.fhir.record import PatientRecord
from service.screening.engine import Screener
from service.store import ClaimLost, InvalidAsOf, RunInfo, Store
from service.store.leases import owner_is_dead
from service.work.outage import DATABASE_DOWN, give_back, run_through_outages
from service.writeback.fingerprint import fingerprint

log = logging.getLogger("medcare_screen.runtime.runs")

CLAIM_BATCH = 8
# A patient whose FHIR server is temporarily unavailable (connection refused, timeouts, 503
# after the client's own retries) is tried again after each of these pauses before the run
# records it as failed: a run rides out an outage of a few minutes instead of failing everyone.
RUN_RETRY_DELAYS_S: tuple[float, ...] = (5.0, 15.0, 45.0)
# How often the heartbeat renews this process's claims, as a share of the lease
# (Settings.claim_lease_s): two beats may be missed before another process takes them over.
HEARTBEAT_SHARE = 1 / 3
CLAIM_POLL_S = 5.0
RUN_THREADS = 2  # runs executed at once by one process (their patients share the screen pool)


class RunSource(Protocol):
    """What a run needs from the patient source: records by id (NotFound / SourceUnavailable
    when they cannot be had) and the ids a search or a Group stands for."""

    @property
    def is_server(self) -> bool: ...

    def record(self, patient_id: str) -> PatientRecord: ...

    def patient_ids(self, kind: str, spec: Any) -> Iterator[str]: ...


class RunExecutor:
    """Starts, resumes and executes runs for one process; `close` stops it and gives back its
    claims. The heartbeat thread starts with it; `stop` is shared with the rest of the service."""

    def __init__(
        self,
        store: Store,
        source: RunSource,
        screener: Screener,
        *,
        concurrency: int,
        stop: threading.Event,
        source_label: str | None = None,
    ) -> None:
        self.store = store
        self.source = source
        self.source_label = source_label  # the changes feed's `source` of the run's results
        self.screener = screener
        self._stop = stop
        self._patients = ThreadPoolExecutor(concurrency, thread_name_prefix="screen")
        self._runs = ThreadPoolExecutor(RUN_THREADS, thread_name_prefix="run")
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="heartbeat", daemon=True
        )
        self._heartbeat.start()

    # -- lifecycle --------------------------------------------------------------------------

    def resume_interrupted(self) -> None:
        """Take up the runs a restart interrupted. Under gunicorn every worker process starts
        here, and so does every replica. Claims whose owner is gone (lease over, or a dead
        process of this host) are taken back; live ones, whoever started first, are left to
        their owner, which records them."""
        for run in self.store.interrupted_runs(dead_owners=self._dead_owners()):
            log.info("resuming run %s", run.id)
            self.submit(run.id)

    def submit(self, run_id: str) -> None:
        """Execute the run (from the store) on a run thread."""
        self._runs.submit(self._execute, run_id)

    def close(self) -> None:
        """Stop (`stop` must be set): wait for the threads, then give back this process's
        claims, so that the other processes take its patients at once."""
        self._runs.shutdown(wait=True, cancel_futures=True)
        self._patients.shutdown(wait=True, cancel_futures=True)
        self._heartbeat.join(timeout=10)
        give_back(self.store.release_own_claims, "claimed patients", log)

    # -- starting a run ----------------------------------------------------------------------

    def start(
        self, kind: str, spec: Any, as_of: date, write_back: bool, *, can_write_back: bool
    ) -> RunInfo:
        """A run as of today (current results) or of an earlier day (a look back, whose
        results stay with the run). InvalidAsOf for a day after today, and for a look back
        with `write_back`: a run would otherwise write nothing for every patient, silently."""
        if self.store.check_as_of(as_of) and write_back:
            raise InvalidAsOf(
                f"as_of {as_of.isoformat()} is before today ({self.store.today().isoformat()}): "
                "a look back is never written back; drop write_back or screen as of today"
            )
        if write_back and not can_write_back:
            raise SourceUnavailable(WRITE_BACK_NEEDS_SERVER)
        if kind in ("search", "group") and not self.source.is_server:
            list(self.source.patient_ids(kind, spec))  # raises for what local files cannot do
        # the store keys patients by reference ("Patient/123"), as results name them
        ids = [_ref(i) for i in dict.fromkeys(spec)] if kind == "ids" else []
        run = self.store.create_run(kind, spec, as_of, write_back=write_back, patient_ids=ids)
        self.submit(run.id)
        return run

    # -- claims ------------------------------------------------------------------------------

    def _heartbeat_loop(self) -> None:
        """Renew this process's claims while it lives (a process that stops beating, killed
        or hung, loses them to the others when the lease ends)."""
        interval = self.store.claim_lease.total_seconds() * HEARTBEAT_SHARE
        while not self._stop.wait(interval):
            try:
                self.store.renew_claims()
            except Exception as exc:  # the database may be away; the next beat tries again
                log.warning("claim heartbeat failed (%s)", type(exc).__name__)

    def _dead_owners(self, run_id: str | None = None) -> list[str]:
        """Owners of live claims that are processes of this host that no longer exist."""
        return [owner for owner in self.store.claim_owners(run_id) if owner_is_dead(owner)]

    # -- executing a run ---------------------------------------------------------------------

    def _execute(self, run_id: str) -> None:
        run_through_outages(self.store, self._stop, run_id, lambda: self._run(run_id))

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
                if self.store.complete_run(run_id):
                    return
                # patients still claimed: by another process of the service (it will finish
                # them), or by one that died: its claims come back when its lease is over
                self.store.requeue_expired_claims(run_id, dead_owners=self._dead_owners(run_id))
                if self._stop.wait(CLAIM_POLL_S):
                    return
                continue
            recorded = list(self._patients.map(lambda pid: self._screen_in_run(run, pid), batch))
            lost = [pid for pid, ok in zip(batch, recorded, strict=True) if not ok]
            if lost:
                raise DatabaseUnavailable(lost)

    def _record_for_run(self, reference: str) -> PatientRecord:
        """The patient's record; a temporary server failure is tried again after each pause of
        RUN_RETRY_DELAYS_S (the claim is held meanwhile) before it is given up."""
        for delay in (*RUN_RETRY_DELAYS_S, None):
            try:
                return self.source.record(_id(reference))
            except SourceUnavailable as exc:
                cause = exc.__cause__
                temporary = isinstance(cause, FhirNetworkError) and cause.temporary
                if delay is None or not temporary:
                    raise
                log.warning("%s: FHIR server unavailable; trying again in %.0f s", reference, delay)
                if self._stop.wait(delay):
                    raise Stopping from exc  # keep the claim: the next start resumes it
        raise AssertionError("unreachable")  # pragma: no cover

    def _screen_in_run(self, run: RunInfo, reference: str) -> bool:
        """Screen one claimed patient and record the outcome; False when the database could not
        take it (the patient stays claimed and is given back once the database is there)."""
        try:
            try:
                result = self.screener.screen(self._record_for_run(reference), run.as_of)
            except Stopping:
                return True  # left claimed on purpose: the next start resumes it
            except (NotFound, SourceUnavailable) as exc:
                self.store.record_patient_failure(run.id, reference, safe_error(exc))
                return True
            except Exception as exc:  # a bug for one patient must not stop the run
                log.error("%s failed in run %s (%s)", reference, run.id, type(exc).__name__)
                self.store.record_patient_failure(
                    run.id, reference, f"internal error ({type(exc).__name__})"
                )
                return True
            self.store.record_patient_result(
                run.id,
                result.patient,
                result.to_dict(),
                fingerprint(result),
                trigger="run",
                source=self.source_label,
            )
            return True
        except ClaimLost:
            # this process lost the lease (it hung longer than the lease); the process that
            # took the patient over records it: nothing recorded twice
            log.warning(
                "%s: claim lost in run %s; left to the process holding it", reference, run.id
            )
            return True
        except DATABASE_DOWN as exc:
            log.warning(
                "%s: not recorded, database unavailable (%s)", reference, type(exc).__name__
            )
            return False


def _ref(patient_id: str) -> str:
    return patient_id if patient_id.startswith("Patient/") else f"Patient/{patient_id}"


def _id(reference: str) -> str:
    return reference.removeprefix("Patient/")
