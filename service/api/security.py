"""Who may call the API: hashed bearer tokens, JWTs from a configured issuer, CDS Hooks JWTs.

Tokens are compared as SHA-256 digests (the configuration never holds a usable token), in
constant time. JWTs are checked against the issuer's JWKS with expiry, issuer and audience
required; CDS Hooks JWTs also need a short lifetime and a `jti` that is used only once.

The JWKS is fetched and cached by PyJWT's `PyJWKClient` (lifespan 5 minutes). PyJWKClient's own
`get_signing_key` fetches while holding its lock, so every caller would wait behind one slow
JWKS answer; here the lookup reads the cached set without a lock and an unknown key id forces
at most one refresh per `min_refresh_s` (a stream of random key ids costs one fetch, not one
per request), with no lock held during the fetch. PyJWKClient's own `cooldown_duration` is
not used for that: it counts from the last successful fetch (the first unknown key id right
after start-up would not refresh) and is applied under the same lock.

Nothing here logs a token or a claim beyond the issuer and key ids and the reason of a refusal.
What a caller may do once authenticated is service/api/permissions.py.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import jwt
from jwt import PyJWKClient

log = logging.getLogger("medcare_screen.api")

ALLOWED_ALGORITHMS = ("RS256", "RS384", "ES256", "ES384")
JWKS_TTL_S = 300.0
JWKS_MIN_REFRESH_S = 30.0


class Unauthorized(Exception):
    """Authentication failed; the message is safe to return (it never echoes the credential)."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Principal:
    """The authenticated caller, as ids, with what it may be granted.

    `grants`: the permission names of a static token (None: every permission); `claims`: the
    verified claims of a JWT (the permission claim is read from them).
    """

    kind: str  # "token", "jwt", "cds", "development"
    subject: str
    grants: frozenset[str] | None = None
    claims: Mapping[str, Any] = field(default_factory=dict, repr=False)


def _ssl_context(verify: bool | str) -> ssl.SSLContext:
    """TLS for the JWKS fetch with the same meaning as requests' `verify` (a CA bundle path,
    True for the system CAs, False only in development)."""
    if verify is False:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        return context
    return ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)


def _printable(value: Any) -> str:
    """A claim or header value for a log line: short, no control characters."""
    text = value if isinstance(value, str) else repr(value)
    return ascii(text[:80])


