"""What the fault tests share: a Runtime on the proxy, waiting for runs, the invariants, figures.

The invariants every fault test checks (issue #6):

- the run ends (`done`) or is still resumable, never stuck `running` with nobody working on it;
- every patient of the run is there exactly once, `done` with a result or `failed` with a
  reason, none `pending` or `in_progress`; the run's counts add up;
- no patient has two results in one run (nobody was counted twice);
- no ResearchSubject identifier occurs twice on the FHIR server.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import date
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import text

from service.api.security import token_digest
from service.config import Settings
from service.mapping import load_mappings
from service.runtime import Runtime
from service.store import Store
from service.writeback.identifiers import subject_identifier_system

REPO = Path(__file__).resolve().parents[2]
FIGURES = Path(os.environ.get("MEDCARE_RELIABILITY_FIGURES", REPO / "var" / "reliability.jsonl"))
AS_OF = date(2026, 11, 26)
TOKEN = "reliability-token-" + "r" * 20
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SUBJECT_SYSTEM = subject_identifier_system(load_mappings().parameters.canonical_base)

_recorded: list[dict[str, Any]] = []
_printed: list[bool] = []


def record(test: str, **figures: Any) -> None:
    """Keep a test's figures: printed at the end of the session and appended to FIGURES."""
    row = {"test": test, **figures}
    _recorded.append(row)
    FIGURES.parent.mkdir(parents=True, exist_ok=True)
    with FIGURES.open("a", encoding="utf-8") as out:
        out.write(json.dumps(row, default=str) + "\n")


def print_figures(write_line: Any) -> None:
    """The figures of this session, one line per test (once, whichever conftest asks first)."""
    if not _recorded or _printed:
        return
    _printed.append(True)
    write_line("")
    write_line("reliability and security figures (also in " + str(FIGURES) + "):")
    for row in _recorded:
        write_line("  " + json.dumps(row, default=str))


def settings_for(base_url: str | None, database_url: str, **overrides: Any) -> Settings:
    return Settings(
        fhir_base_url=base_url,
        database_url=database_url,
        api_token_hashes=(token_digest(TOKEN),),
        run_concurrency=4,
        today=AS_OF,  # the fixtures' day is the service's today: their screens are current
    ).with_overrides(**overrides)


def make_runtime(base_url: str, database_url: str, **overrides: Any) -> Runtime:
    return Runtime(settings_for(base_url, database_url, **overrides))


