"""Authentication: basic and bearer headers, SMART Backend Services tokens, and secrets kept out
of messages and logs; configuration from the environment naming what is missing."""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import jwt
import pytest
import responses
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.config import ConfigError
from service.fhir.auth import (
    DEFAULT_SMART_SCOPE,
    BasicAuth,
    BearerTokenAuth,
    NoAuth,
    SmartBackendAuth,
    auth_from_env,
)
from service.fhir.client import FhirClient
from service.fhir.errors import FhirAuthError

BASE = "https://fhir.example.org/fhir"
NOW = 1_800_000_000.0  # the conftest clock
TOKEN_URL = "https://auth.example.org/oauth2/token"
CLIENT_ID = "medcare-screen-prod"
ClientFactory = Callable[..., FhirClient]
PATIENT = {"resourceType": "Patient", "id": "p1"}


def smart(key_file: Path, algorithm: str = "RS384", **options: Any) -> SmartBackendAuth:
    options.setdefault("clock", lambda: NOW)
    return SmartBackendAuth(CLIENT_ID, key_file, "key-2027-01", algorithm=algorithm, **options)


def serve_smart(rsps: responses.RequestsMock, *tokens: str, expires_in: int = 300) -> None:
    """A SMART configuration document and a token endpoint handing out `tokens` in turn."""
    rsps.add(
        responses.GET,
        f"{BASE}/.well-known/smart-configuration",
        json={"token_endpoint": TOKEN_URL, "grant_types_supported": ["client_credentials"]},
    )
    for token in tokens:
        rsps.add(
            responses.POST,
            TOKEN_URL,
            json={"access_token": token, "token_type": "Bearer", "expires_in": expires_in},
        )


def token_calls(rsps: responses.RequestsMock) -> list[dict[str, list[str]]]:
    return [
        parse_qs(str(call.request.body)) for call in rsps.calls if call.request.url == TOKEN_URL
    ]


def bearer(rsps: responses.RequestsMock, index: int) -> str:
    return str(rsps.calls[index].request.headers["Authorization"])


# --- static credentials -------------------------------------------------------------------------


