"""Riding out database outages: a run waits for the database instead of failing.

Why a room of its own: a restart or a failover of the database is an everyday event for a
service that runs for months, and it must cost a run a pause, not its patients. What counts as
"the database is away" (not "the statement is wrong"), how long to wait for it and how often a
run may be interrupted are decided here, once; the run execution (service.work.runs) only says
which patients it could not record (`DatabaseUnavailable`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from service.errors import DatabaseUnavailable, safe_error
from service.store import Store

log = logging.getLogger("medcare_screen.runtime.outage")

# Errors that say the database is not reachable now (restart, failover, network, a pool that
# cannot connect), not that a statement is wrong: a run waits for the database instead of failing.
DATABASE_DOWN = (OperationalError, InterfaceError, PoolTimeout)
DATABASE_WAIT_S = 600.0  # one outage longer than this fails the run
RUN_DATABASE_OUTAGES = 50  # so do more outages than this within one run


def run_through_outages(
    store: Store, stop: threading.Event, run_id: str, attempt: Callable[[], None]
) -> None:
    """Call `attempt` (the run to its end) until it returns. The database going away (a
    restart, a failover) does not end the run: this waits for the database, gives back the
    patients that could not be recorded, and calls `attempt` again; any other error fails the
    run with its reason. A stopping service leaves the run as it is, for the next start."""
    unrecorded: list[str] = []
    for _ in range(RUN_DATABASE_OUTAGES):
        try:
            if unrecorded:
                store.release_claims(run_id, unrecorded)
                unrecorded = []
            attempt()
            return
        except DatabaseUnavailable as exc:
            unrecorded = exc.patients
            log.warning("run %s: the database is unavailable; waiting for it", run_id)
        except DATABASE_DOWN as exc:
            log.warning("run %s: the database is unavailable (%s)", run_id, type(exc).__name__)
        except Exception as exc:  # the run fails with its reason; the service goes on
            if stop.is_set() or _pool_shut_down(exc):
                # the service is stopping (its thread pools take no more work): the run is
                # not at fault; it stays running for another process or the next start
                log.info("run %s: left to resume (the service is stopping)", run_id)
                return
            log.error("run %s failed (%s)", run_id, type(exc).__name__)
            fail_run(store, run_id, safe_error(exc))
            return
        if not wait_for_database(store, stop):
            return  # stopping: the next start resumes the run
    fail_run(store, run_id, "the database was unavailable too often; the run was given up")


def fail_run(store: Store, run_id: str, error: str) -> None:
    """Mark the run failed; if even that cannot reach the database, the next start resumes it."""
    try:
        store.set_run_status(run_id, "failed", error=error)
    except DATABASE_DOWN:
        log.error("run %s: could not be marked failed; the next start resumes it", run_id)


def give_back(release: Callable[[], int], what: str, logger: logging.Logger) -> None:
    """At a clean stop, hand back what this process holds (`release` returns how many), so the
    other processes take it at once; with the database down, the leases end it instead."""
    try:
        released = release()
        if released:
            logger.info("gave back %d %s", released, what)
    except DATABASE_DOWN:
        logger.warning("%s not given back (database unavailable): their lease ends them", what)


def wait_for_database(store: Store, stop: threading.Event) -> bool:
    """Wait (with backoff, at most DATABASE_WAIT_S) until the database answers; False when
    the service is stopping or the database did not come back."""
    deadline = time.monotonic() + DATABASE_WAIT_S
    delay = 0.5
    while not stop.wait(delay):
        if store.ping():
            return True
        if time.monotonic() > deadline:
            return False
        delay = min(delay * 2, 10.0)
    return False


def _pool_shut_down(exc: BaseException) -> bool:
    """The RuntimeError a thread pool raises when asked for work after it (or the interpreter)
    shut down: a process that ends without Runtime.close (a signal, the end of a script)."""
    return isinstance(exc, RuntimeError) and "schedule new futures after" in str(exc)
