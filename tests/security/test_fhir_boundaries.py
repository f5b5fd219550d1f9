"""Issue 10, the FHIR client's side: a hostile FHIR server on real HTTP (loopback).

`ours` is the configured FHIR server (127.0.0.1), `elsewhere` another origin (127.0.0.2) that
records whatever reaches it. Both are tests/reliability/faultproxy.py servers without an
upstream: every answer is a fault the test sets up, so no peer is needed. Items: 1 (credentials
only to the configured origin), 2 (no redirects to another origin), 6 (size cap, deadline,
nesting), 8 (secrets never echo), 14a (no query values in retry logs).
"""

from __future__ import annotations

import json
import logging
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from service.config import Settings, settings_from_env
from service.fhir.auth import Auth, BasicAuth, BearerTokenAuth, SmartBackendAuth
from service.fhir.client import FhirClient
from service.fhir.errors import (
    FhirAnswerTooLarge,
    FhirBadResponse,
    FhirError,
    FhirRefusedLink,
    FhirRefusedRedirect,
    FhirTooSlow,
)
from service.runtime import Runtime
from tests import builders
from tests.reliability.faultproxy import (
    GZIP,
    Fault,
    FaultProxy,
    deeply_nested,
    gzip_bomb,
)

TOKEN = "s3cr3t-bearer-token-of-the-hospital"
PATIENT = {"resourceType": "Patient", "id": "p1"}


def searchset(*resources: dict[str, Any], next_url: str | None = None) -> bytes:
    """A searchset page as the bytes a server sends."""
    return json.dumps(builders.searchset(*resources, next_url=next_url)).encode()


def batch_response(*resources: dict[str, Any]) -> bytes:
    entries = [{"resource": r, "response": {"status": "200 OK"}} for r in resources]
    return json.dumps(
        {"resourceType": "Bundle", "type": "batch-response", "entry": entries}
    ).encode()


def on(method: str, prefix: str) -> Any:
    """A fault matcher: requests of `method` whose path starts with `prefix`."""
    return lambda request: request.method == method and request.path.startswith(prefix)


@pytest.fixture
def ours() -> Iterator[FaultProxy]:
    with FaultProxy(None) as server:
        yield server


@pytest.fixture
def elsewhere() -> Iterator[FaultProxy]:
    """Another origin, answering everything as a FHIR server would (so that following a link or
    a redirect there would look like success)."""
    with FaultProxy(None, host="127.0.0.2") as server:
        server.add(
            Fault("body", match=on("GET", "/fhir/Patient/"), body=json.dumps(PATIENT).encode())
        )
        server.add(Fault("body", match=on("GET", "/"), body=searchset(PATIENT)))
        server.add(Fault("body", match=on("POST", "/"), body=batch_response(PATIENT, PATIENT)))
        yield server


def client_for(server: FaultProxy, auth: Auth | None = None, **options: Any) -> FhirClient:
    options.setdefault("sleep", lambda _: None)
    options.setdefault("retries", 2)
    return FhirClient(server.base_url + "/fhir", auth or BearerTokenAuth(TOKEN), **options)


# --- item 1: credentials only to the configured origin -----------------------------------------


def test_a_next_link_with_a_backslash_never_sends_the_token_to_the_other_host(
    ours: FaultProxy, elsewhere: FaultProxy
) -> None:
    """`http://127.0.0.2:P\\@127.0.0.1:Q/...` looks like ours to urllib.parse; requests connects
    to 127.0.0.2. The link is refused before anything is sent."""
    sneaky = f"http://127.0.0.2:{elsewhere.port}\\@127.0.0.1:{ours.port}/fhir/Patient?page=2"
    ours.add(
        Fault("body", match=on("GET", "/fhir/Patient"), body=searchset(PATIENT, next_url=sneaky))
    )
    found: list[dict[str, Any]] = []
    with client_for(ours) as client, pytest.raises(FhirRefusedLink) as caught:
        found.extend(client.search("Patient", {"gender": "male"}))
    assert found == [PATIENT]  # our first page is kept
    assert "backslash" in str(caught.value) and f"127.0.0.1:{ours.port}" in str(caught.value)
    assert elsewhere.seen == []
    assert [seen.authorization for seen in ours.seen] == [f"Bearer {TOKEN}"]


