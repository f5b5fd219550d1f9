"""FHIR client fixtures: a mocked server (responses), recorded sleeps, keys, real HAPI bodies.

No test waits for real: every client gets `sleeps.append` as its sleep function and a frozen
clock. HAPI bodies are read from ../shared/external/hapi-wire/ at test time, never copied here.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import responses
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from service.fhir.auth import Auth
from service.fhir.client import FhirClient
from tests.conftest import SHARED

BASE = "https://fhir.example.org/fhir"
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z: a frozen clock for tokens and Retry-After dates
HAPI_WIRE = SHARED / "external" / "hapi-wire"

ClientFactory = Callable[..., FhirClient]


@pytest.fixture
def rsps() -> Iterator[responses.RequestsMock]:
    """The mocked network: an unregistered URL raises ConnectionError, as an unknown host would."""
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


@pytest.fixture
def sleeps() -> list[float]:
    return []


@pytest.fixture
def make_client(sleeps: list[float]) -> ClientFactory:
    def make(auth: Auth | None = None, **options: Any) -> FhirClient:
        options.setdefault("sleep", sleeps.append)
        options.setdefault("clock", lambda: NOW)
        return FhirClient(BASE, auth, **options)

    return make


@pytest.fixture
def client(make_client: ClientFactory) -> FhirClient:
    return make_client()


@pytest.fixture
def wire() -> Callable[[str], dict[str, Any]]:
    """A real HAPI response body from hapi-wire/, e.g. wire('fhir-kit-client/patient-not-found')."""

    def load(name: str) -> dict[str, Any]:
        path = HAPI_WIRE / f"{name}.json"
        assert path.is_file(), f"{path} is missing: the shared HAPI recordings are needed"
        body: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
        return body

    return load


def _pem(key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="session")
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="session")
def ec_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture
def rsa_key_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> Path:
    path = tmp_path / "smart-rs384.pem"
    path.write_bytes(_pem(rsa_key))
    return path


@pytest.fixture
def ec_key_file(tmp_path: Path, ec_key: ec.EllipticCurvePrivateKey) -> Path:
    path = tmp_path / "smart-es384.pem"
    path.write_bytes(_pem(ec_key))
    return path
