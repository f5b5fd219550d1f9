"""API tokens (issue 10 items 4, 5, 14b): audience, permissions per operation, production
settings, CDS Hooks audience / lifetime / replay, and a JWKS that random key ids cannot hammer.

Every JWT here is checked against a real JWKS server on loopback (tests/integration/jwks.py).
"""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from flask import Flask
from flask.testing import FlaskClient

from service.api import create_app
from service.api.security import JwksCache, JwtVerifier, Unauthorized, token_digest
from service.config import ConfigError, Settings, settings_from_env
from service.runtime import Runtime
from tests.integration.jwks import Issuer, jwks_server, new_key
from tests.reliability import harness

pytestmark = pytest.mark.timeout(120)

API_AUDIENCE = "medcare-api"
CDS_URL = "/cds-services/medcare-patient-view"
CDS_AUDIENCE = "https://medcare.example.org" + CDS_URL
PUBLIC = {"/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs", "/cds-services"}
READER, SCREENER = "reader-token-" + "r" * 20, "screener-token-" + "s" * 20
READ, SCREEN, WRITEBACK = "medcare.read", "medcare.screen", "medcare.writeback"
REVIEW = "medcare.review"
AUDIT = "medcare.audit"
# past authentication and permissions (what the screen itself answers is other tests' concern)
DENIED = (401, 403)


@pytest.fixture(scope="module")
def ehr() -> Iterator[Issuer]:
    with jwks_server("https://idp.example.org") as issuer:
        yield issuer


def _settings(ehr: Issuer, folder: Path, **overrides: Any) -> Settings:
    return harness.settings_for(None, f"sqlite:///{folder / 'tokens.sqlite3'}").with_overrides(
        source_path=harness.REPO / "fixtures" / "patients",
        **{
            "api_token_hashes": (
                token_digest(harness.TOKEN),  # no list: every permission
                f"{token_digest(READER)}:{READ}",
                f"{token_digest(SCREENER)}:{READ} {SCREEN}",
            ),
            "jwt_issuer": ehr.issuer, "jwt_jwks_url": ehr.jwks_url, "jwt_audience": API_AUDIENCE,
            "cds_issuers": ((ehr.issuer, ehr.jwks_url),), "cds_audience": CDS_AUDIENCE,
            **overrides,
        }
    )  # fmt: skip


def _app(ehr: Issuer, folder: Path, **overrides: Any) -> tuple[Flask, Runtime]:
    settings = _settings(ehr, folder, **overrides).check()
    runtime = Runtime(settings)
    return create_app(settings, runtime), runtime


