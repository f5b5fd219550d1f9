"""Keeping results current without being asked, on the HAPI peer (issue 14 item 2), with
subscriptions off: a new testosterone reaches the changes feed through one sweep, and a result
whose testosterone ages out of its 90-day window changes at the cohort's scheduled re-screen,
with an injected clock (no sleep).

On PostgreSQL, four Stores ticking the same schedules at the same instants run every firing
once. Each HAPI test loads its own clone of the BASE candidate (no other fixture is needed), puts it in
a list cohort (the screening population) and drives the sweep, the schedule and the worker
step by step: the same code `medcare-screen worker` runs on its threads.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from service.clock import Clock
from service.codesystems import LOINC, OBSERVATION_CATEGORY, UCUM
from service.config import Settings
from service.currency.schedules import SWEEP_JOB, Schedules, cohort_job
from service.fhir.client import FhirClient
from service.runtime import Runtime
from service.store import Store, create_store
from service.store.cohorts import CohortDefinition
from service.store.models import ScheduleFire, StoredResult
from service.store.types import ChangeItem
from tests.integration import test_store_postgres as on_postgres
from tests.integration.helpers import cloned_fixture
from tests.integration.peers import Peer
from tests.integration.test_workers_postgres import worker_processes
from tests.reliability.harness import service_env
from tests.unit.store.helpers import Clock as HandClock

ON_HAPI = pytest.mark.parametrize("fhir_peer", ["hapi"], indirect=True)

AS_OF = date(2026, 11, 26)
CASTRATE = "castrate-testosterone"
ABOVE_CASTRATE = "testosterone-above-castrate"


def _settings(peer: Peer, tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 'currency.sqlite3'}", today=AS_OF
    ).with_overrides(fhir_base_url=peer.base_url, rescreen_delay_s=0)


def _candidate(runtime: Runtime, **testosterone: Any) -> str:
    """A new clone of BASE on the server (its testosterone Observation changed by
    `testosterone` when given), alone in a list cohort re-screened nightly; its id."""
    patient_id = f"cur-{uuid.uuid4().hex[:12]}"
    bundle = cloned_fixture("base", patient_id)
    for entry in bundle["entry"]:
        if entry["resource"]["id"] == f"{patient_id}-testo":
            entry["resource"].update(testosterone)
    assert runtime.client is not None
    runtime.client.transaction(bundle, patient=f"Patient/{patient_id}")
    nightly = CohortDefinition("list", [patient_id], "0 2 * * *")
    runtime.store.add_cohort(patient_id, nightly, members=[patient_id])
    return patient_id


def _feed(runtime: Runtime) -> list[ChangeItem]:
    return runtime.store.changes(limit=1000)[0]


def _testosterone(patient_id: str, value: float, day: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBSERVATION_CATEGORY, "code": "laboratory"}]}],
        "code": {"coding": [{"system": LOINC, "code": "2986-8"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": day,
        "valueQuantity": _ng_per_dl(value),
    }  # fmt: skip


def _ng_per_dl(value: float) -> dict[str, Any]:
    return {"value": value, "unit": "ng/dL", "system": UCUM, "code": "ng/dL"}


@pytest.fixture
def runtime(fhir_peer: Peer, tmp_path: Path) -> Iterator[Runtime]:
    runtime = Runtime(_settings(fhir_peer, tmp_path), start_workers=False)
    yield runtime
    runtime.close()


@ON_HAPI
def test_a_new_testosterone_reaches_the_feed_through_a_sweep(runtime: Runtime) -> None:
    patient_id = _candidate(runtime)
    reference = f"Patient/{patient_id}"
    first = runtime.screen_patient(patient_id, AS_OF, False)
    assert first.result["status"] == "candidate"
    sweeper = runtime.scheduler.schedules.sweeper
    assert sweeper is not None
    sweeper.sweep()  # the first sweep: watermarks from now - skew; it sees the clone load
    while runtime.rescreens.run_once(10):
        pass
    seen = len(_feed(runtime))  # a re-screen of the same data changes no decision

    assert runtime.client is not None
    written = runtime.client.create(_testosterone(patient_id, 80, "2026-11-25"))
    assert written.status in (200, 201)
    swept = {s.resource_type: s for s in sweeper.sweep()}
    assert all(s.error is None for s in swept.values())
    # the skew allowance sees the clone's own Observations again; only the new one queues
    assert swept["Observation"].seen >= 1 and swept["Observation"].patients == 1
    assert runtime.store.depth() == 1
    assert runtime.rescreens.run_once(10) == 1

    [entry] = _feed(runtime)[seen:]
    assert entry["patient"] == reference
    assert (entry["previous_status"], entry["trigger"]) == ("candidate", "sweep")
    # 80 ng/dL on ADT after 20 ng/dL in the window: castration is in doubt (criteria.md §5),
    # the decision changes though the status stays (a candidate to chase)
    assert CASTRATE in (entry["changed_criteria"] or [])
    [castrate] = [c for c in entry["result"]["criteria"] if c["id"] == CASTRATE]
    assert castrate["result"] == "unknown"
    mark = runtime.store.watermark("Observation")
    assert mark is not None and mark.last_updated is not None and mark.last_error is None
    # nothing new: the next sweep queues nobody and the feed stays as it is
    assert sweeper.sweep(["Observation"])[0].patients == 0
    assert runtime.store.depth() == 0


@ON_HAPI
def test_a_testosterone_ageing_out_changes_at_the_scheduled_rescreen(
    fhir_peer: Peer, tmp_path: Path
) -> None:
    hand = HandClock(datetime(2026, 11, 26, 12, 0, tzinfo=UTC))
    clock = Clock(hand)
    settings = _settings(fhir_peer, tmp_path).with_overrides(sweep_interval_s=0)  # no sweeps
    store = create_store(settings.database_url, clock=clock)
    runtime = Runtime(settings, store=store, clock=clock, start_workers=False)
    try:
        # 80 ng/dL, not castrate (ineligible), taken 88 days before 2026-11-26: inside the
        # 90-day window; 92 days old on 11-30, when it no longer counts (unknown, candidate)
        patient_id = _candidate(
            runtime, effectiveDateTime="2026-08-30", valueQuantity=_ng_per_dl(80)
        )
        assert runtime.today() == AS_OF
        first = runtime.screen_patient(patient_id, AS_OF, False)
        assert first.result["status"] == "ineligible"
        schedules = runtime.scheduler.schedules
        assert schedules.sweeper is None  # only the cohort's schedule can notice
        job = cohort_job(patient_id)
        assert job not in schedules.fire()  # defined after today's 02:00: not due yet
        seen = len(_feed(runtime))

        hand.now = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)  # no new data, four days later
        assert runtime.today() == date(2026, 11, 30)
        assert job in schedules.fire()
        assert job not in schedules.fire()  # once per fire time
        while runtime.rescreens.run_once(10):
            pass

        [entry] = [e for e in _feed(runtime)[seen:] if e["patient"] == f"Patient/{patient_id}"]
        assert (entry["previous_status"], entry["trigger"]) == ("ineligible", "schedule")
        assert entry["status"] == "candidate"
        assert {CASTRATE, ABOVE_CASTRATE} <= set(entry["changed_criteria"] or [])
        assert entry["as_of"] == "2026-11-30"
    finally:
        runtime.close()


class _Counted:
    """A sweep and a cohort refresh that count how often they ran, whoever ran them."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sweeps = 0
        self.refreshes = 0

    def sweep(self) -> list[object]:
        with self.lock:
            self.sweeps += 1
        return []

    def refresh_members(self, name: str) -> list[str]:
        with self.lock:
            self.refreshes += 1
        return [f"Patient/{name}-{i}" for i in range(3)]


