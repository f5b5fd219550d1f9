"""The scheduler loop: ticks the service's schedules (service/currency/schedules.py) on a
thread of its own, in `serve`'s processes (the embedded worker) and in `medcare-screen worker`.

Why a loop in every process rather than one elected scheduler: each tick only claims firings
through the database (one insert per job and fire time), so any number of processes can run it
and each job still runs once; a process that stops takes nothing with it. The clock is the
service's `Clock`, so a test moves time instead of sleeping.
"""

from __future__ import annotations

import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

from service.currency.schedules import DEFAULT_SWEEP_INTERVAL, Schedules
from service.currency.sweeps import Sweeper
from service.read_plan import read_plan
from service.work.outage import DATABASE_DOWN

if TYPE_CHECKING:
    from service.runtime import Runtime

log = logging.getLogger("medcare_screen.runtime.scheduler")

TICK_S = 2.0  # how often each process looks for due jobs (one read of the cohorts)


class Scheduler:
    """Runs `schedules.fire()` every `tick_s` seconds until `stop` is set."""

    def __init__(
        self, schedules: Schedules, *, stop: threading.Event, tick_s: float = TICK_S
    ) -> None:
        self.schedules = schedules
        self._stop = stop
        self._tick_s = tick_s
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Run on a thread of its own. The sweep slot under way at start is left alone (a
        restart does not sweep at once: the stored watermark catches up at the next slot)."""
        if self._thread is None:
            self.schedules.skip_current_sweep()
            self._thread = threading.Thread(target=self._loop, name="scheduler", daemon=True)
            self._thread.start()

    def close(self) -> None:
        """Wait for the job under way (`stop` must be set)."""
        if self._thread is not None:
            self._thread.join(timeout=30)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.schedules.fire()
            except DATABASE_DOWN as exc:
                log.warning("schedules unavailable (%s)", type(exc).__name__)
            except Exception as exc:  # the scheduler must outlive one bad tick
                log.error("scheduler tick failed (%s)", type(exc).__name__)
            self._stop.wait(self._tick_s)


def scheduler_of(runtime: Runtime, stop: threading.Event) -> Scheduler:
    """The scheduler of a running service: sweeps when it reads a FHIR server (and the sweep
    interval is not 0), every cohort's re-screens, on the runtime's clock and settings."""
    from service.cohorts import Cohorts

    screening = runtime.settings.screening
    every = screening.sweep_interval_s
    sweeper = (
        Sweeper(
            runtime.store, runtime.client, read_plan(runtime.mappings), clock=runtime.clock,
            skew=timedelta(seconds=screening.sweep_skew_s),
            delay=timedelta(seconds=screening.rescreen_delay_s),
        )
        if runtime.client is not None and every
        else None
    )  # fmt: skip
    schedules = Schedules(
        runtime.store, clock=runtime.clock, sweeper=sweeper, cohorts=Cohorts.of(runtime),
        sweep_every=timedelta(seconds=every) if every else DEFAULT_SWEEP_INTERVAL,
        delay=timedelta(seconds=screening.rescreen_delay_s),
    )  # fmt: skip
    return Scheduler(schedules, stop=stop)
