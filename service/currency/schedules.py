"""Scheduled jobs: the sweep every N seconds and each cohort's re-screen on its cron schedule,
each fired once across every process that shares the database (issue 14 items 2 and 5).

Why re-screens on a schedule: results go stale with no new data at all (a testosterone result
ages out of its 90-day window, an imaging study out of its 42 days), so every cohort's members
are screened again on its cron schedule (default nightly). Why the sweep is a job too: with
many workers and replicas, a sweep per process would ask the FHIR server N times as often.

How a job fires once: every process, on each tick of its clock, works out each job's latest
due fire time (the same for all of them: the sweep's on a grid of its interval from the epoch,
a cron's in the service's time zone) and tries to insert (job, fire time) into
`schedule_fires`; only the process whose insert succeeds runs the job
(service/store/schedule_fires.py). A process that was down catches up the latest firing it
missed, once, not every one. A cohort never fires for a time before it was defined (its
members were queued when it was).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Final, Protocol

from croniter import croniter

from service.clock import Clock
from service.currency.sweeps import Sweeper
from service.errors import safe_error
from service.store import Store
from service.store.models import Trigger
from service.store.schedule_fires import CohortSchedule

log = logging.getLogger("medcare_screen.currency.schedules")

SWEEP_JOB: Final = "sweep"
COHORT_JOB_PREFIX: Final = "cohort:"
DEFAULT_SWEEP_INTERVAL: Final = timedelta(seconds=300)
# firings older than this are forgotten (each job's latest is always kept)
KEEP_FIRES: Final = timedelta(days=7)
EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)


class MemberRefresher(Protocol):
    """What a cohort's fire needs of service.cohorts.Cohorts: resolve the members again."""

    def refresh_members(self, name: str) -> list[str]: ...


def cohort_job(name: str) -> str:
    return f"{COHORT_JOB_PREFIX}{name}"


def interval_due(now: datetime, every: timedelta) -> datetime:
    """The latest time at or before `now` on the grid of `every` from the epoch: the same
    for every process, whenever each started."""
    step = every.total_seconds()
    if step <= 0:
        raise ValueError("a sweep interval must be positive")
    elapsed = (now - EPOCH).total_seconds()
    return EPOCH + timedelta(seconds=elapsed - elapsed % step)


def cron_due(schedule: str, now: datetime, zone: tzinfo | None = None) -> datetime:
    """The latest fire time of the five-field cron `schedule` at or before `now`, read in
    `zone` (default: the process's local zone), as UTC."""
    local = now.astimezone(zone) if zone is not None else now.astimezone()
    minute = local.replace(second=0, microsecond=0)
    if croniter.match(schedule, minute):
        return minute.astimezone(UTC)
    previous = croniter(schedule, minute).get_prev(datetime)
    assert isinstance(previous, datetime)
    return previous.astimezone(UTC)


@dataclass(frozen=True)
class Job:
    """A job due at `fire_at` now; `run` runs it (after this process won the firing)."""

    name: str
    fire_at: datetime
    run: Callable[[], object]


class Schedules:
    """The jobs of this service and their firing. `fire(now)` does one tick: every due job
    this process wins runs, in the caller's thread. `sweeper` is None without a FHIR server
    (then only cohorts fire); `cohorts` resolves a cohort's members again before its
    re-screen."""

    def __init__(
        self,
        store: Store,
        *,
        clock: Clock,
        sweeper: Sweeper | None,
        cohorts: MemberRefresher | None,
        sweep_every: timedelta = DEFAULT_SWEEP_INTERVAL,
        zone: tzinfo | None = None,
        delay: timedelta = timedelta(seconds=2),
    ) -> None:
        self.store = store
        self.clock = clock
        self.sweeper = sweeper
        self.cohorts = cohorts
        self.sweep_every = sweep_every
        self.zone = zone
        self.delay = delay
        self._tried: dict[str, datetime] = {}  # per job, the fire time this process tried
        self._pruned_at: datetime | None = None

    def skip_current_sweep(self) -> None:
        """Leave the sweep slot under way to whoever fired it (at start-up: the watermark
        kept what changed meanwhile, so the next slot catches up without a sweep at once)."""
        self._tried[SWEEP_JOB] = interval_due(self.clock.now(), self.sweep_every)

    def due(self, now: datetime) -> list[Job]:
        """Every job whose latest due fire time this process has not tried yet."""
        jobs: list[Job] = []
        if self.sweeper is not None:
            sweeper = self.sweeper
            jobs.append(Job(SWEEP_JOB, interval_due(now, self.sweep_every), sweeper.sweep))
        for cohort in self.store.cohort_schedules():
            fire_at = cron_due(cohort.schedule, now, self.zone)
            if fire_at >= cohort.created_at:
                jobs.append(Job(cohort_job(cohort.name), fire_at, self._rescreen(cohort)))
        return [job for job in jobs if self._tried.get(job.name) != job.fire_at]

    def fire(self, now: datetime | None = None) -> list[str]:
        """One tick: claim each due job's firing and run those this process won; their names.
        A job that fails is logged and waits for its next fire time."""
        now = now or self.clock.now()
        fired: list[str] = []
        for job in self.due(now):
            self._tried[job.name] = job.fire_at
            if not self.store.fire_once(job.name, job.fire_at):
                continue
            fired.append(job.name)
            try:
                job.run()
            except Exception as exc:  # a job's failure must not stop the schedule
                log.error("scheduled %s failed (%s)", job.name, type(exc).__name__)
        self._prune(now)
        return fired

    def rescreen_cohort(self, name: str) -> int:
        """Resolve cohort `name` again (on failure its last members stay) and queue every
        member for a screen (trigger 'schedule'); how many members were queued."""
        try:
            members = (
                self.cohorts.refresh_members(name)
                if self.cohorts is not None
                else self.store.cohort_members(name)
            )
        except Exception as exc:  # a search the server refused today: re-screen who we had
            log.warning("cohort %s not refreshed (%s); its last members are screened again",
                        name, safe_error(exc))  # fmt: skip
            members = self.store.cohort_members(name)
        if members:
            self.store.enqueue(members, Trigger.SCHEDULE.value, cohort_job(name), delay=self.delay)
        log.info("cohort %s: %d members queued for their scheduled re-screen", name, len(members))
        return len(members)

    def _rescreen(self, cohort: CohortSchedule) -> Callable[[], int]:
        return lambda: self.rescreen_cohort(cohort.name)

    def _prune(self, now: datetime) -> None:
        if self._pruned_at is not None and now - self._pruned_at < timedelta(hours=1):
            return
        self._pruned_at = now
        self.store.prune_fires(now - KEEP_FIRES)
