"""Keeping results current (issue 14), measured against the HAPI peer: change-to-feed latency by
subscription and by sweep alone, nothing lost while the notification endpoint is down, and
patients re-screened per second by 1, 2 and 4 worker processes on PostgreSQL.

A "change" is a testosterone Observation POSTed for a candidate that crosses 50 ng/dL (80, then
20, then 80 ...), so that each one changes the decision and makes one entry in /v1/changes. Its
latency runs from the POST's answer to the moment a poller (every 0.1 s) sees the entry. Each
patient has one change in flight at a time; `--patients` patients change side by side. The
service is `medcare-screen serve` as in production (gunicorn, 2 workers x 4 threads, embedded
re-screen worker, SQLite), write-back off; its coalescing delay is its default.

    python -m bench.currency [--changes 200] [--patients 20] [--sweep-s 10]
        [--lost-patients 100] [--lost-changes 1000] [--down-s 30] [--scale 100]
"""

from __future__ import annotations

import json
import os
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import requests

from bench.servers import running, server_pid

REPO = Path(__file__).resolve().parents[1]
BASE_FIXTURE = REPO / "fixtures" / "patients" / "base.json"  # the BASE candidate, testo 20
AS_OF = "2026-11-26"
FIRST_EFFECTIVE = datetime(2026, 11, 2, tzinfo=UTC)  # after the fixture's own testosterone
HIGH, LOW = 80, 20  # ng/dL on either side of the castrate level (50)
POLL_S = 0.1
FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient_ids(count: int, prefix: str) -> list[str]:
    return [f"{prefix}{n:03d}" for n in range(count)]


def load_patients(base_url: str, ids: list[str]) -> None:
    """The BASE fixture under each id (a transaction of PUTs: its 8 resources renamed)."""
    text = BASE_FIXTURE.read_text()
    with requests.Session() as session:
        for patient in ids:
            answer = session.post(base_url, data=text.replace("fx-base", patient),
                                  headers=FHIR_JSON, timeout=120)  # fmt: skip
            answer.raise_for_status()


class Changes:
    """POSTs testosterone Observations with effective times that only ever increase."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self._n = 0
        self.next_value: dict[str, int] = {}  # per patient: the value that changes its decision
        self._lock = threading.Lock()
        self.template = next(
            e["resource"] for e in json.loads(BASE_FIXTURE.read_text())["entry"]
            if e["resource"]["id"] == "fx-base-testo"
        )  # fmt: skip

    def flip(self, session: requests.Session, patient: str) -> str:
        """POST the value on the other side of 50 ng/dL from the patient's last one."""
        value = self.next_value.get(patient, HIGH)
        self.next_value[patient] = LOW if value == HIGH else HIGH
        return self.post(session, patient, value)

    def post(self, session: requests.Session, patient: str, value: int) -> str:
        """POST one Observation; its server id."""
        with self._lock:
            self._n += 1
            effective = FIRST_EFFECTIVE + timedelta(minutes=self._n)
        resource = {key: val for key, val in self.template.items() if key != "id"}
        resource["subject"] = {"reference": f"Patient/{patient}"}
        resource["effectiveDateTime"] = effective.isoformat().replace("+00:00", "Z")
        resource["valueQuantity"] = {**resource["valueQuantity"], "value": value}
        answer = session.post(f"{self.base_url}/Observation", json=resource, timeout=60)
        answer.raise_for_status()
        return str(answer.json()["id"])


@dataclass
class Entry:
    seq: int
    status: str
    trigger: str | None
    seen: float  # time.monotonic() when the poller saw it


@dataclass
class Feed:
    """Polls /v1/changes on a thread of its own and keeps each patient's entries."""

    service: Any  # tests.reliability.harness.ServiceProcess
    cursor: str | None = None
    entries: dict[str, list[Entry]] = field(default_factory=dict)
    changed: threading.Condition = field(default_factory=threading.Condition)
    _stop: threading.Event = field(default_factory=threading.Event)

    def catch_up(self) -> None:
        while True:
            answer = self.service.get("/v1/changes", params={"cursor": self.cursor, "limit": 500})
            answer.raise_for_status()
            page = answer.json()
            seen = time.monotonic()
            with self.changed:
                for item in page["items"]:
                    patient = item["patient"].rpartition("/")[2]
                    self.entries.setdefault(patient, []).append(
                        Entry(item["seq"], item["status"], item.get("trigger"), seen)
                    )
                self.changed.notify_all()
            self.cursor = page["next_cursor"] or self.cursor
            if not page["items"]:
                return

    def count(self, patient: str) -> int:
        with self.changed:
            return len(self.entries.get(patient, []))

    def wait(self, patient: str, after: int, timeout: float) -> Entry | None:
        """The patient's first entry past its `after`-th one, or None after `timeout`."""
        deadline = time.monotonic() + timeout
        with self.changed:
            while len(self.entries.get(patient, [])) <= after:
                if not self.changed.wait(deadline - time.monotonic()):
                    return None
            return self.entries[patient][after]

    @contextmanager
    def polling(self) -> Iterator[Feed]:
        def loop() -> None:
            while not self._stop.is_set():
                with suppress(requests.RequestException):  # a restart: ask again
                    self.catch_up()
                self._stop.wait(POLL_S)

        thread = threading.Thread(target=loop, daemon=True)
        thread.start()
        try:
            yield self
        finally:
            self._stop.set()
            thread.join(timeout=30)


