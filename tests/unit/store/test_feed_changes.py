"""The changes feed says what changed (issue 14 item 4; fhir-contract.md "What the current result
is"): an entry only when the decision changes, with the previous and the new status, the
criteria that changed, the trigger and the source. Real screen results and the project's
fingerprint, on the embedded SQLite store.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from service.screening.result import Evidence, Result, ScreenResult, Status
from service.store.errors import InvalidResult
from service.store.repository import Recorded, Store
from service.writeback.fingerprint import fingerprint
from tests.unit.store.helpers import AS_OF, Clock
from tests.unit.writeback.sample import PATIENT, ineligible_result, make_result, with_criterion

SERVER = "http://hapi.test/fhir"


def record(
    store: Store,
    result: ScreenResult,
    *,
    trigger: str | None = None,
    source: str | None = None,
    write_back: bool | None = None,
) -> Recorded:
    return store.record_patient_result(
        None,
        result.patient,
        result.to_dict(),
        fingerprint(result),
        write_back=write_back,
        trigger=trigger,
        source=source,
    )


def new_patient_version(result: ScreenResult) -> ScreenResult:
    """The same decision read after a phone-number edit: the age criterion cites Patient v2."""
    return with_criterion(
        result, "age", evidence=(Evidence(f"{PATIENT}/_history/2", "Born 1950-03-01"),)
    )


def test_same_decision_with_new_evidence_versions_is_one_entry(store: Store) -> None:
    first = record(store, make_result(), trigger="request", source=SERVER)
    again = record(store, new_patient_version(make_result()), trigger="sweep", source=SERVER)
    assert (first.changed, again.changed) == (True, False)
    items, _ = store.changes()
    assert [i["result_id"] for i in items] == [first.result_id]
    # the screen is kept and is the current result (its as_of says how current it is) ...
    latest = store.latest_result(PATIENT, "NCT06585007")
    assert latest == new_patient_version(make_result()).to_dict()


def test_same_decision_queues_no_new_write_back(store: Store) -> None:
    first = record(store, make_result(), write_back=True)
    (entry,) = store.due_writebacks()
    store.mark_writeback_done(entry.id)
    record(store, new_patient_version(make_result()), write_back=True)
    assert entry.result_id == first.result_id
    assert store.due_writebacks() == []


def test_first_entry_has_no_previous_status_and_every_criterion(store: Store) -> None:
    result = make_result()
    record(store, result, trigger="request", source=SERVER)
    (item,) = store.changes()[0]
    assert item["previous_status"] is None
    assert item["status"] == "candidate"
    assert item["changed_criteria"] == [c.id for c in result.criteria]
    assert (item["trigger"], item["source"]) == ("request", SERVER)


def test_status_change_names_previous_status_and_changed_criteria(store: Store) -> None:
    record(store, make_result(), trigger="request", source="files:fixtures")
    record(store, ineligible_result(), trigger="subscription", source=SERVER)
    items, _ = store.changes()
    assert len(items) == 2
    change = items[1]
    assert (change["previous_status"], change["status"]) == ("candidate", "ineligible")
    assert change["changed_criteria"] == ["castrate-testosterone", "performance-status"]
    assert (change["trigger"], change["source"]) == ("subscription", SERVER)


def test_a_reason_change_alone_is_an_entry_naming_that_criterion(store: Store) -> None:
    record(store, make_result())
    reworded = with_criterion(make_result(), "age", reason="Age 76 on 2026-11-26.")
    assert record(store, reworded).changed
    change = store.changes()[0][-1]
    assert (change["previous_status"], change["status"]) == ("candidate", "candidate")
    assert change["changed_criteria"] == ["age"]


def test_a_rules_version_change_is_an_entry_with_no_criterion_changed(store: Store) -> None:
    record(store, make_result(rules_version="medcare-1"))
    assert record(store, make_result()).changed
    assert store.changes()[0][-1]["changed_criteria"] == []


def test_a_later_day_quoted_in_reasons_is_not_a_changed_criterion(
    store: Store, clock: Clock
) -> None:
    """Reasons quote the screening day; a status change a day later lists only what changed."""
    record(store, with_criterion(make_result(), "age", reason="Age 76 on 2026-11-26."))
    clock.advance(days=1)
    later = with_criterion(
        with_criterion(
            make_result(as_of="2026-11-27", status=Status.INELIGIBLE),
            "age",
            reason="Age 76 on 2026-11-27.",
        ),
        "deceased",
        result=Result.MET,
        reason="Died on 2026-11-27.",
    )
    assert record(store, replace(later, patient_type=None)).changed
    assert store.changes()[0][-1]["changed_criteria"] == ["deceased"]


def test_a_run_patient_defaults_to_the_run_trigger(store: Store) -> None:
    run = store.create_run("ids", {"ids": [PATIENT]}, AS_OF, patient_ids=[PATIENT])
    store.set_run_status(run.id, "running")
    store.claim_pending(run.id, 1)
    result = make_result()
    store.record_patient_result(run.id, PATIENT, result.to_dict(), fingerprint(result))
    assert store.changes()[0][0]["trigger"] == "run"


def test_an_unknown_trigger_is_refused(store: Store) -> None:
    with pytest.raises(InvalidResult, match="unknown trigger"):
        record(store, make_result(), trigger="cron")


def test_a_quoted_version_alone_is_no_change(store: Store) -> None:
    """Files quote "Observation/9", the server "Observation/9/_history/1": the same reason."""

    def quoting(reference: str, status: Status = Status.CANDIDATE) -> ScreenResult:
        reason = f"Testosterone 20 ng/dL. Not used: {reference} (entered in error)."
        return with_criterion(make_result(status=status), "castrate-testosterone", reason=reason)

    record(store, quoting("Observation/9"), source="files:fixtures")
    assert not record(store, quoting("Observation/9/_history/1"), source=SERVER).changed
    assert record(store, quoting("Observation/9/_history/2", Status.INELIGIBLE)).changed
    change = store.changes()[0][-1]
    assert (change["previous_status"], change["changed_criteria"]) == ("candidate", [])
