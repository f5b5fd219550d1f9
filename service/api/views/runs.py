"""Screening runs over a patient list, a FHIR search or a Group (asynchronous)."""

from __future__ import annotations

from typing import Any

from flask import url_for
from flask_smorest import Blueprint

from service.api.deps import service
from service.api.endpoints import guarded
from service.api.permissions import Permission, require
from service.api.schemas import (
    AttritionSchema,
    PageArgsSchema,
    RunRequestSchema,
    RunResultsPageSchema,
    RunSchema,
)
from service.store import RunInfo

blp = Blueprint("runs", __name__, url_prefix="/v1/runs", description="Population screening runs")

POPULATIONS = {"patients": "ids", "search": "search", "group": "group"}  # body field -> run kind


def _view(run: RunInfo) -> dict[str, Any]:
    data = service().run_status(run)
    data["links"] = {
        "self": url_for("runs.get_run", run_id=run.id),
        "results": url_for("runs.run_results", run_id=run.id),
        "summary": url_for("runs.run_summary", run_id=run.id),
        "cancel": url_for("runs.cancel_run", run_id=run.id),
    }
    return data


@blp.route("", methods=["POST"])
@guarded(
    blp, Permission.SCREEN, RunSchema, status=202, args=RunRequestSchema,
    errors={
        400: "the population cannot be read from this source, or the search uses a "
        "parameter that does not select a cohort (search-not-allowed)",
    },
)  # fmt: skip
def start_run(body: dict[str, Any]) -> tuple[dict[str, Any], int, dict[str, str]]:
    """Start a run; poll the returned URL for progress. Needs the screen permission, and the
    write-back permission with `write_back: true`. A search may use only the cohort-selecting
    parameters of MEDCARE_RUN_SEARCH_PARAMS (400 naming the first other one)."""
    if body["write_back"]:
        require(Permission.WRITEBACK)
    given = next(field for field in POPULATIONS if field in body)
    run = service().start_run(POPULATIONS[given], body[given], body["as_of"], body["write_back"])
    view = _view(run)
    return view, 202, {"Location": view["links"]["self"]}


@blp.route("/<run_id>", methods=["GET"])
@guarded(blp, Permission.READ, RunSchema, errors={404: None})
def get_run(run_id: str) -> dict[str, Any]:
    """Status of a run, with progress and counts."""
    return _view(service().run(run_id))


@blp.route("/<run_id>/results", methods=["GET"])
@guarded(
    blp, Permission.READ, RunResultsPageSchema, args=PageArgsSchema, location="query",
    errors={404: None},
)  # fmt: skip
def run_results(args: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The run's patients in list order, with their result or failure, paged by cursor."""
    items, cursor = service().run_results(run_id, args["cursor"], args["limit"])
    return {"items": items, "next_cursor": cursor}


@blp.route("/<run_id>/summary", methods=["GET"])
@guarded(blp, Permission.READ, AttritionSchema, errors={404: None})
def run_summary(run_id: str) -> Any:
    """Attrition: per criterion the counts of each result and the patients left (the funnel),
    and the funnel in tiers: ready for the board, candidate with data to chase, ineligible, with
    the spread of each stratum among candidates (issue 12 item 10)."""
    return service().run_summary(run_id)


@blp.route("/<run_id>/cancel", methods=["POST"])
@guarded(blp, Permission.SCREEN, RunSchema, errors={404: None, 409: "the run has already finished"})
def cancel_run(run_id: str) -> dict[str, Any]:
    """Cancel a queued or running run; patients already screened keep their results."""
    return _view(service().cancel_run(run_id))
