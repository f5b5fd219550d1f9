"""The coordinators' disposition in the write-back (issue 15 item 3): it sets the status, it is
part of the WRITTEN fingerprint only, and statuses people set through us stay ours to update
while another system's status is still left alone."""

from __future__ import annotations

import pytest

from service.mapping.model import Parameters
from service.screening.result import Status
from service.writeback.fingerprint import fingerprint
from service.writeback.subject import (
    DISPOSITION_STATUS,
    people_statuses,
    stored_fingerprint,
)
from service.writeback.transaction import build_transaction, plan_write
from tests.unit.writeback.sample import ineligible_result, make_result
from tests.unit.writeback.test_transaction import BASE, NOW, STUDY


def _written(params: Parameters, disposition: str | None = None) -> dict[str, object]:
    bundle = build_transaction(make_result(), params, STUDY, NOW, disposition)
    subject: dict[str, object] = bundle["entry"][0]["resource"]
    return subject


def test_no_disposition_and_new_keep_the_decision_s_fingerprint() -> None:
    result = make_result()
    assert fingerprint(result, None) == fingerprint(result, "new") == fingerprint(result)


@pytest.mark.parametrize("disposition", [d for d in DISPOSITION_STATUS if d != "new"])
def test_every_other_disposition_changes_the_written_fingerprint_only(disposition: str) -> None:
    result = make_result()
    assert fingerprint(result, disposition) != fingerprint(result)
    assert fingerprint(result, disposition) == fingerprint(make_result(), disposition)


def test_two_dispositions_with_the_same_status_still_differ() -> None:
    result = make_result()
    assert fingerprint(result, "contacted") != fingerprint(result, "under-review")


def test_the_written_subject_carries_the_mapped_status_and_the_written_fingerprint(
    params: Parameters,
) -> None:
    subject = _written(params, "contacted")
    assert subject["status"] == "screening"
    assert stored_fingerprint(subject, BASE) == fingerprint(make_result(), "contacted")
    assert _written(params)["status"] == "candidate"


def test_recording_a_disposition_writes_once_and_the_same_one_again_writes_nothing(
    params: Parameters,
) -> None:
    stored = _written(params)  # the automatic write
    first = plan_write(make_result(), stored, False, canonical_base=BASE, disposition="contacted")
    assert first.outcome == "write"
    stored = _written(params, "contacted")
    again = plan_write(
        make_result(),
        stored,
        False,
        canonical_base=BASE,
        disposition="contacted",
        set_by_people=people_statuses(["contacted"]),
    )
    assert again.outcome == "unchanged"


def test_a_status_people_set_through_us_is_ours_another_system_s_is_not(
    params: Parameters,
) -> None:
    stored = _written(params, "contacted")  # status screening, written by us
    later = plan_write(
        make_result(),
        stored,
        False,
        canonical_base=BASE,
        disposition="enrolled",
        set_by_people=people_statuses(["enrolled", "contacted"]),
    )
    assert later.outcome == "write"
    foreign = plan_write(make_result(), {**stored, "status": "on-study"}, False,
                         canonical_base=BASE, disposition="contacted",
                         set_by_people=people_statuses(["contacted"]))  # fmt: skip
    assert foreign.outcome == "skip-managed"
    # without dispositions recorded through us, screening is another system's, as before
    assert plan_write(make_result(), stored, False, canonical_base=BASE).outcome == "skip-managed"


def test_an_automatic_screen_never_sets_people_s_status_back(params: Parameters) -> None:
    changed = ineligible_result()
    assert changed.status is Status.INELIGIBLE
    bundle = build_transaction(changed, params, STUDY, NOW, "eligible")
    assert bundle["entry"][0]["resource"]["status"] == "eligible"
    bundle = build_transaction(make_result(), params, STUDY, NOW, "not-eligible")
    assert bundle["entry"][0]["resource"]["status"] == "ineligible"


def test_an_ineligible_patient_with_a_disposition_is_written(params: Parameters) -> None:
    result = ineligible_result()
    assert plan_write(result, None, False, canonical_base=BASE).outcome == "skip-ineligible"
    decision = plan_write(result, None, False, canonical_base=BASE, disposition="contacted")
    assert decision.outcome == "write"


def test_people_statuses_are_those_the_dispositions_map_to() -> None:
    assert people_statuses(["new", "contacted", "enrolled"]) == {"screening", "on-study"}
    assert people_statuses([]) == frozenset()