# a PostgreSQL server for this module and a migrated database of each test's own
# (`database_url`), as the store's PostgreSQL tests have them
globals().update(
    (name, getattr(on_postgres, name)) for name in ("postgres", "template", "database_url")
)


def test_each_firing_runs_once_across_four_processes_on_postgresql(database_url: str) -> None:
    """Four Stores (four processes' pools) tick the same schedules at the same instants: every
    sweep slot and every cohort fire runs exactly once."""
    hand = HandClock(datetime(2026, 11, 26, 9, 0, 30, tzinfo=UTC))
    stores = [create_store(database_url, clock=hand) for _ in range(4)]
    try:
        for name in ("prostate", "registry"):
            stores[0].add_cohort(name, CohortDefinition("list", [name], "*/10 * * * *"))
        counted = _Counted()
        processes = [
            Schedules(store, clock=Clock(hand), sweeper=counted, cohorts=counted,  # type: ignore[arg-type]
                      sweep_every=timedelta(minutes=5), delay=timedelta(0))
            for store in stores
        ]  # fmt: skip
        for schedules in processes:
            schedules.skip_current_sweep()
        fired: list[str] = []
        with ThreadPoolExecutor(len(processes)) as pool:
            for _ in range(6):  # an hour in ten-minute steps
                hand.advance(minutes=10)
                for names in pool.map(lambda schedules: schedules.fire(), processes):
                    fired.extend(names)
        assert counted.sweeps == 6 and counted.refreshes == 12
        assert sorted(fired) == sorted(
            [SWEEP_JOB] * 6 + [cohort_job("prostate")] * 6 + [cohort_job("registry")] * 6
        )
        assert stores[1].depth() == 6  # three members of each cohort, one row each
        # the watermark is shared and only moves forward, whichever process swept
        at = hand.now - timedelta(minutes=1)
        stores[2].advance_watermark("Observation", at)
        stores[3].advance_watermark("Observation", at - timedelta(minutes=5))
        stores[0].watermark_failed("Observation", "FhirServerError: 503")
        mark = stores[1].watermark("Observation")
        assert mark is not None and (mark.last_updated, mark.swept_at) == (at, hand.now)
        assert mark.last_error == "FhirServerError: 503"
    finally:
        for store in stores:
            store.close()