class JwksCache:
    """One issuer's signing keys: PyJWKClient fetches and caches them; refreshes forced by an
    unknown key id are rate-limited, and no lock is held during a fetch."""

    def __init__(
        self,
        url: str,
        *,
        verify: bool | str = True,
        timeout: float = 5.0,
        lifespan_s: float = JWKS_TTL_S,
        min_refresh_s: float = JWKS_MIN_REFRESH_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.min_refresh_s = min_refresh_s
        self._clock = clock
        self._client = PyJWKClient(
            url,
            cache_jwk_set=True,
            lifespan=lifespan_s,
            timeout=timeout,
            ssl_context=_ssl_context(verify),
        )
        self._lock = threading.Lock()  # guards _last_forced only; never held during I/O
        self._last_forced: float | None = None

    def key(self, kid: str | None) -> Any:
        found = self._find(self._keys(refresh=False), kid)
        if found is None and self._may_force_refresh():
            found = self._find(self._keys(refresh=True), kid)
        if found is None:
            raise Unauthorized("token signed with an unknown key")
        return found.key

    def _may_force_refresh(self) -> bool:
        with self._lock:
            now = self._clock()
            if self._last_forced is not None and now - self._last_forced < self.min_refresh_s:
                return False
            self._last_forced = now
            return True

    def _keys(self, *, refresh: bool) -> list[jwt.PyJWK]:
        try:
            return list(self._client.get_jwk_set(refresh=refresh).keys)
        except jwt.PyJWTError as exc:
            raise Unauthorized("the issuer's keys could not be fetched") from exc

    @staticmethod
    def _find(keys: list[jwt.PyJWK], kid: str | None) -> jwt.PyJWK | None:
        signing = [k for k in keys if k.public_key_use in ("sig", None)]
        if kid is None:
            return signing[0] if len(signing) == 1 else None
        return next((k for k in signing if k.key_id == kid), None)


class ReplayCache:
    """`jti`s seen within their token's lifetime, per issuer (in this process only)."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._seen: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def first_use(self, issuer: str, jti: str, until: float) -> bool:
        """True the first time (issuer, jti) is seen before `until` (epoch seconds)."""
        now = self._clock()
        with self._lock:
            if len(self._seen) > 1000:
                self._seen = {k: v for k, v in self._seen.items() if v > now}
            if self._seen.get((issuer, jti), 0.0) > now:
                return False
            self._seen[(issuer, jti)] = until
            return True


@dataclass(frozen=True)
class TokenRules:
    """What a JWT must carry beyond a signature, expiry, issuer and audience.

    `max_lifetime_s`: `iat` required and `exp - iat` at most this (plus leeway); `replay`: a
    `jti` required and refused when seen again within the token's lifetime.
    """

    max_lifetime_s: int | None = None
    replay: ReplayCache | None = None


class JwtVerifier:
    """Verifies JWTs from an allow-list of issuers, each with its JWKS."""

    def __init__(
        self,
        issuers: dict[str, JwksCache],
        audience: str | None,
        *,
        leeway_s: int = 30,
        rules: TokenRules | None = None,
        name: str = "JWT",
    ) -> None:
        self.issuers = issuers
        self.audience = audience
        self.leeway_s = leeway_s
        self.rules = rules or TokenRules()
        self.name = name

    def verify(self, token: str) -> dict[str, Any]:
        """The verified claims; a refusal is logged with its reason, issuer and key id only."""
        issuer: Any = None
        kid: Any = None
        try:
            try:
                unverified = jwt.decode(token, options={"verify_signature": False})
                header = jwt.get_unverified_header(token)
            except jwt.PyJWTError as exc:
                raise Unauthorized("malformed token") from exc
            issuer, kid = unverified.get("iss"), header.get("kid")
            return self._verify(token, unverified, header)
        except Unauthorized as exc:
            log.warning(
                "%s refused: %s (iss %s, kid %s)",
                self.name, exc, _printable(issuer), _printable(kid),
            )  # fmt: skip
            raise

    def _verify(
        self, token: str, unverified: dict[str, Any], header: dict[str, Any]
    ) -> dict[str, Any]:
        issuer = unverified.get("iss")
        if not isinstance(issuer, str) or issuer not in self.issuers:
            raise Unauthorized("token issuer is not allowed")
        if header.get("alg") not in ALLOWED_ALGORITHMS:
            raise Unauthorized("token algorithm is not allowed")
        key = self.issuers[issuer].key(header.get("kid"))
        required = ["exp", "iss"]
        if self.rules.max_lifetime_s is not None:
            required.append("iat")
        if self.rules.replay is not None:
            required.append("jti")
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=list(ALLOWED_ALGORITHMS),
                audience=self.audience,
                issuer=issuer,
                leeway=self.leeway_s,
                options={"require": required, "verify_aud": self.audience is not None},
            )
        except jwt.ExpiredSignatureError as exc:
            raise Unauthorized("token expired") from exc
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"token has no '{exc.claim}' claim") from exc
        except jwt.PyJWTError as exc:
            raise Unauthorized("token rejected") from exc
        self._check_rules(issuer, claims)
        return claims

    def _check_rules(self, issuer: str, claims: dict[str, Any]) -> None:
        limit = self.rules.max_lifetime_s
        if (
            limit is not None
            and float(claims["exp"]) - float(claims["iat"]) > limit + self.leeway_s
        ):
            raise Unauthorized(f"token lifetime is longer than {limit} s")
        if self.rules.replay is not None:
            jti = claims["jti"]
            if not isinstance(jti, str) or not jti:
                raise Unauthorized("token has no usable 'jti' claim")
            until = float(claims["exp"]) + self.leeway_s
            if not self.rules.replay.first_use(issuer, jti, until):
                raise Unauthorized("token already used (jti replayed)")


def issuers_verifier(
    issuers: Iterable[tuple[str, str]],
    audience: str | None,
    *,
    verify: bool | str,
    rules: TokenRules | None = None,
    name: str = "JWT",
) -> JwtVerifier:
    """A verifier for (issuer, JWKS URL) pairs, each JWKS fetched with the same TLS `verify`
    (the API's own issuer and the CDS Hooks EHRs are built alike)."""
    keys = {issuer: JwksCache(url, verify=verify) for issuer, url in issuers}
    return JwtVerifier(keys, audience, rules=rules, name=name)


class ApiAuthenticator:
    """Checks an Authorization header against the configured tokens and JWT issuer.

    A configured token entry is a SHA-256 hex digest, optionally followed by `:` and the
    permission names it grants (space separated); without them it grants every permission.
    """

    def __init__(
        self,
        token_hashes: Sequence[str],
        jwt_verifier: JwtVerifier | None,
        *,
        allow_anonymous: bool = False,
    ) -> None:
        self.tokens: list[tuple[str, frozenset[str] | None]] = []
        for entry in token_hashes:
            digest, sep, names = entry.partition(":")
            self.tokens.append((digest.strip().lower(), frozenset(names.split()) if sep else None))
        self.jwt_verifier = jwt_verifier
        self.allow_anonymous = allow_anonymous

    @property
    def token_hashes(self) -> tuple[str, ...]:
        return tuple(digest for digest, _ in self.tokens)

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
        matched: Principal | None = None
        for known, grants in self.tokens:  # every entry compared: no early exit to time
            if hmac.compare_digest(digest, known) and matched is None:
                matched = Principal("token", digest[:12], grants)
        if matched is not None:
            return matched
        if self.jwt_verifier is not None and credential.count(".") == 2:
            claims = self.jwt_verifier.verify(credential)
            return Principal("jwt", str(claims.get("sub", "?")), None, claims)
        raise Unauthorized("invalid credentials")
