"""Scheduled jobs (issue 14 items 2 and 5): cron and interval fire times with a fixed clock,
each firing claimed once across Stores on one database, cohort re-screens queued with the
trigger 'schedule', the sweep slot left alone at start-up, old firings pruned."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.clock import Clock
from service.currency.schedules import (
    SWEEP_JOB,
    Schedules,
    cohort_job,
    cron_due,
    interval_due,
)
from service.settings import settings_from_env
from service.store.cohorts import CohortDefinition
from service.store.repository import Store, create_store
from tests.unit.store.helpers import Clock as HandClock

START = datetime(2026, 11, 26, 9, 30, 12, tzinfo=UTC)


@pytest.fixture
def hand() -> HandClock:
    return HandClock(START)


@pytest.fixture
def open_store(tmp_path: Path, hand: HandClock) -> Iterator[Callable[[], Store]]:
    """Stores on one SQLite database, as processes sharing it would have."""
    opened: list[Store] = []

    def make() -> Store:
        store = create_store(f"sqlite:///{tmp_path / 'store.sqlite3'}", clock=hand)
        store.migrate()
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


class Refresher:
    """A cohort's members as the FHIR server would resolve them now (or a failure)."""

    def __init__(self, store: Store, members: list[str]) -> None:
        self.store, self.members, self.calls, self.fail = store, members, 0, False

    def refresh_members(self, name: str) -> list[str]:
        self.calls += 1
        if self.fail:
            raise RuntimeError("the server refused the search")
        self.store.set_cohort_members(name, self.members)
        return self.store.cohort_members(name)


class CountingSweeper:
    def __init__(self) -> None:
        self.sweeps = 0

    def sweep(self) -> list[object]:
        self.sweeps += 1
        return []


def schedules(store: Store, hand: HandClock, **given: object) -> Schedules:
    options: dict[str, object] = {"sweeper": None, "cohorts": None, "zone": UTC}
    options.update(given)
    return Schedules(store, clock=Clock(hand), **options)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("schedule", "now", "due"),
    [
        ("0 2 * * *", datetime(2026, 11, 26, 9, 30, tzinfo=UTC), datetime(2026, 11, 26, 2, 0)),
        ("0 2 * * *", datetime(2026, 11, 26, 1, 59, 59, tzinfo=UTC), datetime(2026, 11, 25, 2, 0)),
        ("0 2 * * *", datetime(2026, 11, 26, 2, 0, 30, tzinfo=UTC), datetime(2026, 11, 26, 2, 0)),
        ("*/15 * * * *", datetime(2026, 11, 26, 9, 44, tzinfo=UTC), datetime(2026, 11, 26, 9, 30)),
        ("0 3 * * 1", datetime(2026, 11, 26, 9, 0, tzinfo=UTC), datetime(2026, 11, 23, 3, 0)),
    ],
)
def test_a_cron_jobs_latest_due_time(schedule: str, now: datetime, due: datetime) -> None:
    assert cron_due(schedule, now, UTC) == due.replace(tzinfo=UTC)


def test_the_sweep_slots_are_the_same_for_every_process() -> None:
    every = timedelta(minutes=5)
    assert interval_due(START, every) == datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
    assert interval_due(START + timedelta(minutes=4, seconds=47), every) == interval_due(
        START, every
    )
    assert interval_due(START + timedelta(minutes=5), every) == datetime(
        2026, 11, 26, 9, 35, tzinfo=UTC
    )


def test_a_firing_is_claimed_by_one_store_only(open_store: Callable[[], Store]) -> None:
    first, second = open_store(), open_store()
    at = datetime(2026, 11, 26, 2, 0, tzinfo=UTC)
    assert first.fire_once("cohort:prostate", at)
    assert not second.fire_once("cohort:prostate", at)
    assert not first.fire_once("cohort:prostate", at)
    assert second.fire_once("cohort:prostate", at + timedelta(days=1))
    assert first.last_fire("cohort:prostate") == at + timedelta(days=1)


