"""FHIR Subscriptions end to end on the HAPI peer: the Subscriptions of the real read plan are
put in place, a testosterone result is written, and HAPI's rest-hook notification reaches a
loopback endpoint where it is parsed into that patient (issue 14).

The receiver answers with the status parse_notification gives, as the service's endpoint does.
Every wait is a poll with a bound, never a fixed sleep. Each test's Subscriptions are removed at
the end: HAPI retries deliveries to a gone endpoint for minutes and would log every attempt.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from service.currency.notifications import Notification, NotificationRequest, parse_notification
from service.currency.subscriptions import (
    HookSettings,
    Payload,
    ensure_subscriptions,
    remove_subscriptions,
    subscription_types,
)
from service.fhir.client import FhirClient
from service.mapping import Mappings
from service.read_plan import read_plan
from tests.integration.peers import Peer

# Subscription only on HAPI: the Medplum peer is not part of this test.
pytestmark = pytest.mark.parametrize("fhir_peer", ["hapi"], indirect=True)

ACTIVE_WITHIN_S = 60.0
DELIVERED_WITHIN_S = 30.0


class Receiver:
    """The notification endpoint on a free loopback port: parses and keeps every request."""

    def __init__(self, hook: Callable[[str], HookSettings]) -> None:
        self.notifications: list[Notification] = []
        self._cond = threading.Condition()
        received = self

        class Handler(BaseHTTPRequestHandler):
            def _notified(self) -> None:
                size = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(size) if size else b""
                path = self.path.removeprefix("/notify")
                request = NotificationRequest(self.command, path, dict(self.headers), body)
                result = parse_notification(request, received.hook)
                with received._cond:
                    received.notifications.append(result)
                    received._cond.notify_all()
                self.send_response(result.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_POST = do_PUT = do_DELETE = _notified

            def log_message(self, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.hook = hook(f"http://127.0.0.1:{self._server.server_address[1]}/notify")
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def wait(self, found: Callable[[Notification], bool], timeout: float) -> Notification | None:
        end = time.monotonic() + timeout
        with self._cond:
            while True:
                hit = next((n for n in self.notifications if found(n)), None)
                if hit is not None or time.monotonic() >= end:
                    return hit
                self._cond.wait(end - time.monotonic())

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def client(fhir_peer: Peer) -> Iterator[FhirClient]:
    with FhirClient(fhir_peer.base_url) as fhir:
        yield fhir


def subscribed(client: FhirClient, mappings: Mappings, payload: Payload) -> Receiver:
    """A receiver, and the read plan's Subscriptions to it in place and active on HAPI."""
    owner = f"it-{uuid.uuid4().hex[:8]}"
    receiver = Receiver(lambda url: HookSettings(url, uuid.uuid4().hex, payload, owner=owner))
    plan = read_plan(mappings)
    made = ensure_subscriptions(client, plan, receiver.hook)
    assert len(made.created) == len(subscription_types(plan))
    again = ensure_subscriptions(client, plan, receiver.hook)  # idempotent: nothing to do
    assert not again.changed and set(again.unchanged) == set(made.created)
    end = time.monotonic() + ACTIVE_WITHIN_S
    pending = set(made.created)
    while pending and time.monotonic() < end:
        time.sleep(0.2)
        pending = {i for i in pending if client.read("Subscription", i).get("status") != "active"}
    assert not pending, f"not active within {ACTIVE_WITHIN_S} s: {sorted(pending)}"
    return receiver


def write_testosterone(client: FhirClient, patient_id: str) -> str:
    client.update({"resourceType": "Patient", "id": patient_id, "gender": "male"})
    observation = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "2986-8"}]},
        "subject": {"reference": f"Patient/{patient_id}"},
        "effectiveDateTime": "2026-11-20",
        "valueQuantity": {
            "value": 80,
            "unit": "ng/dL",
            "system": "http://unitsofmeasure.org",
            "code": "ng/dL",
        },
    }
    created = client.create(observation)
    assert created.resource is not None
    return str(created.resource["id"])


@pytest.mark.parametrize("payload", ["full", "id-only"])
def test_new_testosterone_reaches_the_endpoint(
    client: FhirClient, mappings: Mappings, payload: Payload
) -> None:
    receiver = subscribed(client, mappings, payload)
    try:
        patient_id = f"subs-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        observation_id = write_testosterone(client, patient_id)
        if payload == "full":
            hit = receiver.wait(lambda n: patient_id in n.patients, DELIVERED_WITHIN_S)
            assert hit is not None, f"no notification for {patient_id}"
            assert hit.accepted
            assert [(c.resource_type, c.resource_id) for c in hit.changes] in (
                [("Observation", observation_id)],
                [("Patient", patient_id)],  # the Patient written just before
            )
            seen = receiver.wait(
                lambda n: any(c.resource_id == observation_id for c in n.changes),
                DELIVERED_WITHIN_S,
            )
            assert seen is not None and seen.patients == (patient_id,)
        else:
            # HAPI's R4 rest-hook without payload is an empty POST: only the endpoint's path
            # (one per Subscription) says which type to sweep
            hit = receiver.wait(lambda n: "Observation" in n.sweep_types, DELIVERED_WITHIN_S)
            assert hit is not None and hit.accepted and not hit.changes
        elapsed = time.monotonic() - started
        assert elapsed < DELIVERED_WITHIN_S
        assert all(n.accepted for n in receiver.notifications)
    finally:
        receiver.close()
        assert remove_subscriptions(client, receiver.hook.owner)
