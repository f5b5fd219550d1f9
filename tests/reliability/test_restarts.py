"""Restarts in the middle of a run: the service killed with SIGKILL and started again (gunicorn,
SQLite file), and the PostgreSQL server restarted under a running Runtime."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from service.runtime import Runtime
from service.store import create_store
from tests.conftest import FIXTURES
from tests.integration.postgres import PostgresServer, _run, find_bin_dir, running_postgres
from tests.reliability import harness
from tests.reliability.conftest import Medplum
from tests.reliability.faultproxy import Fault, FaultProxy

pytestmark = pytest.mark.timeout(180)


def _status(patient: str) -> str:
    data = json.loads((FIXTURES / f"{patient.removeprefix('fx-')}.expected.json").read_text())
    return str(data["status"])


def _poll(service: harness.ServiceProcess, run_id: str, timeout: float) -> dict[str, object]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = service.get(f"/v1/runs/{run_id}").json()
        if run["status"] in ("done", "failed", "cancelled"):
            return dict(run)
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish: {run}")


def test_sigkill_mid_run_then_restart(proxy: FaultProxy, medplum: Medplum, tmp_path: Path) -> None:
    """SIGKILL to gunicorn and its workers while a write-back run is half done; start again on
    the same database: the run resumes and completes, each patient once, each write-back lands
    once (none lost, no duplicate ResearchSubject)."""
    patients = medplum.patients[30:70]
    database = f"sqlite:///{tmp_path / 'killed.sqlite3'}"
    proxy.add(Fault("delay", seconds=0.08))  # a run of ~10 s, so the kill lands mid-run
    env = harness.service_env(proxy.base_url + "/fhir", database, MEDCARE_WRITE_INELIGIBLE="false",
                              MEDCARE_TODAY=harness.AS_OF.isoformat())  # fmt: skip
    service = harness.ServiceProcess(env, tmp_path / "service.log").start()
    try:
        started = service.post(
            "/v1/runs", {"patients": patients, "as_of": "2026-11-26", "write_back": True}
        )
        assert started.status_code == 202, started.text
        run_id = started.json()["id"]
        harness.wait_until(
            lambda: service.get(f"/v1/runs/{run_id}").json()["progress"]["done"] >= 10,
            60, "10 patients done",
        )  # fmt: skip
        service.kill()
        killed_at = time.monotonic()
        store = create_store(database)
        at_kill = store.run_progress(run_id)
        store.close()
        assert at_kill["done"] < len(patients), "the kill came too late to matter"
        service.start()
        restarted_in = time.monotonic() - killed_at
        run = _poll(service, run_id, 120)
        assert run["status"] == "done", run
    finally:
        service.stop()
    # the invariants, read from the database the service left
    settings = harness.settings_for(proxy.base_url + "/fhir", database, today=harness.AS_OF)
    runtime = Runtime(settings, start_workers=False)
    try:
        figures = harness.check_run(runtime, run_id, patients)
        assert figures["failed"] == 0, figures["reasons"]
        for item in harness.run_items(runtime.store, run_id):
            assert item["result"]["status"] == _status(item["patient"].removeprefix("Patient/"))
        # write-backs the killed process had taken are leased (5 min); after the lease every
        # one is written: drain with a clock past it, as the outbox worker will
        runtime.drain_outbox(now=datetime.now(UTC) + timedelta(minutes=10))
        outbox = runtime.store.outbox_counts()
        assert outbox["pending"] == 0 and outbox["failed"] == 0, outbox
        writebacks = runtime.store.run_writebacks(run_id)
    finally:
        runtime.close()
    subjects = harness.assert_no_duplicate_subjects(medplum.base_url)
    candidates = [p for p in patients if _status(p) == "candidate"]
    for patient in candidates:
        assert subjects[f"NCT06585007:{patient}"] == 1, patient
    harness.record(
        "fault: SIGKILL mid-run, then restart",
        patients=len(patients), done_at_kill=at_kill["done"], in_progress_at_kill=at_kill["in_progress"],
        restart_to_ready_s=round(restarted_in, 1), done=figures["done"], failed=figures["failed"],
        candidates_written_once=len(candidates), writebacks=writebacks,
    )  # fmt: skip


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


def _restart_postgres(server: PostgresServer, down_for: float) -> None:
    pg_ctl = str(find_bin_dir() / "pg_ctl")
    _run([pg_ctl, "-D", str(server.data_dir), "-m", "fast", "-w", "stop"], "pg_ctl stop", 60)
    time.sleep(down_for)
    options = (
        f"-p {server.port} -k {server.data_dir.parent} -c listen_addresses=127.0.0.1 "
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    )
    _run([pg_ctl, "-D", str(server.data_dir), "-l", str(server.log_path), "-o", options, "-w",
          "start"], "pg_ctl start", 60)  # fmt: skip


def test_database_restarted_mid_run(
    proxy: FaultProxy, medplum: Medplum, postgres: PostgresServer
) -> None:
    """PostgreSQL is stopped for 3 s and started again while a run is half done: the run
    completes, each patient once."""
    patients = medplum.patients[:40]
    proxy.add(Fault("delay", seconds=0.05))
    runtime = harness.make_runtime(proxy.base_url + "/fhir", postgres.url, today=harness.AS_OF)
    try:
        started = time.monotonic()
        run_id = runtime.start_run("ids", patients, harness.AS_OF, False).id
        harness.wait_until(lambda: runtime.store.run_progress(run_id)["done"] >= 8, 30, "8 done")
        _restart_postgres(postgres, 3.0)
        run = harness.wait_run(runtime, run_id, 120)
        figures = harness.check_run(runtime, run_id, patients)
        assert figures["failed"] == 0, figures["reasons"]
        assert runtime.ready()["database"] is True
    finally:
        runtime.close()
    harness.record(
        "fault: PostgreSQL restarted mid-run (down 3 s)",
        patients=len(patients), done=figures["done"], failed=figures["failed"],
        status=run["status"], run_seconds=round(time.monotonic() - started, 1),
    )  # fmt: skip


def test_patients_claimed_by_a_dead_worker_are_taken_back_after_the_lease(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A process dies alone (OOM, a hung host) holding a claim, and nothing restarts it: its
    heartbeat stops, and the process still running the run takes the claim back once the lease
    is over, and the run ends. The live process's own claims are renewed meanwhile."""
    monkeypatch.setattr("service.work.runs.CLAIM_POLL_S", 0.2)
    database = f"sqlite:///{tmp_path / 'lease.sqlite3'}"
    settings = harness.settings_for(None, database, today=harness.AS_OF).with_overrides(
        source_path=harness.REPO / "fixtures" / "patients", claim_lease_s=2
    )
    runtime = Runtime(settings, start_workers=False)
    # the dead process: another owner (a Store of its own) that claims and never beats
    dead = create_store(database, today=harness.AS_OF, claim_lease=timedelta(seconds=2))
    try:
        patients = ["fx-base", "fx-age-17", "fx-deceased-boolean"]
        run = runtime.store.create_run("ids", patients, harness.AS_OF,
                                       patient_ids=[f"Patient/{p}" for p in patients])  # fmt: skip
        runtime.store.set_run_status(run.id, "running")
        assert dead.claim_pending(run.id, 1) == ["Patient/fx-base"]
        started = time.monotonic()
        runtime.runs.submit(run.id)
        harness.wait_run(runtime, run.id, 30)
        figures = harness.check_run(runtime, run.id, patients)
        assert figures["failed"] == 0
        waited = time.monotonic() - started
    finally:
        dead.close()
        runtime.close()
    harness.record(
        "fault: a process dies holding a claim (lease 2 s for the test, 60 s by default)",
        patients=3, done=figures["done"], run_seconds=round(waited, 1),
    )  # fmt: skip
