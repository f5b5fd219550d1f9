"""The web pages' blueprint and what it installs on the app: the session cookie, the OpenID
client, CSRF checks on every POST, and the headers of every page.

Why all in `register_web`: the API's app factory makes one call and knows nothing else of
the pages; the API's bearer-token check skips this blueprint, whose pages check the session.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, request
from flask.sessions import SecureCookieSessionInterface
from werkzeug.wrappers import Response

from service.settings import Settings
from service.web import auth
from service.web.config import SESSION_LIFETIME, is_loopback, web_config
from service.web.csrf import csrf_ok, csrf_token
from service.web.pages import message
from service.web.patient import add_routes as add_patient_routes
from service.web.reports import add_routes as add_report_routes
from service.web.worklist import add_routes as add_worklist_routes

NAME = "web"
CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)


class _Sessions(SecureCookieSessionInterface):
    """Flask's signed cookie, Secure except over plain http to loopback in development (where
    a browser on the same machine has no TLS to offer)."""

    def get_cookie_secure(self, app: Flask) -> bool:
        local = request.scheme == "http" and is_loopback(request.host.rsplit(":", 1)[0])
        return not (auth.config().development and local)


def register_web(app: Flask, settings: Settings) -> None:
    """Install the pages on `app` (ConfigError at start-up for a bad web setting)."""
    web = web_config(settings)
    app.secret_key = web.session_secret
    app.config.update(
        SESSION_COOKIE_NAME="medcare_session",
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Lax",
        PERMANENT_SESSION_LIFETIME=SESSION_LIFETIME,
    )
    app.session_interface = _Sessions()
    auth.install_oidc(app, web)
    blp = Blueprint(
        NAME, __name__, template_folder="templates", static_folder="static",
        static_url_path="/web/static",
    )  # fmt: skip
    auth.add_routes(blp)
    add_worklist_routes(blp)
    add_patient_routes(blp)
    add_report_routes(blp)
    blp.before_request(_check_csrf)
    blp.after_request(_page_headers)
    blp.context_processor(_template_globals)
    app.register_blueprint(blp)


def _check_csrf() -> Response | None:
    if request.method != "POST" or csrf_ok():
        return None
    return message(
        400, "This form could not be accepted",
        "It did not carry this session's security token: it may be from an old page, another "
        "site, or from before you signed in again. Nothing was changed. Go back, reload the "
        "page and try again.",
    )  # fmt: skip


def _page_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["Referrer-Policy"] = "same-origin"
    return response


def _template_globals() -> dict[str, Any]:
    return {
        "csrf_token": csrf_token,
        "current_user": auth.current_user(),
        "dev_sign_in": auth.config().dev_sign_in,
    }