@pytest.mark.parametrize(
    "link",
    [
        "http://user:pw@127.0.0.1:{ours}/fhir/Patient?page=2",  # userinfo, even to our host
        "http://127.0.0.1:{ours}%2F@127.0.0.2:{other}/fhir/Patient?page=2",  # encoded slash
        "http://127.0.0.1:{ours};@127.0.0.2:{other}/fhir/Patient?page=2",
        "http://127.0.0.2:{other}/fhir/Patient?page=2",  # plainly elsewhere
    ],
    ids=["userinfo", "percent-encoded-slash", "semicolon", "other-host"],
)
def test_next_links_that_would_leave_the_origin_are_refused(
    ours: FaultProxy, elsewhere: FaultProxy, link: str
) -> None:
    url = link.format(ours=ours.port, other=elsewhere.port)
    ours.add(Fault("body", match=on("GET", "/fhir/Patient"), body=searchset(PATIENT, next_url=url)))
    with client_for(ours) as client, pytest.raises(FhirRefusedLink):
        list(client.search("Patient", {"gender": "male"}))
    assert elsewhere.seen == []
    assert len(ours.seen) == 1


# --- item 2: no redirects to another origin ------------------------------------------------------


def test_a_307_does_not_carry_a_batch_or_the_token_to_another_origin(
    ours: FaultProxy, elsewhere: FaultProxy
) -> None:
    ours.add(
        Fault("redirect", match=on("POST", "/fhir"), location=f"{elsewhere.base_url}/{{path}}")
    )
    with client_for(ours) as client, pytest.raises(FhirRefusedRedirect) as caught:
        client.batch(["Patient/p1", "Condition?patient=p1"], patient="p1")
    message = str(caught.value)
    assert f"redirect (307) to http://127.0.0.2:{elsewhere.port}" in message
    assert "POST batch of 2 GET requests for Patient/p1" in message
    assert TOKEN not in message
    assert elsewhere.seen == []  # neither the body nor the token went there
    assert len(ours.seen) == 1  # and it was not retried


def test_a_307_does_not_carry_the_write_back_transaction_elsewhere(
    ours: FaultProxy, elsewhere: FaultProxy
) -> None:
    ours.add(
        Fault("redirect", match=on("POST", "/fhir"), location=f"{elsewhere.base_url}/{{path}}")
    )
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "resource": {"resourceType": "ResearchSubject", "status": "candidate"},
                "request": {"method": "PUT", "url": "ResearchSubject?identifier=s|1"},
            }
        ],
    }
    with client_for(ours) as client, pytest.raises(FhirRefusedRedirect):
        client.transaction(transaction, patient="p1")
    assert elsewhere.seen == []


def test_a_redirect_within_the_origin_is_followed_with_the_credentials(ours: FaultProxy) -> None:
    ours.add(Fault("redirect", match=on("GET", "/fhir/Patient/old"), status=301,
                   location=f"{ours.base_url}/fhir/Patient/p1"))  # fmt: skip
    ours.add(Fault("body", match=on("GET", "/fhir/Patient/p1"), body=json.dumps(PATIENT).encode()))
    with client_for(ours) as client:
        assert client.read("Patient", "old") == PATIENT
        assert client.request_count == 2
    assert [seen.path for seen in ours.seen] == ["/fhir/Patient/old", "/fhir/Patient/p1"]
    assert {seen.authorization for seen in ours.seen} == {f"Bearer {TOKEN}"}


def test_a_303_that_would_turn_a_batch_into_a_get_is_refused(ours: FaultProxy) -> None:
    ours.add(Fault("redirect", match=on("POST", "/fhir"), status=303,
                   location=f"{ours.base_url}/fhir/Bundle/answer"))  # fmt: skip
    with client_for(ours, batch="always") as client, pytest.raises(FhirRefusedRedirect) as caught:
        client.batch(["Patient/p1"])
    assert "would turn POST into GET" in str(caught.value)
    assert len(ours.seen) == 1


# --- item 6: answers have limits ----------------------------------------------------------------


def test_a_gzip_bomb_stops_at_the_cap_without_inflating(ours: FaultProxy) -> None:
    """The issue's 522 KB gzip answer (540 MB inflated) took the process to 1.2 GB; now the
    read stops at the 50 MiB default cap and Python's allocations peak just above it."""
    bomb = gzip_bomb(540_000_000)
    assert len(bomb) < 600_000
    ours.add(Fault("body", match=on("GET", "/fhir/Observation"), body=bomb, headers=GZIP))
    with client_for(ours) as client:
        tracemalloc.start()
        try:
            with pytest.raises(FhirAnswerTooLarge) as caught:
                list(client.search("Observation", {"patient": "p1"}, patient="p1"))
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
    assert "larger than 52,428,800 bytes (MEDCARE_FHIR_MAX_ANSWER_BYTES)" in str(caught.value)
    assert "for Patient/p1" in str(caught.value)
    assert peak < 80_000_000, f"peak {peak:,} bytes"
    assert len(ours.seen) == 1  # too large is not worth asking again


