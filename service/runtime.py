"""The running service: settings turned into a source, an engine, a store and background workers.

The HTTP layer calls this module and nothing deeper; the CLI's `serve` builds it once. It owns
the two kinds of background work:

- run execution: a run's patient list is kept in the store, patients are claimed in small
  batches and screened on a bounded thread pool sharing one HTTP connection pool; a patient
  that fails is recorded with its reason and the run goes on; a run interrupted by a restart
  is resumed from the store at start-up. Claims are this process's (the store's owner id)
  and leased: a heartbeat thread renews them, so several processes on one database (gunicorn
  workers, replicas, a rolling restart) share a run and each patient is screened once; the
  claims of a process that stopped beating (or is known dead) go to the others;
- the write-back outbox: results to write are queued in the same transaction that stores them,
  and a worker writes them to the FHIR server, retrying with backoff while it is down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

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
from service.store import ClaimLost, InvalidAsOf, RunInfo, Store, create_store
from service.store.leases import owner_is_dead
from service.writeback.fingerprint import fingerprint
from service.writeback.writer import ResultWriter, WriteOutcome

log = logging.getLogger("medcare_screen.runtime")

CLAIM_BATCH = 8
# A patient whose FHIR server is temporarily unavailable (connection refused, timeouts, 503
# after the client's own retries) is tried again after each of these pauses before the run
# records it as failed: a run rides out an outage of a few minutes instead of failing everyone.
RUN_RETRY_DELAYS_S: tuple[float, ...] = (5.0, 15.0, 45.0)
# Errors that say the database is not reachable now (restart, failover, network, a pool that
# cannot connect), not that a statement is wrong: a run waits for the database instead of failing.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)
DATABASE_WAIT_S = 600.0  # one outage longer than this fails the run
RUN_DATABASE_OUTAGES = 50  # so do more outages than this within one run
# How often the heartbeat renews this process's claims, as a share of the lease
# (Settings.claim_lease_s): two beats may be missed before another process takes them over.
HEARTBEAT_SHARE = 1 / 3
CLAIM_POLL_S = 5.0
OUTBOX_INTERVAL_S = 2.0
OUTBOX_MAX_BACKOFF_S = 600.0


class SourceUnavailable(Exception):
    """The patient source could not give a patient (the message names the request)."""


class NotFound(Exception):
    """The patient is not known to the source."""


class Stopping(Exception):
    """The service is shutting down: leave the patient claimed, a restart resumes it."""


class DatabaseUnavailable(Exception):
    """The database went away in the middle of a batch; `patients` were screened but not
    recorded and are still claimed by this process."""

    def __init__(self, patients: list[str]) -> None:
        super().__init__(f"{len(patients)} patients not recorded")
        self.patients = patients


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
        self._patients = ThreadPoolExecutor(settings.run_concurrency, thread_name_prefix="screen")
        self._runs = ThreadPoolExecutor(2, thread_name_prefix="run")
        self._stop = threading.Event()
        self._outbox_thread: threading.Thread | None = None
        self._heartbeat = threading.Thread(
            target=self._heartbeat_loop, name="heartbeat", daemon=True
        )
        self._heartbeat.start()
        if start_workers:
            self.start_workers()

    # -- lifecycle --------------------------------------------------------------------------

    def start_workers(self) -> None:
        # Under gunicorn every worker process starts here, and so does every replica. Claims
        # whose owner is gone (lease over, or a dead process of this host) are taken back;
        # live ones, whoever started first, are left to their owner, which records them.
        for run in self.store.interrupted_runs(dead_owners=self._dead_owners()):
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
        self._heartbeat.join(timeout=10)
        try:  # a graceful stop: the other processes take this one's patients at once
            released = self.store.release_own_claims()
            if released:
                log.info("gave back %d claimed patients", released)
        except DATABASE_DOWN:
            log.warning("claims not given back (database unavailable): their lease ends them")
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
        if write_back and self.writer is None:
            raise SourceUnavailable("write-back needs a FHIR server (MEDCARE_FHIR_BASE_URL)")
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
            outcome = self._write_now(result) if recorded.current else "skip-look-back"
        return ScreenOutcome(result.to_dict(), recorded.changed, outcome)

    def _write_now(self, result: ScreenResult) -> str:
        """Try the write at once; on failure the queued outbox entry will retry it.

        This patient's queued entry is taken first (and only it: other patients' entries stay
        due for the outbox worker), so the worker does not write the same patient meanwhile.
        """
        assert self.writer is not None
        taken = self.store.due_writebacks(limit=1, patient_id=result.patient)
        current = fingerprint(result)
        try:
            written: WriteOutcome = self.writer.write(result)
        except FhirError as exc:
            log.warning(
                "write-back for %s deferred to the outbox (%s)", result.patient, type(exc).__name__
            )
            retry_at = datetime.now(UTC) + timedelta(seconds=OUTBOX_INTERVAL_S)
            for entry in taken:
                self.store.mark_writeback_failed(entry.id, _safe_error(exc), retry_at)
            return "queued"
        for entry in taken:
            if entry.fingerprint == current:
                self.store.mark_writeback_done(entry.id)
            else:  # a newer result was queued meanwhile: the outbox writes that one
                self.store.mark_writeback_failed(entry.id, "not written yet", datetime.now(UTC))
        return written.outcome

    # -- runs --------------------------------------------------------------------------------

    def start_run(self, kind: str, spec: Any, as_of: date, write_back: bool) -> RunInfo:
        """A run as of today (current results) or of an earlier day (a look back, whose
        results stay with the run). InvalidAsOf for a day after today, and for a look back
        with `write_back`: a run would otherwise write nothing for every patient, silently."""
        if self.store.check_as_of(as_of) and write_back:
            raise InvalidAsOf(
                f"as_of {as_of.isoformat()} is before today ({self.today().isoformat()}): "
                "a look back is never written back; drop write_back or screen as of today"
            )
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
        """Run to the end. The database going away (a restart, a failover) does not end the
        run: it waits for the database, gives back the patients it could not record, and goes
        on; any other error fails the run with its reason."""
        unrecorded: list[str] = []
        for _ in range(RUN_DATABASE_OUTAGES):
            try:
                if unrecorded:
                    self.store.release_claims(run_id, unrecorded)
                    unrecorded = []
                self._run(run_id)
                return
            except DatabaseUnavailable as exc:
                unrecorded = exc.patients
                log.warning("run %s: the database is unavailable; waiting for it", run_id)
            except DATABASE_DOWN as exc:
                log.warning("run %s: the database is unavailable (%s)", run_id, type(exc).__name__)
            except Exception as exc:  # the run fails with its reason; the service goes on
                if self._stop.is_set() or _pool_shut_down(exc):
                    # the service is stopping (its thread pools take no more work): the run is
                    # not at fault; it stays running for another process or the next start
                    log.info("run %s: left to resume (the service is stopping)", run_id)
                    return
                log.error("run %s failed (%s)", run_id, type(exc).__name__)
                self._fail_run(run_id, _safe_error(exc))
                return
            if not self._wait_for_database():
                return  # stopping: the next start resumes the run
        self._fail_run(run_id, "the database was unavailable too often; the run was given up")

    def _fail_run(self, run_id: str, error: str) -> None:
        try:
            self.store.set_run_status(run_id, "failed", error=error)
        except DATABASE_DOWN:
            log.error("run %s: could not be marked failed; the next start resumes it", run_id)

    def _wait_for_database(self) -> bool:
        """Wait (with backoff, at most DATABASE_WAIT_S) until the database answers; False when
        the service is stopping or the database did not come back."""
        deadline = time.monotonic() + DATABASE_WAIT_S
        delay = 0.5
        while not self._stop.wait(delay):
            if self.store.ping():
                return True
            if time.monotonic() > deadline:
                return False
            delay = min(delay * 2, 10.0)
        return False

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
                self.store.record_patient_failure(run.id, reference, _safe_error(exc))
                return True
            except Exception as exc:  # a bug for one patient must not stop the run
                log.error("%s failed in run %s (%s)", reference, run.id, type(exc).__name__)
                self.store.record_patient_failure(
                    run.id, reference, f"internal error ({type(exc).__name__})"
                )
                return True
            self.store.record_patient_result(
                run.id, result.patient, result.to_dict(), fingerprint(result)
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


def _pool_shut_down(exc: BaseException) -> bool:
    """The RuntimeError a thread pool raises when asked for work after it (or the interpreter)
    shut down: a process that ends without Runtime.close (a signal, the end of a script)."""
    return isinstance(exc, RuntimeError) and "schedule new futures after" in str(exc)


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
