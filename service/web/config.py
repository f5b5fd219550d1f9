"""What the web pages need from the settings, checked once when the app is built.

Why apart from service/settings: the pages have rules of their own (a session key that every
process shares, an identity provider over TLS, the development sign-in only in development),
and stopping at start-up with a ConfigError that names the variable is better than a sign-in
that fails on the first coordinator who tries.
"""

from __future__ import annotations

import ipaddress
import logging
import secrets
from dataclasses import dataclass
from datetime import timedelta
from urllib.parse import urlsplit

from service.settings import ConfigError, Settings

log = logging.getLogger("medcare_screen.web")

SESSION_LIFETIME = timedelta(hours=8)  # one working day; then sign in again
NEW_VISIT_AFTER = timedelta(minutes=30)  # a worklist load after this long is a new visit


@dataclass(frozen=True)
class WebConfig:
    """`issuer` None: no identity provider; in development a local sign-in stands in for it
    (announced loudly), in production the pages say sign-in is not configured."""

    issuer: str | None
    client_id: str | None
    client_secret: str | None
    role_claim: str
    session_secret: str
    development: bool

    @property
    def dev_sign_in(self) -> bool:
        return self.issuer is None and self.development


def web_config(settings: Settings) -> WebConfig:
    api = settings.api
    secret = api.session_secret.get_secret_value() if api.session_secret else None
    client_secret = api.oidc_client_secret.get_secret_value() if api.oidc_client_secret else None
    if api.oidc_issuer:
        if not api.oidc_client_id:
            raise ConfigError("MEDCARE_OIDC_CLIENT_ID: required with MEDCARE_OIDC_ISSUER")
        if not client_secret:
            raise ConfigError("MEDCARE_OIDC_CLIENT_SECRET: required with MEDCARE_OIDC_ISSUER")
        if not settings.development and not _tls_or_loopback(api.oidc_issuer):
            raise ConfigError("MEDCARE_OIDC_ISSUER: must be https (plain http only to loopback)")
    if secret is None:
        if api.oidc_issuer and not settings.development:
            raise ConfigError(
                "MEDCARE_SESSION_SECRET: required with MEDCARE_OIDC_ISSUER (the same random "
                "value in every process, at least 32 characters)"
            )
        secret = secrets.token_urlsafe(32)  # sessions last as long as this process
    elif len(secret) < 32:
        raise ConfigError("MEDCARE_SESSION_SECRET: at least 32 characters")
    config = WebConfig(
        issuer=api.oidc_issuer.rstrip("/") if api.oidc_issuer else None,
        client_id=api.oidc_client_id,
        client_secret=client_secret,
        role_claim=api.oidc_role_claim,
        session_secret=secret,
        development=settings.development,
    )
    if config.dev_sign_in:
        log.warning(
            "*** DEVELOPMENT SIGN-IN: no MEDCARE_OIDC_ISSUER; anyone reaching this service may "
            "sign in to the worklist as a development coordinator ***"
        )
    return config


def is_loopback(host: str) -> bool:
    """`localhost` or a loopback IP literal; never a name like 127.x.org."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _tls_or_loopback(url: str) -> bool:
    parsed = urlsplit(url)
    return parsed.scheme == "https" or (
        parsed.scheme == "http" and is_loopback(parsed.hostname or "")
    )
