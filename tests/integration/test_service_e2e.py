"""End to end: the service under gunicorn, a real FHIR peer, a real PostgreSQL.

Polled as an integration engine would: start a run over the fixture population, poll it to the
end, page its results, read the changes feed, call the CDS Hooks service, and write back.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import requests

from service.api.security import token_digest
from tests.conftest import FIXTURES
from tests.integration.conftest import LoadedPeer
from tests.integration.jwks import Issuer, jwks_server
from tests.integration.peers import free_port
from tests.integration.postgres import PostgresServer, running_postgres

TOKEN = "e2e-token-" + "x" * 24
AUTH = {"Authorization": f"Bearer {TOKEN}"}


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with running_postgres() as server:
        yield server


@pytest.fixture(scope="module")
def ehr() -> Iterator[Issuer]:
    with jwks_server() as issuer:
        yield issuer


def _database(postgres: PostgresServer, name: str) -> str:
    admin = postgres.url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(admin, autocommit=True) as connection:
        connection.execute(f'DROP DATABASE IF EXISTS "{name}"')
        connection.execute(f'CREATE DATABASE "{name}"')
    return postgres.url.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def service(
    loaded_peer: LoadedPeer, postgres: PostgresServer, ehr: Issuer, tmp_path: Path
) -> Iterator[str]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MEDCARE_FHIR_BASE_URL": loaded_peer.base_url,
        "MEDCARE_DATABASE_URL": _database(postgres, f"e2e_{loaded_peer.peer.name}"),
        "MEDCARE_API_TOKEN_SHA256": token_digest(TOKEN),
        "MEDCARE_CDS_ISSUERS": f"{ehr.issuer}={ehr.jwks_url}",
        "MEDCARE_CDS_AUDIENCE": f"{base}/cds-services/medcare-patient-view",
        "MEDCARE_RUN_CONCURRENCY": "4",
        # the fixtures' day: runs as of it are current results (a look back never writes back)
        "MEDCARE_TODAY": "2026-11-26",
    }
    script = Path(sys.executable).with_name("medcare-screen")
    log = (tmp_path / "service.log").open("w")
    process = subprocess.Popen(
        [str(script), "serve", "--port", str(port), "--workers", "2", "--threads", "4"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert process.poll() is None, (tmp_path / "service.log").read_text()[-3000:]
            try:
                if requests.get(f"{base}/health/ready", timeout=2).status_code == 200:
                    break
            except requests.RequestException:
                pass
            time.sleep(0.3)
        else:
            raise AssertionError(
                "service not ready:\n" + (tmp_path / "service.log").read_text()[-3000:]
            )
        yield base
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=30)
        log.close()
        service_log = (tmp_path / "service.log").read_text()
        # no patient data in the logs: birth dates and names of the fixtures never appear
        assert "1950-03-14" not in service_log and "Testosterone" not in service_log


def _expected_status(case: str) -> str:
    return str(json.loads((FIXTURES / f"{case}.expected.json").read_text())["status"])


def _poll(base: str, url: str, timeout: float = 300) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = requests.get(base + url, headers=AUTH, timeout=10).json()
        if run["status"] in ("done", "failed", "cancelled"):
            return dict(run)
        time.sleep(0.5)
    raise AssertionError(f"run did not finish: {run}")


def test_integration_engine_journey(service: str, loaded_peer: LoadedPeer, ehr: Issuer) -> None:
    cases = loaded_peer.cases
    patients = [f"fx-{c}" for c in cases]
    started = requests.post(
        f"{service}/v1/runs",
        json={"patients": patients, "as_of": "2026-11-26"},
        headers=AUTH,
        timeout=10,
    )
    assert started.status_code == 202, started.text
    run = _poll(service, started.headers["Location"])
    assert run["status"] == "done", run
    progress = run["progress"]
    expected = {f"Patient/fx-{c}": _expected_status(c) for c in cases}
    assert progress["done"] == len(cases) and progress["failed"] == 0
    assert progress["candidate"] == sum(1 for s in expected.values() if s == "candidate")

    # results, paged as an engine pages them
    seen: dict[str, str] = {}
    cursor = None
    while True:
        query = {"limit": 25, **({"cursor": cursor} if cursor else {})}
        page = requests.get(
            f"{service}{run['links']['results']}", params=query, headers=AUTH, timeout=10
        ).json()
        for item in page["items"]:
            assert item["patient"] not in seen
            seen[item["patient"]] = item["result"]["status"]
        cursor = page["next_cursor"]
        if not cursor:
            break
    assert seen == expected

    # the changes feed: every result once, in order, then an empty page
    changes: list[tuple[int, str]] = []
    cursor = None
    for _ in range(100):
        query = {"limit": 30, **({"cursor": cursor} if cursor else {})}
        page = requests.get(f"{service}/v1/changes", params=query, headers=AUTH, timeout=10).json()
        changes.extend((i["seq"], i["patient"]) for i in page["items"])
        cursor = page["next_cursor"]
        if not page["items"]:
            break
    assert [seq for seq, _ in changes] == sorted(seq for seq, _ in changes)
    assert sorted(p for _, p in changes) == sorted(expected)

    # CDS Hooks: discovery, then a card for a candidate, fetched from the FHIR server
    discovery = requests.get(f"{service}/cds-services", timeout=10).json()
    (hook,) = discovery["services"]
    assert hook["hook"] == "patient-view" and "observations" in hook["prefetch"]
    url = f"{service}/cds-services/{hook['id']}"
    call = {
        "hook": "patient-view",
        "hookInstance": "e2e-1",
        "context": {"patientId": "fx-base", "userId": "Practitioner/1"},
    }
    token = ehr.token(audience=url)
    cards = requests.post(
        url, json=call, headers={"Authorization": f"Bearer {token}"}, timeout=30
    ).json()
    (card,) = cards["cards"]
    assert card["summary"].startswith("MEDCARE trial: candidate") and card["indicator"] == "warning"
    assert requests.post(url, json=call, timeout=10).status_code == 401


def test_write_back_run_reaches_the_server(service: str, loaded_peer: LoadedPeer) -> None:
    started = requests.post(
        f"{service}/v1/runs",
        json={"patients": ["fx-systemic-arta-abiraterone-ongoing"], "as_of": "2026-11-26", "write_back": True},
        headers=AUTH, timeout=10,
    )  # fmt: skip
    assert started.status_code == 202, started.text
    assert _poll(service, started.headers["Location"])["status"] == "done"
    deadline = time.monotonic() + 60
    identifier = "https://medcare-screen.org/fhir/NamingSystem/research-subject|NCT06585007:fx-systemic-arta-abiraterone-ongoing"
    while time.monotonic() < deadline:  # the outbox writes it in the background
        found = requests.get(
            f"{loaded_peer.base_url}/ResearchSubject",
            params={"identifier": identifier},
            headers={"Cache-Control": "no-cache"},  # HAPI reuses a search's results for 60 s
            timeout=10,
        ).json()
        if found.get("entry"):
            break
        time.sleep(0.5)
    else:
        raise AssertionError("the write-back never reached the FHIR server")
    (entry,) = found["entry"]
    assert entry["resource"]["status"] == "candidate"
    metrics = requests.get(f"{service}/metrics", timeout=10).text
    assert 'medcare_writeback_outbox{state="done"}' in metrics
