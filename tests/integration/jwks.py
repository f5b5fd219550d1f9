"""A real JWKS endpoint on loopback, and JWT signing with its key, for auth tests."""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
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

    def token(self, audience: str, *, expires_in: int = 300, **claims: Any) -> str:
        now = int(time.time())
        payload = {"iss": self.issuer, "aud": audience, "iat": now, "exp": now + expires_in,
                   "jti": uuid.uuid4().hex, "sub": "ehr-user", **claims}  # fmt: skip
        return jwt.encode(payload, self.private_key, algorithm="RS384", headers={"kid": self.kid})


def new_key() -> Any:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@contextmanager
def jwks_server(issuer_name: str = "https://ehr.example.org") -> Iterator[Issuer]:
    key = new_key()
    kid = "test-key-1"
    public = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    document = json.dumps({"keys": [{**public, "kid": kid, "alg": "RS384", "use": "sig"}]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Issuer(
            issuer_name, f"http://127.0.0.1:{server.server_address[1]}/jwks.json", key, kid
        )
    finally:
        server.shutdown()
        server.server_close()
