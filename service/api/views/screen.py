"""POST /v1/screen: screen one patient now, optionally writing the result back."""

from __future__ import annotations

from typing import Any

from flask_smorest import Blueprint

from service.api.deps import service
from service.api.endpoints import guarded
from service.api.patient_schemas import ReviewedResultSchema
from service.api.permissions import Permission, require
from service.api.schemas import ScreenRequestSchema, ScreenResponseSchema
from service.api.views.patients import review_keys

blp = Blueprint("screen", __name__, url_prefix="/v1", description="Screen one patient now")


@blp.route("/screen", methods=["POST"])
@guarded(
    blp, Permission.SCREEN, ScreenResponseSchema, args=ScreenRequestSchema,
    errors={
        404: "the patient is not known to the source",
        400: "as_of is after today (invalid-as-of)",
        502: "the FHIR server failed; its words are quoted",
    },
)  # fmt: skip
def screen_now(body: dict[str, Any]) -> dict[str, Any]:
    """Screen one patient as of a day (default today); the result is stored and returned.
    Needs the screen permission, and the write-back permission with `write_back: true`."""
    if body["write_back"]:
        require(Permission.WRITEBACK)
    outcome = service().screen(body["patient"], body["as_of"], body["write_back"])
    return {"result": outcome.result, "changed": outcome.changed, "write_back": outcome.write_back}


@blp.route("/patients/<patient_id>/result", methods=["GET"])
@guarded(
    blp, Permission.READ, ReviewedResultSchema, errors={404: "no result stored for this patient"}
)
def latest_result(patient_id: str) -> dict[str, Any]:
    """The latest stored result of a patient for this study, with the coordinators'
    disposition and manual answers next to it (issue 15 item 3)."""
    return {**service().latest_result(patient_id), **review_keys(patient_id)}
