"""The store takes the service's Clock as well as a plain callable, and both of its queues
(a run's patients, the write-back outbox) take their lease lengths from the Store."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

from service.clock import Clock as ServiceClock
from service.store.repository import create_store
from tests.unit.store.helpers import AS_OF, Clock, body, save

MOMENT = datetime(2026, 11, 26, 23, 30, tzinfo=UTC)


def test_the_service_clock_gives_the_time_and_its_pinned_day(database_url: str) -> None:
    earlier = AS_OF - timedelta(days=6)
    store = create_store(database_url, clock=ServiceClock(lambda: MOMENT, earlier))
    try:
        store.migrate()
        assert store.today() == earlier
        run = store.create_run("ids", {"ids": ["p1"]}, earlier, patient_ids=["p1"])
        assert run.created_at == MOMENT and not run.look_back
        assert store.check_as_of(earlier - timedelta(days=1))  # a look back
    finally:
        store.close()


def test_an_explicit_today_wins_over_the_clocks_pinned_day(database_url: str) -> None:
    clock = ServiceClock(lambda: MOMENT, date(2026, 1, 1))
    store = create_store(database_url, clock=clock, today=AS_OF)
    try:
        assert store.today() == AS_OF
    finally:
        store.close()


def test_each_queue_leases_for_the_length_the_store_was_given(
    database_url: str, clock: Clock
) -> None:
    store = create_store(
        database_url,
        clock=clock,
        claim_lease=timedelta(seconds=20),
        outbox_lease=timedelta(seconds=30),
    )
    try:
        store.migrate()
        save(store, None, body("p1"), write_back=True)
        (entry,) = store.due_writebacks()
        assert store.due_writebacks(clock.now + timedelta(seconds=29)) == []
        (again,) = store.due_writebacks(clock.now + timedelta(seconds=31))
        assert again.id == entry.id
        run = store.create_run("ids", {"ids": ["p2"]}, AS_OF, patient_ids=["p2"])
        assert store.set_run_status(run.id, "running")
        assert store.claim_pending(run.id, 1) == ["p2"]
        clock.advance(seconds=19)
        assert store.requeue_expired_claims(run.id) == 0
        clock.advance(seconds=2)
        assert store.requeue_expired_claims(run.id) == 1
    finally:
        store.close()
