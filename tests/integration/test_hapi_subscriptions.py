"""FHIR Subscriptions end to end on the HAPI peer: the Subscriptions of the real read plan are
put in place, a testosterone result is written, and HAPI's rest-hook notification reaches a
loopback endpoint where it is parsed into that patient (issue 14).

The loopback receiver is the peer smoke check's (peers/hapi/smoke.py); every request it
records is parsed as the service's endpoint parses it. Every wait is a poll with a bound, never a fixed sleep. Each test's Subscriptions are removed at
the end: HAPI retries deliveries to a gone endpoint for minutes and would log every attempt.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from peers.hapi.smoke import Delivery, Receiver
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


class Endpoint:
    """The notification endpoint: the peer smoke check's loopback Receiver, each request
    parsed as the service's endpoint parses it."""

    def __init__(self, payload: Payload) -> None:
        self.receiver = Receiver()
        owner = f"it-{uuid.uuid4().hex[:8]}"
        url = f"{self.receiver.url}/notify"
        self.hook = HookSettings(url, uuid.uuid4().hex, payload, owner=owner)

    def parsed(self, delivery: Delivery) -> Notification:
        _, method, path, headers, body = delivery
        request = NotificationRequest(method, path.removeprefix("/notify"), headers, body)
        return parse_notification(request, self.hook)

    def wait(self, found: Callable[[Notification], bool], timeout: float) -> Notification | None:
        hit = self.receiver.wait(lambda delivery: found(self.parsed(delivery)), timeout)
        return self.parsed(hit) if hit else None


@pytest.fixture
def client(fhir_peer: Peer) -> Iterator[FhirClient]:
    with FhirClient(fhir_peer.base_url) as fhir:
        yield fhir


def subscribed(client: FhirClient, mappings: Mappings, payload: Payload) -> Endpoint:
    """An endpoint, and the read plan's Subscriptions to it in place and active on HAPI."""
    endpoint = Endpoint(payload)
    plan = read_plan(mappings)
    made = ensure_subscriptions(client, plan, endpoint.hook)
    assert len(made.created) == len(subscription_types(plan))
    again = ensure_subscriptions(client, plan, endpoint.hook)  # idempotent: nothing to do
    assert not again.changed and set(again.unchanged) == set(made.created)
    end = time.monotonic() + ACTIVE_WITHIN_S
    pending = set(made.created)
    while pending and time.monotonic() < end:
        time.sleep(0.2)
        pending = {i for i in pending if client.read("Subscription", i).get("status") != "active"}
    assert not pending, f"not active within {ACTIVE_WITHIN_S} s: {sorted(pending)}"
    return endpoint


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
    endpoint = subscribed(client, mappings, payload)
    try:
        patient_id = f"subs-{uuid.uuid4().hex[:8]}"
        started = time.monotonic()
        observation_id = write_testosterone(client, patient_id)
        if payload == "full":
            hit = endpoint.wait(lambda n: patient_id in n.patients, DELIVERED_WITHIN_S)
            assert hit is not None, f"no notification for {patient_id}"
            assert hit.accepted
            assert [(c.resource_type, c.resource_id) for c in hit.changes] in (
                [("Observation", observation_id)],
                [("Patient", patient_id)],  # the Patient written just before
            )
            seen = endpoint.wait(
                lambda n: any(c.resource_id == observation_id for c in n.changes),
                DELIVERED_WITHIN_S,
            )
            assert seen is not None and seen.patients == (patient_id,)
        else:
            # HAPI's R4 rest-hook without payload is an empty POST: only the endpoint's path
            # (one per Subscription) says which type to sweep
            hit = endpoint.wait(lambda n: "Observation" in n.sweep_types, DELIVERED_WITHIN_S)
            assert hit is not None and hit.accepted and not hit.changes
        elapsed = time.monotonic() - started
        assert elapsed < DELIVERED_WITHIN_S
        assert all(endpoint.parsed(delivery).accepted for delivery in endpoint.receiver.got)
    finally:
        # Subscriptions first: HAPI retries what it cannot deliver to a closed port
        assert remove_subscriptions(client, endpoint.hook.owner)
        endpoint.receiver.close()
