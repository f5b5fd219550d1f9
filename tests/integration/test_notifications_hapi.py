"""A new Observation reaches the changes feed through a FHIR Subscription, on the HAPI peer
(issue 14, "Done when"): the service's own Subscriptions (the read plan's, made as
`medcare-screen subscriptions ensure` makes them) point at its /v1/notifications, served on
loopback; HAPI's rest-hook notification queues the patient (trigger 'subscription'), the
re-screen worker screens them, and the feed says what changed. Sweeps are off: the
notification is the only way the service can learn of the change. Every wait is a poll with a
bound, never a fixed sleep.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from werkzeug.serving import make_server

from service.api import create_app
from service.config import Settings
from service.currency.subscriptions import HookSettings, ensure_subscriptions, remove_subscriptions
from service.read_plan import read_plan
from service.runtime import Runtime
from tests.integration.peers import Peer
from tests.integration.test_currency_hapi import AS_OF, CASTRATE, _candidate, _feed, _testosterone

pytestmark = pytest.mark.parametrize("fhir_peer", ["hapi"], indirect=True)

SECRET = uuid.uuid4().hex
ACTIVE_WITHIN_S = 60.0
QUEUED_WITHIN_S = 30.0


@pytest.fixture
def served(fhir_peer: Peer, tmp_path: Path) -> Iterator[tuple[Runtime, str]]:
    """The service on loopback (its runtime and base URL), sweeps off, workers driven by hand."""
    settings = Settings(
        database_url=f"sqlite:///{tmp_path / 'notify.sqlite3'}", today=AS_OF,
        api_token_hashes=("0" * 64,),
    ).with_overrides(
        fhir_base_url=fhir_peer.base_url, rescreen_delay_s=0, sweep_interval_s=0,
        notify_secret=SECRET,
    )  # fmt: skip
    runtime = Runtime(settings, start_workers=False)
    server = make_server("127.0.0.1", 0, create_app(settings, runtime), threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield runtime, f"http://127.0.0.1:{server.server_port}"
    finally:
        server.shutdown()
        runtime.close()


def wait_for(predicate: object, timeout: float) -> float | None:
    """Seconds until `predicate()` held, or None after `timeout`."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        if predicate():  # type: ignore[operator]
            return time.monotonic() - start
        time.sleep(0.1)
    return None


def test_a_new_testosterone_reaches_the_feed_through_a_subscription(
    served: tuple[Runtime, str],
) -> None:
    runtime, base_url = served
    client = runtime.client
    assert client is not None
    patient_id = _candidate(runtime)
    assert runtime.screen_patient(patient_id, AS_OF, False).result["status"] == "candidate"
    seen = len(_feed(runtime))

    hook = HookSettings(
        f"{base_url}/v1/notifications", SECRET, "full", owner=f"it-{uuid.uuid4().hex[:8]}"
    )
    made = ensure_subscriptions(client, read_plan(runtime.mappings), hook)
    try:
        assert wait_for(
            lambda: all(
                client.read("Subscription", sub_id).get("status") == "active"
                for sub_id in made.created
            ),
            ACTIVE_WITHIN_S,
        ), "Subscriptions not active"
        written = client.create(_testosterone(patient_id, 80, "2026-11-25"))
        assert written.status in (200, 201)
        latency = wait_for(lambda: runtime.store.depth() >= 1, QUEUED_WITHIN_S)
        assert latency is not None, "no notification queued the patient"
        while runtime.rescreens.run_once(10):
            pass
    finally:
        remove_subscriptions(client, hook.owner)

    entries = [e for e in _feed(runtime)[seen:] if e["patient"] == f"Patient/{patient_id}"]
    assert entries, "the feed did not change"
    entry = entries[-1]
    assert (entry["previous_status"], entry["trigger"]) == ("candidate", "subscription")
    assert CASTRATE in (entry["changed_criteria"] or [])
    print(f"\nchange to queue through the subscription: {latency:.2f} s")
