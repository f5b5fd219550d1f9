"""A real JWKS endpoint on loopback, and JWT signing with its key, for auth tests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass
class Issuer:
    issuer: str
    jwks_url: str
    private_key: Any
    kid: str
    # the JWKS documents served (one per key set) and how often the JWKS was fetched
    keys: list[dict[str, Any]] = field(default_factory=list)
    fetches: int = 0
    # called in the server thread before each answer (a test can hold the answer there)
    on_fetch: Any = None

    def token(self, audience: str, *, expires_in: int = 300, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": audience, "iat": now, "exp": now + expires_in,
                   "jti": uuid.uuid4().hex, "sub": "ehr-user", **claims}  # fmt: skip
        return jwt.encode(payload, self.private_key, algorithm="RS384", headers={"kid": self.kid})

    def rotate(self, kid: str) -> None:
        """Sign with a new key from now on; the JWKS serves both (as an issuer rotating)."""
        self.private_key, self.kid = new_key(), kid
        self.keys.append(_public_jwk(self.private_key, kid))


def new_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _public_jwk(key: Any, kid: str) -> dict[str, Any]:
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    return {**public, "kid": kid, "alg": "RS384", "use": "sig"}


@contextmanager
def jwks_server(issuer_name: str = "https://ehr.example.org") -> Iterator[Issuer]:
    key = new_key()
    kid = "test-key-1"
    issuer = Issuer(issuer_name, "", key, kid, keys=[_public_jwk(key, kid)])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            issuer.fetches += 1
            if issuer.on_fetch is not None:
                issuer.on_fetch()
            document = json.dumps({"keys": issuer.keys}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    issuer.jwks_url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
    try:
        yield issuer
    finally:
        server.shutdown()
        server.server_close()
