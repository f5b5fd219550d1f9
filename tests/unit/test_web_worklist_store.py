"""The worklist's queries (service/store/worklist.py): current results only, filters, sorting,
paging, when the decision last changed; and the page's query time at 10,000 results (printed,
never asserted)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from service.store.models import ChangeCounter, LatestResult, ReviewEntry, StoredResult
from service.store.repository import Store, create_store
from service.store.worklist import WorklistQuery
from tests.unit.store.helpers import STUDY, Clock, body, fingerprint, save


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(tmp_path: Path, clock: Clock) -> Store:
    store = create_store(f"sqlite:///{tmp_path / 'store.sqlite3'}", clock=clock)
    store.migrate()
    return store


def query(**kwargs: object) -> WorklistQuery:
    return WorklistQuery(study=STUDY, **kwargs)  # type: ignore[arg-type]


def test_current_results_with_status_type_missing_and_change_time(
    store: Store, clock: Clock
) -> None:
    first = clock.now
    save(store, None, body("Patient/a"))
    clock.advance(hours=1)
    missing = body("Patient/b", unknown=("castrate-testosterone",))
    missing["missing_data"] = ["castrate-testosterone"]
    missing["needs_review"] = ["castrate-testosterone", "consent"]
    save(store, None, missing)
    clock.advance(hours=1)
    save(store, None, body("Patient/c", ruled_out_by=("deceased",)))

    page = store.worklist(query())
    assert [r.patient for r in page.rows] == ["Patient/c", "Patient/b", "Patient/a"]
    assert page.total == 3 and not page.has_next
    assert page.counts == {"candidate": 2, "ineligible": 1}
    b = page.rows[1]
    assert (b.status, b.patient_type, b.missing_data) == (
        "candidate",
        1,
        ("castrate-testosterone",),
    )
    assert b.needs_review == ("castrate-testosterone", "consent")
    assert page.rows[2].changed_at == first

    assert [r.patient for r in store.worklist(query(status="ineligible")).rows] == ["Patient/c"]
    assert [r.patient for r in store.worklist(query(missing="some")).rows] == ["Patient/b"]
    assert [r.patient for r in store.worklist(query(missing="none")).rows] == [
        "Patient/c",
        "Patient/a",
    ]
    since = store.worklist(query(changed_since=first + timedelta(minutes=30)))
    assert [r.patient for r in since.rows] == ["Patient/c", "Patient/b"]
    by_patient = store.worklist(query(sort="patient", descending=False))
    assert [r.patient for r in by_patient.rows] == ["Patient/a", "Patient/b", "Patient/c"]


def test_an_unchanged_rescreen_keeps_the_change_time_and_a_change_moves_it(
    store: Store, clock: Clock
) -> None:
    first = clock.now
    save(store, None, body("Patient/a"))
    clock.advance(hours=2)
    save(store, None, body("Patient/a"))  # the same decision, screened again
    assert store.worklist(query()).rows[0].changed_at == first
    later = clock.advance(hours=2)
    save(store, None, body("Patient/a", ruled_out_by=("deceased",)))
    save(store, None, body("Patient/b", as_of="2026-11-01"))  # a look back: never current
    row = store.worklist(query()).rows[0]
    assert (row.changed_at, row.status) == (later, "ineligible")
    assert store.worklist(query()).total == 1  # one current result per patient


def test_pages_cover_every_patient_once(store: Store, clock: Clock) -> None:
    for n in range(7):
        clock.advance(minutes=1)
        save(store, None, body(f"Patient/p{n}"))
    seen: list[str] = []
    for offset in range(0, 7, 3):
        page = store.worklist(query(offset=offset, limit=3))
        seen.extend(r.patient for r in page.rows)
        assert page.total == 7 and page.has_next == (offset + 3 < 7)
    assert sorted(seen) == sorted(f"Patient/p{n}" for n in range(7))


def test_current_disposition_column_filter_and_sort(store: Store, clock: Clock) -> None:
    """The newest disposition entry is the current one; a manual answer after it does not
    hide it; a patient with none reads as new; filtering and sorting happen in the query."""
    for name in ("a", "b", "c"):
        clock.advance(minutes=1)
        save(store, None, body(f"Patient/{name}"))
    add = store.add_review_entry
    add("Patient/a", STUDY, 0, kind="disposition", code="under-review", author="u1")
    add("Patient/a", STUDY, 1, kind="disposition", code="contacted", author="u2")
    add("Patient/a", STUDY, 2, kind="manual", criterion="consent", code="met", author="u2")
    add("Patient/b", STUDY, 0, kind="disposition", code="deferred", author="u1")
    add("Patient/c", "other-study", 0, kind="disposition", code="enrolled", author="u1")

    rows = {r.patient: r.disposition for r in store.worklist(query()).rows}
    assert rows == {"Patient/a": "contacted", "Patient/b": "deferred", "Patient/c": "new"}
    assert [r.patient for r in store.worklist(query(disposition="contacted")).rows] == ["Patient/a"]
    assert [r.patient for r in store.worklist(query(disposition="new")).rows] == ["Patient/c"]
    assert store.worklist(query(disposition="under-review")).total == 0
    ordered = store.worklist(query(sort="disposition", descending=False)).rows
    assert [r.disposition for r in ordered] == ["contacted", "deferred", "new"]


@pytest.mark.parametrize(
    "bad",
    [{"limit": 0}, {"limit": 1001}, {"offset": -1}, {"sort": "name"}, {"status": "x"},
     {"missing": "maybe"}],
)  # fmt: skip
def test_bad_queries_are_refused(bad: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        query(**bad)


def test_page_query_time_at_10000_results(store: Store, clock: Clock) -> None:
    """Bulk-insert 10,000 current results, then time the worklist's queries (printed)."""
    now = clock.now
    results, latest = [], []
    for n in range(10_000):
        result = body(f"Patient/bulk{n:05d}")
        if n % 7 == 0:
            result["missing_data"] = ["castrate-testosterone"]
        results.append(
            {"id": n + 1, "patient_id": result["patient"], "study": STUDY, "as_of": clock.now.date(),
             "status": result["status"], "fingerprint": fingerprint(result), "body": result,
             "created_at": now - timedelta(minutes=n), "change_seq": n + 1}
        )  # fmt: skip
        latest.append(
            {"patient_id": result["patient"], "study": STUDY, "result_id": n + 1,
             "fingerprint": fingerprint(result), "change_seq": n + 1, "updated_at": now}
        )  # fmt: skip
    with store.engine.begin() as connection:
        connection.execute(insert(StoredResult), results)
        connection.execute(insert(LatestResult), latest)
        connection.execute(ChangeCounter.__table__.update().values(value=10_000))
        connection.execute(insert(ReviewEntry), reviews(now))
    timings = {}
    for name, q in {
        "first page": query(),
        "page 150": query(offset=7450),
        "missing data, by patient": query(missing="some", sort="patient"),
        "changed in the last day": query(changed_since=now - timedelta(days=1)),
        "disposition contacted": query(disposition="contacted"),
        "by disposition, page 100": query(sort="disposition", offset=4950),
    }.items():
        start = time.perf_counter()
        page = store.worklist(q)
        timings[name] = round((time.perf_counter() - start) * 1000, 1)
        assert len(page.rows) == 50
    assert store.worklist(query(missing="some")).total == 1429
    assert store.worklist(query(disposition="contacted")).total == 1112  # n % 9 == 0
    print(f"\nworklist at 10,000 current results (SQLite), ms per page: {timings}")


def reviews(now: object) -> list[dict[str, object]]:
    """Entries for a third of the 10,000: under review, then a manual answer for every sixth,
    then contacted for every ninth (so the newest disposition is not always the newest entry)."""
    rows: list[dict[str, object]] = []
    for n in range(0, 10_000, 3):
        steps = [("disposition", None, "under-review")]
        steps += [("manual", "consent", "met")] if n % 6 == 0 else []
        steps += [("disposition", None, "contacted")] if n % 9 == 0 else []
        for version, (kind, criterion, code) in enumerate(steps, start=1):
            rows.append(
                {"patient_id": f"Patient/bulk{n:05d}", "study": STUDY, "version": version,
                 "kind": kind, "criterion": criterion, "code": code, "author": "bulk",
                 "recorded_at": now}
            )  # fmt: skip
    return rows
