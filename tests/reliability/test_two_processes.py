"""Two service processes, one database (issue 10 item 11): replicas and rolling restarts.

A second `medcare-screen serve` started on the same database in the middle of a run used to
screen patients twice: it judged the first one's live claims stale by its own start time and
took them. Claims now name their owner and a lease its heartbeat renews; another process takes
a patient only when the lease is over or the owner is a dead process.

Here, with real `serve` processes on a SQLite file and on PostgreSQL, a run of the Medplum peer
(slowed by the fault proxy so that claims are held for seconds): a second process joins in the
middle, the first is restarted gracefully (SIGTERM, then started again: a rolling restart), and
the second is killed (SIGKILL). Every patient is screened once, none is lost.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from service.store import create_store
from tests.integration.postgres import PostgresServer, running_postgres
from tests.reliability import harness
from tests.reliability.conftest import Medplum
from tests.reliability.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def _database(kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.sqlite3'}"
    server: PostgresServer = request.getfixturevalue("postgres")
    return server.url


def _progress(service: harness.ServiceProcess, run_id: str) -> dict[str, int]:
    return dict(service.get(f"/v1/runs/{run_id}").json()["progress"])


def _wait_done(service: harness.ServiceProcess, run_id: str, at_least: int) -> None:
    harness.wait_until(
        lambda: _progress(service, run_id)["done"] >= at_least, 120, f"{at_least} patients done"
    )


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_second_process_a_rolling_restart_and_a_kill_screen_every_patient_once(
    kind: str, proxy: FaultProxy, medplum: Medplum, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    database = _database(kind, tmp_path, request)
    patients = medplum.patients[:48]
    # every FHIR request takes 1 s: a patient's claim is held for seconds, as on a busy server
    proxy.add(Fault("delay", seconds=1.0))
    env = harness.service_env(
        proxy.base_url + "/fhir",
        database,
        MEDCARE_TODAY=harness.AS_OF.isoformat(),
        MEDCARE_RUN_CONCURRENCY="2",
    )
    first = harness.ServiceProcess(env, tmp_path / "first.log", workers=1).start()
    second = harness.ServiceProcess(env, tmp_path / "second.log", workers=1)
    started = time.monotonic()
    try:
        response = first.post("/v1/runs", {"patients": patients, "as_of": "2026-11-26"})
        assert response.status_code == 202, response.text
        run_id = response.json()["id"]
        _wait_done(first, run_id, 2)
        held_when_second_started = _progress(first, run_id)["in_progress"]
        second.start()  # joins the run: takes pending patients, leaves the first's claims alone
        _wait_done(second, run_id, 8)
        first.stop()  # rolling restart: a graceful stop gives its claims back at once
        first.start()
        # two more done after the restart, or all of them: on a loaded machine the second
        # process may have finished nearly every patient while the first was restarting
        _wait_done(first, run_id, min(_progress(first, run_id)["done"] + 2, len(patients)))
        at_kill = _progress(first, run_id)
        second.kill()  # its claims come back as soon as the others see its pid is gone
        final = ("done", "failed", "cancelled")
        harness.wait_until(
            lambda: first.get(f"/v1/runs/{run_id}").json()["status"] in final, 120, "the run"
        )
        run = first.get(f"/v1/runs/{run_id}").json()
        assert run["status"] == "done", run
        seconds = time.monotonic() - started
    finally:
        first.stop()
        second.stop()
    store = create_store(database)
    try:
        figures = harness.check_run(store, run_id, patients)  # no patient twice, none lost
        assert figures["failed"] == 0, figures["reasons"]
    finally:
        store.close()
    harness.record(
        f"two serve processes on one {kind} database: second joins, rolling restart, kill",
        patients=len(patients), claims_held_when_second_started=held_when_second_started,
        done_at_kill=at_kill["done"], done=figures["done"], failed=figures["failed"],
        duplicates=0, run_seconds=round(seconds, 1),
    )  # fmt: skip
