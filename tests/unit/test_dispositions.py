"""Coordinators' entries (issue 15 item 3): dispositions and manual answers kept apart from the
automatic result, append-only, each write naming the version it was based on."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from service.dispositions import (
    MANUAL_CRITERIA,
    MAX_NOTE_CHARS,
    Disposition,
    InvalidEntry,
    Reviews,
    StaleVersion,
    UnknownCriterion,
    VersionRequired,
    parse_version,
)
from service.mapping.load import load_mappings
from service.screening.result import ScreenResult
from service.store.repository import Store
from service.writeback.fingerprint import fingerprint as written_fingerprint
from service.writeback.subject import DISPOSITION_STATUS, build_research_subject, subject_status
from tests.unit.conftest import StoreFactory
from tests.unit.store.helpers import STUDY, Clock, body, save
from tests.unit.writeback.sample import RESEARCH_SUBJECT_STATUSES, make_result


@pytest.fixture
def reviews(store: Store) -> Reviews:
    return Reviews(store, STUDY)


def test_the_manual_criteria_are_the_five_of_the_registry_in_order() -> None:
    assert MANUAL_CRITERIA == (
        "consent", "compliance", "tumour-board", "sbrt-contraindicated", "unable-to-consent",
    )  # fmt: skip


def test_a_disposition_is_recorded_with_who_when_and_a_note(reviews: Reviews, clock: Clock) -> None:
    assert reviews.review("p1").version == 0 and reviews.review("p1").disposition is None
    review = reviews.set_disposition("p1", 0, code="contacted", author="alice", note="phoned")
    entry = review.disposition
    assert review.version == 1 and entry is not None
    assert (entry.code, entry.author, entry.note) == ("contacted", "alice", "phoned")
    assert entry.recorded_at == clock.now


def test_history_is_append_only_and_the_current_entry_is_the_newest(
    reviews: Reviews, clock: Clock
) -> None:
    reviews.set_disposition("p1", 0, code="under-review", author="alice")
    clock.advance(minutes=5)
    reviews.answer("p1", "consent", 1, answer="met", author="bob", note="signed")
    clock.advance(minutes=5)
    review = reviews.set_disposition("p1", 2, code="not-eligible", author="bob", reason="moved")
    assert review.version == 3
    assert review.disposition is not None and review.disposition.code == "not-eligible"
    assert review.disposition.reason == "moved"
    assert list(review.answers) == ["consent"] and review.answers["consent"].code == "met"
    assert [e.version for e in review.entries] == [3, 2, 1]
    assert [item["code"] for item in reviews.history("p1")] == [
        "not-eligible",
        "met",
        "under-review",
    ]


def test_a_stale_version_is_refused_naming_the_current_one_and_its_author(
    reviews: Reviews,
) -> None:
    reviews.set_disposition("p1", 0, code="contacted", author="alice")
    with pytest.raises(StaleVersion) as stale:
        reviews.set_disposition("p1", 0, code="deferred", author="bob")
    assert stale.value.version == 1 and stale.value.author == "alice"
    assert "current version is 1 by alice" in str(stale.value)
    current = reviews.review("p1")
    assert current.version == 1 and current.disposition is not None
    assert current.disposition.code == "contacted"
    with pytest.raises(StaleVersion):
        reviews.answer("p1", "consent", 5, answer="met", author="bob")


@pytest.mark.parametrize(
    ("code", "reason", "note", "field"),
    [
        ("maybe", None, None, "code"),
        ("not-eligible", None, None, "reason"),
        ("not-eligible", "  ", None, "reason"),
        ("contacted", None, "x" * (MAX_NOTE_CHARS + 1), "note"),
        ("not-eligible", "x" * (MAX_NOTE_CHARS + 1), None, "reason"),
    ],
)
def test_bad_entries_name_the_field_and_keep_nothing(
    reviews: Reviews, code: str, reason: str | None, note: str | None, field: str
) -> None:
    with pytest.raises(InvalidEntry) as invalid:
        reviews.set_disposition("p1", 0, code=code, author="a", reason=reason, note=note)
    assert invalid.value.field == field
    assert reviews.review("p1").version == 0


def test_manual_answers_take_only_manual_criteria_and_met_or_not_met(reviews: Reviews) -> None:
    with pytest.raises(UnknownCriterion):
        reviews.answer("p1", "histology", 0, answer="met", author="a")
    with pytest.raises(InvalidEntry) as invalid:
        reviews.answer("p1", "consent", 0, answer="yes", author="a")
    assert invalid.value.field == "answer"
    review = reviews.answer("p1", "tumour-board", 0, answer="not-met", author="a")
    assert review.answers["tumour-board"].code == "not-met"
    assert review.to_dict()["manual_answers"]["tumour-board"]["by"] == "a"


def test_a_rescreen_never_erases_entries_and_history_merges_result_changes(
    store: Store, reviews: Reviews, clock: Clock
) -> None:
    save(store, None, body("Patient/p1"))
    clock.advance(minutes=1)
    reviews.set_disposition("p1", 0, code="eligible", author="alice")
    clock.advance(minutes=1)
    save(store, None, body("Patient/p1", ruled_out_by=("age",)))
    review = reviews.review("p1")
    assert review.disposition is not None and review.disposition.code == "eligible"
    history = reviews.history("p1")
    assert [item["type"] for item in history] == ["result", "disposition", "result"]
    assert history[0]["status"] == "ineligible" and history[0]["previous_status"] == "candidate"


@pytest.mark.parametrize(("header", "version"), [('"3"', 3), ('W/"3"', 3), ("3", 3), ('"abc"', -1)])
def test_if_match_headers(header: str, version: int) -> None:
    assert parse_version(header) == version


@pytest.mark.parametrize("header", [None, "", "  "])
def test_a_missing_if_match_is_its_own_error(header: str | None) -> None:
    with pytest.raises(VersionRequired):
        parse_version(header)


@pytest.mark.parametrize(
    ("automatic", "disposition", "status"),
    [
        ("candidate", None, "candidate"),
        ("ineligible", "new", "ineligible"),
        ("candidate", "not-eligible", "ineligible"),
        ("ineligible", "enrolled", "on-study"),
        ("candidate", "declined", "not-registered"),
        ("candidate", "deferred", "potential-candidate"),
    ],
)
def test_people_s_status_is_never_downgraded_by_an_automatic_result(
    automatic: str, disposition: str | None, status: str
) -> None:
    assert subject_status(automatic, disposition) == status


def test_every_disposition_maps_onto_an_r4_status() -> None:
    assert set(DISPOSITION_STATUS) == {d.value for d in Disposition}
    assert {s for s in DISPOSITION_STATUS.values() if s} <= RESEARCH_SUBJECT_STATUSES


def test_the_research_subject_carries_the_disposition_s_status() -> None:
    result, params = make_result(), load_mappings().parameters
    assert build_research_subject(result, params, "ResearchStudy/1")["status"] == "candidate"
    subject = build_research_subject(result, params, "ResearchStudy/1", disposition="enrolled")
    assert subject["status"] == "on-study"


def test_two_writers_from_the_same_version_one_wins_the_other_is_told(
    store: Store, reopen: StoreFactory
) -> None:
    other = reopen()  # a second Store on the same database, as a second process would be
    barrier = threading.Barrier(2)

    def write(reviews: Reviews, code: str) -> str:
        barrier.wait()
        try:
            reviews.set_disposition("p1", 0, code=code, author=code)
        except StaleVersion:
            return "stale"
        return "recorded"

    with ThreadPoolExecutor(2) as pool:
        outcomes = sorted(pool.map(write, [Reviews(store, STUDY), Reviews(other, STUDY)],
                                   ["contacted", "deferred"]))  # fmt: skip
    assert outcomes == ["recorded", "stale"]
    assert [e.version for e in Reviews(store, STUDY).review("p1").entries] == [1]


# ---- the disposition in the write-back queue and the changes feed (issue 15 item 3) ----------


def _screen(store: Store, result: dict[str, Any], write_back: bool = True) -> None:
    """Record as the runtime does: the decision's fingerprint, written back."""
    decided = written_fingerprint(ScreenResult.from_dict(result))
    store.record_patient_result(None, result["patient"], result, decided, write_back=write_back)


