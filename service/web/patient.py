"""The patient page (/patients/<id>): the automatic result in full, and below it what the
coordinators recorded, with the forms to record more (issue 15 items 2 and 3).

Why the forms post here and not to the API: the page signs people in with a session (CSRF
checked by the blueprint), the API takes bearer tokens; both call the same use cases
(service/dispositions.py), so the rules (codes, reasons, note length, versions) are one. Each
form carries the review's version it was drawn from: a form drawn before someone else's entry
is refused with who changed it, and the page comes back with the typed values kept.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from service.api import deps
from service.api.cds_cards import OVERRIDE_REASONS
from service.dispositions import (
    MANUAL_CRITERIA,
    Answer,
    Disposition,
    InvalidEntry,
    Reviews,
    StaleVersion,
    UnknownCriterion,
)
from service.usecases import NoResult
from service.web.auth import current_user, requires
from service.web.pages import message
from service.web.roles import Permission

PATIENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}\Z")
LABELS = {d.value: d.value.replace("-", " ").capitalize() for d in Disposition}
RESULT_LABELS = {"met": "Met", "not-met": "Not met", "unknown": "Unknown", "manual": "Manual"}
FormState = dict[str, Any]
OVERRIDE_LABELS = {reason["code"]: reason["display"] for reason in OVERRIDE_REASONS}


def add_routes(blp: Blueprint) -> None:
    @blp.get("/patients/<patient_id>")
    @requires(Permission.READ)
    def patient(patient_id: str) -> Any:
        return _page(patient_id)

    @blp.post("/patients/<patient_id>/disposition")
    @requires(Permission.RECORD)
    def record_disposition(patient_id: str) -> Any:
        form = _form("code", "reason", "note", "version")
        return _record(patient_id, {"disposition": form}, lambda reviews, user, version: (
            reviews.set_disposition(patient_id, version, code=form["code"], author=user,
                                    reason=form["reason"] or None, note=form["note"] or None)
        ))  # fmt: skip

    @blp.post("/patients/<patient_id>/manual/<criterion>")
    @requires(Permission.RECORD)
    def record_answer(patient_id: str, criterion: str) -> Any:
        form = _form("answer", "note", "version")
        return _record(patient_id, {criterion: form}, lambda reviews, user, version: (
            reviews.answer(patient_id, criterion, version, answer=form["answer"], author=user,
                           note=form["note"] or None)
        ))  # fmt: skip


def _form(*names: str) -> dict[str, str]:
    return {name: str(request.form.get(name, "")) for name in names}


def _reviews() -> Reviews:
    runtime = deps.runtime()
    return Reviews(runtime.store, runtime.mappings.parameters.study_id)


def _record(patient_id: str, typed: dict[str, FormState], write: Any) -> Any:
    """Run `write`; on success back to the page (303), on a refusal the page again with the
    reason and the typed values, nothing recorded."""
    if not PATIENT_ID.match(patient_id):
        return _unknown()
    user = current_user()
    assert user is not None
    form = next(iter(typed.values()))
    version = int(form["version"]) if form["version"].isdigit() else -1
    try:
        write(_reviews(), user.sub, version)
    except InvalidEntry as exc:
        return _page(patient_id, typed=typed, error=f"{exc}. Nothing was recorded.", status=400)
    except UnknownCriterion as exc:
        return _page(patient_id, typed=typed, error=f"{exc}. Nothing was recorded.", status=404)
    except StaleVersion as exc:
        text = (f"Someone recorded an entry since you opened this page ({exc}). Nothing of "
                "yours was recorded: your text is kept below; check the current entries and "
                "send it again.")  # fmt: skip
        return _page(patient_id, typed=typed, error=text, status=409)
    return redirect(url_for("web.patient", patient_id=patient_id) + "#review", code=303)


def _unknown() -> Response:
    return message(404, "No such patient", "No result is stored for this patient.",
                   link=("Back to the worklist", "/worklist"))  # fmt: skip


def _page(
    patient_id: str, *, typed: dict[str, FormState] | None = None, error: str | None = None,
    status: int = 200,
) -> Any:  # fmt: skip
    if not PATIENT_ID.match(patient_id):
        return _unknown()
    try:
        result = deps.service().latest_result(patient_id)
    except NoResult:
        return _unknown()
    reviews = _reviews()
    user = current_user()
    html = render_template(
        "patient.html", title=f"Patient {patient_id}", patient_id=patient_id, result=result,
        review=reviews.review(patient_id), history=_history(reviews, patient_id),
        fhir_base=(deps.runtime().settings.fhir_base_url or "").rstrip("/"),
        may_record=user is not None and user.may(Permission.RECORD),
        dispositions=LABELS, answers=[a.value for a in Answer], manual=MANUAL_CRITERIA,
        result_labels=RESULT_LABELS, typed=typed or {}, error=error,
    )  # fmt: skip
    return Response(html, status=status, mimetype="text/html")


def _history(reviews: Reviews, patient_id: str) -> list[dict[str, Any]]:
    """The result changes and coordinators' entries, with the card feedback merged in, newest
    first. The EHR names the patient as it knows it (bare id) so both spellings are read."""
    store = deps.runtime().store
    feedback = [
        {"type": "card-feedback", "at": f.outcome_at.isoformat(), "outcome": f.outcome,
         "reason": OVERRIDE_LABELS.get(f.reason_code or "", f.reason_code), "by": f.author,
         "note": f.comment}
        for name in (patient_id, f"Patient/{patient_id}")
        for f in store.card_feedback(name)
    ]  # fmt: skip
    merged = reviews.history(patient_id) + feedback
    return sorted(merged, key=lambda item: datetime.fromisoformat(item["at"]), reverse=True)
