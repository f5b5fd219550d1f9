"""API latency under 20 concurrent clients: "latest result" and a one-patient screen.

The service runs as it does in production: `medcare-screen serve` (gunicorn, its default 2
workers x 8 threads) with token authentication, a SQLite store in the scratch folder and the
FHIR server the rest of the benchmark loaded. Write-back is off, so the FHIR server is only
read. Each client is a thread with its own keep-alive session, and it sends a fixed number of
requests one after the other. Each call's latency is measured on the client (time to the full
response). The percentiles are over all calls. A failed call is counted and reported, not timed.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from datetime import date
from pathlib import Path
from typing import Any

import requests

from bench.servers import free_port, stop

REPO = Path(__file__).resolve().parents[1]
CLIENTS = 20
START_TIMEOUT_S = 60.0


class ApiUnavailable(RuntimeError):
    """The service did not start; the message carries the end of its log."""


@contextmanager
def serving(fhir_base: str, work: Path) -> Iterator[tuple[str, str]]:
    """`medcare-screen serve` on a free loopback port; yields (base URL, bearer token)."""
    token = secrets.token_urlsafe(24)
    port = free_port()
    work.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "MEDCARE_ENV": "production",
        "MEDCARE_API_TOKEN_SHA256": hashlib.sha256(token.encode()).hexdigest(),
        "MEDCARE_FHIR_BASE_URL": fhir_base,
        "MEDCARE_DATABASE_URL": f"sqlite:///{work / 'api.sqlite3'}",
        "MEDCARE_WRITE_BACK": "false",
    }
    log_path = work / "api.log"
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "service.cli", "serve", "--port", str(port)],
            cwd=REPO,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None or time.monotonic() > deadline:
                raise ApiUnavailable(f"the service did not start:\n{log_path.read_text()[-1500:]}")
            with suppress(requests.RequestException):
                if requests.get(f"{base}/health/live", timeout=2).status_code == 200:
                    break
            time.sleep(0.3)
        yield base, token
    finally:
        stop(process)


def latencies(
    call: Callable[[requests.Session, int], requests.Response],
    clients: int,
    calls_per_client: int,
    token: str,
    budget_s: float,
) -> dict[str, Any]:
    """Run `clients` threads, each making `calls_per_client` calls; p50/p99 in milliseconds."""
    timings: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + budget_s

    def client(number: int) -> None:
        with requests.Session() as session:
            session.headers["Authorization"] = f"Bearer {token}"
            for i in range(calls_per_client):
                if time.perf_counter() > deadline:
                    return
                started = time.perf_counter()
                try:
                    response = call(session, number * calls_per_client + i)
                    ok = response.status_code == 200
                    problem = f"HTTP {response.status_code}"
                except requests.RequestException as exc:
                    ok, problem = False, type(exc).__name__
                spent = time.perf_counter() - started
                with lock:
                    if ok:
                        timings.append(spent * 1000)
                    else:
                        errors.append(problem)

    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=clients) as pool:
        list(pool.map(client, range(clients)))
    elapsed = time.perf_counter() - started
    ordered = sorted(timings)
    return {
        "clients": clients,
        "calls": len(ordered),
        "errors": len(errors),
        "error_kinds": sorted(set(errors))[:5],
        "p50_ms": round(statistics.median(ordered), 1) if ordered else None,
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 1)
        if ordered
        else None,
        "requests_per_s": round(len(ordered) / elapsed, 1) if elapsed else None,
    }


def api_latency(
    fhir_base: str,
    patient_ids: list[str],
    as_of: date,
    work: Path,
    screens_per_client: int = 5,
    reads_per_client: int = 25,
    budget_s: float = 240.0,
) -> dict[str, Any]:
    """Both measures against a running FHIR server that holds `patient_ids`.

    The screens go first, so every patient then has a stored result for "latest result".
    """
    try:
        with serving(fhir_base, work) as (base, token):

            def screen(session: requests.Session, n: int) -> requests.Response:
                body = {"patient": patient_ids[n % len(patient_ids)], "as_of": as_of.isoformat()}
                return session.post(f"{base}/v1/screen", json=body, timeout=120)

            def latest(session: requests.Session, n: int) -> requests.Response:
                patient = patient_ids[n % len(patient_ids)]
                return session.get(f"{base}/v1/patients/{patient}/result", timeout=60)

            screen_stats = latencies(screen, CLIENTS, screens_per_client, token, budget_s)
            latest_stats = latencies(latest, CLIENTS, reads_per_client, token, budget_s)
    except ApiUnavailable as exc:
        return {"available": False, "why": str(exc)[:800]}
    return {"available": True, "screen": screen_stats, "latest_result": latest_stats}
