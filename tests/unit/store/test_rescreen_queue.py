"""The re-screen queue (issue 14 item 3): one job per patient, coalescing, `again`, leases."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from service.errors import SourceUnavailable
from service.runtime import Runtime
from service.settings import settings_from_env
from service.store.models import RescreenJob, StoredResult
from service.store.repository import Store
from tests.unit.conftest import StoreFactory
from tests.unit.store.helpers import STUDY, Clock


def test_a_burst_of_fifty_changes_for_one_patient_is_one_job(store: Store, clock: Clock) -> None:
    first = clock.now
    assert store.enqueue(["Patient/p1"], "subscription", "Subscription/s1") == 1
    for second in range(49):
        clock.advance(milliseconds=20)
        trigger = "sweep" if second % 2 else "subscription"
        assert store.enqueue(["Patient/p1"], trigger, f"Observation/{second}") == 0
    assert store.depth() == 1
    assert store.take_rescreens(10) == []  # not due: the burst coalesces for 2 s
    clock.advance(seconds=2)
    [task] = store.take_rescreens(10)
    assert task.patient_id == "Patient/p1"
    assert task.triggers == ("subscription", "sweep")
    assert task.trigger == "subscription"
    assert task.source == "Observation/48"
    assert task.first_enqueued_at == first
    assert task.attempts == 1
    assert store.finish_rescreen("Patient/p1")
    assert store.depth() == 0
    assert store.take_rescreens(10) == []


def test_the_due_time_is_not_pushed_back_by_later_changes(store: Store, clock: Clock) -> None:
    store.enqueue(["Patient/p1"], "sweep", delay=timedelta(seconds=5))
    clock.advance(seconds=4)
    store.enqueue(["Patient/p1"], "sweep", delay=timedelta(seconds=5))
    clock.advance(seconds=1)
    assert [t.patient_id for t in store.take_rescreens(5)] == ["Patient/p1"]


def test_many_patients_are_taken_oldest_due_first_and_in_batches(
    store: Store, clock: Clock
) -> None:
    store.enqueue([f"Patient/p{i:04d}" for i in range(1200)], "schedule", "cohort:prostate")
    clock.advance(seconds=1)
    store.enqueue(["Patient/late"], "request")
    clock.advance(seconds=5)
    assert store.depth() == 1201
    first = store.take_rescreens(1000)
    assert len(first) == 1000 and "Patient/late" not in {t.patient_id for t in first}
    assert store.depth("pending") == 201
    assert store.depth("claimed") == 1000
    rest = store.take_rescreens(1000)
    assert rest[-1].patient_id == "Patient/late"
    assert len(rest) == 201


def test_a_change_during_the_screen_runs_the_patient_again(store: Store, clock: Clock) -> None:
    store.enqueue(["Patient/p1"], "sweep")
    clock.advance(seconds=3)
    [task] = store.take_rescreens(1)
    clock.advance(seconds=1)
    during = clock.now
    assert store.enqueue(["Patient/p1"], "subscription", "Observation/9") == 0
    clock.advance(milliseconds=500)
    store.enqueue(["Patient/p1"], "subscription", "Observation/10")
    assert store.take_rescreens(1) == []  # held by this worker
    assert store.finish_rescreen(task.patient_id)
    assert store.depth("pending") == 1
    assert store.take_rescreens(1) == []  # due 2 s after the first change during the screen
    clock.advance(seconds=2)
    [again] = store.take_rescreens(1)
    assert again.first_enqueued_at == during
    assert again.triggers == ("sweep", "subscription")
    assert again.source == "Observation/10"
    assert again.attempts == 1
    assert store.finish_rescreen("Patient/p1")
    assert store.depth() == 0


def test_the_age_of_the_oldest_change_counts_pending_work_only(store: Store, clock: Clock) -> None:
    assert store.oldest_pending_age() is None
    store.enqueue(["Patient/p1"], "sweep")
    clock.advance(seconds=10)
    store.enqueue(["Patient/p2"], "sweep")
    assert store.oldest_pending_age() == timedelta(seconds=10)
    clock.advance(seconds=2)
    assert len(store.take_rescreens(2)) == 2
    assert store.oldest_pending_age() is None  # both under way: nothing waits
    clock.advance(seconds=3)
    store.enqueue(["Patient/p2"], "subscription")
    clock.advance(seconds=4)
    assert store.oldest_pending_age() == timedelta(seconds=4)


def test_another_worker_does_not_take_or_settle_a_held_patient(
    store: Store, reopen: StoreFactory, clock: Clock
) -> None:
    other = reopen()
    store.enqueue(["Patient/p1", "Patient/p2"], "request")
    clock.advance(seconds=2)
    assert [t.patient_id for t in store.take_rescreens(1)] == ["Patient/p1"]
    assert [t.patient_id for t in other.take_rescreens(5)] == ["Patient/p2"]
    assert not other.finish_rescreen("Patient/p1")
    assert not other.fail_rescreen("Patient/p1", "boom", None)
    assert store.depth() == 2


def test_an_expired_lease_gives_the_patient_to_another_worker(
    store: Store, reopen: StoreFactory, clock: Clock
) -> None:
    other = reopen()
    store.enqueue(["Patient/p1"], "sweep")
    clock.advance(seconds=2)
    store.take_rescreens(1)
    clock.advance(seconds=30)
    assert store.renew_rescreens() == 1
    clock.advance(seconds=59)
    assert other.requeue_expired_rescreens() == 0  # renewed: still within the lease
    clock.advance(seconds=2)
    assert other.requeue_expired_rescreens() == 1
    [task] = other.take_rescreens(1)
    assert task.attempts == 2
    assert not store.finish_rescreen("Patient/p1")  # the first worker lost it
    assert other.finish_rescreen("Patient/p1")


def test_a_failed_screen_is_retried_later_or_dropped(store: Store, clock: Clock) -> None:
    store.enqueue(["Patient/p1", "Patient/p2"], "sweep")
    clock.advance(seconds=2)
    store.take_rescreens(2)
    assert store.fail_rescreen("Patient/p1", "FHIR server unavailable", timedelta(seconds=30))
    assert store.fail_rescreen("Patient/p2", "gave up", None)
    assert store.depth() == 1
    clock.advance(seconds=29)
    assert store.take_rescreens(5) == []
    clock.advance(seconds=1)
    [task] = store.take_rescreens(5)
    assert (task.patient_id, task.attempts) == ("Patient/p1", 2)


def test_a_graceful_stop_gives_held_patients_back_at_once(
    store: Store, reopen: StoreFactory, clock: Clock
) -> None:
    store.enqueue(["Patient/p1", "Patient/p2"], "schedule")
    clock.advance(seconds=2)
    store.take_rescreens(2)
    assert store.release_own_rescreens() == 2
    assert {t.patient_id for t in reopen().take_rescreens(5)} == {"Patient/p1", "Patient/p2"}


def test_an_unknown_trigger_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="unknown trigger"):
        store.enqueue(["Patient/p1"], "cron")
    assert store.enqueue([], "sweep") == 0


def test_an_id_and_its_reference_are_one_patient(store: Store) -> None:
    assert store.enqueue(["p1", "Patient/p1"], "sweep") == 1
    assert store.enqueue(["p1"], "subscription") == 0
    assert store.depth() == 1


# -- the worker (service/work/rescreen.py) over the fixture patients, on SQLite ---------------


@pytest.fixture
def runtime() -> Iterator[Runtime]:
    runtime = Runtime(settings_from_env(), start_workers=False)
    yield runtime
    runtime.close()


def test_the_worker_screens_each_taken_patient_as_a_request_would(runtime: Runtime) -> None:
    store = runtime.store
    patients = ["fx-age-17", "Patient/fx-age-18th-birthday-on-as-of"]
    store.enqueue([*patients, "fx-no-such-patient"], "sweep", "Observation", delay=timedelta(0))
    assert runtime.rescreens.run_once(10) == 3
    assert store.depth() == 0  # screened, and the unknown patient dropped
    for patient in patients:
        ref = patient if patient.startswith("Patient/") else f"Patient/{patient}"
        current = store.latest_result(ref, STUDY)
        expected = runtime.screener.screen(runtime.source.record(ref[8:]), store.today())
        assert current == expected.to_dict()
    with Session(store.engine) as session:  # the changes feed says why they were screened
        why = session.execute(select(StoredResult.trigger, StoredResult.source)).all()
    assert why == [("sweep", runtime.source.label)] * len(patients)


def test_the_worker_takes_nothing_while_a_request_is_screened(runtime: Runtime) -> None:
    runtime.store.enqueue(["fx-age-17"], "subscription", delay=timedelta(0))
    with runtime.interactive:
        assert runtime.rescreens._take_and_submit() == 0
    assert runtime.store.depth("pending") == 1


def test_the_worker_thread_empties_the_queue_and_gives_back_at_close(runtime: Runtime) -> None:
    store = runtime.store
    store.enqueue(["fx-age-17"], "request", delay=timedelta(0))
    runtime.rescreens.start()
    deadline = time.monotonic() + 20
    while store.depth() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert store.depth() == 0
    assert store.latest_result("Patient/fx-age-17", STUDY) is not None


def test_a_failing_screen_is_retried_later_then_given_up(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(_patient_id: str) -> None:
        raise SourceUnavailable("FHIR server unavailable (503)")

    monkeypatch.setattr(runtime.rescreens.source, "record", broken)
    store = runtime.store
    store.enqueue(["fx-age-17"], "sweep", delay=timedelta(0))
    for _attempt in range(3):
        assert runtime.rescreens.run_once() == 1
        assert store.depth("pending") == 1
        with Session(store.engine) as session:  # due again later: make it due now
            session.execute(update(RescreenJob).values(due_at=store._now()))
            session.commit()
    assert runtime.rescreens.run_once() == 1
    assert store.depth() == 0


def test_held_rows_are_released_due_soon_and_nothing_is_pushed_back(
    store: Store, clock: Clock
) -> None:
    """A sweep holds what it queues (due far ahead) and releases it when it ends: only
    rows due later than the delay move, sooner; a row due sooner keeps its time."""
    store.enqueue(["Patient/soon"], "subscription")
    store.enqueue(["p1", "Patient/p2"], "sweep", delay=timedelta(minutes=15))
    assert store.release_rescreens(["p1", "p2", "soon", "absent"]) == 2
    clock.advance(seconds=2)
    taken = sorted(t.patient_id for t in store.take_rescreens(10))
    assert taken == ["Patient/p1", "Patient/p2", "Patient/soon"]
    assert store.release_rescreens(["p1"]) == 0  # claimed, due in the past: left as it is