def test_a_declared_length_over_the_cap_is_refused_before_reading(ours: FaultProxy) -> None:
    ours.add(Fault("body", match=on("GET", "/fhir/Patient"), body=searchset(PATIENT) + b" " * 5000))
    with client_for(ours, max_answer_bytes=4096) as client, pytest.raises(FhirAnswerTooLarge):
        client.read("Patient", "p1")


def test_a_server_dripping_bytes_fails_the_request_at_the_deadline(ours: FaultProxy) -> None:
    """Every byte comes well within the read timeout; the whole answer would take 8 s or more
    (longer under load); the deadline is 1 s. Checked by outcome, not by timing."""
    body = searchset(PATIENT)[:160]
    ours.add(Fault("drip", match=on("GET", "/fhir/Patient"), seconds=0.05, body=body))
    with client_for(ours, deadline_s=1) as client, pytest.raises(FhirTooSlow) as caught:
        client.read("Patient", "p1", patient="p1")
    assert "not complete after 1 s (MEDCARE_FHIR_DEADLINE_S)" in str(caught.value)
    assert not caught.value.temporary  # a run does not come back for more
    assert len(ours.seen) == 1  # a slow server is not asked to be slow again


def test_a_server_dripping_its_headers_fails_the_request_at_the_deadline(ours: FaultProxy) -> None:
    """The status line and headers one byte at a time: requests itself is still waiting (its
    read timeout never fires); the deadline shuts the connection and names the reason."""
    ours.add(Fault("drip-head", match=on("GET", "/fhir/Patient"), seconds=0.05, body=b"{}"))
    with client_for(ours, deadline_s=1) as client, pytest.raises(FhirTooSlow) as caught:
        client.read("Patient", "p1", patient="p1")
    assert "not complete after 1 s (MEDCARE_FHIR_DEADLINE_S)" in str(caught.value)
    assert len(ours.seen) == 1


@pytest.mark.parametrize("levels", [900, 5000])
def test_deeply_nested_answers_fail_the_patient_with_a_reason(
    ours: FaultProxy, levels: int
) -> None:
    ours.add(Fault("body", match=on("GET", "/fhir/Observation"), body=deeply_nested(levels)))
    with client_for(ours) as client, pytest.raises(FhirBadResponse) as caught:
        list(client.search("Observation", {"patient": "p1"}, patient="p1"))
    assert "nested deeper than 100 levels" in str(caught.value)
    assert "for Patient/p1" in str(caught.value)


def test_the_limits_are_settings_that_reach_the_client(tmp_path: Path) -> None:
    env = {"MEDCARE_FHIR_MAX_ANSWER_BYTES": "1000", "MEDCARE_FHIR_DEADLINE_S": "7"}
    settings = settings_from_env(env)
    assert (settings.fhir_max_answer_bytes, settings.fhir_deadline_s) == (1000, 7.0)
    assert (Settings().fhir_max_answer_bytes, Settings().fhir_deadline_s) == (52_428_800, 120.0)
    runtime = Runtime(
        settings.with_overrides(
            fhir_base_url="https://fhir.example.org/r4",
            database_url=f"sqlite:///{tmp_path / 'r.sqlite3'}",
            api_token_hashes=("x",),
        ),
        start_workers=False,
    )
    try:
        assert runtime.client is not None
        assert (runtime.client.limits.max_bytes, runtime.client.limits.deadline_s) == (1000, 7.0)
    finally:
        runtime.close()


# --- item 8: secrets never echo ----------------------------------------------------------------


