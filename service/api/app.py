"""Flask app factory: settings, authentication, CORS, size limit, blueprints, one error shape.

`create_app(settings=None, runtime=None)`: settings default to the environment (and are checked:
no authentication, or TLS verification off, stops the start outside development mode); tests
pass their own settings and may pass a runtime.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from flask import Flask, Response, g, request
from flask_cors import CORS
from flask_smorest import Api

from service import __version__
from service.api.errors import ApiError, ErrorSchema, register_error_handlers
from service.api.metrics import register_metrics
from service.api.security import ApiAuthenticator, JwksCache, JwtVerifier, Unauthorized
from service.config import Settings, settings_from_env
from service.fhir import json_input
from service.runtime import Runtime

log = logging.getLogger("medcare_screen.api")

# Endpoints that return no patient data; everything else requires authentication.
PUBLIC_ENDPOINTS = {
    "health.live", "health.ready", "metrics", "api-docs.openapi_json", "api-docs.openapi_swagger_ui",
    "cds.discovery", "static",
}  # fmt: skip


class ScreeningApi(Api):  # type: ignore[misc]
    """flask-smorest's Api, documenting our error shape instead of its own."""

    ERROR_SCHEMA = ErrorSchema


def create_app(settings: Settings | None = None, runtime: Runtime | None = None) -> Flask:
    settings = (settings or settings_from_env()).check()
    if settings.allow_no_auth:
        log.warning("*** DEVELOPMENT MODE: the API accepts requests WITHOUT authentication ***")
    app = Flask("medcare_screen")
    app.config.update(
        API_TITLE="MEDCARE Screen",
        API_VERSION=__version__,
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/",
        OPENAPI_JSON_PATH="openapi.json",
        OPENAPI_SWAGGER_UI_PATH="docs",
        OPENAPI_SWAGGER_UI_URL="https://cdn.jsdelivr.net/npm/swagger-ui-dist/",
        MAX_CONTENT_LENGTH=settings.max_request_bytes,
        JSON_SORT_KEYS=False,
        API_SPEC_OPTIONS={
            "info": {
                "description": "Eligibility pre-screening for MEDCARE (NCT06585007) from FHIR R4 data."
            },
            "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
            "security": [{"bearer": []}],
        },
    )
    runtime = runtime or Runtime(settings)
    app.extensions["medcare_runtime"] = runtime
    app.extensions["medcare_settings"] = settings
    api = ScreeningApi(app)

    if settings.cors_origins:
        CORS(app, origins=list(settings.cors_origins), allow_headers=["Authorization", "Content-Type"],
             supports_credentials=False, max_age=600)  # fmt: skip

    authenticator = _authenticator(settings)

    @app.before_request
    def _authenticate() -> None:
        if request.method == "OPTIONS" or request.endpoint in PUBLIC_ENDPOINTS:
            return
        if request.endpoint is None:
            return  # 404/405: no data behind it
        if request.blueprint == "cds":
            return  # CDS Hooks verifies the EHR's own JWT
        try:
            g.principal = authenticator.authenticate(request.headers.get("Authorization"))
        except Unauthorized as exc:
            raise ApiError(401, "unauthorized", str(exc)) from exc
        check_json_body()

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    from service.api.views import cds, changes, health, runs, screen

    for blueprint in (screen.blp, runs.blp, changes.blp, health.blp, cds.blp):
        api.register_blueprint(blueprint)
    register_metrics(app)
    register_error_handlers(app)
    return app


def check_json_body() -> None:
    """Refuse, with a 400 that says why, a JSON body that webargs' `json.loads` would misread or
    choke on: two equal keys in one object (json.loads keeps the last, silently), or nesting
    deeper than any FHIR data (json.loads raises RecursionError near 1,000 levels: a 500).
    Called after authentication, so a caller without credentials learns nothing about bodies.
    A body that is not JSON at all is left to webargs' own 400."""
    if not request.is_json:
        return
    data = request.get_data(cache=True)
    if not data:
        return
    try:
        json_input.loads(data, unique_keys=True)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return
    except json_input.DuplicateKey as exc:
        raise ApiError(400, "duplicate-key", f"the request body is refused: {exc}") from None
    except json_input.NestedTooDeeply as exc:
        raise ApiError(400, "malformed-json", f"the request body is {exc}") from None


def _authenticator(settings: Settings) -> ApiAuthenticator:
    verifier = None
    if settings.jwt_issuer and settings.jwt_jwks_url:
        verifier = JwtVerifier(
            {
                settings.jwt_issuer: JwksCache(
                    settings.jwt_jwks_url, verify=settings.tls_ca_bundle or True
                )
            },
            settings.jwt_audience,
        )
    return ApiAuthenticator(
        settings.api_token_hashes, verifier, allow_anonymous=settings.allow_no_auth
    )


def runtime() -> Runtime:
    from flask import current_app

    value: Any = current_app.extensions["medcare_runtime"]
    assert isinstance(value, Runtime)
    return value
