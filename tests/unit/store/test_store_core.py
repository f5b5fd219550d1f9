"""What the store promises, on any database.

These tests run here on a SQLite file; tests/integration/test_store_postgres.py runs the same
functions on a real PostgreSQL (its own `store`, `reopen` and `clock` fixtures).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from sqlalchemy import func, select

from service.store.models import RunPatient, StoredResult
from service.store.repository import (
    BadCursor,
    InvalidResult,
    NotFound,
    RunStateError,
    Store,
)
from tests.unit.store.helpers import AS_OF, STUDY, Clock, body, fingerprint, save

StoreFactory = Callable[[], Store]


def running_run(store: Store, patients: list[str], *, write_back: bool = False) -> str:
    run = store.create_run(
        "ids", {"ids": patients}, AS_OF, write_back=write_back, patient_ids=patients
    )
    assert store.set_run_status(run.id, "running")
    return run.id


def count_results(store: Store) -> int:
    with store.engine.connect() as connection:
        return int(connection.scalar(select(func.count()).select_from(StoredResult)) or 0)


# -- runs --------------------------------------------------------------------------------------


def test_create_get_and_list_runs(store: Store, clock: Clock) -> None:
    first = store.create_run("search", "Patient?_has:Condition:subject:code=C61", AS_OF)
    clock.advance(minutes=1)
    second = store.create_run("group", {"group": "g1"}, AS_OF, write_back=True)

    again = store.get_run(second.id)
    assert again == second
    assert again is not None
    assert again.status == "queued"
    assert again.write_back is True
    assert again.spec == {"group": "g1"}
    assert again.as_of == AS_OF
    assert again.created_at == clock.now  # the same instant, in UTC
    assert again.created_at.utcoffset() == timedelta(0)
    assert [r.id for r in store.list_runs()] == [second.id, first.id]
    assert [r.id for r in store.list_runs(1)] == [second.id]
    assert store.list_runs(status="running") == []
    assert store.get_run("no-such-run") is None
    assert again.to_dict()["as_of"] == "2026-11-26"


def test_create_run_refuses_unknown_kind_and_datetime_as_of(store: Store, clock: Clock) -> None:
    with pytest.raises(ValueError, match="kind"):
        store.create_run("everyone", {}, AS_OF)
    with pytest.raises(ValueError, match="as_of"):
        store.create_run("ids", {}, clock.now)  # a datetime is a date to the type checker


def test_add_run_patients_is_idempotent_and_keeps_list_order(store: Store) -> None:
    run = store.create_run("search", "Patient?", AS_OF, patient_ids=["p1", "p2"])
    assert store.add_run_patients(run.id, ["p2", "p3", "p3", "p4"]) == 2
    assert store.add_run_patients(run.id, ["p1", "p4"]) == 0
    items, _ = store.run_results(run.id)
    assert [(i["position"], i["patient"], i["state"]) for i in items] == [
        (1, "p1", "pending"),
        (2, "p2", "pending"),
        (3, "p3", "pending"),
        (4, "p4", "pending"),
    ]
    assert store.run_progress(run.id)["total"] == 4


def test_add_run_patients_refuses_finished_and_unknown_runs(store: Store) -> None:
    run_id = running_run(store, ["p1"])
    store.set_run_status(run_id, "failed", "FHIR server unreachable")
    with pytest.raises(RunStateError):
        store.add_run_patients(run_id, ["p2"])
    with pytest.raises(NotFound):
        store.add_run_patients("no-such-run", ["p2"])
    with pytest.raises(ValueError, match="patient id"):
        store.add_run_patients(store.create_run("ids", [], AS_OF).id, ["x" * 300])


def test_status_transitions_stamp_times_and_final_is_final(store: Store, clock: Clock) -> None:
    run = store.create_run("ids", {}, AS_OF, patient_ids=["p1", "p2"])
    clock.advance(seconds=5)
    assert store.set_run_status(run.id, "running")
    assert not store.set_run_status(run.id, "running")
    started = store.get_run(run.id)
    assert started is not None
    assert started.started_at == clock.now
    assert started.finished_at is None

    clock.advance(seconds=5)
    assert store.set_run_status(run.id, "failed", "Group g1 not found")
    failed = store.get_run(run.id)
    assert failed is not None
    assert (failed.status, failed.error, failed.finished_at) == (
        "failed",
        "Group g1 not found",
        clock.now,
    )
    assert failed.counts is not None
    assert failed.counts["total"] == 2
    assert failed.counts["pending"] == 2
    assert not store.set_run_status(run.id, "done")
    assert not store.cancel_run(run.id)
    with pytest.raises(ValueError, match="status"):
        store.set_run_status(run.id, "paused")
    with pytest.raises(NotFound):
        store.set_run_status("no-such-run", "done")


def test_cancel_stops_claims_and_keeps_what_was_done(store: Store) -> None:
    run_id = running_run(store, ["p1", "p2", "p3"])
    (p1,) = store.claim_pending(run_id, 1)
    assert store.cancel_run(run_id)
    assert store.claim_pending(run_id, 10) == []
    # the worker that held p1 still records it
    save(store, run_id, body(p1))
    progress = store.run_progress(run_id)
    assert (progress["done"], progress["pending"]) == (1, 2)
    run = store.get_run(run_id)
    assert run is not None
    assert run.status == "cancelled"
    assert not store.cancel_run(run_id)


def test_complete_run_only_when_no_patient_is_left(store: Store) -> None:
    run_id = running_run(store, ["p1", "p2"])
    p1, p2 = store.claim_pending(run_id, 2)
    save(store, run_id, body(p1))
    assert not store.complete_run(run_id)  # p2 is still claimed
    store.record_patient_failure(run_id, p2, "FHIR server error 500 for Patient/p2")
    assert store.complete_run(run_id)
    assert not store.complete_run(run_id)
    run = store.get_run(run_id)
    assert run is not None
    assert run.status == "done"
    assert run.counts == {
        "total": 2,
        "pending": 0,
        "in_progress": 0,
        "done": 1,
        "failed": 1,
        "candidate": 1,
        "ineligible": 0,
    }


# -- claiming and recording ------------------------------------------------------------------


def test_claim_pending_in_list_order_once_and_only_while_running(store: Store) -> None:
    run = store.create_run("ids", {}, AS_OF, patient_ids=["p3", "p1", "p2"])
    assert store.claim_pending(run.id, 10) == []  # queued: not yet
    store.set_run_status(run.id, "running")
    assert store.claim_pending(run.id, 2) == ["p3", "p1"]
    assert store.claim_pending(run.id, 2) == ["p2"]
    assert store.claim_pending(run.id, 2) == []
    assert store.run_progress(run.id)["in_progress"] == 3
    with pytest.raises(ValueError, match="limit"):
        store.claim_pending(run.id, 0)


def test_first_result_is_a_change_same_content_is_not(store: Store, clock: Clock) -> None:
    run_id = running_run(store, ["p1"])
    store.claim_pending(run_id, 1)
    first = store.record_patient_result(run_id, "p1", body("p1"), fingerprint(body("p1")))
    assert first.changed
    # screened again on another day with the same outcome: stored, but not a change
    clock.advance(days=1)
    later = body("p1", as_of="2026-11-27")
    again = save(store, None, later)
    assert not again.changed
    assert again.result_id != first.result_id
    assert store.latest_result("p1", STUDY) == later

    items, _ = store.changes()
    assert [i["result_id"] for i in items] == [first.result_id]


def test_changed_content_gets_the_next_change_seq(store: Store) -> None:
    a = save(store, None, body("p1"))
    b = save(store, None, body("p2"))
    same = save(store, None, body("p1"))
    c = save(store, None, body("p1", ruled_out_by=("age",)))
    assert (a.changed, b.changed, same.changed, c.changed) == (True, True, False, True)
    items, _ = store.changes()
    assert [(i["seq"], i["result_id"]) for i in items] == [
        (1, a.result_id),
        (2, b.result_id),
        (3, c.result_id),
    ]
    assert items[2]["status"] == "ineligible"
    assert items[2]["result"]["status"] == "ineligible"
    assert items[2]["fingerprint"] == fingerprint(body("p1", ruled_out_by=("age",)))
    with store.engine.connect() as connection:
        seq = connection.scalar(
            select(StoredResult.change_seq).where(StoredResult.id == same.result_id)
        )
    assert seq is None


def test_record_marks_the_run_patient_done_with_its_result(store: Store) -> None:
    run_id = running_run(store, ["p1", "p2"])
    store.claim_pending(run_id, 2)
    recorded = save(store, run_id, body("p1", ruled_out_by=("sex",)))
    items, _ = store.run_results(run_id)
    assert items[0] == {
        "position": 1,
        "patient": "p1",
        "state": "done",
        "error": None,
        "result_id": recorded.result_id,
        "result": body("p1", ruled_out_by=("sex",)),
    }
    assert items[1]["state"] == "claimed"
    assert items[1]["result"] is None


def test_record_for_a_patient_not_in_the_run_stores_nothing(store: Store) -> None:
    run_id = running_run(store, ["p1"])
    with pytest.raises(NotFound, match="p9"):
        save(store, run_id, body("p9"))
    assert count_results(store) == 0
    assert store.latest_result("p9", STUDY) is None
    assert store.changes()[0] == []


def test_record_refuses_a_result_of_another_patient_without_quoting_it(store: Store) -> None:
    other = body("p2", reason="Mr Smith, 71, Gleason 9")
    with pytest.raises(InvalidResult) as raised:
        store.record_patient_result(None, "p1", other, fingerprint(other))
    assert "Smith" not in str(raised.value)
    for broken in ({**body("p1"), "status": "maybe"}, {**body("p1"), "as_of": "soon"}):
        with pytest.raises(InvalidResult):
            store.record_patient_result(None, "p1", broken, fingerprint(broken))


def test_record_refuses_a_missing_or_oversized_fingerprint(store: Store) -> None:
    for bad in ("", "f" * 129):
        with pytest.raises(InvalidResult, match="fingerprint"):
            store.record_patient_result(None, "p1", body("p1"), bad)
    assert count_results(store) == 0


def test_failed_patient_is_recorded_with_its_reason_and_the_run_goes_on(store: Store) -> None:
    run_id = running_run(store, ["p1", "p2", "p3"])
    p1, p2 = store.claim_pending(run_id, 2)
    store.record_patient_failure(run_id, p1, "FHIR server timeout reading Patient/p1")
    save(store, run_id, body(p2, ruled_out_by=("age",)))
    assert store.claim_pending(run_id, 5) == ["p3"]
    items, _ = store.run_results(run_id)
    assert (items[0]["state"], items[0]["error"]) == (
        "failed",
        "FHIR server timeout reading Patient/p1",
    )
    assert store.run_progress(run_id) == {
        "total": 3,
        "pending": 0,
        "in_progress": 1,
        "done": 1,
        "failed": 1,
        "candidate": 0,
        "ineligible": 1,
    }
    with pytest.raises(NotFound):
        store.record_patient_failure(run_id, "p9", "whatever")
    store.record_patient_failure(run_id, "p3", "x" * 5000)
    assert len(store.run_results(run_id)[0][2]["error"] or "") == 1000


def test_progress_of_an_unknown_run(store: Store) -> None:
    with pytest.raises(NotFound):
        store.run_progress("no-such-run")
    with pytest.raises(NotFound):
        store.run_results("no-such-run")
    with pytest.raises(NotFound):
        store.attrition("no-such-run")


# -- results of a run ------------------------------------------------------------------------


def test_run_results_pages_by_cursor_in_list_order(store: Store) -> None:
    patients = [f"p{i}" for i in range(1, 8)]
    run_id = running_run(store, patients)
    for patient in store.claim_pending(run_id, 7):
        ruled_out = ("age",) if patient in ("p2", "p5") else ()
        save(store, run_id, body(patient, ruled_out_by=ruled_out))

    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        items, cursor = store.run_results(run_id, cursor, limit=3)
        seen += [i["patient"] for i in items]
        pages += 1
        if cursor is None:
            break
    assert seen == patients
    assert pages == 3

    ineligible, after = store.run_results(run_id, limit=10, status="ineligible")
    assert [i["patient"] for i in ineligible] == ["p2", "p5"]
    assert after is None


def test_run_results_refuses_bad_and_foreign_cursors(store: Store) -> None:
    run_a = running_run(store, ["p1", "p2"])
    run_b = running_run(store, ["p1", "p2"])
    _, cursor_a = store.run_results(run_a, limit=1)
    assert cursor_a is not None
    for bad in ("", "not a cursor", "%%%", "AAAA", cursor_a[:10]):
        with pytest.raises(BadCursor):
            store.run_results(run_a, bad)
    with pytest.raises(BadCursor, match="another"):
        store.run_results(run_b, cursor_a)
    _, changes_cursor = store.changes()
    with pytest.raises(BadCursor):
        store.run_results(run_a, changes_cursor)
    assert isinstance(BadCursor("x"), ValueError)


def test_attrition_counts_per_criterion_from_stored_results(store: Store) -> None:
    run_id = running_run(store, ["p1", "p2", "p3", "p4", "p5"])
    store.claim_pending(run_id, 5)
    save(store, run_id, body("p1"))
    save(store, run_id, body("p2", ruled_out_by=("histology",)))
    save(store, run_id, body("p3", ruled_out_by=("histology", "age")))
    save(store, run_id, body("p4", ruled_out_by=("age",), unknown=("sex",)))
    store.record_patient_failure(run_id, "p5", "FHIR server error 503")

    summary = store.attrition(run_id)
    assert (summary["screened"], summary["candidate"], summary["ineligible"]) == (4, 1, 3)
    assert summary["failed"] == 1
    rows = {row["id"]: row for row in summary["criteria"]}
    assert [row["id"] for row in summary["criteria"]][:3] == [
        "consent",
        "histology",
        "oligoprogression",
    ]
    assert rows["histology"] == {
        "id": "histology",
        "kind": "inclusion",
        "met": 2,
        "not-met": 2,
        "unknown": 0,
        "manual": 0,
        "ruled_out": 2,
        "left": 2,
    }
    assert (rows["age"]["not-met"], rows["age"]["ruled_out"], rows["age"]["left"]) == (2, 2, 1)
    assert (rows["sex"]["unknown"], rows["sex"]["left"]) == (1, 1)
    assert rows["deceased"] == {
        "id": "deceased",
        "kind": "exclusion",
        "met": 0,
        "not-met": 4,
        "unknown": 0,
        "manual": 0,
        "ruled_out": 0,
        "left": 1,
    }


# -- restart ---------------------------------------------------------------------------------


def test_a_run_survives_a_restart_and_resumes(
    store: Store, reopen: StoreFactory, clock: Clock
) -> None:
    run_id = running_run(store, ["p1", "p2", "p3", "p4"])
    done, interrupted = store.claim_pending(run_id, 2)
    save(store, run_id, body(done))
    finished = store.create_run("ids", {}, AS_OF, patient_ids=["p1"])
    store.cancel_run(finished.id)
    store.close()  # the service stops while p2 is being screened

    clock.advance(minutes=3)
    restarted = reopen()
    restarted.migrate()
    resumed = restarted.interrupted_runs()
    assert [run.id for run in resumed] == [run_id]
    assert resumed[0].status == "running"
    assert restarted.run_progress(run_id) == {
        "total": 4,
        "pending": 3,
        "in_progress": 0,
        "done": 1,
        "failed": 0,
        "candidate": 1,
        "ineligible": 0,
    }
    assert restarted.claim_pending(run_id, 10) == [interrupted, "p3", "p4"]
    with restarted.engine.connect() as connection:
        attempts = connection.scalar(
            select(RunPatient.attempts).where(
                RunPatient.run_id == run_id, RunPatient.patient_id == interrupted
            )
        )
    assert attempts == 2


def test_resume_gives_up_on_a_patient_interrupted_too_often(store: Store, clock: Clock) -> None:
    run_id = running_run(store, ["p1", "p2"])
    for _ in range(2):
        store.claim_pending(run_id, 1)
        clock.advance(seconds=61)  # the lease runs out: no heartbeat came
        store.interrupted_runs(max_attempts=3)
    assert store.claim_pending(run_id, 1) == ["p1"]  # third attempt
    clock.advance(seconds=61)
    store.interrupted_runs(max_attempts=3)
    items, _ = store.run_results(run_id)
    assert items[0]["state"] == "failed"
    assert "interrupted 3 times" in (items[0]["error"] or "")
    assert store.claim_pending(run_id, 5) == ["p2"]


def test_resume_with_a_lease_leaves_fresh_claims_alone(store: Store, clock: Clock) -> None:
    run_id = running_run(store, ["p1", "p2"])
    store.claim_pending(run_id, 1)
    clock.advance(minutes=10)
    store.claim_pending(run_id, 1)
    store.interrupted_runs(stale_before=clock.now - timedelta(minutes=5))
    assert [i["state"] for i in store.run_results(run_id)[0]] == ["pending", "claimed"]
    with pytest.raises(ValueError, match="aware"):
        store.interrupted_runs(stale_before=clock.now.replace(tzinfo=None))


def test_queued_runs_are_resumed_too(store: Store) -> None:
    queued = store.create_run("group", {"group": "g1"}, AS_OF)
    assert [run.id for run in store.interrupted_runs()] == [queued.id]


# -- latest result and changes feed ----------------------------------------------------------


def test_latest_result_per_patient_and_study(store: Store) -> None:
    save(store, None, body("p1"))
    save(store, None, body("p1", ruled_out_by=("age",)))
    save(store, None, body("p1", study="NCT-OTHER"))
    assert store.latest_result("p1", STUDY) == body("p1", ruled_out_by=("age",))
    assert store.latest_result("p1", "NCT-OTHER") == body("p1", study="NCT-OTHER")
    assert store.latest_result("p2", STUDY) is None


def test_changes_feed_pages_once_each_and_waits_at_the_end(store: Store) -> None:
    recorded = [save(store, None, body(f"p{i}")).result_id for i in range(5)]
    seen: list[int] = []
    cursor: str | None = None
    for _ in range(3):
        items, cursor = store.changes(cursor, limit=2)
        seen += [i["result_id"] for i in items]
    assert seen == recorded
    empty, same = store.changes(cursor, limit=2)
    assert (empty, same) == ([], cursor)

    newer = save(store, None, body("p0", ruled_out_by=("sex",)))
    items, _ = store.changes(cursor)
    assert [i["result_id"] for i in items] == [newer.result_id]


def test_changes_head_starts_after_what_exists(store: Store) -> None:
    save(store, None, body("p1"))
    head = store.changes_head()
    assert store.changes(head) == ([], head)
    later = save(store, None, body("p2"))
    assert [i["result_id"] for i in store.changes(head)[0]] == [later.result_id]


def test_changes_refuses_a_malformed_cursor(store: Store) -> None:
    run_id = running_run(store, ["p1", "p2"])
    _, run_cursor = store.run_results(run_id, limit=1)
    assert run_cursor is not None
    for bad in ("garbage!", "YzE6Oi0x", "Yz" * 200, run_cursor):
        with pytest.raises(BadCursor):
            store.changes(bad)
    with pytest.raises(ValueError, match="limit"):
        store.changes(None, 5000)


# -- write-back outbox -----------------------------------------------------------------------


def test_write_back_is_queued_with_the_result_when_the_run_asks(store: Store) -> None:
    quiet = running_run(store, ["p2"])
    store.claim_pending(quiet, 1)
    save(store, quiet, body("p2"))
    assert store.outbox_counts()["pending"] == 0
    run_id = running_run(store, ["p1"], write_back=True)
    store.claim_pending(run_id, 1)
    recorded = save(store, run_id, body("p1"))
    (entry,) = store.due_writebacks(limit=10)
    assert (entry.patient_id, entry.study, entry.result_id, entry.attempts) == (
        "p1",
        STUDY,
        recorded.result_id,
        1,
    )
    assert entry.result == body("p1")
    assert entry.fingerprint == fingerprint(body("p1"))


def test_newer_result_supersedes_a_pending_write_back(store: Store) -> None:
    old = save(store, None, body("p1"))
    new_body = body("p1", ruled_out_by=("age",))
    new = save(store, None, new_body)
    old_entry = store.enqueue_writeback("p1", old.result_id, fingerprint(body("p1")))
    new_entry = store.enqueue_writeback("p1", new.result_id, fingerprint(new_body))
    assert old_entry is not None and new_entry is not None and new_entry != old_entry
    assert store.outbox_counts() == {"pending": 1, "done": 0, "failed": 0, "skipped": 1}
    # an older result does not push out the newer pending one, nor does the same content
    assert store.enqueue_writeback("p1", old.result_id, fingerprint(body("p1"))) == new_entry
    assert store.enqueue_writeback("p1", new.result_id, fingerprint(new_body)) == new_entry
    (due,) = store.due_writebacks()
    assert (due.id, due.result_id) == (new_entry, new.result_id)
    # the superseded entry, if a writer still held it, is not revived
    assert not store.mark_writeback_done(old_entry)
    assert store.mark_writeback_done(new_entry)
    assert store.outbox_counts() == {"pending": 0, "done": 1, "failed": 0, "skipped": 1}
    # already written with this content: nothing to queue
    again = save(store, None, new_body, write_back=True)
    assert not again.changed
    assert store.enqueue_writeback("p1", again.result_id, fingerprint(new_body)) is None
    assert store.outbox_counts()["pending"] == 0


def test_an_older_result_never_overwrites_a_newer_one_on_the_server(store: Store) -> None:
    old = save(store, None, body("p1"))
    new_body = body("p1", ruled_out_by=("age",))
    new = save(store, None, new_body, write_back=True)
    (entry,) = store.due_writebacks()
    assert entry.result_id == new.result_id
    store.mark_writeback_done(entry.id)
    assert store.enqueue_writeback("p1", old.result_id, fingerprint(body("p1"))) is None
    assert store.outbox_counts()["pending"] == 0


def test_failed_write_back_is_retried_when_due_then_given_up(store: Store, clock: Clock) -> None:
    save(store, None, body("p1"), write_back=True)
    (entry,) = store.due_writebacks(limit=5)
    assert store.due_writebacks(limit=5) == []  # leased to the writer that has it
    retry_at = clock.now + timedelta(minutes=2)
    assert store.mark_writeback_failed(entry.id, "FHIR server unreachable", retry_at)
    assert store.due_writebacks(clock.now + timedelta(minutes=1)) == []
    (again,) = store.due_writebacks(retry_at)
    assert (again.id, again.attempts) == (entry.id, 2)
    assert store.mark_writeback_failed(again.id, "HTTP 422 ResearchSubject rejected", None)
    assert store.outbox_counts()["failed"] == 1
    assert store.due_writebacks(retry_at + timedelta(days=1)) == []
    assert not store.mark_writeback_done(entry.id)
    with pytest.raises(NotFound):
        store.mark_writeback_done(999)
    with pytest.raises(ValueError, match="aware"):
        store.mark_writeback_failed(entry.id, "x", retry_at.replace(tzinfo=None))


def test_a_writer_that_dies_gets_its_entry_back_after_the_lease(store: Store, clock: Clock) -> None:
    save(store, None, body("p1"), write_back=True)
    (entry,) = store.due_writebacks(lease=timedelta(minutes=5))
    assert store.due_writebacks(clock.now + timedelta(minutes=4)) == []
    (again,) = store.due_writebacks(clock.now + timedelta(minutes=6))
    assert again.id == entry.id


def test_enqueue_checks_the_result(store: Store) -> None:
    recorded = save(store, None, body("p1"))
    with pytest.raises(NotFound):
        store.enqueue_writeback("p2", recorded.result_id, fingerprint(body("p1")))
    with pytest.raises(ValueError, match="fingerprint"):
        store.enqueue_writeback("p1", recorded.result_id, "0" * 64)


def test_ping_and_schema_revision(store: Store) -> None:
    assert store.ping()
    assert store.schema_revision() == "0006"
