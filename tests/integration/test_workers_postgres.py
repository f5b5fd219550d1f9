"""Re-screen workers that scale out (issue 14 items 3 and 5), on a real PostgreSQL.

The queue's behaviours of tests/unit/store/test_rescreen_queue.py run here on PostgreSQL too;
then the concurrency they exist for: enqueuers and takers racing on one database, and two
`medcare-screen worker` processes beside one `serve` (its embedded worker off) screening
bursts of changes from the HAPI peer, every patient once per burst.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import func, select

from service.fhir.client import FhirClient
from service.store.models import StoredResult
from service.store.repository import Store, create_store
from tests.conftest import FIXTURES
from tests.integration import test_store_postgres as on_postgres
from tests.integration.peers import Peer, running
from tests.integration.test_store_postgres import StoreFactory
from tests.reliability.harness import ServiceProcess, service_env
from tests.unit.store import test_rescreen_queue as queue

# -- the queue's behaviours, on PostgreSQL -----------------------------------------------------

# the PostgreSQL server (one per module), a migrated database per test, Stores on it
FIXTURES_OF_THE_STORE = ("postgres", "template", "database_url", "clock", "reopen", "store")
globals().update((name, getattr(on_postgres, name)) for name in FIXTURES_OF_THE_STORE)
# every queue test of the SQLite module that needs no runtime, bound to those fixtures
globals().update(
    (name, test)
    for name, test in vars(queue).items()
    if name.startswith("test_") and "runtime" not in test.__code__.co_varnames
)


def test_racing_enqueuers_and_takers_never_hold_one_patient_twice(reopen: StoreFactory) -> None:
    """Eight threads enqueue changes for 40 patients while four workers take and finish: no
    patient is ever held by two workers, and every change ends in a screen after it."""
    enqueuers = [reopen() for _ in range(4)]
    workers = [reopen() for _ in range(4)]
    patients = [f"Patient/race-{i}" for i in range(40)]
    holding: dict[str, str] = {}
    guard = threading.Lock()
    overlaps: list[str] = []
    done = threading.Event()
    last_change: dict[str, float] = {}
    last_screen: dict[str, float] = {}

    def enqueue(store: Store) -> None:
        for round_ in range(30):
            chunk = patients[round_ % 4 :: 4]
            stamp = time.monotonic()
            store.enqueue(chunk, "subscription", delay=timedelta(0))
            with guard:
                for patient in chunk:
                    last_change[patient] = stamp

    def work(store: Store) -> None:
        while not done.is_set() or store.depth():
            for task in store.take_rescreens(5):
                with guard:
                    if task.patient_id in holding:
                        overlaps.append(task.patient_id)
                    holding[task.patient_id] = store.owner
                    started = time.monotonic()
                with guard:
                    del holding[task.patient_id]
                    last_screen[task.patient_id] = started
                store.finish_rescreen(task.patient_id)
            time.sleep(0.001)

    with ThreadPoolExecutor(8) as pool:
        taking = [pool.submit(work, store) for store in workers]
        for future in [pool.submit(enqueue, store) for store in enqueuers]:
            future.result()
        done.set()
        for future in taking:
            future.result(timeout=60)
    assert overlaps == []
    assert workers[0].depth() == 0
    assert all(last_screen[p] >= last_change[p] for p in patients)


# -- two worker processes and one service, against the HAPI peer ------------------------------

PATIENTS = 24  # fixture patients loaded into HAPI and screened by the workers
CHANGES_PER_PATIENT = 50


@pytest.fixture(scope="module")
def hapi(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Peer, list[str]]]:
    """The HAPI peer with the first PATIENTS fixture patients loaded."""
    with running("hapi", tmp_path_factory.mktemp("peer-hapi")) as peer:
        client = FhirClient(peer.base_url)
        loaded = []
        for path in sorted(FIXTURES.glob("*.json")):
            if path.name.endswith(".expected.json") or path.stem.startswith("invalid-"):
                continue
            client.transaction(json.loads(path.read_text()), patient=f"Patient/fx-{path.stem}")
            loaded.append(f"Patient/fx-{path.stem}")
            if len(loaded) == PATIENTS:
                break
        client.close()
        yield peer, loaded


@contextmanager
def worker_processes(env: dict[str, str], log_dir: Path, count: int) -> Iterator[list[Path]]:
    """`medcare-screen worker` × count; SIGTERM at the end (they give back what they hold)."""
    script = Path(sys.executable).with_name("medcare-screen")
    logs = [log_dir / f"worker-{n}.log" for n in range(count)]
    processes = []
    for log_path in logs:
        with log_path.open("ab") as log:
            processes.append(
                subprocess.Popen([str(script), "worker"], env={**os.environ, **env}, stdout=log,
                                 stderr=subprocess.STDOUT, start_new_session=True)
            )  # fmt: skip
    try:
        yield logs
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes:
            process.wait(timeout=60)
    for process, log_path in zip(processes, logs, strict=True):
        assert process.returncode == 0, log_path.read_text()[-3000:]


def _burst(url: str, patients: list[str]) -> None:
    """CHANGES_PER_PATIENT changes for each patient from four processes' worth of Stores,
    interleaved, all within the coalescing delay."""
    stores = [create_store(url) for _ in range(4)]
    triggers = ("subscription", "sweep")

    def changes(n: int) -> None:
        for change in range(n, CHANGES_PER_PATIENT, len(stores)):
            stores[n].enqueue(
                patients, triggers[change % 2], f"Observation/{change}", delay=timedelta(seconds=4)
            )

    with ThreadPoolExecutor(len(stores)) as pool:
        list(pool.map(changes, range(len(stores))))
    for store in stores:
        store.close()


def _results_per_patient(store: Store) -> dict[str, int]:
    with store.engine.connect() as connection:
        rows = connection.execute(
            select(StoredResult.patient_id, func.count()).group_by(StoredResult.patient_id)
        ).all()
    return {patient: count for patient, count in rows}


def _drained(store: Store, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while store.depth() and time.monotonic() < deadline:
        time.sleep(0.2)
    assert store.depth() == 0, f"{store.depth()} patients still queued after {timeout} s"


def test_two_workers_and_a_service_screen_every_patient_once_per_burst(
    hapi: tuple[Peer, list[str]], database_url: str, tmp_path: Path
) -> None:
    peer, patients = hapi
    env = service_env(peer.base_url, database_url, MEDCARE_EMBEDDED_WORKER="false")
    store = create_store(database_url)
    service = ServiceProcess(env, tmp_path / "service.log", workers=1)
    try:
        with service, worker_processes(env, tmp_path, 2):
            for burst in (1, 2):
                _burst(database_url, patients)
                assert store.depth() == len(patients)  # 50 changes each: one row each
                # an interactive screen is answered meanwhile
                answer = service.post("/v1/screen", {"patient": patients[0][8:]})
                assert answer.status_code == 200, answer.text
                _drained(store, timeout=120)
                counts = _results_per_patient(store)
                # each burst is one screen per patient (+ the one request for the first)
                expected = {p: burst + (burst if p == patients[0] else 0) for p in patients}
                assert counts == expected, (burst, counts)
    finally:
        store.close()
