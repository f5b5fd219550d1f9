"""/v1/patients/{id}/disposition, /manual/{criterion}, /history: a patient's review (issue 15
item 4), so a hospital's own dashboard can do all the coordinators' page does.

Each GET answers an ETag (the review's version); each PUT must send it back in If-Match, so
the second of two people editing the same patient gets 412 naming the current version and
who changed it, and 428 when it sent none. Reading needs the read permission, recording the
review permission. The author of an entry is the caller's subject id.
"""

from __future__ import annotations

from typing import Any

from flask import g, request
from flask_smorest import Blueprint

from service.api.deps import runtime
from service.api.endpoints import guarded
from service.api.patient_schemas import (
    DispositionRequestSchema,
    HistorySchema,
    ManualAnswerRequestSchema,
    ManualAnswerSchema,
    ReviewSchema,
)
from service.api.permissions import Permission
from service.dispositions import Review, Reviews, etag, parse_version

blp = Blueprint(
    "patients", __name__, url_prefix="/v1/patients",
    description="Coordinators' dispositions and manual answers",
)  # fmt: skip

WRITE_ERRORS = {
    400: "an unknown code, a missing reason, or a note over 2,000 characters (names the field)",
    404: "not a manual criterion",
    412: "the review changed since the If-Match version: the current version and who changed it",
    428: "If-Match is missing",
}
Answer = tuple[dict[str, Any], int, dict[str, str]]


def reviews() -> Reviews:
    rt = runtime()
    return Reviews(rt.store, rt.mappings.parameters.study_id)


def review_keys(patient_id: str) -> dict[str, Any]:
    """The review's keys shown next to the latest result (never inside its criteria)."""
    review = reviews().review(patient_id).to_dict()
    return {"disposition": review["disposition"], "manual_answers": review["manual_answers"],
            "review_version": review["version"]}  # fmt: skip


def _author() -> str:
    principal = g.get("principal")
    return str(principal.subject) if principal is not None else "unknown"


def _review(patient_id: str, review: Review) -> Answer:
    body = {"patient": f"Patient/{patient_id}", **review.to_dict()}
    return body, 200, {"ETag": etag(review.version)}


def _answer(patient_id: str, criterion: str, review: Review) -> Answer:
    entry = review.to_dict()["manual_answers"].get(criterion)
    body = {"patient": f"Patient/{patient_id}", "criterion": criterion,
            "version": review.version, "answer": entry}  # fmt: skip
    return body, 200, {"ETag": etag(review.version)}


@blp.route("/<patient_id>/disposition", methods=["GET"])
@blp.doc(operationId="getDisposition")
@guarded(blp, Permission.READ, ReviewSchema)
def get_disposition(patient_id: str) -> Answer:
    """The current disposition and manual answers (null / empty before anyone recorded)."""
    return _review(patient_id, reviews().review(patient_id))


@blp.route("/<patient_id>/disposition", methods=["PUT"])
@blp.doc(operationId="putDisposition")
@guarded(blp, Permission.REVIEW, ReviewSchema, args=DispositionRequestSchema, errors=WRITE_ERRORS)
def put_disposition(body: dict[str, Any], patient_id: str) -> Answer:
    """Record a disposition (If-Match: the version read); the re-screen never erases it."""
    version = parse_version(request.headers.get("If-Match"))
    review = reviews().set_disposition(
        patient_id, version, code=body["code"], reason=body["reason"], note=body["note"],
        author=_author(),
    )  # fmt: skip
    return _review(patient_id, review)


@blp.route("/<patient_id>/manual/<criterion>", methods=["GET"])
@blp.doc(operationId="getManualAnswer")
@guarded(blp, Permission.READ, ManualAnswerSchema, errors={404: "not a manual criterion"})
def get_manual_answer(patient_id: str, criterion: str) -> Answer:
    """A manual criterion's current answer (null before anyone answered)."""
    rv = reviews()
    rv.check_criterion(criterion)
    return _answer(patient_id, criterion, rv.review(patient_id))


@blp.route("/<patient_id>/manual/<criterion>", methods=["PUT"])
@blp.doc(operationId="putManualAnswer")
@guarded(
    blp, Permission.REVIEW, ManualAnswerSchema, args=ManualAnswerRequestSchema,
    errors=WRITE_ERRORS,
)  # fmt: skip
def put_manual_answer(body: dict[str, Any], patient_id: str, criterion: str) -> Answer:
    """Answer a manual criterion, met or not-met, with a note (If-Match: the version read)."""
    rv = reviews()
    rv.check_criterion(criterion)
    version = parse_version(request.headers.get("If-Match"))
    review = rv.answer(
        patient_id, criterion, version, answer=body["answer"], note=body["note"], author=_author()
    )
    return _answer(patient_id, criterion, review)


@blp.route("/<patient_id>/history", methods=["GET"])
@blp.doc(operationId="getPatientHistory")
@guarded(blp, Permission.READ, HistorySchema)
def get_history(patient_id: str) -> dict[str, Any]:
    """The automatic result's changes and the coordinators' entries, newest first."""
    return {"patient": f"Patient/{patient_id}", "items": reviews().history(patient_id)}
