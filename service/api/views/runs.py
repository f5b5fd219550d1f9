"""Screening runs over a patient list, a FHIR search or a Group (asynchronous)."""

from __future__ import annotations

from typing import Any

from flask import current_app, url_for
from flask_smorest import Blueprint

from service.api.app import runtime
from service.api.errors import ApiError, ErrorSchema
from service.api.permissions import Permission, require, requires
from service.api.schemas import (
    AttritionSchema,
    PageArgsSchema,
    RunRequestSchema,
    RunResultsPageSchema,
    RunSchema,
)
from service.config import Settings
from service.fhir.cohort_search import SearchNotAllowed, check_cohort_search
from service.report import Tiers
from service.runtime import SourceUnavailable
from service.store import BadCursor, InvalidAsOf, RunInfo

blp = Blueprint("runs", __name__, url_prefix="/v1/runs", description="Population screening runs")


def _view(run: RunInfo) -> dict[str, Any]:
    data = run.to_dict()
    data["progress"] = runtime().store.run_progress(run.id)
    data["writebacks"] = runtime().store.run_writebacks(run.id)
    data["links"] = {
        "self": url_for("runs.get_run", run_id=run.id),
        "results": url_for("runs.run_results", run_id=run.id),
        "summary": url_for("runs.run_summary", run_id=run.id),
        "cancel": url_for("runs.cancel_run", run_id=run.id),
    }
    return data


def _run_or_404(run_id: str) -> RunInfo:
    run = runtime().store.get_run(run_id)
    if run is None:
        raise ApiError(404, "run-not-found", f"no run {run_id}")
    return run


@blp.route("", methods=["POST"])
@requires(Permission.SCREEN)
@blp.arguments(RunRequestSchema)
@blp.response(202, RunSchema)
@blp.alt_response(401, schema=ErrorSchema, description="no valid credentials")
@blp.alt_response(403, schema=ErrorSchema, description="the credential lacks the permission")
@blp.alt_response(
    400,
    schema=ErrorSchema,
    description="the population cannot be read from this source, or the search uses a "
    "parameter that does not select a cohort (search-not-allowed)",
)
def start_run(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Start a run; poll the returned URL for progress. Needs the screen permission, and the
    write-back permission with `write_back: true`. A search may use only the cohort-selecting
    parameters of MEDCARE_RUN_SEARCH_PARAMS (400 naming the first other one)."""
    if body["write_back"]:
        require(Permission.WRITEBACK)
    given, spec = next((k, body[k]) for k in ("patients", "search", "group") if k in body)
    if given == "search":
        settings: Settings = current_app.extensions["medcare_settings"]
        try:
            check_cohort_search(spec, settings.run_search_params)
        except SearchNotAllowed as exc:
            raise ApiError(
                400, "search-not-allowed", str(exc), {"parameter": exc.parameter}
            ) from exc
    kind = "ids" if given == "patients" else given
    try:
        as_of = body["as_of"] or runtime().today()
        run = runtime().start_run(kind, spec, as_of, body["write_back"])
    except InvalidAsOf as exc:  # after today, or a look back with write_back
        raise ApiError(400, "invalid-as-of", str(exc)) from exc
    except SourceUnavailable as exc:
        raise ApiError(400, "unsupported-population", str(exc)) from exc
    view = _view(run)
    return view, 202, {"Location": view["links"]["self"]}


@blp.route("/<run_id>", methods=["GET"])
@requires(Permission.READ)
@blp.response(200, RunSchema)
@blp.alt_response(401, schema=ErrorSchema, description="no valid credentials")
@blp.alt_response(403, schema=ErrorSchema, description="the credential lacks the permission")
@blp.alt_response(404, schema=ErrorSchema)
def get_run(run_id: str) -> dict[str, Any]:
    """Status of a run, with progress and counts."""
    return _view(_run_or_404(run_id))


@blp.route("/<run_id>/results", methods=["GET"])
@requires(Permission.READ)
@blp.arguments(PageArgsSchema, location="query")
@blp.response(200, RunResultsPageSchema)
@blp.alt_response(401, schema=ErrorSchema, description="no valid credentials")
@blp.alt_response(403, schema=ErrorSchema, description="the credential lacks the permission")
@blp.alt_response(404, schema=ErrorSchema)
def run_results(args: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The run's patients in list order, with their result or failure, paged by cursor."""
    _run_or_404(run_id)
    try:
        items, cursor = runtime().store.run_results(run_id, args["cursor"], args["limit"])
    except BadCursor as exc:
        raise ApiError(400, "bad-cursor", "the cursor is not one this API gave out") from exc
    return {"items": items, "next_cursor": cursor}


@blp.route("/<run_id>/summary", methods=["GET"])
@requires(Permission.READ)
@blp.response(200, AttritionSchema)
@blp.alt_response(401, schema=ErrorSchema, description="no valid credentials")
@blp.alt_response(403, schema=ErrorSchema, description="the credential lacks the permission")
@blp.alt_response(404, schema=ErrorSchema)
def run_summary(run_id: str) -> Any:
    """Attrition: per criterion the counts of each result and the patients left (the funnel),
    and the funnel in tiers: ready for the board, candidate with data to chase, ineligible, with
    the spread of each stratum among candidates (issue 12 item 10)."""
    _run_or_404(run_id)
    summary = dict(runtime().store.attrition(run_id))
    summary["tiers"] = run_tiers(runtime().store, run_id).to_dict()
    return summary


def run_tiers(store: Any, run_id: str) -> Tiers:
    """Tiers over every screened patient of the run, read page by page (bounded memory)."""
    tiers = Tiers()
    cursor = None
    while True:
        items, cursor = store.run_results(run_id, cursor, 500)
        for item in items:
            if item["result"] is not None:
                tiers.add_body(item["result"])
        if cursor is None:
            return tiers


@blp.route("/<run_id>/cancel", methods=["POST"])
@requires(Permission.SCREEN)
@blp.response(200, RunSchema)
@blp.alt_response(401, schema=ErrorSchema, description="no valid credentials")
@blp.alt_response(403, schema=ErrorSchema, description="the credential lacks the permission")
@blp.alt_response(404, schema=ErrorSchema)
@blp.alt_response(409, schema=ErrorSchema, description="the run has already finished")
def cancel_run(run_id: str) -> dict[str, Any]:
    """Cancel a queued or running run; patients already screened keep their results."""
    _run_or_404(run_id)
    if not runtime().cancel_run(run_id):
        raise ApiError(409, "run-finished", f"run {run_id} has already finished")
    return _view(_run_or_404(run_id))