@pytest.fixture(scope="module")
def client(ehr: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[FlaskClient]:
    app, runtime = _app(ehr, tmp_path_factory.mktemp("tokens"))
    yield app.test_client()
    runtime.close()


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# what each operation needs; the test below fails when an operation is added without an entry
NEEDS = {
    ("post", "/v1/screen"): {SCREEN},
    ("post", "/v1/runs"): {SCREEN},
    ("get", "/v1/runs/fx-base"): {READ},
    ("get", "/v1/runs/fx-base/results"): {READ},
    ("get", "/v1/runs/fx-base/summary"): {READ},
    ("post", "/v1/runs/fx-base/cancel"): {SCREEN},
    ("get", "/v1/patients/fx-base/result"): {READ},
    ("get", "/v1/changes"): {READ},
    ("get", "/v1/cohorts"): {READ},
    ("post", "/v1/cohorts"): {SCREEN},
    ("get", "/v1/cohorts/fx-base"): {READ},
    ("put", "/v1/cohorts/fx-base"): {SCREEN},
    ("delete", "/v1/cohorts/fx-base"): {SCREEN},
    ("post", "/v1/cohorts/fx-base/refresh"): {SCREEN},
    ("get", "/v1/patients/fx-base/disposition"): {READ},
    ("put", "/v1/patients/fx-base/disposition"): {REVIEW},
    ("get", "/v1/patients/fx-base/manual/fx-base"): {READ},
    ("put", "/v1/patients/fx-base/manual/fx-base"): {REVIEW},
    ("get", "/v1/patients/fx-base/history"): {READ},
    ("get", "/v1/audit"): {AUDIT},  # the audit log (issue 15 item 7)
    ("get", "/v1/reports/funnel.svg"): {READ},
    ("get", "/v1/reports/screening-log.csv"): {READ},  # ?audience=site: also review
}
BODY = {"patient": "fx-base", "patients": ["fx-base"]}


def _operations(client: FlaskClient) -> set[tuple[str, str]]:
    spec = client.get("/openapi.json").get_json()
    return {
        (method, re.sub(r"\{[^}]+\}", "fx-base", path))
        for path, item in spec["paths"].items()
        for method in item
        if method in ("get", "post", "put", "patch", "delete")
        and re.sub(r"\{[^}]+\}", "fx-base", path) not in PUBLIC
        and not path.startswith("/cds-services")
        # a FHIR server's notifications carry the Subscription's secret, not an API credential
        # (tests/api/test_notifications.py); test_auth still sees them refuse bad credentials
        and not path.startswith("/v1/notifications")
    }


def _call(client: FlaskClient, method: str, path: str, headers: dict[str, str]) -> Any:
    body = {"patient": "fx-base"} if path == "/v1/screen" else {"patients": ["fx-base"]}
    return getattr(client, method)(path, headers=headers, json=body if method == "post" else None)


def test_every_operation_needs_its_permission(client: FlaskClient, ehr: Issuer) -> None:
    assert _operations(client) == set(NEEDS), "an operation without a declared permission"
    grants = {
        "jwt, no scope": ehr.token(API_AUDIENCE),
        "jwt, read": ehr.token(API_AUDIENCE, scope=READ),
        "jwt, screen": ehr.token(API_AUDIENCE, scope=SCREEN),
        "jwt, unrelated scopes": ehr.token(API_AUDIENCE, scope="openid profile medcare"),
    }
    held = {"jwt, no scope": set(), "jwt, read": {READ}, "jwt, screen": {SCREEN},
            "jwt, unrelated scopes": set()}  # fmt: skip
    outcomes: dict[str, int] = {}
    for name, token in grants.items():
        for (method, path), needs in NEEDS.items():
            response = _call(client, method, path, _bearer(token))
            if needs <= held[name]:
                assert response.status_code not in (401, 403), (name, method, path)
            else:
                assert response.status_code == 403, (name, method, path, response.status_code)
                error = response.get_json()["error"]
                assert error["code"] == "forbidden" and error["details"]["missing"] == sorted(
                    needs - held[name]
                )
                assert "fx-base" not in response.get_data(as_text=True)
            outcomes[f"{name} {method} {path}"] = response.status_code
    harness.record(
        "security: permissions per operation (JWT scope)",
        operations=len(NEEDS), grants=len(grants),
        refused_403=sum(1 for s in outcomes.values() if s == 403),
    )  # fmt: skip


def test_write_back_needs_both_permissions(client: FlaskClient, ehr: Issuer) -> None:
    for path, body in (
        ("/v1/screen", {"patient": "fx-base", "write_back": True}),
        ("/v1/runs", {"patients": ["fx-base"], "write_back": True}),
    ):
        only_screen = client.post(
            path, json=body, headers=_bearer(ehr.token(API_AUDIENCE, scope=SCREEN))
        )
        assert only_screen.status_code == 403, path
        assert only_screen.get_json()["error"]["details"]["missing"] == [WRITEBACK]
        only_write = client.post(
            path, json=body, headers=_bearer(ehr.token(API_AUDIENCE, scope=WRITEBACK))
        )
        assert only_write.get_json()["error"]["details"]["missing"] == [SCREEN]
        both = _bearer(ehr.token(API_AUDIENCE, scope=f"{SCREEN} {WRITEBACK}"))
        # past the permission check (the write itself fails further on: no FHIR server here)
        answer = client.post(path, json=body, headers=both)
        assert answer.status_code not in DENIED, answer.get_json()
        # the same without write-back: the screen permission is enough
        plain = {**body, "write_back": False}
        assert client.post(path, json=plain, headers=_bearer(ehr.token(API_AUDIENCE, scope=SCREEN))).status_code not in DENIED  # fmt: skip


def test_static_tokens_grant_what_their_entry_lists(client: FlaskClient) -> None:
    reader, screener, everything = _bearer(READER), _bearer(SCREENER), harness.AUTH
    assert client.get("/v1/changes", headers=reader).status_code == 200
    refused = client.post("/v1/screen", json={"patient": "fx-base"}, headers=reader)
    assert refused.status_code == 403 and refused.get_json()["error"]["details"]["missing"] == [
        SCREEN
    ]
    assert (
        client.post("/v1/screen", json={"patient": "fx-base"}, headers=screener).status_code
        not in DENIED
    )
    writeback = {"patient": "fx-base", "write_back": True}
    assert client.post("/v1/screen", json=writeback, headers=screener).status_code == 403
    # a bare digest grants everything (what existing deployments have): past the check
    assert client.post("/v1/screen", json=writeback, headers=everything).status_code not in DENIED
    # 401 and 403 are told apart: no credential at all is 401, with the API's error shape
    anonymous = client.post("/v1/screen", json={"patient": "fx-base"})
    assert anonymous.status_code == 401 and anonymous.get_json()["error"]["code"] == "unauthorized"


def test_audience_is_checked_for_api_jwts(client: FlaskClient, ehr: Issuer) -> None:
    # a token the identity provider issued to another application, with every scope
    other_app = ehr.token("some-other-app", scope=f"{READ} {SCREEN} {WRITEBACK}")
    assert client.get("/v1/changes", headers=_bearer(other_app)).status_code == 401
    no_audience = jwt.encode(
        {"iss": ehr.issuer, "sub": "x", "exp": int(time.time()) + 60, "scope": READ},
        ehr.private_key, algorithm="RS384", headers={"kid": ehr.kid},
    )  # fmt: skip
    assert client.get("/v1/changes", headers=_bearer(no_audience)).status_code == 401


def test_permission_claim_and_names_are_settings(ehr: Issuer, tmp_path: Path) -> None:
    app, runtime = _app(
        ehr, tmp_path, jwt_permission_claim="realm_access.roles",
        permission_read="screen-reader", permission_screen="screen-runner",
    )  # fmt: skip
    try:
        client = app.test_client()
        roles = ehr.token(API_AUDIENCE, realm_access={"roles": ["screen-reader", "other"]})
        assert client.get("/v1/changes", headers=_bearer(roles)).status_code == 200
        refused = client.post("/v1/screen", json={"patient": "fx-base"}, headers=_bearer(roles))
        assert refused.get_json()["error"]["details"]["missing"] == ["screen-runner"]
        # the default claim no longer counts
        scope = ehr.token(API_AUDIENCE, scope="screen-reader")
        assert client.get("/v1/changes", headers=_bearer(scope)).status_code == 403
    finally:
        runtime.close()
    listed, runtime = _app(ehr, tmp_path, jwt_permission_claim="roles")
    try:
        token = ehr.token(API_AUDIENCE, roles=[READ])
        assert listed.test_client().get("/v1/changes", headers=_bearer(token)).status_code == 200
    finally:
        runtime.close()


def test_production_settings_refuse_weak_token_configurations() -> None:
    base = {"MEDCARE_API_TOKEN_SHA256": "ab" * 32}
    jwt_env = {**base, "MEDCARE_JWT_ISSUER": "https://idp.example.org",
               "MEDCARE_JWT_JWKS_URL": "https://idp.example.org/jwks"}  # fmt: skip
    refused = {
        "MEDCARE_JWT_AUDIENCE": jwt_env,
        "MEDCARE_JWT_ISSUER": {**base, "MEDCARE_JWT_JWKS_URL": "https://idp.example.org/jwks",
                               "MEDCARE_JWT_AUDIENCE": "a"},
        "MEDCARE_JWT_JWKS_URL": {**jwt_env, "MEDCARE_JWT_AUDIENCE": "a",
                                 "MEDCARE_JWT_JWKS_URL": "http://idp.example.org/jwks"},
        "MEDCARE_FHIR_BASE_URL": {**base, "MEDCARE_FHIR_BASE_URL": "http://fhir.example.org/r4"},
        # a name that only starts like a loopback address is not one
        "MEDCARE_FHIR_BASE_URL ": {**base, "MEDCARE_FHIR_BASE_URL": "http://127.0.0.1.example.org/r4"},
        "MEDCARE_CDS_ISSUERS": {**base, "MEDCARE_CDS_AUDIENCE": "https://x/cds",
                                "MEDCARE_CDS_ISSUERS": "https://ehr=http://ehr.example.org/jwks"},
        "MEDCARE_CDS_AUDIENCE": {**base, "MEDCARE_CDS_ISSUERS": "https://ehr=https://ehr/jwks"},
    }  # fmt: skip
    for variable, env in refused.items():
        with pytest.raises(ConfigError, match=variable.strip()) as error:
            settings_from_env(env).check()
        assert "example.org" not in str(error.value)  # the name, never the value
    # https everywhere, or plain http on loopback (a TLS sidecar), is accepted
    good = {**jwt_env, "MEDCARE_JWT_AUDIENCE": "a", "MEDCARE_FHIR_BASE_URL": "https://f/r4"}
    assert settings_from_env(good).check()
    for loopback in ("http://127.0.0.1:8080/fhir", "http://[::1]:8080/fhir", "http://localhost/r4"):
        assert settings_from_env({**good, "MEDCARE_FHIR_BASE_URL": loopback}).check()
    # development may use http anywhere, and JWTs without an audience setting
    dev = {**jwt_env, "MEDCARE_ENV": "development", "MEDCARE_FHIR_BASE_URL": "http://fhir:8080/r4"}
    assert settings_from_env(dev).check().development
    # token entries keep their permission lists; bare digests are lower-cased as before
    listed = "AB" * 32 + "\n" + "CD" * 32 + ":medcare.read  medcare.screen"
    entries = settings_from_env({"MEDCARE_API_TOKEN_SHA256": listed}).api_token_hashes
    assert entries == ("ab" * 32, "cd" * 32 + ":medcare.read medcare.screen")
    # a service process refuses to start, naming the variable
    with pytest.raises(ConfigError, match="MEDCARE_JWT_AUDIENCE"):
        create_app(Settings(api_token_hashes=("x",), jwt_issuer="i", jwt_jwks_url="https://j"))
    serve = subprocess.run(
        [str(Path(sys.executable).with_name("medcare-screen")), "serve", "--port", "1"],
        env={"PATH": "/usr/bin:/bin", **jwt_env}, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert serve.returncode != 0 and "MEDCARE_JWT_AUDIENCE" in serve.stderr, serve.stderr
    assert "Traceback" not in serve.stderr


# -- CDS Hooks ------------------------------------------------------------------------------


def _cds(client: FlaskClient, token: str, **headers: str) -> Any:
    call = {"hook": "patient-view", "hookInstance": uuid.uuid4().hex,
            "context": {"patientId": "fx-base", "userId": "Practitioner/1"}}  # fmt: skip
    return client.post(CDS_URL, json=call, headers={**_bearer(token), **headers})


def test_cds_audience_is_a_setting_not_the_request_host(ehr: Issuer, tmp_path: Path) -> None:
    # without the setting the service does not start (it used to take the first request's URL)
    with pytest.raises(ConfigError, match="MEDCARE_CDS_AUDIENCE"):
        _settings(ehr, tmp_path, cds_audience=None).check()
    app, runtime = _app(ehr, tmp_path)
    try:
        client = app.test_client()
        # the first request of this worker comes with a forged Host and a token for that host
        forged = f"http://evil.example{CDS_URL}"
        first = _cds(client, ehr.token(forged), Host="evil.example")
        assert first.status_code == 401
        # genuine EHR tokens still pass, the attacker's audience still does not
        assert _cds(client, ehr.token(CDS_AUDIENCE)).status_code not in DENIED
        assert _cds(client, ehr.token(forged), Host="evil.example").status_code == 401
    finally:
        runtime.close()


def _signed(ehr: Issuer, **claims: Any) -> str:
    now = int(time.time())
    payload = {"iss": ehr.issuer, "aud": CDS_AUDIENCE, "sub": "ehr", "iat": now, "exp": now + 60,
               "jti": uuid.uuid4().hex, **claims}  # fmt: skip
    payload = {k: v for k, v in payload.items() if v is not None}
    return jwt.encode(payload, ehr.private_key, algorithm="RS384", headers={"kid": ehr.kid})


def test_cds_tokens_are_short_lived_and_used_once(
    client: FlaskClient, ehr: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    now = int(time.time())
    cases = {
        "an hour long": _signed(ehr, iat=now, exp=now + 3600),
        "no iat": _signed(ehr, iat=None),
        "no jti": _signed(ehr, jti=None),
    }
    reasons = {}
    with caplog.at_level(logging.WARNING, logger="medcare_screen.api"):
        for name, token in cases.items():
            response = _cds(client, token)
            assert response.status_code == 401, name
            reasons[name] = response.get_json()["error"]["message"]
        assert reasons == {
            "an hour long": "token lifetime is longer than 300 s",
            "no iat": "token has no 'iat' claim",
            "no jti": "token has no 'jti' claim",
        }
        # five minutes (the default limit) is accepted, once
        once = _signed(ehr, iat=now, exp=now + 300)
        assert _cds(client, once).status_code not in DENIED
        replay = _cds(client, once)
        assert replay.status_code == 401
        assert replay.get_json()["error"]["message"] == "token already used (jti replayed)"
    refusals = [r.getMessage() for r in caplog.records if "CDS Hooks JWT refused" in r.getMessage()]
    assert len(refusals) == len(cases) + 1, refusals
    assert all(ehr.issuer in line and ehr.kid in line for line in refusals)
    assert "jti replayed" in refusals[-1] and "lifetime" in refusals[0]
    logged = caplog.text
    for token in [*cases.values(), once]:
        for part in token.split("."):
            assert part not in logged  # no token content, not even the header or claims
    harness.record(
        "security: CDS Hooks token lifetime and replay",
        refused=reasons, replay="refused (401), logged", max_lifetime_s=300,
    )  # fmt: skip


def test_a_refusal_log_line_escapes_what_the_token_claims(
    ehr: Issuer, caplog: pytest.LogCaptureFixture
) -> None:
    verifier = JwtVerifier(
        {ehr.issuer: JwksCache(ehr.jwks_url)}, CDS_AUDIENCE, name="CDS Hooks JWT"
    )
    hostile = jwt.encode({"iss": "evil\nINFO forged line", "exp": int(time.time()) + 60},
                         new_key(), algorithm="RS384", headers={"kid": "k\r\n1"})  # fmt: skip
    with caplog.at_level(logging.WARNING), pytest.raises(Unauthorized):
        verifier.verify(hostile)
    (line,) = [r.getMessage() for r in caplog.records]
    assert "\n" not in line and "\r" not in line and "token issuer is not allowed" in line


# -- JWKS ------------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _random_kid_token(ehr: Issuer) -> str:
    claims = {"iss": ehr.issuer, "aud": API_AUDIENCE, "exp": int(time.time()) + 60}
    return jwt.encode(claims, new_key(), algorithm="RS384", headers={"kid": uuid.uuid4().hex})


def test_random_key_ids_cannot_make_the_service_hammer_the_jwks() -> None:
    with jwks_server("https://idp.example.org") as ehr:
        clock = Clock()
        keys = JwksCache(ehr.jwks_url, min_refresh_s=30, lifespan_s=3600, clock=clock)
        verifier = JwtVerifier({ehr.issuer: keys}, API_AUDIENCE)
        forged = [_random_kid_token(ehr) for _ in range(20)]
        for _ in range(10):
            for token in forged:  # 200 requests, each with an unknown key id
                with pytest.raises(Unauthorized, match="unknown key"):
                    verifier.verify(token)
        assert ehr.fetches == 2  # the first fetch, and one refresh for an unknown key id
        # a genuine token is still accepted, from the cache
        assert verifier.verify(ehr.token(API_AUDIENCE))["iss"] == ehr.issuer
        assert ehr.fetches == 2
        # the issuer rotates its key: the new key id is fetched once the refresh interval passed
        ehr.rotate("test-key-2")
        rotated = ehr.token(API_AUDIENCE)
        with pytest.raises(Unauthorized, match="unknown key"):
            verifier.verify(rotated)  # within 30 s of the last refresh: not fetched again
        assert ehr.fetches == 2
        clock.now += 31
        assert verifier.verify(rotated)["iss"] == ehr.issuer
        assert ehr.fetches == 3
        harness.record(
            "security: JWKS under random key ids",
            requests=200, jwks_fetches=2, rotation="new key accepted after the refresh interval",
        )  # fmt: skip


def test_no_caller_waits_behind_a_jwks_fetch() -> None:
    """A refresh stuck on a slow JWKS server does not hold up tokens signed with a known key."""
    with jwks_server("https://idp.example.org") as ehr:
        verifier = JwtVerifier({ehr.issuer: JwksCache(ehr.jwks_url)}, API_AUDIENCE)
        assert verifier.verify(ehr.token(API_AUDIENCE))  # the first fetch: keys cached
        fetching, release = threading.Event(), threading.Event()
        held_until_timeout: list[bool] = []

        def hold() -> None:
            fetching.set()
            held_until_timeout.append(not release.wait(60))

        ehr.on_fetch = hold
        refused: list[Exception] = []

        def unknown_kid() -> None:
            try:
                verifier.verify(_random_kid_token(ehr))
            except Unauthorized as exc:
                refused.append(exc)

        refresher = threading.Thread(target=unknown_kid)
        refresher.start()
        assert fetching.wait(60), "the unknown key id did not cause a refresh"
        # the refresh is in flight and blocked; known keys and other unknown ones do not wait
        assert verifier.verify(ehr.token(API_AUDIENCE))["iss"] == ehr.issuer
        with pytest.raises(Unauthorized, match="unknown key"):
            verifier.verify(_random_kid_token(ehr))
        release.set()
        refresher.join(60)
        assert held_until_timeout == [False] and len(refused) == 1
        assert ehr.fetches == 2


def test_permission_is_checked_before_the_body(client: FlaskClient) -> None:
    """A caller without the permission learns nothing, not even what the body lacks."""
    refused = client.post("/v1/runs", json={"nonsense": True}, headers=_bearer(READER))
    assert refused.status_code == 403 and "fields" not in refused.get_data(as_text=True)


def test_development_without_authentication_grants_everything(tmp_path: Path) -> None:
    settings = harness.settings_for(
        None, f"sqlite:///{tmp_path / 'dev.sqlite3'}", environment="development",
        allow_no_auth=True, api_token_hashes=(), source_path=harness.REPO / "fixtures" / "patients",
    )  # fmt: skip
    runtime = Runtime(settings)
    try:
        client = create_app(settings, runtime).test_client()
        assert client.get("/v1/changes").status_code == 200
        screened = client.post("/v1/screen", json={"patient": "fx-base", "write_back": True})
        assert screened.status_code not in DENIED
    finally:
        runtime.close()