@pytest.fixture
def smart_key(tmp_path: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    path = tmp_path / "smart.pem"
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return path


@pytest.mark.parametrize("kind", ["bearer", "basic", "smart"])
def test_an_error_that_quotes_our_authorization_header_does_not_carry_the_secret(
    ours: FaultProxy, smart_key: Path, kind: str
) -> None:
    access_token = "smart-access-token-issued-a-minute-ago"
    ours.add(Fault("body", match=on("POST", "/token"), body=json.dumps(
        {"access_token": access_token, "token_type": "bearer", "expires_in": 300}).encode()))  # fmt: skip
    ours.add(Fault("echo", match=on("GET", "/fhir/"), status=400))
    auth, secrets = {
        "bearer": (BearerTokenAuth(TOKEN), [TOKEN]),
        "basic": (BasicAuth("screener", "pa55-w0rd-of-the-proxy"), ["pa55-w0rd-of-the-proxy"]),
        "smart": (
            SmartBackendAuth("client-1", smart_key, "k1", token_url=f"{ours.base_url}/token"),
            [access_token],
        ),
    }[kind]
    with client_for(ours, auth) as client, pytest.raises(FhirError) as caught:
        client.read("Patient", "p1", patient="p1")
    error = caught.value
    echoed = [seen.authorization for seen in ours.seen if seen.fault == "echo"]
    assert echoed and echoed[0]
    assert "Authorization: " in str(error) and "***" in str(error)  # quoted, then redacted
    texts = [str(error), error.summary, json.dumps(error.operation_outcome), repr(error.args)]
    header_value = str(echoed[0]).split(" ", 1)[1]
    for secret in [*secrets, header_value]:
        assert all(secret not in text for text in texts), (kind, secret)


def test_a_batch_entry_that_quotes_the_token_is_redacted_too(ours: FaultProxy) -> None:
    outcome = {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": "forbidden", "diagnostics": f"token {TOKEN} lacks scope"}],
    }  # fmt: skip
    answer = {
        "resourceType": "Bundle",
        "type": "batch-response",
        "entry": [{"response": {"status": "403 Forbidden", "outcome": outcome}}],
    }
    ours.add(Fault("body", match=on("POST", "/fhir"), body=json.dumps(answer).encode()))
    with client_for(ours, batch="always") as client:
        (result,) = client.batch_results(["Condition?patient=p1"], patient="p1")
    assert isinstance(result, FhirError)
    assert "token *** lacks scope" in str(result) and TOKEN not in json.dumps(
        result.operation_outcome
    )


# --- item 14a: retry logs carry ids, not the values of a search ----------------------------------


def test_retries_of_a_run_search_log_parameter_names_not_values(
    ours: FaultProxy, caplog: pytest.LogCaptureFixture
) -> None:
    ours.add(Fault("status", match=on("GET", "/fhir/Patient"), status=503, times=2))
    ours.add(Fault("body", match=on("GET", "/fhir/Patient"), body=searchset(PATIENT)))
    with client_for(ours) as client, caplog.at_level(logging.WARNING):
        found = list(
            client.search("Patient", [("name", "Harrington"), ("birthdate", "1951-03-07")])
        )
    assert found == [PATIENT]
    retries = [r.getMessage() for r in caplog.records if "retry" in r.getMessage()]
    assert len(retries) == 2
    assert all(m.startswith("GET Patient?name=…&birthdate=…: HTTP 503") for m in retries)
    assert "Harrington" not in caplog.text and "1951" not in caplog.text


def test_the_api_502_body_does_not_carry_the_token_the_server_quoted(
    ours: FaultProxy, tmp_path: Path
) -> None:
    """The whole way: a server that quotes our Authorization header, the API's 502 body."""
    from service.api import create_app
    from service.api.security import token_digest

    ours.add(Fault("echo", match=on("GET", "/fhir/"), status=400))
    ours.add(Fault("echo", match=on("POST", "/fhir"), status=400))
    api_token = "api-token-0123456789abcdef"
    settings = Settings(
        fhir_base_url=ours.base_url + "/fhir",
        database_url=f"sqlite:///{tmp_path / 'api.sqlite3'}",
        api_token_hashes=(token_digest(api_token),),
        fhir_auth={"kind": "bearer", "token": TOKEN},
    )
    runtime = Runtime(settings, start_workers=False)
    try:
        answer = (
            create_app(settings, runtime)
            .test_client()
            .post(
                "/v1/screen",
                json={"patient": "p1"},
                headers={"Authorization": f"Bearer {api_token}"},
            )
        )
    finally:
        runtime.close()
    assert answer.status_code == 502
    body = answer.get_data(as_text=True)
    assert "Authorization: Bearer ***" in body
    assert TOKEN not in body
    assert any(seen.authorization == f"Bearer {TOKEN}" for seen in ours.seen)