def percentiles(values: list[float]) -> dict[str, Any]:
    ordered = sorted(values)
    if not ordered:
        return {"n": 0}
    return {
        "n": len(ordered),
        "p50_s": round(statistics.median(ordered), 2),
        "p99_s": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
        "max_s": round(ordered[-1], 2),
    }


def latency(
    feed: Feed, changes: Changes, patients: list[str], total: int, timeout: float
) -> dict[str, Any]:
    """`total` changes over `patients`, one in flight per patient; seconds from each POST's
    answer to its feed entry, and which trigger the entries name."""
    left = [total]
    lock = threading.Lock()
    seconds: list[float] = []
    triggers: dict[str, int] = {}
    missed = [0]

    def one_patient(patient: str) -> None:
        with requests.Session() as session:
            while True:
                with lock:
                    if left[0] <= 0:
                        return
                    left[0] -= 1
                before = feed.count(patient)
                changes.flip(session, patient)
                answered = time.monotonic()
                entry = feed.wait(patient, before, timeout)
                with lock:
                    if entry is None:
                        missed[0] += 1
                        return  # this patient's later changes would be measured against a stale one
                    seconds.append(entry.seen - answered)
                    triggers[entry.trigger or "none"] = triggers.get(entry.trigger or "none", 0) + 1

    started = time.monotonic()
    with ThreadPoolExecutor(len(patients)) as pool:
        list(pool.map(one_patient, patients))
    return {**percentiles(seconds), "missed": missed[0], "triggers": triggers,
            "changes_per_s": round(len(seconds) / (time.monotonic() - started), 2)}  # fmt: skip


def cohort(service: Any, feed: Feed, name: str, patients: list[str], timeout: float) -> None:
    """A list cohort of `patients`; waits for the joiners' first screens (an entry each)."""
    answer = service.post("/v1/cohorts", {"name": name, "patients": patients})
    assert answer.status_code in (200, 201, 202), answer.text
    for patient in patients:
        if feed.wait(patient, 0, timeout) is None:
            raise SystemExit(f"{patient} was not screened on joining cohort {name}")


def screen_seconds(service: Any, patients: list[str]) -> float:
    """Median of one-patient `POST /v1/screen` calls: what one screen costs here."""
    spent = []
    for patient in patients:
        started = time.monotonic()
        service.post("/v1/screen", {"patient": patient}).raise_for_status()
        spent.append(time.monotonic() - started)
    return round(statistics.median(spent), 2)


def ensure_subscriptions(base_url: str, endpoint: str, secret: str, timeout: float) -> int:
    """The service's Subscriptions on HAPI (as `subscriptions ensure` makes them), waited for
    until HAPI has activated every one; how many."""
    from service.currency.subscriptions import HookSettings
    from service.currency.subscriptions import ensure_subscriptions as ensure
    from service.fhir.client import FhirClient
    from service.mapping import load_mappings
    from service.read_plan import read_plan

    client = FhirClient(base_url)
    try:
        done = ensure(client, read_plan(load_mappings()), HookSettings(endpoint, secret))
    finally:
        client.close()
    ids = [*done.created, *done.updated, *done.unchanged]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = [
            requests.get(f"{base_url}/Subscription/{sub}", timeout=30).json().get("status")
            for sub in ids
        ]
        if all(state == "active" for state in states):
            return len(ids)
        time.sleep(0.5)
    raise SystemExit(f"HAPI did not activate the Subscriptions in {timeout:.0f} s: {states}")


def results_after(db: Path, first_id: int) -> list[tuple[str, str | None]]:
    """(patient id, trigger) of every result stored after result `first_id` (SQLite)."""
    with sqlite3.connect(db) as connection:
        rows = connection.execute(
            'SELECT patient_id, "trigger" FROM results WHERE id > ?', (first_id,)
        ).fetchall()
    return [(str(patient).rpartition("/")[2], trigger) for patient, trigger in rows]


