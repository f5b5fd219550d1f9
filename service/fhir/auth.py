"""How requests to the FHIR server are authorised: none, basic, a static bearer token, or SMART
Backend Services (client credentials with a signed JWT assertion, as Epic and Oracle Health need).

Each strategy is a `requests` auth object, so the client stays ignorant of credentials: it only
asks `invalidate()` after a 401 whether a second attempt can succeed. Secrets come from the
environment or from files (`auth_from_env`), never from the command line, and no `repr`, message
or log line here contains a password, token or key.
"""

from __future__ import annotations

import logging
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Final

import jwt
import requests
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from requests.auth import AuthBase, HTTPBasicAuth

from service.fhir.errors import (
    FhirAuthError,
    FhirBadResponse,
    FhirNetworkError,
)
from service.settings import DEFAULT_SMART_SCOPE as DEFAULT_SMART_SCOPE  # tests import it here
from service.settings import (
    SMART_ALGORITHMS,
    BasicAuthSettings,
    BearerAuthSettings,
    ConfigError,
    FhirAuthSettings,
    NoAuthSettings,
    SmartAuthSettings,
    fhir_auth_from_env,
)

log = logging.getLogger(__name__)

# the variables named in errors found after start-up (service/settings reads them all)
ENV_SMART_KEY_FILE: Final = "MEDCARE_SMART_PRIVATE_KEY_FILE"
ENV_SMART_ALG: Final = "MEDCARE_SMART_ALG"
ENV_SMART_TOKEN_URL: Final = "MEDCARE_SMART_TOKEN_URL"
ASSERTION_LIFETIME_S: Final = 300  # SMART Backend Services: exp no more than five minutes ahead
ASSUMED_TOKEN_LIFETIME_S: Final = 300  # when the token response has no expires_in
REFRESH_MARGIN_S: Final = 60.0  # fetch a new token this long before the old one expires
CLIENT_ASSERTION_TYPE: Final = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
DEFAULT_TIMEOUT: Final = (5.0, 30.0)


@dataclass(frozen=True)
class Binding:
    """What a FhirClient shares with its auth strategy: the server, its session (pool),
    timeouts and TLS trust."""

    base_url: str | None
    session: requests.Session | None
    timeout: tuple[float, float]
    verify: bool | str


class Auth(AuthBase):
    """A way to authorise FHIR requests; the base class sends none."""

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        return request

    binding: Binding | None = None

    def bind(
        self,
        base_url: str,
        session: requests.Session,
        *,
        timeout: tuple[float, float],
        verify: bool | str,
    ) -> None:
        """Called by FhirClient: strategies that talk to an authorisation server reuse its
        session (pool), timeouts and TLS trust, and learn the base URL for discovery."""
        self.binding = Binding(base_url.rstrip("/"), session, timeout, verify)

    def invalidate(self) -> bool:
        """Forget cached credentials after a 401; True when a second attempt can succeed."""
        return False

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class NoAuth(Auth):
    """Open sandboxes (HAPI public test servers, a local Medplum in development)."""


class BasicAuth(Auth):
    """HTTP basic authentication, for servers behind a simple reverse proxy."""

    def __init__(self, username: str, password: str) -> None:
        self.username = username
        self._basic = HTTPBasicAuth(username, password)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        self._basic(request)  # sets the Authorization header in place
        return request

    def __repr__(self) -> str:
        return f"BasicAuth(username={self.username!r}, password=***)"


class BearerTokenAuth(Auth):
    """A static bearer token issued out of band (a long-lived API key, a test token)."""

    def __init__(self, token: str) -> None:
        self._token = token

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._token}"
        return request

    def __repr__(self) -> str:
        return "BearerTokenAuth(token=***)"