def _pending(store: Store) -> list[str]:
    return [e.fingerprint for e in store.due_writebacks(limit=50, lease=timedelta(0))]


def _write_all(store: Store) -> None:
    for entry in store.due_writebacks(limit=50):
        store.mark_writeback_done(entry.id)


def test_recording_a_disposition_queues_exactly_one_write_back_and_the_same_one_none(
    store: Store, reviews: Reviews, clock: Clock
) -> None:
    result = body("Patient/p1")
    _screen(store, result)
    _write_all(store)
    review = reviews.set_disposition("p1", 0, code="contacted", author="alice")
    with_disposition = written_fingerprint(ScreenResult.from_dict(result), "contacted")
    assert _pending(store) == [with_disposition]
    review = reviews.set_disposition("p1", review.version, code="contacted", author="bob")
    assert _pending(store) == [with_disposition]  # nothing more queued
    _write_all(store)
    reviews.set_disposition("p1", review.version, code="contacted", author="carol")
    assert _pending(store) == []  # the server has it
    clock.advance(minutes=1)
    _screen(store, body("Patient/p1"))  # the same decision again
    assert _pending(store) == []


def test_a_disposition_queues_nothing_for_a_patient_never_written_back(
    store: Store, reviews: Reviews
) -> None:
    _screen(store, body("Patient/p1"), write_back=False)
    reviews.set_disposition("p1", 0, code="contacted", author="alice")
    assert _pending(store) == []


def test_each_feed_entry_carries_the_disposition_current_at_its_time(
    store: Store, reviews: Reviews, clock: Clock
) -> None:
    _screen(store, body("Patient/p1"))
    clock.advance(minutes=1)
    reviews.set_disposition("p1", 0, code="contacted", author="alice")
    clock.advance(minutes=1)
    _screen(store, body("Patient/p1", ruled_out_by=("age",)))
    first, second = store.changes()[0]
    assert first["disposition"] is None
    assert second["disposition"] is not None
    assert (second["disposition"]["code"], second["disposition"]["by"]) == ("contacted", "alice")
    assert len(store.changes()[0]) == 2  # recording made no feed entry of its own
