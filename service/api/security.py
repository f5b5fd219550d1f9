"""Who may call the API: hashed bearer tokens, JWTs from a configured issuer, CDS Hooks JWTs.

Tokens are compared as SHA-256 digests (the configuration never holds a usable token), in
constant time. JWTs are checked against the issuer's JWKS (fetched with TLS verification, cached,
refreshed once when an unknown key id appears), with expiry, issuer and audience required.
Nothing here logs a token or a claim beyond the issuer and subject ids.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jwt
import requests

ALLOWED_ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
JWKS_TTL_S = 300.0


class Unauthorized(Exception):
    """Authentication failed; the message is safe to return (it never echoes the credential)."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as ids only."""

    kind: str  # "token", "jwt", "cds", "development"
    subject: str


class JwksCache:
    """One issuer's signing keys, fetched over HTTPS (or loopback HTTP in tests) and cached."""

    def __init__(self, url: str, *, verify: bool | str = True, timeout: float = 5.0) -> None:
        self.url = url
        self.verify = verify
        self.timeout = timeout
        self._keys: dict[str, Any] = {}
        self._fetched_at = 0.0
        self._lock = threading.Lock()

    def key(self, kid: str | None) -> Any:
        with self._lock:
            if not self._keys or time.monotonic() - self._fetched_at > JWKS_TTL_S:
                self._refresh()
            if kid not in self._keys:
                self._refresh()  # key rotation: one refresh for an unknown kid
            if kid in self._keys:
                return self._keys[kid]
            if kid is None and len(self._keys) == 1:
                return next(iter(self._keys.values()))
        raise Unauthorized("token signed with an unknown key")

    def _refresh(self) -> None:
        try:
            response = requests.get(self.url, timeout=self.timeout, verify=self.verify)
            response.raise_for_status()
            document = response.json()
        except (requests.RequestException, ValueError) as exc:
            raise Unauthorized("the issuer's keys could not be fetched") from exc
        keys: dict[str, Any] = {}
        for entry in document.get("keys", []) if isinstance(document, dict) else []:
            try:
                keys[entry.get("kid")] = jwt.PyJWK.from_dict(entry).key
            except (jwt.PyJWKError, jwt.InvalidKeyError):
                continue
        self._keys, self._fetched_at = keys, time.monotonic()


class JwtVerifier:
    """Verifies JWTs from an allow-list of issuers, each with its JWKS."""

    def __init__(
        self, issuers: dict[str, JwksCache], audience: str | None, *, leeway_s: int = 30
    ) -> None:
        self.issuers = issuers
        self.audience = audience
        self.leeway_s = leeway_s

    def verify(self, token: str) -> dict[str, Any]:
        try:
            unverified = jwt.decode(token, options={"verify_signature": False})
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise Unauthorized("malformed token") from exc
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or issuer not in self.issuers:
            raise Unauthorized("token issuer is not allowed")
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise Unauthorized("token algorithm is not allowed")
        key = self.issuers[issuer].key(header.get("kid"))
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=self.audience,
                issuer=issuer,
                leeway=self.leeway_s,
                options={"require": ["exp", "iss"], "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("token rejected") from exc
        return claims


class ApiAuthenticator:
    """Checks an Authorization header against the configured tokens and JWT issuer."""

    def __init__(
        self,
        token_hashes: Sequence[str],
        jwt_verifier: JwtVerifier | None,
        *,
        allow_anonymous: bool = False,
    ) -> None:
        self.token_hashes = tuple(h.lower() for h in token_hashes)
        self.jwt_verifier = jwt_verifier
        self.allow_anonymous = allow_anonymous

    def authenticate(self, authorization: str | None) -> Principal:
        if not authorization:
            if self.allow_anonymous:
                return Principal("development", "anonymous")
            raise Unauthorized("authentication required")
        scheme, _, credential = authorization.partition(" ")
        if scheme.lower() != "bearer" or not credential.strip():
            raise Unauthorized("expected a Bearer token")
        credential = credential.strip()
        digest = token_digest(credential)
        if any(hmac.compare_digest(digest, known) for known in self.token_hashes):
            return Principal("token", digest[:12])
        if self.jwt_verifier is not None and credential.count(".") == 2:
            claims = self.jwt_verifier.verify(credential)
            return Principal("jwt", str(claims.get("sub", "?")))
        raise Unauthorized("invalid credentials")