def test_basic_auth_sends_the_basic_header(
    rsps: responses.RequestsMock, make_client: ClientFactory
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    make_client(BasicAuth("screener", "s3cret-pw")).read("Patient", "p1")
    expected = base64.b64encode(b"screener:s3cret-pw").decode()
    assert rsps.calls[0].request.headers["Authorization"] == f"Basic {expected}"


def test_bearer_auth_sends_the_token(
    rsps: responses.RequestsMock, make_client: ClientFactory
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    make_client(BearerTokenAuth("static-token-123")).read("Patient", "p1")
    assert bearer(rsps, 0) == "Bearer static-token-123"


def test_no_auth_sends_no_header(rsps: responses.RequestsMock, client: FhirClient) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    client.read("Patient", "p1")
    assert "Authorization" not in rsps.calls[0].request.headers


def test_a_401_with_a_static_token_is_not_retried(
    rsps: responses.RequestsMock, make_client: ClientFactory
) -> None:
    rsps.add(responses.GET, f"{BASE}/Patient/p1", status=401)
    client = make_client(BearerTokenAuth("static-token-123"))
    with pytest.raises(FhirAuthError) as caught:
        client.read("Patient", "p1", patient="p1")
    assert client.request_count == 1
    assert "static-token-123" not in str(caught.value)


def test_repr_never_shows_a_secret(rsa_key_file: Path) -> None:
    shown = " ".join(
        repr(auth)
        for auth in (
            BasicAuth("screener", "s3cret-pw"),
            BearerTokenAuth("static-token-123"),
            smart(rsa_key_file),
            NoAuth(),
        )
    )
    assert "screener" in shown and CLIENT_ID in shown
    assert "s3cret-pw" not in shown and "static-token-123" not in shown
    assert "PRIVATE KEY" not in shown and "key_file" not in shown


# --- SMART Backend Services ---------------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["RS384", "ES384"])
def test_the_client_assertion_is_a_jwt_the_token_endpoint_can_verify(
    rsps: responses.RequestsMock,
    make_client: ClientFactory,
    algorithm: str,
    rsa_key: rsa.RSAPrivateKey,
    ec_key: ec.EllipticCurvePrivateKey,
    rsa_key_file: Path,
    ec_key_file: Path,
) -> None:
    key_file, public_key = (
        (rsa_key_file, rsa_key.public_key())
        if algorithm == "RS384"
        else (ec_key_file, ec_key.public_key())
    )
    serve_smart(rsps, "token-1")
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    make_client(smart(key_file, algorithm, clock=time.time)).read("Patient", "p1")

    (form,) = token_calls(rsps)
    assert form["grant_type"] == ["client_credentials"]
    assert form["scope"] == [DEFAULT_SMART_SCOPE]
    assert form["client_assertion_type"] == [
        "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    ]
    assertion = form["client_assertion"][0]
    header = jwt.get_unverified_header(assertion)
    assert header["alg"] == algorithm and header["kid"] == "key-2027-01"
    claims = jwt.decode(  # as the token endpoint would: signature, audience, expiry
        assertion,
        public_key,
        algorithms=[algorithm],
        audience=TOKEN_URL,
        issuer=CLIENT_ID,
        options={"require": ["iss", "sub", "aud", "exp", "jti"]},
    )
    assert claims["iss"] == claims["sub"] == CLIENT_ID
    assert claims["aud"] == TOKEN_URL
    assert time.time() < claims["exp"] <= time.time() + 300
    assert len(claims["jti"]) >= 16
    assert bearer(rsps, 2) == "Bearer token-1"


def test_two_assertions_never_share_a_jti(rsa_key_file: Path) -> None:
    auth = smart(rsa_key_file)
    first, second = (
        jwt.decode(auth.client_assertion(TOKEN_URL), options={"verify_signature": False})
        for _ in range(2)
    )
    assert first["jti"] != second["jti"]


def test_the_token_is_cached_across_requests(
    rsps: responses.RequestsMock, make_client: ClientFactory, rsa_key_file: Path
) -> None:
    serve_smart(rsps, "token-1", "token-2")
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    auth = smart(rsa_key_file)
    client = make_client(auth)
    for _ in range(3):
        client.read("Patient", "p1")
    assert auth.token_requests == 1 and len(token_calls(rsps)) == 1
    assert all(bearer(rsps, i) == "Bearer token-1" for i in (2, 3, 4))
    assert sum(".well-known" in (c.request.url or "") for c in rsps.calls) == 1


def test_a_token_is_renewed_shortly_before_it_expires(
    rsps: responses.RequestsMock, make_client: ClientFactory, rsa_key_file: Path
) -> None:
    now = [NOW]
    serve_smart(rsps, "token-1", "token-2", expires_in=300)
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    auth = smart(rsa_key_file, clock=lambda: now[0])
    client = make_client(auth)
    client.read("Patient", "p1")
    now[0] = NOW + 239  # still more than a minute left
    client.read("Patient", "p1")
    now[0] = NOW + 241  # within the last minute: renew before the server refuses it
    client.read("Patient", "p1")
    assert auth.token_requests == 2
    assert bearer(rsps, len(rsps.calls) - 1) == "Bearer token-2"


def test_a_401_gets_one_fresh_token_and_one_retry_that_is_not_counted(
    rsps: responses.RequestsMock,
    make_client: ClientFactory,
    rsa_key_file: Path,
    sleeps: list[float],
) -> None:
    serve_smart(rsps, "token-1", "token-2")
    rsps.add(responses.GET, f"{BASE}/Patient/p1", status=401)
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    client = make_client(smart(rsa_key_file), retries=0)  # no retries: the re-try is not one
    assert client.read("Patient", "p1") == PATIENT
    assert len(token_calls(rsps)) == 2
    fhir_calls = [c for c in rsps.calls if (c.request.url or "").endswith("/Patient/p1")]
    assert [c.request.headers["Authorization"] for c in fhir_calls] == [
        "Bearer token-1",
        "Bearer token-2",
    ]
    assert client.request_count == 2 and sleeps == []


def test_a_second_401_is_an_auth_error_after_only_one_fresh_token(
    rsps: responses.RequestsMock, make_client: ClientFactory, rsa_key_file: Path
) -> None:
    serve_smart(rsps, "token-1", "token-2", "token-3")
    rsps.add(responses.GET, f"{BASE}/Patient/p1", status=401)
    client = make_client(smart(rsa_key_file))
    with pytest.raises(FhirAuthError, match=r"GET Patient/p1 for Patient/p1, HTTP 401"):
        client.read("Patient", "p1", patient="p1")
    assert len(token_calls(rsps)) == 2


def test_a_configured_token_url_skips_discovery(
    rsps: responses.RequestsMock, make_client: ClientFactory, rsa_key_file: Path
) -> None:
    rsps.add(responses.POST, TOKEN_URL, json={"access_token": "t", "token_type": "bearer"})
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    make_client(smart(rsa_key_file, token_url=TOKEN_URL)).read("Patient", "p1")
    assert [c.request.method for c in rsps.calls] == ["POST", "GET"]


def test_a_server_without_smart_configuration_says_what_to_set(
    rsps: responses.RequestsMock, make_client: ClientFactory, rsa_key_file: Path
) -> None:
    rsps.add(responses.GET, f"{BASE}/.well-known/smart-configuration", status=404)
    with pytest.raises(FhirAuthError, match="MEDCARE_SMART_TOKEN_URL"):
        make_client(smart(rsa_key_file)).read("Patient", "p1")


def test_secrets_stay_out_of_messages_and_logs(
    rsps: responses.RequestsMock,
    make_client: ClientFactory,
    rsa_key_file: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    serve_smart(rsps, "token-SECRET-1")
    rsps.add(
        responses.POST,
        TOKEN_URL,
        status=400,
        json={"error": "invalid_client", "error_description": "unknown kid"},
    )
    rsps.add(responses.GET, f"{BASE}/Patient/p1", status=401)
    auth = smart(rsa_key_file)
    with caplog.at_level(logging.DEBUG), pytest.raises(FhirAuthError) as caught:
        make_client(auth).read("Patient", "p1", patient="p1")
    message = str(caught.value)
    assert "invalid_client: unknown kid" in message and TOKEN_URL in message
    assertions = [form["client_assertion"][0] for form in token_calls(rsps)]
    key_text = rsa_key_file.read_text()
    for secret in ["token-SECRET-1", *assertions, key_text.splitlines()[1]]:
        assert secret not in message
        assert secret not in caplog.text
        assert secret not in repr(auth)
    assert "SMART access token obtained" in caplog.text  # something was logged, without the token


def test_a_key_of_the_wrong_kind_is_refused_at_start(rsa_key_file: Path) -> None:
    with pytest.raises(ConfigError, match="ES384 needs an EC P-384 key"):
        smart(rsa_key_file, "ES384")


# --- configuration from the environment ---------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"MEDCARE_FHIR_AUTH": "kerberos"}, "MEDCARE_FHIR_AUTH"),
        ({"MEDCARE_FHIR_AUTH": "basic", "MEDCARE_FHIR_PASSWORD": "pw"}, "MEDCARE_FHIR_USERNAME"),
        ({"MEDCARE_FHIR_AUTH": "basic", "MEDCARE_FHIR_USERNAME": "u"}, "MEDCARE_FHIR_PASSWORD"),
        ({"MEDCARE_FHIR_AUTH": "bearer"}, "MEDCARE_FHIR_TOKEN or MEDCARE_FHIR_TOKEN_FILE"),
        (
            {"MEDCARE_FHIR_AUTH": "bearer", "MEDCARE_FHIR_TOKEN_FILE": "/nonexistent/token"},
            "MEDCARE_FHIR_TOKEN_FILE",
        ),
        ({"MEDCARE_FHIR_AUTH": "smart"}, "MEDCARE_SMART_CLIENT_ID"),
        (
            {"MEDCARE_FHIR_AUTH": "smart", "MEDCARE_SMART_CLIENT_ID": "c"},
            "MEDCARE_SMART_PRIVATE_KEY_FILE",
        ),
        (
            {
                "MEDCARE_FHIR_AUTH": "smart",
                "MEDCARE_SMART_CLIENT_ID": "c",
                "MEDCARE_SMART_PRIVATE_KEY_FILE": "/nonexistent/key.pem",
            },
            "MEDCARE_SMART_KEY_ID",
        ),
        (
            {
                "MEDCARE_FHIR_AUTH": "smart",
                "MEDCARE_SMART_CLIENT_ID": "c",
                "MEDCARE_SMART_PRIVATE_KEY_FILE": "/nonexistent/key.pem",
                "MEDCARE_SMART_KEY_ID": "k",
            },
            "MEDCARE_SMART_PRIVATE_KEY_FILE",
        ),
    ],
)
def test_missing_configuration_names_the_variable(env: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        auth_from_env(env)


def test_an_unsupported_algorithm_names_the_variable(rsa_key_file: Path) -> None:
    env = {
        "MEDCARE_FHIR_AUTH": "smart",
        "MEDCARE_SMART_CLIENT_ID": "c",
        "MEDCARE_SMART_PRIVATE_KEY_FILE": str(rsa_key_file),
        "MEDCARE_SMART_KEY_ID": "k",
        "MEDCARE_SMART_ALG": "HS256",
    }
    with pytest.raises(ConfigError, match="MEDCARE_SMART_ALG"):
        auth_from_env(env)


def test_secrets_can_come_from_files(
    rsps: responses.RequestsMock, make_client: ClientFactory, tmp_path: Path
) -> None:
    password_file = tmp_path / "password"
    password_file.write_text("from-a-file\n")
    auth = auth_from_env(
        {
            "MEDCARE_FHIR_AUTH": "basic",
            "MEDCARE_FHIR_USERNAME": "screener",
            "MEDCARE_FHIR_PASSWORD_FILE": str(password_file),
        }
    )
    rsps.add(responses.GET, f"{BASE}/Patient/p1", json=PATIENT)
    make_client(auth).read("Patient", "p1")
    expected = base64.b64encode(b"screener:from-a-file").decode()
    assert rsps.calls[0].request.headers["Authorization"] == f"Basic {expected}"


def test_smart_from_the_environment(ec_key_file: Path) -> None:
    auth = auth_from_env(
        {
            "MEDCARE_FHIR_AUTH": "smart",
            "MEDCARE_SMART_CLIENT_ID": CLIENT_ID,
            "MEDCARE_SMART_PRIVATE_KEY_FILE": str(ec_key_file),
            "MEDCARE_SMART_KEY_ID": "k1",
            "MEDCARE_SMART_ALG": "ES384",
            "MEDCARE_SMART_TOKEN_URL": TOKEN_URL,
        }
    )
    assert isinstance(auth, SmartBackendAuth)
    assert (auth.algorithm, auth.token_url, auth.scope) == ("ES384", TOKEN_URL, DEFAULT_SMART_SCOPE)


def test_no_auth_is_the_default() -> None:
    assert isinstance(auth_from_env({}), NoAuth)