class SmartBackendAuth(Auth):
    """SMART Backend Services: an access token for a signed JWT client assertion.

    The token endpoint is discovered from `{base}/.well-known/smart-configuration` unless given.
    The token is cached until shortly before `expires_in`, shared by all threads of a client, and
    dropped by `invalidate()` when the server answers 401 (revoked early, or the clock drifted).
    """

    def __init__(
        self,
        client_id: str,
        private_key_file: Path,
        key_id: str,
        *,
        algorithm: str = "RS384",
        scope: str = DEFAULT_SMART_SCOPE,
        token_url: str | None = None,
        base_url: str | None = None,
        session: requests.Session | None = None,
        timeout: tuple[float, float] = DEFAULT_TIMEOUT,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if algorithm not in SMART_ALGORITHMS:
            raise ConfigError(
                f"{ENV_SMART_ALG}: {algorithm!r} is not supported (use {' or '.join(SMART_ALGORITHMS)})"
            )
        self.client_id = client_id
        self.key_id = key_id
        self.algorithm = algorithm
        self.scope = scope
        self.token_url = token_url
        self._private_key = _load_private_key(private_key_file, algorithm)
        self.binding = Binding(base_url.rstrip("/") if base_url else None, session, timeout, True)
        self._clock = clock
        self._lock = threading.Lock()
        self._access_token: str | None = None
        self._expires_at = 0.0
        self.token_requests = 0  # how many tokens were fetched: lets tests see the cache work

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = f"Bearer {self._current_token()}"
        return request

    def invalidate(self) -> bool:
        with self._lock:
            self._access_token = None
            self._expires_at = 0.0
        return True

    def __repr__(self) -> str:
        return (
            f"SmartBackendAuth(client_id={self.client_id!r}, key_id={self.key_id!r}, "
            f"algorithm={self.algorithm!r}, token_url={self.token_url!r})"
        )

    def client_assertion(self, token_url: str) -> str:
        """The signed JWT that proves our identity to `token_url` (its audience)."""
        now = int(self._clock())
        claims = {
            "iss": self.client_id,
            "sub": self.client_id,
            "aud": token_url,
            "iat": now,
            "exp": now + ASSERTION_LIFETIME_S,
            "jti": secrets.token_urlsafe(32),
        }
        headers = {"kid": self.key_id, "typ": "JWT"}
        return jwt.encode(claims, self._private_key, algorithm=self.algorithm, headers=headers)

    def _current_token(self) -> str:
        with self._lock:
            if self._access_token is None or self._clock() >= self._expires_at:
                self._access_token, lifetime = self._fetch_token()
                self._expires_at = self._clock() + lifetime - min(REFRESH_MARGIN_S, lifetime / 2)
            return self._access_token

    def _http(self) -> requests.Session:
        assert self.binding is not None  # set in __init__, replaced by bind()
        if self.binding.session is None:
            self.binding = replace(self.binding, session=requests.Session())
        assert self.binding.session is not None
        return self.binding.session

    def _token_endpoint(self) -> str:
        if self.token_url:
            return self.token_url
        base_url = self.binding.base_url if self.binding else None
        if not base_url:
            raise ConfigError(
                f"SMART backend auth needs a FHIR base URL to discover its token endpoint, "
                f"or {ENV_SMART_TOKEN_URL}"
            )
        url = f"{base_url}/.well-known/smart-configuration"
        response = self._send("GET", url, headers={"Accept": "application/json"})
        if response.status_code != 200:
            raise FhirAuthError(
                f"the server publishes no SMART configuration; set {ENV_SMART_TOKEN_URL}",
                status=response.status_code,
                request=f"GET {url}",
            )
        document = self._json(response, url)
        endpoint = document.get("token_endpoint")
        if not isinstance(endpoint, str) or not endpoint:
            raise FhirAuthError(
                "the SMART configuration names no token_endpoint; set " + ENV_SMART_TOKEN_URL,
                request=f"GET {url}",
            )
        self.token_url = endpoint
        return endpoint

    def _fetch_token(self) -> tuple[str, float]:
        url = self._token_endpoint()
        form = {
            "grant_type": "client_credentials",
            "scope": self.scope,
            "client_assertion_type": CLIENT_ASSERTION_TYPE,
            "client_assertion": self.client_assertion(url),
        }
        response = self._send("POST", url, data=form, headers={"Accept": "application/json"})
        self.token_requests += 1
        body = self._json(response, url, method="POST")
        token = body.get("access_token")
        token_type = body.get("token_type", "bearer")
        if not isinstance(token, str) or not token:
            raise FhirAuthError(
                "the token endpoint returned no access_token", request=f"POST {url}"
            )
        if not isinstance(token_type, str) or token_type.casefold() != "bearer":
            raise FhirAuthError(
                f"the token endpoint returned a {token_type!r} token, not a bearer token",
                request=f"POST {url}",
            )
        expires_in = body.get("expires_in", ASSUMED_TOKEN_LIFETIME_S)
        lifetime = float(expires_in) if isinstance(expires_in, int | float) else 0.0
        if lifetime <= 0:
            lifetime = ASSUMED_TOKEN_LIFETIME_S
        log.info(
            "SMART access token obtained for client %s (valid %.0f s)", self.client_id, lifetime
        )
        return token, lifetime

    def _send(self, method: str, url: str, **kwargs: Any) -> requests.Response:
        session = self._http()
        assert self.binding is not None
        try:
            return session.request(
                method,
                url,
                timeout=self.binding.timeout,
                verify=self.binding.verify,
                auth=None,
                **kwargs,
            )
        except requests.RequestException as exc:
            raise FhirNetworkError(
                f"no answer from the authorisation server ({type(exc).__name__})",
                temporary=True,
                request=f"{method} {url}",
            ) from exc

    def _json(self, response: requests.Response, url: str, method: str = "GET") -> dict[str, Any]:
        request = f"{method} {url}"
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            raise FhirAuthError(_oauth_refusal(body), status=response.status_code, request=request)
        if not isinstance(body, dict):
            raise FhirBadResponse(
                "the authorisation server did not answer with a JSON object",
                status=response.status_code,
                request=request,
            )
        return body


def auth_from_settings(settings: FhirAuthSettings) -> Auth:
    """The strategy the settings choose (MEDCARE_FHIR_AUTH). A SMART key is loaded and checked
    here, so a wrong file stops start-up rather than the first request."""
    if isinstance(settings, BasicAuthSettings):
        return BasicAuth(settings.username, settings.password.get_secret_value())
    if isinstance(settings, BearerAuthSettings):
        return BearerTokenAuth(settings.token.get_secret_value())
    if isinstance(settings, SmartAuthSettings):
        return SmartBackendAuth(
            client_id=settings.client_id,
            private_key_file=settings.private_key_file,
            key_id=settings.key_id,
            algorithm=settings.algorithm,
            scope=settings.scope,
            token_url=settings.token_url,
        )
    assert isinstance(settings, NoAuthSettings)
    return NoAuth()


def auth_from_env(env: Mapping[str, str]) -> Auth:
    """The strategy MEDCARE_FHIR_AUTH names in `env` (service/settings reads the variables);
    a missing or unreadable secret is a ConfigError naming the variable."""
    return auth_from_settings(fhir_auth_from_env(env))


def _load_private_key(path: Path, algorithm: str) -> rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey:
    """The signing key, checked now so a wrong file fails at start-up, not at the first token."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(
            f"{ENV_SMART_KEY_FILE}: cannot read {path} ({exc.strerror or type(exc).__name__})"
        ) from exc
    try:
        key = load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"{ENV_SMART_KEY_FILE}: {path} is not an unencrypted PEM private key"
        ) from exc
    if algorithm == "RS384" and isinstance(key, rsa.RSAPrivateKey):
        return key
    if (
        algorithm == "ES384"
        and isinstance(key, ec.EllipticCurvePrivateKey)
        and isinstance(key.curve, ec.SECP384R1)
    ):
        return key
    wanted = "an RSA key" if algorithm == "RS384" else "an EC P-384 key"
    raise ConfigError(f"{ENV_SMART_KEY_FILE}: {algorithm} needs {wanted}, {path} is not one")


def _oauth_refusal(body: Any) -> str:
    """The OAuth error code and description (RFC 6749 §5.2): safe to show, and what to fix."""
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        description = body.get("error_description")
        detail = f": {description[:300]}" if isinstance(description, str) and description else ""
        return f"the authorisation server refused: {body['error']}{detail}"
    return "the authorisation server refused the request"