def wait_run(runtime: Runtime, run_id: str, timeout: float) -> dict[str, Any]:
    """Poll the store until the run is final; AssertionError with its progress after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = runtime.store.get_run(run_id)
        assert run is not None
        if run.status in ("done", "failed", "cancelled"):
            return {**run.to_dict(), "progress": runtime.store.run_progress(run_id)}
        time.sleep(0.05)
    raise AssertionError(
        f"run {run_id} not finished in {timeout} s: {runtime.store.run_progress(run_id)}"
    )


def wait_until(predicate: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def run_items(store: Store, run_id: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(1000):  # bounded: 1000 pages of 1000
        page, cursor = store.run_results(run_id, cursor, 1000)
        items.extend(dict(i) for i in page)
        if cursor is None:
            return items
    raise AssertionError("run results did not end")


def check_run(runtime: Runtime | Store, run_id: str, patients: list[str]) -> dict[str, Any]:
    """The invariants of a finished run; returns {done, failed, reasons} for the figures."""
    store = runtime.store if isinstance(runtime, Runtime) else runtime
    run = store.get_run(run_id)
    assert run is not None and run.status == "done", run
    progress = store.run_progress(run_id)
    items = run_items(store, run_id)
    expected = [f"Patient/{p}" for p in patients]
    assert [i["patient"] for i in items] == expected, "a patient is missing or listed twice"
    assert progress["total"] == len(expected)
    assert progress["pending"] == 0 and progress["in_progress"] == 0, progress
    assert progress["done"] + progress["failed"] == len(expected), progress
    assert progress["candidate"] + progress["ineligible"] == progress["done"], progress
    reasons = {}
    for item in items:
        if item["state"] == "done":
            assert item["result"] is not None and item["result"]["patient"] == item["patient"]
            assert all(c["reason"] for c in item["result"]["criteria"])
        else:
            assert item["state"] == "failed" and item["error"], item
            reasons[item["patient"]] = item["error"]
    twice = duplicate_results(store, run_id)
    assert not twice, f"patients screened twice in one run: {twice}"
    return {"done": progress["done"], "failed": progress["failed"], "reasons": reasons}


def duplicate_results(store: Store, run_id: str) -> dict[str, int]:
    """Patients with more than one stored result in this run."""
    with store.engine.connect() as connection:
        rows = connection.execute(
            text(
                "SELECT patient_id, COUNT(*) FROM results WHERE run_id = :run "
                "GROUP BY patient_id HAVING COUNT(*) > 1"
            ),
            {"run": run_id},
        ).all()
    return {str(patient): int(count) for patient, count in rows}


def research_subjects(fhir_base: str) -> Counter[str]:
    """ResearchSubjects on the server (asked directly, not through the proxy) by our identifier."""
    counts: Counter[str] = Counter()
    url: str | None = f"{fhir_base}/ResearchSubject?_count=1000"
    for _ in range(100):  # bounded paging
        if url is None:
            return counts
        bundle = requests.get(url, timeout=30).json()
        for entry in bundle.get("entry") or []:
            for ident in entry["resource"].get("identifier") or []:
                if ident.get("system") == SUBJECT_SYSTEM:
                    counts[ident["value"]] += 1
        url = next((k["url"] for k in bundle.get("link") or [] if k["relation"] == "next"), None)
    raise AssertionError("ResearchSubject paging did not end")


def assert_no_duplicate_subjects(fhir_base: str) -> Counter[str]:
    counts = research_subjects(fhir_base)
    twice = {value: n for value, n in counts.items() if n > 1}
    assert not twice, f"duplicate ResearchSubjects on the server: {twice}"
    return counts


def rss_kib(pid: int) -> int:
    """Resident memory of a process in KiB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def tree_pids(pid: int) -> list[int]:
    """`pid` and its descendants (Linux /proc), for the memory of gunicorn and its workers."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        found.append(current)
        todo.extend(children.get(current, []))
    return found


class ServiceProcess:
    """`medcare-screen serve` (gunicorn) as a subprocess on a fixed loopback port.

    `start()` waits for /health/ready; `kill()` sends SIGKILL to gunicorn and its workers at
    once (the whole process group); `stop()` is a clean SIGTERM. The log is appended to
    `log_path` across restarts.
    """

    def __init__(self, env: dict[str, str], log_path: Path, *, workers: int = 2,
                 threads: int = 4) -> None:  # fmt: skip
        from tests.integration.peers import free_port

        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **env}
        self.log_path = log_path
        self.workers, self.threads = workers, threads
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> ServiceProcess:
        script = Path(sys.executable).with_name("medcare-screen")
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [str(script), "serve", "--port", str(self.port), "--workers", str(self.workers),
                 "--threads", str(self.threads)],
                env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(
                    f"service exited {self.process.returncode}:\n{self.log()[-3000:]}"
                )
            try:
                if requests.get(f"{self.base_url}/health/ready", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.2)
        self.kill()
        raise AssertionError("service not ready:\n" + self.log()[-3000:])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def stop(self) -> None:
        self._signal(signal.SIGTERM)

    def _signal(self, sig: int) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, sig)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.base_url + path, headers=AUTH, timeout=30, **kwargs)

    def post(self, path: str, body: Any) -> requests.Response:
        return requests.post(self.base_url + path, json=body, headers=AUTH, timeout=30)

    def __enter__(self) -> ServiceProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def service_env(fhir_base: str | None, database_url: str, **extra: str) -> dict[str, str]:
    env = {
        "MEDCARE_DATABASE_URL": database_url,
        "MEDCARE_API_TOKEN_SHA256": token_digest(TOKEN),
        "MEDCARE_RUN_CONCURRENCY": "4",
        **extra,
    }
    if fhir_base:
        env["MEDCARE_FHIR_BASE_URL"] = fhir_base
    return env


def forget_subjects(fhir_base: str, patients: list[str]) -> None:
    """Delete our ResearchSubjects of these patients (directly on the server), so a test that
    needs a first write does not depend on what earlier tests (fuzzing included) wrote."""
    for patient in patients:
        for subject in subjects_of(fhir_base, patient):
            subject_id = subject["id"]
            response = requests.delete(f"{fhir_base}/ResearchSubject/{subject_id}", timeout=30)
            assert response.status_code in (200, 204), response.text


def subjects_of(fhir_base: str, patient: str, study: str = "NCT06585007") -> list[dict[str, Any]]:
    """Our ResearchSubjects of this patient in this study, as the server has them now (no cache)."""
    bundle = requests.get(
        f"{fhir_base}/ResearchSubject",
        params={"identifier": f"{SUBJECT_SYSTEM}|{study}:{patient}"},
        headers={"Cache-Control": "no-cache"},
        timeout=30,
    ).json()
    return [entry["resource"] for entry in bundle.get("entry") or []]
