"""The worklist's queries (service/store/worklist.py): current results only, filters, sorting,
paging, when the decision last changed; and the page's query time at 10,000 results (printed,
never asserted)."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import insert

from service.store.models import ChangeCounter, LatestResult, StoredResult
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
    timings = {}
    for name, q in {
        "first page": query(),
        "page 150": query(offset=7450),
        "missing data, by patient": query(missing="some", sort="patient"),
        "changed in the last day": query(changed_since=now - timedelta(days=1)),
    }.items():
        start = time.perf_counter()
        page = store.worklist(q)
        timings[name] = round((time.perf_counter() - start) * 1000, 1)
        assert len(page.rows) == 50
    assert store.worklist(query(missing="some")).total == 1429
    print(f"\nworklist at 10,000 current results (SQLite), ms per page: {timings}")
