"""POST /v1/notifications (issue 14 item 2): the Subscription's secret, not a bearer token,
lets a FHIR server in; the population's patients it names are queued for a re-screen."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
from flask.testing import FlaskClient

from service.api import create_app
from service.runtime import Runtime
from service.store.cohorts import CohortDefinition
from tests.api.conftest import AUTH, make_settings

SECRET = "notify-secret-0123456789"
HOOK = {"Authorization": f"Bearer {SECRET}"}


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[FlaskClient, Runtime]]:
    settings = make_settings(tmp_path, notify_secret=SECRET, embedded_worker=False)
    runtime = Runtime(settings, start_workers=False)
    runtime.store.add_cohort("prostate", CohortDefinition("list", ["p1", "p2"]), ["p1", "p2"])
    try:
        yield create_app(settings, runtime).test_client(), runtime
    finally:
        runtime.close()


def observation(patient: str) -> dict[str, object]:
    return {
        "resourceType": "Observation",
        "id": f"obs-{patient}",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2986-8"}]},
        "subject": {"reference": f"Patient/{patient}"},
    }


def metric(client: FlaskClient, line: str) -> float:
    for row in client.get("/metrics").get_data(as_text=True).splitlines():
        if row.startswith(line + " "):
            return float(row.split()[-1])
    return 0.0


def test_a_full_resource_notification_queues_its_patient_once(
    served: tuple[FlaskClient, Runtime],
) -> None:
    client, runtime = served
    for _ in range(3):  # a burst: one job
        answer = client.put(
            "/v1/notifications/Observation/obs-p1", json=observation("p1"), headers=HOOK
        )
        assert answer.status_code == 202
        assert answer.get_json() == {"changes": 1, "queued": 1, "sweep": []}
    assert runtime.store.depth("pending") == 1
    accepted = 'medcare_notifications_total{outcome="accepted",reason=""}'
    assert metric(client, accepted) == 3
    assert metric(client, 'medcare_rescreen_queue_depth{state="pending"}') == 1


def test_a_bundle_keeps_only_the_population(served: tuple[FlaskClient, Runtime]) -> None:
    client, runtime = served
    bundle = {
        "resourceType": "Bundle",
        "type": "history",
        "entry": [{"resource": observation(p)} for p in ("p1", "p2", "stranger")],
    }
    answer = client.post("/v1/notifications", json=bundle, headers=HOOK)
    assert answer.status_code == 202
    assert answer.get_json()["queued"] == 2
    assert runtime.store.depth() == 2


class FakeSweeper:
    def __init__(self) -> None:
        self.calls: list[list[str] | None] = []
        self.done = threading.Event()

    def sweep(self, types: Iterable[str] | None = None) -> list[object]:
        self.calls.append(None if types is None else list(types))
        self.done.set()
        return []


def test_id_only_notifications_are_left_to_a_sweep(served: tuple[FlaskClient, Runtime]) -> None:
    client, runtime = served
    sweeper = FakeSweeper()
    runtime.scheduler.schedules.sweeper = sweeper  # type: ignore[assignment]
    typed = client.post("/v1/notifications/Observation", data=b"", headers=HOOK)
    assert typed.status_code == 202
    assert typed.get_json() == {"changes": 0, "queued": 0, "sweep": ["Observation"]}
    assert client.post("/v1/notifications/Condition", data=b"", headers=HOOK).status_code == 202
    assert sweeper.done.wait(10)  # one sweep, a moment later, for the burst
    assert sweeper.calls == [["Condition", "Observation"]]
    sweeper.done.clear()
    bare = client.post("/v1/notifications", data=b"", headers=HOOK)
    assert bare.get_json()["sweep"] == ["*"]
    assert sweeper.done.wait(10)
    assert sweeper.calls[-1] is None  # every type
    assert runtime.store.depth() == 0


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong"}, AUTH, {"Authorization": f"Bearer {SECRET}x"}],
)
def test_without_the_secret_a_bare_401_and_counted(
    served: tuple[FlaskClient, Runtime], headers: dict[str, str]
) -> None:
    client, runtime = served
    answer = client.put(
        "/v1/notifications/Observation/obs-p1", json=observation("p1"), headers=headers
    )
    assert answer.status_code == 401
    assert answer.get_data() == b""  # nothing said about why
    assert runtime.store.depth() == 0
    assert metric(client, 'medcare_notifications_total{outcome="refused",reason="secret"}') == 1


def test_without_a_configured_secret_everything_is_refused(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    runtime = Runtime(settings, start_workers=False)
    try:
        client = create_app(settings, runtime).test_client()
        answer = client.post("/v1/notifications", json=observation("p1"), headers=HOOK)
        assert answer.status_code == 401
    finally:
        runtime.close()


def test_a_body_that_is_not_fhir_is_a_400(served: tuple[FlaskClient, Runtime]) -> None:
    client, _ = served
    answer = client.post("/v1/notifications", data=b"[1, 2]", headers=HOOK)
    assert answer.status_code == 400
    assert answer.get_json()["error"]["code"] == "bad-notification"
