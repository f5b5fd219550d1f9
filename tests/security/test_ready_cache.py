"""/health/ready is public: it must not fetch the FHIR server's CapabilityStatement (690 KB on
HAPI) once per call (issue 10 item 14). The FHIR server here is a real HTTP server on loopback
that records every request."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask

from service.api import create_app
from service.api.views import health
from service.runtime import Runtime
from tests.reliability import harness
from tests.security.tlsserver import Recorder, serving

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def fhir() -> Iterator[Recorder]:
    with serving() as recorder:
        yield recorder


@pytest.fixture
def app(fhir: Recorder, tmp_path: Path) -> Iterator[Flask]:
    settings = harness.settings_for(fhir.url + "/fhir", f"sqlite:///{tmp_path / 'ready.sqlite3'}")
    runtime = Runtime(settings)
    yield create_app(settings, runtime)
    runtime.close()


def _metadata_fetches(fhir: Recorder) -> int:
    return sum(1 for r in fhir.requests if r["path"].split("?")[0].endswith("/metadata"))


def test_readiness_asks_the_fhir_server_once_per_ttl(
    app: Flask, fhir: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "READY_TTL_S", 3600.0)  # no expiry during the test
    client = app.test_client()
    for _ in range(50):
        response = client.get("/health/ready")
        assert response.status_code == 200
        assert response.get_json()["checks"] == {"database": True, "fhir_server": True}
    assert _metadata_fetches(fhir) == 1
    harness.record("reliability: /health/ready cache", calls=50, metadata_fetches=1)


def test_concurrent_first_calls_share_one_fetch(
    app: Flask, fhir: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No answer cached yet: the callers wait for the one check in flight instead of each
    starting their own."""
    monkeypatch.setattr(health, "READY_TTL_S", 3600.0)
    answers: list[int] = []
    barrier = threading.Barrier(16)

    def call() -> None:
        barrier.wait()
        answers.append(app.test_client().get("/health/ready").status_code)

    threads = [threading.Thread(target=call) for _ in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers == [200] * 16 and _metadata_fetches(fhir) == 1


def test_an_expired_answer_is_asked_again(
    app: Flask, fhir: Recorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "READY_TTL_S", 0.0)  # every answer already expired
    client = app.test_client()
    for _ in range(3):
        assert client.get("/health/ready").status_code == 200
    assert _metadata_fetches(fhir) == 3


def test_a_check_in_flight_is_waited_for_not_repeated() -> None:
    """The single-flight rule itself, with a check held open: the second caller gets the
    first caller's answer; nothing is locked while the check runs."""
    started, release = threading.Event(), threading.Event()
    runs: list[int] = []

    def slow_check() -> bool:
        runs.append(1)
        started.set()
        release.wait(60)
        return True

    check = health.CachedCheck(slow_check, ttl_s=3600.0)
    results: list[bool] = []
    first = threading.Thread(target=lambda: results.append(check()))
    first.start()
    assert started.wait(60)
    second = threading.Thread(target=lambda: results.append(check()))
    second.start()
    for _ in range(6000):  # until the second caller waits (it never does without the rule)
        if check.waiting or len(runs) > 1:
            break
        time.sleep(0.01)
    release.set()
    first.join(60)
    second.join(60)
    assert results == [True, True] and len(runs) == 1
