"""The re-screen queue on PostgreSQL: the store's own (service.store.rescreen) beside
procrastinate, jobs per second with 1, 2 and 4 processes, and a 50-change burst coalesced.

Each measure runs in fresh worker processes on one throwaway PostgreSQL (the tests' own,
tests/integration/postgres.py): phase "enqueue" (each process enqueues its share of the jobs
one call per job, as a notification would) then phase "work" (each process takes one job at
a time and settles it until the queue is empty; the screen itself is left out: this measures
the queue). procrastinate runs from its own virtualenv (`--procrastinate-python`), so the
service's environment stays as it is; without it only the store's queue is measured.

    python -m bench.queue [--jobs 2000] [--procrastinate-python /tmp/procr-venv/bin/python]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve()
REPO = HERE.parents[1]
PROCESSES = (1, 2, 4)
BURST = 50


# -- children: one process's share of a phase ---------------------------------------------------


def _ours(phase: str, url: str, start: int, count: int) -> tuple[int, float]:
    from datetime import timedelta

    from service.store.repository import create_store

    store = create_store(url, pool_size=2)
    store.depth()  # connected: the clock starts here
    started = time.perf_counter()
    done = 0
    if phase == "enqueue":
        for n in range(start, start + count):
            store.enqueue([f"p{n}"], "sweep", delay=timedelta(0))
            done += 1
    elif phase == "burst":
        for change in range(count):
            store.enqueue(["burst"], "subscription", f"Observation/{change}", delay=timedelta(0))
        done = store.depth()
    else:
        while tasks := store.take_rescreens(1):
            for task in tasks:
                store.finish_rescreen(task.patient_id)
                done += 1
    store.close()
    return done, time.perf_counter() - started


def _procrastinate(phase: str, url: str, start: int, count: int) -> tuple[int, float]:
    import contextlib

    import procrastinate  # only in procrastinate's own virtualenv

    conninfo = url.replace("postgresql+psycopg://", "postgresql://")
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=conninfo))
    done = [0]

    @app.task(name="rescreen", queue="rescreen")
    def rescreen(patient: str) -> None:
        done[0] += 1

    started = time.perf_counter()
    if phase == "work":  # includes opening its pool: a few ms beside the jobs
        app.run_worker(queues=["rescreen"], wait=False, concurrency=1)
        return done[0], time.perf_counter() - started
    with app.open():
        app.connector.get_sync_connector().execute_query_one(query="SELECT 1 AS n")
        started = time.perf_counter()
        if phase == "schema":
            app.schema_manager.apply_schema()
        elif phase == "enqueue":
            for n in range(start, start + count):
                rescreen.configure(queueing_lock=f"p{n}").defer(patient=f"p{n}")
                done[0] += 1
        else:  # burst: the queueing lock keeps one waiting job per patient
            for _change in range(count):
                with contextlib.suppress(procrastinate.exceptions.AlreadyEnqueued):
                    rescreen.configure(queueing_lock="burst").defer(patient="burst")
            row = app.connector.get_sync_connector().execute_query_one(
                query="SELECT count(*) AS n FROM procrastinate_jobs"
            )
            done[0] = int(row["n"])
    return done[0], time.perf_counter() - started


# -- the parent: databases, processes, figures ----------------------------------------------------


def _children(
    python: str, impl: str, phase: str, url: str, jobs: int, processes: int
) -> tuple[float, list[int]]:
    """Run `phase` in `processes` children at once (jobs split between them): the seconds
    the slowest child took once connected (start-up and imports left out) and each child's
    count."""
    share = jobs // processes
    command = (
        [python, "-P", str(HERE)] if impl == "procrastinate" else [python, "-m", "bench.queue"]
    )
    running = [
        subprocess.Popen([*command, "child", impl, phase, url, str(n * share), str(share)],
                         cwd=REPO, stdout=subprocess.PIPE, text=True)
        for n in range(processes)
    ]  # fmt: skip
    outputs = [child.communicate()[0] for child in running]
    for child, output in zip(running, outputs, strict=True):
        if child.returncode != 0:
            raise SystemExit(f"{impl} {phase} child failed ({child.returncode}): {output}")
    figures = [output.split() for output in outputs]
    return max(float(seconds) for _, seconds in figures), [int(count) for count, _ in figures]


def _database(server_url: str, name: str, impl: str, python: str) -> str:
    import psycopg

    from service.store.repository import create_store

    base, _, _ = server_url.rpartition("/")
    admin_conninfo = server_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin_conninfo, autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        admin.execute(f"CREATE DATABASE {name}")
    url = f"{base}/{name}"
    if impl == "ours":
        store = create_store(url)
        store.migrate()
        store.close()
    else:
        _children(python, impl, "schema", url, 1, 1)
    return url


def measure(server_url: str, impl: str, python: str, jobs: int) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for processes in PROCESSES:
        url = _database(server_url, f"q_{impl}_{processes}", impl, python)
        enqueue_s, _ = _children(python, impl, "enqueue", url, jobs, processes)
        work_s, _ = _children(python, impl, "work", url, jobs, processes)
        figures[f"{processes} process(es)"] = {
            "enqueue jobs/s": round(jobs / enqueue_s),
            "take+finish jobs/s": round(jobs / work_s),
            "end to end jobs/s": round(jobs / (enqueue_s + work_s)),
        }
    url = _database(server_url, f"q_{impl}_burst", impl, python)
    _, [jobs_left] = _children(python, impl, "burst", url, BURST, 1)
    figures[f"jobs after a {BURST}-change burst for one patient"] = int(jobs_left)
    return figures


def screens_per_second(server_url: str, patients: int, log_dir: Path) -> dict[str, Any]:
    """Patients re-screened per second by 1, 2 and 4 `medcare-screen worker` processes on one
    PostgreSQL database against one HAPI peer: the workers are started (and connected)
    first, then every loaded patient is queued at once; the clock stops when the queue is
    empty."""
    import os
    from datetime import timedelta

    from service.fhir.client import FhirClient
    from service.store.repository import create_store
    from tests.conftest import AS_OF, FIXTURES
    from tests.integration.peers import running

    figures: dict[str, Any] = {"patients": patients}
    with running("hapi", log_dir) as peer:
        client = FhirClient(peer.base_url)
        cases = sorted(p for p in FIXTURES.glob("*.json") if p.name.count(".") == 1)
        loaded = []
        for path in [case for case in cases if not case.stem.startswith("invalid-")][:patients]:
            loaded.append(f"Patient/fx-{path.stem}")
            client.transaction(json.loads(path.read_text()), patient=loaded[-1])
        client.close()
        for processes in PROCESSES:
            url = _database(server_url, f"s_{processes}", "ours", sys.executable)
            env = {**os.environ, "MEDCARE_DATABASE_URL": url, "MEDCARE_TODAY": AS_OF.isoformat(),
                   "MEDCARE_FHIR_BASE_URL": peer.base_url}  # fmt: skip
            logs = [log_dir / f"worker-{processes}-{n}.log" for n in range(processes)]
            workers = [
                subprocess.Popen([str(Path(sys.executable).with_name("medcare-screen")), "worker"],
                                 env=env, stderr=log.open("wb"), cwd=REPO)
                for log in logs
            ]  # fmt: skip
            while not all("started" in log.read_text() for log in logs):
                time.sleep(0.2)
            store = create_store(url)
            started = time.perf_counter()
            store.enqueue(loaded, "schedule", "bench", delay=timedelta(0))
            while store.depth():
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            store.close()
            for worker in workers:
                worker.terminate()
                worker.wait(timeout=60)
            figures[f"{processes} worker process(es)"] = {
                "seconds": round(elapsed, 2),
                "patients/s": round(len(loaded) / elapsed, 1),
            }
    return figures


def main() -> None:
    from bench import command_line
    from tests.integration.postgres import running_postgres

    parser = command_line("bench.queue", __doc__)
    parser.add_argument("--jobs", type=int, default=2000, help="jobs per measure (default 2000)")
    parser.add_argument("--procrastinate-python", default=None, help="python with procrastinate")
    parser.add_argument(
        "--screens", type=int, default=0, metavar="N",
        help="also: N fixture patients re-screened by 1, 2, 4 worker processes against HAPI",
    )  # fmt: skip
    args = parser.parse_args()
    report: dict[str, Any] = {"jobs": args.jobs}
    with running_postgres() as server:
        report["store queue"] = measure(server.url, "ours", sys.executable, args.jobs)
        if args.procrastinate_python:
            report["procrastinate"] = measure(
                server.url, "procrastinate", args.procrastinate_python, args.jobs
            )
        if args.screens:
            with tempfile.TemporaryDirectory() as log_dir:
                report["re-screens against HAPI"] = screens_per_second(
                    server.url, args.screens, Path(log_dir)
                )
    print(json.dumps(report, indent=2))


def child(argv: list[str]) -> None:
    impl, phase, url, start, count = argv
    run = _ours if impl == "ours" else _procrastinate
    count_, seconds = run(phase, url, int(start), int(count))
    print(count_, f"{seconds:.4f}")


if __name__ == "__main__":
    if sys.argv[1:2] == ["child"]:
        child(sys.argv[2:])
    else:
        main()