def last_result_id(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT coalesce(max(id), 0) FROM results").fetchone()[0])


def queued(db: Path) -> int:
    with sqlite3.connect(db) as connection:
        return int(connection.execute("SELECT count(*) FROM rescreen_queue").fetchone()[0])


def nothing_lost(
    service: Any, changes: Changes, patients: list[str], per_patient: int, down_s: float,
    db: Path, settle_s: float, timeout: float,
) -> dict[str, Any]:  # fmt: skip
    """Stop the service (the notification endpoint refuses connections), POST `per_patient`
    changes to each patient, start it again after `down_s`: how long until every patient's
    latest result cites its last Observation, and how many screens that took."""
    first = last_result_id(db)
    service.stop()
    stopped = time.monotonic()
    last: dict[str, str] = {}
    local = threading.local()

    def post(patient: str) -> None:
        if not hasattr(local, "session"):
            local.session = requests.Session()
        last[patient] = changes.flip(local.session, patient)

    with ThreadPoolExecutor(4) as pool:
        for _round in range(per_patient):
            list(pool.map(post, patients))
    posted_s = time.monotonic() - stopped
    time.sleep(max(0.0, down_s - posted_s))
    down = time.monotonic() - stopped
    service.start(timeout=120)
    restarted = time.monotonic()
    stale = set(patients)
    while stale and time.monotonic() - restarted < timeout:
        for patient in sorted(stale):
            body = service.get(f"/v1/patients/{patient}/result").text
            if f"Observation/{last[patient]}" in body:
                stale.discard(patient)
        time.sleep(0.5)
    current_s = time.monotonic() - restarted
    settle_until = time.monotonic() + settle_s  # late redeliveries and overlapping sweeps
    while queued(db) or time.monotonic() < settle_until:
        time.sleep(0.5)
    rows = [(p, t) for p, t in results_after(db, first) if p in set(patients)]
    by_trigger: dict[str, int] = {}
    for _patient, trigger in rows:
        by_trigger[trigger or "none"] = by_trigger.get(trigger or "none", 0) + 1
    total = per_patient * len(patients)
    return {
        "patients": len(patients), "changes": total, "posting_s": round(posted_s, 1),
        "endpoint_down_s": round(down, 1), "current_after_restart_s": round(current_s, 1),
        "not_current": len(stale), "screens": len(rows), "screens_by_trigger": by_trigger,
        "screens_per_patient": round(len(rows) / len(patients), 2),
        "screens_per_change": round(len(rows) / total, 3),
    }  # fmt: skip


# -- scale-out: worker processes on PostgreSQL ------------------------------------------------

TICKS = os.sysconf("SC_CLK_TCK")
WORKER = Path(sys.executable).with_name("medcare-screen")


def _stat(pid: int) -> list[str]:
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()  # fields from the 3rd (state) on


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU of a process (user + system); with `children`, also of its children: the ones it
    reaped and the ones alive (PostgreSQL's backends are the postmaster's children)."""
    fields = _stat(pid)
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                try:
                    child = _stat(int(entry.name))
                except (OSError, ValueError):
                    continue
                if int(child[1]) == pid:
                    ticks += int(child[11]) + int(child[12])
    return ticks / TICKS


def scale_out(
    base_url: str, patients: list[str], processes: tuple[int, ...], work: Path
) -> dict[str, Any]:
    """Patients re-screened per second by 1, 2, 4 `medcare-screen worker` processes on one
    PostgreSQL against this HAPI: the workers start (and connect) first, then every patient is
    queued at once; the clock stops when the queue is empty. CPU seconds per process kind over
    that time say which one is the limit."""
    import subprocess

    from bench.queue import _database
    from service.store.repository import create_store
    from tests.integration.postgres import running_postgres

    figures: dict[str, Any] = {"patients": len(patients)}
    hapi = server_pid(base_url)
    with running_postgres() as server:
        postmaster = int((server.data_dir / "postmaster.pid").read_text().split()[0])
        for count in processes:
            url = _database(server.url, f"scale_{count}", "ours", sys.executable)
            env = {**os.environ, "MEDCARE_DATABASE_URL": url, "MEDCARE_TODAY": AS_OF,
                   "MEDCARE_FHIR_BASE_URL": base_url, "MEDCARE_WRITE_BACK": "false",
                   "MEDCARE_SWEEP_INTERVAL_S": "0"}  # fmt: skip
            logs = [work / f"worker-{count}-{n}.log" for n in range(count)]
            workers = []
            for log in logs:
                with log.open("wb") as err:  # the child keeps its own descriptor
                    workers.append(subprocess.Popen([str(WORKER), "worker"], env=env,
                                                    stderr=err, cwd=REPO))  # fmt: skip
            while not all("started" in log.read_text() for log in logs):
                time.sleep(0.2)
            store = create_store(url)
            before = (sum(cpu_seconds(w.pid) for w in workers), cpu_seconds(hapi),
                      cpu_seconds(postmaster, children=True))  # fmt: skip
            started = time.perf_counter()
            store.enqueue([f"Patient/{p}" for p in patients], "schedule", "bench",
                          delay=timedelta(0))  # fmt: skip
            while store.depth():
                time.sleep(0.05)
            elapsed = time.perf_counter() - started
            after = (sum(cpu_seconds(w.pid) for w in workers), cpu_seconds(hapi),
                     cpu_seconds(postmaster, children=True))  # fmt: skip
            store.close()
            for worker in workers:
                worker.terminate()
                worker.wait(timeout=60)
            cpu = [round(b - a, 1) for a, b in zip(before, after, strict=True)]
            figures[f"{count} worker process(es)"] = {
                "seconds": round(elapsed, 2),
                "patients/s": round(len(patients) / elapsed, 1),
                "cpu_s workers / hapi / postgres": cpu,
                "cores busy": round(sum(cpu) / elapsed, 2),
            }
    return figures


# -- one invocation ---------------------------------------------------------------------------


def run(args: Any, work: Path) -> dict[str, Any]:
    from tests.reliability.harness import ServiceProcess, service_env

    report: dict[str, Any] = {"started": datetime.now(UTC).isoformat(timespec="seconds"),
                              "load_average_start": os.getloadavg()[0]}  # fmt: skip
    latency_ids = patient_ids(args.patients, "lat")
    lost_ids = patient_ids(args.lost_patients, "lost")
    with running("hapi", work) as base_url:
        load_patients(base_url, latency_ids + lost_ids)
        changes = Changes(base_url)
        db = work / "service.sqlite3"
        secret = "bench-" + os.urandom(12).hex()
        common = {"MEDCARE_TODAY": AS_OF, "MEDCARE_WRITE_BACK": "false",
                  "MEDCARE_SWEEP_MAX_AGE_S": "3600"}  # fmt: skip
        sweeping = {**common, "MEDCARE_SWEEP_INTERVAL_S": str(args.sweep_s)}
        service = ServiceProcess(service_env(base_url, f"sqlite:///{db}", **sweeping),
                                 work / "service.log", workers=2, threads=4)  # fmt: skip
        endpoint = f"{service.base_url}/v1/notifications"
        notify = {"MEDCARE_NOTIFY_SECRET": secret, "MEDCARE_NOTIFY_URL": endpoint}
        sweep_timeout = 3 * args.sweep_s + 60
        with Feed(service).polling() as feed, service:
            cohort(service, feed, "latency", latency_ids, timeout=120)
            report["screen_s (POST /v1/screen, median)"] = screen_seconds(service, latency_ids[:10])
            report["by sweep alone"] = {
                "sweep_interval_s": args.sweep_s,
                **latency(feed, changes, latency_ids, args.changes, sweep_timeout),
            }
            service.stop()
            report["subscriptions"] = ensure_subscriptions(base_url, endpoint, secret, 120)
            service.env.update({**notify, "MEDCARE_SWEEP_INTERVAL_S": "0"})
            service.start(timeout=120)
            report["by subscription"] = latency(feed, changes, latency_ids, args.changes, 60)
            service.stop()
            service.env.update({**notify, **sweeping})
            service.start(timeout=120)
            cohort(service, feed, "lost", lost_ids, timeout=300)
            report["nothing lost"] = nothing_lost(
                service, changes, lost_ids, args.lost_changes // len(lost_ids), args.down_s, db,
                settle_s=2 * args.sweep_s, timeout=3 * sweep_timeout,
            )  # fmt: skip
            service.stop()
        if args.scale:
            scaled = (latency_ids + lost_ids)[: args.scale]
            report["scale-out"] = scale_out(base_url, scaled, tuple(args.processes), work)
    report["load_average_end"] = os.getloadavg()[0]
    return report


def main() -> None:
    from bench import command_line

    parser = command_line("bench.currency", __doc__)
    option = parser.add_argument
    option("--changes", type=int, default=200, help="changes per latency measure (default 200)")
    option("--patients", type=int, default=20, help="patients changed side by side (default 20)")
    option("--sweep-s", type=int, default=10, help="sweep interval, seconds (default 10)")
    option("--lost-patients", type=int, default=100, help="patients of 'nothing lost' (100)")
    option("--lost-changes", type=int, default=1000, help="changes of 'nothing lost' (1000)")
    option("--down-s", type=float, default=30, help="notification endpoint down, s (30)")
    option("--scale", type=int, default=100, help="patients queued for scale-out (0: skip)")
    option("--processes", type=int, nargs="+", default=[1, 2, 4], help="worker processes")
    option("--out", type=Path, default=REPO / "bench" / "currency.json", help="figures (JSON)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="medcare-currency-") as work:
        report = run(args, Path(work))
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
