"""Who gets in: every endpoint that returns patient data refuses callers without valid
credentials, and CDS Hooks JWTs are checked (issuer allow-list, JWKS signature, expiry,
audience, algorithm)."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from flask import Flask
from flask.testing import FlaskClient

from service.api import create_app
from service.runtime import Runtime
from tests.integration.jwks import Issuer, jwks_server, new_key
from tests.reliability import harness

pytestmark = pytest.mark.timeout(120)

CDS_URL = "/cds-services/medcare-patient-view"
AUDIENCE = "https://medcare.example.org" + CDS_URL
PUBLIC = {"/health/live", "/health/ready", "/metrics", "/openapi.json", "/docs", "/cds-services"}


@pytest.fixture(scope="module")
def ehr() -> Iterator[Issuer]:
    with jwks_server("https://ehr.example.org") as issuer:
        yield issuer


@pytest.fixture(scope="module")
def stranger() -> Iterator[Issuer]:
    """An issuer with its own working JWKS, not on the allow-list."""
    with jwks_server("https://stranger.example.org") as issuer:
        yield issuer


@pytest.fixture(scope="module")
def app(ehr: Issuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Flask]:
    folder = tmp_path_factory.mktemp("auth")
    settings = harness.settings_for(None, f"sqlite:///{folder / 'auth.sqlite3'}").with_overrides(
        source_path=harness.REPO / "fixtures" / "patients",
        cds_issuers=((ehr.issuer, ehr.jwks_url),),
        cds_audience=AUDIENCE,
        jwt_issuer=ehr.issuer,
        jwt_jwks_url=ehr.jwks_url,
        jwt_audience="medcare-api",
    )
    runtime = Runtime(settings)
    yield create_app(settings, runtime)
    runtime.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


def _operations(client: FlaskClient) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").get_json()
    found = []
    for path, item in spec["paths"].items():
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                found.append((method, re.sub(r"\{[^}]+\}", "fx-base", path)))
    return found


def _bad_credentials(ehr: Issuer, stranger: Issuer) -> dict[str, dict[str, str]]:
    forged_key = new_key()  # claims the EHR's issuer and key id, signed with another key
    now = int(time.time())
    claims = {"iss": ehr.issuer, "aud": "medcare-api", "sub": "x", "iat": now, "exp": now + 300}
    return {
        "none": {},
        "wrong bearer": {"Authorization": "Bearer not-the-token"},
        "basic": {"Authorization": "Basic dXNlcjpwYXNzd29yZA=="},
        "empty bearer": {"Authorization": "Bearer "},
        "token hash as token": {"Authorization": f"Bearer {harness.token_digest(harness.TOKEN)}"},
        "jwt expired": {"Authorization": f"Bearer {ehr.token('medcare-api', expires_in=-120)}"},
        "jwt wrong audience": {"Authorization": f"Bearer {ehr.token('someone-else')}"},
        "jwt unknown issuer": {"Authorization": f"Bearer {stranger.token('medcare-api')}"},
        "jwt forged": {
            "Authorization": "Bearer "
            + jwt.encode(claims, forged_key, algorithm="RS384", headers={"kid": ehr.kid})
        },
        "jwt alg none": {"Authorization": "Bearer " + jwt.encode(claims, None, algorithm="none")},
    }


def test_every_patient_data_endpoint_refuses_without_valid_credentials(
    client: FlaskClient, ehr: Issuer, stranger: Issuer
) -> None:
    operations = [(m, p) for m, p in _operations(client) if p not in PUBLIC]
    assert len(operations) >= 9, operations
    refused = 0
    for method, path in operations:
        for name, headers in _bad_credentials(ehr, stranger).items():
            response = getattr(client, method)(path, headers=headers, json={"patient": "fx-base"})
            assert response.status_code == 401, (method, path, name, response.status_code)
            body = response.get_data(as_text=True)
            assert "fx-base" not in body and "Fixture" not in body
            credential = headers.get("Authorization", "").partition(" ")[2]
            assert not credential or credential not in body
            refused += 1
    # the same endpoints with the right token or a valid JWT are not refused
    good = {"Authorization": f"Bearer {ehr.token('medcare-api', scope='medcare.screen')}"}
    assert client.post("/v1/screen", json={"patient": "fx-base"}, headers=good).status_code == 200
    assert client.get("/v1/changes", headers=harness.AUTH).status_code == 200
    harness.record(
        "security: patient-data endpoints without valid credentials",
        operations=len(operations), credential_kinds=len(_bad_credentials(ehr, stranger)),
        requests_refused_401=refused, public=sorted(PUBLIC),
    )  # fmt: skip


def _cds(client: FlaskClient, token: str | None) -> Any:
    call = {
        "hook": "patient-view",
        "hookInstance": "sec-1",
        "context": {"patientId": "fx-base", "userId": "Practitioner/1"},
    }
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return client.post(CDS_URL, json=call, headers=headers)


def test_cds_hooks_jwts_are_verified(client: FlaskClient, ehr: Issuer, stranger: Issuer) -> None:
    now = int(time.time())
    base = {"iss": ehr.issuer, "aud": AUDIENCE, "iat": now, "exp": now + 300, "jti": "j"}
    forged_key = new_key()
    public_pem = ehr.private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    cases: dict[str, str | None] = {
        "missing": None,
        "not a JWT": "abc.def",
        "expired": ehr.token(AUDIENCE, expires_in=-120),
        "wrong audience": ehr.token("https://other.example.org/cds"),
        "issuer not allowed": stranger.token(AUDIENCE),
        "forged signature": jwt.encode(base, forged_key, algorithm="RS384", headers={"kid": ehr.kid}),
        "unknown key id": jwt.encode(base, forged_key, algorithm="RS384", headers={"kid": "k2"}),
        "alg none": jwt.encode(base, None, algorithm="none"),
        "HS256 with the public key": _hs256(base, public_pem),
        "no exp": jwt.encode({k: v for k, v in base.items() if k != "exp"}, ehr.private_key, algorithm="RS384", headers={"kid": ehr.kid}),
    }  # fmt: skip
    messages = {}
    for name, token in cases.items():
        response = _cds(client, token)
        assert response.status_code == 401, (name, response.get_json())
        messages[name] = response.get_json()["error"]["message"]
    assert messages["expired"] == "token expired"
    assert messages["issuer not allowed"] == "token issuer is not allowed"
    valid = _cds(client, ehr.token(AUDIENCE))
    assert valid.status_code == 200, valid.get_json()
    assert valid.get_json()["cards"][0]["summary"].startswith("MEDCARE trial")
    harness.record(
        "security: CDS Hooks JWTs", refused=len(cases), accepted="valid EHR JWT only",
        reasons=messages,
    )  # fmt: skip


def _hs256(claims: dict[str, Any], secret: bytes) -> str:
    """An HS256 token keyed with the issuer's public key (the algorithm-confusion attack),
    built by hand because PyJWT refuses to sign with a PEM key as an HMAC secret."""
    import base64
    import hashlib
    import hmac
    import json

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    head = b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": "test-key-1"}).encode())
    body = b64(json.dumps(claims).encode())
    signature = hmac.new(secret, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{b64(signature)}"


def test_public_endpoints_carry_no_patient_data(client: FlaskClient, tmp_path: Path) -> None:
    client.post("/v1/screen", json={"patient": "fx-base"}, headers=harness.AUTH)
    for path in sorted(PUBLIC):
        response = client.get(path)
        assert response.status_code in (200, 503), path
        assert "fx-base" not in response.get_data(as_text=True), path
