"""POST /v1/screen: screen one patient now, optionally writing the result back."""

from __future__ import annotations

from datetime import date
from typing import Any

from flask_smorest import Blueprint

from service.api.app import runtime
from service.api.errors import ApiError, ErrorSchema
from service.api.permissions import Permission, require, requires
from service.api.schemas import ResultSchema, ScreenRequestSchema, ScreenResponseSchema
from service.runtime import NotFound, SourceUnavailable
from service.store import InvalidAsOf

blp = Blueprint("screen", __name__, url_prefix="/v1", description="Screen one patient now")


@blp.route("/screen", methods=["POST"])
@requires(Permission.SCREEN)
@blp.arguments(ScreenRequestSchema)
@blp.response(200, ScreenResponseSchema)
@blp.alt_response(401, schema=ErrorSchema, description="no valid credentials")
@blp.alt_response(403, schema=ErrorSchema, description="the credential lacks the permission")
@blp.alt_response(404, schema=ErrorSchema, description="the patient is not known to the source")
@blp.alt_response(400, schema=ErrorSchema, description="as_of is after today (invalid-as-of)")
@blp.alt_response(
    502, schema=ErrorSchema, description="the FHIR server failed; its words are quoted"
)
def screen_now(body: dict[str, Any]) -> dict[str, Any]:
    """Screen one patient as of a day (default today); the result is stored and returned.
    Needs the screen permission, and the write-back permission with `write_back: true`."""
    if body["write_back"]:
        require(Permission.WRITEBACK)
    as_of: date = body["as_of"] or runtime().today()
    try:
        outcome = runtime().screen_patient(body["patient"], as_of, body["write_back"])
    except InvalidAsOf as exc:  # after today (a look back is screened, never written back)
        raise ApiError(400, "invalid-as-of", str(exc)) from exc
    except NotFound as exc:
        raise ApiError(404, "patient-not-found", str(exc)) from exc
    except SourceUnavailable as exc:
        raise ApiError(502, "fhir-server-error", str(exc)) from exc
    return {"result": outcome.result, "changed": outcome.changed, "write_back": outcome.write_back}


@blp.route("/patients/<patient_id>/result", methods=["GET"])
@requires(Permission.READ)
@blp.response(200, ResultSchema)
@blp.alt_response(401, schema=ErrorSchema, description="no valid credentials")
@blp.alt_response(403, schema=ErrorSchema, description="the credential lacks the permission")
@blp.alt_response(404, schema=ErrorSchema, description="no result stored for this patient")
def latest_result(patient_id: str) -> dict[str, Any]:
    """The latest stored result of a patient for this study."""
    rt = runtime()
    result = rt.store.latest_result(f"Patient/{patient_id}", rt.mappings.parameters.study_id)
    if result is None:
        raise ApiError(404, "no-result", f"no result stored for Patient/{patient_id}")
    return result