def test_two_processes_rescreen_a_cohort_once_per_fire_time(
    open_store: Callable[[], Store], hand: HandClock
) -> None:
    one, two = open_store(), open_store()
    search = CohortDefinition("search", "Patient?_has:Condition:patient:code=x", "0 2 * * *")
    one.add_cohort("prostate", search, members=["p1", "p2"])
    refresher = Refresher(one, ["p1", "p2", "p3"])
    a, b = schedules(one, hand, cohorts=refresher), schedules(two, hand, cohorts=refresher)
    # defined at 09:30: today's 02:00 is before it, so nothing fires until tomorrow's
    assert a.fire() == [] and b.fire() == []
    hand.now = datetime(2026, 11, 27, 2, 0, 1, tzinfo=UTC)
    fired = a.fire() + b.fire() + a.fire() + b.fire()
    assert fired == [cohort_job("prostate")]
    assert refresher.calls == 1
    hand.advance(seconds=5)
    tasks = one.take_rescreens(10)
    assert sorted(t.patient_id for t in tasks) == ["Patient/p1", "Patient/p2", "Patient/p3"]
    assert {(t.trigger, t.source) for t in tasks} == {("schedule", "cohort:prostate")}
    hand.now = datetime(2026, 11, 28, 2, 0, 1, tzinfo=UTC)
    assert b.fire() + a.fire() == [cohort_job("prostate")]
    assert refresher.calls == 2


def test_a_cohort_that_cannot_be_refreshed_rescreens_its_last_members(
    open_store: Callable[[], Store], hand: HandClock
) -> None:
    store = open_store()
    store.add_cohort("prostate", CohortDefinition("group", "g1", "*/10 * * * *"), members=["p1"])
    refresher = Refresher(store, [])
    refresher.fail = True
    hand.advance(minutes=10)
    assert schedules(store, hand, cohorts=refresher).fire() == [cohort_job("prostate")]
    hand.advance(seconds=3)
    assert [t.patient_id for t in store.take_rescreens(10)] == ["Patient/p1"]


def test_the_sweep_fires_once_per_slot_and_not_at_once_after_a_start(
    open_store: Callable[[], Store], hand: HandClock
) -> None:
    one, two = open_store(), open_store()
    sweeper = CountingSweeper()
    every = timedelta(minutes=5)
    a = schedules(one, hand, sweeper=sweeper, sweep_every=every)
    b = schedules(two, hand, sweeper=sweeper, sweep_every=every)
    a.skip_current_sweep()
    b.skip_current_sweep()
    assert a.fire() + b.fire() == []
    hand.advance(minutes=5)
    assert a.fire() + b.fire() == [SWEEP_JOB]
    hand.advance(minutes=1)
    assert a.fire() + b.fire() == []
    hand.advance(minutes=4)
    assert b.fire() + a.fire() == [SWEEP_JOB]
    assert sweeper.sweeps == 2


def test_old_firings_are_pruned_but_each_jobs_latest_is_kept(
    open_store: Callable[[], Store], hand: HandClock
) -> None:
    store = open_store()
    old = START - timedelta(days=30)
    for days in range(3):
        store.fire_once("cohort:monthly", old + timedelta(days=days))
    store.fire_once(SWEEP_JOB, START)
    assert store.prune_fires(START - timedelta(days=7)) == 2
    assert store.last_fire("cohort:monthly") == old + timedelta(days=2)
    assert not store.fire_once("cohort:monthly", old + timedelta(days=2))


def test_sweep_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = settings_from_env().screening
    assert (defaults.sweep_interval_s, defaults.sweep_skew_s) == (300, 120)
    assert defaults.sweep_max_age_s is None
    monkeypatch.setenv("MEDCARE_SWEEP_INTERVAL_S", "60")
    monkeypatch.setenv("MEDCARE_SWEEP_SKEW_S", "30")
    monkeypatch.setenv("MEDCARE_SWEEP_MAX_AGE_S", "600")
    given = settings_from_env().screening
    assert (given.sweep_interval_s, given.sweep_skew_s, given.sweep_max_age_s) == (60, 30, 600)
