"""People's sign-in: OpenID Connect (authorization code with PKCE) through Authlib, the role
from a claim, a signed session cookie, and sign-out.

Why this shape: the hospital's identity provider says who someone is and what role they have
(coordinator, investigator, read-only; MEDCARE_OIDC_ROLE_CLAIM); the service keeps only the
subject id, display name and role in Flask's signed cookie for SESSION_LIFETIME, nothing on
the server. An unknown role is refused with a page that says so. Without a provider, in
development only, a local sign-in as a development coordinator stands in (announced loudly).
Logs carry subject ids only.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any, TypeVar, cast

from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.flask_client import OAuth
from flask import Blueprint, Flask, current_app, redirect, request, session, url_for
from requests import RequestException
from werkzeug.wrappers import Response

from service.web.config import WebConfig
from service.web.pages import message
from service.web.roles import Permission, Role, may, role_of

log = logging.getLogger("medcare_screen.web")

USER_KEY = "user"
NEXT_KEY = "next"
CLIENT = "hospital"
STATE = "medcare_web"
DEV_USER = {"sub": "dev-coordinator", "name": "Development coordinator", "role": "coordinator"}

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class User:
    sub: str
    name: str
    role: Role

    def may(self, permission: Permission) -> bool:
        return may(self.role, permission)


def current_user() -> User | None:
    data = session.get(USER_KEY)
    if not isinstance(data, dict):
        return None
    role = role_of(data.get("role"))
    if role is None:
        return None
    return User(str(data.get("sub")), str(data.get("name") or data.get("sub")), role)


def config() -> WebConfig:
    value = current_app.extensions[STATE]
    assert isinstance(value, WebConfig)
    return value


def requires(permission: Permission) -> Callable[[F], F]:
    """A page that needs a signed-in person with `permission`: others are sent to sign in
    (and come back), or told their role does not allow it."""

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user = current_user()
            if user is None:
                session[NEXT_KEY] = request.full_path if request.method == "GET" else None
                return redirect(url_for("web.login"))
            if not user.may(permission):
                return message(
                    403, "Not allowed",
                    f"Your role ({user.role.value}) does not allow this. Nothing was changed.",
                )  # fmt: skip
            return view(*args, **kwargs)

        return cast(F, wrapper)

    return decorate


def install_oidc(app: Flask, web: WebConfig) -> None:
    """Authlib's Flask client for the provider, its metadata read from the issuer's discovery
    document on first use (the service starts even when the provider is down)."""
    app.extensions[STATE] = web
    if web.issuer is None:
        return
    oauth = OAuth(app)
    oauth.register(  # type: ignore[no-untyped-call]
        name=CLIENT,
        client_id=web.client_id,
        client_secret=web.client_secret,
        server_metadata_url=f"{web.issuer}/.well-known/openid-configuration",
        client_kwargs={"scope": "openid profile email", "code_challenge_method": "S256"},
    )


def _client() -> Any:
    return current_app.extensions["authlib.integrations.flask_client"].create_client(CLIENT)


def add_routes(blp: Blueprint) -> None:
    @blp.get("/auth/login")
    def login() -> Any:
        web = config()
        if web.dev_sign_in:
            return message(200, "Development sign-in", None, template="dev_sign_in.html")
        if web.issuer is None:
            return message(
                503, "Sign-in is not configured",
                "This service has no identity provider: set MEDCARE_OIDC_ISSUER, "
                "MEDCARE_OIDC_CLIENT_ID and MEDCARE_OIDC_CLIENT_SECRET (README).",
            )  # fmt: skip
        try:
            return _client().authorize_redirect(url_for("web.callback", _external=True))
        except RequestException:
            log.warning("sign-in: the identity provider did not answer its discovery request")
            return _provider_down()

    @blp.post("/auth/dev-sign-in")
    def dev_sign_in() -> Any:
        if not config().dev_sign_in:
            return message(404, "Not found", "There is no development sign-in here.")
        return _signed_in(dict(DEV_USER))

    @blp.get("/auth/callback")
    def callback() -> Any:
        if config().issuer is None:
            return message(404, "Not found", "There is no identity provider configured.")
        try:
            token = _client().authorize_access_token()
            claims = dict(token.get("userinfo") or {})
            if config().role_claim not in claims:
                claims.update(_client().userinfo(token=token))
        except OAuthError as exc:
            log.info("sign-in refused by the provider or the checks: %s", exc.error)
            return message(
                400, "Sign-in did not complete",
                "The identity provider's answer could not be accepted (it may have expired, "
                "or come from another sign-in). Please sign in again.",
                link=("Sign in", url_for("web.login")),
            )  # fmt: skip
        except RequestException:
            return _provider_down()
        sub = str(claims.get("sub") or "")
        role = role_of(claims.get(config().role_claim))
        if not sub or role is None:
            log.info("sign-in refused: subject %s has no known role", sub or "(none)")
            session.clear()
            return message(
                403, "No access to MEDCARE Screen",
                "You signed in, but your account has no MEDCARE Screen role (coordinator, "
                "investigator or read-only). Ask the study team or the hospital's identity "
                "administrator to give you one.",
            )  # fmt: skip
        name = str(claims.get("name") or claims.get("preferred_username") or sub)
        return _signed_in({"sub": sub, "name": name, "role": role.value})

    @blp.post("/auth/logout")
    def logout() -> Any:
        user = current_user()
        session.clear()
        if user is not None:
            log.info("signed out: %s", user.sub)
        return message(
            200, "Signed out", "You are signed out.", link=("Sign in", url_for("web.login"))
        )


def _signed_in(user: dict[str, str]) -> Response:
    """Start a fresh session for `user` (a new CSRF token too) and go where they were going."""
    wanted = session.get(NEXT_KEY)
    session.clear()
    session.permanent = True
    session[USER_KEY] = user
    log.info("signed in: %s as %s", user["sub"], user["role"])
    target = (
        wanted
        if isinstance(wanted, str) and wanted.startswith("/") and not wanted.startswith("//")
        else None
    )
    return redirect(target or url_for("web.worklist"))


def _provider_down() -> Any:
    return message(
        503, "The identity provider is not reachable",
        "Sign-in needs the hospital's identity provider, which did not answer. Try again in "
        "a few minutes.",
    )  # fmt: skip