@ON_HAPI
def test_two_worker_processes_fire_each_scheduled_job_once(
    fhir_peer: Peer, database_url: str, tmp_path: Path
) -> None:
    """Two `medcare-screen worker` processes on one PostgreSQL, a cohort re-screened every
    minute and a sweep every minute: each firing is claimed once (by either process), and the
    cohort's member is screened once per cohort firing."""
    store = create_store(database_url)
    try:
        client = FhirClient(fhir_peer.base_url)
        patient_id = f"cur-{uuid.uuid4().hex[:12]}"
        client.transaction(cloned_fixture("base", patient_id), patient=f"Patient/{patient_id}")
        client.close()
        store.add_cohort(patient_id, CohortDefinition("list", [patient_id], "* * * * *"),
                         members=[patient_id])  # fmt: skip
        # skew 0: the first sweep starts after the clone's load, so only the schedule queues it
        env = service_env(fhir_peer.base_url, database_url, MEDCARE_SWEEP_INTERVAL_S="60",
                          MEDCARE_SWEEP_SKEW_S="0", MEDCARE_RESCREEN_DELAY_S="0")  # fmt: skip
        job = cohort_job(patient_id)
        with worker_processes(env, tmp_path, 2):
            deadline = time.monotonic() + 240
            while True:  # until two cohort firings are each one screen, nothing pending
                cohort_fires = _fires(store, job)
                screens = _scheduled_screens(store, patient_id)
                if len(cohort_fires) >= 2 and screens == len(cohort_fires) and not store.depth():
                    break
                assert time.monotonic() < deadline, (cohort_fires, screens, store.depth())
                time.sleep(2)
        sweep_fires = _fires(store, SWEEP_JOB)
        assert sweep_fires
        # one row per fire time (the key says so), fired by whichever worker came first
        assert len({at for at, _by in cohort_fires}) == len(cohort_fires)
        assert {by for _at, by in cohort_fires + sweep_fires} <= set(_owners(tmp_path))
    finally:
        store.close()


def _scheduled_screens(store: Store, patient_id: str) -> int:
    with Session(store.engine) as session:
        query = (
            select(func.count())
            .select_from(StoredResult)
            .where(
                StoredResult.patient_id == f"Patient/{patient_id}",
                StoredResult.trigger == "schedule",
            )
        )
        return session.scalar(query) or 0


def _fires(store: Store, job: str) -> list[tuple[datetime, str | None]]:
    with Session(store.engine) as session:
        rows = session.execute(
            select(ScheduleFire.fire_at, ScheduleFire.fired_by).where(ScheduleFire.job == job)
        )
        return [(at, by) for at, by in rows]


def _owners(log_dir: Path) -> list[str]:
    """The owner ids the workers announced ('medcare-screen: worker <owner> started')."""
    return [
        line.split()[2]
        for log in sorted(log_dir.glob("worker-*.log"))
        for line in log.read_text().splitlines()
        if line.startswith("medcare-screen: worker ")
    ]
