"""Scheduled jobs that fire once across every worker and replica (issue 14 items 2 and 5).

Why a row per firing: a sweep every N minutes and each cohort's nightly re-screen must run
once, whichever of the service's processes and `medcare-screen worker`s notice the time first,
on SQLite (one host) and PostgreSQL (many) alike, with no leader to elect and no extra
service. Every process computes the same fire time for a job (service/currency/schedules.py);
each tries to insert (job, fire time) and the primary key lets exactly one insert in. The
process whose insert succeeded runs the job; the others skip that firing. A process that dies
after its insert loses that one firing: the next sweep catches up (its watermark did not
move), the next cohort fire screens everyone again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import delete, func, select
from sqlalchemy.orm import aliased

from service.store.base import StoreBase, aware
from service.store.models import Cohort, ScheduleFire


@dataclass(frozen=True)
class CohortSchedule:
    """What the scheduler needs of a cohort: its name, cron text and when it was defined."""

    name: str
    schedule: str
    created_at: datetime


class ScheduleFireStore(StoreBase):
    """The fired jobs over the shared sessions (see the module docstring)."""

    def fire_once(self, job: str, fire_at: datetime) -> bool:
        """Claim the firing of `job` due at `fire_at`; True only for the first claimant of
        that (job, time) on this database (then run the job), False for everyone after."""
        aware(fire_at, "fire_at")
        with self._write() as session:
            inserted = session.scalars(
                self._insert(ScheduleFire)
                .values(job=job, fire_at=fire_at, fired_by=self.owner, created_at=self._now())
                .on_conflict_do_nothing(index_elements=[ScheduleFire.job, ScheduleFire.fire_at])
                .returning(ScheduleFire.job)
            ).all()
        return bool(inserted)

    def cohort_schedules(self) -> list[CohortSchedule]:
        """Every cohort's schedule, by name: one read of the cohorts alone (the scheduler asks
        on every tick; list_cohorts would count every cohort's members each time)."""
        query = select(Cohort.name, Cohort.schedule, Cohort.created_at).order_by(Cohort.name)
        with self._read() as session:
            return [CohortSchedule(*row) for row in session.execute(query).all()]

    def last_fire(self, job: str) -> datetime | None:
        """The latest fire time of `job` some process claimed, None when it never fired."""
        query = select(func.max(ScheduleFire.fire_at)).where(ScheduleFire.job == job)
        with self._read() as session:
            return session.scalar(query)

    def prune_fires(self, before: datetime) -> int:
        """Forget firings due before `before`, except each job's latest (the scheduler fires
        only a job's latest due time, and only when it is later than the latest kept, so
        nothing pruned can fire again); how many went."""
        aware(before, "before")
        later = aliased(ScheduleFire)
        newer_exists = (
            select(later.job)
            .where(later.job == ScheduleFire.job, later.fire_at > ScheduleFire.fire_at)
            .exists()
        )
        with self._write() as session:
            gone = session.scalars(
                delete(ScheduleFire)
                .where(ScheduleFire.fire_at < before, newer_exists)
                .returning(ScheduleFire.job)
            )
            return len(gone.all())
