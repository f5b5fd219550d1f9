"""Load: 50 concurrent clients (locust, headless) for 30 s against the service under gunicorn,
backed by the real Medplum peer and SQLite; error rate, p50/p99 latency and the service's
memory over time (sampled every second from /proc)."""

from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.reliability import harness
from tests.reliability.conftest import Medplum

pytestmark = pytest.mark.timeout(150)

USERS = 50
SECONDS = 30
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


def _sample_memory(pid: int, stop: threading.Event, samples: list[tuple[float, int]]) -> None:
    started = time.monotonic()
    while not stop.wait(1.0):
        total = 0
        for child in harness.tree_pids(pid):
            with contextlib.suppress(OSError):
                total += harness.rss_kib(child)
        samples.append((round(time.monotonic() - started, 1), total // 1024))


def test_fifty_clients_for_thirty_seconds(medplum: Medplum, tmp_path: Path) -> None:
    env = harness.service_env(medplum.base_url, f"sqlite:///{tmp_path / 'load.sqlite3'}",
                              MEDCARE_DB_POOL_SIZE="16")  # fmt: skip
    service = harness.ServiceProcess(env, tmp_path / "service.log", workers=2, threads=16)
    samples: list[tuple[float, int]] = []
    stop = threading.Event()
    with service:
        assert service.process is not None
        sampler = threading.Thread(target=_sample_memory, args=(service.process.pid, stop, samples))
        sampler.start()
        prefix = tmp_path / "locust"
        locust = subprocess.run(
            [str(Path(sys.executable).with_name("locust")), "-f", str(LOCUSTFILE), "--headless",
             "-u", str(USERS), "-r", "25", "-t", f"{SECONDS}s", "--host", service.base_url,
             "--csv", str(prefix), "--only-summary", "--stop-timeout", "5", "--exit-code-on-error", "0"],
            env={**os.environ, "MEDCARE_LOAD_TOKEN": harness.TOKEN,
                 "MEDCARE_LOAD_PATIENTS": ",".join(medplum.patients)},
            capture_output=True, text=True, timeout=SECONDS + 60,
        )  # fmt: skip
        stop.set()
        sampler.join()
        assert locust.returncode == 0, locust.stderr[-3000:]
    server_errors = [
        line for line in service.log().splitlines() if '" 5' in line or "ERROR" in line
    ]
    with (tmp_path / "locust_stats.csv").open() as stats:
        rows = {row["Name"]: row for row in csv.DictReader(stats)}
    with (tmp_path / "locust_failures.csv").open() as failed:
        failure_kinds = [
            f"{r['Method']} {r['Name']}: {r['Error']} x{r['Occurrences']}"
            for r in csv.DictReader(failed)
        ]
    total = rows["Aggregated"]
    requests_ = int(total["Request Count"])
    failures = int(total["Failure Count"])
    error_rate = failures / requests_
    p50, p99 = float(total["50%"]), float(total["99%"])
    per_endpoint = {
        name: {"n": int(r["Request Count"]), "p50_ms": float(r["50%"]), "p99_ms": float(r["99%"]),
               "failures": int(r["Failure Count"])}
        for name, r in rows.items() if name != "Aggregated"
    }  # fmt: skip
    memory = [mb for _, mb in samples]
    warm = memory[min(5, len(memory) - 1)]
    assert requests_ > USERS * SECONDS // 2, requests_
    assert error_rate < 0.01, (failure_kinds, per_endpoint, locust.stderr[-2000:])
    assert p99 < 5000, per_endpoint
    assert memory[-1] < warm * 1.5 + 50, samples  # no growth beyond warm-up and caches
    harness.record(
        "load: 50 clients for 30 s (locust, gunicorn 2x16, Medplum, SQLite)",
        requests=requests_, requests_per_s=round(float(total["Requests/s"]), 1),
        failures=failures, failure_kinds=failure_kinds, error_rate=round(error_rate, 5), p50_ms=p50, p99_ms=p99,
        max_ms=float(total["Max Response Time"]), per_endpoint=per_endpoint,
        memory_mb_first_warm_last_max=[memory[0], warm, memory[-1], max(memory)],
        memory_mb_every_5s=memory[::5], service_log_errors=server_errors[:5],
    )  # fmt: skip
