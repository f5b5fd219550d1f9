"""Flask app factory: settings, authentication, CORS, size limit, blueprints, one error shape.

`create_app(settings=None, runtime=None)`: settings default to the environment (and are checked:
no authentication, or TLS verification off, stops the start outside development mode); tests
pass their own settings and may pass a runtime.
"""

from __future__ import annotations

import logging

from flask import Flask, Response, g, request
from flask_cors import CORS
from flask_smorest import Api

from service import __version__
from service.api import deps
from service.api.bodies import check_json_body
from service.api.error_map import register_domain_errors
from service.api.errors import ErrorSchema, register_error_handlers
from service.api.metrics import register_metrics
from service.api.openapi import ASSETS_ENDPOINT, ASSETS_URL, complete_spec, register_docs_assets
from service.api.security import ApiAuthenticator, issuers_verifier
from service.api.views import cds, changes, cohorts, health, patients, reports, runs, screen
from service.api.views.audit import blp as audit_blp
from service.api.views.notifications import ENDPOINTS as NOTIFICATION_ENDPOINTS
from service.api.views.notifications import blp as notifications_blp
from service.audit import register_audit
from service.runtime import Runtime
from service.settings import Settings, settings_from_env
from service.web import register_web

log = logging.getLogger("medcare_screen.api")

# Endpoints that return no patient data; everything else requires authentication. FHIR
# Subscription notifications prove themselves with their own secret (views/notifications.py).
PUBLIC_ENDPOINTS = {
    "health.live", "health.ready", "metrics", "api-docs.openapi_json", "api-docs.openapi_swagger_ui",
    "cds.discovery", "static", ASSETS_ENDPOINT, *NOTIFICATION_ENDPOINTS,
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
        OPENAPI_SWAGGER_UI_URL=ASSETS_URL,  # vendored: no CDN on a hospital network
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
    deps.install(app, settings, runtime or Runtime(settings))
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
        if request.blueprint in ("cds", "web"):
            return  # CDS Hooks verifies the EHR's own JWT; the web pages their session
        g.principal = authenticator.authenticate(request.headers.get("Authorization"))
        check_json_body()

    @app.after_request
    def _security_headers(response: Response) -> Response:
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    for blueprint in (screen.blp, runs.blp, cohorts.blp, changes.blp, health.blp, cds.blp):
        api.register_blueprint(blueprint)
    api.register_blueprint(notifications_blp)
    api.register_blueprint(patients.blp)  # dispositions and manual answers (issue 15)
    api.register_blueprint(audit_blp)  # GET /v1/audit (issue 15 item 7)
    api.register_blueprint(reports.blp)  # the funnel SVG and the screening log CSV (issue 15)
    complete_spec(api)  # operationIds, 401/403, the 202 Location header
    register_docs_assets(app)
    register_web(app, settings)  # the coordinators' pages (service/web)
    register_audit(app)  # every look at patient data is recorded (service/audit.py)
    register_metrics(app)
    register_error_handlers(app)
    register_domain_errors(app)
    return app


def _authenticator(settings: Settings) -> ApiAuthenticator:
    verifier = None
    if settings.jwt_issuer and settings.jwt_jwks_url:
        verifier = issuers_verifier(
            [(settings.jwt_issuer, settings.jwt_jwks_url)],
            settings.jwt_audience,
            verify=settings.tls_ca_bundle or True,
        )
    return ApiAuthenticator(
        settings.api_token_hashes, verifier, allow_anonymous=settings.allow_no_auth
    )
