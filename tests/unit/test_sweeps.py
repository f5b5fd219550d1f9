"""Incremental sweeps (issue 14 item 2): watermark and skew, page following, patient mapping,
the population filter, one failing type, restarts. A mocked FHIR server (responses) and a
SQLite store; the clocks are moved by hand."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import responses

from service.clock import Clock
from service.currency.sweeps import (
    Sweeper,
    fhir_instant,
    patient_of,
    sweep_params,
    swept_reads,
)
from service.fhir.client import FhirClient
from service.read_plan import ReadPlan, TypeRead
from service.store.cohorts import CohortDefinition
from service.store.repository import Store, create_store
from tests.unit.store.helpers import Clock as HandClock

BASE = "https://fhir.example.org/fhir"
LOINC_T = ("http://loinc.org", "2986-8")
PLAN = ReadPlan(
    reads=(TypeRead("Observation", codes=(LOINC_T,)), TypeRead("Condition")),
    codes_by_value_set=(),
    match_codes=None,
    near_miss_phrases=(),
)
SERVICE_NOW = datetime(2026, 11, 26, 9, 30, tzinfo=UTC)
SERVER_NOW = SERVICE_NOW - timedelta(minutes=7)  # the server's clock is 7 minutes behind
SKEW = timedelta(seconds=120)


@pytest.fixture
def hand() -> HandClock:
    return HandClock(SERVICE_NOW)


@pytest.fixture
def database(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.sqlite3'}"


@pytest.fixture
def store(database: str, hand: HandClock) -> Iterator[Store]:
    store = create_store(database, clock=hand)
    store.migrate()
    cohort = CohortDefinition("list", ["p1", "p2", "p3"])
    store.add_cohort("prostate", cohort, members=["p1", "p2", "p3"])
    yield store
    store.close()


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def sweeper(store: Store, hand: HandClock) -> Sweeper:
    client = FhirClient(BASE, sleep=lambda _s: None)
    return Sweeper(store, client, PLAN, clock=Clock(hand), skew=SKEW, page_size=2)


def stamp(at: datetime) -> str:
    return at.isoformat().replace("+00:00", "Z")


def resource(kind: str, rid: str, at: datetime, **fields: Any) -> dict[str, Any]:
    return {"resourceType": kind, "id": rid, "meta": {"versionId": "1", "lastUpdated": stamp(at)},
            **fields}  # fmt: skip


def of(patient: str, base: str = "") -> dict[str, str]:
    return {"reference": f"{base}Patient/{patient}"}


def bundle(*resources: dict[str, Any], next_url: str | None = None) -> dict[str, Any]:
    found: dict[str, Any] = {
        "resourceType": "Bundle", "type": "searchset", "meta": {"lastUpdated": stamp(SERVER_NOW)},
        "entry": [{"resource": r, "search": {"mode": "match"}} for r in resources],
    }  # fmt: skip
    if next_url:
        found["link"] = [{"relation": "next", "url": next_url}]
    return found


def answer(rsps: responses.RequestsMock, kind: str, *pages: dict[str, Any]) -> None:
    for page in pages:
        rsps.add(responses.GET, f"{BASE}/{kind}", json=page)


def asked(rsps: responses.RequestsMock, kind: str) -> list[dict[str, list[str]]]:
    return [
        parse_qs(urlsplit(call.request.url or "").query)
        for call in rsps.calls
        if urlsplit(call.request.url or "").path.endswith(f"/{kind}")
    ]


def queued(store: Store) -> list[str]:
    return sorted(task.patient_id for task in store.take_rescreens(100))


def test_a_first_sweep_starts_at_now_less_skew_and_keeps_the_servers_clock(
    rsps: responses.RequestsMock, store: Store, hand: HandClock
) -> None:
    for kind in ("Patient", "Observation", "Condition"):
        answer(rsps, kind, bundle())
    swept = sweeper(store, hand).sweep()
    assert [s.resource_type for s in swept] == ["Patient", "Observation", "Condition"]
    assert all(s.error is None and s.seen == 0 for s in swept)
    [query] = asked(rsps, "Observation")
    assert query["_lastUpdated"] == [f"gt{fhir_instant(SERVICE_NOW - SKEW)}"]
    assert query["code"] == ["http://loinc.org|2986-8"]
    assert "code" not in asked(rsps, "Condition")[0]
    # nothing changed: the mark is the server's answer time, not the service's clock
    assert store.watermark("Observation").last_updated == SERVER_NOW  # type: ignore[union-attr]
    assert store.watermark("Observation").swept_at == SERVICE_NOW  # type: ignore[union-attr]


def test_the_next_sweep_asks_from_the_newest_change_less_skew(
    rsps: responses.RequestsMock, store: Store, hand: HandClock
) -> None:
    newest = SERVER_NOW - timedelta(seconds=5)
    answer(rsps, "Observation", bundle(
        resource("Observation", "o1", newest - timedelta(seconds=30), subject=of("p1")),
        resource("Observation", "o2", newest, subject=of("p2")),
    ), bundle())  # fmt: skip
    sweep = sweeper(store, hand)
    [first] = sweep.sweep(["Observation"])
    assert (first.seen, first.patients, first.enqueued) == (2, 2, 2)
    assert first.watermark == newest
    hand.advance(minutes=5)
    sweep.sweep(["Observation"])
    second = asked(rsps, "Observation")[1]
    assert second["_lastUpdated"] == [f"gt{fhir_instant(newest - SKEW)}"]


def test_pages_are_followed_and_every_patient_of_the_population_is_queued(
    rsps: responses.RequestsMock, store: Store, hand: HandClock
) -> None:
    at = SERVER_NOW - timedelta(minutes=1)
    answer(rsps, "Observation", bundle(
        resource("Observation", "o1", at, subject=of("p1")),
        resource("Observation", "o2", at, subject=of("outsider")),
        next_url=f"{BASE}/Observation?_getpages=abc&_getpagesoffset=2",
    ), bundle(
        resource("Observation", "o3", at + timedelta(seconds=9),
                 subject=of("p3", "https://fhir.example.org/fhir/")),
    ))  # fmt: skip
    [swept] = sweeper(store, hand).sweep(["Observation"])
    assert (swept.seen, swept.patients) == (3, 2)
    assert swept.watermark == at + timedelta(seconds=9)
    assert len(asked(rsps, "Observation")) == 2
    hand.advance(seconds=3)
    assert queued(store) == ["Patient/p1", "Patient/p3"]  # not the outsider


@pytest.mark.parametrize(
    ("found", "patient"),
    [
        ({"resourceType": "Patient", "id": "p9"}, "p9"),
        ({"resourceType": "Observation", "subject": of("p1")}, "p1"),
        ({"resourceType": "Condition", "subject": {"reference": "Patient/p2/_history/4"}}, "p2"),
        ({"resourceType": "MedicationStatement", "subject": of("p3", "http://x/fhir/")}, "p3"),
        ({"resourceType": "AllergyIntolerance", "patient": of("p4")}, "p4"),
        ({"resourceType": "Observation", "subject": {"reference": "Group/g1"}}, None),
        ({"resourceType": "Observation", "subject": {"display": "no reference"}}, None),
        ({"resourceType": "Medication", "id": "m1"}, None),
        ({"resourceType": "Patient", "id": "bad id"}, None),
    ],
)
def test_each_resource_is_mapped_to_its_patient(found: dict[str, Any], patient: str | None) -> None:
    assert patient_of(found) == patient


def test_patient_changes_are_swept_too() -> None:
    assert [r.resource_type for r in swept_reads(PLAN)] == ["Patient", "Observation", "Condition"]
    params = dict(sweep_params(TypeRead("Patient"), SERVICE_NOW, 50))
    assert params == {
        "_lastUpdated": "gt2026-11-26T09:30:00.000Z",
        "_sort": "_lastUpdated",
        "_count": "50",
    }


def test_a_failing_type_keeps_its_mark_and_the_others_are_swept(
    rsps: responses.RequestsMock, store: Store, hand: HandClock
) -> None:
    answer(rsps, "Patient", bundle(resource("Patient", "p2", SERVER_NOW)))
    rsps.add(responses.GET, f"{BASE}/Observation", status=400,
             json={"resourceType": "OperationOutcome", "issue": []})  # fmt: skip
    answer(rsps, "Condition", bundle())
    swept = {s.resource_type: s for s in sweeper(store, hand).sweep()}
    assert swept["Observation"].error and swept["Patient"].error is None
    assert swept["Condition"].error is None and swept["Patient"].patients == 1
    failed = store.watermark("Observation")
    assert failed is not None and failed.last_updated is None and failed.swept_at is None
    assert failed.last_error
    assert store.watermark("Patient").swept_at == SERVICE_NOW  # type: ignore[union-attr]


def test_a_change_seen_again_in_the_overlap_is_not_queued_again(
    rsps: responses.RequestsMock, store: Store, hand: HandClock
) -> None:
    at = SERVER_NOW - timedelta(seconds=10)
    first = resource("Observation", "o1", at, subject=of("p1"))
    newer = {**first, "meta": {"versionId": "2", "lastUpdated": stamp(at + timedelta(seconds=5))}}
    answer(rsps, "Observation", bundle(first), bundle(first), bundle(newer))
    sweep = sweeper(store, hand)
    sweep.sweep(["Observation"])
    hand.advance(seconds=3)
    assert queued(store) == ["Patient/p1"]
    store.finish_rescreen("Patient/p1")
    sweep.sweep(["Observation"])  # the same version again, inside the skew allowance
    hand.advance(seconds=3)
    assert queued(store) == []
    sweep.sweep(["Observation"])  # a new version of it
    hand.advance(seconds=3)
    assert queued(store) == ["Patient/p1"]


def test_the_watermark_survives_a_restart(
    rsps: responses.RequestsMock, store: Store, hand: HandClock, database: str
) -> None:
    at = SERVER_NOW - timedelta(seconds=42)
    answer(rsps, "Condition", bundle(resource("Condition", "c1", at, subject=of("p2"))), bundle())
    sweeper(store, hand).sweep(["Condition"])
    reopened = create_store(database, clock=hand)
    try:
        hand.advance(hours=2)
        sweeper(reopened, hand).sweep(["Condition"])
    finally:
        reopened.close()
    assert asked(rsps, "Condition")[1]["_lastUpdated"] == [f"gt{fhir_instant(at - SKEW)}"]


def test_a_sweep_cut_short_keeps_the_pages_it_read(
    rsps: responses.RequestsMock, store: Store, hand: HandClock
) -> None:
    at = SERVER_NOW - timedelta(minutes=3)
    answer(rsps, "Observation", bundle(
        resource("Observation", "o1", at, subject=of("p1")),
        resource("Observation", "o2", at + timedelta(seconds=1), subject=of("p2")),
        next_url=f"{BASE}/Observation?_getpages=abc&_getpagesoffset=2",
    ))  # fmt: skip
    rsps.add(responses.GET, f"{BASE}/Observation", status=400,
             json={"resourceType": "OperationOutcome", "issue": []})  # fmt: skip
    [swept] = sweeper(store, hand).sweep(["Observation"])
    assert swept.error
    mark = store.watermark("Observation")
    assert mark is not None and mark.last_updated == at + timedelta(seconds=1)
    assert mark.last_error
    hand.advance(seconds=3)
    assert queued(store) == ["Patient/p1", "Patient/p2"]


def page_of(patients: list[str], page: int, at: datetime, *, last: bool) -> dict[str, Any]:
    """Page `page` of a sorted sweep: one Observation for each patient, a second apart."""
    changed = [
        resource("Observation", f"o{page}-{i}", at + timedelta(seconds=page * 10 + i),
                 subject=of(patient))
        for i, patient in enumerate(patients)
    ]  # fmt: skip
    next_url = f"{BASE}/Observation?_getpages=abc&_getpagesoffset={(page + 1) * 10}"
    return bundle(*changed, next_url=None if last else next_url)


def test_a_patient_named_on_every_page_is_screened_once_per_sweep(
    rsps: responses.RequestsMock, store: Store, hand: HandClock
) -> None:
    """Three pages naming the same 10 patients, a worker taking what is due between pages:
    10 rows taken once each, not 30 screens (the bench's 2.45 screens per patient)."""
    ten = [f"q{i}" for i in range(10)]
    store.add_cohort("ten", CohortDefinition("list", ten), members=ten)
    at = SERVER_NOW - timedelta(minutes=3)
    pages = [page_of(ten, page, at, last=page == 2) for page in range(3)]
    screened: list[str] = []

    def worker_then_page(_request: Any) -> tuple[int, dict[str, str], str]:
        hand.advance(seconds=3)  # past the coalescing delay: a worker takes what is due
        for task in store.take_rescreens(100):
            screened.append(task.patient_id)
            store.finish_rescreen(task.patient_id)
        return 200, {}, json.dumps(pages.pop(0))

    rsps.add_callback(responses.GET, f"{BASE}/Observation", callback=worker_then_page)
    sweep = Sweeper(store, FhirClient(BASE, sleep=lambda _s: None), PLAN, clock=Clock(hand),
                    skew=SKEW, page_size=10)  # fmt: skip
    [swept] = sweep.sweep(["Observation"])
    assert (swept.seen, swept.error) == (30, None)
    assert swept.watermark == at + timedelta(seconds=29)
    assert screened == []  # held while the sweep read on
    hand.advance(seconds=3)
    taken = queued(store)
    assert taken == sorted(f"Patient/{patient}" for patient in ten)


def test_a_sweep_that_fails_mid_way_releases_what_it_queued(
    rsps: responses.RequestsMock, store: Store, hand: HandClock
) -> None:
    at = SERVER_NOW - timedelta(minutes=3)
    answer(rsps, "Patient", bundle(resource("Patient", "p3", at)))
    answer(rsps, "Observation", bundle(
        resource("Observation", "o1", at, subject=of("p1")),
        resource("Observation", "o2", at + timedelta(seconds=1), subject=of("p2")),
        next_url=f"{BASE}/Observation?_getpages=abc&_getpagesoffset=2",
    ))  # fmt: skip
    rsps.add(responses.GET, f"{BASE}/Observation", status=500, body="down")
    rsps.add(responses.GET, f"{BASE}/Condition", status=500, body="down")
    swept = sweeper(store, hand).sweep()
    assert [s.error is None for s in swept] == [True, False, False]
    assert store.take_rescreens(100) == []  # due after the coalescing delay, not the hold
    hand.advance(seconds=3)
    assert queued(store) == ["Patient/p1", "Patient/p2", "Patient/p3"]
