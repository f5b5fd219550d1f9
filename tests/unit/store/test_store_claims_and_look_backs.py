"""Claims with an owner and a lease (two processes, one database), and look backs.

Run here on a SQLite file; tests/integration/test_store_postgres.py runs the same functions on
a real PostgreSQL. Two Stores on one database are two service processes: each has its owner.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from datetime import date, timedelta

import pytest
from alembic import command
from sqlalchemy import func, insert, select, text

from service.store.leases import new_owner_id, owner_is_dead, this_host
from service.store.models import Run, RunPatient, StoredResult
from service.store.repository import (
    ClaimLost,
    InvalidAsOf,
    Store,
    alembic_config,
)
from tests.unit.store.helpers import AS_OF, STUDY, Clock, body, save

StoreFactory = Callable[[], Store]
DAY_BEFORE = (AS_OF - timedelta(days=1)).isoformat()


def _running(store: Store, patients: list[str], *, as_of: date = AS_OF, **kw: bool) -> str:
    run = store.create_run("ids", {"ids": patients}, as_of, patient_ids=patients, **kw)
    assert store.set_run_status(run.id, "running")
    return run.id


def _results(store: Store, patient: str) -> int:
    with store.engine.connect() as connection:
        count = connection.scalar(
            select(func.count()).select_from(StoredResult).where(StoredResult.patient_id == patient)
        )
    return int(count or 0)


def _states(store: Store, run_id: str) -> list[str]:
    return [item["state"] for item in store.run_results(run_id)[0]]


# -- look backs ------------------------------------------------------------------------------


def test_a_screen_after_today_is_refused_and_nothing_is_stored(store: Store) -> None:
    tomorrow = (AS_OF + timedelta(days=1)).isoformat()
    with pytest.raises(InvalidAsOf, match=f"as_of {tomorrow} is after today"):
        save(store, None, body("p1", as_of=tomorrow))
    with pytest.raises(InvalidAsOf, match="as_of"):
        store.create_run("ids", {}, AS_OF + timedelta(days=1), patient_ids=["p1"])
    assert _results(store, "p1") == 0
    assert store.list_runs() == []


def test_a_look_back_never_replaces_the_current_result_nor_is_a_change_nor_written(
    store: Store,
) -> None:
    current = save(store, None, body("p1"), write_back=True)
    assert current.changed and current.current
    (queued,) = store.due_writebacks()
    # as of an earlier day, and a different decision: kept, but nothing else
    for as_of in (DAY_BEFORE, "0001-01-01"):
        looked = save(store, None, body("p1", as_of=as_of, ruled_out_by=("age",)), write_back=True)
        assert (looked.changed, looked.current) == (False, False)
    assert store.latest_result("p1", STUDY) == body("p1")
    assert [i["result_id"] for i in store.changes()[0]] == [current.result_id]
    assert store.due_writebacks() == []  # only the current one was ever queued
    assert store.mark_writeback_done(queued.id)
    assert _results(store, "p1") == 3


def test_a_look_back_run_keeps_its_results_with_the_run_only(store: Store) -> None:
    save(store, None, body("p1"))  # the current result
    run_id = _running(store, ["p1", "p2"], as_of=AS_OF - timedelta(days=30), write_back=True)
    run = store.get_run(run_id)
    assert run is not None and run.look_back and run.to_dict()["look_back"] is True
    store.claim_pending(run_id, 2)
    old = (AS_OF - timedelta(days=30)).isoformat()
    for patient in ("p1", "p2"):
        recorded = save(store, run_id, body(patient, as_of=old, ruled_out_by=("age",)))
        assert (recorded.changed, recorded.current) == (False, False)
    assert _states(store, run_id) == ["done", "done"]
    assert [i["result"]["as_of"] for i in store.run_results(run_id)[0]] == [old, old]  # type: ignore[index]
    assert store.latest_result("p1", STUDY) == body("p1")
    assert store.latest_result("p2", STUDY) is None
    assert [i["patient"] for i in store.changes()[0]] == ["p1"]
    assert store.due_writebacks() == []
    assert store.run_writebacks(run_id)["pending"] == 0


def test_a_run_of_today_stays_current_past_midnight_but_never_goes_back(
    store: Store, clock: Clock
) -> None:
    run_id = _running(store, ["p1", "p2"])
    assert not (store.get_run(run_id) or pytest.fail()).look_back
    store.claim_pending(run_id, 2)
    clock.advance(days=1)  # the run goes on past midnight
    assert save(store, run_id, body("p1")).current
    # meanwhile p2 was screened as of the new day; the run's older screen must not undo it
    newer = body("p2", as_of=(AS_OF + timedelta(days=1)).isoformat(), ruled_out_by=("age",))
    save(store, None, newer)
    late = save(store, run_id, body("p2"))
    assert (late.changed, late.current) == (False, False)
    assert store.latest_result("p1", STUDY) == body("p1")
    assert store.latest_result("p2", STUDY) == newer


def test_today_can_be_fixed_for_tests_and_demos(reopen: StoreFactory) -> None:
    store = reopen()
    assert store.today() == AS_OF  # the test clock's day
    assert not store.check_as_of(AS_OF)
    assert store.check_as_of(AS_OF - timedelta(days=1))


# -- claims: owner, lease, heartbeat ---------------------------------------------------------


def test_a_live_claim_of_another_process_is_left_alone_until_its_lease_runs_out(
    store: Store, reopen: StoreFactory, clock: Clock
) -> None:
    first, second = store, reopen()
    assert first.owner != second.owner
    run_id = _running(first, ["p1", "p2"])
    assert first.claim_pending(run_id, 1) == ["p1"]
    # the second process starts (much) later: the first one's claim is alive, not stale
    clock.advance(seconds=50)
    assert first.renew_claims() == 1  # the heartbeat
    clock.advance(seconds=50)
    assert [r.id for r in second.interrupted_runs()] == [run_id]
    assert second.claim_pending(run_id, 5) == ["p2"]
    assert _states(first, run_id) == ["claimed", "claimed"]
    # the first process stops beating: after the lease the second takes p1 over
    second.renew_claims()
    clock.advance(seconds=61)
    second.renew_claims()
    assert second.requeue_expired_claims(run_id) == 1
    assert second.claim_pending(run_id, 5) == ["p1"]


def test_only_the_claim_owner_records_so_a_patient_is_recorded_once(
    store: Store, reopen: StoreFactory, clock: Clock
) -> None:
    slow, other = store, reopen()
    run_id = _running(slow, ["p1"])
    slow.claim_pending(run_id, 1)
    clock.advance(seconds=61)  # slow hung past its lease; other takes the patient over
    other.requeue_expired_claims(run_id)
    assert other.claim_pending(run_id, 1) == ["p1"]
    with pytest.raises(ClaimLost, match="p1"):
        save(slow, run_id, body("p1"))
    with pytest.raises(ClaimLost):
        slow.record_patient_failure(run_id, "p1", "timeout")
    assert _results(slow, "p1") == 0  # the refused result left nothing behind
    assert save(other, run_id, body("p1")).changed
    with pytest.raises(ClaimLost, match="done"):
        save(slow, run_id, body("p1"))
    assert _results(slow, "p1") == 1
    assert slow.complete_run(run_id)


def test_claims_of_a_dead_owner_are_taken_back_at_once(store: Store, reopen: StoreFactory) -> None:
    survivor = reopen()
    run_id = _running(store, ["p1", "p2"])
    store.claim_pending(run_id, 1)
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    dead = f"{this_host()}/{gone.stdout.strip()}/0123456789ab"
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE run_patients SET claimed_by = :o"), {"o": dead})
    assert owner_is_dead(dead)
    assert survivor.claim_owners() == {dead}
    survivor.interrupted_runs(dead_owners=[o for o in survivor.claim_owners() if owner_is_dead(o)])
    assert survivor.claim_pending(run_id, 5) == ["p1", "p2"]


def test_owners_alive_or_elsewhere_are_never_judged_dead() -> None:
    assert not owner_is_dead(new_owner_id())  # this process
    assert not owner_is_dead(f"{this_host()}/1/0123456789ab")  # init: alive
    assert not owner_is_dead("another-host/999999/0123456789ab")  # its lease decides
    assert not owner_is_dead("garbage")
    assert len(new_owner_id()) <= 64


def test_a_graceful_stop_gives_its_claims_back_at_once(store: Store, reopen: StoreFactory) -> None:
    stopping, other = store, reopen()
    run_id = _running(stopping, ["p1", "p2", "p3"])
    stopping.claim_pending(run_id, 2)
    other.claim_pending(run_id, 1)
    assert stopping.release_own_claims() == 2
    assert _states(other, run_id) == ["pending", "pending", "claimed"]
    assert other.claim_pending(run_id, 5) == ["p1", "p2"]


def test_claims_from_before_the_lease_migration_count_as_expired(
    reopen: StoreFactory, clock: Clock
) -> None:
    """A database of revision 0001 with a patient claimed by the old code: after the upgrade
    the claim has no owner and no lease, and the next start takes it back."""
    old = reopen()
    config = alembic_config()
    with old.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0001")
    with old.engine.begin() as connection:  # only the columns of 0001
        connection.execute(
            insert(Run).values(id="r1", kind="ids", spec=[], as_of=AS_OF, write_back=False,
                               status="running", created_at=clock.now)
        )  # fmt: skip
        connection.execute(
            insert(RunPatient).values(run_id="r1", patient_id="p1", position=1, state="claimed",
                                      attempts=1, claimed_at=clock.now, updated_at=clock.now)
        )  # fmt: skip
    old.migrate()
    assert old.schema_revision() == "0006"
    run = old.get_run("r1")
    assert run is not None and not run.look_back
    assert [r.id for r in old.interrupted_runs()] == ["r1"]
    assert old.claim_pending("r1", 1) == ["p1"]
    with old.engine.connect() as connection:
        owner = connection.scalar(select(RunPatient.claimed_by))
    assert owner == old.owner
    save(old, "r1", body("p1"))
    assert old.latest_result("p1", STUDY) == body("p1")
