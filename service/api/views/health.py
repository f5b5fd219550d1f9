"""Liveness and readiness (database and FHIR server reachable)."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from service.api.app import runtime
from service.api.schemas import HealthSchema

blp = Blueprint("health", __name__, url_prefix="/health", description="Liveness and readiness")


@blp.route("/live", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.doc(security=[])
def live() -> dict[str, Any]:
    """The process answers."""
    return {"status": "ok", "checks": {}}


@blp.route("/ready", methods=["GET"])
@blp.response(200, HealthSchema)
@blp.alt_response(503, schema=HealthSchema, description="a dependency is not reachable")
@blp.doc(security=[])
def ready() -> Any:
    """The database answers (schema current) and, when configured, the FHIR server answers."""
    checks = runtime().ready()
    ok = all(checks.values())
    return {"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503
